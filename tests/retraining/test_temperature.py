"""The calibration temperature: Newton's fit finds scikit-learn's temperature, and training still
publishes the object scikit-learn's ``CalibratedClassifierCV`` builds (the loader's fast path reads it).

Synthetic clusters, no photos: each test runs in well under a second.
"""

from __future__ import annotations

import copy
import io
import math

import joblib
import numpy as np
import pytest
from scipy.optimize import brentq
from sklearn.calibration import CalibratedClassifierCV, _TemperatureScaling
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.preprocessing import StandardScaler

from backend.recognizer.legacy import to_arrays
from retraining import temperature
from retraining.balanced_svm import BalancedLinearSVM
from retraining.temperature import fit_temperature
from retraining.train import C_TOTAL, SVM_STEPS, calibrated_classifier, fit_model


def clusters(students: int, per_student: int, spread: float, dim: int = 64, seed: int = 0):
    """Unit-norm class centres plus Gaussian noise, re-normalised (like bench/synthetic.py)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((students, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(students), per_student)
    X = centres[y] + rng.standard_normal((len(y), dim)) * spread / math.sqrt(dim)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), y


def svm() -> BalancedLinearSVM:
    return BalancedLinearSVM(C=C_TOTAL / 1000, max_iter=SVM_STEPS)


def oof_scores(students: int, spread: float, per_student: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold decision scores (float32) of the published recipe, as calibration sees them."""
    X, y = clusters(students, per_student, spread)
    X = StandardScaler().fit_transform(X)
    return cross_val_predict(svm(), X, y, cv=StratifiedKFold(2), method="decision_function"), y


def log_loss(scores: np.ndarray, y: np.ndarray, beta: float) -> float:
    """Mean multinomial log loss of softmax(β·scores), in float64."""
    z = beta * np.asarray(scores, dtype=np.float64)
    if z.ndim == 1:
        z = np.column_stack([-z, z])
    rows = np.arange(len(y))
    first = z.argmax(axis=1)
    rest = np.exp(z - z[rows, first][:, None])
    rest[rows, first] = 0.0  # log Σ exp(z − top) = log1p(Σ over the others): exact even when tiny
    return float(np.mean(np.log1p(rest.sum(axis=1)) + z[rows, first] - z[rows, y]))


def reference_beta(scores: np.ndarray, y: np.ndarray) -> float:
    """Where the slope of the same objective (log loss + ridge) is zero, by bracketed root finding in float64."""
    z = np.asarray(scores, dtype=np.float64)
    if z.ndim == 1:
        z = np.column_stack([-z, z])
    c = z - z.max(axis=1, keepdims=True)
    own = c[np.arange(len(y)), y]

    def slope(t: float) -> float:
        beta = math.exp(t)
        e = np.exp(beta * c)
        return float(np.mean((e * c).sum(axis=1) / e.sum(axis=1) - own)) + 2 * temperature.RIDGE * beta

    return math.exp(brentq(slope, *temperature.LOG_BETA_BOUNDS, xtol=1e-12))


@pytest.fixture(scope="module")
def overlapping() -> tuple[np.ndarray, np.ndarray]:
    """120 students whose photos overlap: out-of-fold accuracy ~90 %, an interior minimum."""
    scores, y = oof_scores(120, spread=1.6)
    assert 0.7 < np.mean(scores.argmax(axis=1) == y) < 0.99
    return scores, y


def test_fast_temperature_equals_sklearn_on_overlapping_students(overlapping) -> None:
    scores, y = overlapping
    assert scores.dtype == np.float32  # what calibration is given
    ours = fit_temperature(scores, y)
    sk = float(_TemperatureScaling().fit(scores, y).beta_)
    assert ours == pytest.approx(sk, rel=5e-4)
    # scikit-learn's float32 loss stops it short of the exact minimiser; ours is at least as good
    assert log_loss(scores, y, ours) <= log_loss(scores, y, sk) + 1e-12
    assert ours == pytest.approx(reference_beta(scores, y), rel=1e-6)
    # in float64 scikit-learn's search is ~1e-14 tight, and both agree more closely
    scores64 = scores.astype(np.float64)
    assert fit_temperature(scores64, y) == pytest.approx(float(_TemperatureScaling().fit(scores64, y).beta_), rel=1e-5)


def test_fast_temperature_two_students() -> None:
    scores, y = oof_scores(2, spread=3.0, per_student=40)
    assert scores.ndim == 1 and 0.6 < np.mean((scores > 0) == y) < 1.0
    ours = fit_temperature(scores, y)
    assert ours == pytest.approx(float(_TemperatureScaling().fit(scores, y).beta_), rel=5e-4)
    assert ours == pytest.approx(reference_beta(scores, y), rel=1e-6)
    assert fit_temperature(scores[:, None], y) == ours


