"""History and report figures: Redis memory per camera per day of history at the default TTLs, and the time to
build a report over 30 days x 8 cameras (python -m bench.history; starts its own redis-server)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import redis

from maskwatch import report
from maskwatch.detections import Counts
from maskwatch.procs import Children
from maskwatch.store import (
    EPISODE_CLOSED,
    EPISODE_TTL_S,
    HISTORY_TTL_S,
    MINUTE_TTL_S,
    BatchWrite,
    Episode,
    Store,
)

DAY_MS = 86_400_000


def _snapshot() -> bytes:
    """A face-sized crop like the worker's (96 x 112, JPEG quality 80)."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (112, 96, 3), np.uint8), (9, 9), 0)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return buf.tobytes()


def _counts() -> Counts:
    return Counts(frames=120, faces=200, with_mask=150, without_mask=40, mask_worn_incorrectly=10, persons=12,
                  persons_with_mask=9, persons_without_mask=2, persons_mask_worn_incorrectly=1, faces_32_64=50,
                  faces_ge64=150)  # fmt: skip


def fill_day(store: Store, cid: str, zone: str, day_start_ms: int, episodes: int, snap: bytes) -> None:
    """One camera's day as the worker writes it: a batch per minute, `episodes` violation episodes."""
    offset = int(store.r.hget(store.keys.offsets("g", "t"), "0") or 0)
    for minute in range(1440):
        b = BatchWrite()
        b.start_offsets[("t", 0)], b.next_offsets[("t", 0)] = offset, offset + 1
        offset += 1
        ts = day_start_ms + minute * 60_000
        b.add(("t", 0), cid, ts, _counts())
        b.zones[cid] = zone
        if minute % max(1, 1440 // max(episodes, 1)) == 0 and minute // max(1, 1440 // max(episodes, 1)) < episodes:
            eid = f"{ts}-1000-{minute % 9000}"
            b.episodes.append(
                (("t", 0), Episode(cid, eid, "without_mask", (("without_mask", 30),), ts, ts + 20_000, (0.1, 0.1, 0.3, 0.3),
                            0.9, EPISODE_CLOSED, 5000, ts + 3000, snap))  # fmt: skip
            )
        store.commit_batch(b, "g")


def memory_per_camera_day(store: Store, episodes_per_day: int, snap: bytes) -> dict[str, float]:
    """Bytes one camera's day adds, by kind of key (MEMORY USAGE of each key written)."""
    cid, zone = "mem-cam", "Mem zone"
    start = (int(time.time() * 1000) // DAY_MS - 3) * DAY_MS
    fill_day(store, cid, zone, start, episodes_per_day, snap)
    k = store.keys
    kinds: dict[str, float] = {"minute": 0, "hour": 0, "day": 0, "zone_hour": 0, "zone_day": 0, "episode": 0, "snapshot": 0}
    patterns = {
        "minute": k.minute(cid, 0)[:-1] + "*",
        "hour": k.hour(cid, 0)[:-1] + "*",
        "day": k.day(cid, 0)[:-1] + "*",
        "zone_hour": k.zone_hour(zone, 0)[:-1] + "*",
        "zone_day": k.zone_day(zone, 0)[:-1] + "*",
        "episode": k.episode(cid, "") + "*",
        "snapshot": k.snapshot(cid, "") + "*",
    }
    for kind, pattern in patterns.items():
        for key in store.r.scan_iter(match=pattern, count=1000):
            kinds[kind] += store.r.memory_usage(key, samples=0) or 0
    kinds["episodes_index"] = float(store.r.memory_usage(k.episodes(cid), samples=0) or 0)
    return kinds


def fill_month(store: Store, cameras: int, days: int, episodes_per_day: int, snap: bytes) -> tuple[int, int]:
    """`cameras` cameras over `days` days: hourly batches (one minute bucket each) and episodes."""
    end = (int(time.time() * 1000) // DAY_MS) * DAY_MS
    start = end - days * DAY_MS
    offset = 0
    for c in range(cameras):
        cid = f"cam-{c}"
        store.register_camera(cid, name=f"Camera {c}", zone=f"Zone {c % 3}")
        for hour in range(days * 24):
            b = BatchWrite()
            b.start_offsets[("t", 0)], b.next_offsets[("t", 0)] = offset, offset + 1
            offset += 1
            ts = start + hour * 3_600_000 + 60_000
            b.add(("t", 0), cid, ts, _counts())
            b.zones[cid] = f"Zone {c % 3}"
            if hour % 24 < episodes_per_day:
                eid = f"{ts}-{c}-{hour}"
                ep = Episode(cid, eid, "without_mask", (("without_mask", 30),), ts, ts + 20_000, (0.1, 0.1, 0.3, 0.3),
                             0.9, EPISODE_CLOSED, 5000, ts + 3000, snap)  # fmt: skip
                b.episodes.append((("t", 0), ep))
            store.commit_batch(b, "g")
    return start, end


PARSERS = {"hiredis": redis.connection._HiredisParser, "pure-python": redis.connection._RESP2Parser}


def time_reports(url: str, start: int, end: int, runs: int) -> dict[str, dict[str, list[float]]]:
    """Each part of a whole-site report, timed `runs` times per Redis reply parser, the parsers interleaved."""
    stores = {name: Store(redis.Redis.from_url(url, parser_class=cls)) for name, cls in PARSERS.items()}
    out = {name: {"build": [], "html": [], "csv": []} for name in stores}  # type: dict[str, dict[str, list[float]]]
    req = report.ReportRequest(start, end, site="bench")
    for _ in range(runs):
        for name, store in stores.items():
            t0 = time.perf_counter()
            body = report.build(store, req, int(time.time() * 1000))
            t1 = time.perf_counter()
            report.to_html(body, store)
            t2 = time.perf_counter()
            report.to_csv(body)
            t3 = time.perf_counter()
            out[name]["build"].append(t1 - t0)
            out[name]["html"].append(t2 - t1)
            out[name]["csv"].append(t3 - t2)
    for store in stores.values():
        store.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes-per-day", type=int, default=20, help="violation episodes per camera per day")
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    snap = _snapshot()
    with tempfile.TemporaryDirectory() as tmp, Children(Path(tmp)) as children:
        url = children.start_redis()
        store = Store(redis.Redis.from_url(url))
        mem = memory_per_camera_day(store, args.episodes_per_day, snap)
        per_day = {
            "minute buckets (kept 7 days)": mem["minute"],
            "hour + day buckets (kept 400 days)": mem["hour"] + mem["day"],
            "zone hour + day buckets (kept 400 days, shared by a zone's cameras)": mem["zone_hour"] + mem["zone_day"],
            f"{args.episodes_per_day} episodes + snapshots (kept 30 days)": mem["episode"] + mem["snapshot"],
        }
        print(f"snapshot JPEG: {len(snap)} bytes")
        print("Redis memory one camera's day adds (MEMORY USAGE of the keys written):")
        for name, b in per_day.items():
            print(f"  {name:<70} {b / 1024:8.1f} KiB")
        steady = (
            mem["minute"] * MINUTE_TTL_S / 86_400
            + (mem["hour"] + mem["day"] + mem["zone_hour"] + mem["zone_day"]) * HISTORY_TTL_S / 86_400
            + (mem["episode"] + mem["snapshot"]) * EPISODE_TTL_S / 86_400
        )
        print(f"steady state per camera at the default TTLs: {steady / 2**20:.1f} MiB")
        store.r.flushdb()
        t0 = time.perf_counter()
        start, end = fill_month(store, args.cameras, args.days, args.episodes_per_day, snap)
        print(f"filled {args.cameras} cameras x {args.days} days in {time.perf_counter() - t0:.1f} s")
        for parser, times in time_reports(url, start, end, args.runs).items():
            for part, xs in times.items():
                print(
                    f"report {part:<5} ({parser:<11}) median {statistics.median(xs) * 1000:7.1f} ms  "
                    f"min {min(xs) * 1000:7.1f}  max {max(xs) * 1000:7.1f}  (n={len(xs)})"
                )
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
