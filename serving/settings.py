"""Model server settings: command-line flags named as tensorflow_model_server's."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass

from maskwatch.frames import MAX_PIXELS
from maskwatch.model_api import MODEL_NAME

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
RUNTIME_TENSORFLOW = "tensorflow"
RUNTIME_OPENVINO = "openvino"
RUNTIMES = (RUNTIME_TENSORFLOW, RUNTIME_OPENVINO)

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


class SettingsError(ValueError):
    """The flags do not describe a server that can start."""


def parse_bool(text: str) -> bool:
    """Parse a boolean flag value the way TensorFlow's flag library does."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


@dataclass(frozen=True)
class Settings:
    """Everything `python -m serving` is told on its command line."""

    port: int = 8500
    host: str = "127.0.0.1"  # secure by default; TF Serving listens everywhere (--host 0.0.0.0)
    grpc_max_threads: int = 64
    enable_grpc_healthcheck_service: bool = False
    rest_api_port: int = 0
    rest_api_num_threads: int = 16
    rest_api_timeout_in_ms: int = 30000
    model_name: str = MODEL_NAME
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: float = 1.0
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_model_warmup: bool = True
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    num_load_threads: int = 0
    num_unload_threads: int = 0
    # TensorFlow's thread pools for every model: 0 lets TensorFlow choose (one thread per core each)
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    allow_version_labels_for_unavailable_models: bool = False
    monitoring_config_file: str = ""
    shutdown_grace_seconds: float = 10.0
    max_image_pixels: int = MAX_PIXELS
    log_level: str = "INFO"
    runtime: str = RUNTIME_TENSORFLOW

    def __post_init__(self) -> None:
        for name, port in (("port", self.port), ("rest_api_port", self.rest_api_port)):
            if not 0 <= port <= 65535:
                raise SettingsError(f"--{name} must be in 0..65535, got {port}")
        if self.port == 0:
            raise SettingsError("--port must be set to a TCP port (0 is not allowed)")
        if self.rest_api_port and self.rest_api_port == self.port:
            raise SettingsError("--rest_api_port must differ from --port")
        if not self.model_base_path and not self.model_config_file:
            raise SettingsError(
                "Both --model_base_path and --model_config_file are empty: "
                "give a model base path or a model config file"
            )
        if self.model_base_path and self.model_config_file:
            raise SettingsError(
                "--model_base_path and --model_config_file are mutually exclusive: "
                "list the model in the config file instead"
            )
        if not self.model_name:
            raise SettingsError("--model_name must not be empty")
        if self.batching_parameters_file and not self.enable_batching:
            raise SettingsError("--batching_parameters_file needs --enable_batching")
        for name, value in (
            ("grpc_max_threads", self.grpc_max_threads),
            ("rest_api_num_threads", self.rest_api_num_threads),
            ("rest_api_timeout_in_ms", self.rest_api_timeout_in_ms),
        ):
            if value < 1:
                raise SettingsError(f"--{name} must be at least 1, got {value}")
        for name, value in (
            ("max_num_load_retries", self.max_num_load_retries),
            ("load_retry_interval_micros", self.load_retry_interval_micros),
            ("num_load_threads", self.num_load_threads),
            ("num_unload_threads", self.num_unload_threads),
            ("model_config_file_poll_wait_seconds", self.model_config_file_poll_wait_seconds),
            ("tensorflow_intra_op_parallelism", self.tensorflow_intra_op_parallelism),
            ("tensorflow_inter_op_parallelism", self.tensorflow_inter_op_parallelism),
        ):
            if value < 0:
                raise SettingsError(f"--{name} must not be negative, got {value}")
        if self.max_image_pixels < 1:
            raise SettingsError(f"--max_image_pixels must be at least 1, got {self.max_image_pixels}")
        if self.shutdown_grace_seconds < 0:
            raise SettingsError("--shutdown_grace_seconds must not be negative")
        if self.runtime not in RUNTIMES:
            raise SettingsError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime}")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError(f"--log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level}")
        for name, path in (
            ("model_config_file", self.model_config_file),
            ("batching_parameters_file", self.batching_parameters_file),
            ("monitoring_config_file", self.monitoring_config_file),
        ):
            if path and not os.path.isfile(path):
                raise SettingsError(f"--{name}: no such file {path}")

    @property
    def polls_file_system(self) -> bool:
        """Whether version directories are polled after the first look."""
        return self.file_system_poll_wait_seconds > 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; flag names and defaults follow tensorflow_model_server."""
    defaults = Settings.__dataclass_fields__
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve SavedModels over TensorFlow Serving's gRPC (and REST) API.",
    )

    def add(name: str, kind: type, help_text: str) -> None:
        default = defaults[name].default
        if kind is bool:
            parser.add_argument(
                f"--{name}",
                type=parse_bool,
                nargs="?",
                const=True,
                default=default,
                metavar="BOOL",
                help=f"{help_text} (default {str(default).lower()})",
            )
        else:
            parser.add_argument(f"--{name}", type=kind, default=default, help=f"{help_text} (default {default!r})")

    add("port", int, "TCP port for gRPC")
    add(
        "host",
        str,
        "Address the gRPC and REST ports listen on (not a TF Serving flag): 127.0.0.1 by default, this machine only; "
        "0.0.0.0 listens everywhere as TF Serving does, with no authentication (keep it on a private network)",
    )
    add("grpc_max_threads", int, "Max gRPC server threads handling calls")
    add("enable_grpc_healthcheck_service", bool, "Serve the standard gRPC health service (grpc.health.v1)")
    add("rest_api_port", int, "TCP port for the REST API and metrics; 0 turns REST off")
    add("rest_api_num_threads", int, "Threads for HTTP/REST request handling")
    add("rest_api_timeout_in_ms", int, "Timeout for an HTTP/REST call")
    add("model_name", str, "Name of the model served with --model_base_path")
    add("model_base_path", str, "Path holding the model's numbered version directories")
    add("model_config_file", str, "ModelServerConfig text proto listing the models to serve")
    add("model_config_file_poll_wait_seconds", int, "Seconds between reloads of --model_config_file; 0 = read once")
    add("file_system_poll_wait_seconds", float, "Seconds between polls for new versions; 0 or less = look once")
    add("enable_batching", bool, "Merge concurrent calls into batched model runs")
    add("batching_parameters_file", str, "BatchingParameters text proto; defaults are used when empty")
    add("enable_model_warmup", bool, "Replay assets.extra/tf_serving_warmup_requests on load")
    add("max_num_load_retries", int, "Retries of a failed version load")
    add("load_retry_interval_micros", int, "Wait between load retries, in microseconds")
    add("num_load_threads", int, "Threads loading versions; 0 = one")
    add("num_unload_threads", int, "Accepted for compatibility; unloads run on their own thread")
    add("tensorflow_intra_op_parallelism", int, "Threads that one TensorFlow op may use; 0 = TensorFlow's choice")
    add("tensorflow_inter_op_parallelism", int, "TensorFlow ops that may run at once; 0 = TensorFlow's choice")
    add("allow_version_labels_for_unavailable_models", bool, "Allow labels on versions not yet available")
    add("monitoring_config_file", str, "MonitoringConfig text proto (prometheus_config path)")
    add("shutdown_grace_seconds", float, "On SIGTERM, how long in-flight calls may finish (not a TF Serving flag)")
    add(
        "max_image_pixels",
        int,
        "Encoded images announcing more pixels are refused (INVALID_ARGUMENT) before decoding; a batch is split by "
        "image size so one run pads to at most this many pixels per image (not a TF Serving flag)",
    )
    add("log_level", str, "Log level: DEBUG, INFO, WARNING or ERROR (not a TF Serving flag)")
    add(
        "runtime",
        str,
        "What runs a model version: tensorflow (its SavedModel), or openvino (the networks model.export converts "
        "beside it; versions without them fall back to tensorflow) (not a TF Serving flag)",
    )
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Parse the command line into Settings; raise SettingsError when it cannot serve."""
    namespace = build_parser().parse_args(argv)
    return Settings(**vars(namespace))
