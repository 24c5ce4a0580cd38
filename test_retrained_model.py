"""Check the published face model and show it working.

    python test_retrained_model.py                          # check the published model
    python test_retrained_model.py --folder photos/         # ... and recognise faces in these photos
    python test_retrained_model.py --images a.jpg b.jpg --strict

Checks: artifact files present, manifest hashes, loading through the backend's loader,
stored embeddings L2-normalised, scaler statistics, agreement of the model with the
training labels (models/X.npy vs models/y.npy). Prints PASS / WARN / FAIL lines and a
summary; exit code 0 when nothing failed (with --strict: nothing failed or warned).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from backend.recognizer.errors import ImageError, ModelLoadError, RetrainError
from backend.recognizer.images import is_image_name, silence_decompression_warning
from backend.recognizer.loader import FaceRecognizer, pickle_refused_message
from backend.recognizer.manifest import verify_manifest
from backend.recognizer.paths import OutputPaths

#: Share of stored embeddings the model must label like the training data (below: WARN / FAIL).
AGREEMENT_WARN = 0.90
AGREEMENT_FAIL = 0.50


class Checks:
    """Collects PASS / WARN / FAIL lines."""

    def __init__(self) -> None:
        self.counts = {"PASS": 0, "WARN": 0, "FAIL": 0}

    def line(self, status: str, message: str) -> None:
        self.counts[status] += 1
        print(f"[{status}] {message}")

    def ok(self, message: str) -> None:
        self.line("PASS", message)

    def warn(self, message: str) -> None:
        self.line("WARN", message)

    def fail(self, message: str) -> None:
        self.line("FAIL", message)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Verify the published face recognition model and optionally run it on photos.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--output-root", default=None, help="output root used by retrain_model.py (default: this project's folder)"
    )
    p.add_argument("--images", nargs="+", default=[], metavar="PATH", help="photos to recognise faces in")
    p.add_argument("--folder", default=None, metavar="DIR", help="recognise faces in every photo under this folder")
    p.add_argument("--strict", action="store_true", help="exit non-zero on any warning, not only on failures")
    p.add_argument("--weights-dir", default=None, help="folder with offline model weight files")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device for the face models")
    p.add_argument("--sample", type=int, default=500, help="stored embeddings to classify (0: all)")
    p.add_argument("--top-k", type=int, default=3, help="alternatives printed per face")
    p.add_argument("--verbose", action="store_true", help="show library log messages")
    return p


def check_files(checks: Checks, paths: OutputPaths) -> bool:
    required = [paths.model_npz, paths.model_json, paths.manifest]
    missing = [p for p in required if not p.is_file()]
    if missing and paths.bundle.is_file() and paths.manifest.is_file() and not paths.model_npz.exists():
        checks.fail(pickle_refused_message(paths.classifier_dir))  # the loader's own words
        return False
    if missing:
        checks.fail(
            "model files missing: "
            + ", ".join(str(p) for p in missing)
            + ". Run python retrain_model.py (or --rollback to restore the previous model)."
        )
        return False
    checks.ok(f"model files present in {paths.classifier_dir}")
    for p in (paths.X, paths.y):
        if not p.is_file():
            checks.warn(f"{p} missing: the stored-embedding checks are skipped")
    return True


def check_manifest(checks: Checks, paths: OutputPaths) -> None:

    try:
        manifest = verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)
    except ModelLoadError as err:
        checks.fail(f"integrity: {err}")
        return
    checks.ok(f"integrity: {len(manifest.files)} files match manifest.json (model {manifest.model_version})")


def check_embeddings(checks: Checks, recognizer: FaceRecognizer, paths: OutputPaths, sample: int) -> None:
    if not (paths.X.is_file() and paths.y.is_file()):
        return
    try:
        X = np.load(paths.X, allow_pickle=False)
        y = np.load(paths.y, allow_pickle=False).astype(str)
    except (OSError, ValueError) as err:
        checks.fail(f"cannot read {paths.X} / {paths.y}: {err}")
        return
    info = recognizer.model_metadata
    dim = info.embedding_dim
    if X.ndim != 2 or X.shape[1] != dim or len(X) != len(y):
        checks.fail(f"X.npy has shape {X.shape} and y.npy {len(y)} rows; the model expects N×{dim}. Re-run retraining.")
        return
    norms = np.linalg.norm(X, axis=1)
    bad = int(np.sum(np.abs(norms - 1.0) > 1e-3))
    if bad or not np.all(np.isfinite(X)):
        checks.fail(f"{bad} of {len(X)} stored embeddings are not L2-normalised (or not finite)")
    else:
        checks.ok(f"{len(X)} stored embeddings of {dim} dimensions, all L2-normalised")

    model = recognizer._state.loaded.model  # a diagnostic tool may look inside
    mean, scale = np.asarray(model.mean, dtype=np.float64), np.asarray(model.scale, dtype=np.float64)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        checks.fail("scaler statistics are not finite / positive: the model is damaged. Re-run retraining.")
    else:
        drift = float(np.max(np.abs(mean - X.mean(axis=0))) / max(float(np.median(scale)), 1e-12))
        if drift > 0.25:
            checks.warn(
                f"scaler mean differs from the stored embeddings' mean ({drift:.2f} std): "
                "X.npy may not be the data this model was trained on"
            )
        else:
            checks.ok(f"scaler statistics finite and consistent with X.npy (max drift {drift:.3f} std)")

    rows = np.arange(len(X))
    if sample and len(rows) > sample:
        rows = np.sort(np.random.default_rng(0).choice(rows, size=sample, replace=False))
    results = recognizer.classify(X[rows], top_k=1)
    top1 = np.array([r.top_k[0].student_id for r in results])
    agreement = float(np.mean(top1 == y[rows]))
    accepted = float(np.mean([r.accepted for r in results]))
    message = (
        f"classify on {len(rows)} stored embeddings: {agreement:.1%} agree with y.npy, "
        f"{accepted:.1%} above the threshold {recognizer.threshold:.2f}"
    )
    if agreement < AGREEMENT_FAIL:
        checks.fail(message + ". The model does not recognise its own training photos: re-run retraining.")
    elif agreement < AGREEMENT_WARN:
        checks.warn(message)
    else:
        checks.ok(message)


def photo_list(images: list[str], folder: str | None) -> list[Path]:

    out = [Path(p) for p in images]
    if folder:
        out += sorted(
            p for p in Path(folder).rglob("*") if p.is_file() and is_image_name(p) and not p.name.startswith(".")
        )
    return out


def run_photos(checks: Checks, recognizer: FaceRecognizer, photos: list[Path], top_k: int) -> None:

    n_faces = 0
    for path in photos:
        try:
            faces = recognizer.identify(path, top_k=top_k)
        except ImageError as err:
            checks.warn(f"{path}: {err}")
            continue
        except RetrainError as err:
            checks.fail(f"cannot start face recognition: {err}")
            return
        if not faces:
            checks.warn(f"{path}: no face found")
            continue
        n_faces += len(faces)
        print(f"{path}: {len(faces)} face(s)")
        for i, face in enumerate(faces, 1):
            box = ", ".join(f"{v:.0f}" for v in face.box or ())
            verdict = f"{face.student_id} ({face.student_name})" if face.accepted else "Unknown"
            print(
                f"  face {i} at [{box}]: {verdict}, confidence {face.confidence:.2f} "
                f"(compared with the threshold; SVM probabilities of the closest students below)"
            )
            for rank, cand in enumerate(face.top_k, 1):
                print(f"      {rank}. {cand.student_id:<12} {cand.student_name:<24} {cand.confidence:.3f}")
    if photos:
        checks.ok(f"identify ran on {len(photos)} photo(s), {n_faces} face(s) found")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    silence_decompression_warning()
    from backend.recognizer.loader import FaceRecognizer

    paths = OutputPaths.at(args.output_root)
    checks = Checks()
    print(f"Checking the model published under {paths.root}")
    if check_files(checks, paths):
        check_manifest(checks, paths)
        try:
            recognizer = FaceRecognizer.load(
                paths.root, device=args.device, weights_dir=args.weights_dir, require_manifest=True, allow_pickle=False
            )
        except ModelLoadError as err:
            checks.fail(f"load: {err}")
        else:
            meta = recognizer.model_metadata
            checks.ok(
                f"loaded model {meta.model_version} (created {meta.created_at}): "
                f"{len(meta.students)} students, {meta.embedding_dim}-d embeddings, threshold {recognizer.threshold:.2f}"
            )
            if meta.forced:
                gate = meta.quality_gate
                checks.warn(
                    "this model was published with --force although the quality gate refused it: "
                    + "; ".join(c.detail for c in (gate.checks if gate else ()) if not c.passed)
                )
            for warning in meta.weights_warnings:
                checks.warn(f"weights: {warning}")
            check_embeddings(checks, recognizer, paths, args.sample)
            photos = photo_list(args.images, args.folder)
            if args.folder and not Path(args.folder).is_dir():
                checks.fail(f"--folder {args.folder} is not a folder")
            for p in photos:
                if not p.exists():
                    checks.warn(f"{p}: file not found")
            run_photos(checks, recognizer, [p for p in photos if p.exists()], args.top_k)
    c = checks.counts
    failed = c["FAIL"] > 0 or (args.strict and c["WARN"] > 0)
    print(
        f"\nSummary: {c['PASS']} passed, {c['WARN']} warning(s), {c['FAIL']} failed -> {'FAIL' if failed else 'PASS'}"
    )
    if failed and c["FAIL"]:
        print(
            "Fix: re-run retraining (python retrain_model.py) or restore the previous model (python retrain_model.py --rollback)."
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
