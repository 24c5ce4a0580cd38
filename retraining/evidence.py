"""What the run's data-quality findings say about who is who, for the stranger estimate.

The stranger estimate holds enrolled students out and counts how often their photos are
accepted as somebody else. That is only a stranger's photo if the held-out student is not
also enrolled under another folder, and if the photo really shows that student. A real
school's folders break both: one person enrolled twice, photos filed under the wrong
student, the same photo saved in two folders (PITFALLS.md, "Measuring strangers": on a
223-person enrollment, 7 such students tripled the estimate and pushed the threshold to
0.99). The findings already name those students and photos; this module turns them into
the evidence :func:`retraining.evaluate.evaluate_open_set` uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .quality import Finding, FindingKind
from .video import split_frame_name

#: Photos flagged as one of these are no fair test of recognition or of stranger safety: the
#: label they carry is probably not the person they show (they still train the model, as published).
#: Byte-identical copies come from ``duplicate_files`` (every copy; the finding names only the first).
UNFAIR_TEST_PHOTO = (FindingKind.MISLABEL, FindingKind.OUTLIER)


@dataclass(frozen=True)
class StrangerEvidence:
    """Students that are probably one person, and photos that are no fair test.

    ``groups``: sets of student ids that look like one person enrolled under several folders:
    held out as strangers together, and an answer naming any of them counts as right.
    ``unfair``: per embedded photo, the finding kind that makes it no fair test photo ("" if
    none): a photo in the wrong folder, or of nobody enrolled, or the same file as in another
    student's folder.
    """

    groups: tuple[frozenset[str], ...] = ()
    unfair: tuple[str, ...] = ()

    def unfair_mask(self, n: int) -> np.ndarray:
        if not self.unfair:
            return np.zeros(n, dtype=bool)
        if len(self.unfair) != n:
            raise ValueError(f"evidence covers {len(self.unfair)} photos, the embeddings {n}")
        return np.array([bool(reason) for reason in self.unfair], dtype=bool)


def stranger_evidence(
    findings: Sequence[Finding], paths: Sequence[Path], duplicate_files: Sequence[Sequence[Path]] = ()
) -> StrangerEvidence:
    """The evidence in this run's ``findings`` about the embedded photos ``paths``.

    Groups come from the "look like the same person" near-duplicates (one per pair of
    students); unfair photos from mislabel and outlier findings, from a near-identical pair
    (the same photo in two folders: both copies) and from ``duplicate_files`` (byte-identical
    files in several students' folders: every copy).
    """
    pairs: list[frozenset[str]] = []
    reason: dict[str, str] = {}
    for f in findings:
        if f.kind == FindingKind.NEAR_DUPLICATE:
            if _is_same_person(f):
                pairs.append(frozenset(f.students))
            else:  # the same photo in two folders: neither copy is a fair test
                reason.setdefault(f.path, str(f.kind))
                reason.setdefault(f.related, str(f.kind))
        elif f.kind in UNFAIR_TEST_PHOTO:
            reason.setdefault(f.path, str(f.kind))
    for group in duplicate_files:
        for p in group:
            reason.setdefault(str(p), str(FindingKind.DUPLICATE_FILE))
    return StrangerEvidence(merge_groups(pairs), tuple(reason.get(str(p), "") or _of_clip(reason, p) for p in paths))


def _of_clip(reason: dict[str, str], path: Path) -> str:
    """A finding on a clip (:func:`~retraining.quality.one_per_clip`) concerns each of its frames."""
    frame = split_frame_name(Path(path))
    return reason.get(str(frame[0]), "") if frame is not None else ""


def _is_same_person(f: Finding) -> bool:
    """A near-duplicate finding about two students (one person enrolled twice), not about one copied photo."""
    return len(f.students) == 2


def merge_groups(pairs: Sequence[frozenset[str]]) -> tuple[frozenset[str], ...]:
    """Union of overlapping pairs: A~B and B~C make one group {A, B, C}."""
    groups: list[set[str]] = []
    for pair in pairs:
        touching = [g for g in groups if g & pair]
        merged = set(pair).union(*touching)
        groups = [g for g in groups if not g & pair] + [merged]
    return tuple(sorted((frozenset(g) for g in groups if len(g) > 1), key=lambda g: sorted(g)))
