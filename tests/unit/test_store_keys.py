"""Contract 3 key names and the batch accumulator (pure parts of store.py)."""

from __future__ import annotations

import random

import pytest

from maskwatch.detections import Counts
from maskwatch.store import BatchWrite, Keys, epoch_minute, window_buckets

DAY0 = 20_000 * 1440  # the first minute of an epoch day (in 2024)


@pytest.mark.parametrize(
    ("method", "args", "key"),
    [
        ("cameras", (), "mw:cameras"),
        ("camera", ("c1",), "mw:camera:c1"),
        ("totals", ("c1",), "mw:totals:c1"),
        ("minute", ("c1", 29_000_000), "mw:m:c1:29000000"),
        ("latest", ("c1",), "mw:latest:c1"),
        ("hour", ("c1", 480_000), "mw:h:c1:480000"),
        ("day", ("c1", 20_000), "mw:d:c1:20000"),
        ("bucket", ("day", "c1", 20_000), "mw:d:c1:20000"),
        ("bucket", ("hour", "c1", 480_000), "mw:h:c1:480000"),
        ("bucket", ("minute", "c1", 29_000_000), "mw:m:c1:29000000"),
        ("zone_hour", ("Ward A", 480_000), "mw:zh:Ward A:480000"),
        ("zone_day", ("Ward A", 20_000), "mw:zd:Ward A:20000"),
        ("episodes", ("c1",), "mw:episodes:c1"),
        ("episode", ("c1", "1-2-3"), "mw:episode:c1:1-2-3"),
        ("offsets", ("maskwatch-workers", "frames"), "mw:offsets:maskwatch-workers:frames"),
        ("updates", (), "mw:updates"),
        ("alerts", (), "mw:alerts"),
        ("alerts_active", (), "mw:alerts:active"),
        ("alerts_leader", (), "mw:alerts:leader"),
    ],
)
def test_keys(method: str, args: tuple[object, ...], key: str) -> None:
    assert getattr(Keys(), method)(*args) == key
    assert getattr(Keys("site7:"), method)(*args) == "site7:" + key.removeprefix("mw:")


@pytest.mark.parametrize("prefix", ["", "has space"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError):
        Keys(prefix)


def test_batch_accumulates_by_partition_camera_minute() -> None:
    b = BatchWrite()
    t = 1_700_000_000_000
    b.add(("t", 0), "a", t, Counts(frames=1, faces=1, with_mask=1))
    b.add(("t", 0), "a", t + 1000, Counts(frames=1, faces=1, without_mask=1))
    b.add(("t", 0), "a", t + 60_000, Counts(frames=1))
    b.add(("t", 1), "b", t, Counts(dropped_stale=1))
    assert b.counts[(("t", 0), "a", epoch_minute(t))] == Counts(frames=2, faces=2, with_mask=1, without_mask=1)
    assert len(b.counts) == 3
    assert b.last_frame_ms == {"a": t + 60_000}
    assert b.totals_by_camera()["a"].frames == 3
    assert b.cameras() == {"a", "b"}


def days(*rel: int, sign: int = 1) -> list[tuple[str, int, int]]:
    return [("day", DAY0 // 1440 + d, sign) for d in rel]


def hours(*rel: int, sign: int = 1) -> list[tuple[str, int, int]]:
    return [("hour", DAY0 // 60 + h, sign) for h in rel]


def minutes_(*rel: int, sign: int = 1) -> list[tuple[str, int, int]]:
    return [("minute", DAY0 + m, sign) for m in rel]


@pytest.mark.parametrize(
    ("minutes", "now", "buckets"),
    [
        (1, 75, minutes_(75)),
        # the current hour so far from its bucket, plus the minutes before it or less the minutes before the start
        (15, 74, hours(1)),
        (15, 70, hours(1) + minutes_(56, 57, 58, 59)),
        (15, 80, hours(1) + minutes_(*range(60, 66), sign=-1)),
        # today so far from its day bucket, less the minutes before the start
        (60, 62, days(0) + minutes_(0, 1, 2, sign=-1)),
        # 24 h at 23:59: today's bucket alone
        (1440, 1439, days(0)),
        # 24 h at 03:00: today and yesterday, less yesterday's first three hours and the minute before the start
        (1440, 1620, days(1, 0) + hours(0, 1, 2, sign=-1) + minutes_(180, sign=-1)),
        # 24 h at 21:00: today, yesterday's last three hours, less the minute before the start
        (1440, 2700, days(1) + hours(21, 22, 23) + minutes_(1260, sign=-1)),
    ],
)
def test_window_buckets(minutes: int, now: int, buckets: list[tuple[str, int, int]]) -> None:
    assert sorted(window_buckets(minutes, DAY0 + now)) == sorted(buckets)


@pytest.mark.parametrize("minutes", [1, 15, 59, 60, 61, 90, 1439, 1440, 1441, 2880])
def test_window_buckets_sum_to_the_window_and_stay_few(minutes: int) -> None:
    """Against random per-minute counts, none after now: the signed buckets sum to the window's minutes, in at most
    2 days, 12 hours and 30 minutes' reads, never more than the minutes themselves."""
    rng = random.Random(minutes)
    counts = [rng.randrange(5) for _ in range(4 * 1440)]  # minute DAY0 + i holds counts[i]
    sizes = {"day": 1440, "hour": 60, "minute": 1}
    for _ in range(300):
        now = DAY0 + 1440 * 2 + rng.randrange(1440)

        stored = counts[: now - DAY0 + 1]  # nothing after now
        got = window_buckets(minutes, now)
        summed = sum(
            sign * sum(stored[i * sizes[level] - DAY0 : (i + 1) * sizes[level] - DAY0]) for level, i, sign in got
        )
        assert summed == sum(stored[-minutes:])
        assert len(got) <= min(minutes, 2 * (minutes // 1440 + 1) + 12 + 30)


def test_an_empty_window_is_an_error() -> None:
    with pytest.raises(ValueError):
        window_buckets(0, DAY0)
