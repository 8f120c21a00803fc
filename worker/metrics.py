"""The worker's Prometheus metrics (served on --metrics-port when set)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from maskwatch.detections import INCORRECT, WITH_MASK, WITHOUT_MASK, Counts

REGISTRY = CollectorRegistry()
FRAMES = Counter("maskwatch_worker_frames", "Frames by camera and outcome", ["camera", "outcome"], registry=REGISTRY)
FACES = Counter("maskwatch_worker_faces", "Faces by camera and class", ["camera", "cls"], registry=REGISTRY)
BATCH = Histogram("maskwatch_worker_batch_frames", "Frames per polled batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=REGISTRY)
MODEL_SECONDS = Histogram(
    "maskwatch_worker_model_seconds",
    "Predict latency per batch",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
LAG = Gauge("maskwatch_worker_lag", "Frames behind the high watermark on assigned partitions", registry=REGISTRY)
DEGRADED = Gauge("maskwatch_worker_degraded", "1 while a dependency is down", ["dependency"], registry=REGISTRY)
FRAME_OUTCOMES = ("frames", "invalid", "dropped_stale")
FACE_CLASSES = (WITH_MASK, WITHOUT_MASK, INCORRECT)


def count(camera: str, counts: Counts) -> None:
    """Add a camera's stored counts to the frame and face counters."""
    for outcome in FRAME_OUTCOMES:
        if getattr(counts, outcome):
            FRAMES.labels(camera, outcome).inc(getattr(counts, outcome))
    for cls in FACE_CLASSES:
        if getattr(counts, cls):
            FACES.labels(camera, cls).inc(getattr(counts, cls))


def serve(port: int, host: str = "0.0.0.0") -> None:
    start_http_server(port, addr=host, registry=REGISTRY)
