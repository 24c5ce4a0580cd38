"""The stranger estimate and the threshold it picks, checked against people the run never saw.

A real school's folders hold mistakes; the run's own evidence (data-quality findings, and
students held out that the model recognises again and again as one other student) must keep
them from counting as strangers. The end-to-end test plants mistakes into real LFW folders,
retrains with the CLI, and measures the published model through the loader on unseen photos
of the enrolled people and on the never-enrolled people of ``lfw_strangers``.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import LFW, LFW_STRANGERS, SCRFD_25G, embed_lfw_early, require_shared_data
from embedding_store import fill_scrfd_dlib_cache
from markupsafe import escape
from scipy.stats import binomtest

from bench.lfw_enrollment import Enrollment, Mistakes, embed_all, make_enrollment, measure, stranger_photos
from retraining import gate
from retraining.evaluate import (
    _people_bootstrap_upper95,
    evaluate_open_set,
    for_more_students,
    open_set_sweep,
    repeatedly_accepted,
)
from retraining.evidence import StrangerEvidence, merge_groups, stranger_evidence
from retraining.presentation.words import one_in
from retraining.quality import Finding, FindingKind
from retraining.stats import rate_upper95, upper95
from retraining.train import fit_model

# ----------------------------------------------------------------------------- small, exact rules


def test_one_confidence_bound_for_every_rate() -> None:
    """The report's bound and the gate's are one computation, scipy's exact Clopper-Pearson."""
    for k, n in ((0, 300), (3, 300), (10, 50)):
        assert upper95(k, n) == pytest.approx(binomtest(k, n, alternative="less").proportion_ci(0.95).high)
    assert upper95(0, 300) == pytest.approx(0.00994, abs=1e-5)
    assert upper95(5, 5) == 1.0 and upper95(0, 0) == 1.0
    assert gate.accuracy_upper95(0.9, 50) == rate_upper95(0.9, 50) == upper95(45, 50)


def test_same_person_pairs_merge_into_groups() -> None:
    groups = merge_groups([frozenset("AB"), frozenset("CD"), frozenset("BE")])
    assert groups == (frozenset("ABE"), frozenset("CD"))


def test_evidence_from_findings() -> None:
    paths = [Path(f"{s}/{i}.jpg") for s in "ABCD" for i in range(3)]
    findings = [
        Finding(FindingKind.NEAR_DUPLICATE, "A/0.jpg", "look alike", 0.9, "B/1.jpg", ("A", "B")),  # enrolled twice
        Finding(FindingKind.NEAR_DUPLICATE, "C/0.jpg", "the same photo", 0.99, "D/2.jpg"),  # one copied photo
        Finding(FindingKind.MISLABEL, "C/1.jpg", "wrong folder", 0.3, "A"),
        Finding(FindingKind.BLURRY, "D/0.jpg", "blurred", 4.0),  # a fair test photo, only blurred
    ]
    ev = stranger_evidence(findings, paths, [[Path("B/2.jpg"), Path("D/1.jpg")]])
    assert ev.groups == (frozenset("AB"),)
    unfair = {str(p): r for p, r in zip(paths, ev.unfair) if r}
    assert unfair == {
        "C/0.jpg": "near_duplicate",
        "D/2.jpg": "near_duplicate",
        "C/1.jpg": "mislabel",
        "B/2.jpg": "duplicate_file",
        "D/1.jpg": "duplicate_file",
    }


def test_a_misspelt_finding_kind_fails_where_it_is_made() -> None:
    with pytest.raises(ValueError):
        Finding("embedings_not_distinct", "(all photos)", "typo")  # type: ignore[arg-type]
    assert Finding("blurry", "x.jpg", "soft").kind is FindingKind.BLURRY  # type: ignore[arg-type]


def test_repeatedly_accepted_needs_many_confident_answers_naming_one_student() -> None:
    students = np.array(["A"] * 10 + ["S"] * 10)
    predicted = np.array(["B"] * 7 + ["C"] * 3 + ["B", "C", "D", "E", "F", "G", "H", "I", "J", "K"])
    confidence = np.array([0.9] * 7 + [0.2] * 3 + [0.9] * 10)
    assert repeatedly_accepted(students, predicted, confidence) == [("A", "B", 7, 10)]
    # the same answers, unsure: nothing
    assert repeatedly_accepted(students, predicted, np.full(20, 0.3)) == []


def test_strangers_rate_grows_with_the_number_of_students_the_model_knows() -> None:
    assert for_more_students(0.0, 1.25) == 0.0 and for_more_students(0.01, 1.0) == 0.01
    assert for_more_students(0.01, 1.25) == pytest.approx(1 - 0.99**1.25)
    assert for_more_students(0.01, 1.25) > 0.01


