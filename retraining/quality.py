"""Data-quality checks of the enrollment: which photos should the admin look at, and why.

Each finding names a photo (or student) and a reason, so the admin can fix the folders:
probable mislabels, near-duplicates across students, students with few photos, small or
blurry faces, photos with several faces.

Each check has a score (the strength of its evidence, so findings can be listed strongest
first) and a cut-off measured on this run's own photos rather than a fixed number: the
embedders' similarity scales differ, and so do schools' cameras. docs/RETRAINING_GUIDE.md
("Data quality") lists how each cut-off is chosen and what it found on planted mistakes.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

import numpy as np
from cleanlab.filter import find_label_issues
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from backend.recognizer.errors import ImageError
from backend.recognizer.hashing import sha256_bytes
from backend.recognizer.images import read_photo

from .cache import file_digest_of
from .dataset import ImageRecord
from .extract import Extraction
from .train import fit_model

log = logging.getLogger(__name__)

#: Fewer usable photos than this and recognition of that student is unreliable.
MIN_RECOMMENDED_PHOTOS = 5

# Small faces and blurred crops are judged against this run's own photos: a face is small, or
# blurred, when it is far below the run's typical (median) one, by LOW_TAIL_MADS robust deviations of
# the logarithm and by at least the ratio below (so a very uniform set does not flag its slightly
# smaller half); bounded by what is small or blurred, or fine, whatever the rest of the run looks like.
#: Robust deviations (1.4826 x the median absolute deviation of the log) below the run's median.
LOW_TAIL_MADS = 3.0
#: Fewer photos than this and the run says too little about itself: only the absolute bounds apply.
MIN_PHOTOS_FOR_DISTRIBUTION = 20
#: A face box whose shorter side is below this (px) is always small: little detail for the embedder.
MIN_FACE_PX = 40.0
#: ... and one of this size never is: the embedder's crop is 150-160 px, about 100 px of it the face.
SMALL_FACE_CEILING_PX = 80.0
#: Small also means at most this share of the run's typical face size.
SMALL_FACE_RATIO = 0.6
#: Sharpness (variance of the Laplacian of the grey crop) below this is always blurred: LFW crops
#: blurred with a 2-3.5 px Gaussian mostly measure 3-8, the least sharp real LFW photos 6-10.
MIN_SHARPNESS = 5.0
#: ... and above this a crop is never called blurred (5 % of real LFW crops are below 19).
SHARP_ENOUGH = 25.0
#: Blurred also means at most this share of the run's typical sharpness.
BLURRY_RATIO = 0.25
#: Above this many photos the all-pairs near-duplicate check is skipped (time grows with N²).
MAX_PAIRWISE = 20000
#: Below this, the similarity of two photos says little about whether they show the same student
#: (ROC AUC of same-student pairs against other-student pairs, see separation_auc): the embeddings
#: themselves are at fault, not the photos. Measured on 20 LFW people x 10 photos (SCRFD): dlib
#: 0.998-0.999; 40 % of every folder moved into the next one 0.749; FaceNet with a random weight
#: file of the right shape 0.565.
MIN_SEPARATION_AUC = 0.65
#: Fewer same-student pairs than this and the separation cannot be measured.
MIN_SEPARATION_PAIRS = 10


class FindingKind(str, Enum):
    """What a finding is about. A member, not a free string: the gate and the reports decide on it,
    and a misspelt kind fails when the finding is made instead of passing silently."""

    MISLABEL = "mislabel"  # a photo probably in the wrong student's folder
    OUTLIER = "outlier"  # a photo unlike its own student's photos: another person, a poor photo
    NEAR_DUPLICATE = "near_duplicate"  # the same face under two students: a copy, or one person enrolled twice
    EMBEDDINGS_NOT_DISTINCT = "embeddings_not_distinct"  # the embedder does not tell people apart
    FEW_PHOTOS = "few_photos"  # a student with too few usable photos
    SMALL_FACE = "small_face"
    BLURRY = "blurry"
    SEVERAL_FACES = "several_faces"  # another face nearly as large as the one used
    DUPLICATE_FILE = "duplicate_file"  # byte-identical files in several students' folders
    SUBFOLDER_OTHER_PERSON = "subfolder_other_person"  # a folder inside a student's whose faces are someone else's

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    path: str  # photo (or student folder id for few_photos)
    reason: str  # what was found, and what to do
    score: float = 0.0  # strength of the evidence, comparable within a kind: findings are listed strongest first
    related: str = ""  # mislabel: the student it resembles; near_duplicate: the other photo
    #: the students a finding is about when it is about students, not one photo: the two folders that look
    #: like one person enrolled twice (a near_duplicate finding; empty for a photo copied into another folder)
    students: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FindingKind(self.kind))  # raises on a kind that does not exist


#: A photo whose margin (similarity to the nearest other student minus to its own) exceeds this many
#: times the typical photo's (negative) margin is flagged even when cleanlab is not sure (see label_findings).
MISLABEL_MARGIN_FACTOR = 1.5
#: A mislabel must look like the student it is said to belong to: at least as like that student's
#: photos as this run's typical photo is like its own student's, less this many robust deviations.
#: A photo like nobody in particular is reported as an outlier (a stranger, not a folder mix-up).
MISLABEL_LIKENESS_MADS = 3.0
#: Another face at least this large (area, relative to the largest) makes the photo ambiguous: the
#: largest face may not be the student. Clean LFW (2541 photos, SCRFD): 391 photos have a second
#: face at all, mostly small ones in the background.
SEVERAL_FACES_RATIO = 0.5
#: Folds of the out-of-fold probabilities that confident learning needs.
CONFIDENT_LEARNING_FOLDS = 3

# Outliers and near-duplicates are judged against this run's own similarities (cosine of the
# embeddings, whose scale depends on the embedder): how alike photos of one student are, and how
# alike photos of different students can be.
#: A photo is an outlier when it is less like its own student's other photos than this share of
#: photo-to-other-student similarities (the photos' similarity to students they are not).
OUTLIER_QUANTILE = 0.99
#: Two photos of different students more alike than this share of the pairs of photos of one
#: student are nearly identical: the same photo twice.
NEAR_IDENTICAL_QUANTILE = 0.999
#: ... and two photos this alike always are (a ceiling on the cut-off above, and the cut-off when
#: the run has too few same-student pairs to tell).
NEAR_IDENTICAL_SIMILARITY = 0.995
#: Two students look like the same person when their photos are as alike as two halves of one
#: student's photos: not more than this many robust deviations below the halves' median (see
#: same_person_cut).
SAME_PERSON_MADS = 4.0
#: Students need this many photos to be split into halves, and this many such students are needed.
MIN_PHOTOS_TO_SPLIT = 4
MIN_STUDENTS_TO_SPLIT = 5
#: Photo-to-other-student similarities sampled for the outlier cut-off (all of them when fewer).
MAX_SIMILARITY_SAMPLE = 1_000_000


def _robust_spread(values: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 x median absolute deviation): a standard deviation that a few odd values cannot move."""
    med = float(np.median(values))
    return med, float(np.median(np.abs(values - med)) * 1.4826)


