"""How good is the model, and which confidence threshold should the backend use?

Held-out evaluation on a per-student split: the scaler and classifier are fitted on
the training part only, then scored on the rest. Students with too few photos stay
entirely in training (and are listed).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix
from sklearn.pipeline import Pipeline

from backend.recognizer.openset import features

from .evidence import StrangerEvidence, merge_groups
from .stats import upper95
from .thresholds import (  # noqa: F401  (re-exported: the decisions and their constants live there)
    DEFAULT_THRESHOLD,
    MAX_REJECTION,
    MIN_TEST_PHOTOS,
    MIN_USEFUL_RECOGNITION,
    TARGET_ACCEPTED_ACCURACY,
    Recommendation,
    recommend_closed_set,
)
from .thresholds import recommend_open_set as choose_open_set
from .train import class_centres, fit_calibrator, fit_model

log = logging.getLogger(__name__)

#: The nine rows of the report's threshold tables.
THRESHOLDS: tuple[float, ...] = (0.50, 0.60, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 0.98)
#: The thresholds the recommendation is chosen from: every hundredth of the curve, so the choice is
#: not forced onto one of the nine table rows (on 40 LFW people with 5 % of photos in wrong folders,
#: the nine rows left 0.98 and 6 % recognition; this grid finds the threshold where strangers are
#: just kept out).
FINE_THRESHOLDS: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(1, 100))
#: Default target: at most this share of strangers' photos accepted as some student.
DEFAULT_MAX_FAR = 0.01
#: Open-set folds: each holds out this share of the students as strangers.
UNKNOWN_FRACTION = 0.2
MAX_OPEN_SET_FOLDS = 5
#: A held-out student is taken for an enrolled one (see repeatedly_accepted) when at least this many ...
REPEATED_MIN = 3
#: ... and this share of its photos are accepted as the same other student ...
REPEATED_SHARE = 0.5
#: ... with at least this confidence ("more likely the right student than not").
REPEATED_CONFIDENCE = 0.5


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


@dataclass(frozen=True)
class LeftOut:
    """What the stranger estimate did not count as a stranger, and why (the report lists it)."""

    #: students that look like one person (data quality): held out as strangers together
    held_together: tuple[tuple[str, ...], ...] = ()
    #: (student, the student its held-out photos were taken for, photos accepted as it, photos scored):
    #: not counted as a stranger, and counted as one person with that student
    accepted_as: tuple[tuple[str, str, int, int], ...] = ()
    #: (finding kind, photos): photos that are no fair test (they still train the model)
    photos: tuple[tuple[str, int], ...] = ()
    #: stranger photos not counted because of ``accepted_as``
    stranger_photos_dropped: int = 0

    @property
    def n_photos(self) -> int:
        return sum(n for _, n in self.photos)

    def __bool__(self) -> bool:
        return bool(self.held_together or self.accepted_as or self.photos)


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
    fine_sweep: list[OpenSetRow] = field(default_factory=list)  # FINE_THRESHOLDS: what the choice is made on
    left_out: LeftOut = field(default_factory=LeftOut)  # what was not counted as a stranger, and why
    enrolled_ratio: float = 1.0  # students of the published model / students of a fold's model (mean)
    #: whose each row is: the student of an enrolled test photo, the held-out person of a stranger's photo
    #: (the false-accept bound's bootstrap and the per-session rates, session_rates.py, group by them)
    known_groups: np.ndarray | None = None
    unknown_groups: np.ndarray | None = None
    #: the photos of the held-out students left out as ``left_out.accepted_as`` (scored like the
    #: strangers' photos) and whose each is: not a stranger for the per-photo estimate, but a twin
    #: or look-alike sitting in a class is one for the session rule (session_rates.py)
    lookalike_confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lookalike_groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    #: enrolled test photos that are frames of the second half of a clip whose first half trained
    #: (:func:`calibration_sources`): they teach the calibrator, but no recognition rate rests on them alone
    n_known_within_clip: int = 0

    @property
    def recognition_measured(self) -> bool:
        """Whether any enrolled test photo came from a source the fold's model never saw."""
        return self.n_known_photos > self.n_known_within_clip

    def row_at(self, threshold: float) -> OpenSetRow:
        """Recognition, false accepts and their 95 % upper bound at any threshold (the fine sweep's
        row where it has one: the recommended threshold always is)."""
        for row in self.fine_sweep:
            if row.threshold == threshold:
                return row
        return open_set_sweep(
            self.known_confidence,
            self.known_correct,
            self.unknown_confidence,
            (threshold,),
            unknown_people=self.unknown_groups,
            enrolled_ratio=self.enrolled_ratio,
        )[0]

    def sweep_with(self, *thresholds: float) -> list[OpenSetRow]:
        """The report's table: the :data:`THRESHOLDS` rows and a row at each of ``thresholds`` (the one
        in use, the recommended one) that is not among them, in threshold order."""
        extra = [self.row_at(t) for t in _missing(thresholds, [r.threshold for r in self.sweep])]
        return sorted([*self.sweep, *extra], key=lambda r: r.threshold)


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
    recommendation: Recommendation  # the recommended threshold and what it rests on (thresholds.py decides)
    train_only_students: list[str] = field(default_factory=list)
    test_true: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    test_pred: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    test_conf: np.ndarray = field(default_factory=lambda: np.zeros(0))
    open_set: OpenSet | None = None
    test_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # rows of X held out

    @property
    def recommended_threshold(self) -> float:
        return self.recommendation.threshold

    @property
    def recommendation_reason(self) -> str:
        """Why that threshold, in words (:func:`~retraining.presentation.words.recommendation_reason`)."""
        from .presentation.words import recommendation_reason

        return recommendation_reason(self.recommendation)

    def sweep_with(self, *thresholds: float) -> list[SweepRow]:
        """The known-faces table: the :data:`THRESHOLDS` rows and a row at each of ``thresholds`` (the one
        in use, the recommended one) that is not among them, in threshold order."""
        if not self.sweep:
            return []
        missing = _missing(thresholds, [r.threshold for r in self.sweep])
        extra = sweep_thresholds(self.test_true, self.test_pred, self.test_conf, missing) if missing else []
        return sorted([*self.sweep, *extra], key=lambda r: r.threshold)


