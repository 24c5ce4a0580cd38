"""Write, verify, publish and roll back model artifacts without ever leaving the backend model-less.

A new model is assembled in a staging folder (``backend/models/.staging/<version>``),
covered by a manifest (SHA-256 and size of every file, written last), verified by the
caller's full load check, and only then swapped in by renames:

1. a journal (``backend/models/.publish.json``) records what is about to move;
2. the current ``Classifier/`` and the current ``models/`` artifacts are renamed into
   ``backend/models/versions/<old version>/`` (kept for ``--rollback``);
3. the staged ``Classifier/`` is renamed to ``Classifier/`` and every staged ``models/``
   file is ``os.replace``-d into ``models/``;
4. leftovers of the original recipe that the new model does not replace are deleted, old versions
   beyond ``keep_versions`` pruned, the journal removed.

Every step is idempotent, so :func:`recover` finishes an interrupted swap by running it
again from the journal. Before a journal exists nothing published has been touched and
``recover`` simply deletes the abandoned staging folder.

Nothing outside the output root is ever touched: a link anywhere in the output layout is refused
(:func:`refuse_links`, which taking :class:`~retraining.lock.RetrainLock` runs first) before
anything is written, and deleting never follows a link. A swap that fails part-way (a folder that
cannot be written, a full disk) is undone before the error is raised, so no journal is left for a
later command to complete unseen. While ``Classifier/`` is missing mid-swap, the backend's loader
reads the complete model the journal names (``backend.recognizer.journal``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from backend.recognizer.bundle import ModelBundle
from backend.recognizer.errors import ModelLoadError
from backend.recognizer.hashing import sha256_file
from backend.recognizer.journal import PublishJournal
from backend.recognizer.loader import load_model_files
from backend.recognizer.manifest import (
    MODELS_PREFIX,
    FileEntry,
    Manifest,
    read_manifest,
    safe_relative,
    verify_manifest,
)
from backend.recognizer.metadata import GateRecord
from backend.recognizer.paths import MANIFEST_NAME, ModelFolder, OutputPaths

from .errors import PublishError
from .files import (
    SHARED_DIR_MODE,
    atomic_write_bytes,
    atomic_write_json,
    files_under,
    fsync_dir,
    inside,
    private_mkdir,
    remove,
)
from .model_files import write_model_files, write_seed_files
from .train import FittedModel

log = logging.getLogger(__name__)

ARCHIVE_INFO = "archived.json"


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def new_version_id() -> str:
    """A sortable, unique model version id, e.g. ``20261122T221500Z-1a2b3c``."""
    return _utcnow().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


# --------------------------------------------------------------------------- staging


@dataclass(frozen=True)
class Stage:
    """A staging folder for one new model version, under ``paths.staging_dir/<version>``."""

    root: Path
    classifier_dir: Path  # ModelFolder.under(root).classifier_dir
    models_dir: Path  # ... .models_dir: X.npy, y.npy, labels.csv, reports, plots/
    version: str

    @classmethod
    def at(cls, root: Path, version: str) -> Stage:
        folder = ModelFolder.under(root)
        return cls(root, folder.classifier_dir, folder.models_dir, version)

    @property
    def folder(self) -> ModelFolder:
        return ModelFolder(self.classifier_dir, self.models_dir)


def output_links(paths: OutputPaths) -> list[Path]:
    """Links in the output layout: its folders, the folders in them, and the lock and journal files."""
    folders = [
        paths.root / "backend",
        paths.backend_models,
        paths.classifier_dir,
        paths.versions_dir,
        paths.staging_dir,
        paths.candidate_dir,
        paths.rejected_dir,
        paths.models_dir,
        paths.cache_dir,
        paths.plots_dir,
        paths.erasures_dir,
        paths.trash_dir,
    ]
    files = [paths.lock_file, paths.lock_owner_file, paths.journal_file, paths.erasure_intent]
    found = [p for p in [*folders, *files] if p.is_symlink()]
    for parent in (paths.versions_dir, paths.staging_dir, paths.candidate_dir, paths.rejected_dir):
        if parent.is_dir() and not parent.is_symlink():
            for kept in parent.iterdir():
                folder = ModelFolder.under(kept)
                found += [p for p in (kept, folder.classifier_dir, folder.models_dir) if p.is_symlink()]
    return found


def refuse_links(paths: OutputPaths) -> None:
    """Raise :class:`PublishError` when the output layout holds a link: writing or deleting
    through it would change files outside the output root. Call it before anything is written:
    :meth:`RetrainLock.acquire <retraining.lock.RetrainLock.acquire>` does, before it creates the
    lock file, so a command that takes the lock needs no call of its own."""
    links = output_links(paths)
    if links:
        target = os.readlink(links[0])
        more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
        raise PublishError(
            f"{links[0]} is a link (to {target}){more}: this suite writes and deletes only inside {paths.root}, never "
            "through a link, so nothing was changed. Replace the link with a real folder (move what it points to "
            "there), or choose another --output-root, and run again."
        )


def begin_stage(paths: OutputPaths, version: str) -> Stage:
    """Create an empty staging folder for ``version`` (an old one of that name is replaced)."""
    if not version or "/" in version or "\\" in version or version.startswith("."):
        raise PublishError(f"invalid model version id {version!r}")
    stage = Stage.at(paths.staging_dir / version, version)
    if stage.root.exists() or stage.root.is_symlink():
        remove(stage.root)
    private_mkdir(stage.classifier_dir)  # owner-only (.staging/<v>/), Classifier/ 0750: it is moved into place
    private_mkdir(stage.models_dir)
    return stage


def save_bundle(stage: Stage, bundle: ModelBundle, fitted: FittedModel) -> None:
    """Write ``model.npz`` + ``model.json`` and the seed's pickles into the stage (each atomically)."""
    write_model_files(stage.classifier_dir, bundle)
    write_seed_files(stage.classifier_dir, bundle, fitted)


