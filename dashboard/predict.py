"""Upload check: POST /api/predict sends one image to the model server (Contract 2) and returns the faces, drawn.

The TensorFlow Serving protos are imported on the first check, never at dashboard start; `python -m dashboard`
loads them without TensorFlow's runtime (`maskwatch.tfprotos`), and the tensors are coded in numpy by the
clients' codec (`maskwatch.tfcodec`), so the dashboard process never loads TensorFlow.
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
from maskwatch.detections import (
    INCORRECT,
    REQUIRED_OUTPUTS,
    WITH_MASK,
    WITHOUT_MASK,
    Detections,
    ModelOutputError,
    parse_outputs,
)
from maskwatch.frames import JPEG_TYPE, PNG_TYPE, ImageSize, image_size, reduced_decode_factor
from serving.signature import INPUT_IMAGES, MODEL_NAME, SIGNATURE_NAME

logger = logging.getLogger(__name__)

CLIENT_EXTENSION = "maskwatch_model"
SLOTS_EXTENSION = "maskwatch_predict_slots"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
ACCEPTED_TYPES = (JPEG_TYPE, PNG_TYPE)
# A large JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) down to this shorter side: what the
# cameras' frames have (640x480 by default), so the model sees an upload as it sees a frame.
MODEL_MIN_SIDE = 480
RETRY_AFTER_S = 1
# BGR colours of the boxes drawn per class.
COLOURS = {WITH_MASK: (80, 175, 76), WITHOUT_MASK: (54, 67, 244), INCORRECT: (0, 152, 255)}

bp = Blueprint("predict", __name__)


class ModelUnavailable(Exception):
    """The model server did not answer (down, unreachable, deadline passed)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class ModelClient:
    """A Predict client for one TF-Serving address; the channel opens on first use."""

    def __init__(self, address: str, timeout_s: float) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stub: Any = None

    def _ensure(self) -> Any:
        with self._lock:
            if self._stub is None:
                from tensorflow_serving.apis import prediction_service_pb2_grpc

                self._channel = grpc.insecure_channel(
                    self.address,
                    options=[
                        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                    ],
                )
                self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            return self._stub

    def predict(self, jpeg: bytes) -> Detections:
        """Faces in one JPEG. Raises ModelUnavailable, or ModelOutputError when the answer breaks Contract 2."""
        stub = self._ensure()
        from tensorflow_serving.apis import predict_pb2

        from maskwatch.tfcodec import string_tensor, to_numpy

        req = predict_pb2.PredictRequest()
        req.model_spec.name = MODEL_NAME
        req.model_spec.signature_name = SIGNATURE_NAME
        req.inputs[INPUT_IMAGES].CopyFrom(string_tensor([jpeg]))
        try:
            resp = stub.Predict(req, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise ModelUnavailable(exc.code().name, exc.details() or "") from exc
        try:
            outputs = {k: to_numpy(resp.outputs[k]) for k in REQUIRED_OUTPUTS if k in resp.outputs}
        except ValueError as exc:  # an output dtype Contract 2 does not have
            raise ModelOutputError(str(exc)) from exc
        return parse_outputs(outputs, 1)[0]

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel, self._stub = None, None


def model_client(app: Flask) -> ModelClient:
    client: ModelClient | None = app.extensions.get(CLIENT_EXTENSION)
    if client is None:
        s = dashboard(app).settings
        client = app.extensions.setdefault(CLIENT_EXTENSION, ModelClient(s.serving, s.predict_timeout_s))
    return client


def draw(image: np.ndarray, dets: Detections) -> np.ndarray:
    """A copy of `image` (BGR) with a labelled box per face."""
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(2, round(min(h, w) / 250))
    for d in dets.items:
        x0, y0, x1, y1 = d.pixel_box(w, h)
        colour = COLOURS[d.label]
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thick)
        text = f"{d.label.replace('_', ' ')} {d.score:.0%}"
        scale = max(0.45, min(h, w) / 900)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y0 - 4 if y0 - th - base - 4 >= 0 else y1 + th + base + 4
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw + 6, ty + base // 2), colour, -1)
        cv2.putText(
            out, text, (x0 + 3, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
        )
    return out


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
        dets = client.predict(jpeg).above(min_score)
    except ModelUnavailable as exc:
        logger.warning("model server unavailable address=%s code=%s detail=%s", client.address, exc.code, exc.detail)
        status = 504 if exc.code == "DEADLINE_EXCEEDED" else 503
        return _error(status, "model server unavailable", address=client.address, grpc_code=exc.code, detail=exc.detail)
    except ModelOutputError as exc:
        logger.warning("model answer breaks Contract 2 error=%s", exc)
        return _error(502, "model output malformed", detail=str(exc))

    annotated = cv2.imencode(".jpg", draw(image, dets), [cv2.IMWRITE_JPEG_QUALITY, 88])[1].tobytes()
    if request.args.get("format") == "jpeg":
        return Response(annotated, mimetype="image/jpeg")
    counts = dets.counts()
    w, h = size.width, size.height
    return jsonify(
        {
            "model": MODEL_NAME,
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
