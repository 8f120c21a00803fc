"""`python -m bench.sleep_model --out DIR --sleep-ms MS`: a SavedModel with the mask model's signature (Contract 2)
that takes a fixed wall time per call, whatever the batch, without using CPU; for scaling runs where the model
server must never be the bottleneck.

The wait is a tf.data SleepDataset inside the graph, so it survives export and runs in any TF runtime (a
tf.py_function would not: its Python callback exists only in the exporting process). Concurrent calls sleep
concurrently. Every frame gets one with_mask face; the JPEG is not decoded.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from maskwatch.model_api import INPUT_IMAGES, MODEL_NAME, OUT_BOXES, OUT_CLASSES, OUT_NUM, OUT_SCORES, SIGNATURE_NAME

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def export_sleep_model(base: Path, sleep_ms: float, version: int = 1) -> Path:
    """Write `<base>/<MODEL_NAME>/<version>`; returns the model base path (`<base>/<MODEL_NAME>`)."""
    import tensorflow as tf
    from tensorflow.python.data.experimental.ops import testing as tfdata_testing

    # get_single_element asks its dataset twice (the element, then end of sequence): each ask sleeps.
    per_ask_us = int(sleep_ms * 1000 / 2)

    class SleepDetector(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_IMAGES)])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            n = tf.data.Dataset.from_tensors(tf.shape(images)[0]).apply(tfdata_testing.sleep(per_ask_us))
            n = n.get_single_element()
            return {
                OUT_BOXES: tf.tile(tf.constant([[[0.2, 0.3, 0.6, 0.6]]], tf.float32), [n, 1, 1]),
                OUT_SCORES: tf.fill([n, 1], 0.9),
                OUT_CLASSES: tf.ones([n, 1], tf.float32),
                OUT_NUM: tf.ones([n], tf.float32),
            }

    module = SleepDetector()
    out = base / MODEL_NAME / str(version)
    tf.saved_model.save(module, str(out), signatures={SIGNATURE_NAME: module.serve})
    return base / MODEL_NAME


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sleep_model", description=__doc__)
    ap.add_argument("--out", type=Path, required=True, help=f"model base directory (writes OUT/{MODEL_NAME}/1)")
    ap.add_argument("--sleep-ms", type=float, default=500.0, help="wall time of one call (default 500)")
    args = ap.parse_args(argv)
    print(export_sleep_model(args.out, args.sleep_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
