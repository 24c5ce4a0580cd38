"""Human- and machine-readable reports of one run: training_report.txt, metrics.json,
MODEL_README.md and skipped_images.csv. Pure writers: they format what the run measured."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from backend.recognizer.metadata import FaceModels
from backend.recognizer.paths import ModelFolder, OutputPaths

from .dataset import DatasetIndex, Student, write_labels_csv
from .evaluate import Evaluation, OpenSet
from .extract import Extraction
from .face_data import FaceDataKept
from .files import ESCAPE, files_under, write_csv
from .gate import GateDecision
from .heldout import Heldout
from .publish import Stage
from .quality import Finding, FindingKind
from .session_rates import SessionSummary
from .subfolders import subfolder_counts
from .verdict import Verdict, fmt_threshold, one_in, strangers_in_words

log = logging.getLogger(__name__)

#: Above this many students the confusion matrix lists only the rows with errors.
FULL_CONFUSION_MAX = 30


#: Where the threshold in use came from (the report and the summary say it in these words).
ThresholdSource = Literal["recommended", "set with --threshold"]


@dataclass(frozen=True)
class RunSummary:
    """Everything a report needs, gathered by the pipeline."""

    version: str
    created_at: str
    data_dir: Path
    output_root: Path
    models: dict
    index: DatasetIndex
    extraction: Extraction
    evaluation: Evaluation
    threshold: float
    threshold_source: ThresholdSource
    excluded_students: list[str]
    duplicate_groups: list[list[Path]]
    timings: dict[str, float]
    verdict: Verdict  # stranger safety and recognition at the threshold in use (one derivation)
    sessions: SessionSummary | None  # the session rule the model records and its rates (None: no open set)
    prior_artifacts: list[Path] = field(default_factory=list)
    library_versions: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)  # file names relative to models/
    gate: GateDecision | None = None  # the quality gate's decision (None: not run, e.g. in old tests)
    weights_warnings: list[str] = field(default_factory=list)  # weight files that are not the official ones
    face_data: FaceDataKept | None = None  # where this model's face data is kept (None: not gathered)

    @property
    def face_models(self) -> FaceModels:
        """The run's face models, typed (``models`` is the same as a dict, for metrics.json)."""
        return FaceModels.from_dict(self.models)

    @property
    def all_skipped(self) -> list[tuple[Path, str]]:
        return [*self.index.skipped, *self.extraction.skipped]

    @property
    def several_faces(self) -> list[tuple[Path, int]]:
        return [
            (r.path, f.num_faces) for r, f in zip(self.extraction.records, self.extraction.faces) if f.num_faces > 1
        ]

    @property
    def few_photo_students(self) -> list[str]:
        counts = self.extraction.counts()
        return sorted(s for s, n in counts.items() if n < 2)


#: Findings of one kind listed in the report; the rest are counted (metrics.json has all).
MAX_LISTED_PER_KIND = 100


def finding_lines(findings: list[Finding], limit: int = MAX_LISTED_PER_KIND) -> list[str]:
    """Report lines for the findings, at most ``limit`` of each kind (a bad run can flag every photo)."""
    lines: list[str] = []
    shown: Counter[str] = Counter()
    hidden: Counter[str] = Counter()
    for f in findings:
        if shown[f.kind] < limit:
            shown[f.kind] += 1
            lines.append(f"  - [{f.kind}] {f.path}: {f.reason}")
        else:
            hidden[f.kind] += 1
    lines += [f"  ... and {n} more [{kind}] findings (all in metrics.json)" for kind, n in hidden.items()]
    return lines


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


_DIGITS = re.compile(r"([0-9]+)")