def _missing(thresholds: Sequence[float], present: Sequence[float]) -> tuple[float, ...]:
    """``thresholds`` that are not (to 1e-9) in ``present``, once each, in order."""
    out: list[float] = []
    for t in thresholds:
        if all(abs(t - p) > 1e-9 for p in [*present, *out]):
            out.append(float(t))
    return tuple(out)


def split_per_student(
    labels: np.ndarray, test_size: float, seed: int, sources: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Stratified split done per student: ⌈test_size·n⌉ photos (at least one) of each student
    with ≥ 2 photos go to the test part. Returns (train_idx, test_idx, train-only students).

    ``sources``: each row's source file. The frames of one clip are near copies of each other,
    so a source is never split: whole sources go to the test part, and a student with one
    source (one clip and nothing else) is trained on only."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    train_only: list[str] = []
    for student in np.unique(labels):
        idx = np.flatnonzero(labels == student)
        own = None if sources is None else np.asarray(sources)[idx]
        if own is not None and len(np.unique(own)) < len(idx):
            _split_sources(idx, own, test_size, rng, train, test, train_only, str(student))
            continue
        if len(idx) < 2:
            train_only.append(str(student))
            train.extend(idx)
            continue
        idx = rng.permutation(idx)
        n_test = min(len(idx) - 1, max(1, int(round(test_size * len(idx)))))
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64)), train_only


