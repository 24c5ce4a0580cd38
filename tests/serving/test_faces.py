"""Detection and alignment: the ONE preprocessing path, with the real SCRFD weights and MTCNN.

SCRFD goes through insightface's own ``model_zoo`` / ``SCRFD.detect`` code (the default
detector path), loaded from the local files in ../shared/data/weights.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import LFW, ORL, SCRFD_WEIGHTS, require_shared_data

from backend.recognizer.backends import BackendConfig, build_detector
from backend.recognizer.faces import (
    DETECT_MAX_SIDE,
    FRAME_DETECT_MAX_SIDE,
    RETRY_PAD_FRACTION,
    CropSettings,
    Face,
    MtcnnDetector,
    ScrfdDetector,
    align_crop,
    detect_faces,
    detection_input_size,
    face_crops,
    reference_landmarks,
)
from backend.recognizer.images import decode_image

SCRFD_25G = SCRFD_WEIGHTS / "scrfd_2.5g_bnkps.onnx"
SCRFD_500M = SCRFD_WEIGHTS / "scrfd_500m_bnkps.onnx"


def _require_scrfd() -> None:
    require_shared_data(SCRFD_25G)
    require_shared_data(SCRFD_500M)


@pytest.fixture(scope="module")
def scrfd_25g() -> ScrfdDetector:
    _require_scrfd()
    det = build_detector(
        BackendConfig(detector="scrfd", detector_model=str(SCRFD_25G), device="cpu", allow_download=False)
    )
    assert isinstance(det, ScrfdDetector)
    return det


@pytest.fixture(scope="module")
def scrfd_500m() -> ScrfdDetector:
    _require_scrfd()
    return ScrfdDetector(str(SCRFD_500M))


@pytest.fixture(scope="module")
def mtcnn(mtcnn_detector: MtcnnDetector) -> MtcnnDetector:
    return mtcnn_detector


def lfw_sample(n: int, offset: int = 0) -> list[Path]:
    """``n`` LFW photos spread across people (one per person, every k-th person)."""
    require_shared_data()
    people = sorted(p for p in LFW.iterdir() if p.is_dir())
    step = max(1, len(people) // n)
    out = []
    for person in people[offset::step][:n]:
        photos = sorted(person.glob("*.jpg"))
        out.append(photos[(offset + len(out)) % len(photos)])
    assert len(out) == n and len({p.parent for p in out}) == n
    return out


def _lm_inside_box(face: Face, tol: float = 2.0) -> bool:
    x1, y1, x2, y2 = face.box
    lm = face.landmarks
    inside_x = (lm[:, 0] >= x1 - tol) & (lm[:, 0] <= x2 + tol)
    inside_y = (lm[:, 1] >= y1 - tol) & (lm[:, 1] <= y2 + tol)
    return bool((inside_x & inside_y).all())


def _check_real_faces(detector, photos: list[Path]) -> None:
    found = 0
    for path in photos:
        rgb = decode_image(path)
        faces, _ = detect_faces(detector, rgb)
        if not faces:
            continue
        found += 1
        face = faces[0]
        assert face.landmarks is not None and face.landmarks.shape == (5, 2), path
        assert _lm_inside_box(face), (path, face)
        # left eye left of right eye, eyes above the mouth corners: a face, the right way up
        lm = face.landmarks
        assert lm[0, 0] < lm[1, 0] and lm[:2, 1].max() < lm[3:, 1].min(), (path, lm)
        # LFW deep-funneled: the labelled person's face is near the middle of the 250×250 frame
        centres = [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces]
        assert any(90 < cx < 160 and 90 < cy < 160 for cx, cy in centres), (path, centres)
        assert 0.0 < face.score <= 1.0
    assert found >= 0.95 * len(photos), f"faces found on only {found}/{len(photos)} LFW photos"


# --------------------------------------------------------------------------- real SCRFD


def test_scrfd_500m_finds_faces_on_lfw(scrfd_500m: ScrfdDetector) -> None:
    _check_real_faces(scrfd_500m, lfw_sample(40))


def test_scrfd_25g_through_build_detector_on_lfw(scrfd_25g: ScrfdDetector) -> None:
    assert scrfd_25g.name == "scrfd"
    assert Path(scrfd_25g.model_file) == SCRFD_25G
    assert scrfd_25g.weights_sha256 and len(scrfd_25g.weights_sha256) == 64
    _check_real_faces(scrfd_25g, lfw_sample(20, offset=2))


def test_scrfd_group_photo_gives_several_faces_largest_first(scrfd_25g: ScrfdDetector) -> None:
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    if not path.is_file():
        pytest.skip("insightface sample t1.jpg not installed")
    rgb = decode_image(path)
    faces, retried = detect_faces(scrfd_25g, rgb)
    assert not retried
    assert len(faces) >= 5
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert all(f.landmarks is not None and _lm_inside_box(f) for f in faces)
    result = face_crops(scrfd_25g, rgb, CropSettings(size=112), max_faces=1)
    assert len(result.faces) == len(faces) and len(result.crops) == 1
    assert result.crops[0].shape == (112, 112, 3)


def test_several_faces_largest_first(scrfd_25g: ScrfdDetector) -> None:
    paths = lfw_sample(2, offset=5)
    big = decode_image(paths[0])
    small = cv2.resize(decode_image(paths[1]), (150, 150), interpolation=cv2.INTER_AREA)
    canvas = np.full((300, 560, 3), 128, dtype=np.uint8)
    canvas[25:275, 300:550] = big  # the larger face on the right, so order is not positional
    canvas[75:225, 40:190] = small
    faces, _ = detect_faces(scrfd_25g, canvas)
    assert len(faces) >= 2
    assert faces[0].area > faces[1].area
    cx0 = (faces[0].box[0] + faces[0].box[2]) / 2
    cx1 = (faces[1].box[0] + faces[1].box[2]) / 2
    assert 300 < cx0 < 550 and 40 < cx1 < 190
    kept = face_crops(scrfd_25g, canvas, CropSettings(size=160), max_faces=1)
    assert len(kept.crops) == 1
    # the kept crop is the big face: it matches the crop of that face found on its own photo
    alone, _ = detect_faces(scrfd_25g, big)
    ref = align_crop(big, alone[0], CropSettings(size=160))
    other = align_crop(canvas, faces[1], CropSettings(size=160))
    d_big = np.abs(kept.crops[0].astype(int) - ref).mean()
    d_other = np.abs(other.astype(int) - ref).mean()
    assert d_big < 15 and d_big < d_other / 2, (d_big, d_other)


def test_align_crop_rotation_invariant_with_landmarks(scrfd_25g: ScrfdDetector) -> None:
    settings = CropSettings()
    assert settings.size == 160
    for path in lfw_sample(2, offset=7):
        rgb = decode_image(path)
        canvas = cv2.copyMakeBorder(rgb, 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        h, w = canvas.shape[:2]
        rot = cv2.warpAffine(canvas, cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0), (w, h))
        f0, _ = detect_faces(scrfd_25g, rgb)
        f1, _ = detect_faces(scrfd_25g, rot)
        assert f0 and f1, path
        # the detector sees the tilt: the eye line is rotated by ≈ 20°
        dx, dy = f1[0].landmarks[1] - f1[0].landmarks[0]
        dx0, dy0 = f0[0].landmarks[1] - f0[0].landmarks[0]
        tilt = np.degrees(np.arctan2(dy, dx) - np.arctan2(dy0, dx0))
        assert abs(abs(tilt) - 20) < 6, tilt
        c0 = align_crop(rgb, f0[0], settings)
        c1 = align_crop(rot, f1[0], settings)
        assert c0.shape == c1.shape == (160, 160, 3) and c0.dtype == np.uint8
        aligned = np.abs(c0.astype(int) - c1).mean()
        # without landmarks (box crop) the rotation stays in the crop
        b0 = align_crop(rgb, Face(f0[0].box, 1.0, None), settings)
        b1 = align_crop(rot, Face(f1[0].box, 1.0, None), settings)
        unaligned = np.abs(b0.astype(int) - b1).mean()
        assert aligned < 20 and aligned < unaligned / 2, (path, aligned, unaligned)


def test_adaptive_detection_size_finds_tight_faces_without_retry(scrfd_25g: ScrfdDetector) -> None:
    # small photos are not blown up to 640×640: their longer side goes to [224, 640], /32
    assert detection_input_size(112, 92) == (192, 224)
    assert detection_input_size(250, 250) == (256, 256)
    assert detection_input_size(1080, 1920) == (640, 384)
    assert detection_input_size(4000, 3000) == (480, 640)
    assert scrfd_25g.adaptive_input
    # so the tight pre-cropped ORL faces are found at once (at a fixed 640 they need the retry)
    for person in (1, 2, 3):
        orl = decode_image(ORL / f"s{person}" / "1.pgm")
        faces, retried = detect_faces(scrfd_25g, orl)
        assert faces and not retried


def test_padded_retry_on_tight_crops(scrfd_500m: ScrfdDetector, scrfd_25g: ScrfdDetector) -> None:
    # scrfd_500m has a fixed 640×640 input: a 92×112 ORL face is blown up past its largest
    # anchors, nothing is found, and the padded retry (context around the face) finds it
    assert not scrfd_500m.adaptive_input and scrfd_500m.input_size == (640, 640)
    retries = 0
    for person in (1, 2):
        orl = decode_image(ORL / f"s{person}" / "1.pgm")
        faces, retried = detect_faces(scrfd_500m, orl)
        assert faces, "tight ORL face not found even with the padded retry"
        assert retried == (not scrfd_500m.detect(orl))
        retries += retried
        face = faces[0]
        h, w = orl.shape[:2]
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        # retry boxes are mapped back to the unpadded image: the face is in its middle
        assert 0.25 * w <= cx <= 0.75 * w and 0.25 * h <= cy <= 0.75 * h, face.box
        assert face.landmarks is not None and _lm_inside_box(face)
    assert retries >= 1, "the padded retry path was never exercised on the tight ORL faces"
    crop = face_crops(scrfd_500m, orl, CropSettings(size=160), max_faces=1)
    assert crop.padded_retry == retried and crop.crops[0].shape == (160, 160, 3)

    # an LFW face cropped tightly to its own box
    rgb = decode_image(lfw_sample(1, offset=11)[0])
    f, _ = detect_faces(scrfd_25g, rgb)
    x1, y1, x2, y2 = (int(round(v)) for v in f[0].box)
    tight = np.ascontiguousarray(rgb[y1 + 4 : y2 - 4, x1 + 4 : x2 - 4])
    faces_t, retried_t = detect_faces(scrfd_25g, tight)
    assert faces_t
    assert retried_t == (not scrfd_25g.detect(tight))
    # same eyes as found on the full photo, shifted by the crop offset
    np.testing.assert_allclose(faces_t[0].landmarks[:2], f[0].landmarks[:2] - [x1 + 4, y1 + 4], atol=6)
    assert detect_faces(scrfd_25g, tight, retry_padded=False)[1] is False


# --------------------------------------------------------------------------- MTCNN


def test_mtcnn_on_orl(mtcnn: MtcnnDetector) -> None:
    require_shared_data()
    settings = CropSettings(size=160)
    for k in range(1, 11):
        for i in (1, 6):
            rgb = decode_image(ORL / f"s{k}" / f"{i}.pgm")
            result = face_crops(mtcnn, rgb, settings, max_faces=1)
            assert result.faces, f"s{k}/{i}.pgm"
            face = result.faces[0]
            assert face.score >= 0.9
            assert face.landmarks.shape == (5, 2) and _lm_inside_box(face, tol=4)
            assert face.size > 40  # ORL faces fill most of the 92×112 frame
            assert result.crops[0].shape == (160, 160, 3) and result.crops[0].dtype == np.uint8


def test_mtcnn_no_face_gives_nothing(mtcnn: MtcnnDetector) -> None:
    flat = np.full((120, 120, 3), 90, dtype=np.uint8)
    faces, retried = detect_faces(mtcnn, flat)
    assert faces == [] and retried is False


# --------------------------------------------------------------------------- pure geometry


def test_reference_landmarks_and_crop_settings() -> None:
    ref = reference_landmarks(112)
    assert ref.shape == (5, 2)
    np.testing.assert_allclose(reference_landmarks(224), ref * 2)
    np.testing.assert_allclose(reference_landmarks(160), ref * 160 / 112)
    assert CropSettings().size == 160
    assert CropSettings(size=150).as_dict()["crop_size"] == 150


def _dot_centroid(img: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    dist = np.abs(img.astype(int) - np.array(colour)).sum(axis=2)
    ys, xs = np.nonzero(dist < 60)
    assert len(xs) > 0, f"dot {colour} not in the crop"
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("size", [112, 160])
def test_align_crop_puts_landmarks_on_template(size: int) -> None:
    """Landmarks drawn as coloured dots in a rotated, scaled, shifted 'face' land on the template."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    angle, scale, shift = np.radians(25), 2.3, np.array([310.0, 140.0])
    rotm = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = reference_landmarks(112) @ rotm.T + shift  # where the features are in the photo
    img = np.full((600, 700, 3), 40, dtype=np.uint8)
    for (x, y), colour in zip(src, colours):
        cv2.circle(img, (int(round(x)), int(round(y))), 6, colour, -1)
    face = Face((src[:, 0].min() - 40, src[:, 1].min() - 60, src[:, 0].max() + 40, src[:, 1].max() + 30), 0.99, src)
    crop = align_crop(img, face, CropSettings(size=size))
    assert crop.shape == (size, size, 3)
    target = reference_landmarks(size)
    for colour, expected in zip(colours, target):
        np.testing.assert_allclose(_dot_centroid(crop, colour), expected, atol=1.5)


