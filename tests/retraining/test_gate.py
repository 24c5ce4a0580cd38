"""The quality gate on real runs: a worse model never replaces the one in service, unless forced.

A good model is published first (12 LFW people x 10 photos, real SCRFD 2.5g + dlib); then
broken FaceNet weights, photos moved into the wrong folders, a new student, --review and
--promote, a full disk and Ctrl+C are each tried against a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import LFW, ORL, SCRFD_25G, embed_lfw_early, require_shared_data, tree_digest
from embedding_store import extract_scrfd_dlib
from test_crash_safety import start_until

import retrain_model
import test_retrained_model as verify_cli
from backend.recognizer import FaceRecognizer
from backend.recognizer.paths import OutputPaths
from retraining import outcome
from retraining.gate import Candidate, GateSettings, accuracy_upper95, decide

PEOPLE = 12
ARGS = ["--detector", "scrfd", "--detector-model", str(SCRFD_25G), "--device", "cpu", "--quiet"]
DLIB = [*ARGS, "--embedder", "dlib"]


def lfw_people(people: int = PEOPLE) -> list[tuple[str, list[Path]]]:
    """The first ``people`` LFW people (by name) and their first 10 photos."""
    return [(p.name, sorted(p.glob("*.jpg"))[:10]) for p in sorted(p for p in LFW.iterdir() if p.is_dir())[:people]]


def lfw_tree(dst: Path, people: int = PEOPLE, move_share: float = 0.0) -> Path:
    """``people`` LFW people x 10 photos as student folders; ``move_share`` of every folder's photos
    moved into the next student's folder (a teacher dragging photos into the wrong folders)."""
    require_shared_data(LFW)
    require_shared_data(SCRFD_25G)
    folders = []
    for k, (name, photos) in enumerate(lfw_people(people)):
        folder = dst / f"STU{k + 1:03d}_{name}"
        folder.mkdir(parents=True)
        for photo in photos:
            shutil.copyfile(photo, folder / photo.name)
        folders.append(folder)
    moves = []
    for k, folder in enumerate(folders):
        photos = sorted(folder.glob("*.jpg"))
        moves += [(p, folders[(k + 1) % len(folders)]) for p in photos[: int(round(move_share * len(photos)))]]
    for photo, to in moves:
        photo.rename(to / f"moved_{photo.name}")
    return dst


def run(data: Path, root: Path, *extra: str) -> int:
    return retrain_model.main(["--data-dir", str(data), "--output-root", str(root), *extra])


# embedded in the background from the session's start
embed_lfw_early("good", lambda: [photo for _, photos in lfw_people() for photo in photos])


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, lfw_embedding_cache: Path) -> tuple[Path, Path]:
    """(data folder, output root) of a good published model; copy the root before changing it.

    Its photos are embedded into the session's LFW embedding cache (test_quality's tree holds them too), and
    the run starts from a copy of it, as a school's second run starts from its first run's cache."""
    base = tmp_path_factory.mktemp("gate")
    data = lfw_tree(base / "data")
    photos = sorted(data.glob("*/*.jpg"))
    assert len(extract_scrfd_dlib(photos, lfw_embedding_cache).records) == len(photos) == 10 * PEOPLE
    root = base / "root"
    shutil.copytree(lfw_embedding_cache, OutputPaths.at(root).cache_dir)
    assert run(data, root, *DLIB) == 0
    return data, root


@pytest.fixture
def root(good: tuple[Path, Path], tmp_path: Path) -> Path:
    dst = tmp_path / "root"
    shutil.copytree(good[1], dst)  # with its embedding cache: unchanged photos are not embedded again
    return dst


def published_state(root: Path) -> tuple[str, dict[str, str]]:
    paths = OutputPaths.at(root)
    return FaceRecognizer.load(root, require_manifest=True).model_version, tree_digest(paths.classifier_dir)


def only_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


# --------------------------------------------------------------------------- the gate's rules


