"""Errors that stop a retraining run. Each message says what happened and what to do next."""

from __future__ import annotations

from backend.recognizer.errors import RetrainError


class DatasetError(RetrainError, ValueError):
    """The student photo folder is missing, empty, or cannot be used to train."""


class TrainingError(RetrainError, ValueError):
    """The classifier cannot be trained on the usable photos (e.g. only one student)."""


class PublishError(RetrainError):
    """New artifacts could not be verified or moved into place; the previous model stays."""


class LockError(RetrainError):
    """Another retraining run is publishing at this moment."""


class ModelRefusedError(RetrainError):
    """The quality gate refused the new model; the model in service is unchanged."""


class DiskSpaceError(RetrainError):
    """Not enough free disk space for what the run will write; nothing was changed."""


class ErasureError(RetrainError):
    """A student's face data cannot be erased (yet); the message says what to do first."""
