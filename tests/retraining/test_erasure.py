"""``--erase``: a student who leaves is gone from everything under the output root, and stays gone.

The reproduction of a real request: 10 ORL students are leaver_enrolled, a ``--review`` candidate
waits, a rejected model is kept, STU004's folder is deleted, the suite retrains (keeping the
unpublished models, as a school that asks for it would), then ``--erase STU004``. Every file
under the output root is then searched for his face: arrays (in .npy, .npz and the seed's
pickles) for a vector within cosine 0.99 of one of his original embeddings, every file for
his id and name, and every thumbnail of every report page, embedded, for his face. The same
search finds him before the erasure, so it can fail.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image, ImageFilter

import retrain_model
from backend.recognizer.faces import photo_face_crops
from backend.recognizer.paths import OutputPaths
from tests.conftest import OFFLINE_ARGS, ROOT, make_orl_tree

LEAVER, LEAVER_NAME, LEAVER_FOLDER = "STU004", "Person 4", "STU004_Person_4"
N_STUDENTS = 10


def run(data: Path, root: Path, *extra: str) -> int:
    return retrain_model.main(["--data-dir", str(data), "--output-root", str(root), "--quiet", *OFFLINE_ARGS, *extra])


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def arrays_in(obj: object, seen: set[int] | None = None) -> list[np.ndarray]:
    """Every numpy array inside a loaded pickle (estimators' attributes, dicts, lists)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, dict):
        return [a for v in obj.values() for a in arrays_in(v, seen)]
    if isinstance(obj, (list, tuple)):
        return [a for v in obj for a in arrays_in(v, seen)]
    if hasattr(obj, "__dict__"):
        return arrays_in(vars(obj), seen)
    return []


def stored_arrays(path: Path) -> list[np.ndarray]:
    if path.suffix == ".npy":
        return [np.load(path, allow_pickle=False)]
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return [npz[k] for k in npz.files]
    if path.suffix == ".pkl":  # our own test artifacts: the test may unpickle them, the suite never does
        return arrays_in(joblib.load(path))
    return []


def thumbnails(html: Path) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", html.read_text())]


class Trace:
    """Where under a root the leaver's face data is found."""

    def __init__(self, root: Path, his: np.ndarray, everyone: dict[str, np.ndarray], detector, embedder) -> None:
        self.vectors: list[str] = []
        self.text: list[str] = []
        self.faces: list[str] = []
        needles = [s.encode(enc) for s in (LEAVER, LEAVER_NAME, LEAVER_FOLDER) for enc in ("utf-8", "utf-32-le")]
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            rel = str(path.relative_to(root))
            data = path.read_bytes()
            erasure_record = "backend/models/erasures/" in rel.replace(os.sep, "/")
            found = [n for n in needles if n in data]
            if erasure_record:  # the id only, never the name
                found = [n for n in found if n not in (LEAVER.encode("utf-8"), LEAVER.encode("utf-32-le"))]
            if found:
                self.text.append(rel)
            for array in stored_arrays(path):
                if array.dtype.kind == "f" and array.ndim >= 1 and array.shape[-1] == his.shape[1]:
                    rows = unit(array.reshape(-1, his.shape[1]))
                    if len(rows) and float((rows @ his.T).max()) >= 0.99:
                        self.vectors.append(rel)
            if path.suffix == ".html":
                names = sorted(everyone)
                centres = np.stack([unit(everyone[n].mean(axis=0)) for n in names])
                for jpeg in thumbnails(path):
                    crops = photo_face_crops(detector, jpeg, embedder.crop).crops
                    if not crops:
                        continue
                    v = unit(embedder.embed(np.stack(crops[:1])))[0]
                    if names[int(np.argmax(centres @ v))] == LEAVER:
                        self.faces.append(rel)

    @property
    def clean(self) -> bool:
        return not (self.vectors or self.text or self.faces)


@pytest.fixture(scope="module")
def leaver_enrolled(
    tmp_path_factory: pytest.TempPathFactory, published_root: Path
) -> tuple[Path, Path, np.ndarray, dict[str, np.ndarray]]:
    """Published, a --review candidate, a rejected model (the candidate, set aside as the gate does),
    all holding STU004; then his folder moved out of the data folder. Read-only: tests copy it.

    The ORL photos are all in the session's published model: the first run starts from a copy of its
    embedding cache (the same MTCNN + dlib), as a school's next run would; his blurred photo is new."""
    base = tmp_path_factory.mktemp("erasure")
    data = make_orl_tree(base / "data", n_students=N_STUDENTS)
    # a blurred photo of him: a finding, so the report pages carry thumbnails of his face
    blurred = Image.open(data / LEAVER_FOLDER / "3.pgm").filter(ImageFilter.GaussianBlur(4))
    blurred.save(data / LEAVER_FOLDER / "blurred.png")
    root = base / "root"
    cache = OutputPaths.at(root).cache_dir
    for folder in reversed(cache.parents[: len(cache.relative_to(base).parts) - 1]):
        folder.mkdir(mode=0o700)  # owner-only, as the run makes them (assert_owner_only)
    shutil.copytree(OutputPaths.at(published_root).cache_dir, cache)
    assert run(data, root) == 0
    assert run(data, root, "--force") == 0  # a second publish (forced: nothing changed): the first is kept
    assert run(data, root, "--review") == 0
    paths = OutputPaths.at(root)
    (candidate,) = list(paths.candidate_dir.iterdir())
    paths.rejected_dir.mkdir(mode=0o700)
    shutil.copytree(candidate, paths.rejected_dir / candidate.name)
    X, y = np.load(paths.X), np.load(paths.y)
    everyone = {sid: X[y == sid] for sid in np.unique(y)}
    shutil.move(str(data / LEAVER_FOLDER), str(base / "left_the_school"))
    return data, root, unit(everyone[LEAVER]), everyone


def private_copy(leaver_enrolled, tmp_path: Path) -> tuple[Path, Path]:
    data, root, _, _ = leaver_enrolled
    copy = tmp_path / "root"
    shutil.copytree(root, copy, symlinks=True)
    return data, copy


def assert_owner_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if path == root or path.is_symlink():
            continue
        mode = path.lstat().st_mode
        assert not mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IXOTH), f"{path} is {stat.filemode(mode)}"


