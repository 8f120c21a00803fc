"""Candidates of the served detector on training images: the classifier's "not a face" examples are those that
overlap no true face (`data.not_face_patches`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from maskwatch.eval.dataset import Sample
from maskwatch.eval.runner import to_predicted
from maskwatch.model_api import parse_outputs
from serving.graph import Detector, MaskDetectorModule

logger = logging.getLogger(__name__)

# Candidates are mined from this detector score: below the served candidate threshold (0.1), so that the classifier
# learns the weakest ones too.
MIN_SCORE = 0.05
# ...up to this one: a candidate the detector is this sure of that overlaps no annotated face is, in crowd photos, more
# often a face the annotators left out than not (on the shipped detector's training images, most of the 88 such
# crops are faces at the back of a crowd), so it is learnt as neither a face nor "not a face".
MAX_SCORE = 0.7


def _any_face(crops: tf.Tensor, training: bool = False) -> tf.Tensor:
    """A stand-in classifier: one class, certain. Mining needs the detector's boxes and scores only."""
    return tf.ones([tf.shape(crops)[0], 1], tf.float32)


def candidates(
    detector: Detector,
    samples: Sequence[Sample],
    max_upscale: float,
    min_score: float = MIN_SCORE,
    max_score: float = MAX_SCORE,
) -> list[np.ndarray]:
    """Per image: the boxes [K,4] pixel (xmin, ymin, xmax, ymax) that the detector, run as the served graph runs it
    (JPEG decoded, letterboxed into its input), scores at least `min_score` and under `max_score`."""
    module = MaskDetectorModule(
        detector,
        _any_face,
        face_threshold=min_score,
        max_detections=detector.params.keep_top_k,
        classifier_size=8,
        class_ids=(1,),
        letterbox=True,
        max_upscale=max_upscale,
    )
    run = tf.function(module.predict, input_signature=[tf.TensorSpec([None], tf.string)])
    found: list[np.ndarray] = []
    for k, s in enumerate(samples):
        out = run(tf.constant([s.read_jpeg()]))
        (detections,) = parse_outputs({k: v.numpy() for k, v in out.items()}, 1)  # the module kept scores >= min_score
        predicted = to_predicted(detections, s.width, s.height)
        found.append(predicted.boxes[predicted.scores < max_score].astype(np.float32))
        if (k + 1) % 100 == 0 or k + 1 == len(samples):
            logger.info("mining candidates images=%d of=%d boxes=%d", k + 1, len(samples), sum(len(b) for b in found))
    return found