def test_accuracy_floor_uses_the_upper_bound_so_few_test_photos_cannot_refuse_by_bad_luck() -> None:
    assert accuracy_upper95(1.0, 10) == 1.0
    assert accuracy_upper95(0.5, 4) > 0.9  # 2 of 4 right says little
    assert accuracy_upper95(0.225, 40) < 0.40  # 9 of 40 right: clearly below a 50 % floor

    def candidate(acc: float, n: int) -> Candidate:
        empty = np.zeros((0, 4), np.float32)
        return Candidate(acc, n, True, True, {}, empty, np.zeros(0, str), np.zeros(0, str))

    assert not decide(candidate(0.225, 40), None, GateSettings()).passed
    assert decide(candidate(0.5, 4), None, GateSettings()).passed
    forced = decide(candidate(0.225, 40), None, GateSettings(force=True))
    assert forced.publish and forced.forced and forced.verdict().startswith("FORCED")
    assert not decide(candidate(1.0, 40), None, GateSettings(force=True)).forced  # nothing to force


# --------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_broken_facenet_weights_are_refused_then_published_only_with_force(
    root: Path, good: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FaceNet file with the right keys and random values (what a wrong download gives)."""
    torch = pytest.importorskip("torch")
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(InceptionResnetV1(classify=False).state_dict(), weights / "20180402-114759-vggface2.pt")
    before = published_state(root)
    capsys.readouterr()
    facenet = [*ARGS, "--embedder", "facenet", "--weights-dir", str(weights), "--no-download"]
    assert run(good[0], root, *facenet) == outcome.EXIT_REFUSED
    line = only_error_line(capsys.readouterr().err)
    assert "NOT published" in line and "model in service is unchanged" in line
    assert "below the floor" in line or "does not tell people apart" in line
    assert published_state(root) == before  # byte-identical, still loads
    (rejected,) = (OutputPaths.at(root).rejected_dir).iterdir()
    report = (rejected / "models" / "training_report.txt").read_text()
    assert str(rejected / "models" / "training_report.txt") in line
    assert "decision: REFUSED" in report and "not the official file" in report

    assert run(good[0], root, *facenet, "--force") == 0
    out = capsys.readouterr().out
    assert "quality gate       : FORCED" in out and "not the official file" in out
    forced = FaceRecognizer.load(root, require_manifest=True)
    assert forced.model_version != before[0] and forced.metadata["forced"] is True
    assert forced.metadata["quality_gate"]["passed"] is False
    assert "published anyway because --force" in (OutputPaths.at(root).report_txt.read_text())
    capsys.readouterr()
    assert verify_cli.main(["--output-root", str(root), "--device", "cpu", "--strict"]) == 1  # forced = a warning
    out = capsys.readouterr().out
    assert "[WARN] this model was published with --force" in out and "[WARN] weights: 20180402" in out


@pytest.mark.slow
def test_photos_in_the_wrong_folders_are_refused_as_worse_then_forced(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messy = lfw_tree(tmp_path / "messy", move_share=0.4)
    before = published_state(root)
    capsys.readouterr()
    assert run(messy, root, *DLIB) == outcome.EXIT_REFUSED
    line = only_error_line(capsys.readouterr().err)
    assert "points worse" in line and "recorded by the published model" in line
    assert published_state(root) == before
    assert run(messy, root, *DLIB, "--force") == 0
    assert FaceRecognizer.load(root).metadata["forced"] is True


@pytest.mark.slow
def test_one_new_student_passes_the_gate(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bigger = lfw_tree(tmp_path / "bigger", people=PEOPLE + 1)
    old = published_state(root)[0]
    capsys.readouterr()
    assert run(bigger, root, *DLIB) == 0
    assert f"quality gate       : passed (compared with model {old})" in capsys.readouterr().out
    assert len(FaceRecognizer.load(root).metadata["students"]) == PEOPLE + 1


@pytest.mark.slow
def test_review_waits_then_promote_publishes_the_candidate(
    root: Path, good: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    paths = OutputPaths.at(root)
    assert run(good[0], root, "--promote") == outcome.EXIT_ERROR  # nothing waits yet
    assert "Run python retrain_model.py --review first" in only_error_line(capsys.readouterr().err)
    before = published_state(root)
    assert run(good[0], root, *DLIB, "--review") == 0
    out = capsys.readouterr().out
    assert "model NOT published (--review)" in out and "--promote" in out
    assert published_state(root) == before  # the backend still serves the old model
    (candidate,) = paths.candidate_dir.iterdir()
    assert (candidate / "models" / "training_report.txt").is_file()
    assert run(good[0], root, "--promote") == 0
    assert FaceRecognizer.load(root, require_manifest=True).model_version == candidate.name
    assert not candidate.exists()
    assert published_state(root)[0] != before[0]


@pytest.mark.slow
def test_a_waiting_candidate_is_gated_again_at_promote(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reviewed with --force (so it waits), then promoted without it: refused, and it keeps waiting."""
    messy = lfw_tree(tmp_path / "messy", move_share=0.4)
    before = published_state(root)
    assert run(messy, root, *DLIB, "--review") == outcome.EXIT_REFUSED  # a refused model does not wait
    assert not OutputPaths.at(root).candidate_dir.exists()
    assert run(messy, root, *DLIB, "--review", "--force") == 0
    capsys.readouterr()
    assert run(messy, root, "--promote") == outcome.EXIT_REFUSED
    assert "still waits" in only_error_line(capsys.readouterr().err)
    assert published_state(root) == before
    assert run(messy, root, "--promote", "--force") == 0
    promoted = FaceRecognizer.load(root, require_manifest=True)
    assert (
        promoted.metadata["forced"] is True and "PROMOTED WITH --force" in OutputPaths.at(root).report_txt.read_text()
    )


