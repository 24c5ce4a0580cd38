"""models/training_report.txt: the full text report, rendered from one :class:`~retraining.summary.RunSummary`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..evaluate import Evaluation, OpenSet
from ..face_data import FaceDataKept
from ..quality import FindingKind
from ..summary import RunSummary, inventory
from ..verdict import Verdict
from .words import (
    MAX_LISTED_PER_KIND,
    face_data_notes,
    face_data_rows,
    finding_lines,
    fmt_threshold,
    key_figures,
    natural_key,
    natural_order,
    one_in,
    pct,
    session_lines,
    stranger_sentence,
    strangers_in_words,
    students_in_order,
    verdict_cause_text,
    verdict_headline,
    verdict_tradeoff_text,
)

#: Above this many students the confusion matrix lists only the rows with errors.
FULL_CONFUSION_MAX = 30


def _row_mark(threshold: float, in_use: float | None, recommended: float | None) -> str:
    """The note after a threshold table's row: which threshold is in use, which is recommended."""
    marks = []
    if in_use is not None and abs(threshold - in_use) < 1e-9:
        marks.append("in use")
    if recommended is not None and abs(threshold - recommended) < 1e-9:
        marks.append("recommended")
    return f"  <- {', '.join(marks)}" if marks else ""


def _threshold_cell(threshold: float, width: int) -> str:
    return f"{fmt_threshold(threshold):<{width}}"


def sweep_table(evaluation: Evaluation, in_use: float | None = None) -> list[str]:
    """THRESHOLD SWEEP: the table's thresholds, plus a marked row at the threshold in use (and the recommended)."""
    recommended = evaluation.recommended_threshold
    extra = [t for t in (in_use, recommended) if t is not None]
    lines = ["threshold  accepted  rejected  acc.of.accepted  recognised  misidentified"]
    for r in evaluation.sweep_with(*extra):
        lines.append(
            f"   {_threshold_cell(r.threshold, 5)}    {pct(r.accepted_rate):>6}    {pct(r.rejection_rate):>6}"
            f"          {pct(r.accuracy_of_accepted):>6}      {pct(r.recognition_rate):>6}"
            f"         {pct(r.misidentification_rate):>6}{_row_mark(r.threshold, in_use, recommended)}"
        )
    return lines


def open_set_lines(ev: Evaluation, verdict: Verdict) -> list[str]:
    os_ = ev.open_set
    if os_ is None:
        return ["  not measured: at least 3 students with usable photos are needed"]
    lines = [
        f"  {os_.n_folds} folds; per fold {len(os_.unknown_students[0])} student(s) held out as strangers; "
        f"{os_.n_known_photos} enrolled test photos, {os_.n_unknown_photos} stranger photos scored",
        "  threshold  recognised  strangers.accepted  misidentified  rejected",
    ]
    for r in os_.sweep_with(verdict.threshold, ev.recommended_threshold):
        lines.append(
            f"     {_threshold_cell(r.threshold, 5)}     {pct(r.recognition_rate):>6}              "
            f"{pct(r.false_accept_rate):>6}         {pct(r.misidentification_rate):>6}    {pct(r.rejection_rate):>6}"
            f"{_row_mark(r.threshold, verdict.threshold, ev.recommended_threshold)}"
        )
    lines.append(
        f"  Strangers accepted are carried over to the published model's {len(ev.labels)} students (each fold's "
        f"model knew {1 / os_.enrolled_ratio:.0%} of them); the 95% bound also allows for one held-out person's "
        "photos being accepted together."
    )
    lines += left_out_lines(os_)
    lines.append(f"  => {stranger_sentence(verdict, os_.n_unknown_photos)}")
    return lines


