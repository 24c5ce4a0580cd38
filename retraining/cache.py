"""Embedding cache: a photo whose bytes and pipeline are unchanged is not decoded, detected or embedded again.

Key: the SHA-256 of the photo's bytes. Validity: the *pipeline fingerprint* — detector
and embedder names and weight hashes, crop settings, detection constants and library
versions. A cache written under another fingerprint is never read (a changed model or
library re-embeds everything) and is replaced by the next run's cache.

What is stored per photo: its embedding (float32) and face info, or the reason it was
skipped (no face, unreadable…: deterministic for the same bytes and models). Unexpected
errors are not cached, so they are retried. A clip is stored as its frames (key: the clip's
hash and the frame's time, :func:`~retraining.video.frame_key`) plus one :class:`CachedClip`
saying which frames its selection kept, so an unchanged clip is not decoded again. Every key
starts with the 64 hex digits of its file's hash, which is what pruning compares.

On disk (``<root>/models/cache``): ``embeddings.npz`` plus ``cache.json`` (fingerprint,
SHA-256 and size of the npz), both written atomically (temp file + fsync + rename). The
npz is checked against ``cache.json`` before use; a damaged, half-written or foreign cache
is ignored with a warning (everything is re-embedded), never trusted.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.recognizer import faces
from backend.recognizer.hashing import sha256_bytes

from .files import atomic_write_bytes, atomic_write_json
from .versions import library_versions

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: face info records the second face's size
DATA_NAME = "embeddings.npz"
META_NAME = "cache.json"
#: Libraries whose version can change an embedding.
FINGERPRINT_LIBRARIES = (
    "numpy",
    "torch",
    "facenet-pytorch",
    "insightface",
    "onnxruntime",
    "opencv-python",
    "opencv-python-headless",
    "pillow",
    "dlib-bin",
    "scikit-image",
)


def pipeline_fingerprint(detector: Any, embedder: Any) -> dict[str, Any]:
    """Everything that decides a photo's embedding, as a JSON-able dict."""
    versions = library_versions(FINGERPRINT_LIBRARIES, python=False)
    model_file = getattr(detector, "model_file", None)
    return {
        "format": CACHE_FORMAT,
        "detector": {
            "name": detector.name,
            "weights_sha256": detector.weights_sha256,
            "model_file": Path(model_file).name if model_file else None,
            "input_size": list(getattr(detector, "input_size", ()) or ()),
            "adaptive_input": getattr(detector, "adaptive_input", None),
            "min_score": getattr(detector, "min_score", None),
        },
        "embedder": {
            "name": embedder.name,
            "weights_sha256": embedder.weights_sha256,
            "dim": int(embedder.dim),
            "runtime": getattr(embedder, "runtime", None),
        },
        "crop": embedder.crop.as_dict(),
        "detect_max_side": faces.DETECT_MAX_SIDE,
        "detect_min_side": faces.DETECT_MIN_SIDE,
        "decode_min_side": faces.DECODE_MIN_SIDE,  # reduced JPEG decoding (photo_face_crops)
        "retry_pad_fraction": faces.RETRY_PAD_FRACTION,
        "max_faces": 1,
        "normalisation": "l2",
        "libraries": versions,
    }


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    return sha256_bytes(json.dumps(fingerprint, sort_keys=True, default=str).encode("utf-8"))


@dataclass(frozen=True)
class CachedFace:
    """One cached photo result: an embedding + face info, or a skip reason."""

    vector: np.ndarray | None
    info: tuple[int, float, float, bool, float, float] | None  # num_faces, face_size, score, padded_retry, sharpness,
    # second_face
    reason: str | None = None


@dataclass(frozen=True)
class CachedClip:
    """What one clip gave under one selection: the frame times kept and notes, or the skip reason."""

    seconds: tuple[float, ...]
    notes: tuple[str, ...] = ()
    reason: str | None = None
    sampled: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": list(self.seconds),
            "notes": list(self.notes),
            "reason": self.reason,
            "sampled": self.sampled,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CachedClip:
        return cls(
            tuple(float(t) for t in data["seconds"]),
            tuple(str(n) for n in data.get("notes", ())),
            data.get("reason"),
            int(data.get("sampled", 0)),
        )


