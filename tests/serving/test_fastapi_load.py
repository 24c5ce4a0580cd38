"""The documented FastAPI app, for real: ``uvicorn examples.fastapi_app:app`` on 127.0.0.1 under a
bounded burst of real photos, empty bodies, junk and decompression bombs, with a publish in the
middle. No answer may be a 5xx, every answer comes within bounds, memory stays bounded, and a
keep-alive connection keeps working after bad requests. The Flask app is checked in-process.

The figures (requests, errors, p50, p99, memory) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import functools
import http.client
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import LFW, OFFLINE_ARGS, ORL, ROOT, make_orl_tree, require_shared_data, rollback_in_a_child

pytestmark = pytest.mark.slow

BURST = 160  # requests in the burst
CONCURRENCY = 8  # at a time
ANSWER_BOUND_S = 30.0  # no request may wait longer, even on a busy 2-core machine
BOMB_BOUND_S = 1.0  # a bomb on an idle server is refused within this
MEMORY_BOUND_MIB = 400  # peak growth of the server over the whole burst (one decoded bomb: 2 700 MiB)


@functools.cache
def full_png_bomb(side: int = 30000) -> bytes:
    """A complete, valid greyscale PNG of ``side``×``side`` zeros: ~0.9 MB that decodes to 2.7 GB as BGR."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    rows = 1000
    idat = b"".join(packer.compress(row * rows) for _ in range(side // rows)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def post(conn: http.client.HTTPConnection, data: bytes | None, *, field: str = "photo") -> tuple[int, dict, float]:
    """One request on ``conn`` (None: an empty body, no form at all); (status, JSON answer, seconds)."""
    if data is None:
        body, kind = b"", "application/octet-stream"
    else:
        body, kind = multipart(field, "upload.jpg", data)
    started = time.perf_counter()
    conn.request("POST", "/recognize", body=body, headers={"Content-Type": kind})
    response = conn.getresponse()
    payload = response.read()
    took = time.perf_counter() - started
    return response.status, json.loads(payload or b"{}"), took


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, published_root: Path) -> tuple[Path, str, str]:
    """An output root whose model in service (B, 4 students) has a previous one (A, 12 students) kept,
    so that ``--rollback`` mid-burst is a real publish of another model."""
    import retrain_model

    root = tmp_path_factory.mktemp("served") / "root"
    shutil.copytree(published_root, root, symlinks=True)
    model_a = json.loads((root / "backend/models/Classifier/manifest.json").read_text())["model_version"]
    tree = make_orl_tree(tmp_path_factory.mktemp("four") / "processed", n_students=4, n_images=5)
    code = retrain_model.main(
        ["--data-dir", str(tree), "--output-root", str(root), "--quiet", "--force", "--no-photos-in-report"]
        + OFFLINE_ARGS
    )
    assert code == 0
    model_b = json.loads((root / "backend/models/Classifier/manifest.json").read_text())["model_version"]
    assert model_b != model_a
    return root, model_a, model_b


@pytest.fixture(scope="module")
def server(two_models: tuple[Path, str, str]):
    root, _, _ = two_models
    port = free_port()
    env = {
        **os.environ,
        "SMARTATTENDANCE_OUTPUT_ROOT": str(root),
        "SMARTATTENDANCE_RELOAD_S": "0.5",
        "SMARTATTENDANCE_SESSIONS_DB": str(root.parent / "sessions.sqlite3"),
    }
    cmd = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail("uvicorn stopped: " + proc.stdout.read().decode(errors="replace")[-3000:])
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/model")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("uvicorn did not answer within 120 s")
            time.sleep(0.3)
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _photos() -> list[tuple[bytes, str | None]]:
    """Real photos: ORL faces of STU001 (enrolled in both models) and LFW strangers' photos."""
    require_shared_data()
    require_shared_data(LFW)
    enrolled = [((ORL / "s1" / f"{i}.pgm").read_bytes(), "STU001") for i in range(1, 11)]
    lfw = [(p.read_bytes(), None) for p in sorted(LFW.glob("*/*.jpg"))[:30:3]]
    return enrolled + lfw


def test_empty_upload_is_400_and_the_same_connection_keeps_working(server) -> None:
    port, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_BOUND_S)
    photo = (ORL / "s1" / "1.pgm").read_bytes()
    status, answer, _ = post(conn, b"")
    sock = conn.sock
    assert status == 400 and "empty upload" in answer["detail"]
    for data in (b"not an image at all", None, photo):
        status, answer, _ = post(conn, data)
        assert conn.sock is sock, "the server closed the keep-alive connection"
        assert status == (200 if data is photo else 400), answer
    assert answer["faces"] and answer["faces"][0]["student_id"] == "STU001"
    conn.close()


