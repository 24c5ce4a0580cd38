"""Confidence bounds of measured rates, computed one way for every number the suite reports."""

from __future__ import annotations

from scipy.stats import beta, binomtest


def upper95(successes: float, trials: int) -> float:
    """One-sided 95 % upper bound (Clopper-Pearson, exact) of a rate of ``successes`` in ``trials``.

    What the report means by "with 95 % confidence at most": a rate measured as 0 of 300 is
    at most 1.0 %. 1.0 when nothing was measured. A fractional count (e.g. a sum of per-person
    probabilities) takes the same bound's beta-quantile form, which binomtest cannot.
    """
    if trials <= 0 or successes >= trials:
        return 1.0
    if float(successes).is_integer():
        k = max(int(successes), 0)
        return float(binomtest(k, int(trials), alternative="less").proportion_ci(confidence_level=0.95).high)
    return float(beta.ppf(0.95, successes + 1, trials - successes))


def rate_upper95(rate: float, trials: int) -> float:
    """:func:`upper95` of a rate given as a share (e.g. an accuracy) of ``trials``."""
    return upper95(int(round(rate * trials)), trials)