@dataclass(frozen=True)
class StudentSimilarity:
    """How alike each photo is to its own student's other photos and to the other students.

    A student's centre is the normalised sum of the student's photos; a photo's own similarity
    leaves the photo itself out of its centre (so a wrong photo cannot pull it). All arrays are
    per photo, except ``classes`` and ``sums`` (per student).
    """

    classes: np.ndarray  # student ids
    column: np.ndarray  # each photo's student, as an index into classes
    sums: np.ndarray  # sum of each student's embeddings
    own: np.ndarray  # similarity to the own student's other photos (nan: the student's only photo)
    nearest: np.ndarray  # the most similar other student (index into classes)
    nearest_similarity: np.ndarray  # similarity to that student
    other_cut: float  # OUTLIER_QUANTILE of photo-to-other-student similarities: "different people reach this"

    @property
    def has_others(self) -> np.ndarray:
        return ~np.isnan(self.own)

    @property
    def typical_own(self) -> float:
        """This run's typical similarity of a photo to its own student's other photos."""
        own = self.own[self.has_others]
        return float(np.median(own)) if len(own) else float("nan")


def student_similarity(
    embeddings: np.ndarray, labels: np.ndarray, seed: int = 0, sources: np.ndarray | None = None
) -> StudentSimilarity | None:
    """Each photo's similarity to its own and to the other students (None with fewer than 2 students).

    ``sources``: each row's source file. A clip's frame is compared with its student's OTHER sources
    (the clip's other frames are near copies of it, and would vouch for a clip of the wrong person);
    with no other source, with the clip's other frames."""
    X = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    classes, column = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        return None
    sums = np.zeros((len(classes), X.shape[1]))
    np.add.at(sums, column, X)
    centres = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    sims = X @ centres.T
    own_sum = sums[column] - X
    alone = np.bincount(column)[column] < 2
    if sources is not None and len(np.unique(sources)) < len(X):
        source_ids, source_of = np.unique(np.asarray(sources).astype(str), return_inverse=True)
        source_sums = np.zeros((len(source_ids), X.shape[1]))
        np.add.at(source_sums, source_of, X)
        others = np.bincount(column)[column] - np.bincount(source_of)[source_of] > 0
        own_sum = np.where(others[:, None], sums[column] - source_sums[source_of], own_sum)
    own = np.einsum("ij,ij->i", X, own_sum) / np.maximum(np.linalg.norm(own_sum, axis=1), 1e-12)
    own[alone] = np.nan
    rows = np.arange(len(X))
    sims[rows, column] = np.nan  # other students only
    # a sample is enough for a quantile (20 000 photos x 1 000 students would be 20 M values)
    n_other = sims.size - len(X)
    if n_other > MAX_SIMILARITY_SAMPLE:
        flat = sims.ravel()[np.random.default_rng(seed).choice(sims.size, MAX_SIMILARITY_SAMPLE, replace=False)]
        other = flat[~np.isnan(flat)]
    else:
        other = sims[~np.isnan(sims)]
    nearest = np.nanargmax(sims, axis=1)
    return StudentSimilarity(
        classes, column, sums, own, nearest, sims[rows, nearest], float(np.quantile(other, OUTLIER_QUANTILE))
    )


