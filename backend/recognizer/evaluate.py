"""How good is the model, and which confidence threshold should the backend use?

Held-out evaluation on a per-student split: the scaler and classifier are fitted on
the training part only, then scored on the rest. Students with too few photos stay
entirely in training (and are listed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from .train import fit_model

log = logging.getLogger(__name__)

THRESHOLDS: tuple[float, ...] = (0.50, 0.60, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 0.98)
DEFAULT_THRESHOLD = 0.70
#: Fewer held-out photos than this and the sweep cannot justify moving off the default.
MIN_TEST_PHOTOS = 30
#: A threshold must keep at least this share of accepted answers correct …
TARGET_ACCEPTED_ACCURACY = 0.99
#: … while turning away at most this share of enrolled students' photos.
MAX_REJECTION = 0.10


@dataclass
class SweepRow:
    threshold: float
    accepted_rate: float  # share of test photos with confidence ≥ threshold
    rejection_rate: float
    accuracy_of_accepted: float | None  # None when nothing was accepted
    recognition_rate: float  # correct AND accepted, over all test photos
    misidentification_rate: float  # wrong AND accepted, over all test photos


@dataclass
class Evaluation:
    n_train: int
    n_test: int
    accuracy: float | None
    labels: list[str]
    confusion: np.ndarray
    report_text: str
    report_dict: dict
    confidence: dict[str, dict[str, float]]
    sweep: list[SweepRow]
    recommended_threshold: float
    recommendation_reason: str
    train_only_students: list[str] = field(default_factory=list)
    test_true: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    test_pred: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    test_conf: np.ndarray = field(default_factory=lambda: np.zeros(0))


def split_per_student(labels: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Stratified split done per student: ⌈test_size·n⌉ photos (at least one) of each student
    with ≥ 2 photos go to the test part. Returns (train_idx, test_idx, train-only students)."""
    rng = np.random.default_rng(seed)
    train, test, train_only = [], [], []
    for student in np.unique(labels):
        idx = np.flatnonzero(labels == student)
        if len(idx) < 2:
            train_only.append(str(student))
            train.extend(idx)
            continue
        idx = rng.permutation(idx)
        n_test = min(len(idx) - 1, max(1, int(round(test_size * len(idx)))))
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(test, dtype=int)), train_only


def sweep_thresholds(true: np.ndarray, pred: np.ndarray, conf: np.ndarray,
                     thresholds: tuple[float, ...] = THRESHOLDS) -> list[SweepRow]:
    """Accepted / rejected / correct shares of the test photos at each threshold."""
    rows = []
    n = max(len(true), 1)
    correct = true == pred
    for t in thresholds:
        accepted = conf >= t
        n_acc = int(accepted.sum())
        rows.append(SweepRow(
            threshold=t,
            accepted_rate=n_acc / n,
            rejection_rate=1 - n_acc / n,
            accuracy_of_accepted=float(correct[accepted].mean()) if n_acc else None,
            recognition_rate=float((correct & accepted).sum() / n),
            misidentification_rate=float((~correct & accepted).sum() / n),
        ))
    return rows


def recommend_threshold(sweep: list[SweepRow], n_test: int) -> tuple[float, str]:
    """Pick the strictest threshold that still recognises enrolled students reliably.

    Known-student photos cannot show how often a stranger is accepted, so among the
    thresholds that keep accepted answers ≥ 99 % correct and reject ≤ 10 % of enrolled
    photos we take the highest. Too little evidence → the default 0.70.
    """
    if n_test < MIN_TEST_PHOTOS:
        return DEFAULT_THRESHOLD, (
            f"only {n_test} held-out photos (< {MIN_TEST_PHOTOS}): too few to tune, so the default "
            f"{DEFAULT_THRESHOLD:.2f} is used. Add photos to get a tuned threshold."
        )
    good = [r for r in sweep if r.accuracy_of_accepted is not None
            and r.accuracy_of_accepted >= TARGET_ACCEPTED_ACCURACY and r.rejection_rate <= MAX_REJECTION]
    if good:
        best = max(good, key=lambda r: r.threshold)
        return best.threshold, (
            f"highest threshold at which accepted answers are ≥ {TARGET_ACCEPTED_ACCURACY:.0%} correct "
            f"({best.accuracy_of_accepted:.1%}) while rejecting ≤ {MAX_REJECTION:.0%} of enrolled photos "
            f"({best.rejection_rate:.1%}); stricter is safer against strangers."
        )
    return DEFAULT_THRESHOLD, (
        f"inconclusive: no threshold keeps accepted answers ≥ {TARGET_ACCEPTED_ACCURACY:.0%} correct while "
        f"rejecting ≤ {MAX_REJECTION:.0%}; the default {DEFAULT_THRESHOLD:.2f} is used. "
        "Add more, clearer photos per student (see the data-quality notes)."
    )


def _confidence_stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"count": 0}
    return {"count": int(len(values)), "mean": float(values.mean()), "median": float(np.median(values)),
            "p05": float(np.percentile(values, 5)), "min": float(values.min()), "max": float(values.max())}


def evaluate(embeddings: np.ndarray, labels: np.ndarray, *, test_size: float = 0.2, seed: int = 42) -> Evaluation:
    """Fit on the training split, score the held-out split, sweep thresholds."""
    labels = np.asarray(labels).astype(str)
    train_idx, test_idx, train_only = split_per_student(labels, test_size, seed)
    students = sorted(np.unique(labels).tolist())
    if len(test_idx) == 0 or len(np.unique(labels[train_idx])) < 2:
        threshold, reason = recommend_threshold([], 0)
        return Evaluation(len(train_idx), 0, None, students, np.zeros((0, 0), dtype=int), "no held-out photos", {},
                          {}, [], threshold, reason, train_only)
    model = fit_model(embeddings[train_idx], labels[train_idx], seed=seed)
    proba = model.predict_proba(embeddings[test_idx])
    pred = model.classes[np.argmax(proba, axis=1)]
    conf = proba.max(axis=1)
    true = labels[test_idx]
    correct = pred == true
    sweep = sweep_thresholds(true, pred, conf)
    threshold, reason = recommend_threshold(sweep, len(test_idx))
    present = sorted(set(true) | set(pred))
    return Evaluation(
        n_train=len(train_idx),
        n_test=len(test_idx),
        accuracy=float(accuracy_score(true, pred)),
        labels=present,
        confusion=confusion_matrix(true, pred, labels=present),
        report_text=classification_report(true, pred, labels=present, zero_division=0),
        report_dict=classification_report(true, pred, labels=present, zero_division=0, output_dict=True),
        confidence={"correct": _confidence_stats(conf[correct]), "wrong": _confidence_stats(conf[~correct])},
        sweep=sweep,
        recommended_threshold=threshold,
        recommendation_reason=reason,
        train_only_students=train_only,
        test_true=true,
        test_pred=pred,
        test_conf=conf,
    )
