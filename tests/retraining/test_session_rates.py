"""Per-session rates from a run's open-set scores: per person, and the same as sessions actually give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from backend.recognizer import AttendanceSession, FaceRecognizer, PresenceRule, Recognition
from backend.recognizer.paths import OutputPaths
from retraining.evaluate import evaluate_open_set
from retraining.session_rates import (
    open_set_session_rates,
    published_rule,
    session_rates,
    suggested_min_confidence,
)

FIXTURE = ROOT / "tests" / "fixtures" / "model_1_0_orl6"


@pytest.fixture(scope="module")
def open_set():
    """The open-set folds of 6 real ORL students (dlib embeddings stored with release 1.0's model)."""
    X = np.load(FIXTURE / "models" / "X.npy")
    y = np.load(FIXTURE / "models" / "y.npy").astype(str)
    result = evaluate_open_set(X, y, seed=0)
    assert result is not None
    return result


def test_the_open_set_records_whose_each_row_is(open_set) -> None:
    held_out = {s for fold in open_set.unknown_students for s in fold}
    assert len(open_set.unknown_groups) == open_set.n_unknown_photos == len(open_set.unknown_confidence)
    assert len(open_set.known_groups) == open_set.n_known_photos == len(open_set.known_confidence)
    assert set(open_set.unknown_groups) == held_out
    assert set(open_set.known_groups) <= {f"STU{i:03d}" for i in range(1, 7)}


def test_the_estimate_is_what_simulated_sessions_through_the_rule_give(open_set) -> None:
    """Closed form (binomial tail per person) vs sessions drawn from each person's scored photos and
    counted by AttendanceSession itself, at a threshold where some strangers' photos pass."""
    threshold = float(np.quantile(open_set.unknown_confidence, 0.7))
    rule, frames = PresenceRule(), 6
    estimate = open_set_session_rates(open_set, threshold, frames=frames, rule=rule)
    assert estimate is not None and estimate.per_person and 0.0 < estimate.stranger_marks_present < 1.0
    rng = np.random.default_rng(0)
    marked, sessions = 0, 0
    for person in np.unique(open_set.unknown_groups):
        conf = open_set.unknown_confidence[open_set.unknown_groups == person]
        for _ in range(400):
            session = AttendanceSession(None, rule=rule)
            for c in rng.choice(conf, frames):
                session.add_recognitions([Recognition(None, "STU001", "x", float(c), bool(c >= threshold))])
            marked += bool(session.present())
            sessions += 1
    assert marked / sessions == pytest.approx(estimate.stranger_marks_present, abs=0.03)


def test_alike_frames_of_one_stranger_are_not_treated_as_independent() -> None:
    """One stranger of ten is accepted in every frame (a relative of a student), the others never:
    one stranger in ten marks somebody present, whatever the session length. Treating the same
    per-frame rate (10 %) as independent frames would say 61 % at 20 frames."""
    known = np.ones(40)
    unknown = np.concatenate([np.ones(5), np.zeros(45)])
    groups = np.repeat([f"P{i}" for i in range(10)], 5)
    per_person = session_rates(
        known, known.astype(bool), unknown, 0.5, known_groups=np.repeat(["A", "B"], 20), unknown_groups=groups
    )
    independent = session_rates(known, known.astype(bool), unknown, 0.5)
    assert per_person.per_person and per_person.stranger_marks_present == pytest.approx(0.1)
    assert not independent.per_person and independent.stranger_marks_present == pytest.approx(0.608, abs=0.001)
    assert per_person.per_frame_false_accept == independent.per_frame_false_accept == pytest.approx(0.1)
    assert per_person.stranger_upper95 > per_person.stranger_marks_present


def test_the_published_rule_is_stricter_only_when_the_threshold_alone_misses_the_target(open_set) -> None:
    low = float(np.quantile(open_set.unknown_confidence, 0.5))  # half the strangers' photos pass
    strict = float(np.max(open_set.unknown_confidence)) + 1e-6  # none passes
    at_low = open_set_session_rates(open_set, low)
    assert at_low is not None and at_low.stranger_marks_present > 0.01
    rule = published_rule(open_set, low)
    assert rule.min_confidence is not None and rule.min_confidence > low
    assert published_rule(open_set, strict) == PresenceRule()


def test_the_suggested_confidence_meets_the_target_and_is_the_lowest_that_does(open_set) -> None:
    start = float(np.quantile(open_set.unknown_confidence, 0.5))
    bar = suggested_min_confidence(open_set, start, 0.01)
    if bar is None:
        pytest.skip("no confidence meets the target on these 6 students")
    at = open_set_session_rates(open_set, bar)
    below = open_set_session_rates(open_set, round(bar - 0.01, 2))
    assert at is not None and at.stranger_marks_present <= 0.01
    assert bar == pytest.approx(start, abs=0.01) or (below is not None and below.stranger_marks_present > 0.01)


def test_a_published_run_reports_its_session_rates(published_root: Path) -> None:
    paths = OutputPaths.at(published_root)
    metrics = json.loads(paths.metrics_json.read_text(encoding="utf-8"))
    session = metrics["session"]
    assert session["rule"] == {"min_frames": 2, "min_share": 0.1, "min_confidence": None}
    typical = next(r for r in session["rates"] if r["frames"] == session["typical_frames"])
    assert typical["threshold"] == pytest.approx(metrics["threshold"]) and typical["per_person"]
    assert 0.0 <= typical["stranger_marks_present"] <= typical["stranger_upper95"] <= 1.0
    assert typical["enrolled_marked_present"] >= typical["per_frame_recognition"] - 1e-9  # 2 of 20 frames is easier
    text = paths.report_txt.read_text(encoding="utf-8")
    assert "ATTENDANCE SESSIONS" in text and "stranger marks somebody present" in text
    # the model records the rule the run chose, and a session on that model uses it
    recognizer = FaceRecognizer.load(published_root)
    recorded = recognizer.metadata["session_rule"]
    bar = session["suggested_min_confidence"]
    assert recorded["min_confidence"] == (bar if bar is not None and bar > metrics["threshold"] else None)
    assert AttendanceSession(recognizer).rule == recognizer.model_metadata.session_rule == PresenceRule.from_dict(recorded)
