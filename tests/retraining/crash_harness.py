"""Run ``retrain_model.main`` in a child process that stops at a chosen point, so a test can SIGKILL it there.

    python tests/crash_harness.py <point> <marker-file> [retrain_model.py arguments...]

At ``<point>`` the child writes its pid to ``<marker-file>`` and then sleeps forever
(``hold-<point>``: waits until the test creates ``<marker-file>.release``, then carries on;
no time window to race against). Nothing in the product is changed: the hooks wrap module
functions in this process only.

Points, in the order a run reaches them:
  extract        while embedding photos (the 3rd photo is being decoded)
  train          evaluation done, the classifier about to be fitted
  stage          every new file written to backend/models/.staging/, manifest not yet
  swap_archived  publishing: the current Classifier/ moved to versions/, the new one not yet in place
  swap_models    publishing: the new Classifier/ in place, models/ files only partly moved in
  prune          publishing: everything swapped in, old versions and the journal not yet cleaned up

Tests start the child with :func:`start`: the same thing, in a process forked from a server that
has already imported what a run imports (``multiprocessing``'s fork server, started once per test
session). Importing retrain_model, torch, facenet-pytorch, dlib and matplotlib costs ~8 s of CPU,
more than the run itself on 3 tiny photos; the kill tests start six children at once on 2 cores.
The child is still a separate process with its own pid, its own lock and its own files, running
``retrain_model.main`` until the test sends it a real signal.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

#: hold-<point>: the longest wait for the release file (a test that forgets it must not hang forever).
HOLD_MAX_S = 600.0
POINTS = ("extract", "train", "stage", "swap_archived", "swap_models", "prune")


def release_file(marker: Path) -> Path:
    """The file whose creation lets a child held at ``hold-<point>`` carry on."""
    return marker.with_name(marker.name + ".release")


def install(point: str, marker: Path) -> None:
    from retraining import extract, pipeline, publish

    hold = point.startswith("hold-")
    name = point[5:] if hold else point
    if name not in POINTS:
        raise SystemExit(f"unknown point {point!r}; known: {', '.join(POINTS)}")

    def reached() -> None:
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(str(os.getpid()))
        os.replace(tmp, marker)
        if hold:
            release, deadline = release_file(marker), time.monotonic() + HOLD_MAX_S
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            return
        while True:
            time.sleep(3600)

    if name == "extract":
        real_prepare = extract.prepare_crop
        calls = {"n": 0}

        def prepare_crop(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                reached()
            return real_prepare(*args, **kwargs)

        extract.prepare_crop = prepare_crop
    elif name == "train":
        real_fit = pipeline.fit_model

        def fit_model(*args, **kwargs):
            reached()
            return real_fit(*args, **kwargs)

        pipeline.fit_model = fit_model
    elif name == "stage":
        real_manifest = publish.write_manifest

        def write_manifest(*args, **kwargs):
            reached()
            return real_manifest(*args, **kwargs)

        publish.write_manifest = write_manifest
    elif name == "prune":
        real_prune = publish.prune_versions

        def prune_versions(*args, **kwargs):
            reached()
            return real_prune(*args, **kwargs)

        publish.prune_versions = prune_versions
    else:  # the renames of the swap itself
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            real_replace(src, dst, *args, **kwargs)
            s, d = Path(src), Path(dst)
            if name == "swap_archived" and d.name == "Classifier" and d.parent.parent.name == "versions":
                reached()
            elif (
                name == "swap_models"
                and ".staging" in s.parts
                and ".staging" not in d.parts  # not an atomic write inside the stage
                and "models" in s.parts[s.parts.index(".staging") :]
            ):
                reached()  # the first models/ file moved from the stage: the rest are still staged

        os.replace = replace  # this child process only


def run(point: str, marker: Path, argv: list[str]) -> int:
    """``retrain_model.main(argv)`` in this process, stopped at ``point``."""
    # Ctrl+C must raise KeyboardInterrupt as at a terminal, even when the test run itself was started
    # as a background job (the shell then starts it with SIGINT ignored, and Python keeps that)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    install(point, marker)
    import retrain_model

    return retrain_model.main(argv)


def main() -> int:
    point, marker, *argv = sys.argv[1:]
    return run(point, Path(marker), argv)


#: What a run imports, loaded once into the fork server that :func:`start` forks children from.
PRELOAD = [
    "crash_harness",
    "retrain_model",
    "retraining.pipeline",
    "torch",
    "facenet_pytorch",
    "dlib",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
]
_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(PRELOAD)


def _child(point: str, marker: Path, argv: list[str], log: Path, environ: dict[str, str]) -> None:
    """In the forked child: what ``python crash_harness.py point marker argv... > log 2>&1`` would do,
    run from the project root with the test's environment."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(ROOT)
    sys.argv = [__file__, point, str(marker), *argv]
    sys.exit(run(point, marker, argv))


class Child:
    """A child started by :func:`start`, with the ``subprocess.Popen`` methods the tests use."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status; minus the signal's number when a signal ended it (as Popen says it)."""
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(f"crash_harness child {self.pid}", timeout or 0.0)
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start(point: str, marker: Path, argv: list[str], log: Path) -> Child:
    """Start ``retrain_model.main(argv)`` in a child process that stops at ``point`` (its output in ``log``)."""
    process = _FORKSERVER.Process(
        target=_child, args=(point, Path(marker), list(argv), Path(log), dict(os.environ)), daemon=True
    )  # daemon: one a failed test left running is ended when the test session ends
    process.start()
    return Child(process)


if __name__ == "__main__":
    sys.exit(main())
