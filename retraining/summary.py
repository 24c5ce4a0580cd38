"""The record one training run leaves: numbers and decisions, no sentences.

The pipeline builds one :class:`RunSummary`; the presentation package (``retraining/presentation``)
renders it as the console summary, training_report.txt, MODEL_README.md and report.html, and
retraining/report.py writes it as metrics.json and the CSV files.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from backend.recognizer.metadata import FaceModels

from .dataset import DatasetIndex
from .evaluate import Evaluation
from .extract import Extraction
from .face_data import FaceDataKept
from .gate import GateDecision
from .quality import Finding
from .session_rates import SessionSummary
from .subfolders import subfolder_counts
from .verdict import Verdict

#: Where the threshold in use came from (the report and the summary say it in these words).
ThresholdSource = Literal["recommended", "set with --threshold"]


@dataclass(frozen=True)
class Timings:
    """Seconds per stage, in the order they ran, and the total up to publishing."""

    stages: tuple[tuple[str, float], ...]

    @property
    def total(self) -> float:
        return next((v for k, v in self.stages if k == "total"), 0.0)

    def as_dict(self) -> dict[str, float]:
        return dict(self.stages)


class StageClock:
    """Times a run's stages as they happen (``with clock.stage("extract"):``), so no stage is timed by hand."""

    def __init__(self) -> None:
        self._started = time.perf_counter()
        self._seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the time spent inside the block to ``name`` (a stage may run in several blocks)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def move(self, seconds: float, source: str, target: str) -> None:
        """Count ``seconds`` of stage ``source`` under ``target`` (loading the models happens inside extraction)."""
        self.add(source, -seconds)
        self.add(target, seconds)

    def timings(self) -> Timings:
        """The stages so far and the total since the clock started."""
        return Timings((*self._seconds.items(), ("total", time.perf_counter() - self._started)))


@dataclass(frozen=True)
class RunSummary:
    """Everything a report needs, gathered by the pipeline: numbers and decisions, no sentences."""

    version: str
    created_at: str
    data_dir: Path
    output_root: Path
    models: FaceModels
    index: DatasetIndex
    extraction: Extraction
    evaluation: Evaluation
    threshold: float
    threshold_source: ThresholdSource
    excluded_students: tuple[str, ...]
    duplicate_groups: tuple[tuple[Path, ...], ...]
    timings: Timings
    verdict: Verdict  # stranger safety and recognition at the threshold in use (one derivation)
    sessions: SessionSummary | None  # the session rule the model records and its rates (None: no open set)
    gate: GateDecision  # the quality gate's decision
    face_data: FaceDataKept  # where this model's face data is kept
    photos_reused: int  # photos whose embeddings came from the embedding cache (embedded by an earlier run)
    prior_artifacts: tuple[Path, ...] = ()
    library_versions: tuple[tuple[str, str], ...] = ()
    findings: tuple[Finding, ...] = ()
    plots: tuple[Path, ...] = ()  # file names relative to models/
    weights_warnings: tuple[str, ...] = ()  # weight files that are not the official ones

    @property
    def face_models(self) -> FaceModels:
        """The run's face models (the same as ``models``)."""
        return self.models

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
    rows += [
        (r.path, "used", f"photo of {r.student_id}" if r.clip is None else f"frame of {r.student_id}'s clip")
        for r in s.extraction.records
    ]
    rows += [
        (
            c.path,
            "used",
            f"clip of {c.student_id}: {c.frames} sharp, different frames used of {c.sampled} looked at"
            + "".join(f"; {note}" for note in c.notes),
        )
        for c in s.extraction.clips
    ]
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