def _confident_learning_issues(X: np.ndarray, labels: np.ndarray, *, seed: int) -> np.ndarray:
    """cleanlab's label issues on out-of-fold probabilities of our own classifier (all False if it cannot run)."""
    classes, y = np.unique(labels, return_inverse=True)
    counts = np.bincount(y)
    if len(classes) < 2 or counts.min() < CONFIDENT_LEARNING_FOLDS:
        return np.zeros(len(labels), dtype=bool)
    proba = np.zeros((len(labels), len(classes)))
    folds = StratifiedKFold(CONFIDENT_LEARNING_FOLDS, shuffle=True, random_state=seed)
    for train, test in folds.split(X, y):
        model = fit_model(X[train], labels[train], seed=seed)
        proba[np.ix_(test, np.searchsorted(classes, model.classes))] = model.predict_proba(X[test])
    return np.asarray(find_label_issues(y, proba, filter_by="prune_by_noise_rate"), dtype=bool)


def label_findings(
    embeddings: np.ndarray,
    labels: np.ndarray,
    paths: list[Path],
    *,
    seed: int = 42,
    similarity: StudentSimilarity | None = None,
) -> list[Finding]:
    """Photos probably filed under the wrong student (mislabel), or unlike their own student's
    other photos (outlier: another person, a bad crop).

    Mislabel evidence, measured on this run's data (tests/retraining/test_quality.py plants
    mistakes into LFW trees): confident learning (cleanlab's ``find_label_issues``) on
    out-of-fold probabilities of our classifier, plus photos that are closer to another
    student's photos than to their own by 1.5 times as much as a typical photo is closer to
    its own (the ``margin``, also the finding's score); either only when the photo looks like
    that other student at least as much as the run's photos look like their own student, less
    MISLABEL_LIKENESS_MADS robust deviations (otherwise it is nobody's photo: an outlier).
    Measured with dlib embeddings, 20 photos moved into wrong folders: 60 LFW people
    (600 photos), 5 random trees: precision 0.99, recall 0.96, clean trees 0-1 findings;
    158 people (2541 photos): 0.80 / 1.00, clean tree 5. The margin rule alone (closer to
    another student at all): 0.35 / 1.00 and 38 on the clean tree; cleanlab alone 0.79 / 0.87.

    Outlier: less like its own student's other photos than photos are like students they are
    not, 99 times in 100 (:attr:`StudentSimilarity.other_cut`); the score is how many robust
    deviations the photo is below the run's typical own-student similarity. 20 strangers in
    60-people trees: precision 0.92, recall 0.85; clean trees about 1 per 600 photos.
    """
    X = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    sim = student_similarity(X, labels, seed=seed) if similarity is None else similarity
    if sim is None or not sim.has_others.any():
        return []  # one student, or one photo each: nothing to compare a photo with
    classes, own, has_others = sim.classes, sim.own, sim.has_others
    best_other, other_sim = sim.nearest, sim.nearest_similarity
    margin = other_sim - own  # > 0: closer to another student's photos than to its own
    typical = float(np.nanmedian(margin[has_others])) if has_others.any() else 0.0
    strong = has_others & (margin > -MISLABEL_MARGIN_FACTOR * typical) if typical < 0 else np.zeros(len(X), bool)
    suspects = strong | _confident_learning_issues(X, labels, seed=seed)
    typical_own, spread = _robust_spread(own[has_others])
    suspects &= other_sim >= typical_own - MISLABEL_LIKENESS_MADS * spread
    findings: list[Finding] = []
    for i in np.flatnonzero(suspects & has_others):
        findings.append(
            Finding(
                FindingKind.MISLABEL,
                str(paths[i]),
                f"looks more like {classes[best_other[i]]} (similarity {other_sim[i]:.2f}) than like "
                f"the other photos of {labels[i]} ({own[i]:.2f}): probably in the wrong folder. Move it to the "
                f"right student's folder (or delete it) and retrain.",
                float(margin[i]),
                str(classes[best_other[i]]),
            )
        )
    flagged = {f.path for f in findings}
    for i in np.flatnonzero(has_others & (np.nan_to_num(own, nan=np.inf) < sim.other_cut)):
        if str(paths[i]) in flagged:
            continue
        findings.append(
            Finding(
                FindingKind.OUTLIER,
                str(paths[i]),
                f"unlike the other photos of {labels[i]} (similarity {own[i]:.2f}, where photos of one student are "
                f"typically {typical_own:.2f} alike and photos of different students rarely above "
                f"{sim.other_cut:.2f}): probably another person, or a very poor photo. Look at it; replace it with "
                "a clear photo of the student.",
                float((typical_own - own[i]) / max(spread, 1e-6)),
            )
        )
    return findings


