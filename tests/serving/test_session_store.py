"""The example apps' session store (examples/session_store.py): SQLite rows of AttendanceSession
states, a token hash each, a cap that refuses, idle expiry that keeps the final list, and the
request parsing both apps share. No model and no server: quick."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from backend.recognizer import AttendanceSession
from backend.recognizer.session import MAX_ROSTER
from examples.session_store import (
    MAX_START_BODY,
    HttpError,
    SessionNotFound,
    SessionStore,
    TooManySessions,
    bearer,
    parse_roster,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _store(tmp_path: Path, **kw: float) -> tuple[SessionStore, Clock]:
    clock = Clock()
    return SessionStore(tmp_path / "s.sqlite3", clock=clock, **kw), clock  # type: ignore[arg-type]


def test_a_session_is_reached_only_with_its_token_which_is_stored_hashed(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    sid, token = store.create(AttendanceSession(None, roster=["STU001"]).to_dict())
    assert len(token) >= 40 and store.read(sid, token).state["roster"] == ["STU001"]
    for wrong in ("", token[:-1], token + "x", "guess"):
        with pytest.raises(SessionNotFound):
            store.read(sid, wrong)
    with pytest.raises(SessionNotFound):
        store.read("no-such-id", token)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert token.encode() not in raw  # only its SHA-256 is kept
    assert (tmp_path / "s.sqlite3").stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(tmp_path / "s.sqlite3") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_at_the_cap_a_new_session_is_refused_and_no_open_one_is_ended(tmp_path: Path) -> None:
    store, _ = _store(tmp_path, max_open=2)
    first = store.create(AttendanceSession(None).to_dict())
    second = store.create(AttendanceSession(None).to_dict())
    with pytest.raises(TooManySessions):
        store.create(AttendanceSession(None).to_dict())
    assert store.read(*first).ended_at is None and store.read(*second).ended_at is None
    with store.change(*first) as row:  # ending one makes room
        session = AttendanceSession.restore(None, row.state)
        session.end()
        row.state = session.to_dict()
    assert store.read(*first).end_reason == "ended"
    store.create(AttendanceSession(None).to_dict())


def test_an_idle_session_ends_and_its_final_list_is_kept_then_deleted(tmp_path: Path) -> None:
    store, clock = _store(tmp_path, idle_s=100, keep_s=1000)
    sid, token = store.create(AttendanceSession(None).to_dict())
    with store.change(sid, token) as row:
        session = AttendanceSession.restore(None, row.state)
        session.add_recognitions([], digest="a")
        row.state = session.to_dict()
    clock.now += 101
    row = store.read(sid, token)
    assert (row.end_reason, row.ended_at) == ("idle", 1_000_000.0 + 100)
    assert AttendanceSession.restore(None, row.state).report().ended  # the final list, as after DELETE
    store.tidy()
    assert store.open_model_versions() == set() and store.read(sid, token).end_reason == "idle"
    clock.now += 1000
    with pytest.raises(SessionNotFound):
        store.read(sid, token)


def test_a_change_that_raises_changes_nothing_and_concurrent_changes_all_count(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    sid, token = store.create(AttendanceSession(None).to_dict())
    with pytest.raises(RuntimeError), store.change(sid, token) as row:
        row.state = {**row.state, "received": 99}
        raise RuntimeError("the count failed")
    assert store.read(sid, token).state["received"] == 0

    def frames(k: int) -> None:
        for i in range(10):
            with store.change(sid, token) as row:
                session = AttendanceSession.restore(None, row.state)
                session.add_recognitions([], digest=f"{k}-{i}")
                row.state = session.to_dict()

    threads = [threading.Thread(target=frames, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = AttendanceSession.restore(None, store.read(sid, token).state).report()
    assert report.empty_frames == 60  # no frame overwrote another's count


def test_requests_are_parsed_with_messages_about_what_is_wrong() -> None:
    assert bearer("Bearer abc") == bearer("bearer  abc ") == "abc"
    for bad in (None, "", "Basic abc", "Bearer", "Bearer " + "x" * 300):
        with pytest.raises(HttpError) as err:
            bearer(bad)
        assert err.value.status == 401 and err.value.headers == {"WWW-Authenticate": "Bearer"}
    assert parse_roster(b"") is None and parse_roster(b'{"roster": null}') is None
    assert parse_roster(b'{"roster": ["STU001"]}') == ["STU001"]
    cases = {
        b'{"roster": "STU001"}': (400, "must be a list of student ids, not str"),
        b'{"roster": ["STU001", 7]}': (400, "roster entry 1 is not a student id string"),
        b'{"students": []}': (400, "one key, 'roster'"),
        b"\xff{": (400, "not valid JSON"),
        ('{"roster": [' + ",".join(['"S"'] * (MAX_ROSTER + 1)) + "]}").encode(): (413, "the roster is too large"),
        b" " * (MAX_START_BODY + 1): (413, "the roster is too large"),
    }
    for body, (status, message) in cases.items():
        with pytest.raises(HttpError) as err:
            parse_roster(body)
        assert err.value.status == status and message in err.value.message, err.value.message
