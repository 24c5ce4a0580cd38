"""The serving package's import graph: no training code, no circle (import-linter and grimp)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_contracts_hold() -> None:
    """``[tool.importlinter]`` in pyproject.toml: serving never imports training; records import no behaviour."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def test_backend_recognizer_has_no_import_circle() -> None:
    graph = grimp.build_graph("backend", exclude_type_checking_imports=True)
    modules = sorted(m for m in graph.modules if m.startswith("backend.recognizer."))
    assert "backend.recognizer.metadata" in modules and "backend.recognizer.session" in modules
    circles = [
        (a, b)
        for a, b in itertools.combinations(modules, 2)
        if graph.find_shortest_chain(a, b) and graph.find_shortest_chain(b, a)
    ]
    assert not circles, circles
