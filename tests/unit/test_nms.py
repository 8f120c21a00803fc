"""model.nms against the TensorFlow ops it stands in for (model.ssd.detection_output: tf.math.top_k and
tf.image.combined_non_max_suppression): the same faces kept, also where many candidates score the same."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from model import nms
from model.caffe import DetectionParams
from model.ssd import detection_output


def candidates(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clustered around a few faces, as an SSD proposes them, with scores from a handful of values, so that
    most candidates tie with others (the detector scores many exactly 1.0)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, (8, 2))
    sizes = rng.uniform(0.02, 0.2, 8)
    face = rng.integers(0, 8, n)
    cx, cy = (centres[face] + rng.normal(0, 0.01, (n, 2))).T
    half = sizes[face] * rng.uniform(0.8, 1.2, n) / 2
    boxes = np.stack([cx - half, cy - half, cx + half, cy + half], axis=1).astype(np.float32)
    scores = rng.choice(np.array([1.0, 0.99, 0.7, 0.3, 0.06, 0.01], np.float32), n)
    return boxes, scores


def tf_nms(boxes: np.ndarray, scores: np.ndarray, keep: int, iou: float, min_score: float) -> np.ndarray:
    out = tf.image.combined_non_max_suppression(
        boxes[np.newaxis, :, np.newaxis], scores[np.newaxis, :, np.newaxis], keep, keep, iou, min_score,
        pad_per_class=False, clip_boxes=False,
    )
    return out.nmsed_boxes.numpy()[0][: int(out.valid_detections.numpy()[0])]


@pytest.mark.parametrize("seed", range(20))
def test_nms_keeps_the_candidates_tensorflow_keeps_among_equal_scores(seed: int) -> None:
    boxes, scores = candidates(seed)
    order = np.argsort(-scores, kind="stable")  # as top_k hands them over
    boxes, scores = boxes[order], scores[order]
    kept = nms.nms(boxes, scores, 200, 0.4, 0.05)
    expected = tf_nms(boxes, scores, 200, 0.4, 0.05)
    assert len(kept) == len(expected)
    # the same boxes, best first (TensorFlow sorts equal scores in no defined order: compared as sets of rows)
    assert np.array_equal(np.sort(scores[kept])[::-1], scores[kept])
    rows = lambda b: b[np.lexsort(b.T[::-1])]  # noqa: E731
    assert np.array_equal(rows(boxes[kept]), rows(expected))


def test_nms_in_index_order_would_keep_other_boxes() -> None:
    """What the heap's order is for: popping equal scores lowest index first keeps other anchors on these inputs."""
    differs = 0
    for seed in range(20):
        boxes, scores = candidates(seed)
        order = np.argsort(-scores, kind="stable")
        boxes, scores = boxes[order], scores[order]
        alive, kept, corners = np.ones(len(boxes), bool), [], nms._corners(boxes)
        for j in range(len(boxes)):  # the same NMS, equal scores popped in index order
            if alive[j] and scores[j] > np.float32(0.05) and len(kept) < 200:
                kept.append(j)
                alive &= ~(nms._iou(*corners, j) > np.float32(0.4))
        differs += not np.array_equal(np.sort(np.array(kept)), np.sort(np.array(nms.nms(boxes, scores, 200, 0.4, 0.05))))
    assert differs > 0


@pytest.mark.parametrize("seed", range(3))
def test_detection_output_rows_are_the_graphs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = 500
    centres = rng.uniform(0, 1, (p, 2)).astype(np.float32)
    priors = np.concatenate([centres - 0.05, centres + 0.05], axis=1).astype(np.float32)
    variances = np.tile(np.array([0.1, 0.1, 0.2, 0.2], np.float32), (p, 1))
    loc = rng.normal(0, 1, (2, p * 4)).astype(np.float32)
    face = rng.choice(np.array([1.0, 0.8, 0.5, 0.02], np.float32), (2, p))
    conf = np.stack([1 - face, face], axis=-1).reshape(2, p * 2).astype(np.float32)
    params = DetectionParams(
        num_classes=2, background_label_id=0, nms_threshold=0.4, top_k=400, keep_top_k=200, confidence_threshold=0.05
    )
    caffe_priors = np.stack([priors.reshape(-1), variances.reshape(-1)])[np.newaxis]
    want_boxes, want_scores, _ = detection_output(tf.constant(loc), tf.constant(conf), caffe_priors, params)
    boxes, scores = nms.detection_output(loc, conf, priors, variances, 400, 200, 0.4, 0.05)
    assert boxes.shape == tuple(want_boxes.shape) and scores.shape == tuple(want_scores.shape)
    for b in range(2):
        got = np.concatenate([boxes[b], scores[b, :, None]], axis=1)
        want = np.concatenate([want_boxes.numpy()[b], want_scores.numpy()[b, :, None]], axis=1)
        rows = lambda r: r[np.lexsort(r.T[::-1])]  # noqa: E731
        np.testing.assert_allclose(rows(got), rows(want), rtol=0, atol=1e-6)  # exp may differ in its last bit
