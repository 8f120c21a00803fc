"""Fixtures for the dashboard tests: a Store per test on the session's redis-server, a served dashboard, seeding.

The redis-server itself is conftest's `redis_url`. A test module imports the `fixture_*` functions it
needs; pytest knows them by their `name=` (each starts with `dashboard_`, so none clashes with conftest's).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from flask import Flask
from flask_socketio import SocketIO

from dashboard.app import close_app, create_app
from dashboard.server import Server
from dashboard.settings import DashboardSettings
from maskwatch.detections import Counts
from maskwatch.payloads import CameraActivity, LiveNotice
from maskwatch.procs import Child, free_port, port_open, py
from maskwatch.settings import env_name
from maskwatch.store import EPISODE_CLOSED, BatchWrite, Episode, Store, episode_notice

ROOT = Path(__file__).resolve().parents[2]
GROUP = "maskwatch-workers"
TOPIC = "frames"
# How /check and the camera page head the score column: what the score is, in a tooltip (templates/_macros.html).
FACE_SCORE_TH = (
    '<th title="how sure the model is that this is a face; the class is its most probable one">Face score</th>'
)


def scene_jpeg(seed: int = 0, width: int = 320, height: int = 180) -> bytes:
    """A synthetic annotated camera frame: a floor, a wall and a few boxed faces."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = (58, 52, 46)
    img[int(height * 0.62) :] = (92, 98, 104)
    for _ in range(3):
        cx, cy = int(rng.integers(30, width - 30)), int(rng.integers(40, height - 60))
        cv2.ellipse(img, (cx, cy + 40), (22, 34), 0, 180, 360, (120, 90, 70), -1)
        cv2.circle(img, (cx, cy), 15, (150, 175, 205), -1)
        colour = (80, 175, 76) if rng.random() < 0.7 else (54, 67, 244)
        cv2.rectangle(img, (cx - 19, cy - 19), (cx + 19, cy + 19), colour, 2)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return buf.tobytes()


FRAME_JPEG = scene_jpeg()


