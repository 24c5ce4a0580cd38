"""Attendance from a class session: many frames in, who is present out.

    session = AttendanceSession(recognizer, roster=["STU001", "STU002"])
    for frame in camera_frames:
        session.add(frame)                 # that frame's list[Recognition]
    for p in session.present():
        print(p.student_id, p.frames, p.best_confidence)
    saved = session.to_dict()              # plain JSON data: ids, counts, times, frame hashes
    session = AttendanceSession.restore(recognizer, saved)   # after a restart: goes on
    final = session.end()                  # the final list; later frames are refused

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

The record must be one that nobody can inflate by accident:

* **One model.** A session pins the model its recognizer serves when it starts
  (:meth:`FaceRecognizer.pinned`): a hot reload does not reach it, so two models never mix in
  one count, and the report names the model (``SessionReport.model_version``).
* **Each frame once.** A frame's key is the SHA-256 of its bytes (an upload or a photo file)
  or of its pixels (an array); a frame already seen is a *repeat* and counts for nothing, so
  a replayed photo cannot satisfy the two-frame rule.
* **A frame with no face does not count toward the rule** (``empty_frames``): the lights
  off or a camera glitch say nothing about who is in class, and a stranger's chances come only
  from frames with faces. Measured on ORL (20 students seen in 6 frames, 20 strangers in 10):
  counted, 12 blank frames took students marked present from 19 to 13 of 20 and 24 to 0 of 20;
  not counted, 19 of 20 whatever the blanks; strangers marked nobody either way
  (bench/README.md, "Frames without a face").
* **Ending is final.** :meth:`end` waits for the frames being recognised at that moment,
  counts them, and refuses every later one (:class:`SessionEndedError`): every frame whose
  :meth:`add` returned is in the final list.

A session is pure computation: no file, no model of its own, no face image. Its state is a
plain JSON-able dict (:meth:`to_dict` / :meth:`restore`); the backend decides where it goes
(the example apps keep it in SQLite). Threads may add frames at once.
"""

from __future__ import annotations

import hashlib
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

from .errors import ImageError, SessionEndedError, SessionModelError, SessionStateError
from .images import MIN_SIDE, decode_upload, read_photo
from .metadata import PresenceRule

if TYPE_CHECKING:
    from .loader import FaceRecognizer, Recognition

log = logging.getLogger(__name__)

#: Faces of each kind (conflicts, not in this class) kept with their details; beyond this
#: only counted, so a session that runs all day holds a bounded amount of memory.
MAX_EVENTS = 500
#: Student ids a roster may hold: a class, or a whole school; 1M ids would cost ~95 MiB per session.
MAX_ROSTER = 5000
#: Longest student id accepted on a roster (ids are folder prefixes such as ``STU001``).
MAX_STUDENT_ID_LENGTH = 128
#: Hex digits of SHA-256 kept per frame: 128 bits tell frames apart, at 32 bytes per frame.
DIGEST_HEX = 32
#: Version of the dict :meth:`AttendanceSession.to_dict` writes (``restore`` refuses others).
STATE_FORMAT = 1
#: How long :meth:`AttendanceSession.end` waits for frames being recognised at that moment.
END_WAIT_S = 30.0


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

    frames: int  # frames counted toward the rule: at least one face found, not a repeat
    required_frames: int  # what the rule asks of a student now
    present: list[Presence]  # marked present, most frames first
    seen_not_present: list[Presence]  # accepted in some frames, fewer than the rule asks
    faces: int  # faces in all frames
    unknown_faces: int
    conflicts: int
    not_in_class: int
    events: list[FaceEvent] = field(default_factory=list)  # the conflicts and not-in-class faces (the latest)
    unknown: list[FaceEvent] = field(default_factory=list)  # the latest unknown faces, with their closest student
    model_version: str | None = None  # the one model every counted frame was recognised with (None: not known)
    empty_frames: int = 0  # frames in which no face was found: numbered, not counted toward the rule
    repeated_frames: int = 0  # frames the session had already seen: not counted at all
    ended: bool = False  # True: the final list (the session counts no more frames)


class FrameOutcome(str, Enum):
    """What one frame did to its session."""

    COUNTED = "counted"  # at least one face: counted toward the rule
    EMPTY = "empty"  # no face found: numbered, not counted toward the rule
    REPEAT = "repeat"  # the session had already seen this frame: not counted at all


