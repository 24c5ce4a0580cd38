"""Publishing, rollback, crash recovery, manifest checks and the retraining lock (tiny fake models)."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import joblib
import numpy as np
import pytest
from conftest import tree_digest
from fakes import (
    DIM,
    current_version,
    failing_replace,
    make_model_bundle,
    make_stage,
    publish_fake,
    seed_pickle_dict,
)

from backend.recognizer import journal, manifest
from backend.recognizer.errors import ModelLoadError
from backend.recognizer.loader import FaceRecognizer, load_model_files, verify_model_dir
from backend.recognizer.paths import OutputPaths
from retraining import files, lock, publish
from retraining.errors import LockError, PublishError


@pytest.fixture
def paths(tmp_path: Path) -> OutputPaths:
    return OutputPaths.at(tmp_path / "out")


# --------------------------------------------------------------------------- basics


def test_version_ids_are_unique_and_sortable() -> None:
    ids = [publish.new_version_id() for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(len(i) == len("20261122T221500Z-1a2b3c") and i[8] == "T" for i in ids)


def test_first_publish_writes_everything_and_manifest_covers_it(paths: OutputPaths) -> None:
    result = publish_fake(paths, "v1")
    assert result.version == "v1" and result.archived_to is None and result.removed == []
    for p in (
        paths.model_npz,
        paths.model_json,
        paths.bundle,
        paths.label_encoder,
        paths.classes,
        paths.manifest,
        paths.X,
        paths.y,
        paths.models_dir / "plots" / "cm.png",
    ):
        assert p.is_file() and p in result.published
    listed = manifest.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)
    assert listed.format == 1 and listed.model_version == "v1"
    assert {
        "model.npz",
        "model.json",
        "face_classifier_v1.pkl",
        "label_encoder.pkl",
        "label_encoder_classes.npy",
        "models/X.npy",
        "models/plots/cm.png",
    } <= set(listed.files)
    assert not paths.staging_dir.exists()
    assert not (paths.backend_models / journal.JOURNAL_NAME).exists()
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

    back = publish.rollback(paths)
    assert back.version == "v1" and current_version(paths) == "v1"
    assert tree_digest(paths.classifier_dir) == v1_files
    manifest.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)  # models/ files restored too
    assert [d.name for d in publish.list_versions(paths)] == ["v2"]
    publish.rollback(paths)  # and forward again
    assert current_version(paths) == "v2"


def test_rollback_without_previous_version_is_a_clear_error(paths: OutputPaths) -> None:
    publish_fake(paths, "v1")
    with pytest.raises(PublishError, match="nothing to roll back"):
        publish.rollback(paths)
    assert current_version(paths) == "v1"


def test_keep_versions_prunes_old_models(paths: OutputPaths) -> None:
    for i in range(4):
        publish_fake(paths, f"v{i}", keep_versions=2, seed=i)
    assert [d.name for d in publish.list_versions(paths)] == ["v2", "v1"]
    publish_fake(paths, "v9", keep_versions=0)
    assert publish.list_versions(paths) == []


def test_failed_verify_leaves_current_model_untouched(paths: OutputPaths) -> None:
    publish_fake(paths, "v1")
    before = tree_digest(paths.root)
    stage = make_stage(paths, "v2")

    def broken(_: Path) -> None:
        raise ModelLoadError("simulated: does not load")

    with pytest.raises(PublishError, match="NOT published"):
        publish.publish(paths, stage, verify=broken)
    assert not stage.root.exists()
    assert tree_digest(paths.root) == before
    assert current_version(paths) == "v1"


def test_legacy_artifacts_are_archived_or_removed_and_listed(paths: OutputPaths) -> None:
    # the original recipe's layout: a bare classifier, loose training files, a temp folder and a cache
    paths.classifier_dir.mkdir(parents=True)
    bundle = seed_pickle_dict("old")
    _, X, y = make_model_bundle("old")
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
    # rolling back to the old bare-classifier model would mean unpickling it: refused, v1 stays
    with pytest.raises(PublishError, match="NOT published.*--upgrade-model"):
        publish.rollback(paths)
    assert load_model_files(paths.classifier_dir).model_version == "v1"


# --------------------------------------------------------------------------- crashes


class Crash(BaseException):
    """Stands in for a SIGKILL in the middle of publishing."""


@pytest.mark.parametrize("crash_at", range(1, 16))
def test_interrupted_publish_is_recovered(paths: OutputPaths, crash_at: int) -> None:
    publish_fake(paths, "v1")
    stage = make_stage(paths, "v2", seed=1)
    moves = itertools.count(1)
    crashed = False
    try:
        with failing_replace(lambda src, dst: next(moves) == crash_at, Crash):
            publish.publish(paths, stage, verify=verify_model_dir)
    except Crash:
        crashed = True
    journal_written = (paths.backend_models / journal.JOURNAL_NAME).exists()

    notes = publish.recover(paths)
    assert not paths.staging_dir.exists()
    assert not (paths.backend_models / journal.JOURNAL_NAME).exists()
    loaded = load_model_files(paths.classifier_dir, require_manifest=True)
    manifest.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)
    expected = "v2" if (journal_written or not crashed) else "v1"
    assert loaded.model_version == expected
    if crashed and journal_written:
        assert any("interrupted publish" in n for n in notes)
        assert (paths.versions_dir / "v1" / "Classifier").is_dir()
    # and the next run publishes normally
    publish_fake(paths, "v3", seed=2)
    assert current_version(paths) == "v3"


def test_loader_reads_the_complete_model_mid_swap_and_writes_nothing(paths: OutputPaths) -> None:
    """Crash between the two renames: the backend serves the new model where the journal says it
    is, touching no file; the next retraining run finishes the swap and the backend switches over."""
    publish_fake(paths, "v1")
    stage = make_stage(paths, "v2", seed=1)
    # Classifier/ already moved away, the new one not yet in
    with failing_replace(lambda src, dst: src == stage.classifier_dir, Crash), pytest.raises(Crash):
        publish.publish(paths, stage, verify=verify_model_dir)
    assert not paths.classifier_dir.exists()
    before = tree_digest(paths.root)
    recognizer = FaceRecognizer.load(paths.root, require_manifest=True)
    assert recognizer.model_version == "v2"
    _, X, y = make_model_bundle("v2", seed=1)
    assert [r.student_id for r in recognizer.classify(X)] == list(y)
    assert not recognizer.reload_if_changed()
    assert tree_digest(paths.root) == before and not paths.classifier_dir.exists()  # read only
    assert any("finished interrupted publish" in n for n in publish.recover(paths))  # the next run's job
    assert recognizer.reload_if_changed() and recognizer.classifier_dir == paths.classifier_dir
    assert recognizer.model_version == "v2"


# --------------------------------------------------------------------------- manifest tampering


def _publish_two(paths: OutputPaths) -> None:
    publish_fake(paths, "v1")
    publish_fake(paths, "v2", seed=1, n_students=4)


@pytest.mark.parametrize(
    "name", ["model.npz", "model.json", "face_classifier_v1.pkl", "label_encoder.pkl", "label_encoder_classes.npy"]
)
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
        manifest.verify_manifest(paths.classifier_dir)
    assert name in str(info.value) and "--rollback" in str(info.value)
    with pytest.raises(ModelLoadError, match=name.replace(".", r"\.")):
        load_model_files(paths.classifier_dir)


def test_manifest_checks_models_files_when_asked(paths: OutputPaths) -> None:
    publish_fake(paths, "v1")
    np.save(paths.X, np.zeros((2, DIM), dtype=np.float32))
    manifest.verify_manifest(paths.classifier_dir)  # the backend does not need X.npy
    with pytest.raises(ModelLoadError, match="X.npy"):
        manifest.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)


# --------------------------------------------------------------------------- lock


def test_lock_blocks_a_second_run_names_it_then_frees(paths: OutputPaths) -> None:
    with lock.RetrainLock(paths):
        info = json.loads(paths.lock_owner_file.read_text())
        assert info["pid"] == os.getpid() and info["host"]
        with pytest.raises(LockError, match="Another retraining run is in progress") as err:
            lock.RetrainLock(paths, timeout=0.3, poll=0.05).acquire()
        assert f"pid {os.getpid()}" in str(err.value) and "--wait" in str(err.value)
    assert not paths.lock_owner_file.exists()
    with lock.RetrainLock(paths, timeout=0):
        pass


def test_a_lock_file_left_on_disk_does_not_block(paths: OutputPaths) -> None:
    """Only a live OS lock blocks: a lock file (and owner record) left by a dead run, or written by
    an earlier release, is no obstacle, whatever pid it names."""
    paths.lock_file.parent.mkdir(parents=True)
    paths.lock_file.write_text(json.dumps({"pid": os.getppid(), "host": "here", "started_at": "earlier"}))
    paths.lock_owner_file.write_text(json.dumps({"pid": os.getppid(), "host": "here", "started_at": "earlier"}))
    with lock.RetrainLock(paths, timeout=0):
        assert json.loads(paths.lock_owner_file.read_text())["pid"] == os.getpid()


def test_published_files_are_readable_by_the_backends_group_only(tmp_path: Path) -> None:
    """The web backend may run as another account (in the folder's group): the model in a Classifier/
    folder is 0640; every other artifact is owner-only (0600). See tests/retraining/test_file_modes.py."""
    old = os.umask(0o022)
    files._umask.cache_clear()
    try:
        files.atomic_write_bytes(tmp_path / "f.bin", b"x")
        files.atomic_write_bytes(tmp_path / "Classifier" / "model.npz", b"x")
    finally:
        os.umask(old)
        files._umask.cache_clear()
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "Classifier" / "model.npz").stat().st_mode & 0o777 == 0o640
