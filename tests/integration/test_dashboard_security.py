"""What the dashboard refuses: oversized or foreign uploads, other sites' pages (REST and Socket.IO), and any
request path that would reach the filesystem."""

from __future__ import annotations

import ast
import io
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
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

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
OPS = "https://ops.example.org"
EVIL = "http://evil.example"


@pytest.fixture
def make(redis_url: str, dashboard_store: Store) -> Iterator[Callable[..., Flask]]:
    """An app with settings overrides; the live emitter off (these tests are about requests)."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        app, _ = create_app(dashboard_settings(dashboard_store, redis_url, **overrides), dashboard_store, start_live=False)
        apps.append(app)
        return app

    yield build
    for app in apps:
        close_app(app)


def jpeg(width: int, height: int, noise: bool = False) -> bytes:
    img = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8) if noise else np.zeros((height, width, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and header announcing a canvas of width × height (the rest of the file is irrelevant)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 64


def upload(http: FlaskClient, raw: bytes, name: str = "x.jpg") -> Any:
    return http.post("/api/predict", data={"image": (io.BytesIO(raw), name)}, content_type="multipart/form-data")


# ---- uploads ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("raw", "status", "error"),
    [
        pytest.param(jpeg(200, 200, noise=True), 413, "image too large", id="bytes over max_upload_bytes"),
        pytest.param(png_header(100_000, 100_000), 413, "image too large", id="a decompression bomb's header"),
        pytest.param(b"GIF89a" + b"\x00" * 100, 415, "unsupported image type", id="gif"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "unsupported image type", id="svg"),
        pytest.param(b"%PDF-1.7\n" + b"\x00" * 100, 415, "unsupported image type", id="pdf"),
        pytest.param(png_header(64, 64), 400, "not an image", id="a png with nothing after its header"),
        pytest.param(b"", 400, "no image", id="empty"),
    ],
)
def test_uploads_are_limited_in_size_and_type(make: Callable[..., Flask], raw: bytes, status: int, error: str) -> None:
    http = make(max_upload_bytes=4096).test_client()
    r = upload(http, raw)
    assert r.status_code == status and r.mimetype == "application/json", r.data[:200]
    body = r.get_json()
    assert body["error"] == error
    if status == 415:
        assert body["allowed"] == ["image/jpeg", "image/png"]
    if status == 413 and raw.startswith(b"\x89PNG"):
        assert body["limit_pixels"] == 4096 * 2160 and body["detail"] == "100000x100000 pixels"


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 8x8 JPEG (a few hundred bytes) whose start-of-frame header announces width x height: a header bomb."""
    raw = jpeg(8, 8)
    i = raw.index(b"\xff\xc0")
    return raw[: i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + raw[i + 9 :]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("width", "height"), [(6300, 6300), (20000, 2000), (4097, 2160)])
def test_a_jpeg_header_bomb_is_refused_before_decoding(make: Callable[..., Flask], width: int, height: int) -> None:
    raw = jpeg_claiming(width, height)
    assert len(raw) < 1024
    r = upload(make().test_client(), raw)
    assert r.status_code == 413, r.data[:200]
    assert r.get_json() == {
        "error": "image too large",
        "detail": f"{width}x{height} pixels",
        "limit_pixels": 4096 * 2160,
    }


@pytest.mark.timeout(30)
def test_the_pixel_cap_is_a_setting(make: Callable[..., Flask]) -> None:
    r = upload(make(max_upload_pixels=64 * 64).test_client(), jpeg(65, 64))
    assert r.status_code == 413 and r.get_json()["limit_pixels"] == 64 * 64


@pytest.mark.timeout(30)
def test_a_body_beyond_the_request_limit_is_cut_off_before_it_is_read(make: Callable[..., Flask]) -> None:
    http = make(max_upload_bytes=1024).test_client()
    r = http.post("/api/predict", data=b"\xff\xd8\xff" + b"\x00" * (1024 + 64 * 1024 + 1), content_type="image/jpeg")
    assert r.status_code == 413 and r.get_json()["error"] == "request entity too large"
    assert len(jpeg(8, 8)) < 1024  # a small real image gets past both limits (and on to the model server)


# ---- origins ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("origin", "status", "cors"),
    [
        (None, 200, None),  # curl, the CLI, a same-origin GET
        ("http://localhost", 200, "http://localhost"),  # the page itself (the test client's host)
        (OPS, 200, OPS),  # configured
        (OPS + "/", 200, OPS + "/"),
        (EVIL, 403, None),
        ("http://localhost:9999", 403, None),  # another port is another origin
        ("https://localhost", 403, None),
        ("null", 403, None),  # a sandboxed iframe or a file:// page
    ],
)
def test_rest_answers_only_allowed_origins(
    make: Callable[..., Flask], dashboard_store: Store, origin: str | None, status: int, cors: str | None
) -> None:
    seed(dashboard_store, "gate-1", with_mask=1)
    http = make(cors_origins=OPS).test_client()
    r = http.get("/api/cameras", headers={"Origin": origin} if origin else {})
    assert r.status_code == status
    assert r.headers.get("Access-Control-Allow-Origin") == cors
    if status == 403:
        assert r.get_json()["error"] == "origin not allowed" and "camera" not in r.get_data(as_text=True)