def calibration_sources(labels: np.ndarray, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sources the stranger measurement splits by, and which rows are cut from one clip.

    A student whose rows all come from one clip (enrolled from a clip and nothing else) could
    never have an enrolled test photo, so the calibrator would learn what a right answer looks
    like from nobody, and a model of such students would take strangers for them. Their clip
    is cut in two by time (rows are in time order) for the stranger measurement only: the
    second half tests a model trained on the first. Those answers look surer than a photo of
    another day would, so the calibrator they teach is on the strict side; the held-out accuracy
    never uses them, and no recognition rate is reported from them alone."""
    out = np.asarray(sources).astype(str).astype(object)
    within = np.zeros(len(out), dtype=bool)
    for student in np.unique(labels):
        idx = np.flatnonzero(labels == student)
        if len(idx) >= 4 and len(np.unique(out[idx])) == 1:
            half = len(idx) // 2
            out[idx[:half]] = out[idx[:half]] + "#first-half"
            out[idx[half:]] = out[idx[half:]] + "#second-half"
            within[idx] = True
    return out.astype(str), within


def _split_sources(
    idx: np.ndarray,
    own: np.ndarray,
    test_size: float,
    rng: np.random.Generator,
    train: list[int],
    test: list[int],
    train_only: list[str],
    student: str,
) -> None:
    """One student's rows split by whole sources: about test_size of the rows, at least one source each side."""
    groups = rng.permutation(np.unique(own))
    if len(groups) < 2:
        train_only.append(student)
        train.extend(idx)
        return
    target = max(1, int(round(test_size * len(idx))))
    taken = 0
    for group in groups[:-1]:  # the last source always trains
        rows = idx[own == group]
        if taken < target and (taken == 0 or taken + len(rows) <= target):
            test.extend(rows)
            taken += len(rows)
        else:
            train.extend(rows)
    train.extend(idx[own == groups[-1]])


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
    """(threshold, reason in words) of :func:`~retraining.thresholds.recommend_closed_set`."""
    from .presentation.words import recommendation_reason

    rec = recommend_closed_set(sweep, n_test)
    return rec.threshold, recommendation_reason(rec)


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


def for_more_students(rate: float, ratio: float) -> float:
    """A stranger false-accept rate measured against K students, for a model that knows ``ratio`` x K.

    A stranger is accepted when SOME enrolled student looks enough like them: with a chance q
    per student, 1 - (1 - q)^K. Each open-set fold's model knows only the students not held
    out (80 % of them), the published model all of them, so the rate measured in the folds is
    carried over to the published model's number of students this way (measured on LFW, clean
    trees of 80 people: the folds' own rate was 0.75-0.8 x the rate measured on never-enrolled
    people; bench/bench_open_set.py).
    """
    if ratio <= 1.0 or rate <= 0.0:
        return float(rate)
    if rate >= 1.0:
        return 1.0
    return float(1.0 - (1.0 - rate) ** ratio)


def open_set_sweep(
    known_conf: np.ndarray,
    known_correct: np.ndarray,
    unknown_conf: np.ndarray,
    thresholds: tuple[float, ...] = THRESHOLDS,
    *,
    unknown_people: np.ndarray | None = None,
    enrolled_ratio: float = 1.0,
) -> list[OpenSetRow]:
    """Recognition, stranger false-accept, misidentification and rejection rates per threshold.

    The false-accept rate is carried over to the published model's number of students
    (``enrolled_ratio``, :func:`for_more_students`). Its 95 % bound is the larger of
    Clopper-Pearson's on the photos and a bootstrap over the held-out people
    (``unknown_people``: whose each stranger photo is): one person's photos are accepted or not
    together (a look-alike of a student), so they are not independent trials.
    """
    n_known, n_unknown = max(len(known_conf), 1), max(len(unknown_conf), 1)
    people_bound = _people_bootstrap_upper95(unknown_conf, unknown_people, thresholds)
    rows = []
    for t, by_people in zip(thresholds, people_bound):
        accepted = known_conf >= t
        k = int((unknown_conf >= t).sum())
        upper = max(upper95(k, len(unknown_conf)), by_people)
        rows.append(
            OpenSetRow(
                threshold=t,
                recognition_rate=float((accepted & known_correct).sum() / n_known),
                false_accept_rate=for_more_students(k / n_unknown, enrolled_ratio),
                misidentification_rate=float((accepted & ~known_correct).sum() / n_known),
                rejection_rate=float((~accepted).sum() / n_known),
                false_accept_upper95=for_more_students(upper, enrolled_ratio),
            )
        )
    return rows


#: Resamples of the held-out people for the false-accept bound (fixed seed: the same run gives the same bound).
BOOTSTRAP_RESAMPLES = 2000


def _people_bootstrap_upper95(
    unknown_conf: np.ndarray, people: np.ndarray | None, thresholds: tuple[float, ...]
) -> np.ndarray:
    """95th percentile of the false-accept rate over resamples of the held-out people, per threshold."""
    if people is None or len(unknown_conf) == 0:
        return np.zeros(len(thresholds))
    ids, person = np.unique(np.asarray(people).astype(str), return_inverse=True)
    if len(ids) < 2:
        return np.zeros(len(thresholds))
    photos = np.bincount(person, minlength=len(ids)).astype(np.float64)
    accepted = np.stack(
        [np.bincount(person, weights=(unknown_conf >= t).astype(np.float64), minlength=len(ids)) for t in thresholds]
    )  # thresholds x people
    rng = np.random.default_rng(0)
    weights = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=BOOTSTRAP_RESAMPLES).astype(np.float64)
    rates = (weights @ accepted.T) / np.maximum(weights @ photos, 1.0)[:, None]  # resamples x thresholds
    return np.asarray(np.quantile(rates, 0.95, axis=0))