def test_the_bound_counts_people_when_one_persons_photos_are_accepted_together() -> None:
    """10 of 500 stranger photos accepted: scattered over 10 people, or all of one person's photos. The photos
    are the same count; the second case says much less, so its bound must be wider."""
    people = np.repeat(np.arange(50), 10)
    scattered = np.zeros(500)
    scattered[np.arange(0, 500, 50)] = 0.9
    together = np.zeros(500)
    together[:10] = 0.9
    known = np.full(100, 0.95)
    ok = np.ones(100, dtype=bool)
    (a,) = open_set_sweep(known, ok, scattered, (0.5,), unknown_people=people)
    (b,) = open_set_sweep(known, ok, together, (0.5,), unknown_people=people)
    assert a.false_accept_rate == b.false_accept_rate == 0.02
    assert b.false_accept_upper95 > a.false_accept_upper95 >= upper95(10, 500)
    assert _people_bootstrap_upper95(np.zeros(500), people, (0.5,))[0] == 0.0


def test_one_in_reads_like_a_sentence() -> None:
    assert [one_in(r) for r in (0.01, 0.0057, 0.034)] == ["1 in 100", "1 in 180", "1 in 29"]
    assert one_in(0.3) == "3 in 10"


def test_fit_model_honours_its_seed() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.repeat([f"S{i}" for i in range(6)], 10)
    beta = [
        float(fit_model(X, y, seed=s).classifier.calibrated_classifiers_[0].calibrators[0].beta_) for s in (1, 1, 2)
    ]
    assert beta[0] == beta[1] and beta[0] != beta[2]


