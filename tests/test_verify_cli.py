"""test_retrained_model.py: passes on a freshly trained model, fails clearly on a damaged one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ORL, ROOT

import test_retrained_model as cli

pytestmark = pytest.mark.slow  # end-to-end runs of retrain_model.py


def test_subprocess_passes_on_fresh_model(published_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "test_retrained_model.py", "--output-root", str(published_root), "--strict"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[FAIL]" not in proc.stdout and "-> PASS" in proc.stdout
    assert "integrity:" in proc.stdout and "agree with y.npy" in proc.stdout


def test_subprocess_fails_on_damaged_model(copy_root: Path) -> None:
    label_encoder = copy_root / "backend" / "models" / "Classifier" / "label_encoder.pkl"
    label_encoder.write_bytes(label_encoder.read_bytes()[:-10])
    proc = subprocess.run(
        [sys.executable, "test_retrained_model.py", "--output-root", str(copy_root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "[FAIL] integrity:" in proc.stdout and "label_encoder.pkl" in proc.stdout
    assert "--rollback" in proc.stdout and "-> FAIL" in proc.stdout


def test_identify_on_photos_prints_top3(published_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--output-root", str(published_root), "--device", "cpu", "--images", str(ORL / "s2" / "1.pgm")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "face 1 at" in out and "STU002" in out and "   3. " in out


def test_strict_turns_warnings_into_failure(
    published_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blank = tmp_path / "photos"
    blank.mkdir()
    import cv2

    cv2.imwrite(str(blank / "empty.png"), np.full((100, 100, 3), 200, np.uint8))  # no face: a warning
    args = ["--output-root", str(published_root), "--device", "cpu", "--folder", str(blank)]
    assert cli.main(args) == 0
    assert "no face found" in capsys.readouterr().out
    assert cli.main([*args, "--strict"]) == 1


def test_missing_model_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--output-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "model files missing" in out and "retrain_model.py" in out


def test_wrong_stored_embeddings_fail(copy_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x_path = copy_root / "models" / "X.npy"
    X = np.load(x_path)
    np.save(x_path, X * 2)  # not normalised (and no longer matching the manifest)
    assert cli.main(["--output-root", str(copy_root)]) == 1
    out = capsys.readouterr().out
    assert "X.npy does not match the model manifest" in out and "not L2-normalised" in out
