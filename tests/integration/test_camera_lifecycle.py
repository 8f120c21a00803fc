"""Camera lifecycle on a real Redis: retired cameras leave the site's listings and figures, keep their history by id,
come back when the site file names them again; `maskwatch cameras remove` and DELETE /api/cameras/{id}."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask import Flask

from dashboard.app import close_app, create_app
from maskwatch.cli import main
from maskwatch.site import parse_site
from maskwatch.stack import StartError, check_redis_for_site
from maskwatch.store import Store, camera_summaries
from tests.integration.dashboard_fixtures import (  # noqa: F401  (fixture_* are fixtures)
    dashboard_settings,
    fixture_dashboard_store,
    seed,
)

pytestmark = pytest.mark.timeout(60)
TOKEN = "admin-token-for-tests"


def _row(status: str = "online", producer: str = "p1", site: str = "t", age_s: float = 0) -> dict[str, str | int | float]:
    return {"site": site, "status": status, "producer": producer, "status_ms": int((time.time() - age_s) * 1000)}


@pytest.fixture
def site_store(dashboard_store: Store) -> Store:
    """gate-1 (masked people) and door-2 (bare faces), both with counted frames."""
    seed(dashboard_store, "gate-1", with_mask=8, **_row())
    seed(dashboard_store, "door-2", without_mask=8, **_row())
    return dashboard_store


def test_a_camera_removed_from_the_site_file_is_retired_and_comes_back_when_named_again(site_store: Store) -> None:
    site_compliance = lambda: sum(s.window.with_mask for s in camera_summaries(site_store, 15)) / sum(  # noqa: E731
        s.window.with_mask + s.window.without_mask for s in camera_summaries(site_store, 15)
    )
    assert site_compliance() == 0.5
    # what the producer writes after a reload without door-2: its last row, and door-2 retired
    site_store.set_cameras_fields({"gate-1": _row(), "door-2": _row("offline")}, retired=["door-2"])
    assert site_store.camera_ids() == ["gate-1"]
    assert site_compliance() == 1.0
    assert site_store.has_camera("door-2") and site_store.totals("door-2").without_mask == 8  # history by id
    assert site_store.camera_info("door-2")["status"] == "retired"
    seed(site_store, "door-2", without_mask=1)  # a late frame still in Kafka: counted in its history, not listed
    assert site_store.camera_ids() == ["gate-1"] and site_store.totals("door-2").without_mask == 9
    # the site file names door-2 again: the producer registers it before its first frame (the workers count it again)
    site_store.register_cameras(["gate-1", "door-2"])
    assert site_store.camera_ids() == ["door-2", "gate-1"]
    site_store.retire_cameras(["door-2"])  # its next status row does as well
    site_store.set_cameras_fields({"gate-1": _row(), "door-2": _row()})
    assert site_store.camera_ids() == ["door-2", "gate-1"]


def test_cameras_remove_retires_only_cameras_no_producer_runs(site_store: Store, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["cameras", "remove", "--redis-url", redis_url, "--redis-prefix", site_store.keys.prefix]
    site_store.heartbeat("producer", "p1", {"cameras": 2})
    assert main([*base, "gate-1"]) == 1
    assert "run by producer p1" in capsys.readouterr().err and "gate-1" in site_store.camera_ids()
    assert main([*base, "nope-9"]) == 1
    assert "unknown camera" in capsys.readouterr().err
    site_store.drop_heartbeat("producer", "p1")  # its producer stopped: the camera can go
    assert main([*base, "gate-1"]) == 0
    assert "retired" in capsys.readouterr().out
    assert site_store.camera_ids() == ["door-2"]
    assert main([*base, "gate-1"]) == 0
    assert "already retired" in capsys.readouterr().out
    assert main(["stats", "--json", "--redis-url", redis_url, "--redis-prefix", site_store.keys.prefix, "--camera", "gate-1"]) == 0


@pytest.fixture
def app(redis_url: str, site_store: Store) -> Iterator[Flask]:
    flask_app, _ = create_app(dashboard_settings(site_store, redis_url, token=TOKEN), site_store, start_live=False)
    yield flask_app
    close_app(flask_app)


def test_delete_api_needs_the_admin_token_and_no_producer(app: Flask, site_store: Store) -> None:
    http = app.test_client()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert http.delete(f"/api/cameras/gate-1?token={TOKEN}").status_code == 403  # a link is not an admin call
    assert http.delete("/api/cameras/gate-1").status_code == 401
    site_store.heartbeat("producer", "p1", {"cameras": 2})
    r = http.delete("/api/cameras/gate-1", headers=bearer)
    assert r.status_code == 409 and r.get_json()["error"] == "camera_still_sent"
    site_store.drop_heartbeat("producer", "p1")
    r = http.delete("/api/cameras/gate-1", headers=bearer)
    assert r.status_code == 200 and r.get_json()["retired"] is True
    assert [c["camera"] for c in http.get("/api/cameras", headers=bearer).get_json()] == ["door-2"]
    one = http.get("/api/cameras/gate-1", headers=bearer)  # history stays queryable by id
    assert one.status_code == 200 and one.get_json()["status"] == "retired" and one.get_json()["totals"]["with_mask"] == 8
    assert http.delete("/api/cameras/nope-9", headers=bearer).status_code == 404


def test_up_retires_its_own_old_cameras_and_refuses_another_sites(site_store: Store) -> None:
    mine = parse_site("site: t\ncameras:\n  - {id: gate-1, source: synthetic}\n")
    check_redis_for_site(site_store, mine, "redis://x")
    assert site_store.camera_ids() == ["gate-1"]  # door-2 is not in the site file any more
    other = parse_site("site: elsewhere\ncameras:\n  - {id: cam-1, source: synthetic}\n")
    with pytest.raises(StartError) as e:
        check_redis_for_site(site_store, other, "redis://x")
    assert "another site" in str(e.value) and "--redis-prefix" in str(e.value) and "gate-1" in str(e.value)
