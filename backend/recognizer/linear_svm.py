"""The fitted class-balanced linear SVM, as pickled models hold it: its scores and answers.

Nothing here trains: ``retraining/balanced_svm.py`` fits it (and explains the model) and pickles
as this class, the one models pickled by earlier releases name, so a backend reads old and new
pickles (only when asked to: see ``legacy.py``) without the retraining package.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import validate_data


class BalancedLinearSVM(ClassifierMixin, BaseEstimator):
    """One-vs-rest linear scores ``x·coef_ᵀ + intercept_`` (a binary problem: one score, class 1 vs 0)."""

    def __init__(self, C: float = 1.0, max_iter: int = 8, tol: float = 1e-4, balance_binary: bool = True) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.balance_binary = balance_binary

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        if not hasattr(self, "_coef32"):  # (check_is_fitted wants a fit method; this class has none)
            raise NotFittedError(f"{type(self).__name__} holds no fitted scores: train it with retraining/")
        data: np.ndarray = validate_data(self, X, dtype=np.float32, reset=False)
        scores = data @ self._coef32 + self._intercept32
        return scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X: ArrayLike) -> np.ndarray:
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]
