"""``retrain_model.py --erase ID``: remove a student's face data from everything the suite keeps.

Order, so that a kill at any point is finished by running the command again:

1. refuse while the student's folder is still in the data folder (the next run would enrol
   them again); refuse an id that nothing holds and nobody erased (a typo);
2. write the erasure intent (``backend/models/.erasure.json``, ids only): from here on the
   ids count as erased, so ``--rollback`` and ``--promote`` refuse every model holding them;
3. if the live model holds them, retrain it from the data folder as it is now (a normal
   run: the embedding cache has everyone else, so no photo is embedded again) and publish it;
4. every other model folder holding them (kept versions, the waiting candidate, rejected
   models) is renamed into ``backend/models/.erasing/`` and deleted there: a folder is
   either complete in its place or gone, never half there. They are removed, not rebuilt:
   their thresholds and scores were measured with the student, so a rebuilt one would be a
   new, unchecked model;
5. the embedding cache is rewritten with only the photos in the data folder now, the error
   log removed, and every file left is searched for the ids;
6. the erasure record (``backend/models/erasures/<time>.json``: ids, times, what was
   removed, with SHA-256) is written, then the intent removed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backend.recognizer.hashing import sha256_file
from backend.recognizer.paths import OutputPaths

from .dataset import parse_folder_name
from .errors import ErasureError
from .face_data import ModelPlace, PlaceKind, erased_ids, model_places
from .files import atomic_write_json, files_under, fsync_dir
from .lock import locked
from .retention import enrolled_folders, prune_cache

log = logging.getLogger(__name__)

RECORD_FORMAT = 1
#: The traceback file that ``outcome`` writes where the output root cannot be written.
TEMP_ERROR_LOG = Path(tempfile.gettempdir()) / "smartattendance_retrain_error.log"


@dataclass(frozen=True)
class ErasureAction:
    """One thing done to one place (paths relative to the output root; hashes of the files removed)."""

    place: str
    action: str  # "removed", "retrained", "pruned"
    detail: str
    files: tuple[tuple[str, str], ...] = ()  # (path, sha256) of each file removed

    def to_dict(self) -> dict[str, object]:
        return {
            "place": self.place,
            "action": self.action,
            "detail": self.detail,
            "files": [{"path": p, "sha256": h} for p, h in self.files],
        }


@dataclass(frozen=True)
class ErasureResult:
    student_ids: tuple[str, ...]
    actions: tuple[ErasureAction, ...]
    record: Path
    live_version: str | None  # the model in service after the erasure


def student_id_of(argument: str) -> str:
    """``STU004`` or the folder name ``STU004_Alice_Smith`` → ``STU004``."""
    text = argument.strip().rstrip("/\\")
    return parse_folder_name(Path(text).name)[0] if text else ""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def erase(
    paths: OutputPaths,
    data_dir: Path,
    requested: list[str],
    *,
    retrain: Callable[[], str],
    lock_timeout: float = 0.0,
) -> ErasureResult:
    """Erase ``requested`` students (see the module docstring). ``retrain()`` publishes a model trained
    on the data folder as it is now (taking the retraining lock itself) and returns its version."""
    ids = tuple(dict.fromkeys(sid for sid in map(student_id_of, requested) if sid))
    if not ids:
        raise ErasureError("No student id given: pass --erase STU004 (or the folder name) for each student.")
    enrolled = enrolled_folders(data_dir) or {}
    still = [f"{enrolled[sid]} ({sid})" for sid in ids if sid in enrolled]
    if still:
        raise ErasureError(
            f"The photo folder {', '.join(still)} is still in {data_dir}: the next run would enrol them again, so "
            "nothing was erased. Move the folder out of the data folder (or delete it) first, then run --erase again."
        )
    started = _now()
    with locked(paths, lock_timeout, log):
        pending = _pending(paths)
        known = set().union(*(p.students for p in model_places(paths))) | erased_ids(paths)
        unknown = [sid for sid in ids if sid not in known]
        if unknown:
            raise ErasureError(
                f"No face data of {', '.join(unknown)} is kept under {paths.root}, and no erasure of that id is "
                "recorded: check the id (the part of the folder name before the first underscore). Nothing was erased."
            )
        ids = tuple(dict.fromkeys([*pending, *ids]))
        paths.backend_models.mkdir(parents=True, exist_ok=True)
        atomic_write_json(paths.erasure_intent, {"student_ids": list(ids), "started_at": started})
        live_holds = any(p.kind is PlaceKind.LIVE and p.students & set(ids) for p in model_places(paths))
    actions: list[ErasureAction] = []
    if live_holds:
        log.info("The live model holds %s: retraining it without them", ", ".join(ids))
        try:
            version = retrain()
        except Exception as err:
            raise ErasureError(
                f"Erasing {', '.join(ids)} is not finished: the live model could not be retrained without them "
                f"({err}) Fix that, then run python retrain_model.py {' '.join('--erase ' + s for s in ids)} again (with "
                "--force if the quality gate refused the retrained model). Until then the ids count as erased."
            ) from err
        actions.append(ErasureAction("backend/models/Classifier", "retrained", f"model {version} is live without them"))
    with locked(paths, lock_timeout, log):
        actions += _purge(paths, data_dir, set(ids))
        live = next((p for p in model_places(paths) if p.kind is PlaceKind.LIVE), None)
        leftovers = _files_naming(paths, ids)
        if leftovers:
            raise ErasureError(
                f"Erasing {', '.join(ids)} is not finished: {len(leftovers)} file(s) still name them, e.g. "
                f"{leftovers[0]}. Run python retrain_model.py {' '.join('--erase ' + s for s in ids)} again; if "
                "this repeats, delete those files by hand."
            )
        record = _write_record(paths, ids, started, actions, live)
        paths.erasure_intent.unlink(missing_ok=True)
        fsync_dir(paths.backend_models)
    return ErasureResult(ids, tuple(actions), record, _version_of(live))


def _pending(paths: OutputPaths) -> list[str]:
    try:
        data = json.loads(paths.erasure_intent.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        log.warning("Unreadable erasure intent %s: it is replaced", paths.erasure_intent)
        return []
    return [str(s) for s in data.get("student_ids") or ()] if isinstance(data, dict) else []


def _purge(paths: OutputPaths, data_dir: Path, ids: set[str]) -> list[ErasureAction]:
    """Steps 4 and 5 of the module docstring; each is idempotent."""
    actions: list[ErasureAction] = []
    if paths.trash_dir.is_dir():  # a kill during an earlier erasure's delete
        shutil.rmtree(paths.trash_dir)
    for place in model_places(paths):
        if place.kind is PlaceKind.LIVE or not place.students & ids or place.root is None:
            continue
        actions.append(_remove_place(paths, place, ids))
    dropped = prune_cache(paths, data_dir)
    if dropped:
        actions.append(
            ErasureAction(
                _rel(paths, paths.cache_dir), "pruned", f"{dropped} photo(s) no longer in the data folder dropped"
            )
        )
    for log_file in (paths.error_log, TEMP_ERROR_LOG):  # the temp one may be another root's: only if it names them
        if log_file == TEMP_ERROR_LOG and not _names(log_file, tuple(ids)):
            continue
        if log_file.is_file() and not log_file.is_symlink():
            files = ((_rel(paths, log_file), sha256_file(log_file)),)
            log_file.unlink()
            actions.append(ErasureAction(_rel(paths, log_file), "removed", "the last failure's details", files))
    return actions


def _remove_place(paths: OutputPaths, place: ModelPlace, ids: set[str]) -> ErasureAction:
    root = place.root
    if root is None:
        raise ErasureError("the live model is replaced by retraining, never removed")
    files = tuple((_rel(paths, root / rel), sha256_file(root / rel)) for rel in files_under(root))
    paths.trash_dir.mkdir(parents=True, exist_ok=True)
    doomed = paths.trash_dir / f"{root.parent.name}-{root.name}-{secrets.token_hex(3)}"
    os.replace(root, doomed)  # gone from its place in one step
    fsync_dir(root.parent)
    shutil.rmtree(doomed)
    with contextlib.suppress(OSError):
        paths.trash_dir.rmdir()
    held = ", ".join(sorted(place.students & ids))
    then = " (--rollback can no longer return to it)" if place.kind is PlaceKind.VERSION else ""
    log.info("Removed %s: it held %s%s", place.label, held, then)
    return ErasureAction(_rel(paths, root), "removed", f"{place.label} held {held}{then}", files)


def _id_patterns(ids: tuple[str, ...]) -> list[re.Pattern[bytes]]:
    """Each id as a whole word, in UTF-8 (text, JSON, CSV) and in UTF-32 (numpy string arrays)."""
    return [re.compile(rb"(?<![A-Za-z0-9])" + re.escape(sid.encode("utf-8")) + rb"(?![A-Za-z0-9])") for sid in ids] + [
        re.compile(re.escape(sid.encode("utf-32-le")) + rb"(?![A-Za-z0-9]\x00\x00\x00)") for sid in ids
    ]


def _names(path: Path, ids: tuple[str, ...]) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return any(p.search(data) for p in _id_patterns(ids))


def _files_naming(paths: OutputPaths, ids: tuple[str, ...]) -> list[Path]:
    """Files under the suite's folders that still hold one of ``ids`` (the erasure records aside)."""
    found: list[Path] = []
    for top in (paths.backend_models, paths.models_dir):
        for rel in files_under(top):
            path = top / rel
            if paths.erasures_dir in path.parents or path == paths.erasure_intent:
                continue
            if _names(path, ids):
                found.append(path)
    return found


def _write_record(
    paths: OutputPaths, ids: tuple[str, ...], started: str, actions: list[ErasureAction], live: ModelPlace | None
) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    record = paths.erasures_dir / f"{stamp}-{secrets.token_hex(3)}.json"
    atomic_write_json(
        record,
        {
            "format": RECORD_FORMAT,
            "student_ids": list(ids),
            "started_at": started,
            "finished_at": _now(),
            "live_model": _version_of(live),
            "actions": [a.to_dict() for a in actions],
            "note": "Holds student ids only: no names, photos, paths of photos or face embeddings.",
        },
    )
    return record


def _version_of(place: ModelPlace | None) -> str | None:
    if place is None:
        return None
    try:
        return str(json.loads(place.folder.manifest.read_text(encoding="utf-8"))["model_version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _rel(paths: OutputPaths, path: Path) -> str:
    try:
        return path.relative_to(paths.root).as_posix()
    except ValueError:
        return str(path)
