"""The backend's import: load the published model, verify it, recognise faces exactly as training did.

    from backend.recognizer import FaceRecognizer

    recognizer = FaceRecognizer.load()                 # backend/models/Classifier of this project
    for face in recognizer.identify(frame_bgr):        # an OpenCV frame, or a photo path
        print(face.student_id, face.confidence, face.box)

Importing this module touches no disk, GPU or network and imports no deep-learning
library. :meth:`FaceRecognizer.load` checks the model files (hashes against the
manifest BEFORE anything is unpickled: a pickle can run code), the detector and
embedder are built on the first :meth:`~FaceRecognizer.identify`. Preprocessing is
:func:`backend.recognizer.faces.face_crops` and the embedder's ``embed`` — the very
functions the training pipeline calls — so training and recognition cannot drift apart.

The loader only reads. While retraining swaps a new model in, ``Classifier/`` may be
missing for an instant (or, after a crash, until the next retraining run finishes the
swap): the loader then reads the complete model where the publish journal says it is.
"""

from __future__ import annotations

import dataclasses
import io
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
from .journal import complete_model_dir, journal_path
from .manifest import FIX_HINT, Manifest, read_verified, verify_manifest
from .paths import BUNDLE_NAME, CLASSES_NAME, LABEL_ENCODER_NAME, MANIFEST_NAME, OutputPaths

if TYPE_CHECKING:  # scikit-learn and the model classes load with the first model, not with this module
    from .bundle import ModelBundle
    from .embedder import Embedder
    from .faces import CropSettings, Detector, Face
    from .model import TrainedModel

log = logging.getLogger(__name__)

#: Environment variable naming the output root when none is passed (default: the project root).
OUTPUT_ROOT_ENV = "SMARTATTENDANCE_OUTPUT_ROOT"
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
    classes: np.ndarray  # student id per probability column
    student_names: dict[str, str]
    verified: bool  # hashes checked against a manifest
    stamp: tuple[Any, ...]  # what reload_if_changed compares

    @property
    def model(self) -> TrainedModel:
        return self.bundle.model

    @property
    def metadata(self) -> dict[str, Any]:
        return self.bundle.full_metadata()

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
    """Cheap identity of the published files: manifest (or bundle) mtime, size and inode."""
    for name in (MANIFEST_NAME, BUNDLE_NAME):
        try:
            st = (classifier_dir / name).stat()
        except OSError:
            continue
        return (name, st.st_mtime_ns, st.st_size, st.st_ino)
    return ("missing",)


def _unpickle(data: bytes, path: Path) -> Any:
    import joblib

    try:
        return joblib.load(io.BytesIO(data))
    except Exception as err:  # any unpickling failure (version skew, damaged file)
        raise ModelLoadError(
            f"{path} could not be loaded ({type(err).__name__}: {err}). It may come from another scikit-learn "
            f"version or be damaged. {FIX_HINT}"
        ) from err


