"""The OpenVINO runtime against TensorFlow on the exported model: the same Contract 2 rows, in process and behind
`python -m serving --runtime openvino`, with TF Serving's health service and Classify/Regress answers."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc, regression_pb2

from bench.frames import frame_set
from bench.security import large_jpeg
from maskwatch.model_api import OUT_NUM
from maskwatch.procs import free_port, version_states, wait_for
from model.ovmodel import PREDICT_CHUNK, OpenVinoMaskDetector, decode_jpeg, has_openvino
from model.parity import compare
from tests.integration.conftest import ENV, ROOT
from tests.integration.serving_fixtures import (
    AVAILABLE,
    ServerProcess,
    build_model,
    predict_request,
    start_server,
    tensorflow_runtime_loaded,
)


def photos() -> list[bytes]:
    """Real photos (one face, several faces drawn into a scene, none) and demo frames with 1-6 faces."""
    out = []
    for name in ("astronaut", "coffee"):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_RGB2BGR))
        assert ok
        out.append(buf.tobytes())
    out += [jpeg for jpeg, faces in frame_set(8)[:6]]
    return out


@pytest.fixture(scope="module")
def version_dir(model_base_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exported model with its OpenVINO networks (`make setup` writes them; an older export is redone here)."""
    version = max((p for p in model_base_path.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if has_openvino(version):
        return version
    out = tmp_path_factory.mktemp("ovmodels")
    subprocess.run([sys.executable, "-m", "model.export", "--out", str(out)], check=True, env=ENV, cwd=ROOT, timeout=600)
    return out / "mask_detector" / "1"


@pytest.fixture(scope="module")
def reference(version_dir: Path) -> list[dict[str, np.ndarray]]:
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    return [{k: v.numpy() for k, v in serve(images=tf.constant([j])).items()} for j in photos()]


def test_rows_match_tensorflow_row_for_row(version_dir: Path, reference: list[dict[str, np.ndarray]]) -> None:
    model = OpenVinoMaskDetector(version_dir)
    parity = None
    for jpeg, ref in zip(photos(), reference, strict=True):
        parity = compare(ref, model.predict([jpeg]), parity)
    assert parity is not None and parity.rows >= 10, "the photos must have faces to compare"
    assert parity.ok, (parity.to_dict(), parity.examples)
    # a batch gives each image the rows it gets alone
    batch = model.predict(photos())
    assert batch[OUT_NUM].tolist() == [r[OUT_NUM][0] for r in reference]


def test_a_batch_of_several_chunks_gives_each_image_its_rows(version_dir: Path, reference: list[dict[str, np.ndarray]]) -> None:
    """The runtime runs a large batch PREDICT_CHUNK images at a time (its memory bound); every image still gets the
    rows TensorFlow gives it, in the batch's order."""
    model = OpenVinoMaskDetector(version_dir)
    jpegs, refs = (photos() * 3)[1:], (reference * 3)[1:]  # chunks that do not start where the list does
    assert len(jpegs) > 2 * PREDICT_CHUNK and len(jpegs) % PREDICT_CHUNK  # two whole chunks and a short one
    batch = model.predict(jpegs)
    assert all(len(v) == len(jpegs) for v in batch.values())
    parity = None
    for i, ref in enumerate(refs):
        parity = compare(ref, {k: v[i : i + 1] for k, v in batch.items()}, parity)
    assert parity is not None and parity.ok, (parity.to_dict(), parity.examples)


def test_bad_jpeg_is_a_value_error_and_loses_nothing(version_dir: Path) -> None:
    model = OpenVinoMaskDetector(version_dir)
    with pytest.raises(ValueError):
        model.predict([photos()[0], b"\xff\xd8 not a jpeg"])
    assert model.predict([photos()[0]])[OUT_NUM][0] >= 1


def test_an_8k_frame_is_decoded_downscaled_alike(version_dir: Path) -> None:
    """Past what the networks can use, both runtimes decode at 1/2 scale (3840x2160 of 7680x4320) and answer the
    same rows."""
    model = OpenVinoMaskDetector(version_dir)
    assert model.decode_floor_hw == (2364, 3151)
    jpeg = large_jpeg(7680, 4320)
    assert decode_jpeg(jpeg, model.decode_floor_hw).shape == (2160, 3840, 3)
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    want = {k: v.numpy() for k, v in serve(images=tf.constant([jpeg])).items()}
    parity = compare(want, model.predict([jpeg]), None)
    assert parity.rows >= 1 and parity.ok, (parity.to_dict(), parity.examples)


@pytest.fixture(scope="module")
def server(version_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("ovserving") / "mask_detector"
    base.mkdir()
    (base / "1").symlink_to(version_dir, target_is_directory=True)
    rest = free_port()
    proc = ServerProcess(
        [
            "--model_base_path",
            str(base),
            "--runtime",
            "openvino",
            "--enable_grpc_healthcheck_service",
            "--rest_api_port",
            str(rest),
            "--enable_batching",
        ],
        tmp_path_factory.mktemp("ovlogs") / "serving.log",
    )
    proc.rest_port = rest  # type: ignore[attr-defined]
    try:
        proc.wait_available(timeout=240)
        yield proc
    finally:
        proc.stop()


def test_server_answers_as_the_runtime_in_process(server: ServerProcess, version_dir: Path) -> None:
    jpegs = photos()[:3]
    response = server.stub().Predict(predict_request(jpegs), timeout=60)
    got = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    want = OpenVinoMaskDetector(version_dir).predict(jpegs)
    assert set(got) == set(want)
    for key, value in want.items():
        assert np.allclose(got[key], value, atol=1e-5), key
    assert "openvino runtime model=mask_detector version=1" in server.log()


def test_undecodable_frame_is_invalid_argument(server: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as info:
        server.stub().Predict(predict_request([b"not a jpeg"]), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_health_service_says_serving(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tensorflow.serving.PredictionService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_classify_and_regress_answer_tf_servings_signature_error(server: ServerProcess) -> None:
    stub = server.stub()
    for call, request, noun, method in (
        (stub.Classify, classification_pb2.ClassificationRequest(), "classification", "classify"),
        (stub.Regress, regression_pb2.RegressionRequest(), "regression", "regress"),
    ):
        request.model_spec.name = "mask_detector"
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == (
            f"Expected {noun} signature method_name to be tensorflow/serving/{method}. Was: tensorflow/serving/predict"
        )
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/mask_detector:classify"  # type: ignore[attr-defined]
    post = urllib.request.Request(url, data=json.dumps({"examples": [{}]}).encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(post, timeout=30)
    assert http.value.code == 400
    assert "Expected classification signature method_name" in json.loads(http.value.read())["error"]


def test_sigterm_stops_it_cleanly(version_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / "mask_detector"
    base.mkdir()
    (base / "1").symlink_to(version_dir, target_is_directory=True)
    proc = ServerProcess(
        ["--model_base_path", str(base), "--runtime", "openvino", "--enable_grpc_healthcheck_service"],
        tmp_path / "serving.log",
    )
    try:
        proc.wait_available(timeout=240)
        assert proc.terminate() == 0
    finally:
        proc.stop()


def test_the_server_loads_tensorflow_only_for_a_version_without_openvino_networks(
    version_dir: Path, tmp_path: Path
) -> None:
    """`python -m serving --runtime openvino` (what `maskwatch up` runs) answers without TensorFlow's runtime in its
    memory (~700 MB); a version of another exporter appearing later still loads, into TensorFlow, loaded then."""
    base = tmp_path / "mask_detector"
    base.mkdir()
    (base / "1").symlink_to(version_dir, target_is_directory=True)
    proc = ServerProcess(
        ["--model_base_path", str(base), "--runtime", "openvino", "--file_system_poll_wait_seconds", "0.2"],
        tmp_path / "serving.log",
    )
    try:
        proc.wait_available(timeout=240)
        answer = proc.stub().Predict(predict_request(photos()[:1]), timeout=60)
        assert tf.make_ndarray(answer.outputs[OUT_NUM]).tolist()[0] >= 1  # the astronaut's face
        assert tensorflow_runtime_loaded(proc.proc.pid) == []
        build_model(base, 2)  # no OpenVINO networks
        wait_for(lambda: version_states(proc.target).get(2) == AVAILABLE, 180, "version 2 loaded into TensorFlow")
        answer = proc.stub().Predict(predict_request([b"ab", b"abcde"]), timeout=30)  # the latest version: 2
        assert tf.make_ndarray(answer.outputs["num_detections"]).tolist() == [2.0, 5.0]
        assert tensorflow_runtime_loaded(proc.proc.pid)
        assert "tensorflow threads" in proc.log()  # the flags' thread pools were set as it loaded
        assert proc.terminate() == 0
    finally:
        proc.stop()


def test_a_version_without_openvino_networks_is_served_by_tensorflow(tmp_path: Path) -> None:
    """Another exporter's SavedModel under --runtime openvino: TensorFlow runs it, the answers are its own."""
    base = tmp_path / "mask_detector"
    build_model(base, 1)
    server = start_server("--model_base_path", str(base), "--runtime", "openvino")
    try:
        assert server.manager is not None
        with server.manager.acquire("mask_detector") as servable:
            assert servable.runtime == "tensorflow"
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                predict_request([b"ab", b"abcde"]), timeout=30
            )
        assert tf.make_ndarray(response.outputs["num_detections"]).tolist() == [2.0, 5.0]
    finally:
        server.stop(0)
