"""The model server over real gRPC with TF Serving's stubs: answers, metadata, status, errors, batching."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import metrics as m
from serving.server import ModelServer
from tests.integration.serving_fixtures import build_model, predict_request, start_server

BATCHING = """
max_batch_size { value: 64 }
batch_timeout_micros { value: 200000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grpc") / "mask_detector"
    build_model(root, 1)
    return root


@pytest.fixture(scope="module")
def server(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    batching = tmp_path_factory.mktemp("batching") / "batching.config"
    batching.write_text(BATCHING)
    server = start_server(
        "--model_base_path",
        str(base),
        "--enable_batching",
        "--batching_parameters_file",
        str(batching),
        "--file_system_poll_wait_seconds",
        "0",
    )
    yield server
    server.stop(grace=2)


@pytest.fixture(scope="module")
def channel(server: ModelServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield channel


@pytest.fixture
def predict(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _outputs(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}


@pytest.mark.timeout(60)
def test_predict_answers_and_fills_model_spec(predict: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    response = predict.Predict(predict_request([b"ab", b"abcde"]), timeout=10)
    assert response.model_spec.name == "mask_detector"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    outputs = _outputs(response)
    assert set(outputs) == {
        "num_detections",
        "detection_scores",
        "detection_boxes",
        "detection_classes",
        "model_version",
    }
    np.testing.assert_array_equal(outputs["num_detections"], [2.0, 5.0])
    assert outputs["detection_boxes"].shape == (2, 1, 4)
    # Values travel in the typed field, as TF Serving writes them (clients reading float_val work).
    assert list(response.outputs["num_detections"].float_val) == [2.0, 5.0]


@pytest.mark.timeout(60)
def test_output_filter_and_other_signature(predict: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = predict_request([b"abc"], version=1)
    request.output_filter.append("num_detections")
    response = predict.Predict(request, timeout=10)
    assert list(response.outputs) == ["num_detections"]

    double = predict_pb2.PredictRequest()
    double.model_spec.name = "mask_detector"
    double.model_spec.signature_name = "double"
    double.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1, 2]], np.float32)))
    response = predict.Predict(double, timeout=10)
    assert response.model_spec.signature_name == "double"
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [[2, 4]])


def _bad(request_change: str) -> predict_pb2.PredictRequest:
    request = predict_request([b"abc"])
    if request_change == "unknown model":
        request.model_spec.name = "nope"
    elif request_change == "unknown version":
        request.model_spec.version.value = 42
    elif request_change == "unknown label":
        request.model_spec.version_label = "canary"
    elif request_change == "unknown signature":
        request.model_spec.signature_name = "nope"
    elif request_change == "extra input":
        request.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0]))
    elif request_change == "missing input":
        del request.inputs["images"]
    elif request_change == "renamed input":
        request.inputs["pictures"].CopyFrom(request.inputs.pop("images"))
    elif request_change == "wrong dtype":
        request.inputs["images"].CopyFrom(tf.make_tensor_proto([1.0, 2.0]))
    elif request_change == "wrong rank":
        request.inputs["images"].CopyFrom(tf.make_tensor_proto([[b"a"], [b"b"]], dtype=tf.string))
    elif request_change == "unknown output":
        request.output_filter.append("nope")
    elif request_change == "duplicate output":
        request.output_filter.extend(["num_detections", "num_detections"])
    elif request_change == "no name":
        request.model_spec.name = ""
    return request


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ("unknown model", grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
        ("unknown version", grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(mask_detector, 42)"),
        ("unknown label", grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: canary"),
        ("unknown signature", grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
        ("extra input", grpc.StatusCode.INVALID_ARGUMENT, "input size does not match signature: 2!=1"),
        ("missing input", grpc.StatusCode.INVALID_ARGUMENT, "Missing but required: {images}"),
        ("renamed input", grpc.StatusCode.INVALID_ARGUMENT, "input tensor alias not found in signature: pictures"),
        ("wrong dtype", grpc.StatusCode.INVALID_ARGUMENT, 'to be string but float is provided (input tensor "images")'),
        ("wrong rank", grpc.StatusCode.INVALID_ARGUMENT, 'input tensor "images" has shape [2,1]'),
        ("unknown output", grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found in signature: nope"),
        ("duplicate output", grpc.StatusCode.INVALID_ARGUMENT, "duplicate output tensor alias: num_detections"),
        ("no name", grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
    ],
)
def test_errors_as_tf_serving(
    predict: prediction_service_pb2_grpc.PredictionServiceStub, change: str, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        predict.Predict(_bad(change), timeout=10)
    assert raised.value.code() == code
    assert message in raised.value.details()


@pytest.mark.timeout(60)
def test_model_error_keeps_its_code(predict: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mask_detector"
    request.model_spec.signature_name = "double"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 3), np.float32)))
    with pytest.raises(grpc.RpcError) as raised:
        predict.Predict(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert '"x"' in raised.value.details()


@pytest.mark.timeout(60)
def test_metadata_packs_the_saved_models_signature_def_map(
    predict: prediction_service_pb2_grpc.PredictionServiceStub, base: Path
) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "mask_detector"
    response = predict.GetModelMetadata(request, timeout=10)
    assert response.model_spec.name == "mask_detector" and response.model_spec.version.value == 1
    assert response.metadata["signature_def"].type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((base / "1" / "saved_model.pb").read_bytes())
    assert dict(signature_map.signature_def) == dict(saved.meta_graphs[0].signature_def)
    images = signature_map.signature_def["serving_default"].inputs["images"]
    assert images.dtype == tf.string.as_datatype_enum
    assert [d.size for d in images.tensor_shape.dim] == [-1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([], "must specify at least one metadata_field"),
        (["signature_def", "graph"], "Metadata field graph is not supported"),
    ],
)
def test_metadata_field_validation(
    predict: prediction_service_pb2_grpc.PredictionServiceStub, fields: list[str], message: str
) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    request.model_spec.name = "mask_detector"
    with pytest.raises(grpc.RpcError) as raised:
        predict.GetModelMetadata(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raised.value.details()


@pytest.mark.timeout(60)
def test_model_status(channel: grpc.Channel) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "mask_detector"
    response = stub.GetModelStatus(request, timeout=10)
    (status,) = response.model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.HasField("status") and status.status.error_code == 0
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetModelStatus(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "Could not find any versions of model nope"


@pytest.mark.timeout(120)
def test_32_concurrent_clients_are_batched(
    server: ModelServer, predict: prediction_service_pb2_grpc.PredictionServiceStub
) -> None:
    assert server.scheduler is not None
    before = (server.scheduler.stats.tasks, server.scheduler.stats.batches)
    barrier = threading.Barrier(32)

    def call(i: int) -> np.ndarray:
        images = [b"x" * (i + 1), b"y" * (i + 2)]
        barrier.wait()
        return tf.make_ndarray(predict.Predict(predict_request(images), timeout=30).outputs["num_detections"])

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, range(32)))
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, [i + 1, i + 2])
    calls = server.scheduler.stats.tasks - before[0]
    runs = server.scheduler.stats.batches - before[1]
    print(f"batching: calls={calls} model_runs={runs} largest_batch_calls={server.scheduler.stats.largest_batch_tasks}")
    assert calls == 32
    assert runs < 32
    assert server.scheduler.stats.largest_batch_tasks > 1
    text = server.metrics.render()
    assert m.PROCESSED_BATCH_SIZE + "_count" in text
