"""Find model weight files: an offline folder first, then the libraries' own caches/downloads.

Order for every model: ``--weights-dir`` (or ``$SMARTATTENDANCE_WEIGHTS_DIR``), the
library's usual cache, then the library's own download. When all fail we raise
:class:`WeightsNotFoundError` naming the file, where it comes from and where to put it,
before the pipeline has touched any artifact.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
from pathlib import Path

from .errors import WeightsNotFoundError
from .hashing import sha256_file

log = logging.getLogger(__name__)

WEIGHTS_ENV = "SMARTATTENDANCE_WEIGHTS_DIR"
SCRFD_PACK = "buffalo_l"
SCRFD_FILE = "det_10g.onnx"
FACENET_FILE = "20180402-114759-vggface2.pt"
FACENET_SOURCE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/" + FACENET_FILE
DLIB_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: SHA-256 of the official files under these names, as several public projects list them.
OFFICIAL_SHA256 = {
    SCRFD_FILE: "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",  # 16 923 827 bytes
    FACENET_FILE: "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b",
}


def unofficial_weights(files: dict[str, str | None]) -> list[str]:
    """Warnings for weight files named like an official one but with other content.

    ``files``: file name → its SHA-256 (as the model metadata records them). A renamed,
    re-exported or damaged file gives different embeddings than the official weights
    (a FaceNet file with the right keys and wrong values trains a useless model).
    """
    out = []
    for name, sha in files.items():
        official = OFFICIAL_SHA256.get(name)
        if official and sha and sha != official:
            out.append(
                f"{name} is not the official file (SHA-256 {sha[:12]}…, official {official[:12]}…): "
                "recognition quality is unknown; get the file from its official source"
            )
    return out


def weights_dir(explicit: str | Path | None = None) -> Path | None:
    """The offline weights folder: the argument, else the environment variable, else None."""
    value = explicit or os.environ.get(WEIGHTS_ENV)
    return Path(value).expanduser() if value else None


@functools.lru_cache(maxsize=16)
def _weights_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def weights_sha256(path: str | Path) -> str:
    """SHA-256 of a weight file, memoised on path, size and mtime: a 100 MB file is hashed once."""
    st = os.stat(path)
    return _weights_sha256(str(path), st.st_size, st.st_mtime_ns)


def _first_file(candidates: list[Path]) -> Path | None:
    for candidate in candidates:
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    return None


def insightface_root() -> Path:
    """insightface's default model root (it has no environment variable)."""
    return Path("~/.insightface").expanduser()


def scrfd_weights(
    explicit_file: str | Path | None = None, folder: str | Path | None = None, *, allow_download: bool = True
) -> Path:
    """Path of the SCRFD detector ``.onnx`` (default: ``buffalo_l/det_10g.onnx``)."""
    if explicit_file:
        path = Path(explicit_file).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"Detector model file not found: {path}. Check --detector-model.")
        return path
    base = weights_dir(folder)
    pack_dir = insightface_root() / "models" / SCRFD_PACK
    candidates = []
    if base is not None:
        candidates += [base / SCRFD_FILE, base / SCRFD_PACK / SCRFD_FILE, base / "models" / SCRFD_PACK / SCRFD_FILE]
    candidates.append(pack_dir / SCRFD_FILE)
    found = _first_file(candidates)
    if found is not None:
        return found
    if allow_download:
        try:
            from insightface.utils.storage import ensure_available

            log.info("Downloading the insightface '%s' model pack (first run only)…", SCRFD_PACK)
            chatter = io.StringIO()  # insightface prints; keep our output clean and log it instead
            try:
                with contextlib.redirect_stdout(chatter):
                    ensure_available("models", SCRFD_PACK, root=str(insightface_root()))
            finally:
                log.debug("insightface: %s", chatter.getvalue().strip())
        except Exception as err:  # requests.ConnectionError, zip errors, …
            log.debug("insightface download failed: %s", err)
        found = _first_file([pack_dir / SCRFD_FILE])
        if found is not None:
            return found
    where = (
        f"{base}/{SCRFD_FILE}"
        if base is not None
        else f"<weights folder>/{SCRFD_FILE} (set --weights-dir or {WEIGHTS_ENV})"
    )
    empty_hint = (
        f" The folder {pack_dir} exists but has no {SCRFD_FILE}: delete it so the download can be retried."
        if pack_dir.is_dir()
        else ""
    )
    raise WeightsNotFoundError(
        f"Face detector weights missing: {SCRFD_FILE} (insightface model pack '{SCRFD_PACK}') could not be "
        f"found or downloaded. Copy {SCRFD_FILE} from the {SCRFD_PACK}.zip release of insightface to {where}, "
        f"or to {pack_dir}/{SCRFD_FILE}.{empty_hint} Offline alternative: --detector mtcnn."
    )


def facenet_weights(folder: str | Path | None = None, *, allow_download: bool = True) -> Path:
    """Path of the FaceNet vggface2 state_dict (``20180402-114759-vggface2.pt``)."""
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

    base = weights_dir(folder)
    # facenet-pytorch's own cache ($TORCH_HOME/checkpoints), not torch.hub's ($TORCH_HOME/hub/checkpoints)
    cache = Path(get_torch_home()) / "checkpoints"
    candidates = []
    if base is not None:
        candidates += [base / FACENET_FILE, base / "checkpoints" / FACENET_FILE]
    candidates.append(cache / FACENET_FILE)
    found = _first_file(candidates)
    if found is not None:
        return found
    if allow_download:
        try:
            from facenet_pytorch.models.utils.download import download_url_to_file

            cache.mkdir(parents=True, exist_ok=True)
            log.info("Downloading FaceNet vggface2 weights (first run only)…")
            download_url_to_file(FACENET_SOURCE, str(cache / FACENET_FILE))
        except Exception as err:  # URLError offline
            log.debug("FaceNet download failed: %s", err)
        found = _first_file([cache / FACENET_FILE])
        if found is not None:
            return found
    where = (
        f"{base}/{FACENET_FILE}"
        if base is not None
        else f"<weights folder>/{FACENET_FILE} (set --weights-dir or {WEIGHTS_ENV})"
    )
    raise WeightsNotFoundError(
        f"Face embedder weights missing: {FACENET_FILE} (facenet-pytorch InceptionResnetV1, vggface2) could not be "
        f"found or downloaded. Download it from {FACENET_SOURCE} and put it at {where} or at {cache / FACENET_FILE}. "
        f"Offline alternative: --embedder dlib."
    )


def dlib_weights() -> Path:
    """The dlib ResNet face descriptor model shipped by the ``face_recognition_models`` package.

    Located through importlib (importing that package needs ``pkg_resources``).
    """
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            "The dlib embedder needs the 'face_recognition_models' package: pip install face-recognition-models dlib-bin"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / DLIB_FILE
    if not path.is_file():
        raise WeightsNotFoundError(f"{DLIB_FILE} missing from {path.parent}: reinstall face-recognition-models")
    return path
