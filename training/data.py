"""Training data from a VOC split: images held in memory, detector crops with anchor targets, classifier patches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from model.ssd import BGR_MEAN, encode_boxes
from model.tuned import TUNED_CLASS_IDS
from training.eval.dataset import Sample
from training.eval.metrics import iou_matrix

# Anchor matching (S3FD-style for tiny faces): positive from this IoU, plus each face's best anchor.
POSITIVE_IOU = 0.35
BEST_ANCHOR_MIN_IOU = 0.1
# Faces narrower than this after scaling are neither learnt nor punished: anchors on them are ignored.
MIN_FACE_PX = 6.0
IGNORE_IOU = 0.2
CLASS_INDEX = {name: i for i, name in enumerate(("with_mask", "without_mask", "mask_worn_incorrectly"))}
# Context patches for the classifier: a square of PATCH_CONTEXT x the face's longer side, at PATCH_PX pixels.
PATCH_CONTEXT = 2.0
PATCH_PX = 160
# A detector candidate overlapping every true face by less than this is a "not a face" example for the classifier.
NOT_FACE_MAX_IOU = 0.3


@dataclass(frozen=True)
class Image:
    """One training image decoded (BGR uint8) with its faces: boxes [M,4] pixel (xmin, ymin, xmax, ymax)."""

    name: str
    bgr: np.ndarray
    boxes: np.ndarray
    labels: tuple[str, ...]


def read_images(samples: Sequence[Sample]) -> list[Image]:
    out = []
    for s in samples:
        bgr = cv2.imread(str(s.image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{s.image_path}: not a decodable image")
        out.append(Image(s.name, bgr, s.boxes.astype(np.float32), s.labels))
    return out


# ------------------------------------------------------------------------------------------------ detector


def random_crop(
    image: Image, rng: np.random.Generator, crop: int, scale_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Scale by a log-uniform factor, cut a crop x crop window (mean colour where it leaves the image), flip half
    the time, jitter brightness and contrast. Returns (BGR float32 [crop,crop,3], boxes [M,4] pixel in the crop)."""
    cw = ch = crop
    lo, hi = np.log(scale_range[0]), np.log(scale_range[1])
    s = float(np.exp(rng.uniform(lo, hi)))
    h, w = image.bgr.shape[:2]
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    scaled = cv2.resize(image.bgr, (sw, sh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    boxes = image.boxes * np.array([sw / w, sh / h, sw / w, sh / h], np.float32)
    ox = int(rng.integers(min(0, sw - cw), max(0, sw - cw) + 1))
    oy = int(rng.integers(min(0, sh - ch), max(0, sh - ch) + 1))
    canvas = np.empty((ch, cw, 3), np.float32)
    canvas[:] = BGR_MEAN
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + cw, sw), min(oy + ch, sh)
    canvas[y0 - oy : y1 - oy, x0 - ox : x1 - ox] = scaled[y0:y1, x0:x1]
    boxes = boxes - np.array([ox, oy, ox, oy], np.float32)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = np.all((centre >= 0) & (centre < np.array([cw, ch])), axis=1)
    boxes = np.clip(boxes[inside], 0, np.array([cw, ch, cw, ch], np.float32))
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
        boxes = np.stack([cw - boxes[:, 2], boxes[:, 1], cw - boxes[:, 0], boxes[:, 3]], axis=-1)
    contrast = rng.uniform(0.75, 1.25)
    brightness = rng.uniform(-25, 25)
    canvas = np.clip((canvas - 128.0) * contrast + 128.0 + brightness, 0, 255)
    if rng.random() < 0.1:
        canvas[:] = canvas.mean(axis=-1, keepdims=True)
    return np.ascontiguousarray(canvas), boxes.reshape(-1, 4)


def anchor_targets(boxes: np.ndarray, priors_px: np.ndarray, priors_norm: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Per anchor: class (1 face, 0 background, -1 ignored) and encoded box offsets of its face."""
    labels = np.zeros(len(priors_px), np.int32)
    offsets = np.zeros((len(priors_px), 4), np.float32)
    if len(boxes) == 0:
        return labels, offsets
    widths = boxes[:, 2] - boxes[:, 0]
    learn = widths >= MIN_FACE_PX
    iou = iou_matrix(boxes, priors_px)  # [M,P]
    if (~learn).any():
        labels[np.max(iou[~learn], axis=0) >= IGNORE_IOU] = -1
    if not learn.any():
        return labels, offsets
    iou = iou[learn]
    faces = boxes[learn]
    best_face = np.argmax(iou, axis=0)
    best_iou = iou[best_face, np.arange(iou.shape[1])]
    positive = best_iou >= POSITIVE_IOU
    for m in range(len(faces)):  # every face gets its best anchor
        p = int(np.argmax(iou[m]))
        if iou[m, p] >= BEST_ANCHOR_MIN_IOU:
            positive[p] = True
            best_face[p] = m
    labels[positive] = 1
    offsets[positive] = encode_boxes(faces[best_face[positive]] / crop, priors_norm[positive])
    return labels, offsets


def detector_batch(
    images: Sequence[Image],
    indices: Sequence[int],
    rng: np.random.Generator,
    crop: int,
    priors_norm: np.ndarray,
    scale_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(blobs [B,crop,crop,3] BGR minus mean, anchor classes [B,P], offsets [B,P,4]): one `random_crop` per image."""
    priors_px = priors_norm * crop
    blobs, labels, offsets = [], [], []
    for i in indices:
        canvas, boxes = random_crop(images[i], rng, crop, scale_range)
        lab, off = anchor_targets(boxes, priors_px, priors_norm, crop)
        blobs.append(canvas - np.asarray(BGR_MEAN, np.float32))
        labels.append(lab)
        offsets.append(off)
    return np.stack(blobs), np.stack(labels), np.stack(offsets)


# ------------------------------------------------------------------------------------------------ classifier


def face_patches(images: Sequence[Image]) -> tuple[np.ndarray, np.ndarray]:
    """Per true face: an RGB patch [PATCH_PX,PATCH_PX,3] of PATCH_CONTEXT x its longer side about its centre
    (black beyond the image, as the served graph's crops are), and its class index (TUNED_CLASS_IDS order)."""
    patches, labels = [], []
    for image in images:
        rgb = cv2.cvtColor(image.bgr, cv2.COLOR_BGR2RGB)
        for box, label in zip(image.boxes, image.labels, strict=True):
            patches.append(context_patch(rgb, box))
            labels.append(CLASS_INDEX[label])
    return _stack(patches), np.asarray(labels, np.int32)


def not_face_patches(images: Sequence[Image], candidates: Sequence[np.ndarray], max_iou: float = NOT_FACE_MAX_IOU) -> np.ndarray:
    """Patches, as `face_patches` cuts them, of the candidate boxes [K,4] pixel (xmin, ymin, xmax, ymax) of each
    image that overlap every true face of it by less than `max_iou`: what the detector takes for a face and is not."""
    patches: list[np.ndarray] = []
    for image, boxes in zip(images, candidates, strict=True):
        if not len(boxes):
            continue
        overlap = iou_matrix(boxes, image.boxes).max(axis=1) if len(image.boxes) else np.zeros(len(boxes))
        rgb = cv2.cvtColor(image.bgr, cv2.COLOR_BGR2RGB)
        patches.extend(context_patch(rgb, box) for box in boxes[overlap < max_iou])
    return _stack(patches)


def context_patch(rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """[PATCH_PX,PATCH_PX,3] of PATCH_CONTEXT x the box's longer side about its centre, black beyond the image."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = PATCH_CONTEXT * max(box[2] - box[0], box[3] - box[1], 1.0) / 2
    scale = PATCH_PX / (2 * half)
    # affine map from the image to the patch: pixel centres, half-pixel convention
    m = np.array([[scale, 0, (half - cx) * scale - 0.5 + 0.5 * scale], [0, scale, (half - cy) * scale - 0.5 + 0.5 * scale]])
    return cv2.warpAffine(rgb, m, (PATCH_PX, PATCH_PX), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _stack(patches: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack(patches) if patches else np.zeros((0, PATCH_PX, PATCH_PX, 3), np.uint8)


def crop_window(margin: float) -> float:
    """Half the side of the served crop, as a fraction of a patch's side."""
    return (0.5 + margin) / PATCH_CONTEXT


def jittered_windows(count: int, rng: np.random.Generator, margin: float, jitter: bool) -> np.ndarray:
    """Crop windows [count,4] normalised (ymin, xmin, ymax, xmax) in patches: the served crop, moved by up to 10%
    of its side and scaled by 0.85-1.2 when `jitter` (the detector's boxes are not the annotator's)."""
    half = np.full(count, crop_window(margin))
    centre = np.full((count, 2), 0.5)
    if jitter:
        half = np.minimum(half * rng.uniform(0.85, 1.2, count), 0.5)
        centre = centre + rng.uniform(-0.1, 0.1, (count, 2)) * 2 * half[:, None]
    return np.concatenate([centre - half[:, None], centre + half[:, None]], axis=-1).astype(np.float32)


def class_weights(labels: np.ndarray, classes: int = len(TUNED_CLASS_IDS), power: float = 0.5) -> np.ndarray:
    """(n / (classes * n_c)) ** power per class, normalised to mean 1 over the samples: rare classes count more."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    w = (len(labels) / (classes * np.maximum(counts, 1))) ** power
    return (w / np.sum(w * counts / max(len(labels), 1))).astype(np.float32)
