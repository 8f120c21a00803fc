"""Creates the frames topic and its dead-letter topic (partitions, short retention, message size) when missing."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, NoBrokersAvailable, TopicAlreadyExistsError

logger = logging.getLogger(__name__)

FRAMES_RETENTION_MS = 60_000
FRAMES_SEGMENT_MS = 30_000
MAX_MESSAGE_BYTES = 4 * 1024 * 1024 + 65536
FRAMES_TOPIC_CONFIGS = {
    "retention.ms": str(FRAMES_RETENTION_MS),
    # Kafka deletes only closed segments: roll often, or a 60 s retention keeps days of frames
    "segment.ms": str(FRAMES_SEGMENT_MS),
    "max.message.bytes": str(MAX_MESSAGE_BYTES),
}


@dataclass
class TopicsReady:
    partitions: dict[str, int] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)

    def __getitem__(self, name: str) -> int:
        return self.partitions[name]


def ensure_topics(
    bootstrap: list[str] | dict[str, Any],
    topic: str | None,
    partitions: int,
    dlq_topic: str,
    timeout_s: float = 30.0,
    stop: threading.Event | None = None,
) -> TopicsReady:
    """Create `topic` and `dlq_topic` if missing; return their partition counts and which were created.

    `topic` None: only the dead-letter topic (the frames go to time-bucketed topics that `maskwatch.rotation` keeps).

    `bootstrap` is a list of servers or a full kafka-python client config (CommonSettings.kafka_client_config()).
    """
    client = dict(bootstrap) if isinstance(bootstrap, dict) else {"bootstrap_servers": bootstrap}
    servers = client["bootstrap_servers"]
    deadline = time.monotonic() + timeout_s
    admin: KafkaAdminClient | None = None
    while admin is None:
        try:
            admin = KafkaAdminClient(**client, client_id="maskwatch-admin", request_timeout_ms=10_000)
        except (NoBrokersAvailable, KafkaError) as e:
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                raise TimeoutError(f"no Kafka broker at {','.join(servers)}: {e}") from None
            time.sleep(0.2)
    # Topics are listed through a plain consumer: Tansu 0.6 answers Metadata with ACL bits that
    # kafka-python's admin client cannot parse (ValueError: 14 is not a valid ACLOperation).
    probe = KafkaConsumer(**client, client_id="maskwatch-admin-probe", request_timeout_ms=10_000)
    try:
        existing = probe.topics()
        wanted = [NewTopic(dlq_topic, num_partitions=1, replication_factor=1, topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)})]
        if topic is not None:
            wanted.insert(0, NewTopic(topic, num_partitions=partitions, replication_factor=1, topic_configs=FRAMES_TOPIC_CONFIGS))
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
                logger.info("topics created topics=%s partitions=%d", ",".join(t.name for t in missing), partitions)
            except TopicAlreadyExistsError:
                pass
        out = TopicsReady(created={t.name for t in missing})
        for name in (t.name for t in wanted):
            while True:
                probe._client.cluster.request_update()  # noqa: SLF001 - refresh metadata for the new topic
                probe.topics()
                parts = probe.partitions_for_topic(name) or set()
                if parts or time.monotonic() > deadline:
                    out.partitions[name] = len(parts)
                    break
                time.sleep(0.1)
        return out
    finally:
        probe.close()
        admin.close()
