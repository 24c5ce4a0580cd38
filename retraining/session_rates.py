"""What the presence rule means for a whole class session, from this run's own open-set scores.

The open-set folds (evaluate.py) score enrolled students' held-out photos and the photos
of students held out as strangers, with cross-fitted confidences. A session shows each
person in many frames, and :class:`~backend.recognizer.session.PresenceRule` marks a
student present when accepted in enough of them. Frames of one person are alike (a
stranger who resembles a student resembles them in every frame), so the rates are
computed per person: person g's share p_g of photos accepted at the threshold is their
per-frame chance, a session of n frames of g marks them with the binomial tail
P(Binom(n, p_g) >= k), and the rate is the mean over people. bench/bench_session.py
checks these figures against sessions of real photos through the loader.

A stranger's accepted frames are counted whoever they were accepted as, so the stranger
rate is an upper estimate (the rule needs the SAME student in k frames).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binom

from backend.recognizer.session import PresenceRule

from .stats import upper95

#: The session the report describes: each person in this many frames (a lesson with a frame
#: every few minutes, or a few minutes of a camera at one frame per 10 s).
TYPICAL_FRAMES = 20
#: Session lengths of the report's table.
TABLE_FRAMES: tuple[int, ...] = (5, 20, 100)


@dataclass(frozen=True)
class SessionRates:
    """Expected per-session rates for sessions of ``frames`` frames under ``rule`` at ``threshold``."""

    frames: int
    required_frames: int
    threshold: float
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


def _groups(values: np.ndarray, groups: np.ndarray | None) -> list[np.ndarray]:
    if groups is None or len(groups) != len(values):
        return [values] if len(values) else []
    groups = np.asarray(groups).astype(str)
    return [values[groups == g] for g in np.unique(groups)]


def _marked(hits: list[np.ndarray], frames: int, need: int) -> np.ndarray:
    """Per person: chance that ``need`` of ``frames`` frames are hits, frames drawn like their photos."""
    shares = np.array([h.mean() for h in hits], dtype=float)
    return np.asarray(binom.sf(need - 1, frames, shares), dtype=float)


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
    rule = rule or PresenceRule()
    need = rule.required_frames(frames)
    kc = np.asarray(known_confidence, dtype=float)
    hit_known = (kc >= threshold) & np.asarray(known_correct, dtype=bool)
    hit_unknown = np.asarray(unknown_confidence, dtype=float) >= threshold
    per_person = (
        known_groups is not None
        and unknown_groups is not None
        and len(known_groups) == len(kc)
        and len(unknown_groups) == len(hit_unknown)
    )
    students = _groups(hit_known, known_groups if per_person else None)
    strangers = _groups(hit_unknown, unknown_groups if per_person else None)
    enrolled = float(_marked(students, frames, need).mean()) if students else 0.0
    stranger_each = _marked(strangers, frames, need) if strangers else np.zeros(0)
    stranger = float(stranger_each.mean()) if len(stranger_each) else 1.0
    if per_person and len(stranger_each):
        # people are the independent units: a Clopper-Pearson bound on the (fractional) count
        upper = upper95(float(stranger_each.sum()), len(stranger_each))
    elif len(hit_unknown):
        p_upper = upper95(int(hit_unknown.sum()), len(hit_unknown))
        upper = float(binom.sf(need - 1, frames, p_upper))
    else:
        upper = 1.0
    return SessionRates(
        frames=frames,
        required_frames=need,
        threshold=float(threshold),
        enrolled_marked_present=enrolled,
        stranger_marks_present=stranger,
        stranger_upper95=max(upper, stranger),
        per_frame_recognition=float(hit_known.mean()) if len(hit_known) else 0.0,
        per_frame_false_accept=float(hit_unknown.mean()) if len(hit_unknown) else 1.0,
        students=len(students),
        strangers=len(strangers),
        per_person=per_person,
    )


def open_set_session_rates(
    open_set: Any, threshold: float, *, frames: int = TYPICAL_FRAMES, rule: PresenceRule | None = None
) -> SessionRates | None:
    """:func:`session_rates` of an :class:`~retraining.evaluate.OpenSet` (None when not measured).

    Per person when the open set records whose each row is (``known_groups`` /
    ``unknown_groups``); otherwise frames are treated as independent.
    """
    if open_set is None:
        return None
    return session_rates(
        open_set.known_confidence,
        open_set.known_correct,
        open_set.unknown_confidence,
        threshold,
        frames=frames,
        rule=rule,
        known_groups=getattr(open_set, "known_groups", None),
        unknown_groups=getattr(open_set, "unknown_groups", None),
    )


def suggested_min_confidence(
    open_set: Any,
    threshold: float,
    max_far: float,
    *,
    frames: int = TYPICAL_FRAMES,
    rule: PresenceRule | None = None,
) -> float | None:
    """The lowest per-face confidence (a hundredth, at least ``threshold``) for counting towards
    presence at which strangers mark somebody present in at most ``max_far`` of ``frames``-frame
    sessions (estimated as above); None when no confidence below 1 gets there."""
    bars = [threshold] + [step / 100 for step in range(math.floor(threshold * 100 + 1e-9) + 1, 100)]
    for bar in bars:
        rates = open_set_session_rates(open_set, bar, frames=frames, rule=rule)
        if rates is None:
            return None
        if rates.stranger_marks_present <= max_far:
            return float(bar)
    return None


def published_rule(open_set: Any, threshold: float) -> PresenceRule:
    """The rule the model records for ``AttendanceSession``: the default, counting only faces at
    least as sure as :func:`suggested_min_confidence` when the threshold alone lets strangers mark
    somebody present in more than the target share of typical sessions."""
    if open_set is None:
        return PresenceRule()
    bar = suggested_min_confidence(open_set, threshold, open_set.max_far)
    return PresenceRule(min_confidence=bar if bar is not None and bar > threshold else None)


def session_dict(open_set: Any, threshold: float, rule: PresenceRule | None = None) -> dict[str, Any] | None:
    """metrics.json's ``session``: the rule, the rates for the report's session lengths, the suggestion."""
    if open_set is None:
        return None
    rule = rule or PresenceRule()
    rows = [open_set_session_rates(open_set, threshold, frames=n, rule=rule) for n in TABLE_FRAMES]
    return {
        "rule": rule.to_dict(),
        "typical_frames": TYPICAL_FRAMES,
        "rates": [r.to_dict() for r in rows if r is not None],
        "suggested_min_confidence": suggested_min_confidence(open_set, threshold, open_set.max_far, rule=rule),
    }


def session_sentence(open_set: Any, threshold: float, rule: PresenceRule | None = None) -> str:
    """One sentence for report.html: what a typical class session means at ``threshold``."""
    r = open_set_session_rates(open_set, threshold, rule=rule)
    if r is None:
        return ""
    return (
        f" Over a class session ({r.frames} frames of each person; present when recognised in {r.required_frames} "
        f"or more): an enrolled student in class is marked present in {r.enrolled_marked_present:.1%} of sessions, "
        f"and a stranger in class marks somebody present in {r.stranger_marks_present:.1%} "
        f"(95% bound {r.stranger_upper95:.1%})."
    )


def session_lines(open_set: Any, threshold: float, rule: PresenceRule | None = None) -> list[str]:
    """The report's lines: per-frame vs per-session rates for a few session lengths."""
    rule = rule or PresenceRule()
    rows = [open_set_session_rates(open_set, threshold, frames=n, rule=rule) for n in TABLE_FRAMES]
    if rows[0] is None:
        return ["  not measured: at least 3 students with usable photos are needed"]
    first = rows[0]
    lines = [
        f"  rule: present when accepted (confidence >= {threshold:.2f}) in at least "
        f"max({rule.min_frames}, {rule.min_share:.0%} of the session's frames) frames",
        f"  one frame: {first.per_frame_recognition:.1%} of enrolled photos recognised, "
        f"{first.per_frame_false_accept:.1%} of strangers' photos accepted",
        "  frames per person  needed  enrolled student marked present  stranger marks somebody present (95% bound)",
    ]
    for r in (r for r in rows if r is not None):
        lines.append(
            f"  {r.frames:>17}  {r.required_frames:>6}  {r.enrolled_marked_present:>31.1%}  "
            f"{r.stranger_marks_present:>22.1%} ({r.stranger_upper95:.1%})"
        )
    basis = (
        f"per person ({first.students} students, {first.strangers} held out as strangers)"
        if first.per_person
        else "frames treated as independent (the run did not record whose each photo is)"
    )
    lines.append(f"  computed from the open-set scores above, {basis}; a stranger's accepted frames are counted")
    lines.append("  whoever they were accepted as, so the stranger column is an upper estimate.")
    bar = suggested_min_confidence(open_set, threshold, open_set.max_far, rule=rule)
    typical = rows[TABLE_FRAMES.index(TYPICAL_FRAMES)]
    if typical is not None and typical.stranger_marks_present <= open_set.max_far:
        lines.append(
            f"  => sessions of {TYPICAL_FRAMES} frames meet the stranger target (<= {open_set.max_far:.1%}; "
            f"95% bound {typical.stranger_upper95:.1%}, narrower with more students)."
        )
    elif bar is not None:
        better = open_set_session_rates(open_set, bar, rule=rule)
        if better is not None:
            lines.append(
                f"  => to keep strangers under {open_set.max_far:.1%} of {TYPICAL_FRAMES}-frame sessions, the model's "
                f"session rule counts only faces with confidence >= {bar:.2f} (AttendanceSession uses it): "
                f"enrolled students then marked present in {better.enrolled_marked_present:.1%} of sessions, "
                f"strangers {better.stranger_marks_present:.1%}."
            )
    else:
        lines.append(
            f"  => NO confidence keeps strangers under {open_set.max_far:.1%} of {TYPICAL_FRAMES}-frame sessions: some "
            "held-out students look like an enrolled one in most photos (the same person enrolled twice, or relatives)."
        )
    return lines


__all__ = [
    "TABLE_FRAMES",
    "TYPICAL_FRAMES",
    "SessionRates",
    "open_set_session_rates",
    "published_rule",
    "session_dict",
    "session_lines",
    "session_rates",
    "session_sentence",
    "suggested_min_confidence",
]
