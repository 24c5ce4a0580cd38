"""What a student folder or an output folder may hold cannot hang a run, crash it, or make it
touch anything outside its folders: special files, names that are not UTF-8, control
characters in folder names, a photo replaced mid-run, links in the output layout, a publish
that cannot write, another person's photos in a sub-folder.

Real ORL photos with the offline MTCNN + dlib models; links, pipes and odd names are made here.
"""

from __future__ import annotations

import builtins
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import OFFLINE_ARGS, ORL, ROOT, make_orl_tree, require_shared_data, tree_digest
from fakes import current_version, failing_replace, make_stage, publish_fake

import retrain_model
from backend.recognizer.hashing import sha256_bytes
from backend.recognizer.loader import FaceRecognizer, verify_model_dir
from backend.recognizer.paths import OutputPaths
from retraining import cache as cache_mod
from retraining import pipeline, publish
from retraining.dataset import ImageRecord, index_dataset
from retraining.errors import PublishError
from retraining.extract import extract_embeddings
from retraining.lock import RetrainLock
from retraining.subfolders import KIND, subfolder_findings

NON_UTF8_FILE = os.fsdecode(b"bad\xff.pgm")
NON_UTF8_FOLDER = os.fsdecode(b"STU005_B\xffd_Name")
NEWLINE_FOLDER = "STU006_New\nLine"


@pytest.fixture(scope="module")
def engines(mtcnn_detector, dlib_embedder):
    """The session's MTCNN + dlib (what BackendConfig(detector="mtcnn", embedder="dlib") builds)."""
    return mtcnn_detector, dlib_embedder


