"""The backend's import: load the published model, verify it, recognise faces exactly as training did.

    from backend.recognizer import FaceRecognizer

    recognizer = FaceRecognizer.load()                 # backend/models/Classifier of this project
    for face in recognizer.identify(frame_bgr):        # an OpenCV frame, or a photo path
        print(face.student_id, face.confidence, face.box)

Importing this module touches no disk, GPU or network and imports no deep-learning
library. :meth:`FaceRecognizer.load` checks the model files (hashes against the
manifest before anything is parsed) and rebuilds the model from ``model.npz`` (arrays,
read without pickle) and ``model.json``: nothing it reads can run code, and neither
scikit-learn nor joblib is imported. The detector and embedder are built on the first
:meth:`~FaceRecognizer.identify`. Preprocessing is
:func:`backend.recognizer.faces.face_crops` and the embedder's ``embed`` — the very
functions the training pipeline calls — so training and recognition cannot drift apart.

The loader only reads. While retraining swaps a new model in, ``Classifier/`` may be
missing for an instant (or, after a crash, until the next retraining run finishes the
swap): the loader then reads the complete model where the publish journal says it is.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .backends import DETECTORS, EMBEDDERS, BackendConfig, build_detector, build_embedder
from .errors import ModelLoadError, RetrainError
from .faces import face_crops, photo_face_crops
from .images import UPLOAD_MAX_MEGAPIXELS, to_rgb
from .journal import complete_model_dir
from .manifest import FIX_HINT, Manifest, read_manifest
from .paths import (
    BUNDLE_NAME,
    MANIFEST_NAME,
    MODEL_JSON_NAME,
    MODEL_NPZ_NAME,
    PICKLED_FILES,
    OutputPaths,
)

if TYPE_CHECKING:  # the model classes load with the first model, not with this module
    from .bundle import ModelBundle
    from .embedder import Embedder
    from .faces import CropSettings, Detector, Face
    from .metadata import ModelMetadata
    from .model import TrainedModel

log = logging.getLogger(__name__)

#: Environment variable naming the output root when none is passed (default: the project root).
OUTPUT_ROOT_ENV = "SMARTATTENDANCE_OUTPUT_ROOT"
#: Environment variable that lets the loader read an old pickled model (see legacy.py and docs/SECURITY.md).
ALLOW_PICKLE_ENV = "SMARTATTENDANCE_ALLOW_PICKLE"
UNKNOWN = "Unknown"
#: How long load() waits for Classifier/ to reappear while another process is swapping models.
SWAP_WAIT_S = 3.0


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Candidate:
    """One possible student for a face."""

    student_id: str
    student_name: str
    confidence: float


@dataclass(frozen=True)
class Recognition:
    """One face: who it is (or ``"Unknown"``), how sure, and the runners-up.

    ``confidence`` is the open-set confidence that the top answer is the right enrolled
    student (see openset.py; the SVM probability for older models), and ``top_k`` lists
    the closest students with their SVM probabilities.
    ``accepted`` is ``confidence >= threshold``; when False, ``student_id`` and
    ``student_name`` are ``"Unknown"`` and ``top_k[0]`` still names the closest student.
    ``box`` is ``(x1, y1, x2, y2)`` in image pixels (None from :meth:`FaceRecognizer.classify`).
    """

    box: tuple[float, float, float, float] | None
    student_id: str
    student_name: str
    confidence: float
    accepted: bool
    top_k: list[Candidate] = field(default_factory=list)
    detection_score: float | None = None


# --------------------------------------------------------------------------- the loaded model


@dataclass(frozen=True)
class LoadedModel:
    """Everything read from one Classifier folder (no detector/embedder yet)."""

    classifier_dir: Path
    bundle: ModelBundle
    verified: bool  # hashes checked against a manifest
    stamp: tuple[Any, ...]  # what reload_if_changed compares
    pickled: bool = False  # read from the old pickles (allow_pickle=True), not from model.npz

    @functools.cached_property
    def classes(self) -> np.ndarray:
        """Student id per probability column (``ModelBundle.classes``, computed once)."""
        return self.bundle.classes

    @functools.cached_property
    def student_names(self) -> dict[str, str]:
        """Student id → name for every class (``ModelBundle.students``, computed once)."""
        return self.bundle.students

    @property
    def model(self) -> TrainedModel:
        return self.bundle.model

    @property
    def info(self) -> ModelMetadata:
        return self.bundle.metadata

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata as a dict (``ModelMetadata.to_dict``; a loaded model names every student)."""
        return self.bundle.metadata.to_dict()

    @property
    def embedding_dim(self) -> int:
        return self.bundle.embedding_dim

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    @property
    def model_version(self) -> str:
        return self.bundle.model_version


