"""Violation episodes: one per tracked person judged unmasked or wrongly masked, with its best snapshot (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from maskwatch.detections import VIOLATION_CLASSES, Detection
from maskwatch.store import EPISODE_CLOSED, EPISODE_OPEN, Episode
from worker.tracker import Track, iou

# Laplacian variance at which a face crop counts as fully sharp; blurrier crops weigh proportionally less.
SHARP_VARIANCE = 100.0
# An open episode is announced live when it opens, when its snapshot improves, when it closes, and in between
# at most once per this much capture time (its duration ticking on in the browser).
ANNOUNCE_EVERY_MS = 5000


class Announcer:
    """Which episode states are worth a live notice (every state is still stored)."""

    def __init__(self, every_ms: int = ANNOUNCE_EVERY_MS) -> None:
        self.every_ms = every_ms
        self.last: dict[tuple[str, str], int] = {}

    def select(self, episodes: Iterable[Episode]) -> list[Episode]:
        out = []
        for ep in episodes:
            key = (ep.camera_id, ep.id)
            prev = self.last.get(key)
            if ep.state == EPISODE_CLOSED:
                self.last.pop(key, None)
                out.append(ep)
            elif prev is None or ep.snapshot is not None or ep.last_ms - prev >= self.every_ms:
                self.last[key] = ep.last_ms
                out.append(ep)
        return out


def verdict(votes: Mapping[str, int], min_frames: int) -> str | None:
    """The violation class a track's vote gives, or None.

    A track is a violation once it has been seen in at least `min_frames` frames and most of its frames
    say without_mask or mask_worn_incorrectly; its class is the more frequent of those two (without_mask
    on a tie: the stricter finding).
    """
    frames = sum(votes.values())
    bad = {c: n for c, n in votes.items() if c in VIOLATION_CLASSES}
    if frames < min_frames or 2 * sum(bad.values()) <= frames:
        return None
    return max(sorted(bad), key=lambda c: (bad[c], c == "without_mask"))


def face_area_px(d: Detection, width: int, height: int) -> float:
    y0, x0, y1, x1 = d.box
    return max(0.0, (x1 - x0) * width) * max(0.0, (y1 - y0) * height)


def face_quality(area_px: float, sharpness: float) -> float:
    """How good a face is as evidence: its area in pixels, weighed down when blurred (never above the area)."""
    return area_px * min(1.0, max(0.0, sharpness) / SHARP_VARIANCE)


@dataclass
class _Open:
    """An episode in progress (mutable: the book updates it frame by frame)."""

    id: str
    label: str
    votes: dict[str, int]
    first_ms: int
    last_ms: int
    box: tuple[float, float, float, float]
    score: float
    best_quality: float = 0.0
    snapshot_ms: int | None = None
    snapshot: bytes | None = None  # a better crop not yet written
    # the votes stored before this worker took the episode over (a restart, a rebalance): added to the track's
    base_votes: dict[str, int] = field(default_factory=dict)

    def all_votes(self) -> dict[str, int]:
        return {c: self.votes.get(c, 0) + self.base_votes.get(c, 0) for c in sorted({*self.votes, *self.base_votes})}

    def value(self, camera: str, state: str, grace_ms: int) -> Episode:
        return Episode(
            camera_id=camera,
            id=self.id,
            label=self.label,
            votes=tuple(sorted(self.all_votes().items())),
            first_ms=self.first_ms,
            last_ms=self.last_ms,
            box=self.box,
            score=self.score,
            state=state,
            grace_ms=grace_ms,
            snapshot_ms=self.snapshot_ms,
            snapshot=self.snapshot,
            quality=self.best_quality,
        )

    @classmethod
    def stored(cls, ep: Episode) -> _Open:
        """An episode another worker left open, as this book continues it."""
        return cls(
            id=ep.id,
            label=ep.label,
            votes={},
            first_ms=ep.first_ms,
            last_ms=ep.last_ms,
            box=ep.box,
            score=ep.score,
            best_quality=ep.quality,
            snapshot_ms=ep.snapshot_ms,
            base_votes=dict(ep.votes),
        )


@dataclass(frozen=True)
class Candidate:
    """A face that could beat its episode's snapshot: the caller measures its sharpness and offers the crop."""

    episode_id: str  # the key the book holds the episode under (its track's)
    detection: Detection
    ts_ms: int
    area_px: float


