"""Violation episodes: the vote that opens one, one episode per person, the grace that closes it, the best snapshot."""

from __future__ import annotations

import pytest

from maskwatch.detections import INCORRECT, WITH_MASK, WITHOUT_MASK, Detection
from maskwatch.store import EPISODE_CLOSED, EPISODE_OPEN, Episode, episode_row
from worker.episodes import Announcer, EpisodeBook, EpisodeBooks, face_quality, verdict
from worker.tracker import CameraTracker

A = (0.10, 0.10, 0.30, 0.30)
B = (0.50, 0.55, 0.80, 0.75)


def det(box: tuple[float, float, float, float], label: str = WITHOUT_MASK, score: float = 0.9) -> Detection:
    return Detection(box=box, score=score, label=label)


@pytest.mark.parametrize(
    ("votes", "min_frames", "expected"),
    [
        ({WITHOUT_MASK: 3}, 3, WITHOUT_MASK),
        ({WITHOUT_MASK: 2}, 3, None),  # too few frames to judge
        ({WITH_MASK: 5}, 3, None),
        ({WITHOUT_MASK: 2, WITH_MASK: 2}, 3, None),  # no majority: not a violation
        ({WITHOUT_MASK: 2, WITH_MASK: 1}, 3, WITHOUT_MASK),
        ({INCORRECT: 3, WITHOUT_MASK: 1}, 3, INCORRECT),
        ({INCORRECT: 2, WITHOUT_MASK: 2}, 3, WITHOUT_MASK),  # a tie names the stricter finding
        ({INCORRECT: 2, WITHOUT_MASK: 1, WITH_MASK: 2}, 5, INCORRECT),
        ({}, 1, None),
    ],
)
def test_verdict(votes: dict[str, int], min_frames: int, expected: str | None) -> None:
    assert verdict(votes, min_frames) == expected


@pytest.mark.parametrize(
    ("area", "sharpness", "expected"),
    [(100.0, 1000.0, 100.0), (100.0, 50.0, 50.0), (100.0, 0.0, 0.0), (0.0, 500.0, 0.0), (100.0, -1.0, 0.0)],
)
def test_face_quality_is_area_weighed_down_by_blur(area: float, sharpness: float, expected: float) -> None:
    assert face_quality(area, sharpness) == pytest.approx(expected)


def run(frames: list[tuple[int, tuple[Detection, ...]]], min_frames: int = 3, grace_ms: int = 1000) -> list[Episode]:
    """Feed frames through a tracker and a book the way the worker does; return every state drained."""
    tracker = CameraTracker(min_hits=3, ttl_ms=grace_ms)
    book = EpisodeBook("cam", min_frames, grace_ms)
    out: list[Episode] = []
    for ts, dets in frames:
        for c in book.observe(ts, tracker.step(ts, dets).seen, 640, 480):
            book.offer(c, c.area_px, b"jpeg")
        out.extend(book.drain())
    return out


def final(states: list[Episode]) -> dict[str, Episode]:
    last: dict[str, Episode] = {}
    for e in states:
        last[e.id] = e
    return last


def test_two_people_who_stay_are_two_episodes() -> None:
    frames = [(t * 200, (det(A), det(B))) for t in range(300)]  # 60 s at 5 fps
    eps = final(run(frames))
    assert len(eps) == 2
    assert {e.state for e in eps.values()} == {EPISODE_OPEN}
    assert {e.first_ms for e in eps.values()} == {0}
    assert {e.last_ms for e in eps.values()} == {299 * 200}
    assert all(e.frames == 300 for e in eps.values())


def test_episode_closes_after_the_grace_and_a_return_is_a_new_one() -> None:
    frames = [(t * 200, (det(A),)) for t in range(10)] + [(5000 + t * 200, (det(A),)) for t in range(10)]
    states = run(frames, grace_ms=1000)
    eps = final(states)
    assert len(eps) == 2
    first, second = sorted(eps.values(), key=lambda e: e.first_ms)
    assert first.state == EPISODE_CLOSED and (first.first_ms, first.last_ms) == (0, 1800)
    assert second.state == EPISODE_OPEN and second.first_ms == 5000


