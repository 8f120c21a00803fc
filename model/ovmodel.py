"""The mask-detector model run by OpenVINO: libjpeg-turbo decoding, the two networks in OpenVINO, numpy around them.

`model.graph.MaskDetectorModule` is the reference: every step here computes what its TensorFlow op computes
(letterbox resize, crops, classifier + mirror pass, Contract 2 rows), so the outputs match it within the networks'
rounding (tests/integration/test_openvino_runtime.py). The detector's DetectionOutput (box decoding, top-k, NMS) is
model.nms: numpy that breaks equal scores as TensorFlow's NMS kernel does, so this runtime loads no TensorFlow.
The networks are converted from the same weights when the SavedModel is exported and stored in its version
directory under `assets.extra/openvino/`, which tensorflow/serving ignores.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import simplejpeg

from maskwatch.detections import CLASS_IDS
from maskwatch.model_api import (
    ASSETS_EXTRA,
    OUT_BOXES,
    OUT_CLASSES,
    OUT_FACE_SCORES,
    OUT_MULTICLASS_SCORES,
    OUT_NUM,
    OUT_SCORES,
)
from model import jpegscale, nms

OPENVINO_DIR = "openvino"
CONFIG_FILE = "pipeline.json"
PRIORS_FILE = "priors.npy"
DETECTOR_XML = "detector.xml"
CLASSIFIER_XML = "classifier.xml"
# What cv2.dnn.blobFromImage subtracts, in BGR order (model.ssd.BGR_MEAN; not imported: ssd imports TensorFlow), as
# a cv2 scalar (a fourth channel, unused).
BGR_MEAN_SCALAR = (104.0, 177.0, 123.0, 0.0)
CROP_BORDER = 1  # model.graph.CROP_BORDER: the replicated edge a crop may read
# Both networks run in float32, as TensorFlow does: it matches TensorFlow row for row. OpenVINO would pick bf16 by
# itself on CPUs with AMX / AVX512-BF16; the detector in bf16 was 4-5x faster there but moved 9 boxes, 30 scores and
# 3 classes of 843 validation rows past model.parity's tolerances (model/EXPERIMENTS.md, "Runtime trials").
PRECISION = "f32"


class ModelFormatError(ValueError):
    """The version directory's OpenVINO files are missing or do not describe this pipeline."""


@dataclass(frozen=True)
class PipelineConfig:
    """Everything besides the two networks' weights that `MaskDetectorModule` is built with (letterbox variant)."""

    canvas_hw: tuple[int, int]
    max_upscale: float
    classifier_size: int
    crop_margin: float | None
    class_ids: tuple[int, ...]
    face_output: bool
    flip_average: bool
    face_threshold: float
    max_detections: int
    nms_threshold: float
    top_k: int
    keep_top_k: int
    confidence_threshold: float
    variances: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        if not 0.0 < self.face_threshold < 1.0:
            raise ModelFormatError(f"face_threshold {self.face_threshold} outside (0, 1)")
        if not 1 <= self.max_detections <= self.keep_top_k:
            raise ModelFormatError(f"max_detections {self.max_detections} outside [1, {self.keep_top_k}]")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PipelineConfig:
        raw = json.loads(text)
        try:
            raw["canvas_hw"] = tuple(raw["canvas_hw"])
            raw["class_ids"] = tuple(raw["class_ids"])
            raw["variances"] = tuple(raw["variances"])
            return cls(**raw)
        except (KeyError, TypeError) as error:
            raise ModelFormatError(f"{CONFIG_FILE}: {error}") from error


def openvino_dir(version_dir: str | Path) -> Path:
    return Path(version_dir) / ASSETS_EXTRA / OPENVINO_DIR


def has_openvino(version_dir: str | Path) -> bool:
    """Whether the version directory carries the OpenVINO networks (models exported by model.export do)."""
    folder = openvino_dir(version_dir)
    return all((folder / f).is_file() for f in (CONFIG_FILE, PRIORS_FILE, DETECTOR_XML, CLASSIFIER_XML))


