"""The model server: TF Serving's gRPC services over a ModelManager, plus its REST port."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from maskwatch.net import is_loopback
from serving import metrics as m
from serving.batching import BatchScheduler, load_batching_parameters
from serving.inference import Inference
from serving.manager import ManagerOptions, ModelManager
from serving.model_config import ConfigError, ModelConfig, configs_from_proto, from_flags, load_model_config_file
from serving.rest import RestApi, RestServer, parse_monitoring_config
from serving.servable import OpenVinoServable, Servable
from serving.settings import DEFAULT_PROMETHEUS_PATH, RUNTIME_OPENVINO, Settings
from serving.status import ServingError
from serving.warmup import run_warmup

logger = logging.getLogger(__name__)

Response = TypeVar("Response")

# TF Serving lifts gRPC's message size limits (it sets INT_MAX); batches of JPEGs are large.
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.so_reuseport", 0),
]


# what the gRPC health service reports on: the whole server, and each service it offers
HEALTH_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


class StartupError(RuntimeError):
    """The server cannot start: a port is taken, a config is wrong, or a model failed to load."""


def _answer(
    metrics: m.Metrics, api: str, model_name: str, context: grpc.ServicerContext, call: Callable[[], Response]
) -> Response:
    started = time.perf_counter()
    try:
        with m.in_flight(metrics, api, "GRPC"):
            response = call()
    except ServingError as error:
        m.record_request(metrics, model_name, api, "GRPC", error.code.name, time.perf_counter() - started)
        logger.debug("call failed api=%s model=%s code=%s message=%r", api, model_name, error.code.name, error.message)
        context.abort(error.code, error.message)
    m.record_request(metrics, model_name, api, "GRPC", "OK", time.perf_counter() - started)
    return response


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService: Predict and GetModelMetadata."""

    def __init__(self, inference: Inference, metrics: m.Metrics) -> None:
        self._inference = inference
        self._metrics = metrics

    def Predict(  # noqa: N802 - gRPC method name
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        return _answer(
            self._metrics, "predict", request.model_spec.name, context, lambda: self._inference.predict(request)
        )

    def GetModelMetadata(  # noqa: N802
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return _answer(
            self._metrics,
            "GetModelMetadata",
            request.model_spec.name,
            context,
            lambda: self._inference.metadata(request),
        )


    def Classify(  # noqa: N802
        self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        return _answer(
            self._metrics,
            "classify",
            request.model_spec.name,
            context,
            lambda: self._signature_error(request.model_spec, "classify", classification_pb2.ClassificationResponse),
        )

    def Regress(  # noqa: N802
        self, request: regression_pb2.RegressionRequest, context: grpc.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        return _answer(
            self._metrics,
            "regress",
            request.model_spec.name,
            context,
            lambda: self._signature_error(request.model_spec, "regress", regression_pb2.RegressionResponse),
        )

    def _signature_error(self, spec: model_pb2.ModelSpec, api: str, response: Callable[[], Response]) -> Response:
        if not spec.name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        self._inference.check_signature_method(spec, api)  # always raises: no classify/regress signature is run
        return response()


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, inference: Inference, metrics: m.Metrics, reload: Callable[[list[ModelConfig]], None]) -> None:
        self._inference = inference
        self._metrics = metrics
        self._reload = reload

    def GetModelStatus(  # noqa: N802
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        return _answer(
            self._metrics,
            "GetModelStatus",
            request.model_spec.name,
            context,
            lambda: self._inference.model_status(request),
        )

    def HandleReloadConfigRequest(  # noqa: N802
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self._reload(configs_from_proto(request.config, "ReloadConfigRequest"))
        except ConfigError as error:
            logger.error("reload config failed error=%r", str(error))
            response.status.error_code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            response.status.error_message = str(error)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return response


class ModelServer:
    """Builds the collaborators from Settings, opens the ports, and closes all in reverse order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = m.Metrics()
        self.scheduler: BatchScheduler | None = None
        self.manager: ModelManager | None = None
        self.inference: Inference | None = None
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc: grpc.Server | None = None
        self._health: health.HealthServicer | None = None
        self._rest: RestServer | None = None
        self._stack = contextlib.ExitStack()
        self._stop_polling = threading.Event()

    def start(self, stop: threading.Event) -> bool:
        """Load the models, then open the ports (as TF Serving, only once models are available).

        Returns False when `stop` was set before the server became ready.
        Raises StartupError when it cannot serve.
        """
        settings = self.settings
        try:
            configs = (
                load_model_config_file(settings.model_config_file)
                if settings.model_config_file
                else from_flags(settings.model_name, settings.model_base_path)
            )
            batching = load_batching_parameters(settings.batching_parameters_file) if settings.enable_batching else None
        except (ConfigError, ValueError, OSError) as error:
            raise StartupError(str(error)) from error
        metrics_path: str | None = DEFAULT_PROMETHEUS_PATH
        if settings.monitoring_config_file:
            with open(settings.monitoring_config_file, encoding="utf-8") as handle:
                metrics_path = parse_monitoring_config(handle.read())

        if batching is not None:
            self.scheduler = BatchScheduler(batching, observer=self._observe_batch)
            self._stack.callback(self.scheduler.close, settings.shutdown_grace_seconds)
            logger.info(
                "batching enabled max_batch_size=%d batch_timeout_micros=%d max_enqueued_batches=%d "
                "num_batch_threads=%d allowed_batch_sizes=%s",
                batching.max_batch_size,
                batching.batch_timeout_micros,
                batching.max_enqueued_batches,
                batching.num_batch_threads,
                list(batching.allowed_batch_sizes),
            )
        self.manager = ModelManager(
            ManagerOptions(
                poll_wait_seconds=settings.file_system_poll_wait_seconds,
                max_num_load_retries=settings.max_num_load_retries,
                load_retry_interval_seconds=settings.load_retry_interval_micros / 1e6,
                num_load_threads=max(1, settings.num_load_threads),
                allow_version_labels_for_unavailable_models=settings.allow_version_labels_for_unavailable_models,
            ),
            loader=OpenVinoServable.load if settings.runtime == RUNTIME_OPENVINO else Servable.load,
            prepare=self._warm_up if settings.enable_model_warmup else None,
            metrics=self.metrics,
        )
        self._stack.callback(self.manager.close, settings.shutdown_grace_seconds)
        self.inference = Inference(self.manager, self.scheduler, self.metrics, settings.max_image_pixels)

        self.manager.apply_config(configs)
        self.manager.start_polling()
        if not self.manager.wait_until_settled(stop=stop):
            return False
        failures = self.manager.load_failures()
        if failures:
            raise StartupError("initial model load failed: " + " | ".join(failures))
        try:
            self.manager.check_labels()
        except ConfigError as error:
            raise StartupError(str(error)) from error
        if settings.model_config_file and settings.model_config_file_poll_wait_seconds > 0:
            poller = threading.Thread(target=self._poll_config, name="config-poll", daemon=True)
            poller.start()
            self._stack.callback(poller.join, 5.0)
            self._stack.callback(self._stop_polling.set)

        self._start_grpc()
        if settings.rest_api_port:
            self._start_rest(metrics_path)
        return True

    def _start_grpc(self) -> None:
        assert self.inference is not None
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.settings.grpc_max_threads, thread_name_prefix="grpc"),
            options=GRPC_OPTIONS,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.inference, self.metrics), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.inference, self.metrics, self.reload), server
        )
        if self.settings.enable_grpc_healthcheck_service:
            # grpc.health.v1 as tensorflow_model_server serves it: the server ("") and its services are SERVING once
            # the models are loaded (start() opens the port only then), NOT_SERVING from the stop on
            self._health = health.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            for service in HEALTH_SERVICES:
                self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        host = self.settings.host
        address = f"[{host}]:{self.settings.port}" if ":" in host else f"{host}:{self.settings.port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as error:
            raise StartupError(f"cannot listen for gRPC on {address}: {error}") from error
        if port == 0:
            raise StartupError(f"cannot listen for gRPC on {address}")
        server.start()
        self._grpc = server
        self.grpc_port = port
        logger.info("grpc listening address=%s", address)
        if not is_loopback(host):
            logger.warning(
                "listening beyond this machine host=%s: the TF Serving API has no authentication, so anyone who can "
                "reach the port can call the model; keep it on a private network or use --host 127.0.0.1",
                host,
            )

    def _start_rest(self, metrics_path: str | None) -> None:
        assert self.inference is not None
        api = RestApi(self.inference, self.metrics, metrics_path)
        try:
            rest = RestServer(
                api,
                self.settings.rest_api_port,
                host=self.settings.host,
                timeout_seconds=self.settings.rest_api_timeout_in_ms / 1000,
                num_threads=self.settings.rest_api_num_threads,
            )
        except OSError as error:
            raise StartupError(f"cannot listen for REST on port {self.settings.rest_api_port}: {error}") from error
        rest.start()
        self._rest = rest
        self.rest_port = rest.port
        logger.info("rest listening port=%d metrics_path=%s", rest.port, metrics_path or "-")

    def reload(self, configs: list[ModelConfig]) -> None:
        """Serve this model list from now on (HandleReloadConfigRequest, config file polling)."""
        assert self.manager is not None
        self.manager.apply_config(configs)
        self.manager.wait_until_settled(timeout=self.settings.shutdown_grace_seconds * 6)
        self.manager.check_labels()

    def _poll_config(self) -> None:
        wait = self.settings.model_config_file_poll_wait_seconds
        last: list[ModelConfig] | None = None
        while not self._stop_polling.wait(wait):
            try:
                configs = load_model_config_file(self.settings.model_config_file)
            except (ConfigError, OSError) as error:
                logger.error("config reload failed path=%s error=%r", self.settings.model_config_file, str(error))
                continue
            if configs != last:
                last = configs
                try:
                    self.reload(configs)
                except ConfigError as error:
                    logger.error("config reload failed error=%r", str(error))

    def _warm_up(self, servable: Servable) -> None:
        assert self.inference is not None
        inference = self.inference
        run_warmup(servable.path, lambda request: inference.predict_on(servable, request, batching=False))

    def _observe_batch(self, key: object, rows: int, padded: int) -> None:
        model_name = str(key[0]) if isinstance(key, tuple) and key else ""
        self.metrics.observe(m.PROCESSED_BATCH_SIZE, padded, model_name=model_name)
        self.metrics.observe(m.PADDING_SIZE, padded - rows, model_name=model_name)

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight calls finish within `grace`, release everything."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        if self._grpc is not None:
            logger.info("grpc stopping grace_seconds=%.1f", grace)
            self._grpc.stop(grace).wait(grace + 1.0)
            self._grpc = None
        if self._rest is not None:
            self._rest.stop()
            self._rest = None
        self._stack.close()
        logger.info("server stopped")
