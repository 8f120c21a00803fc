"""The worker's batch logic, with no Kafka, Redis or gRPC (a poll's records are sorted by `maskwatch.intake`):
detections → counts, tracked persons, episodes and each camera's latest frame; the live notice. The loop (worker/consumer.py) makes the calls around them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from maskwatch.annotate import decode, draw, encode
from maskwatch.detections import Counts, Detection, Detections
from maskwatch.frames import ERR_UNKNOWN_CAMERA, Frame
from maskwatch.intake import DeadLetter, Intake
from maskwatch.payloads import CameraActivity, LiveNotice
from maskwatch.store import TP, BatchWrite, Episode, Seen, episode_notice
from worker import snapshots
from worker.episodes import Announcer, EpisodeBook, EpisodeBooks, face_quality
from worker.settings import WorkerSettings
from worker.tracker import Track, Trackers

logger = logging.getLogger(__name__)

# an unknown camera id is logged at WARNING the first time, for this many ids (then DEBUG): made-up ids cannot flood
UNKNOWN_IDS_LOGGED = 1000


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
