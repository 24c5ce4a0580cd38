"""Find faces and cut them out: the ONE preprocessing path for training and recognition.

``detect_faces`` → ``largest_face`` → ``align_crop`` are pure functions of the image and
the detector. The pipeline (training) and the loader (recognition) both call
:func:`face_crops`, so a photo is cropped identically on both sides.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from .errors import WeightsNotFoundError
from .images import decode_reduced, read_photo

log = logging.getLogger(__name__)

#: Five-point reference layouts (left eye, right eye, nose tip, left and right mouth
#: corner) as fractions of the crop's width and height. Each embedder was trained on
#: crops of one geometry, and its template reproduces that geometry while also removing
#: head roll. Measured on ORL with the dlib embedder (median L2 distance between
#: different people; larger separates better): "arcface" 0.38, "dlib" 0.53 — the same as
#: dlib's own ``get_face_chip`` (0.53). How each was derived: docs/ALIGNMENT.md.
TEMPLATES: dict[str, np.ndarray] = {
    # insightface / ArcFace 112×112 reference points, divided by 112
    "arcface": np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
    )
    / 112.0,
    # where MTCNN's points fall in facenet-pytorch's box crop (margin 14 at 160 px): the
    # crops FaceNet vggface2 expects; median over 100 LFW photos, mirrored to be symmetric
    "facenet": np.array([[0.2853, 0.4002], [0.7147, 0.4002], [0.5000, 0.5834], [0.3200, 0.7388], [0.6800, 0.7388]]),
    # where MTCNN's points fall in dlib's get_face_chip(size=150, padding=0.25);
    # median over the 400 ORL photos, mirrored to be symmetric
    "dlib": np.array([[0.3119, 0.3200], [0.6881, 0.3200], [0.5000, 0.5235], [0.3369, 0.7038], [0.6631, 0.7038]]),
}
#: Detection runs on a copy whose longer side is at most this, or at most the detector's own
#: largest input side (SCRFD: 640) when it has one; crops use the original. Shrinking a camera
#: frame straight to the detector's input in one area resize (instead of to 1280 px, then
#: channel-flipped at that size and shrunk again inside insightface) saves two full-size copies.
DETECT_MAX_SIDE = 1280
#: A camera frame (an array given to :func:`face_crops`) larger than the detector's input is
#: also detected at up to this longer side, for its small faces, when the detector takes any
#: input size (SCRFD 2.5G does; the fixed 640×640 scrfd_500m does not). A classroom camera's
#: 1920×1080 frame shrunk to 640 leaves a 32 px face 11 px wide, below what SCRFD finds
#: reliably; at 1280 it keeps 21 px. Enrollment photos and photo paths are detected once, at
#: the detector's own input (one face each, large). Measured: bench/bench_classroom.py.
FRAME_DETECT_MAX_SIDE = 1280
#: What that finer pass adds: faces whose shorter side would be below this many pixels at the
#: detector's own input (SCRFD finds faces reliably from ~14 px there: bench/README.md). Larger
#: faces come from the first pass, which finds them all; a close-up can even be too large for
#: SCRFD's anchors at the finer input.
SMALL_FACE_AT_INPUT = 20
#: A photo file is decoded reduced (JPEG DCT scaling) while its longer side stays at least this:
#: SCRFD's largest input side, so detection sees the same pixels. A 12-megapixel phone photo is
#: decoded at 1/4 (1008×756); a face too small there for the crop is read again at the size it needs.
DECODE_MIN_SIDE = 640
#: SCRFD input: the photo's own size, its longer side brought into [DETECT_MIN_SIDE,
#: input_size] and rounded up to a multiple of 32 (the detector's largest stride). A fixed
#: 640×640 input upscales a 250×250 enrollment photo 2.6× (6.5× the pixels) and a
#: 92×112 one 5.7×, until the face is too large for SCRFD's anchors (ORL: all 400
#: photos needed the padded retry). Measured (bench/README.md): same faces found on 950
#: ORL/LFW photos, 5-fold accuracy unchanged (ORL 100 %, LFW 60 people 99.0 %),
#: verification AUC 0.9932 → 0.9963 on LFW, detection 67 → 11 ms per LFW photo.
DETECT_MIN_SIDE = 224
#: A photo with no face is retried once with this much border added on every side
#: (pre-cropped enrollment photos fill the frame and detectors need some context).
RETRY_PAD_FRACTION = 0.35


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel coordinates of the image it was found in."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray | None  # 5×2 (eyes, nose, mouth corners) or None

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    @property
    def size(self) -> float:
        """Shorter side of the box in pixels (how much detail the face has)."""
        x1, y1, x2, y2 = self.box
        return max(0.0, min(x2 - x1, y2 - y1))

    def scaled(self, factor: float, shift: tuple[float, float] = (0.0, 0.0)) -> Face:
        """This face in another image's coordinates: ``p * factor + shift``."""
        dx, dy = shift
        x1, y1, x2, y2 = self.box
        lm = None if self.landmarks is None else self.landmarks * factor + np.array([dx, dy])
        return Face(
            (x1 * factor + dx, y1 * factor + dy, x2 * factor + dx, y2 * factor + dy),
            self.score,
            lm,
        )


