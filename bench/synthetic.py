"""Synthetic face embeddings for scaling benchmarks: per-class clusters around unit-norm centres.

Not real faces: each student is a random unit-norm centre in 512-d; his photos are that
centre plus isotropic Gaussian noise, re-normalised (like L2-normalised FaceNet output).
``spread`` sets how hard the problem is (0.9 ≈ the 85–95 % accuracy regime of real data).
"""

from __future__ import annotations

import numpy as np


def synthetic_embeddings(
    n_students: int, per_student: int, dim: int = 512, spread: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_students, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_students), per_student)
    noise = rng.standard_normal((len(labels), dim)).astype(np.float32) * (spread / np.sqrt(dim))
    X = centres[labels] + noise
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids = np.array([f"STU{i:05d}" for i in labels])
    return X.astype(np.float32), ids
