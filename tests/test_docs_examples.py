"""docs/LOADER_API.md shows the example apps exactly as they are in examples/ (which tests run)."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT


@pytest.mark.parametrize("name", ["examples/flask_app.py", "examples/fastapi_app.py"])
def test_loader_api_shows_the_example_file_as_it_is(name: str) -> None:
    page = (ROOT / "docs" / "LOADER_API.md").read_text(encoding="utf-8")
    found = re.search(
        rf"<!-- BEGIN {re.escape(name)} -->\n```python\n(.*?)```\n<!-- END {re.escape(name)} -->", page, re.S
    )
    assert found, f"docs/LOADER_API.md has no block for {name}"
    assert found.group(1) == (ROOT / name).read_text(encoding="utf-8"), f"docs/LOADER_API.md is out of date for {name}"
