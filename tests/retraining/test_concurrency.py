"""Two retraining runs at once, and locks left behind by runs that died (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OFFLINE_ARGS, ROOT, tree_digest
from crash_harness import release_file
from test_crash_safety import start_until, tiny_tree

import retrain_model
from backend.recognizer import FaceRecognizer, manifest
from backend.recognizer.paths import OutputPaths
from retraining import lock, publish
from retraining.errors import LockError

pytestmark = pytest.mark.slow  # end-to-end runs of retrain_model.py


def test_second_run_is_refused_clearly_then_waits_with_wait(
    tmp_path: Path, copy_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = OutputPaths.at(copy_root)
    data = tiny_tree(tmp_path / "data")
    old_version = FaceRecognizer.load(copy_root).model_version
    # run A (a real child process) holds the lock, paused just before training until we release it
    a, a_marker, a_log = start_until("hold-train", data, copy_root, tmp_path)
    try:
        before = tree_digest(paths.backend_models / "Classifier")
        capsys.readouterr()
        # run B without --wait: stops at once, says why and what to do, changes nothing
        code = retrain_model.main(["--data-dir", str(data), "--output-root", str(copy_root), "--quiet", *OFFLINE_ARGS])
        err = capsys.readouterr().err
        assert code == 1
        assert "Another retraining run is in progress" in err and f"pid {a.pid}" in err
        assert "without changing anything" in err and "--wait" in err
        assert tree_digest(paths.backend_models / "Classifier") == before
        assert json.loads(paths.lock_owner_file.read_text())["pid"] == a.pid  # B did not take or drop A's lock
        # run B with --wait: waits for A to publish, then publishes its own model on top (--force: A's model
        # was trained from the same photos, and an identical re-run publishes nothing)
        release_file(a_marker).touch()  # A carries on only now, whatever time B's first attempt took
        argv = ["--data-dir", str(data), "--output-root", str(copy_root), "--quiet", "--wait", "300", "--force"]
        code = retrain_model.main([*argv, *OFFLINE_ARGS])
        assert code == 0, capsys.readouterr().err[-3000:]
    finally:
        release_file(a_marker).touch()
        if a.poll() is None:
            a.wait(timeout=300)
    assert a.returncode == 0, a_log.read_text(errors="replace")[-3000:]
    final = FaceRecognizer.load(copy_root, require_manifest=True)
    manifest.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)
    (kept,) = publish.list_versions(paths)  # A's model, replaced by B's and kept for rollback
    a_version = json.loads((kept / "Classifier" / "manifest.json").read_text())["model_version"]
    assert len({old_version, a_version, final.model_version}) == 3
    assert not paths.lock_owner_file.exists()


def _lock_holder(paths: OutputPaths) -> subprocess.Popen:
    """A real process that takes the retraining lock and keeps it (until killed)."""
    code = (
        "import sys, time; from retraining.lock import RetrainLock; "
        "from backend.recognizer.paths import OutputPaths; "
        "held = RetrainLock(OutputPaths.at(sys.argv[1]), timeout=0); held.acquire(); print('locked', flush=True); "
        "time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(paths.root)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_of_a_sigkilled_run_is_released_by_the_os(tmp_path: Path) -> None:
    paths = OutputPaths.at(tmp_path / "out")
    holder = _lock_holder(paths)
    try:
        with pytest.raises(LockError, match=f"Another retraining run is in progress \\(pid {holder.pid} "):
            lock.RetrainLock(paths, timeout=0.3, poll=0.05).acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert json.loads(paths.lock_owner_file.read_text())["pid"] == holder.pid  # left behind by the killed run
    with lock.RetrainLock(paths, timeout=0):  # no waiting, no guessing: the OS dropped the lock with its process
        assert json.loads(paths.lock_owner_file.read_text())["pid"] == os.getpid()
