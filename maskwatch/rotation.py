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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from maskwatch.buckets import TopicScheme
from maskwatch.detections import Counts
from maskwatch.frames import DLQ_TOPIC
from maskwatch.intake import DeadLetter, FrameLimits, Intake, sort_record
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
    invalid: int = 0  # messages of expired buckets that break Contract 1: dead-lettered, counted invalid
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
    `dropped_stale` by the janitor itself (`_expire`; what breaks Contract 1 in it is dead-lettered to `dlq_topic`
    and counted `invalid`, judged by `limits` and `open_registration` as the workers judge it), so the broker stays
    bounded while workers are away.
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
        limits: FrameLimits | None = None,
        dlq_topic: str = DLQ_TOPIC,
        open_registration: bool = False,
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
        self.limits = limits or FrameLimits.default()
        self.dlq_topic = dlq_topic
        self.open_registration = open_registration
        self.clock = clock
        self.stats = JanitorStats()
        self._admin: KafkaAdminClient | None = None
        self._probe: KafkaConsumer | None = None
        self._dlq: KafkaProducer | None = None
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
        for c in (self._probe, self._admin, self._dlq):
            if c is not None:
                c.close()
        self._admin = self._probe = self._dlq = None

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
        """Judge what nobody read of an expired bucket (workers down, or far behind) as a worker would
        (`maskwatch.intake`): a valid frame is counted `dropped_stale`, a message breaking Contract 1 is
        dead-lettered and counted `invalid` when its camera is counted, a frame of a camera the site does not list
        is dead-lettered `unknown_camera`, a retry's copy is skipped. The dead letters are acknowledged by the
        broker before the counts are stored, which moves the stored offsets to the end in the workers'
        exactly-once transaction: the broker's memory stays bounded and every frame is still accounted once. A
        worker committing the same frames first wins; this pass then conflicts and changes nothing (its dead
        letters may then be in the dead-letter topic twice, as after a worker's retry)."""
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
        got = Intake(BatchWrite())
        batch = got.batch
        seen: dict[TP, Seen] = {}
        now_ms = int(self.clock() * 1000)
        counted = lambda cid: self.open_registration or cid in cams  # noqa: E731 - as the workers' CameraRegistry
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
                    for rec in recs:
                        batch.next_offsets[key] = rec.offset + 1
                        sort_record(got, key, rec, seen[key], now_ms, self.limits, counted)
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
        for tp, frame in got.frames:  # valid and not yet stale by its own clock: its bucket expired all the same
            batch.add(tp, frame.camera_id, frame.ts_ms, Counts(dropped_stale=1))
        self._dead_letter(got.dead)
        batch.seen = {tp: read.take_changes() for tp, read in seen.items()}
        result = self.store.commit_batch(batch, self.group)
        applied = [c for (tp, _, _), c in batch.counts.items() if tp in result.applied]
        n, bad = sum(c.dropped_stale for c in applied), sum(c.invalid for c in applied)
        self.stats.expired += n
        self.stats.invalid += bad
        # one line per camera and reason (a camera the site does not list may have sent a whole bucket of frames)
        for (cid, reason), k in sorted(Counter((r.camera or "-", r.reason) for r in got.rejected).items()):
            logger.warning("expired frames dead-lettered camera=%s reason=%s frames=%d topic=%s", cid, reason, k, topic)
        logger.info(
            "expired topic counted dropped_stale topic=%s frames=%d invalid=%d dead_lettered=%d partitions=%d conflicts=%d",
            topic,
            n,
            bad,
            len(got.dead),
            len(result.applied),
            len(result.conflicts),
        )

    def _dead_letter(self, dead: list[DeadLetter]) -> None:
        """Send an expired bucket's dead letters and wait for the broker's acknowledgement of each (raises if one
        failed: the bucket is judged again on the next pass)."""
        if not dead:
            return
        if self._dlq is None:
            self._dlq = KafkaProducer(
                **self.client,
                acks=1,
                max_block_ms=5000,
                client_id="maskwatch-janitor-dlq",
                allow_auto_create_topics=False,
            )
        futures = [self._dlq.send(self.dlq_topic, key=d.key, value=d.value, headers=d.headers) for d in dead]
        self._dlq.flush(timeout=10)
        for fut in futures:
            fut.get(timeout=0.1)

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
