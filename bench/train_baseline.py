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
import scipy.sparse
from sklearn.calibration import CalibratedClassifierCV
from sklearn.preprocessing import StandardScaler

from retraining.balanced_svm import CLASS_CHUNK, BalancedLinearSVM, _Problems
from retraining.train import C_TOTAL, SVM_STEPS, FittedModel, calibration_folds, class_centres, training_rows


def fit_model_baseline(embeddings: np.ndarray, student_ids: np.ndarray) -> FittedModel:
    """``fit_model`` before Newton calibration."""
    X, y, encoder = training_rows(embeddings, student_ids)
    counts = np.bincount(y)
    scaler = StandardScaler().fit(X)
    base = BaselineLinearSVM(C=C_TOTAL / len(X), max_iter=SVM_STEPS)
    classifier = CalibratedClassifierCV(base, method="temperature", cv=calibration_folds(counts), ensemble=False)
    classifier.fit(scaler.transform(X), y)
    centres = class_centres(X, y, np.arange(len(encoder.classes_)))
    return FittedModel(scaler, classifier, encoder, centres, None)


class BaselineLinearSVM(BalancedLinearSVM):
    """``BalancedLinearSVM`` with its earlier majorise–minimise correction (eight elementwise passes, two GEMMs)."""

    def _correction(self, p: _Problems, W: np.ndarray) -> np.ndarray:
        Xa, Xs, s, yi, beta = p.Xa, p.Xs, p.s, p.yi, p.beta
        n = len(Xa)
        W32 = W.astype(np.float32)
        corr = np.zeros_like(W)
        for start in range(0, len(p.targets), CLASS_CHUNK):
            cols = slice(start, start + CLASS_CHUNK)
            chunk = p.targets[cols]
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
        return corr
