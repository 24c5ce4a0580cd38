"""The report's pictures are drawn without touching process-wide matplotlib state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fakes import DIM

from retraining.evaluate import evaluate
from retraining.plots import write_plots


def test_plots_are_valid_pngs_and_leave_the_callers_matplotlib_backend_alone(tmp_path: Path) -> None:
    import matplotlib

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, DIM))
    X = np.concatenate([c + 0.3 * rng.standard_normal((8, DIM)) for c in centres]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.repeat([f"STU{i:03d}" for i in range(6)], 8)
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a caller (a web backend, a notebook) with a backend of its own
    try:
        written = write_plots(tmp_path, evaluate(X, y, seed=0))
        assert matplotlib.get_backend() == "svg"  # no matplotlib.use(..., force=True) behind the caller's back
    finally:
        matplotlib.use(before)
    assert {p.name for p in written} == {"confusion_matrix.png", "threshold_curves.png", "confidence_histogram.png"}
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
