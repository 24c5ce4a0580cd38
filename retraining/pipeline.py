"""The one pass: index → extract → evaluate → train → report → publish.

Each stage lives in its own module and passes plain data to the next; this module only
wires them and decides the order that keeps users safe: everything that can fail
(dataset, weights, extraction, training, verification) happens BEFORE any published
artifact is touched, and publishing itself is an atomic swap (:func:`publish.publish`).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from backend.recognizer import weights as weight_files
from backend.recognizer.backends import BackendConfig, build_detector
from backend.recognizer.bundle import ModelBundle
from backend.recognizer.errors import ModelLoadError, WeightsNotFoundError
from backend.recognizer.hashing import sha256_bytes, sha256_file
from backend.recognizer.loader import LoadedModel, load_model_files, verify_model_dir
from backend.recognizer.manifest import verify_manifest
from backend.recognizer.metadata import (
    BackendChoice,
    DatasetSummary,
    FaceModels,
    Metrics,
    ModelMetadata,
    PresenceRule,
)
from backend.recognizer.paths import DEFAULT_DATA_DIR, PROJECT_ROOT, ModelFolder, OutputPaths
from backend.recognizer.weights import unofficial_weights

from . import publish
from .cache import FINGERPRINT_LIBRARIES
from .dataset import DatasetIndex, index_dataset, refuse_overlap
from .errors import ModelRefusedError, PublishError, TrainingError
from .evaluate import DEFAULT_MAX_FAR, evaluate
from .evidence import stranger_evidence
from .extract import extract_with_models, save_cache
from .face_data import FaceDataKept, erased_ids, not_enrolled_elsewhere
from .files import SHARED_DIR_MODE, estimate_output_bytes, private_mkdir, require_free_space
from .gate import GateSettings, candidate_from_folder, candidate_from_run, decide
from .lock import locked
from .plots import PLOT_NAMES, write_plots
from .presentation.html import photos_to_show, write_html_report
from .quality import data_quality, duplicate_groups, embeddings_distinct, student_similarity
from .report import new_models_files, write_reports
from .retention import (
    Cleared,
    clear_set_aside,
    photo_digests,
    prune_cache,
    recorded_data_dir,
    refuse_gone_students,
)
from .session_rates import summarize_sessions
from .subfolders import subfolder_findings
from .summary import RunSummary, StageClock
from .thumbnails import face_thumbnails
from .train import fit_model
from .verdict import stranger_verdict
from .versions import MODEL_LIBRARIES, library_versions

log = logging.getLogger(__name__)

#: Refused models kept in backend/models/rejected/ for inspection (the newest).
KEEP_REJECTED = 3


@dataclass(frozen=True)
class RunOptions:
    """Everything one run needs; the CLI fills it from its arguments (and shows these defaults)."""

    data_dir: Path | None = None
    output_root: Path | None = None
    threshold: float | None = None
    test_size: float = 0.2
    max_far: float = DEFAULT_MAX_FAR
    seed: int = 42
    batch_size: int = 32
    backend: BackendConfig = field(default_factory=BackendConfig)
    keep_versions: int = 1
    progress: bool = True
    lock_timeout: float = 0.0
    use_cache: bool = True  # False (--no-cache): re-embed every photo; the cache is rewritten fresh
    workers: int = 1  # decode/detect threads running ahead of the embedder (0: serial)
    gate: GateSettings = field(default_factory=GateSettings)
    review: bool = False  # build, check and keep the model as a candidate for --promote; publish nothing
    photos_in_report: bool = True  # False (--no-photos-in-report): report.html holds no face thumbnails
    keep_unpublished: bool = False  # True (--keep-unpublished): a publish leaves candidate/ and rejected/ models
    #: False (--force, and --erase's retraining): retrain even when the photos, options and code are
    #: those the model in service was trained from (see :func:`run_fingerprint`)
    skip_unchanged: bool = True

    def resolved_paths(self) -> tuple[Path, OutputPaths]:
        paths = OutputPaths.at(self.output_root)
        data_dir = Path(self.data_dir) if self.data_dir else paths.root / DEFAULT_DATA_DIR
        return data_dir, paths


@dataclass(frozen=True)
class RunResult:
    """What a finished run produced (the CLI prints it)."""

    summary: RunSummary
    artifacts: list[Path]  # where the model's files are now (published, or in the candidate folder)
    removed: list[Path]
    archived_to: Path | None
    candidate: Path | None = None  # --review: the folder where the model waits for --promote
    cleared: tuple[Cleared, ...] = ()  # candidate/rejected models removed because this model was published
    #: students no folder enrols whom a kept model still holds (after this run), with where
    not_enrolled: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def published(self) -> bool:
        return self.candidate is None


@dataclass(frozen=True)
class Unchanged:
    """A run that found nothing to do: the model in service was trained from exactly these photos,
    options, face models and code (the same :func:`run_fingerprint`)."""

    version: str  # the model in service
    data_dir: Path

    @property
    def reason(self) -> str:
        return f"the same photos in {self.data_dir}, the same options and the same program"

    def message(self) -> str:
        """What the CLI prints (exit code 0)."""
        return (
            f"Nothing changed since model {self.version}: {self.reason}, so no new model was trained and the model "
            "in service stays. Add, remove or replace photos and run again, or pass --force to retrain anyway."
        )


@dataclass(frozen=True)
class DryRunResult:
    """What a real run with the same options would do, found without loading a model or writing a file."""

    data_dir: Path
    index: DatasetIndex
    would_replace: list[Path]  # published files the swap moves away (publish.swap_plan: what the swap uses)
    keeps_previous: bool  # the replaced model is kept for --rollback (False: --keep-versions 0, or none)
    would_clear: list[Path]  # --review candidates and rejected models a publish removes
    unchanged: Unchanged | None = None  # nothing changed: the real run would stop there, publishing nothing
    interrupted_publish: bool = False  # the real run first finishes a publish that was interrupted


def dry_run(options: RunOptions) -> DryRunResult:
    """Do every check a real run does before it loads the face models (data folder, output layout, free
    space, weight files), and list exactly what it would replace; writes nothing, downloads nothing."""
    data_dir, paths = options.resolved_paths()
    refuse_overlap(data_dir, paths)
    index = index_dataset(data_dir)
    publish.refuse_links(paths)
    require_free_space(_existing(paths.backend_models), estimate_output_bytes(len(index.records), len(index.students)))
    try:
        located = local_weights(options.backend)
    except WeightsNotFoundError:
        if options.backend.allow_download:
            log.warning("A real run would first try to download the missing weight file; --dry-run downloads nothing.")
        raise
    interrupted = paths.journal_file.exists()
    if options.skip_unchanged and not interrupted:
        fingerprint = run_fingerprint(options, data_dir, photo_digests(index), weight_hashes(located))
        version = unchanged_since(paths, fingerprint)
        if version is not None:
            return DryRunResult(data_dir, index, [], False, [], Unchanged(version, data_dir))
    plan = publish.swap_plan(paths, new_models_files([Path(paths.plots_dir.name) / n for n in PLOT_NAMES]))
    clear = [] if options.keep_unpublished else _set_aside_models(paths)
    removed = plan.removed
    return DryRunResult(
        data_dir, index, removed, bool(removed) and options.keep_versions > 0, clear, interrupted_publish=interrupted
    )


def _existing(folder: Path) -> Path:
    """``folder``, or the nearest folder above it that exists (whose disk it will be on)."""
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            return candidate
    return folder


def _set_aside_models(paths: OutputPaths) -> list[Path]:
    """The --review candidates and rejected models kept now (what a publish removes, retention.clear_set_aside)."""
    return [
        folder
        for parent in (paths.candidate_dir, paths.rejected_dir)
        if parent.is_dir() and not parent.is_symlink()
        for folder in sorted(parent.iterdir())
    ]


# --------------------------------------------------------------------------- has anything changed?

#: Bump when the fingerprint's content changes meaning.
FINGERPRINT_FORMAT = 1
#: The code whose every line can change a model or its reports: the training and serving packages.
CODE_FOLDERS = (Path(__file__).resolve().parent, PROJECT_ROOT / "backend" / "recognizer")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """SHA-256 over the source files (and report templates) of :data:`CODE_FOLDERS`: another release,
    or any edit, is another program."""
    parts = []
    for folder in CODE_FOLDERS:
        for path in sorted(p for p in folder.rglob("*") if p.suffix in (".py", ".j2") and p.is_file()):
            parts.append(f"{path.relative_to(folder.parent).as_posix()} {sha256_file(path)}")
    return sha256_bytes("\n".join(parts).encode("utf-8"))


def local_weights(backend: BackendConfig) -> dict[str, Path | None]:
    """The detector's and embedder's weight files, found where a run finds them, never downloaded
    (MTCNN: None, its weights ship inside facenet-pytorch). Raises the run's own
    :class:`~backend.recognizer.errors.WeightsNotFoundError` when one is missing."""
    detector = (
        weight_files.scrfd_weights(backend.detector_model, backend.weights_dir, allow_download=False)
        if backend.detector == "scrfd"
        else None
    )
    if backend.embedder == "facenet":
        embedder: Path | None = weight_files.facenet_weights(backend.weights_dir, allow_download=False)
    elif backend.embedder == "dlib":
        embedder = weight_files.dlib_weights()
    else:
        embedder = None
    return {"detector": detector, "embedder": embedder}


def weight_hashes(located: Mapping[str, Path | None]) -> dict[str, str | None]:
    """SHA-256 of each located weight file (memoised: a 100 MB file is read once per process)."""
    return {part: None if path is None else weight_files.weights_sha256(path) for part, path in located.items()}


def run_fingerprint(
    options: RunOptions, data_dir: Path, photos: list[tuple[str, str, str, str]], weights: Mapping[str, str | None]
) -> str:
    """SHA-256 of everything that decides what a run publishes: the photos (content, student, folder,
    file name), the options that change the model or its reports, the face models' names and weight
    hashes, the library versions and this program's code. Two runs with the same fingerprint train
    the same model; the model records it (``model.json``: ``run_fingerprint``)."""
    b = options.backend
    record = {
        "format": FINGERPRINT_FORMAT,
        "data_dir": str(_resolved(data_dir)),
        "photos": photos,
        "options": {
            "threshold": options.threshold,
            "test_size": options.test_size,
            "max_far": options.max_far,
            "seed": options.seed,
            "photos_in_report": options.photos_in_report,
            "gate": {"min_accuracy": options.gate.min_accuracy, "max_regression": options.gate.max_regression},
        },
        "face_models": {
            "detector": b.detector,
            "embedder": b.embedder,
            "device": b.device,
            "embedder_runtime": b.embedder_runtime,
            "weights_sha256": dict(weights),
        },
        "libraries": library_versions(dict.fromkeys([*MODEL_LIBRARIES, *FINGERPRINT_LIBRARIES])),
        "code": code_version(),
    }
    return sha256_bytes(json.dumps(record, sort_keys=True, ensure_ascii=True).encode("ascii"))


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def unchanged_since(paths: OutputPaths, fingerprint: str) -> str | None:
    """The version of the model in service if it was trained with this ``fingerprint`` and its files
    are intact (its manifest checks); None otherwise, or while an erasure is unfinished."""
    if paths.erasure_intent.exists() or paths.journal_file.exists():
        return None
    try:
        metadata = ModelMetadata.from_dict(json.loads(paths.model_json.read_text(encoding="utf-8")))
    except (OSError, ValueError):  # no model, an old one, or damaged: MetadataError is a ValueError
        return None
    if metadata.run_fingerprint != fingerprint:
        return None
    try:
        verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)
    except ModelLoadError as err:
        log.info("The model in service was trained from these photos, but its files fail their check (%s)", err)
        return None
    return metadata.model_version


def run(options: RunOptions) -> RunResult | Unchanged:
    """Retrain from the student folders and publish the new model. Raises RetrainError subclasses.

    Returns :class:`Unchanged` (nothing published) when the model in service was trained from the same
    photos, options, face models and code, unless ``options.skip_unchanged`` is False or it is a --review run."""
    clock = StageClock()
    data_dir, paths = options.resolved_paths()
    refuse_overlap(data_dir, paths)
    log.info("Reading the student folders in %s", data_dir)
    with clock.stage("index"):
        index = index_dataset(data_dir)
    ignored = len(index.ignored_files) + len(index.loose_files)
    log.info(
        "Found %d photos of %d students%s",
        len(index.records),
        len(index.students),
        f" ({ignored} other files ignored, {len(index.skipped)} skipped: see the report)"
        if ignored or index.skipped
        else "",
    )
    publish.refuse_links(paths)  # the folder below is made before the lock (whose acquire checks again) is taken
    private_mkdir(paths.backend_models, SHARED_DIR_MODE)
    require_free_space(paths.backend_models, estimate_output_bytes(len(index.records), len(index.students)))

    with locked(paths, options.lock_timeout, log):
        with clock.stage("index"):
            photos = photo_digests(index)  # every photo's bytes, read once more: cheap next to finding faces
        if options.skip_unchanged and not options.review:  # --review builds a model to look at, whatever happens
            same = _unchanged(options, paths, data_dir, photos)
            if same is not None:
                return same  # the CLI says so
        log.info("Finding and embedding the faces (%s, %s)", options.backend.detector, options.backend.embedder)
        clock.add("load_models", 0.0)  # listed first: the models load before any face is found
        with clock.stage("extract"):
            extracted = extract_with_models(
                index.records,
                options.backend,
                paths.cache_dir,
                use_cache=options.use_cache,
                batch_size=options.batch_size,
                workers=options.workers,
                progress=options.progress,
            )
        clock.move(extracted.load_seconds, "extract", "load_models")
        extraction = extracted.extraction
        log.info(
            "Faces: %d photos embedded (%d reused from the last run), %d skipped",
            len(extraction.records),
            extracted.cache.reused,
            len(extraction.skipped),
        )
        embedded = extraction.counts()
        if len(embedded) < 2:
            raise TrainingError(
                f"Only {len(embedded)} student(s) have usable photos ({len(extraction.records)} photos embedded, "
                f"{len(extraction.skipped)} skipped); at least two are needed. The previous model was kept. "
                "Check the photos listed in the log."
            )
        X, y = extraction.embeddings, extraction.student_ids

        log.info("Checking the photos (wrong folders, duplicates, blur)")
        with clock.stage("quality"):
            duplicates = duplicate_groups(extraction.records, extraction.sha256)
            # every photo to every student, for both checks
            similarity = student_similarity(X, y, seed=options.seed, sources=extraction.sources)
            findings = [
                *data_quality(extraction, duplicates, seed=options.seed, similarity=similarity),
                *subfolder_findings(extraction, index, similarity=similarity),
            ]
            evidence = stranger_evidence(findings, [r.path for r in extraction.records], duplicates)
        log.info("Measuring accuracy and stranger safety on held-out photos")
        with clock.stage("evaluate"):
            evaluation = evaluate(
                X,
                y,
                test_size=options.test_size,
                seed=options.seed,
                max_far=options.max_far,
                evidence=evidence,
                sources=extraction.sources,
            )
        log.info("Training the model on all %d photos", len(X))
        with clock.stage("train"):
            calibrator = evaluation.open_set.calibrator if evaluation.open_set is not None else None
            model = fit_model(X, y, seed=options.seed, open_set_calibrator=calibrator)

        threshold = options.threshold if options.threshold is not None else evaluation.recommended_threshold
        stage = publish.begin_stage(paths, publish.new_version_id())
        separated = embeddings_distinct(findings)
        face_models = FaceModels.from_dict(extracted.models)
        enrolled = {s.student_id for s in index.students}
        erased = erased_ids(paths)
        reenrolled = tuple(sorted(enrolled & erased))
        for sid in reenrolled:
            log.warning("%s was erased on request before and is enrolled again from their folder now", sid)
        face_data = FaceDataKept(
            students=len(embedded),
            embeddings=len(X),
            cache_photos=len(set(extraction.sha256)),
            thumbnails=options.photos_in_report,
            keep_versions=options.keep_versions,
            keep_unpublished=options.keep_unpublished,
            reenrolled=reenrolled,
            not_enrolled=not_enrolled_elsewhere(paths, enrolled | erased),
        )
        verdict = stranger_verdict(evaluation, float(threshold), findings)
        sessions = summarize_sessions(evaluation.open_set, float(threshold))
        candidate = candidate_from_run(evaluation, separated, face_models, X, verdict.target_met)
        decision = decide(candidate, published_model(paths), options.gate)
        log.info("Quality gate: %s", "passed" if decision.passed else ("FORCED" if decision.forced else "REFUSED"))
        plots = [
            p.relative_to(stage.models_dir) for p in write_plots(stage.folder.plots_dir, evaluation, float(threshold))
        ]
        summary = RunSummary(
            version=stage.version,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            data_dir=data_dir,
            output_root=paths.root,
            models=face_models,
            index=index,
            extraction=extraction,
            evaluation=evaluation,
            threshold=float(threshold),
            threshold_source="set with --threshold" if options.threshold is not None else "recommended",
            excluded_students=index.without_faces(embedded),
            duplicate_groups=tuple(tuple(g) for g in duplicates),
            timings=clock.timings(),  # up to publishing
            prior_artifacts=tuple(publish.swap_plan(paths, new_models_files(plots)).removed),  # what the swap replaces
            library_versions=tuple(library_versions().items()),
            findings=tuple(findings),
            plots=tuple(plots),
            gate=decision,
            weights_warnings=tuple(weights_warnings(face_models)),
            verdict=verdict,
            sessions=sessions,
            face_data=face_data,
            photos_reused=extracted.cache.reused,
        )
        backend = BackendChoice(
            options.backend.detector,
            options.backend.embedder,
            str(extracted.detector_file) if extracted.detector_file else None,
        )
        names = index.names()
        fingerprint = run_fingerprint(options, data_dir, photos, _recorded_weights(face_models))
        metadata = model_metadata(
            summary, face_models, backend, {sid: names[sid] for sid in model.classes}, separated, fingerprint
        )
        bundle = ModelBundle(model.model, metadata)
        publish.save_bundle(stage, bundle, model)
        artifacts = write_reports(stage, paths, summary)
        thumbs = (
            face_thumbnails(photos_to_show(summary), build_detector(options.backend))
            if options.photos_in_report
            else None
        )
        write_html_report(stage.models_dir / paths.report_html.name, summary, thumbs)
        publish.seal(paths, stage, verify=verify_model_dir)
        if not decision.publish:  # refused (with --review too: only a model the gate lets through waits)
            return _set_aside(paths, stage, summary, artifacts, review=False)
        if options.review:
            return _set_aside(paths, stage, summary, artifacts, review=True)
        published = publish.publish_sealed(paths, stage, keep_versions=options.keep_versions)
        save_cache(extracted.cache, paths.cache_dir, prune=True)  # only now drop photos that are gone
        cleared = () if options.keep_unpublished else tuple(clear_set_aside(paths))
        not_enrolled = not_enrolled_elsewhere(paths, enrolled | erased)
    log.info("Published model %s", stage.version)
    archived = published.archived_to if published.archived_to and published.archived_to.is_dir() else None
    return RunResult(summary, artifacts, published.removed, archived, cleared=cleared, not_enrolled=not_enrolled)


def _unchanged(
    options: RunOptions, paths: OutputPaths, data_dir: Path, photos: list[tuple[str, str, str, str]]
) -> Unchanged | None:
    """:class:`Unchanged` when the model in service was trained from exactly this; checked before any
    face model is loaded. Weights that are not on this computer yet cannot be compared: then None."""
    try:
        located = local_weights(options.backend)
    except WeightsNotFoundError:
        return None  # the run downloads them, or stops with the message
    version = unchanged_since(paths, run_fingerprint(options, data_dir, photos, weight_hashes(located)))
    return None if version is None else Unchanged(version, data_dir)


def _recorded_weights(face_models: FaceModels) -> dict[str, str | None]:
    """The weight hashes of the models the run used, as :func:`weight_hashes` gives them before loading."""
    return {"detector": face_models.detector.weights_sha256, "embedder": face_models.embedder.weights_sha256}


def model_metadata(
    s: RunSummary,
    face_models: FaceModels,
    backend: BackendChoice,
    students: dict[str, str],
    separated: bool,
    run_fingerprint: str | None = None,
) -> ModelMetadata:
    """What the new model records about itself: models, data summary, scores, gate (model.json)."""
    ev = s.evaluation
    return ModelMetadata(
        model_version=s.version,
        created_at=s.created_at,
        threshold=float(s.threshold),
        students=students,
        face_models=face_models,
        backend=backend,
        recommended_threshold=ev.recommended_threshold,
        library_versions=dict(s.library_versions),
        dataset=DatasetSummary(
            data_dir=str(Path(s.data_dir).resolve()),
            num_students=len(s.extraction.counts()),
            num_images=len(s.index.records),
            num_embedded=len(s.extraction.records),
            num_skipped=len(s.all_skipped),
            excluded_students=tuple(s.excluded_students),
        ),
        metrics=Metrics(
            accuracy=ev.accuracy,
            n_train=ev.n_train,
            n_test=ev.n_test,
            stranger_target_met=s.verdict.target_met,
            embeddings_distinct=separated,
        ),
        quality_gate=s.gate.record(),
        forced=s.gate.forced,
        weights_warnings=tuple(s.weights_warnings),
        session_rule=s.sessions.rule if s.sessions is not None else PresenceRule(),
        run_fingerprint=run_fingerprint,
    )


def published_model(paths: OutputPaths) -> LoadedModel | None:
    """The model in service, read as the backend reads it (never unpickled); None when there is none."""
    if not paths.classifier_dir.is_dir():
        return None
    try:
        return load_model_files(paths.classifier_dir, allow_pickle=False)
    except ModelLoadError as err:
        log.warning(
            "The published model cannot be loaded (%s): the new model is not compared with it. (A model of an "
            "earlier release is compared again after python retrain_model.py --upgrade-model.)",
            err,
        )
        return None


def weights_warnings(models: FaceModels) -> list[str]:
    """Weight files named like the official ones but with other content."""
    files: dict[str, str | None] = {}
    for name, sha in (
        (models.detector.model_file, models.detector.weights_sha256),
        (models.embedder.weights_file, models.embedder.weights_sha256),
    ):
        if name:
            files[name] = sha
    return unofficial_weights(files)


def _set_aside(
    paths: OutputPaths, stage: publish.Stage, summary: RunSummary, artifacts: list[Path], *, review: bool
) -> RunResult:
    """--review: keep the checked model as the candidate. Refused: keep it for inspection, then stop."""
    folder = paths.candidate_dir if review else paths.rejected_dir
    where = publish.set_aside(paths, stage, folder, keep=1 if review else KEEP_REJECTED)
    kept = ModelFolder.under(where)
    moved = [
        kept.classifier_dir / p.name
        if p.parent == paths.classifier_dir
        else kept.models_dir / p.relative_to(paths.models_dir)
        for p in artifacts
    ]
    if review:
        log.info("Candidate model %s waits in %s", stage.version, where)
        return RunResult(summary, moved, [], None, candidate=where)
    gate = summary.gate
    raise ModelRefusedError(
        f"The new model was NOT published: {gate.verdict()}. The model in service is "
        f"unchanged. Read the refused model's report, {where / 'models' / paths.report_txt.name}, fix the photos "
        "it lists and retrain, or publish it anyway with --force."
    )


def promote(options: RunOptions) -> publish.PublishResult:
    """Publish the candidate left by --review: checked again, and gated again (unless --force)."""
    _, paths = options.resolved_paths()
    with locked(paths, options.lock_timeout, log) as notes:
        candidate = publish.waiting_candidate(paths)
        if candidate is None:
            done = f" (First this command {'; '.join(notes)}: that model is now in service.)" if notes else ""
            raise PublishError(
                f"No model is waiting in {paths.candidate_dir}. Run python retrain_model.py --review first.{done}"
            )
        try:
            loaded = load_model_files(candidate.classifier_dir, require_manifest=True, allow_pickle=False)
            verify_manifest(candidate.classifier_dir, models_dir=candidate.models_dir)
            figures = candidate_from_folder(loaded, candidate.folder)
        except (ModelLoadError, OSError, KeyError, ValueError) as err:
            raise PublishError(
                f"The waiting model in {candidate.root} is damaged ({err}). Run --review again."
            ) from err
        refuse_gone_students(
            candidate.folder,
            f"The waiting model {candidate.version}",
            paths,
            options.data_dir,
            force=options.gate.force,
        )
        decision = decide(figures, published_model(paths), options.gate)
        if not decision.publish:
            raise ModelRefusedError(
                f"The waiting model {candidate.version} was NOT published: {decision.verdict()}. The model in "
                f"service is unchanged; the candidate still waits in {candidate.root} (--promote --force publishes it)."
            )
        if decision.forced:
            publish.record_forced(candidate, loaded.bundle, decision.record())
        data_dir = options.data_dir or recorded_data_dir(candidate.folder)
        result = publish.promote(paths, candidate, verify=verify_model_dir, keep_versions=options.keep_versions)
        _after_publish(paths, data_dir, options.keep_unpublished)
        return result


def rollback(options: RunOptions) -> publish.PublishResult:
    """Restore the newest kept version, unless it holds a student who was erased or whose folder is gone."""
    _, paths = options.resolved_paths()
    with locked(paths, options.lock_timeout, log):  # an interrupted publish is finished first
        target = ModelFolder.under(publish.rollback_target(paths))
        refuse_gone_students(
            target,
            f"The kept version {target.classifier_dir.parent.name}",
            paths,
            options.data_dir,
            force=options.gate.force,
        )
        result = publish.rollback(paths)
        _after_publish(paths, options.data_dir or recorded_data_dir(paths.published), keep_unpublished=True)
    return result


def _after_publish(paths: OutputPaths, data_dir: Path | None, keep_unpublished: bool) -> None:
    """Retention once a model other than a fresh run's is live: the cache keeps only the data folder's photos."""
    if data_dir is not None:
        dropped = prune_cache(paths, data_dir)
        if dropped:
            log.info("Embedding cache: %d photo(s) no longer in %s dropped", dropped, data_dir)
    if not keep_unpublished:
        clear_set_aside(paths)
