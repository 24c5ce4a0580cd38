"""The attendance backend's face recognition as a FastAPI app (docs/LOADER_API.md shows this file).

Run it from the project folder, with the folder ``retrain_model.py`` publishes into::

    pip install fastapi uvicorn python-multipart
    SMARTATTENDANCE_OUTPUT_ROOT=/path/to/project uvicorn examples.fastapi_app:app

``POST /recognize`` with the image as the form field ``photo`` answers who is in it; ``GET /model``
names the model in service. A new model that ``retrain_model.py`` publishes is picked up within
``SMARTATTENDANCE_RELOAD_S`` seconds (default 60) without a restart. A bad upload (empty, not an
image, a "decompression bomb") is answered 400 and the connection stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from backend.recognizer import FaceRecognizer, ImageError, RetrainError, decode_upload

log = logging.getLogger("attendance")
#: How often a newly published model is looked for (one stat() when nothing changed).
RELOAD_EVERY_S = float(os.environ.get("SMARTATTENDANCE_RELOAD_S", "60"))
#: Larger uploads are refused unread (a phone photo is 2-8 MB).
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


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


@app.post("/recognize")
def recognize(request: Request, photo: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI's idiom
    """Plain ``def``: FastAPI runs it in a worker thread, so recognition does not block the event loop."""
    recognizer: FaceRecognizer = request.app.state.recognizer
    data = photo.file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"the upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    try:
        faces = recognizer.identify(decode_upload(data))  # ImageError: empty, not an image, too many pixels
    except ImageError as err:
        raise HTTPException(400, str(err)) from err
    except RetrainError as err:  # the face models could not start (weights)
        raise HTTPException(503, str(err)) from err
    return {
        "model": recognizer.model_version,
        "faces": [
            {
                "student_id": f.student_id,
                "name": f.student_name,
                "present": f.accepted,
                "confidence": round(f.confidence, 3),
                "box": [round(v) for v in f.box or ()],
            }
            for f in faces
        ],
    }
