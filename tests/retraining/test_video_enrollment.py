"""Enrolling a student from a short clip, end to end, on real LFW faces.

Clips are built in the test from each person's real photos (tests/clips.py), encoded with
PyAV's own H.264/HEVC encoders: nothing is downloaded and no video is committed. The
published models are measured through the loader on photos the runs never saw.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from clips import write_clip
from conftest import LFW, LFW_STRANGERS, SCRFD_WEIGHTS, require_shared_data
from embedding_store import extract_scrfd_dlib

from bench.lfw_enrollment import stranger_photos
from retraining import video

pytestmark = pytest.mark.slow  # two whole runs on real LFW faces

N_PEOPLE = 8
ENROLLED = 10  # photos per person: as files, or held in one clip
DETECTOR = SCRFD_WEIGHTS / "scrfd_2.5g_bnkps.onnx"


def _people() -> list[Path]:
    require_shared_data(LFW)
    people = sorted(p for p in LFW.iterdir() if len(list(p.glob("*.jpg"))) >= 16)
    return people[:: max(1, len(people) // N_PEOPLE)][:N_PEOPLE]


def _photos(person: Path) -> list[Path]:
    return sorted(person.glob("*.jpg"))


def _retrain(data: Path, out: Path, cache: Path | None = None) -> str:
    import retrain_model

    if cache is not None and cache.exists():
        shutil.copytree(cache, out / "models" / "cache", dirs_exist_ok=True)
    args = ["--data-dir", str(data), "--output-root", str(out), "--quiet", "--seed", "4"]
    args += ["--detector", "scrfd", "--detector-model", str(DETECTOR), "--embedder", "dlib", "--device", "cpu"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert retrain_model.main(args) == 0, printed.getvalue()
    return printed.getvalue()


@pytest.fixture(scope="module")
def enrolled_both_ways(tmp_path_factory: pytest.TempPathFactory, lfw_embedding_cache: Path) -> dict[str, object]:
    """The same people enrolled twice: from their photos as files, and from one clip each of the same photos."""
    tmp = tmp_path_factory.mktemp("video_enrollment")
    people = _people()
    as_photos, as_clips = tmp / "photos", tmp / "clips"
    for k, person in enumerate(people):
        folder = f"STU{k + 1:03d}_{person.name}"
        chosen = _photos(person)[:ENROLLED]
        (as_photos / folder).mkdir(parents=True)
        for p in chosen:
            shutil.copy(p, as_photos / folder / p.name)
        write_clip(as_clips / folder / "turning.mp4", chosen)
    out_photos, out_clips = tmp / "out_photos", tmp / "out_clips"
    unseen = {f"STU{k + 1:03d}": _photos(p)[ENROLLED:] for k, p in enumerate(people)}
    strangers = stranger_photos(LFW_STRANGERS)
    everyone = [p for ps in unseen.values() for p in ps] + strangers
    measured = extract_scrfd_dlib(everyone + [p for person in people for p in _photos(person)], lfw_embedding_cache)
    vectors = {Path(r.path): v for r, v in zip(measured.records, measured.embeddings)}
    _retrain(as_photos, out_photos, lfw_embedding_cache)
    printed = _retrain(as_clips, out_clips)
    return {
        "people": people,
        "photos": out_photos,
        "clips": out_clips,
        "clip_data": as_clips,
        "unseen": unseen,
        "vectors": vectors,
        "strangers": [p for p in strangers if p in vectors],
        "printed": printed,
        "tmp": tmp,
    }


def _recognised(out: Path, unseen: dict[str, list[Path]], vectors: dict[Path, np.ndarray]) -> tuple[int, int]:
    """Unseen photos the published model names right at its own threshold, through the loader."""
    from backend.recognizer import FaceRecognizer

    recognizer = FaceRecognizer.load(out, device="cpu")
    pairs = [(sid, p) for sid, ps in unseen.items() for p in ps if p in vectors]
    answers = recognizer.classify(np.stack([vectors[p] for _, p in pairs]), top_k=1)
    return sum(a.accepted and a.student_id == sid for (sid, _), a in zip(pairs, answers)), len(pairs)


def test_students_enrolled_from_one_clip_are_recognised_as_well_as_from_the_photos(
    enrolled_both_ways: dict[str, object],
) -> None:
    e = enrolled_both_ways
    unseen, vectors = e["unseen"], e["vectors"]
    from_photos, n = _recognised(e["photos"], unseen, vectors)  # type: ignore[arg-type]
    from_clips, n2 = _recognised(e["clips"], unseen, vectors)  # type: ignore[arg-type]
    print(f"unseen photos recognised: from photos {from_photos}/{n}, from one clip each {from_clips}/{n2}")
    assert n == n2 and n >= 40
    assert from_clips >= from_photos


def test_students_enrolled_from_one_clip_each_keep_strangers_out(enrolled_both_ways: dict[str, object]) -> None:
    """Nothing of a clip can be held out honestly, so the stranger measurement cuts each clip in two
    (retraining.evaluate.calibration_sources); checked here on 300 never-enrolled people, through the loader."""
    from backend.recognizer import FaceRecognizer

    e = enrolled_both_ways
    strangers = np.stack([e["vectors"][p] for p in e["strangers"]])  # type: ignore[index]
    accepted = {}
    for way in ("photos", "clips"):
        answers = FaceRecognizer.load(e[way], device="cpu").classify(strangers, top_k=1)  # type: ignore[arg-type]
        accepted[way] = sum(a.accepted for a in answers)
    print(
        f"strangers accepted of {len(strangers)}: enrolled from photos {accepted['photos']}, from clips {accepted['clips']}"
    )
    assert len(strangers) >= 250
    assert accepted["clips"] <= max(accepted["photos"], 0.01 * len(strangers))


def test_each_clip_and_its_frames_are_listed_in_inputs_csv(enrolled_both_ways: dict[str, object]) -> None:
    out = enrolled_both_ways["clips"]
    with open(out / "models" / "inputs.csv", newline="", encoding="utf-8") as fh:  # type: ignore[operator]
        rows = list(csv.DictReader(fh))
    clips = [r for r in rows if r["path"].endswith("turning.mp4")]
    frames = [r for r in rows if "turning.mp4#t=" in r["path"]]
    assert len(clips) == N_PEOPLE and all(
        f"sharp, different frames used of {video.CANDIDATES}" in r["reason"] for r in clips
    )
    assert len(frames) >= 8 * N_PEOPLE and all(r["status"] == "used" for r in frames)
    metrics = json.loads((out / "models" / "metrics.json").read_text())  # type: ignore[operator]
    assert metrics["counts"]["test"] == 0 and metrics["accuracy"] is None  # one clip each: nothing held out


def test_the_report_lists_each_clip_with_the_frames_it_gave(enrolled_both_ways: dict[str, object]) -> None:
    report = (enrolled_both_ways["clips"] / "models" / "training_report.txt").read_text()  # type: ignore[operator]
    listed = [line for line in report.splitlines() if "turning.mp4:" in line and f" of {video.CANDIDATES}" in line]
    assert len(listed) == N_PEOPLE
    assert "could not be measured" in report  # one clip each: no recognition rate is claimed
    assert "Likely cause: ." not in report and "fix the photos listed" not in report
    assert f"of them frames of {N_PEOPLE} videos" in report
    page = (enrolled_both_ways["clips"] / "models" / "report.html").read_text()  # type: ignore[operator]
    assert "photos and video frames used" in page and "could not be measured" in page
