"""End to end on the embedded stack (feeder → Tansu → workers → model server → Redis): the rate at which a backlog
drains (saturation) and the capture → counted latency under a paced load, read from outside the services."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.feeder import Feeder, accounted, total_accounted
from bench.stack import Names, Server, start_server, start_workers, wait_group_stable, worker_env
from bench.stats import frame_latencies, rate_in_window
from maskwatch.procs import Children
from maskwatch.store import Store
from maskwatch.topics import ensure_topics

logger = logging.getLogger(__name__)

POLL_S = 0.25


@dataclass(frozen=True)
class Drain:
    """One backlog drained: steady-state rate and what the stack spent on it."""

    frames: int
    fps: float
    window_s: float
    cpu_s: float  # CPU seconds of every stack process (broker, Redis, model server, workers) in the window
    model_busy: float  # model run seconds per second of window (server metrics): the mean number of calls running
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    faces_per_frame: float = 0.0  # over the whole backlog: shows the model really ran on every frame

    @property
    def cores(self) -> float:
        return self.cpu_s / self.window_s

    @property
    def fps_per_core(self) -> float:
        return self.fps * self.window_s / self.cpu_s if self.cpu_s > 0 else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "fps": round(self.fps, 3),
            "window_s": round(self.window_s, 2),
            "cores_used": round(self.cores, 3),
            "fps_per_core": round(self.fps_per_core, 3),
            "model_calls_in_flight": round(self.model_busy, 3),
            "faces_per_frame": round(self.faces_per_frame, 3),
            "cpu_share": {k: round(v / self.cpu_s, 3) for k, v in self.cpu_by_process.items()} if self.cpu_s else {},
        }


class Pipeline:
    """Starts the stack once; each drain or latency run uses the same topic, group and workers."""

    def __init__(
        self,
        procs: Children,
        model_base_path: Path,
        jpegs: list[bytes],
        workers: int = 2,
        partitions: int = 12,
        cameras: int = 12,
        max_poll_records: int = 16,
        serving_args: tuple[str, ...] = (),
        kafka: str | None = None,
        redis_url: str | None = None,
        server: Server | None = None,
        tag: str = "pipe",
    ) -> None:
        self.procs = procs
        self.kafka = kafka or procs.start_broker()
        self.redis_url = redis_url or procs.start_redis()
        self.server = server or start_server(procs, model_base_path, "serving", *serving_args)
        self.names = Names.fresh(tag)
        self.partitions = partitions
        ensure_topics([self.kafka], self.names.topic, partitions, self.names.dlq_topic)
        self.store = Store.from_url(self.redis_url, self.names.prefix)
        env = worker_env(
            self.kafka,
            self.redis_url,
            self.server.target,
            self.names,
            MW_MAX_POLL_RECORDS=str(max_poll_records),
            # a backlog is old by design: count every frame through the model instead of dropping it as stale
            MW_MAX_FRAME_AGE_S="3600",
        )
        self.workers = start_workers(procs, workers, env, tag=f"{tag}-w")
        wait_group_stable(procs, self.store, self.workers, partitions)
        self.feeder = Feeder(self.kafka, self.names.topic, partitions, cameras, jpegs)
        self.stack = [n for n in ("tansu", "redis", self.server.name) if n in procs] + self.workers

    def close(self) -> None:
        self.feeder.close()
        for w in self.workers:
            self.procs.stop(w)
        self.store.close()

    def counted(self) -> int:
        return total_accounted(self.store, self.feeder.cameras)

    def warm_up(self, n: int, timeout_s: float = 300.0) -> None:
        """Send n frames and wait until they are counted (first calls of each worker, connection set-up)."""
        base = self.counted()
        self.feeder.backlog(n)
        deadline = time.monotonic() + timeout_s
        while self.counted() - base < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"warm-up backlog of {n} not counted in {timeout_s}s")
            self.procs.check_alive(*self.workers, self.server.name)
            time.sleep(POLL_S)

    def drain(self, n: int, lo: float = 0.15, hi: float = 0.9, timeout_s: float = 600.0) -> Drain:
        """Send a backlog of n frames, wait until it is counted, and measure the steady state between the
        `lo` and `hi` fractions of it (and not before the backlog was fully sent)."""
        before = accounted(self.store, self.feeder.cameras)
        base = before["frames"] + before["dropped_stale"] + before["invalid"]
        samples: list[tuple[float, int, float, float, dict[str, float]]] = []
        stop = threading.Event()
        sent_at: list[float] = []

        def produce() -> None:
            sent_at.append(self.feeder.backlog(n))

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        deadline = time.monotonic() + timeout_s
        while not stop.is_set():
            now = time.monotonic()
            done = self.counted() - base
            per = {p: self.procs.cpu_seconds([p]) for p in self.stack}
            busy, _ = self.server.runtime_seconds()
            samples.append((now, done, sum(per.values()), busy, per))
            if done >= n:
                break
            if now > deadline:
                raise TimeoutError(f"backlog of {n} not counted in {timeout_s}s (counted {done})")
            self.procs.check_alive(*self.workers, self.server.name)
            time.sleep(POLL_S)
        t.join(timeout=60)
        t0_min = sent_at[0] if sent_at else samples[0][0]
        start = next(s for s in samples if s[1] >= lo * n and s[0] >= t0_min)
        end = next(s for s in samples if s[1] >= hi * n)
        if end[0] <= start[0]:
            raise RuntimeError("backlog drained before a steady-state window could be measured; raise its size")
        window = end[0] - start[0]
        fps = rate_in_window([(s[0], s[1]) for s in samples], start[0], end[0])
        cpu = end[2] - start[2]
        by_proc = {p: end[4][p] - start[4][p] for p in self.stack}
        by_kind: dict[str, float] = {}
        for p, v in by_proc.items():
            kind = "workers" if p in self.workers else p
            by_kind[kind] = by_kind.get(kind, 0.0) + v
        after = accounted(self.store, self.feeder.cameras)
        inferred = after["frames"] - before["frames"]
        faces = (after["faces"] - before["faces"]) / inferred if inferred else 0.0
        return Drain(n, fps, window, cpu, (end[3] - start[3]) / window, by_kind, faces)

    def latency(self, per_s: float, seconds: float) -> dict[str, object]:
        """Send at `per_s` for `seconds`; per-frame latency from each frame's mw-ts to the Redis write that counted it.

        The write time is the `ts_ms` of the worker's live update, published right after its Redis
        transaction; the update says how many frames of each camera the batch counted, so each
        frame is matched to its capture time (see stats.frame_latencies).
        """
        before = accounted(self.store, self.feeder.cameras)
        sent_before = {c: len(v) for c, v in self.feeder.sent_ts.items()}
        pubsub = self.store.r.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.store.keys.updates())
        updates: list[tuple[int, dict[str, int]]] = []
        stop = threading.Event()

        def listen() -> None:
            while not stop.is_set():
                msg = pubsub.get_message(timeout=0.2)
                if msg is None or msg.get("type") != "message":
                    continue
                data = json.loads(msg["data"])
                cams = {c: int(v.get("frames", 0)) for c, v in data.get("cameras", {}).items()}
                updates.append((int(data["ts_ms"]), cams))

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        run_s0, calls0 = self.server.runtime_seconds()
        t_start = time.monotonic()
        self.feeder.paced(per_s, seconds)
        sent = self.feeder.sent - sum(sent_before.values())
        base = before["frames"] + before["dropped_stale"] + before["invalid"]
        deadline = time.monotonic() + 120
        while self.counted() - base < sent and time.monotonic() < deadline:
            time.sleep(POLL_S)
        time.sleep(0.5)  # the last live update follows its Redis write
        wall = time.monotonic() - t_start
        stop.set()
        listener.join(timeout=5)
        pubsub.close()
        after = accounted(self.store, self.feeder.cameras)
        run_s1, calls1 = self.server.runtime_seconds()
        sent_ts = {c: v[sent_before.get(c, 0) :] for c, v in self.feeder.sent_ts.items()}
        lat, unmatched = frame_latencies(sent_ts, updates)
        return {
            "rate_fps": per_s,
            "seconds": seconds,
            "sent": sent,
            "counted": after["frames"] - before["frames"],
            "dropped_stale": after["dropped_stale"] - before["dropped_stale"],
            "invalid": after["invalid"] - before["invalid"],
            "unmatched": unmatched,
            "batches": len(updates),
            "model_calls": calls1 - calls0,
            "model_ms_per_call": round(1000 * (run_s1 - run_s0) / max(1, calls1 - calls0), 1),
            "frames_per_call": round(sent / max(1, calls1 - calls0), 2),
            "wall_s": round(wall, 1),
            "latencies_ms": lat,
        }
