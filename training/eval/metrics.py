"""Detection metrics on ground truth: VOC AP (all-point interpolation) per class and class-agnostic, recall by
face width and per class at an operating score, and the class confusion of matched faces.

A class's AP ranks every face the model found in that class's list by the face's score for the class, when the
model reports one per class (`detection_multiclass_scores`): the VOC protocol, as detectors from SSD to YOLOv5 are
evaluated, where a face the model calls with_mask at 0.6 and worn incorrectly at 0.3 is also an incorrect
detection at 0.3. The stricter top-class AP (each face in its top class's list only: what the worker counts) is
reported beside it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from maskwatch.detections import CLASS_NAMES, WIDTH_BUCKETS

if TYPE_CHECKING:
    from training.eval.compliance import ComplianceError

CLASSES = tuple(CLASS_NAMES[i] for i in sorted(CLASS_NAMES))
FACE = "face"  # every class merged: the detector's own job
MISSED = "missed"  # confusion column: a true face no detection matched
FALSE_POSITIVE = "false_positive"  # confusion row: a detection that took no true face (background, duplicate)
DEFAULT_IOU = 0.5
MEAN_AP = "mean_ap"  # key of the mAP's interval in Report.intervals


@dataclass(frozen=True)
class Truth:
    """One image's true faces: boxes [M,4] pixel (xmin, ymin, xmax, ymax), class names, VOC difficult flags."""

    boxes: np.ndarray
    labels: tuple[str, ...]
    difficult: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if not self.difficult:
            object.__setattr__(self, "difficult", (False,) * len(self.labels))
        _check(self.boxes, self.labels, "truth")
        if len(self.difficult) != len(self.labels):
            raise ValueError(f"{len(self.difficult)} difficult flags for {len(self.labels)} labels")


@dataclass(frozen=True)
class Predicted:
    """One image's detections: boxes [K,4] pixel (xmin, ymin, xmax, ymax), scores [K], class names, and when the
    model reports them each detection's score for every class [K,3] (CLASSES order)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: tuple[str, ...]
    class_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check(self.boxes, self.labels, "prediction")
        if np.shape(self.scores) != (len(self.labels),):
            raise ValueError(f"scores shape {np.shape(self.scores)} for {len(self.labels)} labels")
        if self.class_scores is not None and np.shape(self.class_scores) != (len(self.labels), len(CLASSES)):
            raise ValueError(f"class scores shape {np.shape(self.class_scores)} for {len(self.labels)} labels")

    @classmethod
    def empty(cls) -> Predicted:
        return cls(np.zeros((0, 4)), np.zeros(0), ())


def _check(boxes: np.ndarray, labels: tuple[str, ...], what: str) -> None:
    if np.shape(boxes) != (len(labels), 4):
        raise ValueError(f"{what} boxes shape {np.shape(boxes)} for {len(labels)} labels")
    unknown = sorted(set(labels) - set(CLASSES))
    if unknown:
        raise ValueError(f"{what} has unknown classes {unknown}")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [M,4] with every box in b [K,4], (xmin, ymin, xmax, ymax) continuous coordinates."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (VOC 2010+ all-point interpolation)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclass(frozen=True)
class Matching:
    """Detections of one class (or of all, class-agnostic) over a data set, best score first, VOC-matched."""

    scores: np.ndarray  # [D] descending
    tp: np.ndarray  # [D] bool
    fp: np.ndarray  # [D] bool (a detection on a difficult face is neither)
    positives: int  # non-difficult true faces
    detections: np.ndarray = field(repr=False)  # [D,2] (image index, index in that image's prediction)
    matched: np.ndarray = field(repr=False)  # [D,2] (image index, truth index) of the face hit, (-1, -1) if none

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(recall, precision) after each detection."""
        tp, fp = np.cumsum(self.tp), np.cumsum(self.fp)
        recall = tp / max(self.positives, 1)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        return recall, precision

    def ap(self) -> float | None:
        """None when there is no true face to find."""
        if self.positives == 0:
            return None
        return average_precision(*self.curve())

    def recall_at(self, min_score: float) -> float | None:
        if self.positives == 0:
            return None
        return float(np.sum(self.tp & (self.scores >= min_score)) / self.positives)

    def precision_at(self, min_score: float) -> float | None:
        kept = self.scores >= min_score
        n = int(np.sum((self.tp | self.fp) & kept))
        return float(np.sum(self.tp & kept) / n) if n else None


