"""The one pass: index → extract → evaluate → train → report → publish.

Each stage lives in its own module and passes plain data to the next; this module only
wires them and decides the order that keeps users safe: everything that can fail
(dataset, weights, extraction, training, verification) happens BEFORE any published
artifact is touched, and publishing itself is an atomic swap (``artifacts.publish``).
"""

from __future__ import annotations

import gc
import logging
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from . import artifacts
from . import cache as cache_mod
from .backends import BackendConfig, build_detector, build_embedder, describe
from .dataset import DatasetIndex, ImageRecord, file_sha256, index_dataset, write_labels_csv
from .errors import TrainingError
from .evaluate import evaluate
from .extract import Extraction, extract_embeddings
from .paths import DEFAULT_DATA_DIR, OutputPaths
from .plots import write_plots
from .quality import Finding, few_photo_findings, label_findings, near_duplicates, photo_findings
from .report import RunSummary, write_metrics, write_model_readme, write_skipped_csv, write_training_report
from .train import fit_model

log = logging.getLogger(__name__)

LIBRARIES = (
    "numpy",
    "scikit-learn",
    "torch",
    "facenet-pytorch",
    "insightface",
    "onnxruntime",
    "opencv-python",
    "pillow",
    "dlib-bin",
    "joblib",
)


@dataclass(frozen=True)
class RunOptions:
    """Everything one run needs; the CLI fills it from its arguments."""

    data_dir: Path | None = None
    output_root: Path | None = None
    threshold: float | None = None
    test_size: float = 0.2
    max_far: float = 0.01
    seed: int = 42
    batch_size: int = 32
    backend: BackendConfig = field(default_factory=BackendConfig)
    keep_versions: int = 1
    progress: bool = True
    lock_timeout: float = 0.0
    # --- embedding cache / extraction speed (issue 4)
    use_cache: bool = True  # False (--no-cache): re-embed every photo; the cache is rewritten fresh
    workers: int = 1  # decode/detect threads running ahead of the embedder (0: serial)

    def resolved_paths(self) -> tuple[Path, OutputPaths]:
        paths = OutputPaths.at(self.output_root)
        data_dir = Path(self.data_dir) if self.data_dir else paths.root / DEFAULT_DATA_DIR
        return data_dir, paths


@dataclass
class RunResult:
    """What a finished run produced (the CLI prints it)."""

    summary: RunSummary
    artifacts: list[Path]
    removed: list[Path]
    archived_to: Path | None


@dataclass
class DryRunResult:
    data_dir: Path
    index: DatasetIndex
    would_replace: list[Path]


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def prior_artifacts(paths: OutputPaths) -> list[Path]:
    """Published files that a new model will replace (kept as the rollback version)."""
    found = {p for p in paths.legacy_artifacts() if p.exists()}
    if paths.classifier_dir.is_dir():
        found.update(p for p in paths.classifier_dir.iterdir())
    for p in (paths.metrics_json, paths.skipped_csv, paths.plots_dir):
        if p.exists():
            found.add(p)
    return sorted(found)


def duplicate_groups(records: list[ImageRecord]) -> list[list[Path]]:
    """Byte-identical photos filed under more than one student (pass the EMBEDDED photos:
    two broken or empty files are not "the same photo enrolled twice")."""
    by_hash: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for rec in records:
        try:
            by_hash[file_sha256(rec.path)].append((rec.student_id, rec.path))
        except OSError:
            continue  # unreadable: decode will report it
    return [[p for _, p in group] for group in by_hash.values() if len({sid for sid, _ in group}) > 1]


def data_quality(extraction: Extraction, summary: RunSummary) -> list[Finding]:
    """Every data-quality finding of this run, in the order the report lists them."""
    paths = [r.path for r in extraction.records]
    labels = extraction.student_ids
    findings = label_findings(extraction.embeddings, labels, paths)
    findings += [
        Finding(
            "duplicate_file", str(g[0]), "the same file is in several student folders: " + ", ".join(str(p) for p in g)
        )
        for g in summary.duplicate_groups
    ]
    findings += near_duplicates(extraction.embeddings, labels, paths)
    findings += few_photo_findings(extraction.counts())
    findings += photo_findings(
        paths,
        [f.face_size for f in extraction.faces],
        [f.sharpness for f in extraction.faces],
        [f.num_faces for f in extraction.faces],
    )
    return findings


def _save_cache(cache: cache_mod.EmbeddingCache, paths: OutputPaths, *, prune: bool) -> None:
    """Write the embedding cache (a stale one, of another fingerprint, is replaced).

    Entries of photos that are no longer in the data folder are dropped only after a
    successful publish, so a failed run never costs the previous cache."""
    try:
        cache.save(paths.cache_dir, keep=cache.used if prune else None)
    except OSError as err:
        log.warning("Could not write the embedding cache in %s (%s); the next run re-embeds", paths.cache_dir, err)


