"""The res10 SSD face detector rebuilt in TensorFlow ops: network, prior boxes, box decoding and DetectionOutput."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import tensorflow as tf

from model.caffe import (
    Affine,
    CaffeNet,
    Concat,
    Conv,
    DetectionOutput,
    DetectionParams,
    Flatten,
    Identity,
    L2Normalize,
    MaxPool,
    Op,
    PriorBox,
    PriorBoxParams,
    Relu,
    Reshape,
    Softmax,
    Sum,
)

# What cv2.dnn.blobFromImage(img, 1.0, (300, 300), (104, 177, 123)) subtracts, in BGR order.
BGR_MEAN = (104.0, 177.0, 123.0)

Blob: TypeAlias = tf.Tensor | np.ndarray


def prior_boxes(
    feature_hw: tuple[int, int], image_hw: tuple[int, int], params: PriorBoxParams
) -> tuple[np.ndarray, np.ndarray]:
    """Caffe PriorBox for one feature map: (boxes, variances), each [H*W*priors, 4] float32.

    Boxes are normalised (xmin, ymin, xmax, ymax), location-major, in Caffe's order per location:
    each min size, then sqrt(min*max), then every other aspect ratio (and its flip).
    """
    fh, fw = feature_hw
    ih, iw = image_hw
    ratios = [1.0]
    for ar in params.aspect_ratios:
        if any(abs(ar - r) < 1e-6 for r in ratios):
            continue
        ratios.append(ar)
        if params.flip:
            ratios.append(1.0 / ar)
    sizes: list[tuple[float, float]] = []
    for i, min_size in enumerate(params.min_sizes):
        sizes.append((min_size, min_size))
        if params.max_sizes:
            side = math.sqrt(min_size * params.max_sizes[i])
            sizes.append((side, side))
        for ar in ratios[1:]:
            sizes.append((min_size * math.sqrt(ar), min_size / math.sqrt(ar)))
    step_h = params.step if params.step > 0 else ih / fh
    step_w = params.step if params.step > 0 else iw / fw
    cy, cx = np.meshgrid(
        (np.arange(fh, dtype=np.float64) + params.offset) * step_h,
        (np.arange(fw, dtype=np.float64) + params.offset) * step_w,
        indexing="ij",
    )
    cx = cx.reshape(-1, 1)
    cy = cy.reshape(-1, 1)
    bw = np.array([s[0] for s in sizes], dtype=np.float64).reshape(1, -1) / 2.0
    bh = np.array([s[1] for s in sizes], dtype=np.float64).reshape(1, -1) / 2.0
    boxes = np.stack([(cx - bw) / iw, (cy - bh) / ih, (cx + bw) / iw, (cy + bh) / ih], axis=-1).reshape(-1, 4)
    if params.clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    variances = np.tile(np.asarray(params.variances, dtype=np.float64), (boxes.shape[0], 1))
    return boxes.astype(np.float32), variances.astype(np.float32)


def decode_boxes(loc: tf.Tensor, priors: tf.Tensor, variances: tf.Tensor) -> tf.Tensor:
    """SSD CENTER_SIZE decoding: loc [..., P, 4] (dx, dy, dw, dh) against priors [P, 4] (xmin, ymin, xmax, ymax).

    Returns [..., P, 4] as (xmin, ymin, xmax, ymax), unclipped, as Caffe and OpenCV return them.
    """
    loc = tf.convert_to_tensor(loc, tf.float32)
    priors = tf.convert_to_tensor(priors, tf.float32)
    variances = tf.convert_to_tensor(variances, tf.float32)
    pw = priors[:, 2] - priors[:, 0]
    ph = priors[:, 3] - priors[:, 1]
    pcx = (priors[:, 0] + priors[:, 2]) / 2.0
    pcy = (priors[:, 1] + priors[:, 3]) / 2.0
    cx = variances[:, 0] * loc[..., 0] * pw + pcx
    cy = variances[:, 1] * loc[..., 1] * ph + pcy
    half_w = tf.exp(variances[:, 2] * loc[..., 2]) * pw / 2.0
    half_h = tf.exp(variances[:, 3] * loc[..., 3]) * ph / 2.0
    return tf.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def detection_output(
    loc: tf.Tensor, conf: tf.Tensor, priors: np.ndarray, params: DetectionParams
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Caffe DetectionOutput for one foreground class: decode, keep the `top_k` best, NMS, keep `keep_top_k`.

    loc [N, P*4], conf [N, P*2] (softmaxed), priors [1, 2, P*4] (Caffe layout: boxes then variances).
    Returns boxes [N, keep_top_k, 4] (xmin, ymin, xmax, ymax), scores [N, keep_top_k] sorted descending,
    and the number of detections per image [N] int32; rows past that number are zeros.
    """
    boxes_prior = priors[0, 0].reshape(-1, 4)
    variances = priors[0, 1].reshape(-1, 4)
    num_priors = boxes_prior.shape[0]
    batch = tf.shape(loc)[0]
    decoded = decode_boxes(tf.reshape(loc, [batch, num_priors, 4]), boxes_prior, variances)
    foreground = 1 - params.background_label_id
    scores = tf.reshape(conf, [batch, num_priors, params.num_classes])[..., foreground]
    top_scores, top_idx = tf.math.top_k(scores, k=min(params.top_k, num_priors), sorted=True)
    top_boxes = tf.gather(decoded, top_idx, batch_dims=1)
    keep = min(params.keep_top_k, params.top_k, num_priors)
    nms = tf.image.combined_non_max_suppression(
        boxes=top_boxes[:, :, tf.newaxis, :],
        scores=top_scores[:, :, tf.newaxis],
        max_output_size_per_class=keep,
        max_total_size=keep,
        iou_threshold=params.nms_threshold,
        score_threshold=params.confidence_threshold,
        pad_per_class=False,
        clip_boxes=False,
    )
    return nms.nmsed_boxes, nms.nmsed_scores, nms.valid_detections


