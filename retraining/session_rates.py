"""What the presence rule means for a whole class session, from this run's own open-set scores.

The open-set folds (evaluate.py) score enrolled students' held-out photos and the photos
of students held out as strangers, with cross-fitted confidences. A session shows each
person in many frames, and :class:`~backend.recognizer.session.PresenceRule` marks a
student present when accepted in enough of them. Frames of one person are alike (a
stranger who resembles a student resembles them in every frame), so the rates are
computed per person: person g's share p_g of photos accepted at the threshold is their
per-frame chance, a session of n frames of g marks them with the binomial tail
P(Binom(n, p_g) >= k), and the rate is the mean over people. A stranger's share is carried
over to the published model's number of students like the per-photo rate
(:func:`~retraining.evaluate.for_more_students`). bench/bench_session.py checks these
figures against sessions of real photos through the loader.

Who counts as a stranger differs from the per-photo estimate in one way: a held-out student
whom the model took again and again for one other student (``OpenSet.left_out.accepted_as``:
one person enrolled twice, or twins) is left out of the per-photo estimate, but counts here.
A twin or a look-alike who sits through a lesson is exactly the stranger a session rule must
keep out, and a student's many frames leave room for a stricter per-face bar.

A stranger's accepted frames are counted whoever they were accepted as, so the stranger
rate is an upper estimate (the rule needs the SAME student in k frames).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy.stats import binom

from backend.recognizer.metadata import PresenceRule

from .evaluate import OpenSet, for_more_students
from .stats import upper95
from .thresholds import MIN_SESSION_RECOGNITION, SHORT_FRAMES, session_bar

#: The session the report describes: each person in this many frames (a lesson with a frame
#: every few minutes, or a few minutes of a camera at one frame per 10 s).
TYPICAL_FRAMES = 20
#: Session lengths of the report's table.
TABLE_FRAMES: tuple[int, ...] = (5, 20, 100)
#: Width the report's sentences are wrapped at.
REPORT_WIDTH = 110


@dataclass(frozen=True)
class SessionRates:
    """Expected per-session rates for sessions of ``frames`` frames under ``rule`` at ``threshold``."""

    frames: int
    required_frames: int
    threshold: float  # a face counts when its confidence is at least this (the rule's bar included)
    enrolled_marked_present: float  # chance that an enrolled student in class is marked present
    stranger_marks_present: float  # chance that a stranger in class marks somebody present
    stranger_upper95: float  # one-sided 95 % upper bound of stranger_marks_present
    per_frame_recognition: float  # the same figures for one frame, for comparison
    per_frame_false_accept: float
    students: int  # people the figures rest on (1 each when frames are treated as independent)
    strangers: int
    per_person: bool  # False: no identities were given, frames are treated as independent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _People:
    """Rows grouped by person once (indices, counts), so that each threshold tried is two bincounts."""

    def __init__(self, groups: np.ndarray | None, n: int) -> None:
        if groups is None or len(groups) != n:
            self.index, self.count = np.zeros(n, dtype=np.int64), np.array([n] if n else [], dtype=float)
            self.per_person = False
        else:
            _, self.index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
            self.count = np.bincount(self.index).astype(float)
            self.per_person = True

    def shares(self, hits: np.ndarray) -> np.ndarray:
        """Per person: the share of their rows that are hits."""
        if not len(self.count):
            return np.zeros(0)
        return np.bincount(self.index, weights=hits.astype(float), minlength=len(self.count)) / self.count


def _marked(shares: np.ndarray, frames: int, need: int) -> np.ndarray:
    """Per person: chance that ``need`` of ``frames`` frames are hits, frames drawn like their photos."""
    return np.asarray(binom.sf(need - 1, frames, shares), dtype=float)


class SessionScores:
    """A run's open-set scores, grouped by person once: the per-session rates at any threshold."""

    def __init__(
        self,
        known_confidence: np.ndarray,
        known_correct: np.ndarray,
        unknown_confidence: np.ndarray,
        *,
        known_groups: np.ndarray | None = None,
        unknown_groups: np.ndarray | None = None,
        enrolled_ratio: float = 1.0,
    ) -> None:
        self.known_confidence = np.asarray(known_confidence, dtype=float)
        self.known_correct = np.asarray(known_correct, dtype=bool)
        self.unknown_confidence = np.asarray(unknown_confidence, dtype=float)
        self.enrolled_ratio = float(enrolled_ratio)
        per_person = (
            known_groups is not None
            and unknown_groups is not None
            and len(known_groups) == len(self.known_confidence)
            and len(unknown_groups) == len(self.unknown_confidence)
        )
        self.students = _People(known_groups if per_person else None, len(self.known_confidence))
        self.strangers = _People(unknown_groups if per_person else None, len(self.unknown_confidence))
        self.per_person = per_person

    @classmethod
    def of(cls, open_set: OpenSet) -> SessionScores:
        """An open set's scores, the look-alikes it left out of the per-photo estimate counted as strangers."""
        unknown_groups = (
            None
            if open_set.unknown_groups is None
            else np.concatenate(
                [np.asarray(open_set.unknown_groups).astype(str), open_set.lookalike_groups.astype(str)]
            )
        )
        return cls(
            open_set.known_confidence,
            open_set.known_correct,
            np.concatenate([open_set.unknown_confidence, open_set.lookalike_confidence]),
            known_groups=open_set.known_groups,
            unknown_groups=unknown_groups,
            enrolled_ratio=open_set.enrolled_ratio,
        )

    def rates(
        self, threshold: float, *, frames: int = TYPICAL_FRAMES, rule: PresenceRule | None = None
    ) -> SessionRates:
        """Expected per-session rates: a face counts when accepted at ``threshold`` and as sure as the
        rule's ``min_confidence`` (see the module docstring)."""
        rule = rule or PresenceRule()
        bar = max(float(threshold), rule.min_confidence or 0.0)
        need = rule.required_frames(frames)
        hit_known = (self.known_confidence >= bar) & self.known_correct
        hit_unknown = self.unknown_confidence >= bar
        enrolled_each = _marked(self.students.shares(hit_known), frames, need)
        stranger_shares = np.array(
            [for_more_students(q, self.enrolled_ratio) for q in self.strangers.shares(hit_unknown)], dtype=float
        )
        stranger_each = _marked(stranger_shares, frames, need)
        stranger = float(stranger_each.mean()) if len(stranger_each) else 1.0
        if self.per_person and len(stranger_each):
            # people are the independent units: a Clopper-Pearson bound on the (fractional) count
            upper = upper95(float(stranger_each.sum()), len(stranger_each))
        elif len(hit_unknown):
            p_upper = for_more_students(upper95(int(hit_unknown.sum()), len(hit_unknown)), self.enrolled_ratio)
            upper = float(binom.sf(need - 1, frames, p_upper))
        else:
            upper = 1.0
        return SessionRates(
            frames=frames,
            required_frames=need,
            threshold=bar,
            enrolled_marked_present=float(enrolled_each.mean()) if len(enrolled_each) else 0.0,
            stranger_marks_present=stranger,
            stranger_upper95=max(upper, stranger),
            per_frame_recognition=float(hit_known.mean()) if len(hit_known) else 0.0,
            per_frame_false_accept=(
                for_more_students(float(hit_unknown.mean()), self.enrolled_ratio) if len(hit_unknown) else 1.0
            ),
            students=len(self.students.count),
            strangers=len(self.strangers.count),
            per_person=self.per_person,
        )


