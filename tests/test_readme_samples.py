"""The sample outputs shown in README.md and docs/ are what the commands print today.

A sample is a fenced block right after a marker ``<!-- sample: SCRIPT ARGS... -->``. The test runs
each marked command, in the order the documents show them (README.md first: its demo publishes the
model the later samples read), on the repository's own demo photos with the offline models: no
``../shared`` data, nothing downloaded. ``--output-root`` is pointed at a temporary folder.

Each sample is then compared with what was printed (stdout and stderr, as in a terminal) line by
line, modulo numbers, model version ids and the output folder's path; blank lines and runs of spaces
do not count. A sample line ``...`` stands for any number of printed lines; printed lines before the
sample's first line are skipped (a sample may start at the summary). A first line ``$ ...`` must show
the marker's command. The runs are end-to-end (about a minute on 2 cores): marked ``slow``. Being
subprocesses that need nothing else from the session, they start in the background as soon as the
session knows these tests will run (``conftest.run_early``), on the core the test process leaves idle.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ENVIRON, ROOT, early_result, run_early, run_process

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- sample: (?P<command>.+?) -->\n[ \t]*```[a-z]*\n(?P<block>.*?)[ \t]*```", re.S)
VERSION = re.compile(r"\b\d{8}T\d{6}Z-[0-9a-f]{6}\b|<version>")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
ELLIPSIS = "..."
#: How the samples write the output folder: ".../demo/output", or "…" before a path.
SAMPLE_ROOT = re.compile(r"(?:\.\.\.|…)(?:/demo/output\b|(?=/))")


@dataclass(frozen=True)
class Sample:
    document: Path
    command: str
    lines: list[str]

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}: {self.command}"


def samples() -> list[Sample]:
    found = []
    for document in DOCUMENTS:
        for match in MARKER.finditer(document.read_text(encoding="utf-8")):
            found.append(Sample(document, match["command"], match["block"].splitlines()))
    return found


def _normalise(line: str, out_root: str | None = None) -> str:
    if out_root is not None:
        line = line.replace(out_root, "<out>").replace(f"{ROOT}/", "")  # project paths as the docs write them
    else:
        line = SAMPLE_ROOT.sub("<out>", line)
    line = VERSION.sub("<version>", line)
    line = NUMBER.sub("0", line)
    return " ".join(line.split())


def compare(sample: list[str], printed: list[str], out_root: str) -> str | None:
    """None when ``sample`` matches ``printed``; else what differs, in the document's words."""
    want = [(raw, _normalise(raw)) for raw in sample if raw.strip()]
    got = [(raw, _normalise(raw, out_root)) for raw in printed if raw.strip()]
    j = 0
    if want and want[0][1] != ELLIPSIS:
        j = next((k for k, (_, g) in enumerate(got) if g == want[0][1]), -1)
        if j < 0:
            return f"never printed: {want[0][0]!r}"
    i = 0
    while i < len(want):
        raw, w = want[i]
        if w == ELLIPSIS:
            if i + 1 == len(want):
                return None
            nxt_raw, nxt = want[i + 1]
            while j < len(got) and got[j][1] != nxt:
                j += 1
            if j == len(got):
                return f"not printed after the '...': {nxt_raw!r}"
        elif j >= len(got):
            return f"the sample goes on, the output has ended: {raw!r}"
        elif got[j][1] != w:
            return f"the sample says {raw!r}\n  the run printed {got[j][0]!r}"
        else:
            j += 1
        i += 1
    if j < len(got):
        return f"printed after the sample's last line (add it, or end the sample with '...'): {got[j][0]!r}"
    return None


def _args(command: str, out_root: Path) -> list[str]:
    args = shlex.split(command)
    if "--output-root" in args:
        args[args.index("--output-root") + 1] = str(out_root)
    else:
        args += ["--output-root", str(out_root)]
    return args


BACKEND_EXAMPLE = re.compile(r"```python\n(.*?)```\n\nprints `(.*?)`", re.S)