def caffe_pool_padding(size: int, kernel: int, stride: int, pad: int) -> tuple[int, int]:
    """(before, after) padding that makes a VALID max pool give Caffe's output size, which rounds up."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return pad, (out - 1) * stride + kernel - size - pad


class FaceDetector(tf.Module):
    """A converted Caffe SSD; input is the 300x300 blob in NHWC (BGR, mean subtracted), as OpenCV DNN takes it."""

    def __init__(self, net: CaffeNet, name: str = "face_detector") -> None:
        super().__init__(name=name)
        detections = [op for op in net.ops if isinstance(op, DetectionOutput)]
        if len(detections) != 1 or net.ops[-1] is not detections[0]:
            raise ValueError("the network must end with exactly one DetectionOutput layer")
        self._net = net
        self._detection = detections[0]
        self.weights: dict[str, dict[str, tf.Variable]] = {}
        with self.name_scope:
            for op in net.ops:
                if isinstance(op, Conv):
                    self.weights[op.name] = {
                        "kernel": tf.Variable(op.kernel.astype(np.float32), trainable=False, name=f"{op.name}/kernel"),
                        "bias": tf.Variable(op.bias.astype(np.float32), trainable=False, name=f"{op.name}/bias"),
                    }
                elif isinstance(op, Affine):
                    self.weights[op.name] = {
                        "scale": tf.Variable(op.scale.astype(np.float32), trainable=False, name=f"{op.name}/scale"),
                        "shift": tf.Variable(op.shift.astype(np.float32), trainable=False, name=f"{op.name}/shift"),
                    }
                elif isinstance(op, L2Normalize):
                    self.weights[op.name] = {
                        "scale": tf.Variable(op.scale.astype(np.float32), trainable=False, name=f"{op.name}/scale"),
                    }

    @property
    def input_hw(self) -> tuple[int, int]:
        return self._net.input_hw

    @property
    def params(self) -> DetectionParams:
        return self._detection.params

    def heads(self, blob: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, np.ndarray]:
        """Run the network up to DetectionOutput: (mbox_loc [N,P*4], mbox_conf_flatten [N,P*2], priors [1,2,P*4])."""
        values: dict[str, Blob] = {self._net.input_name: tf.convert_to_tensor(blob, tf.float32)}
        for op in self._net.ops[:-1]:
            values[op.top] = self._apply(op, values)
        det = self._detection
        priors = values[det.priors]
        if not isinstance(priors, np.ndarray):
            raise TypeError("priors must be computed at build time")
        return tf.convert_to_tensor(values[det.loc]), tf.convert_to_tensor(values[det.conf]), priors

    def prior_boxes(self) -> np.ndarray:
        """The prior boxes [P,4] (xmin, ymin, xmax, ymax) normalised to the input, float32."""
        _, _, priors = self.heads(tf.zeros([1, *self.input_hw, 3], tf.float32))
        return priors[0, 0].reshape(-1, 4)

    def __call__(self, blob: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Detect faces: boxes [N,K,4] (xmin, ymin, xmax, ymax) normalised and unclipped, scores [N,K], count [N]."""
        loc, conf, priors = self.heads(blob)
        return detection_output(loc, conf, priors, self._detection.params)

    def _apply(self, op: Op, values: dict[str, Blob]) -> Blob:
        return apply_op(op, values, self.weights, self.input_hw)


