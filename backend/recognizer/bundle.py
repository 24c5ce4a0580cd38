"""The model bundle: the one type retraining writes into ``face_classifier_v1.pkl`` and the loader reads.

On disk the bundle is a joblib pickle of a dict (the artifact contract the backend relies
on): ``classifier``, ``scaler``, ``label_encoder``, ``open_set`` and ``metadata`` (model
version, threshold, student names, embedding size, detector/embedder names and weight
hashes, crop settings, library versions, data summary, scores). :meth:`ModelBundle.to_dict`
writes that dict and :meth:`ModelBundle.from_dict` reads and validates it, including the
forms written by earlier releases; no other module builds or parses it by key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn.preprocessing import LabelEncoder, StandardScaler

from .errors import ModelLoadError
from .manifest import FIX_HINT
from .model import TrainedModel
from .openset import OpenSetScorer

#: 1: threshold and student names stored twice (top level and metadata); 2: once, in metadata.
BUNDLE_FORMAT = 2
BUNDLE_KEYS = ("classifier", "scaler", "label_encoder", "metadata")
#: Metadata without which faces cannot be recognised exactly as in training.
REQUIRED_METADATA = ("embedding_dim", "backend_config", "crop_size", "crop_method")
#: Threshold of bare-classifier models from before metadata existed.
LEGACY_THRESHOLD = 0.5


@dataclass(frozen=True)
class ModelBundle:
    """A trained model with everything needed to recognise faces as training did."""

    classifier: Any  # fitted CalibratedClassifierCV (any fitted classifier with predict_proba in old models)
    scaler: StandardScaler | None
    label_encoder: LabelEncoder
    metadata: Mapping[str, Any]
    open_set: OpenSetScorer | None = None
    #: a bare classifier pickled by the original recipe: no metadata, no scaler, fixed threshold
    legacy: bool = False
    model: TrainedModel = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", TrainedModel(self.scaler, self.classifier, self.label_encoder, self.open_set))

    # ---- writing (retraining)
    @classmethod
    def create(
        cls,
        model: TrainedModel,
        *,
        model_version: str,
        created_at: str,
        threshold: float,
        students: Mapping[str, str],
        models: Mapping[str, Any],
        backend_config: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> ModelBundle:
        """A new bundle. ``models``: the detector/embedder description (names, weight hashes,
        ``embedding_dim``, crop settings); ``extra``: more metadata (data summary, scores…)."""
        metadata: dict[str, Any] = {
            **dict(extra or {}),
            "model_version": model_version,
            "created_at": created_at,
            "threshold": float(threshold),
            **dict(models),
            "backend_config": dict(backend_config),
            "students": {str(sid): str(students[str(sid)]) for sid in model.classes},
        }
        return cls(model.classifier, model.scaler, model.label_encoder, metadata, model.open_set)

    def to_dict(self) -> dict[str, Any]:
        """The dict pickled into ``face_classifier_v1.pkl``."""
        return {
            "format_version": BUNDLE_FORMAT,
            "classifier": self.classifier,
            "scaler": self.scaler,
            "label_encoder": self.label_encoder,
            "open_set": self.open_set.to_dict() if self.open_set is not None else None,
            "metadata": dict(self.metadata),
        }

    # ---- reading (loader)
    @classmethod
    def from_dict(cls, obj: object, where: Path, *, fallback_encoder: object = None) -> ModelBundle:
        """Parse and validate an unpickled bundle; :class:`ModelLoadError` says what is wrong.

        Accepts every form published so far: the dict of format 1 and 2, and a bare
        classifier (then ``fallback_encoder``, the separate ``label_encoder.pkl``, names the
        students).
        """
        if isinstance(obj, dict):
            bundle = cls._from_mapping(obj, where)
        elif hasattr(obj, "predict_proba"):
            if not isinstance(fallback_encoder, LabelEncoder):
                raise ModelLoadError(f"{where}: an old-style model without a usable label encoder. {FIX_HINT}")
            meta = {"model_version": "legacy", "created_at": None, "threshold": LEGACY_THRESHOLD}
            bundle = cls(obj, None, fallback_encoder, meta, None, legacy=True)
        else:
            raise ModelLoadError(
                f"{where} holds a {type(obj).__name__}, neither a model bundle (dict) nor a classifier. {FIX_HINT}"
            )
        bundle.validate(where)
        return bundle

    @classmethod
    def _from_mapping(cls, data: Mapping[str, Any], where: Path) -> ModelBundle:
        absent = [k for k in BUNDLE_KEYS if k not in data]
        if absent:
            raise ModelLoadError(
                f"{where} is missing the key(s) {', '.join(absent)} (expected {', '.join(BUNDLE_KEYS)}). "
                f"It was not written by this retraining suite. {FIX_HINT}"
            )
        if not isinstance(data["metadata"], Mapping):
            raise ModelLoadError(f"{where}: 'metadata' is not a dict. {FIX_HINT}")
        metadata = dict(data["metadata"])
        # format 1 stored the threshold and the names at the top level as well; those won
        if data.get("threshold") is not None:
            metadata["threshold"] = data["threshold"]
        if data.get("student_names"):
            metadata["students"] = dict(data["student_names"])
        open_set = None
        if data.get("open_set") is not None:
            try:
                open_set = OpenSetScorer.from_dict(data["open_set"])
            except (KeyError, TypeError, ValueError) as err:
                raise ModelLoadError(f"{where}: unreadable open-set scorer ({err}). {FIX_HINT}") from err
        return cls(data["classifier"], data["scaler"], data["label_encoder"], metadata, open_set)

    def validate(self, where: Path) -> None:
        """Everything that must hold for the parts to work together; :class:`ModelLoadError` otherwise."""
        if not hasattr(self.label_encoder, "classes_") or not hasattr(self.classifier, "predict_proba"):
            raise ModelLoadError(f"{where}: label encoder or classifier is not fitted. {FIX_HINT}")
        self.columns()  # the classifier's columns map onto the students
        if not self.legacy:
            for key in REQUIRED_METADATA:
                if key not in self.metadata:
                    raise ModelLoadError(f"{where}: metadata lacks '{key}'. {FIX_HINT}")
        dim = self._dimension(where)
        dims = {
            "classifier": _n_features(self.classifier),
            "scaler": _n_features(self.scaler),
            "metadata.embedder.dim": None if self.legacy else (self.metadata.get("embedder") or {}).get("dim"),
        }
        wrong = {k: v for k, v in dims.items() if v is not None and int(v) != dim}
        if wrong:
            raise ModelLoadError(
                f"Embedding size mismatch in {where.parent}: metadata says {dim}, but "
                + ", ".join(f"{k} expects {v}" for k, v in wrong.items())
                + f". The files do not belong together. {FIX_HINT}"
            )
        try:
            threshold = float(self.metadata["threshold"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelLoadError(f"{where}: no valid recognition threshold in the metadata. {FIX_HINT}") from err
        if not 0.0 <= threshold <= 1.0:
            raise ModelLoadError(f"{where}: threshold {threshold} is not between 0 and 1. {FIX_HINT}")
        if self.open_set is not None and self.open_set.centres.shape != (len(self.classes), dim):
            raise ModelLoadError(
                f"{where}: open-set centres have shape {self.open_set.centres.shape}, expected "
                f"({len(self.classes)}, {dim}). The files do not belong together. {FIX_HINT}"
            )

    def _dimension(self, where: Path) -> int:
        if self.legacy:
            dim = _n_features(self.classifier)
            if dim is None:
                raise ModelLoadError(
                    f"Cannot tell the embedding size of the old model in {where.parent}. Re-run retraining."
                )
            return dim
        try:
            return int(self.metadata["embedding_dim"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelLoadError(f"{where}: metadata has no valid 'embedding_dim'. {FIX_HINT}") from err

    # ---- typed views of the metadata
    @property
    def classes(self) -> np.ndarray:
        """Student ids in the label encoder's order."""
        return np.asarray(self.label_encoder.classes_).astype(str)

    def columns(self) -> np.ndarray:
        """The student id each probability column stands for."""
        enc_classes = self.classes
        clf_classes = np.asarray(getattr(self.classifier, "classes_", np.arange(len(enc_classes))))
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

    @property
    def model_version(self) -> str:
        return str(self.metadata.get("model_version", "unknown"))

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    @property
    def embedding_dim(self) -> int:
        if self.legacy:  # no metadata: the classifier knows (validate() refused a model where it does not)
            return _n_features(self.classifier) or 0
        return int(self.metadata["embedding_dim"])

    @property
    def students(self) -> dict[str, str]:
        """Student id → name for every class (the id itself where no name was recorded)."""
        names = self.metadata.get("students") or {}
        return {c: str(names.get(c, c)) for c in self.classes}

    @property
    def backend_config(self) -> Mapping[str, Any] | None:
        """Which detector and embedder (and detector file) training used; None for old models."""
        cfg = self.metadata.get("backend_config")
        return cfg if isinstance(cfg, Mapping) else None

    def weights_sha256(self, part: Literal["detector", "embedder"]) -> str | None:
        """SHA-256 of the detector's or embedder's weights at training (None: not recorded)."""
        value = (self.metadata.get(part) or {}).get("weights_sha256")
        return str(value) if value else None

    def full_metadata(self) -> dict[str, Any]:
        """The metadata with the derived figures filled in (what ``FaceRecognizer.metadata`` shows)."""
        meta = dict(self.metadata)
        meta.update(embedding_dim=self.embedding_dim, threshold=self.threshold, students=self.students)
        return meta


def _n_features(obj: object) -> int | None:
    n = getattr(obj, "n_features_in_", None)
    return int(n) if n is not None else None