# --------------------------------------------------------------------------- special files and names


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_pipes_and_sockets_are_skipped_with_a_reason_never_opened(tmp_path: Path) -> None:
    tree = make_orl_tree(tmp_path / "processed", n_students=2, n_images=2)
    os.mkfifo(tree / "STU001_Person_1" / "y.jpg")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tree / "STU002_Person_2" / "s.png"))
        index = index_dataset(tree)
    reasons = {p.name: why for p, why in index.skipped}
    assert "named pipe (FIFO)" in reasons["y.jpg"] and "only regular files are read" in reasons["y.jpg"]
    assert "a socket" in reasons["s.png"]
    assert {r.path.name for r in index.records} == {"1.pgm", "2.pgm"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_photo_swapped_for_a_pipe_after_indexing_does_not_block_the_duplicate_check(tmp_path: Path) -> None:
    import threading

    from retraining.quality import duplicate_groups

    photo = tmp_path / "STU001_A" / "1.pgm"
    photo.parent.mkdir()
    os.mkfifo(photo)  # indexed as a photo a moment ago, a named pipe now
    found: list[object] = []
    worker = threading.Thread(target=lambda: found.append(duplicate_groups([ImageRecord(photo, "STU001", "A")])))
    worker.daemon = True
    worker.start()
    worker.join(5)
    if worker.is_alive():
        with open(photo, "wb"):  # unblock it, then fail
            pass
        pytest.fail("the duplicate check blocked on a named pipe")
    assert found == [[]]


def test_names_that_are_not_utf8_or_hold_control_characters(tmp_path: Path) -> None:
    tree = make_orl_tree(tmp_path / "processed", n_students=1, n_images=2)
    shutil.copy(ORL / "s1" / "3.pgm", tree / "STU001_Person_1" / NON_UTF8_FILE)
    for folder, person in ((NON_UTF8_FOLDER, "s2"), (NEWLINE_FOLDER, "s3")):
        (tree / folder).mkdir()
        shutil.copy(ORL / person / "1.pgm", tree / folder / "1.pgm")
    index = index_dataset(tree)
    assert NON_UTF8_FILE in {r.path.name for r in index.records}
    ids = {s.student_id: s.student_name for s in index.students}
    assert ids["STU005"] == "B\\xffd Name" and ids["STU006"] == "New Line"
    assert all(c.isprintable() for text in [*ids, *ids.values()] for c in text)
    renamed = {p.name: why for p, why in index.renamed}
    assert "rename the folder to 'STU006_New_Line'" in renamed[NEWLINE_FOLDER]
    assert "'B\\\\xffd Name'" in renamed[NON_UTF8_FOLDER]


# --------------------------------------------------------------------------- one read per photo


def test_a_photo_replaced_mid_run_never_puts_another_face_in_the_cache(
    tmp_path: Path, engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The photo is swapped for another person's right after it is first opened: the cache must
    hold, under each key, the embedding of the photo with exactly those bytes."""
    require_shared_data()
    detector, embedder = engines
    folder = tmp_path / "processed" / "STU001_Person_1"
    folder.mkdir(parents=True)
    photo = folder / "1.pgm"
    shutil.copy(ORL / "s1" / "1.pgm", photo)
    original = photo.read_bytes()
    intruder = tmp_path / "intruder.pgm"
    shutil.copy(ORL / "s7" / "1.pgm", intruder)
    reference = {
        sha256_bytes(p.read_bytes()): extract_embeddings(
            [ImageRecord(p, "STU001", "x")], detector, embedder, progress=False, workers=0
        ).embeddings[0]
        for p in (photo, intruder)
    }
    swapped: list[bool] = []
    real_open, real_os_open = builtins.open, os.open

    def swap_after(opened):  # the first open of the photo succeeds, then the file is replaced
        if not swapped:
            swapped.append(True)
            os.replace(intruder, photo)
        return opened

    def spy_open(file, *args, **kwargs):
        opened = real_open(file, *args, **kwargs)
        return swap_after(opened) if _same_file(file, photo) else opened

    def spy_os_open(file, *args, **kwargs):
        opened = real_os_open(file, *args, **kwargs)
        return swap_after(opened) if _same_file(file, photo) else opened

    fp = cache_mod.pipeline_fingerprint(detector, embedder)
    cache = cache_mod.EmbeddingCache(fp, embedder.dim)
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    try:
        extract_embeddings([ImageRecord(photo, "STU001", "x")], detector, embedder, progress=False, cache=cache)
    finally:
        monkeypatch.undo()
    assert swapped and photo.read_bytes() != original  # the photo really changed during the run
    assert cache.entries, "the photo was embedded and cached"
    for key, entry in cache.entries.items():
        assert key in reference and entry.vector is not None
        np.testing.assert_allclose(entry.vector, reference[key], atol=1e-5, err_msg="another face under this key")


def _same_file(file: object, photo: Path) -> bool:
    return isinstance(file, (str, os.PathLike)) and os.fspath(file) == os.fspath(photo)


# --------------------------------------------------------------------------- another person in a sub-folder


def test_a_subfolder_of_another_person_is_a_finding_and_the_student_own_is_not(tmp_path: Path, engines) -> None:
    detector, embedder = engines
    tree = make_orl_tree(tmp_path / "processed", n_students=4, n_images=6)
    extra = tree / "STU001_Person_1" / "extra"
    extra.mkdir()
    for i in range(1, 5):
        shutil.copy(ORL / "s9" / f"{i}.pgm", extra / f"x{i}.pgm")  # someone who is not enrolled
    own = tree / "STU002_Person_2" / "2024"
    own.mkdir()
    for i in range(7, 11):
        shutil.copy(ORL / "s2" / f"{i}.pgm", own / f"{i}.pgm")  # the student's own older photos
    index = index_dataset(tree)
    extraction = extract_embeddings(index.records, detector, embedder, progress=False, workers=0)
    findings = subfolder_findings(extraction, index)
    assert [f.path for f in findings] == [str(extra)]
    assert findings[0].kind == KIND
    assert "another person's photos in STU001_Person_1/extra" in findings[0].reason
    assert "Its 4 photos" in findings[0].reason and "other 6 photos of STU001" in findings[0].reason


# --------------------------------------------------------------------------- links in the output layout

LINKED_FOLDERS = [
    "backend/models/.staging",
    "backend/models/Classifier",
    "backend/models/versions",
    "backend/models/candidate",
    "backend/models/rejected",
    "backend/models",
    "models",
    "models/cache",
    "models/plots",
]


@pytest.mark.parametrize("linked", LINKED_FOLDERS)
def test_a_link_in_the_output_layout_is_refused_before_anything_is_written(
    tmp_path: Path, linked: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = make_orl_tree(tmp_path / "processed", n_students=3, n_images=3)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "precious").mkdir(parents=True)
    (elsewhere / "precious" / "keep.txt").write_text("not the suite's")
    (elsewhere / "keep.txt").write_text("not the suite's")
    root = tmp_path / "root"
    (root / linked).parent.mkdir(parents=True, exist_ok=True)
    if linked.startswith("models/"):
        (root / "models").mkdir(exist_ok=True)
    (root / linked).symlink_to(elsewhere, target_is_directory=True)
    before, outside = tree_digest(root), tree_digest(elsewhere)
    code = retrain_model.main(["--data-dir", str(tree), "--output-root", str(root), "--quiet", *OFFLINE_ARGS])
    err = capsys.readouterr().err
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and f"{root / linked} is a link" in errors[0] and "nothing was changed" in errors[0]
    assert tree_digest(elsewhere) == outside and tree_digest(root) == before


def test_recover_rollback_and_promote_never_delete_through_a_staging_link(tmp_path: Path) -> None:
    """recover, rollback and a run's begin_stage are called under the lock, and taking it refuses the link."""
    paths = OutputPaths.at(tmp_path / "out")
    publish_fake(paths, "v1")
    publish_fake(paths, "v2", seed=1)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "20260101T000000Z-abcdef").mkdir(parents=True)
    (elsewhere / "20260101T000000Z-abcdef" / "data.bin").write_bytes(b"x" * 100)
    paths.staging_dir.symlink_to(elsewhere, target_is_directory=True)
    outside = tree_digest(elsewhere)
    with pytest.raises(PublishError, match=r"\.staging is a link"):
        RetrainLock(paths, timeout=0).acquire()
    for command in ("--rollback", "--upgrade-model", "--promote"):
        assert retrain_model.main([command, "--output-root", str(paths.root)]) == 1
    with pytest.raises(PublishError, match="is a link"):
        pipeline.promote(pipeline.RunOptions(output_root=paths.root))
    assert tree_digest(elsewhere) == outside and current_version(paths) == "v2"
    assert not paths.lock_file.exists()  # refused before the lock file was created


# --------------------------------------------------------------------------- a publish that cannot write


def test_a_publish_that_cannot_write_models_is_undone(tmp_path: Path) -> None:
    """Nothing may be moved into models/ (read-only, or a full disk): the run fails, and the
    previous model stays in service with no journal left for a later command to finish unseen."""
    paths = OutputPaths.at(tmp_path / "out")
    publish_fake(paths, "v1")
    before = tree_digest(paths.models_dir)
    stage = make_stage(paths, "v2", seed=1)

    def into_or_out_of_models(src: Path, dst: Path) -> bool:
        return paths.models_dir in dst.parents or paths.models_dir in src.parents

    denied = PermissionError(13, "Permission denied", str(paths.models_dir))
    with failing_replace(into_or_out_of_models, denied), pytest.raises(PermissionError):
        publish.publish(paths, stage, verify=verify_model_dir)
    assert not (paths.backend_models / ".publish.json").exists()
    assert current_version(paths) == "v1" and tree_digest(paths.models_dir) == before
    assert FaceRecognizer.load(paths.root, require_manifest=True).model_version == "v1"
    assert publish.recover(paths) == []  # nothing half-done for the next command to complete
    assert current_version(paths) == "v1"
    assert [v.name for v in publish.list_versions(paths)] == []  # no empty archive left behind


def test_a_publish_the_next_command_finishes_is_named_in_its_error(tmp_path: Path) -> None:
    """A run killed mid-swap leaves the journal; --promote then finishes that publish and its ERROR
    line says which model it put in service, not only that no model is waiting."""
    paths = OutputPaths.at(tmp_path / "out")
    publish_fake(paths, "v1")
    stage = make_stage(paths, "v2", seed=1)

    class Killed(BaseException):
        pass

    with failing_replace(lambda src, dst: src == stage.classifier_dir, Killed), pytest.raises(Killed):
        publish.publish(paths, stage, verify=verify_model_dir)
    with pytest.raises(PublishError) as err:
        pipeline.promote(pipeline.RunOptions(output_root=paths.root))
    assert "No model is waiting" in str(err.value)
    assert "finished interrupted publish of model v2" in str(err.value) and "now in service" in str(err.value)
    assert current_version(paths) == "v2"


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path, float]:
    """ONE real run (a separate process, so a hang is a failure, not a stuck test run) over a tree
    with a named pipe, names that are not UTF-8, a newline in a folder name and an intruder sub-folder."""
    base = tmp_path_factory.mktemp("hostile")
    tree = make_orl_tree(base / "processed", n_students=4, n_images=5)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tree / "STU001_Person_1" / "y.jpg")
    shutil.copy(ORL / "s1" / "6.pgm", tree / "STU001_Person_1" / NON_UTF8_FILE)
    for folder, person in ((NON_UTF8_FOLDER, "s5"), (NEWLINE_FOLDER, "s6")):
        (tree / folder).mkdir()
        for i in range(1, 6):
            shutil.copy(ORL / person / f"{i}.pgm", tree / folder / f"{i}.pgm")
    extra = tree / "STU001_Person_1" / "extra"
    extra.mkdir()
    for i in range(1, 5):
        shutil.copy(ORL / "s9" / f"{i}.pgm", extra / f"x{i}.pgm")
    root = base / "root"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "retrain_model.py", "--data-dir", str(tree), "--output-root", str(root), "--quiet"]
        + [*OFFLINE_ARGS, "--no-photos-in-report"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done, root, time.perf_counter() - started


@pytest.mark.slow
def test_hostile_tree_run_finishes_with_exit_0_within_a_minute(hostile_run) -> None:
    done, _, seconds = hostile_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert seconds < 60, f"the run took {seconds:.0f} s"


@pytest.mark.slow
def test_hostile_tree_every_file_accounted_for_escaped(hostile_run) -> None:
    done, root, _ = hostile_run
    paths = OutputPaths.at(root)
    inputs = paths.inputs_csv.read_text(encoding="utf-8")  # valid UTF-8: the write did not fail
    rows = {line.split(",")[0].rsplit("/", 1)[-1]: line for line in inputs.splitlines()}
    assert ",used," in rows["bad\\xff.pgm"]
    if hasattr(os, "mkfifo"):
        assert ",skipped," in rows["y.jpg"] and "named pipe" in rows["y.jpg"]
    labels = paths.labels_csv.read_text(encoding="utf-8").splitlines()
    assert any(line.startswith("STU005,B\\xffd Name,") for line in labels)
    assert any(line.startswith("STU006,New Line,") for line in labels)
    report = paths.report_txt.read_text(encoding="utf-8")
    assert "rename the folder to 'STU006_New_Line'" in report
    assert paths.report_html.read_text(encoding="utf-8")


@pytest.mark.slow
def test_hostile_tree_intruder_subfolder_is_reported(hostile_run) -> None:
    _, root, _ = hostile_run
    paths = OutputPaths.at(root)
    report = paths.report_txt.read_text(encoding="utf-8")
    assert f"[{KIND}]" in report and "another person's photos in STU001_Person_1/extra" in report
    inputs = paths.inputs_csv.read_text(encoding="utf-8")
    assert "extra,used,a folder inside a student folder: its 4 photos used" in inputs


@pytest.mark.slow
def test_identify_refuses_an_array_over_the_pixel_limit(published_root: Path) -> None:
    from backend.recognizer import ImageError

    recognizer = FaceRecognizer.load(published_root, require_manifest=True)
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (9000, 9000, 3))  # 81 megapixels, no memory behind it
    with pytest.raises(ImageError, match="too large"):
        recognizer.identify(huge)
    frame = np.zeros((2000, 3000, 3), np.uint8)
    with pytest.raises(ImageError, match="below 5 megapixels"):
        recognizer.identify(frame, max_megapixels=5)
    assert recognizer.identify(frame) == []  # under the default limit: a blank frame, no face