def wait_until(cond: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02, what: str = "") -> Any:
    """Poll `cond` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what or cond}")
        time.sleep(interval_s)


@pytest.fixture(name="dashboard_store")
def fixture_dashboard_store(redis_url: str) -> Iterator[Store]:
    """A Store on its own key prefix (on the session's own redis-server), so tests never see each other's data."""
    store = Store.from_url(redis_url, prefix=f"t{uuid.uuid4().hex[:10]}:")
    yield store
    keys = list(store.r.scan_iter(match=store.keys.prefix + "*", count=500))
    if keys:
        store.r.delete(*keys)
    store.close()


def dashboard_settings(store: Store, redis_url: str, **overrides: Any) -> DashboardSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_prefix": store.keys.prefix,
        "port": 0,
        "system_interval_s": 0.5,
        "serving": f"127.0.0.1:{free_port()}",
    }
    values.update(overrides)
    return DashboardSettings(**values)


def seed(
    store: Store,
    cid: str,
    *,
    with_mask: int = 0,
    without_mask: int = 0,
    incorrect: int = 0,
    frames: int = 1,
    ts_ms: int | None = None,
    jpeg: bytes | None = FRAME_JPEG,
    violations: int = 0,
    small_faces: bool = False,
    **meta: str | int | float,
) -> LiveNotice:
    """Write one batch for `cid` the way a worker does (commit_batch) and publish its update notice."""
    now = ts_ms if ts_ms is not None else int(time.time() * 1000)
    if meta:
        store.register_camera(cid, **meta)
    batch = BatchWrite()
    nxt = store.stored_offsets(GROUP, TOPIC).get(0, 0) + frames
    batch.next_offsets[(TOPIC, 0)] = nxt
    faces = with_mask + without_mask + incorrect
    batch.add(
        (TOPIC, 0),
        cid,
        now,
        Counts(
            frames=frames,
            faces=faces,
            with_mask=with_mask,
            without_mask=without_mask,
            mask_worn_incorrectly=incorrect,
            persons=faces,  # as if every face were someone new
            persons_with_mask=with_mask,
            persons_without_mask=without_mask,
            persons_mask_worn_incorrectly=incorrect,
            faces_lt16=faces if small_faces else 0,
            faces_ge64=0 if small_faces else faces,
        ),
    )
    if jpeg is not None:
        batch.latest_jpeg[cid] = jpeg
    batch.zones = store.camera_zones([cid])  # as the worker reads them
    notices = []
    for i in range(violations):
        box = (0.1, 0.1 + i * 0.01, 0.4, 0.4)
        eid = f"{now}-{int(box[0] * 1e4)}-{int(box[1] * 1e4)}"
        votes = (("without_mask", 5),)
        ep = Episode(cid, eid, "without_mask", votes, now, now, box, 0.9, EPISODE_CLOSED, 5000, now, FRAME_JPEG)
        batch.episodes.append(((TOPIC, 0), ep))
        notices.append(episode_notice(ep))
    assert store.commit_batch(batch, GROUP).applied == {(TOPIC, 0)}
    notice = LiveNotice("test-worker", now, {cid: CameraActivity(frames, now)}, tuple(notices))
    store.publish_update(notice)
    return notice


@dataclass
class ServedDashboard:
    app: Flask
    socketio: SocketIO
    server: Server
    store: Store
    settings: DashboardSettings

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(name="dashboard_serve")
def fixture_dashboard_serve(redis_url: str, dashboard_store: Store) -> Iterator[Callable[..., ServedDashboard]]:
    """Serve a dashboard over HTTP on a free port, against the real Redis, with settings overrides."""
    served: list[ServedDashboard] = []

    def serve(**overrides: Any) -> ServedDashboard:
        settings = dashboard_settings(dashboard_store, redis_url, **overrides)
        app, sio = create_app(settings, dashboard_store)
        served.append(ServedDashboard(app, sio, Server(app, "127.0.0.1", 0).start(), dashboard_store, settings))
        return served[-1]

    yield serve
    for d in served:
        d.server.stop()
        close_app(d.app)


@pytest.fixture(name="dashboard_served")
def fixture_dashboard_served(dashboard_serve: Callable[..., ServedDashboard]) -> ServedDashboard:
    """The dashboard with test settings, served over HTTP."""
    return dashboard_serve()


@dataclass
class DashboardProcess:
    """`python -m dashboard` (the production server) as a child process, against the test's Redis prefix."""

    child: Child
    url: str
    store: Store
    settings: DashboardSettings


def settings_env(settings: DashboardSettings, overrides: dict[str, Any]) -> dict[str, str]:
    """The environment variables that give a `python -m dashboard` process these settings overrides."""
    env: dict[str, str] = {}
    for name in overrides:
        var = env_name(DashboardSettings, name)
        value = getattr(settings, name)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[var] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def _production_serve(redis_url: str, store: Store, log_dir: Any) -> Iterator[Callable[..., DashboardProcess]]:
    served: list[DashboardProcess] = []

    def serve(**overrides: Any) -> DashboardProcess:
        port = free_port()
        values = {"redis_url": redis_url, "redis_prefix": store.keys.prefix, "port": port, "system_interval_s": 0.5,
                  "serving": f"127.0.0.1:{free_port()}", **overrides}
        settings = DashboardSettings(**values)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MW_")}
        child = Child(f"dashboard-{port}", py("dashboard"), settings_env(settings, values), env, ROOT).start(log_dir)
        d = DashboardProcess(child, f"http://127.0.0.1:{port}", store, settings)
        served.append(d)
        child.wait_ready(lambda: port_open("127.0.0.1", port), 60, "the dashboard process")
        return d

    yield serve
    for d in served:
        assert d.child.stop(30) == 0, "the dashboard stops cleanly on SIGTERM"


@pytest.fixture(name="dashboard_serve")
def fixture_production_serve(redis_url: str, dashboard_store: Store, logs_dir: Any) -> Iterator[Callable[..., DashboardProcess]]:
    """As `fixture_dashboard_serve`, but `python -m dashboard` as a process: the production server."""
    yield from _production_serve(redis_url, dashboard_store, logs_dir)


@pytest.fixture(name="dashboard_served")
def fixture_production_served(dashboard_serve: Callable[..., DashboardProcess]) -> DashboardProcess:
    """The dashboard with test settings, served by the production server in its own process."""
    return dashboard_serve()
