"""History over any range: instants, the bucket resolution, series per camera, zone or site, hour × weekday, shifts."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from maskwatch.detections import Counts
from maskwatch.store import Store

MINUTE, HOUR, DAY = "minute", "hour", "day"
RESOLUTION_MS: dict[str, int] = {MINUTE: 60_000, HOUR: 3_600_000, DAY: 86_400_000}
# the most buckets one query reads (per subject): 400 days of days, 6 months of hours, 3 days of minutes
MAX_BUCKETS = 4500
# spans up to these are answered at the finer resolution (when its buckets are still kept)
MINUTE_SPAN_MS = 6 * 3_600_000
HOUR_SPAN_MS = 62 * 86_400_000
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MS_RE = re.compile(r"^\d{1,15}$")


class RangeError(ValueError):
    """A range or instant that cannot be answered; the message says which and why."""


def timezone(name: str) -> dt.tzinfo:
    """The site's time zone ('' or UTC: UTC)."""
    if not name or name == "UTC":
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise RangeError(f"unknown time zone {name!r}") from None


def parse_instant(text: str, tz: dt.tzinfo, *, end: bool = False) -> int:
    """Epoch ms from `text`: epoch milliseconds, an ISO date (local midnight; the next one for an `end`) or an
    ISO date-time (local when it has no offset)."""
    text = text.strip()
    if _MS_RE.fullmatch(text):
        return int(text)
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            if end:
                day += dt.timedelta(days=1)
            return int(dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RangeError(f"{text!r} is not epoch milliseconds, an ISO date or an ISO date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return int(when.timestamp() * 1000)


def pick_resolution(from_ms: int, to_ms: int, now_ms: int, minute_ttl_s: int, zone: bool = False) -> str:
    """Minutes for a short range still within the minute buckets' TTL, hours up to two months, else days.

    Zones have no minute buckets.
    """
    span = to_ms - from_ms
    if not zone and span <= MINUTE_SPAN_MS and from_ms >= now_ms - minute_ttl_s * 1000:
        return MINUTE
    return HOUR if span <= HOUR_SPAN_MS else DAY


def bucket_indexes(from_ms: int, to_ms: int, resolution: str) -> list[int]:
    """The buckets overlapping [from_ms, to_ms); RangeError for an empty or too long range."""
    if resolution not in RESOLUTION_MS:
        raise RangeError(f"unknown resolution {resolution!r}; use one of {', '.join(RESOLUTION_MS)}")
    if to_ms <= from_ms:
        raise RangeError("`to` must be after `from`")
    unit = RESOLUTION_MS[resolution]
    first, last = from_ms // unit, (to_ms - 1) // unit
    if last - first + 1 > MAX_BUCKETS:
        raise RangeError(f"{last - first + 1} {resolution} buckets is more than {MAX_BUCKETS}; pick a coarser resolution")
    return list(range(first, last + 1))


@dataclass(frozen=True)
class Series:
    """Counts per bucket, oldest first: (bucket start ms, counts)."""

    resolution: str
    rows: tuple[tuple[int, Counts], ...]

    def total(self) -> Counts:
        out = Counts()
        for _, c in self.rows:
            out = out + c
        return out


def series(
    store: Store,
    from_ms: int,
    to_ms: int,
    *,
    cameras: Sequence[str] = (),
    zone: str | None = None,
    resolution: str,
) -> Series:
    """Counts per bucket over [from_ms, to_ms): a zone's own buckets, else the sum over `cameras`."""
    idx = bucket_indexes(from_ms, to_ms, resolution)
    unit = RESOLUTION_MS[resolution]
    if zone is not None:
        if resolution == MINUTE:
            raise RangeError("zones keep hourly and daily buckets; ask for hour or day")
        counts = store.buckets("zone_" + resolution, zone, idx)
    else:
        counts = [Counts()] * len(idx)
        for n, cid in enumerate(cameras):
            mine = store.buckets(resolution, cid, idx)
            counts = mine if n == 0 else [a + b for a, b in zip(counts, mine, strict=True)]
    return Series(resolution, tuple((i * unit, c) for i, c in zip(idx, counts, strict=True)))


def counts_row(ts_ms: int | None, c: Counts) -> dict[str, Any]:
    """Counts and their compliance (with the bucket start when `ts_ms` is given), as the API and CLI print them."""
    row: dict[str, Any] = {**c.as_dict(), "compliance": compliance(c)}
    return row if ts_ms is None else {"ts_ms": ts_ms, **row}


def payload(store: Store, from_ms: int, to_ms: int, camera: str | None, zone: str | None, resolution: str) -> dict[str, Any]:
    """GET /api/history's answer (and `maskwatch stats --from/--to --json`'s): one subject's series over a range."""
    cameras = [camera] if camera is not None else store.camera_ids()
    s = series(store, from_ms, to_ms, cameras=cameras, zone=zone, resolution=resolution)
    return {
        "from_ms": from_ms,
        "to_ms": to_ms,
        "resolution": resolution,
        "camera": camera,
        "zone": zone,
        "total": counts_row(None, s.total()),
        "series": [counts_row(ts, c) for ts, c in s.rows],
    }


def heatmap(rows: Iterable[tuple[int, Counts]], tz: dt.tzinfo) -> list[list[Counts]]:
    """Hourly counts folded by local weekday (Monday first) × hour of day: 7 rows of 24."""
    grid = [[Counts() for _ in range(24)] for _ in range(7)]
    for start_ms, c in rows:
        local = dt.datetime.fromtimestamp(start_ms / 1000, tz)
        grid[local.weekday()][local.hour] = grid[local.weekday()][local.hour] + c
    return grid


def compliance(c: Counts) -> float | None:
    v = c.compliance
    return None if v is None else round(v, 4)
