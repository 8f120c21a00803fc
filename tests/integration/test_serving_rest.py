"""TF Serving's REST API and the Prometheus endpoint, over real HTTP."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maskwatch.procs import free_port
from serving.server import ModelServer
from tests.integration.serving_fixtures import build_model, start_server


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("rest") / "mask_detector"
    build_model(base, 1)
    server: ModelServer = start_server(
        "--model_base_path",
        str(base),
        "--rest_api_port",
        str(free_port()),
        "--enable_batching",
        "--file_system_poll_wait_seconds",
        "0",
    )
    yield f"http://127.0.0.1:{server.rest_port}"
    server.stop(grace=2)


def _call(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        payload, status = error.read().decode(), error.code
    try:
        return status, json.loads(payload)
    except json.JSONDecodeError:
        return status, payload


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


@pytest.mark.timeout(60)
def test_model_status(rest: str) -> None:
    expected = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert _call(f"{rest}/v1/models/mask_detector") == (200, expected)
    assert _call(f"{rest}/v1/models/mask_detector/versions/1") == (200, expected)
    status, body = _call(f"{rest}/v1/models/nope")
    assert status == 404 and body == {"error": "Could not find any versions of model nope"}


@pytest.mark.timeout(60)
def test_metadata(rest: str) -> None:
    status, body = _call(f"{rest}/v1/models/mask_detector/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "mask_detector", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["images"]["dtype"] == "DT_STRING"
    assert signature["method_name"] == "tensorflow/serving/predict"


@pytest.mark.timeout(60)
def test_predict_row_and_columnar(rest: str) -> None:
    status, body = _call(f"{rest}/v1/models/mask_detector:predict", {"instances": [_b64(b"abc"), _b64(b"abcdef")]})
    assert status == 200
    assert [row["num_detections"] for row in body["predictions"]] == [3.0, 6.0]
    assert body["predictions"][0]["detection_boxes"] == [[0.0, 0.0, 0.0, 0.0]]

    status, body = _call(f"{rest}/v1/models/mask_detector/versions/1:predict", {"inputs": {"images": [_b64(b"ab")]}})
    assert status == 200 and body["outputs"]["num_detections"] == [2.0]

    status, body = _call(
        f"{rest}/v1/models/mask_detector:predict", {"signature_name": "double", "instances": [[1.0, 2.0], [3.0, 4.0]]}
    )
    assert (status, body) == (200, {"predictions": [[2.0, 4.0], [6.0, 8.0]]})


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/models/nope:predict", {"instances": [_b64(b"a")]}, 404, "Servable not found for request: Latest(nope)"),
        ("/v1/models/mask_detector:predict", {"instances": [{"b64": "***"}]}, 400, "base64"),
        (
            "/v1/models/mask_detector:predict",
            {"signature_name": "nope", "instances": []},
            400,
            'Serving signature key "nope" not found.',
        ),
        ("/v1/models/mask_detector:predict", {"something": 1}, 400, "Missing 'inputs' or 'instances' key"),
        (
            "/v1/models/mask_detector:predict",
            {"instances": [{"pictures": _b64(b"a")}]},
            400,
            "input tensor alias not found in signature: pictures",
        ),
        (
            "/v1/models/mask_detector/labels/beta:predict",
            {"instances": [_b64(b"a")]},
            400,
            "Unrecognized servable version label: beta",
        ),
    ],
)
def test_predict_errors(rest: str, path: str, body: Any, status: int, message: str) -> None:
    got_status, got = _call(rest + path, body)
    assert got_status == status
    assert message in got["error"]


@pytest.mark.timeout(60)
def test_prometheus_metrics(rest: str) -> None:
    _call(f"{rest}/v1/models/mask_detector:predict", {"instances": [_b64(b"abc")]})
    _call(f"{rest}/v1/models/nope:predict", {"instances": [_b64(b"abc")]})
    status, text = _call(f"{rest}/monitoring/prometheus/metrics")
    assert status == 200
    lines = text.splitlines()
    assert "# TYPE :tensorflow:serving:request_count counter" in lines
    assert any(
        line.startswith(':tensorflow:serving:request_count{model_name="mask_detector",status="OK"}') for line in lines
    )
    assert any(
        line.startswith(':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"}') for line in lines
    )
    assert any(line.startswith(":tensorflow:serving:request_latency_bucket{") and 'le="+Inf"' in line for line in lines)
    assert any(line.startswith(":tensorflow:serving:batching_session:processed_batch_size_count") for line in lines)
    assert _call(f"{rest}/not/there")[0] == 404


@pytest.mark.timeout(60)
def test_repo_configs_are_accepted_by_the_server(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2] / "serving"
    base = tmp_path / "mask_detector"
    build_model(base, 1)
    config = tmp_path / "models.config"
    config.write_text((root / "models.config").read_text().replace("/models/mask_detector", str(base)))
    server = start_server(
        "--model_config_file",
        str(config),
        "--enable_batching",
        "--batching_parameters_file",
        str(root / "batching.config"),
        "--file_system_poll_wait_seconds",
        "0",
    )
    try:
        assert server.manager is not None and server.manager.model_names() == ["mask_detector"]
        assert server.scheduler is not None and server.scheduler.options.max_batch_size == 32
    finally:
        server.stop(grace=1)
