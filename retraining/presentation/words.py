"""Shared words of the reports: the sentences every output says the same way, and the order lists are read in.

Everything here reads a record (:class:`~retraining.summary.RunSummary` and the records it holds)
and returns text; nothing here measures, recomputes or decides. Numbers are written by formats.py.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..dataset import DatasetIndex, Student
from ..quality import Finding
from ..session_rates import MIN_SESSION_RECOGNITION, SHORT_FRAMES, TABLE_FRAMES, TYPICAL_FRAMES
from ..thresholds import (
    DEFAULT_THRESHOLD,
    MAX_REJECTION,
    MIN_TEST_PHOTOS,
    MIN_USEFUL_RECOGNITION,
    TARGET_ACCEPTED_ACCURACY,
    Recommendation,
)
from .formats import fmt_threshold, one_in, pct, strangers_in_words
from .templating import render_lines

if TYPE_CHECKING:  # records sit below their words: nothing there imports this module back
    from ..face_data import FaceDataKept
    from ..session_rates import SessionSummary
    from ..summary import RunSummary
    from ..verdict import Verdict


#: Findings of one kind listed in the report; the rest are counted (metrics.json has all).
MAX_LISTED_PER_KIND = 100


def listed_findings(
    findings: Sequence[Finding], limit: int = MAX_LISTED_PER_KIND
) -> tuple[list[Finding], list[tuple[str, int]]]:
    """The findings a report lists, at most ``limit`` of each kind (a bad run can flag every photo),
    and how many of each kind are left out."""
    shown: list[Finding] = []
    listed: Counter[str] = Counter()
    hidden: Counter[str] = Counter()
    for f in findings:
        if listed[f.kind] < limit:
            listed[f.kind] += 1
            shown.append(f)
        else:
            hidden[f.kind] += 1
    return shown, list(hidden.items())


def finding_lines(findings: Sequence[Finding], limit: int = MAX_LISTED_PER_KIND) -> list[str]:
    """training_report.txt's DATA QUALITY lines (none when nothing was found)."""
    shown, hidden = listed_findings(findings, limit)
    return render_lines("parts/findings.txt.j2", shown=shown, hidden=hidden)


_DIGITS = re.compile(r"([0-9]+)")