def test_temperature_is_finite_when_every_photo_is_ranked_right() -> None:
    """Out-of-fold scores that rank every photo's own student first: the log loss falls for ever,
    and the ridge term decides where β stops (a tiny log loss, a finite β inside the bounds)."""
    scores, y = oof_scores(40, spread=0.5)
    assert np.all(scores.argmax(axis=1) == y)
    ours = fit_temperature(scores, y)
    assert 1.0 < ours < math.exp(temperature.LOG_BETA_BOUNDS[1]) / 10
    assert log_loss(scores, y, ours) < 1e-8
    assert ours == pytest.approx(reference_beta(scores, y), rel=1e-6)


def test_temperature_at_the_lower_bound_for_scores_that_point_the_wrong_way(overlapping) -> None:
    scores, y = overlapping
    lowest = math.exp(temperature.LOG_BETA_BOUNDS[0])
    assert fit_temperature(-scores, y) == pytest.approx(lowest)
    # scikit-learn's bounded search stops within its tolerance of the bound, never on it
    assert float(_TemperatureScaling().fit(-scores, y).beta_) == pytest.approx(lowest, rel=0.02)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="do not line up"):
        fit_temperature(np.zeros((5, 3), dtype=np.float32), np.zeros(4, dtype=int))


def _attributes(obj: object) -> dict[str, object]:
    return {k: v for k, v in vars(obj).items() if not k.startswith("__")}


@pytest.mark.parametrize("students", [2, 60])
def test_training_builds_what_calibrated_classifier_cv_builds(students: int) -> None:
    X, y = clusters(students, 8 if students > 2 else 30, spread=1.6 if students > 2 else 3.0, seed=1)
    X = StandardScaler().fit_transform(X)
    base = BalancedLinearSVM(C=C_TOTAL / len(X), max_iter=SVM_STEPS)
    ref = CalibratedClassifierCV(base, method="temperature", cv=2, ensemble=False).fit(X, y)
    ours = calibrated_classifier(base, X, y, folds=2)
    # the same objects with the same attributes, at every level
    assert type(ours) is type(ref) and _attributes(ours).keys() == _attributes(ref).keys()
    assert ours.get_params() == ref.get_params()
    assert np.array_equal(ours.classes_, ref.classes_) and ours.n_features_in_ == ref.n_features_in_
    (mine,), (theirs,) = ours.calibrated_classifiers_, ref.calibrated_classifiers_
    assert type(mine) is type(theirs) and _attributes(mine).keys() == _attributes(theirs).keys()
    assert mine.method == "temperature" and np.array_equal(mine.classes, theirs.classes)
    assert np.array_equal(mine.estimator.coef_, theirs.estimator.coef_)
    assert np.array_equal(mine.estimator.intercept_, theirs.estimator.intercept_)
    (cal,), (ref_cal,) = mine.calibrators, theirs.calibrators
    assert type(cal) is type(ref_cal) and _attributes(cal).keys() == _attributes(ref_cal).keys()
    assert type(cal.beta_) is type(ref_cal.beta_)  # np.float32, as scikit-learn stores it
    assert float(cal.beta_) == pytest.approx(float(ref_cal.beta_), rel=5e-4)
    # with the same temperature, the same probabilities
    same = copy.deepcopy(ref)
    same.calibrated_classifiers_[0].calibrators[0].beta_ = cal.beta_
    assert np.array_equal(ours.predict_proba(X), same.predict_proba(X))
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=2e-3)


@pytest.mark.parametrize("n_students", [30, 2])
def test_the_published_arrays_give_scikit_learns_probabilities(n_students: int) -> None:
    """model.npz holds the classifier as arrays; they answer as the pickled scikit-learn objects do
    (two students: the binary SVM's one score s read as the logits (−s, s), as scikit-learn does)."""
    X, y = clusters(n_students, 8, spread=1.6, seed=2)
    ids = np.array([f"STU{i:03d}" for i in y])
    model = fit_model(X, ids)
    buffer = io.BytesIO()
    joblib.dump(model.classifier, buffer)
    buffer.seek(0)
    pickled = joblib.load(buffer)
    arrays = to_arrays(model.scaler, pickled, model.classes, None)
    slow = pickled.predict_proba(model.scaler.transform(X))
    assert slow.shape == (len(X), n_students) and np.ptp(slow) > 0.1
    np.testing.assert_allclose(arrays.predict_proba(X), slow, atol=1e-6)
    np.testing.assert_array_equal(model.predict_proba(X), arrays.predict_proba(X))
