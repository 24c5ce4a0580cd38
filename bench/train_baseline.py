"""The training recipe before Newton calibration: the benchmark's baseline, frozen here.

``fit_model_baseline`` is ``retraining.train.fit_model`` as it was before the calibration
temperature was fitted by Newton's method (``retraining/temperature.py``): scikit-learn's
``CalibratedClassifierCV(..., method="temperature", ensemble=False).fit``, around
``BaselineLinearSVM``, the SVM whose majorise-minimise step built its residuals in eight
elementwise passes and computed each correction with a second n×d×K GEMM (coefficients
within ~2e-6 relative of ``BalancedLinearSVM``'s). Kept only so that ``bench_train.py`` can
measure the previous recipe beside the current one in the same run.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse
from sklearn.calibration import CalibratedClassifierCV
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.utils.validation import validate_data

from backend.recognizer.linear_svm import CLASS_CHUNK, BalancedLinearSVM
from backend.recognizer.model import TrainedModel
from backend.recognizer.openset import OpenSetScorer
from retraining.train import C_TOTAL, SVM_STEPS, calibration_folds, class_centres


def fit_model_baseline(embeddings: np.ndarray, student_ids: np.ndarray) -> TrainedModel:
    """``fit_model`` before Newton calibration (same checks left out: the benchmark's data is valid)."""
    X = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(student_ids).astype(str)
    encoder = LabelEncoder().fit(labels)
    y = encoder.transform(labels)
    counts = np.bincount(y)
    singles = np.flatnonzero(counts == 1)
    if len(singles):
        extra = np.isin(y, singles)
        X = np.concatenate([X, X[extra]])
        y = np.concatenate([y, y[extra]])
        counts = np.bincount(y)
    scaler = StandardScaler().fit(X)
    base = BaselineLinearSVM(C=C_TOTAL / len(X), max_iter=SVM_STEPS)
    classifier = CalibratedClassifierCV(base, method="temperature", cv=calibration_folds(counts), ensemble=False)
    classifier.fit(scaler.transform(X), y)
    centres = class_centres(X, y, np.arange(len(encoder.classes_)))
    return TrainedModel(scaler, classifier, encoder, OpenSetScorer(centres, None))


class BaselineLinearSVM(BalancedLinearSVM):
    """``BalancedLinearSVM`` with its earlier majorise-minimise step (eight elementwise passes, two GEMMs)."""

    def fit(self, X, y, sample_weight=None) -> BaselineLinearSVM:
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
        M = (Xa.T @ Xs).astype(np.float64) + np.eye(d + 1) / (2.0 * C)  # Xᵀ S X + I/2C
        chol = scipy.linalg.cho_factor(M, lower=True, check_finite=False)
        solve = self._problem_solver(chol, Xa, s, yi, targets, beta)
        # Xᵀ S_c y_c = (β + 1)·Σ_{i∈c} s_i x_i − Σ_i s_i x_i
        onehot = scipy.sparse.csr_matrix((np.ones(n, dtype=np.float32), (yi, np.arange(n))), shape=(K, n))
        class_sums = np.asarray(onehot @ Xs, dtype=np.float64)
        total = class_sums.sum(axis=0)
        W = solve(((beta + 1.0) * class_sums[targets] - total).T)  # (d+1)×T least-squares start
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
                    R = np.where(active, (scores - Y) * np.where(Y > 0, np.float32(beta), np.float32(1.0)), 0.0)
                    corr[:, cols] = Xs.T @ R.astype(np.float32)
                else:
                    rows, cc = np.nonzero(active)
                    pos = Y[rows, cc] > 0
                    vals = s[rows] * np.where(pos, beta, 1.0) * (scores[rows, cc] - Y[rows, cc]).astype(np.float64)
                    R = scipy.sparse.csr_matrix((vals, (cc, rows)), shape=(len(chunk), n))
                    corr[:, cols] = (R @ Xa).T
            # minimiser of the majorant: M_c w = Xᵀ S_c ỹ = (M_c − I/2C) w' − corr  ⇒  w = w' − M_c⁻¹(w'/2C + corr)
            W_new = W - solve(W / (2.0 * C) + corr)
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