def _stamp(classifier_dir: Path) -> tuple[Any, ...]:
    """Cheap identity of the published files: manifest (or model) mtime, size and inode."""
    for name in (MANIFEST_NAME, MODEL_NPZ_NAME, BUNDLE_NAME):
        try:
            st = (classifier_dir / name).stat()
        except OSError:
            continue
        return (name, st.st_mtime_ns, st.st_size, st.st_ino)
    return ("missing",)


def pickles_allowed(allow_pickle: bool | None) -> bool:
    """``allow_pickle`` if given, else ``$SMARTATTENDANCE_ALLOW_PICKLE`` (``1``/``true``/``yes``)."""
    if allow_pickle is not None:
        return allow_pickle
    return os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")


def pickle_refused_message(classifier_dir: Path) -> str:
    return (
        f"{classifier_dir} holds a model in the old format ({BUNDLE_NAME}, a Python pickle, without "
        f"{MODEL_NPZ_NAME}). Loading a pickle can run any code that was put into it, so this version loads one only "
        "when asked to. Convert the model once, as the admin: python retrain_model.py --upgrade-model (Re-run "
        "retraining, python retrain_model.py, also replaces it). Meanwhile, if you trust everyone who can write "
        f"to backend/models/, load it with FaceRecognizer.load(..., allow_pickle=True) or set {ALLOW_PICKLE_ENV}=1."
    )


