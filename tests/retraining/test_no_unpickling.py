"""Whoever can write backend/models/ can rewrite the manifest too: our code must simply never unpickle.

A crafted pickle whose ``__reduce__`` writes a marker file replaces both pickles of a real
published model, under a rewritten, consistent manifest. Loading, reloading, a retraining
run (whose gate reads the published model), ``--rollback`` to that model and
``test_retrained_model.py`` must all work from ``model.npz`` + ``model.json`` and never run it,
even with ``SMARTATTENDANCE_ALLOW_PICKLE=1`` in the admin's environment.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from conftest import OFFLINE_ARGS

import retrain_model
import test_retrained_model
from backend.recognizer import FaceRecognizer
from backend.recognizer.manifest import MODELS_PREFIX, read_manifest
from backend.recognizer.paths import OutputPaths
from retraining import publish


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def _plant(paths: OutputPaths, marker: Path) -> str:
    """Both pickles replaced by the crafted one, the manifest rewritten to match; returns the version."""
    old = read_manifest(paths.classifier_dir)
    for target in (paths.bundle, paths.label_encoder):
        target.write_bytes(pickle.dumps({"model": _Evil(marker)}))
    extra = {MODELS_PREFIX + rel: paths.models_dir / rel for rel in old.models_files()}
    publish.write_manifest(paths.classifier_dir, old.model_version, extra)
    return old.model_version


def test_crafted_pickles_run_no_code_in_load_reload_retraining_rollback_or_the_check(
    copy_root: Path, orl_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("SMARTATTENDANCE_ALLOW_PICKLE", "1")  # the backend's switch must not reach retraining
    paths = OutputPaths.at(copy_root)
    marker = tmp_path / "marker"
    planted = _plant(paths, marker)
    recognizer = FaceRecognizer.load(copy_root, require_manifest=True, allow_pickle=False)
    assert recognizer.model_version == planted
    assert test_retrained_model.main(["--output-root", str(copy_root)]) == 0

    # --force: these are the published model's photos, and an identical re-run publishes nothing
    argv = ["--data-dir", str(orl_tree), "--output-root", str(copy_root), "--quiet", "--force", *OFFLINE_ARGS]
    capsys.readouterr()
    assert retrain_model.main(argv) == 0
    assert f"compared with model {planted}" in capsys.readouterr().out  # the gate did read the published model
    assert recognizer.reload_if_changed() and recognizer.model_version != planted

    assert retrain_model.main(["--rollback", "--output-root", str(copy_root), "--quiet"]) == 0
    assert FaceRecognizer.load(copy_root, require_manifest=True, allow_pickle=False).model_version == planted
    assert recognizer.reload_if_changed() and recognizer.model_version == planted
    assert not marker.exists()
