"""Crash-safe file writing: a temp file beside the target, fsync, then an atomic rename."""

from __future__ import annotations

import codecs
import contextlib
import functools
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import joblib

from .errors import DiskSpaceError

#: ``errors=`` for text files that may hold file names: a name that is not valid UTF-8 (Python keeps
#: its bytes as surrogates) is written as ``\xff`` escapes instead of failing the whole write.
ESCAPE = "smartattendance-escape"


def shown(text: str) -> str:
    """``text`` with the bytes of a name that is not valid UTF-8 as ``\\xff`` escapes (printable)."""
    if not _has_surrogates(text):
        return text
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeError:  # a lone surrogate that no file system byte maps to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _has_surrogates(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def _escape_error(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    return shown(err.object[err.start : err.end]), err.end


codecs.register_error(ESCAPE, _escape_error)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask (read once: reading it means setting it for an instant)."""
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then ``os.replace`` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600: the backend may run as another user and must be able to READ
        # the model; writing stays with the admin (umask decides, like any normal file)
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


def joblib_bytes(obj: Any) -> bytes:
    """``obj`` as a joblib pickle, in memory (written with :func:`atomic_write_bytes`)."""
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


def inside(path: Path, root: Path) -> bool:
    """True when ``path`` resolves to somewhere under ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def remove(path: Path) -> None:
    """Delete a file, link or folder tree."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def files_under(directory: Path) -> list[str]:
    """Relative POSIX paths of every regular file under ``directory`` (sorted)."""
    if not directory.is_dir():
        return []
    return sorted(
        p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() and not p.is_symlink()
    )


#: Upper bound of one photo's share of the run's output: its embedding (512 float32) in X.npy
#: and in the embedding cache, plus the cache key and the per-photo lines of the reports.
BYTES_PER_PHOTO = 2 * 512 * 4 + 1024
#: Model pickles per student (classifier, scaler, open-set centres: a few 512-d float64 rows).
BYTES_PER_STUDENT = 8 * 512 * 8
#: Plots, reports, manifest and the rest, whatever the data.
FIXED_BYTES = 20 * 1024 * 1024


def estimate_output_bytes(n_photos: int, n_students: int) -> int:
    """What one run writes at most (staging, cache, reports): checked before the long work starts."""
    return FIXED_BYTES + n_photos * BYTES_PER_PHOTO + n_students * BYTES_PER_STUDENT


def require_free_space(folder: Path, needed: int) -> None:
    """Raise :class:`DiskSpaceError` unless ``folder``'s disk has ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskSpaceError(
            f"Not enough free disk space for {folder}: this run writes about {_mb(needed)} (embeddings, cache, "
            f"reports, model) and only {_mb(free)} are free. Nothing was changed; the model in service is unchanged. "
            "Free some space, or use --output-root on another disk, and run again."
        )


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.0f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"
