"""The HTTP servers: gunicorn's threaded worker for `python -m dashboard`, and Werkzeug's in-process one for tests.

Flask-SocketIO's deployment guide names gunicorn's threaded worker with simple-websocket for applications that
cannot use eventlet or gevent (ours calls gRPC and TensorFlow's protos): one worker process, `threads`
threads, WebSocket upgrades handled by simple-websocket. Our worker class adds a read timeout per request, so
half-sent requests (slowloris) free their thread after `request_timeout_s`, and closes the live sockets when
asked to stop, so a stop does not wait for browsers to leave.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker
from werkzeug.serving import BaseWSGIServer, make_server

logger = logging.getLogger(__name__)


class _Logs(glogging.Logger):  # type: ignore[misc]
    """gunicorn's messages go through our logging setup (key=value); no access log."""

    def setup(self, cfg: Any) -> None:
        self.error_log.propagate = True
        self.error_log.setLevel(logging.INFO)
        self.access_log.propagate = False
        self.access_log.setLevel(logging.CRITICAL)


class DashboardWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's threaded worker: a read timeout on every request but WebSocket upgrades; live sockets closed
    on stop (`on_stop` is called from a thread when SIGTERM or SIGINT arrives)."""

    read_timeout_s: float = 10.0
    on_stop: Callable[[], None] | None = None

    def handle(self, conn: Any) -> Any:
        conn.sock.settimeout(self.read_timeout_s)
        return super().handle(conn)

    def handle_request(self, req: Any, conn: Any) -> Any:
        if any(name == "UPGRADE" and value.lower() == "websocket" for name, value in req.headers):
            conn.sock.settimeout(None)  # a live socket stays open as long as the browser does
        return super().handle_request(req, conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, (TimeoutError, socket.timeout)):
            logger.info("request dropped, client too slow remote=%s timeout_s=%s", addr, self.read_timeout_s)
            return
        super().handle_error(req, client, addr, exc)

    def _stop_live(self) -> None:
        if DashboardWorker.on_stop is not None:
            threading.Thread(target=DashboardWorker.on_stop, name="stop-live", daemon=True).start()

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._stop_live()
        super().handle_exit(sig, frame)

    def handle_quit(self, sig: int, frame: Any) -> None:
        # SIGINT: stop like SIGTERM (gunicorn's quick exit would skip closing the app)
        self.handle_exit(sig, frame)


class ProductionServer(BaseApplication):  # type: ignore[misc]
    """`build()` served by gunicorn (one worker, `threads` threads); `run()` returns when stopped (SIGTERM/SIGINT).

    The app is built in the worker process, after the fork, so its threads (live emitter, message queue
    listener) run there; `close(app)` runs in the worker when it stops.
    """

    def __init__(
        self,
        build: Callable[[], Flask],
        close: Callable[[Flask], None],
        *,
        host: str,
        port: int,
        threads: int,
        request_timeout_s: float,
        graceful_timeout_s: float = 5.0,
    ) -> None:
        self._build = build
        self._close = close
        self.options = {
            "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "workers": 1,  # Socket.IO needs sticky sessions: one process (replicas scale behind a balancer)
            "worker_class": f"{__name__}.DashboardWorker",
            "threads": threads,
            "worker_connections": max(1000, threads * 4),
            "keepalive": 5,
            "graceful_timeout": max(1, round(graceful_timeout_s)),
            "timeout": 60,
            "logger_class": f"{__name__}._Logs",
            "limit_request_line": 8190,
            "worker_exit": self._worker_exit,
            "post_worker_init": self._post_worker_init,
            "proc_name": "maskwatch-dashboard",
        }
        DashboardWorker.read_timeout_s = request_timeout_s
        self._app: Flask | None = None
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        self._app = self._build()
        return self._app

    def _post_worker_init(self, worker: Any) -> None:
        app = self._app
        if app is not None:
            sio = app.extensions.get("socketio")
            DashboardWorker.on_stop = (lambda: _close_sockets(sio)) if sio is not None else None
        logger.info("dashboard worker ready pid=%d threads=%d", worker.pid, self.cfg.threads)

    def _worker_exit(self, server: Any, worker: Any) -> None:
        if self._app is not None:
            self._close(self._app)


def _close_sockets(sio: Any) -> None:
    """Disconnect every live client, so the threads serving them end before the worker stops."""
    try:
        sio.server.eio.disconnect()
    except (OSError, RuntimeError, ValueError) as exc:
        logger.warning("live sockets not closed cleanly error=%s", exc)


class Server:
    """Werkzeug's threaded server for `app` on (host, port) in a thread of this process, for tests and benchmarks
    that need the app's objects; `port=0` picks a free port (see `.port`). Not for production."""

    def __init__(self, app: Flask, host: str, port: int) -> None:
        self._httpd: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self.host = host
        self.port = int(self._httpd.server_port)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="http")

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> Server:
        self._thread.start()
        logger.info("dashboard listening url=%s", self.url)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, wait for the accept loop, close the socket (open connections are daemon threads)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout_s)
        self._httpd.server_close()
        logger.info("dashboard stopped url=%s", self.url)
