"""The producer's counters: frames by camera and reason, reconnects, encode time, measured rates; mirrored to Prometheus."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

CAPTURED = "captured"
SENT = "sent"  # acknowledged by the broker
DROPPED_BACKPRESSURE = "dropped_backpressure"  # the encoder could not keep up; the drop policy discarded it
DROPPED_BROKER = "dropped_broker"  # the broker refused it, timed out, or the send buffer was full
DROPPED_TOO_LARGE = "dropped_too_large"  # over the byte limit even after shrinking
ENCODE_ERRORS = "encode_errors"  # a camera JPEG that does not decode, or an encode that failed
REENCODED = "reencoded"  # shrunk to fit the byte limit, then sent (not a drop)
REASONS = (CAPTURED, SENT, DROPPED_BACKPRESSURE, DROPPED_BROKER, DROPPED_TOO_LARGE, ENCODE_ERRORS, REENCODED)
DROP_REASONS = (DROPPED_BACKPRESSURE, DROPPED_BROKER, DROPPED_TOO_LARGE, ENCODE_ERRORS)
STATUSES = ("online", "reconnecting", "offline", "ended")

ENCODE_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)


class RateMeter:
    """Events per second over the last `window_s` (or since the meter started, when that is shorter)."""

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self.started = self._clock()

    def mark(self) -> None:
        now = self._clock()
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()

    def rate(self) -> float:
        now = self._clock()
        with self._lock:
            self._trim(now)
            span = min(self.window_s, now - self.started)
            return len(self._times) / span if span > 0 else 0.0

    def reset(self) -> None:
        with self._lock:
            self._times.clear()
            self.started = self._clock()


class ProducerMetrics:
    """One registry per producer process (tests run several in one interpreter)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.frames = Counter(
            "maskwatch_producer_frames", "Frames by camera and what became of them", ["camera", "reason"], registry=r
        )
        self.reconnects = Counter(
            "maskwatch_producer_reconnects", "Reconnect attempts by camera", ["camera"], registry=r
        )
        self.encode_seconds = Histogram(
            "maskwatch_producer_encode_seconds",
            "Time to decode/resize/encode one frame",
            ["camera"],
            buckets=ENCODE_BUCKETS,
            registry=r,
        )
        self.frame_bytes = Histogram(
            "maskwatch_producer_frame_bytes",
            "Size of the JPEGs sent",
            buckets=(8e3, 16e3, 32e3, 64e3, 128e3, 256e3, 512e3, 1e6, 2e6, 4e6),
            registry=r,
        )
        self.camera_fps = Gauge(
            "maskwatch_producer_camera_fps", "Frames per second acknowledged by the broker", ["camera"], registry=r
        )
        self.camera_status = Gauge(
            "maskwatch_producer_camera_status",
            "1 for the camera's current status, 0 for the others",
            ["camera", "status"],
            registry=r,
        )
        self.inflight_bytes = Gauge(
            "maskwatch_producer_kafka_inflight_bytes", "Bytes handed to Kafka and not yet acknowledged", registry=r
        )
        self.cameras = Gauge("maskwatch_producer_cameras", "Cameras this producer runs", registry=r)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def camera(self, camera_id: str) -> CameraCounters:
        return CameraCounters(camera_id, self)

    def set_status(self, camera_id: str, status: str) -> None:
        for s in STATUSES:
            self.camera_status.labels(camera_id, s).set(1 if s == status else 0)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Start the /metrics endpoint; returns the port (useful with port 0)."""
        self._server, self._thread = start_http_server(port, addr, registry=self.registry)
        bound = int(self._server.server_port)
        logger.info("metrics endpoint listening addr=%s port=%d", addr, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None


class CameraCounters:
    """One camera's counts by reason, safe to bump from the capture, encoder and Kafka I/O threads."""

    def __init__(self, camera_id: str, metrics: ProducerMetrics | None = None) -> None:
        self.camera_id = camera_id
        self.metrics = metrics
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(REASONS, 0)
        self.reconnects = 0
        self.sent_rate = RateMeter()
        self.capture_rate = RateMeter()
        self._prom = {r: metrics.frames.labels(camera_id, r) for r in REASONS} if metrics else {}
        self._prom_encode = metrics.encode_seconds.labels(camera_id) if metrics else None
        self._prom_reconnects = metrics.reconnects.labels(camera_id) if metrics else None

    def add(self, reason: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._counts[reason] += n
        if reason == SENT:
            for _ in range(n):
                self.sent_rate.mark()
        elif reason == CAPTURED:
            for _ in range(n):
                self.capture_rate.mark()
        prom = self._prom.get(reason)
        if prom is not None:
            prom.inc(n)

    def reconnect(self) -> None:
        with self._lock:
            self.reconnects += 1
        if self._prom_reconnects is not None:
            self._prom_reconnects.inc()

    def encoded(self, seconds: float, nbytes: int) -> None:
        if self._prom_encode is not None and self.metrics is not None:
            self._prom_encode.observe(seconds)
            self.metrics.frame_bytes.observe(nbytes)

    def get(self, reason: str) -> int:
        with self._lock:
            return self._counts[reason]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._counts)
            out["reconnects"] = self.reconnects
        return out
