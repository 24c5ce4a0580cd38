"""Classifier training: fit_model vs the previous recipe and vs SVC(one-vs-one); calibration quality.

    .venv/bin/python bench/bench_train.py            # 200/500/2000 students x spreads 0.9/3.5/4.2 (+ SVC at 200 and 500)
    .venv/bin/python bench/bench_train.py --quick    # SVC baseline at 200 students only
    .venv/bin/python bench/bench_train.py --no-svc   # no SVC baseline: fit_model vs the previous recipe only
    .venv/bin/python bench/bench_train.py --large    # + 5000 students (peak memory ~4.7 GB, data included)
    .venv/bin/python bench/bench_train.py --real-only  # only the real-embedding comparison
    --real-embeddings DIR: keep the ORL/LFW embeddings in DIR/<name>.npz and reuse them next time
    --repeat N: fit N times per row and report the median fit time (for a busy machine)

Baselines, measured in the same run on the same data: the previous recipe
(bench/train_baseline.py: scikit-learn's temperature search and the earlier SVM step) for
every row, and ``CalibratedClassifierCV(SVC(kernel="linear"), method="temperature", cv=5)``
at 200 and 500 students. Calibration quality of the SVM probabilities
(``FittedModel.predict_proba``) on the held-out photos: log loss, and expected calibration
error (ECE: 15 equal-width bins of the top-class probability, |mean probability − accuracy|
weighted by the bin's share of photos).

Scaling data is SYNTHETIC: per-class clusters around random unit-norm 512-d centres
(bench/synthetic.py), 20 training + 10 held-out photos per student. Accuracy and
calibration are also compared on REAL embeddings: ORL (40 people x 10) and LFW (158 people,
10-20 photos each) from ../shared/data, SCRFD 2.5g crops embedded by the offline dlib model
(128-d), 5-fold stratified cross-validation, every classifier on the same folds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))

from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from synthetic import synthetic_embeddings
from train_baseline import fit_model_baseline

from backend.recognizer.openset import features
from retraining.train import FittedModel, fit_calibrator, fit_model

SPREADS = (0.9, 3.5, 4.2)
ECE_BINS = 15


@dataclass(frozen=True)
class Fit:
    """One classifier fitted and scored on held-out photos."""

    fit_s: float
    accuracy: float
    log_loss: float
    ece: float
    beta: float
    classify_ms: float | None = None


def split(n_students: int, spread: float, seed: int = 3):
    X, y = synthetic_embeddings(n_students, 30, spread=spread, seed=seed)
    tr = np.arange(len(X)) % 30 < 20
    return X[tr], y[tr], X[~tr], y[~tr]


def expected_calibration_error(proba: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ_bins (share of photos) · |mean top-class probability − accuracy|, equal-width bins."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == truth
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(confidence[which == b].mean() - correct[which == b].mean()) * np.mean(which == b)
            for b in np.unique(which)
        )
    )


def scored(model: FittedModel, fit_s: float, Xte: np.ndarray, yte: np.ndarray) -> Fit:
    proba = model.predict_proba(Xte)
    truth = np.searchsorted(model.classes, yte)
    return Fit(
        fit_s,
        float(np.mean(proba.argmax(axis=1) == truth)),
        float(log_loss(truth, proba, labels=np.arange(len(model.classes)))),
        expected_calibration_error(proba, truth),
        float(model.classifier.calibrated_classifiers_[0].calibrators[0].beta_),
    )


def timed_fit(fit: Callable[[np.ndarray, np.ndarray], FittedModel], Xtr, ytr, repeat: int) -> tuple[FittedModel, float]:
    times = []
    for _ in range(repeat):
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            t = time.perf_counter()
            model = fit(Xtr, ytr)
            times.append(time.perf_counter() - t)
    return model, statistics.median(times)


def fast(Xtr, ytr, Xte, yte, repeat: int = 1) -> Fit:
    """fit_model: fit time, held-out scores, and classify time per face with the open-set calibrator."""
    model, fit_s = timed_fit(fit_model, Xtr, ytr, repeat)
    result = scored(model, fit_s, Xte, yte)
    # attach an open-set calibrator like the pipeline does, so classify() pays for it too
    proba = model.predict_proba(Xte)
    pred = model.classes[proba.argmax(axis=1)]
    calibrator = fit_calibrator(features(proba, Xte, model.open_set.centres), pred == yte)
    model = replace(model, open_set=replace(model.open_set, calibrator=calibrator))
    t = time.perf_counter()
    for i in range(200):
        model.recognize(Xte[i % len(Xte)])
    return replace(result, classify_ms=(time.perf_counter() - t) / 200 * 1000)


def previous(Xtr, ytr, Xte, yte, repeat: int = 1) -> Fit:
    """The previous recipe (bench/train_baseline.py) on the same data."""
    model, fit_s = timed_fit(fit_model_baseline, Xtr, ytr, repeat)
    return scored(model, fit_s, Xte, yte)


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


def real_embeddings(name: str, keep: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SCRFD 2.5g + dlib embeddings of ../shared/data/<name>, through the pipeline's extraction."""
    if keep is not None and (keep / f"{name}.npz").exists():
        stored = np.load(keep / f"{name}.npz")
        return stored["X"], stored["y"]
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
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        np.savez(keep / f"{name}.npz", X=ex.embeddings, y=ex.student_ids)
    return ex.embeddings, ex.student_ids


