"""Confidence bounds of measured rates, computed one way for every number the suite reports."""

from __future__ import annotations

from scipy.stats import beta


def upper95(successes: float, trials: int) -> float:
    """One-sided 95 % upper bound (Clopper-Pearson, exact) of a rate of ``successes`` in ``trials``.

    What the report means by "with 95 % confidence at most": a rate measured as 0 of 300 is
    at most 1.0 %. 1.0 when nothing was measured. The beta-quantile form is the bound scipy's
    ``binomtest(...).proportion_ci`` gives, and it also takes a fractional count (e.g. a sum of
    per-person probabilities).
    """
    if trials <= 0 or successes >= trials:
        return 1.0
    return float(beta.ppf(0.95, max(successes, 0) + 1, trials - successes))


def rate_upper95(rate: float, trials: int) -> float:
    """:func:`upper95` of a rate given as a share (e.g. an accuracy) of ``trials``."""
    return upper95(int(round(rate * trials)), trials)
