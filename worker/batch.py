"""The worker's batch logic, with no Kafka, Redis or gRPC: polled records → frames for the model, dead letters, the
counts of rejected and stale frames, copies skipped; detections → counts, tracked persons, episodes and each camera's latest
frame; the live notice. The loop (worker/consumer.py) makes the calls around them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from maskwatch.annotate import decode, draw, encode
from maskwatch.detections import Counts, Detection, Detections
from maskwatch.frames import (
    ERR_UNKNOWN_CAMERA,
    Frame,
    FrameError,
    camera_of,
    dead_letter,
    parse_message,
    seq_of,
)
from maskwatch.payloads import CameraActivity, LiveNotice
from maskwatch.store import TP, BatchWrite, Episode, Seen, episode_notice
from worker import snapshots
from worker.episodes import Announcer, EpisodeBook, EpisodeBooks, face_quality
from worker.settings import WorkerSettings
from worker.tracker import Track, Trackers

logger = logging.getLogger(__name__)

# an unknown camera id is logged at WARNING the first time, for this many ids (then DEBUG): made-up ids cannot flood
UNKNOWN_IDS_LOGGED = 1000


class Record(Protocol):
    """A consumed message, as kafka-python's ConsumerRecord has it."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...


@dataclass(frozen=True)
class FrameLimits:
    """What a consumed frame may be: its bytes and JPEG pixels (else dead-lettered), its age (else counted stale)."""

    max_bytes: int
    max_pixels: int
    max_age_ms: int

    @classmethod
    def of(cls, s: WorkerSettings) -> FrameLimits:
        return cls(s.max_frame_bytes, s.max_frame_pixels, int(s.max_frame_age_s * 1000))


