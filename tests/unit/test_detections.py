"""Contract 2 answers parsed into Detections, and the compliance arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from maskwatch.detections import Counts, ModelOutputError, parse_outputs


def outputs(n: int = 2, k: int = 3, num: list[int] | None = None, classes: list[list[float]] | None = None) -> dict[str, np.ndarray]:
    boxes = np.tile(np.array([0.1, 0.2, 0.5, 0.6], np.float32), (n, k, 1))
    scores = np.full((n, k), 0.9, np.float32)
    cls = np.array(classes if classes is not None else [[1, 2, 3]] * n, np.float32)
    return {
        "detection_boxes": boxes,
        "detection_scores": scores,
        "detection_classes": cls,
        "num_detections": np.array(num if num is not None else [3] * n, np.float32),
    }


def test_parse_splits_per_image_and_counts() -> None:
    dets = parse_outputs(outputs(num=[3, 1]), 2)
    assert [len(d) for d in dets] == [3, 1]
    c = dets[0].counts()
    assert (c.frames, c.faces, c.with_mask, c.without_mask, c.mask_worn_incorrectly) == (1, 3, 1, 1, 1)
    assert dets[1].counts().with_mask == 1
    assert dets[0].items[0].box == pytest.approx((0.1, 0.2, 0.5, 0.6))


def test_per_class_scores_travel_with_each_face_when_the_model_gives_them() -> None:
    out = outputs(num=[2, 0])
    out["detection_multiclass_scores"] = np.tile(np.array([0.1, 0.6, 0.2, 0.1], np.float32), (2, 3, 1))
    dets = parse_outputs(out, 2)
    assert dets[0].items[1].class_scores == pytest.approx((0.6, 0.2, 0.1))
    assert parse_outputs(outputs(), 2)[0].items[0].class_scores is None
    out["detection_multiclass_scores"] = out["detection_multiclass_scores"][..., :3]  # no background column
    with pytest.raises(ModelOutputError, match="detection_multiclass_scores shape"):
        parse_outputs(out, 2)


def test_empty_image() -> None:
    d = parse_outputs(outputs(n=1, num=[0], classes=[[0, 0, 0]]), 1)[0]
    assert len(d) == 0 and d.counts().faces == 0 and d.counts().frames == 1


@pytest.mark.parametrize(
    ("out", "batch", "match"),
    [
        ({k: v for k, v in outputs().items() if k != "num_detections"}, 2, "missing"),
        (outputs(), 3, "shape"),
        (outputs(num=[4, 0]), 2, "outside"),
        (outputs(classes=[[1, 7, 1], [1, 1, 1]]), 2, "class id"),
        ({**outputs(), "detection_scores": np.zeros((2, 2), np.float32)}, 2, "shapes"),
    ],
)
def test_malformed(out: dict[str, np.ndarray], batch: int, match: str) -> None:
    with pytest.raises(ModelOutputError, match=match):
        parse_outputs(out, batch)


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