# ---------------------------------------------------------------------------------------------
# Pure steps, each the numpy twin of one TensorFlow op of model.graph / model.ssd
# ---------------------------------------------------------------------------------------------


def decode_jpeg(data: bytes, floor_hw: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 [H,W,3], as tf.io.decode_jpeg(channels=3, dct_method="INTEGER_ACCURATE") gives it (libjpeg's
    accurate integer DCT and fancy upsampling); with `floor_hw`, downscaled by libjpeg's DCT scaling to no less than
    it as the letterboxed graph decodes (`jpegscale.decode_ratio`, its `ratio`). Raises ValueError on bytes that
    are not a decodable JPEG."""
    try:
        if floor_hw is None:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        h, w = jpegscale.scaled_size((height, width), jpegscale.decode_ratio((height, width), floor_hw, letterbox=True))
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False, min_height=h, min_width=w)
    except ValueError:
        raise
    except (RuntimeError, TypeError) as error:  # simplejpeg raises ValueError for most, RuntimeError for some
        raise ValueError(str(error)) from error


def letterbox_size(image_hw: tuple[int, int], canvas_hw: tuple[int, int], max_upscale: float) -> tuple[int, int]:
    """graph.letterbox_size in float32, as the graph computes it."""
    hw = np.asarray(image_hw, np.float32)
    scale = np.minimum(np.min(np.asarray(canvas_hw, np.float32) / hw), np.float32(max_upscale))
    h, w = np.maximum(np.round(hw * scale).astype(np.int32), 1)
    return int(h), int(w)


def detector_input(
    rgb: np.ndarray, canvas_hw: tuple[int, int], max_upscale: float
) -> tuple[np.ndarray, tuple[int, int]]:
    """The detector's blob [canvas_h, canvas_w, 3] float32 (BGR minus the mean, zero past the image) and the size the
    image was scaled to: graph.decode_letterboxed. cv2's bilinear resize of float pixels is tf.image.resize's
    (half-pixel centres, no antialiasing); rounding halves to even is tf.round's. The channel swap and the mean are
    cv2's (numpy's broadcast over a last axis of 3 took 3x the resize)."""
    size = letterbox_size(rgb.shape[:2], canvas_hw, max_upscale)
    resized = cv2.resize(rgb.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    np.rint(resized, out=resized)
    np.clip(resized, 0.0, 255.0, out=resized)
    # cv2's stubs lack its scalar form of subtract
    bgr = cv2.subtract(cv2.cvtColor(resized, cv2.COLOR_RGB2BGR), BGR_MEAN_SCALAR)  # type: ignore[call-overload]
    if size == canvas_hw:
        return bgr, size
    blob = np.zeros((*canvas_hw, 3), np.float32)
    blob[: size[0], : size[1]] = bgr
    return blob, size


def image_boxes(boxes_xyxy: np.ndarray, scaled_hw: tuple[int, int], canvas_hw: tuple[int, int]) -> np.ndarray:
    """Detector boxes (xmin, ymin, xmax, ymax) on the canvas to (ymin, xmin, ymax, xmax) normalised to the image,
    clipped: graph.yxyx_clipped, then image_boxes, then the clip of predict."""
    yxyx = np.clip(boxes_xyxy[..., [1, 0, 3, 2]], 0.0, 1.0)
    extent = np.asarray(scaled_hw, np.float32) / np.asarray(canvas_hw, np.float32)
    return np.clip(yxyx / np.tile(extent, 2), 0.0, 1.0).astype(np.float32)


def compact(keep: np.ndarray, key: np.ndarray, k: int) -> np.ndarray:
    """graph.compact for one image: row order [k] with kept rows first by descending key, ties by position."""
    ranked = np.where(keep, key, np.float32(-1.0))
    return np.argsort(-ranked, kind="stable")[:k]


def context_box(box: np.ndarray, image_hw: tuple[int, int], margin: float | None) -> np.ndarray:
    """graph.context_boxes for one face: a square (1 + 2*margin) x its longer side about its centre, normalised."""
    if margin is None:
        return box
    hw = np.asarray(image_hw, np.float32)
    pixels = box * np.tile(hw, 2)
    centre = (pixels[:2] + pixels[2:]) / 2.0
    half = np.max(pixels[2:] - pixels[:2]) * np.float32(0.5 + margin)
    return (np.concatenate([centre - half, centre + half]) / np.tile(hw, 2)).astype(np.float32)


def frame_for_crops(rgb: np.ndarray) -> np.ndarray:
    """The image with its edge replicated CROP_BORDER pixels out (graph.pad_for_crops without the batch padding), as
    [H+2b, W+2b] uint32: each pixel's RGB and a spare byte in one word, so a crop gathers one word per sample."""
    b = CROP_BORDER
    framed = cv2.copyMakeBorder(cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA), b, b, b, b, cv2.BORDER_REPLICATE)
    return framed.view(np.uint32)[..., 0]


