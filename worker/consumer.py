"""The worker loop: poll a batch → validate → one Predict → counts + offsets in one Redis transaction → live update → Kafka commit."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import grpc
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from maskwatch.detections import Counts, Detections, ModelOutputError, parse_outputs
from maskwatch.frames import (
    ERR_MODEL_OUTPUT,
    ERR_UNDECODABLE,
    ERR_UNKNOWN_CAMERA,
    Frame,
    FrameError,
    camera_of,
    dead_letter,
    parse_message,
    seq_of,
)
from maskwatch.store import TP, BatchWrite, Episode, Seen, Store, episode_notice
from worker import annotate, metrics
from worker.cameras import CameraRegistry
from worker.episodes import Announcer, EpisodeBooks, face_quality
from worker.model import RETRYABLE, ModelClient, outputs_of
from worker.settings import WorkerSettings
from worker.tracker import Trackers

logger = logging.getLogger(__name__)

T = TypeVar("T")
STATUS_OK = "ok"
STATUS_DEGRADED = "degraded"
# While a Predict is in flight the worker polls in slices this long, so a finished batch is counted within
# a slice instead of waiting out the whole poll timeout when no new frames come.
POLL_SLICE_MS = 10
# How often a worker on rotating topics re-lists them (new buckets, retired ones)
TOPICS_CHECK_S = 2.0
# how often the worker re-reads each camera's zone (the producer registers it from the site file)
ZONES_REFRESH_S = 30.0


@dataclass
class InFlight:
    """A polled batch: the frames sent to the model, what was rejected, and the Predict future."""

    batch: BatchWrite
    frames: list[tuple[TP, Frame]]
    records: int
    future: Any = None
    dead: list[tuple[Any, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        logger.info("partitions revoked partitions=%s", _names(revoked))
        for tp in revoked:
            self.worker._carry.pop(tp, None)
            self.worker._unpositioned.discard(tp)
            self.worker._seen.pop((tp.topic, tp.partition), None)
        self.worker.forget_cameras({(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_assigned(self, assigned: Any) -> None:
        # Positioning needs Redis, which may be down: pause now (nothing is fetched from an unknown
        # position) and let the main loop seek to the stored offsets, retrying outside this callback.
        if assigned:
            self.worker.consumer.pause(*assigned)
            self.worker._unpositioned.update(assigned)


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
        self.model = model
        self.store = store
        self.stop = stop
        self.status = STATUS_OK
        self.reason = ""
        self.processed = 0
        self.batches = 0
        self.model_ms_ewma = 0.0
        self._rate: list[tuple[float, int]] = []
        self._last_hb = 0.0
        self._carry: dict[Any, list[Any]] = {}
        grace_ms = int(settings.episode_grace_s * 1000)
        # a track lives as long as its episode's grace, so a person briefly missed stays one episode
        self.trackers = Trackers(ttl_ms=grace_ms)
        self.episodes = EpisodeBooks(settings.episode_min_frames, grace_ms)
        self.announcer = Announcer()
        self._zones: dict[str, str] = {}
        self._zones_at = 0.0
        self._camera_partition: dict[str, TP] = {}
        self._unpositioned: set[TopicPartition] = set()
        self._topics: list[str] = []
        self._topics_checked = 0.0
        self.cameras = CameraRegistry(lambda: self.store.camera_ids(), settings.open_registration)
        self._unknown_logged: set[str] = set()
        # frames read per owned partition (loaded from Redis when first needed): a copy written by a producer retry
        self._seen: dict[TP, Seen] = {}

    # ---- assignment ----------------------------------------------------------------------
    def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        """Start each new partition at the offset stored with the counts; else Kafka's commit; else its earliest frame.

        Never at its end: frames written while the group forms, grows or shrinks would be skipped. Old frames read
        from the beginning are counted `dropped_stale` by the freshness check, not inferred.
        """
        if not assigned:
            return
        for tp in assigned:
            self._seen.pop((tp.topic, tp.partition), None)
        stored: dict[TopicPartition, int] = {}
        for topic in sorted({tp.topic for tp in assigned}):
            offsets = self._retry("redis", partial(self.store.stored_offsets, self.s.group, topic))
            stored.update({TopicPartition(topic, part): off for part, off in offsets.items()})
        committed = {}
        for tp in assigned:
            if tp not in stored:
                off = self.consumer.committed(tp)
                if off is not None:
                    committed[tp] = off
        for tp in assigned:
            if tp in stored:
                where = ("stored", stored[tp])
            elif tp in committed:
                where = ("kafka_committed", committed[tp])
            else:
                # resolved by the next fetch (a synchronous lookup raises for a topic deleted meanwhile)
                self.consumer.seek_to_beginning(tp)
                logger.info("partition assigned topic=%s partition=%d from=earliest", tp.topic, tp.partition)
                continue
            self.consumer.seek(tp, where[1])
            logger.info("partition assigned topic=%s partition=%d from=%s offset=%d", tp.topic, tp.partition, *where)

    def _position(self) -> None:
        todo = [tp for tp in self._unpositioned if tp in self.consumer.assignment()]
        self.seek_to_stored(todo)
        self._unpositioned.difference_update(todo)
        if todo and self.status != STATUS_DEGRADED:
            self.consumer.resume(*todo)

    # ---- main loop -----------------------------------------------------------------------
    def run(self) -> None:
        self._retry("model", self.model.load_metadata)
        self._follow_topics(force=True)
        pending: InFlight | None = None
        while not self.stop.is_set():
            self._follow_topics()
            if self._unpositioned:
                self._position()
            polled = self._poll_beside(pending)
            if pending is not None:
                self._finish(pending)
                pending = None
            if polled:
                pending = self._start(polled)
            self._close_idle_episodes()
            self._heartbeat()
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

    def _poll_beside(self, pending: InFlight | None) -> dict[Any, list[Any]]:
        """The next frames, fetched while `pending`'s Predict runs; returns early once that call is done."""
        if pending is None or pending.future is None:
            return self._poll(self.s.poll_timeout_ms)
        deadline = time.monotonic() + self.s.poll_timeout_ms / 1000
        while True:
            records = self._poll(0 if pending.future.done() else POLL_SLICE_MS)
            if records or pending.future.done() or time.monotonic() >= deadline:
                return records

    def _poll(self, timeout_ms: int) -> dict[Any, list[Any]]:
        records: dict[Any, list[Any]] = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.s.max_poll_records)
        if self._carry:
            for tp, recs in self._carry.items():
                records[tp] = recs + records.get(tp, [])
            self._carry = {}
        return records

    def _start(self, polled: dict[Any, list[Any]]) -> InFlight:
        batch = BatchWrite()
        frames: list[tuple[TP, Frame]] = []
        dead: list[tuple[Any, str]] = []
        now_ms = int(time.time() * 1000)
        max_age_ms = int(self.s.max_frame_age_s * 1000)
        n = 0
        for tp, recs in polled.items():
            if not recs:
                continue
            batch.start_offsets[tp] = recs[0].offset
            batch.next_offsets[tp] = recs[-1].offset + 1
            read = self._seen_in(tp)
            for rec in recs:
                n += 1
                if self._copy(read, tp, rec):
                    continue
                try:
                    frame = parse_message(rec.key, rec.value, rec.headers, self.s.max_frame_bytes, self.s.max_frame_pixels)
                except FrameError as e:
                    dead.append((rec, e.reason))
                    cid = camera_of(rec.key)
                    if cid is not None and self._counts_camera(cid):
                        batch.add(tp, cid, rec.timestamp or now_ms, Counts(invalid=1))
                        seen = seq_of(rec.headers)
                        if seen is not None:
                            batch.see(tp, cid, *seen, rec.timestamp or now_ms)
                    logger.warning(
                        "frame rejected camera=%s topic=%s partition=%d offset=%d reason=%s", cid, tp.topic, tp.partition, rec.offset, e
                    )
                    continue
                if not self._counts_camera(frame.camera_id):
                    dead.append((rec, ERR_UNKNOWN_CAMERA))  # counted nowhere: no camera comes from nowhere
                    self._log_unknown(frame.camera_id, tp.partition, rec.offset)
                    continue
                batch.see(tp, frame.camera_id, frame.producer, frame.seq, frame.ts_ms)
                if now_ms - frame.ts_ms > max_age_ms:
                    batch.add(tp, frame.camera_id, frame.ts_ms, Counts(dropped_stale=1))
                    continue
                frames.append((tp, frame))
            batch.seen[tp] = read.take_changes()
        metrics.BATCH.observe(n)
        inflight = InFlight(batch=batch, frames=frames, records=n, dead=dead)
        if frames:
            inflight.future = self._submit([f.jpeg for _, f in frames])
        return inflight

    def _seen_in(self, tp: TP) -> Seen:
        key = (tp[0], tp[1])
        if key not in self._seen:
            self._seen[key] = self._retry("redis", partial(self.store.seen_in, self.s.group, *key))
        return self._seen[key]

    def _copy(self, seen: Seen, tp: Any, rec: Any) -> bool:
        """A second copy of a frame already read (a producer retry wrote it twice): skipped, counted nowhere."""
        cid, run_seq = camera_of(rec.key), seq_of(rec.headers)
        if cid is None or run_seq is None or seen.first_time(cid, *run_seq):
            return False
        metrics.FRAMES.labels(cid, "duplicate").inc()
        logger.info(
            "duplicate frame skipped camera=%s topic=%s partition=%d offset=%d seq=%d", cid, tp.topic, tp.partition, rec.offset, run_seq[1]
        )
        return True

    def _counts_camera(self, cid: str) -> bool:
        return self._retry("redis", lambda: self.cameras.counts(cid))

    def _log_unknown(self, cid: str, partition: int, offset: int) -> None:
        """WARNING once per unknown id (up to 1000 ids, so a flood of made-up ids cannot flood the log), then DEBUG."""
        first = cid not in self._unknown_logged and len(self._unknown_logged) < 1000
        if first:
            self._unknown_logged.add(cid)
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "frame rejected camera=%s partition=%d offset=%d reason=%s",
            cid,
            partition,
            offset,
            ERR_UNKNOWN_CAMERA,
        )

    def _submit(self, jpegs: list[bytes]) -> Any:
        try:
            return self.model.predict_future(jpegs)
        except grpc.RpcError as e:
            return _Failed(e)

    def _finish(self, p: InFlight) -> None:
        if p.frames:
            dets = self._detections(p)
            self._count(p, dets)
        # dead letters are acknowledged by the broker before the counts that name them are stored
        self._retry("kafka", lambda: self._dead_letter(p))
        result = self._retry("redis", lambda: self.store.commit_batch(p.batch, self.s.group))
        for conflict, stored in result.conflicts.items():
            tp = TopicPartition(*conflict)
            if tp in self.consumer.assignment():
                logger.warning("offset conflict, re-reading topic=%s partition=%d from=%d", tp.topic, tp.partition, stored)
                self._seen.pop(conflict, None)
                self.consumer.seek(tp, stored)
        if result.applied:
            self._publish(p, result.applied)
            for (part, cid, _), c in p.batch.counts.items():
                if part in result.applied:
                    for outcome in ("frames", "invalid", "dropped_stale"):
                        if getattr(c, outcome):
                            metrics.FRAMES.labels(cid, outcome).inc(getattr(c, outcome))
                    for cls in ("with_mask", "without_mask", "mask_worn_incorrectly"):
                        if getattr(c, cls):
                            metrics.FACES.labels(cid, cls).inc(getattr(c, cls))
        self._commit_kafka(p.batch, result.applied)
        self.processed += p.records
        self.batches += 1
        self._rate.append((time.monotonic(), p.records))

    # ---- model ---------------------------------------------------------------------------
    def _detections(self, p: InFlight) -> list[Detections | None]:
        """Detections per frame (None = the frame was dead-lettered); retries while the server is down."""
        attempt = 0
        jpegs = [f.jpeg for _, f in p.frames]
        future = p.future
        while True:
            try:
                resp = future.result()
                t_ms = (time.monotonic() - p.started) * 1000
                metrics.MODEL_SECONDS.observe(t_ms / 1000)
                self.model_ms_ewma = t_ms if not self.model_ms_ewma else 0.8 * self.model_ms_ewma + 0.2 * t_ms
                self._ok("model")
                try:
                    return list(parse_outputs(outputs_of(resp), len(jpegs)))
                except (ModelOutputError, ValueError) as e:
                    logger.warning("model output malformed frames=%d error=%s", len(jpegs), e)
                    return self._one_by_one(p, ERR_MODEL_OUTPUT)
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    return self._one_by_one(p, ERR_UNDECODABLE)
                if code not in RETRYABLE and code != grpc.StatusCode.NOT_FOUND and code != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                self._degraded("model", f"{code.name}: {e.details() if hasattr(e, 'details') else e}")
                self._wait_backoff(attempt)
                attempt += 1
                if self.stop.is_set():
                    raise _Abandon() from None
                p.started = time.monotonic()
                future = self._submit(jpegs)

    def _one_by_one(self, p: InFlight, reason: str) -> list[Detections | None]:
        """A batch the server refused: ask per frame, dead-letter the frames that fail."""
        out: list[Detections | None] = []
        for part, frame in p.frames:
            try:
                resp = self._retry("model", _call_one(self, frame), give_up=(grpc.StatusCode.INVALID_ARGUMENT,))
                out.append(parse_outputs(outputs_of(resp), 1)[0])
            except (grpc.RpcError, ModelOutputError, ValueError) as e:
                logger.warning("frame rejected by model camera=%s seq=%d reason=%s error=%s", frame.camera_id, frame.seq, reason, e)
                p.dead.append((_FrameRecord(frame), reason))
                p.batch.add(part, frame.camera_id, frame.ts_ms, Counts(invalid=1))
                out.append(None)
        return out

    def _count(self, p: InFlight, dets: list[Detections | None]) -> None:
        latest: dict[str, tuple[Frame, Detections]] = {}
        part_of: dict[str, TP] = {}
        for (part, frame), d in zip(p.frames, dets, strict=True):
            if d is None:
                continue
            d = d.above(self.s.min_score)
            step = self.trackers.step(frame.camera_id, frame.ts_ms, d.items)
            p.batch.add(part, frame.camera_id, frame.ts_ms, d.counts(frame.width) + step.persons)
            part_of[frame.camera_id] = part
            self._camera_partition[frame.camera_id] = part
            self._episode_step(frame, step.seen)
            prev = latest.get(frame.camera_id)
            if prev is None or frame.ts_ms >= prev[0].ts_ms:
                latest[frame.camera_id] = (frame, d)
        for cid, part in part_of.items():
            p.batch.episodes.extend((part, ep) for ep in self.episodes.book(cid).drain())
        p.batch.zones = self._camera_zones(p.batch.cameras())
        for cid, (frame, d) in latest.items():
            img = annotate.decode(frame.jpeg)
            if img is not None:
                p.batch.latest_jpeg[cid] = annotate.encode(annotate.annotate(img, d))

    def forget_cameras(self, partitions: set[TP]) -> None:
        """Drop the tracks and episodes of cameras on revoked partitions: their new owner continues the episodes
        stored open (nothing is closed here, so a person still in view stays one episode)."""
        for cid, part in list(self._camera_partition.items()):
            if part in partitions:
                self.episodes.by_camera.pop(cid, None)
                self.trackers.by_camera.pop(cid, None)
                del self._camera_partition[cid]

    def _episode_step(self, frame: Frame, seen: Any) -> None:
        """Feed one frame's tracked faces to its camera's episodes; crop the faces that may be better evidence."""
        if frame.camera_id not in self.episodes.by_camera:
            # a camera new to this worker: episodes its previous worker left open may go on (a restart, a rebalance)
            stored = self._retry("redis", lambda: self.store.open_episodes(frame.camera_id, 0))
            self.episodes.book(frame.camera_id).resume(stored)
        book = self.episodes.book(frame.camera_id)
        candidates = book.observe(frame.ts_ms, seen, frame.width, frame.height)
        if not candidates:
            return
        img = annotate.decode(frame.jpeg)
        if img is None:
            return
        for c in candidates:
            quality = face_quality(c.area_px, annotate.sharpness(img, c.detection))
            book.offer(c, quality, annotate.crop(img, c.detection, self.s.blur_faces))

    def _close_idle_episodes(self) -> None:
        """Close the episodes of cameras whose frames stopped (no batch will come to close them)."""
        now_ms = int(time.time() * 1000) - int(self.s.max_frame_age_s * 1000)
        closed = self.episodes.expire_idle(now_ms)
        if not closed:
            return
        self._retry("redis", lambda: self.store.close_episodes(closed))
        self._publish_episodes(closed)

    def _camera_zones(self, cids: set[str]) -> dict[str, str]:
        """Each camera's zone, re-read from Redis now and then (a camera moved in the site file follows)."""
        now = time.monotonic()
        missing = [c for c in cids if c not in self._zones]
        if now - self._zones_at >= ZONES_REFRESH_S:
            missing, self._zones_at = sorted(cids | set(self._zones)), now
        if missing:
            self._zones.update(self._retry("redis", lambda: self.store.camera_zones(missing)))
        return {c: self._zones.get(c, "") for c in cids}

    # ---- outputs -------------------------------------------------------------------------
    def _dead_letter(self, p: InFlight) -> None:
        """Send the batch's dead letters and wait for the broker's acknowledgement of each; raises if one failed."""
        futures = []
        for rec, reason in p.dead:
            headers, value = dead_letter(rec.headers, rec.value, reason)
            futures.append(self.dlq.send(self.s.dlq_topic, key=rec.key, value=value, headers=headers))
        if not futures:
            return
        self.dlq.flush(timeout=10)
        for fut in futures:
            fut.get(timeout=0.1)  # raises the send's KafkaError: the batch is held and the whole send retried

    def _publish(self, p: InFlight, applied: set[TP]) -> None:
        cams: dict[str, dict[str, int]] = defaultdict(dict)
        for (part, cid, _), c in p.batch.counts.items():
            if part in applied:
                entry = cams[cid]
                entry["frames"] = entry.get("frames", 0) + c.frames
                entry["last_frame_ms"] = p.batch.last_frame_ms.get(cid, 0)
        self._send_update(cams, [ep for part, ep in p.batch.episodes if part in applied])

    def _publish_episodes(self, episodes: list[Episode]) -> None:
        self._send_update({}, episodes)

    def _send_update(self, cams: dict[str, dict[str, int]], episodes: list[Episode]) -> None:
        payload = {
            "type": "batch",
            "worker": self.s.worker_id,
            "ts_ms": int(time.time() * 1000),
            "cameras": cams,
            "violations": [episode_notice(ep) for ep in self.announcer.select(episodes)],
        }
        try:
            self.store.publish_update(payload)
        except redis.RedisError as e:
            logger.warning("live update not published error=%s", e)

    def _commit_kafka(self, batch: BatchWrite, applied: set[TP]) -> None:
        offsets = {
            TopicPartition(*tp): OffsetAndMetadata(nxt, "", -1) for tp, nxt in batch.next_offsets.items() if tp in applied
        }
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as e:
            logger.warning("kafka commit failed after a rebalance (counts are safe in Redis) error=%s", e)
        except KafkaError as e:
            logger.warning("kafka commit failed error=%s", e)

    # ---- dependency failures -------------------------------------------------------------
    def _degraded(self, dep: str, reason: str) -> None:
        if self.status != STATUS_DEGRADED or not self.reason.startswith(dep):
            logger.warning("degraded dependency=%s reason=%s", dep, reason)
        self.status, self.reason = STATUS_DEGRADED, f"{dep}: {reason}"
        metrics.DEGRADED.labels(dep).set(1)
        self._heartbeat(force=True)

    def _ok(self, dep: str) -> None:
        if self.status == STATUS_DEGRADED and self.reason.startswith(dep):
            logger.info("recovered dependency=%s", dep)
            metrics.DEGRADED.labels(dep).set(0)
            self.status, self.reason = STATUS_OK, ""
            ready = [tp for tp in self.consumer.paused() if tp not in self._unpositioned]
            if ready:
                self.consumer.resume(*ready)
            self._heartbeat(force=True)

    def _wait_backoff(self, attempt: int) -> None:
        """Wait with capped backoff while keeping group membership: partitions paused, poll keeps running."""
        delay = random.uniform(0.5, 1.0) * min(self.s.retry_max_s, 0.25 * 2**attempt)
        deadline = time.monotonic() + delay
        while not self.stop.is_set() and time.monotonic() < deadline:
            assigned = self.consumer.assignment()
            if assigned:
                self.consumer.pause(*assigned)
            got = self.consumer.poll(timeout_ms=min(200, max(1, int((deadline - time.monotonic()) * 1000))))
            for tp, recs in got.items():
                self._carry.setdefault(tp, []).extend(recs)

    def _retry(self, dep: str, call: Callable[[], T], give_up: tuple[grpc.StatusCode, ...] = ()) -> T:
        attempt = 0
        while True:
            try:
                out = call()
                self._ok(dep)
                return out
            except (redis.RedisError, KafkaError) as e:
                self._degraded(dep, f"{type(e).__name__}: {e}")
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
                if code in give_up:
                    raise
                self._degraded(dep, f"{code.name}: {e.details() if hasattr(e, 'details') else e}")
            if self.stop.is_set():
                raise _Abandon()
            self._wait_backoff(attempt)
            attempt += 1

    # ---- heartbeat -----------------------------------------------------------------------
    def fps(self) -> float:
        now = time.monotonic()
        self._rate = [(t, n) for t, n in self._rate if now - t <= 10]
        if not self._rate:
            return 0.0
        span = max(1.0, now - self._rate[0][0])
        return sum(n for _, n in self._rate) / span

    def lag(self) -> int:
        total = 0
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            if hw is None:
                continue
            try:
                pos = self.consumer.position(tp, timeout_ms=100)
            except KafkaError:
                continue
            if pos is not None:
                total += max(0, hw - pos)
        return total

    def _heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_hb < self.s.heartbeat_interval_s:
            return
        self._last_hb = now
        lag = self.lag()
        metrics.LAG.set(lag)
        fields = {
            "status": self.status,
            "reason": self.reason,
            "partitions": sorted(tp.partition for tp in self.consumer.assignment()),
            "topics": len({tp.topic for tp in self.consumer.assignment()}),
            "fps": round(self.fps(), 2),
            "frames": self.processed,
            "batches": self.batches,
            "model_ms": round(self.model_ms_ewma, 1),
            "lag": lag,
        }
        try:
            self.store.heartbeat("worker", self.s.worker_id, fields)
        except redis.RedisError as e:
            logger.debug("heartbeat not written error=%s", e)


class _Abandon(Exception):
    """Stop was requested while a dependency was down: the batch is abandoned, not lost (offsets not stored)."""


class _Failed:
    """A future that already failed (the call could not even start)."""

    def __init__(self, err: grpc.RpcError) -> None:
        self.err = err

    def result(self) -> Any:
        raise self.err

    def done(self) -> bool:
        return True

    def cancel(self) -> bool:
        return False


def _call_one(worker: Worker, frame: Frame) -> Callable[[], Any]:
    def call() -> Any:
        return worker._submit([frame.jpeg]).result()

    return call


class _FrameRecord:
    """A valid frame rebuilt as a record for the dead-letter topic."""

    def __init__(self, frame: Frame) -> None:
        self.key = frame.key
        self.value = frame.jpeg
        self.headers = frame.headers()


def run_worker(worker: Worker) -> None:
    try:
        worker.run()
    except _Abandon:
        logger.info("stopped while a dependency was down; the held batch will be redone by the next owner")


def _names(tps: Any) -> str:
    """`topic:partition,...` for a log line."""
    return ",".join(f"{tp.topic}:{tp.partition}" for tp in sorted(tps))
