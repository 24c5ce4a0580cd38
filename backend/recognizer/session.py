"""Attendance from a class session: many frames in, who is present out.

    session = AttendanceSession(recognizer, roster=["STU001", "STU002"])
    for frame in camera_frames:
        session.add(frame)                 # that frame's list[Recognition]
    for p in session.present():
        print(p.student_id, p.frames, p.best_confidence)

Why not "present if accepted once": a stranger who sits through a session is seen in
every frame, and each frame is another chance to pass the per-face threshold. At 1 % of
strangers' faces accepted, one accepted frame in 100 happens to 63 % of strangers. The
:class:`PresenceRule` asks for the same student in several frames instead; a real student
in class is seen in most frames, so this costs them little (bench/bench_session.py
measures both on LFW; the training report gives the expected rates for the run's own
model).

Within one frame one student is counted once: a second face accepted as the same student
(the weaker one) is a *conflict*, not a second frame. With a roster, a face whose match is
an enrolled student outside the roster is *not in this class*, never a roster student.

A session is a small object with no file or model of its own: a web app can keep one per
class (its session id is the app's business), and threads may add frames at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .loader import FaceRecognizer, Recognition

log = logging.getLogger(__name__)

#: Faces of each kind (conflicts, not in this class) kept with their details; beyond this
#: only counted, so a session that runs all day holds a bounded amount of memory.
MAX_EVENTS = 500


@dataclass(frozen=True)
class PresenceRule:
    """When a student counts as present: accepted in at least ``required_frames`` frames.

    ``required_frames(n) = max(min_frames, ceil(min_share * n))`` for a session of ``n``
    frames so far. ``min_frames=2``: one chance acceptance of a stranger never marks anybody
    present. ``min_share=0.3``: a student in class is recognised in most frames (96-98 % of
    LFW photos), a stranger who resembles a student in some (Venus Williams as Serena: 7-11 of
    17), and a long session gives a stranger many more chances, so the count grows with the
    session (20 frames → 6, 100 → 30). On LFW sessions, pooled over 3 splits (474 strangers,
    762 students seen in 4 or more frames): strangers marking somebody 10.8 % (once) → 2.7 %
    (2 frames, 30 %) at the threshold, 4.2 % with 10 % of the frames; those students 100 % →
    99.9 % (99.9 %).
    A student hidden for most of the lesson is listed under ``seen_not_present``; lower
    ``min_share`` for such classrooms, at that cost in strangers.
    ``min_confidence``: a stricter per-face bar for counting towards presence (None: a face
    counts when it is accepted at the threshold). The training run chooses one when the
    threshold alone lets strangers (twins and look-alikes of students included) mark somebody
    present in more than its target share of 20-frame sessions, never so strict that fewer
    than 95 % of students seen in 4 frames would be marked present, and records it in the
    model (``ModelMetadata.session_rule``); on LFW that takes strangers marking somebody to
    1.1 % of sessions, students seen in 4 or more frames to 99.5 %.
    Measured: bench/README.md, "Attendance sessions".
    """

    min_frames: int = 2
    min_share: float = 0.3
    min_confidence: float | None = None

    def __post_init__(self) -> None:
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be at least 1, got {self.min_frames}")
        if not 0.0 <= self.min_share <= 1.0:
            raise ValueError(f"min_share must be between 0 and 1, got {self.min_share}")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be between 0 and 1, got {self.min_confidence}")

    @classmethod
    def from_dict(cls, data: object) -> PresenceRule:
        """The rule a model records as ``session_rule`` (chosen by its training run, read by
        :class:`~backend.recognizer.metadata.ModelMetadata`); the default for one this version
        cannot read (logged: the per-face answers do not depend on it)."""
        if not isinstance(data, Mapping):
            log.warning("The model's session rule %r is unusable; using the default rule", data)
            return cls()
        try:
            bar = data.get("min_confidence")
            return cls(
                int(data.get("min_frames", cls.min_frames)),
                float(data.get("min_share", cls.min_share)),
                None if bar is None else float(bar),
            )
        except (TypeError, ValueError) as err:
            log.warning("The model's session rule %r is unusable (%s); using the default rule", data, err)
            return cls()

    def to_dict(self) -> dict[str, Any]:
        """What a model records as ``session_rule`` (read back by :meth:`from_dict`)."""
        return asdict(self)

    def counts(self, recognition: Recognition) -> bool:
        """Whether this face may count for its student (accepted, and sure enough)."""
        return bool(recognition.accepted) and (
            self.min_confidence is None or recognition.confidence >= self.min_confidence
        )

    def required_frames(self, session_frames: int) -> int:
        """Frames in which a student must be accepted, in a session of ``session_frames`` frames."""
        return max(self.min_frames, math.ceil(self.min_share * max(session_frames, 0) - 1e-9))

    def is_present(self, accepted_frames: int, session_frames: int) -> bool:
        return accepted_frames >= self.required_frames(session_frames)


class FaceKind(str, Enum):
    """What one face of a frame counted as."""

    STUDENT = "student"  # counted for a (roster) student
    UNKNOWN = "unknown"  # below the threshold (or the rule's min_confidence): nobody enrolled
    CONFLICT = "conflict"  # accepted as a student already counted in this frame by a stronger face
    NOT_IN_CLASS = "not_in_class"  # accepted as an enrolled student who is not on the roster


@dataclass(frozen=True)
class FaceEvent:
    """One face that did not count for a student: a conflict, someone not in this class, or unknown."""

    kind: FaceKind
    frame: int  # 1-based number of the frame within its class session
    at: float  # the frame's time (seconds since the epoch, or what the caller passed)
    student_id: str  # the student it was accepted as (unknown: the closest student, or "" without candidates)
    student_name: str
    confidence: float
    box: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class Presence:
    """One student seen during a class session: in how many frames, when, and how surely."""

    student_id: str
    student_name: str
    frames: int  # frames in which the student was accepted (once per frame)
    first_frame: int
    last_frame: int
    first_seen: float  # time of first_frame
    last_seen: float
    best_confidence: float


@dataclass(frozen=True)
class SessionReport:
    """Everything a session has seen, at one moment (a consistent snapshot)."""

    frames: int
    required_frames: int  # what the rule asks of a student now
    present: list[Presence]  # marked present, most frames first
    seen_not_present: list[Presence]  # accepted in some frames, fewer than the rule asks
    faces: int  # faces in all frames
    unknown_faces: int
    conflicts: int
    not_in_class: int
    events: list[FaceEvent] = field(default_factory=list)  # the conflicts and not-in-class faces (the latest)
    unknown: list[FaceEvent] = field(default_factory=list)  # the latest unknown faces, with their closest student


@dataclass
class _Tally:
    student_name: str
    frames: int
    first_frame: int
    last_frame: int
    first_seen: float
    last_seen: float
    best_confidence: float

    def presence(self, student_id: str) -> Presence:
        return Presence(
            student_id,
            self.student_name,
            self.frames,
            self.first_frame,
            self.last_frame,
            self.first_seen,
            self.last_seen,
            self.best_confidence,
        )


def frame_kinds(
    recognitions: Sequence[Recognition],
    roster: frozenset[str] | None = None,
    rule: PresenceRule | None = None,
) -> list[FaceKind]:
    """What each face of ONE frame counts as (see :class:`FaceKind`).

    Per student the face with the highest confidence counts; other faces accepted as that
    student in the same frame are conflicts (one person cannot sit twice in one picture).
    """
    rule = rule or PresenceRule()
    kinds = [FaceKind.UNKNOWN] * len(recognitions)
    best: dict[str, int] = {}
    for i, r in enumerate(recognitions):
        if not rule.counts(r):
            continue
        if roster is not None and r.student_id not in roster:
            kinds[i] = FaceKind.NOT_IN_CLASS
            continue
        j = best.get(r.student_id)
        if j is None or r.confidence > recognitions[j].confidence:
            if j is not None:
                kinds[j] = FaceKind.CONFLICT
            best[r.student_id] = i
            kinds[i] = FaceKind.STUDENT
        else:
            kinds[i] = FaceKind.CONFLICT
    return kinds


class AttendanceSession:
    """Who is present over a class session's frames. Safe to share between threads.

    ``recognizer``: a loaded :class:`~backend.recognizer.FaceRecognizer` (shared by many
    sessions). ``roster``: the student ids of this class (None: every enrolled student).
    ``rule``: when a student is present (:class:`PresenceRule`; None: the rule the model's training
    run recorded, ``recognizer.model_metadata.session_rule``). ``threshold``: the per-face
    threshold for the :meth:`add` calls of this AttendanceSession (None: the recognizer's).
    """

    def __init__(
        self,
        recognizer: FaceRecognizer | None,
        roster: Iterable[str] | None = None,
        *,
        rule: PresenceRule | None = None,
        threshold: float | None = None,
    ) -> None:
        self.recognizer = recognizer
        self.roster: frozenset[str] | None = None if roster is None else frozenset(str(s) for s in roster)
        if rule is None:
            recorded = recognizer.model_metadata.session_rule if recognizer is not None else None
            rule = recorded or PresenceRule()
        self.rule = rule
        self.threshold = threshold
        self._lock = threading.Lock()
        self._frames = 0
        self._faces = 0
        self._unknown = 0
        self._conflicts = 0
        self._not_in_class = 0
        self._tally: dict[str, _Tally] = {}
        self._events: deque[FaceEvent] = deque(maxlen=MAX_EVENTS)
        self._unknown_events: deque[FaceEvent] = deque(maxlen=MAX_EVENTS)

    def add(self, frame: np.ndarray | str | Path, *, at: float | None = None, bgr: bool = True) -> list[Recognition]:
        """Recognise every face of one frame (an image array or photo path) and count it.

        Returns that frame's faces as :meth:`FaceRecognizer.identify` gives them. ``at``: the
        frame's time (default now). Raises what ``identify`` raises (e.g. ``ImageError``);
        a frame that raised is not counted.
        """
        if self.recognizer is None:
            raise RuntimeError(
                "this AttendanceSession has no recognizer: pass each frame's faces to add_recognitions()"
            )
        faces = self.recognizer.identify(frame, threshold=self.threshold, bgr=bgr)
        self.add_recognitions(faces, at=at)
        return faces

    def add_recognitions(self, recognitions: Sequence[Recognition], *, at: float | None = None) -> None:
        """Count one frame whose faces were already recognised (``identify`` or ``classify``).

        For a backend that recognises frames elsewhere, or several sessions that share one
        camera frame: call ``identify`` once and give its result to each session.
        """
        when = time.time() if at is None else float(at)
        kinds = frame_kinds(recognitions, self.roster, self.rule)
        with self._lock:
            self._frames += 1
            number = self._frames
            self._faces += len(recognitions)
            for r, kind in zip(recognitions, kinds, strict=True):
                if kind is FaceKind.UNKNOWN:
                    self._unknown += 1
                    closest = r.top_k[0] if r.top_k else None
                    self._unknown_events.append(
                        FaceEvent(
                            kind,
                            number,
                            when,
                            closest.student_id if closest else "",
                            closest.student_name if closest else "",
                            float(r.confidence),
                            r.box,
                        )
                    )
                elif kind is FaceKind.STUDENT:
                    self._count(r, number, when)
                else:
                    if kind is FaceKind.CONFLICT:
                        self._conflicts += 1
                    else:
                        self._not_in_class += 1
                    self._events.append(
                        FaceEvent(kind, number, when, r.student_id, r.student_name, float(r.confidence), r.box)
                    )

    def _count(self, r: Recognition, number: int, when: float) -> None:
        tally = self._tally.get(r.student_id)
        if tally is None:
            self._tally[r.student_id] = _Tally(r.student_name, 1, number, number, when, when, float(r.confidence))
            return
        tally.frames += 1
        tally.last_frame = number
        # frames added by several threads may arrive out of time order
        tally.first_seen, tally.last_seen = min(tally.first_seen, when), max(tally.last_seen, when)
        tally.best_confidence = max(tally.best_confidence, float(r.confidence))

    def present(self) -> list[Presence]:
        """One record per student marked present so far, most frames first."""
        return self.report().present

    def report(self) -> SessionReport:
        """A consistent snapshot: present, seen but not (yet) present, unknown faces, conflicts."""
        with self._lock:
            frames = self._frames
            seen = [t.presence(sid) for sid, t in self._tally.items()]
            counts = (self._faces, self._unknown, self._conflicts, self._not_in_class)
            events = list(self._events)
            unknown = list(self._unknown_events)
        need = self.rule.required_frames(frames)
        seen.sort(key=lambda p: (-p.frames, p.student_id))
        return SessionReport(
            frames=frames,
            required_frames=need,
            present=[p for p in seen if p.frames >= need],
            seen_not_present=[p for p in seen if p.frames < need],
            faces=counts[0],
            unknown_faces=counts[1],
            conflicts=counts[2],
            not_in_class=counts[3],
            events=events,
            unknown=unknown,
        )

    @property
    def frames(self) -> int:
        """Frames counted so far."""
        with self._lock:
            return self._frames


__all__ = [
    "AttendanceSession",
    "FaceEvent",
    "FaceKind",
    "Presence",
    "PresenceRule",
    "SessionReport",
    "frame_kinds",
]