def crop(framed: np.ndarray, image_hw: tuple[int, int], box: np.ndarray, size: int) -> np.ndarray:
    """The face region box (ymin, xmin, ymax, xmax, normalised) of an image of image_hw resized to [size,size,3]
    float32: tf.image.crop_and_resize of graph.crop_boxes over the image framed by a replicated edge of CROP_BORDER
    pixels (`framed`, made once per image by frame_for_crops), bilinear, zero where a sample falls outside that frame.
    Only the size x size samples' four neighbours are read (0.65 CPU ms per 96 px crop, 1.4 with an index per
    channel)."""
    h, w = image_hw
    pixels = box.astype(np.float32) * np.array([h, w, h, w], np.float32)
    start, end = pixels[:2], pixels[2:]
    step = (end - start) / np.float32(size)
    first = start + np.float32(0.5) * step - np.float32(0.5) + np.float32(CROP_BORDER)
    steps = np.arange(size, dtype=np.float32)
    ys = first[0] + steps * step[0]
    xs = first[1] + steps * step[1]
    fh, fw = framed.shape[0] - 1, framed.shape[1] - 1
    y_out = (ys < 0) | (ys > fh)
    x_out = (xs < 0) | (xs > fw)
    ys, xs = np.clip(ys, 0, fh), np.clip(xs, 0, fw)
    y0, x0 = np.floor(ys).astype(np.intp), np.floor(xs).astype(np.intp)
    y1, x1 = np.ceil(ys).astype(np.intp), np.ceil(xs).astype(np.intp)
    wy = (ys - y0).astype(np.float32)[:, None, None]
    wx = (xs - x0).astype(np.float32)[None, :, None]
    neighbours = framed[np.stack([y0, y0, y1, y1])[:, :, None], np.stack([x0, x1, x0, x1])[:, None, :]]
    top_left, top_right, bottom_left, bottom_right = (
        neighbours.view(np.uint8).reshape(4, size, size, 4).astype(np.float32)
    )
    top = top_left + (top_right - top_left) * wx
    bottom = bottom_left + (bottom_right - bottom_left) * wx
    out = top + (bottom - top) * wy
    out[y_out] = 0.0
    out[:, x_out] = 0.0
    return out[..., :3]


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------

Stage = Callable[[str, float], None]


def _no_stage(name: str, seconds: float) -> None:
    return None