def test_align_crop_without_landmarks_uses_square_box() -> None:
    img = np.zeros((200, 300, 3), dtype=np.uint8)
    img[50:150, 100:200] = 255  # white square = the "face" box
    crop = align_crop(img, Face((100, 50, 200, 150), 0.9, None), CropSettings(size=120))
    assert crop.shape == (120, 120, 3)
    # box enlarged by 1.2: the white square covers the central 1/1.2 of the crop
    white = (crop[..., 0] > 127).mean()
    assert abs(white - (1 / 1.2) ** 2) < 0.03
    assert crop[60, 60].min() == 255 and crop[2, 2].max() == 0


class _FakeDetector:
    """Returns fixed faces; can require a border (like a real detector on tight crops)."""

    name = "fake"
    weights_sha256 = None

    def __init__(self, faces: list[Face], needs_border_over: tuple[int, int] | None = None) -> None:
        self.faces = faces
        self.needs_border_over = needs_border_over
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, rgb: np.ndarray) -> list[Face]:
        self.shapes.append(rgb.shape)
        if self.needs_border_over is not None and rgb.shape[:2] == self.needs_border_over:
            return []
        return list(self.faces)


def test_detect_faces_sorts_largest_first() -> None:
    small = Face((0, 0, 10, 10), 0.99, None)
    large = Face((50, 50, 90, 100), 0.6, None)
    mid = Face((20, 20, 45, 45), 0.9, None)
    faces, retried = detect_faces(_FakeDetector([small, large, mid]), np.zeros((120, 120, 3), np.uint8))
    assert [f.box for f in faces] == [large.box, mid.box, small.box] and not retried


