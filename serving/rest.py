"""TF Serving's REST API (/v1/models/...) and the Prometheus metrics endpoint over HTTP."""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2

from maskwatch.model_api import numpy_dtype, to_ndarray, to_proto
from serving import metrics as m
from serving.inference import SIGNATURE_DEF_FIELD, Inference
from serving.servable import DEFAULT_SIGNATURE
from serving.status import ServingError, invalid_argument

logger = logging.getLogger(__name__)

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?/?$"
)

# The numeric dtypes a JSON number (or true/false) can fill.
_JSON_NUMERIC = frozenset(
    {
        types_pb2.DT_FLOAT,
        types_pb2.DT_DOUBLE,
        types_pb2.DT_HALF,
        types_pb2.DT_INT8,
        types_pb2.DT_INT16,
        types_pb2.DT_INT32,
        types_pb2.DT_INT64,
        types_pb2.DT_UINT8,
        types_pb2.DT_UINT16,
        types_pb2.DT_UINT32,
        types_pb2.DT_UINT64,
        types_pb2.DT_BOOL,
    }
)


def _message_json(message: Message) -> Any:
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def _decode_strings(value: Any) -> Any:
    """JSON values of a DT_STRING tensor: {"b64": ...} objects or plain text."""
    if isinstance(value, list):
        return [_decode_strings(item) for item in value]
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise invalid_argument('a binary value must be an object of the form {"b64": "<base64>"}')
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError as error:
            raise invalid_argument(f"Unable to base64 decode: {error}") from error
    if isinstance(value, str):
        return value.encode("utf-8")
    raise invalid_argument(f"expected a string or a b64 object, got {type(value).__name__}")


def json_to_array(value: Any, info: meta_graph_pb2.TensorInfo, alias: str) -> np.ndarray:
    """A JSON value for input `alias` as an array of the signature's dtype."""
    if info.dtype == types_pb2.DT_STRING:
        decoded = _decode_strings(value)
        array = np.empty(np.shape(decoded) if isinstance(decoded, list) else (), dtype=object)
        if isinstance(decoded, list):
            flat = np.array(decoded, dtype=object)
            if flat.shape != array.shape:
                raise invalid_argument(f"input {alias}: ragged list")
            array[...] = flat
        else:
            array[()] = decoded
        return array
    if info.dtype not in _JSON_NUMERIC:
        raise invalid_argument(f"input {alias}: dtype {types_pb2.DataType.Name(info.dtype)} is not supported over REST")
    try:
        return np.array(value, dtype=numpy_dtype(info.dtype))
    except (TypeError, ValueError) as error:
        raise invalid_argument(f"input {alias}: {error}") from error


def _to_json_value(array: np.ndarray, alias: str) -> Any:
    if array.dtype == object or array.dtype.kind in "SU":
        as_b64 = alias.endswith("_bytes")

        def encode(item: Any) -> Any:
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            if as_b64:
                return {"b64": base64.b64encode(data).decode("ascii")}
            return data.decode("utf-8", errors="replace")

        return np.vectorize(encode, otypes=[object])(array).tolist() if array.ndim else encode(array[()])
    return array.tolist()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return value