def dry_run(options: RunOptions) -> DryRunResult:
    """Index the data folder and list what a real run would replace; writes nothing."""
    data_dir, paths = options.resolved_paths()
    return DryRunResult(data_dir, index_dataset(data_dir), prior_artifacts(paths))


def run(options: RunOptions) -> RunResult:
    """Retrain from the student folders and publish the new model. Raises RetrainError subclasses."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data_dir, paths = options.resolved_paths()
    log.info("Data folder: %s", data_dir)
    log.info("Output root: %s", paths.root)

    t = time.perf_counter()
    index = index_dataset(data_dir)
    timings["index"] = time.perf_counter() - t
    paths.backend_models.mkdir(parents=True, exist_ok=True)

    with artifacts.RetrainLock(paths, timeout=options.lock_timeout):
        for note in artifacts.recover(paths):
            log.warning("%s", note)
        t = time.perf_counter()
        detector = build_detector(options.backend)  # fails early (weights) before anything is touched
        embedder = build_embedder(options.backend)
        timings["load_models"] = time.perf_counter() - t

        t = time.perf_counter()
        # --- embedding cache (issue 4): read only under the same pipeline fingerprint
        fingerprint = cache_mod.pipeline_fingerprint(detector, embedder)
        if options.use_cache:
            cache = cache_mod.load_cache(paths.cache_dir, fingerprint, embedder.dim)
        else:
            cache = cache_mod.EmbeddingCache(fingerprint, embedder.dim)
        extraction = extract_embeddings(
            index.records,
            detector,
            embedder,
            batch_size=options.batch_size,
            progress=options.progress,
            total=len(index.records),
            workers=options.workers,
            cache=cache,
        )
        log.info("Embedding cache: %d photos reused, %d embedded", cache.hits, cache.misses)
        _save_cache(cache, paths, prune=False)  # keep the extraction work even if a later stage fails
        # --- end embedding cache
        timings["extract"] = time.perf_counter() - t
        # the face models are done: give their memory back before training (20 328 photos of
        # 1264 students: FaceNet + SCRFD held ~700 MiB while the classifier fit needed ~640 more)
        models = describe(detector, embedder)
        detector_file = getattr(detector, "model_file", None)
        del detector, embedder
        gc.collect()
        embedded = extraction.counts()
        excluded = [s.student_id for s in index.students if embedded.get(s.student_id, 0) == 0]
        if len(embedded) < 2:
            raise TrainingError(
                f"Only {len(embedded)} student(s) have usable photos ({len(extraction.records)} photos embedded, "
                f"{len(extraction.skipped)} skipped); at least two are needed. The previous model was kept. "
                "Check the photos listed in the log."
            )
        X = extraction.embeddings
        y = extraction.student_ids

        t = time.perf_counter()
        evaluation = evaluate(X, y, test_size=options.test_size, seed=options.seed, max_far=options.max_far)
        timings["evaluate"] = time.perf_counter() - t
        t = time.perf_counter()
        model = fit_model(X, y, seed=options.seed)
        if model.open_set is not None and evaluation.open_set is not None:
            model.open_set.calibrator = evaluation.open_set.calibrator
        timings["train"] = time.perf_counter() - t

        threshold = options.threshold if options.threshold is not None else evaluation.recommended_threshold
        source = "set with --threshold" if options.threshold is not None else "recommended"
        version = artifacts.new_version_id()
        created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        names = index.names()
        summary = RunSummary(
            version=version,
            created_at=created_at,
            data_dir=data_dir,
            output_root=paths.root,
            models=models,
            index=index,
            extraction=extraction,
            evaluation=evaluation,
            threshold=float(threshold),
            threshold_source=source,
            excluded_students=excluded,
            duplicate_groups=duplicate_groups(extraction.records),
            timings=timings,
            prior_artifacts=prior_artifacts(paths),
            library_versions=library_versions(),
        )
        summary.findings = data_quality(extraction, summary)
        bundle = {
            "format_version": 1,
            "classifier": model.classifier,
            "scaler": model.scaler,
            "label_encoder": model.label_encoder,
            "student_names": {sid: names[sid] for sid in model.classes},
            "threshold": float(threshold),
            "open_set": model.open_set.to_dict() if model.open_set is not None else None,
            "metadata": {
                "model_version": version,
                "created_at": created_at,
                "threshold": float(threshold),
                "recommended_threshold": evaluation.recommended_threshold,
                **models,
                "backend_config": {
                    "detector": options.backend.detector,
                    "embedder": options.backend.embedder,
                    "detector_model": str(Path(detector_file).resolve()) if detector_file else None,
                },
                "library_versions": summary.library_versions,
                "dataset": {
                    "data_dir": str(Path(data_dir).resolve()),
                    "num_students": len(model.classes),
                    "num_images": len(index.records),
                    "num_embedded": len(extraction.records),
                    "num_skipped": len(summary.all_skipped),
                    "excluded_students": excluded,
                },
                "metrics": {
                    "accuracy": evaluation.accuracy,
                    "n_train": evaluation.n_train,
                    "n_test": evaluation.n_test,
                },
                "students": {sid: names[sid] for sid in model.classes},
            },
        }

        t = time.perf_counter()
        stage = artifacts.begin_stage(paths, version)
        np.save(stage.models_dir / paths.X.name, X.astype(np.float32))
        np.save(stage.models_dir / paths.y.name, y)
        write_labels_csv(stage.models_dir / paths.labels_csv.name, index, embedded)
        artifacts.save_bundle(stage, bundle)
        final = [
            paths.bundle,
            paths.label_encoder,
            paths.classes,
            paths.manifest,
            paths.X,
            paths.y,
            paths.labels_csv,
            paths.report_txt,
            paths.model_readme,
            paths.metrics_json,
            paths.skipped_csv,
        ]
        timings["total"] = time.perf_counter() - started  # reports show the time up to publishing
        plot_files = write_plots(stage.models_dir / paths.plots_dir.name, evaluation)
        summary.plots = [p.relative_to(stage.models_dir) for p in plot_files]
        final += [paths.models_dir / p for p in summary.plots]
        write_training_report(stage.models_dir / paths.report_txt.name, summary, final)
        write_model_readme(stage.models_dir / paths.model_readme.name, summary)
        write_metrics(stage.models_dir / paths.metrics_json.name, summary)
        write_skipped_csv(stage.models_dir / paths.skipped_csv.name, summary)

        from .loader import verify_model_dir

        published = artifacts.publish(paths, stage, verify=verify_model_dir, keep_versions=options.keep_versions)
        _save_cache(cache, paths, prune=True)  # only now drop photos that are gone
        timings["publish"] = time.perf_counter() - t
    log.info("Published model %s", version)
    return RunResult(summary, final, published.removed, published.archived_to)


def format_summary(result: RunResult) -> str:
    """The clean end-of-run summary the CLI prints."""
    s = result.summary
    ev = s.evaluation
    lines = [
        "",
        "Retraining finished",
        f"  students           : {len(s.extraction.counts())} trained ({len(s.index.students)} folders)",
        f"  photos             : {len(s.index.records)} found, {len(s.extraction.records)} embedded, "
        f"{len(s.all_skipped)} skipped",
        f"  held-out accuracy  : {'n/a' if ev.accuracy is None else f'{ev.accuracy:.1%}'} on {ev.n_test} photos",
        f"  threshold          : {s.threshold:.2f} ({s.threshold_source}"
        + ("" if s.threshold_source == "recommended" else f"; recommended {ev.recommended_threshold:.2f}")
        + ")",
        f"  time               : {s.timings.get('total', 0):.1f} s",
    ]
    if s.excluded_students:
        lines.append(f"  EXCLUDED (no usable photo): {', '.join(s.excluded_students)}")
    if ev.confusion.size and len(ev.labels) <= 12:
        from .report import confusion_lines

        lines += ["  confusion matrix:", *("    " + x for x in confusion_lines(ev))]
    if ev.open_set is not None:
        at = next((r for r in ev.open_set.sweep if abs(r.threshold - ev.recommended_threshold) < 1e-9), None)
        if at is not None:
            lines.append(
                f"  stranger safety    : {at.false_accept_rate:.1%} of strangers accepted at "
                f"{ev.recommended_threshold:.2f} (target <= {ev.open_set.max_far:.1%}: "
                f"{'met' if ev.open_set.target_reached else 'NOT met - see the report'})"
            )
    if s.findings:
        lines.append(f"  data quality       : {len(s.findings)} photo(s)/student(s) to check (see the report)")
    lines += ["  artifacts:", *(f"    {p}" for p in result.artifacts)]
    lines += [f"  previous artifacts removed ({len(result.removed)}):", *(f"    {p}" for p in result.removed)]
    if result.archived_to:
        lines.append(f"  previous model kept for rollback in {result.archived_to}")
    lines.append(f"  full report: {s.output_root / 'models' / 'training_report.txt'}")
    return "\n".join(lines)
