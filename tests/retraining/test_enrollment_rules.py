"""Enrollment is exactly what the folders say: one id per student folder, output never inside the
photos, spreadsheet-safe CSVs, and a path too long to open skipped with a reason (never a crash)."""

from __future__ import annotations

import csv
import errno
import os
import shutil
from pathlib import Path

import pytest
from conftest import OFFLINE_ARGS, ORL, make_orl_tree, require_shared_data, tree_digest

import retrain_model
from backend.recognizer.paths import OutputPaths
from retraining.dataset import MAX_PATH_BYTES, _unreachable, index_dataset, refuse_overlap, write_labels_csv
from retraining.errors import DatasetError
from retraining.files import csv_safe

EXIT_ERROR = 1
EXIT_CRASH = 70


def _student(data: Path, folder: str, person: int, n: int = 3) -> Path:
    """A student folder ``data/folder`` holding ``n`` ORL photos of person ``s<person>``."""
    require_shared_data()
    (data / folder).mkdir(parents=True)
    for i in range(1, n + 1):
        shutil.copyfile(ORL / f"s{person}" / f"{i}.pgm", data / folder / f"{i}.pgm")
    return data / folder


def _main(capsys: pytest.CaptureFixture[str], data: Path | None, root: Path, *extra: str) -> tuple[int, list[str]]:
    """Run the CLI in-process; the exit code and the ``ERROR:`` lines of stderr."""
    argv = ["--output-root", str(root), "--quiet", *OFFLINE_ARGS, *extra]
    if data is not None:
        argv += ["--data-dir", str(data)]
    code = retrain_model.main(argv)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("ERROR:")]


def _deep_folder(parent: Path, min_bytes: int = MAX_PATH_BYTES + 400) -> tuple[Path, Path]:
    """Nest folders under ``parent`` (through open folder handles, as Linux allows) until the path of the
    innermost one is longer than ``min_bytes``; a photo goes at the bottom. Returns (first folder, photo)."""
    require_shared_data()
    photo = (ORL / "s1" / "1.pgm").read_bytes()
    fd = os.open(parent, os.O_RDONLY)
    names: list[str] = []
    try:
        while len(os.fsencode(str(parent.joinpath(*names)))) <= min_bytes:
            name = f"d{len(names):02d}_" + "x" * 190
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
            names.append(name)
        out = os.open("deep.pgm", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, photo)
        os.close(out)
    finally:
        os.close(fd)
    return parent / names[0], parent.joinpath(*names, "deep.pgm")


# --------------------------------------------------------------------------- one id per folder

DUPLICATES = {
    "same_id_two_students": ("STU001_Alice_Smith", "STU001_Bob_Jones"),
    "tab_and_underscore_clean_to_one_id": ("Carol\tSmith", "Carol_Smith"),
    "ids_differ_only_in_case": ("STU001_Alice_Smith", "stu001_Bob_Jones"),
}
#: How each folder is named in the error (a tab shown as \t: the message stays one line).
SHOWN = {"Carol\tSmith": "'Carol\\tSmith'"}


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry_run"])
@pytest.mark.parametrize("pair", list(DUPLICATES.values()), ids=list(DUPLICATES))
def test_two_folders_with_one_id_stop_the_run_before_any_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: tuple[str, str], dry_run: bool
) -> None:
    data, root = tmp_path / "data", tmp_path / "root"
    for k, folder in enumerate([*pair, "STU003_Person_3", "STU004_Person_4"], start=1):
        _student(data, folder, k)
    before = tree_digest(data)

    code, errors = _main(capsys, data, root, *(["--dry-run"] if dry_run else []))

    assert code == EXIT_ERROR
    assert len(errors) == 1, errors
    for folder in pair:
        assert SHOWN.get(folder, f"'{folder}'") in errors[0]
    assert "same student id" in errors[0] and "Rename one folder" in errors[0]
    assert not OutputPaths.at(root).classifier_dir.exists()
    assert not root.exists() or not any(root.rglob("*")), sorted(root.rglob("*"))  # no lock, no report, nothing
    assert tree_digest(data) == before


