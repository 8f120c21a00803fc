"""Pure pieces of the model export: prototxt parsing, BatchNorm folding, pooling padding, priors, decoding, NMS, crops."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from maskwatch.model_api import INPUT_IMAGES, MODEL_NAME
from serving import caffe, export
from serving.caffe import Affine, CaffeFormatError, Conv, DetectionParams, PriorBoxParams, Relu, Sum
from serving.graph import compact, crop_boxes, pad_for_crops, resize_like_opencv, yxyx_clipped
from serving.model_info import ModelInfo
from serving.ssd import caffe_pool_padding, decode_boxes, detection_output, prior_boxes

pytestmark = pytest.mark.timeout(60)

# --------------------------------------------------------------------------------------------- prototxt


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name: "x"', {"name": ["x"]}),
        ("a: 1 a: 2", {"a": [1, 2]}),
        ("f: 0.5 g: -3 h: 1e-3", {"f": [0.5], "g": [-3], "h": [0.001]}),
        ("b: true c: false pool: MAX", {"b": [True], "c": [False], "pool": ["MAX"]}),
        ("m { k: 1 } m { k: 2 }", {"m": [{"k": [1]}, {"k": [2]}]}),
        ("m: { k: 1 }", {"m": [{"k": [1]}]}),
        ("stride: 1 # 2\npad: 3", {"stride": [1], "pad": [3]}),
        ('s: "a \\"q\\" b"', {"s": ['a "q" b']}),
        ("", {}),
    ],
)
def test_parse_prototxt(text: str, expected: caffe.Message) -> None:
    assert caffe.parse_prototxt(text) == expected


@pytest.mark.parametrize(("text", "match"), [("m { k: 1", "unbalanced"), ("}", "unbalanced"), ("k:", "ends after")])
def test_parse_prototxt_errors(text: str, match: str) -> None:
    with pytest.raises(CaffeFormatError, match=match):
        caffe.parse_prototxt(text)


def _net(layers: str) -> str:
    return 'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n' + layers


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ('layer { name: "l" type: "LRN" bottom: "data" top: "l" }', "LRN is not implemented"),
        ('layer { name: "l" type: "ReLU" bottom: "nope" top: "l" }', "used before"),
        (
            'layer { name: "l" type: "Pooling" bottom: "data" top: "l" pooling_param { pool: AVE kernel_size: 2 } }',
            "only MAX",
        ),
        ('layer { name: "l" type: "Flatten" bottom: "data" top: "l" }', "is map"),
        (
            'layer { name: "l" type: "Permute" bottom: "data" top: "l" permute_param { order: 0 order: 3 order: 2 order: 1 } }',
            "only Permute",
        ),
    ],
)
def test_convert_refuses_what_it_cannot_translate(layers: str, match: str) -> None:
    with pytest.raises(CaffeFormatError, match=match):
        caffe.convert(caffe.parse_prototxt(_net(layers)), {})


def test_convert_skips_train_only_layers_and_maps_axes() -> None:
    text = _net(
        """
        layer { name: "drop" type: "Dropout" bottom: "data" top: "data" include { phase: TRAIN } }
        layer { name: "r" type: "ReLU" bottom: "data" top: "data" }
        layer { name: "p" type: "Permute" bottom: "data" top: "p" permute_param { order: 0 order: 2 order: 3 order: 1 } }
        layer { name: "f" type: "Flatten" bottom: "p" top: "f" }
        layer { name: "c" type: "Concat" bottom: "f" bottom: "f" top: "c" concat_param { axis: 1 } }
        """
    )
    net = caffe.convert(caffe.parse_prototxt(text), {})
    assert [type(op).__name__ for op in net.ops] == ["Relu", "Identity", "Flatten", "Concat"]
    assert net.input_hw == (8, 8)
    concat = net.ops[-1]
    assert isinstance(concat, caffe.Concat) and concat.axis == 1


# --------------------------------------------------------------------------------------------- folding


def test_batchnorm_blobs_follow_caffe_scale_factor() -> None:
    mean, var, factor = np.array([[20.0]]), np.array([[8.0]]), np.array([[2.0]])
    a, b = caffe._affine_from_batchnorm([mean, var, factor], eps=0.0)
    x = 13.0
    assert x * a[0] + b[0] == pytest.approx((x - 10.0) / 2.0)


def _conv(name: str, bottom: str, top: str, rng: np.random.Generator, cin: int = 3, cout: int = 4) -> Conv:
    return Conv(
        name=name,
        bottom=bottom,
        top=top,
        kernel=rng.normal(size=(3, 3, cin, cout)).astype(np.float32),
        bias=rng.normal(size=cout),
        stride=1,
        pad=1,
        dilation=1,
    )


def _affine(name: str, bottom: str, top: str, rng: np.random.Generator, c: int = 4) -> Affine:
    return Affine(name=name, bottom=bottom, top=top, scale=rng.uniform(0.5, 2, c), shift=rng.normal(size=c))


def _run(ops: list[caffe.Op], x: np.ndarray) -> dict[str, np.ndarray]:
    values: dict[str, tf.Tensor] = {"data": tf.constant(x)}
    for op in ops:
        if isinstance(op, Conv):
            y = tf.nn.conv2d(values[op.bottom], op.kernel, 1, [[0, 0], [op.pad] * 2, [op.pad] * 2, [0, 0]])
            values[op.top] = y + op.bias.astype(np.float32)
        elif isinstance(op, Affine):
            values[op.top] = values[op.bottom] * op.scale.astype(np.float32) + op.shift.astype(np.float32)
        elif isinstance(op, Relu):
            values[op.top] = tf.nn.relu(values[op.bottom])
        elif isinstance(op, Sum):
            values[op.top] = tf.add_n([values[b] for b in op.bottoms])
    return {k: v.numpy() for k, v in values.items()}


def test_fold_conv_batchnorm_scale_in_place_is_exact() -> None:
    rng = np.random.default_rng(0)
    ops: list[caffe.Op] = [
        _conv("c", "data", "c", rng),
        _affine("bn", "c", "c", rng),
        _affine("sc", "c", "c", rng),
        Relu("r", "c", "c"),
    ]
    folded = caffe.fold_affines(ops)
    assert [type(op).__name__ for op in folded] == ["Conv", "Relu"]
    x = rng.normal(size=(1, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(folded, x)["c"], _run(ops, x)["c"], atol=1e-4)


def test_fold_keeps_affines_whose_input_is_read_elsewhere() -> None:
    rng = np.random.default_rng(1)
    ops: list[caffe.Op] = [
        _conv("c", "data", "c", rng),
        _affine("bn", "c", "bn", rng),  # not in place, and "c" is also read by the sum
        _affine("sc", "bn", "bn", rng),
        Sum("s", ("c", "bn"), "s"),
    ]
    folded = caffe.fold_affines(ops)
    assert [op.name for op in folded] == ["c", "bn", "s"]  # BN and Scale merged, not folded into the conv
    x = rng.normal(size=(1, 5, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(folded, x)["s"], _run(ops, x)["s"], atol=1e-4)


# --------------------------------------------------------------------------------------------- pooling


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pad", "expected"),
    [
        (150, 3, 2, 0, (0, 1)),  # res10 conv1_pool: Caffe gives 75, floor would give 74
        (151, 3, 2, 0, (0, 0)),
        (4, 2, 2, 0, (0, 0)),
        (5, 3, 2, 1, (1, 1)),
        (6, 3, 2, 1, (1, 2)),  # rounding up adds a window that reaches past the symmetric pad
        (5, 2, 2, 1, (1, 0)),  # Caffe drops the last window that would start in the padding
    ],
)
def test_caffe_pool_padding(size: int, kernel: int, stride: int, pad: int, expected: tuple[int, int]) -> None:
    assert caffe_pool_padding(size, kernel, stride, pad) == expected
    before, after = expected
    caffe_out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if pad and (caffe_out - 1) * stride >= size + pad:
        caffe_out -= 1
    assert (size + before + after - kernel) // stride + 1 == caffe_out


# --------------------------------------------------------------------------------------------- priors


def _params(**kw: object) -> PriorBoxParams:
    base: dict[str, object] = {
        "min_sizes": (30.0,),
        "max_sizes": (60.0,),
        "aspect_ratios": (2.0,),
        "flip": True,
        "clip": False,
        "variances": (0.1, 0.1, 0.2, 0.2),
        "step": 8.0,
        "offset": 0.5,
    }
    base.update(kw)
    return PriorBoxParams(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("params", "per_location"),
    [
        (_params(), 4),  # min, sqrt(min*max), 2, 1/2
        (_params(aspect_ratios=(2.0, 3.0)), 6),
        (_params(flip=False), 3),
        (_params(max_sizes=()), 3),
        (_params(aspect_ratios=(1.0, 2.0, 2.0)), 4),  # duplicates and 1 are ignored
    ],
)
def test_prior_count(params: PriorBoxParams, per_location: int) -> None:
    boxes, variances = prior_boxes((3, 2), (300, 300), params)
    assert boxes.shape == variances.shape == (3 * 2 * per_location, 4)
    np.testing.assert_allclose(variances, np.tile([0.1, 0.1, 0.2, 0.2], (len(boxes), 1)))


def test_prior_values_and_order() -> None:
    boxes, _ = prior_boxes((2, 2), (300, 300), _params())
    c = 4.0  # (0 + 0.5) * 8
    side = math.sqrt(30 * 60)
    w2, h2 = 30 * math.sqrt(2), 30 / math.sqrt(2)
    expected_first_location = np.array(
        [
            [c - 15, c - 15, c + 15, c + 15],
            [c - side / 2, c - side / 2, c + side / 2, c + side / 2],
            [c - w2 / 2, c - h2 / 2, c + w2 / 2, c + h2 / 2],
            [c - h2 / 2, c - w2 / 2, c + h2 / 2, c + w2 / 2],
        ]
    )
    np.testing.assert_allclose(boxes[:4], expected_first_location / 300, atol=1e-6)
    # location-major, row by row: the second location is one step to the right
    np.testing.assert_allclose(boxes[4:8, [0, 2]], boxes[:4, [0, 2]] + 8 / 300, atol=1e-6)
    np.testing.assert_allclose(boxes[8:12, [1, 3]], boxes[:4, [1, 3]] + 8 / 300, atol=1e-6)


def test_prior_step_defaults_to_image_over_feature_and_clip() -> None:
    boxes, _ = prior_boxes((1, 1), (300, 300), _params(step=0.0, min_sizes=(400.0,), max_sizes=(), clip=True))
    assert boxes[0].tolist() == [0.0, 0.0, 1.0, 1.0]
    unclipped, _ = prior_boxes((1, 1), (300, 300), _params(step=0.0, min_sizes=(400.0,), max_sizes=()))
    assert unclipped[0, 0] == pytest.approx((150 - 200) / 300)


# --------------------------------------------------------------------------------------------- decoding

PRIOR = np.array([[0.4, 0.2, 0.6, 0.6]], np.float32)  # centre (0.5, 0.4), size (0.2, 0.4)
VAR = np.array([[0.1, 0.1, 0.2, 0.2]], np.float32)


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        ([0, 0, 0, 0], [0.4, 0.2, 0.6, 0.6]),
        ([1, 0, 0, 0], [0.42, 0.2, 0.62, 0.6]),  # dx * 0.1 * width 0.2
        ([0, -1, 0, 0], [0.4, 0.16, 0.6, 0.56]),  # dy * 0.1 * height 0.4
        ([0, 0, math.log(2) / 0.2, 0], [0.3, 0.2, 0.7, 0.6]),  # width doubles about the centre
        ([0, 0, 0, -math.log(2) / 0.2], [0.4, 0.3, 0.6, 0.5]),  # height halves
    ],
)
def test_decode_boxes(loc: list[float], expected: list[float]) -> None:
    out = decode_boxes(np.array([[loc]], np.float32), PRIOR, VAR).numpy()
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-6)


def _detect(boxes: list[list[float]], scores: list[float], **kw: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DetectionOutput over priors that are the boxes themselves (zero offsets)."""
    n = len(boxes)
    priors = np.stack([np.array(boxes, np.float32).reshape(-1), np.tile(VAR[0], n)])[np.newaxis]
    s = np.array(scores, np.float32)
    conf = np.stack([1 - s, s], axis=-1).reshape(1, -1)
    params = DetectionParams(
        num_classes=2,
        background_label_id=0,
        nms_threshold=float(kw.get("nms", 0.45)),
        top_k=int(kw.get("top_k", 400)),
        keep_top_k=int(kw.get("keep", 5)),
        confidence_threshold=float(kw.get("conf", 0.01)),
    )
    b, sc, num = detection_output(tf.zeros([1, n * 4]), tf.constant(conf), priors, params)
    return b.numpy()[0], sc.numpy()[0], num.numpy()


