"""Phone-size photos: reduced JPEG decoding gives the same faces and embeddings as full decoding.

The photos are real LFW faces made phone-size (bench/phone_photos.py: 4032×3024, sensor-like
noise, JPEG quality 92; one in three stored sideways with EXIF orientation 6). Detection is
the real SCRFD 2.5g; identity is checked with the offline dlib embedder.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import LFW, SCRFD_WEIGHTS, require_shared_data
from PIL import Image

from backend.recognizer.embedder import DlibEmbedder
from backend.recognizer.faces import (
    CropSettings,
    ScrfdDetector,
    align_crop,
    face_crops,
    photo_face_crops,
)
from backend.recognizer.images import decode_image, decode_reduced
from bench.phone_photos import phone_photo

SCRFD_25G = SCRFD_WEIGHTS / "scrfd_2.5g_bnkps.onnx"


@pytest.fixture(scope="module")
def detector() -> ScrfdDetector:
    require_shared_data(SCRFD_25G)
    return ScrfdDetector(str(SCRFD_25G))


@pytest.fixture(scope="module")
def phone_jpegs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six phone-size photos of six LFW people; the third and sixth are portrait (EXIF 6)."""
    require_shared_data(LFW)
    folder = tmp_path_factory.mktemp("phone")
    people = sorted(p for p in LFW.iterdir() if p.is_dir())[:60:10]
    return [
        phone_photo(sorted(person.glob("*.jpg"))[0], folder / f"{k}.jpg", portrait=(k % 3 == 2), seed=k)
        for k, person in enumerate(people)
    ]


def test_large_jpeg_is_decoded_at_a_quarter_and_upright(phone_jpegs: list[Path]) -> None:
    for path in phone_jpegs:
        full = decode_image(path)
        reduced = decode_reduced(path, min_longest=640)
        assert reduced.scale == 4, path
        height, width = full.shape[:2]
        assert reduced.rgb.shape == (height // 4, width // 4, 3)  # orientation applied to the reduced copy too
        shrunk = cv2.resize(full, (width // 4, height // 4), interpolation=cv2.INTER_AREA)
        assert np.abs(shrunk.astype(int) - reduced.rgb.astype(int)).mean() < 2.0, path


def test_small_or_non_jpeg_photos_decode_at_full_size(tmp_path: Path) -> None:
    require_shared_data(LFW)
    lfw = sorted(LFW.glob("*/*.jpg"))[0]
    small = decode_reduced(lfw, min_longest=640)  # 250×250: nothing to reduce
    assert small.scale == 1 and np.array_equal(small.rgb, decode_image(lfw))
    png = tmp_path / "big.png"
    Image.fromarray(cv2.resize(decode_image(lfw), (2000, 2000))).save(png)
    as_png = decode_reduced(png, min_longest=640)  # PNG has no reduced decoding
    assert as_png.scale == 1 and as_png.rgb.shape == (2000, 2000, 3)
    limited = decode_reduced(phone_photo(lfw, tmp_path / "p.jpg"), min_longest=640, max_scale=2)
    assert limited.scale == 2 and limited.rgb.shape == (1512, 2016, 3)


def test_reduced_path_finds_the_same_faces_and_embeds_them_alike(
    detector: ScrfdDetector, phone_jpegs: list[Path], dlib_embedder: DlibEmbedder
) -> None:
    require_shared_data(LFW)
    embedder = dlib_embedder
    fast_crops, full_crops = [], []
    for path in phone_jpegs:
        full = face_crops(detector, decode_image(path), embedder.crop, max_faces=1)
        fast = photo_face_crops(detector, path, embedder.crop, max_faces=1)
        assert len(fast.faces) == len(full.faces) >= 1, path
        size = full.faces[0].size
        assert abs(fast.faces[0].size - size) < 0.02 * size  # in full-size pixels, as before
        assert np.abs(np.subtract(fast.faces[0].box, full.faces[0].box)).max() < 0.03 * size
        fast_crops.append(fast.crops[0])
        full_crops.append(full.crops[0])
    fast_vec = embedder.embed(np.stack(fast_crops))
    full_vec = embedder.embed(np.stack(full_crops))
    same_photo = np.linalg.norm(fast_vec - full_vec, axis=1)
    other_people = np.linalg.norm(full_vec[:, None] - full_vec[None], axis=2)[~np.eye(len(full_vec), dtype=bool)]
    # dlib: the same person's photos differ by ~0.3-0.4, different people by ~0.75
    assert same_photo.max() < 0.08, same_photo
    assert same_photo.max() < other_people.min() / 5


def test_a_small_face_in_a_large_photo_is_cut_at_full_detail(detector: ScrfdDetector, tmp_path: Path) -> None:
    """At 1/4 the face would be upsampled into its crop: the photo is read again, finer."""
    require_shared_data(LFW)
    face = decode_image(sorted(LFW.glob("*/*.jpg"))[3])
    canvas = np.full((3024, 4032, 3), 120, dtype=np.uint8)
    canvas[1400:1650, 1900:2150] = face  # the LFW face is ~110 px: a student far from the camera
    path = tmp_path / "far.jpg"
    Image.fromarray(canvas).save(path, quality=92)
    settings = CropSettings(size=160, template="facenet")

    full_rgb = decode_image(path)
    full = face_crops(detector, full_rgb, settings, max_faces=1)
    fast = photo_face_crops(detector, path, settings, max_faces=1)
    assert abs(fast.faces[0].size - full.faces[0].size) < 0.05 * full.faces[0].size

    # the same face (landmarks) cut from the full photo, and from the 1/4 copy (no re-read)
    from_full = align_crop(full_rgb, fast.faces[0], settings)
    quarter = decode_reduced(path, min_longest=640)
    assert quarter.scale == 4
    from_quarter = align_crop(quarter.rgb, fast.faces[0].scaled(1 / quarter.scale), settings)

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(int) - b.astype(int)).mean())

    assert diff(fast.crops[0], from_full) < 1.0
    assert diff(from_quarter, from_full) > 3 * max(diff(fast.crops[0], from_full), 0.5)
