"""Face crops → L2-normalised embedding vectors, in batches.

Two backends behind one small interface:

* ``FaceNetEmbedder`` (default): facenet-pytorch ``InceptionResnetV1`` with vggface2
  weights, 512-d, inputs standardised with facenet-pytorch's own
  ``fixed_image_standardization`` ((x − 127.5) / 128) on RGB crops. On the CPU the
  network is exported once per process to ONNX Runtime (1.7× the throughput of eager
  torch on 2 cores, max difference 1e-7; bench/README.md); on CUDA it runs in torch.
* ``DlibEmbedder``: dlib's ResNet descriptor, 128-d, weights shipped by
  ``face_recognition_models``; works fully offline.

Embeddings are always float32 and L2-normalised, so every downstream stage (scaler,
classifier, cache, distances) sees vectors of the same scale.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import RetrainError, WeightsNotFoundError
from .faces import CropSettings
from .weights import weights_sha256

log = logging.getLogger(__name__)


class Embedder(Protocol):
    """What the pipeline needs from an embedder."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def crop(self) -> CropSettings: ...

    @property
    def weights_sha256(self) -> str | None:
        """SHA-256 of the weight file (None: weights bundled with a library)."""
        ...

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """N×S×S×3 RGB uint8 crops → N×dim float32, each row of unit length."""
        ...


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); all-zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def resolve_device(device: str = "auto") -> str:
    """'auto' → 'cuda' when a CUDA GPU is usable, else 'cpu'; 'cuda' without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RetrainError("--device cuda was requested but no CUDA GPU is available; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise RetrainError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return device


RUNTIMES = ("auto", "torch", "onnxruntime")


def _onnx_session(model: Any, size: int) -> Any:  # a torch module in, an ONNX Runtime session out
    """Export ``model`` (eval mode, on the CPU) to ONNX in memory and open it in ONNX Runtime.

    In memory, not on disk: the export takes ~2 s once per process, and nothing is left
    behind to go stale when the weights change. Batch size is dynamic.
    """
    import io
    import warnings

    import onnxruntime
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            torch.zeros(1, 3, size, size),
            buffer,
            input_names=["crops"],
            output_names=["embeddings"],
            dynamic_axes={"crops": {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


class FaceNetEmbedder:
    """facenet-pytorch InceptionResnetV1 (vggface2), loaded from a local state_dict file."""

    dim = 512

    def __init__(
        self,
        weights_file: str | Path,
        device: str = "cpu",
        crop: CropSettings | None = None,
        runtime: str = "auto",
    ) -> None:
        import torch
        from facenet_pytorch import InceptionResnetV1

        if runtime not in RUNTIMES:
            raise RetrainError(f"unknown embedder runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        self.name = "facenet-inception-resnet-v1-vggface2"
        self.crop = crop or CropSettings(size=160, template="facenet")
        self.device = device
        self.weights_file = str(weights_file)
        self.weights_sha256 = weights_sha256(weights_file)

        model = InceptionResnetV1(pretrained=None, classify=False)
        try:
            state = torch.load(self.weights_file, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise TypeError(f"holds a {type(state).__name__}, not a state_dict")
            state = {k: v for k, v in state.items() if not k.startswith("logits.")}
            missing, unexpected = model.load_state_dict(state, strict=False)
        except Exception as err:  # not a torch file, truncated download, wrong tensor shapes, …
            raise WeightsNotFoundError(
                f"{weights_file} is not a FaceNet InceptionResnetV1 state_dict ({err}); "
                f"replace it with 20180402-114759-vggface2.pt"
            ) from err
        if missing or unexpected:
            raise WeightsNotFoundError(
                f"{weights_file} is not a FaceNet InceptionResnetV1 state_dict "
                f"(missing {len(missing)} keys, unexpected {len(unexpected)}); replace it with 20180402-114759-vggface2.pt"
            )
        self._model = model.eval().to(device)
        self._session = None
        if runtime == "onnxruntime" or (runtime == "auto" and device == "cpu"):
            try:
                self._session = _onnx_session(model.cpu() if device != "cpu" else model, self.crop.size)
            except Exception as err:  # an exporter/runtime problem costs speed, never the run
                if runtime == "onnxruntime":
                    raise RetrainError(f"FaceNet could not be run in ONNX Runtime: {err}") from err
                log.warning("FaceNet stays in torch (ONNX export failed: %s)", err)
        self.runtime = "onnxruntime" if self._session is not None else "torch"

    def embed(self, crops: np.ndarray) -> np.ndarray:
        import torch
        from facenet_pytorch import fixed_image_standardization

        crops = np.asarray(crops)
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._session is not None:
            # the same arithmetic as fixed_image_standardization, in float32
            batch = (np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32) - 127.5) / 128.0
            return l2_normalize(self._session.run(None, {"crops": batch})[0])
        tensor = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
        tensor = fixed_image_standardization(tensor).to(self.device)
        with torch.inference_mode():
            out = self._model(tensor)
        return l2_normalize(out.cpu().numpy())


class DlibEmbedder:
    """dlib's ResNet face descriptor (128-d) on our aligned 150×150 crops. Offline."""

    dim = 128

    def __init__(self, weights_file: str | Path, crop: CropSettings | None = None) -> None:
        import dlib

        self.name = "dlib-resnet-v1"
        self.crop = crop or CropSettings(size=150, template="dlib")
        self.weights_file = str(weights_file)
        self.weights_sha256 = weights_sha256(weights_file)
        self._model = dlib.face_recognition_model_v1(self.weights_file)
        self._lock = threading.Lock()

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        chips = [np.ascontiguousarray(c, dtype=np.uint8) for c in crops]
        with self._lock:
            vectors = self._model.compute_face_descriptor(chips)
        return l2_normalize(np.array([np.asarray(v) for v in vectors]))
