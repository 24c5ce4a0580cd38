"""Class sessions for the example apps: kept in SQLite, owned by whoever holds their token.

Both apps (``fastapi_app.py``, ``flask_app.py``) call :class:`ClassSessions`, which knows no web
framework: it returns plain dicts and raises :class:`HttpError` (a status and a message).

Why it is built this way (docs/LOADER_API.md, "Class sessions over HTTP"):

* **The database is the record.** Each session is one row: the JSON state of
  ``AttendanceSession.to_dict()``, the SHA-256 of its token and its times. A frame is
  recognised first, then counted inside one write transaction (``BEGIN IMMEDIATE``: re-read,
  count, write, commit) and only then answered: a restart, even ``kill -9``, loses no frame that
  was answered, two frames never overwrite each other's count, and several worker processes
  can share the file. WAL mode, ``synchronous=FULL``; the file is owner-only (it names students).
* **A session belongs to its caller.** ``POST /sessions`` returns a secret token
  (``secrets.token_urlsafe``), stored only as a hash; every other call needs ``Authorization:
  Bearer <token>``. At the cap of open sessions a new one is refused (429), never an open one
  ended to make room.
* **One model per session.** A session counts with the model it started with, pinned; after a
  hot reload its frames still use it. After a restart only the model in service is loaded: a
  session of an older model can be read and ended, and its further frames are refused (409).
* **Bounded.** Rosters of at most ``MAX_ROSTER`` ids in a body of at most ``MAX_START_BODY``
  bytes; ended (and idle-expired) sessions are kept ``keep_s`` for their final list, then
  deleted. Recognition runs on a small pool of threads (``recognition_threads``): each thread
  that decodes and detects a camera frame keeps its own allocator arena at the frame's peak,
  so 8 request threads held 3-4x the memory of 2 (bench/bench_session_memory.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from backend.recognizer import (
    AttendanceSession,
    FaceRecognizer,
    ImageError,
    Recognition,
    RetrainError,
    SessionEndedError,
    SessionModelError,
    SessionReport,
    decode_upload,
)
from backend.recognizer.session import MAX_ROSTER, FaceKind, FrameResult

log = logging.getLogger("attendance")
T = TypeVar("T")

#: Largest body ``POST /sessions`` reads: MAX_ROSTER ids of up to ~130 characters in JSON.
MAX_START_BODY = 1024 * 1024
#: Environment variable naming the SQLite file (default: ``<output root>/backend/attendance_sessions.sqlite3``).
SESSIONS_DB_ENV = "SMARTATTENDANCE_SESSIONS_DB"
ROSTER_HINT = 'send the roster as JSON, e.g. {"roster": ["STU001", "STU002"]}, or no body for every enrolled student'


class HttpError(Exception):
    """What the app answers: a status code, a message for the client, and headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class SessionNotFound(LookupError):
    """No session with that id and token (never started, deleted, or a wrong token)."""


class TooManySessions(Exception):
    """The cap of open sessions is reached."""


def default_db_path(output_root: str | Path | None = None) -> Path:
    """``$SMARTATTENDANCE_SESSIONS_DB``, else ``backend/attendance_sessions.sqlite3`` under the output root."""
    named = os.environ.get(SESSIONS_DB_ENV)
    if named:
        return Path(named)
    root = Path(output_root or os.environ.get("SMARTATTENDANCE_OUTPUT_ROOT") or ".")
    return root / "backend" / "attendance_sessions.sqlite3"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Row:
    """One stored session. ``state`` is ``AttendanceSession.to_dict()``; change it inside ``change()``."""

    sid: str
    state: dict[str, Any]
    created_at: float
    last_used: float
    ended_at: float | None
    end_reason: str | None  # "ended" (DELETE) or "idle" (expired)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL,
    model_version TEXT,
    created_at REAL NOT NULL,
    last_used REAL NOT NULL,
    ended_at REAL,
    end_reason TEXT,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_end ON sessions (ended_at, last_used);
