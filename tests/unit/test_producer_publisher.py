"""The publisher bounds what it holds and counts every outcome; a fake KafkaProducer records calls."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from maskwatch.frames import Frame
from producer.metrics import DROPPED_BROKER, SENT, CameraCounters
from producer.publisher import HEADER_ALLOWANCE, Publisher

pytestmark = pytest.mark.timeout(30)


class FakeFuture:
    def __init__(self) -> None:
        self.ok: list[Callable[[Any], None]] = []
        self.fail: list[Callable[[BaseException], None]] = []

    def add_callback(self, fn: Callable[[Any], None]) -> None:
        self.ok.append(fn)

    def add_errback(self, fn: Callable[[BaseException], None]) -> None:
        self.fail.append(fn)

    def succeed(self) -> None:
        for fn in self.ok:
            fn(None)

    def expire(self) -> None:
        for fn in self.fail:
            fn(KafkaTimeoutError("Expiring 1 record(s)"))


class FakeKafka:
    def __init__(self, raise_on_send: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.futures: list[FakeFuture] = []
        self.raise_on_send = raise_on_send

    def send(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> FakeFuture:
        if self.raise_on_send:
            raise KafkaTimeoutError("Failed to update metadata after 0.2 secs.")
        self.sent.append((topic, key, value, headers))
        fut = FakeFuture()
        self.futures.append(fut)
        return fut

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self, timeout: float | None = None) -> None:
        return None


def _frame(seq: int = 0, size: int = 1000) -> Frame:
    return Frame("gate-a", b"\xff\xd8\xff" + b"x" * (size - 3), seq, 1, 64, 48, "p1")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _publisher(fake: FakeKafka | None, max_inflight: int = 1 << 20, clock: Clock | None = None) -> Publisher:
    p = Publisher(["127.0.0.1:1"], "frames", max_inflight_bytes=max_inflight, clock=clock or Clock())
    p.producer = fake  # type: ignore[assignment]
    return p


def test_sent_is_counted_on_acknowledgement_with_contract_headers() -> None:
    fake, c = FakeKafka(), CameraCounters("gate-a")
    p = _publisher(fake)
    assert p.send(_frame(7), c)
    assert c.get(SENT) == 0 and p.inflight_bytes == 1000 + HEADER_ALLOWANCE
    fake.futures[0].succeed()
    assert c.get(SENT) == 1 and p.inflight_bytes == 0
    topic, key, _, headers = fake.sent[0]
    assert (topic, key) == ("frames", b"gate-a") and ("mw-seq", b"7") in headers


def test_unacknowledged_bytes_are_bounded_and_overflow_is_a_counted_drop() -> None:
    fake, c = FakeKafka(), CameraCounters("gate-a")
    p = _publisher(fake, max_inflight=3 * (1000 + HEADER_ALLOWANCE))
    results = [p.send(_frame(i), c) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert c.get(DROPPED_BROKER) == 2 and len(fake.sent) == 3
    fake.futures[0].expire()  # delivery timed out: counted, and its bytes are free again
    assert c.get(DROPPED_BROKER) == 3
    assert p.send(_frame(5), c)


def test_no_broker_yet_and_send_errors_are_counted_drops(caplog: pytest.LogCaptureFixture) -> None:
    c = CameraCounters("gate-a")
    assert not _publisher(None).send(_frame(), c)
    caplog.clear()
    p = _publisher(FakeKafka(raise_on_send=True))
    for i in range(20):
        assert not p.send(_frame(i), c)
    assert c.get(DROPPED_BROKER) == 21 and p.inflight_bytes == 0
    # a burst of failures is one log line, not twenty
    assert len([r for r in caplog.records if "dropped at the broker" in r.getMessage()]) == 1


def test_a_burst_is_logged_at_its_start_every_interval_and_at_its_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "producer.publisher")
    fake, c, clock = FakeKafka(), CameraCounters("gate-a"), Clock()
    p = _publisher(fake, clock=clock)
    for i in range(40):  # 20 s of a flaky broker: every other frame fails
        p.send(_frame(i), c)
        (fake.futures[-1].expire if i % 2 else fake.futures[-1].succeed)()
        clock.t += 0.5
    clock.t += 6  # then it is healthy again
    p.send(_frame(40), c)
    fake.futures[-1].succeed()
    said = [r.getMessage() for r in caplog.records]
    dropped = [m for m in said if "dropped at the broker" in m]
    assert len(dropped) == 2 and "muted_since_last=0" in dropped[0] and "muted_since_last=9" in dropped[1]
    assert [m for m in said if "recovered" in m] == ["kafka delivery recovered dropped_in_burst=20"]


def test_close_then_send_is_a_drop_not_a_crash() -> None:
    c = CameraCounters("gate-a")
    p = _publisher(FakeKafka())
    p.close()
    assert not p.send(_frame(), c) and c.get(DROPPED_BROKER) == 1
