#!/usr/bin/env python3
"""Is the published threshold right? The suite's own estimates against people it never saw.

For each seed, an enrollment of LFW people (``bench/lfw_enrollment.py``) is written as student
folders, clean and with planted mistakes (people split over two folders, 5 % of photos in a
wrong folder, the same file in two folders), and retrained by ``retrain_model.main`` exactly as
a school runs it (SCRFD 2.5G + dlib, no options but ``--force``). The published model is then
loaded by the backend's loader and measured at the published threshold on photos the run never
saw: 4 unseen photos of every enrolled person (recognition, wrong student) and every photo of
``lfw_strangers`` (strangers accepted). Each is printed beside the run's own estimate.

    .venv/bin/python bench/bench_open_set.py [--people 80] [--seeds 0 1 2] [--only clean|planted]

Embeddings are computed once through the suite's extraction (cached in bench/results/) and
reused by every run's embedding cache, so each run costs the training and evaluation only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.lfw_enrollment import Enrollment, Mistakes, embed_all, make_enrollment, measure, stranger_photos

SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
LFW, STRANGERS = SHARED / "lfw", SHARED / "lfw_strangers"
DETECTOR = SHARED / "weights" / "scrfd_2.5g_bnkps.onnx"
RESULTS = ROOT / "bench" / "results"
#: The thresholds printed beside the published one, to show the curve.
CURVE = (0.5, 0.7, 0.8, 0.9, 0.95)


def backend_args() -> list[str]:
    return ["--detector", "scrfd", "--detector-model", str(DETECTOR), "--embedder", "dlib", "--device", "cpu"]


def run_one(
    enrollment: Enrollment,
    cache_dir: Path,
    vectors: dict[Path, np.ndarray],
    strangers: list[Path],
    seed: int,
    label: str,
    keep: Path | None,
) -> dict:
    import retrain_model

    with tempfile.TemporaryDirectory() as tmp:
        data = enrollment.write(Path(tmp) / "data")
        out = Path(tmp) / "out"
        shutil.copytree(cache_dir, out / "models" / "cache")
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the CLI's summary: the figures below say more
            code = retrain_model.main(
                [
                    "--data-dir",
                    str(data),
                    "--output-root",
                    str(out),
                    "--force",
                    "--quiet",
                    "--no-open",
                    "--seed",
                    str(seed),
                    *backend_args(),
                ]
            )
        seconds = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"retrain_model exited {code} on {label} seed {seed}")
        metrics = json.loads((out / "models" / "metrics.json").read_text())
        threshold = float(metrics["threshold"])
        rows = measure(out, enrollment, vectors, strangers, (threshold, *CURVE))
        if keep is not None:
            dest = keep / f"{label}_seed{seed}"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(out / "models", dest, ignore=shutil.ignore_patterns("cache", "*.npy", "*.npz"))
    os_ = metrics.get("open_set") or {}
    estimate = {r["threshold"]: r for r in os_.get("fine_sweep", [])}
    planted = {frozenset(f.split("_")[0] for f in enrollment.folders_of(p)) for p in enrollment.split}
    held = {frozenset(g) for g in os_.get("left_out", {}).get("held_together", [])}
    found = {
        "split_found": len(planted & held),
        "split_planted": len(planted),
        "groups_not_planted": len(held - planted),
    }
    return {
        "found": found,
        "label": label,
        "seed": seed,
        "threshold": threshold,
        "metrics": metrics,
        "rows": rows,
        "estimate": estimate,
        "seconds": seconds,
    }


def _est(estimate: dict, t: float) -> dict | None:
    return estimate.get(round(t, 2))


def print_run(r: dict) -> None:
    m = r["metrics"]
    os_ = m.get("open_set") or {}
    left = os_.get("left_out") or {}
    print(
        f"\n== {r['label']} tree, seed {r['seed']}: published threshold {r['threshold']:.2f} "
        f"({m.get('threshold_source')}), held-out accuracy {m['accuracy']:.1%}, run {r['seconds']:.0f} s"
    )
    f = r["found"]
    print(
        f"   enrolled twice: {f['split_found']} of {f['split_planted']} planted found, "
        f"{f['groups_not_planted']} other pair(s) held out together"
    )
    if left:
        print(
            f"   left out of the stranger estimate: held out together {left.get('held_together')}, "
            f"taken for another student {left.get('accepted_as')}, photos {left.get('photos')}"
        )
    print("   threshold | recognised: est / measured | strangers accepted: est (95% bound) / measured | wrong student")
    for row in r["rows"]:
        e = _est(r["estimate"], row.threshold)
        est_rec = f"{e['recognition_rate']:6.1%}" if e else "   n/a"
        est_far = f"{e['false_accept_rate']:5.1%} ({e['false_accept_upper95']:5.1%})" if e else "   n/a        "
        print(
            f"   {row.threshold:9.2f} | {est_rec} / {row.recognised:6.1%}          | "
            f"{est_far} / {row.strangers:5.1%}                   | {row.wrong_student:5.1%}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, default=80)
    p.add_argument("--enrolled", type=int, default=10, help="photos of each person in the student folders")
    p.add_argument("--unseen", type=int, default=4, help="photos of each person kept back (the 'new photos')")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", choices=("clean", "planted"), default=None)
    p.add_argument("--keep", type=Path, default=None, help="copy each run's models/ (reports) here")
    p.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = p.parse_args(argv)
    for path in (LFW, STRANGERS, DETECTOR):
        if not path.exists():
            raise SystemExit(f"missing {path} (see ../shared/data/README.md)")
    import logging

    logging.basicConfig(level=logging.WARNING)
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache_dir = RESULTS / "open_set_cache"
    strangers = stranger_photos(STRANGERS)
    print(f"Embedding every LFW photo once (cache {cache_dir}) ...", flush=True)
    t = time.perf_counter()
    vectors = embed_all(sorted(LFW.glob("*/*.jpg")) + strangers, cache_dir, DETECTOR)
    print(f"  {len(vectors)} photos with a face, {time.perf_counter() - t:.0f} s")
    kinds = [("clean", Mistakes.none()), ("planted", Mistakes())]
    results = []
    for seed in args.seeds:
        for label, mistakes in kinds:
            if args.only and label != args.only:
                continue
            enrollment = make_enrollment(
                LFW,
                n_people=args.people,
                enrolled_photos=args.enrolled,
                unseen_photos=args.unseen,
                mistakes=mistakes,
                seed=seed,
            )
            r = run_one(enrollment, cache_dir, vectors, strangers, seed, label, args.keep)
            print_run(r)
            results.append(r)
    print("\nAt the published threshold (estimate vs measured through the loader):")
    print("   tree     seed  thr   recognised est/meas   strangers est (bound) / meas   wrong student")
    for r in results:
        row = r["rows"][0]
        e = _est(r["estimate"], row.threshold) or {}
        print(
            f"   {r['label']:<8} {r['seed']:>4}  {row.threshold:.2f}  {e.get('recognition_rate', float('nan')):6.1%} / "
            f"{row.recognised:6.1%}     {e.get('false_accept_rate', float('nan')):5.1%} "
            f"({e.get('false_accept_upper95', float('nan')):5.1%}) / {row.strangers:5.1%} of {row.n_strangers}"
            f"   {row.wrong_student:5.1%}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "label": r["label"],
                        "seed": r["seed"],
                        "threshold": r["threshold"],
                        "measured": [vars(x) for x in r["rows"]],
                        "estimated": [r["estimate"].get(round(x.threshold, 2)) for x in r["rows"]],
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
