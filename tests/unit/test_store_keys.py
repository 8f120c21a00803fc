"""Contract 3 key names and the batch accumulator (pure parts of store.py)."""

from __future__ import annotations

import pytest

from maskwatch.detections import Counts
from maskwatch.store import BatchWrite, Keys, epoch_minute


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
    b.add(0, "a", t, Counts(frames=1, faces=1, with_mask=1))
    b.add(0, "a", t + 1000, Counts(frames=1, faces=1, without_mask=1))
    b.add(0, "a", t + 60_000, Counts(frames=1))
    b.add(1, "b", t, Counts(dropped_stale=1))
    assert b.counts[(0, "a", epoch_minute(t))] == Counts(frames=2, faces=2, with_mask=1, without_mask=1)
    assert len(b.counts) == 3
    assert b.last_frame_ms == {"a": t + 60_000}
    assert b.totals_by_camera()["a"].frames == 3
    assert b.cameras() == {"a", "b"}
