"""Predict, GetModelMetadata and GetModelStatus semantics, shared by the gRPC and REST APIs."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import grpc
import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from maskwatch.frames import MAX_PIXELS
from maskwatch.model_api import dtype_name, to_ndarray, to_proto
from serving import metrics as m
from serving.batching import BatchScheduler, run_by_image_size
from serving.manager import ModelManager
from serving.servable import DEFAULT_SIGNATURE, Servable
from serving.settings import RUNTIME_OPENVINO
from serving.status import ServingError, invalid_argument

logger = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def _join(keys: object) -> str:
    return ",".join(sorted(keys))  # type: ignore[call-overload]


def _shape_compatible(array: np.ndarray, info: meta_graph_pb2.TensorInfo) -> bool:
    shape = info.tensor_shape
    if shape.unknown_rank:
        return True
    if len(shape.dim) != array.ndim:
        return False
    return all(dim.size < 0 or dim.size == size for dim, size in zip(shape.dim, array.shape, strict=True))


def _shape_text(info: meta_graph_pb2.TensorInfo) -> str:
    if info.tensor_shape.unknown_rank:
        return "<unknown>"
    return "[" + ",".join(str(dim.size) for dim in info.tensor_shape.dim) + "]"


def validate_inputs(
    signature: meta_graph_pb2.SignatureDef, request: predict_pb2.PredictRequest
) -> dict[str, np.ndarray]:
    """Decode and check the request's inputs against the signature, as TF Serving does."""
    expected = set(signature.inputs.keys())
    received = set(request.inputs.keys())
    if len(received) != len(expected):
        raise invalid_argument(
            f"input size does not match signature: {len(received)}!={len(expected)} "
            f"len({{{_join(received)}}}) != len({{{_join(expected)}}}). "
            f"Sent extra: {{{_join(received - expected)}}}. Missing but required: {{{_join(expected - received)}}}."
        )
    ordered = sorted(expected)
    arrays: dict[str, np.ndarray] = {}
    for alias in sorted(received):
        if alias not in expected:
            raise invalid_argument(
                f"input tensor alias not found in signature: {alias}. "
                f"Inputs expected to be in the set {{{_join(expected)}}}."
            )
        proto = request.inputs[alias]
        info = signature.inputs[alias]
        if proto.dtype != info.dtype:
            raise invalid_argument(
                f"Expects arg[{ordered.index(alias)}] to be {dtype_name(info.dtype)} but "
                f'{dtype_name(proto.dtype)} is provided (input tensor "{alias}")'
            )
        try:
            array = to_ndarray(proto)
        except (TypeError, ValueError) as error:
            raise invalid_argument(f"tensor parsing error: {alias}") from error
        if not _shape_compatible(array, info):
            raise invalid_argument(
                f'input tensor "{alias}" has shape [{",".join(map(str, array.shape))}] '
                f"but the signature expects {_shape_text(info)}"
            )
        arrays[alias] = array
    return arrays


def validate_output_filter(signature: meta_graph_pb2.SignatureDef, request: predict_pb2.PredictRequest) -> list[str]:
    """The output aliases to answer: output_filter if given, else every output."""
    if not request.output_filter:
        return sorted(signature.outputs.keys())
    seen: list[str] = []
    for alias in request.output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{_join(signature.outputs.keys())}}}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen


class Inference:
    """Answers the TF Serving API calls against the models a ModelManager holds."""

    def __init__(
        self,
        manager: ModelManager,
        scheduler: BatchScheduler | None,
        metrics: m.Metrics,
        max_image_pixels: int = MAX_PIXELS,
    ) -> None:
        self.manager = manager
        self.scheduler = scheduler
        self.metrics = metrics
        self.max_image_pixels = max_image_pixels

    def _resolve(self, spec: model_pb2.ModelSpec) -> tuple[str, int | None]:
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return spec.name, int(spec.version.value)
        if choice == "version_label":
            return spec.name, self.manager.resolve_label(spec.name, spec.version_label)
        return spec.name, None

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """PredictionService.Predict."""
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        name, version = self._resolve(request.model_spec)
        with self.manager.acquire(name, version) as servable:
            return self.predict_on(servable, request)

    def predict_on(
        self, servable: Servable, request: predict_pb2.PredictRequest, batching: bool = True
    ) -> predict_pb2.PredictResponse:
        """Run a Predict request on one servable (warm-up calls this directly)."""
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signature(signature_name)
        inputs = validate_inputs(signature, request)
        aliases = validate_output_filter(signature, request)
        outputs = self._run(servable, signature_name, inputs, batching)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for alias in aliases:
            if alias not in outputs:
                raise ServingError(grpc.StatusCode.INTERNAL, f"signature output {alias} was not produced by the model")
            response.outputs[alias].CopyFrom(to_proto(outputs[alias]))
        return response

    def _run(
        self, servable: Servable, signature_name: str, inputs: Mapping[str, np.ndarray], batching: bool
    ) -> dict[str, np.ndarray]:
        def run(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            started = time.perf_counter()
            try:
                return run_by_image_size(arrays, lambda a: servable.run(signature_name, a), self.max_image_pixels)
            finally:
                self.metrics.observe(
                    m.RUNTIME_LATENCY,
                    (time.perf_counter() - started) * 1e6,
                    model_name=servable.name,
                    API="predict",
                    runtime="OpenVINO" if servable.runtime == RUNTIME_OPENVINO else "TF2",
                )

        if self.scheduler is None or not batching:
            return run(inputs)
        key = (servable.name, servable.version, signature_name, id(servable))
        outputs = self.scheduler.submit(key, inputs, run)
        size = next(iter(inputs.values())).shape[0]
        self.metrics.observe(m.INPUT_BATCH_SIZE, size, model_name=servable.name)
        return outputs

    def check_signature_method(self, spec: model_pb2.ModelSpec, api: str) -> None:
        """Classify and Regress: TF Serving's answer when the signature is not of that method (ours are Predict
        signatures), checked on the loaded model as it checks; a model with such a signature still gets UNIMPLEMENTED
        here, since this server runs Predict signatures only."""
        expected = {"classify": CLASSIFY_METHOD, "regress": REGRESS_METHOD}[api]
        noun = "classification" if api == "classify" else "regression"
        name, version = self._resolve(spec)
        with self.manager.acquire(name, version) as servable:
            signature = servable.signature(spec.signature_name)
        if signature.method_name != expected:
            raise invalid_argument(
                f"Expected {noun} signature method_name to be {expected}. Was: {signature.method_name}"
            )
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"{api} signatures are not run by this server; use Predict")

    def metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """PredictionService.GetModelMetadata: the signature_def map packed in an Any."""
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {field} is not supported")
        name, version = self._resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        with self.manager.acquire(name, version) as servable:
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature in servable.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(signature)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    def model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """ModelService.GetModelStatus: every version's state, newest first."""
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        if not spec.name:
            raise invalid_argument("Missing model name in request.")
        version: int | None = None
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            version = int(spec.version.value)
        elif choice == "version_label":
            version = self.manager.resolve_label(spec.name, spec.version_label)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.manager.status(spec.name, version):
            entry = response.model_version_status.add(version=status.version, state=status.state)
            entry.status.SetInParent()  # TF Serving always sets it; OK is error_code 0
            if status.error is not None:
                entry.status.error_code = status.error.code.value[0]
                entry.status.error_message = status.error.message
        return response
