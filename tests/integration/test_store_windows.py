"""Window counts from day, hour and minute buckets, summed in Redis, equal the sum of the minutes, on the real
redis-server."""

from __future__ import annotations

import time

import pytest

from maskwatch.detections import Counts
from maskwatch.store import BatchWrite, Store, camera_summaries, camera_summary, epoch_minute
from tests.integration.dashboard_fixtures import fixture_dashboard_store  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(60)

HOUR0 = 480_000  # an epoch hour (in 2024)


MINUTES = (0, 1, 30, 59, 60, 61, 95, 119, 120, 121, 150, 179)


def seed_until(store: Store, now_minute: int) -> None:
    """Counts in some minutes of three hours from HOUR0, none after `now_minute` (a live window's end is now)."""
    batch = BatchWrite()
    for i, m in enumerate(HOUR0 * 60 + m for m in MINUTES):
        if m <= now_minute:
            for cid in ("gate-1", "gate-2"):
                batch.add(("t", 0), cid, m * 60_000 + 5_000, Counts(frames=1, faces=i + 1, with_mask=i + 1))
    batch.next_offsets[("t", 0)] = 1
    store.commit_batch(batch, "g")


@pytest.mark.parametrize("now_offset", [0, 1, 59, 60, 61, 90, 119, 120, 121, 150, 179, 200, 24 * 60 + 30])
def test_window_equals_the_sum_of_its_minutes(dashboard_store: Store, now_offset: int) -> None:
    now_minute = HOUR0 * 60 + now_offset
    seed_until(dashboard_store, now_minute)
    for minutes in (1, 15, 59, 60, 61, 90, 120, 1440):
        by_minute = Counts()
        for _, c in dashboard_store.series("gate-1", now_minute - minutes + 1, now_minute):
            by_minute = by_minute + c
        assert dashboard_store.window("gate-1", minutes, now_minute * 60_000 + 30_000) == by_minute, minutes
        assert len(dashboard_store.window_keys("gate-1", minutes, now_minute)) <= min(minutes, 30 + minutes // 60 + 1)


def test_summaries_of_all_cameras_in_one_go_match_one_by_one(dashboard_store: Store) -> None:
    now_minute = HOUR0 * 60 + 150
    seed_until(dashboard_store, now_minute)
    together = camera_summaries(dashboard_store, 1440, now_minute * 60_000)
    assert [s.camera for s in together] == ["gate-1", "gate-2"]
    assert together == [camera_summary(dashboard_store, cid, 1440, now_minute * 60_000) for cid in ("gate-1", "gate-2")]
    assert together[0].window.with_mask == sum(range(1, 12))


@pytest.mark.parametrize("past_hour", [0, 1, 29, 30, 31, 59])
def test_a_24h_window_reads_at_most_44_buckets(dashboard_store: Store, past_hour: int) -> None:
    """Two days, at most 12 hours and 30 minutes: fewer than the 25 hours and 30 minutes of hourly buckets."""
    now_minute = epoch_minute(int(time.time() * 1000)) // 60 * 60 + past_hour
    assert len(dashboard_store.window_keys("c", 1440, now_minute)) <= 2 + 12 + 30
