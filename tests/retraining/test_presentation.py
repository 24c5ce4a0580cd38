"""One record, four outputs: the console summary, training_report.txt, MODEL_README.md and report.html
are rendered from the one RunSummary a real run (the demo photos) returns, without recomputing.

The reference outputs in tests/fixtures/presentation/ are those of the demo run (``--demo --seed 42``),
normalised by bench/compare_outputs.py (timestamps, version ids, durations, paths): a change to the
renderers that alters a word fails here. bench/compare_outputs.py diffs every artifact of two whole
runs the same way.

The demo run passes every check, so the branches a troubled run takes are pinned by cases made from
its record (:data:`CASES`: findings, a forced and a refused gate, no stranger measurement, a model
left for --review), each with its reference outputs in a folder of its own; the --dry-run and --erase
summaries by small records of their own. A word changed on purpose is a golden file rewritten with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import retrain_model
from backend.recognizer.backends import BackendConfig, build_detector
from backend.recognizer.metadata import PresenceRule
from backend.recognizer.paths import PROJECT_ROOT, OutputPaths
from retraining import pipeline
from retraining.dataset import DatasetIndex, ImageRecord, Student
from retraining.erasure import ErasureAction, ErasureResult
from retraining.evaluate import LeftOut
from retraining.gate import Check
from retraining.presentation.console import format_dry_run, format_erasure, format_summary
from retraining.presentation.html import html_page, photos_to_show
from retraining.presentation.readme import model_readme_text
from retraining.presentation.text_report import training_report_text
from retraining.quality import Finding, FindingKind
from retraining.retention import Cleared
from retraining.thumbnails import face_thumbnails

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "presentation"


def _normalise() -> Any:
    spec = importlib.util.spec_from_file_location("compare_outputs", PROJECT_ROOT / "bench" / "compare_outputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.normalise


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[pipeline.RunResult, Path, str]:
    """The demo run's RunResult (its one record), output root and console output."""
    root = tmp_path_factory.mktemp("demo_output")
    results: list[pipeline.RunResult] = []
    real_run = pipeline.run

    def keep(options: pipeline.RunOptions) -> pipeline.RunResult | pipeline.Unchanged:
        result = real_run(options)
        assert isinstance(result, pipeline.RunResult)
        results.append(result)
        return result

    mp = pytest.MonkeyPatch()
    mp.setattr(pipeline, "run", keep)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            assert (
                retrain_model.main(["--demo", "--output-root", str(root), "--seed", "42", "--quiet", "--no-open"]) == 0
            )
    finally:
        mp.undo()
    return results[0], root, out.getvalue()


@pytest.mark.slow  # one real run of the demo (~30 s on 2 cores)
def test_the_four_outputs_are_renders_of_the_one_record(demo_run: tuple[pipeline.RunResult, Path, str]) -> None:
    result, root, printed = demo_run
    s = result.summary
    models = OutputPaths.at(root).models_dir
    assert printed == format_summary(result) + "\n"
    assert (models / "training_report.txt").read_text(encoding="utf-8") == training_report_text(s, result.artifacts)
    assert (models / "MODEL_README.md").read_text(encoding="utf-8") == model_readme_text(s)
    thumbs = face_thumbnails(photos_to_show(s), build_detector(BackendConfig(detector="mtcnn", embedder="dlib")))
    assert (models / "report.html").read_text(encoding="utf-8") == html_page(s, thumbs, models)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["training_report.txt", "MODEL_README.md", "console.txt"])
def test_the_words_are_those_of_the_release_before(demo_run: tuple[pipeline.RunResult, Path, str], name: str) -> None:
    _, root, printed = demo_run
    normalise = _normalise()
    text = printed if name == "console.txt" else (OutputPaths.at(root).models_dir / name).read_text(encoding="utf-8")
    got = normalise(text, [str(root)]).replace(str(PROJECT_ROOT), "<PROJECT>")
    assert got == (GOLDEN / f"{name}.golden").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the branches of a troubled run


def _rows(rows: tuple[Any, ...], **changes: Any) -> tuple[Any, ...]:
    return tuple(dataclasses.replace(r, **changes) for r in rows)


