"""Counts: the compliance arithmetic, adding, round trips, faces by width."""

from __future__ import annotations

import pytest

from maskwatch.detections import Counts


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (Counts(with_mask=3, without_mask=1), 0.75),
        (Counts(with_mask=1, mask_worn_incorrectly=1), 0.5),
        (Counts(frames=10), None),
        (Counts(without_mask=2), 0.0),
    ],
)
def test_compliance(counts: Counts, expected: float | None) -> None:
    assert counts.compliance == expected


def test_counts_add_and_round_trip() -> None:
    a = Counts(frames=1, faces=2, with_mask=2)
    b = Counts(frames=1, invalid=1, dropped_stale=2)
    s = a + b
    d = s.as_dict()
    assert {k: d[k] for k in ("frames", "faces", "with_mask", "without_mask", "mask_worn_incorrectly", "invalid", "dropped_stale")} == {
        "frames": 2, "faces": 2, "with_mask": 2, "without_mask": 0, "mask_worn_incorrectly": 0, "invalid": 1, "dropped_stale": 2
    }
    assert set(d) >= {"persons", "persons_with_mask", "faces_lt16", "faces_ge64"} and d["persons"] == 0
    assert Counts.from_mapping({k: str(v).encode() for k, v in s.as_dict().items()}) == s
    with pytest.raises(ValueError):
        Counts(frames=-1)


@pytest.mark.parametrize(("w", "bucket"), [(0, "faces_lt16"), (15.9, "faces_lt16"), (16, "faces_16_32"), (31, "faces_16_32"), (32, "faces_32_64"), (64, "faces_ge64"), (4000, "faces_ge64")])
def test_width_bucket(w: float, bucket: str) -> None:
    from maskwatch.detections import width_bucket

    assert width_bucket(w) == bucket


def test_small_face_share() -> None:
    assert Counts().small_face_share is None
    assert Counts(faces_lt16=1, faces_16_32=2, faces_ge64=1).small_face_share == 0.25  # 16-32 px faces are found
    assert Counts(faces_lt16=3, faces_32_64=1).small_face_share == 0.75
