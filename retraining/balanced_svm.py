"""A class-balanced one-vs-rest linear SVM that trains in seconds for thousands of students.

Model: for every student c, ``w_c`` minimises the L2-regularised squared-hinge loss

    0.5 * ||w_c||² + C * Σ_i s_ic * max(0, 1 − y_ic · w_c·[x_i, 1])²

with ``y_ic = +1`` for c's photos and −1 for everyone else's. The weights are balanced
twice: across students, ``s_i = n / (K · n_{class of i})`` (``class_weight="balanced"``:
a student with 40 photos does not outweigh one with 5), and within each one-vs-rest
problem, c's own photos weigh as much in total as all the others' (``s_ic = (K − 1)·s_i``
for c's photos) — the balance a one-vs-one SVM has by construction. Without the second
balance the rare positive side is under-fitted: on real LFW embeddings (158 people, dlib,
5-fold, 4 repeats) accuracy was 98.07 % vs 98.50 % for the one-vs-one SVC; with it, see
``retraining/train.py``. The intercept is an extra constant feature, regularised,
like liblinear's; ``balance_binary=False`` gives ``LinearSVC(class_weight="balanced")``'s
problem.

How it is solved, and why it is fast. All K problems share the same photos, so:

1. One d×d matrix ``M = I/(2C) + Xᵀ S X`` (cost n·d², independent of K) and its Cholesky.
   Problem c's matrix ``M_c = M + Xcᵀ (S_c − S) Xc`` differs only on c's own n_c photos, a
   rank-n_c update solved with the Woodbury identity: ``Z = M⁻¹ Xᵀ`` once (n·d², like M),
   then one n_c×n_c system per student. Total cost stays n·d², not K·d³.
2. Least-squares start (every photo "on the margin"), then majorise–minimise: the squared
   hinge at the current scores o' is bounded above by ``(o − y)²`` where the photo violates
   the margin and by ``(o − o')²`` where it does not (equal at o'). Minimising that bound is
   again a least-squares problem with the SAME matrices, so each step is one scores product
   ``X·W``, one correction ``Xᵀ S R`` (R: the residuals of the margin violators) and the
   solves above, and the objective decreases monotonically to the optimum.
3. With the small C used here nearly every photo violates every margin (all of them on the
   synthetic data at 2000 students and on ORL and LFW), and then the correction is
   ``Xᵀ S X·W + Xᵀ S 1`` up to a sparse fix-up for the own photos and the few others that do
   not: a d×d×K product instead of a second n×d×K one, which halves a step's cost.

``tests/retraining/test_fast_paths.py`` checks that enough steps reach liblinear's solution of the
same problems. Numbers (2 CPU cores, bench/bench_train.py): see ``retraining/train.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
from numpy.typing import ArrayLike
from sklearn.utils.validation import validate_data

from backend.recognizer import linear_svm as served

#: Classes whose scores are computed together (bounds memory: n × chunk float32).
CLASS_CHUNK = 256
#: Below this share of margin violators in a chunk its correction is a sparse product of the residuals ...
SPARSE_ACTIVE = 0.05
#: ... below this share of NON-violators, the all-violators formula plus a sparse fix-up; else one GEMM.
SPARSE_INACTIVE = 0.05


@dataclass(frozen=True)
class _Problems:
    """One fit's data and the parts every majorise–minimise step shares (see the module docstring)."""

    Xa: np.ndarray  # n×(d+1) float32 photos with a bias column
    Xs: np.ndarray  # Xa with each row times its weight s
    s: np.ndarray  # per-photo class-balancing weight
    yi: np.ndarray  # encoded labels
    targets: np.ndarray  # the classes with a binary problem
    beta: float  # weight factor of a problem's own photos
    C: float
    G: np.ndarray  # Xᵀ S X
    total: np.ndarray  # Σ_i s_i x_i
    own_col: np.ndarray  # per photo: its own problem's column (−1: none)
    solve: Callable[[np.ndarray], np.ndarray]  # V ↦ [M_c⁻¹ v_c]_c
    start: np.ndarray  # (d+1)×T least-squares start


