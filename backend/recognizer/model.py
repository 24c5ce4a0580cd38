"""Recognition with a trained model: scale → linear scores → temperature softmax → open-set confidence.

:class:`TrainedModel` is plain arrays: the scaler's mean and scale, one weight vector and
intercept per student, the calibration temperature and the open-set scorer. Retraining
fits scikit-learn objects (``retraining.train.fit_model``) and converts them to this; the
loader rebuilds it from ``model.npz``. Scaling travels with the weights, so it cannot be
forgotten at recognition time, and nothing here imports scikit-learn or unpickles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .openset import OpenSetScorer


@dataclass(frozen=True)
class TrainedModel:
    """softmax(β·(((x − mean) / scale) · coef + intercept)) over the students, + the open-set scorer.

    ``coef`` is dim×K float32 (one column per student, in ``classes`` order); a two-student
    model stores the binary SVM as the two columns (−w, w), as scikit-learn's temperature
    scaling reads a binary score.
    """

    classes: np.ndarray  # student id per probability column
    mean: np.ndarray  # (dim,) float32
    scale: np.ndarray  # (dim,) float32
    coef: np.ndarray  # (dim, K) float32
    intercept: np.ndarray  # (K,) float32
    temperature: float  # β: the inverse temperature of the calibration
    open_set: OpenSetScorer | None = None  # None for models published before open-set scoring

    @property
    def embedding_dim(self) -> int:
        return int(self.coef.shape[0])

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """N×dim L2-normalised embeddings → N×n_students probabilities (columns = ``classes``)."""
        X = np.asarray(embeddings, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if X.shape[1] != self.coef.shape[0]:
            raise ValueError(f"X has {X.shape[1]} features, but the model expects {self.coef.shape[0]}")
        logits = self.temperature * (((X - self.mean) / self.scale) @ self.coef + self.intercept).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        return np.asarray(proba, dtype=np.float64)

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