class Detector(Protocol):
    """What the pipeline needs from a face detector."""

    @property
    def name(self) -> str: ...

    @property
    def weights_sha256(self) -> str | None:
        """SHA-256 of the weight file (None: weights bundled with a library)."""
        ...

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 image."""
        ...


@dataclass(frozen=True)
class CropSettings:
    """How a face becomes the embedder's input; recorded in the model metadata."""

    size: int = 160
    template: str = "arcface"

    @property
    def method(self) -> str:
        return f"similarity-5pt-{self.template}-template"

    def as_dict(self) -> dict[str, object]:
        return {
            "crop_size": self.size,
            "crop_method": self.method,
            "crop_template": self.template,
            # by value too: editing a template's numbers must not go unnoticed by old models
            "crop_template_points": [[round(float(v), 4) for v in pt] for pt in TEMPLATES[self.template]],
        }


def reference_landmarks(size: int, template: str = "arcface") -> np.ndarray:
    """A 5-point template (see :data:`TEMPLATES`) in pixels of a ``size``×``size`` crop."""
    return TEMPLATES[template] * float(size)


def detect_faces(
    detector: Detector, rgb: np.ndarray, *, retry_padded: bool = True, max_side: int | None = None
) -> tuple[list[Face], bool]:
    """Detect faces, largest first, in original-image coordinates.

    Large photos are downscaled for detection only (bounded time and memory); a photo
    with no face is retried once on a padded copy. ``max_side``: detect at up to this
    longer side when the detector takes any input size (camera frames with small faces,
    :data:`FRAME_DETECT_MAX_SIDE`); None: the detector's own largest input. The padded
    retry runs at the detector's own input only: it is for a face that fills the image, which
    the finer pass (small faces only) never adds; an empty camera frame costs three detector
    runs (its own input, ``max_side``, the padded copy). Returns ``(faces, padded_retry_used)``.
    """
    faces = _detect_downscaled(detector, rgb, max_side)
    used_retry = False
    if not faces and retry_padded:
        height, width = rgb.shape[:2]
        pad = int(round(RETRY_PAD_FRACTION * max(height, width)))
        padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        faces = [f.scaled(1.0, (-pad, -pad)) for f in _detect_downscaled(detector, padded)]
        used_retry = bool(faces)
    faces.sort(key=lambda f: f.area, reverse=True)
    return faces, used_retry


