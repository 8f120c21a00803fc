"""Redis goes away under a running dashboard: it reports itself degraded, then resumes live pushes on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard.app import close_app, create_app
from maskwatch.payloads import EV_CAMERA, NAMESPACE
from maskwatch.procs import Children, free_port
from maskwatch.store import Store
from tests.integration.dashboard_fixtures import dashboard_settings, seed, wait_until


@pytest.mark.timeout(90)
def test_redis_outage_degrades_then_recovers(tmp_path: Path) -> None:
    port = free_port()
    children = Children(tmp_path)
    url = children.start_redis(port=port)
    store = Store.from_url(url, prefix="tfault:")
    app, sio = create_app(dashboard_settings(store, url), store)
    try:
        live = app.extensions["maskwatch"].live
        http = app.test_client()
        client = sio.test_client(app, namespace=NAMESPACE)
        seed(store, "gate-1", with_mask=1)

        def got(with_mask: int) -> bool:
            return any(
                e["name"] == EV_CAMERA and e["args"][0]["window"]["with_mask"] == with_mask
                for e in client.get_received(NAMESPACE)
            )

        wait_until(lambda: got(1), 10, what="the first update")

        children.stop("redis", 10)
        wait_until(lambda: not live.state()["redis_ok"], 15, what="the emitter to notice")
        r = http.get("/api/health")
        assert r.status_code == 503 and r.get_json()["status"] == "degraded" and not r.get_json()["redis"]["ok"]
        assert http.get("/healthz").status_code == 503
        down = http.get("/api/cameras")
        assert down.status_code == 503 and down.get_json()["error"] == "redis unavailable"
        assert sio.test_client(app, namespace=NAMESPACE).is_connected(NAMESPACE), "sockets still connect"

        children.start_redis(port=port)  # an empty Redis comes back on the same address
        wait_until(lambda: live.state()["redis_ok"] and live.state()["subscribed"], 30, what="the emitter to resume")
        seed(store, "gate-1", with_mask=2)
        wait_until(lambda: got(2), 10, what="an update after the outage")
        assert http.get("/api/health").status_code == 200
        client.disconnect(NAMESPACE)
    finally:
        close_app(app)
        store.close()
        children.stop_all(10)