def natural_key(text: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Sort key that orders the numbers inside names by value: s1, s2, s10 (not s1, s10, s2);
    STU9 before STU10. Every list of students that people read is sorted with it."""
    parts = tuple(
        (0, int(part), "") if _DIGITS.fullmatch(part) else (1, 0, part.casefold()) for part in _DIGITS.split(text)
    )
    return parts, text


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
            f"   {_threshold_cell(r.threshold, 5)}    {_pct(r.accepted_rate):>6}    {_pct(r.rejection_rate):>6}"
            f"          {_pct(r.accuracy_of_accepted):>6}      {_pct(r.recognition_rate):>6}"
            f"         {_pct(r.misidentification_rate):>6}{_row_mark(r.threshold, in_use, recommended)}"
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
            f"     {_threshold_cell(r.threshold, 5)}     {_pct(r.recognition_rate):>6}              "
            f"{_pct(r.false_accept_rate):>6}         {_pct(r.misidentification_rate):>6}    {_pct(r.rejection_rate):>6}"
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


def stranger_sentence(verdict: Verdict, n_unknown: int) -> str:
    """What stranger safety means at the verdict's threshold, in one sentence that never contradicts itself
    (the report, report.html and MODEL_README.md all say it so)."""
    text = (
        f"At the threshold in use, {fmt_threshold(verdict.threshold)}, a stranger is marked present as some "
        f"student in {_pct(verdict.false_accept_rate)} of cases "
        f"({strangers_in_words(verdict.false_accept_rate)}; measured on {n_unknown} photos; with 95% confidence at most "
        f"{_pct(verdict.false_accept_upper95)}); target <= {verdict.max_far:.1%}: "
        f"{'met' if verdict.target_met else 'NOT met'}; {_pct(verdict.recognition_rate)} of enrolled students' "
        "photos are recognised"
    )
    if verdict.target_met and verdict.recognition_poor:
        text += " - too few: " + (verdict.cause_text() or "see DATA QUALITY")
        if verdict.tradeoffs:
            text += ". Trade-off: " + verdict.tradeoff_text()
    return text + "."


def natural_order(labels: list[str]) -> list[int]:
    """Positions of ``labels`` in natural order (:func:`natural_key`)."""
    return sorted(range(len(labels)), key=lambda i: natural_key(labels[i]))


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
    if s.gate is None:
        return ["  not run"]
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
    headline = v.headline()
    lines = [f"  {headline or 'The model recognises the students and keeps strangers out at the threshold in use.'}"]
    if v.measured:
        lines.append(
            f"  At {fmt_threshold(v.threshold)}: {_pct(v.recognition_rate)} of enrolled students' photos recognised, "
            f"{strangers_in_words(v.false_accept_rate)} (target: at most {one_in(v.max_far)}: "
            f"{'met' if v.target_met else 'NOT met'})."
        )
    if headline:
        lines.append(f"  Likely cause: {v.cause_text()}.")
        if v.tradeoffs:
            lines.append(f"  Trade-off: {v.tradeoff_text()}.")
        lines.append(
            "  What to do: fix the photos listed under DATA QUALITY and retrain (or choose a threshold with --threshold)."
        )
    return lines


def session_report_lines(s: RunSummary) -> list[str]:
    """ATTENDANCE SESSIONS: the session rule's rates, or why there are none."""
    summary = s.sessions
    if summary is None:
        return ["  not measured: at least 3 students with usable photos are needed"]
    return summary.lines()


def write_training_report(path: Path, s: RunSummary, artifact_paths: list[Path]) -> None:
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
        f"  accuracy     : {_pct(ev.accuracy)}",
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
    if s.face_data is not None:
        lines += [
            "",
            "FACE DATA KEPT (personal data of the students: see docs/PRIVACY.md)",
            *face_data_lines(s.face_data),
        ]
    lines += ["", "INPUTS (every file and folder in the data folder)", *inventory_lines(s)]
    lines += ["", f"SKIPPED PHOTOS ({len(s.all_skipped)})"]
    lines += [f"  - {p}: {reason}" for p, reason in s.all_skipped] or ["  none"]
    lines += ["", "TIMINGS (s)", *(f"  {k:<10} {v:8.2f}" for k, v in s.timings.items())]
    lines += ["", "ARTIFACTS", *(f"  {p}" for p in artifact_paths)]
    lines += ["", "PRIOR ARTIFACTS REPLACED (kept as rollback version)", *(f"  {p}" for p in s.prior_artifacts)]
    if not s.prior_artifacts:
        lines.append("  none")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors=ESCAPE)


#: Why a folder not named like STU001_First_Last should be renamed (report.html says it beside each).
NONCONFORMING_ADVICE = (
    "not named like STU001_First_Last: the whole folder name is used as the student id and name; "
    "rename it to the student's id and name (e.g. STU012_Alice_Smith)"
)


