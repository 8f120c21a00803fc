"""Builds the dashboard: Flask app, Socket.IO server (optionally over a Redis message queue), views and live emitter."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import redis
import socketio
from flask import Flask, request
from flask_socketio import SocketIO, join_room
from werkzeug.exceptions import HTTPException

from dashboard import api, auth, cors, openapi, pages, predict, security
from dashboard.context import EXTENSION, PACKAGE_DIR, Dashboard, dashboard, missing_vendor_files
from dashboard.live import LiveEmitter
from dashboard.settings import DashboardSettings
from dashboard.site import SiteView, load_site_view
from maskwatch.payloads import NAMESPACE
from maskwatch.store import Store

logger = logging.getLogger(__name__)

QUEUE_EXTENSION = "maskwatch_queue"


LISTEN_EXITED = "pubsub listen() exited unexpectedly"


class _ClosedListenerFilter(logging.Filter):
    """Drops python-socketio's "listen() exited" error for listener threads that ended because we closed them."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.thread in self.threads and record.getMessage() == LISTEN_EXITED)


_closed_listeners = _ClosedListenerFilter()


class StoppableRedisManager(socketio.RedisManager):  # type: ignore[misc]
    """socketio's Redis message queue whose listener polls, survives Redis restarts, and ends on `close()`."""

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url, channel=channel, redis_options={"socket_connect_timeout": 3, "health_check_interval": 10})
        self._closed = threading.Event()
        self.connected: bool = False

    def _listen(self) -> Iterator[bytes]:  # the hook PubSubManager subclasses implement
        backoff = 1.0
        while not self._closed.is_set():
            try:
                if not self.connected:
                    self._redis_connect()
                    self.pubsub.subscribe(self.channel)
                    backoff = 1.0
                msg = self.pubsub.get_message(timeout=1.0)
            except (redis.RedisError, OSError) as exc:
                logger.warning("socket.io message queue unreachable, retrying in %.0fs error=%s", backoff, exc)
                self.connected = False
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if msg is not None and msg.get("type") == "message":
                yield msg["data"]
        if self.pubsub is not None:
            self.pubsub.close()
        # PubSubManager._thread ends when _listen returns, but logs that as an error: not for a close we asked for.
        server_logger = self.server.logger
        if _closed_listeners not in server_logger.filters:
            server_logger.addFilter(_closed_listeners)
        _closed_listeners.threads.add(threading.get_ident())

    def close(self) -> None:
        self._closed.set()


def create_app(
    settings: DashboardSettings,
    store: Store,
    *,
    start_live: bool = True,
    replica_id: str | None = None,
    site: SiteView | None = None,
) -> tuple[Flask, SocketIO]:
    """The dashboard app over `store`. With `start_live` the live emitter runs at once; `close_app` stops it.

    `site` defaults to the site file named by `settings.site_file` (a bad one raises SiteError).
    """
    if site is None:
        site = load_site_view(settings.site_file)
    origins = cors.OriginPolicy(settings.allowed_origins())
    app = Flask("dashboard", root_path=str(PACKAGE_DIR), static_folder="static", template_folder="templates")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + 64 * 1024
    app.json.sort_keys = False  # type: ignore[attr-defined]

    options: dict[str, Any] = {
        "async_mode": "threading",
        "ping_interval": 20,
        "ping_timeout": 20,
        # never None (same host only, but blind to the configured origins) nor [] (no check at all)
        "cors_allowed_origins": origins.socketio_check,
        "cors_credentials": False,
    }
    if settings.message_queue:
        queue = StoppableRedisManager(settings.redis_url, channel=store.keys.socketio_channel())
        options["client_manager"] = queue
        app.extensions[QUEUE_EXTENSION] = queue
    sio = SocketIO(app, **options)
    live = LiveEmitter(sio, store, settings, replica_id=replica_id, site=site)
    app.extensions[EXTENSION] = Dashboard(settings=settings, store=store, live=live, site=site)

    security.install(app, settings)  # after SocketIO(app): ProxyFix wraps the Socket.IO middleware too
    cors.install(app, origins)  # before auth: a CORS preflight carries no credentials
    auth.install(app, settings.token_value(), site.access)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(predict.bp)
    app.register_blueprint(openapi.bp)
    _install_error_handlers(app)
    _install_live_namespace(sio)

    missing = missing_vendor_files()
    if missing:
        logger.warning("browser libraries missing (run: npm ci --prefix dashboard) files=%s", ",".join(missing))
    if start_live:
        live.start()
    return app, sio


def close_app(app: Flask) -> None:
    """Stop what `create_app` started (emitter, message-queue listener, model channel); the store stays open."""
    dashboard(app).live.stop()
    queue = app.extensions.get(QUEUE_EXTENSION)
    if queue is not None:
        queue.close()
    client = app.extensions.get(predict.CLIENT_EXTENSION)
    if client is not None:
        client.close()


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            return api.json_http_error(exc)
        return exc

    @app.errorhandler(redis.RedisError)
    def _redis(exc: redis.RedisError) -> Any:
        logger.warning("request failed, Redis unavailable path=%s error=%s", request.path, exc)
        if request.path.startswith("/api/"):
            return api.json_redis_error(exc)
        return "Redis is unavailable; the dashboard will recover when it is back.", 503


def _install_live_namespace(sio: SocketIO) -> None:
    @sio.on("connect", namespace=NAMESPACE)
    def _connect(auth_data: dict[str, Any] | None = None) -> bool:
        d = dashboard()
        hosts = d.settings.host_allow_list()
        if hosts is not None and security.host_name(request.host) not in hosts:
            logger.warning("socket refused, host not allowed host=%s remote=%s", request.host[:100], request.remote_addr)
            return False
        who = auth.check_socket(d.settings.token_value(), request, auth_data if isinstance(auth_data, dict) else None)
        if who is None:
            logger.info("socket refused, no valid token remote=%s", request.remote_addr)
            return False
        sid = request.sid  # type: ignore[attr-defined]
        for room in who.rooms():  # events go to rooms per camera, zone and scope (dashboard/access.py)
            join_room(room, sid=sid, namespace=NAMESPACE)
        try:
            d.live.send_snapshot(sid, who)
        except (redis.RedisError, OSError) as exc:
            logger.warning("no snapshot for new client, Redis unavailable error=%s", exc)
        return True
