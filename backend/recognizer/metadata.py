"""The model's description, typed: what ``model.json`` holds and what every reader goes through.

Retraining builds one :class:`ModelMetadata` and writes :meth:`ModelMetadata.to_dict` into
``backend/models/Classifier/model.json`` (and into the seed pickle's ``metadata`` for other
code that reads it); the loader, the quality gate, ``--promote`` and
``test_retrained_model.py`` read it back with :meth:`ModelMetadata.from_dict`. Nobody
else reads the dict by key, so a misspelt key is a type error here, not a silent ``None``
in the gate. The dict keeps the key layout models have always had (``threshold``,
``students``, ``detector.weights_sha256``, ``crop_size``…), so ``FaceRecognizer.metadata``
and older readers see what they saw before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


#: The model files' format: 3 = arrays (model.npz) + typed JSON (model.json); 1-2 were pickles only.
MODEL_FORMAT = 3


class MetadataError(ValueError):
    """The metadata is malformed (the loader turns it into a ModelLoadError with a fix-it hint)."""


def _opt_str(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MetadataError(f"expected a whole number, got {value!r}")
    return int(value)


def _opt_float(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MetadataError(f"expected a number, got {value!r}")
    return float(value)


def _opt_bool(value: object) -> bool | None:
    return None if value is None else bool(value)


def _record_dict(record: Any) -> dict[str, Any]:
    """A flat record's fields in order (``dataclasses.asdict``), tuples as lists: the JSON layout, as read back."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(record).items()}


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MetadataError(f"'{what}' is a {type(value).__name__}, not a mapping")
    return value


@dataclass(frozen=True)
class DetectorSpec:
    """The face detector training used (the loader starts the same one and checks its weights)."""

    name: str | None = None
    model_file: str | None = None
    weights_sha256: str | None = None
    input_size: tuple[int, ...] = ()
    adaptive_input_min_side: int | None = None
    decode_min_side: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _record_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> DetectorSpec:
        d = _mapping(data, "detector")
        return cls(
            name=_opt_str(d.get("name")),
            model_file=_opt_str(d.get("model_file")),
            weights_sha256=_opt_str(d.get("weights_sha256")),
            input_size=tuple(int(v) for v in d.get("input_size") or ()),
            adaptive_input_min_side=_opt_int(d.get("adaptive_input_min_side")),
            decode_min_side=_opt_int(d.get("decode_min_side")),
        )


@dataclass(frozen=True)
class EmbedderSpec:
    """The face embedder training used."""

    name: str | None = None
    weights_file: str | None = None
    weights_sha256: str | None = None
    dim: int | None = None
    runtime: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _record_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> EmbedderSpec:
        d = _mapping(data, "embedder")
        return cls(
            name=_opt_str(d.get("name")),
            weights_file=_opt_str(d.get("weights_file")),
            weights_sha256=_opt_str(d.get("weights_sha256")),
            dim=_opt_int(d.get("dim")),
            runtime=_opt_str(d.get("runtime")),
        )


