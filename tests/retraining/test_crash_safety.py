"""Kill safety with a REAL SIGKILL: ``retrain_model.py`` runs in a child process (tests/retraining/crash_harness.py
stops it at a chosen point) and is killed there. Afterwards the backend's loader must load a
complete, consistent model — the previous one or the new one, never a mix — and the next run
must succeed (clearing the dead run's lock and finishing or discarding its half-done work).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import crash_harness
import numpy as np
import pytest
from conftest import OFFLINE_ARGS, ORL, require_shared_data, tree_digest
from crash_harness import Child

import retrain_model
from backend.recognizer import FaceRecognizer, journal, manifest
from backend.recognizer.paths import OutputPaths
from retraining import publish

pytestmark = pytest.mark.slow  # end-to-end runs of retrain_model.py

#: Where the kill lands, and which model must be live afterwards.
KILL_POINTS = {
    "extract": "old",  # photos half embedded
    "train": "old",  # classifier being fitted
    "stage": "old",  # new files staged, no manifest yet
    "swap_archived": "new",  # publishing: old Classifier/ moved away, new one not yet in (no Classifier/ at all!)
    "swap_models": "new",  # publishing: new Classifier/ in, models/ half old, half new
    "prune": "new",  # publishing: swapped, journal and old versions not yet cleaned up
}
MARKER_TIMEOUT_S = 240


def tiny_tree(dst: Path) -> Path:
    """3 students × 2 ORL photos (people 31-33: not in the published model, so the new model differs)."""
    require_shared_data()
    for k in (31, 32, 33):
        folder = dst / f"STU{k:03d}_Person_{k}"
        folder.mkdir(parents=True)
        for i in (1, 2):
            shutil.copyfile(ORL / f"s{k}" / f"{i}.pgm", folder / f"{i}.pgm")
    return dst


def start_child(point: str, data: Path, root: Path, workdir: Path, *extra: str) -> tuple[Child, Path, Path]:
    """Start retrain_model.py in a child that stops at ``point`` (see crash_harness.py)."""
    marker = workdir / f"{point}.reached"
    log = workdir / f"{point}.log"
    argv = ["--data-dir", str(data), "--output-root", str(root), "--quiet", *OFFLINE_ARGS, *extra]
    return crash_harness.start(point, marker, argv, log), marker, log


def wait_until_reached(proc: Child, marker: Path, log: Path, point: str) -> None:
    deadline = time.monotonic() + MARKER_TIMEOUT_S
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(
                f"the child ended (exit {proc.returncode}) before reaching {point}:\n"
                + log.read_text(errors="replace")[-4000:]
            )
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"the child did not reach {point} within {MARKER_TIMEOUT_S} s")
        time.sleep(0.05)
    assert int(marker.read_text()) == proc.pid


def start_until(point: str, data: Path, root: Path, workdir: Path, *extra: str) -> tuple[Child, Path, Path]:
    """Start retrain_model.py in a child stopped at ``point``; return once it is there."""
    proc, marker, log = start_child(point, data, root, workdir, *extra)
    wait_until_reached(proc, marker, log, point)
    return proc, marker, log


def sigkill(proc: Child) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


@dataclass
class Killed:
    root: Path
    data: Path
    pid: int
    old_version: str
    old_classifier: dict[str, str]
    old_models: dict[str, str]
    photos: dict[str, str]


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory, published_root: Path) -> dict[str, Killed]:
    """Every kill point at once: one output root and one child per point, started together (the
    children run in parallel), each SIGKILLed the moment it reaches its point."""
    base = tmp_path_factory.mktemp("killed")
    data = tiny_tree(base / "data")
    running = {}
    out: dict[str, Killed] = {}
    try:
        for point in KILL_POINTS:
            root = base / point
            shutil.copytree(published_root, root, symlinks=True)
            paths = OutputPaths.at(root)
            out[point] = Killed(
                root,
                data,
                0,
                _version(paths),
                tree_digest(paths.classifier_dir),
                _models_digest(paths),
                tree_digest(data),
            )
            running[point] = start_child(point, data, root, base)
        for point, (proc, marker, log) in running.items():
            wait_until_reached(proc, marker, log, point)
            sigkill(proc)
            out[point].pid = proc.pid
    finally:
        for proc, _, _ in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


def _models_digest(paths: OutputPaths) -> dict[str, str]:
    """models/ minus the embedding cache (a disposable, separately verified file the run may refresh early)."""
    return {k: v for k, v in tree_digest(paths.models_dir).items() if Path(k).parts[0] != "cache"}


def _version(paths: OutputPaths) -> str:
    return json.loads(paths.manifest.read_text(encoding="utf-8"))["model_version"]


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_leaves_a_loadable_model_and_the_next_run_succeeds(
    point: str, killed: dict[str, Killed], capsys: pytest.CaptureFixture[str]
) -> None:
    k = killed[point]
    copy_root, data, old_version = k.root, k.data, k.old_version
    paths = OutputPaths.at(copy_root)

    # the dead run's lock file and owner record are still there; the OS lock died with the run
    assert json.loads(paths.lock_owner_file.read_text())["pid"] == k.pid
    if point == "swap_archived":
        assert not paths.classifier_dir.exists()  # the worst moment: no Classifier/ on disk at all
    if point == "swap_models":  # models/ really is half old, half new right now
        with pytest.raises(Exception, match="does not match the model manifest|missing"):
            manifest.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)

    # the backend loads a complete, verified model: the previous one or the new one
    recognizer = FaceRecognizer.load(copy_root, require_manifest=True)
    students = set(recognizer.metadata["students"])
    if KILL_POINTS[point] == "old":
        assert recognizer.model_version == old_version
        assert len(students) == 12
        assert tree_digest(paths.classifier_dir) == k.old_classifier
        assert _models_digest(paths) == k.old_models
    else:
        assert recognizer.model_version != old_version
        assert students == {"STU031", "STU032", "STU033"}
        # the backend needs only Classifier/; the models/ side is finished by the next run's recovery
    vec = np.zeros((1, recognizer.metadata["embedding_dim"]), np.float32)
    vec[0, 0] = 1.0
    assert recognizer.classify(vec)[0].top_k[0].student_id in students
    assert tree_digest(data) == k.photos
    capsys.readouterr()

    # the next run: takes the lock at once, recovers, publishes, and everything verifies (--force: where the
    # killed run's model is in place, it was trained from these very photos, and an identical re-run publishes nothing)
    argv = ["--data-dir", str(data), "--output-root", str(copy_root), "--quiet", "--force", *OFFLINE_ARGS]
    code = retrain_model.main(argv)
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    manifest.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)
    final = FaceRecognizer.load(copy_root, require_manifest=True)
    assert set(final.metadata["students"]) == {"STU031", "STU032", "STU033"}
    assert final.model_version not in (old_version, recognizer.model_version)
    assert not paths.lock_owner_file.exists()
    assert not paths.staging_dir.exists()
    assert not (paths.backend_models / journal.JOURNAL_NAME).exists()
    assert len(publish.list_versions(paths)) == 1  # --keep-versions 1
    assert tree_digest(data) == k.photos
    # and --rollback still restores the model that was live before
    assert retrain_model.main(["--output-root", str(copy_root), "--rollback"]) == 0
    assert FaceRecognizer.load(copy_root, require_manifest=True).model_version == recognizer.model_version
