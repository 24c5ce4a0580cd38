"""How long face data stays, and what may be published again.

- The embedding cache keeps only photos that are in the data folder now: a command that
  changes the published model (a run, ``--promote``, ``--rollback``, ``--erase``) rewrites it
  without the rest.
- ``candidate/`` and ``rejected/`` models do not outlive the next published model, unless the
  user asks to keep them (``--keep-unpublished``).
- No command publishes a model holding a student who was erased, or (without ``--force``)
  one whose photo folder is gone: :func:`refuse_gone_students`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from backend.recognizer.errors import ImageError
from backend.recognizer.hashing import sha256_bytes
from backend.recognizer.images import read_photo
from backend.recognizer.paths import ModelFolder, OutputPaths

from .cache import rewrite_cache
from .dataset import HIDDEN_JUNK, DatasetIndex, index_dataset, parse_folder_name
from .errors import DatasetError, PublishError
from .face_data import erased_ids, students_in
from .files import remove
from .video import clip_digest

log = logging.getLogger(__name__)


def enrolled_folders(data_dir: Path) -> dict[str, str] | None:
    """Student id → folder name of every student folder in ``data_dir`` (None when there is no such folder).

    Only the folder names are read: a student is enrolled while their folder is there."""
    if not data_dir.is_dir():
        return None
    out: dict[str, str] = {}
    for entry in sorted(data_dir.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.lower() in HIDDEN_JUNK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            out.setdefault(parse_folder_name(entry.name)[0], entry.name)
    return out


def recorded_data_dir(folder: ModelFolder) -> Path | None:
    """The data folder a model was trained from, as its ``model.json`` records it."""
    try:
        data = json.loads(folder.model_json.read_text(encoding="utf-8"))
        recorded = data["dataset"]["data_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(recorded) if isinstance(recorded, str) and recorded else None


def refuse_gone_students(
    folder: ModelFolder, what: str, paths: OutputPaths, data_dir: Path | None, *, force: bool
) -> None:
    """Raise :class:`PublishError` if publishing ``folder`` would bring back a student who was erased
    (always) or whose photo folder is gone (unless ``force``). ``data_dir`` None: the model's own."""
    held = students_in(folder)
    erased = sorted(held & erased_ids(paths))
    if erased:
        ids = " ".join(f"--erase {sid}" for sid in erased)
        raise PublishError(
            f"{what} holds {', '.join(erased)}, whose face data was erased on request: it is never published "
            f"again. Nothing was changed. Remove it with python retrain_model.py {ids}, and retrain instead."
        )
    if force:
        return
    where = data_dir or recorded_data_dir(folder)
    enrolled = enrolled_folders(where) if where is not None else None
    if enrolled is None:
        raise PublishError(
            f"Cannot check which students of {what} are still enrolled: the data folder "
            f"{where or '(not recorded in the model)'} is not there. Nothing was changed. Pass --data-dir with the "
            "student folders, or --force to publish it anyway."
        )
    gone = sorted(held - set(enrolled))
    if gone:
        ids = " ".join(f"--erase {sid}" for sid in gone)
        raise PublishError(
            f"{what} holds {len(gone)} student(s) whose photo folder is no longer in {where}: {', '.join(gone)}. "
            "Publishing it would enrol them again, so nothing was changed. If they left, erase their data with "
            f"python retrain_model.py {ids}; if their folders were moved by mistake, put them back; or publish it "
            "anyway with --force."
        )


def photo_digests(index: DatasetIndex) -> list[tuple[str, str, str, str]]:
    """(student id, name, path in the data folder, SHA-256 of the bytes) of every photo, and
    ("", "", path, why) of every entry the index skipped. A photo that cannot be read counts by its reason."""
    out: list[tuple[str, str, str, str]] = []
    for record in index.records:
        try:  # a clip is hashed in chunks: it may be hundreds of megabytes
            digest = clip_digest(record.path) if record.is_clip else sha256_bytes(read_photo(record.path))
        except ImageError as err:
            digest = f"unreadable: {err}"
        out.append((record.student_id, record.student_name, _relative(record.path, index.data_dir), digest))
    out += [("", "", _relative(path, index.data_dir), why) for path, why in index.skipped]
    return sorted(out)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def current_photo_keys(data_dir: Path) -> set[str]:
    """The cache keys (SHA-256 of the bytes) of every photo in the data folder now (empty when there is none)."""
    try:
        index = index_dataset(data_dir)
    except DatasetError:
        return set()
    return {digest for student_id, _, _, digest in photo_digests(index) if student_id}


def prune_cache(paths: OutputPaths, data_dir: Path) -> int:
    """Drop the cached embeddings of photos no longer in ``data_dir``; returns how many were dropped."""
    return rewrite_cache(paths.cache_dir, current_photo_keys(data_dir))


@dataclass(frozen=True)
class Cleared:
    """A set-aside model removed because a newer model was published."""

    folder: Path
    kind: str  # "candidate" or "rejected"


def clear_set_aside(paths: OutputPaths) -> list[Cleared]:
    """Remove ``candidate/`` and ``rejected/`` models: a published model supersedes them."""
    cleared: list[Cleared] = []
    for kind, parent in (("candidate", paths.candidate_dir), ("rejected", paths.rejected_dir)):
        if not parent.is_dir() or parent.is_symlink():
            continue
        for folder in sorted(parent.iterdir()):
            remove(folder)
            cleared.append(Cleared(folder, kind))
            log.debug("Removed %s model %s: a newer model is published", kind, folder.name)
    return cleared
