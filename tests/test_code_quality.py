"""The code stays lint-clean, formatted and type-checked (ruff and mypy, configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ENVIRON, ROOT, early_result, run_early, run_process

RUFF = {"lint": ["check", "."], "format": ["format", "--check", "."]}


def _checks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str] | None]:
    """ruff (lint, format) and mypy on the project; None for a tool that is not installed."""
    results: dict[str, subprocess.CompletedProcess[str] | None] = {}

    def tool(module: str, *args: str) -> subprocess.CompletedProcess[str] | None:
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        if run_process([sys.executable, "-m", module, "--version"], env=ENVIRON, timeout=120, **pipes).returncode:
            return None
        return run_process([sys.executable, "-m", module, *args], cwd=ROOT, env=ENVIRON, timeout=900, **pipes)

    for name, args in RUFF.items():
        results[name] = tool("ruff", *args)
    # a private cache: a test run never adds files to the project folder
    results["mypy"] = tool("mypy", "--cache-dir", str(tmp_path_factory.mktemp("mypy") / "mypy-cache"))
    return results


# started in the background when the session starts (conftest.run_early): single-threaded subprocesses
run_early("code_checks", _checks)


@pytest.fixture(scope="module")
def code_checks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str] | None]:
    return early_result("code_checks", tmp_path_factory)


def _passed(result: subprocess.CompletedProcess[str] | None, module: str) -> None:
    if result is None:
        pytest.fail(f"{module} is not installed: pip install -r requirements.txt")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("check", list(RUFF), ids=list(RUFF))
def test_ruff(check: str, code_checks: dict[str, subprocess.CompletedProcess[str] | None]) -> None:
    _passed(code_checks[check], "ruff")


def test_mypy_on_both_packages(code_checks: dict[str, subprocess.CompletedProcess[str] | None]) -> None:
    """backend.recognizer (strict where the backend calls it), retraining and the two CLIs."""
    _passed(code_checks["mypy"], "mypy")


def test_missing_real_data_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from conftest import require_shared_data

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="real test data not found"):
        require_shared_data(tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run with ../shared/data"):
        require_shared_data(tmp_path / "absent")
    require_shared_data(tmp_path)  # present: nothing happens
