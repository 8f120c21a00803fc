"""The model API: Contract 2 answers parsed into Detections; the codec, TF Serving's tensor messages read and written
as TensorFlow reads and writes them without loading TensorFlow; the names TF's errors give dtypes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from maskwatch.detections import ModelOutputError
from maskwatch.model_api import (
    OUT_BOXES,
    OUT_CLASSES,
    OUT_MULTICLASS_SCORES,
    OUT_NUM,
    OUT_SCORES,
    dtype_name,
    outputs_of,
    parse_outputs,
    to_ndarray,
    to_proto,
)

pytestmark = pytest.mark.timeout(60)

NUMERIC = [
    np.float32,
    np.float64,
    np.float16,
    ml_dtypes.bfloat16,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
    np.complex64,
    np.complex128,
]
SHAPES = [(), (1,), (2, 3), (0,), (4, 1, 2)]


def outputs(n: int = 2, k: int = 3, num: list[int] | None = None, classes: list[list[float]] | None = None) -> dict[str, np.ndarray]:
    boxes = np.tile(np.array([0.1, 0.2, 0.5, 0.6], np.float32), (n, k, 1))
    scores = np.full((n, k), 0.9, np.float32)
    cls = np.array(classes if classes is not None else [[1, 2, 3]] * n, np.float32)
    return {
        OUT_BOXES: boxes,
        OUT_SCORES: scores,
        OUT_CLASSES: cls,
        OUT_NUM: np.array(num if num is not None else [3] * n, np.float32),
    }


def test_parse_splits_per_image_and_counts() -> None:
    dets = parse_outputs(outputs(num=[3, 1]), 2)
    assert [len(d) for d in dets] == [3, 1]
    c = dets[0].counts()
    assert (c.frames, c.faces, c.with_mask, c.without_mask, c.mask_worn_incorrectly) == (1, 3, 1, 1, 1)
    assert dets[1].counts().with_mask == 1
    assert dets[0].items[0].box == pytest.approx((0.1, 0.2, 0.5, 0.6))


def test_per_class_scores_travel_with_each_face_when_the_model_gives_them() -> None:
    out = outputs(num=[2, 0])
    out[OUT_MULTICLASS_SCORES] = np.tile(np.array([0.1, 0.6, 0.2, 0.1], np.float32), (2, 3, 1))
    dets = parse_outputs(out, 2)
    assert dets[0].items[1].class_scores == pytest.approx((0.6, 0.2, 0.1))
    assert parse_outputs(outputs(), 2)[0].items[0].class_scores is None
    out[OUT_MULTICLASS_SCORES] = out[OUT_MULTICLASS_SCORES][..., :3]  # no background column
    with pytest.raises(ModelOutputError, match="detection_multiclass_scores shape"):
        parse_outputs(out, 2)


def test_empty_image() -> None:
    d = parse_outputs(outputs(n=1, num=[0], classes=[[0, 0, 0]]), 1)[0]
    assert len(d) == 0 and d.counts().faces == 0 and d.counts().frames == 1


@pytest.mark.parametrize(
    ("out", "batch", "match"),
    [
        ({k: v for k, v in outputs().items() if k != OUT_NUM}, 2, "missing"),
        (outputs(), 3, "shape"),
        (outputs(num=[4, 0]), 2, "outside"),
        (outputs(classes=[[1, 7, 1], [1, 1, 1]]), 2, "class id"),
        ({**outputs(), OUT_SCORES: np.zeros((2, 2), np.float32)}, 2, "shapes"),
    ],
)
def test_malformed(out: dict[str, np.ndarray], batch: int, match: str) -> None:
    with pytest.raises(ModelOutputError, match=match):
        parse_outputs(out, batch)


@pytest.mark.parametrize(
    ("array", "field"),
    [
        (np.array([1.5, 2.0], np.float32), "float_val"),
        (np.array([[1, 2]], np.int32), "int_val"),
        (np.array([7], np.int64), "int64_val"),
        (np.array([True, False]), "bool_val"),
        (np.array([0.5], np.float64), "double_val"),
        (np.array([b"x"], dtype=object), "string_val"),
    ],
)
def test_outputs_use_typed_fields_and_round_trip(array: np.ndarray, field: str) -> None:
    proto = to_proto(array)
    assert not proto.tensor_content
    assert len(getattr(proto, field)) == array.size
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tensorflow_reads_what_the_codec_writes_and_back(dtype: type, shape: tuple[int, ...]) -> None:
    array = (np.arange(int(np.prod(shape))) % 3).reshape(shape).astype(dtype)
    for proto in (to_proto(array), to_proto(array, packed=True), tf.make_tensor_proto(array)):
        theirs = tf.make_ndarray(proto)
        ours = to_ndarray(proto)
        np.testing.assert_array_equal(theirs, array)
        np.testing.assert_array_equal(ours, array)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape


def test_packed_numbers_travel_as_bytes() -> None:
    pixels = np.arange(24, dtype=np.uint8).reshape(1, 2, 4, 3)
    proto = to_proto(pixels, packed=True)
    assert proto.tensor_content == pixels.tobytes() and not proto.int_val
    assert [d.size for d in proto.tensor_shape.dim] == [1, 2, 4, 3]


def test_strings_keep_every_byte() -> None:
    strings = np.array([[b"a", b"bc\x00"], [b"", "d\u00e9"]], dtype=object)
    proto = to_proto(strings)
    assert list(proto.string_val) == [b"a", b"bc\x00", b"", "d\u00e9".encode()]
    np.testing.assert_array_equal(to_ndarray(proto), tf.make_ndarray(proto))
    with pytest.raises(TypeError):
        to_proto(np.array([1, b"x"], dtype=object))


@pytest.mark.parametrize(
    ("values", "shape"),
    [
        ([1.0, 2.0], [4]),  # short: padded with the last value
        ([3.0], [2, 2]),  # one value fills the shape
        ([], [3]),  # none: zeros
    ],
)
def test_short_fields_read_as_tensorflow_reads_them(values: list[float], shape: list[int]) -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=values)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    np.testing.assert_array_equal(to_ndarray(proto), tf.make_ndarray(proto))


def test_malformed_tensors_raise_as_tensorflow_does() -> None:
    too_many = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0, 3.0])
    too_many.tensor_shape.dim.add(size=2)
    with pytest.raises(ValueError):
        to_ndarray(too_many)
    with pytest.raises(TypeError):
        to_ndarray(tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE))


def test_dtype_names_as_tf_errors_spell_them() -> None:
    assert [
        dtype_name(t) for t in (types_pb2.DT_STRING, types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT64)
    ] == [
        "string",
        "float",
        "double",
        "int64",
    ]
    for enum in types_pb2.DataType.values():
        tf_name = "invalid" if enum == types_pb2.DT_INVALID else tf.dtypes.as_dtype(enum).name
        assert dtype_name(enum) == tf_name.replace("float32", "float").replace("float64", "double"), enum


def test_a_client_refuses_outputs_that_are_not_numbers() -> None:
    resp = predict_pb2.PredictResponse()
    resp.outputs[OUT_SCORES].CopyFrom(to_proto(np.array([[0.5]], np.float32)))
    assert outputs_of(resp)[OUT_SCORES].tolist() == [[0.5]]
    resp.outputs[OUT_BOXES].CopyFrom(to_proto(np.array([b"box"], dtype=object)))
    with pytest.raises(ValueError, match="unsupported output dtype"):
        outputs_of(resp)
