"""Data-quality checks of the enrollment: which photos should the admin look at, and why.

Each finding names a photo (or student) and a reason, so the admin can fix the folders:
probable mislabels, near-duplicates across students, students with few photos, small or
blurry faces, photos with several faces.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cleanlab.filter import find_label_issues
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from backend.recognizer.hashing import sha256_file

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
#: Two photos of different students this similar are probably the same person.
NEAR_DUPLICATE_SIMILARITY = 0.97
#: A photo farther than this many robust deviations below its student's typical similarity
#: (and at least halfway towards the nearest other student) is an outlier.
OUTLIER_MADS = 4.0
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


@dataclass(frozen=True)
class Finding:
    # mislabel | outlier | near_duplicate | embeddings_not_distinct | few_photos | small_face | blurry |
    # several_faces | duplicate_file
    kind: str
    path: str  # photo (or student folder id for few_photos)
    reason: str  # what was found, and what to do
    score: float = 0.0  # strength of the evidence, comparable within a kind: findings are listed strongest first
    related: str = ""  # mislabel: the student it resembles; near_duplicate: the other photo


#: A photo whose margin (similarity to the nearest other student minus to its own) exceeds this many
#: times the typical photo's (negative) margin is flagged even when cleanlab is not sure (see label_findings).
MISLABEL_MARGIN_FACTOR = 1.5
#: Another face at least this large (area, relative to the largest) makes the photo ambiguous: the
#: largest face may not be the student. Clean LFW (2541 photos, SCRFD): 391 photos have a second
#: face at all, mostly small ones in the background.
SEVERAL_FACES_RATIO = 0.5
#: Folds of the out-of-fold probabilities that confident learning needs.
CONFIDENT_LEARNING_FOLDS = 3


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


def label_findings(embeddings: np.ndarray, labels: np.ndarray, paths: list[Path], *, seed: int = 42) -> list[Finding]:
    """Photos probably filed under the wrong student (mislabel), or unusually far from their own
    student's other photos (outlier: another person, a bad crop).

    Mislabel evidence, measured on this run's data (tests/retraining/test_quality.py plants
    mistakes into LFW trees): confident learning (cleanlab's ``find_label_issues``) on
    out-of-fold probabilities of our classifier, plus photos that are closer to another
    student's photos than to their own by 1.5 times as much as a typical photo is closer to
    its own (the ``margin``, also the finding's score). Measured with dlib embeddings, mean of
    3-5 random plantings: 158 LFW people (2541 photos), 20 photos moved into wrong folders:
    precision 0.73, recall 0.97 (60 moved: 0.88 / 0.95), clean tree 6 findings; 60 people
    (600 photos), 10 moved: 0.98 / 0.90 (20: 0.98 / 0.96), clean tree 0. The margin rule
    alone (closer to another student at all): 0.35 / 1.00 and 38 on the clean tree; cleanlab
    alone 0.79 / 0.87.
    """
    X = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    classes = np.unique(labels)
    if len(classes) < 2:
        return []
    sums = np.stack([X[labels == c].sum(axis=0) for c in classes])
    counts = np.array([(labels == c).sum() for c in classes])
    col = np.searchsorted(classes, labels)
    centres = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    sims = X @ centres.T
    # own centre without the photo itself (leave-one-out), so a mislabel cannot pull it
    own_sum = sums[col] - X
    own_norm = np.linalg.norm(own_sum, axis=1)
    has_others = counts[col] > 1
    own = np.where(has_others, np.einsum("ij,ij->i", X, own_sum) / np.maximum(own_norm, 1e-12), np.nan)
    sims[np.arange(len(X)), col] = -np.inf
    best_other = sims.argmax(axis=1)
    other_sim = sims[np.arange(len(X)), best_other]
    margin = other_sim - own  # > 0: closer to another student's photos than to its own
    typical = float(np.nanmedian(margin[has_others])) if has_others.any() else 0.0
    strong = has_others & (margin > -MISLABEL_MARGIN_FACTOR * typical) if typical < 0 else np.zeros(len(X), bool)
    suspects = strong | _confident_learning_issues(X, labels, seed=seed)
    findings: list[Finding] = []
    for i in np.flatnonzero(suspects & has_others):
        findings.append(
            Finding(
                "mislabel",
                str(paths[i]),
                f"looks more like {classes[best_other[i]]} (similarity {other_sim[i]:.2f}) than like "
                f"the other photos of {labels[i]} ({own[i]:.2f}): probably in the wrong folder. Move it to the "
                f"right student's folder (or delete it) and retrain.",
                float(margin[i]),
                str(classes[best_other[i]]),
            )
        )
    flagged = {f.path for f in findings}
    for c in classes:
        idx = np.flatnonzero((labels == c) & has_others)
        if len(idx) < 4:
            continue
        values = own[idx]
        med = np.median(values)
        mad = np.median(np.abs(values - med)) * 1.4826 + 1e-6
        # both unusual for this student AND at least halfway towards the other students:
        # tight clusters have tiny MADs, so the MAD rule alone flags ordinary variation
        halfway = med - 0.5 * (med - np.median(other_sim[idx]))
        for i in idx[values < min(med - OUTLIER_MADS * mad, halfway)]:
            if str(paths[i]) not in flagged:
                findings.append(
                    Finding(
                        "outlier",
                        str(paths[i]),
                        f"unlike the other photos of {c} (similarity {own[i]:.2f}, typical {med:.2f}): "
                        "another person, or a poor photo. Look at it; replace it with a clear photo of the student.",
                        float((med - own[i]) / mad),
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
    return not any(f.kind == "embeddings_not_distinct" for f in findings)


def separation_findings(embeddings: np.ndarray, labels: np.ndarray) -> list[Finding]:
    """One finding when the embeddings do not tell people apart (a wrong weight file, not the photos)."""
    auc = separation_auc(embeddings, labels)
    if auc is None or auc >= MIN_SEPARATION_AUC:
        return []
    return [
        Finding(
            "embeddings_not_distinct",
            "(all photos)",
            f"photos of the same student are hardly more alike than photos of different students (separation "
            f"{auc:.2f}, normal runs 0.95+): the face embedder does not tell people apart. Check that the embedder "
            "weight file is the right one (FaceNet: 20180402-114759-vggface2.pt) and retrain.",
        )
    ]


def near_duplicates(
    embeddings: np.ndarray, labels: np.ndarray, paths: list[Path], threshold: float = NEAR_DUPLICATE_SIMILARITY
) -> list[Finding]:
    """Pairs of photos of DIFFERENT students that are nearly identical (same person twice?).

    Each photo is paired with at most its most similar photo of another student, so there
    are at most as many findings as photos (all pairs would be N² when many photos look
    alike). When a large share of the photos has such a twin, the embeddings do not tell
    people apart at all — a wrong embedder weight file, not a data problem — and that is
    reported once instead.
    """
    X = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels).astype(str)
    if len(X) > MAX_PAIRWISE:
        log.debug("Near-duplicate check skipped: %d photos > %d", len(X), MAX_PAIRWISE)
        return []
    pairs: dict[tuple[int, int], float] = {}
    block = 2048
    for start in range(0, len(X), block):
        sims = X[start : start + block] @ X.T
        rows = np.arange(sims.shape[0])
        sims[labels[start : start + block, None] == labels[None, :]] = -np.inf  # other students only
        best = np.argmax(sims, axis=1)
        for r in np.flatnonzero(sims[rows, best] >= threshold):
            i, j = start + int(r), int(best[r])
            pairs[(min(i, j), max(i, j))] = float(sims[r, best[r]])
    return [
        Finding(
            "near_duplicate",
            str(paths[i]),
            f"nearly identical to {paths[j]} of {labels[j]} (similarity {sim:.3f}): "
            "the same person enrolled twice, or a photo in the wrong folder. Keep it in one student's folder only.",
            sim,
            str(paths[j]),
        )
        for (i, j), sim in sorted(pairs.items())
    ]


def looks_typical(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per photo: is its face as similar to the student's other photos as that student's photos
    usually are (leave-one-out similarity above the student's median minus 2 robust deviations)?
    True where it cannot be told (a student with fewer than 4 photos)."""
    X = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    out = np.ones(len(X), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 4:
            continue
        total = X[idx].sum(axis=0)
        rest = total[None, :] - X[idx]
        own = np.einsum("ij,ij->i", X[idx], rest) / np.maximum(np.linalg.norm(rest, axis=1), 1e-12)
        med = np.median(own)
        mad = np.median(np.abs(own - med)) * 1.4826 + 1e-6
        out[idx] = own >= med - 2 * mad
    return out


def _robust_spread(values: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 x median absolute deviation): a standard deviation that a few odd values cannot move."""
    med = float(np.median(values))
    return med, float(np.median(np.abs(values - med)) * 1.4826)


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
                    "small_face",
                    str(p),
                    f"face only {size:.0f} px across (this run's faces are typically {typical_size:.0f} px; "
                    f"below {small_cut:.0f} px the face has too little detail): use a closer photo",
                    float(typical_size / max(size, 1.0)),
                )
            )
        elif sharp < blur_cut:
            out.append(
                Finding(
                    "blurry",
                    str(p),
                    f"blurred face (sharpness {sharp:.1f}; this run's photos are typically {typical_sharpness:.0f}, "
                    f"below {blur_cut:.1f} a face is blurred): retake it in focus, in good light",
                    float(typical_sharpness / max(sharp, 1e-3)),
                )
            )
        if n > 1 and ratio >= SEVERAL_FACES_RATIO and not is_typical:
            out.append(
                Finding(
                    "several_faces",
                    str(p),
                    f"{n} faces in the photo, the second {ratio:.0%} the size of the largest, which was used and "
                    "does not look like the student's other photos: crop the photo to the student",
                    float(ratio),
                )
            )
    return out


def few_photo_findings(counts: dict[str, int], minimum: int = MIN_RECOMMENDED_PHOTOS) -> list[Finding]:
    return [
        Finding(
            "few_photos", sid, f"only {n} usable photo(s) (< {minimum}): add more for reliable recognition", minimum - n
        )
        for sid, n in sorted(counts.items())
        if n < minimum
    ]


def duplicate_groups(records: list[ImageRecord]) -> list[list[Path]]:
    """Byte-identical photos filed under more than one student (pass the EMBEDDED photos:
    two broken or empty files are not "the same photo enrolled twice")."""
    by_hash: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for rec in records:
        try:
            by_hash[sha256_file(rec.path)].append((rec.student_id, rec.path))
        except OSError:
            continue  # unreadable: decode will report it
    return [[p for _, p in group] for group in by_hash.values() if len({sid for sid, _ in group}) > 1]


def data_quality(extraction: Extraction, duplicate_files: list[list[Path]]) -> list[Finding]:
    """Every data-quality finding of this run, in the order the report lists them."""
    paths = [r.path for r in extraction.records]
    labels = extraction.student_ids
    findings = label_findings(extraction.embeddings, labels, paths)
    findings += [
        Finding(
            "duplicate_file",
            str(g[0]),
            "the same file is in several student folders: " + ", ".join(str(p) for p in g) + ". Keep one.",
            float(len(g)),
        )
        for g in duplicate_files
    ]
    findings += separation_findings(extraction.embeddings, labels) or near_duplicates(
        extraction.embeddings, labels, paths
    )
    findings += few_photo_findings(extraction.counts())
    findings += photo_findings(
        paths,
        [f.face_size for f in extraction.faces],
        [f.sharpness for f in extraction.faces],
        [f.num_faces for f in extraction.faces],
        [f.second_face for f in extraction.faces],
        list(looks_typical(extraction.embeddings, labels)),
    )
    order = {kind: k for k, kind in enumerate(dict.fromkeys(f.kind for f in findings))}
    return sorted(findings, key=lambda f: (order[f.kind], -f.score))  # each kind strongest first
