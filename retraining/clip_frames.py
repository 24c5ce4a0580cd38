"""A clip in a student's folder → its chosen frames, through the embedding cache.

Each chosen frame is cached like a photo (key: the clip's hash and the frame's time) and the
clip's selection is cached under the clip's hash and :func:`selection_id`, so an unchanged
clip is neither decoded nor embedded again; a change to how frames are chosen selects anew.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.recognizer.embedder import Embedder
from backend.recognizer.faces import Detector
from backend.recognizer.hashing import sha256_bytes

from . import video
from .cache import CachedClip, CachedFace, EmbeddingCache
from .dataset import ImageRecord

log = logging.getLogger(__name__)

FaceInfoTuple = tuple[int, float, float, bool, float, float]


def selection_id() -> str:
    """What decides which frames a clip gives, beyond the face models (those are the cache's fingerprint)."""
    import av

    settings = {
        "frames": video.FRAMES_PER_CLIP,
        "candidates": video.CANDIDATES,
        "near_identical": video.NEAR_IDENTICAL,
        "blur_share": video.BLUR_SHARE,
        "other_person_share": video.OTHER_PERSON_SHARE,
        "track_iou": video.TRACK_IOU,
        "limits": vars(video.LIMITS),
        "av": av.__version__,
    }
    return sha256_bytes(json.dumps(settings, sort_keys=True).encode("utf-8"))[:16]


@dataclass(frozen=True)
class ClipFrame:
    """One frame a clip gave: a record named ``clip#t=…s``, its cache key, embedding and face info."""

    record: ImageRecord
    key: str
    vector: np.ndarray
    info: FaceInfoTuple


@dataclass(frozen=True)
class ClipOutcome:
    """What one clip gave, for the report: frames used out of frames looked at, and notes."""

    path: Path
    student_id: str
    frames: int
    sampled: int
    notes: tuple[str, ...] = ()
    reused: bool = False  # taken from the embedding cache, not decoded


@dataclass
class ClipResult:
    frames: list[ClipFrame] = field(default_factory=list)
    outcome: ClipOutcome | None = None
    reason: str | None = None  # why the clip is skipped
    key: str | None = None  # the clip's hash (None: unreadable)


def clip_frames(
    record: ImageRecord, detector: Detector, embedder: Embedder, cache: EmbeddingCache | None
) -> ClipResult:
    """The frames of one clip (never raises: an unusable clip comes back with a reason)."""
    try:
        opened = video.open_clip(record.path)
    except video.VideoError as err:
        return ClipResult(reason=str(err))
    with opened:
        key = f"{opened.sha256}:{selection_id()}"
        if cache is not None:
            hit = cache.get_clip(key)
            if hit is not None:
                return _from_cache(record, opened.sha256, key, hit, cache)
        try:
            selection = video.select_frames(video.sample_frames(opened), detector, embedder)
        except video.VideoError as err:
            if cache is not None:
                cache.put_clip(key, CachedClip((), (), str(err)))
            return ClipResult(reason=str(err), key=opened.sha256)
        except Exception as err:  # a decoder or detector bug must not end the run; report it
            log.debug("Unexpected error on %s", record.path, exc_info=True)
            return ClipResult(reason=f"unexpected error: {type(err).__name__}: {err}")
    if not selection.frames:
        reason = (
            f"no face found in the {selection.sampled} frames looked at"
            if not selection.with_face
            else "no sharp frame of one face found"
        )
        if cache is not None:
            cache.put_clip(key, CachedClip((), tuple(selection.notes), reason, selection.sampled))
        return ClipResult(reason=reason, key=opened.sha256)
    frames: list[ClipFrame] = []
    for chosen in selection.frames:
        fkey = video.frame_key(opened.sha256, chosen.seconds)
        info: FaceInfoTuple = (
            chosen.num_faces,
            float(chosen.face.size),
            float(chosen.face.score),
            False,
            chosen.sharpness,
            float(chosen.second_face),
        )
        frames.append(ClipFrame(_frame_record(record, chosen.seconds), fkey, chosen.vector, info))
        if cache is not None:
            cache.put(fkey, CachedFace(chosen.vector.copy(), info))
    times = tuple(round(f.seconds, 2) for f in selection.frames)
    if cache is not None:
        cache.put_clip(key, CachedClip(times, tuple(selection.notes), None, selection.sampled))
    outcome = ClipOutcome(record.path, record.student_id, len(frames), selection.sampled, tuple(selection.notes))
    return ClipResult(frames, outcome, key=opened.sha256)


def _frame_record(clip: ImageRecord, seconds: float) -> ImageRecord:
    return ImageRecord(
        video.frame_name(clip.path, seconds), clip.student_id, clip.student_name, clip=clip.path, seconds=seconds
    )


def _from_cache(record: ImageRecord, sha256: str, key: str, hit: CachedClip, cache: EmbeddingCache) -> ClipResult:
    if hit.reason is not None:
        return ClipResult(reason=hit.reason, key=sha256)
    frames = []
    for seconds, fkey in zip(hit.seconds, cache.frame_keys(key, hit), strict=True):
        face = cache.get(fkey)
        if face is None or face.vector is None or face.info is None:  # get_clip checked they are all there
            raise RuntimeError(f"cached frame {fkey} has no embedding")
        frames.append(ClipFrame(_frame_record(record, seconds), fkey, face.vector, face.info))
    outcome = ClipOutcome(record.path, record.student_id, len(frames), hit.sampled, hit.notes, reused=True)
    return ClipResult(frames, outcome, key=sha256)
