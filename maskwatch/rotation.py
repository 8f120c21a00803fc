"""Time-bucketed frame topics for a broker without retention: their names, and the janitor that creates them ahead
and deletes them once every partition is consumed.

The embedded broker (Tansu 0.6, memory engine) never expires a record, but frees a deleted topic's memory at once.
So with `topic_rotate_s` > 0 producers write each frame to the topic of its capture time's bucket
(`frames.<bucket start, epoch s>`), workers follow every such topic by pattern subscription, and the janitor
(run by `maskwatch up`) keeps the next buckets created ahead and deletes a bucket once it is closed and every
partition's offset stored with the counts in Redis has reached the partition's end. What the broker holds is then
bounded by a few buckets of frames. With `topic_rotate_s` = 0 (Apache Kafka) there is one topic and the broker's
own retention bounds it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from maskwatch.buckets import TopicScheme
from maskwatch.detections import Counts
from maskwatch.frames import H_TS, camera_of, header_map, seq_of
from maskwatch.store import TP, BatchWrite, Seen, Store
from maskwatch.topics import FRAMES_TOPIC_CONFIGS

logger = logging.getLogger(__name__)


@dataclass
class JanitorStats:
    created: int = 0
    deleted: int = 0
    live: int = 0
    held: list[str] = field(default_factory=list)  # closed topics not yet consumed
    expired: int = 0  # frames nobody read within the retention, counted dropped_stale by the janitor
    gone: list[str] = field(default_factory=list)  # the topics deleted lately (the last 100)


class Janitor:
    """Keeps the current and next bucket topics created, deletes closed ones once consumed (a thread of `up`).

    A closed bucket (its end more than `grace_s` ago: no producer writes to it any more) is retired when, for each
    of its partitions, the offset stored in Redis with the counts is at the partition's high watermark; workers stop
    following retired topics, and `retire_wait_s` later the topic is deleted. (Deleting a topic a worker still
    fetches would not lose frames, but Tansu would create it again, empty, and the group would rebalance for it.) The high
    watermark comes from a fetch (Tansu's ListOffsets(latest) is wrong for multi-record batches). New topics get a
    stored offset of 0 for every partition, so a worker never guesses where one starts, and a batch read from an
    earlier broker instance (the same topic name) is refused as a conflict unless it began at offset 0. Once deleted,
    a topic's stored offsets are dropped too. A closed bucket still unread `retain_s` after it closed is counted
    `dropped_stale` by the janitor itself (`_expire`), so the broker stays bounded while workers are away.
    """

    def __init__(
        self,
        client: dict[str, Any],
        scheme: TopicScheme,
        partitions: int,
        store: Store,
        group: str,
        *,
        ahead: int = 2,
        grace_s: float = 15.0,
        retire_wait_s: float = 20.0,
        retain_s: float = 300.0,
        topic_configs: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not scheme.rotating:
            raise ValueError("the janitor is for rotating topics (topic_rotate_s > 0)")
        self.client = client
        self.scheme = scheme
        self.partitions = partitions
        self.store = store
        self.group = group
        self.ahead = ahead
        self.grace_s = grace_s
        self.retire_wait_s = retire_wait_s
        self.retain_s = retain_s
        self.topic_configs = FRAMES_TOPIC_CONFIGS if topic_configs is None else topic_configs
        self.clock = clock
        self.stats = JanitorStats()
        self._admin: KafkaAdminClient | None = None
        self._probe: KafkaConsumer | None = None
        self._reset = threading.Event()

    # ---- connections --------------------------------------------------------------------
    def _clients(self) -> tuple[KafkaAdminClient, KafkaConsumer]:
        if self._admin is None:
            self._admin = KafkaAdminClient(**self.client, client_id="maskwatch-janitor", request_timeout_ms=10_000)
        if self._probe is None:
            self._probe = KafkaConsumer(
                **self.client,
                client_id="maskwatch-janitor-probe",
                allow_auto_create_topics=False,  # probing a topic deleted meanwhile must not create it again
                group_id=None,
                enable_auto_commit=False,
                request_timeout_ms=10_000,
                fetch_max_wait_ms=50,
                max_partition_fetch_bytes=1,  # a fetch is only asked for its high watermark
                receive_message_max_bytes=128 * 1024 * 1024,
            )
        return self._admin, self._probe

    def close(self) -> None:
        for c in (self._probe, self._admin):
            if c is not None:
                c.close()
        self._admin = self._probe = None

    @property
    def reset_requested(self) -> bool:
        return self._reset.is_set()

    def request_reset(self) -> None:
        """Ask the janitor's thread to `reset()` before its next pass (after a broker restart)."""
        self._reset.set()

    def reset(self) -> None:
        """After a broker restart: new connections, and every stored offset of this scheme's topics is void."""
        self.close()
        self.store.forget_topics()
        for topic in self.store.offset_topics(self.group):
            if self.scheme.is_mine(topic):
                self.store.forget_offsets(self.group, topic)

    # ---- one pass -----------------------------------------------------------------------
    def existing(self) -> set[str]:
        _, probe = self._clients()
        probe._client.cluster.request_update()  # noqa: SLF001 - a fresh topic list, not the cached one
        return {t for t in probe.topics() if self.scheme.is_mine(t)}

    def tick(self) -> JanitorStats:
        """One pass; returns the running totals.

        Every change to the set of topics the workers follow makes the consumer group rebalance (a few seconds
        without counting), so changes come in steps: when less than one bucket of topics is left ahead of the
        current one, the next `ahead` buckets are created and the consumed closed ones retired, together, in one
        rebalance. A retired topic leaves every worker's subscription; `retire_wait_s` later it is deleted (no
        rebalance: nobody follows it any more) with its stored offsets.
        """
        if self._reset.is_set():
            self._reset.clear()
            self.reset()
        admin, _ = self._clients()
        now_ms = int(self.clock() * 1000)
        existing = self.existing()
        retired = self.store.retired_topics()
        due = sorted(t for t, at in retired.items() if now_ms - at >= self.retire_wait_s * 1000)
        if due:
            self._delete(admin, [t for t in due if t in existing])
            for topic in due:
                self.store.forget_offsets(self.group, topic)
            self.store.forget_retired(due)
            existing -= set(due)
        step_ms = self.scheme.rotate_s * 1000
        current = self.scheme.bucket(now_ms)
        horizon = max((self.scheme.bucket_of(t) or 0 for t in existing), default=0)
        if current in {self.scheme.bucket_of(t) for t in existing} and horizon > current + self.scheme.rotate_s:
            self.stats.live = len(existing) - len(set(retired) - set(due))
            return self.stats  # enough ahead: no change, no rebalance
        wanted = {self.scheme.topic_for(now_ms + i * step_ms) for i in range(self.ahead + 1)}
        missing = sorted(wanted - existing)
        closed = sorted(
            t
            for t in existing - wanted - set(retired)
            if (self.scheme.bucket_of(t) or 0) + self.scheme.rotate_s + self.grace_s < now_ms / 1000
        )
        held: list[str] = []
        done: list[str] = []
        for topic in closed:
            consumed = self._consumed(topic)
            if not consumed and self._expired(topic, now_ms):
                self._expire(topic)
                consumed = self._consumed(topic)
            (done if consumed else held).append(topic)
        if missing:
            self._create(admin, missing)
        if done:
            self.store.retire_topics(done, now_ms)
            logger.info("topics retired (consumed) topics=%s", ",".join(done))
        self.stats.live = len(existing | set(missing)) - len(done) - len(set(retired) - set(due))
        self.stats.held = held
        return self.stats

    def _create(self, admin: KafkaAdminClient, topics: list[str]) -> None:
        for topic in topics:
            # offsets first: a worker assigned the topic the moment it exists must find them
            self.store.init_offsets(self.group, topic, self.partitions)
            try:
                admin.create_topics([NewTopic(topic, self.partitions, 1, topic_configs=self.topic_configs)])
                self.stats.created += 1
                logger.info("topic created topic=%s partitions=%d", topic, self.partitions)
            except TopicAlreadyExistsError:
                pass
            self.store.add_live_topics([topic], int(self.clock() * 1000))

    def _consumed(self, topic: str) -> bool:
        """Every partition's stored offset has reached its high watermark (what a fetch reports)."""
        _, probe = self._clients()
        parts = probe.partitions_for_topic(topic) or set()
        if not parts:
            return False
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        stored = self.store.stored_offsets(self.group, topic)
        probe.assign(tps)
        for tp in tps:
            probe.seek(tp, stored.get(tp.partition, 0))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(probe.highwater(tp) is None for tp in tps):
            probe.poll(timeout_ms=100, max_records=1)
        highwater = {tp: probe.highwater(tp) for tp in tps}
        probe.assign([])
        return all(hw is not None and stored.get(tp.partition, 0) >= hw for tp, hw in highwater.items())

    def _expired(self, topic: str, now_ms: int) -> bool:
        """Closed more than `retain_s` ago: its frames are worthless now, whoever reads them."""
        return (self.scheme.bucket_of(topic) or 0) + self.scheme.rotate_s + self.retain_s < now_ms / 1000

    def _expire(self, topic: str) -> None:
        """Count what nobody read of an expired bucket as `dropped_stale` (workers down, or far behind) and move its
        stored offsets to the end, in the workers' exactly-once transaction: the broker's memory stays bounded and
        every frame is still accounted once. A worker committing the same frames first wins; this pass then
        conflicts and changes nothing."""
        _, probe = self._clients()
        parts = sorted(probe.partitions_for_topic(topic) or set())
        stored = self.store.stored_offsets(self.group, topic)
        cams = set(self.store.camera_ids())
        reader = KafkaConsumer(
            **self.client,
            client_id="maskwatch-janitor-expire",
            allow_auto_create_topics=False,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=10_000,
            fetch_max_wait_ms=50,
        )
        batch = BatchWrite()
        seen: dict[TP, Seen] = {}
        try:
            tps = [TopicPartition(topic, p) for p in parts]
            reader.assign(tps)
            for tp in tps:
                reader.seek(tp, stored.get(tp.partition, 0))
            todo = set(tps)
            deadline = time.monotonic() + 60
            while todo and time.monotonic() < deadline:
                for tp, recs in reader.poll(timeout_ms=200, max_records=2000).items():
                    key = (tp.topic, tp.partition)
                    batch.start_offsets.setdefault(key, stored.get(tp.partition, 0))
                    if key not in seen:
                        seen[key] = self.store.seen_in(self.group, *key)
                    read = seen[key]
                    for rec in recs:
                        batch.next_offsets[key] = rec.offset + 1
                        self._tally(batch, read, key, rec, cams)
                for tp in list(todo):
                    hw = reader.highwater(tp)
                    if hw is not None and reader.position(tp) >= hw:
                        todo.discard(tp)
                        if hw > stored.get(tp.partition, 0):
                            batch.start_offsets.setdefault((tp.topic, tp.partition), stored.get(tp.partition, 0))
                            batch.next_offsets[(tp.topic, tp.partition)] = hw
            if todo:
                logger.warning("expired topic not read to its end, kept topic=%s partitions=%d", topic, len(todo))
                return
        finally:
            reader.close()
        batch.seen = {tp: read.take_changes() for tp, read in seen.items()}
        result = self.store.commit_batch(batch, self.group)
        n = sum(c.dropped_stale for (tp, _, _), c in batch.counts.items() if tp in result.applied)
        self.stats.expired += n
        logger.info(
            "expired topic counted dropped_stale topic=%s frames=%d partitions=%d conflicts=%d",
            topic,
            n,
            len(result.applied),
            len(result.conflicts),
        )

    @staticmethod
    def _tally(batch: BatchWrite, read: Seen, tp: TP, rec: Any, cams: set[str]) -> None:
        """One unread frame of an expired bucket: counted `dropped_stale` for its camera (a site camera, or any
        valid id when the site lists none), once (a retry's copy is skipped), its `mw-seq` gaps judged as the
        workers judge them."""
        cid, run_seq = camera_of(rec.key), seq_of(rec.headers)
        if cid is None or (cams and cid not in cams):
            return
        ts = header_map(rec.headers).get(H_TS, "")
        ts_ms = int(ts) if ts.isdigit() else int(rec.timestamp or time.time() * 1000)
        if run_seq is not None:
            if not read.first_time(cid, *run_seq):
                return
            batch.see(tp, cid, *run_seq, ts_ms)
        batch.add(tp, cid, ts_ms, Counts(dropped_stale=1))

    def _delete(self, admin: KafkaAdminClient, topics: list[str]) -> None:
        if not topics:
            return
        with contextlib.suppress(UnknownTopicOrPartitionError):
            admin.delete_topics(topics, timeout_ms=10_000)
        self.stats.deleted += len(topics)
        self.stats.gone = (self.stats.gone + topics)[-100:]
        logger.info("topics deleted (retired) topics=%s", ",".join(topics))


def run_janitor(janitor: Janitor, stop: threading.Event, interval_s: float = 5.0) -> None:
    """The janitor's loop: a pass every `interval_s`; a broker or Redis outage is logged and retried."""
    last_error = ""
    while not stop.is_set():
        try:
            stats = janitor.tick()
            if last_error:
                logger.info("janitor recovered")
                last_error = ""
            if stats.held:
                logger.debug("closed topics not yet consumed topics=%s", ",".join(stats.held))
        except (KafkaError, OSError, TimeoutError, redis.RedisError) as e:
            janitor.close()
            if str(e) != last_error:
                logger.warning("janitor pass failed, retrying error=%s", e)
            last_error = str(e)
        deadline = time.monotonic() + interval_s
        while not (stop.is_set() or janitor.reset_requested) and time.monotonic() < deadline:
            stop.wait(0.2)
