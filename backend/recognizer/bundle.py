"""The model bundle: the one type retraining writes and the loader reads (``model.npz`` + ``model.json``).

On disk a model is data, not code:

- ``model.npz`` (read with ``numpy.load(allow_pickle=False)``): the scaler's mean and scale,
  the classifier's weights and intercepts, the calibration temperature, the open-set centres
  and calibrator, and the student ids in column order (:data:`ARRAY_KEYS`);
- ``model.json``: :class:`~backend.recognizer.metadata.ModelMetadata` (version, threshold,
  students, detector/embedder/crop and weight hashes, metrics, gate record, library versions).

:meth:`ModelBundle.arrays` is what retraining saves into ``model.npz`` and
:meth:`ModelBundle.from_files` reads both files back and checks them against each other
(format, shapes, student ids, embedding size), so a file from another training is refused
with a message that says what to do. Old pickled models are read by ``legacy.py`` only.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelLoadError
from .manifest import FIX_HINT
from .metadata import MODEL_FORMAT, MetadataError, ModelMetadata
from .model import TrainedModel
from .openset import LogisticParts, OpenSetScorer
from .paths import MODEL_JSON_NAME, MODEL_NPZ_NAME

#: Arrays every model.npz holds, and those of a calibrated open-set scorer (all or none).
ARRAY_KEYS = ("format", "student_ids", "scaler_mean", "scaler_scale", "weights", "intercepts", "temperature")
CALIBRATOR_KEYS = ("open_set_mean", "open_set_scale", "open_set_coef", "open_set_intercept")


@dataclass(frozen=True)
class ModelBundle:
    """A trained model with everything needed to recognise faces as training did."""

    model: TrainedModel
    metadata: ModelMetadata

    # ---- writing (retraining saves these with numpy.savez and json.dumps)
    def arrays(self) -> dict[str, np.ndarray]:
        """The contents of ``model.npz`` (no object arrays: it loads with ``allow_pickle=False``)."""
        m = self.model
        out = {
            "format": np.asarray(MODEL_FORMAT, dtype=np.int64),
            "student_ids": np.asarray(m.classes).astype(str),
            "scaler_mean": np.asarray(m.mean, dtype=np.float32),
            "scaler_scale": np.asarray(m.scale, dtype=np.float32),
            "weights": np.asarray(m.coef, dtype=np.float32),
            "intercepts": np.asarray(m.intercept, dtype=np.float32),
            "temperature": np.asarray(m.temperature, dtype=np.float64),
        }
        if m.open_set is not None:
            out["open_set_centres"] = np.asarray(m.open_set.centres, dtype=np.float32)
            cal = m.open_set.calibrator
            if cal is not None:
                out["open_set_mean"] = np.asarray(cal.mean, dtype=np.float64)
                out["open_set_scale"] = np.asarray(cal.scale, dtype=np.float64)
                out["open_set_coef"] = np.asarray(cal.coef, dtype=np.float64)
                out["open_set_intercept"] = np.asarray(cal.intercept, dtype=np.float64)
        return out

    # ---- reading (loader)
    @classmethod
    def from_files(cls, npz: bytes, meta_json: bytes, where: Path) -> ModelBundle:
        """Parse ``model.npz`` and ``model.json`` (their bytes, already verified) and check them together."""
        npz_path, json_path = where / MODEL_NPZ_NAME, where / MODEL_JSON_NAME
        try:
            data = json.loads(meta_json.decode("utf-8"))
            metadata = ModelMetadata.from_dict(data)
        except (UnicodeDecodeError, ValueError) as err:  # MetadataError and JSONDecodeError are ValueErrors
            raise ModelLoadError(f"{json_path} is unreadable or incomplete ({err}). {FIX_HINT}") from err
        if metadata.format != MODEL_FORMAT:
            raise ModelLoadError(
                f"{json_path} is of model format {metadata.format}; this version reads format {MODEL_FORMAT}. "
                "Install the release that wrote it, or re-run retraining (python retrain_model.py)."
            )
        try:
            with np.load(io.BytesIO(npz), allow_pickle=False) as arrays:
                found = {k: np.asarray(arrays[k]) for k in arrays.files}
        except Exception as err:  # not a zip, an object array (refused without pickle), a damaged member
            raise ModelLoadError(f"{npz_path} is unreadable ({type(err).__name__}: {err}). {FIX_HINT}") from err
        model = _model_from_arrays(found, npz_path)
        bundle = cls(model, metadata)
        bundle.validate(where)
        return bundle

    def validate(self, where: Path) -> None:
        """What must hold for the arrays and the description to belong together; ModelLoadError otherwise."""
        m, meta = self.model, self.metadata
        dim = meta.embedding_dim
        sizes = {"model.npz weights": m.embedding_dim, "model.json embedder.dim": meta.face_models.embedder.dim}
        wrong = {k: v for k, v in sizes.items() if v is not None and int(v) != dim}
        if wrong:
            raise ModelLoadError(
                f"Embedding size mismatch in {where}: model.json says {dim}, but "
                + ", ".join(f"{k} is {v}" for k, v in wrong.items())
                + f". The files do not belong together. {FIX_HINT}"
            )
        ids = [str(c) for c in m.classes]
        if list(meta.students) != ids:
            raise ModelLoadError(
                f"The students in {where / 'model.json'} ({len(meta.students)}) are not those of "
                f"{where / 'model.npz'} ({len(ids)}, in the same order): the files come from different trainings. "
                f"{FIX_HINT}"
            )
        if not 0.0 <= meta.threshold <= 1.0:
            raise ModelLoadError(f"{where}: threshold {meta.threshold} is not between 0 and 1. {FIX_HINT}")
        if m.open_set is not None and m.open_set.centres.shape != (len(ids), dim):
            raise ModelLoadError(
                f"{where}: open-set centres have shape {m.open_set.centres.shape}, expected "
                f"({len(ids)}, {dim}). The files do not belong together. {FIX_HINT}"
            )

    # ---- typed views
    @property
    def classes(self) -> np.ndarray:
        """Student ids in column order."""
        return np.asarray(self.model.classes).astype(str)

    @property
    def model_version(self) -> str:
        return self.metadata.model_version

    @property
    def threshold(self) -> float:
        return self.metadata.threshold

    @property
    def embedding_dim(self) -> int:
        return self.metadata.embedding_dim

    @property
    def students(self) -> dict[str, str]:
        """Student id → name for every class (the id itself where no name was recorded)."""
        names = self.metadata.students
        return {c: str(names.get(c, c)) for c in self.classes}


def _model_from_arrays(a: dict[str, np.ndarray], where: Path) -> TrainedModel:
    """The arrays of model.npz → :class:`TrainedModel`, every shape checked."""
    missing = [k for k in ARRAY_KEYS if k not in a]
    if missing:
        raise ModelLoadError(f"{where} lacks the array(s) {', '.join(missing)}. {FIX_HINT}")
    if int(a["format"]) != MODEL_FORMAT:
        raise ModelLoadError(
            f"{where} is of model format {int(a['format'])}; this version reads format {MODEL_FORMAT}. {FIX_HINT}"
        )
    ids = a["student_ids"]
    if ids.ndim != 1 or ids.dtype.kind not in "US" or len(ids) < 2:
        raise ModelLoadError(f"{where}: 'student_ids' is not a list of at least two ids. {FIX_HINT}")
    weights = a["weights"]
    if weights.ndim != 2 or weights.shape[1] != len(ids):
        raise ModelLoadError(
            f"{where}: the weights have shape {weights.shape}, expected (dim, {len(ids)} students). {FIX_HINT}"
        )
    dim = weights.shape[0]
    for key, shape in (("scaler_mean", (dim,)), ("scaler_scale", (dim,)), ("intercepts", (len(ids),))):
        if a[key].shape != shape:
            raise ModelLoadError(f"{where}: '{key}' has shape {a[key].shape}, expected {shape}. {FIX_HINT}")
    numeric = [a[k] for k in ("scaler_mean", "scaler_scale", "weights", "intercepts", "temperature")]
    if not all(v.dtype.kind == "f" and np.all(np.isfinite(v)) for v in numeric) or np.any(a["scaler_scale"] <= 0):
        raise ModelLoadError(f"{where} holds numbers that are not finite (or a scale that is not positive). {FIX_HINT}")
    open_set = None
    if "open_set_centres" in a:
        calibrator = None
        present = [k for k in CALIBRATOR_KEYS if k in a]
        if present:
            if len(present) != len(CALIBRATOR_KEYS):
                raise ModelLoadError(f"{where}: the open-set calibrator is incomplete. {FIX_HINT}")
            n = a["open_set_coef"].shape
            if a["open_set_mean"].shape != n or a["open_set_scale"].shape != n or len(n) != 1:
                raise ModelLoadError(f"{where}: the open-set calibrator's arrays do not fit together. {FIX_HINT}")
            calibrator = LogisticParts(
                a["open_set_mean"].astype(np.float64),
                a["open_set_scale"].astype(np.float64),
                a["open_set_coef"].astype(np.float64),
                float(a["open_set_intercept"]),
            )
        open_set = OpenSetScorer(np.asarray(a["open_set_centres"], dtype=np.float32), calibrator)
    return TrainedModel(
        classes=ids.astype(str),
        mean=a["scaler_mean"].astype(np.float32),
        scale=a["scaler_scale"].astype(np.float32),
        coef=np.ascontiguousarray(weights.astype(np.float32)),
        intercept=a["intercepts"].astype(np.float32),
        temperature=float(a["temperature"]),
        open_set=open_set,
    )


__all__ = ["ARRAY_KEYS", "ModelBundle", "MetadataError"]
