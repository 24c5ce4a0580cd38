"""What the CLI prints at the end of a run: a short summary a teacher can read, rendered from the run's records."""

from __future__ import annotations

from pathlib import Path

from backend.recognizer.paths import ModelFolder

from ..erasure import ErasureResult
from ..pipeline import DryRunResult, RunResult
from .text_report import confusion_lines
from .words import (
    fmt_threshold,
    key_figures,
    students_in_order,
    verdict_cause_text,
    verdict_headline,
    verdict_tradeoff_text,
)


def format_summary(result: RunResult) -> str:
    """The clean end-of-run summary the CLI prints."""
    s = result.summary
    ev = s.evaluation
    title = "Retraining finished" if result.published else "Retraining finished: model NOT published (--review)"
    verdict = s.verdict
    headline = verdict_headline(verdict)
    skipped_folders = len(s.index.skipped_student_folders())
    folders = len(s.index.students) + skipped_folders
    lines = [
        "",
        f"{title}. ATTENTION: {headline}" if headline else title,
    ]
    if headline:
        lines.append(f"  likely cause       : {verdict_cause_text(verdict)}")
        if verdict.tradeoffs:
            lines.append(f"  trade-off          : {verdict_tradeoff_text(verdict)}")
        lines.append("  what to do         : fix the photos listed in the report and retrain (or choose --threshold)")
    lines += [
        f"  students           : {len(s.extraction.counts())} trained ({folders} folders"
        + (f"; {skipped_folders} skipped: see the report" if skipped_folders else "")
        + ")",
        f"  photos             : {len(s.index.records)} found, {len(s.extraction.records)} embedded, "
        f"{len(s.all_skipped)} skipped",
        *(f"  {label:<19}: {value} {detail}" for label, value, detail in key_figures(s)),
        f"  held-out accuracy  : {'n/a' if ev.accuracy is None else f'{ev.accuracy:.1%}'} on {ev.n_test} photos",
        f"  threshold          : {fmt_threshold(s.threshold)} ({s.threshold_source}"
        + ("" if s.threshold_source == "recommended" else f"; recommended {ev.recommended_threshold:.2f}")
        + ")",
        f"  time               : {s.timings.total:.1f} s",
    ]
    if s.excluded_students:
        lines.append(f"  EXCLUDED (no usable photo): {', '.join(s.excluded_students)}")
    if ev.confusion.size and len(ev.labels) <= 12:
        lines += ["  confusion matrix:", *("    " + x for x in confusion_lines(ev))]
    if verdict.measured and verdict.false_accept_rate is not None and verdict.recognition_rate is not None:
        lines.append(
            f"  stranger safety    : {verdict.false_accept_rate:.1%} of strangers accepted at {fmt_threshold(s.threshold)} "
            f"(95% bound {verdict.false_accept_upper95 or 0:.1%}; target <= {verdict.max_far:.1%}: "
            f"{'met' if verdict.target_met else 'NOT met - see the report'})"
        )
        lines.append(
            f"  recognition        : {verdict.recognition_rate:.1%} of students' photos recognised at {fmt_threshold(s.threshold)}"
            + (" - too few, see the report" if verdict.recognition_poor else "")
        )
    sessions = s.sessions
    if sessions is not None:
        t = sessions.typical
        lines.append(
            f"  class sessions     : a stranger marks somebody present in {t.stranger_marks_present:.1%} of "
            f"{t.frames}-frame sessions (target <= {sessions.max_far:.1%}: "
            f"{'met' if sessions.target_met else 'NOT met - see the report'}); "
            f"a student in class: {t.enrolled_marked_present:.1%}"
        )
    if s.findings:
        lines.append(f"  data quality       : {len(s.findings)} photo(s)/student(s) to check (see the report)")
    lines.append(f"  quality gate       : {s.gate.verdict()}")
    lines += [f"  WARNING            : {w}" for w in s.weights_warnings]
    lines += [
        f"  RE-ENROLLED        : {sid} was erased on request before; enrolled again from their folder"
        for sid in s.face_data.reenrolled
    ]
    lines += [
        f"  NOT ENROLLED       : {sid} has no folder, but {', '.join(places)} still hold(s) their face data; "
        f"erase it: python retrain_model.py --erase {sid}"
        for sid, places in result.not_enrolled
    ]
    if result.candidate is not None:
        report = ModelFolder.under(result.candidate).report_txt
        lines += [
            f"  candidate          : waits in {result.candidate}; the model in service is unchanged",
            f"  next               : read {report}, then publish it with: python retrain_model.py --promote",
        ]
        return "\n".join(lines)
    lines += ["  artifacts:", *(f"    {p}" for p in result.artifacts)]
    if result.removed:
        lines += [f"  previous artifacts removed ({len(result.removed)}):", *(f"    {p}" for p in result.removed)]
    if result.archived_to:
        lines.append(f"  previous model kept for rollback in {result.archived_to}")
    elif result.removed:
        lines.append("  previous model deleted (--keep-versions 0): --rollback cannot return to it")
    lines += [f"  removed {c.kind} model {c.folder.name}: this model supersedes it" for c in result.cleared]
    lines.append(f"  full report: {s.output_root / 'models' / 'training_report.txt'}")
    return "\n".join(lines)


def format_erasure(result: ErasureResult, root: Path) -> str:
    """What ``--erase`` prints: what was removed or retrained, and where the record is."""
    ids = ", ".join(result.student_ids)
    lines = ["", f"Erased {ids}: no face data of theirs is left under {root}."]
    if not result.actions:
        lines.append("  nothing held them any more (an earlier erasure had removed it all)")
    for a in result.actions:
        lines.append(f"  {a.action:<10}: {a.place}: {a.detail}")
    if result.live_version:
        lines.append(f"  live model: {result.live_version}")
    lines.append(f"  record    : {result.record} (ids, times, what was removed with SHA-256; no face data)")
    lines.append("  The student folders were not touched. The ids are remembered: no command publishes them again.")
    return "\n".join(lines)


def format_dry_run(dry: DryRunResult) -> str:
    """What ``--dry-run`` prints: the students found, and exactly what a real run would replace."""
    lines = [f"Dry run: {len(dry.index.students)} students, {len(dry.index.records)} photos in {dry.data_dir}"]
    lines += [f"  {s.student_id:<12} {s.num_images:>4} photos  {s.student_name}" for s in students_in_order(dry.index)]
    if dry.unchanged is not None:
        lines.append(
            f"A real run would publish nothing: nothing changed since model {dry.unchanged.version} "
            f"({dry.unchanged.reason}). Pass --force to retrain anyway."
        )
    elif not dry.would_replace:
        lines.append("A real run would replace nothing: no model is published here yet.")
    else:
        if dry.interrupted_publish:
            lines.append(
                "A real run first finishes a publish that was interrupted (this list is what is in place now)."
            )
        kept = "kept for --rollback in backend/models/versions/" if dry.keeps_previous else "deleted: --keep-versions 0"
        lines.append(
            f"If the new model passes the quality gate, a real run would replace ({len(dry.would_replace)}; {kept}):"
        )
        lines += [f"  {p}" for p in dry.would_replace]
    if dry.unchanged is None and dry.would_clear:
        lines.append(
            f"and remove the models waiting or refused ({len(dry.would_clear)}; --keep-unpublished keeps them):"
        )
        lines += [f"  {p}" for p in dry.would_clear]
    lines.append("Nothing was changed.")
    return "\n".join(lines)
