"""How long face data stays: the cache after --promote, set-aside models after a publish, --keep-versions 0."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import retrain_model
from backend.recognizer.paths import OutputPaths
from tests.conftest import OFFLINE_ARGS


def run(data: Path, root: Path, *extra: str) -> int:
    return retrain_model.main(["--data-dir", str(data), "--output-root", str(root), "--quiet", *OFFLINE_ARGS, *extra])


def cached_keys(paths: OutputPaths) -> set[str]:
    with np.load(paths.cache_dir / "embeddings.npz", allow_pickle=False) as npz:
        return {str(k) for k in npz["keys"]} | {str(k) for k in npz["skipped_keys"]}


def without(orl_tree: Path, tmp_path: Path, folder: str) -> Path:
    data = tmp_path / "data"
    shutil.copytree(orl_tree, data)
    shutil.rmtree(data / folder)
    return data


def test_promote_drops_the_cached_faces_of_a_student_who_left(copy_root: Path, orl_tree: Path, tmp_path: Path) -> None:
    paths = OutputPaths.at(copy_root)
    before = cached_keys(paths)
    data = without(orl_tree, tmp_path, "STU003_Person_3")
    assert run(data, copy_root, "--review") == 0
    assert cached_keys(paths) == before  # --review publishes nothing, so the cache keeps everything
    assert run(data, copy_root, "--promote") == 0
    after = cached_keys(paths)
    assert len(before) - len(after) == 10 and after < before
    assert json.loads((paths.cache_dir / "cache.json").read_text())["entries"] == len(after)


def test_a_published_model_removes_waiting_and_rejected_models_unless_asked(
    copy_root: Path, orl_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = OutputPaths.at(copy_root)
    assert run(orl_tree, copy_root, "--review") == 0
    (waiting,) = list(paths.candidate_dir.iterdir())
    shutil.copytree(waiting, paths.rejected_dir / waiting.name)  # a refused model, set aside as the gate does
    # --force: the photos are those of the published model, and an identical re-run publishes nothing
    assert run(orl_tree, copy_root, "--keep-unpublished", "--force") == 0
    assert waiting.is_dir() and (paths.rejected_dir / waiting.name).is_dir()
    capsys.readouterr()
    assert run(orl_tree, copy_root, "--force") == 0
    out = capsys.readouterr().out
    assert not any(paths.candidate_dir.iterdir()) and not any(paths.rejected_dir.iterdir())
    assert f"removed candidate model {waiting.name}" in out and f"removed rejected model {waiting.name}" in out


def test_keep_versions_0_says_the_previous_model_is_gone(
    copy_root: Path, orl_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = OutputPaths.at(copy_root)
    capsys.readouterr()
    assert run(orl_tree, copy_root, "--keep-versions", "0", "--force") == 0
    out = capsys.readouterr().out
    assert "kept for rollback" not in out
    assert "previous model deleted (--keep-versions 0)" in out
    assert not list(paths.versions_dir.iterdir())