def load_model_files(
    classifier_dir: str | Path, *, require_manifest: bool = False, allow_pickle: bool | None = None
) -> LoadedModel:
    """Read and check one Classifier folder. Raises :class:`ModelLoadError` saying what and what to do.

    Checks: folder and files present; every file's SHA-256 and size equal the manifest
    (before anything is parsed; each model file is read once, so the bytes parsed are the
    bytes hashed); ``model.npz`` and ``model.json`` agree with each other
    (:meth:`ModelBundle.from_files`: format, shapes, student ids, embedding size, threshold)
    and with the manifest's model version; a test prediction works. Nothing is unpickled:
    a model of an earlier release (pickles only) is read only with ``allow_pickle=True``
    (default: ``$SMARTATTENDANCE_ALLOW_PICKLE``), through ``legacy.py``.
    """
    classifier_dir = Path(classifier_dir)
    stamp = _stamp(classifier_dir)
    if not classifier_dir.is_dir():
        raise ModelLoadError(
            f"No trained model found: the folder {classifier_dir} does not exist. Run retraining first "
            "(python retrain_model.py), or restore the previous model (python retrain_model.py --rollback)."
        )
    manifest: Manifest | None = None
    if (classifier_dir / MANIFEST_NAME).exists():
        manifest = read_manifest(classifier_dir)
        # the manifest decides the format: model.npz that it does not list is not trusted (nor read)
        format3 = MODEL_NPZ_NAME in manifest.files
    elif require_manifest:
        raise ModelLoadError(
            f"{classifier_dir / MANIFEST_NAME} is missing: the model files cannot be verified. {FIX_HINT}"
        )
    else:
        log.warning(
            "%s has no %s (a model from before manifests existed): its files cannot be verified. "
            "Re-run retraining to get a verified model.",
            classifier_dir,
            MANIFEST_NAME,
        )
        format3 = (classifier_dir / MODEL_NPZ_NAME).is_file()
    required = (MODEL_NPZ_NAME, MODEL_JSON_NAME) if format3 else PICKLED_FILES
    # every listed file is checked; the model files are read here, once: the bytes parsed are the bytes hashed
    verified = manifest.check_files(classifier_dir, read=required) if manifest is not None else {}
    if not format3 and not pickles_allowed(allow_pickle):
        raise ModelLoadError(pickle_refused_message(classifier_dir))
    missing = [n for n in required if not (classifier_dir / n).is_file()]
    if missing:
        raise ModelLoadError(f"Model file(s) missing in {classifier_dir}: {', '.join(missing)}. {FIX_HINT}")
    if manifest is not None:
        for name in required:
            if name not in manifest.files:
                raise ModelLoadError(
                    f"{classifier_dir / name} is not listed in the manifest, so it cannot be trusted. {FIX_HINT}"
                )

    def read(name: str) -> bytes:
        return verified[name] if manifest is not None else (classifier_dir / name).read_bytes()

    from .bundle import ModelBundle  # numpy/scipy arrays only; imported with the first model

    bare = False
    if format3:
        bundle = ModelBundle.from_files(read(MODEL_NPZ_NAME), read(MODEL_JSON_NAME), classifier_dir)
    else:
        from .legacy import read_pickled_model  # scikit-learn and joblib: only for an old model, on request

        bundle, bare = read_pickled_model(classifier_dir, read)
        log.warning(
            "%s is a model in the old pickle format, loaded because pickles were allowed. Convert it: "
            "python retrain_model.py --upgrade-model",
            classifier_dir,
        )
    if bare:
        log.warning(
            "%s is an old-style model (a bare classifier without metadata or scaler). It still works, but its "
            "preprocessing cannot be checked; re-run retraining to get a verified model.",
            classifier_dir / BUNDLE_NAME,
        )
    if manifest is not None and not bare and bundle.model_version != manifest.model_version:
        raise ModelLoadError(
            f"{classifier_dir}: the manifest is for model {manifest.model_version} but the model files are model "
            f"{bundle.model_version}. {FIX_HINT}"
        )
    loaded = LoadedModel(classifier_dir, bundle, manifest is not None, stamp, pickled=not format3)
    _smoke_test(loaded)
    return loaded


def _smoke_test(loaded: LoadedModel) -> None:
    """One prediction on a random unit vector: the classifier really works with this scaler and size."""
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((1, loaded.embedding_dim)).astype(np.float32)
    vec /= np.linalg.norm(vec)
    try:
        proba = loaded.model.predict_proba(vec)
    except Exception as err:
        raise ModelLoadError(
            f"The model in {loaded.classifier_dir} fails to predict ({type(err).__name__}: {err}). {FIX_HINT}"
        ) from err
    if proba.shape != (1, len(loaded.classes)) or not np.all(np.isfinite(proba)):
        raise ModelLoadError(
            f"The model in {loaded.classifier_dir} gives malformed probabilities {proba.shape}. {FIX_HINT}"
        )


def verify_model_dir(classifier_dir: Path) -> None:
    """The check retraining runs on a staged model before publishing it: full load + a prediction.

    Builds no detector or embedder and never unpickles. Raises :class:`ModelLoadError`.
    """
    load_model_files(classifier_dir, require_manifest=True, allow_pickle=False)


# --------------------------------------------------------------------------- engines (detector + embedder)


@dataclass(frozen=True)
class _Engines:
    key: tuple[Any, ...]
    detector: Detector
    embedder: Embedder
    crop: CropSettings


def _engine_key(bundle: ModelBundle) -> tuple[Any, ...]:
    meta = bundle.metadata
    cfg = meta.backend
    return (
        cfg,
        meta.weights_sha256("detector"),
        meta.weights_sha256("embedder"),
        meta.face_models.crop.size,
        meta.face_models.crop.method,
    )


