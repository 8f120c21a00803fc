"""Producer counters: by camera and reason, mirrored into Prometheus; measured rates that decay."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from producer.metrics import CAPTURED, DROPPED_BROKER, REASONS, SENT, CameraCounters, ProducerMetrics, RateMeter

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_rate_meter_measures_and_decays() -> None:
    clock = Clock()
    m = RateMeter(window_s=10, clock=clock)
    for _ in range(20):
        clock.t += 0.2
        m.mark()
    assert abs(m.rate() - 5.0) < 0.01  # 20 events over the 4 s since it started
    clock.t += 30  # the camera stopped: the rate says so
    assert m.rate() == 0.0


def test_counts_by_reason_and_prometheus_text() -> None:
    metrics = ProducerMetrics()
    c = metrics.camera("gate-a")
    c.add(CAPTURED, 3)
    c.add(SENT, 2)
    c.add(DROPPED_BROKER)
    c.add(SENT, 0)
    c.reconnect()
    c.encoded(0.004, 20_000)
    metrics.set_status("gate-a", "online")
    snap = c.snapshot()
    assert set(REASONS) <= set(snap)
    assert (snap[CAPTURED], snap[SENT], snap[DROPPED_BROKER], snap["reconnects"]) == (3, 2, 1, 1)
    text = generate_latest(metrics.registry).decode()
    assert 'maskwatch_producer_frames_total{camera="gate-a",reason="sent"} 2.0' in text
    assert 'maskwatch_producer_reconnects_total{camera="gate-a"} 1.0' in text
    assert 'maskwatch_producer_encode_seconds_bucket{camera="gate-a",le="0.005"} 1.0' in text
    assert 'maskwatch_producer_camera_status{camera="gate-a",status="online"} 1.0' in text
    assert 'maskwatch_producer_camera_status{camera="gate-a",status="offline"} 0.0' in text


def test_counters_work_without_prometheus_and_registries_are_separate() -> None:
    c = CameraCounters("x")
    c.add(SENT)
    assert c.get(SENT) == 1
    a, b = ProducerMetrics(), ProducerMetrics()  # two producers in one process (tests) do not collide
    a.camera("x").add(SENT)
    assert 'reason="sent"} 1.0' in generate_latest(a.registry).decode()
    assert 'reason="sent"} 1.0' not in generate_latest(b.registry).decode()
