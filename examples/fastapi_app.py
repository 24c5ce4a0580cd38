"""The attendance backend's face recognition as a FastAPI app (docs/LOADER_API.md shows this file).

Run it from the project folder, with the folder ``retrain_model.py`` publishes into::

    pip install fastapi uvicorn python-multipart
    SMARTATTENDANCE_OUTPUT_ROOT=/path/to/project uvicorn examples.fastapi_app:app

``POST /recognize`` with the image as the form field ``photo`` answers who is in it; ``GET /model``
names the model in service. A class session: ``POST /sessions`` (optional JSON ``{"roster": [ids]}``)
starts one, ``POST /sessions/{id}/frames`` adds a camera frame (form field ``photo``), ``GET
/sessions/{id}`` says who is present so far, ``DELETE /sessions/{id}`` ends it with the final list
(docs/LOADER_API.md, "Attendance over a session"). A new model that ``retrain_model.py`` publishes
is picked up within ``SMARTATTENDANCE_RELOAD_S`` seconds (default 60) without a restart. A bad upload (empty, not an
image, a "decompression bomb") is answered 400 and the connection stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import Body, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from backend.recognizer import (
    AttendanceSession,
    FaceRecognizer,
    ImageError,
    Recognition,
    RetrainError,
    SessionReport,
    decode_upload,
)

log = logging.getLogger("attendance")
#: How often a newly published model is looked for (one stat() when nothing changed).
RELOAD_EVERY_S = float(os.environ.get("SMARTATTENDANCE_RELOAD_S", "60"))
#: Larger uploads are refused unread (a phone photo is 2-8 MB).
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Class sessions open at once (the oldest idle one is ended first) and how long one may sit idle.
MAX_SESSIONS = int(os.environ.get("SMARTATTENDANCE_MAX_SESSIONS", "200"))
SESSION_IDLE_S = float(os.environ.get("SMARTATTENDANCE_SESSION_IDLE_S", str(4 * 3600)))


class Sessions:
    """The open class sessions, by id. Bounded: a forgotten session ends when idle for SESSION_IDLE_S,
    and past MAX_SESSIONS the longest idle one is ended, so a client cannot fill the server's memory."""

    def __init__(self, limit: int = MAX_SESSIONS, idle_s: float = SESSION_IDLE_S) -> None:
        self.limit, self.idle_s = limit, idle_s
        self._lock = threading.Lock()
        self._open: OrderedDict[str, tuple[AttendanceSession, float]] = OrderedDict()  # least recently used first

    def start(self, session: AttendanceSession) -> str:
        sid = uuid.uuid4().hex
        with self._lock:
            self._expire()
            while len(self._open) >= self.limit:
                ended, _ = self._open.popitem(last=False)
                log.warning("class session %s ended: more than %d sessions open", ended, self.limit)
            self._open[sid] = (session, time.monotonic())
        return sid

    def get(self, sid: str) -> AttendanceSession:
        with self._lock:
            session = self._take(sid)
            self._open[sid] = (session, time.monotonic())  # back in, as the most recently used
            return session

    def end(self, sid: str) -> AttendanceSession:
        with self._lock:
            return self._take(sid)

    def _take(self, sid: str) -> AttendanceSession:
        self._expire()
        if sid not in self._open:
            raise HTTPException(404, f"no open class session {sid!r} (ended, or never started)")
        return self._open.pop(sid)[0]

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [k for k, (_, used) in self._open.items() if now - used > self.idle_s]:
            del self._open[sid]


async def reload_every(recognizer: FaceRecognizer, seconds: float) -> None:
    """Switch to a newly published model; a broken one is refused and the current one keeps serving."""
    while True:
        await asyncio.sleep(seconds)
        try:
            if await asyncio.to_thread(recognizer.reload_if_changed):
                log.info("now using model %s", recognizer.model_version)
        except Exception:  # never let the timer die
            log.exception("model reload check failed")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # once, at startup: the model from $SMARTATTENDANCE_OUTPUT_ROOT; a bad model stops the server here
    recognizer = FaceRecognizer.load(require_manifest=True)
    recognizer.identify(np.zeros((160, 160, 3), np.uint8))  # start the face models now (weights errors show here)
    app.state.recognizer = recognizer
    app.state.sessions = Sessions()
    task = asyncio.create_task(reload_every(recognizer, RELOAD_EVERY_S))
    yield
    task.cancel()


