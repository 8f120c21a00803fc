"""One camera: a sampler thread (open with backoff, take frames at the target fps, hand them off) and an
encoder thread (resize, JPEG, publish), joined by a bounded hand-off with the camera's drop policy."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from maskwatch.frames import Frame, FrameError
from maskwatch.site import CameraConfig
from maskwatch.store import STATUS_OFFLINE, STATUS_ONLINE, STATUS_RECONNECTING
from producer.backoff import backoff_s
from producer.encoder import EncodeError, FrameTooLarge, encode
from producer.handoff import Handoff
from producer.metrics import (
    CAPTURED,
    DROPPED_BACKPRESSURE,
    DROPPED_TOO_LARGE,
    ENCODE_ERRORS,
    REENCODED,
    CameraCounters,
)
from producer.publisher import Publisher
from producer.sources import Captured, Source, SourceEnded, SourceError, make_source

logger = logging.getLogger(__name__)

STATUS_ENDED = "ended"
ENDED, STOPPED, LOST = "ended", "stopped", "lost"  # how one connection's sampling finished
ENCODER_NICENESS = 5  # encoder threads yield the CPU to capture and to Kafka's I/O thread when it is short
STABLE_AFTER_S = 10.0  # a connection that lived this long resets the backoff
STILL_DOWN_LOG_EVERY = 10  # attempts between "still unreachable" lines


@dataclass
class CameraState:
    """What a camera keeps for the whole producer run, across restarts by a reload: its sequence number
    (Contract 1: per camera and producer run, +1 per frame sent) and its counters."""

    counters: CameraCounters
    seq: int = 0
    seq_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class CameraOptions:
    """Producer-wide knobs every camera shares."""

    max_frame_bytes: int = 1024 * 1024
    reconnect_base_s: float = 0.5
    reconnect_max_s: float = 30.0
    offline_after_s: float = 15.0
    max_frames: int | None = None


class Camera:
    """Runs one camera until `stop()` (or a play-once source ends, or `max_frames` were captured)."""

    def __init__(
        self,
        cam: CameraConfig,
        site: str,
        publisher: Publisher,
        state: CameraState,
        producer_id: str,
        options: CameraOptions | None = None,
        source: Source | None = None,
        on_status: Callable[[Camera, str], None] | None = None,
    ) -> None:
        self.cam = cam
        self.site = site
        self.publisher = publisher
        self.state = state
        self.counters = state.counters
        self.producer_id = producer_id
        self.options = options or CameraOptions()
        self.source = source or make_source(cam)
        self.on_status = on_status
        self.handoff: Handoff[Captured] = Handoff(cam.queue_size, cam.handoff_policy)
        self._halt = threading.Event()
        self.status = STATUS_RECONNECTING
        self.last_error = ""
        self.last_capture_ms = 0
        self.resolution = ""
        self.source_resolution = ""
        self._sampler = threading.Thread(target=self._sample_main, name=f"cam-{cam.id}", daemon=True)
        self._encoder = threading.Thread(target=self._encode_main, name=f"enc-{cam.id}", daemon=True)

    @property
    def id(self) -> str:
        return self.cam.id

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._encoder.start()
        self._sampler.start()

    def stop(self) -> None:
        """Ask both threads to finish (they do within about a second); frames still queued are discarded."""
        self._halt.set()
        self.handoff.close()
        self.source.interrupt()

    def join(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for t in (self._sampler, self._encoder):
            if t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
        return not self.alive

    @property
    def alive(self) -> bool:
        return self._sampler.is_alive() or self._encoder.is_alive()

    @property
    def ended(self) -> bool:
        return self.status == STATUS_ENDED and not self.alive

    def mark_stopped(self, why: str) -> None:
        """After `stop()` and `join()`: the row the camera leaves behind says why it no longer sends."""
        if self.status != STATUS_ENDED:
            self.last_error, self.status = why, STATUS_OFFLINE
            if self.on_status is not None:
                self.on_status(self, STATUS_OFFLINE)

    def _set_status(self, status: str, error: str = "") -> None:
        if error:
            self.last_error = error[:300]
        if status == self.status:
            return
        prev, self.status = self.status, status
        log = logger.info if status in (STATUS_ONLINE, STATUS_ENDED) else logger.warning
        log(
            "camera status camera=%s status=%s was=%s error=%s",
            self.id,
            status,
            prev,
            self.last_error if status != STATUS_ONLINE else "",
        )
        if self.on_status is not None:
            self.on_status(self, status)

    def status_fields(self) -> dict[str, str | int | float]:
        """The camera's row in Redis (`mw:camera:{id}`); `last_frame_ms` stays the worker's field."""
        c = self.counters.snapshot()
        running = self.alive
        return {
            "name": self.cam.display_name,
            "zone": self.cam.zone,
            "site": self.site,
            "status": self.status,
            "fps": round(self.counters.sent_rate.rate(), 2) if running else 0.0,
            "capture_fps": round(self.counters.capture_rate.rate(), 2) if running else 0.0,
            "target_fps": self.cam.fps,
            "resolution": self.resolution,
            "source_resolution": self.source_resolution,
            "last_capture_ms": self.last_capture_ms,
            "queue": len(self.handoff),
            "drop_policy": self.cam.handoff_policy,
            "source": self.cam.safe_source,
            "last_error": self.last_error,
            "producer": self.producer_id,
            "seq": self.state.seq,  # frames handed to the broker in this producer run (the next mw-seq)
            "status_ms": int(time.time() * 1000),
            **c,
        }

    # ---- sampler thread ------------------------------------------------------------------------

    def _sample_main(self) -> None:
        try:
            self._sample_loop()
        finally:
            self.handoff.close()  # the encoder drains what is queued, then ends

    def _sample_loop(self) -> None:
        opts = self.options
        attempt = 0
        down_since = time.monotonic()
        first = True
        while not self._halt.is_set():
            if not first:
                self.counters.reconnect()
            first = False
            try:
                self.source.open()
            except SourceError as e:
                self.source.close()
                down_for = time.monotonic() - down_since
                status = STATUS_OFFLINE if down_for >= opts.offline_after_s else STATUS_RECONNECTING
                delay = backoff_s(attempt, opts.reconnect_base_s, opts.reconnect_max_s)
                if attempt % STILL_DOWN_LOG_EVERY == 0 and self.status == status:
                    logger.warning(
                        "camera unreachable camera=%s error=%s attempts=%d retry_in_s=%.1f",
                        self.id,
                        e,
                        attempt + 1,
                        delay,
                    )
                self._set_status(status, str(e))
                attempt += 1
                if self._wait_while_down(delay, down_since):
                    return
                continue
            opened = time.monotonic()
            self._set_status(STATUS_ONLINE)
            try:
                outcome, error = self._stream()
            finally:
                self.source.close()
            if outcome == ENDED:
                self._set_status(STATUS_ENDED)
                return
            if outcome == STOPPED:
                return
            # lost: reconnect with backoff; a connection that did not last keeps growing the backoff
            attempt = 0 if time.monotonic() - opened >= STABLE_AFTER_S else attempt + 1
            down_since = time.monotonic()
            self._set_status(STATUS_RECONNECTING, error)
            if self._wait_while_down(backoff_s(attempt, opts.reconnect_base_s, opts.reconnect_max_s), down_since):
                return

    def _wait_while_down(self, delay: float, down_since: float) -> bool:
        """Wait out a backoff delay, turning `offline` when the outage passes the threshold; True when halted."""
        deadline = time.monotonic() + delay
        offline_at = down_since + self.options.offline_after_s
        while not self._halt.is_set():
            now = time.monotonic()
            if self.status == STATUS_RECONNECTING and now >= offline_at:
                self._set_status(STATUS_OFFLINE)
            if now >= deadline:
                return False
            wake = min(deadline, offline_at) if self.status == STATUS_RECONNECTING else deadline
            self._halt.wait(max(wake - now, 0.01))
        return True

    def _stream(self) -> tuple[str, str]:
        """Sample until halted (STOPPED), the source ends or max_frames are taken (ENDED), or the source
        fails (LOST, with its error)."""
        period = 1.0 / self.cam.fps
        start = time.monotonic()
        due = start
        max_frames = self.options.max_frames
        captured = 0
        while not self._halt.is_set():
            now = time.monotonic()
            if now < due:
                self._halt.wait(due - now)
                continue
            due = max(due + period, now)  # late ticks are skipped, never burst
            try:
                cap = self.source.read(now - start)
            except SourceEnded:
                return ENDED, ""
            except SourceError as e:
                logger.warning("camera source lost camera=%s error=%s", self.id, e)
                return LOST, str(e) or "source lost"
            if cap is None:  # a live source with nothing new since the last sample
                continue
            self.last_capture_ms = cap.ts_ms
            self.counters.add(CAPTURED)
            self.counters.add(DROPPED_BACKPRESSURE, self.handoff.put(cap))
            captured += 1
            if max_frames is not None and captured >= max_frames:
                return ENDED, ""
        return STOPPED, ""

    # ---- encoder thread ------------------------------------------------------------------------

    def _encode_main(self) -> None:
        _lower_priority(ENCODER_NICENESS)
        while True:
            cap = self.handoff.get(0.5)
            if self._halt.is_set():
                return
            if cap is None:
                if self.handoff.closed and not len(self.handoff):
                    return
                continue
            self._publish(cap)

    def _publish(self, cap: Captured) -> None:
        t0 = time.perf_counter()
        try:
            enc = encode(cap, self.cam.max_width, self.cam.quality, self.options.max_frame_bytes)
        except FrameTooLarge as e:
            self.counters.add(DROPPED_TOO_LARGE)
            logger.debug("frame too large camera=%s error=%s", self.id, e)
            return
        except EncodeError as e:
            self.counters.add(ENCODE_ERRORS)
            logger.debug("frame not encoded camera=%s error=%s", self.id, e)
            return
        self.counters.encoded(time.perf_counter() - t0, len(enc.jpeg))
        if enc.reencoded:
            self.counters.add(REENCODED)
        self.resolution = f"{enc.width}x{enc.height}"
        self.source_resolution = f"{enc.source_width}x{enc.source_height}"
        with self.state.seq_lock:
            try:
                frame = Frame(
                    camera_id=self.id,
                    jpeg=enc.jpeg,
                    seq=self.state.seq,
                    ts_ms=cap.ts_ms,
                    width=enc.width,
                    height=enc.height,
                    producer=self.producer_id,
                )
            except FrameError as e:
                self.counters.add(ENCODE_ERRORS)
                logger.debug("frame refused camera=%s error=%s", self.id, e)
                return
            if self.publisher.send(frame, self.counters):
                self.state.seq += 1


def _lower_priority(by: int) -> None:
    """Lower the calling thread's CPU priority (Linux schedules threads by their own nice value).

    When cameras ask for more than the CPU can encode, this keeps the sampler threads on time and
    lets Kafka's single I/O thread drain what was already encoded: the overload then shows up as
    cheap `dropped_backpressure` before encoding instead of frames encoded and then expired in the
    send buffer (measured: about 30 % more frames delivered per core at saturation). Best effort.
    """
    if not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError as e:
        logger.debug("thread priority unchanged error=%s", e)
