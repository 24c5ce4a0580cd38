"""``retrain_model.py --upgrade-model``: convert models of earlier releases to ``model.npz`` + ``model.json``.

A model published before format 3 is stored only as pickles, which the loader no longer
reads unless asked to (a pickle can run code). This converts the model in service, the
versions kept for ``--rollback`` and a ``--review`` candidate, without retraining: every file
of a folder is checked against its manifest, and its pickles are read ONCE, by that check (the
bytes unpickled are the bytes hashed); they are turned into the same arrays
(``backend.recognizer.legacy``), written beside them, and covered by a new manifest written
last. The new files are then loaded exactly as the backend loads them and must give the same
probabilities and confidences. The pickles stay where they are.

Until the manifest is replaced the loader sees the old model unchanged, and a model that
fails any step keeps its old files and manifest: the folder is never half-converted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.recognizer.errors import ModelLoadError
from backend.recognizer.hashing import sha256_bytes
from backend.recognizer.legacy import read_pickled_model
from backend.recognizer.loader import load_model_files
from backend.recognizer.manifest import FileEntry, Manifest, read_manifest, read_verified
from backend.recognizer.paths import (
    MANIFEST_NAME,
    MODEL_JSON_NAME,
    MODEL_NPZ_NAME,
    PICKLED_FILES,
    ModelFolder,
    OutputPaths,
)

from .errors import PublishError
from .files import atomic_write_bytes, atomic_write_json
from .model_files import json_bytes, npz_bytes

log = logging.getLogger(__name__)

#: Largest difference allowed between the answers of the old files and of the converted ones.
PARITY_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Upgraded:
    """What happened to one model folder."""

    classifier_dir: Path
    version: str | None
    status: str  # "upgraded", "already" (format 3 before) or "failed"
    detail: str = ""
    max_difference: float | None = None


def model_folders(paths: OutputPaths) -> list[ModelFolder]:
    """The folders a model can be served or restored from: published, kept versions, the waiting candidate."""
    folders = [paths.published] if paths.classifier_dir.is_dir() else []
    for parent in (paths.versions_dir, paths.candidate_dir):
        if parent.is_dir():
            folders += [f for f in map(ModelFolder.under, sorted(parent.iterdir())) if f.classifier_dir.is_dir()]
    return folders


def upgrade_all(paths: OutputPaths) -> list[Upgraded]:
    """Convert every folder of :func:`model_folders`; call it while holding the retraining lock."""
    return [upgrade_folder(folder) for folder in model_folders(paths)]


def upgrade_folder(folder: ModelFolder) -> Upgraded:
    """Convert one model folder (see the module docstring); never raises for a bad model, reports it."""
    directory = folder.classifier_dir
    try:
        if not folder.manifest.is_file():
            raise PublishError(
                f"{directory} has no {MANIFEST_NAME}, so its pickles cannot be verified before they are read. "
                "Re-run retraining (python retrain_model.py) to replace this model."
            )
        manifest = read_manifest(directory)
        already = MODEL_NPZ_NAME in manifest.files
        # every listed file is checked; the pickles are read here, once: the bytes unpickled are the bytes hashed
        pickles = manifest.check_files(directory, read=() if already else PICKLED_FILES)
        if already:
            return Upgraded(directory, manifest.model_version, "already")

        def read(name: str) -> bytes:  # a pickle the manifest does not list: read_verified refuses it
            return pickles[name] if name in pickles else read_verified(directory, manifest, name)

        bundle, _ = read_pickled_model(directory, read)
        npz, meta = npz_bytes(bundle), json_bytes(bundle)
        files = {
            **manifest.files,
            MODEL_NPZ_NAME: FileEntry(sha256_bytes(npz), len(npz)),
            MODEL_JSON_NAME: FileEntry(sha256_bytes(meta), len(meta)),
        }
        new = Manifest(manifest.model_version, manifest.created_at, files, manifest.format)
        atomic_write_bytes(folder.model_npz, npz)
        atomic_write_bytes(folder.model_json, meta)
        # the check before the switch: the new files alone, read as the backend reads them
        probe = _probe(folder, bundle.embedding_dim)
        want_p, _, want_c = bundle.model.recognize(probe)
        atomic_write_json(folder.manifest, new.to_dict())  # last: from here on the loader reads model.npz
        try:
            loaded = load_model_files(directory, require_manifest=True, allow_pickle=False)
            got_p, _, got_c = loaded.model.recognize(probe)
            diff = float(max(np.max(np.abs(got_p - want_p)), np.max(np.abs(got_c - want_c))))
            if diff >= PARITY_TOLERANCE:  # cannot happen unless the files are changed under us
                raise PublishError(f"the converted model answers differently (max difference {diff:.2e})")
        except (ModelLoadError, PublishError, OSError):
            atomic_write_json(folder.manifest, manifest.to_dict())  # the old manifest back: served as before
            raise
    except (ModelLoadError, PublishError, OSError) as err:
        log.warning("Could not upgrade %s: %s", directory, err)
        return Upgraded(directory, None, "failed", str(err))
    log.info("Upgraded %s (model %s) to %s + %s", directory, bundle.model_version, MODEL_NPZ_NAME, MODEL_JSON_NAME)
    return Upgraded(directory, bundle.model_version, "upgraded", max_difference=diff)


def _probe(folder: ModelFolder, dim: int) -> np.ndarray:
    """Embeddings to compare answers on: the model's own X.npy when it fits, plus random unit vectors."""
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((64, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    try:
        X = np.load(folder.X, allow_pickle=False)
    except (OSError, ValueError):
        return vecs
    if X.ndim == 2 and X.shape[1] == dim and X.dtype.kind == "f":
        return np.concatenate([np.asarray(X, dtype=np.float32), vecs])
    return vecs
