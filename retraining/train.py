"""Embeddings + student ids → a scaled, class-balanced linear SVM with calibrated probabilities.

The published model is ``StandardScaler`` → ``CalibratedClassifierCV(BalancedLinearSVM(...),
method="temperature", ensemble=False, cv=2)``: a one-vs-rest, class-balanced, squared-hinge
linear SVM (``retraining/balanced_svm.py``) whose scores are turned into probabilities by ONE temperature
fitted on out-of-fold scores (scikit-learn's documented replacement for the deprecated
``SVC(probability=True)``). :func:`fit_model` returns them with the same model as plain arrays
(:class:`~backend.recognizer.model.TrainedModel`, the serving side's type, published as
``model.npz``), so training evaluates exactly what the backend runs.

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
them. Held-out accuracy (balanced one-vs-rest, see balanced_svm.py) at C·n = 0.01 / 0.05 /
0.2 / 1 / 5: real LFW (158 people, dlib embeddings, 5-fold × 2) 98.50 / 98.60 / 98.54 /
98.50 / 98.43 % (one-vs-one SVC recipe 98.56 %); synthetic 200 students, hard setting
84.3 / 84.3 / 83.0 / 80.7 / 77.5 % (SVC 82.1 %), easy 97.9 / 97.7 / 97.4 / 96.6 / 95.8 %
(SVC 97.3 %). A wide plateau at small C; 0.05 is its middle.

Why temperature scaling: it fits ONE parameter shared by all students, so it works for
a new student with 2-3 photos, and two folds estimate it as well as five. Per-class
sigmoids (``method="sigmoid"``) measured on ORL (40 students, dlib embeddings): accuracy
87.5 % and median top confidence 0.35, i.e. nobody passes a 0.70 threshold; temperature:
97.9 % (= the SVM's own accuracy) and 0.93.

Why the temperature is not fitted by scikit-learn. ``CalibratedClassifierCV.fit`` finds it
with a bounded Brent search that evaluates the float32 log loss over all n×K out-of-fold
scores 16-30 times: at 2000 students × 20 photos (synthetic, spread 0.9 / 3.5 / 4.2) that
was 47-64 % of ``fit_model``, which took 27.8 / 18.5 / 28.8 s (33.6-37.6 s in other runs at
spread 0.9: over the 30 s goal). :func:`calibrated_classifier` makes the same folds and
fits and the same fitted object, but finds the temperature by Newton's method in 2-3
passes (``retraining/temperature.py``), and the SVM's steps cost one n×d×K product
instead of two (``retraining/balanced_svm.py``). Measured beside the previous
recipe in one process on the shared 2-core machine (bench/bench_train.py, bench/README.md):
2000 × 20 in 6.1-7.0 / 5.7-5.9 / 5.2-5.3 s against 21.7-21.9 / 14.0-14.1 / 17.7-18.4 s,
5000 × 20 in 29-31 s against 128-135 s (spread 0.9); held-out accuracy identical. Where
the out-of-fold log loss has a minimum the temperature is scikit-learn's within its own
float32 tolerance (≤ 1.2e-4), so held-out log loss and calibration error are unchanged
(LFW, 5-fold: 0.114 and 0.0060 both ways; synthetic spreads 3.5 and 4.2 equal to 3-4
digits). Where every out-of-fold photo is ranked right (spread 0.9, most ORL folds) the
loss has no minimum: scikit-learn's β was wherever its search stopped in the region where
its float32 loss reads 0 (46-61 at spread 0.9), the ridge in temperature.py puts it at
33-38; on held-out photos that are all recognised, log loss 3e-12 instead of 2e-16, ORL
9.2e-7 instead of 9.1e-7.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV, _CalibratedClassifier, _TemperatureScaling
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler

from backend.recognizer.legacy import to_arrays
from backend.recognizer.model import TrainedModel
from backend.recognizer.openset import OpenSetScorer

from .balanced_svm import BalancedLinearSVM
from .errors import TrainingError
from .temperature import fit_temperature

log = logging.getLogger(__name__)

#: Calibration folds: the temperature is ONE number, two folds estimate it (3 fits in all).
MAX_CALIBRATION_FOLDS = 2
#: SVM loss weight summed over all photos (C = C_TOTAL / n_samples); see the module docstring.
C_TOTAL = 0.05
#: Majorise–minimise steps after the least-squares start.
SVM_STEPS = 2


@dataclass(frozen=True)
class FittedModel:
    """What :func:`fit_model` fitted: the scikit-learn objects and the same model as plain arrays.

    ``model`` (:class:`~backend.recognizer.model.TrainedModel`) is what is published in
    ``model.npz`` and what every answer comes from, here and in the backend; the
    scikit-learn objects are kept only to write the seed's pickles for other code that
    reads them (``retraining.model_files``).
    """

    scaler: StandardScaler
    classifier: CalibratedClassifierCV
    label_encoder: LabelEncoder
    centres: np.ndarray
    open_set_calibrator: Pipeline | None = None
    model: TrainedModel = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        columns = np.asarray(self.label_encoder.classes_).astype(str)
        open_set = {"centres": self.centres, "calibrator": self.open_set_calibrator}
        object.__setattr__(self, "model", to_arrays(self.scaler, self.classifier, columns, open_set))

    @property
    def classes(self) -> np.ndarray:
        return self.model.classes

    @property
    def open_set(self) -> OpenSetScorer | None:
        return self.model.open_set

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(embeddings)

    def recognize(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.model.recognize(embeddings)


def calibration_folds(class_counts: np.ndarray) -> int:
    """Folds for calibration: as many as the smallest class allows, between 2 and 5."""
    return int(max(2, min(MAX_CALIBRATION_FOLDS, int(class_counts.min()))))


def fit_model(
    embeddings: np.ndarray, student_ids: np.ndarray, *, seed: int = 42, open_set_calibrator: Pipeline | None = None
) -> FittedModel:
    """Fit scaler + calibrated balanced linear SVM on all given rows.

    ``seed`` decides the calibration folds (the SVM itself is deterministic): the same seed and
    rows give the same model, another seed a slightly different temperature.

    ``open_set_calibrator`` (fitted on the open-set folds by ``evaluate``) completes the
    open-set scorer of the published model; without it the confidence is the SVM probability.

    A student with a single photo cannot take part in cross-validated calibration; that
    photo is used twice for fitting (the report flags such students as needing photos).
    Raises :class:`TrainingError` when fewer than two students have photos.
    """
    X, y, encoder = training_rows(embeddings, student_ids)
    counts = np.bincount(y)
    scaler = StandardScaler().fit(X)
    base = BalancedLinearSVM(C=C_TOTAL / len(X), max_iter=SVM_STEPS)
    classifier = calibrated_classifier(base, scaler.transform(X), y, folds=calibration_folds(counts), seed=seed)
    log.debug("Trained on %d embeddings of %d students", len(X), len(encoder.classes_))
    centres = class_centres(X, y, np.arange(len(encoder.classes_)))
    return FittedModel(scaler, classifier, encoder, centres, open_set_calibrator)


def training_rows(embeddings: np.ndarray, student_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, LabelEncoder]:
    """(float32 rows, encoded labels 0..K−1, the encoder) to fit on; a student's single photo
    appears twice (calibration folds need two). Raises :class:`TrainingError` below two students."""
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
    extra = np.isin(y, np.flatnonzero(np.bincount(y) == 1))
    if extra.any():
        X, y = np.concatenate([X, X[extra]]), np.concatenate([y, y[extra]])
    return X, y, encoder


def calibrated_classifier(
    base: BalancedLinearSVM, X: np.ndarray, y: np.ndarray, *, folds: int, seed: int | None = None
) -> CalibratedClassifierCV:
    """``CalibratedClassifierCV(base, method="temperature", cv=folds, ensemble=False).fit(X, y)``, faster.

    The same steps as scikit-learn's ``fit``: out-of-fold decision scores on the same
    ``StratifiedKFold(folds)`` split (shuffled with ``seed`` when one is given, as
    :func:`fit_model` does: the seed is the run's ``--seed``), ``base`` refitted on all rows, one temperature fitted
    on the out-of-fold scores. Only the temperature fit differs: :func:`fit_temperature`
    (Newton: 2-3 passes over the n×K scores after a start on a few thousand rows) instead
    of scikit-learn's bounded Brent search (16-30 passes); both find the same β where the
    log loss has a minimum (``retraining/temperature.py`` says what happens for scores that
    rank every photo right).

    scikit-learn has no public way to hand ``CalibratedClassifierCV`` a fitted temperature,
    so the fitted object is put together from its parts ``_CalibratedClassifier`` and
    ``_TemperatureScaling`` (the seed's pickle still holds it; the published model is its
    arrays, ``backend.recognizer.legacy.to_arrays``).
    ``tests/retraining/test_temperature.py`` compares it attribute by attribute with
    scikit-learn's own fit, so a scikit-learn release that changes them fails there first;
    the arrays (``backend/recognizer/model.py``) see no difference.
    ``y`` holds the encoded labels 0..K−1; every fold must contain every class.
    """
    classes = np.unique(y)
    scores = np.empty((len(y), len(classes) if len(classes) > 2 else 1), dtype=np.float32)
    split = StratifiedKFold(folds) if seed is None else StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train, test in split.split(X, y):
        fold = clone(base).fit(X[train], y[train])
        scores[test] = fold.decision_function(X[test]).reshape(len(test), -1)
    final = clone(base).fit(X, y)
    temperature = _TemperatureScaling()
    temperature.beta_ = np.float32(fit_temperature(scores, y))
    classifier = CalibratedClassifierCV(base, method="temperature", cv=folds, ensemble=False)
    classifier.classes_ = classes
    classifier.calibrated_classifiers_ = [
        _CalibratedClassifier(final, [temperature], classes=classes, method="temperature")
    ]
    classifier.n_features_in_ = final.n_features_in_
    return classifier


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
