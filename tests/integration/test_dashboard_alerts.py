"""Alerts end to end: a site file's rules, counts in a real redis-server, the `alert` event, REST, and a webhook
received by a small HTTP server inside the test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_socketio import SocketIO

from dashboard.app import close_app, create_app
from maskwatch.payloads import EV_ALERT, EV_SYSTEM, NAMESPACE
from maskwatch.store import Store
from tests.integration.dashboard_fixtures import (  # noqa: F401  (fixture_* are fixtures)
    dashboard_settings,
    fixture_dashboard_store,
    seed,
    wait_until,
)


@dataclass
class Hook:
    """What the webhook server received, and how it answers (statuses in turn, then 200)."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    attempts: int = 0
    hold: threading.Event | None = None  # when set: requests wait for it (a hanging receiver)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, state: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.bodies if b["state"] == state]


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if h.hold is not None:
                h.hold.wait(10)
            with h.lock:
                h.attempts += 1
                status = h.statuses.pop(0) if h.statuses else 200
                if status == 200:
                    assert self.headers["Content-Type"] == "application/json"
                    h.bodies.append(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    h.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/maskwatch-secret"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield h
    if h.hold is not None:
        h.hold.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def site_file(tmp_path: Path, hook_url: str, **alerts: Any) -> str:
    rules = {
        "compliance_below": 0.8,
        "clear_above": 0.9,
        "for_s": 0,
        "min_people": 3,
        "webhook_url": hook_url,
        "webhook_retries": 2,
        **alerts,
    }
    path = tmp_path / "site.yaml"
    path.write_text(json.dumps({"site": "airport", "timezone": "Europe/Paris", "alerts": rules}))  # JSON is YAML
    return str(path)


class Received:
    """Events a socketio test client got on /live, kept across polls."""

    def __init__(self, app: Flask, sio: SocketIO) -> None:
        self.client = sio.test_client(app, namespace=NAMESPACE)
        self.events: list[tuple[str, dict[str, Any]]] = []

    def of(self, name: str) -> list[dict[str, Any]]:
        self.events.extend((e["name"], e["args"][0]) for e in self.client.get_received(NAMESPACE))
        return [p for n, p in self.events if n == name]


@pytest.fixture
def apps(redis_url: str, dashboard_store: Store) -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        close_app(app)


def make_app(apps: list[Flask], redis_url: str, store: Store, site: str, replica: str) -> tuple[Flask, SocketIO]:
    app, sio = create_app(dashboard_settings(store, redis_url, site_file=site), store, replica_id=replica)
    apps.append(app)
    return app, sio


@pytest.mark.timeout(60)
def test_alert_starts_and_ends_end_to_end(
    tmp_path: Path, hook: Hook, apps: list[Flask], redis_url: str, dashboard_store: Store
) -> None:
    hook.statuses = [503]  # the receiver fails once: the first delivery is retried a second later
    app, sio = make_app(apps, redis_url, dashboard_store, site_file(tmp_path, hook.url), "only")
    live = Received(app, sio)
    http = app.test_client()
    assert http.get("/api/alerts").get_json() == {
        "enabled": True,
        "rule": {"compliance_below": 0.8, "clear_above": 0.9, "for_s": 0.0, "clear_for_s": 0.0, "min_people": 3},
        "active": [],
        "recent": [],
    }

    seed(dashboard_store, "gate-1", with_mask=1, without_mask=3, name="Gate 1", zone="Entrance")  # 25 %, 4 people
    starts = wait_until(lambda: len(hook.received("start")) == 2 and hook.received("start"), 15, what="two starts")
    by_scope = {b["scope"]: b for b in starts}
    cam, site = by_scope["camera"], by_scope["site"]
    assert (cam["camera"], cam["name"], cam["zone"], cam["compliance"], cam["people"]) == ("gate-1", "Gate 1", "Entrance", 0.25, 4)
    assert cam["reason"] == "below_threshold" and cam["alert_id"] == f"camera:gate-1@{cam['started_ms']}"
    assert cam["text"].startswith("ALERT Gate 1: compliance 25% below 80%")
    assert (site["camera"], site["name"], site["site"]) == (None, "airport", "airport")
    assert hook.attempts == 3, "one refused POST, retried"

    pushed = wait_until(lambda: live.of(EV_ALERT), 5, what="the alert event")
    assert {(a["scope"], a["state"]) for a in pushed} == {("camera", "start"), ("site", "start")}
    system = wait_until(lambda: [s for s in live.of(EV_SYSTEM) if len(s["alerts"]["active"]) == 2], 5, what="system")
    assert system[-1]["alerts"]["enabled"] is True

    body = http.get("/api/alerts").get_json()
    assert {a["alert_id"] for a in body["active"]} == {cam["alert_id"], site["alert_id"]}
    assert [a["state"] for a in body["recent"]] == ["start", "start"] and all(a["id"] for a in body["recent"])
    one = http.get("/api/alerts?camera=gate-1").get_json()
    assert [a["scope"] for a in one["active"]] == ["camera"] and [a["camera"] for a in one["recent"]] == ["gate-1"]
    r = dashboard_store.r
    assert r.xlen(dashboard_store.keys.alerts()) == 2
    assert set(r.hkeys(dashboard_store.keys.alerts_active())) == {b"camera:gate-1", b"site"}

    seed(dashboard_store, "gate-1", with_mask=30)  # 31 of 34 masked: 91 %
    ends = wait_until(lambda: len(hook.received("end")) == 2 and hook.received("end"), 15, what="two ends")
    assert {(e["alert_id"], e["reason"]) for e in ends} == {(cam["alert_id"], "recovered"), (site["alert_id"], "recovered")}
    assert all(e["duration_s"] >= 0 and e["text"].startswith("RESOLVED") for e in ends)
    body = http.get("/api/alerts").get_json()
    assert body["active"] == [] and [a["state"] for a in body["recent"]] == ["end", "end", "start", "start"]
    assert http.get("/api/alerts?limit=1").get_json()["recent"][0]["state"] == "end"
    assert len(hook.received("start")) == 2, "no repeats while an alert holds"
    wait_until(lambda: [a for a in live.of(EV_ALERT) if a["state"] == "end"], 5, what="the end event")
    state = http.get("/api/health").get_json()["live"]
    assert state["alerting"] and state["alerts_leader"] and state["webhook"]["sent"] == 4
    live.client.disconnect(NAMESPACE)


@pytest.mark.timeout(60)
def test_exactly_one_replica_evaluates_and_another_takes_over(
    tmp_path: Path, hook: Hook, apps: list[Flask], redis_url: str, dashboard_store: Store
) -> None:
    site = site_file(tmp_path, hook.url, site={"enabled": False})
    # no message queue: both emitters run, yet only the holder of mw:alerts:leader evaluates
    first, _ = make_app(apps, redis_url, dashboard_store, site, "replica-a")
    second, _ = make_app(apps, redis_url, dashboard_store, site, "replica-b")
    lives = [first.extensions["maskwatch"].live, second.extensions["maskwatch"].live]
    wait_until(lambda: sum(lv.state()["alerts_leader"] for lv in lives) == 1, 10, what="one alerts leader")
    leader = next(i for i, lv in enumerate(lives) if lv.state()["alerts_leader"])

    seed(dashboard_store, "gate-1", with_mask=0, without_mask=5)
    wait_until(lambda: hook.received("start"), 10, what="the start")
    ticks = [lv.state()["systems"] for lv in lives]
    wait_until(lambda: all(lv.state()["systems"] >= t + 3 for lv, t in zip(lives, ticks, strict=True)), 10, what="ticks")
    assert len(hook.received("start")) == 1, "one start, whatever the number of replicas"

    close_app(apps.pop(leader))  # releases the lock: the other replica leads from its next tick
    follower = lives[1 - leader]
    wait_until(lambda: follower.state()["alerts_leader"], 10, what="the take-over")
    seed(dashboard_store, "gate-1", with_mask=50)
    (end,) = wait_until(lambda: hook.received("end"), 10, what="the end")
    assert end["alert_id"] == hook.received("start")[0]["alert_id"], "the new leader ended the same alert"
    assert len(hook.received("start")) == 1


@pytest.mark.timeout(60)
def test_a_hanging_webhook_never_holds_up_live_events(
    tmp_path: Path, hook: Hook, apps: list[Flask], redis_url: str, dashboard_store: Store
) -> None:
    hook.hold = threading.Event()  # the receiver accepts and never answers
    site = site_file(tmp_path, hook.url, webhook_timeout_s=5, webhook_retries=0, site={"enabled": False})
    app, _ = make_app(apps, redis_url, dashboard_store, site, "only")
    live = app.extensions["maskwatch"].live
    seed(dashboard_store, "gate-1", without_mask=5)
    wait_until(lambda: live.state()["alerts"] == 1, 10, what="the alert event")
    ticks = live.state()["systems"]
    wait_until(lambda: live.state()["systems"] >= ticks + 3, 5, what="system events while the webhook hangs")
    assert live.state()["webhook"]["sent"] == 0 and hook.bodies == []
    assert app.test_client().get("/api/alerts").get_json()["active"][0]["camera"] == "gate-1"
    hook.hold.set()
    wait_until(lambda: live.state()["webhook"]["sent"] == 1, 10, what="the late delivery")
