"""Is the new model usable at the threshold in use? One derivation, said the same way everywhere.

The summary, training_report.txt, report.html, metrics.json, the model's metadata and the
quality gate all read :class:`Verdict`: "stranger target met" means one thing (the estimated
share of strangers accepted at the threshold in use is within ``--max-far``), and a model
that keeps strangers out by turning most students away is said to be poor in the first
line, with the likely cause and the trade-off in plain words (the words: retraining/presentation/words.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .evaluate import Evaluation, OpenSetRow
from .quality import Finding, FindingKind
from .thresholds import GOOD_RECOGNITION, tradeoff_points

#: The likely causes named in the first lines, most serious first.
MAX_CAUSES = 3


@dataclass(frozen=True)
class Verdict:
    """Stranger safety and recognition at the threshold in use (``measured`` False: fewer than 3 students)."""

    threshold: float
    measured: bool
    max_far: float
    false_accept_rate: float | None = None
    false_accept_upper95: float | None = None
    recognition_rate: float | None = None
    misidentification_rate: float | None = None
    tradeoffs: tuple[OpenSetRow, ...] = ()  # lower thresholds that recognise more (only when recognition is poor)
    causes: tuple[str, ...] = ()  # the likely causes of poor recognition, in words

    @property
    def target_met(self) -> bool | None:
        """Strangers accepted at the threshold in use within the target; None when not measured."""
        if not self.measured or self.false_accept_rate is None:
            return None
        return self.false_accept_rate <= self.max_far

    @property
    def recognition_poor(self) -> bool:
        return self.recognition_rate is not None and self.recognition_rate < GOOD_RECOGNITION

    def headline(self) -> str:
        """The first line in words ("" when nothing is wrong): :func:`~retraining.presentation.words.verdict_headline`."""
        from .presentation.words import verdict_headline

        return verdict_headline(self)

    def to_dict(self) -> dict[str, object]:
        """metrics.json's ``verdict`` (its ``headline`` is added by the report, in words)."""
        return {
            "threshold": self.threshold,
            "measured": self.measured,
            "max_far": self.max_far,
            "target_met": self.target_met,
            "false_accept_rate": self.false_accept_rate,
            "false_accept_upper95": self.false_accept_upper95,
            "recognition_rate": self.recognition_rate,
            "misidentification_rate": self.misidentification_rate,
            "recognition_poor": self.recognition_poor,
            "likely_causes": list(self.causes),
            "tradeoffs": [
                {
                    "threshold": r.threshold,
                    "recognition_rate": r.recognition_rate,
                    "false_accept_rate": r.false_accept_rate,
                }
                for r in self.tradeoffs
            ],
        }


def stranger_verdict(evaluation: Evaluation, threshold: float, findings: Sequence[Finding] = ()) -> Verdict:
    """The verdict at ``threshold`` from the run's open-set measurement (and its findings, for the causes)."""
    os_ = evaluation.open_set
    if os_ is None:
        return Verdict(threshold, False, max_far=0.0)
    at = os_.row_at(threshold)
    known = os_.recognition_measured  # no: every student enrolled from one clip and nothing else
    verdict = Verdict(
        threshold,
        True,
        os_.max_far,
        at.false_accept_rate,
        at.false_accept_upper95,
        at.recognition_rate if known else None,
        at.misidentification_rate if known else None,
    )
    if not verdict.recognition_poor:
        return verdict
    return replace(
        verdict,
        tradeoffs=tradeoff_points(os_.fine_sweep, threshold, at, os_.max_far),
        causes=likely_causes(findings),
    )


def likely_causes(findings: Sequence[Finding]) -> tuple[str, ...]:
    """What in the enrollment most likely makes students hard to recognise, most frequent first."""
    kinds = Counter(f.kind for f in findings)
    pairs = sum(1 for f in findings if f.kind == FindingKind.NEAR_DUPLICATE and f.students)
    copies = kinds[FindingKind.NEAR_DUPLICATE] - pairs + kinds[FindingKind.DUPLICATE_FILE]
    causes = []
    if kinds[FindingKind.EMBEDDINGS_NOT_DISTINCT]:
        causes.append("the face embedder does not tell people apart (wrong or damaged weight file?)")
    if pairs:
        causes.append(f"{pairs} pair(s) of folders look like one student enrolled twice")
    if kinds[FindingKind.MISLABEL]:
        causes.append(f"{kinds[FindingKind.MISLABEL]} photo(s) look like they are in the wrong student's folder")
    if kinds[FindingKind.OUTLIER]:
        causes.append(f"{kinds[FindingKind.OUTLIER]} photo(s) look like another person")
    if copies:
        causes.append(f"{copies} photo(s) are copies in another student's folder")
    if kinds[FindingKind.SUBFOLDER_OTHER_PERSON]:
        causes.append(
            f"{kinds[FindingKind.SUBFOLDER_OTHER_PERSON]} folder(s) inside a student's folder hold another person's photos"
        )
    poor = kinds[FindingKind.BLURRY] + kinds[FindingKind.SMALL_FACE]
    if poor:
        causes.append(f"{poor} photo(s) are blurred or too small")
    if kinds[FindingKind.FEW_PHOTOS]:
        causes.append(f"{kinds[FindingKind.FEW_PHOTOS]} student(s) have too few photos")
    if not causes:
        causes.append("the photos are too few or too varied: add 5-20 clear, front-facing photos per student")
    return tuple(causes[:MAX_CAUSES])
