"""A short phone clip → the frames worth enrolling: sharp, one student, different from each other.

Decoding uses PyAV: FFmpeg's own decoders (H.264, HEVC from iPhones, VP9, AV1…) in a
wheel, with no system FFmpeg to install. OpenCV's bundled FFmpeg decodes too, but it
cannot be given an open file (only a path), so it could not decode the very bytes that
were hashed, and it does not expose the rotation a phone writes for portrait clips.

A clip is a stream: frames are decoded one after the other and only the few sampled
ones (:data:`CANDIDATES`, spread evenly over the clip, shrunk to
:data:`~backend.recognizer.faces.FRAME_DETECT_MAX_SIDE`) are kept, so memory does not
grow with the clip's length or resolution. Each file is bounded before decoding
(:class:`ClipLimits`: bytes, pixels, seconds) and while decoding (frames, wall time).

Selection (:func:`select_frames`) is measured on the frames themselves: faces are
tracked from one sampled frame to the next by overlap, the track seen in most frames
(then the most central and largest) is the student, frames blurred compared with the
rest of the clip are dropped, and the rest are picked farthest-first by embedding
distance, so near-identical views (:data:`NEAR_IDENTICAL`) are not kept twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from backend.recognizer.embedder import Embedder
from backend.recognizer.errors import ImageError
from backend.recognizer.faces import FRAME_DETECT_MAX_SIDE, Detector, Face, face_crops
from backend.recognizer.images import require_regular

log = logging.getLogger(__name__)

#: Extensions read as clips (compared lower-case). ``.mov`` covers iPhone HEVC clips.
VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".mov", ".m4v", ".avi", ".webm", ".mkv"})
#: Frames enrolled from one clip at most: about as many views as a careful photo session.
FRAMES_PER_CLIP = 15
#: Frames looked at per clip (evenly spread): enough choice for :data:`FRAMES_PER_CLIP`
#: sharp, different ones, at a bounded detection cost.
CANDIDATES = 30
#: Two views closer than this (cosine distance of the L2-normalised embeddings) are one view.
#: Measured on clips of one photo held still: re-encoded copies of one frame lie under 0.002
#: with the dlib and FaceNet embedders, two photos of one person over 0.03.
NEAR_IDENTICAL = 0.002
#: A frame whose face is less sharp than this share of the clip's median is motion blur.
BLUR_SHARE = 0.5
#: Another face counts as a second person in the clip when it is seen in this share of the frames.
OTHER_PERSON_SHARE = 0.3
#: Two boxes on consecutive sampled frames are one face when they overlap this much (IoU).
TRACK_IOU = 0.3


@dataclass(frozen=True)
class ClipLimits:
    """What a clip may be, checked before and while decoding; a clip beyond them is skipped."""

    max_bytes: int = 2 * 1024**3  # a 60 s 4K phone clip is ~400 MB
    max_seconds: float = 120.0
    max_pixels: int = 4096 * 2304  # 4K (UHD and DCI) with room to spare
    max_frames: int = 120 * 120  # frames decoded: 120 s at 120 fps
    max_decode_seconds: float = 300.0  # wall time for one clip: a guard against a decoder that crawls


LIMITS = ClipLimits()


def is_video_name(path: Path) -> bool:
    """True when the file name has one of the clip extensions (case-insensitive)."""
    return path.suffix.lower() in VIDEO_EXTENSIONS


def frame_name(clip: Path, seconds: float) -> Path:
    """How a frame is named wherever a photo's path would be: ``clip.mov#t=3.20s``."""
    return clip.with_name(f"{clip.name}#t={seconds:.2f}s")


def frame_key(clip_sha256: str, seconds: float) -> str:
    """The embedding cache key of one frame: the clip's hash and the frame's time."""
    return f"{clip_sha256}#t={seconds:.2f}"


def split_frame_name(path: Path) -> tuple[Path, float] | None:
    """``clip.mov#t=3.20s`` → ``(clip.mov, 3.2)``; None for a plain file name."""
    name, sep, rest = path.name.rpartition("#t=")
    if not sep or not rest.endswith("s") or not is_video_name(Path(name)):
        return None
    try:
        return path.with_name(name), float(rest[:-1])
    except ValueError:
        return None


class VideoError(ImageError):
    """A clip that cannot be used; the message is the skip reason."""