@dataclass(frozen=True)
class DeadLetter:
    """A message for the dead-letter topic: the rejected message's key, its value and headers with `mw-error`."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str

    @classmethod
    def of(cls, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]] | None, reason: str) -> DeadLetter:
        out_headers, out_value = dead_letter(headers, value, reason)
        return cls(key, out_value, out_headers, reason)

    @classmethod
    def of_frame(cls, frame: Frame, reason: str) -> DeadLetter:
        """A valid frame the model refused, as it came."""
        return cls.of(frame.key, frame.jpeg, frame.headers(), reason)


@dataclass(frozen=True)
class Rejection:
    """A record not asked about, as the log names it (`camera` None when its key is no valid id)."""

    camera: str | None
    tp: TP
    offset: int
    reason: str
    error: str


@dataclass(frozen=True)
class Copy:
    """A second copy of a frame already read (a producer retry wrote it twice): skipped, counted nowhere."""

    camera: str
    tp: TP
    offset: int
    seq: int


@dataclass
class Intake:
    """A polled batch sorted: what its transaction writes so far, the frames for the model, the dead letters."""

    batch: BatchWrite
    frames: list[tuple[TP, Frame]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    records: int = 0


def intake(
    polled: Mapping[TP, Sequence[Record]],
    seen: Mapping[TP, Seen],
    now_ms: int,
    limits: FrameLimits,
    counts_camera: Callable[[str], bool],
) -> Intake:
    """Sort a poll's records (by topic partition, in offset order) into frames to count and what is not asked about.

    A copy of a frame `seen` in its partition already is skipped. A message breaking Contract 1 is dead-lettered
    with its reason; when its key names a camera that is counted it is counted `invalid` (its `mw-seq` still shows
    frames lost before it). A valid frame of a camera the site does not list is dead-lettered `unknown_camera` and
    counted nowhere. A frame older than `max_age_ms` is counted `dropped_stale`. Each partition's offsets span all
    its records, whatever became of them, and what `seen` learnt goes with them.
    """
    out = Intake(BatchWrite())
    for tp, recs in polled.items():
        if not recs:
            continue
        out.batch.start_offsets[tp] = recs[0].offset
        out.batch.next_offsets[tp] = recs[-1].offset + 1
        for rec in recs:
            out.records += 1
            _sort(out, tp, rec, seen[tp], now_ms, limits, counts_camera)
        out.batch.seen[tp] = seen[tp].take_changes()
    return out


def _sort(
    out: Intake, tp: TP, rec: Record, seen: Seen, now_ms: int, limits: FrameLimits, counts_camera: Callable[[str], bool]
) -> None:
    """One record: a copy skipped, a message rejected, a frame counted stale, or a frame for the model."""
    cid, run_seq = camera_of(rec.key), seq_of(rec.headers)
    if cid is not None and run_seq is not None and not seen.first_time(cid, *run_seq):
        out.copies.append(Copy(cid, tp, rec.offset, run_seq[1]))
        return
    try:
        frame = parse_message(rec.key, rec.value, rec.headers, limits.max_bytes, limits.max_pixels)
    except FrameError as e:
        _reject(out, tp, rec, e.reason, str(e), counts_camera, rec.timestamp or now_ms)
        return
    if not counts_camera(frame.camera_id):  # counted nowhere: no camera comes from nowhere
        out.dead.append(DeadLetter.of(rec.key, rec.value, rec.headers, ERR_UNKNOWN_CAMERA))
        out.rejected.append(Rejection(frame.camera_id, tp, rec.offset, ERR_UNKNOWN_CAMERA, ERR_UNKNOWN_CAMERA))
        return
    out.batch.see(tp, frame.camera_id, frame.producer, frame.seq, frame.ts_ms)
    if now_ms - frame.ts_ms > limits.max_age_ms:
        out.batch.add(tp, frame.camera_id, frame.ts_ms, Counts(dropped_stale=1))
        return
    out.frames.append((tp, frame))


def _reject(out: Intake, tp: TP, rec: Record, reason: str, error: str, counts_camera: Callable[[str], bool], ts_ms: int) -> None:
    """A record breaking Contract 1: dead-lettered; counted `invalid` (with its `mw-seq`) when its camera is counted."""
    cid = camera_of(rec.key)
    out.dead.append(DeadLetter.of(rec.key, rec.value, rec.headers, reason))
    out.rejected.append(Rejection(cid, tp, rec.offset, reason, error))
    if cid is not None and counts_camera(cid):
        out.batch.add(tp, cid, ts_ms, Counts(invalid=1))
        seen = seq_of(rec.headers)
        if seen is not None:
            out.batch.see(tp, cid, *seen, ts_ms)


class RejectionLog:
    """Logs what a batch skipped: copies at INFO, rejected records at WARNING, an unknown camera's only the first
    time (for up to UNKNOWN_IDS_LOGGED ids), then at DEBUG."""

    def __init__(self) -> None:
        self.unknown_logged: set[str] = set()

    def log(self, got: Intake) -> None:
        for c in got.copies:
            logger.info(
                "duplicate frame skipped camera=%s topic=%s partition=%d offset=%d seq=%d", c.camera, c.tp[0], c.tp[1], c.offset, c.seq
            )
        for r in got.rejected:
            if r.reason != ERR_UNKNOWN_CAMERA:
                logger.warning(
                    "frame rejected camera=%s topic=%s partition=%d offset=%d reason=%s", r.camera, r.tp[0], r.tp[1], r.offset, r.error
                )
                continue
            first = r.camera not in self.unknown_logged and len(self.unknown_logged) < UNKNOWN_IDS_LOGGED
            if first:
                self.unknown_logged.add(str(r.camera))
            level = logging.WARNING if first else logging.DEBUG
            logger.log(level, "frame rejected camera=%s partition=%d offset=%d reason=%s", r.camera, r.tp[1], r.offset, r.reason)


def refuse(batch: BatchWrite, tp: TP, frame: Frame, reason: str) -> DeadLetter:
    """A frame the model refused: counted `invalid`, dead-lettered as it came."""
    batch.add(tp, frame.camera_id, frame.ts_ms, Counts(invalid=1))
    return DeadLetter.of_frame(frame, reason)


@dataclass
class Books:
    """What the worker carries from batch to batch about its cameras: their tracks and episodes, which episode
    states were announced, and the partition each camera's frames came from last."""

    trackers: Trackers
    episodes: EpisodeBooks
    announcer: Announcer = field(default_factory=Announcer)
    partition_of: dict[str, TP] = field(default_factory=dict)
    # the frames read per owned partition (loaded from Redis when first needed): a producer retry's copy is skipped
    seen: dict[TP, Seen] = field(default_factory=dict)

    @classmethod
    def of(cls, s: WorkerSettings) -> Books:
        grace_ms = int(s.episode_grace_s * 1000)
        # a track lives as long as its episode's grace, so a person briefly missed stays one episode
        return cls(Trackers(ttl_ms=grace_ms), EpisodeBooks(s.episode_min_frames, grace_ms))

    def load_seen(self, tps: Iterable[TP], load: Callable[[TP], Seen]) -> None:
        """What was read of each partition new to this worker, as `load` (Redis) has it from the last batch stored."""
        for tp in tps:
            if tp not in self.seen:
                self.seen[(tp[0], tp[1])] = load(tp)

    def resume(
        self, frames: Sequence[tuple[TP, Frame]], dets: Sequence[Detections | None], load: Callable[[str], list[Episode]]
    ) -> None:
        """Before counting: a camera of answered frames that is new to this worker (a restart, a rebalance) continues
        the open episodes its previous worker stored (`load`)."""
        for (_, frame), d in zip(frames, dets, strict=True):
            if d is not None and frame.camera_id not in self.episodes.by_camera:
                self.episodes.book(frame.camera_id).resume(load(frame.camera_id))

    def forget(self, partitions: set[TP]) -> None:
        """Drop what was read of revoked partitions, and the tracks and episodes of their cameras: their new owner
        continues the episodes stored open (nothing is closed here, so a person still in view stays one episode)."""
        for tp in partitions:
            self.seen.pop(tp, None)
        for cid, part in list(self.partition_of.items()):
            if part in partitions:
                self.episodes.by_camera.pop(cid, None)
                self.trackers.by_camera.pop(cid, None)
                del self.partition_of[cid]


