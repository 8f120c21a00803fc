"""Running a Contract 2 model over images: a SavedModel in this process, or any TF Serving API server over gRPC;
answers become `metrics.Predicted` in pixels, with wall-clock and CPU timing."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from maskwatch.detections import Detections
from maskwatch.eval.metrics import Predicted
from maskwatch.model_api import (
    INPUT_IMAGES,
    MODEL_NAME,
    OUT_MULTICLASS_SCORES,
    SIGNATURE_NAME,
    ModelClient,
    parse_outputs,
)

logger = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"


class Predictor(Protocol):
    name: str

    def predict(self, jpegs: Sequence[bytes]) -> list[Detections]: ...


def resolve_version_dir(path: Path) -> Path:
    """A version directory as given, or the highest numbered version under a model base path."""
    if (path / SAVED_MODEL_FILE).is_file():
        return path
    versions = sorted((int(p.name), p) for p in path.glob("*") if p.name.isdigit() and (p / SAVED_MODEL_FILE).is_file())
    if not versions:
        raise FileNotFoundError(f"{path}: neither a SavedModel nor a base path with numbered versions")
    return versions[-1][1]


def limit_threads(threads: int) -> None:
    """Keep TensorFlow to `threads` cores; only possible before its first op (else the setting stays as it is)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        logger.warning("TensorFlow already running: thread limit unchanged threads=%d", threads)


class SavedModelPredictor:
    """The model's `serving_default` signature, loaded in this process."""

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        self.version_dir = resolve_version_dir(path)
        self.name = str(self.version_dir)
        self._loaded = tf.saved_model.load(str(self.version_dir))
        self._serve = self._loaded.signatures[SIGNATURE_NAME]
        self._tf = tf

    def predict(self, jpegs: Sequence[bytes]) -> list[Detections]:
        out = self._serve(**{INPUT_IMAGES: self._tf.constant(list(jpegs), dtype=self._tf.string)})
        return parse_outputs({k: v.numpy() for k, v in out.items()}, len(jpegs))


class OpenVinoPredictor:
    """The same version directory run by the model server's OpenVINO runtime (serving.ovmodel), in this process."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        from serving.ovmodel import OpenVinoMaskDetector

        self.version_dir = resolve_version_dir(path)
        self.name = f"{self.version_dir} (openvino)"
        self._model = OpenVinoMaskDetector(self.version_dir, threads=threads)

    def predict(self, jpegs: Sequence[bytes]) -> list[Detections]:
        return parse_outputs(self._model.predict(jpegs), len(jpegs))


class ModulePredictor:
    """A Contract 2 model still in this process (a tf.Module with the `serve` function that export saves as
    `serving_default`): to measure a model without writing it out, e.g. each fold of a cross-validation."""

    def __init__(self, module: Any, name: str) -> None:
        import tensorflow as tf

        self.name = name
        self._module = module
        self._tf = tf

    def predict(self, jpegs: Sequence[bytes]) -> list[Detections]:
        out = self._module.serve(**{INPUT_IMAGES: self._tf.constant(list(jpegs), dtype=self._tf.string)})
        return parse_outputs({k: v.numpy() for k, v in out.items()}, len(jpegs))


class ServingPredictor:
    """Any server speaking TensorFlow Serving's gRPC PredictionService (ours or tensorflow/serving)."""

    def __init__(self, target: str, model_name: str = MODEL_NAME, timeout_s: float = 60.0) -> None:
        self._client = ModelClient(
            target, model_name=model_name, timeout_s=timeout_s, optional_outputs=(OUT_MULTICLASS_SCORES,)
        )
        info = self._client.load_metadata()
        self.name = f"{target}/{model_name}/{info.version}"

    def predict(self, jpegs: Sequence[bytes]) -> list[Detections]:
        return self._client.detect(jpegs)

    def close(self) -> None:
        self._client.close()


def to_predicted(detections: Detections, width: int, height: int) -> Predicted:
    """Normalised (ymin, xmin, ymax, xmax) rows to pixel (xmin, ymin, xmax, ymax)."""
    if not len(detections):
        return Predicted.empty()
    yxyx = np.array([d.box for d in detections.items], np.float64)
    boxes = yxyx[:, [1, 0, 3, 2]] * np.array([width, height, width, height], np.float64)
    scores = np.array([d.score for d in detections.items], np.float64)
    per_class = [d.class_scores for d in detections.items]
    class_scores = None if any(c is None for c in per_class) else np.array(per_class, np.float64)
    return Predicted(boxes, scores, tuple(d.label for d in detections.items), class_scores)


@dataclass(frozen=True)
class Timing:
    frames: int
    seconds: float
    cpu_seconds: float  # of this process: meaningful for an in-process model only

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "cpu_seconds_per_frame": round(self.cpu_seconds / self.frames, 4) if self.frames else None,
        }


def run(
    predictor: Predictor, jpegs: Sequence[bytes], sizes: Sequence[tuple[int, int]], batch_size: int = 1
) -> tuple[list[Predicted], Timing]:
    """Every image through the model, `batch_size` per call, after one warm-up call; sizes are (width, height)."""
    if jpegs:
        predictor.predict(jpegs[:1])
    preds: list[Predicted] = []
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(jpegs), batch_size):
        chunk = jpegs[start : start + batch_size]
        for k, det in enumerate(predictor.predict(chunk)):
            w, h = sizes[start + k]
            preds.append(to_predicted(det, w, h))
        if start // batch_size % 25 == 0:
            logger.info("predicted images=%d of=%d", min(start + batch_size, len(jpegs)), len(jpegs))
    return preds, Timing(len(jpegs), time.perf_counter() - wall, time.process_time() - cpu)


def frames_640x480(jpegs: Sequence[bytes], count: int) -> list[bytes]:
    """`count` camera-sized frames: the given images resized to 640x480 and re-encoded (JPEG quality 90), cycled."""
    frames = []
    for k in range(count):
        img = cv2.imdecode(np.frombuffer(jpegs[k % len(jpegs)], np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("an image is not decodable")
        ok, buf = cv2.imencode(".jpg", cv2.resize(img, (640, 480), interpolation=cv2.INTER_LINEAR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise ValueError("cannot encode a frame")
        frames.append(buf.tobytes())
    return frames


def time_frames(predictor: Predictor, frames: Sequence[bytes]) -> Timing:
    """Frames per second, one frame per call (a camera's pace), after one warm-up call."""
    if not frames:
        return Timing(0, 0.0, 0.0)
    predictor.predict(frames[:1])
    wall, cpu = time.perf_counter(), time.process_time()
    for f in frames:
        predictor.predict([f])
    return Timing(len(frames), time.perf_counter() - wall, time.process_time() - cpu)
