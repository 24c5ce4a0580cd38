"""Clips in a student's folder: decoded as a stream, bounded like hostile photos, their frames
chosen by measurement, named ``clip#t=…s`` and cached like photos.

Every clip is built here from real LFW photos (tests/clips.py); none is committed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from clips import write_clip
from conftest import LFW, SCRFD_25G, require_shared_data

from retraining import video
from retraining.cache import EmbeddingCache
from retraining.clip_frames import clip_frames
from retraining.dataset import ImageRecord, index_dataset
from retraining.evaluate import split_per_student


def _photos(person: str, n: int = 6) -> list[Path]:
    require_shared_data(LFW)
    return sorted((LFW / person).glob("*.jpg"))[:n]


@pytest.fixture(scope="module")
def scrfd():
    from backend.recognizer.backends import BackendConfig, build_detector

    require_shared_data(SCRFD_25G)
    return build_detector(BackendConfig(detector="scrfd", detector_model=str(SCRFD_25G), device="cpu"))


def _record(path: Path) -> ImageRecord:
    return ImageRecord(path, "STU001", "Student")


def test_frame_names_round_trip() -> None:
    name = video.frame_name(Path("a/STU001_X/turn.MOV"), 3.2)
    assert name.name == "turn.MOV#t=3.20s"
    assert video.split_frame_name(name) == (Path("a/STU001_X/turn.MOV"), 3.2)
    assert video.split_frame_name(Path("a/photo#t=3.20s.jpg")) is None


def test_clips_are_indexed_with_the_photos(tmp_path: Path) -> None:
    folder = tmp_path / "STU001_Ann"
    write_clip(folder / "turn.MOV", _photos("Laura_Bush", 2), size=(160, 120), seconds_per_photo=0.1)
    (folder / "notes.wmv").write_bytes(b"x")
    index = index_dataset(tmp_path)
    assert [r.path.name for r in index.records] == ["turn.MOV"] and index.records[0].is_clip
    assert [p.name for p, _ in index.ignored()] == ["notes.wmv"]


def test_a_clip_gives_sharp_different_frames_named_by_time_and_is_not_decoded_twice(
    tmp_path: Path, scrfd, dlib_embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = _photos("Laura_Bush", 8)
    clip = write_clip(tmp_path / "turn.mp4", photos, seconds_per_photo=0.5)
    cache = EmbeddingCache({"test": 1}, dlib_embedder.dim)
    first = clip_frames(_record(clip), scrfd, dlib_embedder, cache)
    assert first.reason is None and first.outcome is not None
    assert all(f.record.path.name.startswith("turn.mp4#t=") and f.record.source == clip for f in first.frames)
    # 30 frames looked at, about 4 of each photo held still: the re-encoded copies of one photo are near-identical,
    # so about one frame per photo is kept (a photo much softer than the rest may go as blurred)
    held = [int(f.record.seconds * 30) // 15 for f in first.frames]  # which photo each frame shows
    assert len(set(held)) >= len(photos) - 1 and max(held.count(h) for h in held) <= 2
    assert len(first.frames) <= len(photos) + 2 and first.outcome.sampled == video.CANDIDATES

    def no_decoding(*_: object, **__: object) -> None:
        raise AssertionError("an unchanged clip was decoded again")

    monkeypatch.setattr(video, "sample_frames", no_decoding)
    again = clip_frames(_record(clip), scrfd, dlib_embedder, cache)
    assert again.outcome is not None and again.outcome.reused
    assert [f.key for f in again.frames] == [f.key for f in first.frames]
    assert np.allclose(np.stack([f.vector for f in again.frames]), np.stack([f.vector for f in first.frames]))


def test_a_clip_with_two_people_keeps_the_one_in_most_frames_central_and_largest(
    tmp_path: Path, scrfd, dlib_embedder
) -> None:
    student, parent = _photos("Laura_Bush", 6), _photos("John_Kerry", 3)
    clip = write_clip(tmp_path / "with_parent.mp4", student, other=parent, size=(640, 360))
    got = clip_frames(_record(clip), scrfd, dlib_embedder, None)
    assert got.outcome is not None and any("2 people" in n for n in got.outcome.notes)
    alone = clip_frames(_record(write_clip(tmp_path / "alone.mp4", student)), scrfd, dlib_embedder, None)
    centre = np.mean([f.vector for f in alone.frames], axis=0)
    centre /= np.linalg.norm(centre)
    kept = np.stack([f.vector for f in got.frames])
    assert len(kept) >= 4 and (kept @ centre).min() > 0.9  # every frame kept is the student, not the parent


def test_an_iphone_hevc_mov_filmed_upright_is_turned_upright(tmp_path: Path, scrfd, dlib_embedder) -> None:
    import av

    try:
        av.codec.Codec("libx265", "w")
    except Exception:
        pytest.skip("this PyAV build has no HEVC encoder")
    photos = _photos("Laura_Bush", 4)
    clip = write_clip(tmp_path / "IMG_0001.MOV", photos, codec="libx265", size=(480, 360), rotation=-90)
    with video.open_clip(clip) as opened:
        frames = list(video.sample_frames(opened, count=4))
    assert frames and all(f.rgb.shape[0] > f.rgb.shape[1] for f in frames)  # portrait, as filmed
    got = clip_frames(_record(clip), scrfd, dlib_embedder, None)
    assert got.reason is None and len(got.frames) >= 3


def _hostile(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = write_clip(tmp_path / "good.mp4", _photos("Laura_Bush", 3), size=(320, 240))
    data = good.read_bytes()
    cases = {
        "renamed text file": (tmp_path / "notes.mp4", "not a video at all"),
        "zero-length clip": (tmp_path / "empty.mov", "empty file"),
        "truncated container": (tmp_path / "cut.mp4", "cut off"),
        "garbage after a valid header": (tmp_path / "noise.mkv", ""),
    }
    cases["renamed text file"][0].write_text("this is a shopping list, not a video\n" * 50)
    cases["zero-length clip"][0].write_bytes(b"")
    cases["truncated container"][0].write_bytes(data[: len(data) // 3])
    cases["garbage after a valid header"][0].write_bytes(data[:64] + os.urandom(20000))
    return cases


def test_hostile_clips_are_skipped_with_a_reason(tmp_path: Path, scrfd, dlib_embedder) -> None:
    for name, (path, words) in _hostile(tmp_path).items():
        got = clip_frames(_record(path), scrfd, dlib_embedder, None)
        assert got.reason, name
        assert words in got.reason, (name, got.reason)
        assert not got.reason.startswith("unexpected error"), (name, got.reason)


@pytest.mark.parametrize(
    ("limit", "words"),
    [
        ({"max_bytes": 1000}, "too large"),
        ({"max_seconds": 1.0}, "too long"),
        ({"max_pixels": 100 * 100}, "picture is too large"),
        ({"max_frames": 10}, "frames"),
    ],
)
def test_clips_beyond_the_limits_are_skipped_before_they_cost_memory(
    tmp_path: Path, scrfd, dlib_embedder, monkeypatch: pytest.MonkeyPatch, limit: dict, words: str
) -> None:
    clip = write_clip(tmp_path / "long.mp4", _photos("Laura_Bush", 4), size=(320, 240), seconds_per_photo=0.6)
    monkeypatch.setattr(video, "LIMITS", video.ClipLimits(**limit))
    got = clip_frames(_record(clip), scrfd, dlib_embedder, None)
    assert got.reason and words in got.reason and not got.frames


def test_a_named_pipe_named_like_a_clip_is_refused_without_blocking(tmp_path: Path) -> None:
    pipe = tmp_path / "clip.mp4"
    os.mkfifo(pipe)
    with pytest.raises(video.VideoError, match="named pipe"):
        video.open_clip(pipe)


def test_held_out_evaluation_never_splits_a_clip() -> None:
    labels = np.array(["A"] * 12 + ["B"] * 12 + ["C"] * 10)
    sources = np.array(
        ["A/clip.mp4"] * 10 + ["A/1.jpg", "A/2.jpg"] + ["B/one.mov"] * 6 + ["B/two.mov"] * 6 + ["C/x"] * 10
    )
    for seed in range(20):
        train, test, train_only = split_per_student(labels, 0.2, seed, sources)
        assert not set(sources[train]) & set(sources[test])  # no source on both sides
        assert "C" in train_only and not (labels[test] == "C").any()  # one clip only: trained on, never tested
        assert (labels[test] == "A").any() and (labels[test] == "B").any()


def test_a_frame_named_in_the_report_gets_its_thumbnail(tmp_path: Path, scrfd) -> None:
    from retraining.thumbnails import face_thumbnails

    clip = write_clip(tmp_path / "turn.mp4", _photos("Laura_Bush", 3), size=(320, 240))
    frame = video.frame_name(clip, 0.5)
    thumbs = face_thumbnails([frame, clip, tmp_path / "gone.mp4#t=1.00s"], scrfd)
    assert set(thumbs) == {str(frame), str(clip)}
    assert all(uri.startswith("data:image/jpeg;base64,") for uri in thumbs.values())


def test_a_clip_of_another_student_is_one_finding_on_the_clip(tmp_path: Path, lfw_embedding_cache: Path) -> None:
    """Ten students enrolled from photos; a clip of the second one's face (from photos not in their folder)
    dropped into the first one's folder. The clip's frames are one source: one mislabel finding names
    the clip and the student it looks like, and no frame is judged against its own clip's other frames."""
    import shutil

    from backend.recognizer.backends import BackendConfig
    from retraining.extract import extract_with_models
    from retraining.quality import FindingKind, data_quality, duplicate_groups

    require_shared_data(LFW)
    people = sorted(p.name for p in LFW.iterdir() if len(list(p.glob("*.jpg"))) >= 20)[:10]
    records = []
    for k, person in enumerate(people):
        for p in _photos(person, 14):
            records.append(ImageRecord(p, f"STU{k + 1:03d}", person))
    wrong = write_clip(tmp_path / "STU001" / "turning.mp4", sorted((LFW / people[1]).glob("*.jpg"))[14:20])
    records.append(ImageRecord(wrong, "STU001", people[0]))
    cache = tmp_path / "cache"
    if lfw_embedding_cache.exists():
        shutil.copytree(lfw_embedding_cache, cache)
    backend = BackendConfig(detector="scrfd", detector_model=str(SCRFD_25G), embedder="dlib", device="cpu")
    extraction = extract_with_models(records, backend, cache, progress=False).extraction
    frames = [r for r in extraction.records if r.clip == wrong]
    assert len(frames) >= 4
    findings = data_quality(extraction, duplicate_groups(extraction.records, extraction.sha256))
    on_clip = [f for f in findings if f.path == str(wrong)]
    assert [f.kind for f in on_clip] == [FindingKind.MISLABEL] and on_clip[0].related == "STU002"
    assert f"of the {len(frames)} frames used from this clip" in on_clip[0].reason
    assert not [f for f in findings if "#t=" in f.path]  # frames are never reported one by one
