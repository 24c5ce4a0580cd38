"""The attendance backend's face recognition as a Flask app (docs/LOADER_API.md shows this file).

Run it from the project folder, with the folder ``retrain_model.py`` publishes into::

    pip install flask
    SMARTATTENDANCE_OUTPUT_ROOT=/path/to/project flask --app examples.flask_app run

``POST /recognize`` with the image as the form field ``photo`` answers who is in it. A new model
that ``retrain_model.py`` publishes is picked up within ``SMARTATTENDANCE_RELOAD_S`` seconds
(default 60). A bad upload (empty, not an image, a "decompression bomb") is answered 400.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import numpy as np
from flask import Flask, jsonify, request

from backend.recognizer import FaceRecognizer, ImageError, RetrainError, decode_upload

log = logging.getLogger("attendance")
RELOAD_EVERY_S = float(os.environ.get("SMARTATTENDANCE_RELOAD_S", "60"))

app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = 20 * 1024 * 1024  # larger uploads: 413, unread

# Load once, at startup (the model from $SMARTATTENDANCE_OUTPUT_ROOT). A bad model stops the server here.
recognizer = FaceRecognizer.load(require_manifest=True)
recognizer.identify(np.zeros((160, 160, 3), np.uint8))  # start the face models now (weights errors show here)


def reload_every(seconds: float) -> None:
    """Switch to a newly published model; a broken one is refused and the current one keeps serving."""
    while True:
        time.sleep(seconds)
        try:
            if recognizer.reload_if_changed():
                log.info("now using model %s", recognizer.model_version)
        except Exception:  # never let the timer die
            log.exception("model reload check failed")


threading.Thread(target=reload_every, args=(RELOAD_EVERY_S,), daemon=True).start()


@app.post("/recognize")
def recognize() -> Any:
    upload = request.files.get("photo")
    if upload is None:
        return jsonify(error="send the image as the form field 'photo' (multipart/form-data)"), 400
    try:
        faces = recognizer.identify(
            decode_upload(upload.read(), bgr=False), bgr=False
        )  # ImageError: empty, not an image, too large
    except ImageError as err:
        return jsonify(error=str(err)), 400
    except RetrainError as err:  # the face models could not start (weights)
        return jsonify(error=str(err)), 503
    return jsonify(
        model=recognizer.model_version,
        faces=[
            {
                "student_id": f.student_id,
                "name": f.student_name,
                "present": f.accepted,
                "confidence": round(f.confidence, 3),
                "box": [round(v) for v in f.box or ()],
            }
            for f in faces
        ],
    )
