"""Decode-level tests for the bad-input corpus: every photo a teacher might upload.

Files are generated here with PIL/numpy into tmp_path, plus real ORL/LFW photos.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import LFW, ORL, require_shared_data
from PIL import Image

from backend.recognizer import faces as faces_mod
from backend.recognizer.errors import ImageError
from backend.recognizer.faces import DETECT_MAX_SIDE, Face, detect_faces
from backend.recognizer.images import MIN_SIDE, decode_image, is_image_name, to_rgb


def _gradient_rgb(width: int = 64, height: int = 48) -> np.ndarray:
    """A deterministic RGB image whose three channels differ (so a channel swap is visible)."""
    yy, xx = np.mgrid[0:height, 0:width]
    r = (xx * 255 // max(width - 1, 1)).astype(np.uint8)
    g = (yy * 255 // max(height - 1, 1)).astype(np.uint8)
    b = np.full((height, width), 40, dtype=np.uint8)
    return np.dstack([r, g, b])


def _first_lfw_photo() -> Path:
    require_shared_data()
    return sorted(sorted(LFW.iterdir())[0].glob("*.jpg"))[0]


# --------------------------------------------------------------------------- unusable files


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        decode_image(path)


def test_truncated_jpeg(tmp_path: Path) -> None:
    good = _first_lfw_photo().read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(good[: len(good) // 3])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(path)


def test_random_bytes_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(path)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not a photo\n" * 20, encoding="utf-8")
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(path)


def test_directory_named_like_an_image(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.mkdir()
    assert is_image_name(path)  # the name alone would make it look like a photo
    with pytest.raises(ImageError, match="folder"):
        decode_image(path)


def test_missing_file_and_broken_symlink(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot access"):
        decode_image(tmp_path / "nope.jpg")
    link = tmp_path / "dangling.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ImageError, match="cannot access"):
        decode_image(link)


def test_symlink_loop(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(ImageError, match="cannot access"):
        decode_image(a)


def test_tiny_image_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    Image.fromarray(_gradient_rgb(20, 20)).save(path)
    with pytest.raises(ImageError, match="too small"):
        decode_image(path)
    # exactly the minimum is accepted
    ok = tmp_path / "min.png"
    Image.fromarray(_gradient_rgb(MIN_SIDE, MIN_SIDE)).save(ok)
    assert decode_image(ok).shape == (MIN_SIDE, MIN_SIDE, 3)


def test_unreadable_permissions(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    Image.fromarray(_gradient_rgb()).save(path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that ignore file permissions (root)")
        with pytest.raises(ImageError, match="permission denied|cannot"):
            decode_image(path)
    finally:
        path.chmod(0o644)


def test_permission_error_becomes_image_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same path as an unreadable file, reachable even as root: opening it raising PermissionError."""
    from backend.recognizer import images

    path = tmp_path / "locked.png"
    Image.fromarray(_gradient_rgb()).save(path)
    real_open = os.open

    def denied(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(images.os, "open", denied)
    with pytest.raises(ImageError, match="permission denied"):
        decode_image(path)


# --------------------------------------------------------------------------- conversions


def test_rgb_png_roundtrip_exact(tmp_path: Path) -> None:
    rgb = _gradient_rgb()
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(path)
    out = decode_image(path)
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_real_photos_decode() -> None:
    require_shared_data()
    lfw = decode_image(_first_lfw_photo())
    assert lfw.shape == (250, 250, 3) and lfw.dtype == np.uint8
    orl = decode_image(ORL / "s1" / "1.pgm")  # 8-bit grayscale PGM
    assert orl.shape == (112, 92, 3)
    np.testing.assert_array_equal(orl[..., 0], orl[..., 1])
    np.testing.assert_array_equal(orl[..., 0], np.asarray(Image.open(ORL / "s1" / "1.pgm")))


def test_grayscale(tmp_path: Path) -> None:
    grey = _gradient_rgb()[..., 0]
    path = tmp_path / "grey.png"
    Image.fromarray(grey, mode="L").save(path)
    out = decode_image(path)
    assert out.shape == grey.shape + (3,)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_rgba_transparent_flattened_to_white(tmp_path: Path) -> None:
    rgba = np.zeros((48, 64, 4), dtype=np.uint8)
    rgba[..., :3] = (0, 0, 0)  # black, fully transparent background
    rgba[10:30, 10:30] = (200, 20, 20, 255)  # opaque red square
    rgba[35:45, 40:60] = (0, 0, 200, 128)  # half-transparent blue
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = decode_image(path)
    assert out.shape == (48, 64, 3)
    assert (out[0, 0] == 255).all(), "transparent background must become white, not black"
    np.testing.assert_array_equal(out[20, 20], [200, 20, 20])
    # 50 % blue over white ≈ (127, 127, 227)
    assert np.abs(out[40, 50].astype(int) - [127, 127, 227]).max() <= 2


def test_palette_image(tmp_path: Path) -> None:
    rgb = _gradient_rgb()
    pal = Image.fromarray(rgb).quantize(colors=16)
    assert pal.mode == "P"
    path = tmp_path / "palette.png"
    pal.save(path)
    out = decode_image(path)
    np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB")))


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (40, 40), 0)
    img.putpalette([0, 0, 0, 10, 200, 10] + [0] * (254 * 3))
    arr = np.zeros((40, 40), dtype=np.uint8)
    arr[:, 20:] = 1
    img = Image.fromarray(arr, mode="P")
    img.putpalette([0, 0, 0, 10, 200, 10] + [0] * (254 * 3))
    path = tmp_path / "pal_t.png"
    img.save(path, transparency=0)
    out = decode_image(path)
    np.testing.assert_array_equal(out[5, 5], [255, 255, 255])
    np.testing.assert_array_equal(out[5, 30], [10, 200, 10])


