#!/usr/bin/env python3
"""Retrain the SmartAttendance face model from the student photo folders, in one pass.

    python retrain_model.py                      # backend/dataset/processed -> backend/models/Classifier
    python retrain_model.py --demo               # try it on the demo photos (demo/photos -> demo/output)
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
from backend.recognizer.paths import PROJECT_ROOT, ModelFolder, OutputPaths
from backend.recognizer.weights import WEIGHTS_ENV
from retraining import erasure, outcome, pipeline, upgrade
from retraining.gate import GateSettings
from retraining.lock import locked
from retraining.presentation.console import format_dry_run, format_erasure, format_summary

#: Every default is the options dataclass's own, so the help and the library cannot disagree.
DEFAULTS = pipeline.RunOptions()


def default_workers() -> int:
    """Detection threads: half the cores (the other half feeds the embedder), 2 to 8.

    Measured (bench/bench_extract.py, LFW): on 2 cores 1 thread ahead 23.9 photos/s,
    2 threads 29.2 (each SCRFD session then runs 1 ORT thread instead of competing for
    both cores); on 16 cores 8 threads 354 photos/s, 12 threads 328."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


#: Loggers whose INFO lines a teacher sees: the stages of a run, and weight downloads (they take a while).
STAGE_LOGGERS = ("retraining.pipeline", "retraining.erasure", "backend.recognizer.weights")


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


#: The demo: photos shipped with the program, trained with the offline face models, written apart
#: from the school's own model.
DEMO_ROOT = PROJECT_ROOT / "demo"
DEMO_BACKEND = ("mtcnn", "dlib")


def demo_paths() -> tuple[Path, Path]:
    """(photos, output root) of ``--demo``: inside the program's folder, wherever it is run from."""
    return DEMO_ROOT / "photos", DEMO_ROOT / "output"