def _build_engines(loaded: LoadedModel, device: str, weights_dir: str | None, allow_download: bool = False) -> _Engines:
    meta = loaded.bundle.metadata
    cfg = meta.backend
    if cfg is None:
        raise ModelLoadError(
            f"The model in {loaded.classifier_dir} does not record which face detector and embedder it was trained "
            "with (an old-style model), so faces cannot be recognised with the same preprocessing. Re-run retraining."
        )
    det, emb = cfg.detector, cfg.embedder
    if det not in DETECTORS or emb not in EMBEDDERS:
        raise ModelLoadError(
            f"The model was trained with detector {det!r} / embedder {emb!r}, which this version does not know "
            f"(known: {', '.join(DETECTORS)} / {', '.join(EMBEDDERS)}). Re-run retraining."
        )
    detector_model = cfg.detector_model
    if detector_model and not Path(detector_model).is_file():
        log.warning("Detector model %s recorded in the metadata is gone; looking it up by name", detector_model)
        detector_model = None
    # no download by default: recognition must use the very weights training used, which are
    # already on this machine (a download at the first camera frame would stall the backend)
    config = BackendConfig(
        detector=str(det),
        embedder=str(emb),
        device=device,
        weights_dir=weights_dir,
        detector_model=detector_model,
        allow_download=allow_download,
    )
    try:
        detector = build_detector(config)
        embedder = build_embedder(config)
    except RetrainError:
        raise
    except Exception as err:
        raise ModelLoadError(f"Could not start the face models ({type(err).__name__}: {err}).") from err
    # parity: the very weights and crop the model was trained with
    parts: tuple[tuple[Literal["detector", "embedder"], Detector | Embedder], ...] = (
        ("detector", detector),
        ("embedder", embedder),
    )
    for what, obj in parts:
        want = meta.weights_sha256(what)
        have = obj.weights_sha256
        if want and have and want != have:
            raise ModelLoadError(
                f"The {what} weights found here (sha256 {have[:12]}…) are not those the model was trained with "
                f"({want[:12]}…): recognition would not match training. Put the original weight file in the weights "
                "folder, or re-run retraining with these weights."
            )
    if embedder.dim != loaded.embedding_dim:
        raise ModelLoadError(
            f"The embedder gives {embedder.dim}-d vectors but the model expects {loaded.embedding_dim}-d. Re-run retraining."
        )
    # the crop the embedder makes must be the one recorded at training (size, method, template…)
    crop = embedder.crop
    recorded = {k: v for k, v in meta.face_models.crop.as_dict().items() if k in crop.as_dict()}
    differs = {k: (v, crop.as_dict()[k]) for k, v in recorded.items() if str(v) != str(crop.as_dict()[k])}
    if differs:
        raise ModelLoadError(
            "The face crops this version makes differ from those the model was trained on ("
            + ", ".join(f"{k}: trained {a!r}, now {b!r}" for k, (a, b) in differs.items())
            + "). Re-run retraining."
        )
    return _Engines(_engine_key(loaded.bundle), detector, embedder, crop)


