"""The served mask-detector graph: JPEG decoding, SSD face detection, per-face mask classification, Contract 2 outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import tensorflow as tf

from maskwatch.detections import CLASS_IDS, WITH_MASK, WITHOUT_MASK
from maskwatch.model_api import (
    INPUT_IMAGES,
    MODEL_NAME,
    OUT_BOXES,
    OUT_CLASSES,
    OUT_FACE_SCORES,
    OUT_MULTICLASS_SCORES,
    OUT_NUM,
    OUT_SCORES,
)
from model import jpegscale
from model.caffe import DetectionParams
from model.ssd import BGR_MEAN

CLASSIFIER_SIZE = 224
# The classifier's outputs, in order, as Contract 2 class ids.
CLASSIFIER_CLASS_IDS = (CLASS_IDS[WITH_MASK], CLASS_IDS[WITHOUT_MASK])
DEFAULT_MAX_DETECTIONS = 100
# Pixels of replicated edge around each decoded image in the crop tensor (see pad_for_crops).
CROP_BORDER = 1

Classifier = Callable[..., tf.Tensor]


class Detector(Protocol):
    """What the module needs of a face detector (`ssd.FaceDetector`, `ssd.TunedFaceDetector`)."""

    @property
    def input_hw(self) -> tuple[int, int]: ...

    @property
    def params(self) -> DetectionParams: ...

    def prior_boxes(self) -> np.ndarray: ...

    def __call__(self, blob: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]: ...


def resize_like_opencv(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear resize with half-pixel centres and no antialiasing, rounded to integers: cv2.INTER_LINEAR on uint8."""
    resized = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear", antialias=False)
    return tf.clip_by_value(tf.round(resized), 0.0, 255.0)


def detector_blob(resized_rgb: tf.Tensor) -> tf.Tensor:
    """What cv2.dnn.blobFromImage(bgr, 1.0, size, (104, 177, 123)) makes, in NHWC, from resized RGB pixels."""
    return tf.reverse(resized_rgb, axis=[-1]) - tf.constant(BGR_MEAN, tf.float32)


def yxyx_clipped(boxes_xyxy: tf.Tensor) -> tf.Tensor:
    """(xmin, ymin, xmax, ymax) to (ymin, xmin, ymax, xmax), clipped to the image."""
    x0, y0, x1, y1 = tf.unstack(boxes_xyxy, axis=-1)
    return tf.clip_by_value(tf.stack([y0, x0, y1, x1], axis=-1), 0.0, 1.0)


def pad_for_crops(rgb: tf.Tensor, batch_hw: tf.Tensor) -> tf.Tensor:
    """One image [H,W,3] with its edge replicated CROP_BORDER pixels out, zero-padded to batch_hw + 2*CROP_BORDER.

    The replicated edge makes a crop touching the image border read the border pixel, as cv2.resize of a region
    does, and never the zeros of the batch padding.
    """
    b = CROP_BORDER
    # concatenated edge rows and columns: what tf.pad(mode="SYMMETRIC") gives, 10x faster on uint8 (0.6 vs 5.9 ms for
    # a 640x480 frame on a 2-core EPYC, ~6 % of a frame's time)
    framed = tf.concat([tf.repeat(rgb[:1], b, axis=0), rgb, tf.repeat(rgb[-1:], b, axis=0)], axis=0)
    framed = tf.concat([tf.repeat(framed[:, :1], b, axis=1), framed, tf.repeat(framed[:, -1:], b, axis=1)], axis=1)
    framed_hw = tf.shape(framed)[:2]
    return tf.pad(framed, [[0, batch_hw[0] + 2 * b - framed_hw[0]], [0, batch_hw[1] + 2 * b - framed_hw[1]], [0, 0]])


def crop_boxes(boxes: tf.Tensor, image_hw: tf.Tensor, padded_hw: tf.Tensor, size: int) -> tf.Tensor:
    """Boxes for tf.image.crop_and_resize that sample a region like cv2.resize of it does (half-pixel centres).

    boxes [M,4] normalised (ymin, xmin, ymax, xmax) in images of size image_hw [M,2], laid out by `pad_for_crops`
    in tensors of size padded_hw [2]. Samples stay within half a pixel of the image, i.e. on the replicated edge.
    """
    hw = tf.cast(image_hw, tf.float32)
    pixels = boxes * tf.concat([hw, hw], axis=-1)
    start, end = pixels[:, :2], pixels[:, 2:]
    step = (end - start) / size
    first = start + 0.5 * step - 0.5 + CROP_BORDER
    last = first + (size - 1) * step
    denom = tf.maximum(tf.cast(padded_hw, tf.float32) - 1.0, 1.0)
    return tf.concat([first / denom, last / denom], axis=-1)


