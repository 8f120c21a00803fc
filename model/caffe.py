"""Reading a Caffe SSD model: prototxt text format, weights through OpenCV, and the folded layer list that `ssd` runs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np

logger = logging.getLogger(__name__)

# A protobuf text-format message: every field is repeated (a list), values are scalars or messages.
Scalar: TypeAlias = str | int | float | bool
Message: TypeAlias = "dict[str, list[Scalar | Message]]"

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}:])|([^\s{}:#"]+))')


class CaffeFormatError(ValueError):
    """The prototxt is malformed or uses a layer or option this converter does not implement."""


def _tokens(text: str) -> Iterator[str]:
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                return
            raise CaffeFormatError(f"cannot parse prototxt at offset {pos}: {text[pos : pos + 40]!r}")
        pos = m.end()
        if m.group(1) is not None:
            continue
        yield next(g for g in m.groups()[1:] if g is not None)


def _scalar(token: str) -> Scalar:
    if token.startswith('"'):
        return bytes(token[1:-1], "utf-8").decode("unicode_escape")
    if token in ("true", "false"):
        return token == "true"
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        return token  # an enum name such as MAX or CENTER_SIZE


def parse_prototxt(text: str) -> Message:
    """Parse protobuf text format (what Caffe's .prototxt files are) into nested dicts of lists."""
    root: Message = {}
    stack: list[Message] = [root]
    tokens = _tokens(text)
    for tok in tokens:
        if tok == "}":
            if len(stack) == 1:
                raise CaffeFormatError("unbalanced '}' in prototxt")
            stack.pop()
            continue
        key = tok
        nxt = next(tokens, None)
        if nxt == ":":
            nxt = next(tokens, None)
        if nxt is None:
            raise CaffeFormatError(f"prototxt ends after field {key!r}")
        if nxt == "{":
            child: Message = {}
            stack[-1].setdefault(key, []).append(child)
            stack.append(child)
        else:
            stack[-1].setdefault(key, []).append(_scalar(nxt))
    if len(stack) != 1:
        raise CaffeFormatError("unbalanced '{' in prototxt")
    return root


def _one(msg: Message, key: str, default: Scalar | None = None) -> Scalar:
    values = msg.get(key, [])
    if not values:
        if default is None:
            raise CaffeFormatError(f"missing field {key!r}")
        return default
    value = values[-1]
    if isinstance(value, dict):
        raise CaffeFormatError(f"field {key!r} is a message, expected a value")
    return value


def _sub(msg: Message, key: str) -> Message:
    values = msg.get(key, [])
    value = values[-1] if values else {}
    if not isinstance(value, dict):
        raise CaffeFormatError(f"field {key!r} is a value, expected a message")
    return value


def _floats(msg: Message, key: str) -> tuple[float, ...]:
    return tuple(float(v) for v in msg.get(key, []) if not isinstance(v, dict))


def _strs(msg: Message, key: str) -> tuple[str, ...]:
    return tuple(str(v) for v in msg.get(key, []) if not isinstance(v, dict))


# ---------------------------------------------------------------------------------------------
# Layers as TensorFlow will run them: NHWC tensors, axes already translated, BatchNorm folded.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conv:
    """2-D convolution with Caffe's symmetric zero padding; kernel is HWIO."""

    name: str
    bottom: str
    top: str
    kernel: np.ndarray
    bias: np.ndarray
    stride: int
    pad: int
    dilation: int


@dataclass(frozen=True)
class Affine:
    """Per-channel y = x * scale + shift (a BatchNorm and/or Scale layer that could not be folded into a conv)."""

    name: str
    bottom: str
    top: str
    scale: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True)
class Relu:
    name: str
    bottom: str
    top: str


@dataclass(frozen=True)
class MaxPool:
    """Caffe max pooling: output size rounds up, so the bottom/right edge may need extra padding."""

    name: str
    bottom: str
    top: str
    kernel: int
    stride: int
    pad: int


@dataclass(frozen=True)
class Sum:
    name: str
    bottoms: tuple[str, ...]
    top: str


@dataclass(frozen=True)
class L2Normalize:
    """SSD's Normalize layer: L2 across channels at each position, then a learned per-channel scale."""

    name: str
    bottom: str
    top: str
    scale: np.ndarray
    eps: float