@dataclass(frozen=True)
class Candidate:
    """One sampled frame, shrunk for detection."""

    seconds: float
    rgb: np.ndarray


@dataclass
class OpenClip:
    """A clip opened once: its hash is of the bytes the decoder reads (same descriptor, checked unchanged)."""

    path: Path
    fd: int
    sha256: str
    size: int
    mtime_ns: int

    def unchanged(self) -> bool:
        info = os.fstat(self.fd)
        return info.st_size == self.size and info.st_mtime_ns == self.mtime_ns

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> OpenClip:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_clip(path: Path, limits: ClipLimits | None = None) -> OpenClip:
    """Open a clip FILE (regular files only, size bounded) and hash it in chunks. Raises VideoError."""
    limits = limits or LIMITS
    try:
        info = os.stat(path)  # a link inside the data folder is followed (dataset checks where it points)
    except OSError as err:
        raise VideoError(f"cannot access the file ({err.strerror or err})") from err
    try:
        require_regular(info.st_mode)
    except ImageError as err:
        raise VideoError(str(err).replace("a photo", "a video")) from err
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise VideoError(f"cannot open the file ({err.strerror or err})") from err
    try:
        opened = os.fstat(fd)
        require_regular(opened.st_mode)
        if opened.st_size == 0:
            raise VideoError("empty file (0 bytes)")
        if opened.st_size > limits.max_bytes:
            raise VideoError(
                f"the clip is too large ({opened.st_size / 1024**2:.0f} MB; at most "
                f"{limits.max_bytes / 1024**2:.0f} MB): film 5-10 seconds instead"
            )
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        os.lseek(fd, 0, os.SEEK_SET)
        return OpenClip(Path(path), fd, digest.hexdigest(), opened.st_size, opened.st_mtime_ns)
    except ImageError as err:
        os.close(fd)
        raise VideoError(str(err)) from err
    except OSError as err:
        os.close(fd)
        raise VideoError(f"cannot read the file ({err.strerror or err})") from err


def clip_digest(path: Path, limits: ClipLimits | None = None) -> str:
    """SHA-256 of a clip's bytes, read in chunks (never the whole clip in memory)."""
    with open_clip(path, limits) as clip:
        return clip.sha256


def sample_frames(
    clip: OpenClip,
    *,
    count: int = CANDIDATES,
    limits: ClipLimits | None = None,
    max_side: int = FRAME_DETECT_MAX_SIDE,
) -> Iterator[Candidate]:
    """Decode ``clip`` as a stream and yield ``count`` frames spread evenly over it, upright, RGB,
    longer side at most ``max_side``. Raises VideoError for a clip that is not a usable video."""
    import av  # imported here: only a run with clips pays for it

    limits = limits or LIMITS

    started = time.monotonic()
    fh = os.fdopen(os.dup(clip.fd), "rb")
    try:
        try:
            container = av.open(fh, mode="r", metadata_errors="ignore")
        except (av.FFmpegError, ValueError, OSError) as err:
            raise VideoError(
                f"cannot be read as a video ({_why(err)}): a clip damaged or cut off while copying, or not a video "
                "at all (another file renamed); copy the clip again from the phone"
            ) from err
        with container:
            if not container.streams.video:
                raise VideoError("the file holds no video track")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            _check_size(width, height, limits)
            duration = _duration(stream, container)
            if duration is not None and duration > limits.max_seconds:
                raise VideoError(
                    f"the clip is too long ({duration:.0f} s; at most {limits.max_seconds:.0f} s): film 5-10 seconds"
                )
            stream.thread_type = "AUTO"
            step = (duration / count) if duration else 0.5
            target = step / 2
            decoded = kept = 0
            try:
                for frame in container.decode(stream):
                    decoded += 1
                    if decoded > limits.max_frames:
                        raise VideoError(f"more than {limits.max_frames} frames: not a short clip")
                    if time.monotonic() - started > limits.max_decode_seconds:
                        raise VideoError(f"decoding took over {limits.max_decode_seconds:.0f} s: skipped")
                    seconds = float(frame.time) if frame.time is not None else decoded / 30.0
                    if seconds > limits.max_seconds:
                        raise VideoError(f"the clip runs past {limits.max_seconds:.0f} s: film 5-10 seconds")
                    if seconds + 1e-6 < target or kept >= count:
                        continue
                    _check_size(frame.width, frame.height, limits)
                    while target <= seconds + 1e-6:
                        target += step
                    kept += 1
                    yield Candidate(seconds, _upright(frame, max_side))
            except av.FFmpegError as err:
                if kept == 0:
                    raise VideoError(f"the video cannot be decoded ({_why(err)}): damaged or cut short?") from err
                log.warning(
                    "%s: decoding stopped at a damaged part (%s); the frames before it are used", clip.path, err
                )
            if kept == 0:
                raise VideoError("no frame could be decoded (an empty or damaged clip)")
    finally:
        fh.close()
    if not clip.unchanged():
        raise VideoError("the file changed while it was read: run again")


