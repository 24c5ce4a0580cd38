"""Only one retraining run publishes at a time: an OS file lock, released when its process dies.

``filelock`` holds an OS lock (``flock`` on Linux/macOS, ``msvcrt`` on Windows) on
``backend/models/.retrain.lock``. The operating system drops it when the holding process
ends for any reason (crash, SIGKILL, power cut), so there is never a stale lock to guess
about. Who holds it is recorded beside it (``.retrain.owner.json``) only to name the other
run in the message of a run that has to stop.

Every command that changes the output layout takes this lock, so taking it is where the layout
is checked for links (:func:`~retraining.publish.refuse_links`), before the lock file itself is
created: nothing is ever written or deleted through a link to somewhere outside the output root.
Taking and releasing it also tightens the modes of everything under the output folders
(:func:`~retraining.modes.restrict_modes`): owner-only, except the published model.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import filelock

from backend.recognizer.paths import OutputPaths

from .errors import LockError
from .files import PRIVATE_FILE_MODE, SHARED_DIR_MODE, atomic_write_json, private_mkdir
from .modes import restrict_modes
from .publish import recover, refuse_links

log = logging.getLogger(__name__)


class RetrainLock:
    """``with RetrainLock(paths, timeout=60):`` waits up to ``timeout`` seconds (0: one try), else :class:`LockError`.

    Taking it first refuses a link in the output layout (:func:`~retraining.publish.refuse_links`).
    """

    def __init__(self, paths: OutputPaths, timeout: float = 60.0, poll: float = 0.2) -> None:
        self.paths = paths
        self.timeout = max(0.0, timeout)
        self.poll = poll
        self._lock = filelock.FileLock(paths.lock_file, mode=PRIVATE_FILE_MODE, thread_local=False)

    def acquire(self) -> None:
        refuse_links(self.paths)  # before the lock file is created: nothing is written through a link
        private_mkdir(self.paths.lock_file.parent, SHARED_DIR_MODE)  # backend/models: the way to Classifier/
        try:
            self._lock.acquire(timeout=self.timeout, poll_interval=self.poll)
        except filelock.Timeout:
            raise LockError(
                f"Another retraining run is in progress ({_describe(lock_owner(self.paths))}), so this one stopped "
                "without changing anything. Wait for it to finish and try again, or start this run with "
                "--wait SECONDS to wait for it."
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            atomic_write_json(self.paths.lock_owner_file, info)
        except OSError as err:  # only the message of a waiting run needs it
            log.debug("could not record the lock owner: %s", err)
        self._restrict()  # what an earlier release or a crashed run left readable by others

    def release(self) -> None:
        if not self._lock.is_locked:
            return
        with contextlib.suppress(OSError):
            self.paths.lock_owner_file.unlink()
        try:
            self._restrict()  # still holding the lock: no other run is changing the layout
        finally:
            self._lock.release()

    def _restrict(self) -> None:
        try:
            changed = restrict_modes(self.paths)
        except Exception as err:  # never fatal: the next lock-taking command tries again
            log.warning("Could not check who may read the output folders (%s)", err)
            return
        if changed:
            log.debug("restricted who may read %d files and folders under %s", changed, self.paths.root)

    def __enter__(self) -> RetrainLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked(paths: OutputPaths, timeout: float, logger: logging.Logger | None = None) -> Iterator[list[str]]:
    """``with locked(paths, timeout) as notes:`` takes :class:`RetrainLock`, first finishes or undoes an
    interrupted publish (:func:`~retraining.publish.recover`), logs each of its notes as a warning (on
    ``logger``, this module's by default) and yields them."""
    with RetrainLock(paths, timeout=timeout):
        notes = recover(paths)
        for note in notes:
            (logger or log).warning("%s", note)
        yield notes


def lock_owner(paths: OutputPaths) -> dict[str, Any] | None:
    """Who holds the retraining lock (``{"pid", "host", "started_at"}``), as recorded; None if unknown."""
    try:
        info = json.loads(paths.lock_owner_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _describe(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "owner unknown"
    return f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started_at')}"
