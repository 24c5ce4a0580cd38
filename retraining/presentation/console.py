"""What the CLI prints: the end-of-run summary a teacher can read, and what ``--dry-run`` and ``--erase`` did.

The words are in templates/console.txt.j2, dry_run.txt.j2 and erasure.txt.j2. Each text ends without
a newline: ``print`` adds it.
"""

from __future__ import annotations

from pathlib import Path

from backend.recognizer.paths import ModelFolder

from ..erasure import ErasureResult
from ..pipeline import DryRunResult, RunResult
from .templating import render
from .text_report import confusion_lines
from .words import key_figures, students_in_order, verdict_words

#: Above this many students the summary leaves the confusion matrix to the report.
CONSOLE_CONFUSION_MAX = 12


def format_summary(result: RunResult) -> str:
    """The clean end-of-run summary the CLI prints."""
    s = result.summary
    ev = s.evaluation
    if result.candidate is not None:
        report = ModelFolder.under(result.candidate).report_txt
    else:
        report = s.output_root / "models" / "training_report.txt"
    text = render(
        "console.txt.j2",
        result=result,
        s=s,
        **verdict_words(s.verdict),
        skipped_folders=len(s.index.skipped_student_folders()),
        figures=key_figures(s),
        confusion=confusion_lines(ev) if ev.confusion.size and len(ev.labels) <= CONSOLE_CONFUSION_MAX else [],
        report=report,
    )
    return text.removesuffix("\n")


def format_erasure(result: ErasureResult, root: Path) -> str:
    """What ``--erase`` prints: what was removed or retrained, and where the record is."""
    return render("erasure.txt.j2", result=result, root=root).removesuffix("\n")


def format_dry_run(dry: DryRunResult) -> str:
    """What ``--dry-run`` prints: the students found, and exactly what a real run would replace."""
    return render("dry_run.txt.j2", dry=dry, students=students_in_order(dry.index)).removesuffix("\n")