@dataclass(frozen=True)
class Runs:
    out_root: str
    printed: dict[str, str]  # command -> what it printed
    backend: subprocess.CompletedProcess[str] | None  # the README's backend example, run on the demo's model


def _run_samples(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Every sampled command, run once in document order, then the README's backend example."""
    out = tmp_path_factory.mktemp("samples") / "output"
    env = {**ENVIRON, "PYTHONUNBUFFERED": "1"}  # stdout and stderr interleaved as in a terminal
    printed: dict[str, str] = {}
    for sample in samples():
        if sample.command in printed:
            continue
        result = run_process(
            [sys.executable, *_args(sample.command, out)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
        assert result.returncode == 0, f"{sample.command} failed:\n{result.stdout[-4000:]}"
        printed[sample.command] = result.stdout
    out_root = str(out.resolve())
    backend = None
    code = BACKEND_EXAMPLE.search((ROOT / "README.md").read_text(encoding="utf-8"))
    if code and '"demo/output"' in code[1]:  # else the test says what is missing
        script = code[1].replace('"demo/output"', repr(out_root))
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        backend = run_process([sys.executable, "-c", script], cwd=ROOT, env=ENVIRON, timeout=300, **pipes)
    return Runs(out_root, printed, backend)


# started in the background when the session starts (conftest.run_early): the runs are subprocesses
run_early("runs", _run_samples)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The output root, what each sampled command printed, and the backend example's run."""
    return early_result("runs", tmp_path_factory)


def test_the_readme_shows_the_demo_and_the_docs_the_checker() -> None:
    """The samples this test keeps in sync are still marked (a lost marker would silently check nothing)."""
    shown = {(s.document.name, s.command.split()[0]) for s in samples()}
    assert ("README.md", "retrain_model.py") in shown
    assert ("REFERENCE.md", "test_retrained_model.py") in shown


@pytest.mark.slow
@pytest.mark.parametrize("sample", samples(), ids=lambda s: s.name)
def test_sample_output_is_what_the_command_prints(sample: Sample, runs: Runs) -> None:
    out_root, printed = runs.out_root, runs.printed
    lines = sample.lines
    if lines and lines[0].startswith("$ "):
        assert lines[0] == f"$ .venv/bin/python {sample.command}", f"{sample.name}: the shown command differs"
        lines = lines[1:]
    problem = compare(lines, printed[sample.command].splitlines(), out_root)
    assert problem is None, (
        f"{sample.name}: the sample is out of date:\n  {problem}\n--- the run printed ---\n{printed[sample.command]}"
    )


@pytest.mark.slow
def test_the_readme_backend_example_runs_on_the_demo_model(runs: Runs) -> None:
    """The README's backend snippet, on the model the demo published, prints what the README says."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = BACKEND_EXAMPLE.search(readme)
    assert code, "README.md: no backend example followed by 'prints `...`'"
    assert '"demo/output"' in code[1]
    result = runs.backend  # the snippet, with the demo's output folder, run after the samples (_run_samples)
    assert result is not None and result.args[-1] == code[1].replace('"demo/output"', repr(runs.out_root))
    assert result.returncode == 0, result.stderr[-3000:]
    assert _normalise(result.stdout) == _normalise(code[2]), (result.stdout, code[2])


def test_compare_reads_ellipses_and_ignores_numbers() -> None:
    printed = ["stage 1", "", "Summary", "  time : 3.5 s", "  a", "  b", "  path: /tmp/x/out/m.txt"]
    sample = ["Summary", "  time   : 41.5 s", "  ...", "  path: .../demo/output/m.txt"]
    assert _normalise("in .../demo/output") == _normalise("in /tmp/x/out", "/tmp/x/out") == "in <out>"
    assert _normalise("…/backend/x") == _normalise("/tmp/x/out/backend/x", "/tmp/x/out")
    assert compare(sample, printed, "/tmp/x/out") is None
    assert "never printed" in str(compare(["Other"], printed, "/tmp/x/out"))
    assert "printed after" in str(compare(sample[:2], printed, "/tmp/x/out"))
    assert "the run printed" in str(compare(["Summary", "  time : 3.5 min"], printed, "/tmp/x/out"))