# --------------------------------------------------------------------------- manifest


def write_manifest(directory: Path, model_version: str, extra_files: dict[str, Path] | None = None) -> Path:
    """Write ``manifest.json`` in ``directory``: SHA-256 and size of every file in it.

    ``extra_files`` adds files stored elsewhere under the given names (the pipeline's
    ``models/`` outputs as ``"models/X.npy"``…). Call it last, after every other file.
    """
    listed = {
        rel: directory / rel
        for rel in files_under(directory)
        if rel != MANIFEST_NAME and not Path(rel).name.startswith(".")
    }
    listed.update(extra_files or {})
    manifest = Manifest(
        model_version=model_version,
        created_at=_utcnow().isoformat(timespec="seconds"),
        files={name: FileEntry(sha256_file(path), Path(path).stat().st_size) for name, path in sorted(listed.items())},
    )
    target = directory / MANIFEST_NAME
    atomic_write_json(target, manifest.to_dict())
    return target


def _current_version(classifier_dir: Path) -> str | None:
    try:
        return read_manifest(classifier_dir).model_version
    except ModelLoadError:
        return None


def _manifest_models_files(classifier_dir: Path) -> list[str]:
    try:
        return read_manifest(classifier_dir).models_files()
    except ModelLoadError:
        return []


# --------------------------------------------------------------------------- publish / rollback / recover


@dataclass(frozen=True)
class PublishResult:
    version: str
    published: list[Path]
    removed: list[Path]  # prior artifacts moved into versions/ or deleted
    archived_to: Path | None


def _archive_name(paths: OutputPaths) -> str:
    base = _current_version(paths.classifier_dir) or "legacy-" + _utcnow().strftime("%Y%m%dT%H%M%SZ")
    name, n = base, 1
    while (paths.versions_dir / name).exists():
        name = f"{base}-{n}"
        n += 1
    return name


def _legacy_models_files(paths: OutputPaths) -> list[str]:
    """Files of the original recipe directly in models/ (X.npy, reports…): archived, not deleted."""
    out = []
    for path in paths.legacy_artifacts():
        if path.parent == paths.models_dir and path.is_file():
            out.append(path.name)
    return out


def seal(paths: OutputPaths, stage: Stage, *, verify: Callable[[Path], None] | None = None) -> None:
    """Write the stage's manifest (last), then check the stage against it and with ``verify``.

    ``verify(stage.classifier_dir)`` is the caller's full load check; if anything fails the
    stage is deleted and :class:`PublishError` raised: nothing published was touched.
    """
    if not inside(stage.root, paths.staging_dir):
        raise PublishError(f"staging folder {stage.root} is not under {paths.staging_dir}")
    extra = {MODELS_PREFIX + rel: stage.models_dir / rel for rel in files_under(stage.models_dir)}
    write_manifest(stage.classifier_dir, stage.version, extra)
    _check(stage, verify, models_check=True, discard_on_failure=True)