"""
_COLUMNS = "id, token_sha256, created_at, last_used, ended_at, end_reason, state"


class SessionStore:
    """Class sessions in one SQLite file: the state of each, its token's hash and its life.

    ``max_open``: open sessions at once (a new one beyond is refused). ``idle_s``: an open session
    without a frame for this long ends (reason ``"idle"``). ``keep_s``: an ended session's final
    list stays readable this long, then the row is deleted.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_open: int = 200,
        idle_s: float = 4 * 3600,
        keep_s: float = 7 * 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_open < 1 or not idle_s > 0 or not keep_s >= 0:
            raise ValueError("max_open must be at least 1, idle_s positive and keep_s not negative")
        self.path = Path(path)
        self.max_open, self.idle_s, self.keep_s, self.clock = max_open, idle_s, keep_s, clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # owner-only; SQLite's -wal/-shm follow it
        with contextlib.closing(self._connect()) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        """A connection per operation: safe from any thread, and nothing held between requests."""
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # transactions: explicit BEGIN
        con.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the frame is answered
        return con

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        with contextlib.closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ---- life of the rows
    def create(self, state: dict[str, Any]) -> tuple[str, str]:
        """Store a new session: (id, token). The token is returned once and stored only as a hash."""
        sid, token = uuid.uuid4().hex, secrets.token_urlsafe(32)
        now = self.clock()
        with self._transaction(write=True) as con:
            self._tidy(con, now)
            (open_now,) = con.execute("SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL").fetchone()
            if open_now >= self.max_open:
                raise TooManySessions(open_now)
            con.execute(
                "INSERT INTO sessions (id, token_sha256, model_version, created_at, last_used, state) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (sid, token_hash(token), state.get("model_version"), now, now, _dump(state)),
            )
        return sid, token

    def read(self, sid: str, token: str) -> Row:
        """The session, if ``token`` is its token (else :class:`SessionNotFound`). Changes nothing."""
        with self._transaction(write=False) as con:
            return self._row(con, sid, token, self.clock())

    @contextlib.contextmanager
    def change(self, sid: str, token: str) -> Iterator[Row]:
        """The session under the database's write lock; what the block leaves in ``row.state`` (and
        ``row.end_reason``) is committed when it ends, nothing if it raises."""
        now = self.clock()
        with self._transaction(write=True) as con:
            row = self._row(con, sid, token, now)
            yield row
            ended_at = row.state.get("ended_at")
            con.execute(
                "UPDATE sessions SET state = ?, last_used = ?, ended_at = ?, end_reason = ? WHERE id = ?",
                (
                    _dump(row.state),
                    now if ended_at is None else row.last_used,
                    ended_at,
                    None if ended_at is None else (row.end_reason or "ended"),
                    sid,
                ),
            )

    def tidy(self) -> None:
        """End idle sessions and delete ended ones kept long enough (also done on every create)."""
        with self._transaction(write=True) as con:
            self._tidy(con, self.clock())

    def open_model_versions(self) -> set[str]:
        """The models open sessions count with (their pinned models must stay loaded)."""
        with self._transaction(write=False) as con:
            rows = con.execute("SELECT DISTINCT model_version FROM sessions WHERE ended_at IS NULL").fetchall()
        return {str(v) for (v,) in rows if v is not None}

    def _tidy(self, con: sqlite3.Connection, now: float) -> None:
        expired = con.execute(
            "UPDATE sessions SET ended_at = last_used + ?, end_reason = 'idle' WHERE ended_at IS NULL AND last_used < ?",
            (self.idle_s, now - self.idle_s),
        ).rowcount
        deleted = con.execute("DELETE FROM sessions WHERE ended_at < ?", (now - self.keep_s,)).rowcount
        if expired or deleted:
            log.info("class sessions: %d ended after being idle, %d final lists deleted", expired, deleted)

    def _row(self, con: sqlite3.Connection, sid: str, token: str, now: float) -> Row:
        found = con.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?", (sid,)).fetchone()
        stored = found[1] if found else token_hash("")
        if not (hmac.compare_digest(stored, token_hash(token)) and found):  # compared even when absent
            raise SessionNotFound(sid)
        _, _, created_at, last_used, ended_at, end_reason, state = found
        if ended_at is not None and ended_at < now - self.keep_s:
            raise SessionNotFound(sid)  # past its keeping time: deleted by the next tidy
        if ended_at is None and last_used < now - self.idle_s:
            ended_at, end_reason = last_used + self.idle_s, "idle"  # written by the next tidy
        data = json.loads(state)
        if ended_at is not None and data.get("ended_at") is None:
            data["ended_at"] = ended_at  # ended by expiry: the state says so too
        return Row(sid, data, created_at, last_used, ended_at, end_reason)


