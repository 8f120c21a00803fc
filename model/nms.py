"""The detector's DetectionOutput in numpy, row for row as the TensorFlow graph computes it (model.ssd.detection_output:
decode, `tf.math.top_k`, `tf.image.combined_non_max_suppression`), so that the OpenVINO runtime needs no TensorFlow.

Equal scores are common (many candidates score exactly 1.0 in float32), and which of two equal candidates NMS keeps
decides which of two neighbouring anchors becomes the face. TensorFlow's CPU kernel pushes the candidates, in
`top_k`'s order (a stable sort), into a `std::priority_queue` ordered by score alone and pops them as libstdc++'s
heap does; `_pop_order` replays that heap, and `_iou` is TensorFlow's IOU term by term in float32 (EXPERIMENTS.md:
the same rows on all 620 images of the data set; popping equal scores in index order differed on 17).
"""

from __future__ import annotations

import numpy as np


def decode_boxes(loc: np.ndarray, priors: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """SSD CENTER_SIZE decoding as model.ssd.decode_boxes: loc [..., P, 4] against priors [P, 4] (xmin, ymin, xmax,
    ymax) to [..., P, 4] (xmin, ymin, xmax, ymax), float32, the same operations in the same order."""
    two = np.float32(2.0)
    pw = priors[:, 2] - priors[:, 0]
    ph = priors[:, 3] - priors[:, 1]
    pcx = (priors[:, 0] + priors[:, 2]) / two
    pcy = (priors[:, 1] + priors[:, 3]) / two
    cx = variances[:, 0] * loc[..., 0] * pw + pcx
    cy = variances[:, 1] * loc[..., 1] * ph + pcy
    half_w = np.exp(variances[:, 2] * loc[..., 2]) * pw / two
    half_h = np.exp(variances[:, 3] * loc[..., 3]) * ph / two
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1).astype(np.float32, copy=False)


def _sift_up(heap: list[int], scores: list[float], hole: int, value: int) -> None:
    """libstdc++'s __push_heap: put `value` at `hole`, moving it up past every parent that scores lower."""
    while hole > 0:
        parent = (hole - 1) // 2
        if not scores[heap[parent]] < scores[value]:
            break
        heap[hole] = heap[parent]
        hole = parent
    heap[hole] = value


def _pop_order(scores: list[float]) -> list[int]:
    """The order in which a libstdc++ `std::priority_queue` (max-heap by score alone) pops positions 0..n-1 pushed
    in that order (push_heap; pop_heap's __adjust_heap takes the right child unless it scores lower than the left)."""
    heap: list[int] = []
    for i in range(len(scores)):
        heap.append(i)
        _sift_up(heap, scores, len(heap) - 1, i)
    order = []
    while heap:
        order.append(heap[0])
        value = heap.pop()  # pop_heap: the last element fills the hole the top leaves
        n = len(heap)
        if n == 0:
            break
        hole, child = 0, 0
        while child < (n - 1) // 2:
            child = 2 * (child + 1)
            if scores[heap[child]] < scores[heap[child - 1]]:
                child -= 1
            heap[hole] = heap[child]
            hole = child
        if n % 2 == 0 and child == (n - 2) // 2:
            child = 2 * (child + 1)
            heap[hole] = heap[child - 1]
            hole = child - 1
        _sift_up(heap, scores, hole, value)
    return order


def _iou(lo: np.ndarray, hi: np.ndarray, area: np.ndarray, i: int) -> np.ndarray:
    """TensorFlow's IOU (non_max_suppression_op.cc) of box i with every box, float32 term by term, from the boxes'
    corners (lo: min, hi: max of each coordinate pair) and areas (_corners)."""
    zero = np.float32(0.0)
    inter_lo, inter_hi = np.maximum(lo[i], lo), np.minimum(hi[i], hi)
    inter = np.maximum(inter_hi[:, 0] - inter_lo[:, 0], zero) * np.maximum(inter_hi[:, 1] - inter_lo[:, 1], zero)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area[i] + area - inter)
    return np.where((area[i] <= 0) | (area <= 0), zero, iou)


def _corners(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each box's (min, max) corners and area as TensorFlow's IOU takes them (either corner order)."""
    lo, hi = np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])
    return lo, hi, (hi[:, 0] - lo[:, 0]) * (hi[:, 1] - lo[:, 1])


def nms(boxes: np.ndarray, scores: np.ndarray, max_out: int, iou_threshold: float, score_threshold: float) -> list[int]:
    """Positions of the boxes [N, 4] kept, best first, as TensorFlow's combined NMS keeps them for one class: a
    candidate scoring above `score_threshold` is kept unless its IoU with a face kept before it is above the
    threshold (IoU is symmetric, so suppressing by each kept face is the same test)."""
    candidates = np.flatnonzero(scores > np.float32(score_threshold))
    if not len(candidates):
        return []
    lo, hi, area = _corners(boxes[candidates])
    alive = np.ones(len(candidates), bool)
    threshold = np.float32(iou_threshold)
    kept: list[int] = []
    for j in _pop_order(scores[candidates].tolist()):
        if len(kept) == max_out:
            break
        if not alive[j]:
            continue
        kept.append(int(candidates[j]))
        alive &= ~(_iou(lo, hi, area, j) > threshold)
    return kept


def detection_output(
    loc: np.ndarray,
    conf: np.ndarray,
    priors: np.ndarray,
    variances: np.ndarray,
    top_k: int,
    keep_top_k: int,
    nms_threshold: float,
    confidence_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """loc [N, P*4] and softmaxed conf [N, P*2] to boxes [N, keep, 4] (xmin, ymin, xmax, ymax) and scores [N, keep],
    best first, zeros past the faces kept: model.ssd.detection_output's boxes and scores."""
    n, p = len(loc), len(priors)
    loc = loc.reshape(n, p, 4)
    scores = conf.reshape(n, p, 2)[..., 1]
    k, keep = min(top_k, p), min(keep_top_k, top_k, p)
    out_boxes = np.zeros((n, keep, 4), np.float32)
    out_scores = np.zeros((n, keep), np.float32)
    for b in range(n):
        top = np.argsort(-scores[b], kind="stable")[:k]  # tf.math.top_k: equal scores lower index first
        # decoding is per prior, so decoding only the top k gives the graph's values for them
        boxes, top_scores = decode_boxes(loc[b, top], priors[top], variances[top]), scores[b, top]
        kept = nms(boxes, top_scores, keep, nms_threshold, confidence_threshold)
        out_boxes[b, : len(kept)] = boxes[kept]
        out_scores[b, : len(kept)] = top_scores[kept]
    return out_boxes, out_scores