def folders_to_rename(index: DatasetIndex) -> list[tuple[str, str]]:
    """(folder name, why and how to rename it): folders not named like STU001_First_Last, and folder
    names that had to be cleaned, in natural order."""
    out = {folder: NONCONFORMING_ADVICE for folder in index.nonconforming_folders}
    for path, why in index.renamed:
        out[path.name] = f"{why}; {out[path.name]}" if path.name in out else why
    return sorted(out.items(), key=lambda e: natural_key(e[0]))


def students_in_order(index: DatasetIndex) -> list[Student]:
    """The data folder's students in natural order of their ids (s1, s2, s10)."""
    return sorted(index.students, key=lambda st: natural_key(st.student_id))


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
    versions = f"up to {f.keep_versions} earlier model(s)" if f.keep_versions else "none (--keep-versions 0)"
    lines = [
        f"  this model (Classifier/, models/X.npy)  : {f.students} students, {f.embeddings} face embeddings",
        f"  embedding cache (models/cache)          : {f.cache_photos} photos, only those in the data folder now",
        "  report.html                             : "
        + ("face thumbnails of the photos it lists" if f.thumbnails else "no face thumbnails (--no-photos-in-report)"),
        f"  kept for --rollback (versions/)         : {versions}, with their own embeddings",
        "  waiting and rejected models             : "
        + ("kept (--keep-unpublished)" if f.keep_unpublished else "removed when a model is published"),
    ]
    for sid in f.reenrolled:
        lines.append(f"  {sid}: was erased on request before; enrolled again from their folder now (a new enrollment)")
    if f.not_enrolled:  # counted, not named: this report outlives their erasure
        lines.append(
            f"  {len(f.not_enrolled)} student(s) without a folder are still held by kept models: the console summary "
            "names them; erase each with python retrain_model.py --erase ID"
        )
    return lines


def metrics_dict(s: RunSummary) -> dict:
    ev = s.evaluation
    return {
        "model_version": s.version,
        "created_at": s.created_at,
        "models": s.models,
        "counts": {
            "students": len(s.index.students),
            "students_usable": len(s.extraction.counts()),
            "images_found": len(s.index.records),
            "images_embedded": len(s.extraction.records),
            "images_skipped": len(s.all_skipped),
            "files_ignored": len(s.index.ignored_files) + len(s.index.loose_files),
            "train": ev.n_train,
            "test": ev.n_test,
        },
        "accuracy": ev.accuracy,
        "per_student": {k: v for k, v in ev.report_dict.items() if isinstance(v, dict)},
        "confidence": ev.confidence,
        "threshold_sweep": [asdict(r) for r in ev.sweep],
        "recommended_threshold": ev.recommended_threshold,
        "recommendation_reason": ev.recommendation_reason,
        "threshold": s.threshold,
        "threshold_source": s.threshold_source,
        "confusion_matrix": {"labels": ev.labels, "matrix": np.asarray(ev.confusion).tolist()},
        "train_only_students": ev.train_only_students,
        "excluded_students": s.excluded_students,
        "duplicate_photos": [[str(p) for p in g] for g in s.duplicate_groups],
        "several_faces": [{"path": str(p), "faces": n} for p, n in s.several_faces],
        "skipped": [{"path": str(p), "reason": r} for p, r in s.all_skipped],
        "nonconforming_folders": s.index.nonconforming_folders,
        "open_set": open_set_dict(ev, s.verdict),
        "verdict": s.verdict.to_dict(),
        "session": None if s.sessions is None else s.sessions.to_dict(),
        "data_quality": [asdict(f) for f in s.findings],
        "plots": [str(p) for p in s.plots],
        "timings_s": s.timings,
        "library_versions": s.library_versions,
        "quality_gate": s.gate.to_dict() if s.gate is not None else None,
        "weights_warnings": s.weights_warnings,
    }


