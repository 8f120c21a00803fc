"""The worker's poll beside an in-flight Predict: it hands a finished batch on without waiting out the poll timeout."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from maskwatch.store import BatchWrite
from worker.consumer import POLL_SLICE_MS, Worker
from worker.inference import InFlight
from worker.settings import WorkerSettings


class FakeConsumer:
    """Records each poll's timeout; returns records only from the poll numbered `records_at` (1-based)."""

    def __init__(self, records_at: int | None = None) -> None:
        self.timeouts: list[int] = []
        self.records_at = records_at
        self._coordinator = SimpleNamespace(rejoining=False, rejoin_needed=False)  # no rebalance under way

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        self.timeouts.append(timeout_ms)
        return {"tp": ["record"]} if len(self.timeouts) == self.records_at else {}


class FakeFuture:
    """Done after `polls_until_done` polls of the consumer."""

    def __init__(self, consumer: FakeConsumer, polls_until_done: int) -> None:
        self.consumer = consumer
        self.polls_until_done = polls_until_done

    def done(self) -> bool:
        return len(self.consumer.timeouts) >= self.polls_until_done


def worker(consumer: FakeConsumer, poll_timeout_ms: int = 200) -> Worker:
    settings = WorkerSettings(poll_timeout_ms=poll_timeout_ms)
    return Worker(settings, consumer, None, None, None, threading.Event())  # type: ignore[arg-type]


def pending(future: Any) -> InFlight:
    return InFlight(batch=BatchWrite(), frames=[], records=1, dead=[], future=future)


def test_nothing_in_flight_polls_once_with_the_full_timeout() -> None:
    consumer = FakeConsumer()
    assert worker(consumer, poll_timeout_ms=200).poll_beside(None) == {}
    assert consumer.timeouts == [200]


def test_returns_as_soon_as_the_predict_is_done() -> None:
    consumer = FakeConsumer()
    future = FakeFuture(consumer, polls_until_done=3)
    assert worker(consumer, poll_timeout_ms=10_000).poll_beside(pending(future)) == {}
    assert consumer.timeouts == [POLL_SLICE_MS] * 3


def test_returns_new_frames_at_once_while_the_predict_runs() -> None:
    consumer = FakeConsumer(records_at=2)
    future = FakeFuture(consumer, polls_until_done=100)
    assert worker(consumer, poll_timeout_ms=10_000).poll_beside(pending(future)) == {"tp": ["record"]}
    assert consumer.timeouts == [POLL_SLICE_MS] * 2


def test_a_finished_predict_gets_a_non_blocking_poll() -> None:
    consumer = FakeConsumer()
    future = FakeFuture(consumer, polls_until_done=0)
    worker(consumer).poll_beside(pending(future))
    assert consumer.timeouts == [0]


def test_gives_up_at_the_poll_timeout_when_the_predict_hangs() -> None:
    consumer = FakeConsumer()
    future = FakeFuture(consumer, polls_until_done=10**9)
    worker(consumer, poll_timeout_ms=30).poll_beside(pending(future))
    assert len(consumer.timeouts) >= 1 and all(t == POLL_SLICE_MS for t in consumer.timeouts)
