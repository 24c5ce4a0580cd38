"""Tampering beyond retraining/test_publish.py / serving/test_loader.py (which cover each Classifier file truncated,
edited, missing, or swapped for the previous model's): the manifest itself edited, two files
swapped with each other, a file replaced by a link, an evil label-encoder pickle, and every
``models/`` training output of a real published model.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from fakes import publish_fake

from backend.recognizer import FaceRecognizer, ModelLoadError, hashing, journal, manifest
from backend.recognizer.loader import load_model_files
from backend.recognizer.paths import OutputPaths
from retraining import errors, publish

BUNDLE, ENCODER, CLASSES = "face_classifier_v1.pkl", "label_encoder.pkl", "label_encoder_classes.npy"


@pytest.fixture
def paths(tmp_path: Path) -> OutputPaths:
    p = OutputPaths.at(tmp_path / "out")
    publish_fake(p, "v1")
    publish_fake(p, "v2", seed=1, n_students=4)
    return p


def _refused(paths: OutputPaths, *names: str) -> str:
    with pytest.raises(ModelLoadError) as info:
        FaceRecognizer.load(paths.root)
    message = str(info.value)
    for name in names:
        assert name in message, message
    assert "--rollback" in message or "Re-run retraining" in message, message
    return message


def _edit_manifest(paths: OutputPaths, edit) -> None:
    manifest = json.loads(paths.manifest.read_text(encoding="utf-8"))
    edit(manifest)
    paths.manifest.write_text(json.dumps(manifest), encoding="utf-8")


def test_manifest_hash_edited(paths: OutputPaths) -> None:
    _edit_manifest(paths, lambda m: m["files"][BUNDLE].update(sha256="0" * 64))
    _refused(paths, BUNDLE, "does not match the model manifest")


def test_manifest_size_edited(paths: OutputPaths) -> None:
    _edit_manifest(paths, lambda m: m["files"][CLASSES].update(size=m["files"][CLASSES]["size"] + 1))
    _refused(paths, CLASSES)


def test_manifest_truncated(paths: OutputPaths) -> None:
    data = paths.manifest.read_bytes()
    paths.manifest.write_bytes(data[: len(data) // 2])
    _refused(paths, "manifest.json", "unreadable or corrupt")


def test_manifest_entry_removed(paths: OutputPaths) -> None:
    _edit_manifest(paths, lambda m: m["files"].pop("model.json"))
    _refused(paths, "model.json", "not listed")


def test_manifest_entry_of_the_arrays_removed_reads_as_an_old_model_and_is_not_unpickled(paths: OutputPaths) -> None:
    """The manifest decides the format: arrays it does not list are not trusted, and pickles are not read."""
    _edit_manifest(paths, lambda m: m["files"].pop("model.npz"))
    _refused(paths, "old format", "--upgrade-model")


def test_manifest_version_edited(paths: OutputPaths) -> None:
    _edit_manifest(paths, lambda m: m.update(model_version="v9"))
    _refused(paths, "manifest is for model v9", "model files are model v2")


def test_manifest_of_the_previous_model_swapped_in(paths: OutputPaths) -> None:
    paths.manifest.write_bytes((paths.versions_dir / "v1" / "Classifier" / "manifest.json").read_bytes())
    _refused(paths, "does not match the model manifest")


def test_manifest_deleted_is_refused_when_verification_is_required(paths: OutputPaths) -> None:
    paths.manifest.unlink()
    with pytest.raises(ModelLoadError, match="manifest.json"):
        FaceRecognizer.load(paths.root, require_manifest=True)


def test_two_files_swapped_with_each_other(paths: OutputPaths) -> None:
    bundle, encoder = paths.bundle.read_bytes(), paths.label_encoder.read_bytes()
    paths.bundle.write_bytes(encoder)
    paths.label_encoder.write_bytes(bundle)
    _refused(paths, "does not match the model manifest")


def test_file_replaced_by_a_link_to_another_models_file(paths: OutputPaths) -> None:
    paths.bundle.unlink()
    os.symlink(paths.versions_dir / "v1" / "Classifier" / BUNDLE, paths.bundle)
    _refused(paths, BUNDLE, "does not match the model manifest")


class _Evil:
    marker = ""

    def __reduce__(self):
        return (Path.write_text, (Path(_Evil.marker), "pwned"))


def test_evil_label_encoder_pickle_is_never_unpickled(paths: OutputPaths, tmp_path: Path) -> None:
    _Evil.marker = str(tmp_path / "marker")
    paths.label_encoder.write_bytes(pickle.dumps(_Evil()))
    _refused(paths, ENCODER)
    with pytest.raises(ModelLoadError):
        load_model_files(paths.classifier_dir, allow_pickle=True)  # refused by its hash before any unpickling
    publish.write_manifest(paths.classifier_dir, "v2")  # a consistent manifest: format 3 never reads it at all
    assert load_model_files(paths.classifier_dir, require_manifest=True).model_version == "v2"
    assert not (tmp_path / "marker").exists()


def test_every_models_output_of_a_real_model_is_checked(copy_root: Path) -> None:
    """Each file the manifest lists under models/ (X.npy … plots), truncated, is named by the check."""
    paths = OutputPaths.at(copy_root)
    files = manifest.read_manifest(paths.classifier_dir).files
    listed = [n[len("models/") :] for n in files if n.startswith("models/")]
    assert {
        "X.npy",
        "y.npy",
        "labels.csv",
        "training_report.txt",
        "metrics.json",
        "skipped_images.csv",
        "MODEL_README.md",
    } <= set(listed)
    for rel in listed:
        target = paths.models_dir / rel
        original = target.read_bytes()
        target.write_bytes(original[:-1] if original else b"x")
        with pytest.raises(ModelLoadError) as info:
            manifest.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)
        assert rel.split("/")[-1] in str(info.value)
        target.write_bytes(original)
    manifest.verify_manifest(paths.classifier_dir, models_dir=paths.models_dir)


def test_manifest_entry_pointing_outside_the_model_folder_is_refused(paths: OutputPaths, tmp_path: Path) -> None:
    """A forged entry whose hash matches a file elsewhere must not make the loader read outside its folder."""
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    digest = hashing.sha256_file(outside)
    for name in ("../../../outside.txt", str(outside), "models/../../outside.txt"):
        _edit_manifest(paths, lambda m, n=name: m["files"].update({n: {"sha256": digest, "size": 6}}))
        _refused(paths, repr(name), "not a file inside the model folders")
        _edit_manifest(paths, lambda m, n=name: m["files"].pop(n))
    FaceRecognizer.load(paths.root, require_manifest=True)  # intact again


def test_forged_journal_cannot_move_files_from_outside(paths: OutputPaths, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    forged = {
        "version": "v3",
        "stage": str(paths.staging_dir / "v3"),
        "archive": str(paths.versions_dir / "v2"),
        "old_models": ["../../victim.txt"],
        "new_models": [],
        "keep_versions": 1,
    }
    (paths.backend_models / journal.JOURNAL_NAME).write_text(json.dumps(forged))
    with pytest.raises(errors.PublishError, match="outside"):
        publish.recover(paths)
    assert victim.read_text() == "keep me"
    assert FaceRecognizer.load(paths.root, require_manifest=True).model_version == "v2"
