"""Small face thumbnails for the HTML report, embedded as data URIs (the page loads nothing).

Only the photos the page shows are read again (findings, skipped photos, one typical photo
per student involved): the face is found with the run's own detector, cut out square with a
margin and shrunk to ``SIZE`` pixels. A photo without a face (a skipped one) shows whole.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from backend.recognizer.errors import ImageError
from backend.recognizer.faces import DECODE_MIN_SIDE, Detector, detect_faces
from backend.recognizer.images import decode_reduced

from .video import frame_at, is_video_name, split_frame_name

log = logging.getLogger(__name__)

#: Thumbnail side in pixels: enough to recognise a face, small enough for hundreds in one page.
SIZE = 96
#: Margin around the detected face box, as a share of its size.
MARGIN = 0.25


def face_thumbnails(paths: Iterable[Path], detector: Detector | None) -> dict[str, str]:
    """``str(path)`` → ``data:image/jpeg;base64,…`` for every photo that can still be read."""
    out: dict[str, str] = {}
    for path in dict.fromkeys(paths):
        try:
            rgb = _pixels(Path(path))
        except ImageError as err:
            log.debug("No thumbnail for %s: %s", path, err)
            continue
        box = None
        if detector is not None:
            try:
                faces, _ = detect_faces(detector, rgb)
                box = faces[0].box if faces else None
            except Exception as err:  # a thumbnail must never stop the report
                log.debug("No face for the thumbnail of %s: %s", path, err)
        out[str(path)] = _data_uri(_square(rgb, box))
    return out


def _pixels(path: Path) -> np.ndarray:
    """A photo decoded reduced (ample for a 96 px thumbnail), or a clip's frame (``clip.mov#t=3.20s``)
    or its first frame. Raises ImageError."""
    frame = split_frame_name(path)
    if frame is not None:
        return frame_at(*frame)
    if is_video_name(path):
        return frame_at(path, 0.0)
    return decode_reduced(path, min_longest=DECODE_MIN_SIDE).rgb


def _square(rgb: np.ndarray, box: tuple[float, float, float, float] | None) -> np.ndarray:
    height, width = rgb.shape[:2]
    if box is None:
        cx, cy, side = width / 2, height / 2, min(width, height)
    else:
        x1, y1, x2, y2 = box
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        side = max(x2 - x1, y2 - y1) * (1 + 2 * MARGIN)
    half = side / 2
    left, top = int(max(0, cx - half)), int(max(0, cy - half))
    right, bottom = int(min(width, cx + half)), int(min(height, cy + half))
    return rgb[top:bottom, left:right]


def _data_uri(rgb: np.ndarray) -> str:
    img = Image.fromarray(rgb)
    img.thumbnail((SIZE, SIZE))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_data_uri(path: Path) -> str:
    """A PNG file (a plot) as a data URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
