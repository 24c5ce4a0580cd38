"""Indexing the student photo folders: names, ids, which files count, what is skipped and why."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import make_orl_tree, tree_digest
from PIL import Image

from backend.recognizer.images import decode_image
from retraining.dataset import index_dataset, parse_folder_name, write_labels_csv
from retraining.errors import DatasetError


def _photo(path: Path, seed: int = 0, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


# --------------------------------------------------------------------------- folder names


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("STU001_Alice_Smith", ("STU001", "Alice Smith", True)),
        ("STU042_Bob", ("STU042", "Bob", True)),
        ("stu7_jean_luc_picard", ("stu7", "jean luc picard", True)),
        ("ST2023001_Mary_Ann_O'Neil", ("ST2023001", "Mary Ann O'Neil", True)),
        ("STU003_Zoë_Ñúñez", ("STU003", "Zoë Ñúñez", True)),
        ("Alice_Smith", ("Alice_Smith", "Alice Smith", False)),
        ("Bob Jones", ("Bob Jones", "Bob Jones", False)),
        ("STU001", ("STU001", "STU001", False)),
        ("STU001_", ("STU001_", "STU001", False)),
        ("12345_Carl", ("12345_Carl", "12345 Carl", False)),
        ("李雷", ("李雷", "李雷", False)),
    ],
)
def test_parse_folder_name(folder: str, expected: tuple[str, str, bool]) -> None:
    assert parse_folder_name(folder) == expected


# --------------------------------------------------------------------------- a messy real-world tree


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    data = tmp_path / "processed"
    alice = data / "STU001_Alice_Smith"
    for i, name in enumerate(["a.jpg", "b.JPG", "c.Jpeg", "d.PNG", "e.bmp", "f.WEBP", "g.tif", "h.TIFF"]):
        _photo(
            alice / name,
            i,
            fmt={
                "jpg": "JPEG",
                "jpeg": "JPEG",
                "png": "PNG",
                "bmp": "BMP",
                "webp": "WEBP",
                "tif": "TIFF",
                "tiff": "TIFF",
            }[name.rsplit(".", 1)[1].lower()],
        )
    _photo(alice / "2024" / "i.jpg", 20)  # photos in a sub-folder count
    (alice / "notes.txt").write_text("not a photo")
    (alice / "scan.pdf").write_bytes(b"%PDF-1.4")
    (alice / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (alice / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (alice / "desktop.ini").write_text("[.ShellClassInfo]")
    _photo(alice / ".hidden.jpg", 21, fmt="JPEG")
    _photo(alice / ".git" / "secret.jpg", 22)  # hidden folders are not entered
    (alice / "album.jpg").mkdir()  # a folder named like a photo
    _photo(alice / "album.jpg" / "inside.jpg", 23)

    bob = data / "Bob Jones"  # does not follow STUxxx_Name
    _photo(bob / "1.png", 30)
    _photo(bob / "2.png", 31)

    zoe = data / "STU003_Zoë_Ñúñez"  # non-ASCII folder and file names
    _photo(zoe / "фото_1.jpg", 40, fmt="JPEG")
    _photo(zoe / "写真 2.png", 41)

    links = data / "STU004_Link_Tester"
    _photo(links / "real.jpg", 50)
    os.symlink("real.jpg", links / "alias.jpg")  # link inside the data folder: fine
    os.symlink("loop.jpg", links / "loop.jpg")  # link to itself
    os.symlink("pong.jpg", links / "ping.jpg")  # two links pointing at each other
    os.symlink("ping.jpg", links / "pong.jpg")
    os.symlink(links / "gone.jpg", links / "dangling.jpg")  # target missing
    outside = _photo(tmp_path / "elsewhere" / "private.jpg", 51)
    os.symlink(outside, links / "outside.jpg")  # link leaving the data folder
    os.symlink("..", links / "up")  # folder link making a loop
    os.symlink(tmp_path / "elsewhere", links / "elsewhere_dir")  # folder link leaving the data folder

    (data / "STU005_Empty").mkdir()  # a student with no photos yet
    (data / ".DS_Store").write_bytes(b"junk")
    (data / "Thumbs.db").write_bytes(b"junk")
    (data / "readme.txt").write_text("put photos in sub-folders")
    _photo(data / "loose.jpg", 60)
    (data / ".cache").mkdir()
    return data


def test_index_messy_tree(messy: Path) -> None:
    before = tree_digest(messy)
    index = index_dataset(messy)
    assert tree_digest(messy) == before  # read-only

    by_id = {s.student_id: s for s in index.students}
    assert [s.folder for s in index.students] == sorted(s.folder for s in index.students)
    assert set(by_id) == {"STU001", "Bob Jones", "STU003", "STU004", "STU005"}
    assert by_id["STU001"].student_name == "Alice Smith" and by_id["STU001"].follows_pattern
    assert by_id["STU003"].student_name == "Zoë Ñúñez"
    assert by_id["Bob Jones"].student_name == "Bob Jones" and not by_id["Bob Jones"].follows_pattern
    assert index.nonconforming_folders == ["Bob Jones"]
    assert index.names()["STU004"] == "Link Tester"

    photos = {str(r.path.relative_to(messy)) for r in index.records}
    alice = {p for p in photos if p.startswith("STU001_Alice_Smith/")}
    assert alice == {
        f"STU001_Alice_Smith/{n}"
        for n in ["a.jpg", "b.JPG", "c.Jpeg", "d.PNG", "e.bmp", "f.WEBP", "g.tif", "h.TIFF", "2024/i.jpg"]
    }
    assert by_id["STU001"].num_images == 9
    assert by_id["Bob Jones"].num_images == 2
    assert by_id["STU003"].num_images == 2
    assert {"STU003_Zoë_Ñúñez/фото_1.jpg", "STU003_Zoë_Ñúñez/写真 2.png"} <= photos
    assert by_id["STU004"].num_images == 2  # real.jpg + alias.jpg (a link within the data folder)
    assert {"STU004_Link_Tester/real.jpg", "STU004_Link_Tester/alias.jpg"} <= photos
    assert by_id["STU005"].num_images == 0
    assert len(index.records) == 15
    for rec in index.records:
        assert rec.student_name == index.names()[rec.student_id]
        assert decode_image(rec.path).shape == (48, 40, 3)  # every record is a real, readable photo

    ignored = {str(p.relative_to(messy)) for p in index.ignored_files}
    for junk in ["notes.txt", "scan.pdf", ".DS_Store", "Thumbs.db", "desktop.ini", ".hidden.jpg"]:
        assert f"STU001_Alice_Smith/{junk}" in ignored, junk
    assert {".DS_Store", "Thumbs.db", ".cache"} <= ignored
    assert not any("secret.jpg" in p or "inside.jpg" in p for p in photos | ignored)
    assert {str(p.relative_to(messy)) for p in index.loose_files} == {"readme.txt", "loose.jpg"}

    reasons = {str(p.relative_to(messy)): why for p, why in index.skipped}
    assert "folder named like a photo" in reasons["STU001_Alice_Smith/album.jpg"]
    for loop in ["loop.jpg", "ping.jpg", "pong.jpg", "dangling.jpg"]:
        assert "cannot follow the link" in reasons[f"STU004_Link_Tester/{loop}"], loop
    assert "outside the data folder" in reasons["STU004_Link_Tester/outside.jpg"]
    assert "not followed" in reasons["STU004_Link_Tester/up"]
    assert "not followed" in reasons["STU004_Link_Tester/elsewhere_dir"]
    assert not any("private.jpg" in p for p in photos)
    # every skipped entry has a non-empty reason a person can read
    assert all(why.strip() for _, why in index.skipped)


def test_duplicate_student_id_stops_the_index(tmp_path: Path) -> None:
    _photo(tmp_path / "STU001_Alice" / "1.jpg")
    _photo(tmp_path / "STU001_Alicia" / "1.jpg", 1)
    with pytest.raises(DatasetError, match="same student id") as info:
        index_dataset(tmp_path)
    assert "'STU001_Alice'" in str(info.value) and "'STU001_Alicia'" in str(info.value)


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found") as info:
        index_dataset(tmp_path / "nope")
    assert "STU001_Alice_Smith" in str(info.value)  # says how to lay it out
    assert not (tmp_path / "nope").exists()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(DatasetError):
        index_dataset(a_file)


def test_empty_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="No student folders"):
        index_dataset(tmp_path)
    _photo(tmp_path / "loose.jpg")  # photos but no student folders
    (tmp_path / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DatasetError, match="No student folders"):
        index_dataset(tmp_path)


def test_student_folders_without_photos(tmp_path: Path) -> None:
    (tmp_path / "STU001_Alice").mkdir()
    (tmp_path / "STU002_Bob").mkdir()
    (tmp_path / "STU002_Bob" / "notes.txt").write_text("x")
    (tmp_path / "STU002_Bob" / "Thumbs.db").write_bytes(b"x")
    with pytest.raises(DatasetError, match="no photos"):
        index_dataset(tmp_path)


def test_index_real_orl_tree(tmp_path: Path) -> None:
    data = make_orl_tree(tmp_path / "processed", n_students=3, n_images=4)
    index = index_dataset(data)
    assert [(s.student_id, s.student_name, s.num_images) for s in index.students] == [
        ("STU001", "Person 1", 4),
        ("STU002", "Person 2", 4),
        ("STU003", "Person 3", 4),
    ]
    assert len(index.records) == 12 and not index.skipped and not index.ignored_files
    assert all(r.path.suffix == ".pgm" for r in index.records)


# --------------------------------------------------------------------------- labels.csv


def test_write_labels_csv(messy: Path, tmp_path: Path) -> None:
    index = index_dataset(messy)
    out = tmp_path / "labels.csv"
    write_labels_csv(out, index)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["student_id", "student_name", "num_images"]
    assert rows[1:] == [[s.student_id, s.student_name, str(s.num_images)] for s in index.students]
    assert ["STU003", "Zoë Ñúñez", "2"] in rows
    assert ["Bob Jones", "Bob Jones", "2"] in rows
    assert ["STU001", "Alice Smith", "9"] in rows

    write_labels_csv(out, index, embedded_counts={"STU001": 7, "Bob Jones": 2})
    with open(out, newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["student_id", "student_name", "num_images", "num_embedded"]
    got = {r["student_id"]: (r["num_images"], r["num_embedded"]) for r in table}
    assert got["STU001"] == ("9", "7") and got["Bob Jones"] == ("2", "2") and got["STU005"] == ("0", "0")
    assert len(table) == len(index.students)


def test_write_labels_csv_quotes_commas(tmp_path: Path) -> None:
    _photo(tmp_path / "data" / "STU009_Smith,_John" / "1.jpg")
    index = index_dataset(tmp_path / "data")
    out = tmp_path / "labels.csv"
    write_labels_csv(out, index)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[1] == ["STU009", "Smith, John", "1"]


def test_no_photos_error_counts_what_was_ignored_per_type(tmp_path: Path) -> None:
    folder = tmp_path / "STU001_Alice"
    folder.mkdir()
    for i in range(3):
        (folder / f"clip{i}.WMV").write_bytes(b"x")  # a video type that is not read
    (folder / "notes.txt").write_text("x")
    (folder / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DatasetError) as err:
        index_dataset(tmp_path)
    message = str(err.value)
    assert "3 .wmv files, 1 .txt file" in message and ".heic" in message and ".DS_Store" not in message
    assert ".mov" in message  # the accepted video types are listed too


def test_phone_photo_types_are_indexed_in_any_case(tmp_path: Path) -> None:
    folder = tmp_path / "STU001_Alice"
    folder.mkdir()
    names = ["a.HEIC", "b.heif", "c.avif", "d.GIF", "e.jfif", "f.JPG"]
    for name in names:
        (folder / name).write_bytes(b"x")
    index = index_dataset(tmp_path)
    assert sorted(r.path.name for r in index.records) == sorted(names) and not index.ignored_files
