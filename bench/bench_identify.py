"""Recognition of one camera frame, per stage: what ``FaceRecognizer.identify`` spends its time on.

    .venv/bin/python bench/bench_identify.py [--students 500] [--device cpu] [--repeat 20]

``identify`` is: frame → RGB (``images.to_rgb``) → detect + align/crop every face
(``faces.face_crops``) → FaceNet on all crops at once (``embedder.embed``) → classify
(``TrainedModel.recognize``, open-set confidence included). This times each of those calls
on real frames: insightface's group photo ``t1.jpg`` (1280×886, 6 faces found) and
scikit-image's ``astronaut`` (512×512, 1 face). The baseline row of each stage is the
recipe this suite replaced: SCRFD at a fixed 640×640 and eager PyTorch FaceNet.

Models: SCRFD 2.5g (real weights, ../shared/data/weights), FaceNet InceptionResnetV1 with
RANDOM weights (same compute as vggface2, not available offline); the classifier is fitted
on SYNTHETIC 512-d embeddings of ``--students`` students x 20 photos (bench/synthetic.py),
so its answers are meaningless: only its time counts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))

import torch
from bench_extract import facenet
from synthetic import synthetic_embeddings

from backend.recognizer.backends import onnx_providers
from backend.recognizer.embedder import resolve_device
from backend.recognizer.faces import ScrfdDetector, detect_faces, face_crops
from backend.recognizer.images import to_rgb
from backend.recognizer.openset import features
from retraining.train import (
    fit_calibrator,
    fit_model,
)


def frames() -> list[tuple[str, np.ndarray]]:
    """Real BGR frames (as a camera gives them) that ship inside installed packages, and the
    same pictures as 1280x720 and 1920x1080 camera frames (scaled to cover the frame, centre cut)."""
    import cv2
    import insightface
    from skimage import data

    group = cv2.imread(str(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"))
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    out = [("t1.jpg group photo", group), ("astronaut, 1 face", astronaut)]
    for width, height in ((1280, 720), (1920, 1080)):
        for name, picture in (("6 faces", group), ("1 face", astronaut)):
            out.append((f"{height}p, {name}", camera_frame(picture, width, height)))
    return out


def camera_frame(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """``bgr`` scaled to cover a width x height frame and cut to it around the centre."""
    import cv2

    h, w = bgr.shape[:2]
    scale = max(width / w, height / h)
    big = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    top, left = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
    return np.ascontiguousarray(big[top : top + height, left : left + width])


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up (ORT / torch first-call allocations)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def classifier(n_students: int):
    X, y = synthetic_embeddings(n_students, 20, spread=3.5, seed=3)
    model = fit_model(X, y)
    proba, pred, _ = model.recognize(X)
    calibrator = fit_calibrator(features(proba, X, model.open_set.centres), pred == y)
    return replace(model, open_set_calibrator=calibrator).model


def frame_stages(bgr, fixed, detector, eager, embedder, model, repeat: int) -> list[tuple[str, float, float]]:
    """(stage, baseline ms, ms) for the calls identify() makes on this frame, then their total."""
    rgb = to_rgb(bgr, bgr=True)
    crops = np.stack(face_crops(detector, rgb, embedder.crop, max_faces=None).crops)
    vectors = embedder.embed(crops)
    stages = [
        ("to RGB", lambda: to_rgb(bgr, bgr=True), lambda: to_rgb(bgr, bgr=True)),
        ("detect (SCRFD)", lambda: detect_faces(fixed, rgb), lambda: detect_faces(detector, rgb)),
        (
            "detect + align/crop all faces",
            lambda: face_crops(fixed, rgb, embedder.crop),
            lambda: face_crops(detector, rgb, embedder.crop),
        ),
        (f"embed {len(crops)} face(s) (FaceNet)", lambda: eager.embed(crops), lambda: embedder.embed(crops)),
        (f"classify {len(crops)} face(s)", lambda: model.recognize(vectors), lambda: model.recognize(vectors)),
    ]
    rows, total_base, total = [], 0.0, 0.0
    for stage, base_fn, fn in stages:
        b, f = median_ms(base_fn, repeat), median_ms(fn, repeat)
        if not stage.startswith("detect ("):  # detection alone is part of "detect + align/crop"
            total_base, total = total_base + b, total + f
        rows.append((stage, b, f))
    rows.append(("total (one identify call)", total_base, total))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=500)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench_identify_"))
    weights = str(SHARED / "weights" / "scrfd_2.5g_bnkps.onnx")
    providers = onnx_providers(device)
    fixed = ScrfdDetector(weights, adaptive_input=False, providers=providers)
    detector = ScrfdDetector(weights, providers=providers)
    eager = facenet(tmp, device, "torch")
    embedder = facenet(tmp, device, "auto")
    print(f"fitting the classifier on {args.students} synthetic students ...", file=sys.stderr, flush=True)
    model = classifier(args.students)

    print(
        f"\nidentify() of one frame, median of {args.repeat} (ms); device {device}, CPU cores {os.cpu_count()}, "
        f"torch threads {torch.get_num_threads()}; classifier: {args.students} students (synthetic)"
    )
    print(f"{'frame':<20} {'stage':<34} {'baseline ms':>11} {'ms':>8} {'speed-up':>8}")
    for name, bgr in frames():
        for stage, b, f in frame_stages(bgr, fixed, detector, eager, embedder, model, args.repeat):
            print(f"{name:<20} {stage:<34} {b:>11.2f} {f:>8.2f} {b / f:>7.2f}x")
    print(
        "baseline: SCRFD at a fixed 640x640 + FaceNet in eager PyTorch (the replaced recipe); the classify "
        "baseline of the replaced SVC(one-vs-one) is in bench_train.py (SVC ms column)"
    )


if __name__ == "__main__":
    main()