def file_digest_of(key: str) -> str:
    """The hash of the file a cache key belongs to (a photo's key is that hash; a frame's and a clip's begin with it)."""
    return key[:64]


def _kept(key: str, keep: set[str] | None) -> bool:
    return keep is None or key in keep or file_digest_of(key) in keep


@dataclass
class EmbeddingCache:
    """In-memory view of the cache of one fingerprint (see the module docstring)."""

    fingerprint: dict[str, Any]
    dim: int
    entries: dict[str, CachedFace] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    loaded_from: Path | None = None
    used: set[str] = field(default_factory=set)  # keys looked up or added in this run
    #: keys read from disk: a hit on one of them is a photo reused from an earlier run (a hit on a key
    #: added in this run is the same photo twice in this run)
    loaded_keys: frozenset[str] = frozenset()
    reused: int = 0
    clips: dict[str, CachedClip] = field(default_factory=dict)  # clip hash + selection id → what it gave

    @property
    def id(self) -> str:
        return fingerprint_id(self.fingerprint)

    def get(self, key: str) -> CachedFace | None:
        found = self.entries.get(key)
        self.used.add(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
            self.reused += key in self.loaded_keys
        return found

    def put(self, key: str, value: CachedFace) -> None:
        self.entries[key] = value
        self.used.add(key)

    def get_clip(self, key: str) -> CachedClip | None:
        """The frames a clip gave before, when all of them are still cached."""
        found = self.clips.get(key)
        self.used.add(key)
        if found is None or any(k not in self.entries for k in self.frame_keys(key, found)):
            return None
        self.reused += key in self.loaded_keys
        return found

    def put_clip(self, key: str, value: CachedClip) -> None:
        self.clips[key] = value
        self.used.add(key)

    @staticmethod
    def frame_keys(clip_key: str, clip: CachedClip) -> list[str]:
        from .video import frame_key

        return [frame_key(file_digest_of(clip_key), t) for t in clip.seconds]

    # ------------------------------------------------------------------ disk
    def to_bytes(self, keep: set[str] | None = None) -> bytes:
        keys = sorted(k for k in self.entries if _kept(k, keep))
        clips = {k: v.to_json() for k, v in sorted(self.clips.items()) if _kept(k, keep)}
        ok = [k for k in keys if self.entries[k].vector is not None]
        bad = [k for k in keys if self.entries[k].vector is None]
        vectors = (
            np.stack([v for k in ok if (v := self.entries[k].vector) is not None]).astype(np.float32)
            if ok
            else np.zeros((0, self.dim), dtype=np.float32)
        )
        info = np.array([self.entries[k].info for k in ok], dtype=np.float64).reshape(len(ok), 6)
        buf = io.BytesIO()
        np.savez(
            buf,
            keys=np.array(ok, dtype=str),
            vectors=vectors,
            info=info,
            skipped_keys=np.array(bad, dtype=str),
            skipped_reasons=np.array([self.entries[k].reason or "" for k in bad], dtype=str),
            clips=np.array(json.dumps(clips, sort_keys=True)),
        )
        return buf.getvalue()

    def save(self, directory: Path, keep: set[str] | None = None) -> Path:
        """Write the cache atomically (data first, then the meta file that vouches for it)."""
        directory = Path(directory)
        data = self.to_bytes(keep)
        atomic_write_bytes(directory / DATA_NAME, data)
        atomic_write_json(
            directory / META_NAME,
            {
                "format": CACHE_FORMAT,
                "fingerprint_id": self.id,
                "fingerprint": self.fingerprint,
                "sha256": sha256_bytes(data),
                "size": len(data),
                "entries": sum(1 for k in self.entries if _kept(k, keep)),
            },
        )
        return directory / DATA_NAME


def cache_status(directory: Path, fingerprint: dict[str, Any]) -> str:
    """ "match", "mismatch" (another pipeline), "missing" or "damaged"."""
    meta_path = Path(directory) / META_NAME
    if not meta_path.exists():
        return "missing"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "damaged"
    if not isinstance(meta, dict):
        return "damaged"
    return "match" if meta.get("fingerprint_id") == fingerprint_id(fingerprint) else "mismatch"


def load_cache(directory: Path, fingerprint: dict[str, Any], dim: int) -> EmbeddingCache:
    """The cache for ``fingerprint`` (empty when missing, stale, damaged or of another pipeline)."""
    directory = Path(directory)
    cache = EmbeddingCache(fingerprint, dim)
    status = cache_status(directory, fingerprint)
    if status == "missing":
        return cache
    if status == "mismatch":
        log.debug("Embedding cache in %s was made with other models or library versions: not used", directory)
        return cache
    if status == "damaged":
        log.warning(
            "Embedding cache description %s is unreadable: cache ignored, every photo is re-embedded",
            directory / META_NAME,
        )
        return cache
    meta = json.loads((directory / META_NAME).read_text(encoding="utf-8"))
    try:
        data = (directory / DATA_NAME).read_bytes()
    except OSError as err:
        log.warning("Embedding cache %s unreadable (%s): every photo is re-embedded", directory / DATA_NAME, err)
        return cache
    if len(data) != meta.get("size") or sha256_bytes(data) != meta.get("sha256"):
        log.warning(
            "Embedding cache %s does not match its description (damaged or half-written): ignored, "
            "every photo is re-embedded",
            directory / DATA_NAME,
        )
        return cache
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            keys, vectors, info = npz["keys"], npz["vectors"], npz["info"]
            skipped_keys, reasons = npz["skipped_keys"], npz["skipped_reasons"]
            clips = json.loads(str(npz["clips"])) if "clips" in npz.files else {}
            cache.clips = {str(k): CachedClip.from_json(v) for k, v in clips.items()}
    except Exception as err:  # any parse error means: do not trust it
        log.warning("Embedding cache %s unreadable (%s): ignored", directory / DATA_NAME, err)
        return cache
    if (
        vectors.ndim != 2
        or vectors.shape[1] != dim
        or len(vectors) != len(keys)
        or info.ndim != 2
        or info.shape != (len(keys), 6)
    ):
        log.warning("Embedding cache %s has the wrong shape: ignored", directory / DATA_NAME)
        return cache
    for k, v, inf in zip(keys, vectors, info):
        info6 = (int(inf[0]), float(inf[1]), float(inf[2]), bool(inf[3]), float(inf[4]), float(inf[5]))
        cache.entries[str(k)] = CachedFace(v, info6)
    for k, r in zip(skipped_keys, reasons):
        cache.entries[str(k)] = CachedFace(None, None, str(r))
    cache.loaded_from = directory
    log.debug("Embedding cache: %d photos known (%s)", len(cache.entries), directory)
    cache.loaded_keys = frozenset(cache.entries) | frozenset(cache.clips)
    return cache


def rewrite_cache(directory: Path, keep: set[str]) -> int:
    """Rewrite the cache in ``directory`` with only the photos in ``keep``; returns how many were dropped.

    Whatever pipeline wrote it: its own description says which. A cache that cannot be read is
    deleted (it is only a cache, and may hold anyone's face). Both files are replaced atomically."""
    directory = Path(directory)
    meta_path = directory / META_NAME
    if not meta_path.exists() and not (directory / DATA_NAME).exists():
        return 0
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        fingerprint = meta["fingerprint"]
        dim = int(fingerprint["embedder"]["dim"])  # the pipeline that wrote it says its vectors' size
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("Embedding cache in %s unreadable (%s): deleted", directory, err)
        for name in (META_NAME, DATA_NAME):
            (directory / name).unlink(missing_ok=True)
        return 0
    cache = load_cache(directory, fingerprint, dim)
    if cache.loaded_from is None:  # damaged: load_cache said why
        for name in (META_NAME, DATA_NAME):
            (directory / name).unlink(missing_ok=True)
        return int(meta.get("entries", 0) or 0)
    dropped = sum(1 for k in cache.entries if not _kept(k, keep))
    if dropped or any(not _kept(k, keep) for k in cache.clips):
        cache.save(directory, keep=keep)
    return dropped