def test_a_gap_shorter_than_the_grace_stays_one_episode() -> None:
    frames = [(t * 200, (det(A),)) for t in range(10)] + [(2600 + t * 200, (det(A),)) for t in range(10)]
    eps = final(run(frames, grace_ms=1000))
    assert len(eps) == 1 and next(iter(eps.values())).last_ms == 2600 + 1800


def test_no_episode_until_the_vote_covers_min_frames_and_none_for_a_masked_person() -> None:
    assert run([(t * 200, (det(A),)) for t in range(4)], min_frames=5) == []
    assert run([(t * 200, (det(A, WITH_MASK),)) for t in range(20)]) == []
    eps = run([(t * 200, (det(A),)) for t in range(5)], min_frames=5)
    assert len(final(eps)) == 1 and eps[0].first_ms == 0  # first seen is the track's first frame


def test_the_best_snapshot_is_the_largest_sharpest_face() -> None:
    tracker = CameraTracker(min_hits=1, ttl_ms=1000)
    book = EpisodeBook("cam", 1, 1000)
    small, large = (0.1, 0.1, 0.3, 0.3), (0.09, 0.09, 0.33, 0.33)
    snaps: list[Episode] = []
    for ts, box, sharp in [(0, small, 200.0), (200, large, 20.0), (400, large, 200.0), (600, small, 500.0)]:
        for c in book.observe(ts, tracker.step(ts, (det(box),)).seen, 640, 480):
            book.offer(c, face_quality(c.area_px, sharp), f"crop@{ts}".encode())
        snaps.extend(e for e in book.drain() if e.snapshot is not None)
    # the large blurred face loses to the small sharp one; the large sharp one wins; nothing beats it after
    assert [(e.snapshot, e.snapshot_ms) for e in snaps] == [(b"crop@0", 0), (b"crop@400", 400)]


def test_idle_cameras_close_their_episodes() -> None:
    books = EpisodeBooks(min_frames=1, grace_ms=1000)
    tracker = CameraTracker(min_hits=1, ttl_ms=1000)
    book = books.book("cam")
    book.observe(0, tracker.step(0, (det(A),)).seen, 640, 480)
    assert [e.state for e in book.drain()] == [EPISODE_OPEN]
    assert books.expire_idle(900) == []
    closed = books.expire_idle(1500)
    assert [(e.state, e.last_ms) for e in closed] == [(EPISODE_CLOSED, 0)]
    assert book.drain() == []


def test_stored_fields_read_back_and_an_orphan_shows_closed() -> None:
    ep = Episode("cam", "0-1000-1000", WITHOUT_MASK, ((WITHOUT_MASK, 4),), 1000, 5000, A, 0.9, EPISODE_OPEN, 2000, 3000)
    fields = {k: str(v) for k, v in ep.to_fields().items()}
    row = episode_row(fields, "mw:snap:cam:0-1000-1000", now_ms=6000)
    assert row["state"] == "open" and row["duration_s"] == 4.0 and row["votes"] == {WITHOUT_MASK: 4}
    assert row["snapshot"] == "mw:snap:cam:0-1000-1000" and row["snapshot_ms"] == 3000
    assert episode_row(fields, "", now_ms=5000 + 2000 + 61_000)["state"] == "closed"


@pytest.mark.parametrize(
    ("kw", "error"),
    [({"state": "maybe"}, "bad episode state"), ({"last_ms": 0}, "ends before it starts")],
)
def test_episode_rejects_nonsense(kw: dict[str, object], error: str) -> None:
    base: dict[str, object] = {
        "camera_id": "cam", "id": "e", "label": WITHOUT_MASK, "votes": (), "first_ms": 10, "last_ms": 20,
        "box": A, "score": 0.5, "state": EPISODE_OPEN, "grace_ms": 1000,
    }  # fmt: skip
    with pytest.raises(ValueError, match=error):
        Episode(**{**base, **kw})  # type: ignore[arg-type]


