"""Installed library versions: recorded in the model metadata and in the embedding-cache fingerprint."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata

#: Libraries whose version the published model records (pickles are not portable across versions).
MODEL_LIBRARIES = (
    "numpy",
    "scikit-learn",
    "torch",
    "facenet-pytorch",
    "insightface",
    "onnxruntime",
    "opencv-python",
    "pillow",
    "dlib-bin",
    "joblib",
)


def library_versions(names: Iterable[str] = MODEL_LIBRARIES, *, python: bool = True) -> dict[str, str]:
    """``{distribution: version}`` of those installed (+ ``python``), in the order given."""
    out = {"python": platform.python_version()} if python else {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
