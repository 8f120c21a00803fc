"""Builds the producer (metrics, Redis, Kafka publisher, cameras), runs its status/heartbeat/reload loop, stops it cleanly."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from typing import TypeVar

import redis

from maskwatch.site import CameraConfig, SiteConfig, SiteError, demo_site, load_site
from maskwatch.store import Store
from producer.camera import Camera, CameraOptions
from producer.metrics import DROP_REASONS, SENT, ProducerMetrics
from producer.publisher import Publisher
from producer.settings import ProducerSettings
from producer.supervisor import SourceFactory, Supervisor

logger = logging.getLogger(__name__)

T = TypeVar("T")
HEARTBEAT_INTERVAL_S = 2.0
TICK_S = 1.0


def shard_of(cameras: list[CameraConfig], shard: str) -> list[CameraConfig]:
    """The cameras of shard i of n: those whose id hashes (CRC-32) to i mod n. By id, not by position, so
    adding or removing a camera in the file never moves the others to another producer."""
    i, n = (int(x) for x in shard.split("/"))
    if not 0 <= i < n:
        raise ValueError(f"shard {shard}: index must be in [0, {n})")
    return [c for c in cameras if zlib.crc32(c.id.encode()) % n == i]


def load(settings: ProducerSettings) -> SiteConfig:
    if settings.site_file:
        return load_site(settings.site_file, check_sources=True)
    return demo_site(settings.demo_cameras, settings.demo_fps)


def my_cameras(site: SiteConfig, settings: ProducerSettings) -> list[CameraConfig]:
    return [c for c in shard_of(site.cameras, settings.shard) if c.enabled]


class Producer:
    """The main loop's state: everything `run` wires together, and the reload it performs."""

    def __init__(
        self,
        settings: ProducerSettings,
        store: Store,
        publisher: Publisher,
        metrics: ProducerMetrics,
        producer_id: str,
        source_factory: SourceFactory | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.producer_id = producer_id
        self.wake = threading.Event()
        self.site_name = ""
        options = CameraOptions(
            max_frame_bytes=settings.max_frame_bytes,
            reconnect_max_s=settings.reconnect_max_s,
            offline_after_s=settings.offline_after_s,
            max_frames=settings.max_frames,
        )
        self.supervisor = Supervisor(publisher, producer_id, options, metrics, self._on_status, source_factory)
        self.reload_gen: int | None = None  # the last reload request applied (None until Redis answered once)
        self.reload_ok = True
        self.reload_msg = "started"
        self.metrics_port: int | None = None
        self._redis_down_since = 0.0

    def _on_status(self, cam: Camera, status: str) -> None:
        self.metrics.set_status(cam.id, status)
        self.wake.set()

    # ---- site --------------------------------------------------------------------------------------

    def apply(self, site: SiteConfig) -> str:
        cams = my_cameras(site, self.settings)
        self.site_name = site.site
        if cams:  # before the first frame: the workers count only cameras the site lists (registered here)
            self._redis("register cameras", lambda: self.store.register_cameras([c.id for c in cams]))
        changes = self.supervisor.apply(site.site, cams)
        self.metrics.cameras.set(len(self.supervisor.cameras))
        if not cams:
            logger.warning(
                "no camera for this producer site=%s shard=%s (waiting for a reload)", site.site, self.settings.shard
            )
        return changes.summary()

    def reload(self, why: str) -> None:
        try:
            site = load(self.settings)
        except SiteError as e:
            self.reload_ok, self.reload_msg = False, str(e)
            logger.error("site file not reloaded, cameras unchanged why=%s error=%s", why, e)
            return
        summary = self.apply(site)
        self.reload_ok, self.reload_msg = True, summary
        logger.info("site reloaded why=%s %s", why, summary)

    # ---- Redis -------------------------------------------------------------------------------------

    def _redis(self, what: str, fn: Callable[[], T]) -> tuple[bool, T | None]:
        """Run one Redis call: (True, result), or (False, None) when Redis is down. An outage is logged once
        when it starts and once when it ends; cameras keep sending meanwhile."""
        try:
            result = fn()
        except redis.RedisError as e:
            if not self._redis_down_since:
                self._redis_down_since = time.monotonic()
                logger.warning("redis unavailable, status not written (cameras keep sending) what=%s error=%s", what, e)
            return False, None
        if self._redis_down_since:
            logger.info("redis back down_s=%.0f", time.monotonic() - self._redis_down_since)
            self._redis_down_since = 0.0
        return True, result

    def write_status(self) -> None:
        rows = self.supervisor.status_rows()
        removed = [cid for cid in rows if cid not in self.supervisor.cameras]  # gone from the site file: retired
        if rows and not self._redis("camera status", lambda: self.store.set_cameras_fields(rows, removed))[0]:
            self.supervisor.restore_retired(rows)
        for cid, cam in self.supervisor.cameras.items():
            self.metrics.camera_fps.labels(cid).set(cam.counters.sent_rate.rate())

    def heartbeat(self) -> None:
        cams = list(self.supervisor.cameras.values())
        snaps = [c.counters.snapshot() for c in cams]
        fields = {
            "site": self.site_name,
            "site_file": self.settings.site_file or "",
            "shard": self.settings.shard,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "cameras": len(cams),
            "alive": sum(c.alive for c in cams),
            "online": sum(c.status == "online" for c in cams),
            "fps": round(sum(c.counters.sent_rate.rate() for c in cams), 2),
            "sent": sum(s[SENT] for s in snaps),
            "dropped": sum(s[r] for s in snaps for r in DROP_REASONS),
            "kafka_connected": int(self.publisher.connected),
            "inflight_bytes": self.publisher.inflight_bytes,
            "metrics_port": self.metrics_port if self.metrics_port is not None else "",
            "reload_gen": self.reload_gen or 0,
            "reload_ok": int(self.reload_ok),
            "reload_msg": self.reload_msg[:2000],
        }
        self._redis("heartbeat", lambda: self.store.heartbeat("producer", self.producer_id, fields))

    def drop_heartbeat(self) -> None:
        self._redis("heartbeat", lambda: self.store.drop_heartbeat("producer", self.producer_id))

    def log_totals(self) -> None:
        for cid, state in self.supervisor.states.items():
            counts = " ".join(f"{k}={v}" for k, v in state.counters.snapshot().items())
            logger.info("camera totals camera=%s seq=%d %s", cid, state.seq, counts)

    def poll_reload_request(self) -> None:
        ok, gen = self._redis("reload request", self.store.producer_reload_generation)
        if not ok or gen is None:
            return
        if self.reload_gen is None:
            self.reload_gen = gen  # requests made before this producer started are not for it
        elif gen > self.reload_gen:
            self.reload_gen = gen
            self.reload("request")

    # ---- main loop ---------------------------------------------------------------------------------

    def loop(self, stop: threading.Event, reload_requested: threading.Event) -> None:
        next_status = next_beat = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if reload_requested.is_set():
                reload_requested.clear()
                self.reload("SIGHUP")
                next_status = 0.0
            self.poll_reload_request()
            if self.wake.is_set() or now >= next_status:
                self.wake.clear()
                self.write_status()
                next_status = now + self.settings.status_interval_s
            if now >= next_beat:
                self.heartbeat()
                next_beat = now + HEARTBEAT_INTERVAL_S
            if self.supervisor.all_done:
                logger.info("every camera has finished")
                return
            self.wake.wait(min(TICK_S, max(0.05, next_status - time.monotonic())))


def run(
    settings: ProducerSettings,
    stop: threading.Event,
    reload_requested: threading.Event | None = None,
    source_factory: SourceFactory | None = None,
) -> int:
    """Run until `stop` (or until every camera has finished). A bad site file raises SiteError before anything starts."""
    site = load(settings)
    my_cameras(site, settings)  # a bad --shard fails here, before anything starts
    producer_id = uuid.uuid4().hex[:12]
    reload_requested = reload_requested or threading.Event()
    logger.info(
        "producer starting producer=%s site=%s cameras=%d shard=%s",
        producer_id,
        site.site,
        len(my_cameras(site, settings)),
        settings.shard,
    )
    with contextlib.ExitStack() as stack:
        metrics = ProducerMetrics()
        store = Store.from_url(settings.redis_url, settings.redis_prefix)
        stack.callback(store.close)
        publisher = Publisher(
            settings.bootstrap(),
            settings.topic,
            max_block_ms=settings.max_block_ms,
            max_frame_bytes=settings.max_frame_bytes,
            max_inflight_bytes=settings.kafka_buffer_bytes,
            request_timeout_ms=settings.request_timeout_ms,
            delivery_timeout_ms=settings.delivery_timeout_ms,
            metrics=metrics,
            security={k: v for k, v in settings.kafka_client_config().items() if k != "bootstrap_servers"},
        )
        publisher.start()
        stack.callback(publisher.close)
        app = Producer(settings, store, publisher, metrics, producer_id, source_factory)
        if settings.metrics_port is not None:
            try:
                app.metrics_port = metrics.serve(settings.metrics_port, settings.metrics_addr)
            except OSError as e:
                logger.error("cannot serve metrics port=%d error=%s", settings.metrics_port, e.strerror)
                return 2
            stack.callback(metrics.close)
        # at exit, in this order: cameras stop, the last frames are acknowledged (so the counts are final),
        # the last status rows and the heartbeat's removal are written, Kafka closes, Redis closes
        stack.callback(app.drop_heartbeat)
        stack.callback(app.write_status)
        stack.callback(publisher.flush, 3.0)
        stack.callback(app.supervisor.stop_all)
        app.poll_reload_request()
        app.apply(site)
        app.loop(stop, reload_requested)
    app.log_totals()
    logger.info("producer stopped producer=%s", producer_id)
    return 0