class BalancedLinearSVM(served.BalancedLinearSVM):
    """One-vs-rest, class-balanced, squared-hinge linear SVM (see the module docstring).

    scikit-learn compatible (``fit``, ``decision_function``, ``predict``, ``classes_``,
    ``coef_``, ``intercept_``), so it sits inside ``CalibratedClassifierCV``. Pickled, it is
    the serving package's :class:`backend.recognizer.linear_svm.BalancedLinearSVM` (the
    fitted numbers, no training code), which is what models pickled by earlier releases hold:
    a backend reads either without this package.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (served.BalancedLinearSVM, (self.C, self.max_iter, self.tol, self.balance_binary), self.__getstate__())

    def __deepcopy__(self, memo: dict[int, object]) -> BalancedLinearSVM:
        import copy

        twin = type(self)(self.C, self.max_iter, self.tol, self.balance_binary)
        twin.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return twin

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> BalancedLinearSVM:
        p = self._problems(X, y, sample_weight)
        W = p.start
        self.n_iter_ = 0
        for it in range(int(self.max_iter)):
            # minimiser of the majorant: M_c w = Xᵀ S_c ỹ = (M_c − I/2C) w' − corr  ⇒  w = w' − M_c⁻¹(w'/2C + corr)
            W_new = W - p.solve(W / (2.0 * p.C) + self._correction(p, W))
            change = np.abs(W_new - W).max() / max(np.abs(W_new).max(), 1e-12)
            W = W_new
            self.n_iter_ = it + 1
            if change < self.tol:
                break
        d = p.Xa.shape[1] - 1
        self.coef_ = np.ascontiguousarray(W[:d].T)
        self.intercept_ = W[d].copy()
        self._coef32 = np.ascontiguousarray(W[:d].astype(np.float32))
        self._intercept32 = W[d].astype(np.float32)
        return self

    def _problems(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None) -> _Problems:
        """Validate the data and set up what every step shares (sets ``classes_``)."""
        data: np.ndarray
        data, y = validate_data(self, X, y, dtype=np.float32, order="C")
        self.classes_, yi = np.unique(y, return_inverse=True)
        K = len(self.classes_)
        if K < 2:
            raise ValueError("BalancedLinearSVM needs at least two classes")
        n, d = data.shape
        Xa = np.empty((n, d + 1), dtype=np.float32)
        Xa[:, :d] = data
        Xa[:, d] = 1.0
        counts = np.bincount(yi, minlength=K).astype(np.float64)
        s = (n / (K * counts))[yi]
        if sample_weight is not None:
            s = s * np.asarray(sample_weight, dtype=np.float64)
        # binary problems: one per class, or only classes_[1] vs the rest when K == 2
        targets = np.array([1]) if K == 2 else np.arange(K)
        # weight factor of a problem's own photos (K − 1: they weigh as much as all the others)
        beta = float(K - 1) if self.balance_binary and K > 2 else 1.0
        C = float(self.C)
        Xs = Xa * s[:, None].astype(np.float32)
        G = (Xa.T @ Xs).astype(np.float64)  # Xᵀ S X
        M = G + np.eye(d + 1) / (2.0 * C)
        chol = scipy.linalg.cho_factor(M, lower=True, check_finite=False)
        solve = self._problem_solver(chol, Xa, s, yi, targets, beta)
        # Xᵀ S_c y_c = (β + 1)·Σ_{i∈c} s_i x_i − Σ_i s_i x_i
        onehot = scipy.sparse.csr_matrix((np.ones(n, dtype=np.float32), (yi, np.arange(n))), shape=(K, n))
        class_sums = np.asarray(onehot @ Xs, dtype=np.float64)
        total = class_sums.sum(axis=0)
        start = solve(((beta + 1.0) * class_sums[targets] - total).T)  # (d+1)×T least-squares start
        # column of each photo's own problem (−1: none, e.g. class 0 when K == 2)
        own_col = np.full(K, -1)
        own_col[targets] = np.arange(len(targets))
        return _Problems(Xa, Xs, s, yi, targets, beta, C, G, total, own_col[yi], solve, start)

    def _correction(self, p: _Problems, W: np.ndarray) -> np.ndarray:
        """Xᵀ S R: R the residuals of the margin violators (the active set), 0 elsewhere."""
        Xa, Xs, s, G, total, own_col, beta = p.Xa, p.Xs, p.s, p.G, p.total, p.own_col, p.beta
        n = len(Xa)
        W32 = W.astype(np.float32)
        corr = np.zeros_like(W)
        # if every photo violated every margin, R = scores + 1 (own photos aside) and Xᵀ S R = G W + Xᵀ S 1:
        # no n×d×K product (the regularised problems put nearly every photo inside the margins)
        all_active = None
        for start in range(0, len(p.targets), CLASS_CHUNK):
            cols = slice(start, start + CLASS_CHUNK)
            R = Xa @ W32[:, cols]  # n × chunk scores
            mine = np.flatnonzero((own_col >= start) & (own_col < start + R.shape[1]))
            at = (mine, own_col[mine] - start)
            own = R[at]  # an own photo (y = +1) violates its margin when score < 1: residual β·(score − 1)
            own_residual = np.where(own < 1.0, (own - np.float32(1.0)) * np.float32(beta), np.float32(0.0))
            outside = R <= -1.0  # another student's photo (y = −1) violates it when score > −1: score + 1
            outside[at] = False
            n_outside = np.count_nonzero(outside)
            inactive = n_outside + np.count_nonzero(own >= 1.0)
            if inactive < SPARSE_INACTIVE * R.size:
                if all_active is None:
                    all_active = G @ W + total[:, None]
                # fix-up: the true residual minus the score + 1 that all_active counted
                rows, cc, fix = at[0], at[1], own_residual - (own + np.float32(1.0))
                if n_outside:
                    out_rows, out_cc = np.nonzero(outside)
                    rows, cc = np.concatenate([rows, out_rows]), np.concatenate([cc, out_cc])
                    fix = np.concatenate([fix, -(R[outside] + np.float32(1.0))])
                fixup = scipy.sparse.csr_matrix((fix, (cc, rows)), shape=(R.shape[1], n)) @ Xs  # float32
                corr[:, cols] = all_active[:, cols] + fixup.T
                continue
            np.add(R, np.float32(1.0), out=R)  # the scores become the residuals, in place
            np.maximum(R, np.float32(0.0), out=R)
            R[at] = own_residual
            if R.size - inactive > SPARSE_ACTIVE * R.size:  # dense: one GEMM
                corr[:, cols] = Xs.T @ R
            else:
                rows, cc = np.nonzero(R)
                vals = s[rows] * R[rows, cc].astype(np.float64)
                corr[:, cols] = (scipy.sparse.csr_matrix((vals, (cc, rows)), shape=(R.shape[1], n)) @ Xa).T
        return corr

    @staticmethod
    def _problem_solver(
        chol: tuple[np.ndarray, bool], Xa: np.ndarray, s: np.ndarray, yi: np.ndarray, targets: np.ndarray, beta: float
    ) -> Callable[[np.ndarray], np.ndarray]:
        """V ↦ [M_c⁻¹ v_c]_c for the right-hand sides V ((d+1)×T), one column per problem.

        ``M_c = M + (β − 1)·Xcᵀ S Xc`` (c's photos weigh β times more); by Woodbury
        ``M_c⁻¹ v = M⁻¹v − Zc (D_c⁻¹ + Xc Zc)⁻¹ Zcᵀ v`` with ``Zc = M⁻¹ Xcᵀ``, ``D_c = (β − 1)·S_c``.
        """

        def base(V: np.ndarray) -> np.ndarray:
            return scipy.linalg.cho_solve(chol, V, check_finite=False)

        if beta == 1.0:
            return base
        # photos grouped by class, so that each Zc below is a view, not a copy
        order = np.argsort(yi, kind="stable")
        bounds = np.searchsorted(yi[order], np.arange(int(yi.max()) + 2))
        Z = base(Xa[order].T.astype(np.float64))  # (d+1)×n: M⁻¹ xᵢ for every photo, one BLAS-3 solve
        parts = []
        for c in targets:
            idx = order[bounds[c] : bounds[c + 1]]
            Zc = Z[:, bounds[c] : bounds[c + 1]]
            H = np.diag(1.0 / ((beta - 1.0) * s[idx])) + Xa[idx].astype(np.float64) @ Zc
            parts.append((Zc, scipy.linalg.cho_factor(H, lower=True, check_finite=False)))

        def solve(V: np.ndarray) -> np.ndarray:
            out = base(V)
            for j, (Zc, Hc) in enumerate(parts):
                out[:, j] -= Zc @ scipy.linalg.cho_solve(Hc, Zc.T @ V[:, j], check_finite=False)
            return out

        return solve
