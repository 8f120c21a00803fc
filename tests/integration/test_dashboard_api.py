"""Every REST endpoint against a real redis-server: good answers, and each bad parameter as a 4xx JSON error.

The OpenAPI document is checked against the routes the app really has, so neither drifts from the other.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dashboard.app import close_app, create_app
from maskwatch.detections import COUNT_FIELDS
from maskwatch.store import Store
from tests.integration.dashboard_fixtures import (  # noqa: F401  (fixture_* are fixtures)
    FACE_SCORE_TH,
    dashboard_settings,
    fixture_dashboard_store,
    seed,
)


@pytest.fixture
def app(redis_url: str, dashboard_store: Store) -> Iterator[Flask]:
    flask_app, _ = create_app(dashboard_settings(dashboard_store, redis_url), dashboard_store)
    seed(dashboard_store, "gate-1", with_mask=3, without_mask=1, violations=1, name="Gate 1")
    yield flask_app
    close_app(flask_app)


@pytest.fixture
def http(app: Flask) -> FlaskClient:
    return app.test_client()


def test_zero_counters_are_stored_and_camera_update_has_lag(http: FlaskClient, dashboard_store: Store) -> None:
    # readers of Redis need not guess: every counter is present in the totals and each bucket, zeros included
    r, k = dashboard_store.r, dashboard_store.keys
    now = int(time.time() * 1000)
    for key in (k.totals("gate-1"), k.minute("gate-1", now // 60_000), k.hour("gate-1", now // 3_600_000), k.day("gate-1", now // 86_400_000)):
        fields = {f.decode(): int(v) for f, v in r.hgetall(key).items()}
        assert set(fields) == set(COUNT_FIELDS), key
        assert fields["mask_worn_incorrectly"] == 0 and fields["with_mask"] >= 3
    cam = http.get("/api/cameras/gate-1").get_json()
    assert "lag" in cam and cam["lag"] is None  # no producer wrote a capture time here
    dashboard_store.set_camera_fields("gate-1", last_capture_ms=int(cam["last_frame_ms"]) + 1500)
    assert http.get("/api/cameras/gate-1").get_json()["lag"] == 1.5


def snapshot_path(http: FlaskClient) -> str:
    url: str = http.get("/api/cameras/gate-1/violations").get_json()[0]["snapshot_url"]
    return url


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("path", "status", "mimetype"),
    [
        ("/api/cameras", 200, "application/json"),
        ("/api/cameras?window=1m", 200, "application/json"),
        ("/api/cameras/gate-1", 200, "application/json"),
        ("/api/cameras/gate-1?window=24h", 200, "application/json"),
        ("/api/cameras/gate-1/series.csv", 200, "text/csv"),
        ("/api/cameras/gate-1/latest.jpg", 200, "image/jpeg"),
        ("/api/cameras/gate-1/violations?limit=500", 200, "application/json"),
        ("/api/violations?limit=1", 200, "application/json"),
        ("/api/alerts?limit=500", 200, "application/json"),
        ("/api/system", 200, "application/json"),
        ("/api/health", 200, "application/json"),
        ("/api/openapi.json", 200, "application/json"),
        ("/healthz", 200, "application/json"),
    ],
)
def test_every_endpoint_answers(http: FlaskClient, path: str, status: int, mimetype: str) -> None:
    r = http.get(path)
    assert (r.status_code, r.mimetype) == (status, mimetype), r.data[:300]


@pytest.mark.timeout(30)
def test_camera_page_heads_the_violations_score_column_with_what_it_is(http: FlaskClient) -> None:
    page = http.get("/cameras/gate-1")
    assert page.status_code == 200
    assert FACE_SCORE_TH in page.get_data(as_text=True)


@pytest.mark.timeout(30)
def test_snapshot_endpoint(http: FlaskClient) -> None:
    r = http.get(snapshot_path(http))
    assert r.status_code == 200 and r.mimetype == "image/jpeg"


BAD: list[tuple[str, str, int, str]] = [
    # (method, path, status, error)
    ("GET", "/api/cameras?window=2h", 400, "bad window"),
    ("GET", "/api/cameras?window=", 400, "bad window"),
    ("GET", "/api/cameras/gate-1?window=15", 400, "bad window"),
    ("GET", "/api/cameras/gate-1/series.csv?window=1y", 400, "bad window"),
    ("GET", "/api/cameras/gate-1/violations?limit=0", 400, "bad limit"),
    ("GET", "/api/cameras/gate-1/violations?limit=501", 400, "bad limit"),
    ("GET", "/api/cameras/gate-1/violations?limit=ten", 400, "bad limit"),
    ("GET", "/api/violations?limit=-1", 400, "bad limit"),
    ("GET", "/api/violations?limit=1e3", 400, "bad limit"),
    ("GET", "/api/alerts?limit=0", 400, "bad limit"),
    ("GET", "/api/alerts?limit=x", 400, "bad limit"),
    ("GET", "/api/alerts?camera=nope", 404, "unknown camera"),
    ("GET", "/api/alerts?camera=bad%20id", 404, "unknown camera"),
    ("GET", "/api/cameras/nope", 404, "unknown camera"),
    ("GET", "/api/cameras/nope?window=2h", 404, "unknown camera"),
    ("GET", "/api/cameras/-bad", 404, "unknown camera"),
    ("GET", "/api/cameras/nope/series.csv", 404, "unknown camera"),
    ("GET", "/api/cameras/nope/latest.jpg", 404, "unknown camera"),
    ("GET", "/api/cameras/nope/violations", 404, "unknown camera"),
    ("GET", "/api/cameras/nope/snapshots/1-2-3.jpg", 404, "unknown camera"),
    ("GET", "/api/cameras/gate-1/snapshots/1-2-3.jpg", 404, "no such snapshot"),
    ("GET", "/api/cameras/gate-1/snapshots/*.jpg", 404, "no such snapshot"),
    ("GET", "/api/cameras/gate-1/snapshots/1:2:3.jpg", 404, "no such snapshot"),
    ("GET", "/api/no-such-thing", 404, "not found"),
    ("POST", "/api/cameras", 405, "method not allowed"),
    ("PUT", "/api/cameras/gate-1", 405, "method not allowed"),
    ("GET", "/api/predict", 405, "method not allowed"),
    ("POST", "/api/predict", 400, "no image"),
    ("POST", "/api/predict?min_score=2", 400, "no image"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("method", "path", "status", "error"), BAD, ids=[f"{m} {p}" for m, p, _, _ in BAD])
def test_bad_requests_answer_4xx_json(http: FlaskClient, method: str, path: str, status: int, error: str) -> None:
    r = http.open(path, method=method)
    assert r.status_code == status, r.data[:300]
    assert r.mimetype == "application/json"
    assert r.get_json()["error"] == error


@pytest.mark.timeout(30)
def test_bad_parameter_errors_say_what_is_allowed(http: FlaskClient) -> None:
    assert http.get("/api/cameras?window=2h").get_json()["allowed"] == ["1m", "15m", "1h", "24h"]
    assert http.get("/api/violations?limit=0").get_json()["allowed"] == "1..500"
    assert http.get("/api/cameras/nope").get_json()["camera"] == "nope"


def _spec_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + {"cid": "camera", "ident": "snapshot"}[m[1]] + "}", rule)


@pytest.mark.timeout(30)
def test_openapi_describes_every_api_route(app: Flask, http: FlaskClient) -> None:
    spec: dict[str, Any] = http.get("/api/openapi.json").get_json()
    routes = {
        (_spec_path(r.rule), m.lower())
        for r in app.url_map.iter_rules()
        if r.rule.startswith("/api/") and r.rule != "/api/openapi.json"
        for m in (r.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes == documented
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert "200" in codes, (path, method)
            if any(p["in"] == "query" for p in op.get("parameters", [])):
                assert "400" in codes, f"{method} {path} takes parameters but documents no 400"
    assert "Alert" in spec["components"]["schemas"]
