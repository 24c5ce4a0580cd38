"""Class sessions over HTTP, for real: ``uvicorn examples.fastapi_app:app`` on 127.0.0.1 with real ORL
photos, its sessions in SQLite. A session survives ``kill -9``, belongs to its token, is never ended
to make room, counts a replayed frame once, keeps its model when another is published, and a
DELETE racing frame posts leaves out no frame that was answered 200.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import OFFLINE_ARGS, ORL, ROOT, require_shared_data, rollback_in_a_child

pytestmark = pytest.mark.slow

TIMEOUT_S = 60.0


def _train(root: Path, tree: Path, people: list[int]) -> str:
    import retrain_model

    for k in people:
        folder = tree / f"STU{k:03d}_Person_{k}"
        folder.mkdir(parents=True)
        for i in range(1, 5):
            shutil.copy2(ORL / f"s{k}" / f"{i}.pgm", folder / f"{i}.pgm")
    args = ["--data-dir", str(tree), "--output-root", str(root), "--quiet", "--force", "--no-photos-in-report"]
    assert retrain_model.main(args + OFFLINE_ARGS) == 0
    return str(json.loads((root / "backend/models/Classifier/manifest.json").read_text())["model_version"])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """An output root serving model B (ORL people 1, 2, 3, 5) with model A (1-4) kept for ``--rollback``."""
    require_shared_data()
    work = tmp_path_factory.mktemp("sessions")
    root = work / "root"
    model_a = _train(root, work / "a", [1, 2, 3, 4])
    model_b = _train(root, work / "b", [1, 2, 3, 5])
    assert model_a != model_b
    return root, model_a, model_b


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """The FastAPI example in its own process, on loopback, its sessions in ``db``."""

    def __init__(self, root: Path, db: Path) -> None:
        self.port = _free_port()
        env = {
            **os.environ,
            "SMARTATTENDANCE_OUTPUT_ROOT": str(root),
            "SMARTATTENDANCE_SESSIONS_DB": str(db),
            "SMARTATTENDANCE_RELOAD_S": "0.3",
        }
        cmd = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                assert self.proc.stdout is not None
                pytest.fail("uvicorn stopped: " + self.proc.stdout.read().decode(errors="replace")[-3000:])
            try:
                if self.call("GET", "/model")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail("uvicorn did not answer within 120 s")
            time.sleep(0.2)

    def call(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_S)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def start(self, roster: list[str] | None = None) -> tuple[str, str, dict]:
        body = json.dumps({"roster": roster}).encode() if roster is not None else b""
        status, started = self.call("POST", "/sessions", body, {"Content-Type": "application/json"})
        assert status == 201, started
        return started["session"], started["token"], started

    def frame(self, sid: str, token: str | None, photo: Path) -> tuple[int, dict]:
        boundary = uuid.uuid4().hex
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="{photo.name}"\r\n\r\n'.encode()
            + photo.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"} | _auth(token)
        return self.call("POST", f"/sessions/{sid}/frames", body, headers)

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            if kill:
                os.kill(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _present(report: dict) -> dict[str, int]:
    return {p["student_id"]: p["frames"] for p in report["present"]}


def _oversized_roster_answer(port: int) -> tuple[str, float]:
    """Send the headers of a 1M-id roster (14 MB) and its first 64 KB; the status line and the seconds to it."""
    body = json.dumps({"roster": [f"STU{i:07d}" for i in range(1_000_000)]}).encode()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        head = (
            f"POST /sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[:65536])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode(errors="replace"), time.perf_counter() - started


def test_a_session_survives_kill_9_and_only_its_token_reaches_it(models: tuple[Path, str, str], tmp_path: Path) -> None:
    root, _, model_b = models
    db = tmp_path / "sessions.sqlite3"
    server = Server(root, db)
    try:
        sid, token, started = server.start(["STU001", "STU002"])
        assert started["model"] == model_b and len(token) >= 32
        status, first = server.frame(sid, token, ORL / "s1" / "1.pgm")
        assert status == 200 and first["outcome"] == "counted" and first["frame"] == 1, first
        assert first["faces"][0]["counts_toward_presence"] and "present" not in first["faces"][0]
        status, again = server.frame(sid, token, ORL / "s1" / "1.pgm")  # the same photo, replayed
        assert status == 200 and again["outcome"] == "repeat" and again["frame"] is None
        assert again["present"] == [] and again["frames"] == 1 and again["repeated_frames"] == 1
        status, second = server.frame(sid, token, ORL / "s1" / "2.pgm")
        assert status == 200 and _present(second) == {"STU001": 2}
        assert oct(db.stat().st_mode & 0o777) == "0o600"

        server.stop(kill=True)  # kill -9: nothing is flushed or closed
        server = Server(root, db)
        status, third = server.frame(sid, token, ORL / "s1" / "3.pgm")
        assert status == 200 and third["frame"] == 3 and _present(third) == {"STU001": 3}, third
        assert third["model"] == model_b
        status, before = server.call("GET", f"/sessions/{sid}", headers=_auth(token))
        assert status == 200

        # another client: 250 new sessions. The cap refuses; nothing is ended to make room
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: server.call("POST", "/sessions")[0], range(250)))
        assert Counter(answers) == {201: 199, 429: 51}
        status, refused = server.call("POST", "/sessions")
        assert status == 429 and "too many class sessions are open" in refused["detail"]

        # without the token: nothing can be read, fed or ended
        for method, path in (("GET", f"/sessions/{sid}"), ("DELETE", f"/sessions/{sid}")):
            assert server.call(method, path)[0] == 401
            assert server.call(method, path, headers=_auth("guessed-" + token[8:]))[0] == 404
        assert server.frame(sid, None, ORL / "s1" / "4.pgm")[0] == 401
        assert server.frame(sid, "x" + token, ORL / "s1" / "4.pgm")[0] == 404
        assert server.frame(uuid.uuid4().hex, token, ORL / "s1" / "4.pgm")[0] == 404
        status, after = server.call("GET", f"/sessions/{sid}", headers=_auth(token))
        assert status == 200 and after == before  # unchanged by all of the above

        # rosters: the limit is checked from the header, and a malformed one gets a roster message
        answer, took = _oversized_roster_answer(server.port)
        assert answer.startswith("HTTP/1.1 413") and "the roster is too large" in answer and took < 2.0, answer
        for body in (b'{"roster": "STU001"}', b'{"roster": ["STU001", 2]}', b"[1, 2]", b"{not json"):
            status, bad = server.call("POST", "/sessions", body, {"Content-Type": "application/json"})
            assert status == 400 and "roster" in bad["detail"] and "photo" not in bad["detail"], bad

        status, final = server.call("DELETE", f"/sessions/{sid}", headers=_auth(token))
        assert status == 200 and final["ended"] and _present(final) == {"STU001": 3}
        status, late = server.frame(sid, token, ORL / "s1" / "5.pgm")
        assert status == 409 and "has ended" in late["detail"]
        status, kept = server.call("GET", f"/sessions/{sid}", headers=_auth(token))
        assert status == 200 and kept == final  # the final list stays readable
    finally:
        server.stop()


def test_a_model_published_mid_session_does_not_mix_and_a_delete_racing_frames_loses_none(
    models: tuple[Path, str, str], tmp_path: Path
) -> None:
    root, model_a, model_b = models
    db = tmp_path / "sessions.sqlite3"
    server = Server(root, db)
    try:
        sid, token, _ = server.start()
        for i in (1, 2):
            assert server.frame(sid, token, ORL / "s1" / f"{i}.pgm")[0] == 200
        rollback_in_a_child(root)
        deadline = time.monotonic() + 30
        while server.call("GET", "/model")[1]["model"] != model_a:
            assert time.monotonic() < deadline, "the server did not pick up the published model"
            time.sleep(0.2)
        # the session goes on with model B, in which person 5 is enrolled (not in model A)
        status, third = server.frame(sid, token, ORL / "s1" / "3.pgm")
        assert status == 200 and third["model"] == model_b and _present(third) == {"STU001": 3}, third
        status, five = server.frame(sid, token, ORL / "s5" / "1.pgm")
        assert status == 200 and five["faces"][0]["student_id"] == "STU005", five
        new_sid, new_token, new = server.start()
        assert new["model"] == model_a
        status, other = server.frame(new_sid, new_token, ORL / "s5" / "1.pgm")
        assert status == 200 and other["model"] == model_a and other["faces"][0]["student_id"] != "STU005"

        # a DELETE racing 8 threads of frame posts: every frame answered 200 is in the final list
        answered: list[tuple[int, dict]] = []
        lock = threading.Lock()

        def post(k: int) -> None:
            for i in range(2, 8):
                result = server.frame(new_sid, new_token, ORL / f"s{k}" / f"{i}.pgm")
                with lock:
                    answered.append(result)

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(post, k) for k in range(1, 9)]
            while True:
                with lock:
                    if sum(s == 200 for s, _ in answered) >= 10:
                        break
                time.sleep(0.05)
            status, final = server.call("DELETE", f"/sessions/{new_sid}", headers=_auth(new_token))
            for future in futures:
                future.result()
        assert status == 200 and final["ended"]
        statuses = Counter(s for s, _ in answered)
        print(f"\nDELETE racing 8 threads of frames: answers {dict(statuses)}, final list of {final['frames']} frames")
        assert set(statuses) <= {200, 409} and statuses[409] > 0, statuses
        numbers = sorted([1] + [a["frame"] for s, a in answered if s == 200])  # frame 1: person 5, above
        assert numbers == list(range(1, final["frames"] + final["empty_frames"] + 1)), (numbers, final)

        server.stop(kill=True)  # restarted, the server has only model A loaded
        server = Server(root, db)
        status, refused = server.frame(sid, token, ORL / "s1" / "4.pgm")
        assert status == 409 and f"counts with model {model_b}" in refused["detail"], refused
        status, report = server.call("GET", f"/sessions/{sid}", headers=_auth(token))
        assert status == 200 and report["model"] == model_b and report["frames"] == 4
        status, final_b = server.call("DELETE", f"/sessions/{sid}", headers=_auth(token))
        assert status == 200 and final_b["ended"] and _present(final_b)["STU001"] == 3
        assert server.call("GET", f"/sessions/{new_sid}", headers=_auth(new_token))[1] == final
    finally:
        server.stop()
