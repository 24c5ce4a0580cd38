"""Stranger safety: open-set measurement, threshold recommendation, published confidence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ORL, require_shared_data

from backend.recognizer.openset import features
from retraining.evaluate import (
    FINE_THRESHOLDS,
    OpenSetRow,
    evaluate,
    evaluate_open_set,
    open_set_sweep,
    recommend_open_set,
)
from retraining.train import fit_calibrator


def _row(t: float, recog: float, far: float) -> OpenSetRow:
    return OpenSetRow(t, recog, far, 0.0, 1 - recog)


def test_recommendation_takes_best_recognition_within_the_stranger_target() -> None:
    sweep = [_row(0.5, 0.99, 0.20), _row(0.7, 0.97, 0.02), _row(0.8, 0.95, 0.008), _row(0.9, 0.80, 0.0)]
    threshold, reason, reached = recommend_open_set(sweep, max_far=0.01)
    assert (threshold, reached) == (0.8, True)
    assert "0.8%" in reason and "95.0%" in reason


def test_recommendation_prefers_the_stricter_threshold_on_ties() -> None:
    sweep = [_row(0.5, 0.9, 0.0), _row(0.6, 0.9, 0.0), _row(0.7, 0.85, 0.0)]
    assert recommend_open_set(sweep, 0.01)[0] == 0.6


def test_recommendation_says_plainly_when_no_threshold_meets_the_target() -> None:
    sweep = [_row(0.5, 0.99, 0.40), _row(0.9, 0.70, 0.10), _row(0.98, 0.30, 0.05)]
    threshold, reason, reached = recommend_open_set(sweep, max_far=0.01)
    assert not reached
    assert threshold == 0.98  # the safest available
    assert "NO threshold" in reason and "photos" in reason


def test_sweep_rates_are_computed_from_the_scores() -> None:
    known_conf = np.array([0.95, 0.85, 0.75, 0.40])
    known_ok = np.array([True, True, False, True])
    unknown_conf = np.array([0.9, 0.6, 0.1, 0.05])
    rows = {r.threshold: r for r in open_set_sweep(known_conf, known_ok, unknown_conf)}
    r = rows[0.7]
    assert r.recognition_rate == pytest.approx(0.5)  # 0.95, 0.85
    assert r.misidentification_rate == pytest.approx(0.25)  # 0.75 wrong
    assert r.false_accept_rate == pytest.approx(0.25)  # 0.9
    assert r.rejection_rate == pytest.approx(0.25)
    assert rows[0.5].false_accept_rate == pytest.approx(0.5)
    # 95 % upper bound: above the point estimate, and shrinking with more stranger photos
    assert r.false_accept_upper95 > r.false_accept_rate
    many = open_set_sweep(known_conf, known_ok, np.r_[np.zeros(399), 0.9])
    assert next(x for x in many if x.threshold == 0.7).false_accept_upper95 < 0.02


def _clusters(n_classes: int, per_class: int, spread: float, dim: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    X = np.repeat(centres, per_class, axis=0) + spread * rng.normal(size=(n_classes * per_class, dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.repeat([f"S{i:03d}" for i in range(n_classes)], per_class)
    return X.astype(np.float32), y


def test_open_set_separates_strangers_on_separable_clusters() -> None:
    X, y = _clusters(15, 8, spread=0.15)
    result = evaluate_open_set(X, y, max_far=0.01)
    assert result is not None and result.n_folds == 5
    assert sorted(s for fold in result.unknown_students for s in fold) == sorted(set(y))  # each held out once
    r70 = next(r for r in result.sweep if r.threshold == 0.7)
    assert r70.false_accept_rate <= 0.01 and r70.recognition_rate >= 0.95


def test_overlapping_clusters_cannot_meet_a_strict_target() -> None:
    X, y = _clusters(10, 6, spread=3.0, seed=1)  # noise ≫ separation: strangers look like students
    ev = evaluate(X, y, max_far=0.001)
    assert ev.open_set is not None
    assert "NO threshold" in ev.recommendation_reason
    from retraining.verdict import stranger_verdict

    verdict = stranger_verdict(ev, ev.recommended_threshold)
    assert verdict.target_met is False or verdict.recognition_poor  # never "good" when no threshold is
    assert verdict.headline() and verdict.causes


def test_fewer_than_three_students_have_no_stranger_measurement() -> None:
    X, y = _clusters(2, 6, spread=0.1)
    assert evaluate_open_set(X, y) is None
    assert "at least 3 students" in evaluate(X, y).recommendation_reason


def test_calibrator_needs_both_outcomes() -> None:
    feats = np.random.default_rng(0).normal(size=(10, 3))
    assert fit_calibrator(feats, np.ones(10)) is None
    model = fit_calibrator(feats, np.arange(10) % 2)
    assert model is not None and model.predict_proba(feats).shape == (10, 2)


def test_features_use_the_predicted_students_centre() -> None:
    centres = np.eye(3, dtype=np.float32)
    emb = np.array([[0.8, 0.6, 0.0]], dtype=np.float32)
    proba = np.array([[0.7, 0.2, 0.1]])
    f = features(proba, emb, centres)
    np.testing.assert_allclose(f, [[0.7, 0.8, 0.2]], atol=1e-6)


def test_orl_recommended_threshold_keeps_strangers_out(published_root: Path) -> None:
    """The report answers "how likely is a stranger to be marked present" with a number ≤ target."""
    metrics = json.loads((published_root / "models" / "metrics.json").read_text())
    os_ = metrics["open_set"]
    assert os_["unknown_photos"] >= 100
    assert os_["false_accept_rate_at_recommended"] <= os_["max_far"] == 0.01
    assert os_["recognition_rate_at_recommended"] >= 0.9
    report = (published_root / "models" / "training_report.txt").read_text()
    assert "a stranger is marked present as some student in" in report


def test_real_strangers_are_not_marked_present(published_root: Path) -> None:
    """ORL people who were never enrolled, through the backend's own identify()."""
    require_shared_data()
    from backend.recognizer.loader import FaceRecognizer

    rec = FaceRecognizer.load(published_root, device="cpu")
    enrolled = rec.metadata["students"]
    accepted, total = 0, 0
    for k in range(13, 41):  # the published model enrolled s1..s12
        for i in (1, 6):
            for face in rec.identify(str(ORL / f"s{k}" / f"{i}.pgm")):
                total += 1
                accepted += face.accepted
    assert total >= 50
    assert accepted / total <= 0.02, f"{accepted}/{total} strangers accepted"
    # and enrolled students are still recognised
    hits = [rec.identify(str(ORL / f"s{k}" / "3.pgm"))[0] for k in range(1, 13)]
    assert sum(h.accepted and h.student_id in enrolled for h in hits) >= 11


