"""models/report.html: one self-contained page a teacher reads instead of the text report.

Everything is inside the file (plots and face thumbnails as data URIs, CSS inline) and a
Content-Security-Policy forbids loading anything else, so it opens offline and reaches no
server. ``--no-photos-in-report`` leaves every face out (see docs/SECURITY.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..files import ESCAPE, atomic_write_bytes
from ..quality import Finding, FindingKind
from ..summary import RunSummary
from ..thumbnails import png_data_uri
from .formats import fmt_threshold, pct
from .templating import render
from .words import (
    MAX_LISTED_PER_KIND,
    face_data_notes,
    face_data_rows,
    folders_to_rename,
    key_figures,
    listed_findings,
    session_sentence,
    stranger_sentence,
    students_in_order,
    verdict_cause_text,
    verdict_headline,
    verdict_tradeoff_text,
)


def typical_photos(s: RunSummary) -> dict[str, Path]:
    """Each student's photo nearest to the student's mean face: what the page shows as 'this student'."""
    X, labels = s.extraction.embeddings, s.extraction.student_ids
    out: dict[str, Path] = {}
    for sid in np.unique(labels):
        idx = np.flatnonzero(labels == sid)
        centre = X[idx].mean(axis=0)
        out[str(sid)] = s.extraction.records[int(idx[np.argmax(X[idx] @ centre)])].path
    return out


def shown_findings(s: RunSummary) -> list[Finding]:
    """The findings the page lists: as many of each kind as the text report lists."""
    return listed_findings(s.findings)[0]


def confusion_pairs(s: RunSummary) -> list[tuple[str, str, int]]:
    """(true student, taken for, held-out photos), most frequent first."""
    labels, cm = s.evaluation.labels, np.asarray(s.evaluation.confusion)
    if cm.shape != (len(labels), len(labels)):  # no held-out photos: nothing was confused
        return []
    pairs = [(labels[i], labels[j], int(cm[i, j])) for i in range(len(labels)) for j in range(len(labels))]
    return sorted([p for p in pairs if p[0] != p[1] and p[2] > 0], key=lambda p: -p[2])[:MAX_LISTED_PER_KIND]


def photos_to_show(s: RunSummary) -> list[Path]:
    """Every photo the page shows a thumbnail of: findings, skipped photos, and one typical photo
    of each student a finding or a confusion is about."""
    typical = typical_photos(s)
    student_of = {str(r.path): r.student_id for r in s.extraction.records}
    findings = shown_findings(s)
    paths = [Path(f.path) for f in findings if f.path in student_of]
    paths += [Path(f.related) for f in findings if f.kind == FindingKind.NEAR_DUPLICATE]
    students = {student_of[f.path] for f in findings if f.path in student_of}
    students |= {f.related for f in findings if f.kind == FindingKind.MISLABEL}
    students |= {f.path for f in findings if f.kind == FindingKind.FEW_PHOTOS}
    students |= {sid for true, pred, _ in confusion_pairs(s) for sid in (true, pred)}
    paths += [typical[sid] for sid in sorted(students) if sid in typical]
    return paths + [p for p, _ in s.all_skipped]


def write_html_report(path: Path, s: RunSummary, thumbs: Mapping[str, str] | None) -> None:
    """Write the page; ``thumbs`` (``str(photo path)`` → data URI) None: no faces in the page."""
    page = html_page(s, thumbs, path.parent)
    atomic_write_bytes(path, page.encode("utf-8", errors=ESCAPE))  # owner-only: it shows students' faces


def html_page(s: RunSummary, thumbs: Mapping[str, str] | None, models_dir: Path) -> str:
    """report.html's text from the run's record, the face thumbnails and the plots in ``models_dir``."""
    t = dict(thumbs or {})
    typical = {sid: t.get(str(p)) for sid, p in typical_photos(s).items()}
    student_of = {str(r.path): r.student_id for r in s.extraction.records}
    fixes = []
    for f in shown_findings(s):
        faces: list[tuple[str, str | None]] = [("this photo", t.get(f.path))] if Path(f.path).suffix else []
        if f.kind == FindingKind.MISLABEL:
            own = student_of.get(f.path, "")
            faces += [(f"{own} (its folder)", typical.get(own)), (f"{f.related} (looks like)", typical.get(f.related))]
        elif f.kind == FindingKind.NEAR_DUPLICATE:
            faces.append(("the other photo", t.get(f.related)))
        elif f.kind == FindingKind.FEW_PHOTOS:
            faces.append((f.path, typical.get(f.path)))
        fixes.append({"kind": f.kind, "path": f.path, "reason": f.reason, "faces": faces if thumbs else []})
    ev = s.evaluation
    report = ev.report_dict
    counts = s.extraction.counts()
    students = [
        {
            "id": st.student_id,
            "name": st.student_name,
            "photos": st.num_images,
            "used": counts.get(st.student_id, 0),
            "recall": pct((report.get(st.student_id) or {}).get("recall")),
            "precision": pct((report.get(st.student_id) or {}).get("precision")),
        }
        for st in students_in_order(s.index)
    ]
    gate = s.gate
    headline = verdict_headline(s.verdict)
    if headline and gate.publish:
        verdict, verdict_class = headline + " " + _advice(s), "poor"
    elif gate.passed:
        verdict, verdict_class = "The new model is good enough to use: it passed the quality gate.", "ok"
    elif gate.forced:
        verdict, verdict_class = (
            "Published with --force although the quality gate refused it: " + gate.verdict(),
            "forced",
        )
    else:
        verdict, verdict_class = "NOT published: " + gate.verdict() + ". The model in service is unchanged.", "refused"
    context: dict[str, Any] = {
        "version": s.version,
        "created_at": s.created_at,
        "data_dir": s.data_dir,
        "verdict": verdict,
        "verdict_class": verdict_class,
        "n_students": len(counts),
        "n_found": len(s.index.records),
        "n_embedded": len(s.extraction.records),
        "n_clips": len(s.extraction.clips),
        "figures": key_figures(s),
        "accuracy": pct(ev.accuracy),
        "threshold": f"{fmt_threshold(s.threshold)}",
        "stranger": (
            "Not measured: at least 3 students are needed."
            if ev.open_set is None
            else stranger_sentence(s.verdict, ev.open_set.n_unknown_photos)
            + (session_sentence(s.sessions) if s.sessions is not None else "")
        ),
        "gate": list(gate.checks),
        "fixes": fixes,
        "hidden": max(0, len(s.findings) - len(fixes)),
        "skipped": [{"path": p, "reason": r, "thumb": t.get(str(p)) if thumbs else None} for p, r in s.all_skipped],
        "confusions": [
            {"true": a, "pred": b, "count": n, "true_thumb": typical.get(a), "pred_thumb": typical.get(b)}
            for a, b, n in confusion_pairs(s)
        ],
        "students": students,
        "rename": [{"folder": folder, "why": why} for folder, why in folders_to_rename(s.index)],
        "face_data": face_data_rows(s.face_data),
        "face_data_notes": face_data_notes(s.face_data),
        "plots": [{"name": p.name, "uri": png_data_uri(models_dir / p)} for p in s.plots if (models_dir / p).is_file()],
        "photos_note": (
            "Face thumbnails are small copies of the students' photos: keep this file as private as the photos."
            if thumbs
            else "This page holds no photos of students (--no-photos-in-report)."
        ),
    }
    return render("report.html.j2", **context)


def _advice(s: RunSummary) -> str:
    """Likely cause, trade-off and what to do, after a headline that says something is wrong."""
    v = s.verdict
    cause = verdict_cause_text(v)
    parts = [f"Likely cause: {cause}."] if cause else []
    if v.tradeoffs:
        parts.append(f"Trade-off: {verdict_tradeoff_text(v)}.")
    if v.recognition_rate is not None:  # unmeasured: the headline itself says what to add
        parts.append("Fix the photos listed below and retrain.")
    return " ".join(parts)
