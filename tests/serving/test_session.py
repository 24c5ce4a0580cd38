"""AttendanceSession: who is present over many frames, on a real published model and real ORL faces.

The quick tests feed the session the real recognitions of real face embeddings (release 1.0's
6-student ORL model and its stored embeddings, classify only); the slow one runs the whole
identify path on camera-like frames made of ORL photos, with never-enrolled people in them.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import OLD_RELEASE_FIXTURE, ORL, require_shared_data

from backend.recognizer import AttendanceSession, FaceRecognizer, PresenceRule, Recognition
from backend.recognizer.session import FaceKind, frame_kinds


@pytest.fixture(scope="module")
def recognizer() -> FaceRecognizer:
    return FaceRecognizer.load(
        OLD_RELEASE_FIXTURE, require_manifest=True, device="cpu", allow_pickle=True
    )  # release 1.0


@pytest.fixture(scope="module")
def faces(recognizer: FaceRecognizer) -> dict[str, list[Recognition]]:
    """Student id → the model's recognitions of that student's 8 real ORL face embeddings."""
    X = np.load(OLD_RELEASE_FIXTURE / "models" / "X.npy")
    y = np.load(OLD_RELEASE_FIXTURE / "models" / "y.npy").astype(str)
    out: dict[str, list[Recognition]] = {}
    for student in np.unique(y):
        out[str(student)] = recognizer.classify(X[y == student])
    assert all(r.accepted for rs in out.values() for r in rs), "the fixture's own faces are all accepted"
    return out


def test_the_rule_needs_the_same_student_in_several_frames() -> None:
    rule = PresenceRule()
    assert [rule.required_frames(n) for n in (1, 4, 7, 20, 21, 100)] == [2, 2, 3, 6, 7, 30]
    assert not rule.is_present(1, 1) and rule.is_present(2, 5) and not rule.is_present(9, 100)
    for bad in ({"min_frames": 0}, {"min_share": 1.5}, {"min_confidence": -0.1}):
        with pytest.raises(ValueError):
            PresenceRule(**bad)  # type: ignore[arg-type]


def test_the_rule_comes_from_the_model_when_it_records_one(recognizer: FaceRecognizer) -> None:
    assert AttendanceSession(recognizer).rule == PresenceRule()  # release 1.0 recorded none
    recorded = {"min_frames": 3, "min_share": 0.2, "min_confidence": 0.9}
    assert PresenceRule.from_dict(recorded) == PresenceRule(3, 0.2, 0.9)
    assert PresenceRule.from_dict(PresenceRule(3, 0.2, 0.9).to_dict()) == PresenceRule(3, 0.2, 0.9)
    assert PresenceRule.from_dict({"min_frames": 0}) == PresenceRule()  # unusable: default
    assert PresenceRule.from_dict("2 frames") == PresenceRule()
    assert AttendanceSession(recognizer, rule=PresenceRule(min_frames=4)).rule.min_frames == 4


def test_one_accepted_frame_is_not_presence_two_are(faces: dict[str, list[Recognition]]) -> None:
    session = AttendanceSession(None)
    session.add_recognitions([faces["STU001"][0], faces["STU002"][0]], at=100.0)
    assert session.present() == []  # one frame each: a chance acceptance never marks anybody
    report = session.report()
    assert {p.student_id for p in report.seen_not_present} == {"STU001", "STU002"}
    session.add_recognitions([faces["STU001"][1]], at=160.0)
    (alice,) = session.present()
    assert (alice.student_id, alice.student_name, alice.frames) == ("STU001", "Person 1", 2)
    assert (alice.first_frame, alice.last_frame, alice.first_seen, alice.last_seen) == (1, 2, 100.0, 160.0)
    session.add_recognitions([faces["STU001"][2]], at=130.0)  # a frame that arrived late (another thread)
    (alice,) = session.present()
    assert (alice.frames, alice.last_frame, alice.first_seen, alice.last_seen) == (3, 3, 100.0, 160.0)
    assert alice.best_confidence == pytest.approx(max(faces["STU001"][0].confidence, faces["STU001"][1].confidence))


def test_two_faces_in_one_frame_count_once_the_weaker_is_a_conflict(faces: dict[str, list[Recognition]]) -> None:
    strong, weak = sorted(faces["STU003"][:2], key=lambda r: -r.confidence)
    assert frame_kinds([weak, strong]) == [FaceKind.CONFLICT, FaceKind.STUDENT]
    session = AttendanceSession(None)
    for _ in range(3):
        session.add_recognitions([weak, strong, faces["STU004"][0]])
    report = session.report()
    assert {p.student_id: p.frames for p in report.present} == {"STU003": 3, "STU004": 3}
    assert report.conflicts == 3 and report.faces == 9
    assert {(e.kind, e.student_id, e.confidence) for e in report.events} == {
        (FaceKind.CONFLICT, "STU003", weak.confidence)
    }
    assert report.present[0].best_confidence == pytest.approx(strong.confidence)


def test_a_student_outside_the_roster_is_not_in_this_class(faces: dict[str, list[Recognition]]) -> None:
    session = AttendanceSession(None, roster=["STU001", "STU002"])
    for i in range(4):
        session.add_recognitions([faces["STU001"][i], faces["STU005"][i]])
    report = session.report()
    assert [p.student_id for p in report.present] == ["STU001"]
    assert report.not_in_class == 4 and report.seen_not_present == []
    assert all(e.kind is FaceKind.NOT_IN_CLASS and e.student_id == "STU005" for e in report.events)


def test_faces_below_the_rules_confidence_do_not_count(faces: dict[str, list[Recognition]]) -> None:
    ranked = sorted(faces["STU006"], key=lambda r: r.confidence)
    bar = (ranked[-2].confidence + ranked[-3].confidence) / 2  # exactly two faces are sure enough
    session = AttendanceSession(None, rule=PresenceRule(min_share=0.0, min_confidence=bar))  # 2 frames are enough
    for r in ranked:
        session.add_recognitions([r])
    report = session.report()
    assert [(p.student_id, p.frames) for p in report.present] == [("STU006", 2)]
    assert report.unknown_faces == len(ranked) - 2
    assert {e.student_id for e in report.unknown} == {"STU006"}  # the closest student is kept


def test_threads_adding_frames_at_once_count_every_frame(faces: dict[str, list[Recognition]]) -> None:
    frames = [[faces[s][i % 8] for s in sorted(faces)] for i in range(40)]
    serial = AttendanceSession(None)
    for f in frames:
        serial.add_recognitions(f, at=1.0)
    shared = AttendanceSession(None)
    start = threading.Barrier(8)

    def work(part: list[list[Recognition]]) -> None:
        start.wait()
        for f in part:
            shared.add_recognitions(f, at=1.0)

    threads = [threading.Thread(target=work, args=(frames[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b = serial.report(), shared.report()
    assert b.frames == 40 and b.faces == a.faces == 240
    assert {p.student_id: (p.frames, p.best_confidence) for p in b.present} == {
        p.student_id: (p.frames, p.best_confidence) for p in a.present
    }
    assert max(p.last_frame for p in b.present) == 40


@pytest.mark.slow
def test_a_real_session_of_camera_frames(recognizer: FaceRecognizer, tmp_path: Path) -> None:
    """Frames of three people side by side: two enrolled (photos 9 and 10, never trained on) and a
    stranger who sits through every frame. The stranger marks nobody present."""
    import cv2

    require_shared_data(ORL)

    def photo(person: int, i: int) -> np.ndarray:
        return cv2.imread(str(ORL / f"s{person}" / f"{i}.pgm"))

    session = AttendanceSession(recognizer, roster=["STU001", "STU002", "STU003"])
    strangers_only = AttendanceSession(recognizer)
    for i, (a, b) in enumerate(((9, 10), (10, 9), (9, 9))):
        stranger = photo(20 + i, 1)
        frame = cv2.resize(np.hstack([photo(1, a), stranger, photo(2, b), photo(5, 9)]), None, fx=2, fy=2)
        found = session.add(frame, at=float(i))
        assert len(found) == 4
        strangers_only.add(cv2.resize(np.hstack([stranger, photo(30 + i, 2)]), None, fx=2, fy=2))
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    session.add(tmp_path / "frame.png", at=3.0)  # a photo path works too
    report = session.report()
    assert {p.student_id: p.frames for p in report.present} == {"STU001": 4, "STU002": 4}
    assert report.not_in_class == 4  # STU005 is enrolled but not in this class
    assert report.unknown_faces == 4 and report.frames == 4
    assert [e.frame for e in report.unknown] == [1, 2, 3, 4] and all(e.confidence < 0.85 for e in report.unknown)
    assert strangers_only.present() == [] and strangers_only.report().unknown_faces == 6
