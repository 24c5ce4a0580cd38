"""Photos → one embedding each: decode → detect → keep the largest face → crop → embed (batched).

A photo that cannot be used is skipped with a reason; the run goes on. Crops are
buffered and embedded ``batch_size`` at a time, so memory stays flat in the number of
photos (only the float32 embeddings grow).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from backend.recognizer.backends import BackendConfig, build_detector, build_embedder, describe
from backend.recognizer.embedder import Embedder
from backend.recognizer.errors import ImageError
from backend.recognizer.faces import Detector, photo_face_crops
from backend.recognizer.hashing import sha256_bytes
from backend.recognizer.images import read_photo

from . import cache as cache_mod
from .cache import CachedFace, EmbeddingCache
from .clip_frames import ClipOutcome, ClipResult, clip_frames
from .dataset import ImageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceInfo:
    """What detection saw in one kept photo (for the data-quality report)."""

    num_faces: int
    face_size: float
    score: float
    padded_retry: bool
    sharpness: float = 0.0  # variance of the Laplacian of the grey crop
    second_face: float = 0.0  # area of the second-largest face / the largest (0: one face)


@dataclass
class Extraction:
    """Embeddings of the usable photos and clip frames, aligned row by row with ``records`` and ``faces``."""

    embeddings: np.ndarray
    records: list[ImageRecord]
    faces: list[FaceInfo]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)  # each record's cache key: its bytes' hash (+ a frame's time)
    clips: list[ClipOutcome] = field(default_factory=list)  # what each usable clip gave

    @property
    def sources(self) -> np.ndarray:
        """Each row's source file (a frame's clip): rows of one source are one piece of evidence."""
        return np.array([str(r.source) for r in self.records], dtype=str)

    @property
    def student_ids(self) -> np.ndarray:
        return np.array([r.student_id for r in self.records], dtype=str)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r.student_id] = out.get(r.student_id, 0) + 1
        return out


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop: low = blurred."""
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def prepare_crop(
    record: ImageRecord, detector: Detector, embedder: Embedder, data: bytes | None = None
) -> tuple[np.ndarray, FaceInfo]:
    """One photo (``data``: its bytes, already read) → (aligned crop of its largest face, what
    was found). Raises ImageError."""
    found = photo_face_crops(detector, record.path if data is None else data, embedder.crop, max_faces=1)
    if not found.faces:
        raise ImageError("no face found (also tried with a padded border)")
    face = found.faces[0]
    crop = found.crops[0]
    second = found.faces[1].area / max(face.area, 1e-9) if len(found.faces) > 1 else 0.0
    return crop, FaceInfo(len(found.faces), face.size, face.score, found.padded_retry, sharpness(crop), second)


@dataclass(frozen=True)
class _Prepared:
    """One photo after decode/detect/crop (or found in the cache, or skipped with a reason)."""

    key: str | None  # the SHA-256 of the photo's bytes (the cache key); None when unreadable
    crop: np.ndarray | None = None
    face: FaceInfo | None = None
    cached: CachedFace | None = None
    reason: str | None = None  # why the photo is skipped


def _prepare(record: ImageRecord, detector: Detector, embedder: Embedder, cache: EmbeddingCache | None) -> _Prepared:
    """Worker: never raises (reasons as in the serial path).

    The photo is read once: its cache key is the hash of the very bytes that are decoded and
    embedded, so a photo replaced during the run can never store another face under its key.
    Only a regular file is opened (a named pipe would block the worker forever)."""
    try:
        data = read_photo(record.path)
    except ImageError as err:
        return _Prepared(None, reason=str(err))  # not cached: the file may be fixed without its bytes changing
    key = sha256_bytes(data)  # also what the duplicate-photo check compares (Extraction.sha256)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return _Prepared(key, cached=hit, reason=hit.reason)
    try:
        crop, info = prepare_crop(record, detector, embedder, data)
    except ImageError as err:
        return _Prepared(key, reason=str(err))
    except Exception as err:  # a detector/decoder bug must not end the run; report it
        log.debug("Unexpected error on %s", record.path, exc_info=True)  # the skip reason says what it was
        return _Prepared(None, reason=f"unexpected error: {type(err).__name__}: {err}")
    return _Prepared(key, crop=crop, face=info)