@dataclass(frozen=True)
class CropSpec:
    """How faces were cropped for the embedder; recognition must crop exactly so."""

    size: int | None = None
    method: str | None = None
    template: str | None = None
    template_points: tuple[tuple[float, ...], ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The recorded settings under the keys ``CropSettings.as_dict`` uses (absent ones left out)."""
        out: dict[str, Any] = {
            "crop_size": self.size,
            "crop_method": self.method,
            "crop_template": self.template,
            "crop_template_points": None if self.template_points is None else [list(p) for p in self.template_points],
        }
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CropSpec:
        points = d.get("crop_template_points")
        return cls(
            size=_opt_int(d.get("crop_size")),
            method=_opt_str(d.get("crop_method")),
            template=_opt_str(d.get("crop_template")),
            template_points=None if points is None else tuple(tuple(float(v) for v in p) for p in points),
        )


@dataclass(frozen=True)
class BackendChoice:
    """Which detector and embedder (by the names ``--detector``/``--embedder`` take) and detector file."""

    detector: str | None = None
    embedder: str | None = None
    detector_model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _record_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> BackendChoice:
        d = _mapping(data, "backend_config")
        return cls(_opt_str(d.get("detector")), _opt_str(d.get("embedder")), _opt_str(d.get("detector_model")))


@dataclass(frozen=True)
class FaceModels:
    """The face models and crop that turn a photo into an embedding (``backends.describe``'s record)."""

    embedding_dim: int
    normalisation: str | None = "l2"
    detector: DetectorSpec = field(default_factory=DetectorSpec)
    embedder: EmbedderSpec = field(default_factory=EmbedderSpec)
    crop: CropSpec = field(default_factory=CropSpec)

    def to_dict(self) -> dict[str, Any]:
        return {
            "embedding_dim": self.embedding_dim,
            "normalisation": self.normalisation,
            "detector": self.detector.to_dict(),
            "embedder": self.embedder.to_dict(),
            **self.crop.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: object) -> FaceModels:
        d = _mapping(data, "models")
        if d.get("embedding_dim") is None:
            raise MetadataError("the metadata lacks 'embedding_dim'")
        try:
            return cls(
                embedding_dim=int(d["embedding_dim"]),
                normalisation=_opt_str(d.get("normalisation")),
                detector=DetectorSpec.from_dict(d.get("detector")),
                embedder=EmbedderSpec.from_dict(d.get("embedder")),
                crop=CropSpec.from_dict(d),
            )
        except (TypeError, ValueError) as err:
            raise MetadataError(str(err)) from err

    def fingerprint(self) -> dict[str, Any]:
        """What decides what an embedding means: models with equal fingerprints compare on the same vectors."""
        return {
            "embedding_dim": self.embedding_dim,
            "crop_size": self.crop.size,
            "crop_method": self.crop.method,
            "crop_template": self.crop.template,
            "normalisation": self.normalisation,
            "detector": (self.detector.name, self.detector.weights_sha256),
            "embedder": (self.embedder.name, self.embedder.weights_sha256),
        }


@dataclass(frozen=True)
class Metrics:
    """What the run measured on held-out photos (the gate compares the next model with these)."""

    accuracy: float | None = None
    n_train: int = 0
    n_test: int = 0
    stranger_target_met: bool | None = None
    embeddings_distinct: bool = True

    def to_dict(self) -> dict[str, Any]:
        return _record_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> Metrics:
        d = _mapping(data, "metrics")
        return cls(
            accuracy=_opt_float(d.get("accuracy")),
            n_train=_opt_int(d.get("n_train")) or 0,
            n_test=_opt_int(d.get("n_test")) or 0,
            stranger_target_met=_opt_bool(d.get("stranger_target_met")),
            embeddings_distinct=bool(d.get("embeddings_distinct", True)),
        )


@dataclass(frozen=True)
class GateCheckRecord:
    """One rule of the quality gate and how the model fared (the gate's own check, as recorded)."""

    name: str
    passed: bool
    detail: str  # a sentence with the figures, for the report and the ERROR line


@dataclass(frozen=True)
class GateRecord:
    """The quality gate's decision as recorded in the model."""

    passed: bool
    forced: bool
    published: bool
    compared_with: str | None
    checks: tuple[GateCheckRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _record_dict(self)  # checks: a list of {name, passed, detail}

    @classmethod
    def from_dict(cls, data: object) -> GateRecord | None:
        if data is None:
            return None
        d = _mapping(data, "quality_gate")
        checks = tuple(
            GateCheckRecord(str(c.get("name", "")), bool(c.get("passed")), str(c.get("detail", "")))
            for c in (d.get("checks") or [])
            if isinstance(c, Mapping)
        )
        return cls(
            passed=bool(d.get("passed")),
            forced=bool(d.get("forced")),
            published=bool(d.get("published", True)),
            compared_with=_opt_str(d.get("compared_with")),
            checks=checks,
        )


@dataclass(frozen=True)
class DatasetSummary:
    data_dir: str | None = None
    num_students: int = 0
    num_images: int = 0
    num_embedded: int = 0
    num_skipped: int = 0
    excluded_students: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _record_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> DatasetSummary | None:
        if data is None:
            return None
        d = _mapping(data, "dataset")
        return cls(
            data_dir=_opt_str(d.get("data_dir")),
            num_students=_opt_int(d.get("num_students")) or 0,
            num_images=_opt_int(d.get("num_images")) or 0,
            num_embedded=_opt_int(d.get("num_embedded")) or 0,
            num_skipped=_opt_int(d.get("num_skipped")) or 0,
            excluded_students=tuple(str(s) for s in d.get("excluded_students") or ()),
        )


class _Answer(Protocol):
    """What :meth:`PresenceRule.counts` reads of a recognition (``loader.Recognition``)."""

    @property
    def accepted(self) -> bool: ...

    @property
    def confidence(self) -> float: ...


@dataclass(frozen=True)
class PresenceRule:
    """When a student counts as present: accepted in at least ``required_frames`` frames.

    ``required_frames(n) = max(min_frames, ceil(min_share * n))`` for a session of ``n``
    frames so far. ``min_frames=2``: one chance acceptance of a stranger never marks anybody
    present. ``min_share=0.3``: a student in class is recognised in most frames (96-98 % of
    LFW photos), a stranger who resembles a student in some (Venus Williams as Serena: 7-11 of
    17), and a long session gives a stranger many more chances, so the count grows with the
    session (20 frames → 6, 100 → 30). On LFW sessions, pooled over 3 splits (474 strangers,
    762 students seen in 4 or more frames): strangers marking somebody 10.8 % (once) → 2.7 %
    (2 frames, 30 %) at the threshold, 4.2 % with 10 % of the frames; those students 100 % →
    99.9 % (99.9 %).
    A student hidden for most of the lesson is listed under ``seen_not_present``; lower
    ``min_share`` for such classrooms, at that cost in strangers.
    ``min_confidence``: a stricter per-face bar for counting towards presence (None: a face
    counts when it is accepted at the threshold). The training run chooses one when the
    threshold alone lets strangers (twins and look-alikes of students included) mark somebody
    present in more than its target share of 20-frame sessions, never so strict that fewer
    than 95 % of students seen in 4 frames would be marked present, and records it in the
    model (``ModelMetadata.session_rule``); on LFW that takes strangers marking somebody to
    1.1 % of sessions, students seen in 4 or more frames to 99.5 %.
    Measured: bench/README.md, "Attendance sessions".
    """

    min_frames: int = 2
    min_share: float = 0.3
    min_confidence: float | None = None

    def __post_init__(self) -> None:
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be at least 1, got {self.min_frames}")
        if not 0.0 <= self.min_share <= 1.0:
            raise ValueError(f"min_share must be between 0 and 1, got {self.min_share}")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be between 0 and 1, got {self.min_confidence}")

    @classmethod
    def from_dict(cls, data: object) -> PresenceRule:
        """The rule a model records as ``session_rule`` (chosen by its training run, read by
        :class:`~backend.recognizer.metadata.ModelMetadata`); the default for one this version
        cannot read (logged: the per-face answers do not depend on it)."""
        if not isinstance(data, Mapping):
            log.warning("The model's session rule %r is unusable; using the default rule", data)
            return cls()
        try:
            bar = data.get("min_confidence")
            return cls(
                int(data.get("min_frames", cls.min_frames)),
                float(data.get("min_share", cls.min_share)),
                None if bar is None else float(bar),
            )
        except (TypeError, ValueError) as err:
            log.warning("The model's session rule %r is unusable (%s); using the default rule", data, err)
            return cls()

    def to_dict(self) -> dict[str, Any]:
        """What a model records as ``session_rule`` (read back by :meth:`from_dict`)."""
        return asdict(self)

    def counts(self, recognition: _Answer) -> bool:
        """Whether this face may count for its student (accepted, and sure enough)."""
        return bool(recognition.accepted) and (
            self.min_confidence is None or recognition.confidence >= self.min_confidence
        )

    def required_frames(self, session_frames: int) -> int:
        """Frames in which a student must be accepted, in a session of ``session_frames`` frames."""
        return max(self.min_frames, math.ceil(self.min_share * max(session_frames, 0) - 1e-9))

    def is_present(self, accepted_frames: int, session_frames: int) -> bool:
        return accepted_frames >= self.required_frames(session_frames)


@dataclass(frozen=True)
class ModelMetadata:
    """Everything a published model says about itself (see the module docstring)."""

    model_version: str
    created_at: str | None
    threshold: float
    students: Mapping[str, str]  # student id -> name, in the model's column order
    face_models: FaceModels
    backend: BackendChoice | None = None  # None: an old model that did not record it
    recommended_threshold: float | None = None
    library_versions: Mapping[str, str] = field(default_factory=dict)
    dataset: DatasetSummary | None = None
    metrics: Metrics = field(default_factory=Metrics)
    quality_gate: GateRecord | None = None
    forced: bool = False
    weights_warnings: tuple[str, ...] = ()
    #: when a class session counts a student present, as the training run chose it (None: a model
    #: from before class sessions, which AttendanceSession gives the default PresenceRule())
    session_rule: PresenceRule | None = None
    #: SHA-256 of what the training run read (photos, options, face models, code): an identical
    #: re-run publishes nothing (None: a model from before it was recorded)
    run_fingerprint: str | None = None
    format: int = MODEL_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``model.json`` (and the pickle's ``metadata``), in the layout models always had."""
        return {
            "format": self.format,
            "model_version": self.model_version,
            "created_at": self.created_at,
            "threshold": self.threshold,
            "recommended_threshold": self.recommended_threshold,
            "students": dict(self.students),
            **self.face_models.to_dict(),
            "backend_config": None if self.backend is None else self.backend.to_dict(),
            "library_versions": dict(self.library_versions),
            "dataset": None if self.dataset is None else self.dataset.to_dict(),
            "metrics": self.metrics.to_dict(),
            "quality_gate": None if self.quality_gate is None else self.quality_gate.to_dict(),
            "forced": self.forced,
            "weights_warnings": list(self.weights_warnings),
            "session_rule": None if self.session_rule is None else self.session_rule.to_dict(),
            "run_fingerprint": self.run_fingerprint,
        }

    @classmethod
    def from_dict(cls, data: object) -> ModelMetadata:
        """Parse ``model.json`` or an old pickle's metadata; :class:`MetadataError` says what is wrong."""
        d = _mapping(data, "metadata")
        for key in ("model_version", "threshold"):
            if d.get(key) is None:
                raise MetadataError(f"the metadata lacks '{key}'")
        students = _mapping(d.get("students"), "students")
        try:
            return cls(
                model_version=str(d["model_version"]),
                created_at=_opt_str(d.get("created_at")),
                threshold=float(d["threshold"]),
                students={str(k): str(v) for k, v in students.items()},
                face_models=FaceModels.from_dict(d),
                backend=None if d.get("backend_config") is None else BackendChoice.from_dict(d.get("backend_config")),
                recommended_threshold=_opt_float(d.get("recommended_threshold")),
                library_versions={
                    str(k): str(v) for k, v in _mapping(d.get("library_versions"), "library_versions").items()
                },
                dataset=DatasetSummary.from_dict(d.get("dataset")),
                metrics=Metrics.from_dict(d.get("metrics")),
                quality_gate=GateRecord.from_dict(d.get("quality_gate")),
                forced=bool(d.get("forced", False)),
                weights_warnings=tuple(str(w) for w in d.get("weights_warnings") or ()),
                session_rule=None if d.get("session_rule") is None else PresenceRule.from_dict(d["session_rule"]),
                run_fingerprint=_opt_str(d.get("run_fingerprint")),
                format=_opt_int(d.get("format")) or 2,
            )
        except (TypeError, ValueError) as err:
            raise MetadataError(str(err)) from err

    @property
    def embedding_dim(self) -> int:
        return self.face_models.embedding_dim

    def weights_sha256(self, part: str) -> str | None:
        """SHA-256 of the ``"detector"``'s or ``"embedder"``'s weights at training (None: not recorded)."""
        fm = self.face_models
        return fm.detector.weights_sha256 if part == "detector" else fm.embedder.weights_sha256