def session_rates(
    known_confidence: np.ndarray,
    known_correct: np.ndarray,
    unknown_confidence: np.ndarray,
    threshold: float,
    *,
    frames: int = TYPICAL_FRAMES,
    rule: PresenceRule | None = None,
    known_groups: np.ndarray | None = None,
    unknown_groups: np.ndarray | None = None,
) -> SessionRates:
    """Expected per-session rates from per-photo open-set scores (see the module docstring).

    ``known_groups`` / ``unknown_groups``: the person of each row; without them every frame
    is treated as independent of the others, which understates the stranger rate when a few
    strangers resemble a student.
    """
    scores = SessionScores(
        known_confidence, known_correct, unknown_confidence, known_groups=known_groups, unknown_groups=unknown_groups
    )
    return scores.rates(threshold, frames=frames, rule=rule)


@dataclass(frozen=True)
class SessionSummary:
    """The run's session figures, computed once: the rule the model records and what it gives.

    ``rule`` is the default :class:`PresenceRule` with the lowest per-face bar (``min_confidence``)
    at which strangers, look-alikes included, mark somebody present in at most ``max_far`` of
    typical sessions, among the bars that keep at least MIN_SESSION_RECOGNITION of enrolled
    students marked present in a short session. When none gets strangers there, the strictest
    of those bars (``target_met`` False): as safe as the students' frames allow.
    """

    threshold: float
    max_far: float
    rule: PresenceRule  # what the model records and AttendanceSession uses
    at_threshold: tuple[SessionRates, ...]  # PresenceRule() at the threshold, for TABLE_FRAMES
    with_rule: tuple[SessionRates, ...]  # ``rule``, for TABLE_FRAMES
    short: SessionRates  # ``rule``, SHORT_FRAMES frames: what the students' floor is judged on
    lookalikes: tuple[str, ...]  # held-out students counted as strangers here, not in the per-photo estimate

    @property
    def typical(self) -> SessionRates:
        """``rule``'s rates for a session of TYPICAL_FRAMES frames."""
        return self.with_rule[TABLE_FRAMES.index(TYPICAL_FRAMES)]

    @property
    def target_met(self) -> bool:
        """Whether ``rule`` keeps strangers within ``max_far`` of typical sessions (point estimate)."""
        return self.typical.stranger_marks_present <= self.max_far

    @property
    def stricter(self) -> bool:
        """Whether the rule counts only faces surer than the threshold."""
        return self.rule.min_confidence is not None

    def to_dict(self) -> dict[str, Any]:
        """metrics.json's ``session``."""
        return {
            "rule": PresenceRule().to_dict(),
            "typical_frames": TYPICAL_FRAMES,
            "rates": [r.to_dict() for r in self.at_threshold],
            "suggested_min_confidence": self.rule.min_confidence,
            "model_rule": self.rule.to_dict(),
            "model_rule_rates": [r.to_dict() for r in self.with_rule],
            "target_met": self.target_met,
            "lookalikes_counted": list(self.lookalikes),
        }


