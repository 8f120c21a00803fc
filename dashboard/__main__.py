"""`python -m dashboard`: parse flags over MW_* settings, check them, serve under gunicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Sequence

from flask import Flask
from pydantic import ValidationError

from dashboard.app import close_app, create_app
from dashboard.context import dashboard
from dashboard.server import ProductionServer
from dashboard.settings import DashboardSettings
from dashboard.site import SiteError, load_site_view
from maskwatch.logs import setup_logging
from maskwatch.settings import settings_from_argv
from maskwatch.store import Store
from maskwatch.tfprotos import use_protos_only

logger = logging.getLogger("dashboard")

DESCRIPTION = (
    "MaskWatch dashboard: live compliance per camera over Socket.IO, and the REST API. Flags override environment "
    "variables (MW_REDIS_URL, MW_SITE_FILE, MW_DASHBOARD_PORT, MW_DASHBOARD_TOKEN, ...); the access token is read from "
    "MW_DASHBOARD_TOKEN only, never from a flag."
)
FLAGS = (
    "host",
    "port",
    "redis_url",
    "redis_prefix",
    "serving",
    "window_minutes",
    "message_queue",
    "cors_origins",
    "allowed_hosts",
    "trusted_proxies",
    "insecure",
    "log_level",
    "log_format",
)


def parse_settings(argv: Sequence[str] | None = None) -> DashboardSettings:
    """Flags over MW_* environment variables, as the process runs with them; raises ValidationError."""
    return settings_from_argv(DashboardSettings, argv, "python -m dashboard", DESCRIPTION, *FLAGS, site_file="--site")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except ValidationError as exc:
        print(f"dashboard: bad configuration\n{exc}", file=sys.stderr)
        return 2
    try:
        site = load_site_view(settings.site_file)
    except SiteError as exc:
        print(f"dashboard: bad site file\n{exc}", file=sys.stderr)
        return 2
    problem = settings.exposure_problem(access_tokens=bool(site.access))
    if problem is not None:
        print(f"dashboard: refusing to start: {problem}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format, service="dashboard")
    try:
        check_can_listen(settings.host, settings.port)
    except OSError as exc:
        logger.error("cannot listen host=%s port=%d error=%s", settings.host, settings.port, exc)
        return 1

    def build() -> Flask:
        store = Store.from_url(settings.redis_url, settings.redis_prefix)
        app, _ = create_app(settings, store, site=site)
        logger.info(
            "dashboard ready url=%s redis=%s window_minutes=%d token=%s message_queue=%s site_file=%s alerts=%s "
            "threads=%d request_timeout_s=%s",
            url_of(settings.host, settings.port),
            settings.redis_url.split("@")[-1],
            settings.window_minutes,
            "on" if settings.token is not None else "off",
            settings.message_queue,
            settings.site_file or "none",
            "on" if site.alerting else "off",
            settings.server_threads,
            settings.request_timeout_s,
        )
        return app

    def close(app: Flask) -> None:
        close_app(app)
        dashboard(app).store.close()

    server = ProductionServer(
        build,
        close,
        host=settings.host,
        port=settings.port,
        threads=settings.server_threads,
        request_timeout_s=settings.request_timeout_s,
    )
    try:
        server.run()  # gunicorn's arbiter: returns by SystemExit once SIGTERM/SIGINT stopped the worker
    except SystemExit as exc:
        if exc.code not in (0, None):
            logger.error("dashboard server stopped with status=%s", exc.code)
            return int(exc.code) if isinstance(exc.code, int) else 1
    logger.info("dashboard exited")
    return 0


def check_can_listen(host: str, port: int) -> None:
    """Raise OSError when (host, port) cannot be bound (in use, no such address), before gunicorn retries it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))


def url_of(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


if __name__ == "__main__":
    use_protos_only()  # /check needs TF Serving's protos, not TensorFlow: nothing imported them yet (predict.py waits)
    sys.exit(main())
