"""Embeddings + student ids → a scaled, class-balanced linear SVM with calibrated probabilities.

The published model is ``StandardScaler`` → ``CalibratedClassifierCV(BalancedLinearSVM(...),
method="temperature", ensemble=False, cv=2)``: a one-vs-rest, class-balanced, squared-hinge
linear SVM (``linear_svm.py``) whose scores are turned into probabilities by ONE temperature
fitted on out-of-fold scores (scikit-learn's documented replacement for the deprecated
``SVC(probability=True)``). Both travel together in :class:`TrainedModel`, so scaling cannot
be forgotten at recognition time.

Why this solver (measured on 2 CPU cores, scikit-learn 1.9.1; bench/bench_train.py has the
current table). The previous recipe, ``SVC(kernel="linear")`` inside the same calibration,
is one-vs-one: K(K−1)/2 problems, 130 s to fit and 14 ms per prediction at 500 students ×
20 photos. Alternatives measured on synthetic 512-d embeddings (100 students × 20 photos):
``LinearSVC(dual=False)`` (liblinear primal) 252 s; ``LinearSVC(dual=True, C=0.01)`` 13 s;
``SGDClassifier(hinge)`` OvR, 2 threads, 3.0 s — each of them times 3 for calibration and
×K for more students. ``BalancedLinearSVM`` shares one d×d Cholesky between all students
(least-squares start + majorise–minimise steps on the squared hinge), so its cost is two
n×d×K products per step instead of K separate solvers.

C: the loss weight is ``C_TOTAL / n_samples`` (total 0.05). Standardised embeddings with
~20 photos per student are separable, and a weakly regularised one-vs-rest SVM over-fits
them. Held-out accuracy (balanced one-vs-rest, see linear_svm.py) at C·n = 0.01 / 0.05 /
0.2 / 1 / 5: real LFW (158 people, dlib embeddings, 5-fold × 2) 98.50 / 98.60 / 98.54 /
98.50 / 98.43 % (one-vs-one SVC recipe 98.56 %); synthetic 200 students, hard setting
84.3 / 84.3 / 83.0 / 80.7 / 77.5 % (SVC 82.1 %), easy 97.9 / 97.7 / 97.4 / 96.6 / 95.8 %
(SVC 97.3 %). A wide plateau at small C; 0.05 is its middle.

Why temperature scaling: it fits ONE parameter shared by all students, so it works for
a new student with 2-3 photos, and two folds estimate it as well as five. Per-class
sigmoids (``method="sigmoid"``) measured on ORL (40 students, dlib embeddings): accuracy
87.5 % and median top confidence 0.35, i.e. nobody passes a 0.70 threshold; temperature:
97.9 % (= the SVM's own accuracy) and 0.93.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.preprocessing import LabelEncoder, StandardScaler

from .errors import TrainingError
from .linear_svm import BalancedLinearSVM
from .openset import OpenSetScorer, class_centres

log = logging.getLogger(__name__)

#: Calibration folds: the temperature is ONE number, two folds estimate it (3 fits in all).
MAX_CALIBRATION_FOLDS = 2
#: SVM loss weight summed over all photos (C = C_TOTAL / n_samples); see the module docstring.
C_TOTAL = 0.05
#: Majorise–minimise steps after the least-squares start.
SVM_STEPS = 2


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
        fast = _fast_linear_parts(self)
        if fast is not None:  # same numbers as the sklearn path below, without its per-call checks
            mean, scale, coef, intercept, beta = fast
            if X.shape[1] != coef.shape[0]:
                raise ValueError(f"X has {X.shape[1]} features, but the model expects {coef.shape[0]}")
            logits = beta * (((X - mean) / scale) @ coef + intercept).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            proba = np.exp(logits)
            proba /= proba.sum(axis=1, keepdims=True)
            return proba
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


_FAST_CACHE: dict[int, tuple[object, tuple | None]] = {}


def _fast_linear_parts(model: TrainedModel) -> tuple | None:
    """(mean, scale, coef d×K, intercept, beta) when the classifier is our temperature-calibrated
    BalancedLinearSVM (multi-class, ensemble=False); None otherwise (older models: sklearn path).

    sklearn's ``predict_proba`` spends ~1 ms per call on input checks at 500 students; this
    computes the same softmax(β·(w·x̃ + b)) directly (tests/test_fast_paths.py checks equality).
    """
    clf = model.classifier
    entry = _FAST_CACHE.get(id(clf))
    if entry is not None and entry[0] is clf:
        return entry[1]
    parts = None
    try:
        cals = clf.calibrated_classifiers_
        est = cals[0].estimator
        if (
            len(cals) == 1
            and getattr(clf, "method", None) == "temperature"
            and isinstance(est, BalancedLinearSVM)
            and len(est.classes_) > 2
            and len(cals[0].calibrators) == 1
            and np.array_equal(np.asarray(clf.classes_), np.asarray(est.classes_))
        ):
            mean = np.zeros(est.coef_.shape[1], dtype=np.float32)
            scale = np.ones(est.coef_.shape[1], dtype=np.float32)
            if model.scaler is not None:
                mean = np.asarray(model.scaler.mean_, dtype=np.float32)
                scale = np.asarray(model.scaler.scale_, dtype=np.float32)
            parts = (
                mean,
                scale,
                np.ascontiguousarray(est.coef_.T.astype(np.float32)),
                est.intercept_.astype(np.float32),
                float(cals[0].calibrators[0].beta_),
            )
    except (AttributeError, IndexError, TypeError):
        parts = None
    if len(_FAST_CACHE) > 64:
        _FAST_CACHE.clear()
    _FAST_CACHE[id(clf)] = (clf, parts)
    return parts


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
    base = BalancedLinearSVM(C=C_TOTAL / len(X), max_iter=SVM_STEPS)
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
