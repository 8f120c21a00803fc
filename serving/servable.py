"""One loaded SavedModel version: its signatures and how to run one."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from maskwatch.model_api import SIGNATURE_NAME
from maskwatch.tfprotos import load_tensorflow
from serving.settings import RUNTIME_OPENVINO, RUNTIME_TENSORFLOW
from serving.status import ServingError, code_from_number, failed_precondition, invalid_argument

logger = logging.getLogger(__name__)

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = SIGNATURE_NAME  # tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
SAVED_MODEL_FILENAMES = ("saved_model.pb", "saved_model.pbtxt")

_tensorflow: Any = None
_tensorflow_lock = threading.Lock()
_tensorflow_setup: list[Callable[[Any], None]] = []


def on_tensorflow_load(setup: Callable[[Any], None]) -> None:
    """Call `setup(tf)` when TensorFlow is first loaded, before it runs anything (the flags' thread pools)."""
    _tensorflow_setup.append(setup)


def tensorflow() -> Any:
    """TensorFlow's runtime, loaded when a version first needs it: the OpenVINO runtime never does, unless a version
    lacks the OpenVINO networks (maskwatch.tfprotos.load_tensorflow)."""
    global _tensorflow
    if _tensorflow is not None:
        return _tensorflow
    with _tensorflow_lock:
        if _tensorflow is None:
            tf = load_tensorflow()
            for setup in _tensorflow_setup:
                setup(tf)
            _tensorflow = tf
        return _tensorflow


class LoadError(Exception):
    """A version directory could not be loaded as a SavedModel."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN) -> None:
        super().__init__(message)
        self.code = code


def read_meta_graph(path: str, tag: str = SERVE_TAG) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef tagged `tag` from the SavedModel at `path`."""
    pb_path = os.path.join(path, "saved_model.pb")
    if not os.path.isfile(pb_path):
        raise LoadError(
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}",
            grpc.StatusCode.NOT_FOUND,
        )
    saved_model = saved_model_pb2.SavedModel()
    try:
        with open(pb_path, "rb") as handle:
            saved_model.ParseFromString(handle.read())
    except (OSError, DecodeError) as error:
        raise LoadError(f"Could not read SavedModel proto at {pb_path}: {error}", grpc.StatusCode.DATA_LOSS) from error
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return meta_graph
    available = [list(mg.meta_info_def.tags) for mg in saved_model.meta_graphs]
    raise LoadError(
        f"Could not find meta graph def matching supplied tags: {{ {tag} }}. Available tags: {available} in {path}",
        grpc.StatusCode.NOT_FOUND,
    )


class Servable:
    """A loaded version of a model, callable by signature name."""

    runtime = RUNTIME_TENSORFLOW

    def __init__(
        self, name: str, version: int, path: str, meta_graph: meta_graph_pb2.MetaGraphDef, loaded: Any
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.meta_graph = meta_graph
        self._loaded = loaded
        self._functions: dict[str, Any] = dict(loaded.signatures)

    @classmethod
    def load(cls, name: str, version: int, path: str) -> Servable:
        """Load `<base>/<version>` with tf.saved_model.load; raise LoadError on failure."""
        meta_graph = read_meta_graph(path)
        tf = tensorflow()
        try:
            loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
        except tf.errors.OpError as error:
            raise LoadError(
                f"Failed to load SavedModel at {path}: {error.message}", code_from_number(error.error_code)
            ) from error
        except (OSError, ValueError) as error:
            raise LoadError(f"Failed to load SavedModel at {path}: {error}") from error
        return cls(name, version, path, meta_graph, loaded)

    @property
    def signature_defs(self) -> Mapping[str, meta_graph_pb2.SignatureDef]:
        """Every SignatureDef of the served meta graph, as written in saved_model.pb."""
        return self.meta_graph.signature_def

    def signature(self, signature_name: str) -> meta_graph_pb2.SignatureDef:
        """The named SignatureDef ('' means serving_default), or FAILED_PRECONDITION as TF Serving."""
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self.meta_graph.signature_def or key not in self._functions:
            raise failed_precondition(f'Serving signature key "{key}" not found.')
        return self.meta_graph.signature_def[key]

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the signature on `inputs` (already validated) and return every output."""
        key = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(key)
        function = self._functions[key]
        tf = tensorflow()
        tensors = {
            alias: tf.convert_to_tensor(value, dtype=tf.dtypes.as_dtype(signature.inputs[alias].dtype))
            for alias, value in inputs.items()
        }
        try:
            outputs = function(**tensors)
        except tf.errors.OpError as error:
            raise ServingError(code_from_number(error.error_code), str(error.message)) from error
        except (TypeError, ValueError) as error:
            raise invalid_argument(str(error)) from error
        return {alias: np.asarray(tensor.numpy()) for alias, tensor in outputs.items()}

    def release(self) -> None:
        """Drop the references to the loaded graph so its memory can be freed."""
        self._functions = {}
        self._loaded = None


class OpenVinoServable(Servable):
    """A version run by `model.ovmodel` (OpenVINO networks, libjpeg-turbo decoding) when its directory carries the
    converted networks; its signature and metadata are still read from saved_model.pb. A version without them (a
    model of another exporter) loads into TensorFlow as `Servable` does."""

    runtime = RUNTIME_OPENVINO

    def __init__(self, name: str, version: int, path: str, meta_graph: meta_graph_pb2.MetaGraphDef, model: Any) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.meta_graph = meta_graph
        self._model = model
        self._functions = {DEFAULT_SIGNATURE: model.predict}

    @classmethod
    def load(cls, name: str, version: int, path: str) -> Servable:
        from model.ovmodel import ModelFormatError, OpenVinoMaskDetector, has_openvino

        if not has_openvino(path):
            logger.info("no openvino networks in version, tensorflow runtime model=%s version=%d", name, version)
            return Servable.load(name, version, path)
        meta_graph = read_meta_graph(path)
        try:
            model = OpenVinoMaskDetector(path)
        except (ModelFormatError, OSError, RuntimeError) as error:
            raise LoadError(f"Failed to load the OpenVINO networks at {path}: {error}") from error
        floor_h, floor_w = model.decode_floor_hw
        logger.info("openvino runtime model=%s version=%d decode_floor=%dx%d", name, version, floor_w, floor_h)
        return cls(name, version, path, meta_graph, model)

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(key)
        (alias,) = signature.inputs.keys()
        images = inputs[alias]
        if images.ndim != 1:
            raise invalid_argument(f"input tensor \"{alias}\" must be a vector of JPEG strings")
        try:
            return self._model.predict([bytes(x) for x in images])
        except ValueError as error:
            raise invalid_argument(f"Invalid JPEG data or crop window, data size {images.nbytes}: {error}") from error

    def release(self) -> None:
        model, self._model = self._model, None
        self._functions = {}
        if model is not None:
            model.close()
