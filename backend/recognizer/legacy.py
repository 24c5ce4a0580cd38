"""Models published by earlier releases (pickles only), read on explicit request and turned into arrays.

A pickle can run any code when it is loaded, and the manifest proves only that files belong
together, not who wrote them. So the loader reads ``face_classifier_v1.pkl`` and
``label_encoder.pkl`` only when asked to (``FaceRecognizer.load(..., allow_pickle=True)``
or ``SMARTATTENDANCE_ALLOW_PICKLE=1``), and ``retrain_model.py --upgrade-model`` uses the
same reader once to write the model as ``model.npz`` + ``model.json``. Every form published
so far is accepted: the dict of formats 1 and 2, and a bare classifier (then
``label_encoder.pkl`` names the students). What it reads is converted into the plain arrays
of :class:`~backend.recognizer.model.TrainedModel`, so an old model answers through the same
code as a new one. Importing this module imports scikit-learn and joblib; nothing else in
the serving package does.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import ModelBundle
from .errors import ModelLoadError
from .manifest import FIX_HINT
from .metadata import MODEL_FORMAT, FaceModels, MetadataError, ModelMetadata
from .model import TrainedModel
from .openset import LogisticParts, OpenSetScorer
from .paths import BUNDLE_NAME, CLASSES_NAME, LABEL_ENCODER_NAME

log = logging.getLogger(__name__)

#: Threshold of bare-classifier models from before metadata existed.
LEGACY_THRESHOLD = 0.5
BUNDLE_KEYS = ("classifier", "scaler", "label_encoder", "metadata")
#: Metadata without which faces cannot be recognised exactly as in training.
REQUIRED_METADATA = ("embedding_dim", "backend_config", "crop_size", "crop_method")


def unpickle(data: bytes, path: Path) -> Any:
    """joblib-unpickle verified bytes; :class:`ModelLoadError` on any failure. RUNS CODE: see the docstring."""
    import joblib

    try:
        return joblib.load(io.BytesIO(data))
    except Exception as err:  # any unpickling failure (version skew, damaged file)
        raise ModelLoadError(
            f"{path} could not be loaded ({type(err).__name__}: {err}). It may come from another scikit-learn "
            f"version or be damaged. {FIX_HINT}"
        ) from err


def read_pickled_model(classifier_dir: Path, read: Callable[[str], bytes]) -> tuple[ModelBundle, bool]:
    """The old model in ``classifier_dir`` as a format-3 bundle; ``read(name)`` returns verified bytes.

    Returns (bundle, bare): ``bare`` is True for a classifier pickled without metadata. Raises
    :class:`ModelLoadError` saying what is wrong, including a classifier that cannot be
    expressed as the arrays of ``model.npz`` (then re-run retraining).
    """
    try:
        classes_file = np.asarray(np.load(io.BytesIO(read(CLASSES_NAME)), allow_pickle=False)).astype(str)
    except ModelLoadError:
        raise
    except Exception as err:
        raise ModelLoadError(f"{classifier_dir / CLASSES_NAME} is unreadable ({err}). {FIX_HINT}") from err
    where = classifier_dir / BUNDLE_NAME
    raw = unpickle(read(BUNDLE_NAME), where)
    encoder = unpickle(read(LABEL_ENCODER_NAME), classifier_dir / LABEL_ENCODER_NAME)
    bare = not isinstance(raw, dict)
    if isinstance(raw, dict):
        absent = [k for k in BUNDLE_KEYS if k not in raw]
        if absent:
            raise ModelLoadError(
                f"{where} is missing the key(s) {', '.join(absent)} (expected {', '.join(BUNDLE_KEYS)}). "
                f"It was not written by this retraining suite. {FIX_HINT}"
            )
        if not isinstance(raw["metadata"], Mapping):
            raise ModelLoadError(f"{where}: 'metadata' is not a dict. {FIX_HINT}")
        classifier, scaler, bundle_encoder = raw["classifier"], raw["scaler"], raw["label_encoder"]
        meta = dict(raw["metadata"])
        # format 1 stored the threshold and the names at the top level as well; those won
        if raw.get("threshold") is not None:
            meta["threshold"] = raw["threshold"]
        if raw.get("student_names"):
            meta["students"] = dict(raw["student_names"])
        for key in REQUIRED_METADATA:
            if key not in meta:
                raise ModelLoadError(f"{where}: metadata lacks '{key}'. {FIX_HINT}")
        open_set = raw.get("open_set")
    elif hasattr(raw, "predict_proba"):
        classifier, scaler, bundle_encoder, open_set = raw, None, encoder, None
        meta = {"model_version": "legacy", "created_at": None, "threshold": LEGACY_THRESHOLD}
    else:
        raise ModelLoadError(
            f"{where} holds a {type(raw).__name__}, neither a model bundle (dict) nor a classifier. {FIX_HINT}"
        )
    if not hasattr(bundle_encoder, "classes_") or not hasattr(classifier, "predict_proba"):
        raise ModelLoadError(f"{where}: label encoder or classifier is not fitted. {FIX_HINT}")
    columns = _columns(np.asarray(bundle_encoder.classes_).astype(str), classifier)
    for other, name in (
        (classes_file, CLASSES_NAME),
        (np.asarray(getattr(encoder, "classes_", [])).astype(str), LABEL_ENCODER_NAME),
    ):
        enc = np.asarray(bundle_encoder.classes_).astype(str)
        if other.shape != enc.shape or not np.array_equal(other, enc):
            raise ModelLoadError(
                f"The students in {classifier_dir / name} ({len(other)}) do not match those of the classifier "
                f"({len(enc)}): the files come from different trainings. {FIX_HINT}"
            )
    try:
        model = to_arrays(scaler, classifier, columns, open_set)
    except (AttributeError, IndexError, TypeError, ValueError) as err:
        raise ModelLoadError(
            f"{where} holds a classifier that this version cannot read as plain arrays ({err}). "
            "Re-run retraining (python retrain_model.py) to get a model in the current format."
        ) from err
    if bare:
        meta["embedding_dim"] = model.embedding_dim
    names = meta.get("students") or {}
    meta["students"] = {c: str(names.get(c, c)) for c in model.classes}
    try:
        metadata = ModelMetadata.from_dict(meta)
    except MetadataError as err:
        raise ModelLoadError(f"{where}: unreadable metadata ({err}). {FIX_HINT}") from err
    if bare:
        metadata = dataclasses.replace(metadata, face_models=FaceModels(model.embedding_dim, normalisation=None))
    bundle = ModelBundle(model, dataclasses.replace(metadata, format=MODEL_FORMAT))
    bundle.validate(classifier_dir)
    _warn_on_version_skew(where, metadata)
    return bundle, bare


def _warn_on_version_skew(where: Path, metadata: ModelMetadata) -> None:
    """A pickle is not portable across scikit-learn versions: say so when the one installed is not the one recorded."""
    from importlib.metadata import PackageNotFoundError, version

    recorded = metadata.library_versions.get("scikit-learn")
    try:
        installed = version("scikit-learn")
    except PackageNotFoundError:
        installed = None
    if recorded and installed and recorded != installed:
        log.warning(
            "%s was pickled with scikit-learn %s but %s is installed: pickles are not portable across versions, "
            "so check its answers (python test_retrained_model.py) and convert it (python retrain_model.py "
            "--upgrade-model), which removes the dependency.",
            where,
            recorded,
            installed,
        )


def _columns(enc_classes: np.ndarray, classifier: Any) -> np.ndarray:
    """The student id each probability column stands for."""
    clf_classes = np.asarray(getattr(classifier, "classes_", np.arange(len(enc_classes))))
    if clf_classes.dtype.kind in "iu":
        if (
            len(clf_classes) != len(enc_classes)
            or clf_classes.min(initial=0) < 0
            or clf_classes.max(initial=0) >= len(enc_classes)
        ):
            raise ModelLoadError(
                f"The classifier predicts {len(clf_classes)} classes but the label encoder has "
                f"{len(enc_classes)}. {FIX_HINT}"
            )
        return np.asarray(enc_classes[clf_classes])
    columns = clf_classes.astype(str)
    if not set(columns) <= set(enc_classes):
        raise ModelLoadError(f"The classifier's students are not those of the label encoder. {FIX_HINT}")
    return columns


def to_arrays(scaler: Any, classifier: Any, columns: np.ndarray, open_set: Mapping[str, Any] | None) -> TrainedModel:
    """A fitted scaler + temperature-calibrated ``BalancedLinearSVM`` (+ open-set dict) as plain arrays.

    The same numbers scikit-learn computes (softmax(β·(w·x̃ + b)); a binary SVM's score s is
    read as the logits (−s, s), as ``_TemperatureScaling`` does). Raises ``ValueError`` for
    any other classifier: those cannot be published as ``model.npz``.
    """
    from .linear_svm import BalancedLinearSVM

    cals = classifier.calibrated_classifiers_
    est = cals[0].estimator
    if not (
        len(cals) == 1
        and getattr(classifier, "method", None) == "temperature"
        and isinstance(est, BalancedLinearSVM)
        and len(cals[0].calibrators) == 1
        and np.array_equal(np.asarray(classifier.classes_), np.asarray(est.classes_))
    ):
        raise ValueError(f"a {type(classifier).__name__} that is not a temperature-calibrated BalancedLinearSVM")
    beta = float(cals[0].calibrators[0].beta_)
    coef = np.asarray(est.coef_, dtype=np.float32)
    intercept = np.asarray(est.intercept_, dtype=np.float32)
    if len(est.classes_) == 2:  # one binary problem (class 1 vs class 0): logits (−s, s)
        coef = np.concatenate([-coef, coef])
        intercept = np.concatenate([-intercept, intercept])
    dim = coef.shape[1]
    mean = np.zeros(dim, np.float32) if scaler is None else np.asarray(scaler.mean_, dtype=np.float32)
    scale = np.ones(dim, np.float32) if scaler is None else np.asarray(scaler.scale_, dtype=np.float32)
    if mean.shape != (dim,) or scale.shape != (dim,):
        raise ValueError(f"the scaler has {mean.shape[0]} features but the classifier {dim}")
    scorer = None
    if open_set is not None:
        scorer = OpenSetScorer(
            np.asarray(open_set["centres"], dtype=np.float32), logistic_parts(open_set.get("calibrator"))
        )
    return TrainedModel(
        classes=np.asarray(columns).astype(str),
        mean=mean,
        scale=scale,
        coef=np.ascontiguousarray(coef.T),
        intercept=intercept,
        temperature=beta,
        open_set=scorer,
    )


def logistic_parts(calibrator: Any) -> LogisticParts | None:
    """A fitted StandardScaler → binary LogisticRegression pipeline as arrays (None: no calibrator).

    Raises ``ValueError`` for any other calibrator.
    """
    if calibrator is None:
        return None
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    steps = getattr(calibrator, "steps", None)
    if steps is None or len(steps) != 2:
        raise ValueError("the open-set calibrator is not a scaler → logistic-regression pipeline")
    scaler, logistic = steps[0][1], steps[1][1]
    if not (
        isinstance(scaler, StandardScaler)
        and isinstance(logistic, LogisticRegression)
        and getattr(logistic, "coef_", np.zeros((2, 0))).shape[0] == 1
        and len(getattr(logistic, "classes_", ())) == 2
    ):
        raise ValueError("the open-set calibrator is not a binary logistic regression")
    n = logistic.coef_.shape[1]
    mean = np.zeros(n) if scaler.mean_ is None else np.asarray(scaler.mean_, float)
    scale = np.ones(n) if scaler.scale_ is None else np.asarray(scaler.scale_, float)
    return LogisticParts(mean, scale, logistic.coef_[0].astype(float), float(logistic.intercept_[0]))