def extract_embeddings(
    records: Iterable[ImageRecord],
    detector: Detector,
    embedder: Embedder,
    *,
    batch_size: int = 32,
    progress: bool = True,
    total: int | None = None,
    workers: int = 1,
    cache: EmbeddingCache | None = None,
) -> Extraction:
    """Embed every usable photo; the others go to ``skipped`` with their reason.

    ``workers`` > 0: decode/detect/crop run in that many background threads, ahead of
    the embedder (ONNX Runtime / torch / OpenCV release the GIL, so detection of the next
    photos overlaps the embedding of this batch); ``workers=0`` is the plain serial loop.
    For several threads to detect at once, give SCRFD as many sessions
    (``ScrfdDetector(sessions=workers)``; ``BackendConfig.detector_sessions``).
    Results come back in input order either way, identical to the serial path. With a
    ``cache``, photos whose bytes (SHA-256) are known under the same pipeline fingerprint
    are not decoded or embedded again, and new results are added to it.
    """
    batch_size = max(1, int(batch_size))
    given = list(records)
    records = [r for r in given if not r.is_clip]
    clips = [r for r in given if r.is_clip]
    n = len(records)
    out = np.zeros((n, embedder.dim), dtype=np.float32)
    done = np.zeros(n, dtype=bool)
    infos: list[FaceInfo | None] = [None] * n
    reasons: list[str | None] = [None] * n
    hashes: list[str | None] = [None] * n
    crops: list[np.ndarray] = []
    pending: list[tuple[int, str | None]] = []

    def flush() -> None:
        if not crops:
            return
        vectors = np.asarray(embedder.embed(np.stack(crops)), dtype=np.float32)
        for (i, key), vec in zip(pending, vectors, strict=True):
            out[i] = vec
            done[i] = True
            inf = infos[i]
            if cache is not None and key is not None and inf is not None:
                cache.put(
                    key,
                    CachedFace(
                        vec.copy(),
                        (inf.num_faces, inf.face_size, inf.score, inf.padded_retry, inf.sharpness, inf.second_face),
                    ),
                )
        crops.clear()
        pending.clear()

    def handle(i: int, result: _Prepared) -> None:
        record = records[i]
        hashes[i] = result.key
        reason = result.reason
        if reason is not None:
            log.warning("Skipped %s: %s", record.path, reason)
            reasons[i] = reason
            if cache is not None and result.key is not None and result.cached is None:
                if not reason.startswith("unexpected error"):
                    cache.put(result.key, CachedFace(None, None, reason))
            return
        if result.cached is not None and result.cached.vector is not None and result.cached.info is not None:
            out[i] = result.cached.vector
            done[i] = True
            infos[i] = FaceInfo(*result.cached.info)
            return
        if result.crop is None or result.face is None:
            raise RuntimeError(f"no crop and no reason for {record.path}")  # cannot happen: _prepare sets one
        infos[i] = result.face
        crops.append(result.crop)
        pending.append((i, result.key))
        if len(crops) >= batch_size:
            flush()

    bar = tqdm(total=len(given) if total is None else total, desc="Extracting faces", unit="file", disable=not progress)
    from_clips: dict[Path, ClipResult] = {}
    try:
        if workers <= 0:
            for i, record in enumerate(records):
                handle(i, _prepare(record, detector, embedder, cache))
                bar.update(1)
        else:
            ahead = max(2 * batch_size, 4 * workers)  # bounded read-ahead: memory stays flat
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="extract") as pool:
                queue: deque[Future[_Prepared]] = deque()
                nxt = 0
                for i in range(n):
                    while nxt < n and len(queue) < ahead:
                        queue.append(pool.submit(_prepare, records[nxt], detector, embedder, cache))
                        nxt += 1
                    handle(i, queue.popleft().result())
                    bar.update(1)
        flush()
        for clip in clips:  # after the photos: a clip's own detections and embeddings run in this thread
            from_clips[clip.path] = clip_frames(clip, detector, embedder, cache)
            bar.update(1)
    finally:
        bar.close()
    return _assemble(given, out, done, infos, reasons, hashes, from_clips, embedder.dim)