class RestApi:
    """Maps REST calls onto Inference, in TF Serving's JSON formats."""

    def __init__(self, inference: Inference, metrics: m.Metrics, metrics_path: str | None) -> None:
        self.inference = inference
        self.metrics = metrics
        self.metrics_path = metrics_path

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        """Answer one HTTP call: (status, content type, body)."""
        path = path.split("?", 1)[0]
        if method == "GET" and self.metrics_path and path == self.metrics_path:
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render().encode()
        match = _MODEL_PATH.match(path)
        if not match or not path.startswith("/v1/"):
            return self._error(ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {path}"))
        name = match["name"]
        tail = match["tail"] or ""
        api = "predict" if tail == ":predict" else "GetModelMetadata" if tail == "/metadata" else "GetModelStatus"
        started = time.perf_counter()
        try:
            with m.in_flight(self.metrics, api, "REST"):
                payload = self._route(method, path, name, tail, match, body)
        except ServingError as error:
            m.record_request(self.metrics, name, api, "REST", error.code.name, time.perf_counter() - started)
            return self._error(error)
        m.record_request(self.metrics, name, api, "REST", "OK", time.perf_counter() - started)
        return 200, "application/json", json.dumps(_json_safe(payload), indent=1).encode()

    def _route(self, method: str, path: str, name: str, tail: str, match: re.Match[str], body: bytes) -> Any:
        version, label = match["version"], match["label"]
        if method == "GET" and tail == "":
            return self._status(name, version, label)
        if method == "GET" and tail == "/metadata":
            return self._metadata(name, version, label)
        if method == "POST" and tail == ":predict":
            return self._predict(name, version, label, body)
        if method == "POST" and tail in (":classify", ":regress"):
            spec = model_pb2.ModelSpec()
            self._spec(spec, name, version, label)
            try:
                spec.signature_name = str(json.loads(body or b"{}").get("signature_name", ""))
            except (ValueError, AttributeError) as error:
                raise invalid_argument(f"JSON Parse error: {error}") from error
            self.inference.check_signature_method(spec, tail[1:])
        raise invalid_argument(f"Malformed request: {method} {path}")

    @staticmethod
    def _error(error: ServingError) -> tuple[int, str, bytes]:
        return error.http_status, "application/json", json.dumps({"error": error.message}).encode()

    @staticmethod
    def _spec(spec: Any, name: str, version: str | None, label: str | None) -> None:
        spec.name = name
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label

    def _status(self, name: str, version: str | None, label: str | None) -> Any:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, name, version, label)
        return _message_json(self.inference.model_status(request))

    def _metadata(self, name: str, version: str | None, label: str | None) -> Any:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[SIGNATURE_DEF_FIELD])
        self._spec(request.model_spec, name, version, label)
        response = self.inference.metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
        return {
            "model_spec": _message_json(response.model_spec),
            "metadata": {SIGNATURE_DEF_FIELD: _message_json(signature_map)},
        }

    def _predict(self, name: str, version: str | None, label: str | None, body: bytes) -> Any:
        try:
            payload = json.loads(body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise invalid_argument(f"JSON Parse error: {error}") from error
        if not isinstance(payload, dict):
            raise invalid_argument("JSON Value: request body must be a JSON object")
        rows = "instances" in payload
        if rows == ("inputs" in payload):
            raise invalid_argument(
                "Missing 'inputs' or 'instances' key" if not rows else "Use either 'inputs' or 'instances', not both"
            )
        signature_name = payload.get("signature_name") or DEFAULT_SIGNATURE
        if not isinstance(signature_name, str):
            raise invalid_argument("'signature_name' must be a string")
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, name, version, label)
        request.model_spec.signature_name = signature_name
        signature = self._signature(request)
        aliases = sorted(signature.inputs.keys())
        columns = self._columns(payload["instances"] if rows else payload["inputs"], aliases, rows)
        for alias, value in columns.items():
            if alias not in signature.inputs:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {alias}. "
                    f"Inputs expected to be in the set {{{','.join(aliases)}}}."
                )
            request.inputs[alias].CopyFrom(to_proto(json_to_array(value, signature.inputs[alias], alias)))
        response = self.inference.predict(request)
        outputs = {alias: _to_json_value(to_ndarray(tensor), alias) for alias, tensor in response.outputs.items()}
        if rows:
            if len(outputs) == 1:
                return {"predictions": next(iter(outputs.values()))}
            counts = {len(value) if isinstance(value, list) else -1 for value in outputs.values()}
            if len(counts) != 1 or -1 in counts:
                raise invalid_argument(
                    "Tensor name: all outputs must have the same 0th dimension to be returned as rows; "
                    "use the columnar 'inputs' format"
                )
            count = counts.pop()
            return {"predictions": [{alias: value[i] for alias, value in outputs.items()} for i in range(count)]}
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values()))}
        return {"outputs": outputs}

    def _signature(self, request: predict_pb2.PredictRequest) -> meta_graph_pb2.SignatureDef:
        metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[SIGNATURE_DEF_FIELD])
        metadata_request.model_spec.CopyFrom(request.model_spec)
        metadata_request.model_spec.ClearField("signature_name")
        response = self.inference.metadata(metadata_request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
        key = request.model_spec.signature_name
        if key not in signature_map.signature_def:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
        # Pin the version the signature came from, so inputs are built for the model that runs them.
        request.model_spec.version.value = response.model_spec.version.value
        return signature_map.signature_def[key]

    @staticmethod
    def _columns(value: Any, aliases: list[str], rows: bool) -> dict[str, Any]:
        if not rows:
            if isinstance(value, dict) and (len(aliases) != 1 or set(value) <= set(aliases)) and "b64" not in value:
                return value
            if len(aliases) != 1:
                raise invalid_argument("'inputs' must be an object naming each input when the signature has several")
            return {aliases[0]: value}
        if not isinstance(value, list):
            raise invalid_argument("'instances' must be a list")
        named = [isinstance(item, dict) and "b64" not in item for item in value]
        if value and all(named):
            keys = set(value[0])
            if any(set(item) != keys for item in value):
                raise invalid_argument("Failed to process element: every instance must name the same inputs")
            return {key: [item[key] for item in value] for key in keys}
        if any(named):
            raise invalid_argument("Failed to process element: mixing named and unnamed instances")
        if len(aliases) != 1:
            raise invalid_argument("instances must be objects naming each input when the signature has several")
        return {aliases[0]: value}


class _Handler(BaseHTTPRequestHandler):
    api: RestApi
    slots: threading.BoundedSemaphore
    protocol_version = "HTTP/1.1"
    server_version = "MaskWatchServing"

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.slots:
            status, content_type, payload = self.api.handle(method, self.path, body)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        logger.debug("http request client=%s line=%r", self.client_address[0], format % args)


class RestServer:
    """A threaded HTTP server for RestApi on one port."""

    def __init__(
        self, api: RestApi, port: int, host: str = "0.0.0.0", timeout_seconds: float = 30.0, num_threads: int = 16
    ) -> None:
        attributes = {"api": api, "timeout": timeout_seconds, "slots": threading.BoundedSemaphore(num_threads)}
        handler = type("Handler", (_Handler,), attributes)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve on a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="rest", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)


def parse_monitoring_config(text: str) -> str | None:
    """The Prometheus path from a MonitoringConfig text proto, or None when not enabled."""
    block = re.search(r"prometheus_config\s*:?\s*\{(?P<body>[^}]*)\}", text)
    if block is None:
        return None
    enabled = re.search(r"\benable\s*:\s*(true|false|1|0)\b", block["body"])
    if enabled is None or enabled.group(1) in ("false", "0"):
        return None
    path = re.search(r'\bpath\s*:\s*"([^"]*)"', block["body"])
    return path.group(1) if path and path.group(1) else "/monitoring/prometheus/metrics"
