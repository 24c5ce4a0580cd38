"""Students' face data is owner-only: nothing the suite writes is readable by other accounts.

Rule (docs/SECURITY.md, section 2): under the output root, no file or folder has any "other"
bit; only ``backend/models/``, the ``Classifier/`` folders in it and their files have group
bits (the web backend's account reads the published model), and the folders that keep other
models (``versions/``, ``candidate/``, ``rejected/``, ``.staging/``) are owner-only, so the
group reaches only ``backend/models/Classifier``. The umask is the usual permissive 0o022.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import OFFLINE_ARGS

from backend.recognizer.paths import CLASSIFIER_DIR_NAME, OutputPaths
from retraining import files, outcome
from retraining.lock import RetrainLock
from retraining.modes import restrict_modes

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes (Windows: ACLs, see docs/SECURITY.md)")


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    old = os.umask(0o022)
    files._umask.cache_clear()
    try:
        yield
    finally:
        os.umask(old)
        files._umask.cache_clear()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def everything_under(root: Path) -> list[Path]:
    """Every file and folder under ``root`` (links skipped, never followed)."""
    out = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        out += [Path(folder, n) for n in [*dirs, *names] if not Path(folder, n).is_symlink()]
    return out


def group_may_read(paths: OutputPaths, path: Path) -> bool:
    """backend/models, a Classifier/ folder in it, and that folder's files (``<root>/backend`` when
    it holds only models/: the suite made it, on the way to the published model)."""
    if path in (paths.backend_models, paths.root / "backend"):
        return True
    if not files.inside(path, paths.backend_models):
        return False
    return path.name == CLASSIFIER_DIR_NAME or path.parent.name == CLASSIFIER_DIR_NAME


def assert_private(paths: OutputPaths) -> None:
    wrong = []
    for path in everything_under(paths.root):
        m = mode(path)
        if m & 0o007 or (m & 0o070 and not group_may_read(paths, path)) or m & 0o020:
            wrong.append(f"{oct(m)} {path.relative_to(paths.root)}")
    assert not wrong, "readable by others:\n" + "\n".join(sorted(wrong))
    # the group reaches the published model, and through nothing else
    assert mode(paths.backend_models) == 0o750
    assert mode(paths.classifier_dir) == 0o750
    assert {mode(p) for p in paths.classifier_dir.iterdir()} == {0o640}
    for top in (paths.versions_dir, paths.staging_dir, paths.candidate_dir, paths.rejected_dir, paths.models_dir):
        if top.exists():
            assert mode(top) == 0o700, top


def widen(root: Path) -> None:
    """What an earlier release left: files 0644, folders 0755."""
    for path in everything_under(root):
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.fixture(scope="module")
def republished(tmp_path_factory: pytest.TempPathFactory, published_root: Path, orl_tree: Path) -> Path:
    """A copy of ``published_root`` after one more real run (umask 0o022): a model kept in versions/."""
    import retrain_model

    root = tmp_path_factory.mktemp("modes") / "root"
    shutil.copytree(published_root, root, symlinks=True)
    old = os.umask(0o022)
    files._umask.cache_clear()
    try:
        argv = ["--data-dir", str(orl_tree), "--output-root", str(root), "--quiet", "--force", *OFFLINE_ARGS]
        code = retrain_model.main(argv)  # --force: the same photos as the published model's publish nothing
    finally:
        os.umask(old)
        files._umask.cache_clear()
    assert code == 0
    return root


def test_a_real_run_leaves_nothing_readable_by_others(republished: Path) -> None:
    paths = OutputPaths.at(republished)
    assert paths.X.is_file() and paths.report_html.is_file() and paths.plots_dir.is_dir()
    assert list(paths.versions_dir.iterdir()) and list(paths.cache_dir.iterdir())
    assert_private(paths)
    for path in (paths.X, paths.report_html, paths.cache_dir, *paths.plots_dir.iterdir()):
        assert mode(path) in (0o600, 0o700), path


def test_files_of_an_earlier_release_are_tightened_by_the_next_command(republished: Path, tmp_path: Path) -> None:
    """Everything 0644/0755 (as an earlier release wrote it); ``--rollback`` (which takes the lock)
    tightens it all, and the model it moves back into place is readable by the backend's group."""
    import retrain_model

    root = tmp_path / "root"
    shutil.copytree(republished, root, symlinks=True)
    paths = OutputPaths.at(root)
    (paths.versions_dir / "old-note.txt").write_text("x")
    widen(root)
    assert mode(paths.X) == 0o644 and mode(paths.versions_dir) == 0o755
    assert retrain_model.main(["--rollback", "--output-root", str(root), "--quiet"]) == 0
    assert_private(paths)
    assert mode(paths.versions_dir / "old-note.txt") == 0o600


