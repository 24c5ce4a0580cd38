"""Build the detector and embedder by name: one registry used by training and recognition."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import faces, weights
from .embedder import DlibEmbedder, Embedder, FaceNetEmbedder, resolve_device
from .errors import RetrainError
from .faces import Detector, MtcnnDetector, ScrfdDetector

log = logging.getLogger(__name__)

DETECTORS = ("scrfd", "mtcnn")
EMBEDDERS = ("facenet", "dlib")


@dataclass(frozen=True)
class BackendConfig:
    """Which models to use and where their weights are; everything has a default."""

    detector: str = "scrfd"
    embedder: str = "facenet"
    device: str = "auto"
    weights_dir: str | None = None
    detector_model: str | None = None  # an explicit SCRFD .onnx file
    allow_download: bool = True
    detector_sessions: int = 1  # SCRFD instances, so that this many threads can detect at once
    embedder_runtime: str = "auto"  # FaceNet: onnxruntime on the CPU, torch on CUDA (see embedder.py)


def onnx_providers(device: str) -> list[str]:
    """ONNX Runtime providers for a torch-style device name."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def build_detector(config: BackendConfig) -> Detector:
    """The face detector named in ``config`` (weights located or downloaded first)."""
    device = resolve_device(config.device)
    if config.detector == "scrfd":
        path = weights.scrfd_weights(config.detector_model, config.weights_dir, allow_download=config.allow_download)
        log.debug("Detector: SCRFD %s", path)
        return ScrfdDetector(
            str(path),
            weights_sha256=weights.weights_sha256(path),
            providers=onnx_providers(device),
            sessions=config.detector_sessions,
        )
    if config.detector == "mtcnn":
        log.debug("Detector: MTCNN (facenet-pytorch, bundled weights)")
        return MtcnnDetector(device=device)
    raise RetrainError(f"unknown detector {config.detector!r}; choose one of {', '.join(DETECTORS)}")


def build_embedder(config: BackendConfig) -> Embedder:
    """The embedder named in ``config`` (weights located or downloaded first)."""
    device = resolve_device(config.device)
    if config.embedder == "facenet":
        path = weights.facenet_weights(config.weights_dir, allow_download=config.allow_download)
        embedder = FaceNetEmbedder(path, device=device, runtime=config.embedder_runtime)
        log.debug("Embedder: FaceNet InceptionResnetV1 (vggface2) %s on %s (%s)", path, device, embedder.runtime)
        return embedder
    if config.embedder == "dlib":
        log.debug("Embedder: dlib ResNet (128-d, bundled weights)")
        return DlibEmbedder(weights.dlib_weights())
    raise RetrainError(f"unknown embedder {config.embedder!r}; choose one of {', '.join(EMBEDDERS)}")


def describe(detector: Detector, embedder: Embedder) -> dict[str, object]:
    """What the metadata records about the models (names, weight hashes, crop)."""
    model_file = getattr(detector, "model_file", None)
    return {
        "detector": {
            "name": detector.name,
            "model_file": Path(model_file).name if model_file else None,
            "weights_sha256": detector.weights_sha256,
            "input_size": list(getattr(detector, "input_size", ()) or ()),
            "adaptive_input_min_side": faces.DETECT_MIN_SIDE if getattr(detector, "adaptive_input", False) else None,
            "decode_min_side": faces.DECODE_MIN_SIDE,  # photo files: JPEGs decoded reduced down to this
        },
        "embedder": {
            "name": embedder.name,
            "weights_file": Path(weights_file).name
            if (weights_file := getattr(embedder, "weights_file", None))
            else None,
            "weights_sha256": embedder.weights_sha256,
            "dim": embedder.dim,
            "runtime": getattr(embedder, "runtime", None),
        },
        "embedding_dim": embedder.dim,
        "normalisation": "l2",
        **embedder.crop.as_dict(),
    }
