"""Converts the fine-tuned graph's two networks (detector, classifier) to OpenVINO IR in the SavedModel's version
directory (`assets.extra/openvino/`), with what `model.ovmodel` needs to run the rest of the graph in numpy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from model.graph import MaskDetectorModule
from model.ovmodel import (
    CLASSIFIER_XML,
    CONFIG_FILE,
    DETECTOR_XML,
    PRIORS_FILE,
    PipelineConfig,
    openvino_dir,
)
from model.ssd import TUNED_VARIANCES, TunedFaceDetector

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


def fold_pool_padding(model: Any) -> int:
    """Fold each constant -inf Pad feeding a MaxPool (model.ssd pads Caffe's round-up pooling that way) into the
    pool's own padding, which max pooling ignores the same way: the same outputs without OpenVINO's reference Pad
    kernel (2 % of the detector's time on one AVX2 core). Returns how many were folded."""
    import openvino.opset13 as ops

    folded = 0
    for pool in model.get_ordered_ops():
        pad = pool.input_value(0).get_node() if pool.get_type_name() == "MaxPool" else None
        if pad is None or pad.get_type_name() != "Pad" or pad.get_attributes()["pad_mode"] != "constant":
            continue
        begin, end, value = (pad.input_value(i).get_node() for i in (1, 2, 3))
        if any(c.get_type_name() != "Constant" for c in (begin, end, value)):
            continue
        begin, end, value = begin.get_data(), end.get_data(), value.get_data()
        attrs = pool.get_attributes()
        if begin[:2].any() or end[:2].any() or value > np.finfo(np.float32).min or attrs["auto_pad"] != "valid":
            continue
        replacement = ops.max_pool(
            pad.input_value(0),
            strides=attrs["strides"],
            dilations=attrs["dilations"],
            pads_begin=[int(p) for p in begin[2:]],
            pads_end=[int(p) for p in end[2:]],
            kernel_shape=attrs["kernel"],
            rounding_type=attrs["rounding_type"],
            auto_pad="explicit",
        )
        pool.output(0).replace(replacement.output(0))
        folded += 1
    return folded


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
    converted = ov.convert_model(detect)
    fold_pool_padding(converted)
    ov.save_model(converted, str(folder / DETECTOR_XML), compress_to_fp16=False)
    ov.save_model(ov.convert_model(classify), str(folder / CLASSIFIER_XML), compress_to_fp16=False)
    np.save(folder / PRIORS_FILE, detector.prior_boxes())
    (folder / CONFIG_FILE).write_text(pipeline_config(module).to_json(), encoding="utf-8")
    logger.info("openvino networks written dir=%s", folder)
    return folder