A = [0.1, 0.1, 0.3, 0.3]
A_SHIFTED = [0.12, 0.1, 0.32, 0.3]  # IoU with A = 0.818
A_APART = [0.2, 0.1, 0.4, 0.3]  # IoU with A = 1/3
B = [0.6, 0.6, 0.9, 0.9]


@pytest.mark.parametrize(
    ("boxes", "scores", "kw", "kept_scores"),
    [
        ([A, B], [0.9, 0.8], {}, [0.9, 0.8]),
        ([B, A], [0.8, 0.9], {}, [0.9, 0.8]),  # sorted by score
        ([A, A_SHIFTED, B], [0.9, 0.95, 0.5], {}, [0.95, 0.5]),  # overlap > 0.45 suppressed
        ([A, A_APART], [0.9, 0.7], {}, [0.9, 0.7]),  # overlap 1/3 kept
        ([A, A_APART], [0.9, 0.7], {"nms": 0.3}, [0.9]),
        ([A, B], [0.9, 0.005], {}, [0.9]),  # under the confidence threshold
        ([A, B], [0.9, 0.8], {"keep": 1}, [0.9]),
        ([A, A_APART, B], [0.9, 0.2, 0.8], {"top_k": 2}, [0.9, 0.8]),  # only the top_k best enter NMS
    ],
)
def test_detection_output(
    boxes: list[list[float]], scores: list[float], kw: dict[str, float], kept_scores: list[float]
) -> None:
    out_boxes, out_scores, num = _detect(boxes, scores, **kw)
    k = len(kept_scores)
    assert num.tolist() == [k]
    np.testing.assert_allclose(out_scores[:k], kept_scores, atol=1e-6)
    assert not out_scores[k:].any() and not out_boxes[k:].any()  # padding rows are zeros
    for row, score in zip(out_boxes[:k], kept_scores, strict=True):
        source = int(np.argmin(np.abs(np.asarray(scores) - score)))
        np.testing.assert_allclose(row, np.asarray(boxes[source]), atol=1e-5)


