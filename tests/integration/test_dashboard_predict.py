"""The upload check against the real model server (`python -m serving`) over gRPC, and its error answers."""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import psutil
import pytest
import skimage.data
from flask import Flask
from flask.testing import FlaskClient

from dashboard.app import close_app, create_app
from dashboard.context import dashboard
from dashboard.predict import predict_slots
from maskwatch.procs import free_port
from maskwatch.store import Store
from tests.integration.dashboard_fixtures import (  # noqa: F401  (fixture_* are fixtures)
    FACE_SCORE_TH,
    DashboardProcess,
    dashboard_settings,
    fixture_dashboard_store,
    fixture_production_serve,
)
from tests.integration.serving_fixtures import tensorflow_runtime_loaded


def astronaut(ext: str = ".jpg") -> bytes:
    bgr = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(ext, bgr)
    assert ok
    return buf.tobytes()


@pytest.fixture
def app_for(redis_url: str, dashboard_store: Store) -> Iterator[object]:
    apps: list[Flask] = []

    def make(serving: str) -> FlaskClient:
        app, _ = create_app(
            dashboard_settings(dashboard_store, redis_url, serving=serving, predict_timeout_s=60),
            dashboard_store,
            start_live=False,
        )
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        close_app(app)


@pytest.mark.timeout(300)
def test_predict_finds_the_face_and_draws_it(app_for, serving: str) -> None:  # type: ignore[no-untyped-def]
    http = app_for(serving)
    r = http.post("/api/predict?min_score=0.3", data={"image": (io.BytesIO(astronaut()), "a.jpg")})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["model"] == "mask_detector" and (body["width"], body["height"]) == (512, 512)
    assert body["detections"], "the astronaut's face is found"
    d = body["detections"][0]
    assert d["label"] in ("with_mask", "without_mask", "mask_worn_incorrectly") and d["score"] >= 0.3
    ymin, xmin, ymax, xmax = d["box"]
    assert 0 <= ymin < ymax <= 1 and 0 <= xmin < xmax <= 1
    assert body["counts"]["faces"] == len(body["detections"])
    annotated = cv2.imdecode(np.frombuffer(base64.b64decode(body["annotated_jpeg_base64"]), np.uint8), cv2.IMREAD_COLOR)
    assert annotated.shape == (512, 512, 3)

    png = http.post("/api/predict?format=jpeg", data={"image": (io.BytesIO(astronaut(".png")), "a.png")})
    assert png.status_code == 200 and png.mimetype == "image/jpeg" and png.data[:3] == b"\xff\xd8\xff"
    raw = http.post("/api/predict?min_score=1", data=astronaut(), content_type="image/jpeg")
    assert raw.status_code == 200 and raw.get_json()["detections"] == []


@pytest.mark.timeout(300)
def test_a_large_upload_is_decoded_downscaled(app_for, serving: str) -> None:  # type: ignore[no-untyped-def]
    bgr = cv2.resize(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR), (2048, 2048))
    big = cv2.imencode(".jpg", bgr)[1].tobytes()
    r = app_for(serving).post("/api/predict?min_score=0.3", data={"image": (io.BytesIO(big), "big.jpg")})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["width"], body["height"]) == (2048, 2048) and body["detections"], "the face is still found"
    annotated = cv2.imdecode(np.frombuffer(base64.b64decode(body["annotated_jpeg_base64"]), np.uint8), cv2.IMREAD_COLOR)
    assert annotated.shape == (512, 512, 3), "decoded at 1/4 scale by libjpeg, not at full size"


@pytest.mark.timeout(300)
def test_checks_at_once_are_bounded(app_for, serving: str) -> None:  # type: ignore[no-untyped-def]
    http = app_for(serving)
    app = http.application
    slots = predict_slots(app)
    n = dashboard(app).settings.max_concurrent_predicts
    for _ in range(n):  # every slot busy, as with n checks in progress
        assert slots.acquire(blocking=False)
    busy = http.post("/api/predict", data=astronaut(), content_type="image/jpeg")
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
    assert busy.get_json()["error"] == "too many checks at once"
    for _ in range(n):
        slots.release()

    def check(_: int) -> tuple[int, str | None]:
        r = app.test_client().post("/api/predict", data=astronaut(), content_type="image/jpeg")
        return r.status_code, r.headers.get("Retry-After")

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(check, range(12)))
    assert {status for status, _ in answers} <= {200, 429}, answers
    assert all(retry == "1" for status, retry in answers if status == 429)
    assert any(status == 200 for status, _ in answers)
    assert http.post("/api/predict", data=astronaut(), content_type="image/jpeg").status_code == 200, "slots freed"


@pytest.mark.timeout(120)
def test_predict_errors(app_for) -> None:  # type: ignore[no-untyped-def]
    http = app_for(f"127.0.0.1:{free_port()}")  # nothing listens there
    down = http.post("/api/predict", data={"image": (io.BytesIO(astronaut()), "a.jpg")})
    assert down.status_code == 503 and down.get_json()["error"] == "model server unavailable"
    assert down.get_json()["grpc_code"] == "UNAVAILABLE"
    assert http.post("/api/predict").get_json()["error"] == "no image"
    junk = http.post("/api/predict", data={"image": (io.BytesIO(b"not an image"), "x.jpg")})
    assert junk.status_code == 415 and junk.get_json()["error"] == "unsupported image type"
    cut = http.post("/api/predict", data={"image": (io.BytesIO(astronaut()[:400]), "x.jpg")})  # header, no pixels
    assert cut.status_code == 400 and cut.get_json()["error"] == "not an image"
    assert http.post("/api/predict?min_score=2", data=astronaut(), content_type="image/jpeg").status_code == 400
    assert http.get("/api/predict").status_code == 405
    page = http.get("/check")
    assert page.status_code == 200
    # the score column says what the score is (one template piece for this page and the camera page's violations)
    assert FACE_SCORE_TH in page.get_data(as_text=True)


@pytest.mark.timeout(300)
def test_the_dashboard_process_checks_without_loading_tensorflow(
    dashboard_serve: Callable[..., DashboardProcess], serving: str
) -> None:
    d = dashboard_serve(serving=serving, predict_timeout_s=60)
    req = urllib.request.Request(
        f"{d.url}/api/predict?min_score=0.3", data=astronaut(), headers={"Content-Type": "image/jpeg"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        body = json.load(r)
    assert body["detections"], "the astronaut's face is found"
    server = psutil.Process(d.child.pid)
    processes = [server, *server.children(recursive=True)]  # gunicorn's arbiter and the worker that answered
    assert len(processes) >= 2
    loaded = tensorflow_runtime_loaded(*(p.pid for p in processes))
    assert not loaded, f"the dashboard loaded TensorFlow's runtime ({loaded}) to check an image"