def publish(
    paths: OutputPaths,
    stage: Stage,
    *,
    verify: Callable[[Path], None] | None = None,
    keep_versions: int = 1,
) -> PublishResult:
    """Seal the stage, then swap it in; the current model is kept in ``versions/``.

    Call it while holding :class:`~retraining.lock.RetrainLock`.
    """
    seal(paths, stage, verify=verify)
    return publish_sealed(paths, stage, keep_versions=keep_versions)


def publish_sealed(paths: OutputPaths, stage: Stage, *, keep_versions: int = 1) -> PublishResult:
    """Swap in a stage that :func:`seal` has just checked."""
    return _swap_in(paths, stage, verify=None, keep_versions=keep_versions, models_check=False)


def record_forced(candidate: Stage, bundle: ModelBundle, gate: GateRecord) -> None:
    """Mark a waiting candidate as published with --force (model.json, report), then re-seal it.

    The seed's pickle keeps the metadata it was written with: model.json is the record.
    """
    metadata = dataclasses.replace(bundle.metadata, forced=True, quality_gate=gate)
    write_model_files(candidate.classifier_dir, dataclasses.replace(bundle, metadata=metadata))
    report = candidate.folder.report_txt
    if report.is_file():
        stamp = _utcnow().isoformat(timespec="seconds")
        note = f"\nPROMOTED WITH --force on {stamp} although the quality gate refused it (see QUALITY GATE).\n"
        atomic_write_bytes(report, report.read_bytes() + note.encode("utf-8"))
    extra = {MODELS_PREFIX + rel: candidate.models_dir / rel for rel in files_under(candidate.models_dir)}
    write_manifest(candidate.classifier_dir, candidate.version, extra)


def set_aside(paths: OutputPaths, stage: Stage, folder: Path, *, keep: int) -> Path:
    """Move a sealed stage to ``folder/<version>`` (a candidate or a refused model), where the
    backend never looks; keep only the newest ``keep`` there. Returns the new location."""
    if not inside(folder, paths.backend_models) or folder == paths.classifier_dir:
        raise PublishError(f"{folder} is not a folder for set-aside models")
    private_mkdir(folder)
    target = folder / stage.version
    if target.exists() or target.is_symlink():
        remove(target)
    os.replace(stage.root, target)
    fsync_dir(folder)
    with contextlib.suppress(OSError):
        paths.staging_dir.rmdir()  # only when empty
    kept = sorted(
        (d for d in folder.iterdir() if d.is_dir() and not d.is_symlink()), key=lambda d: d.name, reverse=True
    )
    for old in kept[max(1, keep) :]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def waiting_candidate(paths: OutputPaths) -> Stage | None:
    """The model that --review left for --promote (the newest, if several), or None."""
    if not paths.candidate_dir.is_dir():
        return None
    found = sorted(
        (d for d in paths.candidate_dir.iterdir() if ModelFolder.under(d).classifier_dir.is_dir()), key=lambda d: d.name
    )
    return Stage.at(found[-1], found[-1].name) if found else None


def promote(
    paths: OutputPaths, candidate: Stage, *, verify: Callable[[Path], None] | None = None, keep_versions: int = 1
) -> PublishResult:
    """Swap a waiting candidate in, checked again first (it stays waiting if the check fails)."""
    if not inside(candidate.root, paths.candidate_dir):
        raise PublishError(f"{candidate.root} is not a waiting candidate in {paths.candidate_dir}")
    return _swap_in(
        paths, candidate, verify=verify, keep_versions=keep_versions, models_check=True, discard_stage_on_failure=False
    )


def _check(
    stage: Stage, verify: Callable[[Path], None] | None, *, models_check: bool, discard_on_failure: bool
) -> None:
    try:
        if models_check:
            verify_manifest(stage.classifier_dir, models_dir=stage.models_dir)
        if verify is not None:
            verify(stage.classifier_dir)
    except Exception as err:
        if discard_on_failure:
            shutil.rmtree(stage.root, ignore_errors=True)
        raise PublishError(
            f"The new model failed its check and was NOT published ({err}). The current model is unchanged."
        ) from err


