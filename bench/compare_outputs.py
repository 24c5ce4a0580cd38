"""Compare what two retraining runs wrote and printed, apart from timestamps, version ids, durations and paths.

    python bench/compare_outputs.py /tmp/pres_before /tmp/pres_after [before.stdout after.stdout]

Exit 0 and no output when the artifacts (models/training_report.txt, MODEL_README.md, metrics.json,
report.html, inputs.csv, labels.csv, skipped_images.csv, Classifier/model.json) and the console
summaries are the same once normalised; otherwise a unified diff per file that differs.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

ARTIFACTS = (
    "models/training_report.txt",
    "models/MODEL_README.md",
    "models/metrics.json",
    "models/report.html",
    "models/inputs.csv",
    "models/labels.csv",
    "models/skipped_images.csv",
    "backend/models/Classifier/model.json",
)

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}"), "<VERSION>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(\+00:00|Z)?"), "<TIME>"),
    (re.compile(r"(time\s+:\s+)[0-9.]+( s)"), r"\1<SECONDS>\2"),  # console summary
    (re.compile(r"^(  [a-z_]+\s+)\s*[0-9]+\.[0-9]{2}$", re.M), r"\1<SECONDS>"),  # TIMINGS (s) rows
    (re.compile(r'("(index|load_models|extract|quality|evaluate|train|total)": )[0-9.e-]+'), r"\1<SECONDS>"),
    (re.compile(r'("run_fingerprint": )"[0-9a-f]{64}"'), r"\1<FINGERPRINT>"),  # hashes this program's code
    (
        re.compile(r"<td>(index|load_models|extract|quality|evaluate|train|total)</td><td>[0-9.]+</td>"),
        r"<td>\1</td><td>S</td>",
    ),
)


def normalise(text: str, roots: list[str]) -> str:
    for root in roots:
        text = text.replace(root, "<ROOT>")
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text


def diff(before: Path, after: Path, name: str, roots: list[str]) -> list[str]:
    a = normalise(before.read_text(encoding="utf-8"), roots).splitlines(keepends=True)
    b = normalise(after.read_text(encoding="utf-8"), roots).splitlines(keepends=True)
    return list(difflib.unified_diff(a, b, f"before/{name}", f"after/{name}"))


def compare(before: Path, after: Path, stdouts: tuple[Path, Path] | None = None) -> list[str]:
    roots = [str(before), str(after)]
    out: list[str] = []
    for rel in ARTIFACTS:
        out += diff(before / rel, after / rel, rel, roots)
    if stdouts is not None:
        out += diff(*stdouts, "stdout", roots)
    return out


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    lines = compare(args[0], args[1], (args[2], args[3]) if len(args) == 4 else None)
    sys.stdout.writelines(lines)
    sys.exit(1 if lines else 0)
