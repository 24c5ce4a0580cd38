"""The model manifest: SHA-256 and size of every published file, checked before anything is unpickled.

``manifest.json`` is written last by retraining (``retraining.publish``) and read here by
the loader. A pickle can run code, so a model file is trusted only when its bytes match
the manifest; a half-written, damaged or replaced file is refused with a message that
says how to recover. This module only reads.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .hashing import sha256_bytes, sha256_file
from .paths import MANIFEST_NAME

MANIFEST_FORMAT = 1
#: Manifest keys of files that live in ``models/`` (training outputs) start with this prefix.
MODELS_PREFIX = "models/"
FIX_HINT = (
    "Re-run retraining (python retrain_model.py) or restore the previous model (python retrain_model.py --rollback)."
)


@dataclass(frozen=True)
class FileEntry:
    """What one listed file must be."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: the model version and one :class:`FileEntry` per published file."""

    model_version: str
    created_at: str
    files: Mapping[str, FileEntry] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "model_version": self.model_version,
            "created_at": self.created_at,
            "files": {name: {"sha256": e.sha256, "size": e.size} for name, e in sorted(self.files.items())},
        }

    @classmethod
    def from_dict(cls, data: object, where: Path) -> Manifest:
        """Parse and validate; :class:`ModelLoadError` names the problem and the fix."""
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or "model_version" not in data:
            raise ModelLoadError(f"The model manifest {where} is malformed (no 'files' / 'model_version'). {FIX_HINT}")
        files: dict[str, FileEntry] = {}
        for name, entry in data["files"].items():
            if not safe_relative(name) or not isinstance(entry, dict):
                raise ModelLoadError(
                    f"The model manifest {where} lists {name!r}, which is not a file inside the model folders: "
                    f"it was edited by hand or by someone else. {FIX_HINT}"
                )
            try:
                files[name] = FileEntry(str(entry["sha256"]), int(entry["size"]))
            except (KeyError, TypeError, ValueError) as err:
                raise ModelLoadError(
                    f"The model manifest {where} has a malformed entry for {name!r}. {FIX_HINT}"
                ) from err
        return cls(str(data["model_version"]), str(data.get("created_at", "")), files, int(data.get("format", 1)))

    def models_files(self) -> list[str]:
        """The ``models/`` outputs the manifest covers, relative to ``models/``."""
        return [n[len(MODELS_PREFIX) :] for n in self.files if n.startswith(MODELS_PREFIX)]

    def check_bytes(self, name: str, data: bytes, where: Path) -> None:
        """Raise :class:`ModelLoadError` unless ``data`` is the content listed for ``name``."""
        entry = self.files.get(name)
        if entry is None:
            raise ModelLoadError(f"{where} is not listed in the model manifest, so it cannot be trusted. {FIX_HINT}")
        if len(data) != entry.size or sha256_bytes(data) != entry.sha256:
            raise ModelLoadError(f"{_differs(where, len(data), entry)} It was NOT loaded. {FIX_HINT}")

    def check_files(
        self, directory: Path, *, models_dir: Path | None = None, read: Collection[str] = ()
    ) -> dict[str, bytes]:
        """Check the size and SHA-256 of every listed file; return the bytes of those named in ``read``.

        A file named in ``read`` is read once, and the bytes hashed are the bytes returned: what
        the caller parses is what was checked (no check-then-use race). The others are hashed in
        blocks. Files named ``models/…`` are checked against ``models_dir`` when it is given
        (they are training outputs, not needed to recognise faces). Raises
        :class:`ModelLoadError` naming the first file that is missing or whose size or hash differs.
        """
        contents: dict[str, bytes] = {}
        for name, entry in sorted(self.files.items()):
            if name.startswith(MODELS_PREFIX):
                if models_dir is None:
                    continue
                path = models_dir / name[len(MODELS_PREFIX) :]
            else:
                path = directory / name
            if not path.is_file():
                raise _missing(path, directory)
            if name in read:
                try:
                    data = path.read_bytes()
                except FileNotFoundError as err:  # removed since is_file()
                    raise _missing(path, directory) from err
                size = len(data)
                same = size == entry.size and sha256_bytes(data) == entry.sha256
                contents[name] = data
            else:
                size = path.stat().st_size
                same = size == entry.size and sha256_file(path) == entry.sha256
            if not same:
                raise ModelLoadError(f"{_differs(path, size, entry)} {FIX_HINT}")
        return contents


def _missing(path: Path, directory: Path) -> ModelLoadError:
    return ModelLoadError(f"Model file missing: {path} (listed in {directory / MANIFEST_NAME}). {FIX_HINT}")


def _differs(path: Path, size: int, entry: FileEntry) -> str:
    return (
        f"{path} does not match the model manifest (size {size} vs {entry.size} expected, or a "
        "different SHA-256): it is half-written, damaged or was replaced."
    )


def safe_relative(name: object) -> bool:
    """A relative POSIX path that stays inside its folder (no absolute path, drive, ``..`` or backslash)."""
    if not isinstance(name, str) or not name or "\\" in name or ":" in name or "\0" in name:
        return False
    parts = name.split("/")
    return not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def read_manifest(directory: Path) -> Manifest:
    """Parse ``directory/manifest.json``; :class:`ModelLoadError` when missing or malformed."""
    path = directory / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelLoadError(
            f"The model manifest {path} is missing, so the model files cannot be verified. {FIX_HINT}"
        ) from err
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"The model manifest {path} is unreadable or corrupt ({err}). {FIX_HINT}") from err
    return Manifest.from_dict(data, path)


def read_verified(directory: Path, manifest: Manifest, name: str) -> bytes:
    """The bytes of ``directory/name``, checked against the manifest (read once: no check-then-use race)."""
    path = directory / name
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise ModelLoadError(f"Model file missing: {path}. {FIX_HINT}") from err
    manifest.check_bytes(name, data, path)
    return data


def verify_manifest(directory: Path, *, models_dir: Path | None = None) -> Manifest:
    """Check every file the manifest of ``directory`` lists (:meth:`Manifest.check_files`); return the manifest.

    Files named ``models/…`` are checked against ``models_dir`` when it is given (they are
    training outputs, not needed to recognise faces). Raises :class:`ModelLoadError`
    naming the first file that is missing or whose size or hash differs.
    """
    manifest = read_manifest(directory)
    manifest.check_files(directory, models_dir=models_dir)
    return manifest