def count(
    batch: BatchWrite,
    frames: Sequence[tuple[TP, Frame]],
    dets: Sequence[Detections | None],
    books: Books,
    min_score: float,
    blur_faces: bool,
) -> None:
    """Add the answered frames to `batch`: each frame's counts (faces scoring `min_score` or more, persons its
    tracks newly count), the episode states they changed, and each camera's newest frame with its boxes drawn.
    A frame without detections (None: the model refused it) adds nothing."""
    latest: dict[str, tuple[Frame, Detections]] = {}
    part_of: dict[str, TP] = {}
    for (part, frame), d in zip(frames, dets, strict=True):
        if d is None:
            continue
        d = d.above(min_score)
        step = books.trackers.step(frame.camera_id, frame.ts_ms, d.items)
        batch.add(part, frame.camera_id, frame.ts_ms, d.counts(frame.width) + step.persons)
        part_of[frame.camera_id] = books.partition_of[frame.camera_id] = part
        _episode_step(books.episodes.book(frame.camera_id), frame, step.seen, blur_faces)
        prev = latest.get(frame.camera_id)
        if prev is None or frame.ts_ms >= prev[0].ts_ms:
            latest[frame.camera_id] = (frame, d)
    for cid, part in part_of.items():
        batch.episodes.extend((part, ep) for ep in books.episodes.book(cid).drain())
    for cid, (frame, d) in latest.items():
        img = decode(frame.jpeg)
        if img is not None:
            batch.latest_jpeg[cid] = encode(draw(img, d))


def _episode_step(book: EpisodeBook, frame: Frame, seen: Iterable[tuple[Track, Detection]], blur_faces: bool) -> None:
    """Feed one frame's tracked faces to its camera's episodes; crop the faces that may be better evidence."""
    candidates = book.observe(frame.ts_ms, seen, frame.width, frame.height)
    if not candidates:
        return
    img = decode(frame.jpeg)
    if img is None:
        return
    for c in candidates:
        quality = face_quality(c.area_px, snapshots.sharpness(img, c.detection))
        book.offer(c, quality, snapshots.crop(img, c.detection, blur_faces))


def applied_totals(batch: BatchWrite, applied: set[TP]) -> dict[str, Counts]:
    """Each camera's counts in the topic partitions the transaction applied."""
    out: dict[str, Counts] = {}
    for (part, cid, _), c in batch.counts.items():
        if part in applied:
            out[cid] = out[cid] + c if cid in out else c
    return out


def live_notice(worker_id: str, now_ms: int, cameras: Mapping[str, CameraActivity], announced: Iterable[Episode]) -> LiveNotice:
    """The notice on `mw:updates`: the cameras a batch counted and the episode states worth announcing."""
    return LiveNotice(worker_id, now_ms, dict(cameras), tuple(episode_notice(ep) for ep in announced))


def batch_notice(worker_id: str, now_ms: int, batch: BatchWrite, applied: set[TP], announcer: Announcer) -> LiveNotice:
    """The live notice of a stored batch: only what the transaction applied (a duplicate announces nothing new)."""
    cameras = {
        cid: CameraActivity(c.frames, batch.last_frame_ms.get(cid, 0)) for cid, c in applied_totals(batch, applied).items()
    }
    return live_notice(worker_id, now_ms, cameras, announcer.select(ep for part, ep in batch.episodes if part in applied))