def published_with_problems(result: pipeline.RunResult) -> pipeline.RunResult:
    """Published with --force: findings of every kind (more than are listed), skipped and ignored files,
    folders to rename, a student with one photo, poor recognition with trade-offs, a stricter session
    rule, a threshold set by hand, weight warnings, students erased before, the previous model deleted."""
    s = result.summary
    data, out = s.data_dir, s.output_root
    ex, idx, ev = s.extraction, s.index, s.evaluation
    assert ev.open_set is not None and s.sessions is not None
    keep = [i for i, r in enumerate(ex.records) if r.student_id != "STU010" or r.path.name == "1.pgm"]
    faces = list(ex.faces)
    faces[0] = dataclasses.replace(faces[0], num_faces=2)
    faces[11] = dataclasses.replace(faces[11], num_faces=3)
    extraction = dataclasses.replace(
        ex,
        embeddings=ex.embeddings[keep],
        records=[ex.records[i] for i in keep],
        faces=[faces[i] for i in keep],
        skipped=[(data / "STU004_Person_4" / "dark.jpg", "no face found (also tried with a border)")],
    )
    index = dataclasses.replace(
        idx,
        students=[*idx.students, Student("s12", "s12", "s12", False, 3)],
        records=[*idx.records, *(ImageRecord(data / "s12" / f"{i}.jpg", "s12", "s12") for i in range(3))],
        ignored_files=[data / "STU002_Person_2" / ".DS_Store"],
        loose_files=[data / "list.xlsx"],
        skipped=[(data / "old_class", "a link to a folder outside the data folder: not followed")],
        subfolders=[data / "STU002_Person_2" / "2023"],
        renamed=[(data / "STU005_Person_5", "a control character in the name was replaced by _")],
    )
    photo = str(ex.records[0].path)
    findings = (
        Finding(FindingKind.SEVERAL_FACES, photo, "another face nearly as large; the largest is not the student"),
        Finding(FindingKind.MISLABEL, str(ex.records[23].path), "looks like STU001, not STU003", related="STU001"),
        Finding(FindingKind.NEAR_DUPLICATE, str(ex.records[40].path), "same face", related=str(ex.records[50].path)),
        Finding(FindingKind.FEW_PHOTOS, "STU010", "only 1 usable photo: add 5 or more"),
        *(Finding(FindingKind.BLURRY, str(data / "STU006_Person_6" / f"b{i}.jpg"), "blurred") for i in range(102)),
    )
    worse = ev.open_set.sweep[0]
    tradeoffs = (
        dataclasses.replace(worse, threshold=0.7, recognition_rate=0.87, false_accept_rate=0.0),
        dataclasses.replace(worse, threshold=0.6, recognition_rate=0.93, false_accept_rate=0.012),
    )
    verdict = dataclasses.replace(
        s.verdict,
        threshold=0.995,
        recognition_rate=0.6125,
        tradeoffs=tradeoffs,
        causes=("1 photo(s) in the wrong student's folder", "102 blurred photo(s)"),
    )
    open_set = dataclasses.replace(
        ev.open_set,
        left_out=LeftOut(
            held_together=(("STU002", "STU008"),),
            accepted_as=(("STU007", "STU004", 6, 10),),
            photos=(("mislabel", 1), ("near_duplicate", 2)),
        ),
    )
    confidence = {**ev.confidence, "wrong": {"count": 2, "mean": 0.61, "median": 0.6, "p05": 0.52, "min": 0.51}}
    evaluation = dataclasses.replace(ev, open_set=open_set, train_only_students=["STU010"], confidence=confidence)
    ss = s.sessions
    sessions = dataclasses.replace(
        ss,
        threshold=0.995,
        rule=PresenceRule(min_confidence=0.9973),
        with_rule=_rows(ss.with_rule, threshold=0.9973, enrolled_marked_present=0.97),
        short=dataclasses.replace(ss.short, threshold=0.9973, enrolled_marked_present=0.91),
        at_threshold=_rows(ss.at_threshold, stranger_marks_present=0.04),
        lookalikes=("STU007",),
    )
    gate = dataclasses.replace(
        s.gate,
        checks=(*s.gate.checks[:1], Check("no regression", False, "accuracy 90.0% is 8.0 points below 98.0%")),
        forced=True,
    )
    face_data = dataclasses.replace(
        s.face_data,
        thumbnails=False,
        keep_versions=0,
        keep_unpublished=True,
        reenrolled=("STU003",),
        not_enrolled=(("STU099", ("versions/v1",)),),
    )
    summary = dataclasses.replace(
        s,
        index=index,
        extraction=extraction,
        evaluation=evaluation,
        threshold=0.995,
        threshold_source="set with --threshold",
        excluded_students=("s12",),
        duplicate_groups=((ex.records[1].path, ex.records[12].path),),
        verdict=verdict,
        sessions=sessions,
        gate=gate,
        face_data=face_data,
        photos_reused=40,
        prior_artifacts=(out / "backend" / "models" / "Classifier" / "model.npz",),
        findings=findings,
        plots=(),
        weights_warnings=("the embedder's weight file is not the official one (SHA-256 differs)",),
    )
    return dataclasses.replace(
        result,
        summary=summary,
        removed=[out / "backend" / "models" / "Classifier" / "model.npz"],
        archived_to=None,
        cleared=(Cleared(out / "backend" / "models" / "candidate" / "v0", "candidate"),),
        not_enrolled=(("STU099", ("versions/v1",)),),
    )