class _HelpFormat(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """One default per option: ``(default: X)`` added from the option's own default, except where the
    help already says it, or where there is none to show (a switch, or a default worked out later)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is None or isinstance(action.default, bool):
            return text
        return super()._get_help_string(action)


USAGE = "retrain_model.py [--demo | --data-dir FOLDER] [options]"
DESCRIPTION = "Train, check and publish the face model from one folder per student."
EXAMPLES = """examples:
  python retrain_model.py --demo          first time: the demo photos
  python retrain_model.py                 train on backend/dataset/processed
  python retrain_model.py --review        check first; publish with --promote
  python retrain_model.py --erase STU004  a student left (folder moved out)
Every option, the report and the exit codes: docs/RETRAINING_GUIDE.md"""
#: Room for the longest option (``--embedder-runtime NAME``) beside its help.
HELP_POSITION = 27


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="retrain_model.py",
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=lambda prog: _HelpFormat(prog, max_help_position=HELP_POSITION),
        add_help=False,
    )
    data = p.add_argument_group("what to train on")
    data.add_argument("--demo", action="store_true", help="demo photos, offline models; output in demo/output")
    data.add_argument(
        "--data-dir",
        type=Path,
        metavar="FOLDER",
        help="student folders (default: backend/dataset/processed)",
    )
    data.add_argument(
        "--output-root",
        type=Path,
        metavar="FOLDER",
        help="where backend/models/, models/ go (default: here)",
    )
    data.add_argument("--threshold", type=float, metavar="T", help="confidence 0-1 to publish (default: recommended)")
    data.add_argument(
        "--test-size", type=float, default=DEFAULTS.test_size, metavar="SHARE", help="share of photos held out to test"
    )
    data.add_argument(
        "--max-far",
        type=float,
        default=DEFAULTS.max_far,
        metavar="SHARE",
        help="strangers the threshold may accept",
    )
    data.add_argument("--seed", type=int, default=DEFAULTS.seed, metavar="N", help="seed of the split and calibration")

    models = p.add_argument_group("face models")
    models.add_argument(
        "--detector",
        choices=DETECTORS,
        metavar="NAME",
        help=f"{' or '.join(DETECTORS)} (default: {DEFAULTS.backend.detector}; {DEMO_BACKEND[0]} with --demo)",
    )
    models.add_argument(
        "--embedder",
        choices=EMBEDDERS,
        metavar="NAME",
        help=f"{' or '.join(EMBEDDERS)} (default: {DEFAULTS.backend.embedder}; {DEMO_BACKEND[1]} with --demo)",
    )
    models.add_argument("--detector-model", metavar="FILE", help="an SCRFD .onnx instead of det_10g.onnx")
    models.add_argument("--weights-dir", metavar="FOLDER", help=f"weights folder (or ${WEIGHTS_ENV})")
    models.add_argument("--no-download", action="store_true", help="use local weight files only")
    devices = ("auto", "cpu", "cuda")
    models.add_argument(
        "--device",
        choices=devices,
        default=DEFAULTS.backend.device,
        metavar="NAME",
        help=f"embedder on {', '.join(devices)}",
    )
    models.add_argument(
        "--embedder-runtime",
        choices=RUNTIMES,
        default=DEFAULTS.backend.embedder_runtime,
        metavar="NAME",
        help=f"FaceNet on {', '.join(RUNTIMES)}",
    )
    models.add_argument(
        "--batch-size", type=int, default=DEFAULTS.batch_size, metavar="N", help="face crops embedded at once"
    )
    models.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"photo-reading threads, 0: none (default: {default_workers()} here)",
    )
    models.add_argument("--no-cache", action="store_true", help="re-embed every photo (ignore models/cache)")

    gate = p.add_argument_group("quality gate (a new model must be at least as good as the one in service)")
    gate.add_argument(
        "--min-accuracy",
        type=float,
        default=DEFAULTS.gate.min_accuracy,
        metavar="SHARE",
        help="refuse a model clearly less accurate",
    )
    gate.add_argument(
        "--max-regression",
        type=float,
        default=DEFAULTS.gate.max_regression,
        metavar="PTS",
        help="refuse a model this many points worse",
    )
    gate.add_argument("--force", action="store_true", help="publish even if refused or nothing changed")

    modes = p.add_argument_group("modes (one at a time; without one: train and publish)")
    mode = modes.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="check all, list what would change; change nothing")
    mode.add_argument("--review", action="store_true", help="train and check; keep the model for --promote")
    mode.add_argument("--promote", action="store_true", help="publish the model that --review left waiting")
    mode.add_argument("--rollback", action="store_true", help="put the previous model back")
    mode.add_argument(
        "--erase",
        action="append",
        metavar="STUDENT_ID",
        help="erase a student's face data (repeatable)",
    )
    mode.add_argument("--upgrade-model", action="store_true", help="convert earlier releases' models, no retraining")

    out = p.add_argument_group("output and messages")
    out.add_argument(
        "--keep-versions",
        type=int,
        default=DEFAULTS.keep_versions,
        metavar="N",
        help="previous models kept for --rollback",
    )
    out.add_argument("--keep-unpublished", action="store_true", help="keep waiting and refused models after publishing")
    out.add_argument(
        "--wait", type=float, default=DEFAULTS.lock_timeout, metavar="SECONDS", help="wait for another run to finish"
    )
    out.add_argument(
        "--open-report",
        dest="open_report",
        action="store_true",
        help="open models/report.html at the end (or --no-open)",
    )
    out.add_argument(
        "--no-open", dest="open_report", action="store_false", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    out.add_argument("--no-photos-in-report", action="store_true", help="report.html without face thumbnails")
    out.add_argument("--quiet", action="store_true", help="only warnings, errors and the final summary")
    out.add_argument("--verbose", action="store_true", help="also the libraries' messages (for bug reports)")
    out.add_argument("-h", "--help", action="help", help="show this help and exit")
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
    if args.demo and args.data_dir is not None:
        parser.error("--demo trains on the demo photos: leave out --data-dir (or leave out --demo)")
    configure_console(quiet=args.quiet, verbose=args.verbose)

    workers = default_workers() if args.workers is None else max(0, args.workers)
    data_dir, output_root = args.data_dir, args.output_root
    detector, embedder = DEFAULTS.backend.detector, DEFAULTS.backend.embedder
    if args.demo:
        data_dir, demo_output = demo_paths()
        output_root = output_root or demo_output
        detector, embedder = DEMO_BACKEND

    options = pipeline.RunOptions(
        data_dir=data_dir,
        output_root=output_root,
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
        skip_unchanged=not args.force and not args.no_cache,  # --no-cache asks to embed every photo again
        backend=BackendConfig(
            detector=args.detector or detector,
            embedder=args.embedder or embedder,
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
    if args.demo and not (data_dir and data_dir.is_dir()):
        print(
            f"ERROR: The demo photos are missing: {data_dir} is not there (it ships with the program). Get a "
            "complete copy of the program, or train on your own photos without --demo.",
            file=sys.stderr,
        )
        return outcome.EXIT_ERROR
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

        def retrain() -> str:  # the live model holds the student: it is retrained even if nothing else changed
            result = pipeline.run(dataclasses.replace(options, review=False, skip_unchanged=False))
            return result.version if isinstance(result, pipeline.Unchanged) else result.summary.version

        done = erasure.erase(paths, data_dir, args.erase, retrain=retrain, lock_timeout=args.wait)
        print(format_erasure(done, paths.root))
        return 0
    if args.dry_run:
        print(format_dry_run(pipeline.dry_run(options)))
        return 0
    if args.promote:
        promoted = pipeline.promote(options)
        print(f"Promoted: model {promoted.version} is live (previous model kept in {promoted.archived_to}).")
        return 0
    result = pipeline.run(options)
    if isinstance(result, pipeline.Unchanged):
        print(result.message())
        return 0
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
    with locked(paths, wait, logging.getLogger("retrain_model")):  # refuses a link in the output layout first
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