def _ranked(proba: np.ndarray, classes: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """Best ``k`` (student_id, probability) per row, most likely first."""
    k = min(k, proba.shape[1])
    order = np.argsort(-proba, axis=1)[:, :k]
    return [[(str(classes[j]), float(row[j])) for j in idx] for row, idx in zip(proba, order, strict=True)]


# --------------------------------------------------------------------------- the public class


@dataclass(frozen=True)
class _State:
    loaded: LoadedModel
    engines: _Engines | None


class FaceRecognizer:
    """A published model, ready to recognise faces. Safe to share between threads.

    Create it with :meth:`load`. ``threshold`` (0..1) overrides the model's own: higher
    is stricter (more faces reported as "Unknown", fewer wrong names).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        paths: OutputPaths | None = None,
        device: str = "auto",
        weights_dir: str | Path | None = None,
        threshold: float | None = None,
        allow_download: bool = False,
        allow_pickle: bool | None = None,
    ) -> None:
        self._state = _State(loaded, None)
        self.allow_pickle = allow_pickle
        self.allow_download = allow_download
        self._paths = paths
        self.device = device
        self.weights_dir = str(weights_dir) if weights_dir else None
        self.threshold_override = threshold
        self._init_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._refused_stamp: tuple[Any, ...] | None = None
        self._origin: FaceRecognizer | None = None  # set on a pinned() copy: whose face models it may share

    @classmethod
    def load(
        cls,
        output_root: str | Path | None = None,
        *,
        classifier_dir: str | Path | None = None,
        device: str = "auto",
        weights_dir: str | Path | None = None,
        threshold: float | None = None,
        require_manifest: bool = False,
        allow_download: bool = False,
        allow_pickle: bool | None = None,
    ) -> FaceRecognizer:
        """Load and check the published model.

        ``output_root``: the retraining output root (default ``$SMARTATTENDANCE_OUTPUT_ROOT`` or
        the project root); the model is ``<root>/backend/models/Classifier``. Or give
        ``classifier_dir`` directly. ``device``: "auto", "cpu" or "cuda" for the face models.
        ``weights_dir``: offline folder of weight files. ``allow_download``: let the detector /
        embedder libraries download missing weights (off: the weights training used are
        expected on this machine already). ``allow_pickle``: also load a model of an earlier
        release, stored only as pickles (default ``$SMARTATTENDANCE_ALLOW_PICKLE``, off: a pickle
        can run code; convert it with ``python retrain_model.py --upgrade-model``). Raises
        :class:`ModelLoadError`.
        """
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        paths: OutputPaths | None = None
        if classifier_dir is None:
            paths = OutputPaths.at(output_root or os.environ.get(OUTPUT_ROOT_ENV) or None)
            loaded = _load_published(paths, require_manifest, allow_pickle)
        else:
            loaded = load_model_files(classifier_dir, require_manifest=require_manifest, allow_pickle=allow_pickle)
        log.info(
            "Loaded model %s (%d students) from %s", loaded.model_version, len(loaded.classes), loaded.classifier_dir
        )
        return cls(
            loaded,
            paths=paths,
            device=device,
            weights_dir=weights_dir,
            threshold=threshold,
            allow_download=allow_download,
            allow_pickle=allow_pickle,
        )

    # ---- information
    @property
    def metadata(self) -> dict[str, Any]:
        """embedding_dim, threshold (in effect), model_version, created_at, students, plus the full record."""
        loaded = self._state.loaded
        meta = loaded.metadata
        meta["threshold"] = self._threshold_for(loaded)
        return meta

    @property
    def threshold(self) -> float:
        """The threshold in effect: the override passed to load(), else the model's own."""
        return self._threshold_for(self._state.loaded)

    def _threshold_for(self, loaded: LoadedModel) -> float:
        """The threshold in effect with ``loaded``: :attr:`threshold_override` if set, else the model's own."""
        return loaded.threshold if self.threshold_override is None else self.threshold_override

    @property
    def model_metadata(self) -> ModelMetadata:
        """The published model's own description, typed (threshold as trained, not overridden)."""
        return self._state.loaded.info

    @property
    def model_version(self) -> str:
        return self._state.loaded.model_version

    @property
    def classifier_dir(self) -> Path:
        return self._state.loaded.classifier_dir

    def pinned(self) -> FaceRecognizer:
        """This recognizer fixed to the model it serves now, for work that must use one model throughout.

        A class session counts every frame with one model: a hot reload of this instance
        (:meth:`reload_if_changed`) leaves the copy on its model, and the copy's own
        ``reload_if_changed`` does nothing. It shares this instance's model and face models (no
        copy, nothing read): it holds them as long as it lives, the old model after a reload.
        """
        state = self._state  # one immutable state: the copy sees one model, never half of two
        pin = FaceRecognizer(
            state.loaded,
            device=self.device,
            weights_dir=self.weights_dir,
            threshold=self.threshold_override,
            allow_download=self.allow_download,
            allow_pickle=self.allow_pickle,
        )
        pin._state = state
        pin._origin = self._origin or self
        return pin

    # ---- recognition
    def classify(self, embeddings: np.ndarray, threshold: float | None = None, top_k: int = 3) -> list[Recognition]:
        """N×dim L2-normalised embeddings → one :class:`Recognition` per row (``box`` None)."""
        return self._classify(self._state, embeddings, threshold, top_k)

    def embed(self, image: np.ndarray | str | Path, *, bgr: bool = True) -> tuple[list[Face], np.ndarray]:
        """Every face in the image (largest first) and its embedding, as training computes it."""
        faces, vectors, _ = self._embed(self._ensure_engines(), image, bgr)
        return faces, vectors

    def identify(
        self,
        image: np.ndarray | str | Path,
        *,
        threshold: float | None = None,
        top_k: int = 3,
        bgr: bool = True,
        max_megapixels: float = UPLOAD_MAX_MEGAPIXELS,
    ) -> list[Recognition]:
        """Every face in a frame → who it is.

        ``image``: an OpenCV BGR array (``bgr=False`` for RGB) or a photo path. Faces are
        found, cropped and embedded by the same functions training uses; returns one
        :class:`Recognition` per face, largest first (empty list: no face). An array of more
        than ``max_megapixels`` is refused with :class:`ImageError` (as :func:`decode_upload`
        refuses such an upload): detection on it would cost gigabytes.
        """
        state = self._ensure_engines()
        faces, vectors, _ = self._embed(state, image, bgr, max_megapixels)
        if not faces:
            return []
        results = self._classify(state, vectors, threshold, top_k)
        return [
            Recognition(
                (float(f.box[0]), float(f.box[1]), float(f.box[2]), float(f.box[3])),
                r.student_id,
                r.student_name,
                r.confidence,
                r.accepted,
                r.top_k,
                float(f.score),
            )
            for f, r in zip(faces, results, strict=True)
        ]

    def _embed(
        self, state: _State, image: np.ndarray | str | Path, bgr: bool, max_megapixels: float = UPLOAD_MAX_MEGAPIXELS
    ) -> tuple[list[Face], np.ndarray, _State]:
        if state.engines is None:
            raise RuntimeError("face models not started (call through identify/embed)")
        if isinstance(image, (str, Path)):  # a photo file: decoded as training decodes it
            found = photo_face_crops(state.engines.detector, image, state.engines.crop)
        else:
            rgb = to_rgb(image, bgr=bgr, max_megapixels=max_megapixels)
            found = face_crops(state.engines.detector, rgb, state.engines.crop)
        if not found.crops:
            return [], np.zeros((0, state.loaded.embedding_dim), dtype=np.float32), state
        vectors = state.engines.embedder.embed(np.stack(found.crops))
        return list(found.faces[: len(found.crops)]), vectors, state

    def _classify(
        self, state: _State, embeddings: np.ndarray, threshold: float | None, top_k: int
    ) -> list[Recognition]:
        loaded = state.loaded
        X = np.asarray(embeddings, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != loaded.embedding_dim:
            raise ValueError(f"expected N×{loaded.embedding_dim} embeddings, got shape {X.shape}")
        if len(X) == 0:
            return []
        limit = threshold if threshold is not None else self._threshold_for(loaded)
        proba, _, confidence = loaded.model.recognize(X)
        names = loaded.student_names
        out = []
        for ranked, conf in zip(_ranked(proba, loaded.classes, max(1, top_k)), confidence, strict=True):
            cands = [Candidate(sid, names.get(sid, sid), p) for sid, p in ranked]
            best = cands[0]
            ok = bool(conf >= limit)
            out.append(
                Recognition(
                    None,
                    best.student_id if ok else UNKNOWN,
                    best.student_name if ok else UNKNOWN,
                    float(conf),
                    ok,
                    cands[:top_k],
                )
            )
        return out

    def _ensure_engines(self) -> _State:
        state = self._state
        if state.engines is not None:
            return state
        with self._init_lock:
            state = self._state
            if state.engines is None:
                engines = self._origin._engines_for(state.loaded) if self._origin is not None else None
                if engines is None:
                    engines = _build_engines(state.loaded, self.device, self.weights_dir, self.allow_download)
                state = _State(state.loaded, engines)
                self._state = state
        return state

    def _engines_for(self, loaded: LoadedModel) -> _Engines | None:
        """This instance's face models if they suit ``loaded`` (a pinned copy uses them: one copy in memory)."""
        current = self._ensure_engines()
        engines = current.engines
        if engines is None or engines.key != _engine_key(loaded.bundle):
            return None
        return engines if current.loaded.embedding_dim == loaded.embedding_dim else None

    # ---- hot reload
    def reload_if_changed(self) -> bool:
        """Switch to a newly published model if there is one; True when switched.

        Cheap when nothing changed (one ``stat``). A new model is fully loaded and checked
        (and its face models started, if this instance already uses them) before the
        switch, which is atomic for concurrent callers. A broken new model is refused and
        logged; the current model keeps answering. A :meth:`pinned` copy never switches.
        """
        if self._origin is not None:  # a pinned() copy stays on its model
            return False
        with self._reload_lock:
            current = self._state
            directory = self._paths.classifier_dir if self._paths is not None else current.loaded.classifier_dir
            stamp = _stamp(directory)
            if stamp == current.loaded.stamp or stamp == ("missing",) or stamp == self._refused_stamp:
                return False
            try:
                loaded = load_model_files(
                    directory, require_manifest=current.loaded.verified, allow_pickle=self.allow_pickle
                )
                engines = current.engines
                if engines is not None and engines.key != _engine_key(loaded.bundle):
                    engines = _build_engines(loaded, self.device, self.weights_dir, self.allow_download)
                elif engines is not None and loaded.embedding_dim != current.loaded.embedding_dim:
                    engines = _build_engines(loaded, self.device, self.weights_dir, self.allow_download)
            except (RetrainError, OSError) as err:
                if _stamp(directory) != stamp:  # changed while we read (a publish in progress): try next time
                    log.info("Model files changed while reloading; will retry")
                    return False
                self._refused_stamp = stamp
                log.error(
                    "New model in %s refused; still serving model %s. %s", directory, current.loaded.model_version, err
                )
                return False
            self._state = _State(loaded, engines)
            self._refused_stamp = None
            log.info("Switched from model %s to %s", current.loaded.model_version, loaded.model_version)
            return True


def _load_published(paths: OutputPaths, require_manifest: bool, allow_pickle: bool | None = None) -> LoadedModel:
    """The model in ``Classifier/``; mid-swap, the complete one the publish journal names. Read-only.

    A publish renames the old ``Classifier/`` away and the new one in: between the two
    renames (an instant, or until the next retraining run after a crash) the folder is
    missing. Wait briefly for it, then read the complete model where it lies. Its stamp is
    that of the missing folder, so :meth:`FaceRecognizer.reload_if_changed` switches to
    ``Classifier/`` as soon as it is back.
    """
    deadline = time.monotonic() + SWAP_WAIT_S
    while True:
        if paths.classifier_dir.is_dir():
            try:
                return load_model_files(
                    paths.classifier_dir, require_manifest=require_manifest, allow_pickle=allow_pickle
                )
            except ModelLoadError:
                if paths.classifier_dir.is_dir() or time.monotonic() >= deadline:
                    raise  # a real problem, not a folder renamed away while we read it
                continue
        elsewhere = complete_model_dir(paths)
        if elsewhere is None:
            if paths.journal_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)  # a publish is between its two renames
                continue
            return load_model_files(
                paths.classifier_dir, require_manifest=require_manifest, allow_pickle=allow_pickle
            )  # the clear error
        try:
            loaded = load_model_files(elsewhere, require_manifest=require_manifest, allow_pickle=allow_pickle)
        except ModelLoadError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
            continue  # moved on while we read it: look again
        log.warning(
            "%s is missing because a publish was interrupted; serving the complete model %s from %s. "
            "The next retraining run (or python retrain_model.py --rollback) finishes the swap.",
            paths.classifier_dir,
            loaded.model_version,
            elsewhere,
        )
        return dataclasses.replace(loaded, stamp=_stamp(paths.classifier_dir))


__all__ = [
    "Candidate",
    "FaceRecognizer",
    "LoadedModel",
    "Recognition",
    "load_model_files",
    "verify_model_dir",
]
