"""The code stays lint-clean, formatted and type-checked (ruff and mypy, configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def _tool(module: str) -> None:
    if subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True).returncode != 0:
        pytest.fail(f"{module} is not installed: pip install -r requirements.txt")


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(args: list[str]) -> None:
    _tool("ruff")
    result = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_on_both_packages(tmp_path: Path) -> None:
    """backend.recognizer (strict where the backend calls it), retraining and the two CLIs."""
    _tool("mypy")
    # a private cache: a test run never adds files to the project folder
    cmd = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_real_data_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from conftest import require_shared_data

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="real test data not found"):
        require_shared_data(tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run with ../shared/data"):
        require_shared_data(tmp_path / "absent")
    require_shared_data(tmp_path)  # present: nothing happens
