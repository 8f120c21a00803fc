"""Per-class operating points: the face score a face must reach to be counted in each class, and weights on the
classifier's class probabilities before its top class is taken, fitted so that what the worker counts matches the
annotated faces class by class (the count bias behind the operator's compliance error).

A fit is measured by nested cross-validation: for each held-out fold the points are fitted on the other folds'
held-out detections only and applied to the fold, so every figure comes from images no choice was made on.

Applied to a model's rows, the points keep Contract 2 as it is: a face's class becomes its top class after the
weights, and its score is mapped, per class and monotonically, so that the class's minimum score lands on the one
operating point consumers count at (`MW_MIN_SCORE`, 0.5): the worker counts per class without knowing the points."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from maskwatch.detections import DEFAULT_MIN_SCORE
from training.eval.compliance import DEFAULT_DRAWS, DEFAULT_SEED
from training.eval.metrics import CLASSES, Predicted, Truth

_MASKED = CLASSES.index("with_mask")
GROUP_SIZE = 20  # the fit lowers the compliance error over groups of this many images (the yardstick)
MIN_SCORE_GRID = tuple(round(0.3 + 0.05 * i, 2) for i in range(9))  # 0.30 ... 0.70
WEIGHT_GRID = (0.75, 1.0, 1.5, 2.0, 3.0)  # for without_mask and worn incorrectly; with_mask keeps 1


@dataclass(frozen=True)
class OperatingPoints:
    """Per class (CLASSES order): the face score counted from, and the weight on the class's probability."""

    min_scores: tuple[float, ...] = (DEFAULT_MIN_SCORE,) * len(CLASSES)
    class_weights: tuple[float, ...] = (1.0,) * len(CLASSES)

    def __post_init__(self) -> None:
        if len(self.min_scores) != len(CLASSES) or len(self.class_weights) != len(CLASSES):
            raise ValueError(f"operating points need {len(CLASSES)} min scores and weights")
        if not all(0.0 < t < 1.0 for t in self.min_scores) or not all(w > 0 for w in self.class_weights):
            raise ValueError(f"min scores must be in (0, 1) and weights > 0: {self}")

    @property
    def is_identity(self) -> bool:
        return self == OperatingPoints()

    def apply(self, p: Predicted, at: float = DEFAULT_MIN_SCORE) -> Predicted:
        """`p` as the points count it: each face in its top class after the weights, its score mapped so that the
        class's min score becomes `at` (0 → 0, 1 → 1, linear between). Per-class scores are kept as they are."""
        if not len(p.labels):
            return p
        scores = np.asarray(p.scores, np.float64)
        labels = np.array([CLASSES.index(label) for label in p.labels])
        if p.class_scores is not None:
            probs = np.asarray(p.class_scores, np.float64) / np.maximum(scores, 1e-9)[:, None]
            labels = np.argmax(probs * np.asarray(self.class_weights), axis=1)
        t = np.asarray(self.min_scores)[labels]
        mapped = np.where(scores < t, at * scores / t, at + (1.0 - at) * (scores - t) / (1.0 - t))
        return Predicted(p.boxes, mapped, tuple(CLASSES[i] for i in labels), p.class_scores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_scores": dict(zip(CLASSES, self.min_scores, strict=True)),
            "class_weights": dict(zip(CLASSES, self.class_weights, strict=True)),
        }


def _true_counts(truths: Sequence[Truth]) -> np.ndarray:
    true = np.zeros((len(truths), len(CLASSES)))
    for i, t in enumerate(truths):
        for label in t.labels:
            true[i, CLASSES.index(label)] += 1
    return true


