"""The attendance backend's face recognition as a FastAPI app (docs/LOADER_API.md shows this file).

Run it from the project folder, with the folder ``retrain_model.py`` publishes into::

    pip install fastapi uvicorn python-multipart
    SMARTATTENDANCE_OUTPUT_ROOT=/path/to/project uvicorn examples.fastapi_app:app

``POST /recognize`` with the image as the form field ``photo`` answers who is in it; ``GET /model``
names the model in service. A class session: ``POST /sessions`` (optional JSON ``{"roster": [ids]}``)
starts one and returns its id and secret token; with ``Authorization: Bearer <token>``, ``POST
/sessions/{id}/frames`` adds a camera frame (form field ``photo``), ``GET /sessions/{id}`` says who is
present so far, ``DELETE /sessions/{id}`` ends it with the final list (docs/LOADER_API.md, "Class
sessions over HTTP"). Sessions live in SQLite (``SMARTATTENDANCE_SESSIONS_DB``, examples/session_store.py)
and go on after a restart. A new model that ``retrain_model.py`` publishes is picked up within
``SMARTATTENDANCE_RELOAD_S`` seconds (default 60) without a restart; a session keeps the model it
started with. A bad upload (empty, not an image, a "decompression bomb") is answered 400 and the
connection stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from backend.recognizer import FaceRecognizer
from examples.session_store import (
    MAX_START_BODY,
    ClassSessions,
    HttpError,
    SessionStore,
    default_db_path,
    roster_too_large,
)

log = logging.getLogger("attendance")
#: How often a newly published model is looked for (one stat() when nothing changed).
RELOAD_EVERY_S = float(os.environ.get("SMARTATTENDANCE_RELOAD_S", "60"))
#: Larger uploads are refused unread (a phone photo is 2-8 MB).
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Class sessions open at once (beyond: 429), how long one may go without a frame, how long a final list is kept.
MAX_SESSIONS = int(os.environ.get("SMARTATTENDANCE_MAX_SESSIONS", "200"))
SESSION_IDLE_S = float(os.environ.get("SMARTATTENDANCE_SESSION_IDLE_S", str(4 * 3600)))
SESSION_KEEP_S = float(os.environ.get("SMARTATTENDANCE_SESSION_KEEP_S", str(7 * 24 * 3600)))
#: Threads that decode and recognise uploads (each holds a frame's peak memory; see session_store.py).
RECOGNITION_THREADS = int(os.environ.get("SMARTATTENDANCE_RECOGNITION_THREADS", "2"))

router = APIRouter()


def create_app(output_root: str | Path | None = None, db_path: str | Path | None = None) -> FastAPI:
    """The app; the model (``output_root``, default ``$SMARTATTENDANCE_OUTPUT_ROOT``) and the sessions'
    SQLite file (``db_path``, default ``$SMARTATTENDANCE_SESSIONS_DB``) are opened at startup."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # once, at startup: a bad model stops the server here
        recognizer = FaceRecognizer.load(output_root, require_manifest=True)
        recognizer.identify(np.zeros((160, 160, 3), np.uint8))  # start the face models now (weights errors show here)
        store = SessionStore(
            db_path or default_db_path(output_root), max_open=MAX_SESSIONS, idle_s=SESSION_IDLE_S, keep_s=SESSION_KEEP_S
        )
        sessions = ClassSessions(recognizer, store, recognition_threads=RECOGNITION_THREADS)
        app.state.recognizer, app.state.sessions = recognizer, sessions
        task = asyncio.create_task(maintain(sessions, RELOAD_EVERY_S))
        yield
        task.cancel()
        sessions.close()

    app = FastAPI(lifespan=lifespan)
    app.include_router(router)
    app.add_exception_handler(HttpError, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, no_photo)  # type: ignore[arg-type]
    return app


async def maintain(sessions: ClassSessions, seconds: float) -> None:
    """Switch to a newly published model (a broken one is refused, the current one keeps serving);
    end idle sessions and delete old final lists."""
    while True:
        await asyncio.sleep(seconds)
        try:
            if await asyncio.to_thread(sessions.recognizer.reload_if_changed):
                log.info("now using model %s", sessions.recognizer.model_version)
            await asyncio.to_thread(sessions.tidy)
        except Exception:  # never let the timer die
            log.exception("model reload or session tidy failed")


async def http_error(request: Request, exc: HttpError) -> JSONResponse:
    return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)


async def no_photo(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A request without the form field (an empty body, a JSON body…) is the client's mistake: 400."""
    return JSONResponse({"detail": "send the image as the form field 'photo' (multipart/form-data)"}, status_code=400)


def sessions_of(request: Request) -> ClassSessions:
    sessions: ClassSessions = request.app.state.sessions
    return sessions


@router.get("/model")
def model(request: Request) -> dict[str, Any]:
    recognizer: FaceRecognizer = request.app.state.recognizer
    return {"model": recognizer.model_version}


def read_upload(photo: UploadFile) -> bytes:
    """The uploaded bytes (413 past MAX_UPLOAD_BYTES); decoded with a pixel limit where recognised."""
    data = photo.file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"the upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    return data


@router.post("/recognize")
def recognize(request: Request, photo: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI's idiom
    """Plain ``def``: FastAPI runs it in a worker thread, so recognition does not block the event loop."""
    return sessions_of(request).recognize(read_upload(photo))


@router.post("/sessions", status_code=201)
async def start_session(request: Request) -> dict[str, Any]:
    """Start a class session; body ``{"roster": [ids]}`` (none: every enrolled student). An oversized
    body is refused from its Content-Length, before it is read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_START_BODY:
        raise HttpError(413, roster_too_large().message, {"Connection": "close"})
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_START_BODY:
            raise HttpError(413, roster_too_large().message, {"Connection": "close"})
    return await asyncio.to_thread(sessions_of(request).start, bytes(body))


@router.post("/sessions/{sid}/frames")
def add_frame(request: Request, sid: str, photo: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008
    """One camera frame of the session: its faces, and who is present so far (committed before the answer)."""
    return sessions_of(request).add_frame(sid, request.headers.get("authorization"), read_upload(photo))


@router.get("/sessions/{sid}")
def session_report(request: Request, sid: str) -> dict[str, Any]:
    return sessions_of(request).read(sid, request.headers.get("authorization"))


@router.delete("/sessions/{sid}")
def end_session(request: Request, sid: str) -> dict[str, Any]:
    """End the session: the final list (readable with GET for SMARTATTENDANCE_SESSION_KEEP_S)."""
    return sessions_of(request).end(sid, request.headers.get("authorization"))


app = create_app()