def apply_op(op: Op, values: dict[str, Blob], weights: dict[str, dict[str, tf.Variable]], input_hw: tuple[int, int]) -> Blob:
    """Run one converted Caffe op on the blobs computed so far (tensors, or numpy arrays for build-time priors)."""

    def tensor(name: str) -> tf.Tensor:
        value = values[name]
        if isinstance(value, np.ndarray):
            raise TypeError(f"blob {name} is a build-time constant, not a tensor")
        return value

    if isinstance(op, Conv):
        w = weights[op.name]
        p = op.pad
        y = tf.nn.conv2d(
            tensor(op.bottom),
            w["kernel"],
            strides=op.stride,
            padding=[[0, 0], [p, p], [p, p], [0, 0]],
            dilations=op.dilation,
        )
        return tf.nn.bias_add(y, w["bias"])
    if isinstance(op, Affine):
        w = weights[op.name]
        return tensor(op.bottom) * w["scale"] + w["shift"]
    if isinstance(op, Relu):
        return tf.nn.relu(tensor(op.bottom))
    if isinstance(op, MaxPool):
        x = tensor(op.bottom)
        h, w_ = int(x.shape[1]), int(x.shape[2])
        ph = caffe_pool_padding(h, op.kernel, op.stride, op.pad)
        pw = caffe_pool_padding(w_, op.kernel, op.stride, op.pad)
        x = tf.pad(x, [[0, 0], list(ph), list(pw), [0, 0]], constant_values=float(np.finfo(np.float32).min))
        return tf.nn.max_pool2d(x, op.kernel, op.stride, "VALID")
    if isinstance(op, Sum):
        return tf.add_n([tensor(b) for b in op.bottoms])
    if isinstance(op, L2Normalize):
        x = tensor(op.bottom)
        norm = tf.sqrt(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True) + op.eps)
        return x / norm * weights[op.name]["scale"]
    if isinstance(op, Identity):
        return values[op.bottom]
    if isinstance(op, Flatten):
        x = tensor(op.bottom)
        return tf.reshape(x, [tf.shape(x)[0], -1])
    if isinstance(op, Reshape):
        x = tensor(op.bottom)
        return tf.reshape(x, [tf.shape(x)[0], -1, op.last])
    if isinstance(op, Softmax):
        return tf.nn.softmax(tensor(op.bottom), axis=-1)
    if isinstance(op, Concat):
        parts = [values[b] for b in op.bottoms]
        if all(isinstance(v, np.ndarray) for v in parts):
            return np.concatenate(parts, axis=op.axis)
        return tf.concat([tensor(b) for b in op.bottoms], axis=op.axis)
    if isinstance(op, PriorBox):
        x = tensor(op.bottom)
        if x.shape[1] is None or x.shape[2] is None:
            raise ValueError(f"{op.name}: feature map size must be static")
        boxes, variances = prior_boxes((int(x.shape[1]), int(x.shape[2])), input_hw, op.params)
        return np.stack([boxes.reshape(-1), variances.reshape(-1)])[np.newaxis]
    raise TypeError(f"cannot run {type(op).__name__} here")