def match(
    truths: Sequence[Truth],
    preds: Sequence[Predicted],
    cls: str | None,
    iou_threshold: float = DEFAULT_IOU,
    top_class_only: bool = False,
) -> Matching:
    """PASCAL VOC matching of class `cls` (None: every class as one): detections in descending score order
    (ties in data-set order) each take the true face they overlap most; at IoU >= threshold that is a hit if the
    face is free, a false positive if already taken, ignored if the face is difficult; below it, a false positive.

    Class `cls`'s detections: where a prediction has per-class scores, every detection with a score above 0 for
    `cls`, at that score; otherwise (or with `top_class_only`) those labelled `cls`, at their score."""
    if len(truths) != len(preds):
        raise ValueError(f"{len(truths)} truths for {len(preds)} predictions")
    column = CLASSES.index(cls) if cls is not None else -1
    det_image, det_index, det_score = [], [], []
    for i, p in enumerate(preds):
        per_class = None if cls is None or top_class_only else p.class_scores
        for j, label in enumerate(p.labels):
            if per_class is not None:
                if per_class[j, column] > 0.0:
                    det_image.append(i)
                    det_index.append(j)
                    det_score.append(float(per_class[j, column]))
            elif cls is None or label == cls:
                det_image.append(i)
                det_index.append(j)
                det_score.append(float(p.scores[j]))
    order = np.argsort(-np.asarray(det_score, np.float64), kind="stable")
    gt_sel = [np.array([cls is None or lb == cls for lb in t.labels], bool) for t in truths]
    taken = [np.zeros(int(sel.sum()), bool) for sel in gt_sel]
    ious = [
        iou_matrix(p.boxes, t.boxes[sel]) if len(p.labels) and sel.any() else None
        for p, t, sel in zip(preds, truths, gt_sel, strict=True)
    ]
    tp = np.zeros(len(order), bool)
    fp = np.zeros(len(order), bool)
    matched = np.full((len(order), 2), -1, np.int64)
    for rank, d in enumerate(order):
        i, j = det_image[d], det_index[d]
        iou = ious[i]
        if iou is None:
            fp[rank] = True
            continue
        k = int(np.argmax(iou[j]))
        if iou[j, k] < iou_threshold:
            fp[rank] = True
            continue
        truth_index = int(np.nonzero(gt_sel[i])[0][k])
        if truths[i].difficult[truth_index]:
            continue
        if taken[i][k]:
            fp[rank] = True
            continue
        taken[i][k] = True
        tp[rank] = True
        matched[rank] = (i, truth_index)
    positives = sum(
        int(np.sum(sel & ~np.asarray(t.difficult, bool))) if len(t.labels) else 0
        for t, sel in zip(truths, gt_sel, strict=True)
    )
    return Matching(
        scores=np.asarray(det_score, np.float64)[order],
        detections=np.stack([np.asarray(det_image, np.int64), np.asarray(det_index, np.int64)], axis=-1).reshape(-1, 2)[
            order
        ],
        tp=tp,
        fp=fp,
        positives=positives,
        matched=matched,
    )


@dataclass(frozen=True)
class ClassReport:
    ap: float | None  # every face ranked by its score for this class (top class only without per-class scores)
    positives: int
    detections: int  # labelled this class (their top class)
    recall: float | None  # at the operating score, of the detections labelled this class
    precision: float | None
    ap_top_class: float | None = None  # only the faces labelled this class, at their score


@dataclass(frozen=True)
class Report:
    """Everything `maskwatch eval` measures on one set, without timing."""

    iou_threshold: float
    min_score: float
    images: int
    classes: dict[str, ClassReport]  # the three classes and FACE
    mean_ap: float | None  # over the classes that have true faces
    recall_by_width: dict[str, dict[str, float | int | None]]  # bucket -> {faces, found, recall}
    confusion: dict[str, dict[str, int]]  # true class (or FALSE_POSITIVE) -> predicted class (or MISSED) -> count
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)  # name -> (recall, precision)
    # class (or FACE, or MEAN_AP) -> 95 % bootstrap interval (low, high) of its AP over resampled images
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    resamples: int = 0
    mean_ap_top_class: float | None = None  # the mean over the top-class APs
    per_class_scores: bool = False  # whether the model reported every face's score for every class
    compliance: ComplianceError | None = None  # the operator's compliance error at `min_score`

    def to_dict(self) -> dict[str, Any]:
        return {
            "iou_threshold": self.iou_threshold,
            "min_score": self.min_score,
            "images": self.images,
            "mean_ap": self.mean_ap,
            "mean_ap_top_class": self.mean_ap_top_class,
            "per_class_scores": self.per_class_scores,
            "ap_interval_95": {k: list(v) for k, v in self.intervals.items()},
            "bootstrap_resamples": self.resamples,
            "classes": {k: vars(v) for k, v in self.classes.items()},
            "recall_by_width": self.recall_by_width,
            "confusion": self.confusion,
            "compliance_error": None if self.compliance is None else self.compliance.to_dict(),
        }