def test_live_notices_on_open_better_snapshot_close_and_every_few_seconds_between() -> None:
    def ep(last_ms: int, state: str = EPISODE_OPEN, snap: bytes | None = None) -> Episode:
        return Episode("cam", "e1", WITHOUT_MASK, ((WITHOUT_MASK, 5),), 0, last_ms, A, 0.9, state, 1000, None, snap)

    a = Announcer(every_ms=5000)
    states = [ep(0), ep(1000), ep(4999), ep(5000), ep(6000, snap=b"jpeg"), ep(7000), ep(12_000), ep(12_500, EPISODE_CLOSED)]
    assert [(e.last_ms, e.state) for e in a.select(states)] == [
        (0, "open"), (5000, "open"), (6000, "open"), (12_000, "open"), (12_500, "closed"),
    ]  # fmt: skip
    assert a.last == {}  # nothing kept for a closed episode


def stored_open(box: tuple[float, float, float, float], last_ms: int, quality: float = 0.0) -> Episode:
    return Episode("cam", f"0-{int(box[0] * 1e4)}-{int(box[1] * 1e4)}", WITHOUT_MASK, ((WITHOUT_MASK, 40),), 0, last_ms,
                   box, 0.9, EPISODE_OPEN, 1000, 100 if quality else None, None, quality)  # fmt: skip


def resumed(stored: list[Episode], frames: list[tuple[int, tuple[Detection, ...]]]) -> list[Episode]:
    """A worker taking a camera over: its book resumes what was stored open, then sees the next frames."""
    tracker = CameraTracker(min_hits=3, ttl_ms=1000)
    book = EpisodeBook("cam", 3, 1000)
    book.resume(stored)
    out: list[Episode] = []
    for ts, dets in frames:
        for c in book.observe(ts, tracker.step(ts, dets).seen, 640, 480):
            book.offer(c, c.area_px, b"jpeg")
        out.extend(book.drain())
    return out


def test_a_worker_taking_over_continues_the_episode_of_a_person_still_in_view() -> None:
    before = stored_open(A, last_ms=8000)
    eps = final(resumed([before], [(8200 + t * 200, (det(A),)) for t in range(10)]))
    assert list(eps) == [before.id]  # the same episode, not a second one
    ep = eps[before.id]
    assert (ep.first_ms, ep.last_ms, ep.state) == (0, 8200 + 9 * 200, EPISODE_OPEN)
    assert dict(ep.votes) == {WITHOUT_MASK: 50}  # 40 stored + 10 seen since


def test_a_stored_episode_nobody_continues_closes_and_elsewhere_is_someone_new() -> None:
    before = stored_open(A, last_ms=8000)
    eps = final(resumed([before], [(8200 + t * 200, (det(B),)) for t in range(10)]))
    assert eps[before.id].state == EPISODE_CLOSED and eps[before.id].last_ms == 8000
    (new,) = [e for e in eps.values() if e.id != before.id]
    assert new.state == EPISODE_OPEN and new.first_ms == 8200
    # one stored long ago is closed at once, and the person at its place now is a new episode
    old = stored_open(A, last_ms=1000)
    eps = final(resumed([old], [(8200 + t * 200, (det(A),)) for t in range(5)]))
    assert eps[old.id].state == EPISODE_CLOSED and len(eps) == 2


def test_a_taken_over_episode_keeps_its_better_snapshot() -> None:
    before = stored_open(A, last_ms=8000, quality=1e9)
    states = resumed([before], [(8200 + t * 200, (det(A),)) for t in range(5)])
    assert all(e.snapshot is None and e.snapshot_ms == 100 for e in states)
