"""Class sessions over HTTP: server memory and answer times of frame posts vs ``/recognize``, a restart,
the cost of committing each frame, and whether a frame with no face should count.

    .venv/bin/python bench/bench_session_memory.py [--clients 8] [--posts 20] [--frames classroom|photos]
    .venv/bin/python bench/bench_session_memory.py --store-only     # SQLite commit per frame, seconds
    .venv/bin/python bench/bench_session_memory.py --empty-frames   # blank frames counted or not (ORL)

Each run starts a fresh ``uvicorn examples.fastapi_app:app`` on 127.0.0.1 (nothing else is
reached) with a model trained here on 9 ORL students (MTCNN + dlib, offline; ``--output-root``
to use a published one), warms it with one request, then ``--clients`` threads post ``--posts``
frames each, all at once: to ``/recognize``, or each client to its own class session (``POST
/sessions`` then ``/sessions/{id}/frames``). The same frames in every run: ``classroom``
(1920×1080 JPEGs with 4 ORL faces; a camera frame: the detector also runs at 1280 px) or
``photos`` (ORL and LFW photos, 92×112 and 250×250). Memory from /proc/<pid>/status: growth of
the peak (VmHWM) over the RSS before the burst. Both endpoints are run twice: recognition on
the app's pool of ``SMARTATTENDANCE_RECOGNITION_THREADS`` (2) threads, and in each request's
own thread (``=0``: how the app ran before). Printed: the ratio of session frames to
``/recognize`` measured in the same run, and each to the baseline. Then the server is killed
(``kill -9``) and started again: the time until the session answers again, and its counts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
if TYPE_CHECKING:
    from backend.recognizer import PresenceRule, Recognition

OFFLINE = ["--detector", "mtcnn", "--embedder", "dlib", "--device", "cpu"]


def train(root: Path, students: range, photos: range) -> None:
    """A model of ORL people ``students`` (photos ``photos``) published into ``root``."""
    import retrain_model

    tree = root.parent / f"processed_{root.name}"
    for k in students:
        folder = tree / f"STU{k:03d}_Person_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in photos:
            shutil.copy2(SHARED / "orl" / f"s{k}" / f"{i}.pgm", folder / f"{i}.pgm")
    args = ["--data-dir", str(tree), "--output-root", str(root), "--quiet", "--force", "--no-photos-in-report"]
    if retrain_model.main(args + OFFLINE) != 0:
        raise SystemExit("training the benchmark's model failed")


def classroom_frames(n: int = 20) -> list[bytes]:
    """1920x1080 JPEGs, each with 4 ORL faces (2.5x, ~230x280 px) on a noisy grey background."""
    import cv2

    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        canvas = (np.full((1080, 1920, 3), 90) + rng.integers(0, 20, (1080, 1920, 3))).astype(np.uint8)
        for j, person in enumerate((1, 2, 3, 4)):
            face = cv2.imread(str(SHARED / "orl" / f"s{person}" / f"{(k + j) % 10 + 1}.pgm"))
            face = cv2.resize(face, None, fx=2.5, fy=2.5)
            y, x = 200 + (j // 2) * 400, 200 + j * 400
            canvas[y : y + face.shape[0], x : x + face.shape[1]] = face
        out.append(cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    return out


def small_photos() -> list[bytes]:
    orl = [(SHARED / "orl" / "s1" / f"{i}.pgm").read_bytes() for i in range(1, 11)]
    return orl + [p.read_bytes() for p in sorted((SHARED / "lfw").glob("*/*.jpg"))[:30:3]]


def memory_mib(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``uvicorn examples.fastapi_app:app`` on loopback, in its own process."""

    def __init__(self, root: Path, db: Path, threads: int) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "SMARTATTENDANCE_OUTPUT_ROOT": str(root),
            "SMARTATTENDANCE_SESSIONS_DB": str(db),
            "SMARTATTENDANCE_RECOGNITION_THREADS": str(threads),
        }
        cmd = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1"]
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.port), "--log-level", "warning"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
        )
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("the server stopped while starting")
            try:
                if self.call("GET", "/model")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        self.start_s = time.perf_counter() - started

    def call(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def post_photo(self, path: str, data: bytes, token: str | None = None) -> tuple[int, dict]:
        boundary = uuid.uuid4().hex
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="f.jpg"\r\n\r\n'.encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.call("POST", path, body, headers)

    def stop(self, kill: bool = False) -> None:
        if kill:
            os.kill(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.terminate()
        self.proc.wait(30)


def burst(
    server: Server, frames: list[bytes], clients: int, posts: int, sessions: bool
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """``clients`` threads x ``posts`` frames at once: the server's memory growth and answer times, and
    the sessions it opened (id, token)."""
    server.post_photo("/recognize", frames[0])  # warm (both kinds of request, the same code paths)
    opened = []
    if sessions:
        for _ in range(clients):
            status, started = server.call("POST", "/sessions")
            assert status == 201, started
            opened.append((started["session"], started["token"]))
    before = memory_mib(server.proc.pid)

    def client(k: int) -> list[float]:
        took = []
        for i in range(posts):
            data = frames[(k * posts + i) % len(frames)]
            t = time.perf_counter()
            if sessions:
                sid, token = opened[k]
                status, answer = server.post_photo(f"/sessions/{sid}/frames", data, token)
            else:
                status, answer = server.post_photo("/recognize", data)
            took.append(time.perf_counter() - t)
            assert status == 200, answer
        return took

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        took = np.array([t for ts in pool.map(client, range(clients)) for t in ts])
    wall = time.perf_counter() - started
    after = memory_mib(server.proc.pid)
    figures = {
        "p50": float(np.percentile(took, 50)),
        "p99": float(np.percentile(took, 99)),
        "wall": wall,
        "before": before["VmRSS"],
        "after": after["VmRSS"],
        "growth": after["VmHWM"] - max(before["VmHWM"], before["VmRSS"]),
    }
    return figures, opened


def restart(root: Path, db: Path, threads: int, session: tuple[str, str], frame: bytes) -> None:
    """kill -9 a server holding an open session, start it again, post one more frame."""
    sid, token = session
    server = Server(root, db, threads)
    status, before = server.call("GET", f"/sessions/{sid}", headers={"Authorization": f"Bearer {token}"})
    assert status == 200, before
    killed = time.perf_counter()
    server.stop(kill=True)
    server = Server(root, db, threads)
    status, after = server.post_photo(f"/sessions/{sid}/frames", frame, token)
    answered = time.perf_counter() - killed
    server.stop()
    assert status == 200, after
    print(
        f"\nrestart (kill -9): the session answered again {answered:.1f} s after the kill (server start "
        f"{server.start_s:.1f} s); frames {before['frames']} before, {after['frames']} after one more "
        f"(repeats {after['repeated_frames']}), present {[p['student_id'] for p in after['present']]}"
    )


def store_cost() -> None:
    """Seconds per frame commit (read, count, write, fsync) as a session's state grows."""
    from backend.recognizer import AttendanceSession, Recognition
    from backend.recognizer.loader import Candidate
    from examples.session_store import SessionStore

    with tempfile.TemporaryDirectory() as folder:
        store = SessionStore(Path(folder) / "s.db")
        session = AttendanceSession(None, roster=[f"STU{i:03d}" for i in range(30)])
        sid, token = store.create(session.to_dict())
        faces = [
            Recognition((0.0, 0.0, 50.0, 50.0), f"STU{i:03d}", f"Student {i}", 0.9, True, [Candidate("x", "x", 0.9)])
            for i in range(25)
        ] + [Recognition((0.0, 0.0, 50.0, 50.0), "Unknown", "Unknown", 0.2, False, [Candidate("S", "S", 0.5)])]
        print(f"\n{'frames so far':>14} {'state KiB':>10} {'ms per frame commit (median, p90 of the last 50)':>50}")
        done = 0
        took: list[float] = []
        for target in (100, 1000, 5000):
            while done < target:
                t = time.perf_counter()
                with store.change(sid, token) as row:
                    live = AttendanceSession.restore(None, row.state)
                    live.add_recognitions(faces, digest=f"{done:032x}")
                    row.state = live.to_dict()
                took.append(time.perf_counter() - t)
                done += 1
            size = len(json.dumps(row.state)) / 1024
            last = np.array(took[-50:]) * 1000
            print(f"{target:>14} {size:>10.0f} {np.median(last):>41.1f}, {np.percentile(last, 90):.1f}")
        print("26 faces per frame (25 students, 1 unknown), synchronous=FULL, WAL; a lesson at 1 frame / 10 s: 360")


def empty_frames() -> None:
    """Students and strangers marked present when blank frames (no face) count toward the rule or not."""
    from backend.recognizer import AttendanceSession, FaceRecognizer

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "root"
        train(root, range(1, 21), range(1, 5))  # 20 students, photos 1-4
        recognizer = FaceRecognizer.load(root, require_manifest=True)

        def frames_of(person: int, photos: range) -> list[list[Recognition]]:
            found = [recognizer.identify(SHARED / "orl" / f"s{person}" / f"{i}.pgm") for i in photos]
            return [faces[:1] for faces in found if faces]

        students = {f"STU{k:03d}": frames_of(k, range(5, 11)) for k in range(1, 21)}  # unseen photos 5-10
        strangers = [frames_of(k, range(1, 11)) for k in range(21, 41)]  # never enrolled
        rule = AttendanceSession(recognizer).rule
    print(f"\nrule {rule}; 20 students x 6 frames, 20 strangers x 10 frames, + blank frames")
    print(f"{'blank':>6} {'counted: students':>18} {'strangers':>10} {'not counted: students':>22} {'strangers':>10}")
    for blanks in (0, 3, 6, 12, 24):
        row = []
        for counted in (True, False):
            row += [
                sum(sid in marked(rule, f, blanks, counted) for sid, f in students.items()),
                sum(bool(marked(rule, f, blanks, counted)) for f in strangers),
            ]
        print(f"{blanks:>6} {row[0]:>15}/20 {row[1]:>7}/20 {row[2]:>19}/20 {row[3]:>7}/20")


def marked(rule: PresenceRule, frames: list[list[Recognition]], blanks: int, counted: bool) -> set[str]:
    """Who one person's frames + ``blanks`` blank frames mark present, blank frames counted toward the rule or not."""
    from backend.recognizer import AttendanceSession

    session = AttendanceSession(None, rule=rule)
    for faces in frames:
        session.add_recognitions(faces)
    for _ in range(blanks):
        session.add_recognitions([])
    r = session.report()
    need = rule.required_frames(r.frames + (r.empty_frames if counted else 0))
    return {p.student_id for p in r.present + r.seen_not_present if p.frames >= need}


def main() -> None:
    ap = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--posts", type=int, default=20, help="frames per client")
    ap.add_argument("--frames", choices=("classroom", "photos"), default="classroom")
    ap.add_argument("--output-root", type=Path, help="a published model (default: train 9 ORL students here)")
    ap.add_argument("--store-only", action="store_true", help="only the SQLite commit per frame")
    ap.add_argument("--empty-frames", action="store_true", help="only the blank-frames measurement")
    args = ap.parse_args()
    if args.store_only:
        store_cost()
        return
    if args.empty_frames:
        empty_frames()
        return
    work = Path(tempfile.mkdtemp(prefix="bench_sessions_"))
    try:
        root = args.output_root
        if root is None:
            root = work / "root"
            train(root, range(1, 10), range(1, 9))
        frames = classroom_frames() if args.frames == "classroom" else small_photos()
        results: dict[tuple[str, int], dict[str, float]] = {}
        opened: list[tuple[str, str]] = []
        for threads in (2, 0):
            for kind in ("recognize", "frames"):
                server = Server(root, work / f"{kind}{threads}.db", threads)
                try:
                    results[(kind, threads)], sessions = burst(
                        server, frames, args.clients, args.posts, kind == "frames"
                    )
                    opened = opened or sessions
                finally:
                    server.stop()
        print(f"\n{args.clients} clients x {args.posts} {args.frames} frames at once, a fresh server each row")
        print(
            f"{'endpoint':<22} {'threads':>8} {'p50 s':>7} {'p99 s':>7} {'wall s':>7} {'RSS before':>11} {'after':>6} "
            f"{'peak +MiB':>10}"
        )
        for (kind, threads), r in results.items():
            name = "/recognize" if kind == "recognize" else "/sessions/{id}/frames"
            label = "pool 2" if threads else "request"
            print(
                f"{name:<22} {label:>8} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['wall']:>7.1f} {r['before']:>11.0f} "
                f"{r['after']:>6.0f} {r['growth']:>10.0f}"
            )
        for threads, label in ((2, "recognition pool of 2 threads"), (0, "recognition in the request threads")):
            ratio = results[("frames", threads)]["growth"] / max(results[("recognize", threads)]["growth"], 1.0)
            print(f"session frames / /recognize, peak growth, {label}: {ratio:.2f}x")
        for kind in ("recognize", "frames"):
            ratio = results[(kind, 2)]["growth"] / max(results[(kind, 0)]["growth"], 1.0)
            print(f"{kind}: pool of 2 / request threads (the baseline), peak growth: {ratio:.2f}x")
        restart(root, work / "frames2.db", 2, opened[0], small_photos()[5])
        store_cost()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