def _detect_downscaled(detector: Detector, rgb: np.ndarray, max_side: int | None = None) -> list[Face]:
    """Faces at the detector's own largest input; for a larger ``max_side`` (adaptive detectors, a
    frame larger than their input), plus the small faces that a second pass at ``max_side`` finds."""
    height, width = rgb.shape[:2]
    longest = max(height, width)
    own = int(getattr(detector, "max_input_side", None) or DETECT_MAX_SIDE)
    faces = _detect_at(detector.detect, rgb, min(DETECT_MAX_SIDE, own))
    if max_side is None or max_side <= own or longest <= own or not getattr(detector, "adaptive_input", False):
        return faces
    # the finer pass only adds faces too small for the first one: a large face can be too large
    # for SCRFD's anchors at the finer input (a close-up in a 12 MP picture), and is found already
    small = SMALL_FACE_AT_INPUT * longest / min(DETECT_MAX_SIDE, own)
    fine = _detect_at(lambda im: detector.detect_at(im, max_side), rgb, max_side)  # type: ignore[attr-defined]
    return faces + [f for f in fine if f.size < small and all(_iou(f, g) < 0.3 for g in faces)]


def _detect_at(detect: Callable[[np.ndarray], Sequence[Face]], rgb: np.ndarray, limit: int) -> list[Face]:
    """``detect`` on ``rgb`` shrunk to a longer side of at most ``limit``, faces in ``rgb``'s coordinates."""
    height, width = rgb.shape[:2]
    longest = max(height, width)
    factor = 1.0
    if longest > limit:
        factor = limit / longest
        rgb = cv2.resize(rgb, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA)
    found = detect(rgb)
    return list(found) if factor == 1.0 else [f.scaled(1.0 / factor) for f in found]


def _iou(a: Face, b: Face) -> float:
    ax1, ay1, ax2, ay2 = a.box
    bx1, by1, bx2, by2 = b.box
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def align_crop(rgb: np.ndarray, face: Face, settings: CropSettings) -> np.ndarray:
    """Cut one face out of the ORIGINAL image as a ``size``×``size`` RGB uint8 crop.

    With landmarks: a similarity transform (rotation, scale, shift; no shear) maps the
    five points onto the reference template, so eyes land in the same place in every
    crop. Without landmarks: the box, squared and slightly enlarged, is resized.
    """
    return _warp(rgb, crop_transform(face, settings), settings.size)


def _warp(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def crop_transform(face: Face, settings: CropSettings) -> np.ndarray:
    """The 2×3 similarity transform from image pixels to crop pixels (see :func:`align_crop`)."""
    size = settings.size
    if face.landmarks is not None:
        src = np.asarray(face.landmarks, dtype=np.float64).reshape(5, 2)
        matrix, _ = cv2.estimateAffinePartial2D(src, reference_landmarks(size, settings.template), method=cv2.LMEDS)
        if matrix is not None:
            return np.asarray(matrix, dtype=np.float64)
    x1, y1, x2, y2 = face.box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(max(x2 - x1, y2 - y1) * 0.6, 1e-6)
    scale = size / (2 * half)
    return np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]])


