"""Write, verify, publish and roll back model artifacts without ever leaving the backend model-less.

A new model is assembled in a staging folder (``backend/models/.staging/<version>``),
covered by a manifest (SHA-256 and size of every file, written last), verified by the
caller's full load check, and only then swapped in by renames:

1. a journal (``backend/models/.publish.json``) records what is about to move;
2. the current ``Classifier/`` and the current ``models/`` artifacts are renamed into
   ``backend/models/versions/<old version>/`` (kept for ``--rollback``);
3. the staged ``Classifier/`` is renamed to ``Classifier/`` and every staged ``models/``
   file is ``os.replace``-d into ``models/``;
4. seed-recipe leftovers the new model does not replace are deleted, old versions
   beyond ``keep_versions`` pruned, the journal removed.

Every step is idempotent, so :func:`recover` finishes an interrupted swap by running it
again from the journal. Before a journal exists nothing published has been touched and
``recover`` simply deletes the abandoned staging folder.

Nothing outside the output root is ever touched.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LockError, ModelLoadError, PublishError
from .paths import BUNDLE_NAME, CLASSES_NAME, LABEL_ENCODER_NAME, MANIFEST_NAME, OutputPaths

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
#: Manifest keys of files that live in ``models/`` start with this prefix.
MODELS_PREFIX = "models/"
JOURNAL_NAME = ".publish.json"
ARCHIVE_INFO = "archived.json"
FIX_HINT = (
    "Re-run retraining (python retrain_model.py) or restore the previous model (python retrain_model.py --rollback)."
)


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def new_version_id() -> str:
    """A sortable, unique model version id, e.g. ``20261122T221500Z-1a2b3c``."""
    return _utcnow().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


# --------------------------------------------------------------------------- small file helpers


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask (read once: reading it means setting it for an instant)."""
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then ``os.replace`` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600: the backend may run as another user and must be able to READ
        # the model; writing stays with the admin (umask decides, like any normal file)
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


def _joblib_bytes(obj: Any) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _files_under(directory: Path) -> list[str]:
    """Relative POSIX paths of every regular file under ``directory`` (sorted)."""
    if not directory.is_dir():
        return []
    return sorted(
        p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() and not p.is_symlink()
    )


# --------------------------------------------------------------------------- staging


@dataclass(frozen=True)
class Stage:
    """A staging folder for one new model version, under ``paths.staging_dir/<version>``."""

    root: Path
    classifier_dir: Path  # root/"Classifier"
    models_dir: Path  # root/"models": X.npy, y.npy, labels.csv, reports, plots/
    version: str

    @classmethod
    def at(cls, root: Path, version: str) -> Stage:
        return cls(root, root / "Classifier", root / "models", version)


def begin_stage(paths: OutputPaths, version: str) -> Stage:
    """Create an empty staging folder for ``version`` (an old one of that name is replaced)."""
    if not version or "/" in version or "\\" in version or version.startswith("."):
        raise PublishError(f"invalid model version id {version!r}")
    stage = Stage.at(paths.staging_dir / version, version)
    if stage.root.exists():
        shutil.rmtree(stage.root)
    stage.classifier_dir.mkdir(parents=True)
    stage.models_dir.mkdir(parents=True)
    return stage


def save_bundle(stage: Stage, bundle: dict[str, Any]) -> None:
    """Write the classifier bundle, its label encoder and the classes array into the stage.

    Each file goes through a temp file + fsync + ``os.replace``.
    """
    import numpy as np

    encoder = bundle["label_encoder"]
    atomic_write_bytes(stage.classifier_dir / BUNDLE_NAME, _joblib_bytes(bundle))
    atomic_write_bytes(stage.classifier_dir / LABEL_ENCODER_NAME, _joblib_bytes(encoder))
    buf = io.BytesIO()
    np.save(buf, np.asarray(encoder.classes_), allow_pickle=False)
    atomic_write_bytes(stage.classifier_dir / CLASSES_NAME, buf.getvalue())


# --------------------------------------------------------------------------- manifest


