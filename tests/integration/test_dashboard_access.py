"""Access scoped by zone on real Redis: every endpoint of the OpenAPI document and every live event, as a viewer of
zone A, reaches none of zone B's data; admins and the main token see everything."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_socketio import SocketIO

from dashboard.app import close_app, create_app
from dashboard.auth import COOKIE
from dashboard.context import dashboard
from maskwatch.payloads import EV_ALERT, EV_CAMERA, EV_SYSTEM, EV_VIOLATION, NAMESPACE
from maskwatch.store import Store
from tests.integration.dashboard_fixtures import (  # noqa: F401  (fixture_* are fixtures)
    dashboard_settings,
    fixture_dashboard_store,
    seed,
    wait_until,
)
from tests.integration.test_dashboard_live import Inbox

MAIN = "main-admin-token"
VIEWER_A = "viewer-of-ward-a"
VIEWER_CAM = "viewer-of-one-camera"
OPS = "ops-admin-token"
EVENTS = (EV_CAMERA, EV_VIOLATION, EV_SYSTEM, EV_ALERT)


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


SITE = f"""site: Hospital
access:
  - {{name: ward-a-lead, role: viewer, zones: [Ward A], sha256: {sha(VIEWER_A)}}}
  - {{name: gate-guard, role: viewer, cameras: [a-2], sha256: {sha(VIEWER_CAM)}}}
  - {{name: ops, role: admin, sha256: {sha(OPS)}}}
"""


@pytest.fixture
def dash(redis_url: str, dashboard_store: Store, tmp_path: Path) -> Iterator[tuple[Flask, SocketIO]]:
    site = tmp_path / "site.yaml"
    site.write_text(SITE)
    settings = dashboard_settings(dashboard_store, redis_url, token=MAIN, site_file=str(site))
    app, sio = create_app(settings, dashboard_store)
    channel = dashboard_store.keys.updates()
    wait_until(lambda: dashboard_store.r.pubsub_numsub(channel)[0][1] > 0, 30, what="the live emitter's subscription")
    for cid, zone in (("a-1", "Ward A"), ("a-2", "Ward A"), ("b-1", "Ward B")):
        seed(dashboard_store, cid, with_mask=2, without_mask=2, violations=1, zone=zone, name=cid.upper())
    dashboard_store.record_alert("camera:b-1", {"state": "start", "scope": "camera", "camera": "b-1", "zone": "Ward B"})
    dashboard_store.record_alert("site", {"state": "start", "scope": "site", "camera": None})
    yield app, sio
    close_app(app)


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def leaks(body: bytes | str) -> bool:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return "b-1" in text or "B-1" in text or "Ward B" in text


def requests_of(http: FlaskClient) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (method, path template, operation) of the OpenAPI document."""
    spec = http.get("/api/openapi.json", headers=as_(MAIN)).get_json()
    return [(m.upper(), path, op) for path, ops in spec["paths"].items() for m, op in ops.items()]


def fill(path: str, camera: str, snapshot: str) -> str:
    return path.replace("{camera}", camera).replace("{snapshot}", snapshot)


@pytest.mark.timeout(60)
def test_a_zone_viewer_reaches_no_other_zone_through_any_endpoint(dash: tuple[Flask, SocketIO]) -> None:
    app, _ = dash
    http = app.test_client()
    snap = {c: http.get(f"/api/cameras/{c}/violations", headers=as_(MAIN)).get_json()[0]["id"] for c in ("a-1", "b-1")}
    ops = requests_of(http)
    assert len(ops) >= 14
    checked = 0
    for method, path, op in ops:
        params = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        if method != "GET":
            r = http.open(fill(path, "a-1", snap["a-1"]), method=method, headers=as_(VIEWER_A))
            assert r.status_code == 403, (method, path)  # the only write: /check's model call, admins only
            continue
        if "{camera}" in path:
            theirs = http.get(fill(path, "b-1", snap["b-1"]), headers=as_(VIEWER_A))
            assert theirs.status_code in (403, 404), (path, theirs.status_code)
            assert not leaks(theirs.data.replace(b'"camera":"b-1"', b"")), path  # the 404 may repeat the asked id
            mine = http.get(fill(path, "a-1", snap["a-1"]), headers=as_(VIEWER_A))
            assert mine.status_code in (200, 404), (path, mine.status_code)  # 404: a latest frame may be gone
            admin = http.get(fill(path, "b-1", snap["b-1"]), headers=as_(OPS))
            assert admin.status_code == mine.status_code, path
        else:
            r = http.get(path, headers=as_(VIEWER_A))
            assert r.status_code in (200, 503), (path, r.status_code)
            assert not leaks(r.data), (path, r.data[:400])
            if "camera" in params:
                assert http.get(path + "?camera=b-1", headers=as_(VIEWER_A)).status_code in (403, 404), path
            if "zone" in params:
                assert http.get(path + "?zone=Ward B", headers=as_(VIEWER_A)).status_code in (403, 404), path
                assert http.get(path + "?zone=Ward A", headers=as_(VIEWER_A)).status_code == 200, path
        checked += 1
    assert checked >= 13
    # the lists hold exactly what the scope allows, and everything for admins and the main token
    assert {c["camera"] for c in http.get("/api/cameras", headers=as_(VIEWER_A)).get_json()} == {"a-1", "a-2"}
    assert {c["camera"] for c in http.get("/api/cameras", headers=as_(VIEWER_CAM)).get_json()} == {"a-2"}
    assert http.get("/api/history?zone=Ward A", headers=as_(VIEWER_CAM)).status_code == 404  # not the whole zone
    for token in (OPS, MAIN):
        assert {c["camera"] for c in http.get("/api/cameras", headers=as_(token)).get_json()} == {"a-1", "a-2", "b-1"}
    assert http.get("/api/cameras", headers=as_("not-a-token")).status_code == 401
    report = http.get("/api/report?format=csv", headers=as_(VIEWER_A)).get_data(as_text=True)
    assert "a-1" in report and not leaks(report)
    assert leaks(http.get("/api/report?format=csv", headers=as_(OPS)).data)


