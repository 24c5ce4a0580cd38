"""Decode any photo a teacher might upload into one canonical form: RGB uint8, upright.

Every failure becomes an :class:`ImageError` with a reason a person can act on; the
pipeline records it and moves on to the next photo.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import warnings
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
#: Larger photo files are refused instead of exhausting memory (≈ 12000 × 8000).
MAX_PIXELS = 100_000_000
#: Default limit for uploaded images and frames (:func:`decode_upload`, ``identify``): a 48-megapixel
#: phone photo passes; a decoded RGB copy costs at most ~150 MB. A "decompression bomb" (a small
#: file that declares a huge size) is refused from its header, before any pixel is decoded.
UPLOAD_MAX_MEGAPIXELS = 50.0
#: Smaller images cannot hold a recognisable face.
MIN_SIDE = 32
#: The EXIF tag that says how to turn the stored pixels upright (phone photos).
ORIENTATION = 0x0112
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


def decode_reduced(source: str | Path | bytes, *, min_longest: int, max_scale: int = 8) -> Decoded:
    """Read a photo (a file, or its bytes already in memory), decoding a JPEG at 1/2, 1/4 or 1/8
    of its size when its longer side stays at least ``min_longest`` pixels (and the reduction at
    most ``max_scale``).

    A 12-megapixel phone photo costs ~8x less to decode at 1/4 (libjpeg's DCT scaling also
    smooths, like an area resize). Other formats, and JPEGs too small to reduce, are decoded
    at full size (``scale`` 1). An image declaring more than :data:`MAX_PIXELS` is refused from its
    header. Pass bytes to decode exactly the bytes that were hashed (the embedding cache).
    Same conversions and errors as :func:`decode_image`.
    """
    data = source if isinstance(source, bytes) else read_photo(source)
    heif = isinstance(source, (str, Path)) and Path(source).suffix.lower() in HEIF_EXTENSIONS
    return _decode_bytes(data, min_longest=min_longest, max_scale=max_scale, max_pixels=MAX_PIXELS, heif=heif)


def read_photo(path: str | Path) -> bytes:
    """The bytes of a photo FILE, read once. Only a regular file is opened for reading.

    A named pipe (FIFO), socket or device named like a photo would block ``open`` or never
    end: it is refused from ``lstat`` (and checked again on the opened descriptor, which is
    opened non-blocking, so a file swapped for a pipe in between cannot hang either).
    """
    path = Path(path)
    try:
        info = os.stat(path)  # a link inside the data folder is followed (dataset checks where it points)
    except OSError as err:  # broken symlink, loop, permissions on the folder
        raise ImageError(f"cannot access the file ({err.strerror or err})") from err
    require_regular(info.st_mode)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except PermissionError as err:
        raise ImageError("cannot read the file (permission denied)") from err
    except OSError as err:
        raise ImageError(f"cannot open the file ({err.strerror or err})") from err
    try:
        require_regular(os.fstat(fd).st_mode)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read()
    except OSError as err:
        raise ImageError(f"cannot read the file ({err.strerror or err})") from err
    finally:
        os.close(fd)
    if not data:
        raise ImageError("empty file (0 bytes)")
    return data


def silence_decompression_warning() -> None:
    """Hide PIL's DecompressionBombWarning (above 89 Mpx) for the whole process: our own pixel limit
    is checked from the header first, so it is noise. Call it once, at an entry point: the
    decoding threads filter nothing (warnings.catch_warnings() races on the process-wide filters)."""
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def require_regular(mode: int) -> None:
    """Raise :class:`ImageError` saying what a file is when it is not a regular file (a named pipe,
    a socket, a device, a folder): only regular files are read, as ``open`` on a pipe blocks."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise ImageError("is a folder, not a photo")
    kind = (
        "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    raise ImageError(f"is {kind}, not a photo file; only regular files are read (remove it)")


def decode_upload(data: bytes, *, max_megapixels: float = UPLOAD_MAX_MEGAPIXELS, bgr: bool = True) -> np.ndarray:
    """Decode an uploaded image (the request body's bytes) for ``FaceRecognizer.identify``.

    Returns an upright (EXIF orientation applied) BGR uint8 array, what ``identify`` takes by
    default; ``bgr=False``: RGB, as decoded, for ``identify(..., bgr=False)`` (then no channel
    flip and copy either way: 36 MB each for a 12-megapixel photo). Raises :class:`ImageError`
    (a ``ValueError``: answer 400) for an empty body, bytes that are not an image, and an image
    over ``max_megapixels``, read from the header before any pixel is decoded: a small file that
    declares 30000×30000 pixels costs nothing. Unlike ``cv2.imdecode``, which has no pixel limit
    and raises on an empty buffer.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"expected the upload's bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageError("empty upload (0 bytes): send the photo's bytes")
    rgb = _decode_bytes(
        bytes(data), min_longest=0, max_scale=1, max_pixels=_pixel_limit(max_megapixels), heif=False
    ).rgb
    return np.ascontiguousarray(rgb[..., ::-1]) if bgr else rgb


def _pixel_limit(max_megapixels: float) -> int:
    if not max_megapixels > 0:
        raise ValueError(f"max_megapixels must be positive, got {max_megapixels}")
    return int(max_megapixels * 1_000_000)


#: ISO media brands (in the 'ftyp' box) of HEIC/HEIF photos, which Pillow cannot open by itself.
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def _looks_heif(data: bytes) -> bool:
    """HEIC/HEIF (an iPhone photo) recognised from its bytes, for data without a file name."""
    if data[4:8] != b"ftyp":
        return False
    box = data[8 : min(len(data), int.from_bytes(data[:4], "big"), 64)]
    return any(box[k : k + 4] in HEIF_BRANDS for k in range(0, len(box) - 3, 4))


def _decode_bytes(data: bytes, *, min_longest: int, max_scale: int, max_pixels: int, heif: bool) -> Decoded:
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        # PIL warns above its own limit (89 Mpx) and refuses above twice that; our limit is max_pixels,
        # checked from the header before any pixel is decoded (the warning: silence_decompression_warning).
        with _open(data, heif, max_pixels) as img:  # a GIF or a multi-image HEIF gives its first picture
            width, height = img.size
            if width * height > max_pixels:
                raise _too_large(width, height, max_pixels)
            if min(width, height) < MIN_SIDE:
                raise _too_small(width, height)
            scale = _draft(img, min_longest, max_scale)
            img.load()
            return Decoded(pil_to_rgb(img), scale)
    except ImageError:
        raise
    except UnidentifiedImageError as err:
        raise ImageError("not a readable image (unknown or corrupt format)") from err
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        found = re.search(r"\((\d+) pixels\)", str(err))  # PIL: "Image size (N pixels) exceeds limit ..."
        megapixels = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "far too many pixels"
        raise ImageError(f"image too large ({megapixels}); resize it below {_megapixels(max_pixels)}") from err
    except (OSError, SyntaxError, ValueError) as err:  # truncated / corrupt data
        raise ImageError(f"corrupt or truncated image ({str(err).strip()})") from err


def _open(data: bytes, heif: bool, max_pixels: int) -> Image.Image:
    """The photo as a lazily loaded PIL image (pixels are decoded by ``load``).

    ``heif``: the file name says HEIC/HEIF. Bytes without a name that Pillow cannot read are
    tried as HEIF when their header says so (an upload, or a photo already read into memory)."""
    if not heif:
        try:
            return Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            if not _looks_heif(data):
                raise
    import pillow_heif  # only for HEIC/HEIF files

    found = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
    width, height = found.size
    if width * height > max_pixels:
        raise _too_large(width, height, max_pixels)
    return found.to_pillow()


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


def _too_large(width: int, height: int, max_pixels: int) -> ImageError:
    return ImageError(f"image too large ({width}×{height} px); resize it below {_megapixels(max_pixels)}")


def _megapixels(max_pixels: int) -> str:
    return f"{max_pixels / 1_000_000:g} megapixels"


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image of any mode to upright RGB uint8 (its size was checked from the header)."""
    if img.getexif().get(ORIENTATION, 1) != 1:  # exif_transpose copies even an upright image
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
        rgb = _pixels(img if img.mode == "RGB" else img.convert("RGB"))  # no converted copy when already RGB
    return np.ascontiguousarray(rgb)


#: Images larger than this are copied into numpy in strips of rows (see :func:`_pixels`).
STRIP_PIXELS = 4_000_000


def _pixels(img: Image.Image) -> np.ndarray:
    """The RGB image's pixels as an H×W×3 uint8 array.

    ``np.asarray(img)`` goes through ``img.tobytes()``, which holds the pixels twice while it
    joins them: for a 99-megapixel PNG that is 600 MB on top of the decoded image. Copying a
    large image in strips of rows costs one strip instead (same pixels).
    """
    width, height = img.size
    if width * height <= STRIP_PIXELS:
        return np.asarray(img, dtype=np.uint8)
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, STRIP_PIXELS // 8 // max(width, 1))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        out[top:bottom] = np.asarray(img.crop((0, top, width, bottom)), dtype=np.uint8)
    return out


def to_rgb(
    image: np.ndarray | str | Path, *, bgr: bool = True, max_megapixels: float = UPLOAD_MAX_MEGAPIXELS
) -> np.ndarray:
    """Accept what a caller has (a path, or an OpenCV BGR / grey array) and return RGB uint8.

    OpenCV frames are BGR; pass ``bgr=False`` for arrays that are already RGB. An array of
    more than ``max_megapixels`` is refused (:class:`ImageError`) before any copy is made, and so
    is one with a side under :data:`MIN_SIDE` pixels (the face models would fail on it).
    """
    if isinstance(image, (str, Path)):
        return decode_image(image)
    arr = np.asarray(image)
    if arr.ndim >= 2 and arr.shape[0] * arr.shape[1] > _pixel_limit(max_megapixels):
        raise _too_large(arr.shape[1], arr.shape[0], _pixel_limit(max_megapixels))
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"expected an H×W×3 image array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype == np.uint16:
            arr = (arr // 257).astype(np.uint8)
        else:
            raise ImageError(f"expected a uint8 image array, got {arr.dtype}")
    if min(arr.shape[0], arr.shape[1]) < MIN_SIDE:  # as for a decoded photo: no face fits, and the models need room
        raise _too_small(arr.shape[1], arr.shape[0])
    arr = arr[..., :3]
    if bgr:
        arr = arr[..., ::-1]
    return np.ascontiguousarray(arr)
