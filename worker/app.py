"""Builds the worker's collaborators (consumer, dead-letter producer, model client, store) and closes them in reverse."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from maskwatch.model_api import ModelClient
from maskwatch.store import Store
from worker import metrics
from worker.consumer import Range, Worker
from worker.health import Abandon
from worker.settings import KAFKA_HEARTBEAT_INTERVAL_MS, WorkerSettings

logger = logging.getLogger(__name__)

CONSUMER_CLOSE_TIMEOUT_MS = 1000  # the longest a stopping worker waits for the broker to hear it leave its group


def run(settings: WorkerSettings, stop: threading.Event) -> int:
    logger.info(
        "worker starting worker=%s host=%s pid=%d group=%s topic=%s serving=%s session_timeout_ms=%d",
        settings.worker_id,
        socket.gethostname(),
        os.getpid(),
        settings.group,
        settings.topic,
        settings.serving,
        settings.session_timeout_ms,
    )
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
        logger.info("metrics listening port=%d", settings.metrics_port)
    with contextlib.ExitStack() as stack:
        store = Store.from_url(settings.redis_url, settings.redis_prefix, history_ttl_s=settings.history_ttl_days * 86_400)
        stack.callback(store.close)
        model = ModelClient(settings.serving, settings.model_name, timeout_s=settings.model_timeout_s)
        stack.callback(model.close)
        kafka = settings.kafka_client_config()
        dlq = KafkaProducer(**kafka, acks=1, max_block_ms=5000, client_id="maskwatch-worker-dlq", allow_auto_create_topics=False)
        stack.callback(dlq.close, timeout=5)
        consumer = KafkaConsumer(**consumer_config(settings))
        # leaving the group is best effort: a LeaveGroup sent while the group is still forming is answered only when
        # the join is (seconds on the embedded broker), and the stack's whole stop has 9 s (maskwatch.stack)
        stack.callback(consumer.close, autocommit=False, timeout_ms=CONSUMER_CLOSE_TIMEOUT_MS)
        worker = Worker(settings, consumer, dlq, model, store, stop)
        stack.callback(store.drop_heartbeat, "worker", settings.worker_id)
        run_worker(worker)
        logger.info("worker stopped worker=%s frames=%d batches=%d", settings.worker_id, worker.health.processed, worker.health.batches)
    return 0


def consumer_config(settings: WorkerSettings) -> dict[str, Any]:
    """The worker's KafkaConsumer keyword arguments: its group, batch size, liveness timeouts and fetch limits."""
    return dict(
        **settings.kafka_client_config(),
        group_id=settings.group,
        client_id=f"maskwatch-worker-{settings.worker_id}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.max_poll_records,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=KAFKA_HEARTBEAT_INTERVAL_MS,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        # Tansu may answer a fetch with more than fetch_max_bytes; kafka-python's 1 MB default frame cap
        # then closes the connection (InvalidReceiveError), so allow large frames.
        receive_message_max_bytes=128 * 1024 * 1024,
        # rotating topics: a new bucket topic is noticed within seconds (the janitor creates them minutes ahead)
        metadata_max_age_ms=5_000 if settings.topic_rotate_s else 300_000,
        # fetching a deleted bucket topic must not create it again (Tansu creates topics on request otherwise)
        allow_auto_create_topics=False,
        partition_assignment_strategy=(Range(),),
    )


def run_worker(worker: Worker) -> None:
    """The worker's main thread (bench/profile.py finds it by this name)."""
    try:
        worker.run()
    except Abandon:
        logger.info("stopped while a dependency was down; the held batch will be redone by the next owner")