@pytest.mark.timeout(60)
def test_pages_and_sessions_keep_the_scope(dash: tuple[Flask, SocketIO]) -> None:
    app, _ = dash
    http = app.test_client()
    login = http.post("/login", data={"token": VIEWER_A, "next": "/"})
    assert login.status_code == 302 and COOKIE in (login.headers.get("Set-Cookie") or "")
    assert {c["camera"] for c in http.get("/api/cameras").get_json()} == {"a-1", "a-2"}
    assert http.get("/cameras/a-1").status_code == 200
    assert http.get("/cameras/b-1").status_code == 404
    assert http.get("/check").status_code == 403  # admin only
    for page in ("/", "/history", "/report"):
        r = http.get(page)
        assert r.status_code == 200 and not leaks(r.data), page
    assert "a-1" in http.get("/report").get_data(as_text=True)
    ops = app.test_client()
    ops.post("/login", data={"token": OPS, "next": "/"})
    assert ops.get("/check").status_code == 200 and ops.get("/cameras/b-1").status_code == 200


@pytest.mark.timeout(60)
def test_a_zone_viewer_gets_no_event_of_another_zone(dash: tuple[Flask, SocketIO], dashboard_store: Store) -> None:
    app, sio = dash
    viewer = Inbox(sio.test_client(app, namespace=NAMESPACE, auth={"token": VIEWER_A}))
    admin = Inbox(sio.test_client(app, namespace=NAMESPACE, auth={"token": OPS}))
    assert viewer.client.is_connected(NAMESPACE) and admin.client.is_connected(NAMESPACE)
    assert not sio.test_client(app, namespace=NAMESPACE, auth={"token": "wrong-token"}).is_connected(NAMESPACE)
    live = dashboard(app).live
    t0 = int(time.time() * 1000)
    for cid in ("a-1", "b-1"):
        seed(dashboard_store, cid, without_mask=1, violations=1, ts_ms=t0)
        live._emit_alert({"state": "start", "scope": "camera", "camera": cid, "ts_ms": t0})
    live._emit_alert({"state": "start", "scope": "site", "camera": None, "ts_ms": t0})
    # every event kind reaches the admin for both zones (so the viewer's silence below means something)
    for name in (EV_CAMERA, EV_VIOLATION, EV_ALERT):
        for cid in ("a-1", "b-1"):
            admin.wait_for(name, lambda p, c=cid: p.get("camera") == c)
    admin.wait_for(EV_SYSTEM, lambda p: "b-1" in p["cameras"]["ids"])
    viewer.wait_for(EV_CAMERA, lambda p: p["camera"] == "a-1")
    viewer.wait_for(EV_VIOLATION, lambda p: p["camera"] == "a-1")
    viewer.wait_for(EV_ALERT, lambda p: p.get("camera") == "a-1")
    viewer.wait_for(EV_SYSTEM, lambda p: p["cameras"]["ids"] == ["a-1", "a-2"])
    # one more system tick, so anything queued for the viewer has arrived
    n = len(viewer.of(EV_SYSTEM))
    wait_until(lambda: len(viewer.of(EV_SYSTEM)) > n, 10, what="another system event")
    got = viewer.poll()
    assert {e["name"] for e in got} == set(EVENTS)
    for e in got:
        assert not leaks(json.dumps(e)), e
    assert not [e for e in got if e["name"] == EV_ALERT and e["args"][0].get("scope") == "site"]


def test_token_new_prints_a_token_and_the_line_for_it(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "maskwatch.cli", "token", "new", "ward-a-lead", "--zone", "Ward A"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    token = re.search(r"^token: (\S+)$", out.stdout, re.M)
    line = next(x for x in out.stdout.splitlines() if x.startswith("  - {"))
    assert token is not None and token[1] not in line and sha(token[1]) in line
    from maskwatch.site import parse_site

    site = parse_site("site: s\naccess:\n" + line + "\n")
    (entry,) = site.access
    assert (entry.name, entry.role, entry.zones, entry.sha256) == ("ward-a-lead", "viewer", ["Ward A"], sha(token[1]))


@pytest.mark.timeout(30)
def test_access_tokens_alone_guard_the_dashboard(redis_url: str, dashboard_store: Store, tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(SITE)
    app, sio = create_app(dashboard_settings(dashboard_store, redis_url, site_file=str(site)), dashboard_store, start_live=False)
    try:
        seed(dashboard_store, "a-1", with_mask=1, zone="Ward A")
        seed(dashboard_store, "b-1", with_mask=1, zone="Ward B")
        http = app.test_client()
        assert http.get("/api/cameras").status_code == 401  # no MW_DASHBOARD_TOKEN, yet not open
        assert http.get("/").status_code == 302
        assert [c["camera"] for c in http.get("/api/cameras", headers=as_(VIEWER_A)).get_json()] == ["a-1"]
        assert len(http.get("/api/cameras", headers=as_(OPS)).get_json()) == 2
        assert not sio.test_client(app, namespace=NAMESPACE).is_connected(NAMESPACE)
    finally:
        close_app(app)
