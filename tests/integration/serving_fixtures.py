"""Helpers for the model server tests: tiny SavedModels in TF Serving's layout, a server subprocess."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Sequence
from pathlib import Path

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from maskwatch.procs import Child, free_port, py, version_states
from serving.server import ModelServer
from tests.integration.conftest import ROOT

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
# shared libraries that only TensorFlow's runtime maps (its protos alone map neither)
TF_RUNTIME_LIBRARIES = ("_pywrap_tensorflow_internal", "libtensorflow_framework")


def tensorflow_runtime_loaded(*pids: int) -> list[str]:
    """Which of TF_RUNTIME_LIBRARIES the processes `pids` have mapped."""
    maps = "".join(Path(f"/proc/{pid}/maps").read_text() for pid in pids)
    return [lib for lib in TF_RUNTIME_LIBRARIES if lib in maps]


class TinyDetector(tf.Module):
    """Contract 2's signature on a toy: one detection per image, num_detections = len(bytes)."""

    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = tf.constant(version, tf.int64)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        n = tf.cast(tf.strings.length(images), tf.float32)
        batch = tf.shape(images)[0]
        return {
            "num_detections": n,
            "detection_scores": tf.reshape(n, [-1, 1]) / 100.0,
            "detection_boxes": tf.zeros([batch, 1, 4]),
            "detection_classes": tf.ones([batch, 1]),
            "model_version": tf.fill([batch], self.version),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def double(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * 2.0}


def predict_request(images: Sequence[bytes], name: str = "mask_detector", **spec: object) -> predict_pb2.PredictRequest:
    """A Predict request for the tiny detector."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = int(value)  # type: ignore[call-overload]
        else:
            setattr(request.model_spec, key, value)
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
    return request


def write_warmup(version_dir: Path, requests: Sequence[predict_pb2.PredictRequest]) -> None:
    """assets.extra/tf_serving_warmup_requests holding these Predict requests."""
    target = version_dir / "assets.extra"
    target.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target / "tf_serving_warmup_requests")) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def build_model(base: Path, version: int, warmup: Sequence[predict_pb2.PredictRequest] = ()) -> Path:
    """Export the tiny detector as `<base>/<version>`, atomically (written aside, then renamed)."""
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".staging-{version}"
    if staging.exists():
        shutil.rmtree(staging)
    module = TinyDetector(version)
    tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve, "double": module.double})
    if warmup:
        write_warmup(staging, warmup)
    final = base / str(version)
    staging.rename(final)
    return final


def build_broken(base: Path, version: int) -> Path:
    """A numbered directory whose saved_model.pb is garbage."""
    path = base / str(version)
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    return path


class ServerProcess:
    """`python -m serving ...` as a child process (maskwatch.procs), with its log kept for assertions."""

    def __init__(self, args: Sequence[str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.child = Child(log_path.stem, py("serving", "--port", str(self.port), *args), cwd=ROOT).start(log_path.parent)
        assert self.child.proc is not None
        self.proc = self.child.proc  # for signals and waits of the test's own

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.child.log()

    def wait_available(self, name: str = "mask_detector", timeout: float = 120) -> None:
        """Until GetModelStatus shows an AVAILABLE version (fails early if the process dies)."""
        ready = lambda: AVAILABLE in version_states(self.target, name).values()  # noqa: E731
        self.child.wait_ready(ready, timeout, f"model {name} AVAILABLE", interval_s=0.25)

    def stub(self) -> prediction_service_pb2_grpc.PredictionServiceStub:
        """A PredictionService stub on a fresh channel."""
        return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(self.target))

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit code (killed, and the test fails, if it does not exit in time)."""
        return self.child.stop(timeout)

    def stop(self) -> None:
        """Make sure the process is gone."""
        if self.child.alive():
            self.child.send_signal(signal.SIGKILL)
            self.child.finish(10)


def start_server(*argv: str) -> ModelServer:
    """An in-process ModelServer from command-line flags, ready (models loaded, ports open)."""
    import threading

    from serving.settings import parse_settings

    server = ModelServer(parse_settings(["--port", str(free_port()), *argv]))
    if not server.start(threading.Event()):
        raise AssertionError("server did not start")
    return server
