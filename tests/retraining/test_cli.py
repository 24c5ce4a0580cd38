"""retrain_model.py's command line: a --help a newcomer can read, one default per option, modes one
at a time, --demo's folders, --dry-run's weight check, and the report tables around the threshold in use."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_orl_tree
from fakes import DIM

import retrain_model
from backend.recognizer.paths import PROJECT_ROOT
from backend.recognizer.weights import WEIGHTS_ENV
from retraining.dataset import index_dataset
from retraining.evaluate import THRESHOLDS, evaluate
from retraining.plots import plotted_range, threshold_png
from retraining.presentation.text_report import classification_lines, confusion_lines, open_set_lines, sweep_table
from retraining.presentation.words import folders_to_rename, natural_key
from retraining.verdict import stranger_verdict

#: Every option of earlier releases: scripts and the double-click wrappers pass them.
OPTIONS_OF_EARLIER_RELEASES = (
    "--data-dir --output-root --threshold --test-size --max-far --seed --batch-size --device --embedder-runtime "
    "--detector --detector-model --embedder --weights-dir --no-cache --workers --keep-versions --min-accuracy "
    "--max-regression --force --review --promote --wait --dry-run --rollback --erase --keep-unpublished "
    "--upgrade-model --no-download --quiet --open-report --no-open --no-photos-in-report --verbose --help"
).split()
HELP_MAX_LINES = 60


def _help(monkeypatch: pytest.MonkeyPatch, columns: int = 80) -> str:  # a terminal's usual width
    monkeypatch.setenv("COLUMNS", str(columns))
    return retrain_model.build_parser().format_help()


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("ERROR:")]


def test_help_fits_a_screen_in_groups_with_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _help(monkeypatch)
    lines = text.splitlines()
    assert len(lines) <= HELP_MAX_LINES, f"{len(lines)} lines:\n{text}"
    assert max(len(line) for line in lines) <= 80
    titles = [line for line in lines if line and not line.startswith(" ") and line.endswith(":")]
    for title in ("what to train on", "face models", "quality gate", "modes (one at a time", "output and messages"):
        assert any(t.startswith(title) for t in titles), titles
    examples = text.split("\nexamples:\n")[1]
    runs = [line.split()[2:] for line in examples.splitlines() if line.startswith("  python retrain_model.py")]
    assert any(not r[0].startswith("-") for r in runs)  # a normal run: no option
    assert any(r[:1] == ["--review"] for r in runs) and "--promote" in examples
    assert any(r[:1] == ["--erase"] for r in runs)


def test_each_option_shows_one_default_and_every_old_option_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _help(monkeypatch)
    entries = re.split(r"\n(?=  -)", text.split("\n\n", 2)[2])  # one entry per option, continuation lines included
    for entry in entries:
        assert entry.count("default") <= 1, entry
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: 0.2)" in text and "(default: scrfd; mtcnn with --demo)" in text
    parser = retrain_model.build_parser()
    known = {opt for action in parser._actions for opt in action.option_strings}
    assert set(OPTIONS_OF_EARLIER_RELEASES) | {"--demo"} <= known
    args = parser.parse_args(["--erase", "STU001", "--erase", "STU002_Bob_Jones", "--keep-unpublished", "--no-open"])
    assert args.erase == ["STU001", "STU002_Bob_Jones"] and args.keep_unpublished and args.open_report is False


@pytest.mark.parametrize(
    "argv",
    [["--review", "--promote"], ["--dry-run", "--erase", "STU001"], ["--rollback", "--upgrade-model"]],
    ids=["review_promote", "dry_run_erase", "rollback_upgrade"],
)
def test_modes_are_one_at_a_time(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        retrain_model.main(argv)
    assert stopped.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_demo_folders_come_from_the_program_not_the_current_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert retrain_model.demo_paths() == (PROJECT_ROOT / "demo" / "photos", PROJECT_ROOT / "demo" / "output")
    with pytest.raises(SystemExit) as stopped:
        retrain_model.main(["--demo", "--data-dir", "elsewhere"])
    assert stopped.value.code == 2 and "--demo" in capsys.readouterr().err


def test_demo_without_its_photos_says_so_in_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(retrain_model, "DEMO_ROOT", tmp_path / "demo")
    monkeypatch.chdir(tmp_path)
    assert retrain_model.main(["--demo"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("ERROR: The demo photos are missing") and str(tmp_path / "demo" / "photos") in err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    "models", [[], ["--detector", "mtcnn", "--embedder", "facenet"]], ids=["scrfd_facenet", "mtcnn_facenet"]
)
def test_dry_run_stops_on_missing_weights_with_the_error_of_the_real_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], models: list[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.insightface
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no FaceNet checkpoint
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    data = make_orl_tree(tmp_path / "data", n_students=2, n_images=1)
    argv = ["--data-dir", str(data), "--output-root", str(tmp_path / "root"), "--no-download", "--quiet", *models]
    assert retrain_model.main(argv) == 1
    real = _errors(capsys)
    assert retrain_model.main([*argv, "--dry-run"]) == 1
    dry = _errors(capsys)
    assert len(real) == 1 and dry == real
    assert ("det_10g.onnx" if not models else "vggface2.pt") in real[0]


def _fake_evaluation(labels: list[str], seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(labels), DIM))
    X = np.concatenate([c + 0.3 * rng.standard_normal((8, DIM)) for c in centres]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return evaluate(X, np.repeat(labels, 8), seed=seed)


def test_the_threshold_in_use_has_a_marked_row_and_is_on_the_plot(tmp_path: Path) -> None:
    ev = _fake_evaluation([f"STU{i:03d}" for i in range(6)])
    in_use = 0.38
    assert all(abs(t - in_use) > 1e-9 for t in THRESHOLDS)
    known = sweep_table(ev, in_use)
    (row,) = [line for line in known if line.strip().startswith("0.38")]
    assert "<- in use" in row
    assert [line.split()[0] for line in known[1:]] == sorted(line.split()[0] for line in known[1:])
    strangers = open_set_lines(ev, stranger_verdict(ev, in_use, []))
    (row,) = [line for line in strangers if line.strip().startswith("0.38")]
    assert "<- in use" in row
    assert sum("<- in use" in line for line in [*known, *strangers]) == 2
    low, high = plotted_range(ev, in_use)
    assert low < in_use < high and high >= THRESHOLDS[-1]
    assert threshold_png(tmp_path / "t.png", ev, in_use) is not None


def test_student_tables_sort_numbers_by_value(tmp_path: Path) -> None:
    assert sorted(["s10", "s2", "s1", "STU010", "STU9", "s11"], key=natural_key) == [
        "s1",
        "s2",
        "s10",
        "s11",
        "STU9",
        "STU010",
    ]
    labels = [f"s{i}" for i in range(1, 13)]
    ev = _fake_evaluation(labels)
    header = confusion_lines(ev)[1].split()
    assert header == labels
    rows = [line.split()[0] for line in classification_lines(ev)[2 : 2 + len(labels)]]
    assert rows == labels


def test_folders_to_rename_are_listed_in_natural_order(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for folder in ("s10", "STU001_Ann_Lee", "s2", "s1"):
        (data / folder).mkdir(parents=True)
        (data / folder / "1.jpg").write_bytes(b"x")
    rename = folders_to_rename(index_dataset(data))
    assert [folder for folder, _ in rename] == ["s1", "s2", "s10"]
    assert all("STU001_First_Last" in why for _, why in rename)