def test_distinct_ids_that_share_a_prefix_are_two_students(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for k, folder in enumerate(["STU001_Alice", "STU0011_Bob", "STU01_Carol", "s1", "s1_x"], start=1):
        _student(data, folder, k, n=1)
    index = index_dataset(data)
    assert sorted(s.student_id for s in index.students) == ["STU001", "STU0011", "STU01", "s1", "s1_x"]
    assert not index.skipped


def test_every_clash_is_named_in_one_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for k, folder in enumerate(["STU001_A", "STU001_B", "STU002_C", "stu002_D", "STU003_E"], start=1):
        _student(data, folder, k, n=1)
    with pytest.raises(DatasetError) as info:
        index_dataset(data)
    message = str(info.value)
    assert "\n" not in message
    assert all(f"'{f}'" in message for f in ["STU001_A", "STU001_B", "STU002_C", "stu002_D"])
    assert "STU003_E" not in message
    assert "differ only in upper/lower case" in message  # said for STU002/stu002 only
    assert message.count("differ only in upper/lower case") == 1


# --------------------------------------------------------------------------- output root vs photo folder

#: (data folder, output root), relative to tmp_path: each would make the run write into the photos,
#: or delete them with its own folders.
OVERLAPS = {
    "data_is_output_root": ("x", "x"),
    "output_root_inside_data": ("x", "x/out"),
    "data_holds_backend_of_output_root": ("out/backend", "out"),
    "data_inside_models": ("out/models/photos", "out"),
    "data_inside_backend_models": ("out/backend/models/photos", "out"),
    "data_is_models": ("out/models", "out"),
}


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry_run"])
@pytest.mark.parametrize(("data_rel", "root_rel"), list(OVERLAPS.values()), ids=list(OVERLAPS))
def test_output_root_overlapping_the_photos_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data_rel: str, root_rel: str, dry_run: bool
) -> None:
    data, root = tmp_path / data_rel, tmp_path / root_rel
    make_orl_tree(data, n_students=3, n_images=2)
    before = tree_digest(tmp_path)

    code, errors = _main(capsys, data, root, *(["--dry-run"] if dry_run else []))

    assert code == EXIT_ERROR
    assert len(errors) == 1, errors
    assert str(data) in errors[0] and "--output-root" in errors[0] and "Nothing was changed" in errors[0]
    assert tree_digest(tmp_path) == before
    assert not OutputPaths.at(root).classifier_dir.exists()


def test_output_root_reached_through_a_link_is_refused(tmp_path: Path) -> None:
    data = make_orl_tree(tmp_path / "photos", n_students=2, n_images=1)
    (tmp_path / "alias").symlink_to(data, target_is_directory=True)
    with pytest.raises(DatasetError, match="output root"):
        refuse_overlap(data, OutputPaths.at(tmp_path / "alias"))


@pytest.mark.parametrize(
    "data_rel", [None, "root/data", "elsewhere/processed"], ids=["default_layout", "data_in_root", "apart"]
)
def test_photos_beside_the_written_folders_are_fine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data_rel: str | None
) -> None:
    root = tmp_path / "root"
    data = root / "backend" / "dataset" / "processed" if data_rel is None else tmp_path / data_rel
    make_orl_tree(data, n_students=3, n_images=2)
    refuse_overlap(data, OutputPaths.at(root))  # raises nothing

    code, errors = _main(capsys, None if data_rel is None else data, root, "--dry-run")
    assert (code, errors) == (0, [])


# --------------------------------------------------------------------------- CSV cells a spreadsheet would run


def test_csv_safe_escapes_formula_text_and_keeps_numbers() -> None:
    for cell in ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\t=1", "\r=1"]:
        assert csv_safe(cell) == "'" + cell
    for cell in ["STU001", "Alice Smith", "a=b", "", " =1"]:
        assert csv_safe(cell) == cell
    assert csv_safe(-3) == -3 and csv_safe(-0.5) == -0.5


