"""The dashboard against a real redis-server: Socket.IO events through `socketio.test_client`, and the REST API."""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import socketio
from flask import Flask
from flask_socketio import SocketIO, SocketIOTestClient

from dashboard.app import close_app, create_app
from dashboard.auth import COOKIE
from dashboard.server import Server
from maskwatch.payloads import EV_CAMERA, EV_SYSTEM, EV_VIOLATION, NAMESPACE
from maskwatch.store import Store
from tests.integration.dashboard_fixtures import (  # noqa: F401  (fixture_* are fixtures)
    dashboard_settings,
    fixture_dashboard_store,
    seed,
    wait_until,
)

TOKEN = "s3cret-token"


class Inbox:
    """Everything a test client received on /live, kept across polls."""

    def __init__(self, client: SocketIOTestClient) -> None:
        self.client = client
        self.events: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        self.events.extend(self.client.get_received(NAMESPACE))
        return self.events

    def of(self, name: str, camera: str | None = None) -> list[dict[str, Any]]:
        self.poll()
        out = [e["args"][0] for e in self.events if e["name"] == name]
        return [p for p in out if camera is None or p.get("camera") == camera]

    def wait_for(self, name: str, pred: Any = lambda p: True, timeout_s: float = 10.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((p for p in reversed(self.of(name)) if pred(p)), None)

        result: dict[str, Any] = wait_until(found, timeout_s, what=f"{name} event")
        return result

    def clear(self) -> None:
        self.poll()
        self.events.clear()


@pytest.fixture
def dash(redis_url: str, dashboard_store: Store) -> Iterator[tuple[Flask, SocketIO]]:
    app, sio = create_app(dashboard_settings(dashboard_store, redis_url), dashboard_store)
    # updates published before the emitter has subscribed are gone (pub/sub): wait for its subscription
    channel = dashboard_store.keys.updates()
    wait_until(lambda: dashboard_store.r.pubsub_numsub(channel)[0][1] > 0, 30, what="the live emitter's subscription")
    yield app, sio
    close_app(app)


def connect(app: Flask, sio: SocketIO, **kw: Any) -> tuple[SocketIOTestClient, Inbox]:
    client = sio.test_client(app, namespace=NAMESPACE, **kw)
    return client, Inbox(client)


@pytest.mark.timeout(30)
def test_connect_sends_every_camera_then_updates_follow_batches(
    dash: tuple[Flask, SocketIO], dashboard_store: Store
) -> None:
    app, sio = dash
    seed(dashboard_store, "gate-1", with_mask=3, without_mask=1, name="Gate 1", zone="entrance", status="online", fps=5)
    seed(dashboard_store, "hall-2", with_mask=1, incorrect=1, name="Hall 2", zone="hall")

    client, inbox = connect(app, sio)
    assert client.is_connected(NAMESPACE)
    first = inbox.wait_for(EV_CAMERA, lambda p: p["camera"] == "gate-1")
    assert first["name"] == "Gate 1" and first["zone"] == "entrance" and first["status"] == "online"
    assert first["window"]["with_mask"] == 3 and first["window"]["without_mask"] == 1
    assert first["compliance"] == 0.75
    assert first["fps"] == 5.0 and first["data_age_s"] is not None
    assert {p["camera"] for p in inbox.of(EV_CAMERA)} >= {"gate-1", "hall-2"}
    system = inbox.wait_for(EV_SYSTEM)
    assert system["cameras"]["total"] == 2
    assert system["window"]["with_mask"] == 4 and system["face_verdicts"] == 6
    assert system["people"] == 6  # seed() counts every face as a different person

    inbox.clear()
    seed(dashboard_store, "gate-1", with_mask=0, without_mask=4)
    update = inbox.wait_for(EV_CAMERA, lambda p: p["camera"] == "gate-1")
    w = update["window"]
    assert (w["frames"], w["with_mask"], w["without_mask"], w["mask_worn_incorrectly"]) == (2, 3, 5, 0)
    assert update["compliance"] == 0.375
    assert update["totals"]["without_mask"] == 5
    client.disconnect(NAMESPACE)


@pytest.mark.timeout(30)
def test_camera_updates_are_throttled_but_the_last_state_arrives(
    dash: tuple[Flask, SocketIO], dashboard_store: Store
) -> None:
    app, sio = dash
    seed(dashboard_store, "busy", with_mask=1)
    client, inbox = connect(app, sio)
    inbox.wait_for(EV_CAMERA, lambda p: p["camera"] == "busy")
    inbox.clear()

    started = time.monotonic()
    for _ in range(30):
        seed(dashboard_store, "busy", with_mask=1)
    inbox.wait_for(EV_CAMERA, lambda p: p["camera"] == "busy" and p["window"]["with_mask"] == 31)
    elapsed = time.monotonic() - started
    sent = len(inbox.of(EV_CAMERA, "busy"))
    assert sent <= 4 * elapsed + 2, f"{sent} camera_update events in {elapsed:.2f}s"
    client.disconnect(NAMESPACE)


@pytest.mark.timeout(30)
def test_violations_are_pushed_and_listed(dash: tuple[Flask, SocketIO], dashboard_store: Store) -> None:
    app, sio = dash
    seed(dashboard_store, "dock", with_mask=1)
    client, inbox = connect(app, sio)
    inbox.wait_for(EV_CAMERA)
    seed(dashboard_store, "dock", without_mask=2, violations=2)
    v = inbox.wait_for(EV_VIOLATION)
    assert v["camera"] == "dock" and v["class"] == "without_mask" and v["state"] == "closed"
    assert len(v["box"]) == 4 and v["snapshot_url"] == f"/api/cameras/dock/snapshots/{v['id']}.jpg"

    http = app.test_client()
    rows = http.get("/api/cameras/dock/violations").get_json()
    assert len(rows) == 2 and rows[0]["class"] == "without_mask"
    assert {r["id"] for r in rows} >= {v["id"]} and "snapshot" not in rows[0]
    snap = http.get(v["snapshot_url"])
    assert snap.status_code == 200 and snap.mimetype == "image/jpeg" and snap.data[:3] == b"\xff\xd8\xff"
    assert http.get("/api/cameras/dock/violations?limit=0").status_code == 400
    assert http.get("/api/cameras/dock/snapshots/nope.jpg").status_code == 404
    client.disconnect(NAMESPACE)


@pytest.mark.timeout(30)
def test_system_event_reports_workers(dash: tuple[Flask, SocketIO], dashboard_store: Store) -> None:
    app, sio = dash
    dashboard_store.heartbeat("worker", "w-1", {"fps": 12.5, "lag": 7, "partitions": [0, 1]})
    client, inbox = connect(app, sio)
    system = inbox.wait_for(EV_SYSTEM, lambda p: p["workers"])
    (w,) = system["workers"]
    assert w["id"] == "w-1" and w["fps"] == 12.5 and w["lag"] == 7 and w["partitions"] == [0, 1]
    assert system["lag"] == 7 and system["cameras"]["total"] == 0
    client.disconnect(NAMESPACE)


@pytest.mark.timeout(30)
def test_rest_api(dash: tuple[Flask, SocketIO], dashboard_store: Store) -> None:
    app, _ = dash
    http = app.test_client()
    assert http.get("/api/cameras").get_json() == []

    seed(dashboard_store, "gate-1", with_mask=9, without_mask=1, name="Gate 1", zone="entrance")
    seed(dashboard_store, "quiet", with_mask=0, jpeg=None)

    cams = http.get("/api/cameras").get_json()
    assert [c["camera"] for c in cams] == ["gate-1", "quiet"]
    assert cams[0]["compliance"] == 0.9 and cams[1]["compliance"] is None

    one = http.get("/api/cameras/gate-1?window=1h").get_json()
    assert one["window_minutes"] == 60 and one["window_label"] == "1h"
    assert one["totals"]["with_mask"] == 9
    assert len(one["series"]) == 60
    assert one["series"][-1]["with_mask"] == 9 and one["series"][-1]["compliance"] == 0.9
    assert one["series"][0]["compliance"] is None
    assert len(http.get("/api/cameras/gate-1?window=1m").get_json()["series"]) == 1
    assert len(http.get("/api/cameras/gate-1?window=24h").get_json()["series"]) == 1440

    bad = http.get("/api/cameras/gate-1?window=2h")
    assert bad.status_code == 400 and bad.get_json()["error"] == "bad window"
    assert "15m" in bad.get_json()["allowed"]
    assert http.get("/api/cameras?window=7d").status_code == 400
    for path in (
        "/api/cameras/nope",
        "/api/cameras/nope/violations",
        "/api/cameras/nope/latest.jpg",
        "/api/cameras/bad%20id",
        "/api/cameras/nope/series.csv",
    ):
        r = http.get(path)
        assert r.status_code == 404 and r.get_json()["error"] == "unknown camera", path
    assert http.get("/api/nothing-here").get_json()["error"] == "not found"

    jpeg = http.get("/api/cameras/gate-1/latest.jpg")
    assert jpeg.status_code == 200 and jpeg.mimetype == "image/jpeg" and jpeg.headers["Cache-Control"] == "no-store"
    assert http.get("/api/cameras/quiet/latest.jpg").status_code == 404

    body = http.get("/api/cameras/gate-1/series.csv?window=15m")
    assert body.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(body.get_data(as_text=True))))
    assert len(rows) == 15 and rows[-1]["with_mask"] == "9" and rows[-1]["compliance"] == "0.9"

    health = http.get("/api/health")
    assert health.status_code == 200
    h = health.get_json()
    assert h["status"] == "ok" and h["redis"]["ok"] and h["live"]["running"] and h["cameras"] == 2
    assert http.get("/healthz").get_json() == {"status": "ok"}

    assert http.get("/").status_code == 200
    assert b"Gate 1" not in http.get("/").data  # cards come from the socket, not the HTML
    assert http.get("/cameras/gate-1").status_code == 200
    assert http.get("/cameras/nope").status_code == 404
    spec = http.get("/api/openapi.json").get_json()
    assert "/api/cameras/{camera}" in spec["paths"]


