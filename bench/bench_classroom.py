"""Classroom camera frames: small faces found and recognised, and the time per stage of one frame.

    .venv/bin/python bench/bench_classroom.py [--frames 4] [--faces 30] [--seed 0] [--repeat 3] [--empty-only]

Each frame is 1920x1080 (a classroom camera) with ``--faces`` real LFW faces pasted on a
smooth random background, the face boxes 24-120 px wide (fixed seed), one face per cell of a
grid so that none overlap. The people come from ../shared/data/lfw; each one's pasted photo
is never one of the 8 photos they are enrolled with.

Printed, by face size:
* faces found by ``faces.detect_faces`` as ``identify(array)`` calls it (the detector's own
  640 px, plus a pass at up to ``FRAME_DETECT_MAX_SIDE`` that adds the small faces: the suite;
  ``--sides`` adds other sizes) and, as the baseline measured in the same run, at 640 px alone;
* faces recognised (found, right person, accepted at the threshold), with dlib embeddings
  and a classifier trained on the enrolled photos (``retraining.train``, the recommended
  open-set threshold of ``retraining.evaluate``).

Then the time per stage of one frame, median over frames x ``--repeat``: to RGB, detect,
align/crop, embed every face in one batch (FaceNet InceptionResnetV1 in ONNX Runtime, RANDOM
weights: the vggface2 weights cannot be downloaded here, the compute is the same), classify
(the dlib classifier: its cost does not depend on the embedder), for both detection sizes.

And ``--frames`` empty frames (the background alone, no face), which cost only detection: how
many times the detector runs on one (the passes, and the padded retry that ``detect_faces``
makes when nothing is found), the input size and time of each run, and their total
(``--empty-only``: that alone, in seconds: no enrollment, no frames with faces).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))

from bench_extract import facenet
from bench_identify import median_ms
from lfw_enrollment import people_with

from backend.recognizer import weights
from backend.recognizer.embedder import DlibEmbedder
from backend.recognizer.faces import (
    FRAME_DETECT_MAX_SIDE,
    Face,
    ScrfdDetector,
    align_crop,
    detect_faces,
    photo_face_crops,
)
from backend.recognizer.images import to_rgb
from retraining.evaluate import evaluate
from retraining.train import fit_model

WIDTH, HEIGHT = 1920, 1080
SIZES = (24, 28, 32, 40, 48, 64, 80, 120)
COLS, ROWS = 8, 4
ENROLL = 8


@dataclass(frozen=True)
class Pasted:
    person: str
    centre: tuple[float, float]
    size: int  # face box width in the frame (px)


def background(rng: np.random.Generator) -> np.ndarray:
    small = rng.integers(40, 220, size=(9, 16, 3), dtype=np.uint8)
    frame = cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 6, size=frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def make_frames(
    detector: ScrfdDetector, people: dict[str, list[Path]], n_frames: int, n_faces: int, seed: int
) -> list[tuple[np.ndarray, list[Pasted]]]:
    """BGR frames with LFW faces pasted at sizes cycling through SIZES, and where each face is."""
    rng = np.random.default_rng(seed)
    names = sorted(people)
    out = []
    k = 0
    for _ in range(n_frames):
        frame = background(rng)
        truth = []
        cells = rng.permutation(COLS * ROWS)[:n_faces]
        for cell in cells:
            name = names[int(rng.integers(len(names)))]
            photo = people[name][int(rng.integers(len(people[name])))]
            bgr = cv2.imread(str(photo))
            found, _ = detect_faces(detector, bgr[..., ::-1])
            if not found:
                continue
            x1, y1, x2, y2 = found[0].box
            size = SIZES[k % len(SIZES)]
            k += 1
            scale = size / (x2 - x1)
            small = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            cx, cy = (x1 + x2) / 2 * scale, (y1 + y2) / 2 * scale
            half = int(size * 1.0)  # paste the face with one face-width of its surroundings
            left, top = max(0, int(cx) - half), max(0, int(cy) - half)
            patch = small[top : int(cy) + half, left : int(cx) + half]
            cw, ch = WIDTH // COLS, HEIGHT // ROWS
            ox = (cell % COLS) * cw + (cw - patch.shape[1]) // 2 + int(rng.integers(-10, 11))
            oy = (cell // COLS) * ch + (ch - patch.shape[0]) // 2 + int(rng.integers(-10, 11))
            ox, oy = min(max(ox, 0), WIDTH - patch.shape[1]), min(max(oy, 0), HEIGHT - patch.shape[0])
            frame[oy : oy + patch.shape[0], ox : ox + patch.shape[1]] = patch
            truth.append(Pasted(name, (ox + cx - left, oy + cy - top), size))
        out.append((frame, truth))
    return out


def match(faces: list[Face], truth: list[Pasted]) -> dict[int, int]:
    """truth index → index of the detected face at its place (centre within 0.4 face, size within 2x)."""
    out: dict[int, int] = {}
    for i, t in enumerate(truth):
        for j, f in enumerate(faces):
            x1, y1, x2, y2 = f.box
            cx, cy, w = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1
            if abs(cx - t.centre[0]) < 0.4 * t.size and abs(cy - t.centre[1]) < 0.4 * t.size and 0.5 < w / t.size < 2:
                out[i] = j
                break
    return out


class CountingDetector:
    """``detector``, recording each run of its network: the input it was given (width x height)
    and the ms it took. Everything else is the detector's own."""

    def __init__(self, detector: ScrfdDetector) -> None:
        self.detector = detector
        self.runs: list[tuple[str, float]] = []

    def __getattr__(self, name: str):
        return getattr(self.detector, name)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return self._run(rgb, lambda: self.detector.detect(rgb))

    def detect_at(self, rgb: np.ndarray, max_side: int) -> list[Face]:
        return self._run(rgb, lambda: self.detector.detect_at(rgb, max_side))

    def _run(self, rgb: np.ndarray, fn: Callable[[], list[Face]]) -> list[Face]:
        t = time.perf_counter()
        found = fn()
        self.runs.append((f"{rgb.shape[1]}x{rgb.shape[0]}", (time.perf_counter() - t) * 1000))
        return found


