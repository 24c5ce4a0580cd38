"""One record, four outputs: the console summary, training_report.txt, MODEL_README.md and report.html
are rendered from the one RunSummary a real run (the demo photos) returns, without recomputing.

The reference outputs in tests/fixtures/presentation/ are those of the demo run (``--demo --seed 42``),
normalised by bench/compare_outputs.py (timestamps, version ids, durations, paths): a change to the
renderers that alters a word fails here. bench/compare_outputs.py diffs every artifact of two whole
runs the same way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
from pathlib import Path
from typing import Any

import pytest

import retrain_model
from backend.recognizer.backends import BackendConfig, build_detector
from backend.recognizer.paths import PROJECT_ROOT, OutputPaths
from retraining import pipeline
from retraining.presentation.console import format_summary
from retraining.presentation.html import html_page, photos_to_show
from retraining.presentation.readme import model_readme_text
from retraining.presentation.text_report import training_report_text
from retraining.thumbnails import face_thumbnails

pytestmark = pytest.mark.slow  # one real run of the demo (~30 s on 2 cores)

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


def test_the_four_outputs_are_renders_of_the_one_record(demo_run: tuple[pipeline.RunResult, Path, str]) -> None:
    result, root, printed = demo_run
    s = result.summary
    models = OutputPaths.at(root).models_dir
    assert printed == format_summary(result) + "\n"
    assert (models / "training_report.txt").read_text(encoding="utf-8") == training_report_text(s, result.artifacts)
    assert (models / "MODEL_README.md").read_text(encoding="utf-8") == model_readme_text(s)
    thumbs = face_thumbnails(photos_to_show(s), build_detector(BackendConfig(detector="mtcnn", embedder="dlib")))
    assert (models / "report.html").read_text(encoding="utf-8") == html_page(s, thumbs, models)


@pytest.mark.parametrize("name", ["training_report.txt", "MODEL_README.md", "console.txt"])
def test_the_words_are_those_of_the_release_before(demo_run: tuple[pipeline.RunResult, Path, str], name: str) -> None:
    _, root, printed = demo_run
    normalise = _normalise()
    text = printed if name == "console.txt" else (OutputPaths.at(root).models_dir / name).read_text(encoding="utf-8")
    got = normalise(text, [str(root)]).replace(str(PROJECT_ROOT), "<PROJECT>")
    assert got == (GOLDEN / f"{name}.golden").read_text(encoding="utf-8")


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
