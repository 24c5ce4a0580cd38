"""The calibration temperature: one inverse temperature β for all students, fitted by Newton's method.

Temperature scaling turns the SVM's n×K decision scores ``z`` into probabilities
``softmax(β·z)``; β minimises the out-of-fold multinomial log loss

    L(β) = mean_i [ log Σ_k exp(β·z_ik) − β·z_i,y_i ]

which is what scikit-learn's ``CalibratedClassifierCV(method="temperature")`` fits. It does
so with a bounded Brent search over log β in [−10, 10] that evaluated the loss 16-30 times
at 2000 students × 20 photos, each evaluation a pass over the 40 000 × 2000 out-of-fold
scores (~0.5 s): 47-64 % of the whole training time (2 CPU cores, scikit-learn 1.9.1).

L is convex in β, and its derivatives cost the same single pass over the scores as L
itself (p = softmax(β·z_i)):

    L'(β)  = mean_i [ E_p z_i − z_i,y_i ]          L''(β) = mean_i Var_p z_i  ≥ 0

so Newton's method on log β needs 2-3 passes, from a start fitted the same way on every
k-th row (~4000 rows). The search keeps a bracket of the minimiser and scikit-learn's
bounds, and bisects whenever a Newton step would leave the bracket. Each pass works on
``ROW_CHUNK`` rows at a time in float32 (the dtype of the SVM's scores) and accumulates in
float64; β comes out within 1e-7 of the float64 answer, where scikit-learn's float32 search
stops up to 1.2e-4 away from it (its tolerance is 7.6e-6 in log β, and its float32 loss is
flat to rounding near the minimum).

When the out-of-fold scores rank every photo's own student first (easy data: synthetic
embeddings with spread 0.9, ORL with dlib embeddings), L falls for ever and the minimiser
is β → ∞. scikit-learn's float32 loss then reads exactly 0 from some β on, and its search
stops wherever in that flat region its evaluations happen to land (2000 students, spread
0.9: β = 52.1, while the loss is already 0 from β = 28.4). Here a ridge term ``RIDGE·β²``
makes the minimiser finite and reproducible: it lies where L has fallen to ~1e-10 (β =
36.6 on the same scores, inside that flat region). Where L has an interior minimum the
ridge moves β by less than 1e-8 relative (2.4e-9 and 5e-10 measured at 2000 students).
"""

from __future__ import annotations

import math

import numpy as np

#: log β is searched in this interval (scikit-learn's ``_TemperatureScaling`` uses the same).
LOG_BETA_BOUNDS = (-10.0, 10.0)
#: Weight of the ridge term RIDGE·β²: finite β when every out-of-fold photo is ranked right.
RIDGE = 1e-12
#: Newton stops when its step in log β is below this: β to 1e-6 relative.
LOG_BETA_TOL = 1e-6
#: The starting value is fitted on about this many rows (every k-th), to a looser tolerance.
START_ROWS = 4096
START_TOL = 1e-3
#: Scores are processed this many rows at a time (bounds the temporaries: 2 × rows × K float32).
ROW_CHUNK = 256
#: Passes over the scores before giving up on the tolerance (bisection alone needs < 40).
MAX_PASSES = 60


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """Inverse temperature β minimising the multinomial log loss of ``softmax(β·scores)``.

    ``scores``: n×K decision scores (K ≥ 2; columns in label order) or, for two classes, the
    n scores of class 1 (as scikit-learn's binary ``decision_function`` gives them).
    ``labels``: n integers in 0..K−1. n×K scores are not copied (float32 stays float32).
    """
    z = np.asarray(scores)
    if z.dtype not in (np.float32, np.float64):
        z = z.astype(np.float64)
    if z.ndim == 1 or z.shape[1] == 1:  # binary: logits (−s, s), as scikit-learn builds them
        s = z.reshape(-1, 1)
        z = np.hstack([-s, s])
    y = np.asarray(labels, dtype=np.intp)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"scores {np.shape(scores)} and labels {np.shape(labels)} do not line up")
    step = max(1, len(y) // START_ROWS)
    start = 0.0
    if step > 1:
        start = _newton(z[::step], y[::step], 0.0, START_TOL)
    return math.exp(_newton(z, y, start, LOG_BETA_TOL))


def _newton(z: np.ndarray, y: np.ndarray, t: float, tol: float) -> float:
    """log β minimising L(β) + RIDGE·β², by safeguarded Newton steps on t = log β from ``t``."""
    rowmax = z.max(axis=1)
    own = z[np.arange(len(y)), y]
    lo, hi = LOG_BETA_BOUNDS
    for _ in range(MAX_PASSES):
        beta = math.exp(t)
        d1, d2 = _derivatives(z, rowmax, own, beta)
        d1 += 2.0 * RIDGE * beta
        d2 += 2.0 * RIDGE
        # in t = log β: dF/dt = β·F', d²F/dt² = β·F' + β²·F''
        g, h = beta * d1, beta * d1 + beta * beta * d2
        if g > 0:
            hi = t
        elif g < 0:
            lo = t
        else:
            return t
        at_bound = (t >= LOG_BETA_BOUNDS[1] and g < 0) or (t <= LOG_BETA_BOUNDS[0] and g > 0)
        if at_bound:  # the minimiser lies beyond the bound: the bound is the answer
            return t
        new = t - g / h if h > 0 else (math.inf if g < 0 else -math.inf)
        if not lo < new < hi:
            if new >= hi and hi == LOG_BETA_BOUNDS[1]:
                new = hi  # try the bound itself before bisecting towards it
            elif new <= lo and lo == LOG_BETA_BOUNDS[0]:
                new = lo
            else:
                new = 0.5 * (lo + hi)
        if abs(new - t) < tol:
            return new
        t = new
    return t


def _derivatives(z: np.ndarray, rowmax: np.ndarray, own: np.ndarray, beta: float) -> tuple[float, float]:
    """L'(β) and L''(β): one pass over the scores, ``ROW_CHUNK`` rows at a time.

    Scores are taken relative to each row's maximum: exp never overflows, and the moments
    are taken about the top score, where most of the probability sits, so that the variance
    s2/s0 − mean² does not lose its digits to cancellation.
    """
    n, k = z.shape
    b = z.dtype.type(beta)
    centred = np.empty((min(ROW_CHUNK, n), k), dtype=z.dtype)
    weights = np.empty_like(centred)
    d1 = d2 = 0.0
    for start in range(0, n, ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        m = len(z[rows])
        c, e = centred[:m], weights[:m]
        np.subtract(z[rows], rowmax[rows, None], out=c)
        np.multiply(c, b, out=e)
        np.exp(e, out=e)
        s0 = e.sum(axis=1, dtype=np.float64)
        np.multiply(e, c, out=e)
        s1 = e.sum(axis=1, dtype=np.float64)
        s2 = np.einsum("ij,ij->i", e, c).astype(np.float64)
        mean = s1 / s0
        d1 += float(np.sum(mean - (own[rows] - rowmax[rows])))
        d2 += float(np.sum(np.maximum(s2 / s0 - mean * mean, 0.0)))
    return d1 / n, d2 / n