def test_padded_retry_maps_back_to_original_coordinates() -> None:
    rgb = np.zeros((112, 92, 3), np.uint8)
    pad = int(round(RETRY_PAD_FRACTION * 112))
    lm = np.array([[30.0, 40], [60, 40], [45, 55], [35, 70], [55, 70]]) + pad
    in_padded = Face((10 + pad, 20 + pad, 80 + pad, 100 + pad), 0.8, lm)
    det = _FakeDetector([in_padded], needs_border_over=(112, 92))
    faces, retried = detect_faces(det, rgb)
    assert retried is True
    assert det.shapes == [(112, 92, 3), (112 + 2 * pad, 92 + 2 * pad, 3)]
    assert faces[0].box == (10, 20, 80, 100)
    np.testing.assert_allclose(faces[0].landmarks, lm - pad)
    # without the retry nothing is found
    assert detect_faces(_FakeDetector([in_padded], needs_border_over=(112, 92)), rgb, retry_padded=False) == ([], False)


def test_huge_image_detection_downscaled_boxes_mapped_back() -> None:
    rgb = np.zeros((3000, 4000, 3), np.uint8)
    det = _FakeDetector([Face((100, 200, 300, 400), 0.9, np.full((5, 2), 150.0))])
    faces, _ = detect_faces(det, rgb)
    assert max(det.shapes[0][:2]) == DETECT_MAX_SIDE
    factor = 4000 / DETECT_MAX_SIDE
    np.testing.assert_allclose(faces[0].box, np.array([100, 200, 300, 400]) * factor, rtol=1e-6)
    np.testing.assert_allclose(faces[0].landmarks, 150 * factor)
    # at or under the limit the image is passed through untouched
    det2 = _FakeDetector([])
    detect_faces(det2, np.zeros((DETECT_MAX_SIDE, 700, 3), np.uint8), retry_padded=False)
    assert det2.shapes == [(DETECT_MAX_SIDE, 700, 3)]


