"""deploy/healthcheck.py as the containers run it: a subprocess reading heartbeats from a real redis-server
(written by maskwatch.store, as the services write them), and an HTTP check against a real endpoint."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from maskwatch.procs import free_port
from maskwatch.store import Store

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "healthcheck.py"


def check(redis_url: str, prefix: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MW_")}
    full.update({"MW_REDIS_URL": redis_url, "MW_REDIS_PREFIX": prefix, "PYTHONPATH": str(ROOT), **env})
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=full, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture
def store(redis_url: str, names: dict[str, str]) -> Iterator[Store]:
    s = Store.from_url(redis_url, names["redis_prefix"])
    yield s
    s.close()


@pytest.mark.timeout(60)
def test_worker_check_follows_this_hosts_heartbeat(redis_url: str, names: dict[str, str], store: Store) -> None:
    prefix = names["redis_prefix"]
    missing = check(redis_url, prefix, "worker")
    assert missing.returncode == 1 and "no worker heartbeat" in missing.stderr
    store.heartbeat("worker", f"{socket.gethostname()}-4242", {"status": "ok", "frames": 10})
    assert check(redis_url, prefix, "worker").returncode == 0
    store.drop_heartbeat("worker", f"{socket.gethostname()}-4242")
    assert check(redis_url, prefix, "worker").returncode == 1


@pytest.mark.timeout(60)
def test_worker_check_uses_an_explicit_worker_id(redis_url: str, names: dict[str, str], store: Store) -> None:
    prefix = names["redis_prefix"]
    store.heartbeat("worker", "maskwatch-worker-abc12", {"status": "degraded"})
    assert check(redis_url, prefix, "worker", MW_WORKER_ID="maskwatch-worker-abc12").returncode == 0
    other = check(redis_url, prefix, "worker", MW_WORKER_ID="maskwatch-worker-zzz99")
    assert other.returncode == 1 and "maskwatch-worker-zzz99" in other.stderr


@pytest.mark.timeout(60)
def test_producer_check_matches_its_host(redis_url: str, names: dict[str, str], store: Store) -> None:
    prefix = names["redis_prefix"]
    store.heartbeat("producer", "elsewhere", {"host": "another-host", "cameras": 2, "alive": 2})
    assert check(redis_url, prefix, "producer").returncode == 1
    store.heartbeat("producer", "mine", {"host": socket.gethostname(), "cameras": 2, "alive": 1})
    assert check(redis_url, prefix, "producer").returncode == 0


@pytest.mark.timeout(60)
def test_redis_down_is_unhealthy_unless_told_otherwise(names: dict[str, str]) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    out = check(dead, names["redis_prefix"], "worker")
    assert out.returncode == 1 and "redis unreachable" in out.stderr
    lenient = check(dead, names["redis_prefix"], "worker", "--redis-down-ok")
    assert lenient.returncode == 0 and "not judged" in lenient.stderr


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/healthz" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.mark.timeout(60)
def test_http_check(redis_url: str, names: dict[str, str]) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        assert check(redis_url, names["redis_prefix"], "http", f"http://127.0.0.1:{port}/healthz").returncode == 0
        bad = check(redis_url, names["redis_prefix"], "http", f"http://127.0.0.1:{port}/down")
        assert bad.returncode == 1 and "HTTP 503" in bad.stderr
    finally:
        server.shutdown()
        server.server_close()
    gone = check(redis_url, names["redis_prefix"], "http", f"http://127.0.0.1:{port}/healthz")
    assert gone.returncode == 1 and "unreachable" in gone.stderr
