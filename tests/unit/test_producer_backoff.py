"""Reconnect backoff: exponential, capped, jittered, safe for any attempt count."""

from __future__ import annotations

import pytest

from producer.backoff import backoff_s

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        (0, 0.25, 0.5),
        (1, 0.5, 1.0),
        (3, 2.0, 4.0),
        (6, 15.0, 30.0),
        (100, 15.0, 30.0),
        (10**6, 15.0, 30.0),
        (-1, 0.25, 0.5),
    ],
)
@pytest.mark.parametrize("r", [0.0, 0.5, 0.999999])
def test_bounds(attempt: int, low: float, high: float, r: float) -> None:
    d = backoff_s(attempt, base_s=0.5, cap_s=30.0, rand=lambda: r)
    assert low <= d <= high


def test_jitter_spreads_cameras_that_failed_together() -> None:
    delays = {round(backoff_s(5), 3) for _ in range(50)}
    assert len(delays) > 10


def test_cap_is_respected() -> None:
    assert max(backoff_s(50, cap_s=2.0) for _ in range(100)) <= 2.0
