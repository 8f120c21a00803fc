"""Worker settings (env MW_*, flags over them)."""

from __future__ import annotations

import secrets

from pydantic import Field, model_validator

from maskwatch.model_api import MODEL_NAME
from maskwatch.settings import FrameSettings

# The consumer's heartbeat period (Kafka heartbeat.interval.ms): a member learns of a rebalance from its next
# heartbeat, so 1 s keeps a rebalance (new or deleted bucket topics, workers joining or leaving) to about two seconds
# on Tansu.
KAFKA_HEARTBEAT_INTERVAL_MS = 1_000


class WorkerSettings(FrameSettings):
    group: str = Field("maskwatch-workers", min_length=1, description="Kafka consumer group")
    worker_id: str = Field(
        default_factory=lambda: f"worker-{secrets.token_hex(4)}",
        description="Worker id in heartbeats (random by default: the dashboard shows it, so no host name or pid)",
    )
    model_name: str = Field(MODEL_NAME, description="Model name on the server")
    max_poll_records: int = Field(16, ge=1, le=256, description="Frames per batch (one Predict each)")
    poll_timeout_ms: int = Field(200, ge=1, le=10_000, description="Longest a poll waits for frames")
    # Tansu holds every fetch for the whole wait even when frames arrive (Kafka answers at once): at 500 ms, the
    # client default, capture -> counted p99 was 529 ms at half load; at 20 ms, 285 ms (same stack, same probe).
    fetch_max_wait_ms: int = Field(
        20, ge=0, le=10_000, description="Longest the broker holds a fetch for new frames (Kafka fetch.max.wait.ms)"
    )
    model_timeout_s: float = Field(10.0, gt=0, le=60, description="Deadline of one Predict call")
    max_poll_interval_ms: int = Field(300_000, ge=10_000, description="Kafka max.poll.interval.ms")
    # kafka-python wants heartbeats at most a third of the session, and a session under its request timeout (305 s).
    session_timeout_ms: int = Field(
        10_000,
        ge=3 * KAFKA_HEARTBEAT_INTERVAL_MS,
        le=300_000,
        description="Kafka session.timeout.ms: a worker that stops heartbeating (killed, frozen) keeps its partitions "
        "this long before the group rebalances without it; at least 3 heartbeats of 1 s (Apache Kafka brokers also "
        "refuse less than their group.min.session.timeout.ms, 6 s by default)",
    )
    blur_faces: bool = Field(True, description="Blur violation snapshots")
    episode_min_frames: int = Field(
        5, ge=1, le=1000, description="A tracked person is a violation episode once a vote over this many frames says so"
    )
    episode_grace_s: float = Field(
        5.0, gt=0, le=600, description="A violation episode closes when its person has been gone this long"
    )
    history_ttl_days: int = Field(400, ge=1, le=3650, description="Hourly and daily buckets are kept this many days")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus metrics port (0 = off)")
    heartbeat_interval_s: float = Field(2.0, gt=0, le=30, description="Heartbeat period")
    retry_max_s: float = Field(10.0, gt=0, le=120, description="Cap of the retry backoff while a dependency is down")

    @model_validator(mode="after")
    def _poll_budget(self) -> WorkerSettings:
        worst_ms = self.model_timeout_s * 1000 * 3
        if worst_ms >= self.max_poll_interval_ms:
            raise ValueError(
                f"model_timeout_s={self.model_timeout_s} is too close to max_poll_interval_ms={self.max_poll_interval_ms}"
            )
        return self