def _magnification(matrix: np.ndarray) -> float:
    """Crop pixels per image pixel of a crop transform (> 1: the crop would be upsampled)."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


@dataclass(frozen=True)
class FaceCrops:
    """Every face found in one image, largest first, with its aligned crop."""

    faces: list[Face]
    crops: list[np.ndarray]
    padded_retry: bool = False


def face_crops(
    detector: Detector,
    rgb: np.ndarray,
    settings: CropSettings,
    *,
    max_faces: int | None = None,
    max_side: int | None = FRAME_DETECT_MAX_SIDE,
) -> FaceCrops:
    """Detect → sort by size → align/crop, for an image array (a camera frame).

    A frame larger than the detector's input is detected at up to ``max_side``
    (:data:`FRAME_DETECT_MAX_SIDE`), so that the small faces at the back of a classroom are
    found; None detects at the detector's own input, as for a photo (an enrollment clip, where
    the face fills the frame). ``max_faces``: keep only the largest ones.
    """
    faces, retried = detect_faces(detector, rgb, max_side=max_side)
    kept = faces if max_faces is None else faces[:max_faces]
    return FaceCrops(faces, [align_crop(rgb, f, settings) for f in kept], retried)


def photo_face_crops(
    detector: Detector, path: str | Path | bytes, settings: CropSettings, *, max_faces: int | None = None
) -> FaceCrops:
    """:func:`face_crops` of a photo FILE, decoding only the pixels detection and the crops need.

    The photo is decoded reduced (:data:`DECODE_MIN_SIDE`) for detection; a face is cut from
    that copy unless the crop would be upsampled there, in which case the photo is decoded
    again at the reduction that gives the crop its full detail (at most once per photo).
    Faces are returned in the coordinates of the full-size upright photo, as for
    :func:`face_crops` of the fully decoded photo (face sizes mean the same either way).
    The file is read once (``path`` may also be its bytes, already read): both decodes use the
    same bytes, so a file replaced meanwhile cannot mix two photos.
    Raises :class:`~backend.recognizer.errors.ImageError` for an unusable file.
    """
    data = path if isinstance(path, bytes) else read_photo(path)
    photo = decode_reduced(data, min_longest=DECODE_MIN_SIDE)
    faces, retried = detect_faces(detector, photo.rgb)
    kept = faces if max_faces is None else faces[:max_faces]
    matrices = [crop_transform(f, settings) for f in kept]
    source = photo
    if matrices and photo.scale > 1:
        needed = max(_magnification(m) for m in matrices)
        finer = max((s for s in (8, 4, 2, 1) if s <= photo.scale and s * needed <= photo.scale), default=1)
        if finer < photo.scale:
            source = decode_reduced(data, min_longest=0, max_scale=finer)
            factor = photo.scale / source.scale  # finer pixels per reduced pixel
            matrices = [np.hstack([m[:, :2] / factor, m[:, 2:]]) for m in matrices]
    crops = [_warp(source.rgb, m, settings.size) for m in matrices]
    return FaceCrops([f.scaled(float(photo.scale)) for f in faces] if photo.scale > 1 else faces, crops, retried)


# --------------------------------------------------------------------------- detectors


def detection_input_size(
    height: int, width: int, max_side: int = 640, min_side: int = DETECT_MIN_SIDE
) -> tuple[int, int]:
    """(width, height) of the detector input for a ``height``×``width`` image (see DETECT_MIN_SIDE)."""
    longest = max(height, width, 1)
    scale = min(max(1.0, min_side / longest), max_side / longest)
    return (
        min(max_side, max(32, math.ceil(width * scale / 32) * 32)),
        min(max_side, max(32, math.ceil(height * scale / 32) * 32)),
    )


class ScrfdDetector:
    """InsightFace SCRFD (``det_10g.onnx`` of the ``buffalo_l`` pack, or any SCRFD .onnx).

    Goes through insightface's own ``model_zoo.get_model`` router and ``SCRFD.detect``
    code path. insightface expects BGR input; callers give RGB and we flip here.
    """

    def __init__(
        self,
        onnx_path: str,
        *,
        weights_sha256: str | None = None,
        providers: list[str] | None = None,
        det_thresh: float = 0.5,
        input_size: tuple[int, int] = (640, 640),
        adaptive_input: bool = True,
        sessions: int = 1,
        threads: int | None = None,
    ) -> None:
        self.name = "scrfd"
        self.model_file = onnx_path
        self.weights_sha256 = weights_sha256
        self.input_size = input_size
        self.sessions = max(1, int(sessions))
        # SCRFD caches anchors per size and keeps per-call state: each model instance is used
        # by one thread at a time, and ``sessions`` instances let several threads detect at
        # once, each with few ONNX Runtime threads. Measured on a 16-core machine (LFW, with
        # FaceNet on its GPU): 1 session × 16 ORT threads 167 photos/s (they mostly wait on
        # each other on a 256×256 input); 8 sessions × 1 thread 354; 8 × 2 212; 8 worker
        # processes 191 (spawn + pickling).
        if threads is None:  # 0: ORT's default (all cores); else half the cores shared out
            threads = 0 if self.sessions == 1 else max(1, (os.cpu_count() or 1) // (2 * self.sessions))
        models = [self._load(onnx_path, providers, det_thresh, threads) for _ in range(self.sessions)]
        # a model exported with a fixed input (scrfd_500m: 640×640) only runs at that size
        static = getattr(models[0], "static_input_size", None)
        self.adaptive_input = adaptive_input and static is None
        if static is not None:
            self.input_size = (int(static[0]), int(static[1]))
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for model in models:
            self._free.put(model)

    def _load(self, onnx_path: str, providers: list[str] | None, det_thresh: float, threads: int) -> Any:
        import onnxruntime
        from insightface.model_zoo import get_model

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            # one ONNX Runtime session for every input size: insightface's default builds a new
            # fixed-shape session per size, +618 MiB for 30 photo sizes (measured), same speed
            model = get_model(
                onnx_path,
                providers=providers or ["CPUExecutionProvider"],
                sess_options=options,
                static_shape_sessions=False,
            )
        except Exception as err:  # onnxruntime InvalidProtobuf / InvalidArgument: corrupt or truncated file
            raise WeightsNotFoundError(
                f"{onnx_path} is not a readable SCRFD face detector model ({err}); replace the file"
            ) from err
        if model is None or not hasattr(model, "detect"):
            raise WeightsNotFoundError(
                f"{onnx_path} is not an SCRFD face detector model (insightface could not load it)"
            )
        # insightface resets the session to CPU when ctx_id < 0: only do that for a CPU run
        on_gpu = any(p.startswith("CUDA") for p in (providers or []))
        model.prepare(ctx_id=0 if on_gpu else -1, input_size=self.input_size, det_thresh=det_thresh)
        return model

    @property
    def max_input_side(self) -> int:
        """The longest side SCRFD is run at: larger images are shrunk to it before detection."""
        return int(max(self.input_size))

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return self.detect_at(rgb, max(self.input_size))

    def detect_at(self, rgb: np.ndarray, max_side: int) -> list[Face]:
        """:meth:`detect` with the input's longer side up to ``max_side`` (adaptive input only)."""
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        if self.adaptive_input:
            height, width = bgr.shape[:2]
            size = detection_input_size(height, width, max_side=max_side)
        else:
            size = self.input_size
        model = self._free.get()
        try:
            boxes, kpss = model.detect(bgr, input_size=size)
        finally:
            self._free.put(model)
        faces = []
        for i, row in enumerate(boxes):
            landmarks = None if kpss is None else np.asarray(kpss[i], dtype=np.float64).reshape(5, 2)
            faces.append(Face(tuple(float(v) for v in row[:4]), float(row[4]), landmarks))  # type: ignore[arg-type]
        return faces


class MtcnnDetector:
    """facenet-pytorch MTCNN: weights ship inside the package, so it works offline."""

    def __init__(self, device: str = "cpu", min_score: float = 0.9) -> None:
        from facenet_pytorch import MTCNN

        self.name = "mtcnn"
        self.weights_sha256 = None
        self.min_score = min_score
        self._model = MTCNN(keep_all=True, device=device)
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        with self._lock:
            boxes, probs, points = self._model.detect(rgb, landmarks=True)
        if boxes is None:
            return []
        faces = []
        for box, prob, pts in zip(boxes, probs, points):
            score = float(prob)
            if score >= self.min_score:
                faces.append(Face(tuple(float(v) for v in box), score, np.asarray(pts, dtype=np.float64).reshape(5, 2)))  # type: ignore[arg-type]
        return faces
