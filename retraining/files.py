"""Crash-safe file writing: a temp file beside the target, fsync, then an atomic rename."""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import functools
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import joblib

from backend.recognizer.paths import CLASSIFIER_DIR_NAME

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
    """Write ``data`` to a temp file beside ``path``, fsync it, then ``os.replace`` it into place.

    The file is owner-only (0600), never readable by others even for a moment; in a ``Classifier/``
    folder it is 0640 (umask permitting): the web backend may run as another account, in the
    folder's group, and must READ the model. Missing folders are made with :func:`private_mkdir`.
    """
    private_mkdir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600
    try:
        if path.parent.name == CLASSIFIER_DIR_NAME:
            os.chmod(tmp, SHARED_FILE_MODE & ~_umask())
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


#: Modes of what the suite writes, before the umask (which can only narrow them): owner only, except
#: the published model, which the backend's account (the folder's group) reads. See retraining/modes.py.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
SHARED_FILE_MODE = 0o640
SHARED_DIR_MODE = 0o750


def private_mkdir(path: Path, mode: int = PRIVATE_DIR_MODE) -> None:
    """``mkdir -p path``: every folder it creates gets ``mode`` (owner only by default), a folder
    named ``Classifier`` :data:`SHARED_DIR_MODE`. Folders that exist are left as they are."""
    missing: list[Path] = []
    p = path
    while not os.path.lexists(p) and p.parent != p:
        missing.append(p)
        p = p.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, SHARED_DIR_MODE if folder.name == CLASSIFIER_DIR_NAME else mode)
        except FileExistsError:  # made meanwhile by another process: fine if it is a folder
            if not folder.is_dir():
                raise
    if not missing and not path.is_dir():
        raise FileExistsError(errno.EEXIST, "not a folder", str(path))


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


# --------------------------------------------------------------------------- CSV

#: First characters that make a spreadsheet (Excel, LibreOffice, Google Sheets) read a cell as a
#: formula, or that hide one behind them (OWASP "CSV injection"): a student folder named ``=1+1``.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(cell: object) -> object:
    """``cell`` as it goes into one of our CSV files: text that a spreadsheet would run as a formula
    gets a leading ``'`` (shown as plain text there); numbers we write (``-3``) stay numbers."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a CSV of names, paths and reasons: UTF-8 (a name that is not valid UTF-8 escaped, see
    :data:`ESCAPE`), every text cell passed through :func:`csv_safe`."""
    with open(path, "w", newline="", encoding="utf-8", errors=ESCAPE) as fh:
        writer = csv.writer(fh)
        writer.writerow([csv_safe(c) for c in header])
        writer.writerows([csv_safe(c) for c in row] for row in rows)