def test_erase_after_the_folder_went_and_a_retrain(
    leaver_enrolled, tmp_path, mtcnn_detector, dlib_embedder, capsys
) -> None:
    data, root = private_copy(leaver_enrolled, tmp_path)
    _, _, his, everyone = leaver_enrolled
    before = Trace(root, his, everyone, mtcnn_detector, dlib_embedder)
    assert before.vectors and before.text and before.faces  # the search finds him while he is kept

    assert run(data, root, "--keep-unpublished") == 0
    out = capsys.readouterr().out
    assert f"NOT ENROLLED       : {LEAVER}" in out and f"--erase {LEAVER}" in out  # says where he still is
    after_retrain = Trace(root, his, everyone, mtcnn_detector, dlib_embedder)
    assert after_retrain.vectors  # the kept version, the candidate and the rejected model still hold him

    started = time.perf_counter()
    assert run(data, root, "--erase", LEAVER_FOLDER) == 0  # the folder name is accepted too
    took = time.perf_counter() - started
    out = capsys.readouterr().out
    assert f"Erased {LEAVER}" in out and "record" in out
    trace = Trace(root, his, everyone, mtcnn_detector, dlib_embedder)
    assert trace.clean, (trace.vectors, trace.text, trace.faces)
    assert_owner_only(root)

    paths = OutputPaths.at(root)
    (record,) = list(paths.erasures_dir.glob("*.json"))
    saved = json.loads(record.read_text())
    assert saved["student_ids"] == [LEAVER]
    removed = {a["place"].split("/")[2] for a in saved["actions"] if a["action"] == "removed"}
    assert {"versions", "candidate", "rejected"} <= removed
    assert all(len(f["sha256"]) == 64 for a in saved["actions"] for f in a["files"])
    assert not paths.erasure_intent.exists()
    # nothing is re-embedded and nothing published: seconds on 10 students (the closing note gives figures)
    assert took < 60

    # nothing brings him back
    assert run(data, root, "--rollback") == 1
    assert run(data, root, "--promote") == 1
    assert "ERROR:" in capsys.readouterr().err
    assert Trace(root, his, everyone, mtcnn_detector, dlib_embedder).clean


