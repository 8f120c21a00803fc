"""Request validation against a SignatureDef, metrics text: TF Serving's wording and formats."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2

from serving import metrics as m
from serving.inference import validate_inputs, validate_output_filter
from serving.rest import parse_monitoring_config
from serving.status import ServingError


def _signature() -> meta_graph_pb2.SignatureDef:
    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    images = signature.inputs["images"]
    images.dtype = types_pb2.DT_STRING
    images.tensor_shape.dim.add(size=-1)
    size = signature.inputs["size"]
    size.dtype = types_pb2.DT_INT32
    size.tensor_shape.dim.add(size=-1)
    size.tensor_shape.dim.add(size=2)
    for name in ("num_detections", "detection_scores"):
        signature.outputs[name].dtype = types_pb2.DT_FLOAT
    return signature


def _request(**inputs: object) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


GOOD = {"images": np.array([b"a", b"b"], dtype=object), "size": np.array([[1, 2], [3, 4]], np.int32)}


@pytest.mark.timeout(30)
def test_valid_inputs_decode() -> None:
    arrays = validate_inputs(_signature(), _request(**GOOD))
    assert arrays["images"].tolist() == [b"a", b"b"]
    assert arrays["size"].dtype == np.int32


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"images": GOOD["images"]},
            "input size does not match signature: 1!=2 len({images}) != len({images,size}). Sent extra: {}. Missing but required: {size}.",
        ),
        (
            {**GOOD, "x": np.zeros(1)},
            "input size does not match signature: 3!=2 len({images,size,x}) != len({images,size}). Sent extra: {x}. Missing but required: {}.",
        ),
        (
            {"images": GOOD["images"], "sizes": GOOD["size"]},
            "input tensor alias not found in signature: sizes. Inputs expected to be in the set {images,size}.",
        ),
        (
            {"images": np.zeros(2, np.float32), "size": GOOD["size"]},
            'Expects arg[0] to be string but float is provided (input tensor "images")',
        ),
        (
            {"images": GOOD["images"], "size": np.zeros((2, 3), np.int32)},
            'input tensor "size" has shape [2,3] but the signature expects [-1,2]',
        ),
    ],
)
def test_invalid_inputs(inputs: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(ServingError) as raised:
        validate_inputs(_signature(), _request(**inputs))
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.message == message


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("output_filter", "expected"),
    [
        ([], ["detection_scores", "num_detections"]),
        (["num_detections"], ["num_detections"]),
        (
            ["nope"],
            "output tensor alias not found in signature: nope Outputs expected to be in the set {detection_scores,num_detections}.",
        ),
        (["num_detections", "num_detections"], "duplicate output tensor alias: num_detections"),
    ],
)
def test_output_filter(output_filter: list[str], expected: list[str] | str) -> None:
    request = predict_pb2.PredictRequest(output_filter=output_filter)
    if isinstance(expected, list):
        assert validate_output_filter(_signature(), request) == expected
    else:
        with pytest.raises(ServingError) as raised:
            validate_output_filter(_signature(), request)
        assert raised.value.message == expected


@pytest.mark.timeout(10)
def test_metrics_exposition() -> None:
    metrics = m.Metrics()
    m.record_request(metrics, "mask_detector", "predict", "GRPC", "OK", 0.002)
    m.record_request(metrics, "mask_detector", "predict", "GRPC", "INVALID_ARGUMENT", 0.001)
    metrics.observe(m.PROCESSED_BATCH_SIZE, 3, model_name="mask_detector")
    text = metrics.render()
    assert ':tensorflow:serving:request_count{model_name="mask_detector",status="OK"} 1' in text
    assert ':tensorflow:serving:request_count{model_name="mask_detector",status="INVALID_ARGUMENT"} 1' in text
    assert (
        ':tensorflow:serving:batching_session:processed_batch_size_bucket{model_name="mask_detector",le="2"} 0' in text
    )
    assert (
        ':tensorflow:serving:batching_session:processed_batch_size_bucket{model_name="mask_detector",le="4"} 1' in text
    )
    assert ':tensorflow:serving:batching_session:processed_batch_size_sum{model_name="mask_detector"} 3' in text
    assert (
        ':tensorflow:serving:request_latency_count{API="predict",entrypoint="GRPC",model_name="mask_detector"} 2'
        in text
    )
    assert metrics.value(m.REQUEST_COUNT, model_name="mask_detector", status="OK") == 1


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('prometheus_config { enable: true, path: "/metrics" }', "/metrics"),
        ("prometheus_config { enable: true }", "/monitoring/prometheus/metrics"),
        ('prometheus_config { enable: false path: "/metrics" }', None),
        ("", None),
    ],
)
def test_monitoring_config(text: str, path: str | None) -> None:
    assert parse_monitoring_config(text) == path