@dataclass(frozen=True)
class RecognisedFrame:
    """One frame recognised with a session's model, not yet counted (:meth:`AttendanceSession.count`)."""

    digest: str | None  # the frame's key (see frame_digest); None: unknown, never a repeat
    faces: list[Recognition]
    at: float  # the frame's time
    model_version: str | None  # the model that recognised it (None: the caller vouches for it)
    repeat: bool = False  # already seen by the session when recognised (so not recognised again)


@dataclass(frozen=True)
class FrameResult:
    """One frame as its session counted it."""

    outcome: FrameOutcome
    number: int | None  # the frame's 1-based number in the session (None: a repeat)
    faces: list[Recognition]  # as identify() gave them ([] for a repeat caught before recognition)
    kinds: list[FaceKind]  # what each face counted as ([] unless counted)
    model_version: str | None

    @property
    def counted(self) -> bool:
        return self.outcome is FrameOutcome.COUNTED


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


def frame_digest(frame: np.ndarray | bytes | bytearray | memoryview | str | Path) -> str:
    """A frame's key: SHA-256 of an upload's bytes, of a photo file's bytes, or of an array's
    shape, type and pixels (first :data:`DIGEST_HEX` hex digits). Equal keys: the same frame."""
    return _frame_source(frame)[0]


def _frame_source(frame: object) -> tuple[str, np.ndarray | bytes | str | Path]:
    """(key, what to recognise): bytes for an upload, the path for a photo file, the array for pixels.

    Raises :class:`ImageError` for what cannot hold a face: an array smaller than
    :data:`~backend.recognizer.images.MIN_SIDE` a side (detectors fail on those with their own
    errors), a missing or unreadable file, an empty upload.
    """
    if isinstance(frame, (bytes, bytearray, memoryview)):
        data = bytes(frame)
        if not data:
            raise ImageError("empty upload (0 bytes): send the photo's bytes")
        return hashlib.sha256(data).hexdigest()[:DIGEST_HEX], data
    if isinstance(frame, (str, Path)):
        return hashlib.sha256(read_photo(frame)).hexdigest()[:DIGEST_HEX], frame
    if not isinstance(frame, np.ndarray):
        raise ImageError(f"expected an image array, a photo path or an upload's bytes, got {type(frame).__name__}")
    if frame.ndim < 2 or frame.size == 0:
        raise ImageError(f"expected an H×W×3 image array, got shape {frame.shape}")
    height, width = frame.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"frame too small ({width}×{height} px; need at least {MIN_SIDE} px a side)")
    digest = hashlib.sha256(f"{frame.shape}|{frame.dtype.str}|".encode())
    digest.update(np.ascontiguousarray(frame).data)
    return digest.hexdigest()[:DIGEST_HEX], frame


def _frame_time(at: object) -> float:
    """``at`` as seconds (now when None); refused unless a finite, non-negative number."""
    if at is None:
        return time.time()
    if isinstance(at, bool) or not isinstance(at, (int, float, np.integer, np.floating)):
        raise TypeError(f"at must be a time in seconds (a number), got {type(at).__name__}")
    when = float(at)
    if not math.isfinite(when) or when < 0:
        raise ValueError(f"at must be a finite, non-negative time in seconds (e.g. time.time()), got {at!r}")
    return when


def _roster(roster: object) -> frozenset[str] | None:
    """A roster as a set of ids: a list (or set, tuple…) of student id strings, or None for everyone.

    A bare string is refused rather than read as its characters; so is anything but strings.
    """
    if roster is None:
        return None
    if isinstance(roster, (str, bytes, bytearray, Mapping)) or not isinstance(roster, Iterable):
        raise TypeError(
            'the roster must be a list of student ids, e.g. ["STU001", "STU002"] (or None for every '
            f"enrolled student), not {type(roster).__name__} {_short(roster)}"
        )
    ids: set[str] = set()
    for i, sid in enumerate(roster):
        if i >= MAX_ROSTER:
            raise ValueError(
                f"the roster has more than {MAX_ROSTER} student ids: send the ids of one class "
                "(or no roster for every enrolled student)"
            )
        if not isinstance(sid, str):
            raise TypeError(f"roster entry {i} is {type(sid).__name__} {_short(sid)}, not a student id string")
        if not sid or len(sid) > MAX_STUDENT_ID_LENGTH:
            raise ValueError(
                f"roster entry {i} ({_short(sid)}) is not a student id: 1 to {MAX_STUDENT_ID_LENGTH} characters"
            )
        ids.add(sid)
    return frozenset(ids)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _threshold(threshold: object) -> float | None:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"threshold must be a number between 0 and 1, got {type(threshold).__name__}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    return float(threshold)