def _flatten(preds: Sequence[Predicted]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every detection of a set of images: its image index, face score and class probabilities [D,3]."""
    image, scores, probs = [np.zeros(0, np.int64)], [np.zeros(0)], [np.zeros((0, len(CLASSES)))]
    for i, p in enumerate(preds):
        if not len(p.labels):
            continue
        s = np.asarray(p.scores, np.float64)
        image.append(np.full(len(s), i))
        scores.append(s)
        if p.class_scores is not None:
            probs.append(np.asarray(p.class_scores, np.float64) / np.maximum(s, 1e-9)[:, None])
        else:  # no per-class scores: the row's class is all there is
            probs.append(np.eye(len(CLASSES))[[CLASSES.index(label) for label in p.labels]])
    return np.concatenate(image), np.concatenate(scores), np.concatenate(probs)


def fit(
    truths: Sequence[Truth],
    preds: Sequence[Predicted],
    min_scores: Sequence[float] = MIN_SCORE_GRID,
    weights: Sequence[float] = WEIGHT_GRID,
    group_size: int = GROUP_SIZE,
    draws: int = DEFAULT_DRAWS,
    seed: int = DEFAULT_SEED,
) -> OperatingPoints:
    """The points with the lowest mean compliance error over `draws` seeded groups of `group_size` of these images,
    searched over every min score of `min_scores` per class and every weight of `weights` on without_mask's and on
    worn incorrectly's probability (with_mask's stays 1); ties go to the points nearest the single operating point.
    A group in which the model counts no face but that has true faces counts as 100 points off."""
    if len(truths) != len(preds):
        raise ValueError(f"{len(truths)} truths for {len(preds)} predictions")
    size = min(group_size, len(truths))
    if size < 1:
        return OperatingPoints()
    rng = np.random.default_rng(seed)
    members = np.stack([rng.choice(len(truths), size, replace=False) for _ in range(draws)])
    matrix = np.zeros((draws, len(truths)))
    np.put_along_axis(matrix, members, 1.0, axis=1)
    true = matrix @ _true_counts(truths)
    has_truth = true.sum(axis=1) > 0
    matrix, true_share = matrix[has_truth], true[has_truth, _MASKED] / true[has_truth].sum(axis=1)
    image, scores, probs = _flatten(preds)
    t = np.asarray(min_scores, np.float64)
    classes = len(CLASSES)
    best: tuple[tuple[float, float], OperatingPoints] | None = None
    for w_bare, w_incorrect in itertools.product(weights, repeat=2):
        w = np.array([1.0, w_bare, w_incorrect])
        labels = np.argmax(probs * w, axis=1)
        # per image, the faces counted in each class from each min score [N, 3, T], then summed per group
        counted = np.zeros((len(truths), classes, len(t)))
        np.add.at(counted, (image, labels), (scores[:, None] >= t[None, :]).astype(np.float64))
        g = np.einsum("gn,nct->gct", matrix, counted)
        shown_total = g[:, 0, :, None, None] + g[:, 1, None, :, None] + g[:, 2, None, None, :]  # [G, T, T, T]
        masked = np.broadcast_to(g[:, _MASKED, :, None, None], shown_total.shape)
        shown = np.divide(masked, shown_total, out=np.full(shown_total.shape, np.nan), where=shown_total > 0)
        err = np.abs(shown - true_share[:, None, None, None]) * 100.0
        mean = np.where(np.isnan(err), 100.0, err).mean(axis=0) if len(err) else np.zeros((len(t),) * classes)
        for idx in itertools.product(range(len(t)), repeat=classes):
            points = (tuple(float(t[k]) for k in idx), (1.0, float(w_bare), float(w_incorrect)))
            key = (round(float(mean[idx]), 9), sum(abs(x - DEFAULT_MIN_SCORE) for x in points[0]) + float(np.abs(np.log(w)).sum()))
            if best is None or key < best[0]:
                best = (key, OperatingPoints(*points))
    assert best is not None
    return best[1]


@dataclass(frozen=True)
class NestedFit:
    """Per-class operating points measured by nested cross-validation: for each held-out fold the points fitted on
    the other folds, the fold's report as served and with its points, and the points fitted on every fold (the ones
    to ship: their figures are the nested ones)."""

    per_fold: tuple[OperatingPoints, ...]
    served: tuple[dict[str, Any], ...]  # each fold's report.json-shaped figures at the single operating point
    fitted: tuple[dict[str, Any], ...]  # the same with the fold's own points applied
    overall: OperatingPoints


def nested(
    folds: Sequence[tuple[Sequence[Truth], Sequence[Predicted]]],
    iou: float,
    min_scores: Sequence[float] = MIN_SCORE_GRID,
    weights: Sequence[float] = WEIGHT_GRID,
    draws: int = DEFAULT_DRAWS,
) -> NestedFit:
    """`folds`: each held-out fold's truths and detections (from the model trained without it)."""
    from training.eval.metrics import evaluate

    if len(folds) < 2:
        raise ValueError("nested cross-validation needs at least 2 folds")
    per_fold, served, fitted = [], [], []
    for k, (truths, preds) in enumerate(folds):
        others_t = [t for j, (ts, _) in enumerate(folds) if j != k for t in ts]
        others_p = [p for j, (_, ps) in enumerate(folds) if j != k for p in ps]
        points = fit(others_t, others_p, min_scores, weights, draws=draws)
        per_fold.append(points)
        served.append(evaluate(truths, preds, iou, DEFAULT_MIN_SCORE).to_dict())
        fitted.append(evaluate(truths, [points.apply(p) for p in preds], iou, DEFAULT_MIN_SCORE).to_dict())
    every_t = [t for ts, _ in folds for t in ts]
    every_p = [p for _, ps in folds for p in ps]
    return NestedFit(tuple(per_fold), tuple(served), tuple(fitted), fit(every_t, every_p, min_scores, weights, draws=draws))