def _swap_in(
    paths: OutputPaths,
    stage: Stage,
    *,
    verify: Callable[[Path], None] | None,
    keep_versions: int | None,
    models_check: bool,
    discard_stage_on_failure: bool = True,
) -> PublishResult:
    _check(stage, verify, models_check=models_check, discard_on_failure=discard_stage_on_failure)

    new_models = files_under(stage.models_dir)
    old_models = list(swap_plan(paths, new_models).old_models)
    has_current = paths.classifier_dir.exists() or bool(old_models)
    archive = paths.versions_dir / _archive_name(paths) if has_current else None
    journal = PublishJournal(
        version=stage.version,
        stage=stage.root,
        archive=archive,
        old_models=tuple(old_models),
        new_models=tuple(new_models),
        keep_versions=keep_versions,
        started_at=_utcnow().isoformat(timespec="seconds"),
    )
    private_mkdir(paths.backend_models, SHARED_DIR_MODE)
    atomic_write_json(paths.journal_file, journal.to_dict())
    try:
        return _run_journal(paths, journal)
    except Exception as err:  # a crash or Ctrl+C (BaseException) leaves the journal for recover()
        if not stage.root.is_dir():
            raise  # the new model was already complete in place: recover() only tidies up
        try:
            _undo(paths, journal, discard_stage=discard_stage_on_failure)
        except Exception as undo_err:
            log.error("Could not undo the failed publish of model %s (%s)", stage.version, undo_err, exc_info=True)
            raise PublishError(
                f"Publishing model {stage.version} failed ({err}) and could not be undone ({undo_err}). The next "
                "python retrain_model.py run finishes publishing it first and says so; fix the cause (free space, "
                "permissions on backend/models and models/) before that."
            ) from err
        log.warning("Publishing model %s failed (%s): undone, the previous model is back in place", stage.version, err)
        raise


def _undo(paths: OutputPaths, journal: PublishJournal, *, discard_stage: bool) -> None:
    """Reverse a swap that stopped part-way: the new files back into the stage, the current ones
    back from the archive, the archive and the journal removed. Each step checks where a file is."""
    stage = Stage.at(journal.stage, journal.version)
    for rel in journal.new_models:
        src, dst = stage.models_dir / rel, paths.models_dir / rel
        if not src.exists() and dst.is_file():  # moved in already: it is the new file
            private_mkdir(src.parent)
            os.replace(dst, src)
    if not stage.classifier_dir.exists() and paths.classifier_dir.is_dir():
        os.replace(paths.classifier_dir, stage.classifier_dir)
    archive = journal.archive
    if archive is not None and archive.is_dir() and not archive.is_symlink():
        kept = ModelFolder.under(archive)
        if kept.classifier_dir.is_dir() and not paths.classifier_dir.exists():
            os.replace(kept.classifier_dir, paths.classifier_dir)
        for rel in journal.old_models:
            src, dst = kept.models_dir / rel, paths.models_dir / rel
            if src.is_file() and not dst.exists():
                os.replace(src, dst)
        if set(files_under(archive)) <= {ARCHIVE_INFO}:
            shutil.rmtree(archive)
    with contextlib.suppress(FileNotFoundError):
        paths.journal_file.unlink()
    if discard_stage:
        shutil.rmtree(stage.root, ignore_errors=True)
    fsync_dir(paths.backend_models)


