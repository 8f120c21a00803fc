"""Months of history through the REST API against a real redis-server: hourly/daily/zone buckets, any range."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dashboard.app import close_app, create_app
from maskwatch.store import Store
from tests.integration.dashboard_fixtures import (  # noqa: F401  (fixture_* are fixtures)
    dashboard_settings,
    fixture_dashboard_store,
    seed,
)

H, D = 3_600_000, 86_400_000


@pytest.fixture
def http(redis_url: str, dashboard_store: Store) -> Iterator[FlaskClient]:
    app: Flask
    app, _ = create_app(dashboard_settings(dashboard_store, redis_url), dashboard_store)
    yield app.test_client()
    close_app(app)


@pytest.fixture
def month(dashboard_store: Store) -> int:
    """Two cameras in two zones over 30 days: ward-1 fully masked, gate-1 half; returns now (ms)."""
    now = int(time.time() * 1000)
    for days_ago in (0, 1, 10, 29):
        ts = now - days_ago * D
        seed(dashboard_store, "ward-1", with_mask=4, ts_ms=ts, jpeg=None, zone="Ward A")
        seed(dashboard_store, "gate-1", with_mask=2, without_mask=2, ts_ms=ts, jpeg=None, zone="Gate")
    return now


@pytest.mark.timeout(30)
def test_a_month_reads_back_from_hours_and_a_year_from_days(http: FlaskClient, month: int) -> None:
    body = http.get(f"/api/history?from={month - 30 * D}&to={month + 1}").get_json()
    assert body["resolution"] == "hour" and body["camera"] is None
    assert body["total"]["with_mask"] == 4 * (4 + 2) and body["total"]["without_mask"] == 4 * 2
    assert body["total"]["compliance"] == 0.75
    assert sum(r["frames"] for r in body["series"]) == 8
    year = http.get(f"/api/history?from={month - 365 * D}&to={month + 1}&camera=gate-1").get_json()
    assert year["resolution"] == "day" and year["total"]["compliance"] == 0.5 and len(year["series"]) >= 365
    # minute buckets answer a recent short range
    recent = http.get(f"/api/history?from={month - H}&to={month + 1}&camera=ward-1").get_json()
    assert recent["resolution"] == "minute" and recent["total"]["with_mask"] == 4


@pytest.mark.timeout(30)
def test_zone_buckets_hold_their_cameras(http: FlaskClient, month: int) -> None:
    ward = http.get(f"/api/history?from={month - 30 * D}&to={month + 1}&zone=Ward A").get_json()
    assert ward["resolution"] == "hour" and ward["total"]["with_mask"] == 16 and ward["total"]["compliance"] == 1.0
    gate = http.get(f"/api/history?from={month - 30 * D}&to={month + 1}&zone=Gate&resolution=day").get_json()
    assert gate["total"]["compliance"] == 0.5 and len(gate["series"]) in (30, 31)


@pytest.mark.timeout(30)
def test_overview_has_zones_cameras_and_the_heat_map(http: FlaskClient, month: int) -> None:
    body = http.get(f"/api/history/overview?from={month - 30 * D}&to={month + 1}").get_json()
    assert set(body["zones"]) == {"Ward A", "Gate"} and set(body["cameras"]) == {"ward-1", "gate-1"}
    assert body["zones"]["Gate"]["total"]["compliance"] == 0.5
    assert len(body["ts_ms"]) == len(body["cameras"]["gate-1"]["compliance"])
    grid = body["heatmap"]["faces"]
    assert len(grid) == 7 and all(len(r) == 24 for r in grid) and sum(map(sum, grid)) == 4 * 8


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("from=2026-12-02&to=2026-12-01", 400, "bad range"),
        ("from=yesterday", 400, "bad range"),
        ("from=0&to=9999999999999&resolution=hour", 400, "bad range"),
        ("resolution=week", 400, "bad resolution"),
        ("zone=Gate&resolution=minute", 400, "bad resolution"),
        ("zone=Gate&camera=gate-1", 400, "camera and zone are exclusive"),
        ("zone=Nowhere", 404, "unknown zone"),
        ("camera=nope", 404, "unknown camera"),
    ],
)
def test_bad_history_queries(http: FlaskClient, month: int, query: str, status: int, error: str) -> None:
    r = http.get("/api/history?" + query)
    assert r.status_code == status and r.get_json()["error"] == error


def _cli(redis_url: str, store: Store, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "maskwatch.cli", "stats", "--redis-url", redis_url, "--redis-prefix", store.keys.prefix, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(60)
def test_stats_answers_any_range_from_the_command_line(redis_url: str, dashboard_store: Store, month: int, http: FlaskClient) -> None:
    out = _cli(redis_url, dashboard_store, "--from", str(month - 30 * D), "--to", str(month + 1), "--camera", "gate-1", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == http.get(f"/api/history?from={month - 30 * D}&to={month + 1}&camera=gate-1").get_json()
    table = _cli(redis_url, dashboard_store, "--from", str(month - 30 * D), "--zone", "Ward A")
    assert table.returncode == 0, table.stderr
    assert "zone Ward A, hour buckets" in table.stdout
    assert table.stdout.strip().splitlines()[-1].split()[:3] == ["total", "100.0%", "16"]
    bad = _cli(redis_url, dashboard_store, "--from", "yesterday")
    assert bad.returncode == 2 and "not epoch milliseconds" in bad.stderr