def test_a_decompression_bomb_is_refused_fast_with_little_memory(server) -> None:
    port, proc = server
    bomb = full_png_bomb()
    assert len(bomb) < 1_000_000
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_BOUND_S)
    before = memory_kib(proc.pid)
    status, answer, took = post(conn, bomb)
    after = memory_kib(proc.pid)
    grown = (after["VmHWM"] - max(before["VmHWM"], before["VmRSS"])) / 1024
    print(f"\nbomb: status {status} in {took:.3f} s, server peak memory +{grown:.0f} MiB")
    assert status == 400 and "too large" in answer["detail"]
    assert took < BOMB_BOUND_S and grown < 100
    conn.close()


def test_burst_with_bad_requests_and_a_publish_in_the_middle(server, two_models) -> None:
    port, proc = server
    root, model_a, model_b = two_models
    photos = _photos()
    bomb = full_png_bomb()
    kinds: list[tuple[str, bytes | None, str | None]] = []
    for i in range(BURST):
        k = i % 16
        if k < 10:
            data, expected = photos[i % len(photos)]
            kinds.append(("photo", data, expected))
        elif k < 12:
            kinds.append(("empty", b"", None))
        elif k < 14:
            kinds.append(("junk", os.urandom(2000), None))
        elif k == 14:
            kinds.append(("bomb", bomb, None))
        else:
            kinds.append(("no_form", None, None))
    before = memory_kib(proc.pid)

    def one(kind: tuple[str, bytes | None, str | None]) -> tuple[str, int, dict, float, str | None]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_BOUND_S)
        try:
            status, answer, took = post(conn, kind[1])
        except (OSError, http.client.HTTPException) as err:
            return kind[0], -1, {"error": repr(err)}, ANSWER_BOUND_S, kind[2]
        finally:
            conn.close()
        return kind[0], status, answer, took, kind[2]

    results = []
    published_at = None
    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [pool.submit(one, k) for k in kinds]
        for n, future in enumerate(futures):
            results.append(future.result())
            if n == BURST // 2 and published_at is None:  # the publish in the middle: model A back in service
                rollback_in_a_child(root)
                published_at = time.perf_counter() - started
    wall = time.perf_counter() - started
    after = memory_kib(proc.pid)
    time.sleep(1.5)  # two reload periods
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_BOUND_S)
    conn.request("GET", "/model")
    serving = json.loads(conn.getresponse().read())["model"]
    conn.close()

    took = np.array([r[3] for r in results])
    server_errors = [r for r in results if r[1] >= 500 or r[1] < 0]
    by_kind: dict[str, list[int]] = {}
    for kind, status, *_ in results:
        by_kind.setdefault(kind, []).append(status)
    models_seen = sorted({r[2].get("model", "") for r in results if r[1] == 200})
    wrong = [r for r in results if r[0] == "photo" and r[4] and r[1] == 200 and r[2]["faces"]]
    wrong = [r for r in wrong if r[2]["faces"][0]["student_id"] not in (r[4], "Unknown")]
    figures = {
        "requests": len(results),
        "errors_5xx_or_failed": len(server_errors),
        "status_by_kind": {k: dict(Counter(v)) for k, v in by_kind.items()},
        "p50_s": round(float(np.percentile(took, 50)), 3),
        "p99_s": round(float(np.percentile(took, 99)), 3),
        "max_s": round(float(took.max()), 3),
        "wall_s": round(wall, 1),
        "published_at_s": round(published_at or -1, 1),
        "rss_before_mib": round(before["VmRSS"] / 1024),
        "rss_after_mib": round(after["VmRSS"] / 1024),
        "peak_growth_mib": round((after["VmHWM"] - max(before["VmHWM"], before["VmRSS"])) / 1024),
        "models_answering": models_seen,
    }
    print("\nload test:", json.dumps(figures))
    assert not server_errors, server_errors[:3]
    assert all(s == 200 for s in by_kind["photo"])
    assert all(s == 400 for k in ("empty", "junk", "bomb", "no_form") for s in by_kind[k])
    assert took.max() < ANSWER_BOUND_S
    assert figures["peak_growth_mib"] < MEMORY_BOUND_MIB
    assert not wrong, [(r[4], r[2]["faces"][0]) for r in wrong[:3]]
    assert serving == model_a and set(models_seen) <= {model_a, model_b}