def load_model_files(classifier_dir: str | Path, *, require_manifest: bool = False) -> LoadedModel:
    """Read and check one Classifier folder. Raises :class:`ModelLoadError` saying what and what to do.

    Checks: folder and files present; every file's SHA-256 and size equal the manifest
    (before unpickling); the bundle is valid (:meth:`ModelBundle.from_dict`: keys, embedding
    size, threshold, open-set scorer; the old bare-classifier form with a warning); classes
    equal ``label_encoder_classes.npy`` and ``label_encoder.pkl``; a test prediction works.
    """
    classifier_dir = Path(classifier_dir)
    stamp = _stamp(classifier_dir)
    if not classifier_dir.is_dir():
        raise ModelLoadError(
            f"No trained model found: the folder {classifier_dir} does not exist. Run retraining first "
            "(python retrain_model.py), or restore the previous model (python retrain_model.py --rollback)."
        )
    required = (BUNDLE_NAME, LABEL_ENCODER_NAME, CLASSES_NAME)
    missing = [n for n in required if not (classifier_dir / n).is_file()]
    if missing:
        raise ModelLoadError(f"Model file(s) missing in {classifier_dir}: {', '.join(missing)}. {FIX_HINT}")

    manifest: Manifest | None = None
    if (classifier_dir / MANIFEST_NAME).exists():
        manifest = verify_manifest(classifier_dir)
        for name in required:
            if name not in manifest.files:
                raise ModelLoadError(
                    f"{classifier_dir / name} is not listed in the manifest, so it cannot be trusted. {FIX_HINT}"
                )
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

    def read(name: str) -> bytes:
        if manifest is not None:
            return read_verified(classifier_dir, manifest, name)
        return (classifier_dir / name).read_bytes()

    # classes first: np.load without pickle cannot run code
    try:
        classes_file = np.load(io.BytesIO(read(CLASSES_NAME)), allow_pickle=False)
    except ModelLoadError:
        raise
    except Exception as err:
        raise ModelLoadError(f"{classifier_dir / CLASSES_NAME} is unreadable ({err}). {FIX_HINT}") from err
    classes_file = np.asarray(classes_file).astype(str)

    from .bundle import ModelBundle  # scikit-learn: imported with the first model, so importing this module stays light

    raw = _unpickle(read(BUNDLE_NAME), classifier_dir / BUNDLE_NAME)
    separate_encoder = _unpickle(read(LABEL_ENCODER_NAME), classifier_dir / LABEL_ENCODER_NAME)
    bundle = ModelBundle.from_dict(raw, classifier_dir / BUNDLE_NAME, fallback_encoder=separate_encoder)
    if bundle.legacy:
        log.warning(
            "%s is an old-style model (a bare classifier without metadata or scaler). It still works, but its "
            "preprocessing cannot be checked; re-run retraining to get a verified model.",
            classifier_dir / BUNDLE_NAME,
        )
    for other, where in (
        (classes_file, CLASSES_NAME),
        (np.asarray(getattr(separate_encoder, "classes_", [])).astype(str), LABEL_ENCODER_NAME),
    ):
        if other.shape != bundle.classes.shape or not np.array_equal(other, bundle.classes):
            raise ModelLoadError(
                f"The students in {classifier_dir / where} ({len(other)}) do not match those of the classifier "
                f"({len(bundle.classes)}): the files come from different trainings. {FIX_HINT}"
            )
    if manifest is not None and not bundle.legacy and bundle.model_version != manifest.model_version:
        raise ModelLoadError(
            f"{classifier_dir}: the manifest is for model {manifest.model_version} but the bundle is model "
            f"{bundle.model_version}. {FIX_HINT}"
        )
    loaded = LoadedModel(classifier_dir, bundle, bundle.columns(), bundle.students, manifest is not None, stamp)
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

    Builds no detector or embedder. Raises :class:`ModelLoadError`.
    """
    load_model_files(classifier_dir, require_manifest=True)


# --------------------------------------------------------------------------- engines (detector + embedder)


@dataclass(frozen=True)
class _Engines:
    key: tuple[Any, ...]
    detector: Detector
    embedder: Embedder
    crop: CropSettings


def _engine_key(bundle: ModelBundle) -> tuple[Any, ...]:
    cfg = bundle.backend_config or {}
    meta = bundle.metadata
    return (
        cfg.get("detector"),
        cfg.get("embedder"),
        cfg.get("detector_model"),
        bundle.weights_sha256("detector"),
        bundle.weights_sha256("embedder"),
        meta.get("crop_size"),
        meta.get("crop_method"),
    )


def _build_engines(loaded: LoadedModel, device: str, weights_dir: str | None, allow_download: bool = False) -> _Engines:
    bundle = loaded.bundle
    cfg = bundle.backend_config
    if cfg is None:
        raise ModelLoadError(
            f"The model in {loaded.classifier_dir} does not record which face detector and embedder it was trained "
            "with (an old-style model), so faces cannot be recognised with the same preprocessing. Re-run retraining."
        )
    det, emb = cfg.get("detector"), cfg.get("embedder")
    if det not in DETECTORS or emb not in EMBEDDERS:
        raise ModelLoadError(
            f"The model was trained with detector {det!r} / embedder {emb!r}, which this version does not know "
            f"(known: {', '.join(DETECTORS)} / {', '.join(EMBEDDERS)}). Re-run retraining."
        )
    detector_model = cfg.get("detector_model")
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
        want = bundle.weights_sha256(what)
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
    meta = bundle.metadata
    recorded = {k: meta[k] for k in crop.as_dict() if k in meta}
    differs = {k: (v, crop.as_dict()[k]) for k, v in recorded.items() if str(v) != str(crop.as_dict()[k])}
    if differs:
        raise ModelLoadError(
            "The face crops this version makes differ from those the model was trained on ("
            + ", ".join(f"{k}: trained {a!r}, now {b!r}" for k, (a, b) in differs.items())
            + "). Re-run retraining."
        )
    return _Engines(_engine_key(bundle), detector, embedder, crop)


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
    ) -> None:
        self._state = _State(loaded, None)
        self.allow_download = allow_download
        self._paths = paths
        self.device = device
        self.weights_dir = str(weights_dir) if weights_dir else None
        self.threshold_override = threshold
        self._init_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._refused_stamp: tuple[Any, ...] | None = None

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
    ) -> FaceRecognizer:
        """Load and check the published model.

        ``output_root``: the retraining output root (default ``$SMARTATTENDANCE_OUTPUT_ROOT`` or
        the project root); the model is ``<root>/backend/models/Classifier``. Or give
        ``classifier_dir`` directly. ``device``: "auto", "cpu" or "cuda" for the face models.
        ``weights_dir``: offline folder of weight files. ``allow_download``: let the detector /
        embedder libraries download missing weights (off: the weights training used are
        expected on this machine already). Raises :class:`ModelLoadError`.
        """
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        paths: OutputPaths | None = None
        if classifier_dir is None:
            paths = OutputPaths.at(output_root or os.environ.get(OUTPUT_ROOT_ENV) or None)
            loaded = _load_published(paths, require_manifest)
        else:
            loaded = load_model_files(classifier_dir, require_manifest=require_manifest)
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
        )

    # ---- information
    @property
    def metadata(self) -> dict[str, Any]:
        """embedding_dim, threshold (in effect), model_version, created_at, students, plus the full record."""
        loaded = self._state.loaded
        meta = dict(loaded.metadata)
        meta.update(
            embedding_dim=loaded.embedding_dim,
            threshold=self.threshold_override if self.threshold_override is not None else loaded.threshold,
            model_version=loaded.model_version,
            created_at=loaded.metadata.get("created_at"),
            students=dict(loaded.student_names),
        )
        return meta

    @property
    def model_version(self) -> str:
        return self._state.loaded.model_version

    @property
    def classifier_dir(self) -> Path:
        return self._state.loaded.classifier_dir

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
        limit = (
            threshold
            if threshold is not None
            else (self.threshold_override if self.threshold_override is not None else loaded.threshold)
        )
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
                state = _State(
                    state.loaded, _build_engines(state.loaded, self.device, self.weights_dir, self.allow_download)
                )
                self._state = state
        return state

    # ---- hot reload
    def reload_if_changed(self) -> bool:
        """Switch to a newly published model if there is one; True when switched.

        Cheap when nothing changed (one ``stat``). A new model is fully loaded and checked
        (and its face models started, if this instance already uses them) before the
        switch, which is atomic for concurrent callers. A broken new model is refused and
        logged; the current model keeps answering.
        """
        with self._reload_lock:
            current = self._state
            directory = self._paths.classifier_dir if self._paths is not None else current.loaded.classifier_dir
            stamp = _stamp(directory)
            if stamp == current.loaded.stamp or stamp == ("missing",) or stamp == self._refused_stamp:
                return False
            try:
                loaded = load_model_files(directory, require_manifest=current.loaded.verified)
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


def _load_published(paths: OutputPaths, require_manifest: bool) -> LoadedModel:
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
                return load_model_files(paths.classifier_dir, require_manifest=require_manifest)
            except ModelLoadError:
                if paths.classifier_dir.is_dir() or time.monotonic() >= deadline:
                    raise  # a real problem, not a folder renamed away while we read it
                continue
        elsewhere = complete_model_dir(paths)
        if elsewhere is None:
            if journal_path(paths).exists() and time.monotonic() < deadline:
                time.sleep(0.05)  # a publish is between its two renames
                continue
            return load_model_files(paths.classifier_dir, require_manifest=require_manifest)  # the clear error
        try:
            loaded = load_model_files(elsewhere, require_manifest=require_manifest)
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
