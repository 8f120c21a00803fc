"""The worker loop: position → poll a batch → one Predict → counts + offsets in one Redis transaction → live notice →
Kafka commit. What a batch means is decided in worker/batch.py; this module makes the calls."""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.protocol import ConsumerProtocolMemberMetadata_v0
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from maskwatch.intake import FrameLimits, intake
from maskwatch.model_api import ModelClient
from maskwatch.payloads import WORKER_DEGRADED, LiveNotice
from maskwatch.store import TP, Store
from worker import metrics
from worker.batch import Books, RejectionLog, applied_totals, batch_notice, count, live_notice
from worker.cameras import CameraRegistry, CameraZones
from worker.health import Health, keep_rejoin_pending
from worker.inference import Inference, InFlight
from worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

# While a Predict is in flight the worker polls in slices this long, so a finished batch is counted within
# a slice instead of waiting out the whole poll timeout when no new frames come.
POLL_SLICE_MS = 10
# How often a worker on rotating topics re-lists them (new buckets, retired ones)
TOPICS_CHECK_S = 2.0


class Range(RangePartitionAssignor):  # type: ignore[misc]
    """kafka-python's range assignor (the group's protocol stays "range"), made safe against a broker that replays an
    assignment.

    When this worker leads an assignment while some subscribed topics have no partitions in its metadata (a broker
    restarted empty, before its topics are created again), those topics get no owner. The client rejoins once the
    topics show up, but Tansu (the embedded broker) answers a rejoin by the same members with the same join metadata
    with the generation it already has and that generation's assignment: no worker would read the topics until the
    subscriptions next changed. So such an assignment changes this member's join metadata (an epoch in its user
    data), and the rejoin makes a new generation, assigned anew.
    """

    name = "range"

    def __init__(self) -> None:
        self.epoch = 0

    def metadata(self, topics: Any) -> Any:
        return ConsumerProtocolMemberMetadata_v0(self.version, list(topics), str(self.epoch).encode())

    def assign(self, cluster: Any, group_subscriptions: Any) -> Any:
        unknown = sorted({t for sub in group_subscriptions.values() for t in sub.topics if cluster.partitions_for_topic(t) is None})
        if unknown:
            self.epoch += 1
            logger.warning("assigning without topics the broker does not know (yet): they are assigned at the next rejoin topics=%s", ",".join(unknown))
        return super().assign(cluster, group_subscriptions)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        logger.info("partitions revoked partitions=%s", ",".join(f"{tp.topic}:{tp.partition}" for tp in sorted(revoked)))
        for tp in revoked:
            self.worker.health.carry.pop(tp, None)
            self.worker.unpositioned.discard(tp)
        self.worker.books.forget({(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.ask_only_about_the_groups_topics()
        # Positioning needs Redis, which may be down: pause now (nothing is fetched from an unknown
        # position) and let the main loop seek to the stored offsets, retrying outside this callback.
        if assigned:
            self.worker.consumer.pause(*assigned)
            self.worker.unpositioned.update(assigned)


class Worker:
    """One consumer-group member."""

    def __init__(
        self,
        settings: WorkerSettings,
        consumer: KafkaConsumer,
        dlq: KafkaProducer,
        model: ModelClient,
        store: Store,
        stop: threading.Event,
    ) -> None:
        self.s = settings
        self.consumer = consumer
        self.dlq = dlq
        self.store = store
        self.stop = stop
        self.unpositioned: set[TopicPartition] = set()
        self.health = Health(settings, consumer, store, stop, self.unpositioned)
        self.inference = Inference(model, self.health, stop)
        self.books = Books.of(settings)
        self.limits = FrameLimits.of(settings)
        self.rejections = RejectionLog()
        self.cameras = CameraRegistry(lambda: self.store.camera_ids(), settings.open_registration)
        self.zones = CameraZones(lambda cids: self.health.retry("redis", partial(self.store.camera_zones, cids)))
        self._topics: list[str] = []
        self._topics_checked = 0.0

    # ---- assignment ----------------------------------------------------------------------
    def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        """Start each new partition at the offset stored with the counts; else Kafka's commit; else its earliest frame.

        Never at its end: frames written while the group forms, grows or shrinks would be skipped. Old frames read
        from the beginning are counted `dropped_stale` by the freshness check, not inferred.
        """
        if not assigned:
            return
        for tp in assigned:
            self.books.seen.pop((tp.topic, tp.partition), None)
        stored: dict[TopicPartition, int] = {}
        for topic in sorted({tp.topic for tp in assigned}):
            offsets = self.health.retry("redis", partial(self.store.stored_offsets, self.s.group, topic))
            stored.update({TopicPartition(topic, part): off for part, off in offsets.items()})
        for tp in assigned:
            where = ("stored", stored[tp]) if tp in stored else ("kafka_committed", self.consumer.committed(tp))
            if where[1] is None:
                # resolved by the next fetch (a synchronous lookup raises for a topic deleted meanwhile)
                self.consumer.seek_to_beginning(tp)
                logger.info("partition assigned topic=%s partition=%d from=earliest", tp.topic, tp.partition)
                continue
            self.consumer.seek(tp, where[1])
            logger.info("partition assigned topic=%s partition=%d from=%s offset=%d", tp.topic, tp.partition, *where)

    def _position(self) -> None:
        todo = [tp for tp in self.unpositioned if tp in self.consumer.assignment()]
        self.seek_to_stored(todo)
        self.unpositioned.difference_update(todo)
        if todo and self.health.status != WORKER_DEGRADED:
            self.consumer.resume(*todo)

    # ---- main loop -----------------------------------------------------------------------
    def run(self) -> None:
        self.health.retry("model", self.inference.model.load_metadata)
        self._follow_topics(force=True)
        pending: InFlight | None = None
        while not self.stop.is_set():
            self._follow_topics()
            if self.unpositioned:
                self._position()
            polled = self.poll_beside(pending)
            if pending is not None:
                self._finish(pending)
                pending = None
            if polled:
                pending = self._start(polled)
            self._close_idle_episodes()
            self.health.heartbeat()
        if pending is not None:
            logger.info("stopping: abandoning in-flight batch frames=%d (its offsets are not stored, so it is redone)", pending.records)
            if pending.future is not None:
                pending.future.cancel()

    def _follow_topics(self, force: bool = False) -> None:
        """Subscribe to the frame topics: the one topic, or the bucket topics the janitor lists as live (one list
        in Redis, so every worker asks for the same and the group settles; the broker's own topic list can come back
        short under load). A retired topic (consumed, about to be deleted) leaves every worker's subscription before
        it is deleted, so no worker fetches it afterwards."""
        scheme = self.s.topic_scheme()
        if not scheme.rotating:
            if force:
                self.consumer.subscribe([self.s.topic], listener=_Rebalance(self))
            return
        now = time.monotonic()
        if not force and now - self._topics_checked < TOPICS_CHECK_S:
            return
        self._topics_checked = now
        try:
            live = [t for t in self.store.live_topics() if scheme.is_mine(t)]
        except redis.RedisError as e:
            logger.warning("frame topics not refreshed error=%s", e)
            return
        if live != self._topics:
            logger.info("following topics topics=%d newest=%s", len(live), live[-1] if live else "")
            self._topics = live
            self.consumer.subscribe(live, listener=_Rebalance(self))

    def ask_only_about_the_groups_topics(self) -> None:
        """Once a rebalance is done, refresh metadata only for the topics the group follows now.

        kafka-python sets its client's topic list on subscribe(), before the join resets the group's subscription to
        what the members follow: a member keeps asking about the topics it just left, so once the janitor deletes a
        retired bucket topic every metadata refresh (5 s) logged it as an error until the next topic step (~4 min).
        """
        consumer = self.consumer
        consumer._client.set_topics(consumer._subscription.group_subscription())  # noqa: SLF001 - kafka-python's own call

    def poll_beside(self, pending: InFlight | None) -> dict[Any, list[Any]]:
        """The next frames, fetched while `pending`'s Predict runs; returns early once that call is done."""
        if pending is None or pending.future is None:
            return self._poll(self.s.poll_timeout_ms)
        deadline = time.monotonic() + self.s.poll_timeout_ms / 1000
        while True:
            records = self._poll(0 if pending.future.done() else POLL_SLICE_MS)
            if records or pending.future.done() or time.monotonic() >= deadline:
                return records

    def _poll(self, timeout_ms: int) -> dict[Any, list[Any]]:
        keep_rejoin_pending(self.consumer)
        records: dict[Any, list[Any]] = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.s.max_poll_records)
        carry, self.health.carry = self.health.carry, {}
        for tp, recs in carry.items():
            records[tp] = recs + records.get(tp, [])
        return records

    def _start(self, polled: dict[Any, list[Any]]) -> InFlight:
        seen_in, known = partial(self.store.seen_in, self.s.group), self.cameras.counts
        self.books.load_seen([tp for tp, recs in polled.items() if recs], lambda tp: self.health.retry("redis", partial(seen_in, *tp)))
        got = intake(polled, self.books.seen, int(time.time() * 1000), self.limits, lambda cid: self.health.retry("redis", partial(known, cid)))
        self.rejections.log(got)
        for copy in got.copies:
            metrics.FRAMES.labels(copy.camera, "duplicate").inc()
        metrics.BATCH.observe(got.records)
        inflight = InFlight(batch=got.batch, frames=got.frames, records=got.records, dead=got.dead)
        if got.frames:
            inflight.future = self.inference.submit([f.jpeg for _, f in got.frames])
        return inflight

    def _finish(self, p: InFlight) -> None:
        if p.frames:
            dets = self.inference.detections(p)
            self.books.resume(p.frames, dets, lambda cid: self.health.retry("redis", partial(self.store.open_episodes, cid, 0)))
            count(p.batch, p.frames, dets, self.books, self.s.min_score, self.s.blur_faces)
            p.batch.zones = self.zones.of(p.batch.cameras())
        # dead letters are acknowledged by the broker before the counts that name them are stored
        self.health.retry("kafka", partial(self._dead_letter, p))
        result = self.health.retry("redis", partial(self.store.commit_batch, p.batch, self.s.group))
        for conflict, stored_at in result.conflicts.items():
            tp = TopicPartition(*conflict)
            if tp in self.consumer.assignment():
                logger.warning("offset conflict, re-reading topic=%s partition=%d from=%d", tp.topic, tp.partition, stored_at)
                self.books.seen.pop(conflict, None)
                self.consumer.seek(tp, stored_at)
        if result.applied:
            notice = batch_notice(self.s.worker_id, int(time.time() * 1000), p.batch, result.applied, self.books.announcer)
            self._publish(notice)
            for cid, totals in applied_totals(p.batch, result.applied).items():
                metrics.count(cid, totals)
        self._commit_kafka(p, result.applied)
        self.health.batch_done(p.records)

    def _close_idle_episodes(self) -> None:
        """Close the episodes of cameras whose frames stopped (no batch will come to close them)."""
        closed = self.books.episodes.expire_idle(int(time.time() * 1000) - self.limits.max_age_ms)
        if not closed:
            return
        self.health.retry("redis", partial(self.store.close_episodes, closed))
        self._publish(live_notice(self.s.worker_id, int(time.time() * 1000), {}, self.books.announcer.select(closed)))

    # ---- outputs -------------------------------------------------------------------------
    def _dead_letter(self, p: InFlight) -> None:
        """Send the batch's dead letters and wait for the broker's acknowledgement of each; raises if one failed."""
        futures = [self.dlq.send(self.s.dlq_topic, key=d.key, value=d.value, headers=d.headers) for d in p.dead]
        if not futures:
            return
        self.dlq.flush(timeout=10)
        for fut in futures:
            fut.get(timeout=0.1)  # raises the send's KafkaError: the batch is held and the whole send retried

    def _publish(self, notice: LiveNotice) -> None:
        try:
            self.store.publish_update(notice)
        except redis.RedisError as e:
            logger.warning("live update not published error=%s", e)

    def _commit_kafka(self, p: InFlight, applied: set[TP]) -> None:
        offsets = {TopicPartition(*tp): OffsetAndMetadata(nxt, "", -1) for tp, nxt in p.batch.next_offsets.items() if tp in applied}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as e:
            logger.warning("kafka commit failed after a rebalance (counts are safe in Redis) error=%s", e)
        except KafkaError as e:
            logger.warning("kafka commit failed error=%s", e)

