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

from maskwatch.procs import Child, free_port, py

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
def test_serves_then_exits_cleanly_on_signal(redis_url: str, sig: signal.Signals, tmp_path: Path) -> None:
    port = free_port()
    proc = _start(redis_url, port, tmp_path, "--log-format", "json")
    try:
        base = f"http://127.0.0.1:{port}"
        status, health = get(base + "/api/health")
        assert status == 200 and health["status"] == "ok"
        assert get(base + "/api/cameras") == (200, [])  # type: ignore[comparison-overlap]
        proc.send_signal(sig, group=False)  # to the server alone, as a container runtime signals its first process
        rc = proc.finish(15)
    finally:
        proc.stop(5)
    out = proc.log()
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


def _start(redis_url: str, port: int, log_dir: Path, *args: str, **env: str) -> Child:
    """`python -m dashboard` on `port` with no MW_* variable of this process's; once /healthz answers."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MW_")}
    argv = py("dashboard", "--port", str(port), "--redis-prefix", "tproc:", *args)
    proc = Child("dashboard", argv, {"MW_REDIS_URL": redis_url, **env}, base, ROOT).start(log_dir)
    proc.wait_ready(lambda: answers(f"http://127.0.0.1:{port}/healthz"), 30, "the dashboard")
    return proc


@pytest.mark.timeout(90)
def test_half_sent_requests_do_not_hold_the_server(redis_url: str, tmp_path: Path) -> None:
    """A slowloris client (requests that never finish their headers) cannot starve the others: each such request
    is dropped after MW_DASHBOARD_REQUEST_TIMEOUT_S, freeing its thread."""
    import socket

    port = free_port()
    proc = _start(redis_url, port, tmp_path, MW_DASHBOARD_SERVER_THREADS="4", MW_DASHBOARD_REQUEST_TIMEOUT_S="1")
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
        assert proc.stop(20) == 0
