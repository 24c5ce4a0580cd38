"""Where the suite keeps students' face data under an output root, and whose.

A student's face data is every embedding, photo path, thumbnail, and the id and name
stored beside them. Under an output root it lives in model folders (the live model,
versions kept for ``--rollback``, a ``--review`` candidate, models the gate rejected) and
in the embedding cache. This module finds every model folder and reads which students it
holds, without unpickling anything: ``model.json``'s students, ``y.npy``
(``allow_pickle=False``) and ``labels.csv``. Erasure, the rollback and promote guards and
the reports all ask it, so they cannot disagree about where a student still is.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from backend.recognizer.paths import ModelFolder, OutputPaths

log = logging.getLogger(__name__)


class PlaceKind(str, Enum):
    """A kind of model folder, named as the console and the reports name it."""

    LIVE = "live model"
    VERSION = "kept version"
    CANDIDATE = "waiting candidate"
    REJECTED = "rejected model"


@dataclass(frozen=True)
class ModelPlace:
    """One model folder and the students whose face data it holds."""

    kind: PlaceKind
    root: Path | None  # versions/<v>, candidate/<v> or rejected/<v>; None for the live model
    folder: ModelFolder
    students: frozenset[str]
    embeddings: int  # rows of X.npy

    @property
    def label(self) -> str:
        """``kept version 20261207T…`` or ``live model``."""
        return self.kind.value if self.root is None else f"{self.kind.value} {self.root.name}"


def students_in(folder: ModelFolder) -> frozenset[str]:
    """The student ids a model folder holds: from ``model.json``, ``y.npy`` and ``labels.csv`` (no pickle)."""
    found: set[str] = set()
    try:
        data = json.loads(folder.model_json.read_text(encoding="utf-8"))
        students = data.get("students") if isinstance(data, dict) else None
        if isinstance(students, dict):
            found.update(str(k) for k in students)
    except (OSError, ValueError):
        pass
    try:
        found.update(str(v) for v in np.unique(np.load(folder.y, allow_pickle=False)))
    except (OSError, ValueError):
        pass
    try:
        with open(folder.labels_csv, newline="", encoding="utf-8", errors="replace") as fh:
            found.update(row["student_id"] for row in csv.DictReader(fh) if row.get("student_id"))
    except (OSError, ValueError, KeyError):
        pass
    return frozenset(found)


def embedding_rows(folder: ModelFolder) -> int:
    try:
        return int(np.load(folder.X, mmap_mode="r", allow_pickle=False).shape[0])
    except (OSError, ValueError, IndexError):
        return 0


def model_places(paths: OutputPaths) -> list[ModelPlace]:
    """The live model, then kept versions, the waiting candidate and rejected models (newest first)."""
    places: list[ModelPlace] = []
    live = paths.published
    if live.classifier_dir.is_dir() or live.X.is_file():
        places.append(ModelPlace(PlaceKind.LIVE, None, live, students_in(live), embedding_rows(live)))
    for kind, parent in (
        (PlaceKind.VERSION, paths.versions_dir),
        (PlaceKind.CANDIDATE, paths.candidate_dir),
        (PlaceKind.REJECTED, paths.rejected_dir),
    ):
        if not parent.is_dir() or parent.is_symlink():
            continue
        for root in sorted((d for d in parent.iterdir() if d.is_dir() and not d.is_symlink()), reverse=True):
            folder = ModelFolder.under(root)
            places.append(ModelPlace(kind, root, folder, students_in(folder), embedding_rows(folder)))
    return places


def erased_ids(paths: OutputPaths) -> frozenset[str]:
    """Every student id erased under this output root: the erasure records, and an erasure in progress."""
    ids: set[str] = set()
    files = sorted(paths.erasures_dir.glob("*.json")) if paths.erasures_dir.is_dir() else []
    for record in [*files, paths.erasure_intent]:
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as err:
            log.warning("Erasure record %s is unreadable (%s)", record, err)
            continue
        if isinstance(data, dict):
            ids.update(str(s) for s in data.get("student_ids") or ())
    return frozenset(ids)


@dataclass(frozen=True)
class FaceDataKept:
    """What one run's model keeps of students' faces, and where else face data stays (the report's
    FACE DATA KEPT section and the console summary)."""

    students: int
    embeddings: int  # rows of X.npy (heldout.npz holds row numbers and answers, not vectors)
    cache_photos: int  # photos the embedding cache keeps: this run's photos
    thumbnails: bool  # report.html carries face thumbnails
    keep_versions: int  # earlier models kept for --rollback (--keep-versions)
    keep_unpublished: bool  # candidate/ and rejected/ survive a publish (--keep-unpublished)
    reenrolled: tuple[str, ...]  # erased before, enrolled again from a folder now
    #: students whose folder is gone but whom another model folder still holds, with where
    not_enrolled: tuple[tuple[str, tuple[str, ...]], ...]


def not_enrolled_elsewhere(paths: OutputPaths, enrolled: set[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Students no folder enrols whom a model folder under ``paths`` still holds, with the places' labels."""
    kept: dict[str, list[str]] = {}
    for place in model_places(paths):
        for sid in place.students - enrolled:
            kept.setdefault(sid, []).append(place.label)
    return tuple((sid, tuple(labels)) for sid, labels in sorted(kept.items()))
