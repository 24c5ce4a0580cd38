"""Our exceptions. Every message says what happened and what to do next."""

from __future__ import annotations


class RetrainError(Exception):
    """Base class: a run-stopping problem the user can fix. Its message is shown as is."""


class DatasetError(RetrainError, ValueError):
    """The student photo folder is missing, empty, or cannot be used to train."""


class WeightsNotFoundError(RetrainError, FileNotFoundError):
    """A model weight file is neither available locally nor downloadable."""


class TrainingError(RetrainError, ValueError):
    """The classifier cannot be trained on the usable photos (e.g. only one student)."""


class PublishError(RetrainError):
    """New artifacts could not be verified or moved into place; the previous model stays."""


class LockError(RetrainError):
    """Another retraining run is publishing at this moment."""


class ModelLoadError(RetrainError, ValueError):
    """The published model is missing, incomplete, tampered with or inconsistent."""


class ImageError(ValueError):
    """One photo cannot be used. Per-image: caught by the pipeline and reported, never fatal."""