def test_data_quality_uses_the_run_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    from retraining import quality
    from retraining.dataset import ImageRecord
    from retraining.extract import Extraction, FaceInfo

    seen: list[int] = []
    real = quality.student_similarity

    def spy(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0, **more: object) -> object:
        seen.append(seed)
        return real(embeddings, labels, seed=seed, **more)

    monkeypatch.setattr(quality, "student_similarity", spy)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(12, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    records = [ImageRecord(Path(f"S{i // 4}/{i}.jpg"), f"S{i // 4}", f"S{i // 4}") for i in range(12)]
    ex = Extraction(X, records, [FaceInfo(1, 100.0, 0.9, False, 100.0) for _ in records])
    quality.data_quality(ex, [], seed=7)
    assert seen and set(seen) == {7}


def test_a_student_enrolled_twice_is_held_out_as_one_person() -> None:
    """Two folders of one person: held out together, so one is never a 'stranger' the other recognises."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(12, 32))
    X = np.repeat(centres, 8, axis=0) + 0.2 * rng.normal(size=(96, 32))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.repeat([f"S{i:02d}" for i in range(12)], 8)
    y[8:12] = "S99"  # half of S01's photos in another folder: one person, two students
    naive = evaluate_open_set(X, y, seed=0)
    grouped = evaluate_open_set(X, y, seed=0, evidence=StrangerEvidence(groups=(frozenset(("S01", "S99")),)))
    assert naive is not None and grouped is not None
    assert all(("S01" in fold) == ("S99" in fold) for fold in grouped.unknown_students)
    assert not all(("S01" in fold) == ("S99" in fold) for fold in naive.unknown_students)
    assert grouped.left_out.held_together == (("S01", "S99"),)
    at_naive, at_grouped = naive.row_at(0.5), grouped.row_at(0.5)
    assert at_grouped.false_accept_rate < at_naive.false_accept_rate or naive.left_out.accepted_as


# ----------------------------------------------------------------------------- real photos, through the loader


#: The mistakes planted into the enrollment of the "planted" runs.
PLANTED = Mistakes(split_people=3, moved_share=0.05, copied_files=3)


@dataclass
class LfwEnrollmentRun:
    cache_dir: Path  # the session's LFW embedding cache: copied into each run's output root, never written to
    vectors: dict[Path, np.ndarray]
    strangers: list[Path]


def _photos_to_embed() -> list[Path]:
    """Every photo of both enrollments (the clean and the planted one), then the 300 strangers' photos.

    Both trees: the planted one draws other photos of the same people (choosing whom to split moves the
    random stream), so embedding the clean tree alone left 28 of its 160 unseen photos unmeasured."""
    enrolled = sorted({p for e in (_enrollment(Mistakes.none()), _enrollment(PLANTED)) for p in _photos_of(e)})
    return [*enrolled, *stranger_photos(LFW_STRANGERS)]


embed_lfw_early("lfw_enrollment", _photos_to_embed)  # embedded in the background from the session's start


@pytest.fixture(scope="module")
def lfw_enrollment(lfw_embedding_cache: Path) -> LfwEnrollmentRun:
    """40 LFW people x 14 photos and the 300 never-enrolled people, embedded once (SCRFD 2.5g + dlib) into the
    session's LFW embedding cache (photos another fixture embedded already are read from it)."""
    for path in (LFW, LFW_STRANGERS, SCRFD_25G):
        require_shared_data(path)
    photos = _photos_to_embed()
    fill_scrfd_dlib_cache(photos, lfw_embedding_cache)  # any not embedded yet (none, when started early)
    vectors = embed_all(photos, lfw_embedding_cache, SCRFD_25G)  # the bench's own reading: every one from the cache
    return LfwEnrollmentRun(lfw_embedding_cache, vectors, stranger_photos(LFW_STRANGERS))


def _photos_of(enrollment: Enrollment) -> set[Path]:
    return {p for ps in [*enrollment.unseen.values(), *enrollment.folders.values()] for p in ps}


def _enrollment(mistakes: Mistakes) -> Enrollment:
    return make_enrollment(LFW, n_people=40, mistakes=mistakes, seed=4)


def _retrain(tmp: Path, enrollment: Enrollment, fixture: LfwEnrollmentRun, *extra: str) -> tuple[Path, dict, str]:
    import retrain_model

    data = enrollment.write(tmp / "data")
    out = tmp / "out"
    shutil.copytree(fixture.cache_dir, out / "models" / "cache")
    args = ["--data-dir", str(data), "--output-root", str(out), "--quiet", "--seed", "4"]
    args += ["--detector", "scrfd", "--detector-model", str(SCRFD_25G)]
    args += ["--embedder", "dlib", "--device", "cpu", *extra]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert retrain_model.main(args) == 0
    return out, json.loads((out / "models" / "metrics.json").read_text()), printed.getvalue()


@pytest.mark.parametrize("mistakes", [Mistakes.none(), PLANTED], ids=["clean", "planted"])
def test_published_threshold_recognises_students_and_keeps_strangers_out(
    tmp_path: Path, lfw_enrollment: LfwEnrollmentRun, mistakes: Mistakes
) -> None:
    enrollment = _enrollment(mistakes)
    out, metrics, printed = _retrain(tmp_path, enrollment, lfw_enrollment)
    # at the published threshold, through the loader
    (at,) = measure(out, enrollment, lfw_enrollment.vectors, lfw_enrollment.strangers, (metrics["threshold"],))
    recognised, wrong, strangers = at.recognised, at.wrong_student, at.strangers
    unseen = sum(len(ps) for ps in enrollment.unseen.values())
    assert at.n_unseen == unseen, f"{unseen - at.n_unseen} of the {unseen} unseen photos have no embedding"
    verdict = metrics["verdict"]
    # the decision: students recognised, strangers and wrong names rare (measured on photos the run never saw)
    assert recognised >= 0.90, (metrics["threshold"], recognised)
    assert strangers <= 0.02 and wrong <= 0.01, (metrics["threshold"], strangers, wrong)
    # the run's own estimate lies within the 95 % interval (exact Clopper-Pearson) of the rate measured on them
    k = round(recognised * at.n_unseen)
    interval = binomtest(k, at.n_unseen).proportion_ci(0.95, method="exact")
    assert interval.low <= verdict["recognition_rate"] <= interval.high, (
        f"estimated {verdict['recognition_rate']:.3f}, measured {k}/{at.n_unseen} "
        f"(95% interval {interval.low:.3f}-{interval.high:.3f})"
    )
    assert verdict["false_accept_upper95"] >= strangers
    assert verdict["false_accept_rate"] <= max(2 * strangers, 0.01) + 1e-9
    # one verdict, said the same way everywhere
    assert metrics["open_set"]["target_reached"] is verdict["target_met"] is True
    assert "target <= 1.0%: met" in printed
    model_json = (out / "models" / "training_report.txt").read_text()
    assert "met" in model_json.split("VERDICT")[1].split("PIPELINE")[0]
    left = metrics["open_set"]["left_out"]
    if mistakes.split_people:
        held = {frozenset(g) for g in left["held_together"]}
        split = {frozenset(f.split("_")[0] for f in enrollment.folders_of(p)) for p in enrollment.split}
        assert split <= held, (split, held)  # every person enrolled twice was found and held out as one
        assert left["photos"].get("mislabel", 0) >= 0.6 * len(enrollment.moved)
        assert "look like one person enrolled twice" in model_json
    else:
        assert not left["held_together"]


def test_a_threshold_that_turns_students_away_is_said_first_and_everywhere_alike(
    tmp_path: Path, lfw_enrollment: LfwEnrollmentRun
) -> None:
    """Strangers kept out by turning most students away: the summary's first line and report.html's verdict
    say so, with the likely cause and a trade-off; "met" agrees in the summary, the report and metrics.json."""
    enrollment = _enrollment(PLANTED)
    out, metrics, printed = _retrain(tmp_path, enrollment, lfw_enrollment, "--threshold", "0.999")
    verdict = metrics["verdict"]
    assert verdict["recognition_poor"] and verdict["target_met"] is True
    first = printed.strip().splitlines()[0]
    assert first.startswith("Retraining finished. ATTENTION: Only ") and "0.999 that keeps strangers out" in first
    assert "look like one student enrolled twice" in printed and "trade-off          : at 0." in printed
    assert "target <= 1.0%: met" in printed
    html = (out / "models" / "report.html").read_text(encoding="utf-8")
    assert str(escape(verdict["headline"])) in html and "Likely cause:" in html
    report = (out / "models" / "training_report.txt").read_text(encoding="utf-8")
    assert verdict["headline"] in report.split("PIPELINE")[0]
    assert metrics["open_set"]["target_reached"] is True
