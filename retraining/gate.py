"""The quality gate: a new model replaces the one in service only if it is at least as good.

Runs after the new model is built and before anything published is touched. Refuses when

- its held-out accuracy is clearly below the floor (``--min-accuracy``: the 95 % upper
  bound of the measured accuracy is below it, so a handful of test photos cannot refuse a
  good model by bad luck), or its embeddings do not tell people apart at all;
- it is worse than the published model: on the new run's held-out photos of the students
  both models know (when both use the same face models, so their embeddings compare), and
  against the published model's own recorded held-out accuracy (photos filed in the wrong
  folders make BOTH models look wrong against the new labels, so the direct comparison
  alone would miss that); a drop of more than ``--max-regression`` percentage points;
- it no longer meets the stranger false-accept target that the published model met.

``--force`` publishes a refused model anyway; the decision records that it was forced.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.recognizer.loader import LoadedModel
from backend.recognizer.metadata import FaceModels, GateCheckRecord, GateRecord
from backend.recognizer.paths import ModelFolder

from .evaluate import Evaluation
from .heldout import Heldout
from .stats import rate_upper95

log = logging.getLogger(__name__)

#: Default floor of held-out accuracy. Measured (see docs/RETRAINING_GUIDE.md, "The quality gate"):
#: a FaceNet weight file with the right keys and wrong values gives 11-23 % on LFW photos, normal runs
#: 98.8-100 % (ORL 40 people, LFW 20 and 40 people, dlib). Half-way is far from both.
DEFAULT_MIN_ACCURACY = 0.50
#: Default largest accepted drop against the published model, in percentage points. Measured: adding
#: or removing a few students moves held-out accuracy by 0-2 points; 40 % of photos in wrong folders
#: costs 30+ points.
DEFAULT_MAX_REGRESSION = 5.0


#: One rule of the gate and how the new model fared: name, passed, detail (a sentence with the
#: figures, for the report and the ERROR line); the same record the model's metadata keeps.
Check = GateCheckRecord


@dataclass(frozen=True)
class GateDecision:
    """All checks; ``publish`` is what happens (a forced model is published although it failed)."""

    checks: tuple[Check, ...]
    forced: bool = False
    compared_with: str | None = None  # version of the published model compared against

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def publish(self) -> bool:
        return self.passed or self.forced

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def verdict(self) -> str:
        """One line: passed, refused (why) or forced (why)."""
        if self.passed:
            return "passed" + (f" (compared with model {self.compared_with})" if self.compared_with else "")
        why = "; ".join(c.detail for c in self.failures)
        return ("FORCED: published with --force although " if self.forced else "refused: ") + why

    def record(self) -> GateRecord:
        """The decision as the model's metadata records it."""
        return GateRecord(
            passed=self.passed,
            forced=self.forced,
            published=self.publish,
            compared_with=self.compared_with,
            checks=self.checks,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.record().to_dict()


@dataclass(frozen=True)
class Candidate:
    """What the gate needs to know about the new model (from a live run or a waiting candidate)."""

    accuracy: float | None
    n_test: int
    stranger_target_met: bool | None  # None: not measured (fewer than 3 students)
    embeddings_distinct: bool  # the data-quality separation check's result (False: refuse)
    fingerprint: Mapping[str, Any]  # FaceModels.fingerprint(): what the embeddings mean
    heldout_embeddings: np.ndarray = field(repr=False)
    heldout_true: np.ndarray = field(repr=False)
    heldout_pred: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class GateSettings:
    min_accuracy: float = DEFAULT_MIN_ACCURACY
    max_regression: float = DEFAULT_MAX_REGRESSION  # percentage points
    force: bool = False


def accuracy_upper95(accuracy: float, n: int) -> float:
    """One-sided 95 % upper bound (Clopper-Pearson) of an accuracy measured on ``n`` photos."""
    return rate_upper95(accuracy, n)


def decide(candidate: Candidate, published: LoadedModel | None, settings: GateSettings) -> GateDecision:
    """Run every check of the gate (see the module docstring)."""
    checks = [_floor(candidate, settings), _separation(candidate)]
    version = None
    if published is not None:
        version = published.model_version
        checks += _against_published(candidate, published, settings)
    decision = GateDecision(
        tuple(checks), forced=settings.force and not all(c.passed for c in checks), compared_with=version
    )
    log.debug("Quality gate: %s", decision.verdict())
    return decision


def _floor(c: Candidate, settings: GateSettings) -> Check:
    if c.accuracy is None or c.n_test == 0:
        return Check("accuracy floor", True, "no held-out photos to measure accuracy on (too few photos per student)")
    upper = accuracy_upper95(c.accuracy, c.n_test)
    ok = upper >= settings.min_accuracy
    detail = f"held-out accuracy {c.accuracy:.1%} on {c.n_test} photos" + (
        "" if ok else f" is below the floor of {settings.min_accuracy:.0%} (--min-accuracy)"
    )
    return Check("accuracy floor", ok, detail)


def _separation(c: Candidate) -> Check:
    if c.embeddings_distinct:
        return Check("embeddings separate people", True, "photos of different students give different embeddings")
    return Check(
        "embeddings separate people",
        False,
        "the face embedder does not tell people apart (wrong or damaged weight file?)",
    )


def _against_published(c: Candidate, published: LoadedModel, settings: GateSettings) -> list[Check]:
    checks = []
    meta = published.info
    version = published.model_version
    recorded = meta.metrics.accuracy
    if c.accuracy is not None and recorded is not None:
        drop = (float(recorded) - c.accuracy) * 100
        ok = drop <= settings.max_regression
        checks.append(
            Check(
                "vs published (recorded)",
                ok,
                f"held-out accuracy {c.accuracy:.1%} vs {float(recorded):.1%} recorded by the published model "
                f"{version}"
                + ("" if ok else f": {drop:.1f} points worse (more than --max-regression {settings.max_regression:g})"),
            )
        )
    same = meta.face_models.fingerprint() == dict(c.fingerprint)
    common = np.isin(c.heldout_true, published.classes)
    if same and common.sum() > 0:
        _, pub_pred, _ = published.model.recognize(c.heldout_embeddings[common])
        pub_acc = float(np.mean(np.asarray(pub_pred).astype(str) == c.heldout_true[common]))
        new_acc = float(np.mean(c.heldout_pred[common] == c.heldout_true[common]))
        drop = (pub_acc - new_acc) * 100
        ok = drop <= settings.max_regression
        checks.append(
            Check(
                "vs published (same photos)",
                ok,
                f"on {int(common.sum())} held-out photos of the students both models know: new {new_acc:.1%}, "
                f"published {pub_acc:.1%}"
                + ("" if ok else f": {drop:.1f} points worse (more than --max-regression {settings.max_regression:g})"),
            )
        )
    met_before = meta.metrics.stranger_target_met
    if met_before is True and c.stranger_target_met is False:
        checks.append(
            Check(
                "stranger safety",
                False,
                f"strangers are accepted more often than the target allows, which the published model {version} met",
            )
        )
    return checks


def candidate_from_run(
    evaluation: Evaluation,
    embeddings_distinct: bool,
    models: FaceModels,
    embeddings: np.ndarray,
    stranger_target_met: bool | None,
) -> Candidate:
    """The gate's view of a model built by this run (``embeddings_distinct``: the separation check;
    ``stranger_target_met``: the run's verdict at the threshold it publishes, retraining/verdict.py)."""
    return Candidate(
        accuracy=evaluation.accuracy,
        n_test=evaluation.n_test,
        stranger_target_met=stranger_target_met,
        embeddings_distinct=embeddings_distinct,
        fingerprint=models.fingerprint(),
        heldout_embeddings=np.asarray(embeddings)[evaluation.test_index],
        heldout_true=np.asarray(evaluation.test_true).astype(str),
        heldout_pred=np.asarray(evaluation.test_pred).astype(str),
    )


def candidate_from_folder(loaded: LoadedModel, folder: ModelFolder) -> Candidate:
    """The gate's view of a sealed model waiting in a folder (``--review`` → ``--promote``)."""
    meta = loaded.info
    held = Heldout.load(folder.heldout)
    X = np.load(folder.X, allow_pickle=False)
    return Candidate(
        accuracy=meta.metrics.accuracy,
        n_test=meta.metrics.n_test,
        stranger_target_met=meta.metrics.stranger_target_met,
        embeddings_distinct=meta.metrics.embeddings_distinct,
        fingerprint=meta.face_models.fingerprint(),
        heldout_embeddings=X[held.index],
        heldout_true=held.true,
        heldout_pred=held.pred,
    )