# ---------------------------------------------------------------------------------------------
# The fine-tuned detector: the res10 trunk, new anchors and heads for small faces, any input size.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorLayer:
    """Anchors on one feature map: the trunk blob it reads, its stride in input pixels, anchor widths in pixels
    (height = width * ANCHOR_ASPECT), and the Caffe head (name prefix) whose first prior initialises its heads."""

    source: str
    step: int
    widths: tuple[float, ...]
    caffe_head: str


@dataclass(frozen=True)
class Lateral:
    """Top-down context: a 1x1 conv of `source`, upsampled x2 and added to `target` (zero-initialised)."""

    name: str
    source: str
    target: str


ANCHOR_ASPECT = 1.1  # median height / width of the faces in the face-mask set
TUNED_LAYERS = (
    AnchorLayer("conv4_3_norm", 8, (12.0, 20.0, 32.0), "conv4_3_norm"),
    AnchorLayer("fc7", 16, (48.0, 72.0), "fc7"),
    AnchorLayer("conv6_2_h", 32, (104.0, 152.0), "conv6_2"),
    AnchorLayer("conv7_2_h", 64, (216.0, 320.0), "conv7_2"),
)
TUNED_VARIANCES = (0.1, 0.1, 0.2, 0.2)
TUNED_PARAMS = DetectionParams(
    num_classes=2, background_label_id=0, nms_threshold=0.4, top_k=400, keep_top_k=200, confidence_threshold=0.05
)
# Ops up to here keep their Caffe weights: only the input normalisation. Fine-tuning the stride-2 and stride-4 filters
# too (they were frozen until `layer_64_1_sum` before) raised the validation face AP from 91.1 to 91.9-92.2 % in four
# runs, for ~20 % more time per detector epoch (model/EXPERIMENTS.md).
FROZEN_UNTIL = "data_bn"
# Context for small faces: fc7 (stride 16) added into conv4_3_norm (stride 8). Laterals apply in order, so a
# further one may read a blob an earlier one enriched.
TUNED_LATERALS = (Lateral("lateral_fc7", "fc7", "conv4_3_norm"),)
_TRUNK_TYPES = (Conv, Affine, Relu, MaxPool, Sum, L2Normalize)


def anchor_boxes(feature_hw: tuple[int, int], image_hw: tuple[int, int], layer: AnchorLayer) -> np.ndarray:
    """[H*W*A, 4] normalised (xmin, ymin, xmax, ymax), location-major, in `layer.widths` order per location."""
    fh, fw = feature_hw
    ih, iw = image_hw
    cy, cx = np.meshgrid((np.arange(fh) + 0.5) * layer.step, (np.arange(fw) + 0.5) * layer.step, indexing="ij")
    half_w = np.asarray(layer.widths, np.float64)[None, :] / 2.0
    half_h = half_w * ANCHOR_ASPECT
    cx, cy = cx.reshape(-1, 1), cy.reshape(-1, 1)
    boxes = np.stack([(cx - half_w) / iw, (cy - half_h) / ih, (cx + half_w) / iw, (cy + half_h) / ih], axis=-1)
    return boxes.reshape(-1, 4).astype(np.float32)


def encode_boxes(boxes: np.ndarray, priors: np.ndarray, variances: tuple[float, ...] = TUNED_VARIANCES) -> np.ndarray:
    """The inverse of `decode_boxes`: (xmin, ymin, xmax, ymax) [P,4] against priors [P,4] to (dx, dy, dw, dh)."""
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    pcx, pcy = (priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2
    bw = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-6)
    bh = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
    bcx, bcy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return np.stack(
        [
            (bcx - pcx) / pw / variances[0],
            (bcy - pcy) / ph / variances[1],
            np.log(bw / pw) / variances[2],
            np.log(bh / ph) / variances[3],
        ],
        axis=-1,
    ).astype(np.float32)


