"""Shared words of the reports: formatters and the sentences every output says the same way.

Everything here reads a record (:class:`~retraining.summary.RunSummary` and the records it holds)
and returns text; nothing here measures, recomputes or decides.
"""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..dataset import DatasetIndex, Student
from ..quality import Finding
from ..session_rates import MIN_SESSION_RECOGNITION, REPORT_WIDTH, SHORT_FRAMES, TABLE_FRAMES, TYPICAL_FRAMES
from ..thresholds import (
    DEFAULT_THRESHOLD,
    MAX_REJECTION,
    MIN_TEST_PHOTOS,
    MIN_USEFUL_RECOGNITION,
    TARGET_ACCEPTED_ACCURACY,
    Recommendation,
)

if TYPE_CHECKING:  # records sit below their words: nothing there imports this module back
    from ..face_data import FaceDataKept
    from ..session_rates import SessionSummary
    from ..summary import RunSummary
    from ..verdict import Verdict


def strangers_in_words(rate: float | None) -> str:
    """ "about 1 in 150 strangers accepted", or "no stranger accepted in the test"."""
    if rate is not None and rate <= 0:
        return "no stranger accepted in the test"
    return f"about {one_in(rate)} strangers accepted"


def one_in(rate: float | None) -> str:
    """A share of strangers in words a teacher reads: "1 in 100", "1 in 30", "3 in 10", "none"."""
    if rate is None:
        return "an unknown share of"
    if rate <= 0:
        return "none of the"
    if rate >= 0.95:
        return "almost all"
    if rate >= 0.1:
        return f"{round(rate * 10):.0f} in 10"
    return f"1 in {float(f'{1 / rate:.2g}'):.0f}"


def fmt_threshold(t: float) -> str:
    """0.8 → "0.80"; a threshold set with more digits keeps them (0.995 → "0.995")."""
    return f"{t:.2f}" if abs(round(t, 2) - t) < 1e-9 else f"{t:.4g}"


#: Findings of one kind listed in the report; the rest are counted (metrics.json has all).
MAX_LISTED_PER_KIND = 100


def finding_lines(findings: Sequence[Finding], limit: int = MAX_LISTED_PER_KIND) -> list[str]:
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


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


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
    if not v.measured or v.recognition_rate is None:
        return ""
    if v.target_met is False:
        return (
            f"Strangers could be marked present: about {one_in(v.false_accept_rate)} strangers would be "
            f"accepted at the threshold {fmt_threshold(v.threshold)} (target: at most {one_in(v.max_far)})."
        )
    if v.recognition_poor:
        return (
            f"Only {v.recognition_rate:.0%} of the students' photos are recognised at the threshold "
            f"{fmt_threshold(v.threshold)} that keeps strangers out."
        )
    return ""


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
    """The report's lines: per-frame vs per-session rates, the rule chosen and why."""
    first, rule = ss.with_rule[0], ss.rule
    counted = f"confidence >= {first.threshold:.3g}"
    if ss.stricter:
        counted += f", stricter than the threshold {ss.threshold:.2f}"
    lines = [
        *_wrap(
            f"rule: present when accepted ({counted}) in at least max({rule.min_frames}, "
            f"{rule.min_share:.0%} of the session's frames) frames"
        ),
        f"  one frame: {first.per_frame_recognition:.1%} of enrolled photos recognised, "
        f"{first.per_frame_false_accept:.1%} of strangers' photos accepted",
        "  frames per person  needed  enrolled student marked present  stranger marks somebody present (95% bound)",
    ]
    for r in ss.with_rule:
        lines.append(
            f"  {r.frames:>17}  {r.required_frames:>6}  {r.enrolled_marked_present:>31.1%}  "
            f"{r.stranger_marks_present:>22.1%} ({r.stranger_upper95:.1%})"
        )
    basis = (
        f"per person ({first.students} students, {first.strangers} held out as strangers"
        + (f", {len(ss.lookalikes)} of them taken for another student in most photos" if ss.lookalikes else "")
        + ")"
        if first.per_person
        else "frames treated as independent (the run did not record whose each photo is)"
    )
    prose = [
        f"Computed from the open-set scores above, {basis}; a stranger's accepted frames are counted whoever "
        "they were accepted as, so the stranger column is an upper estimate."
    ]
    plain = ss.at_threshold[TABLE_FRAMES.index(TYPICAL_FRAMES)]
    t = ss.typical
    if not ss.stricter:
        prose.append(
            f"=> sessions of {TYPICAL_FRAMES} frames meet the stranger target (<= {ss.max_far:.1%}; "
            f"95% bound {t.stranger_upper95:.1%}, narrower with more students)."
        )
    elif ss.target_met:
        prose.append(
            f"=> at the threshold alone strangers would mark somebody present in {plain.stranger_marks_present:.1%} "
            f"of {TYPICAL_FRAMES}-frame sessions; to keep them under {ss.max_far:.1%}, the model's session rule "
            f"counts only faces with confidence >= {t.threshold:.3g} (AttendanceSession uses it): enrolled "
            f"students then marked present in {t.enrolled_marked_present:.1%} of sessions "
            f"({ss.short.enrolled_marked_present:.1%} of {SHORT_FRAMES}-frame ones), strangers "
            f"{t.stranger_marks_present:.1%}."
        )
    else:
        prose.append(
            f"=> NO confidence keeps strangers under {ss.max_far:.1%} of {TYPICAL_FRAMES}-frame sessions while "
            f"{MIN_SESSION_RECOGNITION:.0%} of students seen in {SHORT_FRAMES} frames are still marked present: some "
            "held-out students look like an enrolled one in most photos (the same person enrolled twice, or "
            f"relatives). The model's session rule counts only faces with confidence >= {t.threshold:.3g}, as "
            f"strict as the students allow: strangers {t.stranger_marks_present:.1%}, enrolled students "
            f"{t.enrolled_marked_present:.1%}."
        )
    if ss.lookalikes:
        prose.append(f"Counted as strangers here (left out of the per-photo estimate): {', '.join(ss.lookalikes)}.")
    for paragraph in prose:
        lines += _wrap(paragraph)
    return lines


def _wrap(paragraph: str) -> list[str]:
    return textwrap.wrap(paragraph, REPORT_WIDTH, initial_indent="  ", subsequent_indent="     ")


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
