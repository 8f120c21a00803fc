"""Producer settings (env MW_*, flags over them)."""

from __future__ import annotations

from pydantic import Field, field_validator

from maskwatch.frames import MAX_FRAME_BYTES
from maskwatch.settings import CommonSettings


class ProducerSettings(CommonSettings):
    site_file: str | None = Field(None, description="Site YAML; none runs the demo cameras")
    demo_cameras: int = Field(3, ge=1, le=64, description="Demo cameras when no site file is given")
    demo_fps: float = Field(2.0, gt=0, le=30, description="Frames per second of each demo camera")
    shard: str = Field(
        "0/1", pattern=r"^\d+/\d+$", description="i/n: this process runs the cameras whose id hashes to i mod n"
    )
    max_block_ms: int = Field(200, ge=1, le=10_000, description="Longest a send may block before it is a counted drop")
    max_frame_bytes: int = Field(
        1024 * 1024,
        ge=16 * 1024,
        le=MAX_FRAME_BYTES,
        description="Largest JPEG sent; bigger frames are re-encoded smaller, else dropped (dropped_too_large)",
    )
    kafka_buffer_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024 * 1024,
        le=1024 * 1024 * 1024,
        description="Most bytes handed to Kafka and not yet acknowledged; beyond it frames are dropped (dropped_broker)",
    )
    request_timeout_ms: int = Field(4000, ge=500, le=60_000, description="Kafka produce request timeout")
    delivery_timeout_ms: int = Field(
        6000,
        ge=1000,
        le=120_000,
        description="A frame not acknowledged within this is dropped (dropped_broker): frames age fast",
    )
    status_interval_s: float = Field(2.0, gt=0, le=60, description="How often camera status is written to Redis")
    reconnect_max_s: float = Field(30.0, ge=0.5, le=600, description="Cap of the reconnect backoff of a camera")
    offline_after_s: float = Field(
        15.0, ge=0, le=3600, description="A camera down this long is shown offline instead of reconnecting"
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Serve Prometheus /metrics on this port (0: any free port)"
    )
    metrics_addr: str = Field("0.0.0.0", description="Address the metrics endpoint binds")
    max_frames: int | None = Field(
        None, ge=1, description="Stop each camera after this many frames (tests, benchmarks)"
    )

    @field_validator("shard")
    @classmethod
    def _shard(cls, v: str) -> str:
        i, n = (int(x) for x in v.split("/"))
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"shard {v}: need 0 <= i < n")
        return v