def frame_at(path: Path, seconds: float, *, max_side: int = FRAME_DETECT_MAX_SIDE) -> np.ndarray:
    """The frame of clip FILE ``path`` nearest ``seconds`` (a thumbnail of ``clip#t=…s``). Raises VideoError."""
    with open_clip(path) as clip:
        best: Candidate | None = None
        for cand in sample_frames(clip, count=max(1, int(LIMITS.max_seconds * 4))):
            if best is None or abs(cand.seconds - seconds) < abs(best.seconds - seconds):
                best = cand
            if cand.seconds > seconds:
                break
    if best is None:
        raise VideoError("no frame could be decoded")
    return best.rgb


def _why(err: BaseException) -> str:
    return getattr(err, "strerror", None) or type(err).__name__


def _check_size(width: int, height: int, limits: ClipLimits) -> None:
    if width <= 0 or height <= 0:
        raise VideoError("the video has no picture size (damaged?)")
    if width * height > limits.max_pixels:
        raise VideoError(
            f"the picture is too large ({width}×{height}; at most {limits.max_pixels / 1e6:.1f} megapixels): "
            "film in 4K or less"
        )


def _duration(stream: object, container: object) -> float | None:
    """Seconds the clip says it lasts (None when it does not say: then it is sampled every half second)."""
    own = getattr(stream, "duration", None)
    base = getattr(stream, "time_base", None)
    if own and base:
        return float(own * Fraction(base))
    whole = getattr(container, "duration", None)
    return float(whole) / 1_000_000 if whole else None


def _upright(frame: object, max_side: int) -> np.ndarray:
    """The frame as RGB uint8, shrunk to ``max_side`` by the decoder's scaler, turned as the phone meant."""
    width, height = frame.width, frame.height  # type: ignore[attr-defined]
    scale = min(1.0, max_side / max(width, height))
    size = {"width": max(2, round(width * scale)), "height": max(2, round(height * scale))} if scale < 1 else {}
    rgb = frame.to_ndarray(format="rgb24", **size)  # type: ignore[attr-defined]
    turns = round(getattr(frame, "rotation", 0) / 90) % 4  # counter-clockwise quarter turns
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class ChosenFrame:
    """One frame kept for enrollment: its time, the student's face there, and that face's crop."""

    seconds: float
    face: Face
    crop: np.ndarray
    vector: np.ndarray
    num_faces: int
    second_face: float  # area of the next-largest face in the frame / the student's
    sharpness: float  # of the crop, as for a photo


@dataclass
class ClipSelection:
    """What :func:`select_frames` kept of one clip and why the rest was left."""

    frames: list[ChosenFrame]
    sampled: int = 0
    with_face: int = 0
    blurred: int = 0
    near_identical: int = 0
    other_people: int = 0  # tracks of other people seen in enough frames
    notes: list[str] = field(default_factory=list)


@dataclass
class _Track:
    faces: list[tuple[int, Face, int]]  # (candidate index, face, index of the face in that frame)

    @property
    def last(self) -> tuple[int, Face, int]:
        return self.faces[-1]


def _iou(a: Face, b: Face) -> float:
    ax1, ay1, ax2, ay2 = a.box
    bx1, by1, bx2, by2 = b.box
    w, h = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = w * h
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def _tracks(per_frame: list[list[Face]]) -> list[_Track]:
    """Link each frame's faces to the previous frames' by box overlap, greedily, best overlap first."""
    tracks: list[_Track] = []
    open_tracks: list[_Track] = []
    for i, faces in enumerate(per_frame):
        pairs = sorted(
            ((_iou(t.last[1], f), ti, fi) for ti, t in enumerate(open_tracks) for fi, f in enumerate(faces)),
            reverse=True,
        )
        used_t: set[int] = set()
        used_f: set[int] = set()
        for overlap, ti, fi in pairs:
            if overlap < TRACK_IOU or ti in used_t or fi in used_f:
                continue
            open_tracks[ti].faces.append((i, faces[fi], fi))
            used_t.add(ti)
            used_f.add(fi)
        for fi, f in enumerate(faces):
            if fi not in used_f:
                track = _Track([(i, f, fi)])
                tracks.append(track)
                open_tracks.append(track)
        # a track missed in one frame may continue in the next (a blink, a blurred frame)
        open_tracks = [t for t in open_tracks if t.last[0] >= i - 1]
    return tracks


