"""Worker settings that reach the Kafka consumer: the session timeout (how long a dead worker keeps its partitions)."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer
from pydantic import ValidationError

from worker.app import consumer_config
from worker.settings import KAFKA_HEARTBEAT_INTERVAL_MS, WorkerSettings


@pytest.mark.parametrize(
    ("env", "want"),
    [
        (None, 10_000),
        ("3000", 3000),
        ("45000", 45_000),
        ("300000", 300_000),
        ("2999", "greater than or equal to 3000"),  # fewer than 3 heartbeats per session: kafka-python's rule
        ("0", "greater than or equal to 3000"),
        ("300001", "less than or equal to 300000"),  # kafka-python wants it under its request timeout (305 s)
        ("10s", "valid integer"),
    ],
)
def test_session_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch, env: str | None, want: int | str) -> None:
    if env is not None:
        monkeypatch.setenv("MW_SESSION_TIMEOUT_MS", env)
    if isinstance(want, int):
        assert WorkerSettings().session_timeout_ms == want
        return
    with pytest.raises(ValidationError) as e:
        WorkerSettings()
    assert "session_timeout_ms" in str(e.value) and want in str(e.value)


@pytest.mark.parametrize("session_ms", [3000, 10_000, 300_000])
def test_the_consumer_gets_the_session_timeout_within_what_kafka_python_accepts(session_ms: int) -> None:
    cfg = consumer_config(WorkerSettings(session_timeout_ms=session_ms, group="g", worker_id="w1"))
    assert cfg["session_timeout_ms"] == session_ms and cfg["heartbeat_interval_ms"] == KAFKA_HEARTBEAT_INTERVAL_MS
    assert cfg["group_id"] == "g" and cfg["client_id"] == "maskwatch-worker-w1"
    assert cfg["heartbeat_interval_ms"] * 3 <= cfg["session_timeout_ms"]
    # KafkaConsumer raises KafkaConfigurationError at start unless its request timeout exceeds the session's
    assert cfg.get("request_timeout_ms", KafkaConsumer.DEFAULT_CONFIG["request_timeout_ms"]) > cfg["session_timeout_ms"]
