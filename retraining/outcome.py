"""Every way a run can end, as one line a teacher can act on and a documented exit code.

The CLI catches whatever stopped the run and asks :func:`failure` what to say. Problems we
know (data, weights, lock, a refused model, a full disk, no write permission, no memory,
Ctrl+C) get their own sentence; anything else gets a generic one. Unless the message says
all there is to know, the full traceback goes to a log file that the line names.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

from backend.recognizer.errors import RetrainError
from backend.recognizer.paths import OutputPaths

from .errors import DiskSpaceError, ModelRefusedError
from .files import ESCAPE, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE

log = logging.getLogger(__name__)

EXIT_OK = 0
#: A problem the message explains: the data folder, weight files, another run, a failed check.
EXIT_ERROR = 1
#: Wrong command-line options (argparse).
EXIT_USAGE = 2
#: The quality gate refused the new model.
EXIT_REFUSED = 3
#: The disk is full, or the output folder cannot be written.
EXIT_NO_SPACE = 4
#: The computer ran out of memory.
EXIT_NO_MEMORY = 5
#: Anything unexpected (a bug): the traceback is in the log file.
EXIT_UNEXPECTED = 70
#: Stopped with Ctrl+C.
EXIT_INTERRUPTED = 130

KEPT = "The model in service is unchanged."
NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


@dataclass(frozen=True)
class Failure:
    code: int
    message: str  # the text after "ERROR: "


def failure(err: BaseException, paths: OutputPaths) -> Failure:
    """The exit code and the one line for whatever ended the run."""
    if isinstance(err, KeyboardInterrupt):
        return Failure(
            EXIT_INTERRUPTED,
            f"Stopped (Ctrl+C). {KEPT} Anything this run left half-done is cleared by the next run.",
        )
    if isinstance(err, ModelRefusedError):
        return Failure(EXIT_REFUSED, str(err))
    if isinstance(err, DiskSpaceError):
        return Failure(EXIT_NO_SPACE, str(err))
    if isinstance(err, RetrainError):
        return Failure(EXIT_ERROR, str(err))
    code, message = _logged(err, paths)
    return Failure(code, f"{message}{write_error_log(err, paths)}")


def _logged(err: BaseException, paths: OutputPaths) -> tuple[int, str]:
    """Exit code and message, up to the error log's path, of a failure whose traceback is logged."""
    if isinstance(err, MemoryError):
        return EXIT_NO_MEMORY, (
            f"The computer ran out of memory. {KEPT} Close other programs, or run again with a smaller "
            "--batch-size (e.g. 8) and --workers 1. Details: "
        )
    if isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
        return EXIT_NO_SPACE, (
            f"The disk is full{_on(err)}. {KEPT} Free some space (or use --output-root on another disk) and run "
            "again. Details: "
        )
    if isinstance(err, OSError) and err.errno in NOT_WRITABLE_ERRNOS:
        return EXIT_NO_SPACE, (
            f"Cannot write{_on(err)}: {err.strerror}. {KEPT} Run as a user who may write to {paths.root}, or choose "
            "another folder with --output-root. Details: "
        )
    return EXIT_UNEXPECTED, (
        f"Unexpected problem ({type(err).__name__}: {err}). {KEPT} Please send the details file to whoever maintains "
        "this installation: "
    )


def _on(err: OSError) -> str:
    return f" ({err.filename})" if err.filename else ""


def write_error_log(err: BaseException, paths: OutputPaths) -> Path:
    """Write the traceback to ``models/retrain_error.log`` (or the temp folder if that fails).

    It names students' photos: owner-only (0600), never written through a link, and in the shared
    temp folder never into a file that another account made.
    """
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    for target in (paths.error_log, Path(tempfile.gettempdir()) / "smartattendance_retrain_error.log"):
        try:
            if not target.parent.is_dir():  # models/ (the output root itself is not made for a log)
                os.mkdir(target.parent, PRIVATE_DIR_MODE)
            _write_private(target, text.encode("utf-8", errors=ESCAPE))
            return target
        except OSError:
            continue
    log.warning("Could not write a details file anywhere; the details:\n%s", text)
    return Path("(not written: no writable folder)")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as an owner-only file (an existing one is made 0600 first)."""
    no_link = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)  # nor wait on a FIFO put there
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | no_link | getattr(os, "O_BINARY", 0), PRIVATE_FILE_MODE)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(errno.EINVAL, "not a regular file", str(path))
        if hasattr(os, "fchmod"):  # POSIX
            if info.st_uid != os.getuid():
                raise PermissionError(errno.EACCES, "made by another account", str(path))
            os.fchmod(fd, PRIVATE_FILE_MODE)
        os.ftruncate(fd, 0)
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
    finally:
        os.close(fd)
