"""Embeddings + student ids → a scaled, class-balanced linear SVM with calibrated probabilities.

The published model is ``StandardScaler`` → ``CalibratedClassifierCV(SVC(kernel="linear",
class_weight="balanced"), method="temperature", ensemble=False)``: scikit-learn's documented
replacement for the deprecated ``SVC(probability=True)``. Both travel together in
:class:`TrainedModel`, so scaling cannot be forgotten at recognition time.

Why temperature scaling: it fits ONE parameter shared by all students, so it works for
a new student with 2-3 photos. Per-class sigmoids (``method="sigmoid"``) measured on ORL
(40 students, dlib embeddings): accuracy 87.5 % and median top confidence 0.35, i.e.
nobody passes a 0.70 threshold; temperature: 97.9 % (= the SVM's own accuracy) and 0.93.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.svm import SVC

from .errors import TrainingError
from .openset import OpenSetScorer, class_centres

log = logging.getLogger(__name__)

#: At most this many calibration folds; fewer when a student has fewer photos.
MAX_CALIBRATION_FOLDS = 5


@dataclass
class TrainedModel:
    """Scaler, classifier and label encoder fitted together."""

    scaler: StandardScaler | None  # None only for models published before the scaler existed
    classifier: CalibratedClassifierCV
    label_encoder: LabelEncoder
    open_set: OpenSetScorer | None = None  # None for models published before open-set scoring

    @property
    def classes(self) -> np.ndarray:
        return self.label_encoder.classes_

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """N×dim L2-normalised embeddings → N×n_students probabilities (columns = ``classes``)."""
        X = np.asarray(embeddings, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if self.scaler is not None:
            X = self.scaler.transform(X)
        proba = self.classifier.predict_proba(X)
        # the calibrated classifier was fitted on encoded labels 0..n-1, in that column order
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


def calibration_folds(class_counts: np.ndarray) -> int:
    """Folds for calibration: as many as the smallest class allows, between 2 and 5."""
    return int(max(2, min(MAX_CALIBRATION_FOLDS, int(class_counts.min()))))


def fit_model(embeddings: np.ndarray, student_ids: np.ndarray, *, seed: int = 42) -> TrainedModel:
    """Fit scaler + calibrated balanced linear SVM on all given rows.

    A student with a single photo cannot take part in cross-validated calibration; that
    photo is used twice for fitting (the report flags such students as needing photos).
    Raises :class:`TrainingError` when fewer than two students have photos.
    """
    X = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(student_ids).astype(str)
    if X.ndim != 2 or len(X) != len(labels):
        raise TrainingError(f"embeddings {X.shape} and labels ({len(labels)}) do not line up")
    encoder = LabelEncoder().fit(labels)
    if len(encoder.classes_) < 2:
        raise TrainingError(
            "At least two students with usable photos are needed to train a classifier; "
            f"found {len(encoder.classes_)} ({', '.join(encoder.classes_)}). Add photo folders for more students."
        )
    y = encoder.transform(labels)
    counts = np.bincount(y)
    singles = np.flatnonzero(counts == 1)
    if len(singles):
        extra = np.isin(y, singles)
        X = np.concatenate([X, X[extra]])
        y = np.concatenate([y, y[extra]])
        counts = np.bincount(y)
    scaler = StandardScaler().fit(X)
    base = SVC(kernel="linear", class_weight="balanced", random_state=seed)
    classifier = CalibratedClassifierCV(base, method="temperature", cv=calibration_folds(counts), ensemble=False)
    classifier.fit(scaler.transform(X), y)
    log.info("Trained on %d embeddings of %d students", len(X), len(encoder.classes_))
    centres = class_centres(X, y, np.arange(len(encoder.classes_)))
    return TrainedModel(scaler, classifier, encoder, OpenSetScorer(centres, None))


def top_k(proba: np.ndarray, classes: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
    """Best ``k`` (student_id, probability) per row, most likely first."""
    k = min(k, proba.shape[1])
    order = np.argsort(-proba, axis=1)[:, :k]
    return [[(str(classes[j]), float(row[j])) for j in idx] for row, idx in zip(proba, order)]
