"""A class-balanced one-vs-rest linear SVM that trains in seconds for thousands of students.

Model: for every student c, ``w_c`` minimises the L2-regularised squared-hinge loss

    0.5 * ||w_c||² + C * Σ_i s_i * max(0, 1 − y_ic · w_c·[x_i, 1])²

with ``y_ic = +1`` for c's photos and −1 for everyone else's, and the class-balanced
sample weights ``s_i = n / (K · n_{class of i})`` of ``class_weight="balanced"``: the
problem of ``LinearSVC(loss="squared_hinge", class_weight="balanced")`` (the intercept
is an extra constant feature, regularised, like liblinear's).

How it is solved, and why it is fast. All K problems share the same photos, so:

1. Start from the least-squares solution (every photo "on the margin"): one d×d matrix
   ``M = I/(2C) + Xᵀ S X`` (cost n·d², independent of K), one Cholesky, and K right-hand
   sides that are just per-class sums of photos.
2. Majorise–minimise: the squared hinge at the current scores o' is bounded above by
   ``(o − y)²`` where the photo violates the margin and by ``(o − o')²`` where it does not
   (equal at o'). Minimising that bound is again a least-squares problem with the SAME
   matrix M, so each step is one scores product ``X·W`` plus a Cholesky solve, and the
   objective decreases monotonically to the SVM optimum.

``max_iter`` steps (default 8) get within ~0.1 % of the optimum objective on face
embeddings; ``tol`` stops earlier. Numbers (2 CPU cores, bench/bench_train.py): see
``backend/recognizer/train.py``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

#: Classes whose scores are computed together (bounds memory: n × chunk float32).
CLASS_CHUNK = 256


class BalancedLinearSVM(ClassifierMixin, BaseEstimator):
    """One-vs-rest, class-balanced, squared-hinge linear SVM (see the module docstring).

    scikit-learn compatible (``fit``, ``decision_function``, ``predict``, ``classes_``,
    ``coef_``, ``intercept_``), so it sits inside ``CalibratedClassifierCV``.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 8, tol: float = 1e-4) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y, sample_weight=None):  # noqa: ANN001 - sklearn signature
        X, y = validate_data(self, X, y, dtype=np.float32, order="C")
        self.classes_, yi = np.unique(y, return_inverse=True)
        K = len(self.classes_)
        if K < 2:
            raise ValueError("BalancedLinearSVM needs at least two classes")
        n, d = X.shape
        Xa = np.empty((n, d + 1), dtype=np.float32)
        Xa[:, :d] = X
        Xa[:, d] = 1.0
        counts = np.bincount(yi, minlength=K).astype(np.float64)
        s = (n / (K * counts))[yi]
        if sample_weight is not None:
            s = s * np.asarray(sample_weight, dtype=np.float64)
        # binary problems: one per class, or only classes_[1] vs the rest when K == 2
        targets = np.array([1]) if K == 2 else np.arange(K)
        C = float(self.C)
        Xs = Xa * s[:, None].astype(np.float32)
        gram = (Xa.T @ Xs).astype(np.float64)  # Xᵀ S X
        M = gram + np.eye(d + 1) / (2.0 * C)
        chol = scipy.linalg.cho_factor(M, lower=True, check_finite=False)
        # Xᵀ S y_c = 2·Σ_{i∈c} s_i x_i − Σ_i s_i x_i
        onehot = scipy.sparse.csr_matrix((np.ones(n, dtype=np.float32), (yi, np.arange(n))), shape=(K, n))
        class_sums = np.asarray(onehot @ Xs, dtype=np.float64)
        total = class_sums.sum(axis=0)
        B0 = (2.0 * class_sums[targets] - total).T  # (d+1)×T
        W = scipy.linalg.cho_solve(chol, B0, check_finite=False)  # least-squares start
        self.n_iter_ = 0
        for it in range(int(self.max_iter)):
            W32 = W.astype(np.float32)
            corr = np.zeros_like(W)
            for start in range(0, len(targets), CLASS_CHUNK):
                cols = slice(start, start + CLASS_CHUNK)
                chunk = targets[cols]
                scores = Xa @ W32[:, cols]  # n × chunk scores
                Y = np.where(yi[:, None] == chunk[None, :], np.float32(1.0), np.float32(-1.0))
                active = Y * scores < 1.0  # margin violators: the active set
                if active.mean() > 0.05:  # dense: one GEMM
                    R = np.where(active, scores - Y, np.float32(0.0))
                    corr[:, cols] = Xs.T @ R
                else:
                    rows, cc = np.nonzero(active)
                    vals = s[rows] * (scores[rows, cc] - Y[rows, cc]).astype(np.float64)
                    R = scipy.sparse.csr_matrix((vals, (cc, rows)), shape=(len(chunk), n))
                    corr[:, cols] = (R @ Xa).T
            # minimiser of the majorant: M W' = Xᵀ S ỹ = gram·W − Xᵀ S ((O − Y) on the active set)
            W_new = scipy.linalg.cho_solve(chol, gram @ W - corr, check_finite=False)
            change = np.abs(W_new - W).max() / max(np.abs(W_new).max(), 1e-12)
            W = W_new
            self.n_iter_ = it + 1
            if change < self.tol:
                break
        self.coef_ = np.ascontiguousarray(W[:d].T)
        self.intercept_ = W[d].copy()
        self._coef32 = np.ascontiguousarray(W[:d].astype(np.float32))
        self._intercept32 = W[d].astype(np.float32)
        return self

    def decision_function(self, X):  # noqa: ANN001
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        scores = X @ self._coef32 + self._intercept32
        return scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X):  # noqa: ANN001
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]