def context_boxes(boxes: tf.Tensor, image_hw: tf.Tensor, margin: float) -> tf.Tensor:
    """Square boxes about each face: side (1 + 2*margin) * the longer side in pixels, same centre; normalised
    (ymin, xmin, ymax, xmax) like `boxes` [M,4] in images of size image_hw [M,2]. They may reach past the image."""
    hw = tf.cast(image_hw, tf.float32)
    pixels = boxes * tf.concat([hw, hw], axis=-1)
    centre = (pixels[:, :2] + pixels[:, 2:]) / 2.0
    half = tf.reduce_max(pixels[:, 2:] - pixels[:, :2], axis=-1, keepdims=True) * (0.5 + margin)
    return tf.concat([centre - half, centre + half], axis=-1) / tf.concat([hw, hw], axis=-1)


def decode_ratios(sizes: tf.Tensor, floor_hw: tuple[int, int], letterbox: bool) -> tf.Tensor:
    """jpegscale.decode_ratio for each image size [N,2] (height, width): ratios [N] int32 (8, 4, 2 or 1)."""
    ratios = tf.ones_like(sizes[:, 0])
    for ratio in sorted(jpegscale.RATIOS):  # the largest that fits wins
        scaled = (sizes + ratio - 1) // ratio
        tall, wide = scaled[:, 0] >= floor_hw[0], scaled[:, 1] >= floor_hw[1]
        ratios = tf.where(tall | wide if letterbox else tall & wide, ratio, ratios)
    return ratios


def decode_scaled(jpeg: tf.Tensor, ratio: tf.Tensor) -> tf.Tensor:
    """RGB uint8 [H,W,3] of one JPEG decoded at 1/ratio scale (libjpeg's DCT scaling; ratio 1, 2, 4 or 8)."""

    def at(r: int) -> Callable[[], tf.Tensor]:
        return lambda: tf.io.decode_jpeg(jpeg, channels=3, dct_method="INTEGER_ACCURATE", ratio=r)

    scales = (1, *sorted(jpegscale.RATIOS))
    index = tf.argmax(tf.cast(tf.equal(tf.constant(scales), ratio), tf.int32), output_type=tf.int32)
    return tf.switch_case(index, [at(r) for r in scales])


def letterbox_size(image_hw: tf.Tensor, canvas_hw: tuple[int, int], max_upscale: float) -> tf.Tensor:
    """Size [2] int32 of an image of image_hw [2] scaled, aspect kept, to fit the canvas, at most max_upscale times."""
    hw = tf.cast(image_hw, tf.float32)
    scale = tf.minimum(tf.reduce_min(tf.constant(canvas_hw, tf.float32) / hw), max_upscale)
    return tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), 1)


def compact(keep: tf.Tensor, key: tf.Tensor, k: int) -> tf.Tensor:
    """Row order [N,k] that puts kept rows first, each group by descending key, ties by original position."""
    ranked = tf.where(keep, key, -tf.ones_like(key))
    return tf.math.top_k(ranked, k=k, sorted=True).indices


