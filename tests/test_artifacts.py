"""Publishing, rollback, crash recovery, manifest checks and the retraining lock (tiny fake models)."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from conftest import tree_digest

from backend.recognizer import artifacts
from backend.recognizer.errors import LockError, ModelLoadError, PublishError
from backend.recognizer.loader import load_model_files, verify_model_dir
from backend.recognizer.paths import OutputPaths
from backend.recognizer.train import TrainedModel, fit_model

DIM = 16


@functools.cache
def _fitted(n_students: int, dim: int, seed: int, noise: float) -> tuple[TrainedModel, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_students, dim))
    X = np.concatenate([c + noise * rng.standard_normal((6, dim)) for c in centres]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.repeat([f"STU{i + 1:03d}" for i in range(n_students)], 6)
    return fit_model(X, y), X, y


def make_bundle(
    version: str, n_students: int = 3, dim: int = DIM, seed: int = 0, noise: float = 0.05
) -> tuple[dict, np.ndarray, np.ndarray]:
    """A real (tiny) bundle as the pipeline writes it, trained on random unit vectors (noise: class overlap)."""
    model, X, y = _fitted(n_students, dim, seed, noise)
    names = {sid: f"Student {sid[-1]}" for sid in model.classes}
    bundle = {
        "format_version": 1,
        "classifier": model.classifier,
        "scaler": model.scaler,
        "label_encoder": model.label_encoder,
        "student_names": names,
        "threshold": 0.5,
        "metadata": {
            "model_version": version,
            "created_at": "2026-01-01T00:00:00+00:00",
            "embedding_dim": dim,
            "threshold": 0.5,
            "normalisation": "l2",
            "detector": {"name": "mtcnn", "model_file": None, "weights_sha256": None},
            "embedder": {"name": "fake", "weights_sha256": None, "dim": dim},
            "backend_config": {"detector": "mtcnn", "embedder": "dlib", "detector_model": None},
            "crop_size": 150,
            "crop_method": "similarity-5pt-arcface-template",
            "students": names,
        },
    }
    return bundle, X, y


def make_stage(paths: OutputPaths, version: str | None = None, **kw) -> artifacts.Stage:
    version = version or artifacts.new_version_id()
    bundle, X, y = make_bundle(version, **kw)
    stage = artifacts.begin_stage(paths, version)
    np.save(stage.models_dir / "X.npy", X)
    np.save(stage.models_dir / "y.npy", y)
    (stage.models_dir / "training_report.txt").write_text(f"report {version}\n")
    (stage.models_dir / "plots").mkdir()
    (stage.models_dir / "plots" / "cm.png").write_bytes(b"png " + version.encode())
    artifacts.save_bundle(stage, bundle)
    return stage


def publish_fake(
    paths: OutputPaths, version: str | None = None, keep_versions: int = 1, **kw
) -> artifacts.PublishResult:
    return artifacts.publish(
        paths, make_stage(paths, version, **kw), verify=verify_model_dir, keep_versions=keep_versions
    )


def current_version(paths: OutputPaths) -> str:
    return json.loads(paths.manifest.read_text())["model_version"]


@pytest.fixture
def paths(tmp_path: Path) -> OutputPaths:
    return OutputPaths.at(tmp_path / "out")


# --------------------------------------------------------------------------- basics


def test_version_ids_are_unique_and_sortable() -> None:
    ids = [artifacts.new_version_id() for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(len(i) == len("20261122T221500Z-1a2b3c") and i[8] == "T" for i in ids)


def test_first_publish_writes_everything_and_manifest_covers_it(paths: OutputPaths) -> None:
    result = publish_fake(paths, "v1")
    assert result.version == "v1" and result.archived_to is None and result.removed == []
    for p in (
        paths.bundle,
        paths.label_encoder,
        paths.classes,
        paths.manifest,
        paths.X,
        paths.y,
        paths.models_dir / "plots" / "cm.png",
    ):
        assert p.is_file() and p in result.published
    manifest = artifacts.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)
    assert manifest["format"] == 1 and manifest["model_version"] == "v1"
    assert {
        "face_classifier_v1.pkl",
        "label_encoder.pkl",
        "label_encoder_classes.npy",
        "models/X.npy",
        "models/plots/cm.png",
    } <= set(manifest["files"])
    assert not paths.staging_dir.exists()
    assert not (paths.backend_models / artifacts.JOURNAL_NAME).exists()
    assert load_model_files(paths.classifier_dir).model_version == "v1"


def test_publish_keeps_previous_version_and_rollback_restores_it(paths: OutputPaths) -> None:
    publish_fake(paths, "v1")
    v1_files = tree_digest(paths.classifier_dir)
    second = publish_fake(paths, "v2", seed=1)
    assert current_version(paths) == "v2"
    assert second.archived_to == paths.versions_dir / "v1"
    assert tree_digest(paths.versions_dir / "v1" / "Classifier") == v1_files
    assert (paths.versions_dir / "v1" / "models" / "X.npy").is_file()
    assert set(second.removed) >= {paths.bundle, paths.label_encoder, paths.classes, paths.manifest, paths.X, paths.y}

    back = artifacts.rollback(paths)
    assert back.version == "v1" and current_version(paths) == "v1"
    assert tree_digest(paths.classifier_dir) == v1_files
    artifacts.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)  # models/ files restored too
    assert [d.name for d in artifacts.list_versions(paths)] == ["v2"]
    artifacts.rollback(paths)  # and forward again
    assert current_version(paths) == "v2"


def test_rollback_without_previous_version_is_a_clear_error(paths: OutputPaths) -> None:
    publish_fake(paths, "v1")
    with pytest.raises(PublishError, match="nothing to roll back"):
        artifacts.rollback(paths)
    assert current_version(paths) == "v1"


def test_keep_versions_prunes_old_models(paths: OutputPaths) -> None:
    for i in range(4):
        publish_fake(paths, f"v{i}", keep_versions=2, seed=i)
    assert [d.name for d in artifacts.list_versions(paths)] == ["v2", "v1"]
    publish_fake(paths, "v9", keep_versions=0)
    assert artifacts.list_versions(paths) == []


def test_failed_verify_leaves_current_model_untouched(paths: OutputPaths) -> None:
    publish_fake(paths, "v1")
    before = tree_digest(paths.root)
    stage = make_stage(paths, "v2")

    def broken(_: Path) -> None:
        raise ModelLoadError("simulated: does not load")

    with pytest.raises(PublishError, match="NOT published"):
        artifacts.publish(paths, stage, verify=broken)
    assert not stage.root.exists()
    assert tree_digest(paths.root) == before
    assert current_version(paths) == "v1"


def test_legacy_artifacts_are_archived_or_removed_and_listed(paths: OutputPaths) -> None:
    # the seed recipe's layout: a bare classifier, loose training files, a temp folder and a cache
    paths.classifier_dir.mkdir(parents=True)
    bundle, X, y = make_bundle("old")
    joblib.dump(bundle["classifier"], paths.bundle)
    joblib.dump(bundle["label_encoder"], paths.label_encoder)
    np.save(paths.classes, bundle["label_encoder"].classes_)
    paths.models_dir.mkdir(parents=True)
    np.save(paths.X, X)
    (paths.models_dir / "MODEL_README.md").write_text("old readme")
    (paths.models_dir / "temp").mkdir()
    (paths.models_dir / "temp" / "junk.jpg").write_bytes(b"x")
    cache = paths.root / "backend" / "recognizer" / "embeddings_cache.npy"
    cache.parent.mkdir(parents=True)
    np.save(cache, X)
    outside = paths.root / "notes.txt"
    outside.write_text("not ours")

    result = publish_fake(paths, "v1")
    assert result.archived_to is not None and result.archived_to.name.startswith("legacy-")
    assert (result.archived_to / "Classifier" / "face_classifier_v1.pkl").is_file()
    assert (result.archived_to / "models" / "MODEL_README.md").read_text() == "old readme"
    assert not (paths.models_dir / "MODEL_README.md").exists()  # the new stage has none: archived, not kept
    assert not (paths.models_dir / "temp").exists() and not cache.exists()
    for p in (paths.bundle, paths.X, paths.models_dir / "MODEL_README.md", paths.models_dir / "temp", cache):
        assert p in result.removed
    assert outside.read_text() == "not ours"
    # the old bare-classifier model can still be rolled back to
    artifacts.rollback(paths)
    assert load_model_files(paths.classifier_dir).model_version == "legacy"


# --------------------------------------------------------------------------- crashes


class Crash(BaseException):
    """Stands in for a SIGKILL in the middle of publishing."""


@pytest.mark.parametrize("crash_at", range(1, 16))
def test_interrupted_publish_is_recovered(paths: OutputPaths, monkeypatch: pytest.MonkeyPatch, crash_at: int) -> None:
    publish_fake(paths, "v1")
    stage = make_stage(paths, "v2", seed=1)
    real_replace = os.replace
    calls = {"n": 0}

    def flaky_replace(src, dst):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise Crash
        return real_replace(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", flaky_replace)
    crashed = False
    try:
        artifacts.publish(paths, stage, verify=verify_model_dir)
    except Crash:
        crashed = True
    monkeypatch.setattr(artifacts.os, "replace", real_replace)
    journal_written = (paths.backend_models / artifacts.JOURNAL_NAME).exists()

    notes = artifacts.recover(paths)
    assert not paths.staging_dir.exists()
    assert not (paths.backend_models / artifacts.JOURNAL_NAME).exists()
    loaded = load_model_files(paths.classifier_dir, require_manifest=True)
    artifacts.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)
    expected = "v2" if (journal_written or not crashed) else "v1"
    assert loaded.model_version == expected
    if crashed and journal_written:
        assert any("interrupted publish" in n for n in notes)
        assert (paths.versions_dir / "v1" / "Classifier").is_dir()
    # and the next run publishes normally
    publish_fake(paths, "v3", seed=2)
    assert current_version(paths) == "v3"


def test_loader_finishes_interrupted_publish_when_classifier_missing(
    paths: OutputPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.recognizer.loader import FaceRecognizer

    publish_fake(paths, "v1")
    stage = make_stage(paths, "v2", seed=1)
    real_rename = os.replace

    def crash_after_archiving(src, dst):  # noqa: ANN001
        if Path(src) == stage.classifier_dir:  # Classifier/ already moved away, new one not yet in
            raise Crash
        return real_rename(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", crash_after_archiving)
    with pytest.raises(Crash):
        artifacts.publish(paths, stage, verify=verify_model_dir)
    monkeypatch.setattr(artifacts.os, "replace", real_rename)
    assert not paths.classifier_dir.exists()
    recognizer = FaceRecognizer.load(paths.root)
    assert recognizer.model_version == "v2"


# --------------------------------------------------------------------------- manifest tampering


def _publish_two(paths: OutputPaths) -> None:
    publish_fake(paths, "v1")
    publish_fake(paths, "v2", seed=1, n_students=4)


@pytest.mark.parametrize("name", ["face_classifier_v1.pkl", "label_encoder.pkl", "label_encoder_classes.npy"])
@pytest.mark.parametrize("damage", ["truncated", "edited", "missing", "swapped"])
def test_manifest_names_the_damaged_file(paths: OutputPaths, name: str, damage: str) -> None:
    _publish_two(paths)
    target = paths.classifier_dir / name
    data = target.read_bytes()
    if damage == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "edited":
        target.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    elif damage == "missing":
        target.unlink()
    else:  # the same file of the previous model
        target.write_bytes((paths.versions_dir / "v1" / "Classifier" / name).read_bytes())
    with pytest.raises(ModelLoadError) as info:
        artifacts.verify_manifest(paths.classifier_dir)
    assert name in str(info.value) and "--rollback" in str(info.value)
    with pytest.raises(ModelLoadError, match=name.replace(".", r"\.")):
        load_model_files(paths.classifier_dir)


def test_manifest_checks_models_files_when_asked(paths: OutputPaths) -> None:
    publish_fake(paths, "v1")
    np.save(paths.X, np.zeros((2, DIM), dtype=np.float32))
    artifacts.verify_manifest(paths.classifier_dir)  # the backend does not need X.npy
    with pytest.raises(ModelLoadError, match="X.npy"):
        artifacts.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)


# --------------------------------------------------------------------------- lock


def test_lock_blocks_a_second_run_then_frees(paths: OutputPaths) -> None:
    with artifacts.RetrainLock(paths) as lock:
        info = json.loads(paths.lock_file.read_text())
        assert info["pid"] == os.getpid() and info["host"]
        with pytest.raises(LockError, match="Another retraining run is in progress") as err:
            artifacts.RetrainLock(paths, timeout=0.3, poll=0.05).acquire()
        assert str(paths.lock_file) in str(err.value)
        assert lock is not None
    assert not paths.lock_file.exists()
    with artifacts.RetrainLock(paths, timeout=0):
        pass


def test_stale_lock_from_dead_process_is_cleared(paths: OutputPaths, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(proc.stdout)
    paths.lock_file.parent.mkdir(parents=True)
    paths.lock_file.write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(), "started_at": "earlier"}))
    with caplog.at_level(logging.WARNING), artifacts.RetrainLock(paths, timeout=0):
        assert json.loads(paths.lock_file.read_text())["pid"] == os.getpid()
    assert "stale retraining lock" in caplog.text


def test_recover_leaves_a_live_runs_files_alone(paths: OutputPaths) -> None:
    publish_fake(paths, "v1")
    stage = make_stage(paths, "v2")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        import socket

        paths.lock_file.write_text(json.dumps({"pid": child.pid, "host": socket.gethostname(), "started_at": "now"}))
        assert artifacts.recover(paths) == []
        assert stage.root.is_dir()
    finally:
        child.kill()
        child.wait()
    assert any("staging" in n for n in artifacts.recover(paths))  # the owner is gone: cleaned up
    assert not stage.root.exists()


def test_published_files_are_readable_by_other_users(tmp_path: Path) -> None:
    """The web backend may run as another account: artifacts get normal (umask) permissions, not 0600."""
    old = os.umask(0o022)
    try:
        artifacts.atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644