def write_manifest(directory: Path, model_version: str, extra_files: dict[str, Path] | None = None) -> Path:
    """Write ``manifest.json`` in ``directory``: SHA-256 and size of every file in it.

    ``extra_files`` adds files stored elsewhere under the given names (the pipeline's
    ``models/`` outputs as ``"models/X.npy"``…). Call it last, after every other file.
    """
    files: dict[str, dict[str, Any]] = {}
    for rel in _files_under(directory):
        if rel == MANIFEST_NAME or Path(rel).name.startswith("."):
            continue
        path = directory / rel
        files[rel] = {"sha256": _sha256_path(path), "size": path.stat().st_size}
    for name, path in sorted((extra_files or {}).items()):
        files[name] = {"sha256": _sha256_path(path), "size": Path(path).stat().st_size}
    manifest = {
        "format": MANIFEST_FORMAT,
        "model_version": model_version,
        "created_at": _utcnow().isoformat(timespec="seconds"),
        "files": files,
    }
    target = directory / MANIFEST_NAME
    atomic_write_json(target, manifest)
    return target


def read_manifest(directory: Path) -> dict[str, Any]:
    """Parse ``directory/manifest.json``; :class:`ModelLoadError` when missing or malformed."""
    path = directory / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelLoadError(
            f"The model manifest {path} is missing, so the model files cannot be verified. {FIX_HINT}"
        ) from err
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"The model manifest {path} is unreadable or corrupt ({err}). {FIX_HINT}") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or "model_version" not in manifest:
        raise ModelLoadError(f"The model manifest {path} is malformed (no 'files' / 'model_version'). {FIX_HINT}")
    return manifest


def check_bytes(manifest: dict[str, Any], name: str, data: bytes, where: Path) -> None:
    """Raise :class:`ModelLoadError` unless ``data`` is the content the manifest lists for ``name``."""
    entry = manifest["files"].get(name)
    if entry is None:
        raise ModelLoadError(f"{where} is not listed in the model manifest, so it cannot be trusted. {FIX_HINT}")
    if len(data) != entry.get("size") or sha256_bytes(data) != entry.get("sha256"):
        raise ModelLoadError(
            f"{where} does not match the model manifest (size {len(data)} vs {entry.get('size')} expected, or a "
            f"different SHA-256): it is half-written, damaged or was replaced. It was NOT loaded. {FIX_HINT}"
        )


def read_verified(directory: Path, manifest: dict[str, Any], name: str) -> bytes:
    """The bytes of ``directory/name``, checked against the manifest (read once: no check-then-use race)."""
    path = directory / name
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise ModelLoadError(f"Model file missing: {path}. {FIX_HINT}") from err
    check_bytes(manifest, name, data, path)
    return data


def verify_manifest(directory: Path, *, models_dir: Path | None = None) -> dict[str, Any]:
    """Check every file the manifest of ``directory`` lists; return the manifest.

    Files named ``models/…`` are checked against ``models_dir`` when it is given (they are
    training outputs, not needed to recognise faces). Raises :class:`ModelLoadError`
    naming the first file that is missing or whose size or hash differs.
    """
    manifest = read_manifest(directory)
    for name, entry in sorted(manifest["files"].items()):
        if not _safe_relative(name) or not isinstance(entry, dict):
            raise ModelLoadError(
                f"The model manifest {directory / MANIFEST_NAME} lists {name!r}, which is not a file inside the model "
                f"folders: it was edited by hand or by someone else. {FIX_HINT}"
            )
        if name.startswith(MODELS_PREFIX):
            if models_dir is None:
                continue
            path = models_dir / name[len(MODELS_PREFIX) :]
        else:
            path = directory / name
        if not path.is_file():
            raise ModelLoadError(f"Model file missing: {path} (listed in {directory / MANIFEST_NAME}). {FIX_HINT}")
        size = path.stat().st_size
        if size != entry.get("size") or _sha256_path(path) != entry.get("sha256"):
            raise ModelLoadError(
                f"{path} does not match the model manifest (size {size} vs {entry.get('size')} expected, or a "
                f"different SHA-256): it is half-written, damaged or was replaced. {FIX_HINT}"
            )
    return manifest


def _safe_relative(name: object) -> bool:
    """A relative POSIX path that stays inside its folder (no absolute path, drive, ``..`` or backslash)."""
    if not isinstance(name, str) or not name or "\\" in name or ":" in name or "\0" in name:
        return False
    parts = name.split("/")
    return not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _current_version(classifier_dir: Path) -> str | None:
    try:
        return str(read_manifest(classifier_dir)["model_version"])
    except ModelLoadError:
        return None


def _manifest_models_files(classifier_dir: Path) -> list[str]:
    try:
        manifest = read_manifest(classifier_dir)
    except ModelLoadError:
        return []
    return [n[len(MODELS_PREFIX) :] for n in manifest["files"] if n.startswith(MODELS_PREFIX)]


# --------------------------------------------------------------------------- publish / rollback / recover


@dataclass(frozen=True)
class PublishResult:
    version: str
    published: list[Path]
    removed: list[Path]  # prior artifacts moved into versions/ or deleted
    archived_to: Path | None


