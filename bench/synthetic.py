"""Synthetic face embeddings for scaling benchmarks: per-class clusters around unit-norm centres.

Not real faces: each student is a random unit-norm centre in 512-d; his photos are that
centre plus isotropic Gaussian noise, re-normalised (like L2-normalised FaceNet output).
``spread`` sets how hard the problem is. Held-out accuracy of ``fit_model`` (20 training
photos per student, bench/bench_train.py) at 200 / 500 / 2000 / 5000 students: spread 0.9
100 % at every size (every photo also ranked right out of fold), 3.5 97.7 / 96.2 / 92.4 /
88.6 %, 4.2 84.3 / 77.3 / 64.4 / 55.3 %; real LFW embeddings (dlib) give 98.5 %.
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
