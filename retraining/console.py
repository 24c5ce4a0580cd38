"""What the CLI prints at the end of a run: a short summary a teacher can read."""

from __future__ import annotations

from backend.recognizer.paths import ModelFolder

from .evaluate import MIN_USEFUL_RECOGNITION
from .pipeline import RunResult
from .report import confusion_lines


def format_summary(result: RunResult) -> str:
    """The clean end-of-run summary the CLI prints."""
    s = result.summary
    ev = s.evaluation
    title = "Retraining finished" if result.published else "Retraining finished: model NOT published (--review)"
    lines = [
        "",
        title,
        f"  students           : {len(s.extraction.counts())} trained ({len(s.index.students)} folders)",
        f"  photos             : {len(s.index.records)} found, {len(s.extraction.records)} embedded, "
        f"{len(s.all_skipped)} skipped",
        f"  held-out accuracy  : {'n/a' if ev.accuracy is None else f'{ev.accuracy:.1%}'} on {ev.n_test} photos",
        f"  threshold          : {s.threshold:.2f} ({s.threshold_source}"
        + ("" if s.threshold_source == "recommended" else f"; recommended {ev.recommended_threshold:.2f}")
        + ")",
        f"  time               : {s.timings.get('total', 0):.1f} s",
    ]
    if s.excluded_students:
        lines.append(f"  EXCLUDED (no usable photo): {', '.join(s.excluded_students)}")
    if ev.confusion.size and len(ev.labels) <= 12:
        lines += ["  confusion matrix:", *("    " + x for x in confusion_lines(ev))]
    if ev.open_set is not None:
        at = ev.open_set.row_at(s.threshold)
        far_ok = at.false_accept_rate <= ev.open_set.max_far
        line = (
            f"  stranger safety    : {at.false_accept_rate:.1%} of strangers accepted at {s.threshold:.2f} "
            f"(95% bound {at.false_accept_upper95:.1%}; target <= {ev.open_set.max_far:.1%}: "
            f"{'met' if far_ok else 'NOT met - see the report'})"
        )
        if far_ok and at.recognition_rate < MIN_USEFUL_RECOGNITION:
            line += f"; but only {at.recognition_rate:.0%} of students recognised - see the report"
        lines.append(line)
    if s.findings:
        lines.append(f"  data quality       : {len(s.findings)} photo(s)/student(s) to check (see the report)")
    if s.gate is not None:
        lines.append(f"  quality gate       : {s.gate.verdict()}")
    lines += [f"  WARNING            : {w}" for w in s.weights_warnings]
    if result.candidate is not None:
        report = ModelFolder.under(result.candidate).report_txt
        lines += [
            f"  candidate          : waits in {result.candidate}; the model in service is unchanged",
            f"  next               : read {report}, then publish it with: python retrain_model.py --promote",
        ]
        return "\n".join(lines)
    lines += ["  artifacts:", *(f"    {p}" for p in result.artifacts)]
    lines += [f"  previous artifacts removed ({len(result.removed)}):", *(f"    {p}" for p in result.removed)]
    if result.archived_to:
        lines.append(f"  previous model kept for rollback in {result.archived_to}")
    lines.append(f"  full report: {s.output_root / 'models' / 'training_report.txt'}")
    return "\n".join(lines)
