"""Two retraining runs at once, and locks left behind by runs that died (real processes)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OFFLINE_ARGS, ROOT, tree_digest
from test_crash_safety import start_until, tiny_tree

import retrain_model
from backend.recognizer import FaceRecognizer, artifacts
from backend.recognizer.errors import LockError
from backend.recognizer.paths import OutputPaths


def test_second_run_is_refused_clearly_then_waits_with_wait(
    tmp_path: Path, copy_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = OutputPaths.at(copy_root)
    data = tiny_tree(tmp_path / "data")
    old_version = FaceRecognizer.load(copy_root).model_version
    # run A (a real child process) holds the lock, paused for a few seconds just before training
    a, _, a_log = start_until("hold-train", data, copy_root, tmp_path, env={"CRASH_HARNESS_HOLD_S": "6"})
    try:
        before = tree_digest(paths.backend_models / "Classifier")
        capsys.readouterr()
        # run B without --wait: stops at once, says why and what to do, changes nothing
        code = retrain_model.main(["--data-dir", str(data), "--output-root", str(copy_root), "--quiet", *OFFLINE_ARGS])
        err = capsys.readouterr().err
        assert code == 1
        assert "Another retraining run is in progress" in err and f"pid {a.pid}" in err
        assert "without changing anything" in err and str(paths.lock_file) in err
        assert tree_digest(paths.backend_models / "Classifier") == before
        assert json.loads(paths.lock_file.read_text())["pid"] == a.pid  # B did not take or drop A's lock
        # run B with --wait: waits for A to publish, then publishes its own model on top
        code = retrain_model.main(
            ["--data-dir", str(data), "--output-root", str(copy_root), "--quiet", "--wait", "300", *OFFLINE_ARGS]
        )
        assert code == 0, capsys.readouterr().err[-3000:]
    finally:
        if a.poll() is None:
            a.wait(timeout=300)
    assert a.returncode == 0, a_log.read_text(errors="replace")[-3000:]
    final = FaceRecognizer.load(copy_root, require_manifest=True)
    artifacts.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)
    (kept,) = artifacts.list_versions(paths)  # A's model, replaced by B's and kept for rollback
    a_version = json.loads((kept / "Classifier" / "manifest.json").read_text())["model_version"]
    assert len({old_version, a_version, final.model_version}) == 3
    assert not paths.lock_file.exists()


def _lock_holder(paths: OutputPaths) -> subprocess.Popen:
    """A real process that takes the retraining lock and keeps it (until killed)."""
    code = (
        "import sys, time; from backend.recognizer.artifacts import RetrainLock; "
        "from backend.recognizer.paths import OutputPaths; "
        "RetrainLock(OutputPaths.at(sys.argv[1]), timeout=0).acquire(); print('locked', flush=True); "
        "time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(paths.root)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_of_a_sigkilled_run_is_detected_and_cleared(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = OutputPaths.at(tmp_path / "out")
    holder = _lock_holder(paths)
    try:
        with pytest.raises(LockError, match="Another retraining run is in progress"):
            artifacts.RetrainLock(paths, timeout=0.3, poll=0.05).acquire()
        assert artifacts.publish_in_progress(paths)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert json.loads(paths.lock_file.read_text())["pid"] == holder.pid  # left behind by the killed run
    assert not artifacts.publish_in_progress(paths)
    with caplog.at_level(logging.WARNING), artifacts.RetrainLock(paths, timeout=0):
        assert json.loads(paths.lock_file.read_text())["pid"] == os.getpid()
    assert "stale retraining lock" in caplog.text and f"pid {holder.pid}" in caplog.text
    assert not paths.lock_file.exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("case", ["pid_reused_by_another_process", "machine_rebooted_since"])
def test_lock_whose_pid_now_belongs_to_someone_else_is_stale(tmp_path: Path, case: str) -> None:
    """After a power cut the lock's pid may be alive again — as an unrelated process. Still stale."""
    paths = OutputPaths.at(tmp_path / "out")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = {
            "pid": other.pid,
            "host": socket.gethostname(),
            "started_at": "earlier",
            "token": "x",
            "boot_id": artifacts._boot_id(),
            "proc_start": artifacts._process_start(other.pid),
        }
        paths.lock_file.parent.mkdir(parents=True)
        paths.lock_file.write_text(json.dumps(info))
        assert artifacts.publish_in_progress(paths)  # the genuine owner: alive
        with pytest.raises(LockError):
            artifacts.RetrainLock(paths, timeout=0).acquire()
        if case == "pid_reused_by_another_process":
            info["proc_start"] = "1"  # the run that wrote the lock started at another time
        else:
            info["boot_id"] = "an-earlier-boot"
        paths.lock_file.write_text(json.dumps(info))
        assert not artifacts.publish_in_progress(paths)
        with artifacts.RetrainLock(paths, timeout=0):
            assert json.loads(paths.lock_file.read_text())["pid"] == os.getpid()
    finally:
        other.kill()
        other.wait()
