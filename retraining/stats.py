"""Confidence bounds of measured rates, computed one way for every number the suite reports."""

from __future__ import annotations

from scipy.stats import binomtest


def upper95(successes: int, trials: int) -> float:
    """One-sided 95 % upper bound (Clopper-Pearson, exact) of a rate of ``successes`` in ``trials``.

    What the report means by "with 95 % confidence at most": a rate measured as 0 of 300 is
    at most 1.0 %. 1.0 when nothing was measured.
    """
    if trials <= 0:
        return 1.0
    k = min(max(int(successes), 0), int(trials))
    return float(binomtest(k, int(trials), alternative="less").proportion_ci(confidence_level=0.95).high)


def rate_upper95(rate: float, trials: int) -> float:
    """:func:`upper95` of a rate given as a share (e.g. an accuracy) of ``trials``."""
    return upper95(int(round(rate * trials)), trials)
