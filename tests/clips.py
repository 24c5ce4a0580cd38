"""Build short test clips from real face photos (nothing downloaded, no video committed).

A clip shows each photo in turn, centred on a grey frame, as a phone clip of a student turning
their head would show each view; ``other`` adds a second, smaller person beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image


def _place(canvas: np.ndarray, photo: Path, height: int, centre_x: int) -> None:
    img = Image.open(photo).convert("RGB")
    img = img.resize((round(img.width * height / img.height), height))
    pixels = np.asarray(img)
    top = (canvas.shape[0] - pixels.shape[0]) // 2
    left = max(0, min(canvas.shape[1] - pixels.shape[1], centre_x - pixels.shape[1] // 2))
    canvas[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels


def write_clip(
    path: Path,
    photos: Sequence[Path],
    *,
    codec: str = "libx264",
    size: tuple[int, int] = (640, 480),
    fps: int = 30,
    seconds_per_photo: float = 0.4,
    face_share: float = 0.6,
    other: Sequence[Path] = (),
    rotation: int = 0,
) -> Path:
    """Encode ``photos`` as a clip at ``path``; ``rotation``: the display rotation a phone writes."""
    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"preset": "ultrafast"} if codec == "libx264" else {"x265-params": "log-level=error"}
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        per_photo = max(1, round(fps * seconds_per_photo))
        for k, photo in enumerate(photos):
            canvas = np.full((height, width, 3), 90, np.uint8)
            if other:
                _place(canvas, other[k % len(other)], int(height * face_share * 0.6), width // 7)
            _place(canvas, photo, int(height * face_share), width // 2)
            frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            for _ in range(per_photo):
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