class MaskDetectorModule(tf.Module):
    """JPEG bytes in, faces with a mask class out, in one graph (Contract 2)."""

    def __init__(
        self,
        detector: Detector,
        classifier: Classifier,
        face_threshold: float,
        max_detections: int = DEFAULT_MAX_DETECTIONS,
        name: str = MODEL_NAME,
        classifier_size: int = CLASSIFIER_SIZE,
        class_ids: tuple[int, ...] = CLASSIFIER_CLASS_IDS,
        crop_margin: float | None = None,
        letterbox: bool = False,
        max_upscale: float = 1.0,
        face_output: bool = False,
        flip_average: bool = False,
    ) -> None:
        """The defaults are the pre-trained model's: the detector's input squashed from the whole image, the
        classifier fed the face box alone at 224 px. `letterbox` keeps the aspect ratio instead (scaling by at most
        `max_upscale`, padding with the mean colour); `crop_margin` feeds it a square with context around the box.

        With `face_output` the classifier has one more output, after the classes: the probability that the crop is
        a face at all. It is a second stage: it sees the detector's candidates down to half `face_threshold`, a
        candidate's face score becomes the mean of the detector's score and this probability (a face either stage is
        sure of stays near the operating point, one that both doubt falls below it), and candidates that fall below
        `face_threshold` are dropped.

        With `flip_average` the classifier sees every crop twice, as it is and mirrored, and its outputs are the
        mean of the two (test-time augmentation: steadier on the rare classes for one more classifier pass)."""
        super().__init__(name=name)
        if not 0.0 < face_threshold < 1.0:
            raise ValueError(f"face_threshold {face_threshold} outside (0, 1)")
        keep_top_k = detector.params.keep_top_k
        if not 1 <= max_detections <= keep_top_k:
            raise ValueError(f"max_detections {max_detections} outside [1, {keep_top_k}]")
        if not set(class_ids) <= set(CLASS_IDS.values()) or not class_ids:
            raise ValueError(f"class ids {class_ids} are not Contract 2 classes")
        if crop_margin is not None and not 0.0 <= crop_margin <= 1.0:
            raise ValueError(f"crop_margin {crop_margin} outside [0, 1]")
        if max_upscale <= 0.0:
            raise ValueError(f"max_upscale {max_upscale} <= 0")
        self.detector = detector
        self.classifier = classifier
        self.max_detections = max_detections
        self.classifier_size = classifier_size
        self.class_ids = tuple(class_ids)
        self.crop_margin = crop_margin
        self.letterbox = letterbox
        self.max_upscale = max_upscale
        self.face_output = face_output
        self.flip_average = flip_average
        self.face_threshold = tf.Variable(face_threshold, dtype=tf.float32, trainable=False, name="face_threshold")
        # what the networks can use of an image: a larger one is decoded downscaled to no less than this
        self.decode_floor_hw = jpegscale.decode_floor(detector.prior_boxes(), detector.input_hw, classifier_size, crop_margin)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_IMAGES)])
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """The `serving_default` signature: a batch of JPEG strings to Contract 2 outputs."""
        return self.predict(images)

    def decode(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """JPEG strings [N] to (detector blobs [N,300,300,3], RGB images laid out by `pad_for_crops`, sizes [N,2]).

        An image larger than the networks can use is decoded downscaled by libjpeg (`jpegscale`, down to
        `decode_floor_hw`); `sizes` are the decoded sizes, which the boxes are normalised to like the image's.
        """
        announced = tf.map_fn(
            lambda s: tf.image.extract_jpeg_shape(s)[:2], images, fn_output_signature=tf.TensorSpec([2], tf.int32)
        )
        ratios = decode_ratios(announced, self.decode_floor_hw, self.letterbox)
        sizes = (announced + ratios[:, tf.newaxis] - 1) // ratios[:, tf.newaxis]
        batch_hw = tf.reduce_max(sizes, axis=0)
        in_h, in_w = self.detector.input_hw
        if self.letterbox:
            return self.decode_letterboxed(images, ratios, sizes, batch_hw)

        def one(jpeg_ratio: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
            rgb = decode_scaled(*jpeg_ratio)
            small = resize_like_opencv(rgb, (in_h, in_w))
            return small, pad_for_crops(rgb, batch_hw)

        small, padded = tf.map_fn(
            one,
            (images, ratios),
            fn_output_signature=(
                tf.TensorSpec([in_h, in_w, 3], tf.float32),
                tf.TensorSpec([None, None, 3], tf.uint8),
            ),
        )
        return detector_blob(small), padded, sizes

    def decode_letterboxed(
        self, images: tf.Tensor, ratios: tf.Tensor, sizes: tf.Tensor, batch_hw: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """As `decode`, each image scaled with its aspect kept into the top-left of the detector's input."""
        in_h, in_w = self.detector.input_hw

        def one(jpeg_ratio: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
            rgb = decode_scaled(*jpeg_ratio)
            size = letterbox_size(tf.shape(rgb)[:2], (in_h, in_w), self.max_upscale)
            blob = detector_blob(resize_like_opencv(rgb, size))
            return tf.image.pad_to_bounding_box(blob, 0, 0, in_h, in_w), pad_for_crops(rgb, batch_hw)

        blob, padded = tf.map_fn(
            one,
            (images, ratios),
            fn_output_signature=(
                tf.TensorSpec([in_h, in_w, 3], tf.float32),
                tf.TensorSpec([None, None, 3], tf.uint8),
            ),
        )
        return blob, padded, sizes

    def image_boxes(self, boxes: tf.Tensor, sizes: tf.Tensor) -> tf.Tensor:
        """Detector boxes [N,K,4] (ymin, xmin, ymax, xmax) normalised to its input, normalised to each image."""
        if not self.letterbox:
            return boxes
        canvas = tf.constant(self.detector.input_hw, tf.float32)
        extent = tf.map_fn(
            lambda hw: tf.cast(letterbox_size(hw, self.detector.input_hw, self.max_upscale), tf.float32) / canvas,
            sizes,
            fn_output_signature=tf.TensorSpec([2], tf.float32),
        )
        return boxes / tf.tile(extent, [1, 2])[:, tf.newaxis, :]

    def classify(self, crops: tf.Tensor) -> tf.Tensor:
        """Face crops [M,S,S,3] in RGB 0..255 to class probabilities [M,C] (with `flip_average`, the mean over each
        crop and its mirror image, in one classifier batch); an empty batch skips the model."""
        outputs = len(self.class_ids) + int(self.face_output)

        def run() -> tf.Tensor:
            x = crops / 127.5 - 1.0
            if not self.flip_average:
                return tf.convert_to_tensor(self.classifier(x, training=False))
            both = tf.convert_to_tensor(self.classifier(tf.concat([x, tf.reverse(x, axis=[2])], axis=0), training=False))
            return tf.reduce_mean(tf.reshape(both, [2, -1, outputs]), axis=0)

        return tf.cond(tf.shape(crops)[0] > 0, run, lambda: tf.zeros([0, outputs], tf.float32))

    def predict(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        blob, padded, sizes = self.decode(images)
        boxes_xyxy, face_scores, _ = self.detector(blob)
        boxes = tf.clip_by_value(self.image_boxes(yxyx_clipped(boxes_xyxy), sizes), 0.0, 1.0)
        has_area = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        # A second stage sees candidates down to half the face threshold: its face probability can lift them over it.
        first_stage = self.face_threshold / 2.0 if self.face_output else self.face_threshold
        keep = (face_scores >= first_stage) & has_area

        k = self.max_detections
        order = compact(keep, face_scores, k)
        boxes = tf.gather(boxes, order, batch_dims=1)
        face_scores = tf.gather(face_scores, order, batch_dims=1)
        keep = tf.gather(keep, order, batch_dims=1)

        # Classify only the kept faces of the whole batch, in one classifier batch, then scatter back.
        where = tf.where(keep)
        image_index = tf.cast(where[:, 0], tf.int32)
        face_sizes = tf.gather(sizes, image_index)
        face_boxes = tf.gather_nd(boxes, where)
        if self.crop_margin is not None:
            face_boxes = context_boxes(face_boxes, face_sizes, self.crop_margin)
        size = self.classifier_size
        crops = tf.image.crop_and_resize(
            padded,
            crop_boxes(face_boxes, face_sizes, tf.shape(padded)[1:3], size),
            image_index,
            [size, size],
            method="bilinear",
        )
        outputs = len(self.class_ids) + int(self.face_output)
        probs = tf.scatter_nd(where, self.classify(crops), [tf.shape(keep)[0], k, outputs])
        if self.face_output:
            p_face = probs[..., -1]
            probs = probs[..., :-1]
            face_scores = tf.where(keep, (face_scores + p_face) / 2.0, face_scores)
            keep = keep & (face_scores >= self.face_threshold)

        class_ids = tf.gather(tf.constant(self.class_ids, tf.float32), tf.argmax(probs, axis=-1))
        # TF Object Detection API layout: column 0 background, column c the Contract 2 class c; a face's score for
        # every class (face score x class probability), so an evaluation can rank each face in every class's list.
        columns = tf.scatter_nd(
            [[0]] + [[c] for c in self.class_ids],
            tf.concat([(1.0 - face_scores)[tf.newaxis], tf.transpose(face_scores[..., tf.newaxis] * probs, [2, 0, 1])], 0),
            [1 + len(CLASS_IDS), tf.shape(probs)[0], k],
        )
        multiclass = tf.transpose(columns, [1, 2, 0])
        order = compact(keep, face_scores, k)

        def rows(x: tf.Tensor) -> tf.Tensor:
            x = tf.gather(x, order, batch_dims=1)
            mask = tf.gather(keep, order, batch_dims=1)
            while mask.shape.rank < x.shape.rank:
                mask = mask[..., tf.newaxis]
            return tf.where(mask, x, tf.zeros_like(x))

        # A row's score is how sure the model is that it is a face, its class the classifier's most probable one:
        # whether a person is counted does not hang on how sure the class is (face score x class probability
        # dropped the faces the classifier hesitated over, most often violations: model/EXPERIMENTS.md).
        scores = rows(face_scores)
        return {
            OUT_BOXES: rows(boxes),
            OUT_SCORES: scores,
            OUT_CLASSES: rows(class_ids),
            OUT_NUM: tf.reduce_sum(tf.cast(keep, tf.float32), axis=1),
            OUT_FACE_SCORES: scores,
            OUT_MULTICLASS_SCORES: rows(multiclass),
        }
