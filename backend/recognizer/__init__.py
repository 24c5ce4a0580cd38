"""SmartAttendance face recognition: the public names the web backend needs.

    from backend.recognizer import FaceRecognizer, ModelLoadError

Importing this package is light: the names below are imported on first use, and the
loader itself imports no deep-learning library until faces are recognised.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load lazily (below)
    from .errors import (
        ImageError,
        ModelLoadError,
        RetrainError,
        SessionEndedError,
        SessionModelError,
        SessionStateError,
        WeightsNotFoundError,
    )
    from .images import decode_upload
    from .loader import Candidate, FaceRecognizer, Recognition, verify_model_dir
    from .session import AttendanceSession, FrameResult, Presence, PresenceRule, SessionReport

_EXPORTS = {
    "FaceRecognizer": ".loader",
    "Recognition": ".loader",
    "Candidate": ".loader",
    "verify_model_dir": ".loader",
    "AttendanceSession": ".session",
    "Presence": ".session",
    "PresenceRule": ".session",
    "SessionReport": ".session",
    "FrameResult": ".session",
    "ModelLoadError": ".errors",
    "RetrainError": ".errors",
    "WeightsNotFoundError": ".errors",
    "ImageError": ".errors",
    "SessionEndedError": ".errors",
    "SessionModelError": ".errors",
    "SessionStateError": ".errors",
    "decode_upload": ".images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