def test_taking_the_lock_tightens_and_skips_links(tmp_path: Path) -> None:
    """The lock tightens a crashed run's files when taken; links are never followed or changed,
    and nothing outside backend/models and models/ is touched (the output root may be the project)."""
    paths = OutputPaths.at(tmp_path / "out")
    (paths.root / "backend" / "recognizer").mkdir(parents=True)  # code of the project: not ours
    code = paths.root / "backend" / "recognizer" / "faces.py"
    code.write_text("x")
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    outside.chmod(0o644)
    paths.plots_dir.mkdir(parents=True)
    (paths.plots_dir / "plot.png").write_bytes(b"x")
    (paths.models_dir / "link.txt").symlink_to(outside)
    paths.classifier_dir.mkdir(parents=True)
    (paths.classifier_dir / "model.npz").write_bytes(b"x")
    (paths.classifier_dir / "model.npz").chmod(0o666)
    widen(paths.root)
    with RetrainLock(paths, timeout=0):
        assert mode(paths.plots_dir / "plot.png") == 0o600  # tightened as the lock was taken
        assert mode(paths.models_dir) == 0o700
        assert mode(paths.classifier_dir / "model.npz") == 0o640
        assert mode(paths.backend_models) == 0o750
    assert mode(outside) == 0o644
    assert mode(code) == 0o644 and mode(code.parent) == 0o755 and mode(paths.root / "backend") == 0o755
    assert restrict_modes(paths) == 0  # nothing left to do


def test_restrict_modes_changes_what_is_wrong_and_only_that(tmp_path: Path) -> None:
    paths = OutputPaths.at(tmp_path)
    for v in range(30):
        for sub in ("Classifier", "models"):
            folder = paths.versions_dir / f"v{v}" / sub
            folder.mkdir(parents=True)
            for i in range(50):
                (folder / f"f{i}").write_bytes(b"x")
    widen(tmp_path)
    # the files, their folders, versions/, backend/models and backend/ (it holds only models/: the suite made it)
    assert restrict_modes(paths) == 3000 + 30 * 3 + 3
    assert mode(tmp_path / "backend") == 0o750
    assert restrict_modes(paths) == 0


def test_new_files_and_folders_are_owner_only_from_the_start(tmp_path: Path) -> None:
    files.atomic_write_bytes(tmp_path / "a" / "b" / "X.npy", b"x")
    files.atomic_write_bytes(tmp_path / "a" / CLASSIFIER_DIR_NAME / "model.npz", b"x")
    assert mode(tmp_path / "a" / "b" / "X.npy") == 0o600
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    assert mode(tmp_path / "a" / CLASSIFIER_DIR_NAME / "model.npz") == 0o640
    assert mode(tmp_path / "a" / CLASSIFIER_DIR_NAME) == 0o750
    files.private_mkdir(tmp_path / "root" / "backend" / "models", files.SHARED_DIR_MODE)
    assert mode(tmp_path / "root" / "backend") == 0o750 and mode(tmp_path / "root" / "backend" / "models") == 0o750


def test_the_error_log_is_owner_only(tmp_path: Path) -> None:
    paths = OutputPaths.at(tmp_path / "out")
    paths.root.mkdir()
    written = outcome.write_error_log(RuntimeError("boom"), paths)
    assert written == paths.error_log and "boom" in written.read_text()
    assert mode(written) == 0o600 and mode(paths.models_dir) == 0o700
    written.chmod(0o644)  # left by an earlier release
    assert outcome.write_error_log(RuntimeError("again"), paths) == written
    assert mode(written) == 0o600 and "boom" not in written.read_text()


def test_the_error_log_in_the_temp_folder_is_owner_only_and_not_written_through_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = OutputPaths.at(tmp_path / "out")
    paths.models_dir.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    paths.error_log.symlink_to(victim)  # models/ log is a link: not followed
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    written = outcome.write_error_log(RuntimeError("boom"), paths)
    assert written == temp / "smartattendance_retrain_error.log"
    assert mode(written) == 0o600 and "boom" in written.read_text()
    assert victim.read_text() == "keep"
