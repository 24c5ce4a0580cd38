"""--upgrade-model on the folders a model can be restored from (tiny fake models; the release-1.0
model's own upgrade is tests/serving/test_published_models.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tree_digest
from fakes import make_model_bundle, publish_fake, write_classifier

from backend.recognizer.errors import ModelLoadError
from backend.recognizer.loader import load_model_files
from backend.recognizer.paths import OutputPaths
from retraining import publish, upgrade
from retraining.errors import PublishError


def _kept_old_version(paths: OutputPaths, version: str) -> Path:
    """A version of an earlier release kept for rollback: pickles + manifest, no model.npz."""
    folder = paths.version(version)
    folder.classifier_dir.mkdir(parents=True)
    folder.models_dir.mkdir()
    write_classifier(folder.classifier_dir, version, pickles_only=True, seed=7)
    publish.write_manifest(folder.classifier_dir, version)
    return folder.classifier_dir


def test_a_kept_old_version_is_refused_by_rollback_until_upgraded(tmp_path: Path) -> None:
    paths = OutputPaths.at(tmp_path / "out")
    publish_fake(paths, "v2")
    old = _kept_old_version(paths, "v1")
    with pytest.raises(PublishError, match="--upgrade-model"):
        publish.rollback(paths)
    assert load_model_files(paths.classifier_dir).model_version == "v2"  # refused: nothing moved

    results = {r.classifier_dir: r for r in upgrade.upgrade_all(paths)}
    assert results[paths.classifier_dir].status == "already"
    assert results[old].status == "upgraded" and results[old].max_difference == 0.0
    reference = load_model_files(old, allow_pickle=True).model  # the same model, read from its pickles
    assert publish.rollback(paths).version == "v1"
    restored = load_model_files(paths.classifier_dir, require_manifest=True, allow_pickle=False)
    assert restored.model_version == "v1" and not restored.pickled
    _, X, _ = make_model_bundle("v1", seed=7)
    for a, b in zip(restored.model.recognize(X), reference.recognize(X), strict=True):
        assert np.array_equal(a, b)


def test_a_folder_without_a_manifest_is_not_upgraded(tmp_path: Path) -> None:
    paths = OutputPaths.at(tmp_path / "out")
    publish_fake(paths, "v2")
    old = _kept_old_version(paths, "v1")
    (old / "manifest.json").unlink()
    before = tree_digest(old)
    (result,) = [r for r in upgrade.upgrade_all(paths) if r.classifier_dir == old]
    assert result.status == "failed" and "no manifest.json" in result.detail
    assert tree_digest(old) == before
    with pytest.raises(ModelLoadError, match="old format"):
        load_model_files(old)


def test_a_waiting_candidate_is_upgraded_too(tmp_path: Path) -> None:
    paths = OutputPaths.at(tmp_path / "out")
    publish_fake(paths, "v2")
    old = _kept_old_version(paths, "v3")
    candidate = paths.candidate("v3")
    paths.candidate_dir.mkdir(parents=True)
    shutil.move(str(old.parent), str(candidate.classifier_dir.parent))
    assert [r.status for r in upgrade.upgrade_all(paths)] == ["already", "upgraded"]
    assert load_model_files(candidate.classifier_dir, require_manifest=True).model_version == "v3"


def test_a_conversion_that_fails_after_the_switch_puts_the_old_manifest_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new manifest is written last; if reading the converted files then fails, the folder must
    still be what it was (served from its pickles on request), not half converted."""
    paths = OutputPaths.at(tmp_path / "out")
    publish_fake(paths, "v2")
    old = _kept_old_version(paths, "v1")
    manifest_before = (old / "manifest.json").read_bytes()

    def refuse(*args: object, **kwargs: object) -> None:
        raise ModelLoadError("the converted files cannot be read")

    monkeypatch.setattr(upgrade, "load_model_files", refuse)
    (result,) = [r for r in upgrade.upgrade_all(paths) if r.classifier_dir == old]
    assert result.status == "failed" and "cannot be read" in result.detail
    assert (old / "manifest.json").read_bytes() == manifest_before
    monkeypatch.undo()
    assert load_model_files(old, allow_pickle=True).model_version == "v1"
    with pytest.raises(ModelLoadError, match="old format"):
        load_model_files(old)