# --------------------------------------------------------------------------------------------- graph pieces


def test_yxyx_clipped() -> None:
    out = yxyx_clipped(tf.constant([[-0.1, 0.2, 0.5, 1.3]])).numpy()
    np.testing.assert_allclose(out, [[0.2, 0.0, 1.0, 0.5]])


@pytest.mark.parametrize(
    ("keep", "key", "order"),
    [
        ([True, True, True], [0.5, 0.9, 0.7], [1, 2, 0]),
        ([True, False, True], [0.5, 0.9, 0.7], [2, 0, 1]),  # kept rows first, whatever the dropped row's key
        ([False, False, True], [0.0, 0.0, 0.3], [2, 0, 1]),  # dropped rows keep their order
    ],
)
def test_compact(keep: list[bool], key: list[float], order: list[int]) -> None:
    assert compact(tf.constant([keep]), tf.constant([key]), 3).numpy()[0].tolist() == order


@pytest.mark.parametrize(
    ("src_hw", "dst_hw"), [((480, 640), (300, 300)), ((120, 90), (300, 300)), ((300, 451), (300, 300))]
)
def test_resize_like_opencv_within_one_level(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(2)
    img = cv2.GaussianBlur(rng.integers(0, 256, (*src_hw, 3), dtype=np.uint8), (5, 5), 0)
    ours = resize_like_opencv(tf.constant(img), dst_hw).numpy()
    theirs = cv2.resize(img, (dst_hw[1], dst_hw[0]), interpolation=cv2.INTER_LINEAR)
    assert np.abs(ours - theirs).max() <= 1


@pytest.mark.parametrize(
    ("box_px", "image_hw", "batch_hw"),
    [
        ((40, 60, 200, 180), (300, 400), (300, 400)),  # downscale 160x120 -> 224
        ((100, 100, 150, 140), (300, 400), (480, 640)),  # upscale, image padded into a larger batch tensor
        ((0, 0, 120, 90), (300, 400), (300, 400)),  # at the top-left corner
        ((200, 330, 300, 400), (300, 400), (480, 640)),  # at the bottom-right corner, next to batch padding
    ],
)
def test_crop_boxes_sample_like_cv2_resize_of_the_region(
    box_px: tuple[int, int, int, int], image_hw: tuple[int, int], batch_hw: tuple[int, int]
) -> None:
    rng = np.random.default_rng(3)
    h, w = image_hw
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (7, 7), 0)
    padded = pad_for_crops(tf.constant(img), tf.constant(batch_hw))
    y0, x0, y1, x1 = box_px
    boxes = tf.constant([[y0 / h, x0 / w, y1 / h, x1 / w]], tf.float32)
    cb = crop_boxes(boxes, tf.constant([image_hw]), tf.shape(padded)[:2], 224)
    ours = tf.image.crop_and_resize(padded[tf.newaxis], cb, [0], [224, 224]).numpy()[0]
    theirs = cv2.resize(img[y0:y1, x0:x1], (224, 224), interpolation=cv2.INTER_LINEAR)
    # cv2 clamps at the region's edge; we read the real neighbours there, except at the image's own edge.
    my = 0 if y0 == 0 else math.ceil(224 / (y1 - y0) / 2) + 1
    mx = 0 if x0 == 0 else math.ceil(224 / (x1 - x0) / 2) + 1
    ey = 224 if y1 == h else 224 - (math.ceil(224 / (y1 - y0) / 2) + 1)
    ex = 224 if x1 == w else 224 - (math.ceil(224 / (x1 - x0) / 2) + 1)
    np.testing.assert_allclose(ours[my:ey, mx:ex], theirs[my:ey, mx:ex], atol=0.05)


