"""Frames lost between producer and worker, from gaps in each camera's `mw-seq` (pure: no Redis)."""

from __future__ import annotations

import pytest

from maskwatch.store import BatchWrite, Seen, SeqSpan, seq_losses

A1, A2 = ("frames.60", 0), ("frames.120", 0)  # two bucket topics, the second newer
FIX = ("frames", 3)


def _batch(*frames: tuple[tuple[str, int], str, str, int]) -> BatchWrite:
    b = BatchWrite()
    for tp, cid, run, seq in frames:
        b.see(tp, cid, run, seq, 1_000 * seq)
    return b


@pytest.mark.parametrize(
    ("frames", "state", "lost", "next_seq"),
    [
        # no state yet: nothing before the first frame can be judged lost
        ([(FIX, "c", "r", 5), (FIX, "c", "r", 6)], {}, {}, 7),
        # a gap inside the batch
        ([(FIX, "c", "r", 5), (FIX, "c", "r", 9)], {}, {(FIX, "c"): 3}, 10),
        # a gap before the batch, same topic and run (a broker restart lost frames 7..11)
        ([(FIX, "c", "r", 12)], {"topic": "frames", "run": "r", "next": "7"}, {(FIX, "c"): 5}, 13),
        # the producer restarted: a new run starts afresh, no gap
        ([(FIX, "c", "r2", 0)], {"topic": "frames", "run": "r", "next": "40"}, {}, 1),
        # a newer bucket topic: the boundary is not a gap (the older bucket's tail may still come)
        ([(A2, "c", "r", 50)], {"topic": "frames.60", "run": "r", "next": "41"}, {}, 51),
        # an older bucket's tail after the newer one's head: counted, no gap, the state stays on the newer
        ([(A1, "c", "r", 45)], {"topic": "frames.120", "run": "r", "next": "51"}, {}, 51),
        # both buckets in one batch: each judged in bucket order, the state ends on the newer
        ([(A1, "c", "r", 41), (A2, "c", "r", 44), (A1, "c", "r", 43)], {"topic": "frames.60", "run": "r", "next": "41"}, {(A1, "c"): 1}, 45),
    ],
)
def test_gaps_in_mw_seq_are_lost_frames(
    frames: list[tuple[tuple[str, int], str, str, int]], state: dict[str, str], lost: dict[tuple[tuple[str, int], str], int], next_seq: int
) -> None:
    b = _batch(*frames)
    got, new = seq_losses(b.seqs, {"c": state} if state else {})
    assert got == lost
    assert int(new.get("c", state)["next"]) == next_seq


def test_a_span_keeps_its_first_seq_and_capture_time() -> None:
    span = SeqSpan("r", 3, 3, 3_000)
    span.see("r", 4)
    span.see("r", 8)
    assert (span.first, span.last, span.gaps, span.ts_ms) == (3, 8, 3, 3_000)


@pytest.mark.parametrize(
    ("before", "frames", "first_times", "after"),
    [
        # nothing read yet: every frame is new
        ({}, [("c", "r", 0), ("c", "r", 1)], [True, True], {"c": ("r", 2)}),
        # a retry's copy right behind the original, then the next frame
        ({}, [("c", "r", 0), ("c", "r", 1), ("c", "r", 1), ("c", "r", 2)], [True, True, False, True], {"c": ("r", 3)}),
        # copies of frames an earlier batch read (the state stored with the offsets)
        ({"c": ("r", 10)}, [("c", "r", 8), ("c", "r", 9), ("c", "r", 10)], [False, False, True], {"c": ("r", 11)}),
        # a gap is not a copy: the frames after it are new (the gap is counted lost elsewhere)
        ({"c": ("r", 10)}, [("c", "r", 15)], [True], {"c": ("r", 16)}),
        # a new producer run starts again at 0: new frames, not copies
        ({"c": ("r", 10)}, [("c", "r2", 0), ("c", "r2", 1)], [True, True], {"c": ("r2", 2)}),
        # cameras are apart
        ({"c": ("r", 10)}, [("d", "r", 3), ("c", "r", 3)], [True, False], {"c": ("r", 10), "d": ("r", 4)}),
    ],
)
def test_a_copy_is_a_frame_already_read_in_the_same_run(
    before: dict[str, tuple[str, int]],
    frames: list[tuple[str, str, int]],
    first_times: list[bool],
    after: dict[str, tuple[str, int]],
) -> None:
    seen = Seen(dict(before))
    assert [seen.first_time(cid, run, seq) for cid, run, seq in frames] == first_times
    assert seen.by_camera == after
    changed = seen.take_changes()
    assert changed == {cid: after[cid] for cid in changed} and set(changed) == {c for (c, _, _), new in zip(frames, first_times, strict=True) if new}
    assert seen.take_changes() == {}
