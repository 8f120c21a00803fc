"""Model server flags: names and defaults as tensorflow_model_server's, bad combinations refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from serving.settings import Settings, SettingsError, parse_settings


@pytest.mark.timeout(10)
def test_defaults_mirror_tf_serving(tmp_path: Path) -> None:
    settings = parse_settings(["--model_base_path", str(tmp_path)])
    assert settings.port == 8500
    assert settings.model_name == "mask_detector"
    assert settings.rest_api_port == 0
    assert settings.enable_batching is False
    assert settings.file_system_poll_wait_seconds == 1.0
    assert settings.enable_model_warmup is True


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["--port=9000"], "port", 9000),
        (["--port", "9000"], "port", 9000),
        (["--enable_batching"], "enable_batching", True),
        (["--enable_batching=true"], "enable_batching", True),
        (["--enable_batching=false"], "enable_batching", False),
        (["--enable_model_warmup=0"], "enable_model_warmup", False),
        (["--rest_api_port=8501"], "rest_api_port", 8501),
        (["--file_system_poll_wait_seconds=0.5"], "file_system_poll_wait_seconds", 0.5),
        (["--model_name=other"], "model_name", "other"),
        (["--tensorflow_intra_op_parallelism=1"], "tensorflow_intra_op_parallelism", 1),
        (["--tensorflow_inter_op_parallelism", "2"], "tensorflow_inter_op_parallelism", 2),
        ([], "host", "127.0.0.1"),
        (["--host", "0.0.0.0"], "host", "0.0.0.0"),
        (["--max_image_pixels=1000000"], "max_image_pixels", 1_000_000),
        ([], "runtime", "tensorflow"),
        (["--runtime", "openvino"], "runtime", "openvino"),
        ([], "enable_grpc_healthcheck_service", False),
        (["--enable_grpc_healthcheck_service"], "enable_grpc_healthcheck_service", True),
        (["--enable_grpc_healthcheck_service=true"], "enable_grpc_healthcheck_service", True),
    ],
)
def test_flags(tmp_path: Path, argv: list[str], field: str, value: object) -> None:
    settings = parse_settings(["--model_base_path", str(tmp_path), *argv])
    assert getattr(settings, field) == value


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "Both --model_base_path and --model_config_file are empty"),
        ({"model_base_path": "/m", "port": 70000}, "--port must be in 0..65535"),
        ({"model_base_path": "/m", "port": 0}, "--port must be set"),
        ({"model_base_path": "/m", "rest_api_port": 8500}, "--rest_api_port must differ"),
        ({"model_base_path": "/m", "model_name": ""}, "--model_name must not be empty"),
        ({"model_base_path": "/m", "batching_parameters_file": "/b"}, "needs --enable_batching"),
        ({"model_base_path": "/m", "grpc_max_threads": 0}, "--grpc_max_threads must be at least 1"),
        ({"model_base_path": "/m", "max_num_load_retries": -1}, "--max_num_load_retries must not be negative"),
        ({"model_base_path": "/m", "log_level": "LOUD"}, "--log_level"),
        (
            {"model_base_path": "/m", "tensorflow_intra_op_parallelism": -1},
            "--tensorflow_intra_op_parallelism must not",
        ),
        ({"model_config_file": "/no/such/file"}, "no such file"),
        ({"model_base_path": "/m", "runtime": "onnx"}, "--runtime must be one of tensorflow, openvino"),
    ],
)
def test_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.timeout(10)
def test_base_path_and_config_file_are_exclusive(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list {}")
    with pytest.raises(SettingsError, match="mutually exclusive"):
        parse_settings(["--model_base_path", str(tmp_path), "--model_config_file", str(config)])


@pytest.mark.timeout(10)
def test_bad_bool_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--model_base_path", str(tmp_path), "--enable_batching=maybe"])


@pytest.mark.timeout(120)
def test_thread_flags_size_tensorflow_pools(tmp_path: Path) -> None:
    """In a fresh process, as the server starts: the pools TensorFlow reports are the flags' sizes (0 leaves its own)."""
    script = (
        "import sys; from serving.__main__ import set_tensorflow_threads; from serving.settings import parse_settings; "
        "print(set_tensorflow_threads(parse_settings(sys.argv[1:])))"
    )
    base = ["--model_base_path", str(tmp_path)]
    sized = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            *base,
            "--tensorflow_intra_op_parallelism=1",
            "--tensorflow_inter_op_parallelism=3",
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
    )
    assert sized.stdout.strip().splitlines()[-1] == "(1, 3)"
    default = subprocess.run(
        [sys.executable, "-c", script, *base], capture_output=True, text=True, timeout=100, check=True
    )
    assert default.stdout.strip().splitlines()[-1] == "(0, 0)"
