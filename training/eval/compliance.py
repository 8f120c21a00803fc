"""The operator's compliance error: how far the share of masked faces the model counts at the operating point is from
the annotated share, per image and over random groups of images, and how many faces of each class it counts per
true face (its count bias).

Compliance is what the dashboard shows (Contract 3): with_mask / (with_mask + without_mask + mask_worn_incorrectly),
here over the faces the model counts (score ≥ the operating point, each in its top class, as the worker counts) and
over every annotated face (difficult ones too: a person the operator would count). Errors are in percentage points."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from maskwatch.detections import WITH_MASK
from training.eval.metrics import CLASSES, Predicted, Truth

GROUP_SIZES = (5, 20)
DEFAULT_DRAWS = 1000  # random groups drawn per group size
DEFAULT_SEED = 0
# The per-image error is taken over images with at least this many true faces: with one or two faces an image's
# share is 0, 50 or 100 %, and a single face found or missed decides it.
MIN_FACES_PER_IMAGE = 4
_MASKED = CLASSES.index(WITH_MASK)


@dataclass(frozen=True)
class ErrorStats:
    """Compliance errors over a set of images or groups: absolute error (mean, median, p90) and the mean signed error
    (model minus truth: negative when the model shows a site as less compliant than it is), in points."""

    measured: int  # images or groups with a true face and a counted one
    mean_abs: float | None
    median_abs: float | None
    p90_abs: float | None
    mean_signed: float | None
    no_estimate: int  # images or groups with true faces where the model counted none (no compliance shown)

    @classmethod
    def of(cls, errors: Sequence[float], no_estimate: int) -> ErrorStats:
        """From signed errors in points."""
        if not len(errors):
            return cls(0, None, None, None, None, no_estimate)
        e = np.asarray(errors, np.float64)
        a = np.abs(e)
        return cls(
            measured=len(e),
            mean_abs=float(a.mean()),
            median_abs=float(np.median(a)),
            p90_abs=float(np.percentile(a, 90)),
            mean_signed=float(e.mean()),
            no_estimate=no_estimate,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "measured": self.measured,
            "mean_abs": self.mean_abs,
            "median_abs": self.median_abs,
            "p90_abs": self.p90_abs,
            "mean_signed": self.mean_signed,
            "no_estimate": self.no_estimate,
        }


@dataclass(frozen=True)
class ComplianceError:
    """The compliance error at one operating point: per image (images with ≥ MIN_FACES_PER_IMAGE true faces), over
    random groups of images per group size, and per class the faces counted / the true faces."""

    min_score: float
    per_image: ErrorStats
    groups: dict[int, ErrorStats]  # group size -> stats over `draws` random groups
    draws: int
    seed: int
    true_faces: dict[str, int]
    counted_faces: dict[str, int]

    @property
    def count_bias(self) -> dict[str, float | None]:
        """Per class: faces counted ÷ true faces (1 is unbiased; None when the class has no true face)."""
        return {c: (self.counted_faces[c] / n if n else None) for c, n in self.true_faces.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_score": self.min_score,
            "min_faces_per_image": MIN_FACES_PER_IMAGE,
            "per_image": self.per_image.to_dict(),
            "groups": {str(size): stats.to_dict() for size, stats in self.groups.items()},
            "draws": self.draws,
            "seed": self.seed,
            "count_bias": self.count_bias,
            "true_faces": self.true_faces,
            "counted_faces": self.counted_faces,
        }


def class_counts(truths: Sequence[Truth], preds: Sequence[Predicted], min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Per image, faces per class (CLASSES order): (true [N,3], counted at `min_score` [N,3])."""
    if len(truths) != len(preds):
        raise ValueError(f"{len(truths)} truths for {len(preds)} predictions")
    true = np.zeros((len(truths), len(CLASSES)), np.int64)
    counted = np.zeros_like(true)
    for i, (t, p) in enumerate(zip(truths, preds, strict=True)):
        for label in t.labels:
            true[i, CLASSES.index(label)] += 1
        for label, score in zip(p.labels, np.asarray(p.scores), strict=True):
            if score >= min_score:
                counted[i, CLASSES.index(label)] += 1
    return true, counted


def _errors(true: np.ndarray, counted: np.ndarray) -> tuple[list[float], int]:
    """Signed compliance errors in points of rows of summed counts [G,3] that have true faces, and how many of those
    rows have no counted face."""
    errors: list[float] = []
    no_estimate = 0
    for t, c in zip(true, counted, strict=True):
        if t.sum() == 0:
            continue
        if c.sum() == 0:
            no_estimate += 1
            continue
        errors.append(100.0 * (c[_MASKED] / c.sum() - t[_MASKED] / t.sum()))
    return errors, no_estimate


def compliance_error(
    truths: Sequence[Truth],
    preds: Sequence[Predicted],
    min_score: float,
    group_sizes: Sequence[int] = GROUP_SIZES,
    draws: int = DEFAULT_DRAWS,
    seed: int = DEFAULT_SEED,
) -> ComplianceError:
    """The compliance error of `preds` at `min_score`. Each group is `size` distinct images drawn at random (seeded:
    the same images give the same groups); a group size larger than the set gives no groups."""
    true, counted = class_counts(truths, preds, min_score)
    enough = true.sum(axis=1) >= MIN_FACES_PER_IMAGE
    per_image = ErrorStats.of(*_errors(true[enough], counted[enough]))
    rng = np.random.default_rng(seed)
    groups: dict[int, ErrorStats] = {}
    for size in group_sizes:
        if size > len(truths) or draws < 1:
            groups[size] = ErrorStats.of([], 0)
            continue
        members = np.stack([rng.choice(len(truths), size, replace=False) for _ in range(draws)])  # [draws, size]
        groups[size] = ErrorStats.of(*_errors(true[members].sum(axis=1), counted[members].sum(axis=1)))
    return ComplianceError(
        min_score=min_score,
        per_image=per_image,
        groups=groups,
        draws=draws,
        seed=seed,
        true_faces={c: int(n) for c, n in zip(CLASSES, true.sum(axis=0), strict=True)},
        counted_faces={c: int(n) for c, n in zip(CLASSES, counted.sum(axis=0), strict=True)},
    )
