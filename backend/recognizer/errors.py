"""Our exceptions. Every message says what happened and what to do next.

These are the errors of recognition; the retraining package adds its own (dataset,
training, publishing, lock) as subclasses of :class:`RetrainError`.
"""

from __future__ import annotations


class RetrainError(Exception):
    """Base class: a run-stopping problem the user can fix. Its message is shown as is."""


class WeightsNotFoundError(RetrainError, FileNotFoundError):
    """A model weight file is neither available locally nor downloadable."""


class ModelLoadError(RetrainError, ValueError):
    """The published model is missing, incomplete, tampered with or inconsistent."""


class ImageError(ValueError):
    """One photo cannot be used. Per-image: caught by the pipeline and reported, never fatal."""


class SessionEndedError(RuntimeError):
    """A frame was given to a class session that has ended: it is not counted (start a new session)."""


class SessionStateError(ValueError):
    """A saved class session cannot be restored: its state is malformed, or of another model."""


class SessionModelError(SessionStateError):
    """A class session would mix two models in one count (a frame or a restore with another model)."""