def _dump(state: dict[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"), allow_nan=False)


class _InFlight:
    """Frames being recognised in this process, per session: DELETE waits for them (and counts them)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frames: Counter[str] = Counter()
        self._ending: set[str] = set()

    @contextlib.contextmanager
    def frame(self, sid: str) -> Iterator[None]:
        with self._cond:
            if sid in self._ending:
                raise HttpError(409, "this class session is ending: the frame was not counted")
            self._frames[sid] += 1
        try:
            yield
        finally:
            with self._cond:
                self._frames[sid] -= 1
                if self._frames[sid] <= 0:
                    del self._frames[sid]
                self._cond.notify_all()

    @contextlib.contextmanager
    def ending(self, sid: str, wait_s: float) -> Iterator[None]:
        with self._cond:
            self._ending.add(sid)
            if not self._cond.wait_for(lambda: self._frames[sid] == 0, timeout=wait_s):
                log.warning("class session %s ended with frames still being recognised (refused)", sid)
        try:
            yield
        finally:
            with self._cond:
                self._ending.discard(sid)


class ClassSessions:
    """The HTTP operations of the example apps over a recognizer and a :class:`SessionStore`."""

    def __init__(
        self,
        recognizer: FaceRecognizer,
        store: SessionStore,
        *,
        recognition_threads: int = 2,
        end_wait_s: float = 30.0,
    ) -> None:
        self.recognizer, self.store, self.end_wait_s = recognizer, store, end_wait_s
        # 0: recognise in the request's own thread (the old way; for measuring it)
        self._pool = ThreadPoolExecutor(recognition_threads, "recognize") if recognition_threads > 0 else None
        self._pins: dict[str, FaceRecognizer] = {}  # model version -> that model, pinned
        self._pins_lock = threading.Lock()
        self._in_flight = _InFlight()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- recognition
    def _run(self, work: Callable[[], T]) -> T:
        """Run recognition on the pool (few threads: bounded memory); map its errors to answers."""
        try:
            return self._pool.submit(work).result() if self._pool is not None else work()
        except ImageError as err:
            raise HttpError(400, str(err)) from err
        except SessionEndedError as err:
            raise HttpError(409, str(err)) from err
        except RetrainError as err:  # the face models could not start (weights)
            raise HttpError(503, str(err)) from err

    def recognize(self, data: bytes) -> dict[str, Any]:
        """``POST /recognize``: every face of one uploaded photo (one model answers, and is named)."""
        model = self.recognizer.pinned()
        faces = self._run(lambda: model.identify(decode_upload(data, bgr=False), bgr=False))
        return {"model": model.model_version, "faces": [face_dict(f) for f in faces]}

    def _pin_current(self) -> FaceRecognizer:
        pin = self.recognizer.pinned()
        with self._pins_lock:
            return self._pins.setdefault(pin.model_version, pin)

    def _pin_for(self, version: str | None) -> FaceRecognizer:
        with self._pins_lock:
            pin = self._pins.get(version or "")
        if pin is None and version == self.recognizer.model_version:
            pin = self._pin_current()
        if pin is None or pin.model_version != version:
            raise HttpError(
                409,
                f"this class session counts with model {version}, which this server no longer has loaded (it serves "
                f"model {self.recognizer.model_version}, and was restarted since): its frames so far are kept. Read it "
                "(GET) or end it (DELETE) for its list, and start a new session for the rest of the lesson.",
            )
        return pin

    def tidy(self) -> None:
        """Expire idle sessions, delete old final lists, and unload models no open session uses."""
        self.store.tidy()
        in_use = self.store.open_model_versions() | {self.recognizer.model_version}
        with self._pins_lock:
            for version in set(self._pins) - in_use:
                del self._pins[version]

    # ---- sessions
    def start(self, body: bytes) -> dict[str, Any]:
        """``POST /sessions``: a new session for the model in service; its id and secret token."""
        roster = parse_roster(body)
        model = self._pin_current()
        try:
            session = AttendanceSession(model, roster)
        except (TypeError, ValueError) as err:
            raise HttpError(400, f"{err}; {ROSTER_HINT}") from err
        try:
            sid, token = self.store.create(session.to_dict())
        except TooManySessions as err:
            raise HttpError(
                429,
                f"too many class sessions are open ({err.args[0]}, at most {self.store.max_open}): end one "
                f"(DELETE /sessions/<id>) or wait until one has been idle for {self.store.idle_s / 3600:g} h",
                {"Retry-After": "60"},
            ) from err
        enrolled = set(model.model_metadata.students)
        return {
            "session": sid,
            "token": token,  # shown once: send it as "Authorization: Bearer <token>"
            "model": session.model_version,
            "roster": sorted(session.roster) if session.roster is not None else None,
            "not_enrolled": sorted(set(roster or ()) - enrolled),  # on the roster but not in the model (yet)
            "rule": session.rule.to_dict(),
            "idle_expiry_s": self.store.idle_s,
        }

    def add_frame(self, sid: str, authorization: str | None, data: bytes) -> dict[str, Any]:
        """``POST /sessions/{id}/frames``: recognise one frame with the session's model, count it
        once, commit, answer. A repeat of a frame already seen is answered and counts for nothing."""
        token = bearer(authorization)
        row = self._read(sid, token)
        if row.ended_at is not None:
            how = "after it sat idle" if row.end_reason == "idle" else "(DELETE)"
            raise HttpError(
                409, f"this class session has ended {how}: the frame was not counted; read its final list with GET"
            )
        session = AttendanceSession.restore(self._pin_for(row.state.get("model_version")), row.state)
        with self._in_flight.frame(sid):
            recognised = self._run(lambda: session.recognize(data))
            with self._changing(sid, token) as changing:
                live = AttendanceSession.restore(None, changing.state)
                try:
                    result = live.count(recognised)
                except (SessionEndedError, SessionModelError) as err:
                    raise HttpError(409, str(err)) from err
                changing.state = live.to_dict()
        report = live.report()
        return {**frame_dict(result), **report_dict(sid, report, changing, self.store.keep_s)}

    def read(self, sid: str, authorization: str | None) -> dict[str, Any]:
        """``GET /sessions/{id}``: who is present so far (or the final list, once ended)."""
        row = self._read(sid, bearer(authorization))
        return report_dict(sid, AttendanceSession.restore(None, row.state).report(), row, self.store.keep_s)

    def end(self, sid: str, authorization: str | None) -> dict[str, Any]:
        """``DELETE /sessions/{id}``: end it; frames being recognised are waited for and counted, later
        ones refused. The final list stays readable (GET) for the store's ``keep_s``; ending twice is fine."""
        token = bearer(authorization)
        row = self._read(sid, token)
        if row.ended_at is None:
            with self._in_flight.ending(sid, self.end_wait_s), self._changing(sid, token) as row:
                live = AttendanceSession.restore(None, row.state)
                live.end(wait_s=0)
                row.state = live.to_dict()
        return report_dict(sid, AttendanceSession.restore(None, row.state).report(), row, self.store.keep_s)

    def _read(self, sid: str, token: str) -> Row:
        try:
            return self.store.read(sid, token)
        except SessionNotFound as err:
            raise _not_found(sid) from err

    @contextlib.contextmanager
    def _changing(self, sid: str, token: str) -> Iterator[Row]:
        try:
            with self.store.change(sid, token) as row:
                yield row
        except SessionNotFound as err:
            raise _not_found(sid) from err


def _not_found(sid: str) -> HttpError:
    return HttpError(
        404,
        f"no class session {sid[:64]!r} for this token (a wrong token, never started, or deleted after its final "
        "list was kept)",
    )


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (401 without one)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        raise HttpError(
            401,
            "this class session needs its token: send the header 'Authorization: Bearer <token>' with the token "
            "POST /sessions returned",
            {"WWW-Authenticate": "Bearer"},
        )
    return token


def parse_roster(body: bytes) -> list[str] | None:
    """The roster of a ``POST /sessions`` body: 413 when too large, 400 when it is not ``{"roster": [ids]}``."""
    if len(body) > MAX_START_BODY:
        raise roster_too_large()
    if not body.strip():
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise HttpError(400, f"the roster is not valid JSON; {ROSTER_HINT}") from err
    if not isinstance(data, dict) or set(data) - {"roster"}:
        raise HttpError(400, f"the body must be a JSON object with one key, 'roster'; {ROSTER_HINT}")
    roster = data.get("roster")
    if roster is None:
        return None
    if not isinstance(roster, list):
        raise HttpError(400, f"the roster must be a list of student ids, not {type(roster).__name__}; {ROSTER_HINT}")
    if len(roster) > MAX_ROSTER:
        raise roster_too_large(len(roster))
    bad = next((i for i, sid in enumerate(roster) if not isinstance(sid, str)), None)
    if bad is not None:
        raise HttpError(400, f"roster entry {bad} is not a student id string ({roster[bad]!r:.40}); {ROSTER_HINT}")
    return roster


def roster_too_large(ids: int | None = None) -> HttpError:
    size = f"{ids} student ids" if ids is not None else "a body larger than 1 MB"
    return HttpError(
        413,
        f"the roster is too large ({size}): send at most {MAX_ROSTER} student ids, those of one class "
        "(or no roster for every enrolled student)",
    )


# ---------------------------------------------------------------------------- answers


def face_dict(f: Recognition) -> dict[str, Any]:
    """One face. ``accepted``: it passed the threshold (a name, not yet attendance)."""
    return {
        "student_id": f.student_id,
        "name": f.student_name,
        "accepted": f.accepted,
        "confidence": round(f.confidence, 3),
        "box": [round(v) for v in f.box or ()],
    }


def frame_dict(result: FrameResult) -> dict[str, Any]:
    """One frame of a session. Per face, ``kind`` says what it counted as (null: the frame was not
    counted) and ``counts_toward_presence`` whether it counted for its student, who is present only
    once the session's rule is met (the ``present`` list)."""
    kinds: list[FaceKind | None] = list(result.kinds) or [None] * len(result.faces)
    return {
        "frame": result.number,  # its number in the session; null for a repeat
        "outcome": result.outcome.value,  # "counted", "empty" (no face: not counted) or "repeat"
        "faces": [
            {**face_dict(f), "kind": k.value if k else None, "counts_toward_presence": k is FaceKind.STUDENT}
            for f, k in zip(result.faces, kinds, strict=True)
        ],
    }


def report_dict(sid: str, report: SessionReport, row: Row, keep_s: float) -> dict[str, Any]:
    ended_at = row.state.get("ended_at")
    return {
        "session": sid,
        "model": report.model_version,
        "ended": report.ended,
        "end_reason": (row.end_reason or "ended") if report.ended else None,
        "readable_until": ended_at + keep_s if ended_at is not None and math.isfinite(keep_s) else None,
        "frames": report.frames,
        "required_frames": report.required_frames,
        "present": [
            {
                "student_id": p.student_id,
                "name": p.student_name,
                "frames": p.frames,
                "best_confidence": round(p.best_confidence, 3),
            }
            for p in report.present
        ],
        "seen_not_present": [p.student_id for p in report.seen_not_present],
        "empty_frames": report.empty_frames,
        "repeated_frames": report.repeated_frames,
        "unknown_faces": report.unknown_faces,
        "conflicts": report.conflicts,
        "not_in_class": report.not_in_class,
    }
