"""Shared fixtures: real photos from ../shared/data, temp student trees, a trained model.

Nothing here downloads: the end-to-end model uses the offline backends (MTCNN + dlib).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import embedding_store
import pytest
from embedding_store import SCRFD_25G, fill_scrfd_dlib_cache  # SCRFD 2.5g: of every test on LFW photos

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()
ORL = SHARED_DATA / "orl"
LFW = SHARED_DATA / "lfw"
LFW_STRANGERS = SHARED_DATA / "lfw_strangers"
SCRFD_WEIGHTS = SHARED_DATA / "weights"

OFFLINE_ARGS = ["--detector", "mtcnn", "--embedder", "dlib", "--device", "cpu"]


def skip_unless_ci(message: str, ci_hint: str) -> None:
    """Skip with ``message``; in CI (``CI=true``) fail instead: a CI run that quietly skipped every
    real-data (or browser) test would prove nothing."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{message}; {ci_hint}")
    pytest.skip(message)


def require_shared_data(path: Path = ORL) -> None:
    """Skip when the real photos/weights are missing (fail in CI, see :func:`skip_unless_ci`)."""
    if not path.exists():
        skip_unless_ci(
            f"real test data not found at {path} (see ../shared/data/README.md)",
            "CI must run with ../shared/data beside the checkout",
        )


def make_orl_tree(dst: Path, n_students: int = 12, n_images: int = 10, first: int = 1) -> Path:
    """Copy ORL people s<first>.. into ``dst/STU0NN_Person_N`` folders (copies, not links)."""
    require_shared_data()
    dst.mkdir(parents=True, exist_ok=True)
    for k in range(first, first + n_students):
        folder = dst / f"STU{k:03d}_Person_{k}"
        folder.mkdir(exist_ok=True)
        for i in range(1, n_images + 1):
            shutil.copy2(ORL / f"s{k}" / f"{i}.pgm", folder / f"{i}.pgm")
    return dst


def rollback_in_a_child(root: Path) -> None:
    """``retrain_model.py --rollback`` in its own process, as an admin would run it beside a live server."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "retrain_model.py", "--rollback", "--output-root", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def tree_digest(root: Path) -> dict[str, str]:
    """relative path → SHA-256 of every file under ``root`` (links not followed)."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(root))] = "link:" + str(path.readlink())
        elif path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# ----------------------------------------------------------------------------- work started early


class EarlyJob:
    """Work whose result a fixture only reads (subprocesses that need nothing from the tests before it), run
    in the background as soon as the session knows that a test using that fixture will run.

    The test process keeps about one of the 2 cores busy; the LFW embeddings, the README samples and the
    lint/type checks are subprocesses that then run beside it instead of after everything before them.
    The jobs run one after the other (so that at most two processes run beside the tests), in one thread;
    the fixture waits for its job's result (or its exception)."""

    def __init__(self, name: str, work: Callable[[pytest.TempPathFactory], Any]) -> None:
        self.name, self.work = name, work
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        try:
            self.result = self.work(tmp_path_factory)
        except BaseException as err:  # re-raised in the test that reads the result
            self.error = err
        finally:
            self.done.set()


#: fixture name -> its job (registered by the test modules with :func:`run_early`, at import)
_EARLY: dict[str, EarlyJob] = {}
_EARLY_STARTED: set[str] = set()


#: the processes early jobs started (see :func:`run_process`)
_EARLY_PROCESSES: list[subprocess.Popen[str]] = []