# --------------------------------------------------------------------------- failures: one line, nothing lost


def _mount_tmpfs(where: Path, size_kb: int) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small disk needs a tmpfs mount, which needs root (run the suite as root to test it)")
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")


@pytest.mark.slow
def test_a_full_disk_ends_in_one_error_line_and_keeps_the_model(
    root: Path,
    good: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, 6 * 1024)
    try:
        small = disk / "root"
        shutil.copytree(root, small)
        before = published_state(small)
        capsys.readouterr()
        # 1. too little space to start: refused before any work, with the estimate
        assert run(good[0], small, *DLIB) == outcome.EXIT_NO_SPACE
        assert "Not enough free disk space" in only_error_line(capsys.readouterr().err)
        # 2. the disk fills up while the new model is written (the estimate let it start)
        monkeypatch.setattr("retraining.pipeline.estimate_output_bytes", lambda *a: 0)
        filler = disk / "filler"
        free = shutil.disk_usage(disk).free
        filler.write_bytes(b"\0" * max(0, free - 48 * 1024))
        # (--force from here: these are the published model's own photos, and an identical re-run publishes nothing)
        assert run(good[0], small, *DLIB, "--force") == outcome.EXIT_NO_SPACE
        line = only_error_line(capsys.readouterr().err)
        assert "The disk is full" in line and "model in service is unchanged" in line
        assert published_state(small) == before
        filler.unlink()
        assert run(good[0], small, *DLIB, "--force") == 0  # space again: the next run clears the half-written stage
        assert not OutputPaths.at(small).staging_dir.exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_ctrl_c_ends_in_one_error_line_exit_130_and_keeps_the_model(root: Path, tmp_path: Path) -> None:
    data = _tiny_orl(tmp_path / "data")
    before = published_state(root)
    proc, _, log = start_until("extract", data, root, tmp_path, "--workers", "0")  # waits mid-extraction
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == outcome.EXIT_INTERRUPTED
    err = log.read_text(errors="replace")
    assert only_error_line(err).startswith("ERROR: Stopped (Ctrl+C). The model in service is unchanged.")
    assert "Traceback" not in err
    assert published_state(root) == before