def test_camera_frame_is_shrunk_straight_to_the_detector_input(scrfd_25g: ScrfdDetector) -> None:
    """A detector that says how large it runs (SCRFD: 640) gets the frame at that size, in one resize."""
    assert scrfd_25g.max_input_side == 640
    det = _FakeDetector([Face((64, 36, 128, 108), 0.9, np.full((5, 2), 90.0))])
    det.max_input_side = 640  # type: ignore[attr-defined]
    faces, _ = detect_faces(det, np.zeros((1080, 1920, 3), np.uint8))
    assert det.shapes == [(360, 640, 3)]
    np.testing.assert_allclose(faces[0].box, np.array([64, 36, 128, 108]) * 3.0, rtol=1e-6)
    # a real 1080p frame: the same faces as when shrunk to 1280 px first (the previous path)
    import insightface

    group = cv2.imread(str(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"))
    frame = cv2.resize(cv2.cvtColor(group, cv2.COLOR_BGR2RGB), (1920, 1329))[124:1204]
    direct, _ = detect_faces(scrfd_25g, frame)
    via_1280 = [f.scaled(1.5) for f in scrfd_25g.detect(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_AREA))]
    via_1280.sort(key=lambda f: f.area, reverse=True)
    assert len(direct) == len(via_1280) >= 5
    for a, b in zip(direct, via_1280, strict=True):
        assert np.abs(np.subtract(a.box, b.box)).max() < 0.05 * b.size


def test_face_properties() -> None:
    f = Face((10, 20, 50, 80), 0.5, np.array([[1.0, 2.0]] * 5))
    assert f.area == 40 * 60 and f.size == 40
    g = f.scaled(2.0, (1.0, -1.0))
    assert g.box == (21, 39, 101, 159)
    np.testing.assert_allclose(g.landmarks, [[3.0, 3.0]] * 5)
    assert Face((5, 5, 1, 1), 0.1, None).area == 0.0


def test_scrfd_rejects_a_non_detector_file(tmp_path: Path) -> None:
    from backend.recognizer.errors import WeightsNotFoundError

    for name, data in (("det_10g.onnx", b"not an onnx model"), ("empty.onnx", b"")):
        bogus = tmp_path / name
        bogus.write_bytes(data)
        with pytest.raises(WeightsNotFoundError, match=name.replace(".", r"\.")):
            ScrfdDetector(str(bogus))


def test_build_detector_missing_model_file(tmp_path: Path) -> None:
    from backend.recognizer.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="nope.onnx"):
        build_detector(BackendConfig(detector="scrfd", detector_model=str(tmp_path / "nope.onnx"), device="cpu"))
    with pytest.raises(Exception, match="unknown detector"):
        build_detector(BackendConfig(detector="yolo", device="cpu"))


