"""Delivers alert events to the site's webhook URL as JSON POSTs, from a thread of its own, so nothing waits on it.

Each POST has a deadline; a failed one (network error, timeout, 408, 429, 5xx) is retried with doubling
pauses (1 s, 2 s, 4 s, …); any other answer outside 2xx is final. Events wait in a bounded queue: when it is
full the newest event is dropped and counted, never the caller blocked.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

QUEUE_SIZE = 200
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
RETRY_STATUSES = frozenset({408, 429})
USER_AGENT = "MaskWatch-alerts/1"

# (url, body, timeout_s) -> HTTP status; raises OSError for a network failure or timeout
Poster = Callable[[str, bytes, float], int]


def post_json(url: str, body: bytes, timeout_s: float) -> int:
    """POST `body` as application/json; the HTTP status (an error status is returned, not raised)."""
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": USER_AGENT}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - the operator's own URL
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class WebhookSender:
    """A queue and one delivery thread for one webhook URL."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        retries: int,
        host: str,
        poster: Poster = post_json,
        first_backoff_s: float = FIRST_BACKOFF_S,
    ) -> None:
        self.url = url
        self.host = host  # for logs: the URL itself may hold a secret
        self.timeout_s = timeout_s
        self.retries = retries
        self.poster = poster
        self.first_backoff_s = first_backoff_s
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(QUEUE_SIZE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = {"sent": 0, "failed": 0, "dropped": 0, "retries": 0}

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        left = self._queue.qsize()
        if left:
            logger.warning("alert webhook stopped with events undelivered host=%s events=%d", self.host, left)

    def send(self, event: dict[str, Any]) -> bool:
        """Queue `event` for delivery; False (and counted as dropped) when the queue is full."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.stats["dropped"] += 1
            logger.warning("alert webhook queue full, event dropped host=%s alert=%s", self.host, event.get("alert_id"))
            return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._deliver(event)

    def _deliver(self, event: dict[str, Any]) -> bool:
        body = json.dumps(event, separators=(",", ":")).encode()
        backoff = self.first_backoff_s
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            try:
                status = self.poster(self.url, body, self.timeout_s)
            except OSError as exc:
                logger.warning(
                    "alert webhook failed host=%s alert=%s attempt=%d error=%s",
                    self.host,
                    event.get("alert_id"),
                    attempt + 1,
                    exc,
                )
                continue
            if 200 <= status < 300:
                self.stats["sent"] += 1
                logger.info("alert webhook delivered host=%s alert=%s state=%s", self.host, event.get("alert_id"), event.get("state"))
                return True
            logger.warning(
                "alert webhook refused host=%s alert=%s attempt=%d status=%d",
                self.host,
                event.get("alert_id"),
                attempt + 1,
                status,
            )
            if status < 500 and status not in RETRY_STATUSES:
                break
        self.stats["failed"] += 1
        logger.error("alert webhook gave up host=%s alert=%s", self.host, event.get("alert_id"))
        return False
