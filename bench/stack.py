"""The benchmark's stack on the shared harness (maskwatch/procs.py): each measurement's own names, model servers with
their runtime metrics, workers sharing one consumer group."""

from __future__ import annotations

import logging
import re
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from maskwatch.procs import Children, free_port, py, wait_for
from maskwatch.stack import BATCHING_ARGS, SERVING_ARGS

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
# The model server as `maskwatch up` runs it (batching as compose, the Kubernetes base and the image too; the OpenVINO
# runtime and health service are ours, tensorflow/serving runs the SavedModel).
DEPLOYED_SERVING_ARGS = (*BATCHING_ARGS, *SERVING_ARGS)
METRICS_PATH = "/monitoring/prometheus/metrics"
RUNTIME_SUM_RE = re.compile(r"^:tensorflow:serving:runtime_latency_sum\{[^}]*\}\s+([0-9.eE+-]+)", re.M)
RUNTIME_COUNT_RE = re.compile(r"^:tensorflow:serving:runtime_latency_count\{[^}]*\}\s+([0-9.eE+-]+)", re.M)


@dataclass(frozen=True)
class Names:
    """A topic, dead-letter topic, consumer group and key prefix of one measurement's own."""

    topic: str
    dlq_topic: str
    group: str
    prefix: str

    @classmethod
    def fresh(cls, what: str) -> Names:
        tag = f"{what}-{uuid.uuid4().hex[:6]}"
        return cls(f"bench-{tag}", f"bench-{tag}.dlq", f"bench-{tag}", f"b{tag}:")


@dataclass(frozen=True)
class Server:
    name: str
    target: str
    rest_port: int

    def runtime_seconds(self) -> tuple[float, int]:
        """Total model run time (s) and runs so far, from the server's Prometheus metrics (TF Serving's names)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}{METRICS_PATH}", timeout=5) as r:
            text = r.read().decode()
        total_us = sum(float(m) for m in RUNTIME_SUM_RE.findall(text))
        runs = sum(int(float(m)) for m in RUNTIME_COUNT_RE.findall(text))
        return total_us / 1e6, runs


def start_server(procs: Children, model_base_path: Path, name: str = "serving", *extra: str) -> Server:
    """`python -m serving` over `model_base_path` with a REST port for its metrics, looking for versions once; waits
    until the model is AVAILABLE."""
    rest = free_port()
    target = procs.start_serving(model_base_path, "--file_system_poll_wait_seconds", "0", *extra, name=name, rest_port=rest)
    return Server(name, target, rest)


def worker_env(kafka: str, redis_url: str, serving: str, names: Names, **extra: str) -> dict[str, str]:
    env = {
        "MW_KAFKA": kafka,
        "MW_REDIS_URL": redis_url,
        "MW_SERVING": serving,
        "MW_TOPIC": names.topic,
        "MW_DLQ_TOPIC": names.dlq_topic,
        "MW_REDIS_PREFIX": names.prefix,
        "MW_GROUP": names.group,
        "MW_OPEN_REGISTRATION": "true",  # the feeder's cameras are no site's
        "MW_HEARTBEAT_INTERVAL_S": "0.5",
        "MW_LOG_LEVEL": "WARNING",
    }
    env.update(extra)
    return env


def start_workers(procs: Children, n: int, env: dict[str, str], tag: str = "w") -> list[str]:
    names = []
    for i in range(n):
        wid = f"{tag}{i + 1}"
        procs.start(wid, py("worker", "--worker-id", wid), env)
        names.append(wid)
    return names


def wait_group_stable(
    procs: Children, store: object, worker_ids: list[str], partitions: int, timeout_s: float = 180.0, settle_s: float = 3.0
) -> None:
    """Until every worker heartbeats with some partitions, together covering all, unchanged for `settle_s`."""
    from maskwatch.payloads import WorkerHeartbeat
    from maskwatch.store import Store

    assert isinstance(store, Store)
    last: dict[str, tuple[int, ...]] | None = None
    since = time.monotonic()

    def stable() -> bool:
        nonlocal last, since
        procs.check_alive(*worker_ids)
        hbs = store.heartbeats("worker")
        parts = {w: WorkerHeartbeat.from_json(hbs[w]).partitions if w in hbs else () for w in worker_ids}
        owned = [set(p) for p in parts.values()]
        ok = all(owned) and set().union(*owned) == set(range(partitions))
        if not ok or parts != last:
            last, since = parts, time.monotonic()
            return False
        return time.monotonic() - since >= settle_s

    wait_for(stable, timeout_s, f"{len(worker_ids)} workers to share {partitions} partitions", interval_s=0.5)
