"""The soak: the real producer with 8 demo cameras at 5 fps through the whole stack for N minutes; memory of every
process over time, lag over time, and whether every frame the broker took was accounted for in Redis."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.feeder import accounted, topic_records
from bench.procs import (
    Names,
    Procs,
    py,
    start_kafka,
    start_redis,
    start_serving,
    start_workers,
    wait_group_stable,
    worker_env,
)
from bench.stats import frames_lost, growth_pct, percentile
from maskwatch.stack import wait_for
from maskwatch.store import Store
from maskwatch.topics import ensure_topics

logger = logging.getLogger(__name__)

OURS = ("serving", "producer")  # plus the workers: the processes whose memory must stay flat


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 10.0
    cameras: int = 8
    fps: float = 5.0
    workers: int = 2
    partitions: int = 12
    sample_s: float = 5.0

    @property
    def warmup_s(self) -> float:
        """Memory is compared from this point on: start-up allocations (model load, first batches) are not growth."""
        return min(60.0, 0.1 * self.minutes * 60)


def run_soak(procs: Procs, model_base_path: Path, cfg: SoakConfig) -> dict[str, Any]:
    kafka = start_kafka(procs)
    redis_url = start_redis(procs)
    server = start_serving(procs, model_base_path)
    names = Names.fresh("soak")
    ensure_topics([kafka], names.topic, cfg.partitions, names.dlq_topic)
    store = Store.from_url(redis_url, names.prefix)
    # the stack's settings, frame age limit included: an overloaded machine shows up as dropped_stale, not as lag
    env = worker_env(kafka, redis_url, server.target, names)
    workers = start_workers(procs, cfg.workers, env, tag="soak-w")
    wait_group_stable(procs, store, workers, cfg.partitions)
    cameras = [f"demo-{i + 1}" for i in range(cfg.cameras)]
    penv = {"MW_KAFKA": kafka, "MW_REDIS_URL": redis_url, "MW_TOPIC": names.topic, "MW_REDIS_PREFIX": names.prefix, "MW_LOG_LEVEL": "WARNING"}
    procs.start("producer", py("producer", "--demo-cameras", str(cfg.cameras), "--demo-fps", str(cfg.fps)), penv)
    watched = ["tansu", "redis", server.name, *workers, "producer"]

    newest: list[tuple[float, float]] = []  # (time since start, ms from the newest frame's capture to its Redis write)
    stop = threading.Event()
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
    end_at = t0 + cfg.minutes * 60
    while time.monotonic() < end_at:
        procs.check_alive(*watched)
        hbs = store.heartbeats("worker")
        acc = accounted(store, cameras)
        sent = sum(int(store.camera_info(c).get("sent", 0) or 0) for c in cameras)
        samples.append(
            {
                "t_s": round(time.monotonic() - t0, 1),
                "rss_mb": {p: round(procs.rss_mb(p), 1) for p in watched},
                "cpu_s": {p: round(procs.cpu_seconds([p]), 2) for p in watched},
                "lag": sum(int(hbs.get(w, {}).get("lag", 0) or 0) for w in workers),
                "sent": sent,
                "accounted": acc["frames"] + acc["dropped_stale"] + acc["invalid"],
                "dropped_stale": acc["dropped_stale"],
            }
        )
        time.sleep(min(cfg.sample_s, max(0.0, end_at - time.monotonic())))
    procs.stop("producer", timeout_s=30)
    records = sum(topic_records(kafka, names.topic).values())
    try:
        wait_for(lambda: sum(accounted(store, cameras)[k] for k in ("frames", "dropped_stale", "invalid")) >= records, 180, "the workers to drain the topic", interval_s=1.0)
    except TimeoutError as e:
        logger.warning("%s", e)
    stop.set()
    listener.join(timeout=5)
    pubsub.close()
    acc = accounted(store, cameras)
    infos = {c: store.camera_info(c) for c in cameras}
    store.close()

    base = next((s for s in samples if float(s["t_s"]) >= cfg.warmup_s), samples[0])
    last = samples[-1]
    rss0, rss1 = base["rss_mb"], last["rss_mb"]
    growth = {p: round(growth_pct(rss0[p], rss1[p]), 2) for p in watched}
    ours = [p for p in watched if p in OURS or p in workers]
    lost = frames_lost(records, acc["frames"], acc["dropped_stale"], acc["invalid"])
    lat = [ms for _, ms in newest]
    return {
        "config": {
            "minutes": cfg.minutes,
            "cameras": cfg.cameras,
            "fps_per_camera": cfg.fps,
            "workers": cfg.workers,
            "partitions": cfg.partitions,
            "memory_baseline_s": cfg.warmup_s,
        },
        "soak_rss_growth_pct": max(growth[p] for p in ours),
        "soak_frames_lost": lost,
        "rss_growth_pct": growth,
        "rss_start_mb": rss0,
        "rss_end_mb": rss1,
        "rss_first_mb": samples[0]["rss_mb"],
        "broker_note": "Tansu keeps every record in RAM until the topic is deleted, so its growth is by design, not a leak",
        "records_in_topic": records,
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
