"""Training data from a VOC split: images held in memory, detector crops with anchor targets, classifier patches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from maskwatch.eval.dataset import Sample
from maskwatch.eval.metrics import iou_matrix
from serving.ssd import BGR_MEAN, encode_boxes
from serving.train.model import TUNED_CLASS_IDS

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
# Copy-paste of small faces (Kisantal et al. 2019, "Augmentation for small object detection"): the rarer classes'
# faces at least PASTE_MIN_SOURCE_PX wide, cut with PASTE_MARGIN x their side of context that fades into the crop,
# pasted PASTE_WIDTH_PX wide, up to PASTE_MAX_FACES a crop, where they overlap no face.
PASTE_CLASSES = ("without_mask", "mask_worn_incorrectly")
PASTE_MIN_SOURCE_PX = 12.0
PASTE_MARGIN = 0.25
PASTE_WIDTH_PX = (8.0, 32.0)
PASTE_MAX_FACES = 3


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
    image: Image, rng: np.random.Generator, crop: int, scale_range: tuple[float, float], height: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Scale by a log-uniform factor, cut a crop x crop window (crop wide, `height` high when given; mean colour
    where it leaves the image), flip half the time, jitter brightness and contrast. Returns (BGR float32
    [height,crop,3], boxes [M,4] pixel in the crop)."""
    cw, ch = crop, crop if height is None else height
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


def mosaic_crop(
    images: Sequence[Image], first: int, rng: np.random.Generator, crop: int, scale_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """A crop x crop mosaic, as YOLOv4/v5 train on small data sets: the crop cut at a random centre (30-70 % of
    each side) into four windows, each a `random_crop` of its own image (`first`, then three drawn at random) at
    the same scales. Four scenes' faces and backgrounds in one step, and faces cut by a window's edge."""
    cx = int(rng.integers(round(0.3 * crop), round(0.7 * crop) + 1))
    cy = int(rng.integers(round(0.3 * crop), round(0.7 * crop) + 1))
    canvas = np.empty((crop, crop, 3), np.float32)
    parts = []
    for k, (x0, y0, x1, y1) in enumerate(((0, 0, cx, cy), (cx, 0, crop, cy), (0, cy, cx, crop), (cx, cy, crop, crop))):
        image = images[first] if k == 0 else images[int(rng.integers(len(images)))]
        window, boxes = random_crop(image, rng, x1 - x0, scale_range, height=y1 - y0)
        canvas[y0:y1, x0:x1] = window
        parts.append(boxes + np.array([x0, y0, x0, y0], np.float32))
    return canvas, np.concatenate(parts).reshape(-1, 4)


@dataclass(frozen=True)
class PastedFace:
    """A face cut for pasting: BGR float32 [h,w,3] with PASTE_MARGIN of context each way, its alpha [h,w] (1 on the
    face, fading to 0 at the cut's edge) and the face's box in the cut (xmin, ymin, xmax, ymax)."""

    bgr: np.ndarray
    alpha: np.ndarray
    box: np.ndarray


def face_bank(images: Sequence[Image], classes: Sequence[str] = PASTE_CLASSES) -> list[PastedFace]:
    """The faces of `classes` at least PASTE_MIN_SOURCE_PX wide, cut for `paste_faces`."""
    bank = []
    for image in images:
        h, w = image.bgr.shape[:2]
        for box, label in zip(image.boxes, image.labels, strict=True):
            bw, bh = box[2] - box[0], box[3] - box[1]
            if label not in classes or bw < PASTE_MIN_SOURCE_PX:
                continue
            x0, y0 = max(0, int(box[0] - PASTE_MARGIN * bw)), max(0, int(box[1] - PASTE_MARGIN * bh))
            x1, y1 = min(w, int(np.ceil(box[2] + PASTE_MARGIN * bw))), min(h, int(np.ceil(box[3] + PASTE_MARGIN * bh)))
            inner = np.array([box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0], np.float32)
            ys, xs = np.mgrid[0 : y1 - y0, 0 : x1 - x0].astype(np.float32) + 0.5
            # distance outside the face box, as a share of the margin: alpha 1 on the face, 0 at the cut's edge
            dx = np.maximum(np.maximum(inner[0] - xs, xs - inner[2]), 0) / max(PASTE_MARGIN * bw, 1.0)
            dy = np.maximum(np.maximum(inner[1] - ys, ys - inner[3]), 0) / max(PASTE_MARGIN * bh, 1.0)
            alpha = np.clip(1.0 - np.maximum(dx, dy), 0.0, 1.0)
            bank.append(PastedFace(image.bgr[y0:y1, x0:x1].astype(np.float32), alpha, inner))
    return bank


def paste_faces(
    canvas: np.ndarray, boxes: np.ndarray, bank: Sequence[PastedFace], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """1 to PASTE_MAX_FACES faces of the bank pasted into the crop (BGR float32), PASTE_WIDTH_PX wide (log-uniform),
    mirrored half the time, each where it overlaps no face; returns the crop and its boxes with theirs added."""
    ch, cw = canvas.shape[:2]
    out = canvas.copy()
    boxes = boxes.reshape(-1, 4)
    lo, hi = np.log(PASTE_WIDTH_PX[0]), np.log(PASTE_WIDTH_PX[1])
    for _ in range(int(rng.integers(1, PASTE_MAX_FACES + 1))):
        face = bank[int(rng.integers(len(bank)))]
        width = float(np.exp(rng.uniform(lo, hi)))
        s = width / float(face.box[2] - face.box[0])
        ph, pw = max(1, round(face.bgr.shape[0] * s)), max(1, round(face.bgr.shape[1] * s))
        if ph >= ch or pw >= cw:
            continue
        x, y = int(rng.integers(0, cw - pw + 1)), int(rng.integers(0, ch - ph + 1))
        new = face.box * np.float32(s) + np.array([x, y, x, y], np.float32)
        if len(boxes) and iou_matrix(new[None], boxes).max() > 0:
            continue  # never over a face: one draw, skipped when it would be
        bgr = cv2.resize(face.bgr, (pw, ph), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(face.alpha, (pw, ph), interpolation=cv2.INTER_LINEAR)[..., None]
        if rng.random() < 0.5:
            bgr, alpha, new = bgr[:, ::-1], alpha[:, ::-1], np.array([2 * x + pw - new[2], new[1], 2 * x + pw - new[0], new[3]], np.float32)
        region = out[y : y + ph, x : x + pw]
        out[y : y + ph, x : x + pw] = alpha * bgr + (1.0 - alpha) * region
        boxes = np.concatenate([boxes, new[None]])
    return out, boxes


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
    mosaic: float = 0.0,
    paste: float = 0.0,
    bank: Sequence[PastedFace] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(blobs [B,crop,crop,3] BGR minus mean, anchor classes [B,P], offsets [B,P,4]); a `mosaic` share of the
    crops are mosaics of four images (`mosaic_crop`), a `paste` share get small faces of the `bank` pasted in."""
    priors_px = priors_norm * crop
    blobs, labels, offsets = [], [], []
    for i in indices:
        if mosaic > 0 and rng.random() < mosaic:
            canvas, boxes = mosaic_crop(images, i, rng, crop, scale_range)
        else:
            canvas, boxes = random_crop(images[i], rng, crop, scale_range)
        if paste > 0 and bank and rng.random() < paste:
            canvas, boxes = paste_faces(canvas, boxes, bank, rng)
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