def _assemble(
    given: list[ImageRecord],
    out: np.ndarray,
    done: np.ndarray,
    infos: list[FaceInfo | None],
    reasons: list[str | None],
    hashes: list[str | None],
    from_clips: dict[Path, ClipResult],
    dim: int,
) -> Extraction:
    """One Extraction in the order the files were given, a clip's frames in its place."""
    rows: list[np.ndarray] = []
    kept: list[ImageRecord] = []
    faces: list[FaceInfo] = []
    sha256: list[str] = []
    skipped: list[tuple[Path, str]] = []
    outcomes: list[ClipOutcome] = []
    i = -1  # the photo's row in the photo arrays
    for record in given:
        if record.is_clip:
            result = from_clips[record.path]
            if result.reason is not None:
                log.warning("Skipped %s: %s", record.path, result.reason)
                skipped.append((record.path, result.reason))
                continue
            for frame in result.frames:
                rows.append(np.asarray(frame.vector, dtype=np.float32))
                kept.append(frame.record)
                faces.append(FaceInfo(*frame.info))
                sha256.append(frame.key)
            if result.outcome is not None:
                outcomes.append(result.outcome)
            continue
        i += 1
        if (reason := reasons[i]) is not None:
            skipped.append((record.path, reason))
        elif done[i] and (info := infos[i]) is not None:
            rows.append(out[i])
            kept.append(record)
            faces.append(info)
            sha256.append(hashes[i] or "")  # a kept photo was read, so it has one
    embeddings = np.ascontiguousarray(np.stack(rows)) if rows else np.zeros((0, dim), dtype=np.float32)
    return Extraction(embeddings, kept, faces, skipped, sha256, outcomes)


@dataclass(frozen=True)
class ExtractionRun:
    """One run's extraction with the face models it used (described: the models themselves are freed)."""

    extraction: Extraction
    models: dict[str, Any]  # names, weight hashes, embedding size, crop: recorded in the metadata
    detector_file: Path | None  # the SCRFD .onnx used (None for MTCNN)
    cache: EmbeddingCache  # saved again, pruned, once the model is published
    load_seconds: float  # building the detector and embedder (part of the total)


def extract_with_models(
    records: list[ImageRecord],
    backend: BackendConfig,
    cache_dir: Path,
    *,
    use_cache: bool = True,
    batch_size: int = 32,
    workers: int = 1,
    progress: bool = True,
) -> ExtractionRun:
    """Build the detector and embedder (failing early on missing weights), extract every photo
    through the embedding cache, save the cache, and let the models go before training.

    The face models hold ~700 MiB that training needs (20 328 photos of 1264 students: the
    classifier fit took ~640 MiB more); they are only referenced inside this function.
    """
    started = time.perf_counter()
    detector = build_detector(backend)
    embedder = build_embedder(backend)
    load_seconds = time.perf_counter() - started
    fingerprint = cache_mod.pipeline_fingerprint(detector, embedder)
    if use_cache:
        cache = cache_mod.load_cache(cache_dir, fingerprint, embedder.dim)
    else:
        cache = cache_mod.EmbeddingCache(fingerprint, embedder.dim)
    extraction = extract_embeddings(
        records, detector, embedder, batch_size=batch_size, progress=progress, workers=workers, cache=cache
    )
    log.debug("Embedding cache: %d photos reused, %d embedded", cache.hits, cache.misses)
    save_cache(cache, cache_dir, prune=False)  # keep the extraction work even if a later stage fails
    model_file = getattr(detector, "model_file", None)
    return ExtractionRun(
        extraction,
        describe(detector, embedder),
        Path(model_file).resolve() if model_file else None,
        cache,
        load_seconds,
    )


def save_cache(cache: EmbeddingCache, cache_dir: Path, *, prune: bool) -> None:
    """Write the embedding cache (a stale one, of another fingerprint, is replaced).

    Entries of photos that are no longer in the data folder are dropped only with
    ``prune`` (after a successful publish), so a failed run never costs the previous cache."""
    try:
        cache.save(cache_dir, keep=cache.used if prune else None)
    except OSError as err:
        log.warning("Could not write the embedding cache in %s (%s); the next run re-embeds", cache_dir, err)