@pytest.mark.slow
def test_every_input_is_reported_a_linked_student_folder_too(tmp_path: Path) -> None:
    data = _tiny_orl(tmp_path / "data")
    (data / "STU007_X").symlink_to(data / "STU003_Person_3", target_is_directory=True)
    (data / "STU001_Person_1" / "notes.txt").write_text("glasses since May")
    (data / "STU002_Person_2" / "2025").mkdir()
    shutil.copyfile(ORL / "s2" / "9.pgm", data / "STU002_Person_2" / "2025" / "9.pgm")
    (data / "STU002_Person_2" / ".thumbnails").mkdir()
    (data / "class_list.xlsx").write_bytes(b"PK")
    root = tmp_path / "root"
    assert run(data, root, "--detector", "mtcnn", "--embedder", "dlib", "--device", "cpu", "--quiet") == 0
    paths = OutputPaths.at(root)
    rows = {r["path"]: r for r in _csv(paths.inputs_csv)}

    def row(*parts: str) -> dict[str, str]:
        return rows[str(data.joinpath(*parts))]

    assert row("STU007_X")["status"] == "skipped" and "link to a folder" in row("STU007_X")["reason"]
    assert row("STU001_Person_1", "notes.txt")["status"] == "ignored"
    assert ".txt" in row("STU001_Person_1", "notes.txt")["reason"]
    assert (
        row("class_list.xlsx")["status"] == "ignored" and "not in a student folder" in row("class_list.xlsx")["reason"]
    )
    assert row("STU001_Person_1")["status"] == "used" and row("STU003_Person_3", "1.pgm")["status"] == "used"
    assert (
        row("STU002_Person_2", "2025")["status"] == "used"
        and row("STU002_Person_2", "2025", "9.pgm")["status"] == "used"
    )
    assert row("STU002_Person_2", ".thumbnails")["status"] == "ignored"
    on_disk = set()
    for folder, dirs, files in os.walk(data):  # links to folders are listed, not entered
        on_disk |= {os.path.join(folder, name) for name in dirs + files}
    assert on_disk <= set(rows)  # every file and folder is accounted for
    report = paths.report_txt.read_text()
    assert "STU007_X: is a link to a folder" in report and "notes.txt: not a photo or video type" in report
    meta = json.loads(paths.metrics_json.read_text())
    assert meta["quality_gate"]["passed"] is True


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tiny_orl(data: Path) -> Path:
    require_shared_data()
    for k in (1, 2, 3):
        folder = data / f"STU{k:03d}_Person_{k}"
        folder.mkdir(parents=True)
        for i in (1, 2, 3):
            shutil.copyfile(ORL / f"s{k}" / f"{i}.pgm", folder / f"{i}.pgm")
    return data


OFFLINE = ["--detector", "mtcnn", "--embedder", "dlib", "--device", "cpu", "--quiet"]


@pytest.mark.slow
def test_a_read_only_output_folder_ends_in_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _tiny_orl(tmp_path / "data")
    disk = tmp_path / "ro"
    _mount_tmpfs(disk, 1024)
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        assert run(data, disk, *OFFLINE) == outcome.EXIT_NO_SPACE
        line = only_error_line(capsys.readouterr().err)
        assert line.startswith(f"ERROR: Cannot write ({disk / 'backend'}") and "--output-root" in line
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("problem", "code", "says"),
    [
        (MemoryError(), outcome.EXIT_NO_MEMORY, "ran out of memory"),
        (
            RuntimeError("solver diverged"),
            outcome.EXIT_UNEXPECTED,
            "Unexpected problem (RuntimeError: solver diverged)",
        ),
    ],
    ids=["out_of_memory", "unexpected"],
)
def test_memory_and_unexpected_errors_end_in_one_line_with_the_traceback_in_a_file(
    problem: BaseException,
    code: int,
    says: str,
    copy_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _tiny_orl(tmp_path / "data")
    before = published_state(copy_root)

    def fail(*args: object, **kwargs: object) -> None:
        raise problem

    monkeypatch.setattr("retraining.pipeline.fit_model", fail)
    capsys.readouterr()
    assert run(data, copy_root, *OFFLINE) == code
    line = only_error_line(capsys.readouterr().err)
    log = OutputPaths.at(copy_root).error_log
    assert says in line and "model in service is unchanged" in line and str(log) in line
    assert "Traceback" in log.read_text() and type(problem).__name__ in log.read_text()
    assert published_state(copy_root) == before
