"""Shared fixtures: real photos from ../shared/data, temp student trees, a trained model.

Nothing here downloads: the end-to-end model uses the offline backends (MTCNN + dlib).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

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
