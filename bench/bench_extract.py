"""Extraction throughput (photo → embedding) and the incremental re-run with the embedding cache.

    .venv/bin/python bench/bench_extract.py [--photos 96] [--students 50]

Models: SCRFD 2.5g (real weights from ../shared/data/weights) + FaceNet InceptionResnetV1
with a RANDOMLY initialised state_dict (same compute cost as vggface2, which is not
available offline here). Photos: real LFW photos from ../shared/data/lfw.
Baseline (measured in the same run): one photo at a time, decode → detect → crop →
FaceNet batch of 1, serially.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
SHARED = ROOT.parent / "shared" / "data"

import torch  # noqa: E402

from backend.recognizer import cache as cache_mod  # noqa: E402
from backend.recognizer.dataset import ImageRecord  # noqa: E402
from backend.recognizer.embedder import FaceNetEmbedder  # noqa: E402
from backend.recognizer.errors import ImageError  # noqa: E402
from backend.recognizer.extract import extract_embeddings, prepare_crop  # noqa: E402
from backend.recognizer.faces import ScrfdDetector  # noqa: E402
from backend.recognizer.weights import sha256_file  # noqa: E402


def facenet(tmp: Path) -> FaceNetEmbedder:
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    path = tmp / "facenet_random.pt"
    torch.save(InceptionResnetV1(pretrained=None, classify=False).state_dict(), path)
    return FaceNetEmbedder(path, device="cuda" if torch.cuda.is_available() else "cpu")


def lfw_records(n_students: int, per_student: int) -> list[ImageRecord]:
    people = sorted(p for p in (SHARED / "lfw").iterdir() if p.is_dir())[:n_students]
    out = []
    for k, person in enumerate(people):
        for path in sorted(person.glob("*.jpg"))[:per_student]:
            out.append(ImageRecord(path, f"STU{k:03d}", person.name))
    return out


def baseline(records, detector, embedder):
    vecs, skipped = [], []
    for rec in records:
        try:
            crop, _ = prepare_crop(rec, detector, embedder)
        except ImageError as err:
            skipped.append((rec.path, str(err)))
            continue
        vecs.append(embedder.embed(crop[None])[0])
    return np.array(vecs), skipped


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=96)
    ap.add_argument("--students", type=int, default=50)
    ap.add_argument("--per-student", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    weights = SHARED / "weights" / "scrfd_2.5g_bnkps.onnx"
    detector = ScrfdDetector(str(weights), weights_sha256=sha256_file(weights))
    embedder = facenet(tmp)
    records = lfw_records(args.photos, 1)[: args.photos]
    if len(records) < args.photos:
        records = lfw_records(200, 5)[: args.photos]
    extract_embeddings(records[:4], detector, embedder, progress=False)  # warm-up
    rows = []
    t_base, (v_base, s_base) = timed(lambda: baseline(records, detector, embedder))
    rows.append(("baseline: 1 photo at a time, batch 1", t_base))
    for label, kw in (
        ("batched 32, serial", dict(workers=0, batch_size=32)),
        ("batched 32, 1 detect thread ahead", dict(workers=1, batch_size=32)),
        ("batched 32, 2 detect threads ahead", dict(workers=2, batch_size=32)),
    ):
        t, ex = timed(lambda kw=kw: extract_embeddings(records, detector, embedder, progress=False, **kw))
        assert ex.skipped == s_base, "skip reasons differ from the baseline"
        diff = float(np.abs(ex.embeddings - v_base).max()) if len(v_base) else 0.0
        rows.append((f"{label} (max |diff| vs baseline {diff:.1e})", t))
    n = len(records)
    print(
        f"\nExtraction, {n} LFW photos, SCRFD 2.5g + FaceNet (random weights), device "
        f"{embedder.device}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'variant':<62} {'s':>7} {'photos/s':>9} {'vs baseline':>11}")
    for label, t in rows:
        print(f"{label:<62} {t:>7.2f} {n / t:>9.1f} {t_base / t:>10.2f}x")

    # ---- incremental re-run: 50 students cached, then 1 student added
    fp = cache_mod.pipeline_fingerprint(detector, embedder)
    first = lfw_records(args.students, args.per_student)
    plus = lfw_records(args.students + 1, args.per_student)
    cache = cache_mod.EmbeddingCache(fp, embedder.dim)
    t_full, full = timed(lambda: extract_embeddings(first, detector, embedder, progress=False, workers=1, cache=cache))
    cache.save(tmp / "cache", keep=cache.used)

    def rerun():
        c = cache_mod.load_cache(tmp / "cache", fp, embedder.dim)
        ex = extract_embeddings(plus, detector, embedder, progress=False, workers=1, cache=c)
        c.save(tmp / "cache", keep=c.used)
        return ex, c

    t_re, (again, c2) = timed(rerun)
    same = np.array_equal(again.embeddings[: len(full.embeddings)], full.embeddings)
    t_nc, _ = timed(lambda: extract_embeddings(plus, detector, embedder, progress=False, workers=1))
    print(
        f"\nIncremental re-run ({args.students} students x {args.per_student} photos cached, 1 student added; "
        "includes cache load + hashing + save)"
    )
    print(f"  full run, {len(first)} photos, no cache      : {t_full:7.2f} s")
    print(
        f"  re-run, {len(plus)} photos, cache          : {t_re:7.2f} s  ({c2.hits} reused, {c2.misses} embedded) "
        f"= {t_re / t_nc:.1%} of a full run without cache ({t_nc:.2f} s); target <= 10 %; identical vectors: {same}"
    )


if __name__ == "__main__":
    main()
