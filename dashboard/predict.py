"""Upload check: POST /api/predict sends one image to the model server (Contract 2) and returns the faces, drawn.

The check asks through the model API's client (`maskwatch.model_api`), which imports TF Serving's protos on the
first check, never at dashboard start; `python -m dashboard` loads them without TensorFlow's runtime
(`maskwatch.tfprotos`), so the dashboard process never loads TensorFlow.
"""

from __future__ import annotations

import base64
import logging
import threading
from typing import Any

import cv2
import grpc
import numpy as np
from flask import Blueprint, Flask, Response, current_app, jsonify, request

from dashboard.context import dashboard
from maskwatch.annotate import draw
from maskwatch.detections import Detections
from maskwatch.frames import JPEG_TYPE, PNG_TYPE, ImageSize, image_size, reduced_decode_factor
from maskwatch.model_api import ModelClient

logger = logging.getLogger(__name__)

CLIENT_EXTENSION = "maskwatch_model"
SLOTS_EXTENSION = "maskwatch_predict_slots"
ACCEPTED_TYPES = (JPEG_TYPE, PNG_TYPE)
# A large JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) down to this shorter side: what the
# cameras' frames have (640x480 by default), so the model sees an upload as it sees a frame.
MODEL_MIN_SIDE = 480
RETRY_AFTER_S = 1

bp = Blueprint("predict", __name__)


def model_client(app: Flask) -> ModelClient:
    """The app's client of the model server (its channel opens on the first check)."""
    client: ModelClient | None = app.extensions.get(CLIENT_EXTENSION)
    if client is None:
        s = dashboard(app).settings
        client = app.extensions.setdefault(CLIENT_EXTENSION, ModelClient(s.serving, timeout_s=s.predict_timeout_s))
    return client


def detect(client: ModelClient, jpeg: bytes) -> Detections:
    """Faces in one JPEG; the first check reads the model's metadata (a TFOD export gets pixels).

    Raises grpc.RpcError, or ValueError (ModelOutputError among them) when the model breaks Contract 2."""
    if client.info is None:
        client.load_metadata()
    return client.detect([jpeg])[0]


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def predict_slots(app: Flask) -> threading.BoundedSemaphore:
    """The app's checks in progress: at most `max_concurrent_predicts` at once."""
    slots: threading.BoundedSemaphore | None = app.extensions.get(SLOTS_EXTENSION)
    if slots is None:
        n = dashboard(app).settings.max_concurrent_predicts
        slots = app.extensions.setdefault(SLOTS_EXTENSION, threading.BoundedSemaphore(n))
    return slots


def _error(http_status: int, error: str, **detail: Any) -> tuple[Response, int]:
    return jsonify(error=error, **detail), http_status


@bp.post("/api/predict")
def predict() -> Any:
    """multipart `image` (JPEG or PNG) → faces above `min_score`, counts, compliance, annotated JPEG."""
    upload = request.files.get("image")
    raw = upload.read() if upload is not None else request.get_data()
    if not raw:
        return _error(400, "no image", detail="send multipart field 'image' or a JPEG body")
    if len(raw) > dashboard().settings.max_upload_bytes:
        return _error(413, "image too large", limit=dashboard().settings.max_upload_bytes)
    size = image_size(raw)
    if size is None:
        return _error(415, "unsupported image type", detail="send a JPEG or PNG image", allowed=list(ACCEPTED_TYPES))
    max_pixels = dashboard().settings.max_upload_pixels
    if size.pixels > max_pixels:
        return _error(413, "image too large", detail=f"{size.width}x{size.height} pixels", limit_pixels=max_pixels)
    try:
        min_score = float(request.args.get("min_score", dashboard().settings.min_score))
    except ValueError:
        return _error(400, "bad min_score", min_score=request.args.get("min_score"))
    if not 0.0 <= min_score <= 1.0:
        return _error(400, "bad min_score", min_score=min_score, allowed="0..1")
    slots = predict_slots(current_app)
    if not slots.acquire(blocking=False):
        resp, status = _error(429, "too many checks at once", detail="try again in a moment")
        resp.headers["Retry-After"] = str(RETRY_AFTER_S)
        return resp, status
    try:
        return _check(raw, size, reduced_decode_factor(size, MODEL_MIN_SIDE), min_score)
    finally:
        slots.release()


def _check(raw: bytes, size: ImageSize, factor: int, min_score: float) -> Any:
    """Decode (downscaled by `factor`), ask the model, draw; the answer's width and height are the upload's."""
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), _REDUCED[factor])
    if image is None:
        return _error(400, "not an image", detail="could not decode the upload as JPEG or PNG")
    if size.media_type == JPEG_TYPE and factor == 1:
        jpeg = raw
    else:
        jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()

    client = model_client(current_app)
    try:
        dets = detect(client, jpeg).above(min_score)
    except grpc.RpcError as exc:
        code, detail = exc.code().name, exc.details() or ""
        logger.warning("model server unavailable address=%s code=%s detail=%s", client.target, code, detail)
        status = 504 if code == "DEADLINE_EXCEEDED" else 503
        return _error(status, "model server unavailable", address=client.target, grpc_code=code, detail=detail)
    except ValueError as exc:
        logger.warning("model answer breaks Contract 2 error=%s", exc)
        return _error(502, "model output malformed", detail=str(exc))

    annotated = cv2.imencode(".jpg", draw(image, dets), [cv2.IMWRITE_JPEG_QUALITY, 88])[1].tobytes()
    if request.args.get("format") == "jpeg":
        return Response(annotated, mimetype="image/jpeg")
    counts = dets.counts()
    w, h = size.width, size.height
    return jsonify(
        {
            "model": client.model_name,
            "width": w,
            "height": h,
            "min_score": min_score,
            "detections": [
                {"label": d.label, "score": round(d.score, 4), "box": [round(v, 4) for v in d.box]} for d in dets.items
            ],
            "counts": counts.as_dict(),
            "compliance": None if counts.compliance is None else round(counts.compliance, 4),
            "annotated_jpeg_base64": base64.b64encode(annotated).decode("ascii"),
        }
    )
