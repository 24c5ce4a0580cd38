"""Tiny real models for tests about files and loading: fitted on random unit vectors in a blink.

A bundle made here is exactly what the pipeline writes (same ModelBundle, same publish code),
only trained on 16-d random vectors instead of face embeddings.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.recognizer.bundle import ModelBundle
from backend.recognizer.loader import verify_model_dir
from backend.recognizer.metadata import (
    BackendChoice,
    CropSpec,
    DetectorSpec,
    EmbedderSpec,
    FaceModels,
    ModelMetadata,
)
from backend.recognizer.paths import OutputPaths
from retraining import publish
from retraining.model_files import write_model_files, write_seed_files
from retraining.train import FittedModel, fit_model

DIM = 16


@functools.cache
def _fitted(n_students: int, dim: int, seed: int, noise: float) -> tuple[FittedModel, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_students, dim))
    X = np.concatenate([c + noise * rng.standard_normal((6, dim)) for c in centres]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.repeat([f"STU{i + 1:03d}" for i in range(n_students)], 6)
    return fit_model(X, y), X, y


def make_fitted_bundle(
    version: str, n_students: int = 3, dim: int = DIM, seed: int = 0, noise: float = 0.05
) -> tuple[ModelBundle, FittedModel, np.ndarray, np.ndarray]:
    """A real (tiny) bundle as the pipeline writes it, trained on random unit vectors (noise: class overlap)."""
    model, X, y = _fitted(n_students, dim, seed, noise)
    metadata = ModelMetadata(
        model_version=version,
        created_at="2026-01-01T00:00:00+00:00",
        threshold=0.5,
        students={sid: f"Student {sid[-1]}" for sid in model.classes},
        face_models=FaceModels(
            embedding_dim=dim,
            normalisation="l2",
            detector=DetectorSpec(name="mtcnn"),
            embedder=EmbedderSpec(name="fake", dim=dim),
            crop=CropSpec(size=150, method="similarity-5pt-arcface-template"),
        ),
        backend=BackendChoice("mtcnn", "dlib", None),
    )
    return ModelBundle(model.model, metadata), model, X, y


def make_model_bundle(version: str, **kw: Any) -> tuple[ModelBundle, np.ndarray, np.ndarray]:
    bundle, _, X, y = make_fitted_bundle(version, **kw)
    return bundle, X, y


def seed_pickle_dict(version: str, **kw: Any) -> dict[str, Any]:
    """The dict pickled into face_classifier_v1.pkl (for tests of old-format models and of damage)."""
    bundle, fitted, _, _ = make_fitted_bundle(version, **kw)
    return {
        "format_version": 2,
        "classifier": fitted.classifier,
        "scaler": fitted.scaler,
        "label_encoder": fitted.label_encoder,
        "open_set": {"centres": fitted.centres, "calibrator": fitted.open_set_calibrator},
        "metadata": bundle.metadata.to_dict(),
    }


def write_classifier(directory: Any, version: str, *, pickles_only: bool = False, **kw: Any) -> None:
    """A Classifier folder's files (no manifest): format 3 + seed pickles, or the pickles only (an old release)."""
    bundle, fitted, _, _ = make_fitted_bundle(version, **kw)
    if not pickles_only:
        write_model_files(directory, bundle)
    write_seed_files(directory, bundle, fitted)


def make_stage(paths: OutputPaths, version: str | None = None, **kw) -> publish.Stage:
    version = version or publish.new_version_id()
    bundle, fitted, X, y = make_fitted_bundle(version, **kw)
    stage = publish.begin_stage(paths, version)
    np.save(stage.models_dir / "X.npy", X)
    np.save(stage.models_dir / "y.npy", y)
    (stage.models_dir / "training_report.txt").write_text(f"report {version}\n")
    (stage.models_dir / "plots").mkdir()
    (stage.models_dir / "plots" / "cm.png").write_bytes(b"png " + version.encode())
    publish.save_bundle(stage, bundle, fitted)
    return stage


def publish_fake(paths: OutputPaths, version: str | None = None, keep_versions: int = 1, **kw) -> publish.PublishResult:
    return publish.publish(
        paths, make_stage(paths, version, **kw), verify=verify_model_dir, keep_versions=keep_versions
    )


def current_version(paths: OutputPaths) -> str:
    return json.loads(paths.manifest.read_text())["model_version"]


@contextmanager
def failing_replace(fails: Callable[[Path, Path], bool], error: BaseException | type[BaseException]) -> Iterator[None]:
    """Within the block, ``os.replace`` (each move a publish makes) raises ``error`` for the moves
    ``fails(src, dst)`` picks, a full disk or a kill mid-publish, and makes the others for real."""
    real_replace = publish.os.replace

    def replace(src, dst, *args, **kwargs):
        if fails(Path(src), Path(dst)):
            raise error
        return real_replace(src, dst, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(publish.os, "replace", replace)
        yield
