"""PNG pictures of an evaluation, written beside the report (matplotlib, no display needed).

Each picture is its own ``matplotlib.figure.Figure`` saved straight to PNG: no pyplot, so
no process-wide backend switch (``matplotlib.use``) and no global figure registry that a
caller's own plotting, or another thread, would share.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import Evaluation
from .files import atomic_write_bytes, private_mkdir

log = logging.getLogger(__name__)

#: Above this many students the confusion heat map shows only students involved in errors.
FULL_MATRIX_MAX = 40


def _figure(width: float, height: float):  # type: ignore[no-untyped-def]
    """A new Figure and its one Axes, drawn by the Agg renderer when saved (whatever backend is active)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def _save(fig: Any, path: Path) -> None:
    """The figure as PNG, written owner-only like every output (it shows students' names)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def confusion_png(path: Path, ev: Evaluation) -> Path | None:
    """Row-normalised confusion heat map; with many students only rows/columns with errors."""
    if ev.confusion.size == 0:
        return None
    cm = ev.confusion.astype(float)
    labels = list(ev.labels)
    title = "Confusion matrix (row-normalised, held-out photos)"
    if len(labels) > FULL_MATRIX_MAX:
        off = cm - np.diag(np.diag(cm))
        keep = np.flatnonzero(off.sum(axis=0) + off.sum(axis=1))
        if len(keep) == 0:
            keep = np.arange(min(FULL_MATRIX_MAX, len(labels)))
            title = f"Confusion matrix: no errors among {len(labels)} students (first {len(keep)} shown)"
        else:
            title = f"Confusion matrix: the {len(keep)} of {len(labels)} students involved in errors"
        cm, labels = cm[np.ix_(keep, keep)], [labels[i] for i in keep]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.25 * len(labels), 20)
    fig, ax = _figure(size, size)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted student")
    ax.set_ylabel("true student")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save(fig, path)
    return path


def threshold_png(path: Path, ev: Evaluation) -> Path | None:
    """Recognition vs stranger false-accept vs rejection across the threshold sweep."""
    fig, ax = _figure(7, 4.5)
    if ev.open_set is not None:
        rows = ev.open_set.sweep
        t = [r.threshold for r in rows]
        ax.plot(t, [r.recognition_rate for r in rows], "o-", label="enrolled students recognised")
        ax.plot(
            t, [r.false_accept_rate for r in rows], "s-", color="crimson", label="strangers accepted (false accept)"
        )
        ax.plot(t, [r.rejection_rate for r in rows], "^-", color="gray", label="enrolled students rejected")
        ax.axhline(
            ev.open_set.max_far, color="crimson", ls=":", lw=1, label=f"stranger target {ev.open_set.max_far:.0%}"
        )
    elif ev.sweep:
        t = [r.threshold for r in ev.sweep]
        ax.plot(t, [r.recognition_rate for r in ev.sweep], "o-", label="recognised")
        ax.plot(t, [r.rejection_rate for r in ev.sweep], "^-", color="gray", label="rejected")
    else:
        return None
    ax.axvline(
        ev.recommended_threshold, color="green", ls="--", lw=1, label=f"recommended {ev.recommended_threshold:.2f}"
    )
    ax.set_xlabel("confidence threshold")
    ax.set_ylabel("share of photos")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Threshold sweep")
    ax.legend(fontsize=8, loc="center left")
    fig.tight_layout()
    _save(fig, path)
    return path


def confidence_png(path: Path, ev: Evaluation) -> Path | None:
    """Histograms of the confidence given to enrolled students' and strangers' photos."""
    if ev.open_set is None:
        return None
    fig, ax = _figure(7, 4.5)
    bins = np.linspace(0, 1, 41)
    os_ = ev.open_set
    ax.hist(os_.known_confidence[os_.known_correct], bins=bins, alpha=0.6, label="enrolled, correct answer")
    if (~os_.known_correct).any():
        ax.hist(
            os_.known_confidence[~os_.known_correct],
            bins=bins,
            alpha=0.6,
            color="orange",
            label="enrolled, wrong answer",
        )
    ax.hist(os_.unknown_confidence, bins=bins, alpha=0.6, color="crimson", label="strangers (not enrolled)")
    ax.axvline(ev.recommended_threshold, color="green", ls="--", lw=1, label="recommended threshold")
    ax.set_xlabel("confidence")
    ax.set_ylabel("photos")
    ax.set_title("Confidence: enrolled students vs strangers (held-out folds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return path


def write_plots(folder: Path, ev: Evaluation) -> list[Path]:
    """All plots into ``folder``; a plot that fails is logged, never fatal."""
    private_mkdir(folder)
    written = []
    for name, fn in (
        ("confusion_matrix.png", confusion_png),
        ("threshold_curves.png", threshold_png),
        ("confidence_histogram.png", confidence_png),
    ):
        try:
            out = fn(folder / name, ev)
        except Exception as err:  # a plotting problem must not lose a trained model
            log.warning("Could not draw %s (%s: %s)", name, type(err).__name__, err)
            log.debug("Plot %s failed", name, exc_info=True)
            continue
        if out is not None:
            written.append(out)
    return written
