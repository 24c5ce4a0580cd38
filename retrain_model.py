#!/usr/bin/env python3
"""Retrain the SmartAttendance face model from the student photo folders, in one pass.

    python retrain_model.py                      # backend/dataset/processed -> backend/models/Classifier
    python retrain_model.py --dry-run            # show what would happen, touch nothing
    python retrain_model.py --rollback           # put the previous model back
    python retrain_model.py --upgrade-model      # convert models of earlier releases (pickles) to model.npz

See README.md and docs/RETRAINING_GUIDE.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import webbrowser
from pathlib import Path

from backend.recognizer.backends import DETECTORS, EMBEDDERS, BackendConfig
from backend.recognizer.embedder import RUNTIMES
from backend.recognizer.images import silence_decompression_warning
from backend.recognizer.paths import ModelFolder, OutputPaths
from backend.recognizer.weights import WEIGHTS_ENV
from retraining import erasure, outcome, pipeline, publish, upgrade
from retraining.console import format_erasure, format_summary
from retraining.gate import GateSettings
from retraining.lock import RetrainLock

#: Every default is the options dataclass's own, so the help and the library cannot disagree.
DEFAULTS = pipeline.RunOptions()


def default_workers() -> int:
    """Detection threads: half the cores (the other half feeds the embedder), 2 to 8.

    Measured (bench/bench_extract.py, LFW): on 2 cores 1 thread ahead 23.9 photos/s,
    2 threads 29.2 (each SCRFD session then runs 1 ORT thread instead of competing for
    both cores); on 16 cores 8 threads 354 photos/s, 12 threads 328."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


#: Loggers whose INFO lines a teacher sees: the stages of a run, and weight downloads (they take a while).
STAGE_LOGGERS = ("retraining.pipeline", "backend.recognizer.weights")