def empty_frames(
    detector: ScrfdDetector, variants: dict[str, int | None], n_frames: int, seed: int, repeat: int
) -> None:
    """Print, per detection variant, what detecting an empty frame (the background, no face) costs."""
    rng = np.random.default_rng(seed + 1)  # other backgrounds than the frames with faces
    frames = [to_rgb(background(rng), bgr=True) for _ in range(n_frames)]
    counting = CountingDetector(detector)
    print(f"\nempty frames ({n_frames} of {WIDTH}x{HEIGHT}, background only), ms, median of {n_frames} x {repeat}:")
    print(f"{'variant':<28} {'faces':>5} {'detector runs':>13} {'detect':>8}  each run (input px: ms)")
    for name, side in variants.items():
        detect_faces(detector, frames[0], max_side=side)  # warm-up (ONNX Runtime's first run at each size)
        totals, runs, found = [], [], 0
        for rgb in frames:
            for _ in range(repeat):
                counting.runs = []
                t = time.perf_counter()
                faces, _ = detect_faces(counting, rgb, max_side=side)
                totals.append((time.perf_counter() - t) * 1000)
                runs.append(counting.runs)
                found = max(found, len(faces))
        counts = sorted({len(r) for r in runs})  # one count unless a background gives a false face
        alike = [r for r in runs if len(r) == len(runs[0])]
        per_run = [statistics.median(r[k][1] for r in alike) for k in range(len(runs[0]))]
        each = ", ".join(f"{px}: {ms:.1f}" for (px, _), ms in zip(runs[0], per_run, strict=True))
        n_runs = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        print(f"{name:<28} {found:>5} {n_runs:>13} {statistics.median(totals):>8.1f}  {each}")


