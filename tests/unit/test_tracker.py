"""Unique-person counting: one person per track, verdict by vote, tracks end after the TTL."""

from __future__ import annotations

import pytest

from maskwatch.detections import WITH_MASK, WITHOUT_MASK, Detection
from worker.tracker import CameraTracker, iou

A = (0.1, 0.1, 0.3, 0.3)
A_MOVED = (0.11, 0.12, 0.31, 0.32)
B = (0.5, 0.5, 0.8, 0.7)


def det(box: tuple[float, float, float, float], label: str = WITH_MASK) -> Detection:
    return Detection(box=box, score=0.9, label=label)


@pytest.mark.parametrize(("a", "b", "expected"), [(A, A, 1.0), (A, B, 0.0), ((0, 0, 1, 1), (0, 0, 0.5, 1), 0.5)])
def test_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float], expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)


def test_one_person_per_track_after_min_hits() -> None:
    t = CameraTracker(min_hits=3)
    assert t.update(0, (det(A),)).persons == 0
    assert t.update(200, (det(A_MOVED),)).persons == 0
    c = t.update(400, (det(A),))
    assert (c.persons, c.persons_with_mask) == (1, 1)
    assert t.update(600, (det(A),)).persons == 0  # same person is not counted again


def test_verdict_by_vote() -> None:
    t = CameraTracker(min_hits=3)
    t.update(0, (det(A, WITHOUT_MASK),))
    t.update(100, (det(A, WITHOUT_MASK),))
    c = t.update(200, (det(A, WITH_MASK),))
    assert (c.persons, c.persons_without_mask, c.persons_with_mask) == (1, 1, 0)


def test_two_people_and_ttl() -> None:
    t = CameraTracker(min_hits=2, ttl_ms=1000)
    t.update(0, (det(A), det(B, WITHOUT_MASK)))
    c = t.update(100, (det(A), det(B, WITHOUT_MASK)))
    assert (c.persons, c.persons_with_mask, c.persons_without_mask) == (2, 1, 1)
    # A leaves for longer than the TTL, then someone appears at the same place: a new person
    t.update(2000, (det(B, WITHOUT_MASK),))
    t.update(2100, (det(A), det(B, WITHOUT_MASK)))
    c = t.update(2200, (det(A), det(B, WITHOUT_MASK)))
    assert (c.persons, c.persons_with_mask) == (1, 1)


def test_out_of_order_frame_is_ignored() -> None:
    t = CameraTracker(min_hits=1)
    assert t.update(1000, (det(A),)).persons == 1
    assert t.update(500, (det(B),)).persons == 0
