"""Is the new model usable at the threshold in use? One derivation, said the same way everywhere.

The summary, training_report.txt, report.html, metrics.json, the model's metadata and the
quality gate all read :class:`Verdict`: "stranger target met" means one thing (the estimated
share of strangers accepted at the threshold in use is within ``--max-far``), and a model
that keeps strangers out by turning most students away is said to be poor in the first
line, with the likely cause and the trade-off in plain words.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .evaluate import Evaluation, OpenSetRow
from .quality import Finding, FindingKind

#: Below this share of enrolled students' photos recognised at the threshold in use, the first line says so.
GOOD_RECOGNITION = 0.80
#: Trade-off thresholds offered when recognition is poor: at most this many, each recognising more ...
MAX_TRADEOFFS = 2
#: ... keeping strangers within the target, or, when no threshold does, within this many times the target
#: (a threshold that lets every stranger in is no trade-off).
TRADEOFF_MAX_FAR_FACTOR = 3.0
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
        """The first line of the summary and of report.html when something is wrong; "" when nothing is."""
        if not self.measured or self.recognition_rate is None:
            return ""
        if self.target_met is False:
            return (
                f"Strangers could be marked present: about {one_in(self.false_accept_rate)} strangers would be "
                f"accepted at the threshold {fmt_threshold(self.threshold)} (target: at most {one_in(self.max_far)})."
            )
        if self.recognition_poor:
            return (
                f"Only {self.recognition_rate:.0%} of the students' photos are recognised at the threshold "
                f"{fmt_threshold(self.threshold)} that keeps strangers out."
            )
        return ""

    def cause_text(self) -> str:
        return "; ".join(self.causes) if self.causes else ""

    def tradeoff_text(self) -> str:
        """e.g. "at 0.80: 87% recognised, about 1 in 100 strangers accepted"."""
        return "; ".join(
            f"at {fmt_threshold(r.threshold)}: {r.recognition_rate:.0%} recognised, {strangers_in_words(r.false_accept_rate)}"
            for r in self.tradeoffs
        )

    def to_dict(self) -> dict[str, object]:
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
            "headline": self.headline(),
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


def strangers_in_words(rate: float | None) -> str:
    """ "about 1 in 150 strangers accepted", or "no stranger accepted in the test"."""
    if rate is not None and rate <= 0:
        return "no stranger accepted in the test"
    return f"about {one_in(rate)} strangers accepted"


def one_in(rate: float | None) -> str:
    """A share of strangers in words a teacher reads: "1 in 100", "1 in 30", "3 in 10", "none"."""
    if rate is None:
        return "an unknown share of"
    if rate <= 0:
        return "none of the"
    if rate >= 0.95:
        return "almost all"
    if rate >= 0.1:
        return f"{round(rate * 10):.0f} in 10"
    return f"1 in {float(f'{1 / rate:.2g}'):.0f}"


def stranger_verdict(evaluation: Evaluation, threshold: float, findings: Sequence[Finding] = ()) -> Verdict:
    """The verdict at ``threshold`` from the run's open-set measurement (and its findings, for the causes)."""
    os_ = evaluation.open_set
    if os_ is None:
        return Verdict(threshold, False, max_far=0.0)
    at = os_.row_at(threshold)
    verdict = Verdict(
        threshold,
        True,
        os_.max_far,
        at.false_accept_rate,
        at.false_accept_upper95,
        at.recognition_rate,
        at.misidentification_rate,
    )
    if not verdict.recognition_poor:
        return verdict
    lower = [r for r in os_.fine_sweep if r.threshold < threshold and r.recognition_rate > at.recognition_rate]
    safe = [r for r in lower if r.false_accept_rate <= os_.max_far]
    if not safe:  # nothing keeps strangers within the target: say what a little more risk would buy
        safe = [r for r in lower if r.false_accept_rate <= TRADEOFF_MAX_FAR_FACTOR * os_.max_far]
    picks: list[OpenSetRow] = []
    good = [r for r in safe if r.recognition_rate >= GOOD_RECOGNITION]
    if good:
        picks.append(max(good, key=lambda r: r.threshold))  # the strictest that recognises well
    best = max(safe, key=lambda r: (round(r.recognition_rate, 3), r.threshold), default=None)
    if best is not None and best not in picks:
        picks.append(best)
    return replace(
        verdict,
        tradeoffs=tuple(sorted(picks, key=lambda r: -r.threshold)[:MAX_TRADEOFFS]),
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


def fmt_threshold(t: float) -> str:
    """0.8 → "0.80"; a threshold set with more digits keeps them (0.995 → "0.995")."""
    return f"{t:.2f}" if abs(round(t, 2) - t) < 1e-9 else f"{t:.4g}"