def run_process(cmd: list[str], *, timeout: float, **popen: Any) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` for early jobs (``popen``: Popen's arguments, ``text=True`` added): the process is
    killed if the session ends first (a failure with ``-x``, Ctrl+C), instead of running on unwatched."""
    with subprocess.Popen(cmd, text=True, **popen) as proc:
        _EARLY_PROCESSES.append(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def pytest_unconfigure(config: pytest.Config) -> None:
    """End what early jobs still run (nothing, when every test that needed them ran)."""
    for proc in [*_EARLY_PROCESSES, *embedding_store.RUNNING]:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_early(fixture: str, work: Callable[[pytest.TempPathFactory], Any]) -> None:
    """Start ``work(tmp_path_factory)`` in the background once collection shows that a selected test uses
    ``fixture``; that fixture returns :func:`early_result` (the same value ``work`` returns)."""
    _EARLY[fixture] = EarlyJob(fixture, work)


def early_result(fixture: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The result of the job registered for ``fixture`` (run here and now if it was not started early)."""
    job = _EARLY[fixture]
    if fixture not in _EARLY_STARTED:
        _EARLY_STARTED.add(fixture)
        job.run(tmp_path_factory)
    job.done.wait()
    if job.error is not None:
        raise job.error
    return job.result


#: The early job needed first (a few minutes in, by the gate, quality and stranger tests); the others, in the
#: order their modules registered them, are needed only later.
NEEDED_FIRST = "lfw_embedding_cache"
#: every fixture a selected test uses (directly or through other fixtures), once collection is done
FIXTURES_IN_USE: set[str] = set()
#: the environment the session started with: what early jobs give their subprocesses (not an environment
#: that a test running at the same time has patched)
ENVIRON = dict(os.environ)


def pytest_collection_finish(session: pytest.Session) -> None:
    used = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    FIXTURES_IN_USE.update(used)
    jobs = [job for name, job in _EARLY.items() if name in used and name not in _EARLY_STARTED]
    factory = getattr(session.config, "_tmp_path_factory", None)  # what the tmp_path_factory fixture returns
    if not jobs or factory is None:
        return
    _EARLY_STARTED.update(job.name for job in jobs)
    jobs.sort(key=lambda job: job.name != NEEDED_FIRST)  # stable: the others keep their order

    def run_all() -> None:
        for job in jobs:
            job.run(factory)

    threading.Thread(target=run_all, name="early-jobs", daemon=True).start()


# ----------------------------------------------------------------------------- LFW embeddings, shared

#: fixture name -> the LFW photos it will embed (SCRFD 2.5g + dlib), registered by its module at import
_LFW_WANTED: dict[str, Callable[[], list[Path]]] = {}


def embed_lfw_early(fixture: str, photos: Callable[[], list[Path]]) -> None:
    """Say which photos ``fixture`` will embed through :func:`lfw_embedding_cache`: when a selected test uses
    it, they are embedded in the background from the session's start (:func:`run_early`), while the tests
    before it run. The fixture still embeds what it needs itself (then all from the cache)."""
    _LFW_WANTED[fixture] = photos


def _embed_lfw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("lfw_embedding_cache") / "cache"
    if LFW.exists() and SCRFD_25G.exists():  # else the fixture skips (fails in CI) before it is used
        wanted = {p for name, photos in _LFW_WANTED.items() if name in FIXTURES_IN_USE for p in photos()}
        fill_scrfd_dlib_cache(sorted(wanted), cache, parallel_from=1)  # in helper processes: GIL left to the tests
    return cache


run_early("lfw_embedding_cache", _embed_lfw)


@pytest.fixture(scope="session")
def lfw_embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache (SCRFD 2.5g + dlib) for the whole session, shared by every fixture that embeds
    LFW photos (``test_stranger_estimate``, ``test_quality``, ``test_gate``, ...): a photo, known by its
    bytes' SHA-256, is detected and embedded once per session, whichever fixture needs it first; what the
    modules registered with :func:`embed_lfw_early` is embedded in the background from the session's start.

    Fixtures add to it only through ``embedding_store`` (``fill_scrfd_dlib_cache``, ``extract_scrfd_dlib``);
    tests and runs copy it (a run's output root gets its own copy), never write to it."""
    for path in (LFW, SCRFD_25G):
        require_shared_data(path)
    return early_result("lfw_embedding_cache", tmp_path_factory)


#: Fixtures that run the whole pipeline (or embed a whole real data set): a test using one is end-to-end.
END_TO_END_FIXTURES = frozenset(
    {
        "published_root",
        "copy_root",
        "flawed_run",
        "orl_embeddings",
        "killed",
        "lfw_planted",
        "lfw_enrollment",
        "leaver_enrolled",
        "lfw_embedding_cache",
    }
)


#: Fixtures that cost ~10-15 s on 2 cores before their first test runs: a FaceNet network built
#: and saved, six 12-megapixel phone photos made. Slow too; the MTCNN detector and the dlib
#: embedder are started once per session instead (below).
HEAVY_MODEL_FIXTURES = frozenset({"facenet_files", "phone_jpegs"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a real published model (or a FaceNet network) as ``slow``
    (``pytest -m "not slow"`` skips it)."""
    for item in items:
        if (END_TO_END_FIXTURES | HEAVY_MODEL_FIXTURES) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def mtcnn_detector():
    """One MTCNN detector (its weights ship in facenet-pytorch) for the whole session: tests only read it."""
    from backend.recognizer.faces import MtcnnDetector

    return MtcnnDetector(device="cpu")


@pytest.fixture(scope="session")
def dlib_embedder():
    """One dlib embedder (bundled weights) for the whole session; skipped where dlib is not installed."""
    pytest.importorskip("dlib")
    from backend.recognizer.embedder import DlibEmbedder
    from backend.recognizer.errors import WeightsNotFoundError
    from backend.recognizer.weights import dlib_weights

    try:
        return DlibEmbedder(dlib_weights())
    except WeightsNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def orl_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 ORL students × 10 photos (read-only use: copy it if a test modifies it)."""
    return make_orl_tree(tmp_path_factory.mktemp("orl") / "processed")


@pytest.fixture(scope="session")
def published_root(tmp_path_factory: pytest.TempPathFactory, orl_tree: Path) -> Path:
    """An output root holding a model published by one real run (MTCNN + dlib) on ``orl_tree``.

    Session-scoped and shared: tests must not modify it (copy it with ``copy_root``).
    """
    import retrain_model

    root = tmp_path_factory.mktemp("published")
    code = retrain_model.main(["--data-dir", str(orl_tree), "--output-root", str(root), "--quiet", *OFFLINE_ARGS])
    assert code == 0
    return root


@pytest.fixture
def copy_root(tmp_path: Path, published_root: Path) -> Path:
    """A private, modifiable copy of ``published_root``."""
    dst = tmp_path / "root"
    shutil.copytree(published_root, dst, symlinks=True)
    return dst


#: A model published by release 1.0 (pickles only): the test of the old path and of --upgrade-model.
OLD_RELEASE_FIXTURE = ROOT / "tests" / "fixtures" / "model_1_0_orl6"


@pytest.fixture(scope="session")
def upgraded_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the release-1.0 model converted by ``retrain_model.py --upgrade-model`` (read-only use)."""
    import retrain_model

    root = tmp_path_factory.mktemp("upgraded") / "root"
    shutil.copytree(OLD_RELEASE_FIXTURE, root)
    assert retrain_model.main(["--upgrade-model", "--output-root", str(root), "--quiet"]) == 0
    return root
