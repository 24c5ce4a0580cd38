"""Open-set confidence: how likely is it that the top answer is the RIGHT ENROLLED student?

The SVM's calibrated probability only compares enrolled students with each other: a
stranger still gets ~1.0 for whoever is closest (measured on ORL with held-out
identities: false-accept rate 95 % at 0.70 and still 95 % at 0.98; AUC 0.53 between
correct answers and strangers). How close the face is to that student's own photos
separates them (cosine similarity to the student's centre: AUC 1.00 on the same data).

So the published confidence is a small logistic model over three features of the top
answer — SVM probability, similarity to the predicted student's centre, and the margin
of that similarity over the next-closest student — fitted on open-set folds where whole
students were held out as strangers. The threshold the backend compares against is a
threshold on this number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

FEATURES = ("svm_probability", "centre_similarity", "centre_margin")


def features(proba: np.ndarray, embeddings: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """N×3 open-set features of each row's top answer (see :data:`FEATURES`)."""
    top = np.argmax(proba, axis=1)
    sims = np.asarray(embeddings, dtype=np.float32) @ centres.T
    own = sims[np.arange(len(top)), top]
    if sims.shape[1] > 1:
        other = np.where(np.arange(sims.shape[1])[None, :] == top[:, None], -np.inf, sims).max(axis=1)
    else:
        other = np.zeros(len(top), dtype=np.float32)
    return np.column_stack([proba.max(axis=1), own, own - other]).astype(np.float64)


@dataclass(frozen=True)
class LogisticParts:
    """A fitted StandardScaler → binary LogisticRegression as arrays: expit(w·(f − μ)/σ + b).

    Retraining fits the scikit-learn pipeline and stores these numbers (``model.npz``), so
    recognition needs neither scikit-learn nor a pickle; sklearn's ``predict_proba`` also
    spends ~0.5 ms per call on input checks, half the 1 ms budget of one recognition at 500
    students (tests/retraining/test_fast_paths.py checks the two give the same number).
    """

    mean: np.ndarray  # (n_features,)
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def predict(self, feats: np.ndarray) -> np.ndarray:
        return np.asarray(expit(((feats - self.mean) / self.scale) @ self.coef + self.intercept))


@dataclass(frozen=True)
class OpenSetScorer:
    """Centres of the enrolled students + the fitted calibrator (None: the SVM probability is the confidence)."""

    centres: np.ndarray
    calibrator: LogisticParts | None

    def confidence(self, proba: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """Open-set confidence of each row's top answer; the SVM probability if uncalibrated."""
        if self.calibrator is None:
            return proba.max(axis=1)
        return self.calibrator.predict(features(proba, embeddings, self.centres))
