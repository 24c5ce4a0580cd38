"""Decode any photo a teacher might upload into one canonical form: RGB uint8, upright.

Every failure becomes an :class:`ImageError` with a reason a person can act on; the
pipeline records it and moves on to the next photo.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

log = logging.getLogger(__name__)

#: Extensions we treat as photos (compared lower-case).
#: HEIC/HEIF (what iPhones save by default) are read with pillow-heif, called explicitly for these
#: files rather than registered as a process-wide Pillow plugin.
HEIF_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif"})
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".webp", ".gif", ".avif", ".pgm", ".ppm", ".tif", ".tiff"}
    | HEIF_EXTENSIONS
)
#: Larger images are refused instead of exhausting memory (≈ 12000 × 8000).
MAX_PIXELS = 100_000_000
#: Smaller images cannot hold a recognisable face.
MIN_SIDE = 32
#: JPEG reduction factors libjpeg decodes directly (DCT scaling: 1/8 of the work at 1/8 of the size).
DRAFT_SCALES = (8, 4, 2)


@dataclass(frozen=True)
class Decoded:
    """A decoded photo, possibly reduced: pixel (x, y) of ``rgb`` is (x·scale, y·scale) of the original."""

    rgb: np.ndarray  # upright RGB uint8
    scale: int  # 1: full size; 2, 4 or 8: a JPEG decoded at that fraction of its size


def is_image_name(path: Path) -> bool:
    """True when the file name has one of the photo extensions (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def decode_image(path: str | Path) -> np.ndarray:
    """Read a photo file as an upright RGB uint8 array (H×W×3), at full size.

    EXIF orientation is applied (phone photos), grey / palette / 16-bit / CMYK images
    are converted, and transparent backgrounds are flattened onto white. Raises
    :class:`ImageError` with a human-readable reason for anything unusable.
    """
    return decode_reduced(path, min_longest=0, max_scale=1).rgb


def decode_reduced(path: str | Path, *, min_longest: int, max_scale: int = 8) -> Decoded:
    """Read a photo, decoding a JPEG at 1/2, 1/4 or 1/8 of its size when its longer side
    stays at least ``min_longest`` pixels (and the reduction at most ``max_scale``).

    A 12-megapixel phone photo costs ~8x less to decode at 1/4 (libjpeg's DCT scaling also
    smooths, like an area resize). Other formats, and JPEGs too small to reduce, are decoded
    at full size (``scale`` 1). Same conversions and errors as :func:`decode_image`.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise ImageError("is a folder, not a photo")
        size = path.stat().st_size
    except OSError as err:  # broken symlink, loop, permissions on the folder
        raise ImageError(f"cannot access the file ({err.strerror or err})") from err
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        # PIL warns above its own limit (89 Mpx) and refuses above twice that; our limit is MAX_PIXELS,
        # checked from the header before any pixel is decoded. The warning is silenced once, at the entry
        # points (retrain_model.py, test_retrained_model.py): warnings.catch_warnings() here would change
        # the process-wide filters from several decoding threads at once, which is not thread-safe.
        with _open(path) as img:  # a GIF or a multi-image HEIF gives its first picture
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise _too_large(width, height)
            if min(width, height) < MIN_SIDE:
                raise _too_small(width, height)
            scale = _draft(img, min_longest, max_scale)
            img.load()
            return Decoded(pil_to_rgb(img), scale)
    except ImageError:
        raise
    except UnidentifiedImageError as err:
        raise ImageError("not a readable image (unknown or corrupt format)") from err
    except PermissionError as err:
        raise ImageError("cannot read the file (permission denied)") from err
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        found = re.search(r"\((\d+) pixels\)", str(err))  # PIL: "Image size (N pixels) exceeds limit ..."
        megapixels = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "far too many pixels"
        limit = MAX_PIXELS // 1_000_000
        raise ImageError(f"image too large ({megapixels}); resize it below {limit} megapixels") from err
    except (OSError, SyntaxError, ValueError) as err:  # truncated / corrupt data
        raise ImageError(f"corrupt or truncated image ({str(err).strip()})") from err


def _open(path: Path) -> Image.Image:
    """The photo as a lazily loaded PIL image (pixels are decoded by ``load``)."""
    if path.suffix.lower() not in HEIF_EXTENSIONS:
        return Image.open(path)
    import pillow_heif  # only for HEIC/HEIF files

    heif = pillow_heif.open_heif(path, convert_hdr_to_8bit=True)
    width, height = heif.size
    if width * height > MAX_PIXELS:
        raise _too_large(width, height)
    return heif.to_pillow()


def _draft(img: Image.Image, min_longest: int, max_scale: int) -> int:
    """Ask libjpeg for the largest reduction that leaves ``min_longest`` pixels; returns it (1: none)."""
    if img.format != "JPEG":
        return 1
    width, height = img.size
    for scale in DRAFT_SCALES:
        if scale <= max_scale and max(width, height) >= min_longest * scale and min(width, height) >= MIN_SIDE * scale:
            if img.draft(img.mode, (width // scale, height // scale)) is None:
                return 1  # a JPEG libjpeg cannot reduce (several tiles): full size
            return scale
    return 1


def _too_small(width: int, height: int) -> ImageError:
    return ImageError(f"image too small ({width}×{height} px; need at least {MIN_SIDE} px a side)")


def _too_large(width: int, height: int) -> ImageError:
    return ImageError(f"image too large ({width}×{height} px); resize it below {MAX_PIXELS // 1_000_000} megapixels")


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image of any mode to upright RGB uint8 (its size was checked from the header)."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        arr8 = np.clip(arr * (255.0 / top), 0, 255).round().astype(np.uint8)
        rgb = np.repeat(arr8[..., None], 3, axis=2)
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        span = max(float(arr.max(initial=0) - arr.min(initial=0)), 1e-9)
        arr8 = ((arr - arr.min()) * (255.0 / span)).round().astype(np.uint8)
        rgb = np.repeat(arr8[..., None], 3, axis=2)
    else:
        has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
        if has_alpha:
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb)


def to_rgb(image: np.ndarray | str | Path, *, bgr: bool = True) -> np.ndarray:
    """Accept what a caller has (a path, or an OpenCV BGR / grey array) and return RGB uint8.

    OpenCV frames are BGR; pass ``bgr=False`` for arrays that are already RGB.
    """
    if isinstance(image, (str, Path)):
        return decode_image(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"expected an H×W×3 image array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype == np.uint16:
            arr = (arr // 257).astype(np.uint8)
        else:
            raise ImageError(f"expected a uint8 image array, got {arr.dtype}")
    arr = arr[..., :3]
    if bgr:
        arr = arr[..., ::-1]
    return np.ascontiguousarray(arr)
