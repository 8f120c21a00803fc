"""Frames → Kafka: key = camera id, raw JPEG value, Contract 1 headers. Never blocks a camera for long and never
holds more than a bounded number of bytes: a full buffer or a broker outage is a counted drop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError, NoBrokersAvailable

from maskwatch.buckets import TopicScheme
from maskwatch.frames import Frame
from producer.metrics import DROPPED_BROKER, SENT, CameraCounters, ProducerMetrics

logger = logging.getLogger(__name__)

HEADER_ALLOWANCE = 512  # key + Contract 1 headers + record overhead, generously
ERROR_LOG_INTERVAL_S = 10.0  # at most one "dropped" line per interval during a burst of failures
BURST_QUIET_S = 5.0  # a burst is over once frames are acknowledged and none failed for this long


def _describe(e: BaseException) -> str:
    text = str(e)
    return text if text.startswith(type(e).__name__) else f"{type(e).__name__}: {text}"


class Publisher:
    """One KafkaProducer shared by every camera of the process (it is thread-safe).

    kafka-python 2.3 no longer bounds its record buffer (`buffer_memory` is gone), so during an
    outage it would keep every frame until `delivery_timeout_ms`. The publisher bounds it itself:
    bytes handed to Kafka and not yet acknowledged or failed stay under `max_inflight_bytes`; a frame
    that would go over is dropped at once (`dropped_broker`). Frames that the broker never takes
    expire after `delivery_timeout_ms` and are counted the same way.

    When no broker answers at start, the producer is created in the background (retried with
    capped backoff); frames sent meanwhile are counted drops, so cameras run regardless.
    """

    def __init__(
        self,
        bootstrap: list[str],
        topic: str | TopicScheme,
        *,
        max_block_ms: int = 200,
        max_frame_bytes: int = 4 * 1024 * 1024,
        max_inflight_bytes: int = 16 * 1024 * 1024,
        request_timeout_ms: int = 4000,
        delivery_timeout_ms: int = 6000,
        metrics: ProducerMetrics | None = None,
        client_id: str = "maskwatch-producer",
        clock: Callable[[], float] = time.monotonic,
        security: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        # a frame goes to the topic of its capture time (time-bucketed topics on the embedded broker)
        self.scheme = topic if isinstance(topic, TopicScheme) else TopicScheme(topic)
        self._warmed: str = ""
        self.max_inflight_bytes = max_inflight_bytes
        self.metrics = metrics
        self.config: dict[str, Any] = {
            **(security or {}),
            "bootstrap_servers": bootstrap,
            "acks": 1,
            "linger_ms": 5,
            # a batch as big as frames are: the default (16 KiB) is smaller than one frame, so every frame
            # became a request of its own; batching several per partition halves the CPU per frame
            "batch_size": 1024 * 1024,
            "max_block_ms": max_block_ms,
            "max_request_size": max_frame_bytes + 64 * 1024,
            "request_timeout_ms": request_timeout_ms,
            "delivery_timeout_ms": max(delivery_timeout_ms, request_timeout_ms + 100),
            "retries": 3,
            # one request in flight per broker: a retried request cannot land behind a later one, so a camera's
            # `mw-seq` only ever rises in a partition and the workers can tell a retry's second copy from a gap
            "max_in_flight_requests_per_connection": 1,
            "reconnect_backoff_ms": 100,
            "reconnect_backoff_max_ms": 2000,
            "client_id": client_id,
            # a topic that is not there is an error, never created by asking for it (Tansu would create it)
            "allow_auto_create_topics": False,
        }
        self.producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._inflight = 0
        self._closed = threading.Event()
        self._connector: threading.Thread | None = None
        self._clock = clock
        self._last_error_log = -ERROR_LOG_INTERVAL_S
        self._last_failure = 0.0
        self._muted = 0
        self._failing = 0  # failures in the current burst

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Connect now if a broker answers, else keep trying in the background."""
        if self._try_connect():
            return
        logger.warning(
            "no Kafka broker yet, frames are dropped until one answers bootstrap=%s", ",".join(self.bootstrap)
        )
        self._connector = threading.Thread(target=self._connect_loop, name="kafka-connect", daemon=True)
        self._connector.start()

    def _try_connect(self) -> bool:
        try:
            producer = KafkaProducer(**self.config)
        except (NoBrokersAvailable, KafkaError, OSError) as e:
            logger.debug("kafka connect failed error=%s", e)
            return False
        with self._lock:
            if self._closed.is_set():
                producer.close(timeout=1)
                return True
            self.producer = producer
        logger.info("kafka producer connected bootstrap=%s topic=%s", ",".join(self.bootstrap), self.scheme.base)
        return True

    def _connect_loop(self) -> None:
        delay = 0.5
        while not self._closed.wait(delay):
            if self._try_connect():
                return
            delay = min(delay * 2, 5.0)

    @property
    def connected(self) -> bool:
        return self.producer is not None

    @property
    def inflight_bytes(self) -> int:
        return self._inflight

    # ---- sending ---------------------------------------------------------------------------

    def send(self, frame: Frame, counters: CameraCounters) -> bool:
        """Hand one frame to Kafka. True when accepted (it is counted `sent` once acknowledged, or
        `dropped_broker` if delivery fails); False, counted `dropped_broker`, when it could not be taken."""
        size = len(frame.jpeg) + HEADER_ALLOWANCE
        producer = self.producer
        refused = ""
        with self._lock:
            if producer is None:
                refused = "not connected"
            elif self._closed.is_set():
                refused = "closed"
            elif self._inflight + size > self.max_inflight_bytes:
                refused = f"send buffer full ({self._inflight} bytes unacknowledged)"
            else:
                self._inflight += size
        if refused:
            counters.add(DROPPED_BROKER)
            self._failed(frame.camera_id, refused)
            return False
        assert producer is not None
        try:
            fut = producer.send(self._topic(producer, frame.ts_ms), key=frame.key, value=frame.jpeg, headers=frame.headers())
        except (KafkaTimeoutError, KafkaError, AssertionError) as e:  # AssertionError: closed under us
            self._release(size)
            counters.add(DROPPED_BROKER)
            self._failed(frame.camera_id, _describe(e))
            return False

        def ok(_md: Any) -> None:
            self._release(size)
            counters.add(SENT)
            if self._failing and self._clock() - self._last_failure >= BURST_QUIET_S:
                self._recovered()

        def fail(exc: BaseException) -> None:
            self._release(size)
            counters.add(DROPPED_BROKER)
            self._failed(frame.camera_id, _describe(exc))

        fut.add_callback(ok)
        fut.add_errback(fail)
        return True

    def _topic(self, producer: KafkaProducer, ts_ms: int) -> str:
        """The frame's topic; with rotating topics, the next bucket's metadata is fetched ahead, off the camera's
        thread, so the first frame of a bucket does not wait for it."""
        topic = self.scheme.topic_for(ts_ms)
        if self.scheme.rotating:
            step = self.scheme.rotate_s * 1000
            nxt = self.scheme.topic_for(ts_ms + step)
            if nxt != self._warmed:
                self._warmed = nxt
                # kafka-python asks for every topic it ever sent to at each metadata refresh; weeks of buckets would
                # make that thousands of names: keep the previous bucket (frames still in flight), this and the next
                _track_only(producer, {self.scheme.topic_for(ts_ms - step), topic, nxt})
                threading.Thread(target=_warm, args=(producer, nxt), name="kafka-metadata", daemon=True).start()
        return topic

    def _release(self, size: int) -> None:
        with self._lock:
            self._inflight -= size
            inflight = self._inflight
        if self.metrics is not None:
            self.metrics.inflight_bytes.set(inflight)

    def _failed(self, camera: str, err: str) -> None:
        """Log the first failure of a burst, then at most one line per interval saying how many followed."""
        now = self._clock()
        with self._lock:
            self._failing += 1
            self._last_failure = now
            if now - self._last_error_log < ERROR_LOG_INTERVAL_S:
                self._muted += 1
                return
            self._last_error_log, muted, self._muted = now, self._muted, 0
        logger.warning(
            "frames dropped at the broker camera=%s error=%s muted_since_last=%d (next report in %.0f s at most)",
            camera,
            err,
            muted,
            ERROR_LOG_INTERVAL_S,
        )

    def _recovered(self) -> None:
        with self._lock:
            failed, self._failing, self._muted = self._failing, 0, 0
            self._last_error_log = -ERROR_LOG_INTERVAL_S
        if failed:
            logger.info("kafka delivery recovered dropped_in_burst=%d", failed)

    # ---- shutdown --------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> None:
        if self.producer is None:
            return
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            logger.warning("flush timed out timeout_s=%s", timeout_s)

    def close(self, timeout_s: float = 2.0) -> None:
        self._closed.set()
        if self._connector is not None:
            self._connector.join(timeout=3)
        with self._lock:
            producer, self.producer = self.producer, None
        if producer is not None:
            try:
                producer.flush(timeout=timeout_s)
            except KafkaTimeoutError:
                logger.warning("flush timed out at close timeout_s=%s inflight_bytes=%d", timeout_s, self._inflight)
            producer.close(timeout=timeout_s)


def _track_only(producer: KafkaProducer, topics: set[str]) -> None:
    """Forget the metadata of older bucket topics (kafka-python has no public call for it; a topic still needed is
    added again by the sender, so a race costs one metadata request, never a frame)."""
    client = getattr(getattr(producer, "_sender", None), "_client", None)
    if client is not None and hasattr(client, "set_topics"):
        client.set_topics(topics)


def _warm(producer: KafkaProducer, topic: str) -> None:
    """Fetch a topic's metadata now (the janitor created it ahead); a topic not there yet is looked up again later."""
    try:
        producer.partitions_for(topic)
    except (KafkaError, AssertionError) as e:
        logger.debug("topic metadata not fetched ahead topic=%s error=%s", topic, e)