class AttendanceSession:
    """Who is present over a class session's frames. Safe to share between threads.

    ``recognizer``: a loaded :class:`~backend.recognizer.FaceRecognizer` (shared by many
    sessions): the session pins the model it serves now (``recognizer.pinned()``) and counts
    every frame with it, whatever reloads follow; None: frames come already recognised
    (:meth:`add_recognitions`). ``roster``: the student ids of this class (a list of strings, at
    most :data:`MAX_ROSTER`; None: every enrolled student). ``rule``: when a student is present
    (:class:`PresenceRule`; None: the rule the model's training run recorded,
    ``recognizer.model_metadata.session_rule``). ``threshold``: the per-face threshold for the
    :meth:`add` calls of this AttendanceSession (None: the recognizer's).
    """

    def __init__(
        self,
        recognizer: FaceRecognizer | None,
        roster: Iterable[str] | None = None,
        *,
        rule: PresenceRule | None = None,
        threshold: float | None = None,
    ) -> None:
        pinned = recognizer.pinned() if recognizer is not None else None
        if rule is None:
            recorded = pinned.model_metadata.session_rule if pinned is not None else None
            rule = recorded or PresenceRule()
        if not isinstance(rule, PresenceRule):
            raise TypeError(f"rule must be a PresenceRule, got {type(rule).__name__}")
        self._setup(
            pinned,
            _roster(roster),
            rule,
            _threshold(threshold),
            pinned.model_version if pinned is not None else None,
            time.time(),
        )

    def _setup(
        self,
        recognizer: FaceRecognizer | None,
        roster: frozenset[str] | None,
        rule: PresenceRule,
        threshold: float | None,
        model_version: str | None,
        started_at: float,
    ) -> None:
        self.recognizer = recognizer  # pinned: one model for the whole session
        self.roster = roster
        self.rule = rule
        self.threshold = threshold
        self._model_version = model_version
        self.started_at = started_at
        self._cond = threading.Condition(threading.Lock())
        self._ended_at: float | None = None
        self._closing = False  # end() is waiting for the frames in flight: no new ones
        self._in_flight = 0  # add_frame() calls between admission and count
        self._received = 0  # distinct frames (numbered): counted + empty
        self._frames = 0  # counted toward the rule
        self._empty = 0
        self._repeats = 0
        self._faces = 0
        self._unknown = 0
        self._conflicts = 0
        self._not_in_class = 0
        self._tally: dict[str, _Tally] = {}
        self._events: deque[FaceEvent] = deque(maxlen=MAX_EVENTS)
        self._unknown_events: deque[FaceEvent] = deque(maxlen=MAX_EVENTS)
        self._digests: dict[str, None] = {}  # the keys of every frame seen, in order (an ordered set)

    # ---- information
    @property
    def model_version(self) -> str | None:
        """The model every frame of this class session is recognised with (None: a session without a
        recognizer, until its first frame names one)."""
        with self._cond:
            return self._model_version

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._ended_at is not None

    @property
    def ended_at(self) -> float | None:
        with self._cond:
            return self._ended_at

    @property
    def frames(self) -> int:
        """Frames counted toward the rule so far."""
        with self._cond:
            return self._frames

    # ---- frames
    def add(
        self, frame: np.ndarray | bytes | str | Path, *, at: float | None = None, bgr: bool = True
    ) -> list[Recognition]:
        """Recognise every face of one frame and count it; returns that frame's faces.

        ``frame``: an image array (BGR; ``bgr=False`` for RGB), a photo path, or an upload's
        bytes (decoded with :func:`~backend.recognizer.decode_upload`). ``at``: the frame's time
        in seconds (default now; NaN, infinite or negative: ``ValueError``). Raises
        :class:`ImageError` for an unusable frame (also one too small to hold a face) and
        :class:`SessionEndedError` once the session has ended; a frame that raised is not
        counted. A frame already seen returns ``[]`` and counts for nothing
        (:meth:`add_frame` says which it was).
        """
        return self.add_frame(frame, at=at, bgr=bgr).faces

    def add_frame(
        self, frame: np.ndarray | bytes | str | Path, *, at: float | None = None, bgr: bool = True
    ) -> FrameResult:
        """:meth:`add`, returning the whole :class:`FrameResult` (counted, empty or a repeat; its number)."""
        with self._cond:
            self._refuse_if_ended()
            if self._closing:
                raise SessionEndedError("this class session is ending: the frame was not counted; start a new session")
            self._in_flight += 1
        try:
            return self.count(self.recognize(frame, at=at, bgr=bgr))
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def recognize(
        self, frame: np.ndarray | bytes | str | Path, *, at: float | None = None, bgr: bool = True
    ) -> RecognisedFrame:
        """Recognise one frame with the session's model, WITHOUT counting it (:meth:`count` does).

        For a backend that keeps the session's state elsewhere: recognise outside its lock or
        transaction, then count into the state it holds. A frame the session has already seen
        is not recognised again (``repeat`` True, no faces).
        """
        when = _frame_time(at)
        if self.recognizer is None:
            raise RuntimeError(
                "this AttendanceSession has no recognizer: pass each frame's faces to add_recognitions()"
            )
        digest, source = _frame_source(frame)
        with self._cond:
            self._refuse_if_ended()
            version = self._model_version
            if digest in self._digests:
                return RecognisedFrame(digest, [], when, version, repeat=True)
        if isinstance(source, bytes):
            image: np.ndarray | str | Path = decode_upload(source, bgr=False)
            bgr = False
        else:
            image = source
        faces = self.recognizer.identify(image, threshold=self.threshold, bgr=bgr)
        return RecognisedFrame(digest, faces, when, version)

    def add_recognitions(
        self,
        recognitions: Sequence[Recognition],
        *,
        at: float | None = None,
        digest: str | None = None,
        model_version: str | None = None,
    ) -> FrameResult:
        """Count one frame whose faces were already recognised (``identify`` or ``classify``).

        For a backend that recognises frames elsewhere. ``digest``: the frame's key
        (:func:`frame_digest`) to catch repeats (None: never a repeat). ``model_version``: the
        model that recognised the faces; one other than the session's raises
        :class:`SessionModelError` (None: the caller vouches that it is the session's model).
        Several sessions that share one camera frame: ``frame = session.recognize(image)``, then
        ``count(frame)`` on each session of the same model.
        """
        return self.count(RecognisedFrame(digest, list(recognitions), _frame_time(at), model_version))

    def count(self, frame: RecognisedFrame) -> FrameResult:
        """Count a recognised frame, once: a repeat (same key) counts for nothing, a frame with no
        face is numbered but not counted toward the rule. Raises :class:`SessionEndedError` after
        :meth:`end`, and :class:`SessionModelError` for a frame of another model."""
        kinds = frame_kinds(frame.faces, self.roster, self.rule)
        with self._cond:
            self._refuse_if_ended()
            version = self._model_version
            if frame.model_version is not None and version is not None and frame.model_version != version:
                raise SessionModelError(
                    f"this frame was recognised with model {frame.model_version}, but this class session counts "
                    f"with model {version}: one session never mixes two models. Recognise it with the session "
                    "(session.recognize / session.add)."
                )
            if version is None and frame.model_version is not None and self._received == 0:
                self._model_version = version = frame.model_version  # the first frame names the model
            if frame.repeat or (frame.digest is not None and frame.digest in self._digests):
                self._repeats += 1
                return FrameResult(FrameOutcome.REPEAT, None, list(frame.faces), [], version)
            if frame.digest is not None:
                self._digests[frame.digest] = None
            self._received += 1
            number = self._received
            if not frame.faces:
                self._empty += 1
                return FrameResult(FrameOutcome.EMPTY, number, [], [], version)
            self._frames += 1
            self._faces += len(frame.faces)
            for r, kind in zip(frame.faces, kinds, strict=True):
                self._count_face(r, kind, number, frame.at)
        return FrameResult(FrameOutcome.COUNTED, number, list(frame.faces), kinds, version)

    def _count_face(self, r: Recognition, kind: FaceKind, number: int, when: float) -> None:
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
            self._events.append(FaceEvent(kind, number, when, r.student_id, r.student_name, float(r.confidence), r.box))

    def _count(self, r: Recognition, number: int, when: float) -> None:
        tally = self._tally.get(r.student_id)
        if tally is None:
            self._tally[r.student_id] = _Tally(r.student_name, 1, number, number, when, when, float(r.confidence))
            return
        tally.frames += 1
        # frames added by several threads may arrive out of order
        tally.first_frame, tally.last_frame = min(tally.first_frame, number), max(tally.last_frame, number)
        tally.first_seen, tally.last_seen = min(tally.first_seen, when), max(tally.last_seen, when)
        tally.best_confidence = max(tally.best_confidence, float(r.confidence))

    def _refuse_if_ended(self) -> None:
        if self._ended_at is not None:
            raise SessionEndedError(
                "this class session has ended: the frame was not counted (its final list stays as it was); "
                "start a new session for more frames"
            )

    def end(self, *, at: float | None = None, wait_s: float = END_WAIT_S) -> SessionReport:
        """End the session and return its final list. Frames being recognised by :meth:`add` at
        this moment are waited for (up to ``wait_s``) and counted; every later frame is refused
        with :class:`SessionEndedError`. Ending an ended session returns the same final list."""
        when = _frame_time(at)
        with self._cond:
            if self._ended_at is None:
                self._closing = True
                if not self._cond.wait_for(lambda: self._in_flight == 0, timeout=wait_s):
                    log.warning("class session ended with %d frame(s) still being recognised", self._in_flight)
                self._ended_at = when
                self._closing = False
            return self._report_locked()

    # ---- reading
    def present(self) -> list[Presence]:
        """One record per student marked present so far, most frames first."""
        return self.report().present

    def report(self) -> SessionReport:
        """A consistent snapshot: present, seen but not (yet) present, unknown faces, conflicts."""
        with self._cond:
            return self._report_locked()

    def _report_locked(self) -> SessionReport:
        frames = self._frames
        need = self.rule.required_frames(frames)
        seen = sorted((t.presence(sid) for sid, t in self._tally.items()), key=lambda p: (-p.frames, p.student_id))
        return SessionReport(
            frames=frames,
            required_frames=need,
            present=[p for p in seen if p.frames >= need],
            seen_not_present=[p for p in seen if p.frames < need],
            faces=self._faces,
            unknown_faces=self._unknown,
            conflicts=self._conflicts,
            not_in_class=self._not_in_class,
            events=list(self._events),
            unknown=list(self._unknown_events),
            model_version=self._model_version,
            empty_frames=self._empty,
            repeated_frames=self._repeats,
            ended=self._ended_at is not None,
        )

    # ---- saving and restoring
    def to_dict(self) -> dict[str, Any]:
        """The session's state as plain JSON data (no pickle, no face image): model version, rule,
        roster, threshold, times, counts, per-student tallies, the latest events and the key of
        every frame seen. :meth:`restore` rebuilds the session from it; the report is the same."""
        with self._cond:
            return {
                "format": STATE_FORMAT,
                "model_version": self._model_version,
                "rule": self.rule.to_dict(),
                "roster": None if self.roster is None else sorted(self.roster),
                "threshold": self.threshold,
                "started_at": self.started_at,
                "ended_at": self._ended_at,
                "received": self._received,
                "frames": self._frames,
                "empty_frames": self._empty,
                "repeated_frames": self._repeats,
                "faces": self._faces,
                "unknown_faces": self._unknown,
                "conflicts": self._conflicts,
                "not_in_class": self._not_in_class,
                "students": {sid: asdict(t) for sid, t in self._tally.items()},
                "events": [_event_dict(e) for e in self._events],
                "unknown": [_event_dict(e) for e in self._unknown_events],
                "frame_digests": list(self._digests),
            }

    @classmethod
    def restore(cls, recognizer: FaceRecognizer | None, data: Mapping[str, Any]) -> AttendanceSession:
        """The session :meth:`to_dict` saved, going on where it stopped.

        ``recognizer``: to recognise further frames; it must serve the session's model (pinned
        from it), else :class:`SessionModelError`: a session never mixes two models. Give the
        model the session started with (a kept version: ``FaceRecognizer.load(classifier_dir=
        ...)``), or ``None`` to read the session or end it without recognising more frames.
        Malformed data: :class:`SessionStateError`.
        """
        try:
            if not isinstance(data, Mapping):
                raise TypeError(f"expected the dict AttendanceSession.to_dict() returns, got {type(data).__name__}")
            if data.get("format") != STATE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, this version reads format {STATE_FORMAT}")
            version = data["model_version"]
            if version is not None and not isinstance(version, str):
                raise TypeError("model_version is not a string")
            rule = PresenceRule(**data["rule"])
            started_at = _frame_time(data["started_at"])
            ended_at = None if data["ended_at"] is None else _frame_time(data["ended_at"])
            roster = _roster(data["roster"])
            threshold = _threshold(data["threshold"])
            counts = {k: _count_of(data, k) for k in _COUNT_KEYS}
            tally = {str(sid): _tally_of(t) for sid, t in dict(data["students"]).items()}
            events = [_event_of(e) for e in data["events"]][-MAX_EVENTS:]
            unknown = [_event_of(e) for e in data["unknown"]][-MAX_EVENTS:]
            digests = [str(d) for d in data["frame_digests"]]
        except (KeyError, TypeError, ValueError) as err:
            raise SessionStateError(
                f"cannot restore this class session: its saved state is malformed ({type(err).__name__}: {err}). "
                "Restore only what AttendanceSession.to_dict() saved."
            ) from err
        pinned = recognizer.pinned() if recognizer is not None else None
        if pinned is not None and pinned.model_version != version:
            raise SessionModelError(
                f"this class session was counted with model {version}, but the recognizer serves model "
                f"{pinned.model_version} (published since): going on would mix two models in one count. Restore it "
                "with a recognizer of its own model, or with recognizer=None to read it or end it, and start a new "
                "session for the rest of the lesson."
            )
        session = cls.__new__(cls)
        session._setup(pinned, roster, rule, threshold, version, started_at)
        session._ended_at = ended_at
        (
            session._received,
            session._frames,
            session._empty,
            session._repeats,
            session._faces,
            session._unknown,
            session._conflicts,
            session._not_in_class,
        ) = (counts[k] for k in _COUNT_KEYS)
        session._tally = tally
        session._events.extend(events)
        session._unknown_events.extend(unknown)
        session._digests = dict.fromkeys(digests)
        return session