@dataclass(frozen=True)
class Identity:
    """A Permute from NCHW to NHWC: our tensors are NHWC already."""

    name: str
    bottom: str
    top: str


@dataclass(frozen=True)
class Flatten:
    name: str
    bottom: str
    top: str


@dataclass(frozen=True)
class Reshape:
    """Reshape to [batch, -1, last] (Caffe `dim: 0 dim: -1 dim: k`)."""

    name: str
    bottom: str
    top: str
    last: int


@dataclass(frozen=True)
class Softmax:
    """Softmax over the last axis."""

    name: str
    bottom: str
    top: str


@dataclass(frozen=True)
class Concat:
    name: str
    bottoms: tuple[str, ...]
    top: str
    axis: int


@dataclass(frozen=True)
class PriorBoxParams:
    """Caffe `prior_box_param`, sizes in input pixels."""

    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]
    aspect_ratios: tuple[float, ...]
    flip: bool
    clip: bool
    variances: tuple[float, float, float, float]
    step: float
    offset: float


@dataclass(frozen=True)
class PriorBox:
    """Anchors for one feature map (computed in numpy from the feature map's static shape)."""

    name: str
    bottom: str
    top: str
    params: PriorBoxParams


@dataclass(frozen=True)
class DetectionParams:
    """Caffe `detection_output_param` for one foreground class with shared locations."""

    num_classes: int
    background_label_id: int
    nms_threshold: float
    top_k: int
    keep_top_k: int
    confidence_threshold: float


@dataclass(frozen=True)
class DetectionOutput:
    name: str
    loc: str
    conf: str
    priors: str
    top: str
    params: DetectionParams


Op: TypeAlias = (
    Conv
    | Affine
    | Relu
    | MaxPool
    | Sum
    | L2Normalize
    | Identity
    | Flatten
    | Reshape
    | Softmax
    | Concat
    | PriorBox
    | DetectionOutput
)


@dataclass(frozen=True)
class CaffeNet:
    """A converted network: its input blob name and size, and its layers in execution order."""

    input_name: str
    input_hw: tuple[int, int]
    ops: tuple[Op, ...]


# Blob kinds, tracked while converting so each axis and flatten order is translated correctly.
_MAP, _MAP_NHWC, _FLAT, _GROUPED, _PRIORS = "map", "map_nhwc", "flat", "grouped", "priors"


