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
from sklearn.pipeline import Pipeline

from backend.recognizer.openset import features

from .train import class_centres, fit_calibrator, fit_model

log = logging.getLogger(__name__)

#: The nine rows of the report's threshold tables.
THRESHOLDS: tuple[float, ...] = (0.50, 0.60, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 0.98)
#: The thresholds the recommendation is chosen from: every hundredth of the curve, so the choice is
#: not forced onto one of the nine table rows (on 40 LFW people with 5 % of photos in wrong folders,
#: the nine rows left 0.98 and 6 % recognition; this grid finds the threshold where strangers are
#: just kept out).
FINE_THRESHOLDS: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(1, 100))
DEFAULT_THRESHOLD = 0.70
#: Fewer held-out photos than this and the sweep cannot justify moving off the default.
MIN_TEST_PHOTOS = 30
#: A threshold must keep at least this share of accepted answers correct …
TARGET_ACCEPTED_ACCURACY = 0.99
#: … while turning away at most this share of enrolled students' photos.
MAX_REJECTION = 0.10
#: Default target: at most this share of strangers' photos accepted as some student.
DEFAULT_MAX_FAR = 0.01
#: Open-set folds: each holds out this share of the students as strangers.
UNKNOWN_FRACTION = 0.2
#: A threshold that keeps strangers out by turning away most students is not a solution.
MIN_USEFUL_RECOGNITION = 0.5
MAX_OPEN_SET_FOLDS = 5


@dataclass
class SweepRow:
    threshold: float
    accepted_rate: float  # share of test photos with confidence ≥ threshold
    rejection_rate: float
    accuracy_of_accepted: float | None  # None when nothing was accepted
    recognition_rate: float  # correct AND accepted, over all test photos
    misidentification_rate: float  # wrong AND accepted, over all test photos


@dataclass
class OpenSetRow:
    threshold: float
    recognition_rate: float  # enrolled photos answered correctly AND accepted
    false_accept_rate: float  # strangers' photos accepted as any student
    misidentification_rate: float  # enrolled photos accepted as the WRONG student
    rejection_rate: float  # enrolled photos turned away (reported Unknown)
    false_accept_upper95: float = 1.0  # one-sided 95 % upper bound (Clopper-Pearson) of false_accept_rate


@dataclass
class OpenSet:
    """Stranger-safety measurement: students held out as strangers, fold by fold."""

    n_folds: int
    unknown_students: list[list[str]]
    n_known_photos: int
    n_unknown_photos: int
    sweep: list[OpenSetRow]
    known_confidence: np.ndarray  # cross-fitted confidences, enrolled test photos
    known_correct: np.ndarray
    unknown_confidence: np.ndarray  # cross-fitted confidences, strangers' photos
    calibrator: Pipeline | None  # fitted on every fold: published with the model
    max_far: float
    target_reached: bool = False
    fine_sweep: list[OpenSetRow] = field(default_factory=list)  # FINE_THRESHOLDS: what the choice is made on
    # whose each row is (the student; for strangers the one held out): per-session rates (session_rates.py)
    known_groups: np.ndarray | None = None
    unknown_groups: np.ndarray | None = None

    def row_at(self, threshold: float) -> OpenSetRow:
        """Recognition, false accepts and their 95 % upper bound at any threshold."""
        return open_set_sweep(self.known_confidence, self.known_correct, self.unknown_confidence, (threshold,))[0]


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
    open_set: OpenSet | None = None
    test_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # rows of X held out

    @property
    def stranger_target_met(self) -> bool | None:
        """Whether the stranger false-accept target was met; None when it could not be measured."""
        return None if self.open_set is None else bool(self.open_set.target_reached)


def split_per_student(labels: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Stratified split done per student: ⌈test_size·n⌉ photos (at least one) of each student
    with ≥ 2 photos go to the test part. Returns (train_idx, test_idx, train-only students)."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    train_only: list[str] = []
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
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64)), train_only