def test_detector_sessions_detect_in_parallel_with_serial_results(scrfd_25g: ScrfdDetector) -> None:
    from concurrent.futures import ThreadPoolExecutor

    pooled = ScrfdDetector(str(SCRFD_25G), sessions=2)
    assert pooled.sessions == 2 and pooled.adaptive_input
    images = [decode_image(p) for p in lfw_sample(12, offset=5)]
    serial = [scrfd_25g.detect(im) for im in images]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(pooled.detect, images))
    for a, b in zip(serial, parallel):
        assert len(a) == len(b) >= 1
        np.testing.assert_allclose(a[0].box, b[0].box, atol=1e-3)
        np.testing.assert_allclose(a[0].landmarks, b[0].landmarks, atol=1e-3)


def _classroom_frame(sizes: list[int]) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    """A 1920×1080 frame with one real LFW face per grid cell, the face boxes ``sizes`` px wide,
    and where each face is (centre x, centre y, size)."""
    photos = lfw_sample(len(sizes), offset=1)
    frame = np.full((1080, 1920, 3), 110, dtype=np.uint8)
    truth = []
    for k, (path, size) in enumerate(zip(photos, sizes, strict=True)):
        rgb = decode_image(path)
        scale = size / 110.0  # LFW deep-funneled faces are ~110 px wide in the 250×250 photo
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ox, oy = (k % 8) * 240 + 60, (k // 8) * 270 + 80
        frame[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small
        truth.append((ox + 125 * scale, oy + 125 * scale, size))
    return frame, truth


def _found(faces: list[Face], truth: list[tuple[float, float, int]]) -> list[bool]:
    def at(face: Face, cx: float, cy: float, size: int) -> bool:
        x1, y1, x2, y2 = face.box
        return abs((x1 + x2) / 2 - cx) < 0.5 * size and abs((y1 + y2) / 2 - cy) < 0.5 * size

    return [any(at(f, *t) for f in faces) for t in truth]


def test_a_classroom_frame_keeps_its_small_faces(scrfd_25g: ScrfdDetector) -> None:
    """Shrunk to SCRFD's 640 px, a 1920×1080 frame's 40 px faces are 13 px; camera frames are
    detected at up to FRAME_DETECT_MAX_SIDE instead, so they are all found, and more of the
    smaller ones than at 640, while a face too large for the finer input (a close-up) is still
    found by the first pass (tests/serving/test_phone_photos.py). Photos (max_side None) are
    still detected as before."""
    sizes = [40] * 8 + [26] * 16
    frame, truth = _classroom_frame(sizes)
    suite_faces, faces_640 = (
        face_crops(scrfd_25g, frame, CropSettings(size=160)).faces,
        detect_faces(scrfd_25g, frame)[0],
    )
    suite, at_640 = _found(suite_faces, truth), _found(faces_640, truth)
    assert all(suite[:8]), suite[:8]
    assert sum(suite[8:]) > sum(at_640[8:]), (sum(suite[8:]), sum(at_640[8:]))
    # the finer pass only adds faces: every face of the 640 px pass is kept as it was
    assert {f.box for f in faces_640} <= {f.box for f in suite_faces}
    # a fixed-input detector (scrfd_500m, 640×640 only) keeps its one input size
    sm = ScrfdDetector(str(SCRFD_500M))
    assert [f.box for f in face_crops(sm, frame, CropSettings(size=160)).faces] == [
        f.box for f in detect_faces(sm, frame)[0]
    ]


class _RecordedRuns:
    """A real detector, recording the image of each run of its network (height, width)."""

    def __init__(self, detector: ScrfdDetector) -> None:
        self.detector = detector
        self.inputs: list[tuple[int, int]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.detector, name)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        self.inputs.append(rgb.shape[:2])
        return self.detector.detect(rgb)

    def detect_at(self, rgb: np.ndarray, max_side: int) -> list[Face]:
        self.inputs.append(rgb.shape[:2])
        return self.detector.detect_at(rgb, max_side)


def test_an_empty_camera_frame_is_retried_at_the_detector_input_only(scrfd_25g: ScrfdDetector) -> None:
    """No face in a 1920×1080 frame: SCRFD runs at 640 px, at 1280 px for the small faces, and
    once more at 640 px on the padded copy, for a face that fills the frame (which the small-face
    pass never adds): three runs. A pre-cropped photo enlarged to a camera frame's size
    is still found by that retry."""
    require_shared_data(ORL)
    rng = np.random.default_rng(0)
    cells = rng.integers(40, 220, size=(9, 16, 3), dtype=np.uint8)
    frame = cv2.resize(cells, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    runs = _RecordedRuns(scrfd_25g)
    empty = face_crops(runs, frame, CropSettings(size=160))
    assert empty.faces == [] and not empty.padded_retry
    assert [max(shape) for shape in runs.inputs] == [640, FRAME_DETECT_MAX_SIDE, 640], runs.inputs

    # an ORL photo (92×112, the face fills it) at 920×1120: only the padded retry finds the face
    close_up = cv2.resize(decode_image(ORL / "s1" / "1.pgm"), (920, 1120), interpolation=cv2.INTER_CUBIC)
    runs.inputs = []
    found = face_crops(runs, close_up, CropSettings(size=160))
    assert found.padded_retry and len(found.faces) == 1
    assert [max(shape) for shape in runs.inputs] == [640, 1120, 640], runs.inputs
    x1, y1, x2, y2 = found.faces[0].box
    assert 0.25 * 920 <= (x1 + x2) / 2 <= 0.75 * 920 and 0.25 * 1120 <= (y1 + y2) / 2 <= 0.75 * 1120