def _affine_from_batchnorm(blobs: Sequence[np.ndarray], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Caffe BatchNorm blobs (mean, variance, scale factor) to y = x * a + b."""
    if len(blobs) < 2:
        raise CaffeFormatError("BatchNorm needs mean and variance blobs")
    factor = float(blobs[2].ravel()[0]) if len(blobs) > 2 else 1.0
    factor = 1.0 / factor if factor != 0.0 else 0.0
    mean = blobs[0].ravel().astype(np.float64) * factor
    var = blobs[1].ravel().astype(np.float64) * factor
    a = 1.0 / np.sqrt(var + eps)
    return a, -mean * a


def fold_affines(ops: Sequence[Op]) -> list[Op]:
    """Merge each Affine into the Conv or Affine that produced its input, where nothing else reads that input.

    Only backwards folding is exact: folding into a following conv would be wrong at its zero-padded border.
    """
    readers: dict[str, int] = {}
    for op in ops:
        for b in _bottoms(op):
            readers[b] = readers.get(b, 0) + 1
    out: list[Op] = []
    for op in ops:
        prev = out[-1] if out else None
        if (
            isinstance(op, Affine)
            and isinstance(prev, (Conv, Affine))
            and prev.top == op.bottom
            and (op.top == op.bottom or readers.get(op.bottom, 0) == 1)
        ):
            if isinstance(prev, Conv):
                merged: Op = Conv(
                    name=prev.name,
                    bottom=prev.bottom,
                    top=op.top,
                    kernel=prev.kernel * op.scale.astype(prev.kernel.dtype),
                    bias=prev.bias * op.scale + op.shift,
                    stride=prev.stride,
                    pad=prev.pad,
                    dilation=prev.dilation,
                )
            else:
                merged = Affine(
                    name=prev.name,
                    bottom=prev.bottom,
                    top=op.top,
                    scale=prev.scale * op.scale,
                    shift=prev.shift * op.scale + op.shift,
                )
            out[-1] = merged
            continue
        out.append(op)
    return out


def _bottoms(op: Op) -> tuple[str, ...]:
    if isinstance(op, (Sum, Concat)):
        return op.bottoms
    if isinstance(op, DetectionOutput):
        return (op.loc, op.conf, op.priors)
    return (op.bottom,)


def convert(prototxt: Message, blobs: Mapping[str, Sequence[np.ndarray]], fold: bool = True) -> CaffeNet:
    """Translate a parsed deploy prototxt plus its weights into TF-ready ops (NHWC, float32)."""
    inputs = _strs(prototxt, "input")
    if len(inputs) != 1:
        raise CaffeFormatError(f"expected one network input, found {inputs}")
    dims = [int(d) for d in _floats(_sub(prototxt, "input_shape"), "dim")]
    if len(dims) != 4 or dims[1] != 3:
        raise CaffeFormatError(f"expected input_shape N,3,H,W, found {dims}")
    kinds: dict[str, str] = {inputs[0]: _MAP}
    ops: list[Op] = []

    def kind_of(blob: str, *allowed: str) -> str:
        kind = kinds.get(blob)
        if kind is None:
            raise CaffeFormatError(f"blob {blob!r} used before it is produced")
        if allowed and kind not in allowed:
            raise CaffeFormatError(f"blob {blob!r} is {kind}, expected {allowed}")
        return kind

    for value in prototxt.get("layer", []):
        if not isinstance(value, dict):
            raise CaffeFormatError("layer must be a message")
        layer = value
        name, ltype = str(_one(layer, "name")), str(_one(layer, "type"))
        phases = [str(_one(inc, "phase", "TEST")) for inc in layer.get("include", []) if isinstance(inc, dict)]
        if phases and "TEST" not in phases:
            continue
        bottoms, tops = _strs(layer, "bottom"), _strs(layer, "top")
        if len(tops) != 1:
            raise CaffeFormatError(f"layer {name}: expected one top, found {tops}")
        top = tops[0]
        weights = list(blobs.get(name, ()))
        op: Op
        if ltype == "Convolution":
            kind_of(bottoms[0], _MAP)
            p = _sub(layer, "convolution_param")
            if int(_one(p, "group", 1)) != 1:
                raise CaffeFormatError(f"layer {name}: grouped convolution is not implemented")
            for key in ("pad_h", "pad_w", "stride_h", "stride_w", "kernel_h", "kernel_w"):
                if key in p:
                    raise CaffeFormatError(f"layer {name}: {key} is not implemented")
            kernel = np.ascontiguousarray(weights[0].transpose(2, 3, 1, 0)).astype(np.float32)
            has_bias = bool(_one(p, "bias_term", True))
            bias = weights[1].ravel().astype(np.float64) if has_bias else np.zeros(kernel.shape[3])
            op = Conv(
                name=name,
                bottom=bottoms[0],
                top=top,
                kernel=kernel,
                bias=bias,
                stride=int(_one(p, "stride", 1)),
                pad=int(_one(p, "pad", 0)),
                dilation=int(_one(p, "dilation", 1)),
            )
            kinds[top] = _MAP
        elif ltype == "BatchNorm":
            kind_of(bottoms[0], _MAP)
            eps = float(_one(_sub(layer, "batch_norm_param"), "eps", 1e-5))
            scale, shift = _affine_from_batchnorm(weights, eps)
            op = Affine(name=name, bottom=bottoms[0], top=top, scale=scale, shift=shift)
            kinds[top] = _MAP
        elif ltype == "Scale":
            kind_of(bottoms[0], _MAP)
            if len(bottoms) != 1:
                raise CaffeFormatError(f"layer {name}: Scale with a second bottom is not implemented")
            p = _sub(layer, "scale_param")
            gamma = weights[0].ravel().astype(np.float64)
            beta = weights[1].ravel().astype(np.float64) if bool(_one(p, "bias_term", False)) else np.zeros_like(gamma)
            op = Affine(name=name, bottom=bottoms[0], top=top, scale=gamma, shift=beta)
            kinds[top] = _MAP
        elif ltype == "ReLU":
            kind_of(bottoms[0], _MAP)
            if float(_one(_sub(layer, "relu_param"), "negative_slope", 0.0)) != 0.0:
                raise CaffeFormatError(f"layer {name}: leaky ReLU is not implemented")
            op = Relu(name=name, bottom=bottoms[0], top=top)
            kinds[top] = _MAP
        elif ltype == "Pooling":
            kind_of(bottoms[0], _MAP)
            p = _sub(layer, "pooling_param")
            if str(_one(p, "pool", "MAX")) != "MAX" or bool(_one(p, "global_pooling", False)):
                raise CaffeFormatError(f"layer {name}: only MAX pooling is implemented")
            op = MaxPool(
                name=name,
                bottom=bottoms[0],
                top=top,
                kernel=int(_one(p, "kernel_size")),
                stride=int(_one(p, "stride", 1)),
                pad=int(_one(p, "pad", 0)),
            )
            kinds[top] = _MAP
        elif ltype == "Eltwise":
            for b in bottoms:
                kind_of(b, _MAP)
            p = _sub(layer, "eltwise_param")
            if str(_one(p, "operation", "SUM")) != "SUM" or "coeff" in p:
                raise CaffeFormatError(f"layer {name}: only plain SUM Eltwise is implemented")
            op = Sum(name=name, bottoms=bottoms, top=top)
            kinds[top] = _MAP
        elif ltype == "Normalize":
            kind_of(bottoms[0], _MAP)
            p = _sub(layer, "norm_param")
            if bool(_one(p, "across_spatial", True)):
                raise CaffeFormatError(f"layer {name}: across_spatial Normalize is not implemented")
            scale = weights[0].ravel().astype(np.float64)
            if bool(_one(p, "channel_shared", True)):
                scale = np.full(1, scale[0])
            op = L2Normalize(name=name, bottom=bottoms[0], top=top, scale=scale, eps=float(_one(p, "eps", 1e-10)))
            kinds[top] = _MAP
        elif ltype == "Permute":
            kind_of(bottoms[0], _MAP)
            order = [int(o) for o in _floats(_sub(layer, "permute_param"), "order")]
            if order != [0, 2, 3, 1]:
                raise CaffeFormatError(f"layer {name}: only Permute 0,2,3,1 (NCHW to NHWC) is implemented")
            op = Identity(name=name, bottom=bottoms[0], top=top)
            kinds[top] = _MAP_NHWC
        elif ltype == "Flatten":
            kind_of(bottoms[0], _MAP_NHWC, _GROUPED, _FLAT)
            if int(_one(_sub(layer, "flatten_param"), "axis", 1)) != 1:
                raise CaffeFormatError(f"layer {name}: only Flatten axis 1 is implemented")
            op = Flatten(name=name, bottom=bottoms[0], top=top)
            kinds[top] = _FLAT
        elif ltype == "Reshape":
            kind_of(bottoms[0], _FLAT)
            shape = [int(d) for d in _floats(_sub(_sub(layer, "reshape_param"), "shape"), "dim")]
            if len(shape) != 3 or shape[:2] != [0, -1]:
                raise CaffeFormatError(f"layer {name}: only Reshape 0,-1,k is implemented")
            op = Reshape(name=name, bottom=bottoms[0], top=top, last=shape[2])
            kinds[top] = _GROUPED
        elif ltype == "Softmax":
            kind_of(bottoms[0], _GROUPED)
            if int(_one(_sub(layer, "softmax_param"), "axis", 1)) != 2:
                raise CaffeFormatError(f"layer {name}: only Softmax over axis 2 of [N,P,k] is implemented")
            op = Softmax(name=name, bottom=bottoms[0], top=top)
            kinds[top] = _GROUPED
        elif ltype == "Concat":
            first = kind_of(bottoms[0])
            for b in bottoms[1:]:
                kind_of(b, first)
            axis = int(_one(_sub(layer, "concat_param"), "axis", 1))
            tf_axis = {(_MAP, 1): 3, (_FLAT, 1): 1, (_PRIORS, 2): 2}.get((first, axis))
            if tf_axis is None:
                raise CaffeFormatError(f"layer {name}: Concat of {first} blobs on axis {axis} is not implemented")
            op = Concat(name=name, bottoms=bottoms, top=top, axis=tf_axis)
            kinds[top] = first
        elif ltype == "PriorBox":
            kind_of(bottoms[0], _MAP)
            p = _sub(layer, "prior_box_param")
            variances = _floats(p, "variance")
            if len(variances) != 4:
                raise CaffeFormatError(f"layer {name}: expected 4 variances, found {variances}")
            if "step_h" in p or "step_w" in p or "img_size" in p or "img_h" in p:
                raise CaffeFormatError(f"layer {name}: separate step/img sizes are not implemented")
            op = PriorBox(
                name=name,
                bottom=bottoms[0],
                top=top,
                params=PriorBoxParams(
                    min_sizes=_floats(p, "min_size"),
                    max_sizes=_floats(p, "max_size"),
                    aspect_ratios=_floats(p, "aspect_ratio"),
                    flip=bool(_one(p, "flip", True)),
                    clip=bool(_one(p, "clip", False)),
                    variances=(variances[0], variances[1], variances[2], variances[3]),
                    step=float(_one(p, "step", 0.0)),
                    offset=float(_one(p, "offset", 0.5)),
                ),
            )
            kinds[top] = _PRIORS
        elif ltype == "DetectionOutput":
            kind_of(bottoms[0], _FLAT)
            kind_of(bottoms[1], _FLAT)
            kind_of(bottoms[2], _PRIORS)
            p = _sub(layer, "detection_output_param")
            nms = _sub(p, "nms_param")
            unsupported = (
                not bool(_one(p, "share_location", True))
                or str(_one(p, "code_type", "CORNER")) != "CENTER_SIZE"
                or bool(_one(p, "variance_encoded_in_target", False))
                or float(_one(nms, "eta", 1.0)) != 1.0
                or int(_one(p, "num_classes")) != 2
            )
            if unsupported:
                raise CaffeFormatError(
                    f"layer {name}: only shared-location CENTER_SIZE decoding of one foreground class is implemented"
                )
            params = DetectionParams(
                num_classes=int(_one(p, "num_classes")),
                background_label_id=int(_one(p, "background_label_id", 0)),
                nms_threshold=float(_one(nms, "nms_threshold", 0.3)),
                top_k=int(_one(nms, "top_k", -1)),
                keep_top_k=int(_one(p, "keep_top_k", -1)),
                confidence_threshold=float(_one(p, "confidence_threshold", 0.0)),
            )
            if params.background_label_id not in (0, 1) or params.top_k < 1 or params.keep_top_k < 1:
                raise CaffeFormatError(f"layer {name}: unsupported detection params {params}")
            op = DetectionOutput(name=name, loc=bottoms[0], conf=bottoms[1], priors=bottoms[2], top=top, params=params)
            kinds[top] = "detections"
        else:
            raise CaffeFormatError(f"layer {name}: type {ltype} is not implemented")
        ops.append(op)
    folded = fold_affines(ops) if fold else ops
    logger.info("caffe net converted layers=%d ops=%d folded=%s", len(ops), len(folded), fold)
    return CaffeNet(input_name=inputs[0], input_hw=(dims[2], dims[3]), ops=tuple(folded))


def read_blobs(prototxt: Path, caffemodel: Path) -> dict[str, list[np.ndarray]]:
    """Every layer's weight blobs, read with OpenCV's Caffe importer (no Caffe or protobuf schema needed)."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    blobs: dict[str, list[np.ndarray]] = {}
    for name in net.getLayerNames():
        layer = net.getLayer(name)
        blobs[name] = [np.asarray(b, dtype=np.float32).copy() for b in layer.blobs]
    return blobs


def load(prototxt: Path, caffemodel: Path, fold: bool = True) -> CaffeNet:
    """Parse `prototxt`, read the weights of `caffemodel`, and convert."""
    return convert(parse_prototxt(prototxt.read_text(encoding="utf-8")), read_blobs(prototxt, caffemodel), fold=fold)