def sweep_thresholds(
    true: np.ndarray, pred: np.ndarray, conf: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS
) -> list[SweepRow]:
    """Accepted / rejected / correct shares of the test photos at each threshold."""
    rows = []
    n = max(len(true), 1)
    correct = true == pred
    for t in thresholds:
        accepted = conf >= t
        n_acc = int(accepted.sum())
        rows.append(
            SweepRow(
                threshold=t,
                accepted_rate=n_acc / n,
                rejection_rate=1 - n_acc / n,
                accuracy_of_accepted=float(correct[accepted].mean()) if n_acc else None,
                recognition_rate=float((correct & accepted).sum() / n),
                misidentification_rate=float((~correct & accepted).sum() / n),
            )
        )
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
    good = [
        r
        for r in sweep
        if r.accuracy_of_accepted is not None
        and r.accuracy_of_accepted >= TARGET_ACCEPTED_ACCURACY
        and r.rejection_rate <= MAX_REJECTION
    ]
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
    return {
        "count": int(len(values)),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p05": float(np.percentile(values, 5)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def open_set_sweep(
    known_conf: np.ndarray,
    known_correct: np.ndarray,
    unknown_conf: np.ndarray,
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> list[OpenSetRow]:
    """Recognition, stranger false-accept, misidentification and rejection rates per threshold."""
    from scipy.stats import beta

    n_known, n_unknown = max(len(known_conf), 1), max(len(unknown_conf), 1)
    rows = []
    for t in thresholds:
        accepted = known_conf >= t
        k = int((unknown_conf >= t).sum())
        upper = 1.0 if k >= len(unknown_conf) else float(beta.ppf(0.95, k + 1, max(len(unknown_conf) - k, 1)))
        rows.append(
            OpenSetRow(
                threshold=t,
                recognition_rate=float((accepted & known_correct).sum() / n_known),
                false_accept_rate=float((unknown_conf >= t).sum() / n_unknown),
                misidentification_rate=float((accepted & ~known_correct).sum() / n_known),
                rejection_rate=float((~accepted).sum() / n_known),
                false_accept_upper95=upper,
            )
        )
    return rows


def recommend_open_set(sweep: list[OpenSetRow], max_far: float) -> tuple[float, str, bool]:
    """The threshold with the best recognition among those whose stranger false-accept rate
    is ≤ ``max_far`` and that still recognise at least half of the enrolled photos (ties →
    the stricter one). Returns (threshold, reason, target reached)."""
    ok = [r for r in sweep if r.false_accept_rate <= max_far and r.recognition_rate >= MIN_USEFUL_RECOGNITION]
    if ok:
        best = max(ok, key=lambda r: (round(r.recognition_rate, 9), r.threshold))
        return (
            best.threshold,
            (
                f"strangers accepted at this threshold: {best.false_accept_rate:.1%} (target ≤ {max_far:.1%}); "
                f"enrolled students recognised: {best.recognition_rate:.1%} - the best recognition among "
                "thresholds that meet the stranger target."
            ),
            True,
        )
    if not sweep:
        return DEFAULT_THRESHOLD, "no stranger measurement possible; default used.", False
    safest = min(sweep, key=lambda r: (r.false_accept_rate, -r.threshold))
    return (
        safest.threshold,
        (
            f"NO threshold keeps strangers' false accepts ≤ {max_far:.1%} while recognising at least "
            f"{MIN_USEFUL_RECOGNITION:.0%} of enrolled students: the safest, {safest.threshold:.2f}, "
            f"accepts {safest.false_accept_rate:.1%} of strangers (recognising {safest.recognition_rate:.1%} of "
            "students). Add more and clearer photos per student (5-20, front-facing, good light), fix the photos "
            "listed under data quality, then retrain."
        ),
        False,
    )


def _open_set_folds(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """Disjoint groups of students to hold out as strangers (each student once, ≤ 5 folds)."""
    students = np.unique(labels)
    n_unknown = max(1, int(round(UNKNOWN_FRACTION * len(students))))
    n_folds = min(MAX_OPEN_SET_FOLDS, len(students) // n_unknown)
    perm = np.random.default_rng(seed).permutation(students)
    return [perm[i * n_unknown : (i + 1) * n_unknown] for i in range(n_folds)]


def evaluate_open_set(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    test_size: float = 0.2,
    seed: int = 42,
    max_far: float = DEFAULT_MAX_FAR,
) -> OpenSet | None:
    """Hold out whole students as strangers, train without them, score their photos.

    Confidences are cross-fitted: fold k is scored by a calibrator fitted on the other
    folds, so the false-accept rates are not measured on the data that tuned them.
    None when there are fewer than 3 students (no stranger can be simulated).
    """
    labels = np.asarray(labels).astype(str)
    if len(np.unique(labels)) < 3:
        return None
    rows_f: list[np.ndarray] = []
    rows_y: list[np.ndarray] = []
    rows_fold: list[np.ndarray] = []
    rows_known: list[np.ndarray] = []
    rows_correct: list[np.ndarray] = []
    rows_group: list[np.ndarray] = []
    folds = _open_set_folds(labels, seed)
    for k, unknown in enumerate(folds):
        is_unknown = np.isin(labels, unknown)
        known_idx = np.flatnonzero(~is_unknown)
        train, test, _ = split_per_student(labels[known_idx], test_size, seed + k)
        train, test = known_idx[train], known_idx[test]
        model = fit_model(embeddings[train], labels[train], seed=seed)
        centres = (
            model.open_set.centres
            if model.open_set is not None
            else class_centres(embeddings[train], labels[train], model.classes)
        )
        for idx, enrolled in ((test, True), (np.flatnonzero(is_unknown), False)):
            if len(idx) == 0:
                continue
            proba = model.predict_proba(embeddings[idx])
            pred = model.classes[np.argmax(proba, axis=1)]
            right = (pred == labels[idx]) if enrolled else np.zeros(len(idx), dtype=bool)
            rows_f.append(features(proba, embeddings[idx], centres))
            rows_y.append(right)
            rows_fold.append(np.full(len(idx), k))
            rows_known.append(np.full(len(idx), enrolled))
            rows_correct.append(right)
            rows_group.append(labels[idx])
    F, Y = np.concatenate(rows_f), np.concatenate(rows_y).astype(int)
    fold = np.concatenate(rows_fold)
    known: np.ndarray = np.concatenate(rows_known)
    correct: np.ndarray = np.concatenate(rows_correct)
    group = np.concatenate(rows_group)
    conf = F[:, 0].copy()  # fallback: the SVM probability
    for k in range(len(folds)):
        others = fold != k
        calibrator = fit_calibrator(F[others], Y[others], seed=seed)
        if calibrator is not None:
            conf[fold == k] = calibrator.predict_proba(F[fold == k])[:, 1]
    sweep = open_set_sweep(conf[known], correct[known], conf[~known])
    fine = open_set_sweep(conf[known], correct[known], conf[~known], FINE_THRESHOLDS)
    return OpenSet(
        n_folds=len(folds),
        unknown_students=[sorted(map(str, u)) for u in folds],
        n_known_photos=int(known.sum()),
        n_unknown_photos=int((~known).sum()),
        sweep=sweep,
        known_confidence=conf[known],
        known_correct=correct[known],
        unknown_confidence=conf[~known],
        calibrator=fit_calibrator(F, Y, seed=seed),
        max_far=max_far,
        target_reached=recommend_open_set(fine, max_far)[2],
        fine_sweep=fine,
        known_groups=group[known],
        unknown_groups=group[~known],
    )


def evaluate(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    test_size: float = 0.2,
    seed: int = 42,
    max_far: float = DEFAULT_MAX_FAR,
) -> Evaluation:
    """Closed-set evaluation (known students) + open-set stranger measurement + threshold choice."""
    labels = np.asarray(labels).astype(str)
    open_set = evaluate_open_set(embeddings, labels, test_size=test_size, seed=seed, max_far=max_far)
    train_idx, test_idx, train_only = split_per_student(labels, test_size, seed)
    students = sorted(np.unique(labels).tolist())
    if len(test_idx) == 0 or len(np.unique(labels[train_idx])) < 2:
        threshold, reason = recommend_threshold([], 0)
        return Evaluation(
            len(train_idx),
            0,
            None,
            students,
            np.zeros((0, 0), dtype=int),
            "no held-out photos",
            {},
            {},
            [],
            threshold,
            reason,
            train_only,
            open_set=open_set,
        )
    calibrator = open_set.calibrator if open_set is not None else None
    model = fit_model(embeddings[train_idx], labels[train_idx], seed=seed, open_set_calibrator=calibrator)
    _, pred, conf = model.recognize(embeddings[test_idx])
    true = labels[test_idx]
    correct = pred == true
    sweep = sweep_thresholds(true, pred, conf)
    if open_set is not None and open_set.calibrator is not None:
        threshold, reason, _ = recommend_open_set(open_set.fine_sweep, max_far)
    else:
        threshold, reason = recommend_threshold(sweep, len(test_idx))
        reason += " (Stranger safety could not be measured: it needs at least 3 students.)"
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
        test_index=test_idx,
        open_set=open_set,
    )
