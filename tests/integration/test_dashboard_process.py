"""`python -m dashboard` as a process: serves, answers health, exits 0 on SIGTERM/SIGINT, refuses bad settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from maskwatch.procs import free_port
from tests.integration.dashboard_fixtures import wait_until

ROOT = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:
        return False


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_then_exits_cleanly_on_signal(redis_url: str, sig: signal.Signals) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MW_")}
    env["MW_REDIS_URL"] = redis_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "--port", str(port), "--redis-prefix", "tproc:", "--log-format", "json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: proc.poll() is not None or answers(base + "/healthz"), 30, what="the dashboard")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        status, health = get(base + "/api/health")
        assert status == 200 and health["status"] == "ok"
        assert get(base + "/api/cameras") == (200, [])  # type: ignore[comparison-overlap]
        proc.send_signal(sig)
        rc = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert rc == 0, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    messages = [rec["msg"] for rec in lines]
    assert any(m.startswith("dashboard ready") for m in messages)
    assert "dashboard exited" in messages
    assert not [rec for rec in lines if rec["level"] == "ERROR"], out


@pytest.mark.timeout(30)
def test_bad_settings_stop_at_start_naming_the_field() -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MW_")}, "MW_DASHBOARD_WINDOW_MINUTES": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "dashboard"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=25
    )
    assert done.returncode == 2
    assert "MW_DASHBOARD_WINDOW_MINUTES" in done.stderr  # the variable the operator set


@pytest.mark.timeout(30)
def test_a_bad_site_file_stops_at_start_naming_file_and_field(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("site: airport\ntimezone: Europe/Lodnon\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MW_")}, "MW_SITE_FILE": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "dashboard"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=25
    )
    assert done.returncode == 2
    assert f"{site}: field=timezone: unknown time zone 'Europe/Lodnon'" in done.stderr


def _start(redis_url: str, port: int, **env: str) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MW_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "--port", str(port), "--redis-prefix", "tproc:"],
        cwd=ROOT,
        env={**base, "MW_REDIS_URL": redis_url, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wait_until(lambda: proc.poll() is not None or answers(f"http://127.0.0.1:{port}/healthz"), 30, what="the dashboard")
    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
    return proc


@pytest.mark.timeout(90)
def test_half_sent_requests_do_not_hold_the_server(redis_url: str) -> None:
    """A slowloris client (requests that never finish their headers) cannot starve the others: each such request
    is dropped after MW_DASHBOARD_REQUEST_TIMEOUT_S, freeing its thread."""
    import socket

    port = free_port()
    proc = _start(redis_url, port, MW_DASHBOARD_SERVER_THREADS="4", MW_DASHBOARD_REQUEST_TIMEOUT_S="1")
    held: list[socket.socket] = []
    try:
        for _ in range(12):  # three times the threads
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /api/cameras HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and never the rest
            held.append(s)
        r = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/cameras", timeout=30)  # the queue drains in ~3 s
        assert r.status == 200
        assert "Werkzeug" not in r.headers.get("Server", "") and "/" not in r.headers.get("Server", ""), "no version banner"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
