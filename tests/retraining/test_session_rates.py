"""Per-session rates from a run's open-set scores: per person, and the same as sessions actually give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import OLD_RELEASE_FIXTURE

from backend.recognizer import AttendanceSession, FaceRecognizer, PresenceRule, Recognition
from backend.recognizer.paths import OutputPaths
from retraining.evaluate import evaluate_open_set
from retraining.presentation.words import session_lines, session_sentence
from retraining.session_rates import (
    MIN_SESSION_RECOGNITION,
    SHORT_FRAMES,
    TYPICAL_FRAMES,
    SessionScores,
    session_rates,
    summarize_sessions,
)


@pytest.fixture(scope="module")
def open_set():
    """The open-set folds of 6 real ORL students (dlib embeddings stored with release 1.0's model)."""
    X = np.load(OLD_RELEASE_FIXTURE / "models" / "X.npy")
    y = np.load(OLD_RELEASE_FIXTURE / "models" / "y.npy").astype(str)
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
    estimate = session_rates(
        open_set.known_confidence,
        open_set.known_correct,
        open_set.unknown_confidence,
        threshold,
        frames=frames,
        rule=rule,
        known_groups=open_set.known_groups,
        unknown_groups=open_set.unknown_groups,
    )
    assert estimate.per_person and 0.0 < estimate.stranger_marks_present < 1.0
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


def test_the_open_set_estimate_is_carried_over_to_all_students(open_set) -> None:
    """Each fold's model knew 80 % of the students: a stranger's per-frame chance is carried over
    to the published model's number like the per-photo rate (1 - (1 - q)^ratio)."""
    threshold = float(np.quantile(open_set.unknown_confidence, 0.7))
    scores = SessionScores.of(open_set)
    assert open_set.enrolled_ratio > 1.0
    carried = scores.rates(threshold, frames=6)
    raw = session_rates(
        open_set.known_confidence,
        open_set.known_correct,
        open_set.unknown_confidence,
        threshold,
        frames=6,
        known_groups=open_set.known_groups,
        unknown_groups=open_set.unknown_groups,
    )
    assert carried.stranger_marks_present > raw.stranger_marks_present
    assert carried.enrolled_marked_present == raw.enrolled_marked_present


def test_alike_frames_of_one_stranger_are_not_treated_as_independent() -> None:
    """One stranger of ten is accepted in every frame (a relative of a student), the others never:
    one stranger in ten marks somebody present, whatever the session length. Treating the same
    per-frame rate (10 %) as independent frames would say 1.1 % at 20 frames (6 of them needed):
    ten times too safe."""
    known = np.ones(40)
    unknown = np.concatenate([np.ones(5), np.zeros(45)])
    groups = np.repeat([f"P{i}" for i in range(10)], 5)
    per_person = session_rates(
        known, known.astype(bool), unknown, 0.5, known_groups=np.repeat(["A", "B"], 20), unknown_groups=groups
    )
    independent = session_rates(known, known.astype(bool), unknown, 0.5)
    assert per_person.per_person and per_person.stranger_marks_present == pytest.approx(0.1)
    assert not independent.per_person and independent.stranger_marks_present == pytest.approx(0.0113, abs=0.0001)
    assert per_person.per_frame_false_accept == independent.per_frame_false_accept == pytest.approx(0.1)
    assert per_person.stranger_upper95 > per_person.stranger_marks_present


def test_the_model_rule_is_stricter_only_when_the_threshold_alone_misses_the_target(open_set) -> None:
    low = float(np.quantile(open_set.unknown_confidence, 0.5))  # half the strangers' photos pass
    strict = float(np.max(open_set.unknown_confidence)) + 1e-6  # none passes
    loose = summarize_sessions(open_set, low)
    assert loose is not None and loose.at_threshold[1].stranger_marks_present > open_set.max_far
    assert loose.rule.min_confidence is not None and loose.rule.min_confidence > low
    tight = summarize_sessions(open_set, strict)
    assert tight is not None and tight.rule == PresenceRule() and tight.target_met
    assert tight.with_rule == tight.at_threshold


def test_the_model_rule_is_the_lowest_bar_that_meets_the_target(open_set) -> None:
    start = float(np.quantile(open_set.unknown_confidence, 0.5))
    summary = summarize_sessions(open_set, start)
    assert summary is not None and summary.stricter
    bar = summary.typical.threshold
    scores = SessionScores.of(open_set)
    assert summary.target_met == (summary.typical.stranger_marks_present <= open_set.max_far)
    if summary.target_met:
        below = scores.rates(round(bar - 0.01, 2), frames=TYPICAL_FRAMES)
        assert bar == pytest.approx(start, abs=0.01) or below.stranger_marks_present > open_set.max_far
    assert summary.short.enrolled_marked_present >= MIN_SESSION_RECOGNITION
    assert "confidence >=" in session_lines(summary)[0] and f"{bar:.3g}" in session_sentence(summary)


def test_a_student_enrolled_twice_counts_as_a_stranger_for_sessions_within_the_students_floor() -> None:
    """One real ORL person split over two folders: held out, its photos are accepted as the other
    folder again and again. The per-photo estimate leaves them out (one person); the session rule
    counts them as a look-alike stranger, cannot get them under the target, and so goes as strict
    as the students allow, and says so."""
    X = np.load(OLD_RELEASE_FIXTURE / "models" / "X.npy")
    y = np.load(OLD_RELEASE_FIXTURE / "models" / "y.npy").astype(str)
    split = np.flatnonzero(y == "STU001")[::2]
    y = y.copy()
    y[split] = "STU007"  # half of STU001's photos in a second folder
    open_set = evaluate_open_set(X, y, seed=0)
    assert open_set is not None
    taken = {a for a, _, _, _ in open_set.left_out.accepted_as}
    assert taken and taken <= {"STU001", "STU007"}
    assert len(open_set.lookalike_confidence) == len(open_set.lookalike_groups) > 0
    assert set(open_set.lookalike_groups.tolist()) == taken
    scores = SessionScores.of(open_set)
    assert scores.rates(0.5).strangers == len(set(open_set.unknown_groups.tolist()) | taken)
    summary = summarize_sessions(open_set, 0.5)
    assert summary is not None and summary.lookalikes == tuple(sorted(taken))
    assert not summary.target_met and summary.stricter
    assert summary.short.enrolled_marked_present >= MIN_SESSION_RECOGNITION
    # one step stricter than the chosen bar would cost the students their floor (or there is none)
    bar = summary.typical.threshold
    stricter = [b for b in (round(bar + 0.01, 2), 0.995, 0.998, 0.999) if b > bar]
    if stricter:
        short = scores.rates(stricter[0], frames=SHORT_FRAMES)
        assert short.enrolled_marked_present < MIN_SESSION_RECOGNITION
    text = "\n".join(session_lines(summary))
    assert "NO confidence keeps strangers" in text and "STU00" in text


def test_a_published_run_reports_its_session_rates(published_root: Path) -> None:
    paths = OutputPaths.at(published_root)
    metrics = json.loads(paths.metrics_json.read_text(encoding="utf-8"))
    session = metrics["session"]
    assert session["rule"] == PresenceRule().to_dict() == {"min_frames": 2, "min_share": 0.3, "min_confidence": None}
    assert session["model_rule"]["min_confidence"] == session["suggested_min_confidence"]
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
    assert (
        AttendanceSession(recognizer).rule == recognizer.model_metadata.session_rule == PresenceRule.from_dict(recorded)
    )