def stage_times(frame, side, detector, embedder, dlib, model, repeat: int) -> dict[str, float]:
    """ms per stage of one identify() of ``frame`` (faces detected at up to ``side``), and the faces found."""
    rgb = to_rgb(frame, bgr=True)
    faces, _ = detect_faces(detector, rgb, max_side=side)
    crops = np.stack([align_crop(rgb, f, embedder.crop) for f in faces])
    vectors = dlib.embed(np.stack([align_crop(rgb, f, dlib.crop) for f in faces]))
    embedder.embed(crops)  # warm-up for this batch size
    timed = {
        "to RGB": lambda: to_rgb(frame, bgr=True),
        "detect (SCRFD 2.5G)": lambda: detect_faces(detector, rgb, max_side=side),
        "align/crop all faces": lambda: [align_crop(rgb, f, embedder.crop) for f in faces],
        "embed all faces, one batch (FaceNet ORT)": lambda: embedder.embed(crops),
        "classify all faces": lambda: model.recognize(vectors),
    }
    out = {stage: median_ms(fn, repeat) for stage, fn in timed.items()}
    out["faces found"] = float(len(faces))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--faces", type=int, default=30, help="faces per frame (at most 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each frame")
    ap.add_argument(
        "--sides",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[960, FRAME_DETECT_MAX_SIDE],
        help="longer detection sides to compare with the 640 px baseline",
    )
    ap.add_argument("--empty-only", action="store_true", help="only the empty frames (no enrollment)")
    args = ap.parse_args()
    detector = ScrfdDetector(str(SHARED / "weights" / "scrfd_2.5g_bnkps.onnx"))
    variants: dict[str, int | None] = {"detect at 640 (baseline)": None}
    for side in args.sides:
        suite = " (suite)" if side == FRAME_DETECT_MAX_SIDE else ""
        variants[f"detect at {side}{suite}"] = side
    if args.empty_only:
        empty_frames(detector, variants, args.frames, args.seed, args.repeat)
        return
    dlib = DlibEmbedder(weights.dlib_weights())
    rng = np.random.default_rng(args.seed)
    folders = people_with(SHARED / "lfw", ENROLL + 4)
    chosen = [folders[int(i)] for i in rng.permutation(len(folders))[:40]]
    enrolled, unseen = [], {}
    X, y = [], []
    print(f"enrolling {len(chosen)} LFW people x {ENROLL} photos (dlib) ...", file=sys.stderr, flush=True)
    for folder in chosen:
        photos = sorted(folder.glob("*.jpg"))
        order = rng.permutation(len(photos))
        for j in order[:ENROLL]:
            found = photo_face_crops(detector, photos[j], dlib.crop, max_faces=1)
            if found.crops:
                X.append(dlib.embed(np.stack(found.crops))[0])
                y.append(folder.name)
        enrolled.append(folder.name)
        unseen[folder.name] = [photos[j] for j in order[ENROLL:]]
    Xa, ya = np.array(X), np.array(y)
    ev = evaluate(Xa, ya, seed=args.seed)
    calibrator = ev.open_set.calibrator if ev.open_set is not None else None
    model = fit_model(Xa, ya, seed=args.seed, open_set_calibrator=calibrator)
    threshold = ev.recommended_threshold
    frames = make_frames(detector, unseen, args.frames, min(args.faces, COLS * ROWS), args.seed)

    by_size = {v: {s: [0, 0, 0] for s in SIZES} for v in variants}  # size → [faces, found, recognised]
    for frame, truth in frames:
        rgb = to_rgb(frame, bgr=True)
        for v, side in variants.items():
            faces, _ = detect_faces(detector, rgb, max_side=side)
            hits = match(faces, truth)
            crops = [align_crop(rgb, faces[j], dlib.crop) for j in hits.values()]
            preds = {}
            if crops:
                _, pred, conf = model.recognize(dlib.embed(np.stack(crops)))
                preds = {i: (p, c) for i, p, c in zip(hits, pred, conf, strict=True)}
            for i, t in enumerate(truth):
                row = by_size[v][t.size]
                row[0] += 1
                row[1] += i in hits
                row[2] += i in preds and preds[i][0] == t.person and preds[i][1] >= threshold
    names = list(variants)
    n_faces = sum(len(t) for _, t in frames)
    print(
        f"\n{args.frames} frames of {WIDTH}x{HEIGHT}, {n_faces} LFW faces (seed {args.seed}); SCRFD 2.5G; "
        f"recognised = found, right person and accepted at {threshold:.2f} (dlib, {len(enrolled)} people enrolled)"
    )
    print(f"{'face px':>7} {'faces':>5}  " + "  ".join(f"{n + ': found / recognised':>40}" for n in names))
    for s in SIZES:
        cells = []
        for v in names:
            n, found, rec = by_size[v][s]
            cells.append(f"{f'{found / n:.0%} ({found}/{n}) / {rec / n:.0%}':>40}")
        print(f"{s:>7} {by_size[names[0]][s][0]:>5}  " + "  ".join(cells))

    empty_frames(detector, variants, args.frames, args.seed, args.repeat)

    tmp = Path(tempfile.mkdtemp(prefix="bench_classroom_"))
    embedder = facenet(tmp, "cpu", "auto")
    print(f"\ntime per frame (ms, median of {args.frames} frames x {args.repeat}), CPU cores {os.cpu_count()}:")
    print(f"{'stage':<44} " + " ".join(f"{n:>24}" for n in names))
    stages: dict[str, list[list[float]]] = {}
    for frame, _ in frames:
        for col, side in enumerate(variants.values()):
            times = stage_times(frame, side, detector, embedder, dlib, model, args.repeat)
            for stage, ms in times.items():
                stages.setdefault(stage, [[] for _ in variants])[col].append(ms)
    total = [0.0 for _ in variants]
    for stage, cols in stages.items():
        values = [statistics.median(c) for c in cols]
        if stage == "faces found":
            print(f"{stage:<44} " + " ".join(f"{v:>24.0f}" for v in values))
            continue
        total = [a + b for a, b in zip(total, values, strict=True)]
        print(f"{stage:<44} " + " ".join(f"{v:>24.1f}" for v in values))
    print(f"{'total (one identify of the frame)':<44} " + " ".join(f"{v:>24.1f}" for v in total))


if __name__ == "__main__":
    main()