def _journal_path(paths: OutputPaths) -> Path:
    return paths.backend_models / JOURNAL_NAME


def _archive_name(paths: OutputPaths) -> str:
    base = _current_version(paths.classifier_dir) or "legacy-" + _utcnow().strftime("%Y%m%dT%H%M%SZ")
    name, n = base, 1
    while (paths.versions_dir / name).exists():
        name = f"{base}-{n}"
        n += 1
    return name


def _legacy_models_files(paths: OutputPaths) -> list[str]:
    """Seed-recipe files directly in models/ (X.npy, reports…) that are archived, not deleted."""
    out = []
    for path in paths.legacy_artifacts():
        if path.parent == paths.models_dir and path.is_file():
            out.append(path.name)
    return out


def publish(
    paths: OutputPaths,
    stage: Stage,
    *,
    verify: Callable[[Path], None] | None = None,
    keep_versions: int = 1,
) -> PublishResult:
    """Manifest → verify → swap the staged model in; the current one is kept in ``versions/``.

    ``verify(stage.classifier_dir)`` is the caller's full load check; if it raises, the
    stage is deleted and :class:`PublishError` raised with the published model untouched.
    Call it while holding :class:`RetrainLock`.
    """
    if not _inside(stage.root, paths.staging_dir):
        raise PublishError(f"staging folder {stage.root} is not under {paths.staging_dir}")
    extra = {MODELS_PREFIX + rel: stage.models_dir / rel for rel in _files_under(stage.models_dir)}
    write_manifest(stage.classifier_dir, stage.version, extra)
    return _swap_in(paths, stage, verify=verify, keep_versions=keep_versions, models_check=True)


def _swap_in(
    paths: OutputPaths,
    stage: Stage,
    *,
    verify: Callable[[Path], None] | None,
    keep_versions: int | None,
    models_check: bool,
    discard_stage_on_failure: bool = True,
) -> PublishResult:
    try:
        if models_check:
            verify_manifest(stage.classifier_dir, models_dir=stage.models_dir)
        if verify is not None:
            verify(stage.classifier_dir)
    except Exception as err:
        if discard_stage_on_failure:
            shutil.rmtree(stage.root, ignore_errors=True)
        raise PublishError(
            f"The new model failed its check and was NOT published ({err}). The current model is unchanged."
        ) from err

    new_models = _files_under(stage.models_dir)
    old_models = sorted(
        {
            rel
            for rel in set(new_models)
            | set(_manifest_models_files(paths.classifier_dir))
            | set(_legacy_models_files(paths))
            if (paths.models_dir / rel).is_file()
        }
    )
    has_current = paths.classifier_dir.exists() or bool(old_models)
    archive = paths.versions_dir / _archive_name(paths) if has_current else None
    journal = {
        "version": stage.version,
        "stage": str(stage.root),
        "archive": str(archive) if archive else None,
        "old_models": old_models,
        "new_models": new_models,
        "keep_versions": keep_versions,
        "started_at": _utcnow().isoformat(timespec="seconds"),
    }
    paths.backend_models.mkdir(parents=True, exist_ok=True)
    atomic_write_json(_journal_path(paths), journal)
    return _run_journal(paths, journal)