def test_a_threshold_that_rejects_most_students_is_not_a_solution() -> None:
    sweep = [_row(0.5, 0.95, 0.30), _row(0.9, 0.40, 0.0), _row(0.98, 0.05, 0.0)]
    threshold, reason, reached = recommend_open_set(sweep, max_far=0.01)
    assert not reached and "NO threshold" in reason


def test_threshold_is_chosen_on_the_whole_curve_not_only_the_table_rows() -> None:
    """Strangers score up to 0.62 and students 0.55-0.99: the table's nearest safe row is 0.70,
    the whole curve finds 0.63 and recognises more students there."""
    rng = np.random.default_rng(0)
    known = rng.uniform(0.55, 0.99, 400)
    unknown = np.r_[rng.uniform(0.0, 0.6, 299), 0.62]
    correct = np.ones(400, dtype=bool)
    coarse = recommend_open_set(open_set_sweep(known, correct, unknown), 0.0)
    fine = recommend_open_set(open_set_sweep(known, correct, unknown, FINE_THRESHOLDS), 0.0)
    assert coarse[0] == 0.70 and fine[0] == 0.63
    rec = {t: float(np.mean(known >= t)) for t in (coarse[0], fine[0])}
    assert rec[0.63] > rec[0.70] + 0.1


def test_stranger_sentence_never_contradicts_itself() -> None:
    """Target met on false accepts but too few students recognised: it says met, and why that is not enough."""
    from types import SimpleNamespace

    from retraining.evaluate import OpenSet
    from retraining.report import stranger_sentence
    from retraining.verdict import stranger_verdict

    known = np.linspace(0.0, 0.99, 100)
    unknown = np.r_[np.full(98, 0.5), 0.9, 0.6]  # 2 % of strangers above 0.5, 1 % above 0.6
    os_ = OpenSet(1, [["S"]], 100, 100, [], known, np.ones(100, bool), unknown, None, 0.01)
    os_.fine_sweep = open_set_sweep(known, np.ones(100, bool), unknown, FINE_THRESHOLDS)
    ev = SimpleNamespace(open_set=os_)
    high = stranger_verdict(ev, 0.98)  # 0 strangers, 2 % of students
    at_high = stranger_sentence(high, 100)
    assert "target <= 1.0%: met; 2.0% of enrolled students' photos are recognised - too few" in at_high
    assert "NOT met" not in at_high
    # the best recognition that still keeps strangers within the target; none that lets more in
    assert at_high.endswith("Trade-off: at 0.61: 39% recognised, about 1 in 100 strangers accepted.")
    assert "at 0.51" not in at_high and "at 0.50" not in at_high
    assert high.headline().startswith("Only 2% of the students' photos are recognised at the threshold 0.98")
    low = stranger_verdict(ev, 0.3)
    at_low = stranger_sentence(low, 100)
    assert "target <= 1.0%: NOT met" in at_low and "too few" not in at_low
    assert low.headline().startswith("Strangers could be marked present")