def open_set_dict(ev: Evaluation, verdict: Verdict) -> dict | None:
    """The open-set measurement for metrics.json; ``target_reached`` is the verdict's ``target_met``
    (at the threshold in use), so metrics.json and the summary cannot disagree."""
    os_ = ev.open_set
    if os_ is None:
        return None
    at = os_.row_at(ev.recommended_threshold)
    return {
        "folds": os_.n_folds,
        "unknown_students_per_fold": os_.unknown_students,
        "known_photos": os_.n_known_photos,
        "unknown_photos": os_.n_unknown_photos,
        "max_far": os_.max_far,
        "target_reached": verdict.target_met,
        "threshold_in_use": verdict.threshold,
        "enrolled_ratio": os_.enrolled_ratio,
        "false_accept_rate_at_recommended": at.false_accept_rate,
        "false_accept_upper95_at_recommended": at.false_accept_upper95,
        "recognition_rate_at_recommended": at.recognition_rate,
        "sweep": [asdict(r) for r in os_.sweep],
        "fine_sweep": [asdict(r) for r in os_.fine_sweep],
        "left_out": {
            "held_together": [list(g) for g in os_.left_out.held_together],
            "accepted_as": [
                {"student": a, "taken_for": b, "accepted": k, "photos": n} for a, b, k, n in os_.left_out.accepted_as
            ],
            "photos": dict(os_.left_out.photos),
            "stranger_photos_dropped": os_.left_out.stranger_photos_dropped,
        },
    }


def write_metrics(path: Path, s: RunSummary) -> None:
    path.write_text(json.dumps(metrics_dict(s), indent=2, ensure_ascii=False) + "\n", encoding="utf-8", errors=ESCAPE)


def inventory(s: RunSummary) -> list[tuple[Path, str, str]]:
    """Every file and folder under the data folder: (path, used | skipped | ignored, reason)."""
    rows: list[tuple[Path, str, str]] = []
    counts = s.extraction.counts()
    renamed = dict(s.index.renamed)
    for st in s.index.students:
        folder = s.data_dir / st.folder
        note = f"; {renamed[folder]}" if folder in renamed else ""
        rows.append(
            (folder, "used", f"student folder of {st.student_id}, {counts.get(st.student_id, 0)} photos used{note}")
        )
    rows += [(r.path, "used", f"photo of {r.student_id}") for r in s.extraction.records]
    in_subfolder = subfolder_counts(s.extraction.records)
    rows += [
        (
            p,
            "used",
            f"a folder inside a student folder: its {in_subfolder.get(p, 0)} photos used count for that student",
        )
        for p in s.index.subfolders
    ]
    rows += [(p, "skipped", reason) for p, reason in s.all_skipped]
    rows += [(p, "ignored", reason) for p, reason in s.index.ignored()]
    return sorted(rows, key=lambda r: str(r[0]))


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


def write_inputs_csv(path: Path, s: RunSummary) -> None:
    write_csv(path, ["path", "status", "reason"], ([str(p), status, why] for p, status, why in inventory(s)))


def write_skipped_csv(path: Path, s: RunSummary) -> None:
    write_csv(path, ["path", "reason"], ([str(p), r] for p, r in s.all_skipped))


def _stranger_sentence(s: RunSummary) -> str:
    v = s.verdict
    os_ = s.evaluation.open_set
    if not v.measured or os_ is None:
        return "Not measured (needs at least 3 students)."
    return stranger_sentence(v, os_.n_unknown_photos)


def _gate_sentence(s: RunSummary) -> str:
    if s.gate is None:
        return ""
    if s.gate.forced:
        return "**Published with --force although the quality gate refused it:** " + s.gate.verdict()[len("FORCED: ") :]
    return "Quality gate: " + s.gate.verdict() + "."