def _run_journal(paths: OutputPaths, journal: dict[str, Any]) -> PublishResult:
    """Carry out (or finish) the swap a journal describes. Every step is idempotent."""
    stage = Stage.at(Path(journal["stage"]), journal["version"])
    archive = Path(journal["archive"]) if journal.get("archive") else None
    for p in [stage.root] + ([archive] if archive else []):
        if not _inside(p, paths.backend_models):
            raise PublishError(
                f"publish journal {_journal_path(paths)} points outside {paths.backend_models}; delete it"
            )
    if not all(_safe_relative(rel) for rel in [*journal["old_models"], *journal["new_models"]]):
        raise PublishError(f"publish journal {_journal_path(paths)} names files outside {paths.models_dir}; delete it")
    removed: list[Path] = []
    # 1. the current model goes into versions/<old>/ (rename: nothing is copied or lost)
    if archive is not None:
        (archive / "models").mkdir(parents=True, exist_ok=True)
        if not (archive / ARCHIVE_INFO).exists():
            atomic_write_json(
                archive / ARCHIVE_INFO,
                {"archived_at": _utcnow().isoformat(timespec="microseconds"), "replaced_by": stage.version},
            )
        for rel in journal["old_models"]:
            src, dst = paths.models_dir / rel, archive / "models" / rel
            if src.is_file() and not dst.exists():  # once archived, models/rel can only be the new file
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
            if dst.exists():
                removed.append(src)
        if paths.classifier_dir.exists() and not (archive / "Classifier").exists():
            removed.extend(paths.classifier_dir / rel for rel in _files_under(paths.classifier_dir))
            os.replace(paths.classifier_dir, archive / "Classifier")
        elif (archive / "Classifier").exists():
            removed.extend(paths.classifier_dir / rel for rel in _files_under(archive / "Classifier"))
        _fsync_dir(archive)
    # 2. the new model comes in
    published: list[Path] = []
    if stage.classifier_dir.exists():
        if paths.classifier_dir.exists():  # no archive (first publish): a stray empty/partial dir
            _remove(paths.classifier_dir)
        paths.classifier_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage.classifier_dir, paths.classifier_dir)
        _fsync_dir(paths.classifier_dir.parent)
    published.extend(paths.classifier_dir / rel for rel in _files_under(paths.classifier_dir))
    for rel in journal["new_models"]:
        src, dst = stage.models_dir / rel, paths.models_dir / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        published.append(dst)
    if paths.models_dir.exists():
        _fsync_dir(paths.models_dir)
    # 3. seed-recipe leftovers nothing replaces (models/temp/, the old embeddings cache)
    keep = set(published)
    for path in paths.legacy_artifacts():
        if path.parent == paths.classifier_dir or path in keep:
            continue
        if path.exists() or path.is_symlink():
            _remove(path)
            removed.append(path)
    # 4. clean up: stage, old versions, journal
    shutil.rmtree(stage.root, ignore_errors=True)
    with contextlib.suppress(OSError):
        paths.staging_dir.rmdir()  # only when empty
    if journal.get("keep_versions") is not None:
        prune_versions(paths, int(journal["keep_versions"]))
    with contextlib.suppress(FileNotFoundError):
        _journal_path(paths).unlink()
    _fsync_dir(paths.backend_models)
    log.info("Published model %s%s", stage.version, f" (previous kept in {archive})" if archive else "")
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

    dirs = [d for d in paths.versions_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return sorted(dirs, key=stamp, reverse=True)


def prune_versions(paths: OutputPaths, keep_versions: int) -> list[Path]:
    """Delete archived versions beyond the newest ``keep_versions``; return what was deleted."""
    doomed = list_versions(paths)[max(0, keep_versions) :]
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)
        log.info("Deleted old model version %s", d.name)
    return doomed


def rollback(paths: OutputPaths, *, verify: Callable[[Path], None] | None = None) -> PublishResult:
    """Restore the newest kept version; the current model is archived in its place.

    Rolling back twice returns to where you started. ``verify`` defaults to the loader's
    :func:`~backend.recognizer.loader.verify_model_dir`.
    """
    versions = [v for v in list_versions(paths) if (v / "Classifier").is_dir()]
    if not versions:
        raise PublishError(
            f"No previous model is kept in {paths.versions_dir}, so there is nothing to roll back to. "
            "Re-run retraining (python retrain_model.py) instead."
        )
    target = versions[0]
    stage = Stage.at(target, _current_version(target / "Classifier") or target.name)
    has_manifest = (stage.classifier_dir / MANIFEST_NAME).exists()
    if not has_manifest:
        log.warning("Version %s has no manifest (an old-style model): its files cannot be verified", target.name)
    if verify is None:
        from .loader import load_model_files

        def verify(directory: Path) -> None:
            load_model_files(directory, require_manifest=has_manifest)

    result = _swap_in(
        paths, stage, verify=verify, keep_versions=None, models_check=has_manifest, discard_stage_on_failure=False
    )
    log.info("Rolled back to model %s", result.version)
    return result


def publish_in_progress(paths: OutputPaths) -> bool:
    """True while another live process holds the retraining lock."""
    owner = lock_owner(paths)
    return owner is not None and owner.get("pid") != os.getpid() and _owner_alive(owner)