_COUNT_KEYS = (
    "received",
    "frames",
    "empty_frames",
    "repeated_frames",
    "faces",
    "unknown_faces",
    "conflicts",
    "not_in_class",
)


def _count_of(data: Mapping[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} is not a count: {_short(value)}")
    return value


def _tally_of(t: Mapping[str, Any]) -> _Tally:
    tally = _Tally(
        str(t["student_name"]),
        int(t["frames"]),
        int(t["first_frame"]),
        int(t["last_frame"]),
        _frame_time(t["first_seen"]),
        _frame_time(t["last_seen"]),
        float(t["best_confidence"]),
    )
    if tally.frames < 1 or not math.isfinite(tally.best_confidence):
        raise ValueError(f"a student's tally is inconsistent: {_short(dict(t))}")
    return tally


def _event_dict(e: FaceEvent) -> dict[str, Any]:
    return {
        "kind": e.kind.value,
        "frame": e.frame,
        "at": e.at,
        "student_id": e.student_id,
        "student_name": e.student_name,
        "confidence": e.confidence,
        "box": None if e.box is None else list(e.box),
    }


def _event_of(e: Mapping[str, Any]) -> FaceEvent:
    box = e["box"]
    return FaceEvent(
        FaceKind(e["kind"]),
        int(e["frame"]),
        _frame_time(e["at"]),
        str(e["student_id"]),
        str(e["student_name"]),
        float(e["confidence"]),
        None if box is None else (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
    )


__all__ = [
    "AttendanceSession",
    "FaceEvent",
    "FaceKind",
    "FrameOutcome",
    "FrameResult",
    "Presence",
    "PresenceRule",
    "RecognisedFrame",
    "SessionReport",
    "frame_digest",
    "frame_kinds",
]
