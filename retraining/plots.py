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

from .evaluate import FINE_THRESHOLDS, THRESHOLDS, Evaluation
from .files import atomic_write_bytes, private_mkdir
from .presentation.words import fmt_threshold, natural_order

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
    order = natural_order(list(ev.labels))
    cm = ev.confusion.astype(float)[np.ix_(order, order)]
    labels = [ev.labels[i] for i in order]
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


def plotted_range(ev: Evaluation, threshold: float | None = None) -> tuple[float, float]:
    """The thresholds the curves cover: the table's (0.50-0.98), widened to show the threshold in use
    and the recommended one with some curve on each side."""
    marks = [t for t in (threshold, ev.recommended_threshold) if t is not None]
    low = min([THRESHOLDS[0], *(t - 0.05 for t in marks)])
    high = max([THRESHOLDS[-1], *(t + 0.01 for t in marks)])
    return max(FINE_THRESHOLDS[0], float(np.floor(low * 20)) / 20), min(FINE_THRESHOLDS[-1], high)


def threshold_png(path: Path, ev: Evaluation, threshold: float | None = None) -> Path | None:
    """Recognition vs stranger false-accept vs rejection across the thresholds, the one in use marked."""
    low, high = plotted_range(ev, threshold)
    grid = [t for t in FINE_THRESHOLDS if low - 1e-9 <= t <= high + 1e-9]
    fig, ax = _figure(7, 4.5)
    if ev.open_set is not None:
        rows = [r for r in ev.open_set.fine_sweep if low - 1e-9 <= r.threshold <= high + 1e-9] or ev.open_set.sweep
        t = [r.threshold for r in rows]
        ax.plot(t, [r.recognition_rate for r in rows], "-", label="enrolled students recognised")
        ax.plot(t, [r.false_accept_rate for r in rows], "-", color="crimson", label="strangers accepted (false accept)")
        ax.plot(t, [r.rejection_rate for r in rows], "--", color="gray", label="enrolled students rejected")
        ax.axhline(
            ev.open_set.max_far, color="crimson", ls=":", lw=1, label=f"stranger target {ev.open_set.max_far:.0%}"
        )
    elif ev.sweep:
        closed = ev.sweep_with(*grid)
        t = [r.threshold for r in closed]
        ax.plot(t, [r.recognition_rate for r in closed], "-", label="recognised")
        ax.plot(t, [r.rejection_rate for r in closed], "--", color="gray", label="rejected")
    else:
        return None
    if threshold is not None and abs(threshold - ev.recommended_threshold) > 1e-9:
        ax.axvline(threshold, color="black", lw=1.2, label=f"in use {fmt_threshold(threshold)}")
        ax.axvline(
            ev.recommended_threshold, color="green", ls="--", lw=1, label=f"recommended {ev.recommended_threshold:.2f}"
        )
    else:
        ax.axvline(
            ev.recommended_threshold,
            color="green",
            ls="--",
            lw=1,
            label=f"in use (recommended) {ev.recommended_threshold:.2f}",
        )
    ax.set_xlim(low - 0.01, high + 0.01)
    ax.set_xlabel("confidence threshold")
    ax.set_ylabel("share of photos")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Threshold sweep")
    ax.legend(fontsize=8, loc="center left")
    fig.tight_layout()
    _save(fig, path)
    return path


def confidence_png(path: Path, ev: Evaluation, threshold: float | None = None) -> Path | None:
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
    if threshold is not None and abs(threshold - ev.recommended_threshold) > 1e-9:
        ax.axvline(threshold, color="black", lw=1.2, label="threshold in use")
    ax.set_xlabel("confidence")
    ax.set_ylabel("photos")
    ax.set_title("Confidence: enrolled students vs strangers (held-out folds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return path


#: The pictures a run draws (the ones that apply), in ``models/plots/``.
PLOT_NAMES = ("confusion_matrix.png", "threshold_curves.png", "confidence_histogram.png")


def write_plots(folder: Path, ev: Evaluation, threshold: float | None = None) -> list[Path]:
    """All plots into ``folder``, ``threshold`` (the one in use; None: the recommended) marked; a plot
    that fails is logged, never fatal."""
    private_mkdir(folder)
    written = []
    drawers = (
        lambda p: confusion_png(p, ev),
        lambda p: threshold_png(p, ev, threshold),
        lambda p: confidence_png(p, ev, threshold),
    )
    for name, draw in zip(PLOT_NAMES, drawers):
        try:
            out = draw(folder / name)
        except Exception as err:  # a plotting problem must not lose a trained model
            log.warning("Could not draw %s (%s: %s)", name, type(err).__name__, err)
            log.debug("Plot %s failed", name, exc_info=True)
            continue
        if out is not None:
            written.append(out)
    return written
