"""Sends the benchmark's frames to Kafka as a camera would (Contract 1 headers, capture time at send), as a backlog
or paced at a rate, remembering each camera's capture times; and reads what Redis accounted for."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from maskwatch.frames import Frame
from maskwatch.store import Store

PRODUCER_ID = "bench"


def camera_ids(n: int) -> list[str]:
    return [f"bench-cam-{i:02d}" for i in range(n)]


class Feeder:
    """One KafkaProducer; camera i is sent to partition i % partitions so every partition gets its share."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, cameras: int, jpegs: Sequence[bytes]) -> None:
        self.topic = topic
        self.partitions = partitions
        self.cameras = camera_ids(cameras)
        self.jpegs = list(jpegs)
        self.sent_ts: dict[str, list[int]] = defaultdict(list)
        self.seq: dict[str, int] = defaultdict(int)
        self.sent = 0
        self.producer = KafkaProducer(
            bootstrap_servers=[bootstrap],
            acks=1,
            linger_ms=5,
            batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
            buffer_memory=256 * 1024 * 1024,
            max_block_ms=30_000,
            client_id="maskwatch-bench",
        )

    def send_one(self) -> None:
        i = self.sent
        ci = i % len(self.cameras)
        cam = self.cameras[ci]
        jpeg = self.jpegs[(i // len(self.cameras) + ci) % len(self.jpegs)]
        ts = int(time.time() * 1000)
        f = Frame(cam, jpeg, self.seq[cam], ts, 640, 480, PRODUCER_ID)
        self.producer.send(self.topic, key=f.key, value=f.jpeg, headers=f.headers(), partition=ci % self.partitions)
        self.seq[cam] += 1
        self.sent_ts[cam].append(ts)
        self.sent += 1

    def backlog(self, n: int) -> float:
        """Send n frames as fast as possible; returns the time.monotonic() when all were acknowledged."""
        for _ in range(n):
            self.send_one()
        self.producer.flush(timeout=120)
        return time.monotonic()

    def paced(self, per_s: float, seconds: float, stop: threading.Event | None = None) -> None:
        """Send at `per_s` frames per second for `seconds` (a load generator's pacing, not a wait on a condition)."""
        start = time.monotonic()
        k = 0
        while time.monotonic() - start < seconds and not (stop and stop.is_set()):
            self.send_one()
            k += 1
            ahead = start + k / per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        self.producer.flush(timeout=60)

    def close(self) -> None:
        self.producer.close(timeout=10)


def accounted(store: Store, cameras: Sequence[str]) -> dict[str, int]:
    """frames, dropped_stale, invalid and lost summed over `cameras` (what Contract 3 says every frame ends up as)."""
    out = {"frames": 0, "dropped_stale": 0, "invalid": 0, "lost": 0, "faces": 0}
    for cam in cameras:
        c = store.totals(cam)
        out["frames"] += c.frames
        out["dropped_stale"] += c.dropped_stale
        out["invalid"] += c.invalid
        out["lost"] += c.lost
        out["faces"] += c.faces
    return out


def total_accounted(store: Store, cameras: Sequence[str]) -> int:
    a = accounted(store, cameras)
    return a["frames"] + a["dropped_stale"] + a["invalid"]


def topic_records(bootstrap: str, topic: str) -> dict[int, int]:
    """Records per partition of `topic`, from the fetch high watermark (Tansu answers ListOffsets(latest) wrongly)."""
    c = KafkaConsumer(
        bootstrap_servers=[bootstrap],
        enable_auto_commit=False,
        max_partition_fetch_bytes=1024,
        fetch_max_bytes=1024 * 1024,
        receive_message_max_bytes=128 * 1024 * 1024,
        client_id="maskwatch-bench-count",
    )
    try:
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        out: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while len(out) < len(tps) and time.monotonic() < deadline:
            c.poll(timeout_ms=500, max_records=1)
            for tp in tps:
                hw = c.highwater(tp)
                if hw is not None:
                    out[tp.partition] = hw
                    c.pause(tp)
        return out
    finally:
        c.close()