def recover(paths: OutputPaths) -> list[str]:
    """Finish a publish that was interrupted, or clear one that never started swapping.

    Returns what was done (empty when there was nothing to do). Does nothing while
    another live process holds the retraining lock (that run may be mid-publish).
    """
    if publish_in_progress(paths):
        log.debug("recover: another run holds the retraining lock; leaving its files alone")
        return []
    actions: list[str] = []
    journal_file = _journal_path(paths)
    if journal_file.exists():
        try:
            journal = json.loads(journal_file.read_text(encoding="utf-8"))
            stage_root = Path(journal["stage"])
        except (OSError, ValueError, KeyError, TypeError):
            # the journal is written atomically, so this is a foreign/damaged file
            log.warning("Unreadable publish journal %s removed", journal_file)
            journal_file.unlink()
            actions.append(f"removed unreadable journal {journal_file}")
        else:
            rolled_back_from_version = not _inside(stage_root, paths.staging_dir)
            result = _run_journal(paths, journal)
            what = "rollback" if rolled_back_from_version else "publish"
            actions.append(f"finished interrupted {what} of model {result.version}")
            log.warning("An interrupted %s was completed: model %s is now in place", what, result.version)
    if paths.staging_dir.is_dir():
        for leftover in sorted(paths.staging_dir.iterdir()):
            _remove(leftover)
            actions.append(f"removed abandoned staging folder {leftover.name}")
        with contextlib.suppress(OSError):
            paths.staging_dir.rmdir()
    return actions


# --------------------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed child not yet reaped) is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _boot_id() -> str | None:
    """This boot of the machine (Linux); a lock from an earlier boot belongs to a dead run."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux clock ticks since boot): tells a reused pid from the lock's owner."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[19]  # field 22, counted after the ")" of the name
    except (OSError, ValueError, IndexError):
        return None


def lock_owner(paths: OutputPaths) -> dict[str, Any] | None:
    """Who holds the retraining lock (``{"pid", "host", "started_at"}``), or None."""
    try:
        text = paths.lock_file.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        info = json.loads(text)
        return info if isinstance(info, dict) else {}
    except ValueError:
        return {}


def _owner_alive(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # cannot tell: assume it is running
    boot = _boot_id()
    if owner.get("boot_id") and boot and owner["boot_id"] != boot:
        return False  # the machine restarted since (power cut during a run): that run is gone
    try:
        pid = int(owner.get("pid", -1))
    except (TypeError, ValueError):
        return False
    if not _pid_alive(pid):
        return False
    started = _process_start(pid)
    if owner.get("proc_start") and started and str(owner["proc_start"]) != started:
        return False  # the pid now belongs to another process
    return True


class RetrainLock:
    """Only one retraining run publishes at a time.

    ``with RetrainLock(paths, timeout=60):`` creates ``paths.lock_file`` exclusively,
    recording pid, host and start time (and, on Linux, the boot id and the process's
    start tick). A second run waits up to ``timeout`` seconds, then raises
    :class:`LockError`. A lock left by a run that no longer exists (same host, and the pid
    is not alive, or belongs to a newer process, or the machine rebooted since) is
    cleared with a warning.
    """

    #: An empty/unreadable lock file older than this is a crash between create and write.
    EMPTY_GRACE_S = 5.0

    def __init__(self, paths: OutputPaths, timeout: float = 60.0, poll: float = 0.2) -> None:
        self.paths = paths
        self.timeout = timeout
        self.poll = poll
        self._token: str | None = None

    def acquire(self) -> None:
        path = self.paths.lock_file
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": _utcnow().isoformat(timespec="seconds"),
            "token": secrets.token_hex(8),
            "boot_id": _boot_id(),
            "proc_start": _process_start(os.getpid()),
        }
        deadline = time.monotonic() + max(0.0, self.timeout)
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = lock_owner(self.paths)
                if self._stale(owner):
                    log.warning(
                        "Clearing a stale retraining lock %s left by a run that no longer exists (%s)",
                        path,
                        _describe(owner),
                    )
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    continue
                if time.monotonic() >= deadline:
                    raise LockError(
                        f"Another retraining run is in progress ({_describe(owner)}), so this one stopped without "
                        f"changing anything. Wait for it to finish and try again. If you are sure no other run is "
                        f"active, delete the lock file {path}."
                    ) from None
                time.sleep(self.poll)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(info, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._token = str(info["token"])
            return

    def _stale(self, owner: dict[str, Any] | None) -> bool:
        if owner is None:  # vanished meanwhile: just retry
            return False
        if not owner.get("pid"):
            try:
                age = time.time() - self.paths.lock_file.stat().st_mtime
            except FileNotFoundError:
                return False
            return age > self.EMPTY_GRACE_S
        return not _owner_alive(owner)

    def release(self) -> None:
        if self._token is None:
            return
        owner = lock_owner(self.paths)
        if owner is not None and owner.get("token") == self._token:
            with contextlib.suppress(FileNotFoundError):
                self.paths.lock_file.unlink()
        self._token = None

    def __enter__(self) -> RetrainLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "owner unknown"
    return f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started_at')}"
