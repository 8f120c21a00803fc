"""`maskwatch stats` and the dashboard's REST API give the same numbers for the same Redis data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from dashboard.app import close_app, create_app
from maskwatch.cli import main
from maskwatch.store import Store, epoch_minute
from tests.integration.dashboard_fixtures import (  # noqa: F401  (fixture_* are fixtures)
    dashboard_settings,
    fixture_dashboard_store,
    seed,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app(redis_url: str, dashboard_store: Store) -> Iterator[Flask]:
    flask_app, _ = create_app(dashboard_settings(dashboard_store, redis_url), dashboard_store, start_live=False)
    now = clear_of_the_next_minute()
    # history at several ages, so each window holds different counts
    seed(dashboard_store, "gate-1", with_mask=5, without_mask=5, ts_ms=now - 20 * 3_600_000, jpeg=None)
    seed(dashboard_store, "gate-1", with_mask=7, without_mask=1, ts_ms=now - 40 * 60_000, jpeg=None)
    seed(dashboard_store, "gate-1", with_mask=9, incorrect=1, ts_ms=now - 5 * 60_000, name="Gate 1", status="online")
    seed(dashboard_store, "gate-1", with_mask=2, without_mask=2, ts_ms=now, name="Gate 1")
    seed(dashboard_store, "hall-2", with_mask=3, ts_ms=now - 30 * 60_000, zone="hall", fps=4.5)
    seed(dashboard_store, "quiet-3", frames=4, jpeg=None)  # frames but nobody in them
    yield flask_app
    close_app(flask_app)


def clear_of_the_next_minute(margin_s: float = 10.0) -> int:
    """Now in ms, at least `margin_s` before the clock's next minute: the 1m window holds this minute's bucket only,
    so counts written in one minute and read in the next are (rightly) gone from it."""
    left = 60.0 - time.time() % 60.0
    if left < margin_s:
        time.sleep(left + 0.05)  # the condition is the clock itself: wait for the next minute to begin
    return int(time.time() * 1000)


def cli_json(capsys: pytest.CaptureFixture[str], store: Store, redis_url: str, *args: str) -> dict[str, Any]:
    capsys.readouterr()
    rc = main(["stats", "--json", "--redis-url", redis_url, "--redis-prefix", store.keys.prefix, *args])
    assert rc == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def without_age(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows without `data_age_s`, which moves with the clock between the two calls."""
    return [{k: v for k, v in r.items() if k != "data_age_s"} for r in rows]


def same_minute(call: Any) -> Any:
    """`call()` made within one clock minute (a window boundary between two calls moves a bucket out)."""
    for _ in range(3):
        before = epoch_minute(int(time.time() * 1000))
        result = call()
        if epoch_minute(int(time.time() * 1000)) == before:
            return result
    pytest.fail("the clock kept crossing minute boundaries")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("window", ["1m", "15m", "1h", "24h"])
def test_stats_json_equals_get_api_cameras(
    app: Flask, dashboard_store: Store, redis_url: str, capsys: pytest.CaptureFixture[str], window: str
) -> None:
    http = app.test_client()

    def both() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return cli_json(capsys, dashboard_store, redis_url, "--window", window), http.get(
            f"/api/cameras?window={window}"
        ).get_json()

    cli, rest = same_minute(both)
    assert cli["window"] == window and cli["window_minutes"] == {"1m": 1, "15m": 15, "1h": 60, "24h": 1440}[window]
    assert [r["camera"] for r in cli["cameras"]] == ["gate-1", "hall-2", "quiet-3"]
    assert without_age(cli["cameras"]) == without_age(rest)
    for c, r in zip(cli["cameras"], rest, strict=True):
        assert (c["data_age_s"] is None) == (r["data_age_s"] is None)
        if c["data_age_s"] is not None:
            assert abs(c["data_age_s"] - r["data_age_s"]) <= 1.0


@pytest.mark.timeout(30)
def test_windows_differ_so_the_comparison_means_something(
    app: Flask, dashboard_store: Store, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gate = {w: cli_json(capsys, dashboard_store, redis_url, "--window", w)["cameras"][0] for w in ("1m", "1h", "24h")}
    assert [gate[w]["window"]["with_mask"] for w in ("1m", "1h", "24h")] == [2, 18, 23]
    assert gate["24h"]["compliance"] == round(23 / 32, 4)


@pytest.mark.timeout(30)
def test_stats_for_one_camera_equals_get_api_camera(
    app: Flask, dashboard_store: Store, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    http = app.test_client()

    def both() -> tuple[dict[str, Any], dict[str, Any]]:
        return cli_json(capsys, dashboard_store, redis_url, "--camera", "gate-1", "--window", "1h"), http.get(
            "/api/cameras/gate-1?window=1h"
        ).get_json()

    cli, rest = same_minute(both)
    (row,) = cli["cameras"]
    rest = {k: v for k, v in rest.items() if k not in ("series", "window_label")}
    assert without_age([row]) == without_age([rest])


@pytest.mark.timeout(30)
def test_stats_table_and_errors(
    app: Flask, dashboard_store: Store, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["stats", "--redis-url", redis_url, "--redis-prefix", dashboard_store.keys.prefix]
    assert main([*base, "--window", "1h"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "compliance" in table[0] and "window 1h" in table[0]
    gate = next(line.split() for line in table if line.startswith("gate-1"))
    assert gate[:4] == ["gate-1", "online", "81.8%", "22"]  # 18 of 22 masked in the last hour
    assert next(line for line in table if line.startswith("quiet-3")).split()[2] == "-"

    assert main([*base, "--camera", "nope"]) == 1
    assert "unknown camera 'nope'" in capsys.readouterr().err
    assert main([*base, "--camera", "../x"]) == 2
    with pytest.raises(SystemExit):
        main([*base, "--window", "2h"])
    assert main(["stats", "--redis-url", "redis://127.0.0.1:1/0"]) == 1
    assert "unavailable" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_the_installed_command(app: Flask, dashboard_store: Store, redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MW_")}
    env.update(MW_REDIS_URL=redis_url, MW_REDIS_PREFIX=dashboard_store.keys.prefix)
    done = subprocess.run(
        [sys.executable, "-m", "maskwatch.cli", "stats", "--json", "--camera", "hall-2", "--window", "1h"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["cameras"]
    assert (row["camera"], row["zone"], row["fps"], row["window"]["with_mask"]) == ("hall-2", "hall", 4.5, 3)


@pytest.mark.timeout(30)
def test_an_offline_camera_says_why_in_the_api_and_in_stats(
    app: Flask, dashboard_store: Store, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    why = "cannot open rtsp://door.local/1: connection refused by door.local:554"
    dashboard_store.set_cameras_fields({"door-4": {"name": "Door 4", "status": "offline", "last_error": why}})
    rest = app.test_client().get("/api/cameras/door-4").get_json()
    assert (rest["status"], rest["last_error"]) == ("offline", why)
    assert cli_json(capsys, dashboard_store, redis_url, "--camera", "door-4")["cameras"][0]["last_error"] == why
    assert main(["stats", "--redis-url", redis_url, "--redis-prefix", dashboard_store.keys.prefix]) == 0
    table = capsys.readouterr().out.splitlines()
    row = next(i for i, line in enumerate(table) if line.startswith("door-4"))
    assert table[row + 1].split() == ["last", "error:", *why.split()]
    gate = next(line for line in table if line.startswith("gate-1"))  # online cameras carry no error line
    assert table[table.index(gate) + 1].split()[0] != "last"
