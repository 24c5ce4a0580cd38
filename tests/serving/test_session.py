"""AttendanceSession: who is present over many frames, on a real published model and real ORL faces.

The quick tests feed the session the real recognitions of real face embeddings (release 1.0's
6-student ORL model and its stored embeddings, classify only); the slow one runs the whole
identify path on camera-like frames made of ORL photos, with never-enrolled people in them.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import OLD_RELEASE_FIXTURE, ORL, require_shared_data
from fakes import make_model_bundle, publish_fake

from backend.recognizer import (
    AttendanceSession,
    FaceRecognizer,
    ImageError,
    PresenceRule,
    Recognition,
    SessionEndedError,
    SessionModelError,
    SessionStateError,
)
from backend.recognizer.faces import Face
from backend.recognizer.paths import OutputPaths
from backend.recognizer.session import MAX_ROSTER, FaceKind, FrameOutcome, frame_digest, frame_kinds


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


def _frame(i: int) -> np.ndarray:
    """A distinct camera-sized array (its pixels are its key)."""
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[0, 0, :2] = divmod(i, 256)
    return frame


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FaceRecognizer, OutputPaths, np.ndarray]:
    """A recognizer of the tiny fake model v1 whose "camera" sees one face: a real v1 embedding of
    STU001 (the face models are stood in for; recognition from the embedding on is real)."""
    paths = OutputPaths.at(tmp_path / "out")
    publish_fake(paths, "v1", n_students=3)
    _, X, y = make_model_bundle("v1", n_students=3)
    face = X[y == "STU001"][:1]

    def one_face(self, state, image, bgr, max_megapixels=0):  # type: ignore[no-untyped-def]
        time.sleep(getattr(self, "_delay", 0.0))
        return [Face((4.0, 4.0, 40.0, 40.0), 0.99, None)], face, state

    monkeypatch.setattr(FaceRecognizer, "_ensure_engines", lambda self: self._state)
    monkeypatch.setattr(FaceRecognizer, "_embed", one_face)
    return FaceRecognizer.load(paths.root), paths, face


def test_a_session_keeps_its_model_across_a_hot_reload(served: tuple[FaceRecognizer, OutputPaths, np.ndarray]) -> None:
    rec, paths, face = served
    session = AttendanceSession(rec)
    assert session.add(_frame(1))[0].student_id == "STU001"
    publish_fake(paths, "v2", n_students=4, seed=3)  # another model, published mid-lesson
    assert rec.reload_if_changed() is True and rec.model_version == "v2"
    assert session.add(_frame(2))[0].student_id == "STU001"  # still v1's answer
    report = session.report()
    assert report.model_version == session.model_version == session.recognizer.model_version == "v1"
    assert [(p.student_id, p.frames) for p in report.present] == [("STU001", 2)]
    assert session.recognizer.reload_if_changed() is False  # the pin never switches
    assert AttendanceSession(rec).model_version == "v2"  # a new session takes the new model
    with pytest.raises(SessionModelError, match="never mixes two models"):
        session.add_recognitions(rec.classify(face), model_version="v2")
    with pytest.raises(SessionModelError, match="counted with model v1, but the recognizer serves model v2"):
        AttendanceSession.restore(rec, session.to_dict())
    assert AttendanceSession.restore(None, session.to_dict()).report() == report  # readable without the model


def test_a_pinned_recognizer_shares_the_face_models_it_can(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session's pin starts no second detector/embedder while the model in service uses the same ones."""
    from backend.recognizer import loader

    built: list[str] = []

    def fake_build(loaded, device, weights_dir, allow_download=False):  # type: ignore[no-untyped-def]
        built.append(loaded.model_version)
        return loader._Engines(loader._engine_key(loaded.bundle), object(), object(), None)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "_build_engines", fake_build)
    paths = OutputPaths.at(tmp_path / "out")
    publish_fake(paths, "v1")
    rec = FaceRecognizer.load(paths.root)
    pin = AttendanceSession(rec).recognizer
    assert pin is not None and pin._ensure_engines().engines is rec._ensure_engines().engines and built == ["v1"]
    publish_fake(paths, "v2", seed=3)
    assert rec.reload_if_changed() and pin.model_version == "v1" and rec.model_version == "v2"
    assert AttendanceSession(rec).recognizer._ensure_engines().engines is rec._state.engines  # type: ignore[union-attr]
    assert built == ["v1"]  # same face models for v2: shared, not rebuilt


def test_each_frame_counts_once(served: tuple[FaceRecognizer, OutputPaths, np.ndarray], tmp_path: Path) -> None:
    rec, _, _ = served
    session = AttendanceSession(rec)
    assert session.add_frame(_frame(1)).outcome is FrameOutcome.COUNTED
    replay = session.add_frame(_frame(1).copy())  # the same pixels again
    assert (replay.outcome, replay.number, replay.faces) == (FrameOutcome.REPEAT, None, [])
    photo = tmp_path / "frame.png"
    photo.write_bytes(b"same bytes")
    assert frame_digest(photo) == frame_digest(b"same bytes") != frame_digest(b"other bytes")
    report = session.report()
    assert report.present == [] and report.frames == 1 and report.repeated_frames == 1  # one frame is not two
    assert session.add_frame(_frame(2)).number == 2 and [p.frames for p in session.present()] == [2]


