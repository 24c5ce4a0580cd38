"""Every threshold the run chooses, decided here: the recommended photo threshold, the session
rule's per-face bar, and the trade-off thresholds offered when recognition is poor.

Each choice is a number (or a record of numbers) with the rows it rests on; the sentences that
explain a choice are in retraining/presentation/words.py. The measurements come from
evaluate.py (the sweeps) and session_rates.py (per-session rates); nothing here measures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # the measuring modules import this one: their types only for annotations
    from .evaluate import OpenSetRow, SweepRow

#: Used when the photos cannot justify another threshold.
DEFAULT_THRESHOLD = 0.70
#: Fewer held-out photos than this and the sweep cannot justify moving off the default.
MIN_TEST_PHOTOS = 30
#: A threshold must keep at least this share of accepted answers correct …
TARGET_ACCEPTED_ACCURACY = 0.99
#: … while turning away at most this share of enrolled students' photos.
MAX_REJECTION = 0.10
#: A threshold that keeps strangers out by turning away most students is not a solution.
MIN_USEFUL_RECOGNITION = 0.5
#: Below this share of enrolled students' photos recognised at the threshold in use, recognition is poor.
GOOD_RECOGNITION = 0.80
#: Trade-off thresholds offered when recognition is poor: at most this many, each recognising more ...
MAX_TRADEOFFS = 2
#: ... keeping strangers within the target, or, when no threshold does, within this many times the target
#: (a threshold that lets every stranger in is no trade-off).
TRADEOFF_MAX_FAR_FACTOR = 3.0
#: A stricter per-face bar for the session rule is never chosen if it would leave fewer than this
#: share of enrolled students marked present in a short session (SHORT_FRAMES frames of them).
MIN_SESSION_RECOGNITION = 0.95
SHORT_FRAMES = 4
#: Per-face bars the session rule tries above the threshold (hundredths, then the top of the scale
#: where a calibrated model puts most of its right answers).
_FINE_TOP = (0.995, 0.998, 0.999)

#: How the recommended threshold was chosen.
Basis = Literal[
    "too_few_photos",  # closed set: fewer than MIN_TEST_PHOTOS held-out photos, the default
    "accurate_enough",  # closed set: the strictest threshold that is accurate and rejects few
    "inconclusive",  # closed set: none is, the default
    "strangers_kept_out",  # open set: the best recognition among thresholds that meet the stranger target
    "no_measurement",  # open set: no sweep, the default
    "safest_available",  # open set: none meets the target, the safest
]


@dataclass(frozen=True)
class Recommendation:
    """The recommended threshold and what it rests on (a row of the sweep it was chosen from)."""

    threshold: float
    basis: Basis
    n_test: int = 0
    max_far: float | None = None
    closed_row: SweepRow | None = None
    open_row: OpenSetRow | None = None
    strangers_unmeasured: bool = False  # closed-set choice because stranger safety needs 3 students

    @property
    def target_reached(self) -> bool:
        return self.basis == "strangers_kept_out"


def recommend_closed_set(sweep: Sequence[SweepRow], n_test: int) -> Recommendation:
    """The strictest threshold that still recognises enrolled students reliably.

    Known-student photos cannot show how often a stranger is accepted, so among the
    thresholds that keep accepted answers ≥ 99 % correct and reject ≤ 10 % of enrolled
    photos we take the highest. Too little evidence → the default 0.70.
    """
    if n_test < MIN_TEST_PHOTOS:
        return Recommendation(DEFAULT_THRESHOLD, "too_few_photos", n_test)
    good = [
        r
        for r in sweep
        if r.accuracy_of_accepted is not None
        and r.accuracy_of_accepted >= TARGET_ACCEPTED_ACCURACY
        and r.rejection_rate <= MAX_REJECTION
    ]
    if good:
        best = max(good, key=lambda r: r.threshold)
        return Recommendation(best.threshold, "accurate_enough", n_test, closed_row=best)
    return Recommendation(DEFAULT_THRESHOLD, "inconclusive", n_test)


def recommend_open_set(sweep: Sequence[OpenSetRow], max_far: float) -> Recommendation:
    """The threshold with the best recognition among those whose stranger false-accept rate
    is ≤ ``max_far`` and that still recognise at least half of the enrolled photos (ties →
    the stricter one); when none does, the safest."""
    ok = [r for r in sweep if r.false_accept_rate <= max_far and r.recognition_rate >= MIN_USEFUL_RECOGNITION]
    if ok:
        best = max(ok, key=lambda r: (round(r.recognition_rate, 9), r.threshold))
        return Recommendation(best.threshold, "strangers_kept_out", max_far=max_far, open_row=best)
    if not sweep:
        return Recommendation(DEFAULT_THRESHOLD, "no_measurement", max_far=max_far)
    safest = min(sweep, key=lambda r: (r.false_accept_rate, -r.threshold))
    return Recommendation(safest.threshold, "safest_available", max_far=max_far, open_row=safest)


def tradeoff_points(
    sweep: Sequence[OpenSetRow], threshold: float, at: OpenSetRow, max_far: float
) -> tuple[OpenSetRow, ...]:
    """Lower thresholds that recognise more than ``at`` (the row at the threshold in use), offered
    when recognition is poor: the strictest that recognises well, and the one that recognises most,
    among those that keep strangers within the target (or, when none does, within a few times it)."""
    lower = [r for r in sweep if r.threshold < threshold and r.recognition_rate > at.recognition_rate]
    safe = [r for r in lower if r.false_accept_rate <= max_far]
    if not safe:  # nothing keeps strangers within the target: say what a little more risk would buy
        safe = [r for r in lower if r.false_accept_rate <= TRADEOFF_MAX_FAR_FACTOR * max_far]
    picks: list[OpenSetRow] = []
    good = [r for r in safe if r.recognition_rate >= GOOD_RECOGNITION]
    if good:
        picks.append(max(good, key=lambda r: r.threshold))  # the strictest that recognises well
    best = max(safe, key=lambda r: (round(r.recognition_rate, 3), r.threshold), default=None)
    if best is not None and best not in picks:
        picks.append(best)
    return tuple(sorted(picks, key=lambda r: -r.threshold)[:MAX_TRADEOFFS])


def session_bars(threshold: float) -> list[float]:
    """The per-face bars tried for the session rule, lowest first: the threshold itself, then stricter ones."""
    steps = [step / 100 for step in range(int(np.floor(threshold * 100 + 1e-9)) + 1, 100)]
    return [float(threshold), *(b for b in (*steps, *_FINE_TOP) if b > threshold)]


def session_bar(
    threshold: float,
    max_far: float,
    short_recognition: Callable[[float], float],
    typical_stranger_rate: Callable[[float], float],
) -> float:
    """The session rule's per-face bar: the lowest bar at which strangers mark somebody present in at
    most ``max_far`` of typical sessions, among the bars that keep at least MIN_SESSION_RECOGNITION of
    enrolled students marked present in a short session; when none gets strangers there, the strictest
    of those bars. ``short_recognition(bar)`` and ``typical_stranger_rate(bar)`` are the measured rates."""
    chosen = float(threshold)
    for i, bar in enumerate(session_bars(threshold)):
        if i and short_recognition(bar) < MIN_SESSION_RECOGNITION:
            break  # stricter bars only lose more students
        chosen = bar
        if typical_stranger_rate(bar) <= max_far:
            break
    return chosen
