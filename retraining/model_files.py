"""Writing a model's files: ``model.npz`` + ``model.json`` (what the backend reads) and the seed's pickles.

The backend reads only ``model.npz`` (arrays, ``numpy.load(allow_pickle=False)``) and
``model.json`` (:class:`~backend.recognizer.metadata.ModelMetadata`); their contents are
defined by :class:`~backend.recognizer.bundle.ModelBundle`, which reads them back. The
seed's ``face_classifier_v1.pkl``, ``label_encoder.pkl`` and ``label_encoder_classes.npy``
are still written beside them, from the scikit-learn objects of the fit, for other code at
schools that reads them; nothing of ours reads those pickles again.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from backend.recognizer.bundle import ModelBundle
from backend.recognizer.openset import FEATURES
from backend.recognizer.paths import BUNDLE_NAME, CLASSES_NAME, LABEL_ENCODER_NAME, MODEL_JSON_NAME, MODEL_NPZ_NAME

from .files import atomic_write_bytes, joblib_bytes
from .train import FittedModel

#: The pickle's own format number (what other code reading face_classifier_v1.pkl checks).
SEED_PICKLE_FORMAT = 2


def npz_bytes(bundle: ModelBundle) -> bytes:
    """``model.npz``: the bundle's arrays, uncompressed (no object arrays)."""
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **bundle.arrays())
    return buf.getvalue()


def json_bytes(bundle: ModelBundle) -> bytes:
    """``model.json``: the bundle's metadata, readable by people too."""
    return (json.dumps(bundle.metadata.to_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_model_files(directory: Path, bundle: ModelBundle) -> None:
    """Write ``model.npz`` and ``model.json`` into ``directory`` (each atomically)."""
    atomic_write_bytes(directory / MODEL_NPZ_NAME, npz_bytes(bundle))
    atomic_write_bytes(directory / MODEL_JSON_NAME, json_bytes(bundle))


def write_seed_files(directory: Path, bundle: ModelBundle, fitted: FittedModel) -> None:
    """The seed's three files, for other code that reads them (see the module docstring)."""
    seed = {
        "format_version": SEED_PICKLE_FORMAT,
        "classifier": fitted.classifier,
        "scaler": fitted.scaler,
        "label_encoder": fitted.label_encoder,
        "open_set": {"centres": fitted.centres, "calibrator": fitted.open_set_calibrator, "features": list(FEATURES)},
        "metadata": bundle.metadata.to_dict(),
    }
    atomic_write_bytes(directory / BUNDLE_NAME, joblib_bytes(seed))
    atomic_write_bytes(directory / LABEL_ENCODER_NAME, joblib_bytes(fitted.label_encoder))
    buf = io.BytesIO()
    np.save(buf, np.asarray(fitted.label_encoder.classes_).astype(str), allow_pickle=False)
    atomic_write_bytes(directory / CLASSES_NAME, buf.getvalue())