class TunedFaceDetector(tf.Module):
    """The res10 trunk (Caffe weights, then fine-tuned) with new heads: anchors from 12 px, fc7 context added at
    stride 8. Fully convolutional: `input_hw` is only where the priors are laid out. Input as `FaceDetector`'s."""

    def __init__(
        self,
        net: CaffeNet,
        input_hw: tuple[int, int],
        layers: tuple[AnchorLayer, ...] = TUNED_LAYERS,
        params: DetectionParams = TUNED_PARAMS,
        laterals: tuple[Lateral, ...] = TUNED_LATERALS,
        name: str = "tuned_face_detector",
    ) -> None:
        super().__init__(name=name)
        self._input_hw = input_hw
        self._params = params
        self.layers = layers
        self.laterals = laterals
        self._input_name = net.input_name
        self._ops = tuple(
            op
            for op in net.ops
            if isinstance(op, _TRUNK_TYPES) and "mbox" not in op.name and not op.name.startswith(("conv8", "conv9"))
        )
        tops = {op.top for op in self._ops}
        wanted = {layer.source for layer in layers} | {b for lat in laterals for b in (lat.source, lat.target)}
        missing = sorted(wanted - tops)
        if missing:
            raise ValueError(f"the network lacks source blobs {missing}")
        caffe_convs = {op.name: op for op in net.ops if isinstance(op, Conv)}
        frozen = True
        self.weights: dict[str, dict[str, tf.Variable]] = {}
        with self.name_scope:
            for op in self._ops:
                if isinstance(op, Conv):
                    values = {"kernel": op.kernel, "bias": op.bias}
                elif isinstance(op, Affine):
                    values = {"scale": op.scale, "shift": op.shift}
                elif isinstance(op, L2Normalize):
                    values = {"scale": op.scale}
                else:
                    values = {}
                if values:
                    self.weights[op.name] = {
                        k: tf.Variable(v.astype(np.float32), trainable=not frozen, name=f"{op.name}/{k}")
                        for k, v in values.items()
                    }
                if op.name == FROZEN_UNTIL:
                    frozen = False
            channels = self._channel_counts()
            for lat in laterals:
                self.weights[lat.name] = {
                    "kernel": tf.Variable(
                        tf.zeros([1, 1, channels[lat.source], channels[lat.target]]), name=f"{lat.name}/kernel"
                    ),
                    "bias": tf.Variable(tf.zeros([channels[lat.target]]), name=f"{lat.name}/bias"),
                }
            for layer in layers:
                for kind, width in (("loc", 4), ("conf", 2)):
                    src = caffe_convs[f"{layer.caffe_head}_mbox_{kind}"]
                    # every anchor starts from the Caffe head's first prior (its smallest square box)
                    kernel = np.concatenate([src.kernel[..., :width]] * len(layer.widths), axis=-1)
                    bias = np.concatenate([src.bias[:width]] * len(layer.widths))
                    self.weights[f"{layer.source}_{kind}"] = {
                        "kernel": tf.Variable(kernel.astype(np.float32), name=f"{layer.source}_{kind}/kernel"),
                        "bias": tf.Variable(bias.astype(np.float32), name=f"{layer.source}_{kind}/bias"),
                    }

    def _channel_counts(self) -> dict[str, int]:
        """Channels of every trunk blob, followed through the ops from the 3-channel input."""
        counts = {self._input_name: 3}
        for op in self._ops:
            if isinstance(op, Conv):
                counts[op.top] = int(op.kernel.shape[-1])
            else:
                counts[op.top] = counts[op.bottoms[0] if isinstance(op, Sum) else op.bottom]
        return counts

    @property
    def input_hw(self) -> tuple[int, int]:
        return self._input_hw

    @property
    def params(self) -> DetectionParams:
        return self._params

    def variables_by_name(self) -> dict[str, tf.Variable]:
        """Every weight as `<op>/<kind>`: the keys of the weights file."""
        return {f"{op}/{kind}": v for op, ws in self.weights.items() for kind, v in ws.items()}

    def load_weights(self, arrays: dict[str, np.ndarray]) -> None:
        """Assign a weights file's arrays; every variable must be present with its shape."""
        variables = self.variables_by_name()
        missing = sorted(set(variables) - set(arrays))
        if missing:
            raise ValueError(f"weights lack {missing[:5]}{'...' if len(missing) > 5 else ''}")
        for key, var in variables.items():
            if tuple(arrays[key].shape) != tuple(var.shape):
                raise ValueError(f"weight {key} has shape {arrays[key].shape}, want {tuple(var.shape)}")
            var.assign(arrays[key].astype(np.float32))

    def heads(self, blob: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor, np.ndarray]:
        """loc [N,P,4], class logits [N,P,2] (background, face), priors [P,4] for the blob's static size.

        `training` only changes how the dilated conv is computed (the same numbers, a differentiable way).
        """
        values: dict[str, Blob] = {self._input_name: tf.convert_to_tensor(blob, tf.float32)}
        sources: dict[str, tf.Tensor] = {}
        wanted = {layer.source for layer in self.layers} | {b for lat in self.laterals for b in (lat.source, lat.target)}
        for op in self._ops:
            if training and isinstance(op, Conv) and op.dilation > 1:
                values[op.top] = self._dilated(op, values[op.bottom])
            else:
                values[op.top] = apply_op(op, values, self.weights, self._input_hw)
            if op.top in wanted:
                sources[op.top] = values[op.top]  # the latest value: after in-place ReLUs of the same blob
        for lat in self.laterals:
            w = self.weights[lat.name]
            top_down = tf.nn.bias_add(tf.nn.conv2d(sources[lat.source], w["kernel"], 1, "VALID"), w["bias"])
            target = sources[lat.target]
            sources[lat.target] = target + tf.image.resize(top_down, tf.shape(target)[1:3], method="nearest")
        hw = (int(blob.shape[1]), int(blob.shape[2]))
        locs: list[tf.Tensor] = []
        logits: list[tf.Tensor] = []
        priors: list[np.ndarray] = []
        for layer in self.layers:
            x = sources[layer.source]
            fh, fw = int(x.shape[1]), int(x.shape[2])
            for kind, out, width in (("loc", locs, 4), ("conf", logits, 2)):
                w = self.weights[f"{layer.source}_{kind}"]
                y = tf.nn.bias_add(tf.nn.conv2d(x, w["kernel"], 1, [[0, 0], [1, 1], [1, 1], [0, 0]]), w["bias"])
                out.append(tf.reshape(y, [tf.shape(y)[0], fh * fw * len(layer.widths), width]))
            priors.append(anchor_boxes((fh, fw), hw, layer))
        return tf.concat(locs, axis=1), tf.concat(logits, axis=1), np.concatenate(priors)

    def prior_boxes(self) -> np.ndarray:
        """The anchors [P,4] (xmin, ymin, xmax, ymax) normalised to `input_hw`, float32, in the heads' order."""
        _, _, priors = self.heads(tf.zeros([1, *self._input_hw, 3], tf.float32))
        return priors

    def _dilated(self, op: Conv, x: Blob) -> tf.Tensor:
        """A dilated conv through space_to_batch: TensorFlow's CPU kernels have no gradient for dilated conv2d."""
        if op.stride != 1:
            raise ValueError(f"{op.name}: dilated convolutions must have stride 1")
        w = self.weights[op.name]
        p = op.pad
        y = tf.nn.atrous_conv2d(tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]), w["kernel"], op.dilation, "VALID")
        return tf.nn.bias_add(y, w["bias"])

    def __call__(self, blob: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Detect faces, as `FaceDetector.__call__` answers."""
        loc, logits, priors = self.heads(blob)
        variances = np.tile(np.asarray(TUNED_VARIANCES, np.float32), (len(priors), 1))
        caffe_priors = np.stack([priors.reshape(-1), variances.reshape(-1)])[np.newaxis]
        batch = tf.shape(loc)[0]
        return detection_output(
            tf.reshape(loc, [batch, -1]), tf.reshape(tf.nn.softmax(logits, axis=-1), [batch, -1]), caffe_priors, self._params
        )
