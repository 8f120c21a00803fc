"""The soak: the real producer with 8 demo cameras at 5 fps through the whole stack for N minutes (60 by default),
with the embedded stack's time-bucketed topics and their janitor and the model server as `maskwatch up` runs it
(OpenVINO runtime, batching); the memory of every process (broker and Redis
included), Redis's memory and disk over time and by kind of key, lag, and whether every frame the broker took was
accounted for.

Redis is the one process meant to grow: it keeps minute buckets 7 days, hour and day buckets 400 days, episodes and
their snapshots 30 days (`maskwatch/store.py`; `python -m bench.history` gives a camera's steady state). So its RSS
is left out of the processes whose memory must stay level, and its keys are weighed by kind instead: every kind but
the history's must stay level."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.feeder import accounted
from bench.stack import DEPLOYED_SERVING_ARGS, Names, start_server, start_workers, wait_group_stable, worker_env
from bench.stats import growth_pct, percentile, window_peaks
from maskwatch.buckets import TopicScheme
from maskwatch.procs import Children, py, wait_for
from maskwatch.rotation import Janitor, run_janitor
from maskwatch.store import Store
from maskwatch.topics import ensure_topics

logger = logging.getLogger(__name__)

JANITOR_AHEAD = 4  # as `maskwatch up`: topics are created 4 buckets ahead and deleted in the same steps

ROTATE_S = 60  # the bucket width `maskwatch up` uses

# Kinds of Redis key (the name's first part after the prefix) that hold history, kept for their TTLs: they grow by
# design until the oldest expire. Every other kind (offsets, frames seen, latest frames, cameras...) must stay level.
HISTORY_KINDS = frozenset({"m", "h", "d", "zh", "zd", "episode", "episodes", "snap"})
# and each camera's newest JPEG (`latest`, 120 s TTL): one key per camera whose size follows the scene
NOT_WEIGHED = HISTORY_KINDS | {"latest"}
GROWS_BY_DESIGN = frozenset({"redis"})  # processes left out of the level-memory figure (see the module's doc)


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 60.0
    cameras: int = 8
    fps: float = 5.0
    workers: int = 2
    partitions: int = 12
    sample_s: float = 5.0

    @property
    def warmup_s(self) -> float:
        """Memory is compared from this point on (10 min, or a sixth of a shorter run): start-up allocations, the
        first buckets of frames and the first rotations are not growth."""
        return min(600.0, self.minutes * 60 / 6)


def run_soak(procs: Children, model_base_path: Path, cfg: SoakConfig) -> dict[str, Any]:
    kafka = procs.start_broker()
    redis_url = procs.start_redis(persist=True)
    server = start_server(procs, model_base_path, "serving", *DEPLOYED_SERVING_ARGS)  # as `maskwatch up` serves
    names = Names.fresh("soak")
    ensure_topics([kafka], None, cfg.partitions, names.dlq_topic)
    store = Store.from_url(redis_url, names.prefix)
    scheme = TopicScheme(names.topic, ROTATE_S)
    janitor = Janitor({"bootstrap_servers": [kafka]}, scheme, cfg.partitions, store, names.group, ahead=JANITOR_AHEAD)
    janitor.tick()
    stop = threading.Event()
    jthread = threading.Thread(target=run_janitor, args=(janitor, stop), name="janitor", daemon=True)
    jthread.start()
    # the stack's settings, frame age limit included: an overloaded machine shows up as dropped_stale, not as lag
    env = worker_env(kafka, redis_url, server.target, names, MW_TOPIC_ROTATE_S=str(ROTATE_S))
    workers = start_workers(procs, cfg.workers, env, tag="soak-w")
    wait_group_stable(procs, store, workers, cfg.partitions)
    cameras = [f"demo-{i + 1}" for i in range(cfg.cameras)]
    penv = {
        "MW_KAFKA": kafka,
        "MW_REDIS_URL": redis_url,
        "MW_TOPIC": names.topic,
        "MW_TOPIC_ROTATE_S": str(ROTATE_S),
        "MW_REDIS_PREFIX": names.prefix,
        "MW_LOG_LEVEL": "WARNING",
    }
    procs.start("producer", py("producer", "--demo-cameras", str(cfg.cameras), "--demo-fps", str(cfg.fps)), penv)
    watched = ["tansu", "redis", server.name, *workers, "producer"]

    newest: list[tuple[float, float]] = []  # (time since start, ms from the newest frame's capture to its Redis write)
    redis_dir = procs.log_dir / "redis"
    t0 = time.monotonic()
    pubsub = store.r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(store.keys.updates())

    def listen() -> None:
        while not stop.is_set():
            try:
                msg = pubsub.get_message(timeout=0.5)
            except redis.RedisError:
                return
            if msg is None or msg.get("type") != "message":
                continue
            data = json.loads(msg["data"])
            for cam in data.get("cameras", {}).values():
                if cam.get("last_frame_ms"):
                    newest.append((time.monotonic() - t0, float(data["ts_ms"] - cam["last_frame_ms"])))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    samples: list[dict[str, Any]] = []
    kinds_at_baseline: dict[str, dict[str, int]] | None = None
    end_at = t0 + cfg.minutes * 60
    while time.monotonic() < end_at:
        procs.check_alive(*watched)
        if kinds_at_baseline is None and time.monotonic() - t0 >= cfg.warmup_s:
            kinds_at_baseline = redis_memory_by_kind(store)
        hbs = store.heartbeats("worker")
        acc = accounted(store, cameras)
        sent = sum(int(store.camera_info(c).get("sent", 0) or 0) for c in cameras)
        offered = _offered(store, cameras)
        samples.append(
            {
                "t_s": round(time.monotonic() - t0, 1),
                "rss_mb": {p: round(procs[p].rss_mb(), 1) for p in watched},
                "cpu_s": {p: round(procs.cpu_seconds([p]), 2) for p in watched},
                "redis_used_mb": round(int(store.r.info("memory")["used_memory"]) / 2**20, 1),
                "redis_disk_mb": round(sum(f.stat().st_size for f in redis_dir.rglob("*") if f.is_file()) / 2**20, 1),
                "topics": janitor.stats.live,
                "rotations": janitor.stats.deleted,
                "lag": sum(int(hbs.get(w, {}).get("lag", 0) or 0) for w in workers),
                "sent": sent,
                "offered": offered,
                "accounted": _sum_accounted(acc),
                "dropped_stale": acc["dropped_stale"],
            }
        )
        time.sleep(min(cfg.sample_s, max(0.0, end_at - time.monotonic())))
    procs.stop("producer", timeout_s=30)
    # what was offered: every frame the producer handed to the broker carries an `mw-seq` (one per frame and run);
    # each ends up counted, stale, invalid or lost (a gap in `mw-seq`), once (a retry's second copy is skipped)
    offered = _offered(store, cameras)
    records = sum(int(store.camera_info(c).get("sent", 0) or 0) for c in cameras)
    try:
        wait_for(lambda: _sum_accounted(accounted(store, cameras)) >= offered, 180, "the workers to drain the topic", interval_s=1.0)
    except TimeoutError as e:
        logger.warning("%s", e)
    stop.set()
    listener.join(timeout=5)
    jthread.join(timeout=15)
    janitor.close()
    pubsub.close()
    acc = accounted(store, cameras)
    infos = {c: store.camera_info(c) for c in cameras}
    kinds_at_end = redis_memory_by_kind(store)
    store.close()

    base = next((s for s in samples if float(s["t_s"]) >= cfg.warmup_s), samples[0])
    last = samples[-1]
    rss0, rss1 = base["rss_mb"], last["rss_mb"]
    growth = {p: round(growth_pct(rss0[p], rss1[p]), 2) for p in watched}
    unaccounted = offered - _sum_accounted(acc)
    peaks = window_peaks(samples, watched, cfg.warmup_s, PEAK_WINDOW_S)
    peak_growth = {p: round(growth_pct(peaks[0][p], peaks[-1][p]), 2) for p in watched} if peaks else {}
    level = [g for p, g in peak_growth.items() if p not in GROWS_BY_DESIGN]
    kinds_before = kinds_at_baseline or {}
    lat = [ms for _, ms in newest]
    return {
        "config": {
            "minutes": cfg.minutes,
            "cameras": cfg.cameras,
            "fps_per_camera": cfg.fps,
            "workers": cfg.workers,
            "partitions": cfg.partitions,
            "memory_baseline_s": cfg.warmup_s,
            "serving_args": list(DEPLOYED_SERVING_ARGS),
        },
        "soak_rss_growth_pct": max(growth.values()),
        "soak_rotations": janitor.stats.deleted,
        "redis_used_mb": {"start": base["redis_used_mb"], "end": last["redis_used_mb"]},
        "redis_disk_mb": {"start": base["redis_disk_mb"], "end": last["redis_disk_mb"]},
        # offered - accounted: > 0 frames unaccounted, < 0 frames counted twice; 0 is the goal
        "soak_frames_lost": max(0, unaccounted),
        "soak_frames_double_counted": max(0, -unaccounted),
        "frames_offered": offered,
        # the highest RSS in each 5-min window after the baseline: a sawtooth process (the broker between janitor
        # steps) is bounded when its peaks stay level, whatever phase the end point falls on
        "rss_peak_mb_by_window": peaks,
        "soak_rss_peak_growth_pct": max(level) if level else None,
        "soak_redis_other_growth_kib": round(other_growth(kinds_before, kinds_at_end) / 1024, 1) if kinds_at_baseline else None,
        "redis_by_kind": {"baseline": kinds_before, "end": kinds_at_end},
        "rss_peak_growth_pct": peak_growth,
        "rss_growth_pct": growth,
        "rss_start_mb": rss0,
        "rss_end_mb": rss1,
        "rss_first_mb": samples[0]["rss_mb"],
        "rss_at_mb": {f"{m} min": _at(samples, m * 60)["rss_mb"] for m in (10, 60) if m * 60 <= cfg.minutes * 60},
        "broker_note": f"frames go to {ROTATE_S} s bucket topics, deleted once consumed: the broker holds a few minutes",
        "records_sent": records,
        "accounted": acc,
        "producer": {
            "captured": sum(int(i.get("captured", 0) or 0) for i in infos.values()),
            "sent": sum(int(i.get("sent", 0) or 0) for i in infos.values()),
            "dropped_broker": sum(int(i.get("dropped_broker", 0) or 0) for i in infos.values()),
        },
        "dropped_stale_share": round(acc["dropped_stale"] / records, 4) if records else None,
        "lag_max": max(int(s["lag"]) for s in samples),
        "lag_last": int(last["lag"]),
        "newest_frame_latency_ms": {
            "p50": round(percentile(lat, 50)),
            "p95": round(percentile(lat, 95)),
            "p99": round(percentile(lat, 99)),
            "n": len(lat),
        }
        if lat
        else None,
        "samples": samples,
    }


PEAK_WINDOW_S = 300.0


def key_kind(name: str, prefix: str) -> str:
    """A Redis key's kind: the first part of its name after the prefix (`m` for a minute bucket, `offsets`...)."""
    return name.removeprefix(prefix).split(":", 1)[0]


