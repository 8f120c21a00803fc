"""`python -m serving` as a process: serves the TF Serving API, exits 0 on SIGTERM after in-flight calls."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf

from maskwatch.procs import free_port, wait_for
from tests.integration.conftest import ENV, ROOT
from tests.integration.serving_fixtures import ServerProcess, build_broken, build_model, predict_request


@pytest.mark.timeout(180)
def test_serves_then_exits_zero_on_sigterm(tmp_path: Path) -> None:
    base = tmp_path / "mask_detector"
    build_model(base, 1)
    server = ServerProcess(["--model_base_path", str(base)], tmp_path / "serving.log")
    try:
        server.wait_available()
        response = server.stub().Predict(predict_request([b"abcd"]), timeout=10)
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs["num_detections"]), [4.0])
        started = time.monotonic()
        assert server.terminate(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        server.stop()
    log = server.log()
    assert "signal=SIGTERM" in log and "server stopped" in log
    assert all(line.startswith("ts=") for line in log.splitlines() if "logger=serving" in line)


def _inflight(rest_port: int) -> float:
    url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(':maskwatch:serving:inflight_requests{API="predict",entrypoint="GRPC"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.timeout(180)
def test_in_flight_call_finishes_during_grace(tmp_path: Path) -> None:
    base = tmp_path / "mask_detector"
    build_model(base, 1)
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 64 } batch_timeout_micros { value: 2000000 }")
    rest_port = free_port()
    server = ServerProcess(
        [
            "--model_base_path",
            str(base),
            "--rest_api_port",
            str(rest_port),
            "--enable_batching",
            "--batching_parameters_file",
            str(batching),
        ],
        tmp_path / "serving.log",
    )
    try:
        server.wait_available()
        result: dict[str, object] = {}

        def call() -> None:
            try:
                result["response"] = server.stub().Predict(predict_request([b"abc"]), timeout=30)
            except grpc.RpcError as error:
                result["error"] = error

        caller = threading.Thread(target=call)
        caller.start()
        # The call waits up to 2 s in the batch queue: stop the server while it is there.
        wait_for(lambda: _inflight(rest_port) == 1, 10, "the call to be in flight")
        server.proc.send_signal(signal.SIGTERM)
        caller.join(30)
        assert "error" not in result, result.get("error")
        assert result["response"].model_spec.version.value == 1  # type: ignore[attr-defined]
        assert server.proc.wait(timeout=15) == 0
        with pytest.raises(grpc.RpcError) as refused:
            server.stub().Predict(predict_request([b"abc"]), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_exits_one_when_the_model_cannot_load(tmp_path: Path) -> None:
    base = tmp_path / "mask_detector"
    build_broken(base, 1)
    port = free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            "--port",
            str(port),
            "--model_base_path",
            str(base),
            "--max_num_load_retries",
            "0",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=100,
    )
    assert done.returncode == 1
    assert "initial model load failed" in done.stderr


@pytest.mark.timeout(60)
def test_bad_flags_exit_two(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "serving", "--port", "8500"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=50,
    )
    assert done.returncode == 2
    assert "Both --model_base_path and --model_config_file are empty" in done.stderr


@pytest.mark.timeout(180)
def test_by_default_both_ports_stay_on_loopback(tmp_path: Path) -> None:
    """The TF Serving API has no authentication: by default (and as `maskwatch up` starts it) no other machine can
    call the model server."""
    import psutil

    base = tmp_path / "mask_detector"
    build_model(base, 1)
    rest_port = free_port()
    server = ServerProcess(
        ["--rest_api_port", str(rest_port), "--model_base_path", str(base)], tmp_path / "serving.log"
    )
    try:
        server.wait_available()
        listening = {
            (c.laddr.ip.removeprefix("::ffff:"), c.laddr.port)  # gRPC may listen on IPv4-mapped IPv6
            for c in psutil.Process(server.proc.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {("127.0.0.1", server.port), ("127.0.0.1", rest_port)}, listening
        assert server.terminate(timeout=10) == 0
    finally:
        server.stop()