def separation_auc(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0) -> float | None:
    """How well similarity tells same-student pairs from other-student pairs (ROC AUC, 0.5 = not at all).

    Each photo is paired with one random other photo of its student and one random photo of
    another student; None when there are too few same-student pairs to tell.
    """
    X = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels).astype(str)
    rng = np.random.default_rng(seed)
    same_sims, other_sims = [], []
    by_student = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    if len(by_student) < 2:
        return None
    for c, idx in by_student.items():
        others = np.flatnonzero(labels != c)
        for i in idx:
            if len(idx) > 1:
                j = rng.choice(idx[idx != i])
                same_sims.append(float(X[i] @ X[j]))
            other_sims.append(float(X[i] @ X[rng.choice(others)]))
    if len(same_sims) < MIN_SEPARATION_PAIRS:
        return None
    truth = np.r_[np.ones(len(same_sims)), np.zeros(len(other_sims))]
    return float(roc_auc_score(truth, np.r_[same_sims, other_sims]))


def embeddings_distinct(findings: list[Finding]) -> bool:
    """False when the run's findings say the embedder does not tell people apart."""
    return not any(f.kind == FindingKind.EMBEDDINGS_NOT_DISTINCT for f in findings)


def separation_findings(embeddings: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> list[Finding]:
    """One finding when the embeddings do not tell people apart (a wrong weight file, not the photos)."""
    auc = separation_auc(embeddings, labels, seed=seed)
    if auc is None or auc >= MIN_SEPARATION_AUC:
        return []
    return [
        Finding(
            FindingKind.EMBEDDINGS_NOT_DISTINCT,
            "(all photos)",
            f"photos of the same student are hardly more alike than photos of different students (separation "
            f"{auc:.2f}, normal runs 0.95+): the face embedder does not tell people apart. Check that the embedder "
            "weight file is the right one (FaceNet: 20180402-114759-vggface2.pt) and retrain.",
        )
    ]


def near_identical_cut(embeddings: np.ndarray, labels: np.ndarray, sources: np.ndarray | None = None) -> float:
    """Similarity above which two photos are the same photo twice: more alike than all but
    NEAR_IDENTICAL_QUANTILE of this run's pairs of photos of one student (at most
    NEAR_IDENTICAL_SIMILARITY; that value itself when there are too few such pairs). Two frames
    of one clip (``sources``) are no such pair: they are alike because they are one recording."""
    X = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels).astype(str)
    same: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) > 1:
            sims = X[idx] @ X[idx].T
            pairs = np.triu_indices(len(idx), 1)
            if sources is not None:
                own = np.asarray(sources)[idx]
                pairs = (pairs[0][own[pairs[0]] != own[pairs[1]]], pairs[1][own[pairs[0]] != own[pairs[1]]])
            same.append(sims[pairs])
    values = np.concatenate(same) if same else np.zeros(0)
    if len(values) < MIN_SEPARATION_PAIRS:
        return NEAR_IDENTICAL_SIMILARITY
    return min(NEAR_IDENTICAL_SIMILARITY, float(np.quantile(values, NEAR_IDENTICAL_QUANTILE)))


