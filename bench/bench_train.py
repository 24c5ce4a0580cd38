"""Classifier training and recognition speed: fit_model vs the SVC(one-vs-one) recipe.

    .venv/bin/python bench/bench_train.py            # 200/500/2000 students (+ SVC baseline at 200 and 500)
    .venv/bin/python bench/bench_train.py --quick    # baseline at 200 students only
    .venv/bin/python bench/bench_train.py --real-only  # only the real-embedding comparison

Scaling data is SYNTHETIC: per-class clusters around random unit-norm 512-d centres
(bench/synthetic.py), 20 training + 10 held-out photos per student. Accuracy is also
compared on REAL embeddings: ORL (40 people x 10) and LFW (158 people, 10-20 photos each)
from ../shared/data, SCRFD 2.5g crops embedded by the offline dlib model (128-d), 5-fold
stratified cross-validation, both classifiers on the same folds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))

from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from synthetic import synthetic_embeddings

from backend.recognizer.openset import features
from retraining.train import (
    fit_calibrator,
    fit_model,
)


def split(n_students: int, spread: float, seed: int = 3):
    X, y = synthetic_embeddings(n_students, 30, spread=spread, seed=seed)
    tr = np.arange(len(X)) % 30 < 20
    return X[tr], y[tr], X[~tr], y[~tr]


def reference(Xtr, ytr, Xte, yte):
    t = time.perf_counter()
    sc = StandardScaler().fit(Xtr)
    clf = CalibratedClassifierCV(
        SVC(kernel="linear", class_weight="balanced"), method="temperature", cv=5, ensemble=False
    ).fit(sc.transform(Xtr), ytr)
    fit_s = time.perf_counter() - t
    acc = float(np.mean(clf.predict(sc.transform(Xte)) == yte))
    one = sc.transform(Xte[:1])
    t = time.perf_counter()
    for _ in range(20):
        clf.predict_proba(one)
    return fit_s, acc, (time.perf_counter() - t) / 20 * 1000


def fast(Xtr, ytr, Xte, yte):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        t = time.perf_counter()
        model = fit_model(Xtr, ytr)
        fit_s = time.perf_counter() - t
    _, pred, _ = model.recognize(Xte)
    acc = float(np.mean(pred == yte))
    # attach an open-set calibrator like the pipeline does, so classify() pays for it too
    proba = model.predict_proba(Xte)
    calibrator = fit_calibrator(features(proba, Xte, model.open_set.centres), pred == yte)
    model = replace(model, open_set=replace(model.open_set, calibrator=calibrator))
    t = time.perf_counter()
    for i in range(200):
        model.recognize(Xte[i % len(Xte)])
    return fit_s, acc, (time.perf_counter() - t) / 200 * 1000


def real_embeddings(name: str) -> tuple[np.ndarray, np.ndarray]:
    """SCRFD 2.5g + dlib embeddings of ../shared/data/<name>, through the pipeline's extraction."""
    from backend.recognizer.embedder import DlibEmbedder
    from backend.recognizer.faces import ScrfdDetector
    from backend.recognizer.weights import dlib_weights
    from retraining.dataset import ImageRecord
    from retraining.extract import extract_embeddings

    people = sorted(p for p in (SHARED / name).iterdir() if p.is_dir())
    records = [
        ImageRecord(path, f"P{k:03d}", person.name)
        for k, person in enumerate(people)
        for path in sorted(person.iterdir())
        if path.suffix.lower() in {".jpg", ".pgm", ".png"}
    ]
    detector = ScrfdDetector(str(SHARED / "weights" / "scrfd_2.5g_bnkps.onnx"))
    ex = extract_embeddings(records, detector, DlibEmbedder(dlib_weights()), progress=False)
    print(f"{name}: {len(ex.embeddings)} of {len(records)} photos embedded", file=sys.stderr, flush=True)
    return ex.embeddings, ex.student_ids


def real_comparison(name: str) -> tuple[int, int, float, float, float, float]:
    """5-fold accuracy of fit_model and of the SVC recipe on the same real embeddings."""
    X, y = real_embeddings(name)
    fast_acc, ref_acc, fast_s, ref_s = [], [], 0.0, 0.0
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        f = fast(X[tr], y[tr], X[te], y[te])
        r = reference(X[tr], y[tr], X[te], y[te])
        fast_acc.append(f[1])
        ref_acc.append(r[1])
        fast_s += f[0]
        ref_s += r[0]
    return len(np.unique(y)), len(X), float(np.mean(fast_acc)), float(np.mean(ref_acc)), fast_s / 5, ref_s / 5


def print_real(rows: list[tuple[str, tuple]]) -> None:
    print("\nReal embeddings (SCRFD 2.5g + dlib 128-d), 5-fold stratified CV, same folds for both")
    print(
        f"{'data':>6} {'people':>6} {'photos':>6} | {'fit s':>6} {'acc':>7} | {'SVC fit s':>9} {'SVC acc':>7} | "
        f"{'acc diff pp':>11}"
    )
    for name, (k, n, fa, ra, fs, rs) in rows:
        print(f"{name:>6} {k:>6} {n:>6} | {fs:>6.2f} {fa:>7.2%} | {rs:>9.2f} {ra:>7.2%} | {100 * (fa - ra):>+11.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--real-only", action="store_true", help="only the ORL/LFW real-embedding comparison")
    args = ap.parse_args()
    real = [(name, real_comparison(name)) for name in ("orl", "lfw")]
    if args.real_only:
        print_real(real)
        return
    rows = []
    base_sizes = [200] if args.quick else [200, 500]
    for spread in (3.5, 4.2):
        for K in (200, 500, 2000):
            data = split(K, spread)
            f = fast(*data)
            r = reference(*data) if K in base_sizes else None
            rows.append((K, spread, f, r))
            print(f"done {K} students spread {spread}", file=sys.stderr, flush=True)
    print("\nSynthetic 512-d embeddings, 20 train + 10 held-out photos per student (2 CPU cores)")
    print(
        f"{'students':>8} {'spread':>6} | {'fit s':>7} {'acc':>7} {'classify ms':>11} | "
        f"{'SVC fit s':>9} {'SVC acc':>7} {'SVC ms':>7} | {'fit speedup':>11} {'acc diff pp':>11}"
    )
    for K, spread, f, r in rows:
        if r is None:
            print(
                f"{K:>8} {spread:>6} | {f[0]:>7.2f} {f[1]:>7.2%} {f[2]:>11.3f} | {'-':>9} {'-':>7} {'-':>7} | "
                f"{'-':>11} {'-':>11}"
            )
        else:
            print(
                f"{K:>8} {spread:>6} | {f[0]:>7.2f} {f[1]:>7.2%} {f[2]:>11.3f} | {r[0]:>9.1f} {r[1]:>7.2%} "
                f"{r[2]:>7.2f} | {r[0] / f[0]:>10.1f}x {100 * (f[1] - r[1]):>+11.2f}"
            )
    print_real(real)
    print("targets: fit 500x20 <= 5 s, 2000x20 <= 30 s; accuracy >= SVC - 0.5 pp; classify <= 1 ms at 500")


if __name__ == "__main__":
    main()