def natural_key(text: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Sort key that orders the numbers inside names by value: s1, s2, s10 (not s1, s10, s2);
    STU9 before STU10. Every list of students that people read is sorted with it."""
    parts = tuple(
        (0, int(part), "") if _DIGITS.fullmatch(part) else (1, 0, part.casefold()) for part in _DIGITS.split(text)
    )
    return parts, text


def natural_order(labels: list[str]) -> list[int]:
    """Positions of ``labels`` in natural order (:func:`natural_key`)."""
    return sorted(range(len(labels)), key=lambda i: natural_key(labels[i]))


def students_in_order(index: DatasetIndex) -> list[Student]:
    """The data folder's students in natural order of their ids (s1, s2, s10)."""
    return sorted(index.students, key=lambda st: natural_key(st.student_id))


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


def stranger_sentence(verdict: Verdict, n_unknown: int) -> str:
    """What stranger safety means at the verdict's threshold, in one sentence that never contradicts itself
    (the report, report.html and MODEL_README.md all say it so)."""
    text = (
        f"At the threshold in use, {fmt_threshold(verdict.threshold)}, a stranger is marked present as some "
        f"student in {pct(verdict.false_accept_rate)} of cases "
        f"({strangers_in_words(verdict.false_accept_rate)}; measured on {n_unknown} photos; with 95% confidence at most "
        f"{pct(verdict.false_accept_upper95)}); target <= {verdict.max_far:.1%}: "
        f"{'met' if verdict.target_met else 'NOT met'}; {pct(verdict.recognition_rate)} of enrolled students' "
        "photos are recognised"
    )
    if verdict.target_met and verdict.recognition_poor:
        text += " - too few: " + (verdict_cause_text(verdict) or "see DATA QUALITY")
        if verdict.tradeoffs:
            text += ". Trade-off: " + verdict_tradeoff_text(verdict)
    return text + "."


def verdict_headline(v: Verdict) -> str:
    """The first line of the summary and of report.html when something is wrong; "" when nothing is."""
    if not v.measured:
        return ""
    if v.target_met is False and v.false_accept_rate is not None:
        return (
            f"Strangers could be marked present: about {one_in(v.false_accept_rate)} strangers would be "
            f"accepted at the threshold {fmt_threshold(v.threshold)} (target: at most {one_in(v.max_far)})."
        )
    if v.recognition_rate is None:
        return (
            "How well students are recognised could not be measured: no student has a second photo or clip to "
            "test on. Add a few photos (or a second clip) of each student and retrain."
        )
    if v.recognition_poor:
        return (
            f"Only {v.recognition_rate:.0%} of the students' photos are recognised at the threshold "
            f"{fmt_threshold(v.threshold)} that keeps strangers out."
        )
    return ""


def verdict_words(v: Verdict) -> dict[str, str]:
    """The verdict's ``headline``, likely ``cause`` and ``tradeoff`` sentences, for any template."""
    return {"headline": verdict_headline(v), "cause": verdict_cause_text(v), "tradeoff": verdict_tradeoff_text(v)}


def verdict_cause_text(v: Verdict) -> str:
    return "; ".join(v.causes) if v.causes else ""


def verdict_tradeoff_text(v: Verdict) -> str:
    """e.g. "at 0.80: 87% recognised, about 1 in 100 strangers accepted"."""
    return "; ".join(
        f"at {fmt_threshold(r.threshold)}: {r.recognition_rate:.0%} recognised, {strangers_in_words(r.false_accept_rate)}"
        for r in v.tradeoffs
    )


def session_sentence(ss: SessionSummary) -> str:
    """One sentence for report.html: what a typical class session means under the model's rule."""
    r = ss.typical
    bar = f", counting faces at confidence {r.threshold:.3g} or more" if ss.stricter else ""
    return (
        f" Over a class session ({r.frames} frames of each person; present when recognised in {r.required_frames} "
        f"or more{bar}): an enrolled student in class is marked present in {r.enrolled_marked_present:.1%} of "
        f"sessions, and a stranger in class marks somebody present in {r.stranger_marks_present:.1%} "
        f"(95% bound {r.stranger_upper95:.1%})."
    )


def session_lines(ss: SessionSummary) -> list[str]:
    """training_report.txt's ATTENDANCE SESSIONS: per-frame vs per-session rates, the rule chosen and why."""
    return render_lines(
        "parts/sessions.txt.j2",
        ss=ss,
        first=ss.with_rule[0],
        plain=ss.at_threshold[TABLE_FRAMES.index(TYPICAL_FRAMES)],
        typical_frames=TYPICAL_FRAMES,
        short_frames=SHORT_FRAMES,
        min_session_recognition=MIN_SESSION_RECOGNITION,
    )


def recommendation_reason(rec: Recommendation) -> str:
    """Why the recommended threshold (training_report.txt and metrics.json say it so)."""
    if rec.basis == "too_few_photos":
        text = (
            f"only {rec.n_test} held-out photos (< {MIN_TEST_PHOTOS}): too few to tune, so the default "
            f"{DEFAULT_THRESHOLD:.2f} is used. Add photos to get a tuned threshold."
        )
    elif rec.basis == "accurate_enough" and rec.closed_row is not None:
        best = rec.closed_row
        text = (
            f"highest threshold at which accepted answers are ≥ {TARGET_ACCEPTED_ACCURACY:.0%} correct "
            f"({best.accuracy_of_accepted:.1%}) while rejecting ≤ {MAX_REJECTION:.0%} of enrolled photos "
            f"({best.rejection_rate:.1%}); stricter is safer against strangers."
        )
    elif rec.basis == "inconclusive":
        text = (
            f"inconclusive: no threshold keeps accepted answers ≥ {TARGET_ACCEPTED_ACCURACY:.0%} correct while "
            f"rejecting ≤ {MAX_REJECTION:.0%}; the default {DEFAULT_THRESHOLD:.2f} is used. "
            "Add more, clearer photos per student (see the data-quality notes)."
        )
    elif rec.basis == "strangers_kept_out" and rec.open_row is not None and rec.max_far is not None:
        best_open = rec.open_row
        text = (
            f"strangers accepted at this threshold: {best_open.false_accept_rate:.1%} (target ≤ {rec.max_far:.1%}); "
            f"enrolled students recognised: {best_open.recognition_rate:.1%} - the best recognition among "
            "thresholds that meet the stranger target."
        )
    elif rec.basis == "safest_available" and rec.open_row is not None and rec.max_far is not None:
        safest = rec.open_row
        text = (
            f"NO threshold keeps strangers' false accepts ≤ {rec.max_far:.1%} while recognising at least "
            f"{MIN_USEFUL_RECOGNITION:.0%} of enrolled students: the safest, {safest.threshold:.2f}, "
            f"accepts {safest.false_accept_rate:.1%} of strangers (recognising {safest.recognition_rate:.1%} of "
            "students). Add more and clearer photos per student (5-20, front-facing, good light), fix the photos "
            "listed under data quality, then retrain."
        )
    else:
        text = "no stranger measurement possible; default used."
    if rec.strangers_unmeasured:
        text += " (Stranger safety could not be measured: it needs at least 3 students.)"
    return text


def key_figures(s: RunSummary) -> list[tuple[str, str, str]]:
    """Figures of the run that every output lists the same way: the console summary (after the photos),
    training_report.txt (DATASET) and report.html (the numbers at the top). A figure added here (with its
    field in the record) appears in all three; one that does not apply to a run is left out.
    Each is (label, value, what the value means)."""
    figures: list[tuple[str, str, str]] = []
    if s.photos_reused:
        figures.append(("photos reused", str(s.photos_reused), "from the embedding cache (embedded by an earlier run)"))
    return figures


def face_data_rows(f: FaceDataKept) -> list[tuple[str, str]]:
    """FACE DATA KEPT: each place this model's face data lives once it is published, and what it holds."""
    versions = f"up to {f.keep_versions} earlier model(s)" if f.keep_versions else "none (--keep-versions 0)"
    return [
        ("this model (Classifier/, models/X.npy)", f"{f.students} students, {f.embeddings} face embeddings"),
        ("embedding cache (models/cache)", f"{f.cache_photos} photos, only those in the data folder now"),
        (
            "report.html",
            "face thumbnails of the photos it lists" if f.thumbnails else "no face thumbnails (--no-photos-in-report)",
        ),
        ("kept for --rollback (versions/)", f"{versions}, with their own embeddings"),
        (
            "waiting and rejected models",
            "kept (--keep-unpublished)" if f.keep_unpublished else "removed when a model is published",
        ),
    ]


def face_data_notes(f: FaceDataKept) -> list[str]:
    """Re-enrolled students by id; students still held elsewhere only counted (the report outlives their erasure)."""
    notes = [
        f"{sid}: was erased on request before; enrolled again from their folder now (a new enrollment)"
        for sid in f.reenrolled
    ]
    if f.not_enrolled:
        notes.append(
            f"{len(f.not_enrolled)} student(s) without a folder are still held by kept models: the console summary "
            "names them; erase each with python retrain_model.py --erase ID"
        )
    return notes
