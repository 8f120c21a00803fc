"""Helpers for the worker fault tests: a served cheap model, frame producers, worker processes, exact totals."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
from kafka import KafkaProducer

from maskwatch.detections import Counts
from maskwatch.frames import Frame
from maskwatch.procs import Child, Children, py
from maskwatch.store import Store

ROOT = Path(__file__).resolve().parents[2]


def tiny_jpeg(width: int, height: int = 48) -> bytes:
    img = np.full((height, width, 3), 90, np.uint8)
    cv2.circle(img, (width // 2, height // 2), min(width, height) // 3, (200, 180, 170), -1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    return buf.tobytes()


JPEGS = {w: tiny_jpeg(w) for w in (64, 65)}


def frame(camera: str, seq: int, ts_ms: int | None = None, run: str = "test") -> Frame:
    """Frame `seq` of `camera` from producer run `run` (a run's (camera, seq) is one frame: a second message with
    both the same is a copy, which workers skip)."""
    w = 64 + (seq % 3 == 0)  # a third of frames odd width → without_mask in the cheap model
    return Frame(camera, JPEGS[w], seq, int(time.time() * 1000) if ts_ms is None else ts_ms, w, 48, run)


def expected(cameras: list[str], n: int) -> dict[str, Counts]:
    """What the cheap model counts for `n` frames spread round-robin over `cameras`."""
    out = {c: Counts() for c in cameras}
    for i in range(n):
        cam = cameras[i % len(cameras)]
        bad = (i // len(cameras)) % 3 == 0
        out[cam] = out[cam] + Counts(frames=1, faces=1, with_mask=0 if bad else 1, without_mask=1 if bad else 0)
    return out


def produce(
    kafka: str, topic: str, cameras: list[str], n: int, per_s: float = 0.0, ts_ms: int | None = None, run: str = "test"
) -> None:
    """Send `n` frames round-robin over `cameras` (frame i of a camera has seq i in producer run `run`), optionally
    paced."""
    p = KafkaProducer(bootstrap_servers=[kafka], acks=1, linger_ms=5)
    start = time.monotonic()
    try:
        for i in range(n):
            cam = cameras[i % len(cameras)]
            f = frame(cam, i // len(cameras), ts_ms, run)
            p.send(topic, key=f.key, value=f.jpeg, headers=f.headers())
            if per_s:
                ahead = start + (i + 1) / per_s - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing a load generator, not waiting on a condition
        p.flush(timeout=30)
    finally:
        p.close()


def produce_in_background(kafka: str, topic: str, cameras: list[str], n: int, per_s: float) -> threading.Thread:
    t = threading.Thread(target=produce, args=(kafka, topic, cameras, n, per_s), daemon=True)
    t.start()
    return t


def accounted(store: Store, cameras: list[str]) -> int:
    return sum(c.frames + c.dropped_stale + c.invalid for c in (store.totals(cam) for cam in cameras))


# For tests that SIGKILL workers: a killed worker keeps its partitions until its Kafka session expires, so the group
# rebalances without it only then. 3 s, the shortest session the worker accepts, instead of the 10 s default: the
# kills and rebalances happen just as they would, the test waits 7 s less for each.
KILL_SESSION = {"MW_SESSION_TIMEOUT_MS": "3000"}


def env_for(kafka: str, redis_url: str, serving: str, names: dict[str, str], **extra: str) -> dict[str, str]:
    """A worker's (or producer's) variables for the test's addresses and names, over this process's environment."""
    return {
        "MW_KAFKA": kafka,
        "MW_REDIS_URL": redis_url,
        "MW_SERVING": serving,
        "MW_TOPIC": names["topic"],
        "MW_DLQ_TOPIC": names["dlq_topic"],
        "MW_REDIS_PREFIX": names["redis_prefix"],
        "MW_GROUP": names["group"],
        "MW_MAX_FRAME_AGE_S": "600",
        "MW_HEARTBEAT_INTERVAL_S": "0.5",
        "MW_RETRY_MAX_S": "2",
        # these frames come straight from the test, not from a producer registering its site's cameras
        "MW_OPEN_REGISTRATION": "true",
        **extra,
    }


class Procs(Children):
    """The workers and model servers of one test, run from the repository with the test's environment over this
    process's; `stop_all` (name -> exit status) at its end."""

    def __init__(self, logs: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(logs, env, cwd=ROOT)

    def worker(self, wid: str) -> Child:
        return self.start(wid, py("worker", "--worker-id", wid))

    def serving(self, name: str, port: int, model_base_path: Path) -> str:
        """A model server on `port`, once its model is AVAILABLE."""
        return self.start_serving(model_base_path, name=name, port=port, timeout_s=120)