@dataclass(frozen=True)
class RealRow:
    people: int
    photos: int
    new: Fit
    old: Fit
    svc_fit_s: float
    svc_acc: float


def real_comparison(name: str, keep: Path | None) -> RealRow:
    """5-fold fit_model, the previous recipe and the SVC recipe on the same real embeddings:
    mean fit time, and accuracy / log loss / ECE over all held-out photos of the five folds."""
    X, y = real_embeddings(name, keep)
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))
    pooled: dict[str, list] = {"new": [], "old": []}
    times = {"new": 0.0, "old": 0.0}
    betas: dict[str, list[float]] = {"new": [], "old": []}
    svc_s, svc_right = 0.0, 0
    for tr, te in folds:
        for label, fit in (("new", fit_model), ("old", fit_model_baseline)):
            t = time.perf_counter()
            model = fit(X[tr], y[tr])
            times[label] += time.perf_counter() - t
            pooled[label].append((model.predict_proba(X[te]), np.searchsorted(model.classes, y[te])))
            betas[label].append(float(model.classifier.calibrated_classifiers_[0].calibrators[0].beta_))
        r = reference(X[tr], y[tr], X[te], y[te])
        svc_s += r[0]
        svc_right += round(r[1] * len(te))

    def fit_of(label: str) -> Fit:
        proba = np.concatenate([p for p, _ in pooled[label]])
        truth = np.concatenate([t for _, t in pooled[label]])
        return Fit(
            times[label] / len(folds),
            float(np.mean(proba.argmax(axis=1) == truth)),
            float(log_loss(truth, proba, labels=np.arange(proba.shape[1]))),
            expected_calibration_error(proba, truth),
            float(np.median(betas[label])),
        )

    return RealRow(len(np.unique(y)), len(X), fit_of("new"), fit_of("old"), svc_s / len(folds), svc_right / len(X))


