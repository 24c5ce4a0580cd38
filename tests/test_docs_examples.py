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


def _bash_lines(page: str) -> list[str]:
    return [line for block in re.findall(r"```bash\n(.*?)```", page, re.S) for line in block.splitlines()]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (command,) = [line for line in _bash_lines(readme) if "requirements-dev.txt" in line and "pytest" in line]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in ci, f".ci/run does not run the README's test command {command!r}"


def test_the_readme_first_command_installs_the_runtime_set_and_runs_the_sampled_demo() -> None:
    """The first command needs only the repository: the runtime requirements and demo/photos; and the
    demo it runs is the one whose output tests/test_readme_samples.py checks."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = _bash_lines(readme)[0]
    install, demo = first.split(" && .venv/bin/python ", 1)
    assert install.endswith("pip install -r requirements.txt"), install
    assert f"<!-- sample: {demo} -->" in readme
    assert "../shared" not in first and (ROOT / "demo" / "photos").is_dir()
    photos = [p for p in (ROOT / "demo" / "photos").rglob("*") if p.is_file()]
    assert len(photos) >= 50 and sum(p.stat().st_size for p in photos) < 3_000_000


def _anchors(page: str) -> set[str]:
    """GitHub's ids of a Markdown page's headings."""
    page = re.sub(r"```.*?```", "", page, flags=re.S)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", page, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


#: Pages with a link known to be broken (each an expected failure, strict: mending it fails until removed here).
_KNOWN_BROKEN: dict[str, str] = {}
_PAGES = ["README.md", "demo/README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=_KNOWN_BROKEN[p])) if p in _KNOWN_BROKEN else p
        for p in _PAGES
    ],
)
def test_relative_links_lead_somewhere(page: str) -> None:
    """Every relative link of the user docs names a file that exists and, with #, one of its headings."""
    path = ROOT / page
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text(encoding="utf-8")):
            broken.append(target)
    assert not broken, f"{page}: broken links {broken}"