app = FastAPI(lifespan=lifespan)


@app.exception_handler(RequestValidationError)
async def no_photo(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A request without the form field (an empty body, a JSON body…) is the client's mistake: 400."""
    return JSONResponse({"detail": "send the image as the form field 'photo' (multipart/form-data)"}, status_code=400)


@app.get("/model")
def model(request: Request) -> dict[str, Any]:
    recognizer: FaceRecognizer = request.app.state.recognizer
    return {"model": recognizer.model_version}


def read_upload(photo: UploadFile) -> np.ndarray:
    """The uploaded image, decoded with a pixel limit (400/413 for what is not a usable photo)."""
    data = photo.file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"the upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    try:
        return decode_upload(data, bgr=False)  # RGB; ImageError: empty, not an image, too many pixels
    except ImageError as err:
        raise HTTPException(400, str(err)) from err


def face_dict(f: Recognition) -> dict[str, Any]:
    return {
        "student_id": f.student_id,
        "name": f.student_name,
        "present": f.accepted,
        "confidence": round(f.confidence, 3),
        "box": [round(v) for v in f.box or ()],
    }


@app.post("/recognize")
def recognize(request: Request, photo: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI's idiom
    """Plain ``def``: FastAPI runs it in a worker thread, so recognition does not block the event loop."""
    recognizer: FaceRecognizer = request.app.state.recognizer
    image = read_upload(photo)
    try:
        faces = recognizer.identify(image, bgr=False)
    except ImageError as err:
        raise HTTPException(400, str(err)) from err
    except RetrainError as err:  # the face models could not start (weights)
        raise HTTPException(503, str(err)) from err
    return {"model": recognizer.model_version, "faces": [face_dict(f) for f in faces]}


def report_dict(sid: str, report: SessionReport) -> dict[str, Any]:
    return {
        "session": sid,
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
        "unknown_faces": report.unknown_faces,
        "conflicts": report.conflicts,
        "not_in_class": report.not_in_class,
    }


@app.post("/sessions", status_code=201)
def start_session(request: Request, roster: list[str] | None = Body(default=None, embed=True)) -> dict[str, Any]:  # noqa: B008
    """Start a class session; ``roster``: the student ids of this class (none: every enrolled student)."""
    recognizer: FaceRecognizer = request.app.state.recognizer
    session = AttendanceSession(recognizer, roster=roster)
    sid = request.app.state.sessions.start(session)
    enrolled = set(recognizer.model_metadata.students)
    rule = session.rule
    return {
        "session": sid,
        "roster": sorted(session.roster) if session.roster is not None else None,
        "not_enrolled": sorted(set(roster or ()) - enrolled),  # on the roster but not in the model (yet)
        "rule": rule.to_dict(),
    }


@app.post("/sessions/{sid}/frames")
def add_frame(request: Request, sid: str, photo: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008
    """One camera frame of the session: its faces, and who is present so far."""
    session: AttendanceSession = request.app.state.sessions.get(sid)
    image = read_upload(photo)
    try:
        faces = session.add(image, bgr=False)
    except ImageError as err:
        raise HTTPException(400, str(err)) from err
    except RetrainError as err:
        raise HTTPException(503, str(err)) from err
    return {"faces": [face_dict(f) for f in faces], **report_dict(sid, session.report())}


@app.get("/sessions/{sid}")
def session_report(request: Request, sid: str) -> dict[str, Any]:
    return report_dict(sid, request.app.state.sessions.get(sid).report())


@app.delete("/sessions/{sid}")
def end_session(request: Request, sid: str) -> dict[str, Any]:
    """End the session: the final list (the session is forgotten)."""
    return report_dict(sid, request.app.state.sessions.end(sid).report())
