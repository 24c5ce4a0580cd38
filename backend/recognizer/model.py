"""Recognition with a trained model: scaler → linear SVM → calibrated probabilities → open-set confidence.

:class:`TrainedModel` is what the loader builds from a published bundle and what
retraining fits (``retraining.train.fit_model``): scaler, classifier and label encoder
travel together, so scaling cannot be forgotten at recognition time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.preprocessing import LabelEncoder, StandardScaler

from .linear_svm import BalancedLinearSVM
from .openset import OpenSetScorer

#: (mean, scale, coef d×K, intercept, beta): the published classifier as plain arrays.
_LinearParts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]


@dataclass(frozen=True)
class TrainedModel:
    """Scaler, classifier and label encoder fitted together (+ the open-set scorer)."""

    scaler: StandardScaler | None  # None only for models published before the scaler existed
    classifier: Any  # a fitted CalibratedClassifierCV (any fitted classifier with predict_proba for old models)
    label_encoder: LabelEncoder
    open_set: OpenSetScorer | None = None  # None for models published before open-set scoring
    _fast: _LinearParts | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fast", _linear_parts(self.scaler, self.classifier))

    @property
    def classes(self) -> np.ndarray:
        return np.asarray(self.label_encoder.classes_)

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """N×dim L2-normalised embeddings → N×n_students probabilities (columns = ``classes``)."""
        X = np.asarray(embeddings, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if self._fast is not None:  # same numbers as the sklearn path below, without its per-call checks
            mean, scale, coef, intercept, beta = self._fast
            if X.shape[1] != coef.shape[0]:
                raise ValueError(f"X has {X.shape[1]} features, but the model expects {coef.shape[0]}")
            logits = beta * (((X - mean) / scale) @ coef + intercept).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            proba = np.exp(logits)
            proba /= proba.sum(axis=1, keepdims=True)
            return proba
        if self.scaler is not None:
            X = self.scaler.transform(X)
        # the calibrated classifier was fitted on encoded labels 0..n-1, in that column order
        return np.asarray(self.classifier.predict_proba(X), dtype=np.float64)

    def recognize(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Embeddings → (probabilities, top student id, confidence of that answer).

        The confidence is the open-set one (see openset.py) when the model has it: the
        number the backend compares with the threshold.
        """
        X = np.asarray(embeddings, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        proba = self.predict_proba(X)
        top = self.classes[np.argmax(proba, axis=1)]
        confidence = self.open_set.confidence(proba, X) if self.open_set is not None else proba.max(axis=1)
        return proba, top, np.asarray(confidence, dtype=np.float64)


def _linear_parts(scaler: StandardScaler | None, classifier: Any) -> _LinearParts | None:
    """The classifier as arrays when it is our temperature-calibrated BalancedLinearSVM
    (multi-class, ensemble=False); None otherwise (older models keep the sklearn path).

    sklearn's ``predict_proba`` spends ~1 ms per call on input checks at 500 students; this
    computes the same softmax(β·(w·x̃ + b)) directly (tests/serving/test_fast_paths.py checks equality).
    """
    try:
        cals = classifier.calibrated_classifiers_
        est = cals[0].estimator
        if not (
            len(cals) == 1
            and getattr(classifier, "method", None) == "temperature"
            and isinstance(est, BalancedLinearSVM)
            and len(est.classes_) > 2
            and len(cals[0].calibrators) == 1
            and np.array_equal(np.asarray(classifier.classes_), np.asarray(est.classes_))
        ):
            return None
        beta = float(cals[0].calibrators[0].beta_)
    except (AttributeError, IndexError, TypeError):
        return None
    dim = est.coef_.shape[1]
    mean = np.zeros(dim, dtype=np.float32) if scaler is None else np.asarray(scaler.mean_, dtype=np.float32)
    scale = np.ones(dim, dtype=np.float32) if scaler is None else np.asarray(scaler.scale_, dtype=np.float32)
    coef = np.ascontiguousarray(est.coef_.T.astype(np.float32))
    return mean, scale, coef, est.intercept_.astype(np.float32), beta
