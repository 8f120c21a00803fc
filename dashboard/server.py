"""The HTTP server: a threaded WSGI server (WebSocket through simple-websocket) that stops on request."""

from __future__ import annotations

import logging
import threading

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

logger = logging.getLogger(__name__)


class Server:
    """Serves `app` on (host, port) from a background thread; `port=0` picks a free port (see `.port`)."""

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
