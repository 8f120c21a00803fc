"""Unique-person counting: a small IoU tracker per camera; each track gets one verdict by vote over its frames."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from maskwatch.detections import INCORRECT, WITH_MASK, WITHOUT_MASK, Counts, Detection

PERSON_FIELD = {WITH_MASK: "persons_with_mask", WITHOUT_MASK: "persons_without_mask", INCORRECT: "persons_mask_worn_incorrectly"}


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ay0, ax0, ay1, ax1 = a
    by0, bx0, by1, bx1 = b
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    inter = ih * iw
    union = (ay1 - ay0) * (ax1 - ax0) + (by1 - by0) * (bx1 - bx0) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    box: tuple[float, float, float, float]
    last_ms: int
    votes: Counter[str] = field(default_factory=Counter)
    hits: int = 0
    counted: bool = False
    first_ms: int = -1
    # the track's first box, kept to name it: the same frames give the same key after a worker restart
    first_box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.first_ms < 0:
            self.first_ms = self.last_ms
        if self.first_box is None:
            self.first_box = self.box

    @property
    def key(self) -> str:
        """A stable name: first sighting (ms) and first box corner; an episode of this track takes it as id."""
        y0, x0 = (self.first_box or self.box)[:2]
        return f"{self.first_ms}-{int(y0 * 1e4)}-{int(x0 * 1e4)}"


@dataclass(frozen=True)
class TrackStep:
    """What one frame did: persons newly counted, and each detection matched to (or starting) its track."""

    persons: Counts
    seen: tuple[tuple[Track, Detection], ...] = ()


class CameraTracker:
    """Tracks faces across one camera's frames in capture order.

    A track is counted as one person when it has been seen in `min_hits` frames; its class is the
    majority of its frames' verdicts at that moment. Tracks unseen for `ttl_ms` end.
    """

    def __init__(self, min_iou: float = 0.3, min_hits: int = 3, ttl_ms: int = 3000) -> None:
        self.min_iou = min_iou
        self.min_hits = min_hits
        self.ttl_ms = ttl_ms
        self.tracks: list[Track] = []
        self.last_ts = 0

    def update(self, ts_ms: int, dets: tuple[Detection, ...]) -> Counts:
        """Feed one frame; return the persons newly counted by it."""
        return self.step(ts_ms, dets).persons

    def step(self, ts_ms: int, dets: tuple[Detection, ...]) -> TrackStep:
        """Feed one frame; return the persons newly counted by it and which track each detection belongs to."""
        if ts_ms < self.last_ts:
            return TrackStep(Counts())  # out-of-order frame: counted per frame, not tracked
        self.last_ts = ts_ms
        self.tracks = [t for t in self.tracks if ts_ms - t.last_ms <= self.ttl_ms]
        pairs = sorted(
            ((iou(t.box, d.box), ti, di) for ti, t in enumerate(self.tracks) for di, d in enumerate(dets)),
            reverse=True,
        )
        used_d: set[int] = set()
        used_t: set[int] = set()
        seen: list[tuple[Track, Detection]] = []
        for score, ti, di in pairs:
            if score < self.min_iou:
                break
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            t = self.tracks[ti]
            t.box, t.last_ms = dets[di].box, ts_ms
            t.votes[dets[di].label] += 1
            t.hits += 1
            seen.append((t, dets[di]))
        for di, d in enumerate(dets):
            if di not in used_d:
                t = Track(box=d.box, last_ms=ts_ms, votes=Counter({d.label: 1}), hits=1)
                self.tracks.append(t)
                seen.append((t, d))
        out: dict[str, int] = {}
        for t in self.tracks:
            if not t.counted and t.hits >= self.min_hits:
                t.counted = True
                label = t.votes.most_common(1)[0][0]
                out["persons"] = out.get("persons", 0) + 1
                out[PERSON_FIELD[label]] = out.get(PERSON_FIELD[label], 0) + 1
        return TrackStep(Counts(**out), tuple(seen))  # type: ignore[arg-type]


class Trackers:
    """One tracker per camera, created on first sight."""

    def __init__(self, **kw: float) -> None:
        self.kw = kw
        self.by_camera: dict[str, CameraTracker] = {}

    def update(self, camera: str, ts_ms: int, dets: tuple[Detection, ...]) -> Counts:
        return self.step(camera, ts_ms, dets).persons

    def step(self, camera: str, ts_ms: int, dets: tuple[Detection, ...]) -> TrackStep:
        tr = self.by_camera.get(camera)
        if tr is None:
            tr = self.by_camera[camera] = CameraTracker(**self.kw)  # type: ignore[arg-type]
        return tr.step(ts_ms, dets)
