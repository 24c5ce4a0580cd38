"""The publish journal: which model is complete while a publish or rollback is being swapped in.

Retraining writes ``backend/models/.publish.json`` before it renames anything and deletes
it when the swap is done (``retraining.publish``). If that run is interrupted between the
two renames, ``Classifier/`` is briefly (or, after a crash, lastingly) missing; the journal
then says where the complete, already verified new model is, and where the previous one
went. The loader reads that model where it lies, read-only: finishing the swap is the next
retraining run's job, never the web backend's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import JOURNAL_NAME, ModelFolder, OutputPaths

__all__ = ["JOURNAL_NAME", "PublishJournal", "complete_model_dir", "read_journal"]


@dataclass(frozen=True)
class PublishJournal:
    """One swap in progress: the incoming model's folder (``stage``) and where the current one goes."""

    version: str
    stage: Path  # holds Classifier/ and models/ of the incoming model until they are moved
    archive: Path | None  # versions/<old>: where the current model is moved (None on a first publish)
    old_models: tuple[str, ...]  # models/ files of the current model, moved into the archive
    new_models: tuple[str, ...]  # models/ files of the incoming model
    keep_versions: int | None
    started_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "stage": str(self.stage),
            "archive": str(self.archive) if self.archive else None,
            "old_models": list(self.old_models),
            "new_models": list(self.new_models),
            "keep_versions": self.keep_versions,
            "started_at": self.started_at,
        }

    @classmethod
    def from_dict(cls, data: object) -> PublishJournal:
        """Parse a journal; ``ValueError`` when it is not one (a damaged or foreign file)."""
        if not isinstance(data, dict):
            raise ValueError("not a publish journal")
        try:
            keep = data.get("keep_versions")
            return cls(
                version=str(data["version"]),
                stage=Path(data["stage"]),
                archive=Path(data["archive"]) if data.get("archive") else None,
                old_models=tuple(str(x) for x in data["old_models"]),
                new_models=tuple(str(x) for x in data["new_models"]),
                keep_versions=None if keep is None else int(keep),
                started_at=str(data.get("started_at", "")),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a publish journal ({err})") from err


def read_journal(paths: OutputPaths) -> PublishJournal | None:
    """The journal of an unfinished swap, or None (no swap, or an unreadable file)."""
    try:
        return PublishJournal.from_dict(json.loads(paths.journal_file.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def complete_model_dir(paths: OutputPaths) -> Path | None:
    """Where a complete model lies while ``Classifier/`` is missing mid-swap, or None.

    The incoming model (verified before the journal was written) if it is still in its
    staging folder, else the previous one in its archive folder.
    """
    journal = read_journal(paths)
    if journal is None:
        return None
    kept = [journal.stage] + ([journal.archive] if journal.archive else [])
    for candidate in (ModelFolder.under(root).classifier_dir for root in kept):
        if _inside(candidate, paths.backend_models) and candidate.is_dir():
            return candidate
    return None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