def summarize_sessions(open_set: OpenSet | None, threshold: float) -> SessionSummary | None:
    """The run's :class:`SessionSummary` at ``threshold`` (None when the open set was not measured,
    or no enrolled student's photo could be held out: every student enrolled from one clip)."""
    if open_set is None or not open_set.recognition_measured:
        return None
    scores = SessionScores.of(open_set)
    plain = PresenceRule()
    bar = session_bar(
        threshold,
        open_set.max_far,
        lambda b: scores.rates(b, frames=SHORT_FRAMES, rule=plain).enrolled_marked_present,
        lambda b: scores.rates(b, frames=TYPICAL_FRAMES, rule=plain).stranger_marks_present,
    )
    short = scores.rates(bar, frames=SHORT_FRAMES, rule=plain)
    rule = replace(plain, min_confidence=bar if bar > threshold else None)
    at_threshold = tuple(scores.rates(threshold, frames=n, rule=plain) for n in TABLE_FRAMES)
    return SessionSummary(
        threshold=float(threshold),
        max_far=float(open_set.max_far),
        rule=rule,
        at_threshold=at_threshold,
        with_rule=(
            at_threshold if rule == plain else tuple(scores.rates(threshold, frames=n, rule=rule) for n in TABLE_FRAMES)
        ),
        short=short,
        lookalikes=tuple(sorted({a for a, _, _, _ in open_set.left_out.accepted_as})),
    )


__all__ = [
    "MIN_SESSION_RECOGNITION",
    "SHORT_FRAMES",
    "TABLE_FRAMES",
    "TYPICAL_FRAMES",
    "SessionRates",
    "SessionScores",
    "SessionSummary",
    "session_rates",
    "summarize_sessions",
]
