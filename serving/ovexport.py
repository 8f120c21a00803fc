"""Converts the fine-tuned graph's two networks (detector, classifier) to OpenVINO IR in the SavedModel's version
directory (`assets.extra/openvino/`), with what `serving.ovmodel` needs to run the rest of the graph in numpy."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from serving.graph import MaskDetectorModule
from serving.ovmodel import (
    CLASSIFIER_XML,
    CONFIG_FILE,
    DETECTOR_XML,
    PRIORS_FILE,
    PipelineConfig,
    openvino_dir,
)
from serving.ssd import TUNED_VARIANCES, TunedFaceDetector

logger = logging.getLogger(__name__)


def pipeline_config(module: MaskDetectorModule) -> PipelineConfig:
    params = module.detector.params
    return PipelineConfig(
        canvas_hw=module.detector.input_hw,
        max_upscale=module.max_upscale,
        classifier_size=module.classifier_size,
        crop_margin=module.crop_margin,
        class_ids=module.class_ids,
        face_output=module.face_output,
        flip_average=module.flip_average,
        face_threshold=round(float(module.face_threshold.numpy()), 6),
        max_detections=module.max_detections,
        nms_threshold=params.nms_threshold,
        top_k=params.top_k,
        keep_top_k=params.keep_top_k,
        confidence_threshold=params.confidence_threshold,
        variances=TUNED_VARIANCES,
    )


def supports(module: MaskDetectorModule) -> bool:
    """Only the fine-tuned, letterboxed graph has an OpenVINO twin (the pretrained one stays TensorFlow-only)."""
    return module.letterbox and isinstance(module.detector, TunedFaceDetector)


def write_openvino(module: MaskDetectorModule, version_dir: Path) -> Path:
    """Convert and write the networks (full float32 weights; the precision is chosen when they are compiled)."""
    import openvino as ov

    detector = module.detector
    if not supports(module) or not isinstance(detector, TunedFaceDetector):
        raise ValueError("only the fine-tuned letterboxed model converts to OpenVINO")
    h, w = detector.input_hw

    @tf.function(input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32, name="blob")])
    def detect(blob: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        loc, logits, _ = detector.heads(blob)
        return loc, tf.nn.softmax(logits, axis=-1)

    s = module.classifier_size
    classifier = module.classifier

    @tf.function(input_signature=[tf.TensorSpec([None, s, s, 3], tf.float32, name="crops")])
    def classify(x: tf.Tensor) -> tf.Tensor:
        return tf.convert_to_tensor(classifier(x, training=False))

    folder = openvino_dir(version_dir)
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(detect), str(folder / DETECTOR_XML), compress_to_fp16=False)
    ov.save_model(ov.convert_model(classify), str(folder / CLASSIFIER_XML), compress_to_fp16=False)
    _, _, priors = detector.heads(tf.zeros([1, h, w, 3], tf.float32))
    np.save(folder / PRIORS_FILE, np.asarray(priors, np.float32))
    (folder / CONFIG_FILE).write_text(pipeline_config(module).to_json(), encoding="utf-8")
    logger.info("openvino networks written dir=%s", folder)
    return folder
