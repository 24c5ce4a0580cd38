"""Embeddings + student ids → a scaled, class-balanced linear SVM with calibrated probabilities.

The published model is ``StandardScaler`` → ``CalibratedClassifierCV(BalancedLinearSVM(...),
method="temperature", ensemble=False, cv=2)``: a one-vs-rest, class-balanced, squared-hinge
linear SVM (``backend/recognizer/linear_svm.py``) whose scores are turned into probabilities by ONE temperature
fitted on out-of-fold scores (scikit-learn's documented replacement for the deprecated
``SVC(probability=True)``). Both travel together in :class:`TrainedModel`, so scaling cannot
be forgotten at recognition time; :class:`~backend.recognizer.model.TrainedModel` is the
serving side's type, so training builds exactly what the backend runs.

Why this solver (measured on 2 CPU cores, scikit-learn 1.9.1; bench/bench_train.py has the
current table). The alternative, ``SVC(kernel="linear")`` inside the same calibration,
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

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler

from backend.recognizer.linear_svm import BalancedLinearSVM
from backend.recognizer.model import TrainedModel
from backend.recognizer.openset import OpenSetScorer

from .errors import TrainingError

log = logging.getLogger(__name__)

#: Calibration folds: the temperature is ONE number, two folds estimate it (3 fits in all).
MAX_CALIBRATION_FOLDS = 2
#: SVM loss weight summed over all photos (C = C_TOTAL / n_samples); see the module docstring.
C_TOTAL = 0.05
#: Majorise–minimise steps after the least-squares start.
SVM_STEPS = 2


def calibration_folds(class_counts: np.ndarray) -> int:
    """Folds for calibration: as many as the smallest class allows, between 2 and 5."""
    return int(max(2, min(MAX_CALIBRATION_FOLDS, int(class_counts.min()))))


def fit_model(
    embeddings: np.ndarray, student_ids: np.ndarray, *, seed: int = 42, open_set_calibrator: Pipeline | None = None
) -> TrainedModel:
    """Fit scaler + calibrated balanced linear SVM on all given rows.

    ``open_set_calibrator`` (fitted on the open-set folds by ``evaluate``) completes the
    open-set scorer of the published model; without it the confidence is the SVM probability.

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
    log.debug("Trained on %d embeddings of %d students", len(X), len(encoder.classes_))
    centres = class_centres(X, y, np.arange(len(encoder.classes_)))
    return TrainedModel(scaler, classifier, encoder, OpenSetScorer(centres, open_set_calibrator))


def class_centres(embeddings: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Unit-length mean embedding of each class, rows in ``classes`` order."""
    centres = np.stack([embeddings[labels == c].mean(axis=0) for c in classes]).astype(np.float32)
    return centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)


def fit_calibrator(feats: np.ndarray, correct: np.ndarray, *, seed: int = 42) -> Pipeline | None:
    """Logistic model P(answer is the right enrolled student | open-set features).

    ``correct`` is 1 for an enrolled student's photo answered correctly, 0 for a
    stranger's photo or a wrong answer. None when one of the two kinds is missing.
    """
    correct = np.asarray(correct).astype(int)
    if len(np.unique(correct)) < 2:
        return None
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", random_state=seed))
    return model.fit(feats, correct)