def evaluate(
    truths: Sequence[Truth],
    preds: Sequence[Predicted],
    iou_threshold: float = DEFAULT_IOU,
    min_score: float = 0.0,
    resamples: int = 0,
) -> Report:
    """AP at `iou_threshold` over every detection; recall, precision, width buckets and confusion over the
    detections scoring at least `min_score` (the operating point: 0 counts what the worker counts), and the
    operator's compliance error there. With `resamples`, also each AP's 95 % bootstrap interval (images drawn with
    replacement, seeded)."""
    from training.eval.compliance import compliance_error  # it builds on this module's types
    classes: dict[str, ClassReport] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    per_class_scores = any(p.class_scores is not None and len(p.labels) for p in preds)
    for name in (*CLASSES, FACE):
        m = match(truths, preds, None if name == FACE else name, iou_threshold)
        # the top-class matching differs only for a class, and only when the model gave per-class scores
        top = match(truths, preds, name, iou_threshold, top_class_only=True) if per_class_scores and name != FACE else m
        curves[name] = m.curve()
        classes[name] = ClassReport(
            ap=m.ap(),
            positives=m.positives,
            detections=int(len(top.scores)),
            recall=top.recall_at(min_score),
            precision=top.precision_at(min_score),
            ap_top_class=top.ap(),
        )
    mean_ap = _mean_ap(classes[c].ap for c in CLASSES)

    kept = [_above(p, min_score) for p in preds]
    faces = match(truths, kept, None, iou_threshold)
    found: set[tuple[int, int]] = {(int(i), int(j)) for i, j in faces.matched[faces.tp]}
    by_width: dict[str, dict[str, float | int | None]] = {}
    for lo, hi, bucket in WIDTH_BUCKETS:
        total = hits = 0
        for i, t in enumerate(truths):
            for j in range(len(t.labels)):
                width = t.boxes[j, 2] - t.boxes[j, 0]
                if t.difficult[j] or not lo <= width < hi:
                    continue
                total += 1
                hits += (i, j) in found
        by_width[bucket] = {"faces": total, "found": hits, "recall": hits / total if total else None}

    confusion = {c: dict.fromkeys((*CLASSES, MISSED), 0) for c in CLASSES}
    confusion[FALSE_POSITIVE] = dict.fromkeys(CLASSES, 0)
    for rank, (i, d) in enumerate(faces.detections):
        predicted = kept[i].labels[d]
        if faces.tp[rank]:
            confusion[truths[i].labels[faces.matched[rank, 1]]][predicted] += 1
        elif faces.fp[rank]:
            confusion[FALSE_POSITIVE][predicted] += 1
    for i, t in enumerate(truths):
        for j, label in enumerate(t.labels):
            if not t.difficult[j] and (i, j) not in found:
                confusion[label][MISSED] += 1
    return Report(
        iou_threshold=iou_threshold,
        min_score=min_score,
        images=len(truths),
        classes=classes,
        mean_ap=mean_ap,
        mean_ap_top_class=_mean_ap(classes[c].ap_top_class for c in CLASSES),
        per_class_scores=per_class_scores,
        recall_by_width=by_width,
        confusion=confusion,
        curves=curves,
        intervals=bootstrap_intervals(truths, preds, iou_threshold, resamples) if resamples else {},
        resamples=resamples,
        compliance=compliance_error(truths, preds, min_score),
    )


def _mean_ap(aps: Iterable[float | None]) -> float | None:
    """The mAP: the mean AP over the classes that have true faces (None when none has)."""
    found = [ap for ap in aps if ap is not None]
    return float(np.mean(found)) if found else None


def bootstrap_intervals(
    truths: Sequence[Truth], preds: Sequence[Predicted], iou_threshold: float, resamples: int, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of each class's AP, the face AP and the mAP when the images are drawn again with
    replacement `resamples` times: how far the figures would move on another set of this size (a class with a
    dozen faces moves a lot)."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in (*CLASSES, FACE, MEAN_AP)}
    for _ in range(resamples):
        idx = rng.integers(0, len(truths), len(truths))
        ts, ps = [truths[i] for i in idx], [preds[i] for i in idx]
        aps = {name: match(ts, ps, None if name == FACE else name, iou_threshold).ap() for name in (*CLASSES, FACE)}
        aps[MEAN_AP] = _mean_ap(aps[c] for c in CLASSES)
        for name, ap in aps.items():
            if ap is not None:
                draws[name].append(ap)
    return {
        name: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for name, v in draws.items() if v
    }


def _above(p: Predicted, min_score: float) -> Predicted:
    keep = np.asarray(p.scores) >= min_score
    labels = tuple(lb for lb, k in zip(p.labels, keep, strict=True) if k)
    class_scores = None if p.class_scores is None else np.asarray(p.class_scores)[keep]
    return Predicted(np.asarray(p.boxes).reshape(-1, 4)[keep], np.asarray(p.scores)[keep], labels, class_scores)