def refused_for_review(result: pipeline.RunResult) -> pipeline.RunResult:
    """Left for --review after the gate refused it: strangers accepted over the target at the
    recommended threshold, and no confidence gets sessions under it."""
    s = result.summary
    assert s.sessions is not None
    ss = s.sessions
    verdict = dataclasses.replace(s.verdict, false_accept_rate=0.05, false_accept_upper95=0.11)
    sessions = dataclasses.replace(
        ss,
        rule=PresenceRule(min_confidence=0.999),
        with_rule=_rows(ss.with_rule, threshold=0.999, stranger_marks_present=0.08),
        short=dataclasses.replace(ss.short, threshold=0.999),
        lookalikes=("STU003", "STU009"),
    )
    gate = dataclasses.replace(
        s.gate, checks=(Check("accuracy floor", False, "held-out accuracy 40.0% on 20 photos"), *s.gate.checks[1:])
    )
    summary = dataclasses.replace(s, verdict=verdict, sessions=sessions, gate=gate)
    candidate = s.output_root / "backend" / "models" / "candidate" / "v1"
    return dataclasses.replace(result, summary=summary, candidate=candidate, not_enrolled=())


def unmeasured_many_students(result: pipeline.RunResult) -> pipeline.RunResult:
    """31 students, too few held-out photos, no stranger measurement: the compact confusion list,
    no sessions; the gate compared with the model in service, which is kept for rollback."""
    s = result.summary
    ev = s.evaluation
    labels = [f"STU{i:03d}" for i in range(31, 0, -1)]
    confusion = np.diag(np.full(31, 2))
    confusion[0, 1] = confusion[4, 2] = 1
    recommendation = dataclasses.replace(
        ev.recommendation, threshold=0.8, basis="too_few_photos", n_test=20, strangers_unmeasured=True
    )
    evaluation = dataclasses.replace(
        ev, labels=labels, confusion=confusion, accuracy=None, open_set=None, recommendation=recommendation
    )
    verdict = dataclasses.replace(
        s.verdict, threshold=0.8, measured=False, false_accept_rate=None, false_accept_upper95=None
    )
    gate = dataclasses.replace(s.gate, compared_with="20240101T000000Z-abcdef")
    summary = dataclasses.replace(
        s, evaluation=evaluation, verdict=verdict, sessions=None, gate=gate, threshold=0.8, photos_reused=100
    )
    out = s.output_root
    return dataclasses.replace(
        result,
        summary=summary,
        removed=[out / "backend" / "models" / "Classifier" / "model.npz"],
        archived_to=out / "backend" / "models" / "versions" / "v0",
    )


def no_held_out_photos(result: pipeline.RunResult) -> pipeline.RunResult:
    """Too few photos to hold any out: no matrix, no sweep; session rates from frames treated as
    independent; more skipped photos than the INPUTS section lists."""
    s = result.summary
    assert s.sessions is not None
    ev = s.evaluation
    evaluation = dataclasses.replace(
        ev,
        n_test=0,
        accuracy=None,
        confusion=np.zeros((0, 0), dtype=int),
        report_text="no held-out photos",
        report_dict={},
        confidence={},
        sweep=[],
    )
    sessions = dataclasses.replace(s.sessions, with_rule=_rows(s.sessions.with_rule, per_person=False))
    skipped = [(s.data_dir / "STU001_Person_1" / f"scan{i:03d}.jpg", "cannot be read as an image") for i in range(120)]
    index = dataclasses.replace(s.index, skipped=skipped)
    summary = dataclasses.replace(s, evaluation=evaluation, sessions=sessions, index=index)
    return dataclasses.replace(result, summary=summary)