def _run_journal(paths: OutputPaths, journal: PublishJournal) -> PublishResult:
    """Carry out (or finish) the swap a journal describes. Every step is idempotent."""
    stage = Stage.at(journal.stage, journal.version)
    archive = journal.archive
    for p in [stage.root] + ([archive] if archive else []):
        if not inside(p, paths.backend_models):
            raise PublishError(f"publish journal {paths.journal_file} points outside {paths.backend_models}; delete it")
    if not all(safe_relative(rel) for rel in [*journal.old_models, *journal.new_models]):
        raise PublishError(f"publish journal {paths.journal_file} names files outside {paths.models_dir}; delete it")
    removed: list[Path] = []
    # 1. the current model goes into versions/<old>/ (rename: nothing is copied or lost)
    if archive is not None:
        kept = ModelFolder.under(archive)
        private_mkdir(kept.models_dir)
        if not (archive / ARCHIVE_INFO).exists():
            atomic_write_json(
                archive / ARCHIVE_INFO,
                {"archived_at": _utcnow().isoformat(timespec="microseconds"), "replaced_by": stage.version},
            )
        for rel in journal.old_models:
            src, dst = paths.models_dir / rel, kept.models_dir / rel
            if src.is_file() and not dst.exists():  # once archived, models/rel can only be the new file
                private_mkdir(dst.parent)
                os.replace(src, dst)
            if dst.exists():
                removed.append(src)
        if paths.classifier_dir.exists() and not kept.classifier_dir.exists():
            removed.extend(paths.classifier_dir / rel for rel in files_under(paths.classifier_dir))
            os.replace(paths.classifier_dir, kept.classifier_dir)
        elif kept.classifier_dir.exists():
            removed.extend(paths.classifier_dir / rel for rel in files_under(kept.classifier_dir))
        fsync_dir(archive)
    # 2. the new model comes in
    published: list[Path] = []
    if stage.classifier_dir.exists():
        if paths.classifier_dir.exists():  # no archive (first publish): a stray empty/partial dir
            remove(paths.classifier_dir)
        private_mkdir(paths.classifier_dir.parent, SHARED_DIR_MODE)
        os.replace(stage.classifier_dir, paths.classifier_dir)
        fsync_dir(paths.classifier_dir.parent)
    published.extend(paths.classifier_dir / rel for rel in files_under(paths.classifier_dir))
    for rel in journal.new_models:
        src, dst = stage.models_dir / rel, paths.models_dir / rel
        if src.is_file():
            private_mkdir(dst.parent)
            os.replace(src, dst)
        published.append(dst)
    if paths.models_dir.exists():
        fsync_dir(paths.models_dir)
    # 3. leftovers of the original recipe that nothing replaces (models/temp/, the old embeddings cache)
    for path in _leftovers(paths, journal.new_models):
        remove(path)
        removed.append(path)
    # 4. clean up: stage, old versions, journal
    shutil.rmtree(stage.root, ignore_errors=True)
    with contextlib.suppress(OSError):
        paths.staging_dir.rmdir()  # only when empty
    if journal.keep_versions is not None:
        prune_versions(paths, journal.keep_versions)
    with contextlib.suppress(FileNotFoundError):
        paths.journal_file.unlink()
    fsync_dir(paths.backend_models)
    log.debug("Published model %s%s", stage.version, f" (previous kept in {archive})" if archive else "")
    return PublishResult(stage.version, published, removed, archive)


