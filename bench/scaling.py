"""Consumer-group scaling: 1, 2, 4, 8 workers on a 16-partition topic against a model server whose model sleeps a
fixed wall time per call without using CPU, so the server is never the bottleneck and the workers are measured."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from bench.pipeline import Drain, Pipeline
from bench.stack import Server
from bench.stats import Summary, scaling_efficiency
from maskwatch.procs import Children

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScalingConfig:
    worker_counts: tuple[int, ...] = (1, 2, 4, 8)
    partitions: int = 16
    sleep_ms: float = 500.0
    max_poll_records: int = 16
    rounds: int = 3
    drain_s: float = 12.0  # how long one backlog should take to drain at the ideal rate

    def ideal_fps(self, workers: int) -> float:
        """What `workers` would do if only the model's sleep counted: one batch per sleep each."""
        return workers * self.max_poll_records / (self.sleep_ms / 1000.0)


def delete_topics(kafka: str, topics: list[str]) -> None:
    """Free the broker's memory (Tansu keeps every record of a topic until it is deleted)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=[kafka], client_id="maskwatch-bench-admin")
    except KafkaError as e:
        logger.warning("cannot delete topics=%s error=%s", topics, e)
        return
    try:
        admin.delete_topics(topics)
    except KafkaError as e:
        logger.warning("cannot delete topics=%s error=%s", topics, e)
    finally:
        admin.close()


def run_scaling(procs: Children, kafka: str, redis_url: str, server: Server, jpegs: list[bytes], cfg: ScalingConfig) -> dict[str, object]:
    by_n: dict[int, list[Drain]] = {}
    for n in cfg.worker_counts:
        logger.info("scaling: %d worker(s)", n)
        pipe = Pipeline(
            procs,
            Path(),
            jpegs,
            workers=n,
            partitions=cfg.partitions,
            cameras=cfg.partitions,
            max_poll_records=cfg.max_poll_records,
            kafka=kafka,
            redis_url=redis_url,
            server=server,
            tag=f"scale{n}",
        )
        try:
            backlog = int(cfg.ideal_fps(n) * cfg.drain_s)
            by_n[n] = [pipe.drain(backlog) for _ in range(cfg.rounds)]
            for d in by_n[n]:
                logger.info("scaling: workers=%d fps=%.1f cores=%.2f", n, d.fps, d.cores)
        finally:
            pipe.close()
            delete_topics(kafka, [pipe.names.topic, pipe.names.dlq_topic])
    fps = {n: Summary.of(d.fps for d in ds) for n, ds in by_n.items()}
    med = {n: s.median for n, s in fps.items()}
    top = max(cfg.worker_counts)
    return {
        "config": {
            "worker_counts": list(cfg.worker_counts),
            "partitions": cfg.partitions,
            "sleep_ms_per_call": cfg.sleep_ms,
            "max_poll_records": cfg.max_poll_records,
            "rounds": cfg.rounds,
            "server_batching": False,
        },
        "fps": {str(n): s.as_dict() for n, s in fps.items()},
        "ideal_fps": {str(n): cfg.ideal_fps(n) for n in cfg.worker_counts},
        "of_ideal": {str(n): round(med[n] / cfg.ideal_fps(n), 3) for n in cfg.worker_counts},
        "cores_used": {str(n): round(Summary.of(d.cores for d in ds).median, 3) for n, ds in by_n.items()},
        "cpu_share": {str(n): ds[-1].as_dict()["cpu_share"] for n, ds in by_n.items()},
        "model_calls_in_flight": {str(n): round(Summary.of(d.model_busy for d in ds).median, 2) for n, ds in by_n.items()},
        "scaling_fps": [round(med[n], 2) for n in cfg.worker_counts],
        f"scaling_efficiency_{top}": round(scaling_efficiency(med, top), 3) if 1 in med else None,
    }