def test_16bit_png_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")  # really stored as 16-bit
    out = decode_image(path)
    assert out.shape == (48, 64, 3)
    expected = np.round(ramp / 257.0)
    assert np.abs(out[..., 0].astype(int) - expected).max() <= 1
    # clipping would saturate everything above 255 → most pixels 255
    assert (out[..., 0] == 255).mean() < 0.01
    assert out[..., 0].std() > 60


def test_16bit_rgb_png_scaled(tmp_path: Path) -> None:
    import cv2

    bgr16 = np.zeros((40, 48, 3), dtype=np.uint16)
    bgr16[..., 0], bgr16[..., 1], bgr16[..., 2] = 1000, 30000, 65535  # OpenCV writes B, G, R
    path = tmp_path / "deep_rgb.png"
    assert cv2.imwrite(str(path), bgr16)
    out = decode_image(path)
    assert out.shape == (40, 48, 3)
    assert np.abs(out[0, 0].astype(int) - np.round(np.array([65535, 30000, 1000]) / 257)).max() <= 1


def test_cmyk_jpeg(tmp_path: Path) -> None:
    rgb = _gradient_rgb()
    cmyk = Image.fromarray(rgb).convert("CMYK")
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = decode_image(path)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 12  # colours survive, not inverted


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    rgb = _gradient_rgb(80, 40)  # landscape as stored by the sensor
    rgb[:8, :8] = (255, 255, 255)  # marker in the stored top-left corner
    img = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    out = decode_image(path)
    assert out.shape == (80, 40, 3), "EXIF orientation 6 must give the transposed (portrait) shape"
    # rotated 90° clockwise: the stored top-left corner ends up top-right
    assert out[:6, -6:].mean() > 230
    assert out[:6, :6].mean() < 200
    expected = np.asarray(img.transpose(Image.Transpose.ROTATE_270))
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 6


def test_exif_rotated_real_face_photo(tmp_path: Path) -> None:
    """A real LFW face stored sideways with orientation 6 decodes upright (same pixels as the original)."""
    src = _first_lfw_photo()
    upright = decode_image(src)
    sideways = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what the sensor stored
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    sideways.save(path, exif=exif.tobytes(), quality=98)
    out = decode_image(path)
    assert out.shape == upright.shape
    assert np.abs(out.astype(int) - upright.astype(int)).mean() < 6


def test_huge_image_decodes_and_detection_is_downscaled(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((8000, 6000), Image.Resampling.NEAREST))
    path = tmp_path / "huge.jpg"
    Image.fromarray(big).save(path, quality=70)
    del big
    rgb = decode_image(path)
    assert rgb.shape == (6000, 8000, 3)

    class RecordingDetector:
        name = "fake"
        weights_sha256 = None

        def __init__(self) -> None:
            self.shapes: list[tuple[int, ...]] = []

        def detect(self, img: np.ndarray) -> list[Face]:
            self.shapes.append(img.shape)
            h, w = img.shape[:2]
            # one face in the middle tenth, in the coordinates of the image it was given
            lm = np.array([[0.45 * w, 0.45 * h]] * 5)
            return [Face((0.4 * w, 0.4 * h, 0.6 * w, 0.6 * h), 0.99, lm)]

    det = RecordingDetector()
    found, retried = detect_faces(det, rgb)
    assert not retried
    assert len(det.shapes) == 1
    assert max(det.shapes[0][:2]) <= DETECT_MAX_SIDE
    assert det.shapes[0][:2] == (960, 1280)
    (face,) = found
    np.testing.assert_allclose(face.box, (3200, 2400, 4800, 3600), atol=8)
    np.testing.assert_allclose(face.landmarks[0], (3600, 2700), atol=8)
    # crop comes from the full-resolution image
    crop = faces_mod.align_crop(rgb, Face(face.box, face.score, None), faces_mod.CropSettings(size=64))
    assert crop.shape == (64, 64, 3)


def test_image_over_pixel_limit_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.recognizer import images

    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 48 - 1)
    path = tmp_path / "big.png"
    Image.fromarray(_gradient_rgb()).save(path)
    with pytest.raises(ImageError, match="too large"):
        decode_image(path)