@dataclass
class EpisodeBook:
    """One camera's episodes, fed with the tracker's matches in capture order.

    An episode opens when a track's vote says violation over at least `min_frames` frames (first seen =
    the track's first frame), is extended by every later frame of that track, and closes once the track
    has not been seen for `grace_ms` (of capture time, or of wall time for a camera gone quiet: `expire`).
    """

    camera: str
    min_frames: int
    grace_ms: int
    min_iou: float = 0.3
    # episodes in progress by their track's key (an adopted episode keeps its own id)
    open: dict[str, _Open] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    closed: list[Episode] = field(default_factory=list)
    # episodes another worker left open for this camera, until a track takes one over or its grace runs out
    adoptable: list[_Open] = field(default_factory=list)

    def resume(self, stored: Iterable[Episode]) -> None:
        """Episodes stored open by the camera's previous worker: a person still in view continues theirs."""
        self.adoptable = [_Open.stored(e) for e in stored if e.state == EPISODE_OPEN]

    def _adopt(self, track: Track, det: Detection) -> _Open | None:
        """The stored open episode this new track continues: where it was last seen, within the grace."""
        best, best_iou = None, self.min_iou
        for ep in self.adoptable:
            overlap = iou(ep.box, track.first_box or det.box)
            if track.first_ms - ep.last_ms <= self.grace_ms and overlap >= best_iou:
                best, best_iou = ep, overlap
        if best is not None:
            self.adoptable.remove(best)
        return best

    def observe(self, ts_ms: int, seen: Iterable[tuple[Track, Detection]], width: int, height: int) -> list[Candidate]:
        """One frame's matched faces; returns the faces worth measuring as a better snapshot."""
        self.expire(ts_ms)
        out: list[Candidate] = []
        for track, det in seen:
            ep = self.open.get(track.key)
            label = verdict(track.votes, self.min_frames)
            if ep is None:
                if label is None:
                    continue
                ep = self._adopt(track, det) or _Open(
                    id=track.key,
                    label=label,
                    votes={},
                    first_ms=track.first_ms,
                    last_ms=ts_ms,
                    box=det.box,
                    score=det.score,
                )
                self.open[track.key] = ep
            ep.votes = dict(track.votes)
            ep.last_ms = max(ep.last_ms, ts_ms)
            ep.box = det.box
            ep.score = max(ep.score, det.score) if det.label == ep.label else ep.score
            if label is not None:
                ep.label = verdict(ep.all_votes(), self.min_frames) or label
            self.changed.add(track.key)
            area = face_area_px(det, width, height)
            if det.label in VIOLATION_CLASSES and area > ep.best_quality:
                out.append(Candidate(track.key, det, ts_ms, area))
        return out

    def offer(self, candidate: Candidate, quality: float, crop: bytes | None) -> bool:
        """Keep `crop` as its episode's snapshot when its quality beats the kept one's."""
        ep = self.open.get(candidate.episode_id)
        if ep is None or crop is None or quality <= ep.best_quality:
            return False
        ep.best_quality, ep.snapshot, ep.snapshot_ms = quality, crop, candidate.ts_ms
        self.changed.add(candidate.episode_id)
        return True

    def expire(self, now_ms: int) -> list[Episode]:
        """Close the episodes whose person has been gone longer than the grace period."""
        gone = [key for key, ep in self.open.items() if now_ms - ep.last_ms > self.grace_ms]
        out = []
        for key in gone:
            ep = self.open.pop(key)
            self.changed.discard(key)
            out.append(ep.value(self.camera, EPISODE_CLOSED, self.grace_ms))
            ep.snapshot = None
        # stored episodes nobody took over: their person left while no worker watched
        stale = [ep for ep in self.adoptable if now_ms - ep.last_ms > self.grace_ms]
        for ep in stale:
            self.adoptable.remove(ep)
            out.append(ep.value(self.camera, EPISODE_CLOSED, self.grace_ms))
        self.closed.extend(out)
        return out

    def drain(self) -> list[Episode]:
        """Every episode that changed since the last drain: the closed ones, then the open ones' latest state.

        A snapshot is carried once (in the first state that follows it being kept).
        """
        out = list(self.closed)
        for key in sorted(self.changed):
            ep = self.open[key]
            out.append(ep.value(self.camera, EPISODE_OPEN, self.grace_ms))
            ep.snapshot = None
        self.closed, self.changed = [], set()
        return out


class EpisodeBooks:
    """One book per camera, created on first sight."""

    def __init__(self, min_frames: int, grace_ms: int) -> None:
        self.min_frames = min_frames
        self.grace_ms = grace_ms
        self.by_camera: dict[str, EpisodeBook] = {}

    def book(self, camera: str) -> EpisodeBook:
        b = self.by_camera.get(camera)
        if b is None:
            b = self.by_camera[camera] = EpisodeBook(camera, self.min_frames, self.grace_ms)
        return b

    def expire_idle(self, now_ms: int) -> list[Episode]:
        """Close the episodes of cameras that went quiet and hand them over at once.

        `now_ms` stands in for capture time: pass wall time less the oldest a counted frame may be, so a
        person still in view on a camera whose frames are merely late is not cut in two.
        """
        out: list[Episode] = []
        for b in self.by_camera.values():
            b.expire(now_ms)
            out.extend(b.closed)
            b.closed = []
        return out