def _detection_output(
    priors: np.ndarray, cfg: PipelineConfig
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The graph's DetectionOutput (model.ssd.detection_output) in numpy (model.nms, row for row as TensorFlow): loc
    [N,P*4] and softmaxed conf [N,P*2] to boxes [N,keep_top_k,4] (xmin, ymin, xmax, ymax) and scores [N,keep_top_k]."""
    variances = np.tile(np.asarray(cfg.variances, np.float32), (len(priors), 1))

    def call(loc: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return nms.detection_output(
            loc, conf, priors, variances, cfg.top_k, cfg.keep_top_k, cfg.nms_threshold, cfg.confidence_threshold
        )

    return call


# images per network run (OpenVinoMaskDetector.predict); crops per classifier run are the faces of these
PREDICT_CHUNK = 8


class _Network:
    """One compiled OpenVINO network; an infer request per calling thread (requests are not shareable)."""

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        self._local = threading.local()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        results = request.infer({0: x})
        return [np.array(results[out]) for out in self._compiled.outputs]


class OpenVinoMaskDetector:
    """JPEG strings in, Contract 2 outputs out, as `MaskDetectorModule.serve` answers, with OpenVINO networks."""

    def __init__(self, version_dir: str | Path, threads: int = 0) -> None:
        import openvino as ov

        folder = openvino_dir(version_dir)
        if not has_openvino(version_dir):
            raise ModelFormatError(f"{folder} lacks the OpenVINO networks (re-export the model with model.export)")
        self.config = PipelineConfig.from_json((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        self.priors = np.load(folder / PRIORS_FILE).astype(np.float32)
        # the graph's decode_floor_hw, from the same priors: a larger image is decoded downscaled to no less
        self.decode_floor_hw = jpegscale.decode_floor(
            self.priors, self.config.canvas_hw, self.config.classifier_size, self.config.crop_margin
        )
        core = ov.Core()
        # unpinned threads: on a machine shared with the broker, workers and other services, threads pinned to busy
        # cores wait for them (wall-clock frames/s 20-40 % lower in an interleaved run with the machine loaded)
        options: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,
            "INFERENCE_PRECISION_HINT": PRECISION,
        }
        if threads:
            options["INFERENCE_NUM_THREADS"] = threads
        self.detector = _Network(core.compile_model(str(folder / DETECTOR_XML), "CPU", options))
        self.classifier = _Network(core.compile_model(str(folder / CLASSIFIER_XML), "CPU", options))
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="jpeg")
        self._detection_output = _detection_output(self.priors, self.config)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _prepare(self, jpeg: bytes) -> tuple[tuple[int, int], np.ndarray, tuple[int, int], np.ndarray]:
        """(decoded size, detector blob, size it was scaled to, framed image for the crops) of one JPEG."""
        rgb = decode_jpeg(jpeg, self.decode_floor_hw)
        blob, scaled = detector_input(rgb, self.config.canvas_hw, self.config.max_upscale)
        return (rgb.shape[0], rgb.shape[1]), blob, scaled, frame_for_crops(rgb)

    def predict(
        self, jpegs: Sequence[bytes], stage: Stage = _no_stage, clock: Callable[[], float] = time.perf_counter
    ) -> dict[str, np.ndarray]:
        """Contract 2 outputs for a batch of JPEG strings; ValueError names the first undecodable image.

        The batch runs PREDICT_CHUNK images at a time: the networks' memory grows with their batch (OpenVINO keeps
        what its largest run needed: ~20 MB per detector image, ~2 MB per classifier crop) and their time per image
        does not fall beyond a few, so a batch of 32 frames (the server's largest run) costs no more memory than one
        of 8. `stage(name, seconds)` hears how long each step took by `clock` (the benchmark's profile)."""
        if len(jpegs) <= PREDICT_CHUNK:
            return self._predict(jpegs, stage, clock)
        parts = [self._predict(jpegs[i : i + PREDICT_CHUNK], stage, clock) for i in range(0, len(jpegs), PREDICT_CHUNK)]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def _predict(self, jpegs: Sequence[bytes], stage: Stage, clock: Callable[[], float]) -> dict[str, np.ndarray]:
        cfg = self.config
        n = len(jpegs)
        outputs = 1 + len(cfg.class_ids)
        k = cfg.max_detections
        if n == 0:
            return empty_outputs(0, k, outputs)
        t = clock()
        prepared = list(self._pool.map(self._prepare, jpegs))
        now = clock()
        stage("decode + letterbox + crop frame", now - t)
        t = now
        loc, prob = self.detector(np.stack([p[1] for p in prepared]))
        now = clock()
        stage("detector", now - t)
        t = now
        all_boxes, all_scores = self._detection_output(loc.reshape(n, -1), prob.reshape(n, -1))
        boxes = np.zeros((n, k, 4), np.float32)
        face_scores = np.zeros((n, k), np.float32)
        keep = np.zeros((n, k), bool)
        first_stage = np.float32(cfg.face_threshold) / 2 if cfg.face_output else np.float32(cfg.face_threshold)
        for i, (_, _, scaled, _) in enumerate(prepared):
            det_scores = all_scores[i]
            b = image_boxes(all_boxes[i], scaled, cfg.canvas_hw)
            has_area = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            kept = (det_scores >= first_stage) & has_area
            order = compact(kept, det_scores, k)
            boxes[i], face_scores[i], keep[i] = b[order], det_scores[order], kept[order]
        now = clock()
        stage("box decoding + NMS", now - t)
        t = now
        where = np.argwhere(keep)
        size = cfg.classifier_size
        crops = np.empty((len(where), size, size, 3), np.float32)
        for j, (i, r) in enumerate(where):
            image_hw, framed = prepared[i][0], prepared[i][3]
            crops[j] = crop(framed, image_hw, context_box(boxes[i, r], image_hw, cfg.crop_margin), size)
        now = clock()
        stage("crops", now - t)
        t = now
        n_out = len(cfg.class_ids) + int(cfg.face_output)
        probs = np.zeros((n, k, n_out), np.float32)
        if len(where):
            x = crops / np.float32(127.5) - np.float32(1.0)
            if cfg.flip_average:
                both = self.classifier(np.concatenate([x, x[:, :, ::-1]]))[0]
                p = both.reshape(2, -1, n_out).mean(axis=0)
            else:
                p = self.classifier(x)[0]
            probs[where[:, 0], where[:, 1]] = p
        now = clock()
        stage("classifier (+ mirror pass)", now - t)
        t = now
        result = assemble(boxes, face_scores, keep, probs, cfg)
        stage("output rows", clock() - t)
        return result


def empty_outputs(n: int, k: int, columns: int) -> dict[str, np.ndarray]:
    return {
        OUT_BOXES: np.zeros((n, k, 4), np.float32),
        OUT_SCORES: np.zeros((n, k), np.float32),
        OUT_CLASSES: np.zeros((n, k), np.float32),
        OUT_NUM: np.zeros(n, np.float32),
        OUT_FACE_SCORES: np.zeros((n, k), np.float32),
        OUT_MULTICLASS_SCORES: np.zeros((n, k, columns), np.float32),
    }


def assemble(
    boxes: np.ndarray, face_scores: np.ndarray, keep: np.ndarray, probs: np.ndarray, cfg: PipelineConfig
) -> dict[str, np.ndarray]:
    """The end of graph.MaskDetectorModule.predict: second-stage face score, class, per-class columns, kept rows."""
    if cfg.face_output:
        p_face = probs[..., -1]
        probs = probs[..., :-1]
        face_scores = np.where(keep, (face_scores + p_face) / np.float32(2.0), face_scores).astype(np.float32)
        keep = keep & (face_scores >= np.float32(cfg.face_threshold))
    class_ids = np.asarray(cfg.class_ids, np.float32)[np.argmax(probs, axis=-1)]
    columns = np.zeros((*face_scores.shape, 1 + len(CLASS_IDS)), np.float32)
    columns[..., 0] = 1.0 - face_scores
    for c, class_id in enumerate(cfg.class_ids):
        columns[..., class_id] = face_scores * probs[..., c]
    order = np.stack([compact(keep[i], face_scores[i], keep.shape[1]) for i in range(len(keep))]) if len(keep) else None

    def rows(x: np.ndarray) -> np.ndarray:
        if order is None:
            return x
        x = np.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)
        mask = np.take_along_axis(keep, order, axis=1).reshape(order.shape + (1,) * (x.ndim - 2))
        return np.where(mask, x, np.zeros_like(x)).astype(np.float32)

    scores = rows(face_scores)
    return {
        OUT_BOXES: rows(boxes),
        OUT_SCORES: scores,
        OUT_CLASSES: rows(class_ids),
        OUT_NUM: keep.sum(axis=1).astype(np.float32),
        OUT_FACE_SCORES: scores,
        OUT_MULTICLASS_SCORES: rows(columns),
    }