def test_rollback_and_promote_refuse_a_model_holding_an_erased_student(leaver_enrolled, tmp_path, capsys) -> None:
    data, root = private_copy(leaver_enrolled, tmp_path)
    paths = OutputPaths.at(root)
    (kept,) = list(paths.versions_dir.iterdir())  # the first model, which holds him
    (waiting,) = list(paths.candidate_dir.iterdir())
    # his folder is gone: refused, naming him, with what to do
    assert run(data, root, "--rollback") == 1
    err = capsys.readouterr().err
    assert LEAVER in err and f"--erase {LEAVER}" in err and err.count("ERROR:") == 1
    assert run(data, root, "--promote") == 1
    assert LEAVER in capsys.readouterr().err

    saved = tmp_path / "saved"  # what a careless admin might copy back after the erasure
    shutil.copytree(kept, saved / "version")
    shutil.copytree(waiting, saved / "candidate")
    assert run(data, root, "--erase", LEAVER) == 0
    shutil.copytree(saved / "version", kept)
    shutil.copytree(saved / "candidate", waiting)
    live = (paths.manifest).read_bytes()
    for command in ("--rollback", "--promote"):
        assert run(data, root, command, "--force") == 1  # erased: never published again, --force or not
        err = capsys.readouterr().err
        assert "erased on request" in err and LEAVER in err
    assert paths.manifest.read_bytes() == live


def test_a_student_erased_and_enrolled_again_is_said_to_be(leaver_enrolled, tmp_path, capsys) -> None:
    data, root = private_copy(leaver_enrolled, tmp_path)
    assert run(data, root, "--erase", LEAVER) == 0
    data2 = tmp_path / "data"
    shutil.copytree(data, data2)
    shutil.copytree(leaver_enrolled[0].parent / "left_the_school", data2 / LEAVER_FOLDER)
    assert run(data2, root) == 0
    out = capsys.readouterr().out
    assert f"RE-ENROLLED        : {LEAVER}" in out
    paths = OutputPaths.at(root)
    assert f"{LEAVER}: was erased on request before" in paths.report_txt.read_text()
    page = paths.report_html.read_text()
    assert "<h2>Face data kept</h2>" in page and f"{LEAVER}: was erased on request before" in page


def test_erase_refuses_while_the_folder_is_there_and_an_unknown_id(leaver_enrolled, tmp_path, capsys) -> None:
    data, root = private_copy(leaver_enrolled, tmp_path)
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert run(data, root, "--erase", "STU005") == 1
    err = capsys.readouterr().err
    assert "STU005_Person_5" in err and "still in" in err and err.count("ERROR:") == 1
    assert run(data, root, "--erase", "STU099") == 1
    assert "No face data of STU099" in capsys.readouterr().err
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before


def erase_in_child(data: Path, root: Path) -> subprocess.Popen:
    argv = ["--data-dir", str(data), "--output-root", str(root), "--quiet", *OFFLINE_ARGS, "--erase", LEAVER]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "retrain_model.py"), *argv],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_kill_during_erase_is_finished_by_running_it_again(
    leaver_enrolled, tmp_path, seed, mtcnn_detector, dlib_embedder
) -> None:
    """The live model holds him (no retrain since his folder went), so --erase retrains, publishes and
    removes: a SIGKILL lands somewhere in that, at a random moment; running it again finishes the job."""
    data, root = private_copy(leaver_enrolled, tmp_path)
    _, _, his, everyone = leaver_enrolled
    child = erase_in_child(data, root)
    delay = random.Random(seed).uniform(1.0, 9.0)  # a run here takes ~7 s: model loading, retraining, removing
    try:
        child.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert run(data, root, "--erase", LEAVER) == 0
    trace = Trace(root, his, everyone, mtcnn_detector, dlib_embedder)
    assert trace.clean, (delay, trace.vectors, trace.text, trace.faces)
    assert not OutputPaths.at(root).erasure_intent.exists()
    # the model the erasure trained does not count him as still kept somewhere
    assert "still held by kept models" not in OutputPaths.at(root).report_txt.read_text()
    assert retrain_model.main(["--output-root", str(root), "--data-dir", str(data), "--rollback"]) == 1