def left_out_lines(os_: OpenSet) -> list[str]:
    """What the stranger estimate did not count as a stranger, and why, in words."""
    left = os_.left_out
    if not left:
        return [
            "  Nothing was left out of the stranger estimate: no student looks enrolled twice, no photo is flagged."
        ]
    lines = ["  Left out of the stranger estimate (they would count a right answer as a stranger accepted):"]
    for group in left.held_together:
        lines.append(
            f"    - {' and '.join(group)} look like one person enrolled twice: held out together, as one person"
        )
    for student, other, k, n in left.accepted_as:
        lines.append(
            f"    - {student}: held out, {k} of its {n} photos were confidently recognised as {other}: probably the "
            f"same person enrolled twice (or twins); {student}'s photos not counted as a stranger's"
        )
    if left.photos:
        kinds = ", ".join(f"{n} {kind}" for kind, n in left.photos)
        lines.append(
            f"    - {left.n_photos} photo(s) flagged under DATA QUALITY ({kinds}): probably not the person their "
            "folder says; not used as test photos (they still train the model)"
        )
    return lines


def confusion_lines(evaluation: Evaluation) -> list[str]:
    order = natural_order(list(evaluation.labels))
    labels = [evaluation.labels[i] for i in order]
    cm = np.asarray(evaluation.confusion)
    if cm.size == 0:
        return ["(no held-out photos)"]
    cm = cm[np.ix_(order, order)]
    if len(labels) <= FULL_CONFUSION_MAX:
        width = max(6, *(len(s) for s in labels))
        out = ["rows = true student, columns = predicted", " " * width + " " + " ".join(f"{s[-6:]:>6}" for s in labels)]
        for name, row in zip(labels, cm):
            out.append(f"{name:>{width}} " + " ".join(f"{v:>6d}" for v in row))
        return out
    out = [f"{len(labels)} students: only students with errors are listed (true → predicted ×count)"]
    for i, name in enumerate(labels):
        errors = [(labels[j], int(v)) for j, v in enumerate(cm[i]) if j != i and v]
        if errors:
            out.append(f"  {name}: " + ", ".join(f"{p} ×{n}" for p, n in errors))
    if len(out) == 1:
        out.append("  (no errors)")
    return out


