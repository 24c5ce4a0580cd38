"""Phone-size test photos made from LFW: 4032×3024 JPEGs like a 12-megapixel phone camera's.

There are no real phone photos in ../shared/data, so each one is an LFW photo (250×250)
cropped to 4:3 around the face, upscaled ×16 (bicubic), with sensor-like noise (Gaussian,
slightly correlated between neighbouring pixels, as after demosaicing) and saved at JPEG
quality 92 with 4:2:0 chroma (what phones write). Without the noise a smooth upscale
decodes faster than a real photo (fewer non-zero DCT coefficients); both kinds can be made.
``portrait=True`` makes a 3024×4032 upright photo stored the way a phone held upright
stores it: 4032×3024 sensor pixels plus EXIF orientation 6, so the orientation has to be
applied for the face to be upright.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import cv2
import numpy as np
from PIL import Image

PHONE_SIZE = (4032, 3024)  # width, height: 12.2 megapixels
ONE_MEGAPIXEL = (1152, 864)  # the same 4:3 photo at 1.0 megapixel


def phone_photo(
    source: Path,
    dest: Path,
    *,
    size: tuple[int, int] = PHONE_SIZE,
    noise: float = 3.0,
    quality: int = 92,
    portrait: bool = False,
    seed: int = 0,
) -> Path:
    """Write ``source`` (an LFW photo) as a phone-size JPEG at ``dest``; returns ``dest``."""
    rgb = np.asarray(Image.open(source).convert("RGB"))
    if portrait:
        size = (size[1], size[0])
    height, width = rgb.shape[:2]
    # the photo's aspect ratio around the centre (LFW faces are centred)
    if size[0] >= size[1]:
        band = round(width * size[1] / size[0])
        crop = rgb[(height - band) // 2 :][:band]
    else:
        band = round(height * size[0] / size[1])
        crop = rgb[:, (width - band) // 2 :][:, :band]
    big = cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    if noise > 0:
        rng = np.random.default_rng(seed)
        grain = rng.standard_normal(big.shape, dtype=np.float32) * noise * 1.6
        grain = cv2.GaussianBlur(grain, (3, 3), 0.6)  # demosaicing spreads noise over neighbours
        big += grain
    out = Image.fromarray(np.clip(big, 0, 255).round().astype(np.uint8))
    exif = Image.Exif()
    if portrait:  # sensor rows run sideways; EXIF says "rotate 90° clockwise to view"
        out = out.transpose(Image.Transpose.ROTATE_90)
        exif[0x0112] = 6
    dest.parent.mkdir(parents=True, exist_ok=True)
    out.save(dest, "JPEG", quality=quality, subsampling="4:2:0", exif=exif.tobytes())
    return dest


def phone_tree(
    lfw: Path,
    root: Path,
    *,
    people: int,
    per_person: int,
    size: tuple[int, int] = PHONE_SIZE,
    noise: float = 3.0,
    offset: int = 0,
) -> list[Path]:
    """A student tree ``root/STU###_Name/*.jpg`` of phone-size copies of LFW photos (every
    third one portrait); photos already written are reused."""
    written = []
    folders = sorted(p for p in lfw.iterdir() if p.is_dir())[offset : offset + people]
    for k, person in enumerate(folders):
        for j, src in enumerate(sorted(person.glob("*.jpg"))[:per_person]):
            dest = root / f"STU{k + 1:03d}_{person.name}" / f"{src.stem}.jpg"
            if not dest.exists():
                phone_photo(src, dest, size=size, noise=noise, portrait=(j % 3 == 2), seed=k * 100 + j)
            written.append(dest)
    return written


def full_decoding(detector: Any, path: Path, settings: Any, *, max_faces: int | None = None) -> Any:
    """The previous path for a photo file: decode every pixel, then detect and crop."""
    from backend.recognizer.faces import face_crops
    from backend.recognizer.images import decode_image

    return face_crops(detector, decode_image(path), settings, max_faces=max_faces)


def with_full_decoding() -> Any:
    """Within this block the pipeline's extraction decodes photos at full size (the baseline)."""
    from retraining import extract

    return mock.patch.object(extract, "photo_face_crops", full_decoding)
