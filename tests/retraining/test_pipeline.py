"""End-to-end: student folders → published model and reports (real ORL photos, MTCNN + dlib)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from conftest import ENVIRON, OFFLINE_ARGS, ROOT, early_result, make_orl_tree, run_early, run_process, tree_digest

import retrain_model
from backend.recognizer import FaceRecognizer
from backend.recognizer.bundle import ARRAY_KEYS
from backend.recognizer.paths import OutputPaths

pytestmark = pytest.mark.slow  # end-to-end runs of retrain_model.py


def test_published_artifacts_have_the_contracted_shapes_and_keys(published_root: Path) -> None:
    paths = OutputPaths.at(published_root)
    for p in (
        paths.model_npz,
        paths.model_json,
        paths.bundle,
        paths.label_encoder,
        paths.classes,
        paths.manifest,
        paths.X,
        paths.y,
        paths.labels_csv,
        paths.report_txt,
        paths.model_readme,
        paths.metrics_json,
    ):
        assert p.is_file() and p.stat().st_size > 0, p
    with np.load(paths.model_npz, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert set(ARRAY_KEYS) | {"open_set_centres", "open_set_coef"} <= set(arrays)
    assert arrays["weights"].shape == (128, 12) and arrays["scaler_mean"].shape == (128,)
    meta = json.loads(paths.model_json.read_text(encoding="utf-8"))
    assert meta["format"] == 3 and list(meta["students"]) == list(arrays["student_ids"])
    assert meta["embedding_dim"] == 128  # dlib; the metadata records the real dim
    assert meta["detector"]["name"] == "mtcnn" and meta["embedder"]["name"].startswith("dlib")
    assert meta["embedder"]["weights_sha256"] and len(meta["embedder"]["weights_sha256"]) == 64
    for key in (
        "threshold",
        "crop_size",
        "normalisation",
        "library_versions",
        "created_at",
        "dataset",
        "model_version",
    ):
        assert key in meta, key
    X, y = np.load(paths.X), np.load(paths.y)
    assert X.dtype == np.float32 and X.shape == (120, 128) and y.shape == (120,)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    # the seed's pickles are still written for other code, and answer as model.npz does
    bundle = joblib.load(paths.bundle)  # our own file, just written: trusted here
    assert {"classifier", "scaler", "label_encoder", "metadata"} <= set(bundle)
    assert bundle["metadata"]["model_version"] == meta["model_version"]
    classes = np.load(paths.classes)
    assert list(classes) == list(bundle["label_encoder"].classes_) == sorted(set(y.tolist()))
    assert bundle["scaler"].mean_.shape == (128,)
    served = FaceRecognizer.load(published_root, require_manifest=True)._state.loaded.model
    seed = bundle["classifier"].predict_proba(bundle["scaler"].transform(X))
    np.testing.assert_allclose(served.predict_proba(X), seed, atol=1e-6)


def test_labels_csv_matches_the_tree(published_root: Path, orl_tree: Path) -> None:
    rows = list(csv.DictReader(open(OutputPaths.at(published_root).labels_csv, encoding="utf-8")))
    expected = sorted(p.name for p in orl_tree.iterdir())
    assert [f"{r['student_id']}_{r['student_name'].replace(' ', '_')}" for r in rows] == expected
    assert all(int(r["num_images"]) == 10 for r in rows)


def test_report_and_metrics_agree_and_accuracy_is_high(published_root: Path) -> None:
    paths = OutputPaths.at(published_root)
    metrics = json.loads(paths.metrics_json.read_text(encoding="utf-8"))
    report = paths.report_txt.read_text(encoding="utf-8")
    assert metrics["accuracy"] >= 0.95
    assert f"accuracy     : {metrics['accuracy']:.1%}" in report
    assert f"photos embedded     : {metrics['counts']['images_embedded']}" in report
    assert metrics["counts"]["images_found"] == 120
    assert [r["threshold"] for r in metrics["threshold_sweep"]] == [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98]
    assert f"recommended : {metrics['recommended_threshold']:.2f}" in report
    assert set(metrics["timings_s"]) >= {"index", "extract", "train", "evaluate"}
    assert json.loads(paths.model_json.read_text())["threshold"] == pytest.approx(metrics["threshold"])


def test_rerun_replaces_prior_artifacts_lists_them_and_leaves_photos_untouched(
    tmp_path: Path, copy_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = OutputPaths.at(copy_root)
    # leftovers of the original recipe must go, and be listed
    (paths.models_dir / "temp").mkdir()
    (paths.models_dir / "temp" / "old.npy").write_bytes(b"x")
    legacy_cache = copy_root / "backend" / "recognizer" / "embeddings_cache.npy"
    legacy_cache.parent.mkdir(parents=True)
    np.save(legacy_cache, np.zeros(3))
    old_version = json.loads(paths.manifest.read_text())["model_version"]

    data = make_orl_tree(tmp_path / "data", n_students=4, n_images=6, first=20)
    before = tree_digest(data)
    code = retrain_model.main(["--data-dir", str(data), "--output-root", str(copy_root), "--quiet", *OFFLINE_ARGS])
    out = capsys.readouterr().out
    assert code == 0
    assert tree_digest(data) == before
    assert not (paths.models_dir / "temp").exists() and not legacy_cache.exists()
    removed_block = out.split("previous artifacts removed")[1]
    for gone in (paths.bundle, paths.X, paths.models_dir / "temp", legacy_cache):
        assert str(gone) in removed_block, gone
    assert json.loads(paths.manifest.read_text())["model_version"] != old_version
    assert np.load(paths.X).shape == (24, 128)
    assert len(np.load(paths.classes)) == 4
    # the summary's class-session line gives metrics.json's figures for the model's rule
    session = json.loads(paths.metrics_json.read_text())["session"]
    typical = next(r for r in session["model_rule_rates"] if r["frames"] == session["typical_frames"])
    line = next(x for x in out.splitlines() if x.startswith("  class sessions     :"))
    assert f"present in {typical['stranger_marks_present']:.1%} of {typical['frames']}-frame sessions" in line
    assert ("NOT met" in line) != session["target_met"]
    assert f"a student in class: {typical['enrolled_marked_present']:.1%}" in line


def test_missing_data_dir_fails_clearly_and_deletes_nothing(
    copy_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree_digest(copy_root)
    code = retrain_model.main(["--data-dir", str(copy_root / "nope"), "--output-root", str(copy_root), *OFFLINE_ARGS])
    err = capsys.readouterr().err
    assert code != 0
    assert "not found" in err and "nope" in err
    assert tree_digest(copy_root) == before


def test_empty_data_dir_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    assert (
        retrain_model.main(["--data-dir", str(tmp_path / "data"), "--output-root", str(tmp_path), *OFFLINE_ARGS]) != 0
    )
    assert "No student folders" in capsys.readouterr().err
    assert not (tmp_path / "backend" / "models" / "Classifier").exists()


def test_missing_weights_stop_before_anything_is_touched(
    tmp_path: Path, copy_root: Path, orl_tree: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.insightface cache
    before = tree_digest(copy_root)
    empty = tmp_path / "weights"
    empty.mkdir()
    code = retrain_model.main(
        [
            "--data-dir",
            str(orl_tree),
            "--output-root",
            str(copy_root),
            "--detector",
            "scrfd",
            "--embedder",
            "dlib",
            "--weights-dir",
            str(empty),
            "--no-download",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code != 0
    assert "det_10g.onnx" in err and str(empty) in err
    assert tree_digest(copy_root) == before


def test_dry_run_touches_nothing(copy_root: Path, orl_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = tree_digest(copy_root)
    argv = ["--data-dir", str(orl_tree), "--output-root", str(copy_root), "--dry-run", *OFFLINE_ARGS]
    assert retrain_model.main(argv) == 0
    out = capsys.readouterr().out
    assert "12 students, 120 photos" in out
    assert "nothing changed since model" in out  # the published model's own photos: a real run publishes nothing
    assert retrain_model.main([*argv, "--force"]) == 0
    assert str(OutputPaths.at(copy_root).bundle) in capsys.readouterr().out
    assert tree_digest(copy_root) == before


def test_only_one_usable_student_keeps_the_previous_model(
    tmp_path: Path, copy_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_orl_tree(tmp_path / "data", n_students=1, n_images=3)
    before = tree_digest(copy_root / "backend" / "models" / "Classifier")
    code = retrain_model.main(["--data-dir", str(data), "--output-root", str(copy_root), "--quiet", *OFFLINE_ARGS])
    assert code != 0
    assert "at least two" in capsys.readouterr().err
    assert tree_digest(copy_root / "backend" / "models" / "Classifier") == before


def test_run_emits_no_future_or_deprecation_warning_from_sklearn(tmp_path: Path) -> None:
    data = make_orl_tree(tmp_path / "data", n_students=3, n_images=4, first=30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = retrain_model.main(
            ["--data-dir", str(data), "--output-root", str(tmp_path / "out"), "--quiet", *OFFLINE_ARGS]
        )
    assert code == 0
    bad = [
        w
        for w in caught
        if issubclass(w.category, (FutureWarning, DeprecationWarning)) and "sklearn" in (w.filename or "")
    ]
    assert not bad, [str(w.message) for w in bad]


def test_threshold_option_is_published_and_the_summary_says_so(
    tmp_path: Path, copy_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--threshold is a contract: the backend must load exactly that number, and the admin
    must see that it replaced the recommended one."""
    from backend.recognizer.loader import load_model_files

    paths = OutputPaths.at(copy_root)
    data = make_orl_tree(tmp_path / "data", n_students=4, n_images=6, first=20)
    argv = ["--data-dir", str(data), "--output-root", str(copy_root), "--quiet", *OFFLINE_ARGS]
    capsys.readouterr()
    assert retrain_model.main([*argv, "--threshold", "0.93"]) == 0
    loaded = load_model_files(paths.classifier_dir, require_manifest=True)
    assert loaded.threshold == pytest.approx(0.93)
    assert loaded.metadata["threshold"] == pytest.approx(0.93)
    rec = loaded.metadata["recommended_threshold"]
    assert 0.0 <= rec <= 1.0 and rec != pytest.approx(0.93)
    out = capsys.readouterr().out
    assert f"threshold          : 0.93 (set with --threshold; recommended {rec:.2f})" in out

    assert retrain_model.main(argv) == 0  # no option: the recommended one, said once
    loaded = load_model_files(paths.classifier_dir, require_manifest=True)
    assert loaded.threshold == pytest.approx(loaded.metadata["recommended_threshold"])
    assert f"threshold          : {loaded.threshold:.2f} (recommended)\n" in capsys.readouterr().out


def _console_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """retrain_model.py in its own process on 3 ORL students x 4 photos, its output to pipes (not a terminal)."""
    tmp = tmp_path_factory.mktemp("console")
    data = make_orl_tree(tmp / "data", n_students=3, n_images=4)
    cmd = [sys.executable, "retrain_model.py", "--data-dir", str(data), "--output-root", str(tmp / "out")]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return run_process([*cmd, *OFFLINE_ARGS], cwd=ROOT, env=ENVIRON, timeout=300, **pipes)


# a process that needs nothing from the other tests: started in the background when the session starts
run_early("console_run", _console_run)


@pytest.fixture
def console_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    return early_result("console_run", tmp_path_factory)


def test_console_shows_stage_lines_not_library_internals_or_bar_redraws(
    console_run: subprocess.CompletedProcess[str],
) -> None:
    """Output to a log file (not a terminal): one line per stage, no progress-bar redraws, no INFO noise."""
    done = console_run
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert lines[0].startswith("Reading the student folders in") and lines[-1].startswith("Published model")
    assert any(line.startswith("Faces: 12 photos embedded") for line in lines)
    assert len(lines) <= 10 and "\r" not in done.stderr and "INFO" not in done.stderr
    assert "Retraining finished" in done.stdout
