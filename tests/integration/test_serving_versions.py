"""Versions on a real file system: swaps, broken versions, multi-model config with labels, reload, warm-up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from maskwatch.procs import version_states, wait_for
from serving import metrics as m
from serving.server import ModelServer, StartupError
from tests.integration.serving_fixtures import (
    build_broken,
    build_model,
    predict_request,
    start_server,
)

Status = get_model_status_pb2.ModelVersionStatus
POLL = ("--file_system_poll_wait_seconds", "0.1", "--max_num_load_retries", "0")


def _served_version(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, name: str = "mask_detector", **spec: object
) -> int:
    response = stub.Predict(predict_request([b"abc"], name, **spec), timeout=10)
    return int(tf.make_ndarray(response.outputs["model_version"])[0])


@pytest.fixture
def server_on(tmp_path: Path) -> Iterator[list[ModelServer]]:
    started: list[ModelServer] = []
    yield started
    for server in started:
        server.stop(grace=2)


@pytest.mark.timeout(180)
def test_new_version_swaps_in_without_a_gap_and_broken_one_is_reported(
    tmp_path: Path, server_on: list[ModelServer]
) -> None:
    base = tmp_path / "mask_detector"
    build_model(base, 1)
    server = start_server("--model_base_path", str(base), *POLL)
    server_on.append(server)
    target = f"127.0.0.1:{server.grpc_port}"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
    assert _served_version(stub) == 1

    failures: list[BaseException] = []
    seen: set[int] = set()
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            try:
                seen.add(_served_version(stub))
            except grpc.RpcError as error:
                failures.append(error)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        build_model(base, 2)
        wait_for(lambda: version_states(target) == {2: Status.AVAILABLE, 1: Status.END}, 60, "version 2 to replace 1")
    finally:
        done.set()
        thread.join(30)
    assert not failures, f"calls failed during the swap: {failures[:3]}"
    assert _served_version(stub) == 2
    assert seen <= {1, 2}

    build_broken(base, 3)
    wait_for(lambda: version_states(target).get(3) == Status.END, 60, "version 3 to fail")
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "mask_detector"
    request.model_spec.version.value = 3
    (status,) = (
        model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(target))
        .GetModelStatus(request, timeout=10)
        .model_version_status
    )
    assert status.state == Status.END
    assert status.status.error_code != 0 and status.status.error_message
    assert version_states(target)[2] == Status.AVAILABLE
    assert _served_version(stub) == 2


MULTI = """
model_config_list {{
  config {{
    name: "mask_detector"
    base_path: "{a}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{
    name: "other"
    base_path: "{b}"
  }}
}}
"""


@pytest.mark.timeout(180)
def test_model_config_file_with_labels_policies_and_reload(tmp_path: Path, server_on: list[ModelServer]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for version in (1, 2, 3):
        build_model(a, version)
    build_model(b, 7)
    config = tmp_path / "models.config"
    config.write_text(MULTI.format(a=a, b=b))
    server = start_server("--model_config_file", str(config), *POLL)
    server_on.append(server)
    target = f"127.0.0.1:{server.grpc_port}"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
    assert version_states(target) == {2: Status.AVAILABLE, 1: Status.AVAILABLE}
    assert _served_version(stub) == 2
    assert _served_version(stub, version_label="stable") == 1
    assert _served_version(stub, version_label="canary") == 2
    assert _served_version(stub, name="other") == 7
    with pytest.raises(grpc.RpcError) as raised:
        _served_version(stub, version=3)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND

    reload = model_management_pb2.ReloadConfigRequest()
    model = reload.config.model_config_list.config.add(name="other", base_path=str(b))
    model.model_platform = "tensorflow"
    response = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(target)).HandleReloadConfigRequest(
        reload, timeout=60
    )
    assert response.status.error_code == 0
    wait_for(lambda: version_states(target) == {}, 30, "mask_detector to be unloaded")
    with pytest.raises(grpc.RpcError) as raised:
        _served_version(stub)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert _served_version(stub, name="other") == 7


@pytest.mark.timeout(120)
def test_warmup_requests_are_replayed_on_load(tmp_path: Path, server_on: list[ModelServer]) -> None:
    base = tmp_path / "mask_detector"
    build_model(base, 1, warmup=[predict_request([b"a"]), predict_request([b"bb", b"ccc"]), predict_request([b"d"])])
    server = start_server("--model_base_path", str(base), *POLL)
    server_on.append(server)
    text = server.metrics.render()
    warmed = [line for line in text.splitlines() if line.startswith(m.RUNTIME_LATENCY + "_count")]
    assert warmed and warmed[0].endswith(" 3"), text


@pytest.mark.timeout(120)
def test_failed_warmup_fails_the_load(tmp_path: Path, server_on: list[ModelServer]) -> None:
    base = tmp_path / "mask_detector"
    build_model(base, 1)
    server = start_server("--model_base_path", str(base), *POLL)
    server_on.append(server)
    target = f"127.0.0.1:{server.grpc_port}"
    bad = predict_request([b"a"])
    bad.inputs["pictures"].CopyFrom(bad.inputs.pop("images"))
    build_model(base, 2, warmup=[bad])
    wait_for(lambda: version_states(target).get(2) == Status.END, 60, "version 2 warm-up to fail")
    assert server.manager is not None
    (failed,) = server.manager.status("mask_detector", 2)
    assert failed.error is not None and "warm-up failed" in failed.error.message
    assert version_states(target)[1] == Status.AVAILABLE


@pytest.mark.timeout(120)
def test_start_fails_when_the_only_version_cannot_load(tmp_path: Path) -> None:
    base = tmp_path / "mask_detector"
    build_broken(base, 1)
    with pytest.raises(StartupError, match="initial model load failed"):
        start_server("--model_base_path", str(base), *POLL)


@pytest.mark.timeout(60)
def test_predictions_do_not_depend_on_batching(tmp_path: Path, server_on: list[ModelServer]) -> None:
    base = tmp_path / "mask_detector"
    build_model(base, 1)
    plain = start_server("--model_base_path", str(base), *POLL)
    server_on.append(plain)
    batched = start_server("--model_base_path", str(base), "--enable_batching", *POLL)
    server_on.append(batched)
    images = [b"a" * 5, b"b" * 9]
    answers = []
    for server in (plain, batched):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        answers.append(tf.make_ndarray(stub.Predict(predict_request(images), timeout=10).outputs["detection_scores"]))
    np.testing.assert_array_equal(answers[0], answers[1])