def write_model_readme(path: Path, s: RunSummary) -> None:
    m = s.face_models
    summary_line = (
        f"Students: {len(s.extraction.counts())} - photos embedded: {len(s.extraction.records)} - "
        f"held-out accuracy: {_pct(s.evaluation.accuracy)} - threshold in use: **{fmt_threshold(s.threshold)}**."
    )
    text = f"""# Face recognition model {s.version}

Created {s.created_at} from `{s.data_dir}` by `retrain_model.py`.
{summary_line}
{_gate_sentence(s)}

## Pipeline (training and recognition share it: `backend/recognizer/faces.py`)
1. Decode the photo (EXIF rotation applied; grey, transparent, 16-bit and CMYK images converted to RGB).
2. Detect faces with **{m.detector.name}** ({m.detector.model_file or "bundled weights"}); keep the largest.
3. Align and crop to **{m.crop.size}x{m.crop.size}** ({m.crop.method}).
4. Embed with **{m.embedder.name}** -> **{m.embedding_dim}-d** vector, **L2-normalised** (unit length).
5. `StandardScaler` (fitted on the training embeddings, stored in `model.npz`) -> class-balanced linear SVM
   with temperature-calibrated probabilities (`CalibratedClassifierCV(method="temperature")`).
6. Open-set confidence of the top answer (SVM probability + similarity to that student's photos, calibrated
   with students held out as strangers; `backend/recognizer/openset.py`) >= threshold -> that student;
   otherwise **Unknown**.

Never feed the classifier raw or differently-normalised vectors: always L2-normalise, then `scaler.transform`.
`backend/recognizer/loader.py` does all of this for you.

## Files
- `backend/models/Classifier/model.npz` - what the backend loads, as plain arrays (read without pickle): scaler mean/scale,
  classifier weights and intercepts, calibration temperature, open-set centres and calibrator, student ids.
- `backend/models/Classifier/model.json` - threshold, student names, face models and weight hashes, scores, gate record.
- `backend/models/Classifier/face_classifier_v1.pkl`, `label_encoder.pkl`, `label_encoder_classes.npy` - the same model as
  the original recipe's joblib pickles, for other code that reads them (the backend does not).
- `backend/models/Classifier/manifest.json` - SHA-256 of every artifact; the loader refuses files that do not match.
- `models/X.npy` (float32 N x {m.embedding_dim}), `models/y.npy` (student ids), `models/labels.csv`.
- `models/training_report.txt`, `models/metrics.json`, `models/skipped_images.csv` - what this run measured and skipped.

## Enrolling students and retraining
One folder per student under the data folder, named `STU001_First_Last`, holding 5-20 clear photos of that
student (front-facing, good light, one person). Then double-click `retrain_clean.bat` (Windows) or run
`python retrain_model.py`. The previous model is kept: `python retrain_model.py --rollback` restores it.

## How likely is a stranger to be marked present?
{_stranger_sentence(s)}
Pictures: {", ".join(f"`models/{p}`" for p in s.plots) or "none"}.

## Changing the threshold
Re-run with `--threshold 0.8`, or pass `threshold=` to `FaceRecognizer.load(...)` / `identify(...)` in the backend.
Higher values accept fewer strangers and ask more students to retry. See the sweep in `training_report.txt`.
"""
    path.write_text(text, encoding="utf-8", errors=ESCAPE)


def report_files(folder: ModelFolder) -> list[Path]:
    """The ``models/`` files every run writes besides its plots, in the order the report lists them."""
    return [
        *(folder.X, folder.y, folder.heldout, folder.labels_csv, folder.report_txt, folder.report_html),
        *(folder.model_readme, folder.metrics_json, folder.skipped_csv, folder.inputs_csv),
    ]


def new_models_files(plots: list[Path]) -> list[str]:
    """The ``models/`` files (relative POSIX paths) a run with these plots publishes: what its swap replaces."""
    folder = ModelFolder.under(Path())
    return [p.relative_to(folder.models_dir).as_posix() for p in report_files(folder)] + [
        Path(p).as_posix() for p in plots
    ]


def write_reports(stage: Stage, paths: OutputPaths, s: RunSummary) -> list[Path]:
    """Write the run's ``models/`` outputs into the stage; return every artifact's final path
    (model files first), in the order the report and the summary list them."""
    out = stage.models_dir
    np.save(out / paths.X.name, s.extraction.embeddings.astype(np.float32))
    np.save(out / paths.y.name, s.extraction.student_ids)
    ev = s.evaluation
    Heldout(ev.test_index, ev.test_true, ev.test_pred).save(out / paths.heldout.name)
    write_labels_csv(out / paths.labels_csv.name, s.index, s.extraction.counts())
    final = [
        *(paths.classifier_dir / name for name in files_under(stage.classifier_dir)),
        paths.manifest,
        *report_files(paths.published),
        *(paths.models_dir / p for p in s.plots),
    ]
    write_training_report(out / paths.report_txt.name, s, final)
    write_model_readme(out / paths.model_readme.name, s)
    write_metrics(out / paths.metrics_json.name, s)
    write_skipped_csv(out / paths.skipped_csv.name, s)
    write_inputs_csv(out / paths.inputs_csv.name, s)
    return final  # report.html is written by html_report.write_html_report
