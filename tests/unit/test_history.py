"""History ranges: instants in the site's zone, the resolution a range gets, bucket limits, hour × weekday."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from maskwatch.detections import Counts
from maskwatch.history import (
    DAY,
    HOUR,
    MAX_BUCKETS,
    MINUTE,
    RangeError,
    bucket_indexes,
    heatmap,
    parse_instant,
    pick_resolution,
    timezone,
)

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
H, D = 3_600_000, 86_400_000
NOW = 1_780_000_000_000  # a Wednesday


@pytest.mark.parametrize(
    ("text", "tz", "end", "expected"),
    [
        ("1780000000000", dt.UTC, False, 1_780_000_000_000),
        ("2026-12-01", dt.UTC, False, int(dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp() * 1000)),
        ("2026-12-01", dt.UTC, True, int(dt.datetime(2026, 12, 2, tzinfo=dt.UTC).timestamp() * 1000)),
        ("2026-12-01", PARIS, False, int(dt.datetime(2026, 11, 30, 23, tzinfo=dt.UTC).timestamp() * 1000)),
        ("2026-12-01T08:30", PARIS, False, int(dt.datetime(2026, 12, 1, 7, 30, tzinfo=dt.UTC).timestamp() * 1000)),
        ("2026-12-01T08:30Z", PARIS, False, int(dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.UTC).timestamp() * 1000)),
    ],
)
def test_parse_instant(text: str, tz: dt.tzinfo, end: bool, expected: int) -> None:
    assert parse_instant(text, tz, end=end) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "", "12:00", "-5"])
def test_parse_instant_refuses_nonsense(text: str) -> None:
    with pytest.raises(RangeError, match="not epoch milliseconds"):
        parse_instant(text, dt.UTC)


def test_unknown_timezone() -> None:
    with pytest.raises(RangeError, match="unknown time zone"):
        timezone("Mars/Olympus")
    assert timezone("") is dt.UTC


@pytest.mark.parametrize(
    ("span_ms", "ago_ms", "zone", "expected"),
    [
        (H, 0, False, MINUTE),
        (6 * H, 0, False, MINUTE),
        (H, 0, True, HOUR),  # zones keep no minutes
        (H, 8 * D, False, HOUR),  # minutes of 8 days ago have expired (7-day TTL)
        (7 * H, 0, False, HOUR),
        (30 * D, 0, False, HOUR),
        (62 * D, 0, False, HOUR),
        (63 * D, 0, False, DAY),
        (400 * D, 0, True, DAY),
    ],
)
def test_pick_resolution(span_ms: int, ago_ms: int, zone: bool, expected: str) -> None:
    to = NOW - ago_ms
    assert pick_resolution(to - span_ms, to, NOW, 7 * 86_400, zone) == expected


@pytest.mark.parametrize(
    ("start", "to", "resolution", "expected"),
    [
        (0, H, HOUR, [0]),
        (0, H + 1, HOUR, [0, 1]),
        (H - 1, H + 1, HOUR, [0, 1]),
        (D, 3 * D, DAY, [1, 2]),
        (60_000, 180_000, MINUTE, [1, 2]),
    ],
)
def test_bucket_indexes(start: int, to: int, resolution: str, expected: list[int]) -> None:
    assert bucket_indexes(start, to, resolution) == expected


@pytest.mark.parametrize(
    ("start", "to", "resolution", "error"),
    [
        (H, H, HOUR, "after"),
        (2 * H, H, HOUR, "after"),
        (0, (MAX_BUCKETS + 1) * H, HOUR, "coarser"),
        (0, H, "week", "unknown resolution"),
    ],
)
def test_bucket_indexes_refuse(start: int, to: int, resolution: str, error: str) -> None:
    with pytest.raises(RangeError, match=error):
        bucket_indexes(start, to, resolution)


def test_heatmap_folds_hours_by_local_weekday_and_hour() -> None:
    monday_9_paris = int(dt.datetime(2026, 11, 30, 9, tzinfo=PARIS).timestamp() * 1000)
    rows = [
        (monday_9_paris, Counts(with_mask=1)),
        (monday_9_paris + 7 * D, Counts(without_mask=1)),  # the next Monday, same hour
        (monday_9_paris + D + 3 * H, Counts(with_mask=5)),  # Tuesday 12:00
    ]
    grid = heatmap(rows, PARIS)
    assert grid[0][9] == Counts(with_mask=1, without_mask=1)
    assert grid[1][12] == Counts(with_mask=5)
    assert sum(c.people for row in grid for c in row) == 7
    assert heatmap(rows, dt.UTC)[0][8] == Counts(with_mask=1, without_mask=1)