def list_versions(paths: OutputPaths) -> list[Path]:
    """Archived model versions, newest first."""
    if not paths.versions_dir.is_dir():
        return []

    def stamp(d: Path) -> str:
        try:
            return str(json.loads((d / ARCHIVE_INFO).read_text(encoding="utf-8"))["archived_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return _dt.datetime.fromtimestamp(d.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="microseconds")

    dirs = [d for d in paths.versions_dir.iterdir() if d.is_dir() and not d.is_symlink() and not d.name.startswith(".")]
    return sorted(dirs, key=stamp, reverse=True)


def prune_versions(paths: OutputPaths, keep_versions: int) -> list[Path]:
    """Delete archived versions beyond the newest ``keep_versions``; return what was deleted."""
    doomed = list_versions(paths)[max(0, keep_versions) :]
    for d in doomed:
        remove(d)
        log.debug("Deleted old model version %s", d.name)
    return doomed


def rollback_target(paths: OutputPaths) -> Path:
    """The kept version ``--rollback`` restores: the newest with a ``Classifier/``."""
    versions = [v for v in list_versions(paths) if ModelFolder.under(v).classifier_dir.is_dir()]
    if not versions:
        raise PublishError(
            f"No previous model is kept in {paths.versions_dir}, so there is nothing to roll back to. "
            "Re-run retraining (python retrain_model.py) instead."
        )
    return versions[0]


def rollback(paths: OutputPaths, *, verify: Callable[[Path], None] | None = None) -> PublishResult:
    """Restore the newest kept version; the current model is archived in its place.

    Rolling back twice returns to where you started. ``verify`` defaults to the loader's
    :func:`~backend.recognizer.loader.load_model_files`. Call it while holding
    :class:`~retraining.lock.RetrainLock` (which refuses a link in the output layout).
    """
    target = rollback_target(paths)
    stage = Stage.at(target, _current_version(ModelFolder.under(target).classifier_dir) or target.name)
    has_manifest = (stage.classifier_dir / MANIFEST_NAME).exists()
    if not has_manifest:
        log.warning("Version %s has no manifest (an old-style model): its files cannot be verified", target.name)
    if verify is None:

        def verify(directory: Path) -> None:
            load_model_files(directory, require_manifest=has_manifest, allow_pickle=False)

    result = _swap_in(
        paths, stage, verify=verify, keep_versions=None, models_check=has_manifest, discard_stage_on_failure=False
    )
    log.info("Rolled back to model %s", result.version)
    return result


def recover(paths: OutputPaths) -> list[str]:
    """Finish a publish that was interrupted, or clear one that never started swapping.

    Returns what was done (empty when there was nothing to do). Call it while holding
    :class:`~retraining.lock.RetrainLock`: only the lock holder may move published files.
    """
    actions: list[str] = []
    journal_file = paths.journal_file
    if journal_file.exists():
        try:
            journal = PublishJournal.from_dict(json.loads(journal_file.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            # the journal is written atomically, so this is a foreign/damaged file
            log.warning("Unreadable publish journal %s removed", journal_file)
            journal_file.unlink()
            actions.append(f"removed unreadable journal {journal_file}")
        else:
            rolled_back_from_version = not inside(journal.stage, paths.staging_dir)
            result = _run_journal(paths, journal)
            what = "rollback" if rolled_back_from_version else "publish"
            actions.append(
                f"finished interrupted {what} of model {result.version} (an earlier run started it at "
                f"{journal.started_at or 'an unknown time'} and did not finish: it was stopped, or could not write)"
            )
            log.warning("An interrupted %s was completed: model %s is now in place", what, result.version)
    if paths.staging_dir.is_dir() and not paths.staging_dir.is_symlink():
        for leftover in sorted(paths.staging_dir.iterdir()):
            remove(leftover)
            actions.append(f"removed abandoned staging folder {leftover.name}")
        with contextlib.suppress(OSError):
            paths.staging_dir.rmdir()
    return actions


@dataclass(frozen=True)
class SwapPlan:
    """What swapping a new model in takes away from the published places, worked out before anything
    moves: :func:`_swap_in` archives exactly these files, and ``--dry-run`` and the report list them."""

    models_dir: Path
    old_models: tuple[str, ...]  # files in models/ (relative) moved into versions/<old>/models
    classifier_files: tuple[Path, ...]  # the published Classifier/'s files, moved into versions/<old>/Classifier
    leftovers: tuple[Path, ...]  # files of the original recipe that nothing replaces: deleted

    @property
    def removed(self) -> list[Path]:
        """Every published file the swap takes away, in the order the swap reports them."""
        return [*(self.models_dir / rel for rel in self.old_models), *self.classifier_files, *self.leftovers]


def swap_plan(paths: OutputPaths, new_models: Iterable[str]) -> SwapPlan:
    """What publishing a model whose ``models/`` files are ``new_models`` (relative POSIX paths, as
    :func:`files_under` gives them) replaces or removes: the one derivation the swap itself uses."""
    new = set(new_models)
    old_models = sorted(
        rel
        for rel in new | set(_manifest_models_files(paths.classifier_dir)) | set(_legacy_models_files(paths))
        if (paths.models_dir / rel).is_file()
    )
    classifier = tuple(paths.classifier_dir / rel for rel in files_under(paths.classifier_dir))
    return SwapPlan(paths.models_dir, tuple(old_models), classifier, tuple(_leftovers(paths, new)))


def _leftovers(paths: OutputPaths, new_models: Iterable[str]) -> list[Path]:
    """Files and folders of the original recipe (models/temp/, the old embeddings cache) that a model
    with these ``models/`` files does not replace: the swap deletes them."""
    keep = {paths.models_dir / rel for rel in new_models}
    return [
        path
        for path in paths.legacy_artifacts()
        if path.parent != paths.classifier_dir and path not in keep and (path.exists() or path.is_symlink())
    ]


def prior_artifacts(paths: OutputPaths, new_models: Iterable[str] = ()) -> list[Path]:
    """Published files that a new model with these ``models/`` files replaces (see :func:`swap_plan`)."""
    return swap_plan(paths, new_models).removed
