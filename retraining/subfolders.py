"""Folders inside a student's folder: counted one by one, and checked to hold that student.

A teacher may keep a student's photos in sub-folders (``STU001_Alice/2025/``); their photos
count for the student. A sub-folder can also be where someone dropped another person's
photos: those then train the model to accept that person as the student. Each sub-folder's
faces are compared with the student's other photos, against this run's own measure of how
alike one student's photos are and how alike different students are (the embedder decides
the scale of a similarity, so no fixed number would do).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .dataset import DatasetIndex, ImageRecord
from .extract import Extraction
from .files import shown
from .quality import Finding, FindingKind, StudentSimilarity, student_similarity

#: The kind of finding (the report lists findings by kind).
KIND = FindingKind.SUBFOLDER_OTHER_PERSON
#: Photos a student needs outside the sub-folder for a comparison to mean something.
MIN_REST = 2


def subfolder_counts(records: Iterable[ImageRecord]) -> dict[Path, int]:
    """Photos used per folder (each photo counts for the folder that directly holds it)."""
    return dict(Counter(r.path.parent for r in records))


def _centre(vectors: np.ndarray) -> np.ndarray:
    total = vectors.sum(axis=0)
    return total / max(float(np.linalg.norm(total)), 1e-12)


def subfolder_findings(
    extraction: Extraction, index: DatasetIndex, *, similarity: StudentSimilarity | None = None
) -> list[Finding]:
    """One finding per sub-folder whose faces do not look like the rest of its student's photos.

    The cut-off is halfway between this run's typical similarity of a photo to its own student's
    other photos and its typical similarity to the most alike other student (students with at
    least 3 photos): a sub-folder of another person sits near the second, a sub-folder of the same
    student near the first. ``similarity``: the run's :func:`~retraining.quality.student_similarity`
    of ``extraction`` (the one :func:`~retraining.quality.data_quality` is given); computed here
    when it is not passed.
    """
    if not index.subfolders or len(extraction.records) < 3:
        return []
    X = np.asarray(extraction.embeddings, dtype=np.float64)
    sim = student_similarity(X, extraction.student_ids) if similarity is None else similarity
    if sim is None:  # one student: nobody to compare with
        return []
    classes = [str(c) for c in sim.classes]
    centres = sim.sums / np.maximum(np.linalg.norm(sim.sums, axis=1, keepdims=True), 1e-12)
    rows_of = {sid: np.flatnonzero(sim.column == k) for k, sid in enumerate(classes)}
    judged = np.bincount(sim.column, minlength=len(classes))[sim.column] >= 3
    if not judged.any():
        return []
    typical_same = float(np.median(sim.own[judged]))
    typical_other = float(np.median(sim.nearest_similarity[judged]))
    if typical_same <= typical_other:  # embeddings that do not separate people: nothing to judge by
        return []
    cut = (typical_same + typical_other) / 2
    folder_of = {s.student_id: index.data_dir / s.folder for s in index.students}
    subfolders = set(index.subfolders)
    findings: list[Finding] = []
    for sid in classes:
        rows = rows_of[sid]
        groups: dict[Path, list[int]] = defaultdict(list)
        for i in rows:
            groups[extraction.records[i].path.parent].append(int(i))
        for folder, members in sorted(groups.items()):
            if folder not in subfolders:
                continue
            rest = np.setdiff1d(rows, members)
            if len(rest) < MIN_REST:
                continue
            likeness = float(np.mean(X[members] @ _centre(X[rest])))
            if likeness >= cut:
                continue
            sub_centre = _centre(X[members])
            others = [(float(sub_centre @ centres[k]), c) for k, c in enumerate(classes) if c != sid]
            best_sim, best = max(others)
            resembles = f"; they look more like {best}" if best_sim > float(sub_centre @ _centre(X[rest])) else ""
            where = (
                folder.relative_to(folder_of[sid].parent) if folder.is_relative_to(folder_of[sid].parent) else folder
            )
            findings.append(
                Finding(
                    KIND,
                    str(folder),
                    f"another person's photos in {shown(where.as_posix())}? Its {len(members)} photos do not look "
                    f"like the other {len(rest)} photos of {sid} (similarity {likeness:.2f}; this run's photos of "
                    f"one student {typical_same:.2f}, of different students {typical_other:.2f}){resembles}. "
                    "Move them to their own student's folder, or delete them, and retrain",
                    score=cut - likeness,
                    related=best if resembles else "",
                )
            )
    return sorted(findings, key=lambda f: -f.score)
