"""A cheap SavedModel with the mask model's signature (Contract 2), for fault tests that need thousands of frames.

It decodes each JPEG in the graph like the real model (so a corrupt JPEG fails the call with
INVALID_ARGUMENT) and answers one face per image whose class follows the image width: even →
with_mask, odd → without_mask. Deterministic, so two counts over the same frames agree.
"""

from __future__ import annotations

from pathlib import Path


def export_cheap_model(base: Path, version: int = 1) -> Path:
    import tensorflow as tf

    class Cheap(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            widths = tf.map_fn(
                lambda b: tf.shape(tf.io.decode_jpeg(b, channels=3))[1], images, fn_output_signature=tf.int32
            )
            n = tf.shape(images)[0]
            cls = tf.cast(1 + tf.math.floormod(widths, 2), tf.float32)
            return {
                "detection_boxes": tf.tile(tf.constant([[[0.1, 0.1, 0.6, 0.5]]], tf.float32), [n, 1, 1]),
                "detection_scores": tf.fill([n, 1], 0.9),
                "detection_classes": tf.reshape(cls, [n, 1]),
                "num_detections": tf.ones([n], tf.float32),
            }

    m = Cheap()
    out = base / "mask_detector" / str(version)
    tf.saved_model.save(m, str(out), signatures={"serving_default": m.serve})
    return base / "mask_detector"
