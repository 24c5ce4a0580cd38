"""Who may read what the suite wrote: owner only, except the published model (the backend's group).

Students' face data (embeddings, the cache, reports with thumbnails and names) is owner-only:
files 0600, folders 0700. The web backend may run as another account, in the folders' group:
it reads ``backend/models/Classifier/`` (files 0640, folder 0750) and may pass through
``backend/models/`` (0750) to it. A ``Classifier/`` kept elsewhere (``versions/<v>/``,
``candidate/<v>/``, ``rejected/<v>/``, ``.staging/<v>/``) keeps 0640/0750 inside, because a
rollback or promote moves it into place as it is; those top folders are 0700, so the group
cannot reach it there. The umask can only narrow these modes.

Files are created with these modes (:func:`~retraining.files.atomic_write_bytes`,
:func:`~retraining.files.private_mkdir`); :func:`restrict_modes` tightens what an earlier
release (0644/0755), a library or a crashed run left, and is called by the retraining lock
when it is taken and released (every command that changes the output layout holds it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from backend.recognizer.paths import CLASSIFIER_DIR_NAME, OutputPaths

from .files import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, SHARED_DIR_MODE, SHARED_FILE_MODE, _umask

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "SHARED_DIR_MODE", "SHARED_FILE_MODE", "restrict_modes"]

log = logging.getLogger(__name__)

_OWNER = 0o700
#: Kept on folders: setgid (new files get the folder's group, e.g. the backend's) and sticky.
_DIR_SPECIAL = stat.S_ISGID | stat.S_ISVTX
_CAN_CHMOD_LINK = os.chmod in os.supports_follow_symlinks


def restrict_modes(paths: OutputPaths) -> int:
    """Remove the group and other bits that the rules above do not allow, under ``backend/models/``
    and ``models/``; give the published model's folders and files group read (umask permitting).

    Links are skipped (never followed, never changed); nothing outside those two folders is
    touched, except ``<root>/backend`` when it holds nothing but ``models/`` (so the suite made it).
    A file that cannot be changed (another owner) is logged, never fatal. Returns how many
    files and folders were changed.
    """
    if os.name == "nt":  # POSIX modes mean little there: ACLs (see docs/SECURITY.md)
        return 0
    umask = _umask()
    shared_dir = SHARED_DIR_MODE & ~umask & ~_OWNER  # the group bits the published model's folders get
    shared_file = SHARED_FILE_MODE & ~umask & ~_OWNER
    changed = failed = 0

    def fix(path: str, st: os.stat_result, group_allowed: int, group_wanted: int = 0) -> None:
        nonlocal changed, failed
        if stat.S_ISLNK(st.st_mode):
            return
        mode = stat.S_IMODE(st.st_mode)
        keep = _OWNER | group_allowed | (_DIR_SPECIAL if stat.S_ISDIR(st.st_mode) else 0)
        want = (mode & keep) | group_wanted
        if want == mode:
            return
        try:
            if _CAN_CHMOD_LINK:
                os.chmod(path, want, follow_symlinks=False)
            else:  # lstat said: not a link (the folders it lies in are ours)
                os.chmod(path, want)
            changed += 1
        except OSError as err:
            failed += 1
            log.debug("could not restrict the mode of %s: %s", path, err)

    backend = paths.root / "backend"
    st = _lstat(backend)
    if st is not None and stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(OSError):
            if os.listdir(backend) == [paths.backend_models.name]:
                fix(str(backend), st, shared_dir, shared_dir)
    live = str(paths.classifier_dir)
    for top, top_group in ((paths.backend_models, shared_dir), (paths.models_dir, 0)):
        st = _lstat(top)
        if st is None or not stat.S_ISDIR(st.st_mode):
            continue
        fix(str(top), st, top_group, top_group)
        for folder, dirs, files in os.walk(top, followlinks=False):
            in_classifier = os.path.basename(folder) == CLASSIFIER_DIR_NAME
            for name in dirs:
                path = os.path.join(folder, name)
                st = _lstat(path)
                if st is None:
                    continue
                if name == CLASSIFIER_DIR_NAME and top_group:  # a model folder under backend/models
                    fix(path, st, SHARED_DIR_MODE & ~_OWNER, shared_dir if path == live else 0)
                else:
                    fix(path, st, 0)
            for name in files:
                path = os.path.join(folder, name)
                st = _lstat(path)
                if st is None:
                    continue
                if in_classifier and top_group:
                    fix(path, st, SHARED_FILE_MODE & ~_OWNER, shared_file if folder == live else 0)
                else:
                    fix(path, st, 0)
    if failed:
        log.warning(
            "Could not make %d files or folders under %s and %s private (owned by another account?): "
            "see docs/SECURITY.md, section 2",
            failed,
            paths.backend_models,
            paths.models_dir,
        )
    return changed


def _lstat(path: str | Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None