def test_a_frame_with_no_face_does_not_count_toward_the_rule(faces: dict[str, list[Recognition]]) -> None:
    """Lights off after two frames of STU001: he stays present (bench/README.md, "Frames without a face")."""
    session = AttendanceSession(None)
    session.add_recognitions([faces["STU001"][0]])
    session.add_recognitions([faces["STU001"][1]])
    results = [session.add_recognitions([]) for _ in range(5)]
    assert [r.outcome for r in results] == [FrameOutcome.EMPTY] * 5 and results[-1].number == 7
    report = session.report()
    assert (report.frames, report.empty_frames, report.required_frames) == (2, 5, 2)
    assert [p.student_id for p in report.present] == ["STU001"]


def test_saved_state_round_trips_to_the_same_report_and_goes_on(faces: dict[str, list[Recognition]]) -> None:
    def feed(session: AttendanceSession, frames: range) -> None:
        for i in frames:
            strong, weak = sorted(
                faces["STU003"][i % 8 : i % 8 + 2] or faces["STU003"][:2], key=lambda r: -r.confidence
            )
            session.add_recognitions(
                [faces["STU001"][i % 8], strong, weak, faces["STU005"][i % 8]], at=100.0 + i, digest=f"frame{i}"
            )
        session.add_recognitions([], at=200.0, digest=f"empty{frames.start}")
        session.add_recognitions([faces["STU002"][0]], at=201.0, digest="frame0")  # a repeat

    rule = PresenceRule(min_frames=2, min_share=0.5, min_confidence=None)
    original = AttendanceSession(None, roster=["STU001", "STU002", "STU003"], rule=rule, threshold=0.7)
    never_saved = AttendanceSession(None, roster=["STU001", "STU002", "STU003"], rule=rule, threshold=0.7)
    feed(original, range(0, 4))
    feed(never_saved, range(0, 4))
    saved = json.loads(json.dumps(original.to_dict(), allow_nan=False))  # plain JSON
    assert "frame0" in saved["frame_digests"] and not any(isinstance(v, bytes) for v in saved.values())
    restored = AttendanceSession.restore(None, saved)
    assert restored.report() == original.report()
    assert (restored.roster, restored.rule, restored.threshold) == (original.roster, rule, 0.7)
    report = restored.report()
    assert report.conflicts and report.not_in_class and report.events and report.repeated_frames == 1
    feed(restored, range(4, 7))
    feed(never_saved, range(4, 7))
    assert restored.report() == never_saved.report()
    assert restored.add_recognitions([faces["STU001"][0]], digest="frame2").outcome is FrameOutcome.REPEAT
    final = restored.end()
    assert final.ended and AttendanceSession.restore(None, restored.to_dict()).report() == final


def test_a_malformed_saved_state_is_refused() -> None:
    good = AttendanceSession(None).to_dict()
    for bad in ({**good, "format": 99}, {**good, "frames": -1}, {**good, "rule": {"min_frames": 0}}, "not a dict"):
        with pytest.raises(SessionStateError, match="cannot restore this class session"):
            AttendanceSession.restore(None, bad)  # type: ignore[arg-type]
    with pytest.raises(SessionStateError):
        AttendanceSession.restore(None, {k: v for k, v in good.items() if k != "students"})


def test_a_roster_is_a_list_of_student_ids() -> None:
    assert AttendanceSession(None, roster=("STU001", "STU002")).roster == {"STU001", "STU002"}
    assert AttendanceSession(None, roster=(f"STU{i}" for i in range(3))).roster == {"STU0", "STU1", "STU2"}
    with pytest.raises(TypeError, match="roster must be a list of student ids"):
        AttendanceSession(None, roster="STU001")  # not the set of its characters
    with pytest.raises(TypeError, match="roster entry 1 is int"):
        AttendanceSession(None, roster=["STU001", 2])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=f"more than {MAX_ROSTER} student ids"):
        AttendanceSession(None, roster=(f"STU{i}" for i in range(1_000_000)))  # stops at the limit
    with pytest.raises(ValueError, match="not a student id"):
        AttendanceSession(None, roster=[""])


def test_a_frame_time_must_be_a_real_time(faces: dict[str, list[Recognition]]) -> None:
    session = AttendanceSession(None)
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="finite, non-negative time"):
            session.add_recognitions([faces["STU001"][0]], at=bad)
    with pytest.raises(TypeError):
        session.add_recognitions([faces["STU001"][0]], at="noon")  # type: ignore[arg-type]
    assert session.report().frames == 0  # nothing refused was counted


def test_a_frame_too_small_for_a_face_is_an_image_error(
    served: tuple[FaceRecognizer, OutputPaths, np.ndarray],
) -> None:
    session = AttendanceSession(served[0])
    for bad in (np.zeros((10, 10, 3), np.uint8), np.zeros((0, 0, 3), np.uint8), np.zeros(5, np.uint8), b""):
        with pytest.raises(ImageError):
            session.add(bad)
    assert session.report().frames == 0


def test_end_counts_the_frames_in_flight_and_refuses_later_ones(
    served: tuple[FaceRecognizer, OutputPaths, np.ndarray],
) -> None:
    rec, _, _ = served
    session = AttendanceSession(rec)
    session.recognizer._delay = 0.05  # type: ignore[union-attr]  # each frame takes a while to recognise
    answered: list[int] = []
    refused: list[int] = []

    def post(i: int) -> None:
        try:
            result = session.add_frame(_frame(i))
        except SessionEndedError:
            refused.append(i)
        else:
            assert result.number is not None
            answered.append(result.number)

    threads = [threading.Thread(target=lambda k=k: [post(k * 100 + j) for j in range(10)]) for k in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    final = session.end()
    for t in threads:
        t.join()
    assert refused and sorted(answered) == list(range(1, final.frames + 1))  # every answered frame is in the list
    with pytest.raises(SessionEndedError, match="has ended"):
        session.add(_frame(999))
    assert session.end() == final == session.report()


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
