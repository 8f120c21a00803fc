"""The model client: TensorFlow Serving's gRPC API (Contract 2), one Predict per batch, as a future."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from maskwatch.detections import REQUIRED_OUTPUTS
from maskwatch.tfcodec import string_tensor, to_numpy, uint8_tensor

logger = logging.getLogger(__name__)

STRING_INPUT = "images"
PIXELS_INPUT = "input_tensor"
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)

@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: int
    input_name: str
    signature: str


class ModelClient:
    """Talks to any server with TensorFlow Serving's PredictionService (ours or tensorflow/serving)."""

    def __init__(
        self,
        target: str,
        model_name: str = "mask_detector",
        signature: str = "serving_default",
        timeout_s: float = 10.0,
        optional_outputs: Sequence[str] = (),
    ) -> None:
        """`optional_outputs`: also asked for when the signature has them (the metadata tells); by default only
        Contract 2's required outputs travel."""
        self.target = target
        self.optional_outputs = tuple(optional_outputs)
        self.outputs: tuple[str, ...] = REQUIRED_OUTPUTS
        self.model_name = model_name
        self.signature = signature
        self.timeout_s = timeout_s
        opts = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.max_send_message_length", 64 * 1024 * 1024)]
        self.channel = grpc.insecure_channel(target, options=opts)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.info: ModelInfo | None = None

    def close(self) -> None:
        self.channel.close()

    def load_metadata(self) -> ModelInfo:
        """Read GetModelMetadata to learn the version and whether the model takes JPEG strings or pixels."""
        from tensorflow_serving.apis import get_model_metadata_pb2 as gm
        from tensorflow_serving.apis.get_model_metadata_pb2 import SignatureDefMap

        req = gm.GetModelMetadataRequest()
        req.model_spec.name = self.model_name
        req.metadata_field.append("signature_def")
        resp = self.stub.GetModelMetadata(req, timeout=self.timeout_s)
        sigmap = SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sigmap)
        sig = sigmap.signature_def[self.signature]
        inputs = dict(sig.inputs)
        if STRING_INPUT in inputs and inputs[STRING_INPUT].dtype == types_pb2.DT_STRING:
            name = STRING_INPUT
        elif PIXELS_INPUT in inputs:
            name = PIXELS_INPUT
        elif len(inputs) == 1:
            name = next(iter(inputs))
        else:
            raise ValueError(f"model {self.model_name} has inputs {sorted(inputs)}; want {STRING_INPUT!r}")
        missing = [o for o in REQUIRED_OUTPUTS if o not in sig.outputs]
        if missing:
            raise ValueError(f"model {self.model_name} lacks outputs {missing}")
        self.outputs = REQUIRED_OUTPUTS + tuple(o for o in self.optional_outputs if o in sig.outputs)
        self.info = ModelInfo(self.model_name, int(resp.model_spec.version.value), name, self.signature)
        logger.info("model ready model=%s version=%d input=%s target=%s", self.model_name, self.info.version, name, self.target)
        return self.info

    def _request(self, jpegs: Sequence[bytes]) -> predict_pb2.PredictRequest:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = self.model_name
        req.model_spec.signature_name = self.signature
        req.inputs[STRING_INPUT].CopyFrom(string_tensor(jpegs))
        for o in self.outputs:
            req.output_filter.append(o)
        return req

    def predict_future(self, jpegs: Sequence[bytes]) -> Any:
        """Start one Predict for the whole batch; `.result()` gives the PredictResponse or raises grpc.RpcError."""
        if self.info is not None and self.info.input_name != STRING_INPUT:
            return _PixelsFuture(self, jpegs)
        return self.stub.Predict.future(self._request(jpegs), timeout=self.timeout_s)

    def predict(self, jpegs: Sequence[bytes]) -> dict[str, np.ndarray]:
        return outputs_of(self.predict_future(jpegs).result())


def outputs_of(resp: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return {k: to_numpy(v) for k, v in resp.outputs.items()}


class _PixelsFuture:
    """For TF-Object-Detection-API exports with a uint8 `input_tensor` [1,H,W,3]: decode here, one image per call."""

    def __init__(self, client: ModelClient, jpegs: Sequence[bytes]) -> None:
        self.client = client
        self.jpegs = list(jpegs)

    def done(self) -> bool:
        """Nothing runs in the background: the calls are made by result(), so waiting would gain nothing."""
        return True

    def cancel(self) -> bool:
        """Nothing was sent yet."""
        return True

    def result(self) -> predict_pb2.PredictResponse:
        assert self.client.info is not None
        merged: dict[str, list[np.ndarray]] = {o: [] for o in REQUIRED_OUTPUTS}
        for jpeg in self.jpegs:
            img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                img = np.zeros((8, 8, 3), np.uint8)
            req = predict_pb2.PredictRequest()
            req.model_spec.name = self.client.model_name
            req.model_spec.signature_name = self.client.signature
            req.inputs[self.client.info.input_name].CopyFrom(uint8_tensor(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)[None]))
            out = outputs_of(self.client.stub.Predict(req, timeout=self.client.timeout_s))
            for o in REQUIRED_OUTPUTS:
                merged[o].append(out[o])
        resp = predict_pb2.PredictResponse()
        for o, parts in merged.items():
            arr = np.concatenate(parts, axis=0).astype(np.float32)
            t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=arr.tobytes())
            t.tensor_shape.dim.extend([tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in arr.shape])
            resp.outputs[o].CopyFrom(t)
        return resp


__all__ = ["ModelClient", "ModelInfo", "RETRYABLE", "get_model_metadata_pb2", "outputs_of", "string_tensor", "to_numpy"]
