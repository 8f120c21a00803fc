"""Session fixtures that start the real pieces on free ports: Tansu (Kafka protocol), redis-server, the model server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from maskwatch.procs import free_port, port_open, redis_answers, redis_command, tansu_command, wait_for
from maskwatch.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def kafka(logs_dir: Path) -> Iterator[str]:
    """A Tansu broker on a free port; yields its bootstrap address."""
    port = free_port()
    with open(logs_dir / "tansu.log", "wb") as log:
        proc = subprocess.Popen(tansu_command(port), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: port_open("127.0.0.1", port), 30, "tansu")
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[str]:
    """Our own redis-server on a free port (never the machine's)."""
    port = free_port()
    datadir = tmp_path_factory.mktemp("redis")
    with open(logs_dir / "redis.log", "wb") as log:
        proc = subprocess.Popen(redis_command(port, str(datadir)), stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: redis_answers(url), 20, "redis-server")
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def model_base_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exported mask model: the one `make setup` built, else exported now."""
    built = ROOT / "models" / "mask_detector"
    if (built / "1" / "saved_model.pb").exists():
        return built
    out = tmp_path_factory.mktemp("models")
    subprocess.run([sys.executable, "-m", "serving.export", "--out", str(out)], check=True, env=ENV, cwd=ROOT, timeout=600)
    return out / "mask_detector"


@pytest.fixture(scope="session")
def serving(model_base_path: Path, logs_dir: Path) -> Iterator[str]:
    """`python -m serving` over the exported model; yields host:port once the model is AVAILABLE."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    port = free_port()
    argv = [sys.executable, "-m", "serving", "--port", str(port), "--rest_api_port", "0", "--model_name", "mask_detector", "--model_base_path", str(model_base_path)]
    with open(logs_dir / "serving.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
    target = f"127.0.0.1:{port}"

    def available() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"model server exited rc={proc.returncode}: {(logs_dir / 'serving.log').read_text()[-2000:]}")
        if not port_open("127.0.0.1", port):
            return False
        with grpc.insecure_channel(target) as ch:
            req = get_model_status_pb2.GetModelStatusRequest()
            req.model_spec.name = "mask_detector"
            try:
                resp = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(req, timeout=2)
            except grpc.RpcError:
                return False
            return any(s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE for s in resp.model_version_status)

    try:
        wait_for(available, 180, "the model server", interval_s=0.5)
        yield target
    finally:
        _stop(proc)


@pytest.fixture
def names() -> dict[str, str]:
    """A topic, dead-letter topic, consumer group and Redis key prefix of this test's own."""
    tag = uuid.uuid4().hex[:8]
    return {"topic": f"frames-{tag}", "dlq_topic": f"frames-{tag}.dlq", "group": f"workers-{tag}", "redis_prefix": f"t{tag}:"}


@pytest.fixture
def topic(kafka: str, names: dict[str, str]) -> str:
    ensure_topics([kafka], names["topic"], 4, names["dlq_topic"])
    return names["topic"]


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)
    yield r
    r.close()