# --------------------------------------------------------------------------------------------- export pieces


@pytest.mark.parametrize(
    ("argv", "ok"),
    [
        ([], True),
        (["--face-threshold", "0.35", "--version", "3", "--out", "x"], True),
        (["--face-threshold", "0"], False),
        (["--face-threshold", "1.5"], False),
        (["--version", "0"], False),
        (["--max-detections", "0"], False),
    ],
)
def test_parse_args(argv: list[str], ok: bool) -> None:
    if ok:
        args = export.parse_args(argv)
        assert args.face_threshold == (0.35 if argv else export.DEFAULT_FACE_THRESHOLD)
        return
    with pytest.raises(SystemExit):
        export.parse_args(argv)


def test_resolve_sources_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.prototxt"
    with pytest.raises(FileNotFoundError, match="nope.prototxt"):
        export.resolve_sources(missing, tmp_path / "b", tmp_path / "c")


def _info(**kw: object) -> ModelInfo:
    base: dict[str, object] = {
        "face_threshold": 0.2,
        "max_detections": 100,
        "nms_threshold": 0.45,
        "scores": "s",
        "classes": {"1": "with_mask"},
        "detector": "d",
        "classifier": "c",
    }
    base.update(kw)
    return ModelInfo(**base)  # type: ignore[arg-type]


def test_model_info_round_trip() -> None:
    info = _info()
    assert ModelInfo.from_json(info.to_json()) == info


@pytest.mark.parametrize(
    ("kw", "match"), [({"face_threshold": 0.0}, "face_threshold"), ({"max_detections": 0}, "max_detections")]
)
def test_model_info_rejects(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _info(**kw)


def test_warmup_file_is_one_predict_request(tmp_path: Path) -> None:
    jpeg = export.warmup_jpeg()
    assert tf.io.decode_jpeg(jpeg).shape == (512, 512, 3)
    path = tmp_path / "warmup"
    export.write_warmup(path, jpeg)
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert len(records) == 1
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    request = log.predict_log.request
    assert request.model_spec.name == MODEL_NAME
    assert tf.make_ndarray(request.inputs[INPUT_IMAGES]).tolist() == [jpeg]