def _pair_gap(X: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """How much less the photos of group ``a`` and group ``b`` are like the other group than like their
    own group's other photos (median similarity to the other group's centre minus median similarity to
    the own group's centre without the photo), and that median cross similarity."""
    sa, sb = X[a].sum(axis=0), X[b].sum(axis=0)
    rest_a, rest_b = sa[None, :] - X[a], sb[None, :] - X[b]
    own = np.r_[
        np.einsum("ij,ij->i", X[a], rest_a) / np.maximum(np.linalg.norm(rest_a, axis=1), 1e-12),
        np.einsum("ij,ij->i", X[b], rest_b) / np.maximum(np.linalg.norm(rest_b, axis=1), 1e-12),
    ]
    cross = np.r_[X[a] @ (sb / max(np.linalg.norm(sb), 1e-12)), X[b] @ (sa / max(np.linalg.norm(sa), 1e-12))]
    return float(np.median(cross) - np.median(own)), float(np.median(cross))


def same_person_cut(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0) -> float | None:
    """The least gap (see _pair_gap) of two halves of ONE student's photos, on this run's students:
    two students whose gap is above it look like the same person. None when too few students have
    MIN_PHOTOS_TO_SPLIT photos to tell."""
    X = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    rng = np.random.default_rng(seed)
    gaps = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) >= MIN_PHOTOS_TO_SPLIT:
            gaps.append(_pair_gap(X, idx[: len(idx) // 2], idx[len(idx) // 2 :])[0])
    if len(gaps) < MIN_STUDENTS_TO_SPLIT:
        return None
    med, spread = _robust_spread(np.array(gaps))
    return med - SAME_PERSON_MADS * spread


def near_duplicates(embeddings: np.ndarray, labels: np.ndarray, paths: list[Path]) -> list[Finding]:
    """Photos of DIFFERENT students that show the same face: the same photo in two folders
    (:func:`near_identical_findings`), or two students that are one person enrolled twice
    (:func:`same_person_findings`). (When the embeddings do not tell people apart at all,
    :func:`separation_findings` reports that instead.)"""
    return near_identical_findings(embeddings, labels, paths) + same_person_findings(embeddings, labels, paths)


def near_identical_findings(
    embeddings: np.ndarray, labels: np.ndarray, paths: list[Path], sources: np.ndarray | None = None
) -> list[Finding]:
    """Pairs of photos of different students more alike than (almost) any two photos of one student
    in this run (:func:`near_identical_cut`): the same photo twice, resized or re-saved.

    Each photo is paired with at most its most similar photo of another student, so there are
    at most as many findings as photos (all pairs would be N² when many photos look alike).
    """
    X = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels).astype(str)
    if len(X) > MAX_PAIRWISE:
        log.debug("Near-identical photo check skipped: %d photos > %d", len(X), MAX_PAIRWISE)
        return []
    cut = near_identical_cut(X, labels, sources)
    pairs: dict[tuple[int, int], float] = {}
    block = 2048
    for start in range(0, len(X), block):
        sims = X[start : start + block] @ X.T
        rows = np.arange(sims.shape[0])
        sims[labels[start : start + block, None] == labels[None, :]] = -np.inf  # other students only
        best = np.argmax(sims, axis=1)
        for r in np.flatnonzero(sims[rows, best] >= cut):
            i, j = start + int(r), int(best[r])
            pairs[(min(i, j), max(i, j))] = float(sims[r, best[r]])
    return [
        Finding(
            FindingKind.NEAR_DUPLICATE,
            str(paths[i]),
            f"nearly identical to {paths[j]} of {labels[j]} (similarity {sim:.3f}; hardly any two photos of one "
            f"student are above {cut:.3f}): the same photo in two students' folders. Keep it in the right "
            "student's folder only.",
            sim,
            str(paths[j]),
        )
        for (i, j), sim in sorted(pairs.items())
    ]


def same_person_findings(
    embeddings: np.ndarray,
    labels: np.ndarray,
    paths: list[Path],
    *,
    similarity: StudentSimilarity | None = None,
    seed: int = 0,
) -> list[Finding]:
    """Pairs of students that look like one person enrolled twice: their photos are as alike as two
    halves of one student's photos in this run (:func:`same_person_cut`). Each student is compared
    with its most similar other student; one finding per pair, naming its two most similar photos."""
    X = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    cut = same_person_cut(X, labels, seed=seed)
    sim = student_similarity(X, labels, seed=seed) if similarity is None else similarity
    if cut is None or sim is None:
        return []
    classes = sim.classes
    centres = sim.sums / np.maximum(np.linalg.norm(sim.sums, axis=1, keepdims=True), 1e-12)
    between = centres @ centres.T
    np.fill_diagonal(between, -np.inf)
    counts = np.bincount(sim.column, minlength=len(classes))
    findings = []
    seen: set[frozenset[str]] = set()
    for a in range(len(classes)):
        b = int(np.argmax(between[a]))
        pair = frozenset((classes[a], classes[b]))
        if pair in seen or counts[a] < 2 or counts[b] < 2:
            continue
        seen.add(pair)
        ia, ib = np.flatnonzero(sim.column == a), np.flatnonzero(sim.column == b)
        gap, cross = _pair_gap(X, ia, ib)
        if gap < cut:
            continue
        sims = X[ia] @ X[ib].T
        r, c = np.unravel_index(int(np.argmax(sims)), sims.shape)
        i, j = int(ia[r]), int(ib[c])
        findings.append(
            Finding(
                FindingKind.NEAR_DUPLICATE,
                str(paths[i]),
                f"{classes[a]} and {classes[b]} look like the same person: their photos are as alike as the photos "
                f"of one student (similarity {cross:.2f}; {sim.typical_own:.2f} within a student); this photo is "
                f"most like {paths[j]}. The same student enrolled twice? Merge the two folders into one (twins: "
                "nothing to fix, but expect them to be confused).",
                cross,
                str(paths[j]),
                (str(classes[a]), str(classes[b])),
            )
        )
    return findings


def looks_typical(
    embeddings: np.ndarray, labels: np.ndarray, *, similarity: StudentSimilarity | None = None
) -> np.ndarray:
    """Per photo: does its face look like the student's other photos, i.e. more than photos of
    different students look alike in this run (see :attr:`StudentSimilarity.other_cut`)? True where it
    cannot be told (a student's only photo, or a run of one student)."""
    sim = student_similarity(embeddings, labels) if similarity is None else similarity
    if sim is None:
        return np.ones(len(np.asarray(labels)), dtype=bool)
    return ~(sim.has_others & (np.nan_to_num(sim.own, nan=np.inf) < sim.other_cut))


def _low_cut(values: np.ndarray, ratio: float, floor: float, ceiling: float) -> tuple[float, float]:
    """(cut-off, typical value) for "far below this run's typical value" (see LOW_TAIL_MADS)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[values > 0]
    if len(values) < MIN_PHOTOS_FOR_DISTRIBUTION:
        return floor, float(np.median(values)) if len(values) else float("nan")
    med, spread = _robust_spread(np.log(values))
    cut = float(np.exp(med) * min(ratio, np.exp(-LOW_TAIL_MADS * spread)))
    return float(np.clip(cut, floor, ceiling)), float(np.exp(med))


def small_face_cut(face_sizes: list[float]) -> tuple[float, float]:
    """(size below which a face is small in this run, the run's typical face size), in px."""
    return _low_cut(np.asarray(face_sizes), SMALL_FACE_RATIO, MIN_FACE_PX, SMALL_FACE_CEILING_PX)


def blurry_cut(sharpness_values: list[float]) -> tuple[float, float]:
    """(sharpness below which a crop is blurred in this run, the run's typical sharpness)."""
    return _low_cut(np.asarray(sharpness_values), BLURRY_RATIO, MIN_SHARPNESS, SHARP_ENOUGH)


def photo_findings(
    paths: list[Path],
    face_sizes: list[float],
    sharpness_values: list[float],
    num_faces: list[int],
    second_faces: list[float] | None = None,
    typical: list[bool] | None = None,
) -> list[Finding]:
    """Small faces, blurred faces, and photos where another face is nearly as large as the one used.

    Small and blurred are judged against this run's photos (:func:`small_face_cut`,
    :func:`blurry_cut`): a face far smaller, or a crop far less sharp, than the run's typical
    one, within fixed bounds (a face under 40 px is always small, one of 80 px never; a crop of
    sharpness under 5 is always blurred, one over 25 never). A small face is not also reported
    as blurred: its crop is enlarged, hence soft, and a closer photo fixes both.

    ``second_faces``: area of each photo's second-largest face over the largest (None: unknown,
    every photo with several faces counts). A small face in the background (most group-free
    photos in the wild have one) does not matter: the largest face is used. ``typical``
    (:func:`looks_typical`): a used face that looks like the student's other photos is the
    student, whatever else is in the picture; only an atypical one is worth a look.
    """
    out = []
    ratios = second_faces if second_faces is not None else [1.0 if n > 1 else 0.0 for n in num_faces]
    usual = typical if typical is not None else [False] * len(paths)
    small_cut, typical_size = small_face_cut(face_sizes)
    blur_cut, typical_sharpness = blurry_cut(sharpness_values)
    for p, size, sharp, n, ratio, is_typical in zip(paths, face_sizes, sharpness_values, num_faces, ratios, usual):
        if size < small_cut:
            out.append(
                Finding(
                    FindingKind.SMALL_FACE,
                    str(p),
                    f"face only {size:.0f} px across (this run's faces are typically {typical_size:.0f} px; "
                    f"below {small_cut:.0f} px the face has too little detail): use a closer photo",
                    float(typical_size / max(size, 1.0)),
                )
            )
        elif sharp < blur_cut:
            out.append(
                Finding(
                    FindingKind.BLURRY,
                    str(p),
                    f"blurred face (sharpness {sharp:.1f}; this run's photos are typically {typical_sharpness:.0f}, "
                    f"below {blur_cut:.1f} a face is blurred): retake it in focus, in good light",
                    float(typical_sharpness / max(sharp, 1e-3)),
                )
            )
        if n > 1 and ratio >= SEVERAL_FACES_RATIO and not is_typical:
            out.append(
                Finding(
                    FindingKind.SEVERAL_FACES,
                    str(p),
                    f"{n} faces in the photo, the second {ratio:.0%} the size of the largest, which was used and "
                    "does not look like the student's other photos: crop the photo to the student (or replace it "
                    "if the student is not in it)",
                    float(ratio),
                )
            )
    return out


def few_photo_findings(counts: dict[str, int], minimum: int = MIN_RECOMMENDED_PHOTOS) -> list[Finding]:
    return [
        Finding(
            FindingKind.FEW_PHOTOS,
            sid,
            f"only {n} usable photo(s) (< {minimum}): add more for reliable recognition",
            minimum - n,
        )
        for sid, n in sorted(counts.items())
        if n < minimum
    ]


def duplicate_groups(records: list[ImageRecord], sha256: list[str] | None = None) -> list[list[Path]]:
    """Byte-identical photos filed under more than one student (pass the EMBEDDED photos:
    two broken or empty files are not "the same photo enrolled twice").

    ``sha256``: each record's hash as extraction read it (``Extraction.sha256``), so no photo is
    read again; without it the photos are read here."""
    by_hash: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    known = sha256 if sha256 is not None and len(sha256) == len(records) else None
    for k, rec in enumerate(records):
        if known is not None and known[k]:
            entry = (rec.student_id, rec.source)  # a clip's frames: the clip, once
            group = by_hash[file_digest_of(known[k])]
            if entry not in group:
                group.append(entry)
            continue
        try:  # read_photo: a file swapped for a named pipe since indexing is refused, not waited on
            by_hash[sha256_bytes(read_photo(rec.path))].append((rec.student_id, rec.path))
        except ImageError:
            continue  # unreadable: decode will report it
    return [[p for _, p in group] for group in by_hash.values() if len({sid for sid, _ in group}) > 1]


def data_quality(
    extraction: Extraction,
    duplicate_files: list[list[Path]],
    *,
    seed: int = 42,
    similarity: StudentSimilarity | None = None,
) -> list[Finding]:
    """Every data-quality finding of this run, in the order the report lists them (``seed``: the run's
    ``--seed``, for the checks that sample or split; ``similarity``: :func:`student_similarity` of
    ``extraction`` with that seed, when the caller has it for other checks too; computed here if not).

    A photo is reported once for one cause: a mislabel between two students that a near-duplicate
    finding already names (same person enrolled twice: merge the folders, not move photos) is
    left out, and so is an outlier whose face was chosen among several (several_faces says to crop).
    """
    paths = [r.path for r in extraction.records]
    labels = extraction.student_ids
    sources = extraction.sources
    student_of = {str(p): str(sid) for p, sid in zip(paths, labels)}
    # the similarities of every photo to every student, computed once for the three checks that use them
    if similarity is None:
        similarity = student_similarity(extraction.embeddings, labels, seed=seed, sources=sources)
    labelled = label_findings(extraction.embeddings, labels, paths, similarity=similarity, seed=seed)
    separation = separation_findings(extraction.embeddings, labels, seed=seed)
    identical = [] if separation else near_identical_findings(extraction.embeddings, labels, paths, sources)
    same_person = (
        []
        if separation
        else same_person_findings(extraction.embeddings, labels, paths, similarity=similarity, seed=seed)
    )
    photos = photo_findings(
        paths,
        [f.face_size for f in extraction.faces],
        [f.sharpness for f in extraction.faces],
        [f.num_faces for f in extraction.faces],
        [f.second_face for f in extraction.faces],
        list(looks_typical(extraction.embeddings, labels, similarity=similarity)),
    )
    enrolled_twice = {frozenset((student_of[f.path], student_of[f.related])) for f in same_person}
    several = {f.path for f in photos if f.kind == FindingKind.SEVERAL_FACES}
    findings = [
        f
        for f in labelled
        if not (f.kind == FindingKind.MISLABEL and frozenset((student_of[f.path], f.related)) in enrolled_twice)
        and not (f.kind == FindingKind.OUTLIER and f.path in several)
    ]
    findings += [
        Finding(
            FindingKind.DUPLICATE_FILE,
            str(g[0]),
            "the same file is in several student folders: " + ", ".join(str(p) for p in g) + ". Keep one.",
            float(len(g)),
        )
        for g in duplicate_files
    ]
    findings += separation + identical + same_person
    findings += few_photo_findings(extraction.counts())
    findings += photos
    findings = one_per_clip(findings, extraction)
    order = {kind: k for k, kind in enumerate(dict.fromkeys(f.kind for f in findings))}
    return sorted(findings, key=lambda f: (order[f.kind], -f.score))  # each kind strongest first


def one_per_clip(findings: list[Finding], extraction: Extraction) -> list[Finding]:
    """A clip is one source: findings on several of its frames become one finding on the clip.

    Frames in the wrong folder and frames unlike the student are one cause (who the clip shows):
    the kind on most frames names it. Other kinds (blurred, small faces…) stay one finding each.
    The finding keeps its strongest frame's reason and says how many of the clip's frames it concerns."""
    clip_of = {str(r.path): r.clip for r in extraction.records if r.clip is not None}
    if not clip_of:
        return findings
    frames_of = Counter(str(c) for c in clip_of.values())
    out: list[Finding] = []
    merged: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for f in findings:
        clip = clip_of.get(f.path)
        if clip is None:
            out.append(f)
        else:
            cause = "who" if f.kind in (FindingKind.MISLABEL, FindingKind.OUTLIER) else str(f.kind)
            merged[(cause, str(clip))].append(f)
    for (_, clip_name), group in merged.items():
        kinds = Counter(f.kind for f in group)
        kind = kinds.most_common(1)[0][0]
        best = max((f for f in group if f.kind == kind), key=lambda f: f.score)
        others = ", ".join(f"{n} {k.value.replace('_', ' ')}" for k, n in kinds.items() if k != kind)
        share = (
            f"{kinds[kind]} of the {frames_of[clip_name]} frames used from this clip"
            + (f" (and {others})" if others else "")
            + f"; the clearest case, {best.path}: "
        )
        out.append(replace(best, path=clip_name, reason=share + best.reason))
    return out