def recommend_open_set(sweep: list[OpenSetRow], max_far: float) -> tuple[float, str, bool]:
    """(threshold, reason in words, target reached) of :func:`~retraining.thresholds.recommend_open_set`."""
    from .presentation.words import recommendation_reason

    rec = choose_open_set(sweep, max_far)
    return rec.threshold, recommendation_reason(rec), rec.target_reached


def _open_set_folds(people: np.ndarray, seed: int) -> list[np.ndarray]:
    """Disjoint groups of people to hold out as strangers (each person once, ≤ 5 folds)."""
    units = np.unique(people)
    n_unknown = max(1, int(round(UNKNOWN_FRACTION * len(units))))
    n_folds = min(MAX_OPEN_SET_FOLDS, len(units) // n_unknown)
    perm = np.random.default_rng(seed).permutation(units)
    return [perm[i * n_unknown : (i + 1) * n_unknown] for i in range(n_folds)]


def person_map(students: np.ndarray, groups: Sequence[frozenset[str]]) -> dict[str, str]:
    """student id → the person it stands for: the first id of its group (its own id when not grouped).

    Overlapping groups are one person (:func:`~retraining.evidence.merge_groups`): a student taken
    for one of a pair that looks enrolled twice stands for the same person as both.
    """
    out = {str(s): str(s) for s in students}
    for group in merge_groups(groups):
        members = sorted(g for g in group if g in out)
        for g in members:
            out[g] = members[0]
    return out


def repeatedly_accepted(
    students: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, sources: np.ndarray | None = None
) -> list[tuple[str, str, int, int]]:
    """Held-out students whose photos were accepted again and again, confidently, as ONE other student.

    ``students``, ``predicted``, ``confidence``: per stranger photo scored, whose photo it is,
    whom the model named, and its cross-fitted confidence. A student counts when at least
    REPEATED_MIN photos and REPEATED_SHARE of its photos were accepted at REPEATED_CONFIDENCE as the
    same other student: a stranger's photos land on different students, rarely and unsurely;
    these are one person enrolled twice (or a student's folder filled with another's photos).
    ``sources``: each photo's source file; then sources are counted, not photos (the frames of one
    clip are one piece of evidence, however many). Returns (student, the student it was taken for,
    photos (sources) accepted as it, photos (sources) scored).
    """
    out = []
    source = np.arange(len(students)).astype(str) if sources is None else np.asarray(sources).astype(str)
    for student in np.unique(students):
        rows = students == student
        sure = rows & (confidence >= REPEATED_CONFIDENCE)
        if not sure.any():
            continue
        pairs = np.unique(np.stack([predicted[sure].astype(str), source[sure]]), axis=1)
        names, counts = np.unique(pairs[0], return_counts=True)
        best = int(np.argmax(counts))
        n, k = len(np.unique(source[rows])), int(counts[best])
        if k >= REPEATED_MIN and k >= REPEATED_SHARE * n:
            out.append((str(student), str(names[best]), k, n))
    return out


def _cross_fitted(
    F: np.ndarray, Y: np.ndarray, fold: np.ndarray, seed: int, fit: np.ndarray | None = None
) -> np.ndarray:
    """Confidence of each row from a calibrator fitted on the other folds (the SVM probability where none fits).

    ``fit``: the rows the calibrators may learn from (default all); every row is scored.
    """
    fit = np.ones(len(F), dtype=bool) if fit is None else fit
    conf = F[:, 0].copy()
    for k in np.unique(fold):
        others = fit & (fold != k)
        calibrator = fit_calibrator(F[others], Y[others], seed=seed)
        if calibrator is not None:
            conf[fold == k] = calibrator.predict_proba(F[fold == k])[:, 1]
    return conf


def evaluate_open_set(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    test_size: float = 0.2,
    seed: int = 42,
    max_far: float = DEFAULT_MAX_FAR,
    evidence: StrangerEvidence | None = None,
    sources: np.ndarray | None = None,
) -> OpenSet | None:
    """Hold out whole people as strangers, train without them, score their photos.

    Confidences are cross-fitted: fold k is scored by a calibrator fitted on the other
    folds, so the false-accept rates are not measured on the data that tuned them.
    None when there are fewer than 3 students (no stranger can be simulated).

    A held-out "stranger" who is really enrolled would count a right answer as a stranger
    accepted, so the run's own evidence (:class:`~retraining.evidence.StrangerEvidence`)
    decides who is who: students that look like one person are held out together, and an
    answer naming any of them is right; photos that are no fair test (in the wrong folder, of
    nobody enrolled, copied into another folder) still train each fold's model but are not
    scored. Then the scores themselves: a held-out student accepted again and again as one
    other student (:func:`repeatedly_accepted`) is that student enrolled twice: its photos
    are not counted as a stranger's, and the two count as one person. :attr:`OpenSet.left_out`
    lists all of it.
    """
    labels = np.asarray(labels).astype(str)
    students = np.unique(labels)
    if len(students) < 3:
        return None
    evidence = evidence or StrangerEvidence()
    unfair = evidence.unfair_mask(len(labels))
    person_of = person_map(students, evidence.groups)
    if len(set(person_of.values())) < 3:  # too few people to hold any out: judge students, not people
        person_of = {str(s): str(s) for s in students}
    person = np.array([person_of[s] for s in labels])
    rows_f: list[np.ndarray] = []
    rows_i: list[np.ndarray] = []
    rows_pred: list[np.ndarray] = []
    rows_fold: list[np.ndarray] = []
    rows_known: list[np.ndarray] = []
    folds = _open_set_folds(person, seed)
    split_by, within_clip = (
        calibration_sources(labels, sources) if sources is not None else (None, np.zeros(len(labels), dtype=bool))
    )
    held_as = person  # who was held out with whom (person_of may merge more people below)
    enrolled_per_fold: list[int] = []
    for k, unknown in enumerate(folds):
        is_unknown = np.isin(person, unknown)
        known_idx = np.flatnonzero(~is_unknown)
        train, test, _ = split_per_student(
            labels[known_idx], test_size, seed + k, None if split_by is None else split_by[known_idx]
        )
        train, test = known_idx[train], known_idx[test]
        model = fit_model(embeddings[train], labels[train], seed=seed)
        enrolled_per_fold.append(len(model.classes))
        centres = (
            model.open_set.centres
            if model.open_set is not None
            else class_centres(embeddings[train], labels[train], model.classes)
        )
        for idx, enrolled in ((test[~unfair[test]], True), (np.flatnonzero(is_unknown & ~unfair), False)):
            if len(idx) == 0:
                continue
            proba = model.predict_proba(embeddings[idx])
            rows_f.append(features(proba, embeddings[idx], centres))
            rows_i.append(idx)
            rows_pred.append(np.asarray(model.classes)[np.argmax(proba, axis=1)].astype(str))
            rows_fold.append(np.full(len(idx), k))
            rows_known.append(np.full(len(idx), enrolled))
    F, row = np.concatenate(rows_f), np.concatenate(rows_i)
    pred, fold = np.concatenate(rows_pred), np.concatenate(rows_fold)
    known: np.ndarray = np.concatenate(rows_known)

    def correct_under(person_of: dict[str, str]) -> np.ndarray:
        named = np.array([person_of[p] for p in pred])
        return known & (named == np.array([person_of[s] for s in labels[row]]))

    correct = correct_under(person_of)
    first = _cross_fitted(F, correct.astype(int), fold, seed)
    taken = repeatedly_accepted(
        labels[row][~known], pred[~known], first[~known], None if sources is None else np.asarray(sources)[row][~known]
    )
    if taken:
        person_of = person_map(students, (*evidence.groups, *(frozenset((a, b)) for a, b, _, _ in taken)))
        correct = correct_under(person_of)
    keep = known | ~np.isin(labels[row], [a for a, _, _, _ in taken])
    # nobody taken: the same rows and answers as the first pass, so the same confidences
    scored = _cross_fitted(F, correct.astype(int), fold, seed, fit=keep) if taken else first
    lookalike_conf, lookalikes = scored[~keep], held_as[row[~keep]]
    F, correct, fold, known = F[keep], correct[keep], fold[keep], known[keep]
    Y = correct.astype(int)
    conf = scored[keep]
    strangers = held_as[row[keep][~known]]
    ratio = len(students) / float(np.mean(enrolled_per_fold))
    fine = open_set_sweep(
        conf[known], correct[known], conf[~known], FINE_THRESHOLDS, unknown_people=strangers, enrolled_ratio=ratio
    )
    sweep = [r for r in fine if r.threshold in THRESHOLDS]  # the report's table: rows of the fine sweep
    reasons = Counter(r for r in evidence.unfair if r)
    left_out = LeftOut(
        held_together=tuple(tuple(sorted(g)) for g in evidence.groups if set(g) <= set(students.tolist())),
        accepted_as=tuple(taken),
        photos=tuple(sorted(reasons.items())),
        stranger_photos_dropped=int((~keep).sum()),
    )
    return OpenSet(
        n_folds=len(folds),
        unknown_students=[sorted(np.unique(labels[np.isin(held_as, u)]).tolist()) for u in folds],
        n_known_photos=int(known.sum()),
        n_known_within_clip=int((known & within_clip[row[keep]]).sum()),
        n_unknown_photos=int((~known).sum()),
        sweep=sweep,
        known_confidence=conf[known],
        known_correct=correct[known],
        unknown_confidence=conf[~known],
        calibrator=fit_calibrator(F, Y, seed=seed),
        max_far=max_far,
        fine_sweep=fine,
        left_out=left_out,
        enrolled_ratio=ratio,
        known_groups=labels[row[keep]][known],
        unknown_groups=strangers,
        lookalike_confidence=lookalike_conf,
        lookalike_groups=lookalikes,
    )


def evaluate(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    test_size: float = 0.2,
    seed: int = 42,
    max_far: float = DEFAULT_MAX_FAR,
    evidence: StrangerEvidence | None = None,
    sources: np.ndarray | None = None,
) -> Evaluation:
    """Closed-set evaluation (known students) + open-set stranger measurement + threshold choice.

    ``evidence``: what the run's data-quality findings say about who is who (see
    :func:`evaluate_open_set`); without it every student is taken to be a different person.
    ``sources``: each row's source file, so that one clip's frames are never split between
    training and testing (:func:`split_per_student`).
    """
    labels = np.asarray(labels).astype(str)
    open_set = evaluate_open_set(
        embeddings, labels, test_size=test_size, seed=seed, max_far=max_far, evidence=evidence, sources=sources
    )
    train_idx, test_idx, train_only = split_per_student(labels, test_size, seed, sources)
    students = sorted(np.unique(labels).tolist())
    if len(test_idx) == 0 or len(np.unique(labels[train_idx])) < 2:
        recommendation = recommend_closed_set([], 0)
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
            recommendation,
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
        recommendation = choose_open_set(open_set.fine_sweep, max_far)
    else:
        recommendation = replace(recommend_closed_set(sweep, len(test_idx)), strangers_unmeasured=True)
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
        recommendation=recommendation,
        train_only_students=train_only,
        test_true=true,
        test_pred=pred,
        test_conf=conf,
        test_index=test_idx,
        open_set=open_set,
    )
