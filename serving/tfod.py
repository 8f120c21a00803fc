"""The same mask model exported with a TF-Object-Detection-API signature (uint8 `input_tensor` [1,H,W,3]).

Models trained with the TF Object Detection API export this signature; the worker must handle it
(it reads GetModelMetadata, decodes frames itself and sends pixels, one image per call). This
export exists so that path is tested against a real model: `python -m serving.tfod --out DIR`.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import tensorflow as tf

from maskwatch.logs import setup_logging
from maskwatch.model_api import INPUT_PIXELS, MODEL_NAME, SIGNATURE_NAME
from serving.export import build_module, resolve_sources
from serving.graph import MaskDetectorModule

logger = logging.getLogger(__name__)



class TfodModule(tf.Module):
    """uint8 pixels in (one image), Contract 2 outputs out; the graph inside is the JPEG model's."""

    def __init__(self, inner: MaskDetectorModule) -> None:
        super().__init__(name=f"{MODEL_NAME}_tfod")
        self.inner = inner

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name=INPUT_PIXELS)])
    def serve(self, input_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        # Lossless hand-over into the shared graph: quality-100 JPEG of the given pixels.
        jpeg = tf.io.encode_jpeg(input_tensor[0], quality=100, chroma_downsampling=False)
        return self.inner.predict(tf.reshape(jpeg, [1]))


def export_tfod(out: Path, version: int = 1, face_threshold: float = 0.2) -> Path:
    module = TfodModule(build_module(resolve_sources(None, None, None), face_threshold))
    final = out / MODEL_NAME / str(version)
    final.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(final), signatures={SIGNATURE_NAME: module.serve})
    return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.tfod", description=__doc__)
    ap.add_argument("--out", type=Path, required=True, help=f"model base path to write <out>/{MODEL_NAME}/<version>")
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--face-threshold", type=float, default=0.2)
    args = ap.parse_args(argv)
    setup_logging("INFO", "kv", service="serving.tfod")
    started = time.monotonic()
    path = export_tfod(args.out, args.version, args.face_threshold)
    logger.info("exported tfod-signature model path=%s seconds=%.1f", path, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
