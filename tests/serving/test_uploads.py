"""Uploaded bytes and frames the backend is handed: decoded safely, or refused with ImageError.

A web backend decodes whatever a client sends. ``decode_upload`` reads the size from the
header before decoding a pixel, so an empty body, junk or a decompression bomb is an
:class:`ImageError` (answer 400), never a crash or gigabytes of memory.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import LFW, require_shared_data
from PIL import Image

from backend.recognizer import ImageError, decode_upload
from backend.recognizer.images import decode_image, read_photo, to_rgb


def png_bomb(side: int = 30000, rows: int = 4) -> bytes:
    """A greyscale PNG whose header declares ``side``×``side`` pixels; only ``rows`` rows are stored."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (side + 1) * rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg(rgb: np.ndarray, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95, **kwargs)
    return buf.getvalue()


def test_real_photo_upload_is_what_identify_takes() -> None:
    """A real LFW photo: the same pixels as decoding the file, in OpenCV's BGR order."""
    require_shared_data(LFW)
    path = sorted(LFW.glob("*/*.jpg"))[0]
    frame = decode_upload(path.read_bytes())
    rgb = decode_image(path)
    assert frame.dtype == np.uint8 and frame.shape == rgb.shape
    assert np.array_equal(frame[..., ::-1], rgb)
    assert np.array_equal(to_rgb(frame), rgb)  # identify's default (bgr=True) turns it back exactly
    as_decoded = decode_upload(path.read_bytes(), bgr=False)  # for identify(..., bgr=False): no flip, no copy
    assert np.array_equal(as_decoded, rgb) and np.shares_memory(to_rgb(as_decoded, bgr=False), as_decoded)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty upload"),
        (b"hello, this is not an image" * 10, "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image|corrupt"),
        (_jpeg(np.full((60, 60, 3), 128, np.uint8))[:200], "corrupt or truncated"),
    ],
    ids=["empty", "text", "png_signature_only", "truncated_jpeg"],
)
def test_bad_uploads_are_image_errors(body: bytes, reason: str) -> None:
    with pytest.raises(ImageError, match=reason):
        decode_upload(body)


def test_decompression_bomb_refused_from_the_header_fast_and_small(tmp_path: Path) -> None:
    """30000×30000 declared: refused before decoding (cv2.imdecode would allocate 2.7 GB).

    Measured in a fresh process, as in test_images.py: ru_maxrss is a high-water mark, and in the
    pytest process earlier tests have raised it far beyond what one decode adds, so growth there
    could never show."""
    import subprocess
    import sys

    from conftest import ROOT

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb())
    small = tmp_path / "small.jpg"
    small.write_bytes(_jpeg(np.full((60, 60, 3), 128, np.uint8)))
    script = (
        "import resource, sys, time\n"
        "from pathlib import Path\n"
        "from backend.recognizer import ImageError, decode_upload\n"
        f"decode_upload(Path({str(small)!r}).read_bytes())  # warm up: the decoders' lazy imports\n"
        f"bomb = Path({str(bomb)!r}).read_bytes()\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "started = time.perf_counter()\n"
        "try:\n"
        "    decode_upload(bomb)\n"
        "except ImageError as err:\n"
        "    message = str(err)\n"
        "else:\n"
        "    sys.exit('the bomb was decoded, not refused')\n"
        "seconds = time.perf_counter() - started\n"
        "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024\n"
        "print(grown, seconds)\n"
        "print(message)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr or out.stdout
    figures, message = out.stdout.splitlines()[:2]
    grown_mib, seconds = (float(x) for x in figures.split())
    assert "too large (900 megapixels" in message, message
    assert seconds < 1.0, f"refusing took {seconds:.2f} s"
    assert grown_mib < 100, f"peak memory grew by {grown_mib:.0f} MiB"


def test_megapixel_limit_is_settable() -> None:
    photo = _jpeg(np.zeros((1200, 1000, 3), np.uint8))  # 1.2 megapixels
    assert decode_upload(photo).shape == (1200, 1000, 3)
    with pytest.raises(ImageError, match="below 1 megapixels"):
        decode_upload(photo, max_megapixels=1)
    with pytest.raises(ValueError, match="positive"):
        decode_upload(photo, max_megapixels=0)


def test_exif_orientation_applied_to_uploads() -> None:
    rgb = np.zeros((40, 80, 3), np.uint8)
    rgb[:8, :8] = (255, 255, 255)  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    frame = decode_upload(_jpeg(rgb, exif=exif.tobytes()))
    assert frame.shape == (80, 40, 3)
    assert frame[:8, -8:].mean() > 200 and frame[:8, :8].mean() < 50  # the marker is now top-right


def test_arrays_over_the_limit_are_refused_before_any_copy() -> None:
    """identify(array) goes through to_rgb: a 100-megapixel frame is refused (no 300 MB copy is made)."""
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (10000, 10000, 3))  # no memory behind it
    with pytest.raises(ImageError, match="too large"):
        to_rgb(huge)
    assert to_rgb(huge[:100, :100]).shape == (100, 100, 3)
    assert to_rgb(huge[:2000, :2000], max_megapixels=5).shape == (2000, 2000, 3)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    """open() on a FIFO with no writer blocks forever; reading a photo must refuse it at once."""
    fifo = tmp_path / "y.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException | bytes] = []
    worker = threading.Thread(target=lambda: outcome.append(_catch(read_photo, fifo)), daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # unblock the thread so the test run can end, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a named pipe blocked")
    assert isinstance(outcome[0], ImageError) and "named pipe" in str(outcome[0])


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="UNIX sockets are POSIX")
def test_a_socket_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.png"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(ImageError, match="a socket"):
            decode_image(path)


def _catch(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except BaseException as err:  # handed back to the test
        return err


def test_an_iphone_heic_upload_is_decoded_from_its_bytes() -> None:
    """HEIC has no Pillow reader of its own: bytes without a file name are recognised from the header."""
    import pillow_heif

    from backend.recognizer.images import decode_reduced

    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[:, :64] = (200, 40, 10)
    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(rgb)).save(buf, format="HEIF", quality=95)
    data = buf.getvalue()
    frame = decode_upload(data)
    assert frame.shape == (96, 128, 3)
    assert np.abs(frame[..., ::-1].astype(int) - rgb.astype(int)).mean() < 8  # BGR of the same picture
    assert np.array_equal(decode_reduced(data, min_longest=0).rgb, frame[..., ::-1])  # training's path, from bytes