def print_real(rows: list[tuple[str, RealRow]]) -> None:
    print("\nReal embeddings (SCRFD 2.5g + dlib 128-d), 5-fold stratified CV, same folds for all three")
    print("(fit s: mean per fold; accuracy, log loss, ECE over all held-out photos; beta: median of the folds)")
    print(
        f"{'data':>5} {'people':>6} {'photos':>6} | {'fit s':>6} {'prev s':>6} | {'acc':>7} {'prev acc':>8} "
        f"{'SVC acc':>7} | {'log loss':>9} {'prev':>9} | {'ECE':>8} {'prev':>8} | {'beta':>7} {'prev':>7} | "
        f"{'SVC fit s':>9}"
    )
    for name, r in rows:
        print(
            f"{name:>5} {r.people:>6} {r.photos:>6} | {r.new.fit_s:>6.2f} {r.old.fit_s:>6.2f} | "
            f"{r.new.accuracy:>7.2%} {r.old.accuracy:>8.2%} {r.svc_acc:>7.2%} | {r.new.log_loss:>9.3g} "
            f"{r.old.log_loss:>9.3g} | {r.new.ece:>8.3g} {r.old.ece:>8.3g} | {r.new.beta:>7.1f} {r.old.beta:>7.1f} | "
            f"{r.svc_fit_s:>9.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="SVC baseline at 200 students only")
    ap.add_argument("--no-svc", action="store_true", help="no SVC baseline (fit_model vs the previous recipe)")
    ap.add_argument("--large", action="store_true", help="add 5000 students")
    ap.add_argument("--real-only", action="store_true", help="only the ORL/LFW real-embedding comparison")
    ap.add_argument("--real-embeddings", type=Path, default=None, help="keep/reuse ORL and LFW embeddings here")
    ap.add_argument("--repeat", type=int, default=1, help="fits per row; the median time is reported")
    args = ap.parse_args()
    real = [(name, real_comparison(name, args.real_embeddings)) for name in ("orl", "lfw")]
    if args.real_only:
        print_real(real)
        return
    sizes = [200, 500, 2000] + ([5000] if args.large else [])
    svc_sizes = [] if args.no_svc else [200] if args.quick else [200, 500]
    rows = []
    for spread in SPREADS:
        for K in sizes:
            data = split(K, spread)
            new = fast(*data, repeat=args.repeat)
            old = previous(*data, repeat=args.repeat)
            svc = reference(*data) if K in svc_sizes else None
            rows.append((K, spread, new, old, svc))
            print(
                f"done {K} students spread {spread}: {new.fit_s:.1f} s vs {old.fit_s:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    print("\nSynthetic 512-d embeddings, 20 train + 10 held-out photos per student (2 CPU cores)")
    print("Training: fit_model vs the previous recipe (bench/train_baseline.py), same data, same run")
    print(
        f"{'students':>8} {'spread':>6} | {'fit s':>7} {'prev s':>7} {'speedup':>7} | {'acc':>7} {'prev acc':>8} | "
        f"{'classify ms':>11}"
    )
    for K, spread, new, old, _ in rows:
        print(
            f"{K:>8} {spread:>6} | {new.fit_s:>7.2f} {old.fit_s:>7.2f} {old.fit_s / new.fit_s:>6.2f}x | "
            f"{new.accuracy:>7.2%} {old.accuracy:>8.2%} | {new.classify_ms:>11.3f}"
        )
    print(
        "\nCalibration of the SVM probabilities on the held-out photos (log loss; ECE, 15 bins; beta = 1/temperature)"
    )
    print(
        f"{'students':>8} {'spread':>6} | {'log loss':>9} {'prev':>9} | {'ECE':>8} {'prev':>8} | {'beta':>7} {'prev':>7}"
    )
    for K, spread, new, old, _ in rows:
        print(
            f"{K:>8} {spread:>6} | {new.log_loss:>9.4g} {old.log_loss:>9.4g} | {new.ece:>8.4g} {old.ece:>8.4g} | "
            f"{new.beta:>7.2f} {old.beta:>7.2f}"
        )
    if svc_sizes:
        print("\nfit_model vs CalibratedClassifierCV(SVC(kernel='linear')) (one-vs-one), same data")
        print(
            f"{'students':>8} {'spread':>6} | {'fit s':>7} {'acc':>7} | {'SVC fit s':>9} {'SVC acc':>7} {'SVC ms':>7} | "
            f"{'fit speedup':>11} {'acc diff pp':>11}"
        )
        for K, spread, new, _, r in rows:
            if r is not None:
                print(
                    f"{K:>8} {spread:>6} | {new.fit_s:>7.2f} {new.accuracy:>7.2%} | {r[0]:>9.1f} {r[1]:>7.2%} "
                    f"{r[2]:>7.2f} | {r[0] / new.fit_s:>10.1f}x {100 * (new.accuracy - r[1]):>+11.2f}"
                )
    print_real(real)
    print(
        "targets: fit 500x20 <= 5 s, 2000x20 <= 30 s at every spread, 5000x20 <= 90 s; accuracy >= SVC - 0.5 pp; "
        "classify <= 1 ms at 500; calibration (log loss, ECE) as before"
    )


if __name__ == "__main__":
    main()