@pytest.mark.timeout(30)
def test_preflight_from_an_allowed_origin_passes_even_with_a_token(make: Callable[..., Flask]) -> None:
    http = make(cors_origins=OPS, token="a-long-token").test_client()
    ask = {"Origin": OPS, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    r = http.options("/api/cameras", headers=ask)
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == OPS and "Authorization" in r.headers["Access-Control-Allow-Headers"]
    assert http.options("/api/cameras", headers={**ask, "Origin": EVIL}).status_code == 403
    assert http.get("/api/cameras", headers={"Origin": OPS}).status_code == 401, "CORS is no way around the token"
    ok = http.get("/api/cameras", headers={"Origin": OPS, "Authorization": "Bearer a-long-token"})
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == OPS


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("origin", "allowed"),
    [(None, True), ("http://localhost", True), (OPS, True), (EVIL, False), ("http://localhost.evil.example", False)],
)
def test_socketio_handshake_only_from_allowed_origins(make: Callable[..., Flask], origin: str | None, allowed: bool) -> None:
    http = make(cors_origins=OPS).test_client()
    r = http.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": origin} if origin else {})
    assert (r.status_code == 200) is allowed, r.data[:200]
    if allowed and origin:
        assert r.headers["Access-Control-Allow-Origin"] == origin
    if not allowed:
        assert "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.timeout(30)
def test_without_configured_origins_only_the_dashboard_itself(make: Callable[..., Flask]) -> None:
    http = make().test_client()
    assert http.get("/api/cameras", headers={"Origin": OPS}).status_code == 403
    assert http.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": OPS}).status_code == 400
    proxied = {"Origin": "https://dash.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "dash.example.org"}
    assert http.get("/api/cameras", headers=proxied).status_code == 200, "behind a TLS-terminating proxy"


# ---- the filesystem -----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_no_route_but_static_takes_a_path(make: Callable[..., Flask]) -> None:
    app = make()
    with_paths = [r.rule for r in app.url_map.iter_rules() if "<path:" in r.rule]
    assert with_paths == ["/static/<path:filename>"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "path",
    [
        "/static/../settings.py",
        "/static/%2e%2e/settings.py",
        "/static/..%2fsettings.py",
        "/static/vendor/../../settings.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static//etc/passwd",
        "/static/..\\settings.py",
        "/api/cameras/..%2f..%2fetc%2fpasswd",
        "/cameras/..%2f..%2fsettings.py",
        "/api/cameras/gate-1/snapshots/..%2f..%2fsettings.jpg",
    ],
)
def test_traversal_reaches_nothing(make: Callable[..., Flask], dashboard_store: Store, path: str) -> None:
    seed(dashboard_store, "gate-1", with_mask=1)
    r = make().test_client().get(path, follow_redirects=True)
    assert r.status_code in (404, 400), (path, r.status_code)
    text = r.get_data(as_text=True)
    assert "DashboardSettings" not in text and "root:" not in text and "[project]" not in text


# Reads a request could steer would show up as one of these calls; the ones below take no request data.
FILE_CALLS = {"open", "send_file", "send_from_directory", "read_text", "read_bytes", "imread", "load_site", "listdir", "iterdir", "is_file"}
ALLOWED = {
    ("context.py", "read_text"),  # vendor.json, a fixed path, at start
    ("context.py", "is_file"),  # which vendored browser libraries exist, fixed names
    ("site.py", "load_site"),  # the site file named by settings, at start
}


@pytest.mark.timeout(30)
def test_the_only_file_reads_are_fixed_at_start() -> None:
    found = set()
    for module in sorted(DASHBOARD.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in FILE_CALLS:
                    found.add((module.name, name))
    assert found <= ALLOWED, found - ALLOWED


# ---- secure by default: Host allow-list, headers, sessions, failed-login limits -------------------------------

TOKEN = "right-token-42"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("host", "status"),
    [("localhost", 200), ("127.0.0.1:5000", 200), ("[::1]:5000", 200), ("evil.example", 400), ("rebind.evil.example:5000", 400)],
)
def test_only_allowed_hosts_are_answered(make: Callable[..., Flask], host: str, status: int) -> None:
    """A DNS-rebinding page reaches the dashboard under its own name: it gets 400, not the cameras."""
    http = make().test_client()
    r = http.get("/api/cameras", headers={"Host": host, "Origin": f"http://{host}"})
    assert r.status_code == status, r.data[:200]
    if status == 400:
        assert r.get_json()["error"] == "host not allowed" and "Access-Control-Allow-Origin" not in r.headers
        assert http.get("/socket.io/?EIO=4&transport=polling", headers={"Host": host}).status_code in (200, 400)
    assert http.get("/healthz", headers={"Host": host}).status_code == 200, "probes address pods by IP"


@pytest.mark.timeout(30)
def test_a_rebinding_page_gets_no_socket(make: Callable[..., Flask]) -> None:
    app = make()
    sio = app.extensions["socketio"]
    from maskwatch.payloads import NAMESPACE

    refused = sio.test_client(app, namespace=NAMESPACE, headers={"Host": "evil.example"})
    assert not refused.is_connected(NAMESPACE)
    ok = sio.test_client(app, namespace=NAMESPACE)
    assert ok.is_connected(NAMESPACE)
    ok.disconnect(NAMESPACE)


@pytest.mark.timeout(30)
def test_configured_hosts_replace_the_default(make: Callable[..., Flask]) -> None:
    http = make(allowed_hosts="dash.example.org").test_client()
    assert http.get("/api/cameras", headers={"Host": "dash.example.org"}).status_code == 200
    assert http.get("/api/cameras", headers={"Host": "localhost"}).status_code == 400


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", ["/", "/api/cameras", "/api/nope", "/login", "/static/app.css", "/healthz"])
def test_security_headers_on_every_answer(make: Callable[..., Flask], path: str) -> None:
    r = make(token=TOKEN).test_client().get(path)
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in r.headers, "no HSTS over plain HTTP"


@pytest.mark.timeout(30)
def test_behind_a_tls_proxy_cookies_are_secure_and_hsts_is_sent(make: Callable[..., Flask]) -> None:
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "localhost"}
    trusting = make(token=TOKEN, trusted_proxies=1).test_client()
    r = trusting.post("/login", data={"token": TOKEN, "next": "/"}, headers=proxied)
    assert r.status_code == 302
    cookie = r.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert TOKEN not in cookie
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")

    untrusting = make(token=TOKEN).test_client()  # no proxy configured: X-Forwarded-Proto is not believed
    r = untrusting.post("/login", data={"token": TOKEN, "next": "/"}, headers=proxied)
    assert "Secure" not in r.headers["Set-Cookie"] and "Strict-Transport-Security" not in r.headers


