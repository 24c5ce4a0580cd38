"""models/training_report.txt: the full text report, rendered from one :class:`~retraining.summary.RunSummary`.

The words and the layout are in templates/training_report.txt.j2 and its parts; here is what they are
given: the record, and the lists that need ordering or selecting first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..evaluate import Evaluation
from ..quality import FindingKind
from ..summary import RunSummary, inventory
from ..verdict import Verdict
from .templating import render, render_lines
from .words import (
    MAX_LISTED_PER_KIND,
    face_data_notes,
    face_data_rows,
    finding_lines,
    key_figures,
    natural_key,
    natural_order,
    session_lines,
    stranger_sentence,
    students_in_order,
    verdict_words,
)

#: Above this many students the confusion matrix lists only the rows with errors.
FULL_CONFUSION_MAX = 30


def sweep_table(evaluation: Evaluation, in_use: float | None = None) -> list[str]:
    """THRESHOLD SWEEP: the table's thresholds, plus a marked row at the threshold in use (and the recommended)."""
    recommended = evaluation.recommended_threshold
    extra = [t for t in (in_use, recommended) if t is not None]
    return render_lines(
        "parts/threshold_sweep.txt.j2",
        rows=evaluation.sweep_with(*extra),
        in_use=in_use,
        recommended=recommended,
    )


def open_set_lines(ev: Evaluation, verdict: Verdict) -> list[str]:
    """STRANGER SAFETY: the open-set sweep at the table's thresholds and the one in use, and what it means."""
    os_ = ev.open_set
    return render_lines(
        "parts/stranger_safety.txt.j2",
        open_set=os_,
        rows=[] if os_ is None else os_.sweep_with(verdict.threshold, ev.recommended_threshold),
        in_use=verdict.threshold,
        recommended=ev.recommended_threshold,
        n_students=len(ev.labels),
        stranger_sentence="" if os_ is None else stranger_sentence(verdict, os_.n_unknown_photos),
    )


def confusion_lines(evaluation: Evaluation) -> list[str]:
    """The confusion matrix with students in natural order (only the errors above FULL_CONFUSION_MAX students)."""
    order = natural_order(list(evaluation.labels))
    labels = [evaluation.labels[i] for i in order]
    cm = np.asarray(evaluation.confusion)
    if cm.size:
        cm = cm[np.ix_(order, order)]
    errors = [
        (name, [(labels[j], int(v)) for j, v in enumerate(row) if j != i and v])
        for i, (name, row) in enumerate(zip(labels, cm))
    ]
    return render_lines(
        "parts/confusion.txt.j2",
        labels=labels,
        matrix=list(zip(labels, cm.tolist())) if cm.size else [],
        full=len(labels) <= FULL_CONFUSION_MAX,
        errors=[(name, taken_for) for name, taken_for in errors if taken_for],
    )


def classification_lines(ev: Evaluation) -> list[str]:
    """scikit-learn's classification report with its per-student rows in natural order.

    Its rows follow ``ev.labels`` (header, blank line, one row per label, then the averages)."""
    lines = ev.report_text.splitlines()
    n = len(ev.labels)
    if len(lines) < n + 2 or lines[1].strip():  # not the layout above ("no held-out photos"): as it is
        return lines
    rows = lines[2 : 2 + n]
    return [*lines[:2], *(rows[i] for i in natural_order(list(ev.labels))), *lines[2 + n :]]


def training_report_text(s: RunSummary, artifact_paths: Sequence[Path]) -> str:
    """models/training_report.txt."""
    ev, idx = s.evaluation, s.index
    flagged = [f for f in s.findings if f.kind == FindingKind.SEVERAL_FACES]
    inputs: dict[str, list[tuple[Path, str]]] = {}
    for path, status, why in inventory(s):
        inputs.setdefault(status, []).append((path, why))
    return render(
        "training_report.txt.j2",
        s=s,
        artifacts=artifact_paths,
        **verdict_words(s.verdict),
        counts=s.extraction.counts(),
        ignored_types=idx.ignored_by_extension().most_common(),
        figures=key_figures(s),
        students=students_in_order(idx),
        nonconforming=sorted(idx.nonconforming_folders, key=natural_key),
        renamed=sorted(idx.renamed, key=lambda e: natural_key(e[0].name)),
        several_faces_flagged=flagged,
        several_faces_fine=max(0, len(s.several_faces) - len(flagged)),
        classification=classification_lines(ev),
        confusion=confusion_lines(ev),
        sweep=sweep_table(ev, s.threshold),
        stranger_safety=open_set_lines(ev, s.verdict),
        sessions=[] if s.sessions is None else session_lines(s.sessions),
        findings=finding_lines(s.findings),
        face_data=face_data_rows(s.face_data),
        face_data_notes=face_data_notes(s.face_data),
        inputs=inputs,
        limit=MAX_LISTED_PER_KIND,
    )