def test_labels_csv_escapes_a_formula_folder_name(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for k, folder in enumerate(["=1+1", "@SUM(A1)", "STU003_-Minus", "STU004_Plain"], start=1):
        _student(data, folder, k, n=1)
    out = tmp_path / "labels.csv"
    write_labels_csv(out, index_dataset(data), embedded_counts={"=1+1": 1})
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["student_id", "student_name", "num_images", "num_embedded"]
    assert ["'=1+1", "'=1+1", "1", "1"] in rows
    assert ["'@SUM(A1)", "'@SUM(A1)", "1", "0"] in rows
    assert ["STU003", "'-Minus", "1", "0"] in rows
    assert ["STU004", "Plain", "1", "0"] in rows
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


# --------------------------------------------------------------------------- paths too long to open


def test_a_path_too_long_to_open_is_skipped_with_a_reason(tmp_path: Path) -> None:
    data = make_orl_tree(tmp_path / "data", n_students=3, n_images=2)
    first, photo = _deep_folder(data / "STU001_Person_1")
    index = index_dataset(data)

    reasons = dict(index.skipped)
    ((where, why),) = [(p, r) for p, r in reasons.items() if "too long" in r]
    assert first in where.parents or where == first  # the first folder (or file) beyond the limit
    assert len(os.fsencode(str(where))) > MAX_PATH_BYTES
    assert "shorten" in why
    assert photo not in {r.path for r in index.records}
    assert [s.num_images for s in index.students] == [2, 2, 2]


def test_a_name_too_long_for_the_file_system_is_reported_not_raised(tmp_path: Path) -> None:
    why = _unreachable(tmp_path / ("n" * 300))  # Linux: ENAMETOOLONG (a name is at most 255 bytes)
    if why is None:
        pytest.skip(f"this file system accepts 300-byte names (errno {errno.ENAMETOOLONG} not raised)")
    assert "too long" in why


def test_dry_run_with_a_deep_folder_does_not_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_orl_tree(tmp_path / "data", n_students=3, n_images=2)
    _deep_folder(data / "STU002_Person_2")
    code, errors = _main(capsys, data, tmp_path / "root", "--dry-run")
    assert (code, errors) == (0, [])


@pytest.mark.slow
def test_real_run_skips_the_deep_folder_and_escapes_every_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One real run (MTCNN + dlib): a path too long to open and a student folder named ``=1+1``
    end in the CSVs as a skipped entry and as escaped text. The data folder is given relative
    (``@data``), so every path cell in inputs.csv and skipped_images.csv starts with ``@``."""
    monkeypatch.chdir(tmp_path)
    data = make_orl_tree(tmp_path / "@data", n_students=3, n_images=10)
    _student(data, "=1+1", 4, n=10)
    first, _ = _deep_folder(data / "STU001_Person_1")
    root = tmp_path / "root"

    code, errors = _main(capsys, Path("@data"), root)

    assert code != EXIT_CRASH, errors
    assert (code, errors) == (0, [])
    paths = OutputPaths.at(root)
    with open(paths.inputs_csv, newline="", encoding="utf-8") as fh:
        inputs = list(csv.DictReader(fh))
    assert inputs and all(row["path"].startswith("'@data") for row in inputs)
    deep = [row for row in inputs if row["status"] == "skipped" and "too long" in row["reason"]]
    assert len(deep) == 1 and deep[0]["path"].startswith("'@data/STU001_Person_1/" + first.name)
    with open(paths.skipped_csv, newline="", encoding="utf-8") as fh:
        skipped = list(csv.DictReader(fh))
    assert [row["path"] for row in skipped if "too long" in row["reason"]] == [deep[0]["path"]]
    assert all(row["path"].startswith("'@data") for row in skipped)
    with open(paths.labels_csv, newline="", encoding="utf-8") as fh:
        labels = {row["student_id"]: row for row in csv.DictReader(fh)}
    assert labels["'=1+1"]["student_name"] == "'=1+1" and labels["'=1+1"]["num_images"] == "10"
    assert labels["STU001"]["num_images"] == "10"  # the photo at the bottom of the deep folder is not counted