@pytest.mark.timeout(30)
def test_token_guards_pages_api_and_socket(redis_url: str, dashboard_store: Store) -> None:
    app, sio = create_app(dashboard_settings(dashboard_store, redis_url, token=TOKEN), dashboard_store)
    try:
        seed(dashboard_store, "gate-1", with_mask=1)
        http = app.test_client()
        r = http.get("/api/cameras")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert http.get("/api/cameras", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        assert http.get("/api/cameras", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert http.get(f"/api/cameras?token={TOKEN}").status_code == 200
        assert http.get("/healthz").status_code == 200
        assert http.get("/api/health").status_code == 401

        page = http.get("/cameras/gate-1")
        assert page.status_code == 302 and page.headers["Location"].startswith("/login?next=/cameras/gate-1")
        assert http.post("/login", data={"token": "nope", "next": "/"}).status_code == 401
        ok = http.post("/login", data={"token": TOKEN, "next": "https://evil.example/"})
        assert ok.status_code == 302 and ok.headers["Location"] == "/"
        assert http.get("/").status_code == 200  # cookie set by the login form
        assert TOKEN not in (http.get_cookie(COOKIE).value if http.get_cookie(COOKIE) else "")

        session = http.get_cookie(COOKIE)
        assert session is not None and len(session.value) >= 32

        fresh = app.test_client()
        link = fresh.get(f"/cameras/gate-1?window=1h&token={TOKEN}")
        assert link.status_code == 302 and link.headers["Location"] == "/cameras/gate-1?window=1h", "the token leaves the URL"
        assert fresh.get("/api/cameras").status_code == 200  # ?token= on a page left a session cookie

        denied = sio.test_client(app, namespace=NAMESPACE)
        assert not denied.is_connected(NAMESPACE)
        by_auth = sio.test_client(app, namespace=NAMESPACE, auth={"token": TOKEN})
        assert by_auth.is_connected(NAMESPACE)
        assert Inbox(by_auth).wait_for(EV_CAMERA)["camera"] == "gate-1"
        by_cookie = sio.test_client(app, namespace=NAMESPACE, headers={"Cookie": f"{COOKIE}={session.value}"})
        assert by_cookie.is_connected(NAMESPACE)
        by_query = sio.test_client(app, namespace=NAMESPACE, query_string=f"token={TOKEN}")
        assert by_query.is_connected(NAMESPACE)
        for c in (by_auth, by_cookie, by_query):
            c.disconnect(NAMESPACE)

        assert http.post("/logout").status_code == 302
        assert dashboard_store.session(session.value) is None, "logout revokes the session in Redis"
        stolen = app.test_client()
        stolen.set_cookie(COOKIE, session.value)
        assert stolen.get("/api/cameras").status_code == 401, "a copy of the cookie stops working at logout"
        copied = sio.test_client(app, namespace=NAMESPACE, headers={"Cookie": f"{COOKIE}={session.value}"})
        assert not copied.is_connected(NAMESPACE)
    finally:
        close_app(app)


class RemoteInbox:
    """A real Socket.IO client (HTTP long-polling) on /live of a served dashboard, recording what it receives."""

    def __init__(self, url: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)
        for name in (EV_CAMERA, EV_SYSTEM, EV_VIOLATION):
            self.client.on(name, self._recorder(name), namespace=NAMESPACE)
        self.client.connect(url, namespaces=[NAMESPACE], transports=["polling"], wait_timeout=10)

    def _recorder(self, name: str) -> Any:
        def record(payload: dict[str, Any]) -> None:
            with self._lock:
                self.events.append((name, payload))

        return record

    def wait_for(self, name: str, pred: Any = lambda p: True, timeout_s: float = 10.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            with self._lock:
                return next((p for n, p in reversed(self.events) if n == name and pred(p)), None)

        result: dict[str, Any] = wait_until(found, timeout_s, what=f"{name} event")
        return result


@pytest.mark.timeout(45)
def test_replicas_share_one_emitter_through_the_message_queue(redis_url: str, dashboard_store: Store) -> None:
    settings = dashboard_settings(dashboard_store, redis_url, message_queue=True, leader_ttl_s=2)
    apps = {rid: create_app(settings, dashboard_store, replica_id=rid)[0] for rid in ("replica-a", "replica-b")}
    servers = {rid: Server(app, "127.0.0.1", 0).start() for rid, app in apps.items()}
    inbox = None
    try:
        lives = {rid: app.extensions["maskwatch"].live for rid, app in apps.items()}
        wait_until(lambda: sum(lv.state()["leader"] for lv in lives.values()) == 1, 10, what="one leader")
        leader = next(rid for rid, lv in lives.items() if lv.state()["leader"])
        follower = next(rid for rid in apps if rid != leader)
        assert dashboard_store.r.get(dashboard_store.keys.dashboard_leader()) == leader.encode()

        inbox = RemoteInbox(servers[follower].url)
        inbox.wait_for(EV_SYSTEM)
        seed(dashboard_store, "gate-1", with_mask=2, without_mask=2)
        got = inbox.wait_for(EV_CAMERA, lambda p: p["camera"] == "gate-1" and p["window"]["with_mask"] == 2)
        assert got["compliance"] == 0.5
        assert lives[follower].state()["camera_updates"] == 0, "the follower does not emit"

        close_app(apps[leader])  # the leader goes away: the follower takes over
        wait_until(lambda: lives[follower].state()["leader"], 10, what="failover")
        seed(dashboard_store, "gate-1", with_mask=2)
        inbox.wait_for(EV_CAMERA, lambda p: p["camera"] == "gate-1" and p["window"]["with_mask"] == 4)
        assert lives[follower].state()["camera_updates"] >= 1
    finally:
        if inbox is not None:
            inbox.client.disconnect()
        for rid, app in apps.items():
            servers[rid].stop()
            close_app(app)