def gate_lines(s: RunSummary) -> list[str]:
    """The gate's checks, one line each, and its decision."""
    lines = [f"  {'ok  ' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in s.gate.checks]
    if s.gate.passed:
        lines.append("  decision: passed")
    elif s.gate.forced:
        lines.append("  decision: FAILED, published anyway because --force was given")
    else:
        lines.append(
            "  decision: REFUSED - this model was not published; the model in service is unchanged. Fix the photos "
            "(see DATA QUALITY below), or publish it anyway with --force."
        )
    return lines


def verdict_lines(s: RunSummary) -> list[str]:
    """The report's first section: is the model usable, and if not, why and what else could be chosen."""
    v = s.verdict
    headline = verdict_headline(v)
    lines = [f"  {headline or 'The model recognises the students and keeps strangers out at the threshold in use.'}"]
    if v.measured:
        lines.append(
            f"  At {fmt_threshold(v.threshold)}: {pct(v.recognition_rate)} of enrolled students' photos recognised, "
            f"{strangers_in_words(v.false_accept_rate)} (target: at most {one_in(v.max_far)}: "
            f"{'met' if v.target_met else 'NOT met'})."
        )
    if headline:
        lines.append(f"  Likely cause: {verdict_cause_text(v)}.")
        if v.tradeoffs:
            lines.append(f"  Trade-off: {verdict_tradeoff_text(v)}.")
        lines.append(
            "  What to do: fix the photos listed under DATA QUALITY and retrain (or choose a threshold with --threshold)."
        )
    return lines


def session_report_lines(s: RunSummary) -> list[str]:
    """ATTENDANCE SESSIONS: the session rule's rates, or why there are none."""
    summary = s.sessions
    if summary is None:
        return ["  not measured: at least 3 students with usable photos are needed"]
    return session_lines(summary)


def training_report_text(s: RunSummary, artifact_paths: Sequence[Path]) -> str:
    """models/training_report.txt."""
    ev, ex, idx, fm = s.evaluation, s.extraction, s.index, s.face_models
    verdict = s.verdict
    counts = ex.counts()
    lines = [
        "SmartAttendance face recognition - training report",
        "=" * 52,
        f"Model version : {s.version}",
        f"Created at    : {s.created_at}",
        f"Data folder   : {s.data_dir}",
        f"Output root   : {s.output_root}",
        "",
        "VERDICT",
        *verdict_lines(s),
        "",
        "PIPELINE",
        f"  detector   : {fm.detector.name} ({fm.detector.model_file or 'bundled weights'})",
        f"  crop       : {fm.crop.size}x{fm.crop.size} px, {fm.crop.method}",
        f"  embedder   : {fm.embedder.name} ({fm.embedding_dim}-d, L2-normalised)",
        "  classifier : StandardScaler -> class-balanced linear SVM, temperature-calibrated probabilities",
        "",
        "DATASET",
        f"  students            : {len(idx.students)} ({len(counts)} with usable photos)",
        f"  photos found        : {len(idx.records)}",
        f"  photos embedded     : {len(ex.records)}",
        f"  photos skipped      : {len(s.all_skipped)}",
        f"  other files ignored : {len(idx.ignored_files) + len(idx.loose_files)}"
        + (
            " (" + ", ".join(f"{n} {ext}" for ext, n in idx.ignored_by_extension().most_common()) + ")"
            if idx.ignored_by_extension()
            else ""
        ),
        *(f"  {label:<20}: {value} {detail}" for label, value, detail in key_figures(s)),
        "",
        "  student_id   photos  embedded  name",
    ]
    for st in students_in_order(idx):
        lines.append(f"  {st.student_id:<12} {st.num_images:>6}  {counts.get(st.student_id, 0):>8}  {st.student_name}")
    if idx.nonconforming_folders:
        lines += ["", "  Folders not named like STU001_First_Last (folder name used as the id):"]
        lines += [f"    - {f}" for f in sorted(idx.nonconforming_folders, key=natural_key)]
    if idx.renamed:
        lines += ["", "  Folder names that had to be cleaned (control characters, bytes that are not text):"]
        lines += [f"    - {p.name}: {why}" for p, why in sorted(idx.renamed, key=lambda e: natural_key(e[0].name))]
    lines += ["", "NEEDS ATTENTION (details under DATA QUALITY)"]
    attention = []
    for sid in s.excluded_students:
        attention.append(f"  - {sid}: no usable photo - EXCLUDED from the model; add clear, front-facing photos")
    for sid in s.few_photo_students:
        attention.append(f"  - {sid}: only 1 usable photo - kept for training but not tested; add 5+ photos")
    for group in s.duplicate_groups:
        attention.append(
            "  - identical photo in several student folders (probable enrollment mistake): "
            + ", ".join(str(p) for p in group)
        )
    flagged = [f for f in s.findings if f.kind == FindingKind.SEVERAL_FACES]
    for f in flagged:
        attention.append(f"  - {f.path}: several faces, and the largest (used) does not look like the student")
    if len(s.several_faces) > len(flagged):
        attention.append(
            f"  - {len(s.several_faces) - len(flagged)} other photo(s) show more than one face; the largest was used "
            "and looks like the student: nothing to do (listed in metrics.json)"
        )
    lines += attention or ["  nothing"]
    lines += [
        "",
        "EVALUATION (held-out photos; model refitted on all photos afterwards)",
        f"  train photos : {ev.n_train}",
        f"  test photos  : {ev.n_test}",
        f"  accuracy     : {pct(ev.accuracy)}",
    ]
    if ev.train_only_students:
        lines.append(f"  kept in training only (too few photos to test): {', '.join(ev.train_only_students)}")
    lines += ["", "  Confidence of the top answer:"]
    for kind, stats in ev.confidence.items():
        if stats.get("count"):
            lines.append(
                f"    {kind:<8} n={stats['count']:<5} mean={stats['mean']:.3f} median={stats['median']:.3f} "
                f"p05={stats['p05']:.3f} min={stats['min']:.3f}"
            )
        else:
            lines.append(f"    {kind:<8} n=0")
    lines += ["", "  Classification report:", *("    " + x for x in classification_lines(ev))]
    lines += ["", "  Confusion matrix:", *("    " + x for x in confusion_lines(ev))]
    lines += [
        "",
        "THRESHOLD SWEEP - known faces (held-out photos of enrolled students)",
        *("  " + x for x in sweep_table(ev, s.threshold)),
    ]
    lines += ["", "STRANGER SAFETY (open-set: whole students held out as strangers)", *open_set_lines(ev, verdict)]
    lines += ["", "ATTENDANCE SESSIONS (each person seen in many frames)", *session_report_lines(s)]
    lines += ["", "QUALITY GATE (is the new model at least as good as the one in service?)", *gate_lines(s)]
    if s.weights_warnings:
        lines += ["", "WEIGHT FILES", *(f"  WARNING: {w}" for w in s.weights_warnings)]
    lines += [
        "",
        "THRESHOLD",
        f"  recommended : {ev.recommended_threshold:.2f} - {ev.recommendation_reason}",
        f"  in use      : {fmt_threshold(s.threshold)} ({s.threshold_source})",
        "  Faces below the threshold are reported as 'Unknown'. Higher = fewer strangers accepted,",
        "  more students asked to retry. Change it with --threshold or in the backend per call.",
        "",
        f"DATA QUALITY ({len(s.findings)} findings: fix these folders/photos, then retrain)",
    ]
    lines += finding_lines(s.findings) or ["  nothing found"]
    if s.plots:
        lines += ["", "PICTURES (in models/)", *(f"  {p}" for p in s.plots)]
    lines += [
        "",
        "FACE DATA KEPT (personal data of the students: see docs/PRIVACY.md)",
        *face_data_lines(s.face_data),
    ]
    lines += ["", "INPUTS (every file and folder in the data folder)", *inventory_lines(s)]
    lines += ["", f"SKIPPED PHOTOS ({len(s.all_skipped)})"]
    lines += [f"  - {p}: {reason}" for p, reason in s.all_skipped] or ["  none"]
    lines += ["", "TIMINGS (s)", *(f"  {k:<10} {v:8.2f}" for k, v in s.timings.stages)]
    lines += ["", "ARTIFACTS", *(f"  {p}" for p in artifact_paths)]
    lines += ["", "PRIOR ARTIFACTS REPLACED (kept as rollback version)", *(f"  {p}" for p in s.prior_artifacts)]
    if not s.prior_artifacts:
        lines.append("  none")
    return "\n".join(lines) + "\n"


def classification_lines(ev: Evaluation) -> list[str]:
    """scikit-learn's classification report with its per-student rows in natural order.

    Its rows follow ``ev.labels`` (header, blank line, one row per label, then the averages)."""
    lines = ev.report_text.splitlines()
    n = len(ev.labels)
    if len(lines) < n + 2 or lines[1].strip():  # not the layout above ("no held-out photos"): as it is
        return lines
    rows = lines[2 : 2 + n]
    return [*lines[:2], *(rows[i] for i in natural_order(list(ev.labels))), *lines[2 + n :]]


def face_data_lines(f: FaceDataKept) -> list[str]:
    """Where this model's face data lives once it is published, with counts; who must be erased."""
    width = max(len(place) for place, _ in face_data_rows(f)) + 1
    return [f"  {place:<{width}} : {what}" for place, what in face_data_rows(f)] + [
        f"  {note}" for note in face_data_notes(f)
    ]


def inventory_lines(s: RunSummary, limit: int = MAX_LISTED_PER_KIND) -> list[str]:
    """Counts per status, then every skipped and ignored entry with its reason (inputs.csv has all)."""
    rows = inventory(s)
    by_status = Counter(status for _, status, _ in rows)
    folders = len(s.index.students) + len(s.index.subfolders)
    lines = [
        f"  {by_status.get('used', 0) - folders} photos used (in {len(s.index.students)} student folders"
        + (f" and {len(s.index.subfolders)} folders inside them" if s.index.subfolders else "")
        + f"), {by_status.get('skipped', 0)} skipped, {by_status.get('ignored', 0)} ignored (all in inputs.csv)"
    ]
    for status in ("skipped", "ignored"):
        listed = [(p, why) for p, st, why in rows if st == status]
        lines += [f"  {status}: {p}: {why}" for p, why in listed[:limit]]
        if len(listed) > limit:
            lines.append(f"  … {len(listed) - limit} more {status} (see inputs.csv)")
    return lines