def _centrality(face: Face, shape: tuple[int, ...]) -> float:
    """1 at the centre of the frame, 0 at a corner."""
    height, width = shape[:2]
    x1, y1, x2, y2 = face.box
    dx = ((x1 + x2) / 2 - width / 2) / (width / 2)
    dy = ((y1 + y2) / 2 - height / 2) / (height / 2)
    return float(max(0.0, 1 - np.hypot(dx, dy) / np.sqrt(2)))


def select_frames(
    candidates: Iterator[Candidate] | list[Candidate],
    detector: Detector,
    embedder: Embedder,
    *,
    frames: int = FRAMES_PER_CLIP,
) -> ClipSelection:
    """The clip's best ``frames`` views of its student (see the module docstring for how)."""
    from .extract import sharpness

    times: list[float] = []
    shapes: list[tuple[int, ...]] = []
    per_frame: list[list[Face]] = []
    crops: list[list[np.ndarray]] = []
    for cand in candidates:
        found = face_crops(detector, cand.rgb, embedder.crop, max_side=None)  # as a photo: the face fills the frame
        times.append(cand.seconds)
        shapes.append(cand.rgb.shape)
        per_frame.append(found.faces)
        crops.append(found.crops)
    selection = ClipSelection([], sampled=len(times), with_face=sum(1 for f in per_frame if f))
    tracks = _tracks(per_frame)
    if not tracks:
        return selection

    def rank(track: _Track) -> tuple[int, float]:
        presence = np.mean([_centrality(f, shapes[i]) * f.area for i, f, _ in track.faces])
        return len(track.faces), float(presence)

    tracks.sort(key=rank, reverse=True)
    student = tracks[0]
    others = [t for t in tracks[1:] if len(t.faces) >= max(2, OTHER_PERSON_SHARE * len(times))]
    selection.other_people = len(others)
    if others:
        selection.notes.append(
            f"{len(others) + 1} people are in this clip; kept the face seen in most frames "
            f"({len(student.faces)} of {len(times)}), the most central and largest"
        )
    own = [(i, f, crops[i][fi]) for i, f, fi in student.faces]
    sharp = np.array([sharpness(c) for _, _, c in own])
    keep_sharp = sharp >= BLUR_SHARE * float(np.median(sharp))
    selection.blurred = int((~keep_sharp).sum())
    own = [o for o, ok in zip(own, keep_sharp, strict=True) if ok]
    sharp = sharp[keep_sharp]
    vectors = np.asarray(embedder.embed(np.stack([c for _, _, c in own])), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    quality = sharp * np.array([f.score for _, f, _ in own])
    picked = [int(np.argmax(quality))]
    nearest = 1 - vectors @ vectors[picked[0]]
    while len(picked) < frames:
        best = int(np.argmax(nearest))
        if nearest[best] < NEAR_IDENTICAL:
            break
        picked.append(best)
        nearest = np.minimum(nearest, 1 - vectors @ vectors[best])
    selection.near_identical = len(own) - len(picked) if len(picked) < frames else 0
    for k in sorted(picked, key=lambda k: times[own[k][0]]):
        i, face, crop = own[k]
        faces_here = per_frame[i]
        second = max((g.area for g in faces_here if g is not face), default=0.0) / max(face.area, 1e-9)
        selection.frames.append(
            ChosenFrame(round(times[i], 2), face, crop, vectors[k], len(faces_here), second, float(sharp[k]))
        )
    left = {
        "without the student's face": selection.sampled - len(student.faces),
        "blurred": selection.blurred,
        "near-identical to a frame kept": selection.near_identical,
    }
    if any(left.values()):
        selection.notes.append("left out: " + ", ".join(f"{n} {why}" for why, n in left.items() if n))
    return selection
