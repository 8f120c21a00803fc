"""The benchmark's embedded stack: Tansu, redis-server, model servers and workers as child processes on free ports,
with their CPU time and memory read through psutil."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from maskwatch.model_api import MODEL_NAME
from maskwatch.stack import (
    BATCHING_ARGS,
    SERVING_ARGS,
    free_port,
    port_open,
    redis_answers,
    redis_command,
    tansu_command,
    wait_for,
)

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
# The model server as `maskwatch up` runs it (batching as compose, the Kubernetes base and the image too; the OpenVINO
# runtime and health service are ours, tensorflow/serving runs the SavedModel).
DEPLOYED_SERVING_ARGS = (*BATCHING_ARGS, *SERVING_ARGS)
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
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


@dataclass
class Procs:
    """Child processes of one benchmark, each logging to its own file; stopped in reverse start order."""

    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            p = subprocess.Popen(
                argv, env={**os.environ, **CHILD_ENV, **(env or {})}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        self.procs[name] = p
        logger.debug("started %s pid=%d", name, p.pid)
        return p

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def check_alive(self, *names: str) -> None:
        for n in names or tuple(self.procs):
            p = self.procs[n]
            if p.poll() is not None:
                raise RuntimeError(f"{n} exited rc={p.returncode}:\n{self.log_tail(n)}")

    def stop(self, name: str, timeout_s: float = 15.0) -> int | None:
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        return p.returncode

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def cpu_seconds(self, names: list[str] | None = None) -> float:
        """User + system CPU seconds used so far by the named children (all when None)."""
        total = 0.0
        for n in names if names is not None else list(self.procs):
            with contextlib.suppress(psutil.Error, KeyError):
                t = psutil.Process(self.procs[n].pid).cpu_times()
                total += t.user + t.system
        return total

    def rss_mb(self, name: str) -> float:
        return psutil.Process(self.procs[name].pid).memory_info().rss / 2**20

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def py(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def start_kafka(procs: Procs) -> str:
    port = free_port()
    procs.start("tansu", tansu_command(port))
    wait_for(lambda: port_open("127.0.0.1", port), 30, "tansu")
    return f"127.0.0.1:{port}"


def start_redis(procs: Procs, persist: bool = False) -> str:
    """redis-server on a free port; `persist`: with an append-only file, as `maskwatch up` runs it."""
    port = free_port()
    datadir = procs.log_dir / "redis"
    datadir.mkdir(exist_ok=True)
    procs.start("redis", redis_command(port, str(datadir), persist=persist))
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: redis_answers(url), 20, "redis-server")
    return url


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


def model_available(target: str, name: str = MODEL_NAME) -> bool:
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = name
    with grpc.insecure_channel(target) as ch:
        try:
            resp = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(req, timeout=2)
        except grpc.RpcError:
            return False
    return any(s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE for s in resp.model_version_status)


def start_serving(procs: Procs, model_base_path: Path, name: str = "serving", *extra: str) -> Server:
    """`python -m serving` over `model_base_path` with a REST port for its metrics; waits until AVAILABLE."""
    port, rest = free_port(), free_port()
    argv = py(
        "serving",
        "--port",
        str(port),
        "--rest_api_port",
        str(rest),
        "--model_name",
        MODEL_NAME,
        "--model_base_path",
        str(model_base_path),
        "--file_system_poll_wait_seconds",
        "0",
        *extra,
    )
    procs.start(name, argv)
    target = f"127.0.0.1:{port}"

    def ready() -> bool:
        procs.check_alive(name)
        return port_open("127.0.0.1", port) and model_available(target)

    wait_for(ready, 240, f"model server {name}", interval_s=0.5)
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


def start_workers(procs: Procs, n: int, env: dict[str, str], tag: str = "w") -> list[str]:
    names = []
    for i in range(n):
        wid = f"{tag}{i + 1}"
        procs.start(wid, py("worker", "--worker-id", wid), env)
        names.append(wid)
    return names


def wait_group_stable(
    procs: Procs, store: object, worker_ids: list[str], partitions: int, timeout_s: float = 180.0, settle_s: float = 3.0
) -> None:
    """Until every worker heartbeats with some partitions, together covering all, unchanged for `settle_s`."""
    from maskwatch.store import Store

    assert isinstance(store, Store)
    last: dict[str, str] | None = None
    since = time.monotonic()

    def stable() -> bool:
        nonlocal last, since
        procs.check_alive(*worker_ids)
        hbs = store.heartbeats("worker")
        parts = {w: hbs.get(w, {}).get("partitions", "[]") for w in worker_ids}
        owned = [set(json.loads(p)) for p in parts.values()]
        ok = all(owned) and set().union(*owned) == set(range(partitions))
        if not ok or parts != last:
            last, since = parts, time.monotonic()
            return False
        return time.monotonic() - since >= settle_s

    wait_for(stable, timeout_s, f"{len(worker_ids)} workers to share {partitions} partitions", interval_s=0.5)
