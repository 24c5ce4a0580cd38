"""Peak RSS of the extraction loop in the number of photos (streaming; float32 embeddings).

    .venv/bin/python bench/bench_memory.py [--photos 20000]
    .venv/bin/python bench/bench_memory.py --phone [--photos 20000]

SYNTHETIC photos (random 250×250 JPEGs written to a temp folder, reused) and stand-in
detector/embedder with the real interfaces (a fixed face box, a random projection to
512-d), so this measures the memory of the pipeline's loop — decode, crop, batches,
the embedding array, cache keys — not the models' (constant) weights. Each size runs in a
fresh process; peak RSS from /proc/self/status (VmHWM).

``--phone``: 12-megapixel phone-size JPEGs instead (bench/phone_photos.py: 40 LFW photos at
4032×3024, reused), every record decoded (no embedding cache), 2 detect threads as the
pipeline runs them; the previous full-size decoding is measured at the smallest size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


class BoxDetector:
    name = "fixed-box"
    weights_sha256 = None

    def detect(self, rgb):
        from backend.recognizer.faces import Face

        h, w = rgb.shape[:2]
        return [Face((w * 0.25, h * 0.2, w * 0.75, h * 0.8), 0.99, None)]


class ProjectionEmbedder:
    name = "random-projection"
    dim = 512
    weights_sha256 = None

    def __init__(self) -> None:
        from backend.recognizer.faces import CropSettings

        self.crop = CropSettings(size=160, template="facenet")
        self._p = np.random.default_rng(0).standard_normal((48 * 48 * 3, 512)).astype(np.float32)

    def embed(self, crops):
        import cv2

        from backend.recognizer.embedder import l2_normalize

        small = np.stack([cv2.resize(c, (48, 48)) for c in crops]).reshape(len(crops), -1).astype(np.float32)
        return l2_normalize(small @ self._p)


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM belongs to the process image; getrusage's ru_maxrss survives
    exec, so a child started by a large parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(folder: str, n: int, mode: str = "cache") -> None:
    from retraining import cache as cache_mod
    from retraining.dataset import ImageRecord
    from retraining.extract import extract_embeddings

    files = sorted(Path(folder).glob("*.jpg"))
    records = [ImageRecord(files[i % len(files)], f"STU{i // 20:05d}", "x") for i in range(n)]
    det, emb = BoxDetector(), ProjectionEmbedder()
    cache = cache_mod.EmbeddingCache(cache_mod.pipeline_fingerprint(det, emb), emb.dim) if mode == "cache" else None
    if mode == "full":  # the previous path: every pixel decoded
        sys.path.insert(0, str(ROOT / "bench"))
        from phone_photos import with_full_decoding

        with_full_decoding().start()
    workers = 1 if mode == "cache" else 2
    t = time.perf_counter()
    ex = extract_embeddings(records, det, emb, batch_size=32, progress=False, workers=workers, cache=cache)
    print(
        json.dumps(
            {
                "n": n,
                "embedded": len(ex.records),
                "seconds": time.perf_counter() - t,
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=20000)
    ap.add_argument("--phone", action="store_true", help="12-megapixel phone-size photos, no cache")
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return
    if args.phone:
        phone(args.photos)
        return
    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix="bench_mem_"))
    rng = np.random.default_rng(0)
    for i in range(500):  # 500 distinct files; records reuse them (cache keys repeat, memory does not grow)
        Image.fromarray(rng.integers(0, 255, (250, 250, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=90)
    sizes = sorted({max(1, args.photos // 10), args.photos // 2, args.photos})
    print(f"{'photos':>8} {'seconds':>8} {'peak RSS MiB':>13}")
    for n in sizes:
        r = run_child(folder, n, "cache")
        print(f"{r['n']:>8} {r['seconds']:>8.1f} {r['peak_rss_mib']:>13.0f}")
    print("target: <= 2048 MiB at 20000 photos and flat in the number of photos")


def run_child(folder: Path, n: int, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(folder), str(n), mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def phone(photos: int) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from phone_photos import phone_photo

    shared = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
    folder = Path(tempfile.gettempdir()) / "bench_memory_phone"
    for k, src in enumerate(sorted((shared / "lfw").glob("*/*.jpg"))[::50][:40]):
        if not (folder / f"{k}.jpg").exists():
            phone_photo(src, folder / f"{k}.jpg", portrait=(k % 3 == 2), seed=k)
    sizes = sorted({max(1, photos // 10), photos // 2, photos})
    print(f"{'photos':>8} {'decoding':>9} {'seconds':>8} {'photos/s':>9} {'peak RSS MiB':>13}")
    for n, mode in [(min(sizes[0], 200), "full"), *((n, "reduced") for n in sizes)]:
        r = run_child(folder, n, mode)
        print(f"{r['n']:>8} {mode:>9} {r['seconds']:>8.1f} {n / r['seconds']:>9.1f} {r['peak_rss_mib']:>13.0f}")
    print("12-megapixel JPEGs (4032x3024), stand-in models, no cache, 2 detect threads; target <= 2048 MiB, flat")


if __name__ == "__main__":
    main()