def test_flask_example_answers_refuses_bad_uploads_and_keeps_sessions(
    two_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Flask app has what the FastAPI app has: the same session store (SQLite, a token per session)."""
    root, _, _ = two_models
    monkeypatch.setenv("SMARTATTENDANCE_OUTPUT_ROOT", str(root))
    monkeypatch.setenv("SMARTATTENDANCE_SESSIONS_DB", str(tmp_path / "flask.sqlite3"))
    sys.modules.pop("examples.flask_app", None)
    from examples import flask_app

    client = flask_app.app.test_client()
    photo = (ORL / "s1" / "2.pgm").read_bytes()
    ok = client.post("/recognize", data={"photo": (io.BytesIO(photo), "a.pgm")})
    assert ok.status_code == 200 and ok.json["faces"][0]["student_id"] == "STU001"
    assert ok.json["faces"][0]["accepted"] is True and "present" not in ok.json["faces"][0]
    for data in ({"photo": (io.BytesIO(b""), "empty.jpg")}, {"photo": (io.BytesIO(full_png_bomb(20000)), "b.png")}, {}):
        bad = client.post("/recognize", data=data)
        assert bad.status_code == 400, bad.json

    started = client.post("/sessions", json={"roster": ["STU001"]})
    assert started.status_code == 201, started.json
    sid, auth = started.json["session"], {"Authorization": f"Bearer {started.json['token']}"}
    for i in (1, 2, 2):  # the last one a repeat
        frame = client.post(
            f"/sessions/{sid}/frames",
            data={"photo": (io.BytesIO((ORL / "s1" / f"{i}.pgm").read_bytes()), "f.pgm")},
            headers=auth,
        )
        assert frame.status_code == 200, frame.json
    assert frame.json["outcome"] == "repeat" and frame.json["present"][0]["frames"] == 2
    assert client.get(f"/sessions/{sid}").status_code == 401
    assert client.delete(f"/sessions/{sid}", headers={"Authorization": "Bearer wrong"}).status_code == 404
    assert client.post("/sessions", json={"roster": "STU001"}).status_code == 400
    big = client.post("/sessions", data=b" " * (2 * 1024 * 1024), content_type="application/json")
    assert big.status_code == 413 and "roster" in big.json["error"]
    final = client.delete(f"/sessions/{sid}", headers=auth)
    assert final.status_code == 200 and final.json["ended"] and final.json["present"][0]["student_id"] == "STU001"
    assert client.get(f"/sessions/{sid}", headers=auth).json == final.json


def _call(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes = b"", kind: str = "", token: str = ""
) -> tuple[int, dict]:
    headers = {"Content-Type": kind} if kind else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def test_a_class_session_over_http_marks_present_only_the_roster_students_seen_in_several_frames(server) -> None:
    """Start a session with a roster, post real frames (ORL photos: two roster students, one enrolled student
    who is not in this class, a never-enrolled person), read who is present, end it."""
    port, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_BOUND_S)
    roster = json.dumps({"roster": ["STU001", "STU002", "STU999"]}).encode()
    status, started = _call(conn, "POST", "/sessions", roster, "application/json")
    assert status == 201 and started["roster"] == ["STU001", "STU002", "STU999"], started
    assert started["not_enrolled"] == ["STU999"] and started["rule"]["min_frames"] >= 2
    sid, token = started["session"], started["token"]

    def frame(path: Path) -> tuple[int, dict]:
        body, kind = multipart("photo", path.name, path.read_bytes())
        return _call(conn, "POST", f"/sessions/{sid}/frames", body, kind, token)

    frames = [ORL / "s1" / f"{i}.pgm" for i in (1, 2, 3)] + [ORL / "s2" / "1.pgm"]  # STU001 3x, STU002 once
    frames += [ORL / "s3" / f"{i}.pgm" for i in (1, 2, 3)]  # enrolled, but not in this class
    frames += [ORL / "s40" / f"{i}.pgm" for i in (1, 2, 3)]  # never enrolled in either model
    for path in frames:
        status, answer = frame(path)
        assert status == 200 and len(answer["faces"]) == 1, answer
    status, answer = _call(conn, "POST", f"/sessions/{sid}/frames", *multipart("photo", "x.jpg", b"junk"), token)
    assert status == 400, answer  # and the session goes on
    status, report = _call(conn, "GET", f"/sessions/{sid}", token=token)
    assert status == 200 and report["frames"] == len(frames)  # the junk upload is not a frame
    assert [p["student_id"] for p in report["present"]] == ["STU001"], report
    assert report["present"][0]["frames"] == 3 and "STU002" in report["seen_not_present"]
    assert report["not_in_class"] >= 2 and report["unknown_faces"] >= 2, report
    status, final = _call(conn, "DELETE", f"/sessions/{sid}", token=token)
    assert status == 200 and final["present"] == report["present"] and final["ended"]
    assert _call(conn, "GET", f"/sessions/{sid}", token=token)[1] == final  # the final list stays readable
    assert _call(conn, "GET", f"/sessions/{sid}")[0] == 401  # not without the token
    body, kind = multipart("photo", "a.pgm", (ORL / "s1" / "9.pgm").read_bytes())
    assert _call(conn, "POST", f"/sessions/{sid}/frames", body, kind, token)[0] == 409  # ended
    assert _call(conn, "POST", "/sessions/nope/frames", body, kind, token)[0] == 404
    status, everyone = _call(conn, "POST", "/sessions")  # no body: every enrolled student counts
    assert status == 201 and everyone["roster"] is None
    conn.close()
