"""What runs inside the benchmark's own process: the exported model called directly (the ceiling), and the naive
one-process baseline (OpenCV DNN face detection, then Keras predict() on each face, one at a time)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskwatch.model_api import INPUT_IMAGES, OUT_NUM, SIGNATURE_NAME

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NAIVE_CONFIDENCE = 0.2  # the exported model's face threshold (serving.export.DEFAULT_FACE_THRESHOLD), so both classify the same faces


@dataclass(frozen=True)
class Window:
    """One timed run: frames done, wall seconds, CPU seconds of this process (all threads) meanwhile."""

    frames: int
    wall_s: float
    cpu_s: float
    faces: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def cores(self) -> float:
        return self.cpu_s / self.wall_s

    @property
    def fps_per_core(self) -> float:
        return self.frames / self.cpu_s if self.cpu_s > 0 else float("nan")


def timed(step: Callable[[int], tuple[int, int]], seconds: float, min_steps: int = 2) -> Window:
    """Call step(i) → (frames, faces) until `seconds` have passed (at least min_steps times)."""
    frames = faces = i = 0
    c0, t0 = time.process_time(), time.perf_counter()
    while i < min_steps or time.perf_counter() - t0 < seconds:
        f, n = step(i)
        frames += f
        faces += n
        i += 1
    return Window(frames, time.perf_counter() - t0, time.process_time() - c0, faces)


class ModelRunner:
    """The exported SavedModel's serving_default signature, called in process on batches of JPEG strings."""

    def __init__(self, version_dir: Path) -> None:
        import tensorflow as tf

        self.tf = tf
        self.fn = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_NAME]

    def batches(self, jpegs: Sequence[bytes], batch: int) -> list[object]:
        n = len(jpegs)
        return [self.tf.constant([jpegs[(i + j) % n] for j in range(batch)]) for i in range(0, n, batch)]

    def run(self, batch: object) -> int:
        """One call on a prepared batch; the faces found."""
        return int(self.fn(**{INPUT_IMAGES: batch})[OUT_NUM].numpy().sum())

    def window(self, jpegs: Sequence[bytes], batch: int, seconds: float, threads: int = 1) -> Window:
        """Calls of `batch` frames back to back from `threads` threads at once (as a server's concurrent calls)."""
        xs = self.batches(jpegs, batch)
        self.run(xs[0])  # warm (a new batch size may trace)

        def step(i: int) -> tuple[int, int]:
            return batch, self.run(xs[i % len(xs)])

        if threads == 1:
            return timed(step, seconds)
        results: list[Window] = []
        c0 = time.process_time()
        pool = [threading.Thread(target=lambda: results.append(timed(step, seconds))) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = max(w.wall_s for w in results)
        # each thread's rate over its own span, added up; CPU is the whole process's
        fps = sum(w.fps for w in results)
        return Window(round(fps * wall), wall, time.process_time() - c0, sum(w.faces for w in results))


class OpenVinoRunner(ModelRunner):
    """The same version directory through the model server's OpenVINO runtime (serving.ovmodel), in process."""

    def __init__(self, version_dir: Path) -> None:
        from serving.ovmodel import OpenVinoMaskDetector

        self.model = OpenVinoMaskDetector(version_dir)

    def batches(self, jpegs: Sequence[bytes], batch: int) -> list[object]:
        n = len(jpegs)
        return [[jpegs[(i + j) % n] for j in range(batch)] for i in range(0, n, batch)]

    def run(self, batch: object) -> int:
        return int(self.model.predict(batch)["num_detections"].sum())  # type: ignore[arg-type]


class NaiveRunner:
    """The original mask apps' loop: decode, cv2.dnn SSD on a 300×300 blob, then classifier.predict() per face."""

    def __init__(self) -> None:
        import cv2
        import tf_keras

        from serving.export import default_sources

        src = default_sources()
        self.cv2 = cv2
        self.net = cv2.dnn.readNetFromCaffe(str(src.prototxt), str(src.caffemodel))
        self.classifier = tf_keras.models.load_model(str(src.classifier), compile=False)
        from tf_keras.applications.mobilenet_v2 import preprocess_input

        self.preprocess = preprocess_input

    def frame(self, jpeg: bytes) -> int:
        """One frame; returns the faces classified."""
        cv2 = self.cv2
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        h, w = img.shape[:2]
        self.net.setInput(cv2.dnn.blobFromImage(img, 1.0, (300, 300), (104.0, 177.0, 123.0)))
        det = self.net.forward()
        faces = 0
        for i in range(det.shape[2]):
            if det[0, 0, i, 2] < NAIVE_CONFIDENCE:
                continue
            x0, y0, x1, y1 = (det[0, 0, i, 3:7] * np.array([w, h, w, h])).astype(int)
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w - 1, x1), min(h - 1, y1)
            if x1 <= x0 or y1 <= y0:
                continue
            face = cv2.resize(cv2.cvtColor(img[y0:y1, x0:x1], cv2.COLOR_BGR2RGB), (224, 224)).astype(np.float32)
            self.classifier.predict(self.preprocess(face)[None], verbose=0)
            faces += 1
        return faces

    def window(self, jpegs: Sequence[bytes], seconds: float) -> Window:
        self.frame(jpegs[0])  # warm

        def step(i: int) -> tuple[int, int]:
            return 1, self.frame(jpegs[i % len(jpegs)])

        return timed(step, seconds)