def redis_memory_by_kind(store: Store) -> dict[str, dict[str, int]]:
    """Per kind of key under the store's prefix: how many keys and their bytes (MEMORY USAGE)."""
    out: dict[str, dict[str, int]] = {}
    prefix = store.keys.prefix
    for key in store.r.scan_iter(match=prefix + "*", count=1000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        row = out.setdefault(key_kind(name, prefix), {"keys": 0, "bytes": 0})
        row["keys"] += 1
        row["bytes"] += int(store.r.memory_usage(key, samples=0) or 0)  # 0 when it expired meanwhile
    return out


def other_growth(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> int:
    """Bytes the kinds of key that must stay level (all but the history and the newest frames) gained from `before`
    to `after` (negative: shrank)."""
    def total(kinds: dict[str, dict[str, int]]) -> int:
        return sum(row["bytes"] for kind, row in kinds.items() if kind not in NOT_WEIGHED)

    return total(after) - total(before)


def _offered(store: Any, cameras: list[str]) -> int:
    """Frames the producer handed to the broker (its `seq` per camera: the next `mw-seq` of its run)."""
    return sum(int(store.camera_info(c).get("seq", 0) or 0) for c in cameras)


def _sum_accounted(acc: dict[str, int]) -> int:
    return acc["frames"] + acc["dropped_stale"] + acc["invalid"] + acc["lost"]


def _at(samples: list[dict[str, Any]], t_s: float) -> dict[str, Any]:
    """The first sample taken at or after `t_s` seconds (the last one if the run was shorter)."""
    return next((x for x in samples if float(x["t_s"]) >= t_s), samples[-1])
