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

from maskwatch.procs import CHILD_ENV, Children
from maskwatch.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, **CHILD_ENV}


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def kafka(logs_dir: Path) -> Iterator[str]:
    """A Tansu broker on a free port; yields its bootstrap address."""
    with Children(logs_dir) as children:
        yield children.start_broker()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[str]:
    """Our own redis-server on a free port (never the machine's)."""
    with Children(logs_dir) as children:
        yield children.start_redis(datadir=tmp_path_factory.mktemp("redis"))


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
    with Children(logs_dir, cwd=ROOT) as children:
        yield children.start_serving(model_base_path, timeout_s=180)


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
