"""The worker's health: ok or degraded by dependency, retries with capped backoff that keep group membership, and
the heartbeat with its counters (frames, batches, fps, model latency, lag)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from maskwatch.payloads import WORKER_DEGRADED, WORKER_OK, WorkerHeartbeat
from maskwatch.store import Store
from worker import metrics
from worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
# the window `fps` averages over
RATE_SPAN_S = 10.0


class Abandon(Exception):
    """Stop was requested while a dependency was down: the batch is abandoned, not lost (offsets not stored)."""


class Health:
    """Status by dependency, the backoff that holds a batch while one is down, and the heartbeat that reports both.

    While it backs off, the consumer's partitions are paused and polled (so the group keeps this member); records
    that a poll still returns are kept in `carry` for the loop's next batch. `unpositioned` is the loop's set of
    partitions not yet sought to their stored offsets: recovering never resumes those.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        consumer: KafkaConsumer,
        store: Store,
        stop: threading.Event,
        unpositioned: set[TopicPartition],
    ) -> None:
        self.s = settings
        self.consumer = consumer
        self.store = store
        self.stop = stop
        self.unpositioned = unpositioned
        self.status = WORKER_OK
        self.reason = ""
        self.processed = 0
        self.batches = 0
        self.model_ms_ewma = 0.0
        self.carry: dict[Any, list[Any]] = {}
        self._rate: list[tuple[float, int]] = []
        self._last_hb = 0.0

    # ---- dependencies --------------------------------------------------------------------
    def degraded(self, dep: str, reason: str) -> None:
        if self.status != WORKER_DEGRADED or not self.reason.startswith(dep):
            logger.warning("degraded dependency=%s reason=%s", dep, reason)
        self.status, self.reason = WORKER_DEGRADED, f"{dep}: {reason}"
        metrics.DEGRADED.labels(dep).set(1)
        self.heartbeat(force=True)

    def ok(self, dep: str) -> None:
        if self.status == WORKER_DEGRADED and self.reason.startswith(dep):
            logger.info("recovered dependency=%s", dep)
            metrics.DEGRADED.labels(dep).set(0)
            self.status, self.reason = WORKER_OK, ""
            ready = [tp for tp in self.consumer.paused() if tp not in self.unpositioned]
            if ready:
                self.consumer.resume(*ready)
            self.heartbeat(force=True)

    def wait_backoff(self, attempt: int) -> None:
        """Wait with capped backoff while keeping group membership: partitions paused, poll keeps running (and
        finishes a rebalance that starts meanwhile)."""
        delay = random.uniform(0.5, 1.0) * min(self.s.retry_max_s, 0.25 * 2**attempt)
        deadline = time.monotonic() + delay
        while not self.stop.is_set() and time.monotonic() < deadline:
            assigned = self.consumer.assignment()
            if assigned:
                self.consumer.pause(*assigned)
            keep_rejoin_pending(self.consumer)
            got = self.consumer.poll(timeout_ms=min(200, max(1, int((deadline - time.monotonic()) * 1000))))
            for tp, recs in got.items():
                self.carry.setdefault(tp, []).extend(recs)

    def retry(self, dep: str, call: Callable[[], T], give_up: tuple[grpc.StatusCode, ...] = ()) -> T:
        """`call()`, retried with backoff while `dep` is down; raises Abandon once stop is requested meanwhile."""
        attempt = 0
        while True:
            try:
                out = call()
                self.ok(dep)
                return out
            except (redis.RedisError, KafkaError) as e:
                self.degraded(dep, f"{type(e).__name__}: {e}")
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
                if code in give_up:
                    raise
                self.degraded(dep, f"{code.name}: {e.details() if hasattr(e, 'details') else e}")
            if self.stop.is_set():
                raise Abandon()
            self.wait_backoff(attempt)
            attempt += 1

    # ---- counters ------------------------------------------------------------------------
    def model_answered(self, t_ms: float) -> None:
        """A Predict answered after `t_ms`: the model latency's moving average."""
        metrics.MODEL_SECONDS.observe(t_ms / 1000)
        self.model_ms_ewma = t_ms if not self.model_ms_ewma else 0.8 * self.model_ms_ewma + 0.2 * t_ms

    def batch_done(self, records: int) -> None:
        self.processed += records
        self.batches += 1
        self._rate.append((time.monotonic(), records))

    def fps(self) -> float:
        now = time.monotonic()
        self._rate = [(t, n) for t, n in self._rate if now - t <= RATE_SPAN_S]
        if not self._rate:
            return 0.0
        span = max(1.0, now - self._rate[0][0])
        return sum(n for _, n in self._rate) / span

    def lag(self) -> int:
        total = 0
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            if hw is None:
                continue
            try:
                pos = self.consumer.position(tp, timeout_ms=100)
            except KafkaError:
                continue
            if pos is not None:
                total += max(0, hw - pos)
        return total

    # ---- heartbeat -----------------------------------------------------------------------
    def heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_hb < self.s.heartbeat_interval_s:
            return
        self._last_hb = now
        lag = self.lag()
        metrics.LAG.set(lag)
        beat = WorkerHeartbeat(
            status=self.status,
            reason=self.reason,
            partitions=tuple(sorted(tp.partition for tp in self.consumer.assignment())),
            topics=len({tp.topic for tp in self.consumer.assignment()}),
            fps=round(self.fps(), 2),
            frames=self.processed,
            batches=self.batches,
            model_ms=round(self.model_ms_ewma, 1),
            lag=lag,
        )
        try:
            self.store.heartbeat("worker", self.s.worker_id, beat.to_json())
        except redis.RedisError as e:
            logger.debug("heartbeat not written error=%s", e)


def keep_rejoin_pending(consumer: KafkaConsumer) -> None:
    """While a rebalance is under way, keep the client's rejoin flag set, as the Java client does since KAFKA-9815;
    called before every poll: the worker's (`Worker._poll`, each slice beside a running Predict) and the backoff's.

    kafka-python 2.3 leaves it unset when the leader starts a rebalance because the topics' metadata changed (a
    bucket topic created, a restarted broker's topics back); the leader's own assignment then makes the metadata
    match again, and if the SyncGroup answer lands in a poll that has already timed out, no later poll finishes
    the join: the leader would keep no partitions and never apply its assignment.
    """
    coordinator = consumer._coordinator  # noqa: SLF001 - the join's own state; kafka-python has no public hook
    if coordinator.rejoining and not coordinator.rejoin_needed:
        coordinator.request_rejoin()