CASES: dict[str, Callable[[pipeline.RunResult], pipeline.RunResult]] = {
    f.__name__: f for f in (published_with_problems, refused_for_review, unmeasured_many_students, no_held_out_photos)
}


def _render(result: pipeline.RunResult, name: str) -> str:
    s = result.summary
    if name == "console.txt":
        return format_summary(result) + "\n"
    if name == "MODEL_README.md":
        return model_readme_text(s)
    return training_report_text(s, result.artifacts)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["training_report.txt", "MODEL_README.md", "console.txt"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_troubled_run_has_the_words_of_the_release_before(
    demo_run: tuple[pipeline.RunResult, Path, str], case: str, name: str
) -> None:
    result, root, _ = demo_run
    text = _render(CASES[case](result), name)
    got = _normalise()(text, [str(root)]).replace(str(PROJECT_ROOT), "<PROJECT>")
    assert got == (GOLDEN / case / f"{name}.golden").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- --dry-run and --erase

_DATA = Path("/school/photos")
_MODELS = Path("/school/backend/models")


def _dry_run(**changes: Any) -> pipeline.DryRunResult:
    students = [Student("STU010", "Ann Lee", "STU010_Ann_Lee", True, 12), Student("STU9", "STU9", "STU9", False, 3)]
    index = DatasetIndex(_DATA, students, [])
    replaced = [_MODELS / "Classifier" / "model.npz", _MODELS / "Classifier" / "model.json"]
    base = pipeline.DryRunResult(_DATA, index, would_replace=replaced, keeps_previous=True, would_clear=[])
    return dataclasses.replace(base, **changes)


DRY_RUNS: dict[str, pipeline.DryRunResult] = {
    "unchanged": _dry_run(unchanged=pipeline.Unchanged("20240101T000000Z-abcdef", _DATA)),
    "nothing_published": _dry_run(would_replace=[], would_clear=[_MODELS / "candidate" / "v1"]),
    "replaces_and_clears": _dry_run(
        interrupted_publish=True, would_clear=[_MODELS / "candidate" / "v1", _MODELS / "rejected" / "v2"]
    ),
    "replaces_without_rollback": _dry_run(keeps_previous=False),
}

ERASURES: dict[str, ErasureResult] = {
    "removed_and_retrained": ErasureResult(
        ("STU004", "STU007"),
        (
            ErasureAction("models/cache", "removed", "3 cached embeddings"),
            ErasureAction("backend/models/Classifier", "retrained", "without them: 8 students"),
        ),
        _MODELS / "erasures.jsonl",
        "20240101T000000Z-abcdef",
    ),
    "nothing_left": ErasureResult(("STU004",), (), _MODELS / "erasures.jsonl", None),
}


@pytest.mark.parametrize("case", sorted(DRY_RUNS))
def test_the_dry_run_summary_has_the_words_of_the_release_before(case: str) -> None:
    golden = GOLDEN / "dry_run" / f"{case}.txt.golden"
    assert format_dry_run(DRY_RUNS[case]) + "\n" == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", sorted(ERASURES))
def test_the_erasure_summary_has_the_words_of_the_release_before(case: str) -> None:
    golden = GOLDEN / "erasure" / f"{case}.txt.golden"
    assert format_erasure(ERASURES[case], Path("/school")) + "\n" == golden.read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_key_figure_reaches_every_output(
    demo_run: tuple[pipeline.RunResult, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """photos_reused: one field in the record, one figure in words.py, shown by the console summary,
    training_report.txt and report.html (left out where nothing was reused, as in the first run)."""
    _, first_root, first_printed = demo_run
    assert "photos reused" not in first_printed
    root = tmp_path / "again"
    shutil.copytree(first_root, root, symlinks=True)
    args = ["--demo", "--output-root", str(root), "--seed", "42", "--quiet", "--no-open", "--force"]
    assert retrain_model.main(args) == 0
    line = "photos reused      : 100 from the embedding cache (embedded by an earlier run)"
    assert f"  {line}\n" in capsys.readouterr().out
    models = OutputPaths.at(root).models_dir
    report = (models / "training_report.txt").read_text(encoding="utf-8")
    assert "  photos reused       : 100 from the embedding cache (embedded by an earlier run)\n" in report
    page = (models / "report.html").read_text(encoding="utf-8")
    assert "<div><b>100</b>photos reused from the embedding cache (embedded by an earlier run)</div>" in page