class _ConsoleFormat(logging.Formatter):
    """Stage lines as plain sentences; warnings and errors marked; --verbose shows where each came from."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if self.verbose:
            return f"{record.levelname} {record.name}: {text}"
        return text if record.levelno < logging.WARNING else f"{record.levelname}: {text}"


def configure_console(*, quiet: bool, verbose: bool) -> None:
    """A calm console: the stage lines, warnings and the summary; library internals only with --verbose."""
    silence_decompression_warning()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ConsoleFormat(verbose))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler], force=True)
    for name in STAGE_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if verbose:
        for noisy in ("PIL", "matplotlib", "urllib3", "filelock"):
            logging.getLogger(noisy).setLevel(logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="retrain_model.py",
        description="Index student photo folders, extract face embeddings, train and publish the face classifier.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with one sub-folder per student (STU001_First_Last); "
        "default: <output-root>/backend/dataset/processed",
    )
    p.add_argument(
        "--output-root",
        type=Path,
        default=None,
        help="where backend/models/Classifier and models/ are written; default: the project folder",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="confidence threshold to publish (0-1) instead of the recommended one",
    )
    p.add_argument(
        "--test-size",
        type=float,
        default=DEFAULTS.test_size,
        help="share of each student's photos held out for evaluation",
    )
    p.add_argument(
        "--max-far",
        type=float,
        default=DEFAULTS.max_far,
        help="target: highest acceptable share of strangers (not enrolled) accepted as a student; "
        "the recommended threshold is the one that meets it with the best recognition",
    )
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random seed (split, calibration)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="face crops embedded per batch")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default=DEFAULTS.backend.device, help="where the embedder runs"
    )
    p.add_argument(
        "--embedder-runtime",
        choices=RUNTIMES,
        default=DEFAULTS.backend.embedder_runtime,
        help="how FaceNet runs: auto (ONNX Runtime on the CPU, torch on CUDA), torch or onnxruntime",
    )
    p.add_argument(
        "--detector",
        choices=DETECTORS,
        default=DEFAULTS.backend.detector,
        help="face detector: scrfd (insightface buffalo_l det_10g) or mtcnn (offline, bundled)",
    )
    p.add_argument(
        "--detector-model", default=None, help="an SCRFD .onnx file to use instead of buffalo_l/det_10g.onnx"
    )
    p.add_argument(
        "--embedder",
        choices=EMBEDDERS,
        default=DEFAULTS.backend.embedder,
        help="facenet (512-d, vggface2) or dlib (128-d, offline, bundled)",
    )
    p.add_argument(
        "--weights-dir",
        default=None,
        help=f"folder with offline weight files (det_10g.onnx, 20180402-114759-vggface2.pt); also ${WEIGHTS_ENV}",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="ignore the embedding cache (models/cache) and re-embed every photo"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads decoding/detecting photos ahead of the embedder (0: one at a time; "
        f"default: half the CPU cores, 2 to 8: {default_workers()} here)",
    )
    p.add_argument(
        "--keep-versions", type=int, default=DEFAULTS.keep_versions, help="previous models kept for --rollback"
    )
    gate = p.add_argument_group("quality gate (a new model replaces the published one only if it is at least as good)")
    gate.add_argument(
        "--min-accuracy",
        type=float,
        default=DEFAULTS.gate.min_accuracy,
        help="refuse a model whose held-out accuracy is clearly below this share (0-1)",
    )
    gate.add_argument(
        "--max-regression",
        type=float,
        default=DEFAULTS.gate.max_regression,
        help="refuse a model more than this many percentage points less accurate than the published one",
    )
    gate.add_argument("--force", action="store_true", help="publish even if the quality gate refuses the model")
    gate.add_argument(
        "--review",
        action="store_true",
        help="build and check the model but publish nothing: it waits in backend/models/candidate/ for --promote",
    )
    gate.add_argument(
        "--promote", action="store_true", help="publish the model that --review left waiting (checked again), and stop"
    )
    p.add_argument(
        "--wait",
        type=float,
        default=DEFAULTS.lock_timeout,
        help="seconds to wait if another retraining run is publishing",
    )
    p.add_argument("--dry-run", action="store_true", help="index and list what would be replaced; touch nothing")
    p.add_argument(
        "--rollback",
        action="store_true",
        help="restore the previously published model and exit (refused if it holds a student who was erased "
        "or whose folder is gone; --force publishes it for the latter)",
    )
    p.add_argument(
        "--erase",
        action="append",
        metavar="STUDENT_ID",
        help="erase a student's face data (id or folder name; repeatable) from every model, kept version, cache "
        "and report under the output root, retraining the live model without them; their folder must be gone",
    )
    p.add_argument(
        "--keep-unpublished",
        action="store_true",
        help="keep --review candidates and rejected models after a model is published (by default they are removed)",
    )
    p.add_argument(
        "--upgrade-model",
        action="store_true",
        help="convert the published model and the kept versions of an earlier release (pickles) to "
        "model.npz + model.json without retraining, and exit",
    )
    p.add_argument("--no-download", action="store_true", help="never download weights; use local files only")
    p.add_argument("--quiet", action="store_true", help="only warnings, errors and the final summary")
    p.add_argument(
        "--open-report",
        dest="open_report",
        action="store_true",
        help="open models/report.html in the web browser at the end (when run at a terminal; retrain_clean does)",
    )
    p.add_argument(
        "--no-open",
        dest="open_report",
        action="store_false",
        default=argparse.SUPPRESS,
        help="do not open the report page",
    )
    p.add_argument(
        "--no-photos-in-report",
        action="store_true",
        help="models/report.html without face thumbnails (for schools that must not copy student photos)",
    )
    p.add_argument("--verbose", action="store_true", help="also the libraries' internal messages (for bug reports)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        parser.error("--threshold must be between 0 and 1")
    if not 0.0 < args.test_size < 1.0:
        parser.error("--test-size must be between 0 and 1")
    if not 0.0 <= args.max_far < 1.0:
        parser.error("--max-far must be between 0 and 1 (e.g. 0.01 for 1%)")
    if args.keep_versions < 0:
        parser.error("--keep-versions must be 0 or more")
    if not 0.0 <= args.min_accuracy <= 1.0:
        parser.error("--min-accuracy must be between 0 and 1 (e.g. 0.5 for 50%)")
    if args.max_regression < 0:
        parser.error("--max-regression must be 0 or more (percentage points)")
    if sum((args.review, args.promote, args.rollback, args.dry_run, args.upgrade_model, bool(args.erase))) > 1:
        parser.error("choose one of --review, --promote, --rollback, --dry-run, --upgrade-model, --erase")
    configure_console(quiet=args.quiet, verbose=args.verbose)

    workers = default_workers() if args.workers is None else max(0, args.workers)

    options = pipeline.RunOptions(
        data_dir=args.data_dir,
        output_root=args.output_root,
        threshold=args.threshold,
        test_size=args.test_size,
        max_far=args.max_far,
        seed=args.seed,
        batch_size=args.batch_size,
        keep_versions=args.keep_versions,
        progress=not args.quiet and sys.stderr.isatty(),  # a log file gets the stage lines, not bar redraws
        lock_timeout=args.wait,
        use_cache=not args.no_cache,
        workers=workers,
        gate=GateSettings(min_accuracy=args.min_accuracy, max_regression=args.max_regression, force=args.force),
        review=args.review,
        photos_in_report=not args.no_photos_in_report,
        keep_unpublished=args.keep_unpublished,
        backend=BackendConfig(
            detector=args.detector,
            embedder=args.embedder,
            device=args.device,
            weights_dir=args.weights_dir,
            detector_model=args.detector_model,
            allow_download=not args.no_download,
            embedder_runtime=args.embedder_runtime,
            detector_sessions=max(1, workers),
        ),
    )
    _, paths = options.resolved_paths()
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, never a crash
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        return _act(args, options)
    except BaseException as err:  # every way a run can end: one ERROR line, a documented exit code
        if isinstance(err, SystemExit):
            raise
        ending = outcome.failure(err, paths)
        print(f"ERROR: {ending.message}", file=sys.stderr)
        return ending.code


def _act(args: argparse.Namespace, options: pipeline.RunOptions) -> int:
    if args.upgrade_model:
        return _upgrade(options, args.wait)
    if args.rollback:
        restored = pipeline.rollback(options)
        print(f"Rolled back: model {restored.version} is live again.")
        return 0
    if args.erase:
        data_dir, paths = options.resolved_paths()

        def retrain() -> str:
            return pipeline.run(dataclasses.replace(options, review=False)).summary.version

        done = erasure.erase(paths, data_dir, args.erase, retrain=retrain, lock_timeout=args.wait)
        print(format_erasure(done, paths.root))
        return 0
    if args.dry_run:
        dry = pipeline.dry_run(options)
        print(f"Dry run: {len(dry.index.students)} students, {len(dry.index.records)} photos in {dry.data_dir}")
        for s in dry.index.students:
            print(f"  {s.student_id:<12} {s.num_images:>4} photos  {s.student_name}")
        print(f"A real run would replace ({len(dry.would_replace)}):")
        for p in dry.would_replace:
            print(f"  {p}")
        print("Nothing was changed.")
        return 0
    if args.promote:
        promoted = pipeline.promote(options)
        print(f"Promoted: model {promoted.version} is live (previous model kept in {promoted.archived_to}).")
        return 0
    result = pipeline.run(options)
    print(format_summary(result))
    page = (
        ModelFolder.under(result.candidate)
        if result.candidate
        else OutputPaths.at(result.summary.output_root).published
    ).report_html
    if args.open_report and sys.stdout.isatty() and page.is_file():
        webbrowser.open(page.as_uri())
    return 0


def _upgrade(options: pipeline.RunOptions, wait: float) -> int:
    """--upgrade-model: every model folder converted; exit 1 (one ERROR line) if the published one was not."""
    _, paths = options.resolved_paths()
    with RetrainLock(paths, timeout=wait):  # refuses a link in the output layout first
        for note in publish.recover(paths):
            logging.getLogger("retrain_model").warning("%s", note)
        results = upgrade.upgrade_all(paths)
    if not results:
        print(
            f"ERROR: no model found in {paths.backend_models}. Run python retrain_model.py to train one.",
            file=sys.stderr,
        )
        return 1
    for r in results:
        what = {"upgraded": "converted to model.npz + model.json", "already": "already model.npz + model.json"}
        print(f"  {r.classifier_dir}: {what.get(r.status, 'NOT converted: ' + r.detail)}")
    failed = [r for r in results if r.status == "failed"]
    if failed:
        print(
            f"ERROR: {len(failed)} model folder(s) could not be converted (listed above; they are unchanged). "
            "Re-run retraining (python retrain_model.py) to replace the published model, or delete an old version "
            "you no longer need.",
            file=sys.stderr,
        )
        return 1
    print(
        f"Upgraded: {sum(r.status == 'upgraded' for r in results)} model folder(s) converted; the backend now "
        "loads them without reading a pickle."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