@pytest.mark.parametrize("command", ["--upgrade-model", "--rollback", "--promote"])
def test_a_command_that_takes_the_lock_refuses_a_linked_output_folder_before_creating_the_lock_file(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Taking the lock creates the lock file first: a link to a folder elsewhere must stop it before that."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "backend").mkdir()
    (root / "backend" / "models").symlink_to(elsewhere, target_is_directory=True)
    assert retrain_model.main([command, "--output-root", str(root)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and f"{root / 'backend' / 'models'} is a link" in errors[0]
    assert list(elsewhere.iterdir()) == []  # no lock file (or anything else) written through the link


# --------------------------------------------------------------------------- hostile clips


def test_hostile_clips_in_student_folders_are_skipped_and_the_run_publishes(tmp_path: Path) -> None:
    """A renamed text file, an empty clip, a cut-off one and noise behind a video header, next to good
    photos: each is skipped with its reason in skipped_images.csv, and the run publishes from the photos."""
    import csv

    from clips import write_clip

    tree = make_orl_tree(tmp_path / "processed", n_students=4, n_images=6)
    good = write_clip(tmp_path / "good.mp4", [ORL / "s1" / f"{i}.pgm" for i in range(7, 10)], size=(320, 240))
    data = good.read_bytes()
    (tree / "STU001_Person_1" / "notes.mp4").write_text("a shopping list\n" * 40)
    (tree / "STU002_Person_2" / "empty.mov").write_bytes(b"")
    (tree / "STU003_Person_3" / "cut.mp4").write_bytes(data[: len(data) // 3])
    (tree / "STU004_Person_4" / "noise.mkv").write_bytes(data[:64] + os.urandom(20000))
    before = tree_digest(tree)
    out = tmp_path / "out"
    assert retrain_model.main(["--data-dir", str(tree), "--output-root", str(out), "--quiet", *OFFLINE_ARGS]) == 0
    with open(out / "models" / "skipped_images.csv", newline="", encoding="utf-8") as fh:
        skipped = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(fh)}
    assert "not a video at all" in skipped["notes.mp4"] and "empty file" in skipped["empty.mov"]
    assert "damaged or cut off" in skipped["cut.mp4"] and skipped["noise.mkv"]
    assert not any(reason.startswith("unexpected error") for reason in skipped.values())
    assert tree_digest(tree) == before  # the photos and clips are untouched
    assert len(FaceRecognizer.load(out, device="cpu").model_metadata.students) == 4