def test_other_formats_decode(tmp_path: Path) -> None:
    rgb = _gradient_rgb()
    formats = {".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".PNG": "PNG"}
    for ext, kwargs in ((".bmp", {}), (".webp", {"lossless": True}), (".tif", {}), (".PNG", {})):
        path = tmp_path / f"photo{ext}"
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=formats[ext], **kwargs)
        path.write_bytes(buf.getvalue())
        assert is_image_name(path)
        np.testing.assert_array_equal(decode_image(path), rgb, err_msg=ext)


# --------------------------------------------------------------------------- to_rgb


def test_to_rgb_flips_bgr() -> None:
    rgb = _gradient_rgb()
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    out = to_rgb(bgr)
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(to_rgb(rgb, bgr=False), rgb)
    assert not np.array_equal(to_rgb(rgb), rgb)


def test_to_rgb_grey_bgra_uint16_and_path(tmp_path: Path) -> None:
    rgb = _gradient_rgb()
    grey = rgb[..., 0]
    np.testing.assert_array_equal(to_rgb(grey), np.dstack([grey] * 3))
    bgra = np.dstack([rgb[..., ::-1], np.full(grey.shape, 255, np.uint8)])
    np.testing.assert_array_equal(to_rgb(bgra), rgb)
    np.testing.assert_array_equal(to_rgb(rgb.astype(np.uint16) * 257, bgr=False), rgb)
    with pytest.raises(ImageError):
        to_rgb(rgb.astype(np.float32))
    with pytest.raises(ImageError):
        to_rgb(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match="too small"):  # a 10x10 frame: no face fits, the models would fail
        to_rgb(np.zeros((10, 10, 3), np.uint8))
    path = tmp_path / "p.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(to_rgb(path), rgb)  # paths are decoded as RGB, never flipped
    np.testing.assert_array_equal(to_rgb(str(path)), rgb)


@pytest.mark.parametrize("suffix", [".heic", ".HEIC", ".heif", ".avif", ".gif", ".jfif"])
def test_phone_photo_formats_decode_like_the_original(tmp_path: Path, suffix: str) -> None:
    """What phones and messengers make: HEIC/HEIF (pillow-heif), AVIF, GIF (first frame), JFIF."""
    require_shared_data(LFW)
    source = sorted((LFW / "Abdullah_Gul").glob("*.jpg"))[0]
    original = decode_image(source)
    path = tmp_path / f"photo{suffix}"
    img = Image.fromarray(original)
    if suffix.lower() in (".heic", ".heif"):
        import pillow_heif

        pillow_heif.from_pillow(img).save(path, quality=90)
    elif suffix == ".gif":
        other = Image.fromarray(255 - original)
        img.save(path, save_all=True, append_images=[other], format="GIF")  # two frames: the first counts
    elif suffix == ".jfif":
        img.save(path, format="JPEG", quality=95)
    else:
        img.save(path, quality=90)
    rgb = decode_image(path)
    assert rgb.shape == original.shape and rgb.dtype == np.uint8
    error = np.abs(rgb.astype(int) - original.astype(int)).mean()
    assert error < (30 if suffix == ".gif" else 6), error  # lossy codecs / a 256-colour palette, not another picture


def test_damaged_heic_is_an_image_error(tmp_path: Path) -> None:
    import pillow_heif

    path = tmp_path / "cut.heic"
    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(_gradient_rgb(128, 96))).save(buf, format="HEIF", quality=90)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(path)


def test_large_image_pixels_copied_in_strips_are_the_same(tmp_path: Path) -> None:
    """Above STRIP_PIXELS the array is filled strip by strip: the very same pixels as np.asarray."""
    from backend.recognizer import images

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (2100, 2300, 3), dtype=np.uint8)  # 4.8 megapixels: the strip path
    path = tmp_path / "large.png"
    Image.fromarray(rgb).save(path, compress_level=1)
    assert rgb.shape[0] * rgb.shape[1] > images.STRIP_PIXELS
    np.testing.assert_array_equal(decode_image(path), rgb)


def test_decoding_a_large_png_costs_about_two_copies_of_it(tmp_path: Path) -> None:
    """A 30-megapixel PNG: peak memory of decoding stays near the file's bytes + the decoded image +
    the array (it was five copies: an upright copy, a converted copy and tobytes' double buffer)."""
    import subprocess
    import sys

    from conftest import ROOT

    width, height = 6000, 5000
    tile = np.random.default_rng(0).integers(0, 256, (height // 50, width // 50, 3), dtype=np.uint8)
    path = tmp_path / "big.png"
    Image.fromarray(tile).resize((width, height), Image.Resampling.NEAREST).save(path, compress_level=1)
    script = (
        "import resource, sys\n"
        "from backend.recognizer.images import decode_reduced\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"d = decode_reduced({str(path)!r}, min_longest=640)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, d.rgb.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    grown_mib = float(out.stdout.split()[0])
    image_mib = width * height * 3 / 2**20  # 86 MiB
    file_mib = path.stat().st_size / 2**20
    assert grown_mib < file_mib + 2.6 * image_mib, (
        f"decoding peaked at +{grown_mib:.0f} MiB ({image_mib:.0f} MiB image)"
    )