@pytest.mark.timeout(30)
def test_wrong_tokens_are_limited_per_client_and_logged_without_the_token(
    make: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make(token=TOKEN, auth_max_failures=3, auth_window_s=60, trusted_proxies=1)
    http = app.test_client()
    attacker = {"X-Forwarded-For": "198.51.100.7"}
    with caplog.at_level("WARNING", logger="dashboard.auth"):
        for guess in ("guess-0001", "guess-0002"):
            assert http.get("/api/cameras", headers={**attacker, "Authorization": f"Bearer {guess}"}).status_code == 401
        assert http.post("/login", data={"token": "guess-0003"}, headers=attacker).status_code == 401
        for attempt in (
            http.get("/api/cameras", headers={**attacker, "Authorization": f"Bearer {TOKEN}"}),  # even the right one
            http.post("/login", data={"token": TOKEN}, headers=attacker),
            http.get(f"/api/cameras?token={TOKEN}", headers=attacker),
        ):
            assert attempt.status_code == 429 and 1 <= int(attempt.headers["Retry-After"]) <= 60
    failures = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert len(failures) == 3 and all("remote=198.51.100.7" in m for m in failures)
    assert not any("guess-000" in r.getMessage() or TOKEN in r.getMessage() for r in caplog.records)

    other = {"X-Forwarded-For": "192.0.2.44"}
    assert http.get("/api/cameras", headers={**other, "Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.timeout(30)
def test_wrong_socket_tokens_count_too(make: Callable[..., Flask]) -> None:
    from maskwatch.payloads import NAMESPACE

    app = make(token=TOKEN, auth_max_failures=2, auth_window_s=60)
    sio = app.extensions["socketio"]
    for guess in ("guess-0001", "guess-0002"):
        assert not sio.test_client(app, namespace=NAMESPACE, auth={"token": guess}).is_connected(NAMESPACE)
    assert not sio.test_client(app, namespace=NAMESPACE, auth={"token": TOKEN}).is_connected(NAMESPACE), "throttled"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "env", "refused"),
    [
        (["--host", "0.0.0.0"], {}, True),
        (["--host", "0.0.0.0", "--insecure"], {}, False),
        (["--host", "0.0.0.0"], {"MW_DASHBOARD_TOKEN": TOKEN}, False),
    ],
)
def test_open_to_the_network_only_with_a_token(
    redis_url: str, args: list[str], env: dict[str, str], refused: bool, tmp_path: Path
) -> None:
    import os

    from maskwatch.procs import Child, free_port, port_open, py

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MW_")}
    port = free_port()
    argv = py("dashboard", "--port", str(port), "--redis-prefix", "tsec:", *args)
    proc = Child("dashboard", argv, {"MW_REDIS_URL": redis_url, **env}, base_env, DASHBOARD.parent).start(tmp_path)
    try:
        if refused:
            assert proc.finish(30) == 2
            out = proc.log()
            assert "refusing to start" in out and "MW_DASHBOARD_TOKEN" in out and "--insecure" in out
            return
        proc.wait_ready(lambda: port_open("127.0.0.1", port), 30, "the dashboard")
        assert proc.stop(15) == 0, proc.log()[-3000:]
    finally:
        proc.stop(5)
