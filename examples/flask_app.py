"""The attendance backend's face recognition as a Flask app (docs/LOADER_API.md shows this file).

Run it from the project folder, with the folder ``retrain_model.py`` publishes into::

    pip install flask
    SMARTATTENDANCE_OUTPUT_ROOT=/path/to/project flask --app examples.flask_app run

``POST /recognize`` with the image as the form field ``photo`` answers who is in it. Class sessions
work as in the FastAPI app (the same examples/session_store.py: SQLite, a token per session, one model
per session): ``POST /sessions``, then with ``Authorization: Bearer <token>`` ``POST
/sessions/<id>/frames``, ``GET /sessions/<id>``, ``DELETE /sessions/<id>``. A new model that
``retrain_model.py`` publishes is picked up within ``SMARTATTENDANCE_RELOAD_S`` seconds (default 60).
A bad upload (empty, not an image, a "decompression bomb") is answered 400.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, jsonify, request

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
RELOAD_EVERY_S = float(os.environ.get("SMARTATTENDANCE_RELOAD_S", "60"))
MAX_SESSIONS = int(os.environ.get("SMARTATTENDANCE_MAX_SESSIONS", "200"))
SESSION_IDLE_S = float(os.environ.get("SMARTATTENDANCE_SESSION_IDLE_S", str(4 * 3600)))
SESSION_KEEP_S = float(os.environ.get("SMARTATTENDANCE_SESSION_KEEP_S", str(7 * 24 * 3600)))
RECOGNITION_THREADS = int(os.environ.get("SMARTATTENDANCE_RECOGNITION_THREADS", "2"))
NO_PHOTO = "send the image as the form field 'photo' (multipart/form-data)"


def create_app(output_root: str | Path | None = None, db_path: str | Path | None = None) -> Flask:
    """Load the model (a bad one stops the server here), open the sessions' SQLite file, start the timer."""
    recognizer = FaceRecognizer.load(output_root, require_manifest=True)
    recognizer.identify(np.zeros((160, 160, 3), np.uint8))  # start the face models now (weights errors show here)
    store = SessionStore(
        db_path or default_db_path(output_root), max_open=MAX_SESSIONS, idle_s=SESSION_IDLE_S, keep_s=SESSION_KEEP_S
    )
    sessions = ClassSessions(recognizer, store, recognition_threads=RECOGNITION_THREADS)
    threading.Thread(target=maintain, args=(sessions, RELOAD_EVERY_S), daemon=True).start()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 20 * 1024 * 1024  # larger uploads: 413, unread

    @app.errorhandler(HttpError)
    def http_error(err: HttpError) -> Any:
        return jsonify(error=err.message), err.status, err.headers

    def photo() -> bytes:
        upload = request.files.get("photo")
        if upload is None:
            raise HttpError(400, NO_PHOTO)
        return upload.read()

    @app.post("/recognize")
    def recognize() -> Any:
        return jsonify(sessions.recognize(photo()))  # ImageError: 400, face models failed: 503

    @app.post("/sessions")
    def start_session() -> Any:
        if (request.content_length or 0) > MAX_START_BODY:
            raise roster_too_large()  # refused from the header, before the body is read
        return jsonify(sessions.start(request.stream.read(MAX_START_BODY + 1))), 201

    @app.post("/sessions/<sid>/frames")
    def add_frame(sid: str) -> Any:
        return jsonify(sessions.add_frame(sid, request.headers.get("Authorization"), photo()))

    @app.get("/sessions/<sid>")
    def session_report(sid: str) -> Any:
        return jsonify(sessions.read(sid, request.headers.get("Authorization")))

    @app.delete("/sessions/<sid>")
    def end_session(sid: str) -> Any:
        return jsonify(sessions.end(sid, request.headers.get("Authorization")))

    return app


def maintain(sessions: ClassSessions, seconds: float) -> None:
    """Switch to a newly published model (a broken one is refused, the current one keeps serving);
    end idle sessions and delete old final lists."""
    while True:
        time.sleep(seconds)
        try:
            if sessions.recognizer.reload_if_changed():
                log.info("now using model %s", sessions.recognizer.model_version)
            sessions.tidy()
        except Exception:  # never let the timer die
            log.exception("model reload or session tidy failed")


app = create_app()
