"""The model server's runtimes side by side: where one frame's time goes in the OpenVINO runtime, and the accuracy
of each runtime against TensorFlow on the validation images (mAP, faces found, row-for-row parity)."""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.stats import Summary
from maskwatch.model_api import INPUT_IMAGES, OUT_NUM, SIGNATURE_NAME, to_ndarray, to_proto

logger = logging.getLogger(__name__)

# The validation images `maskwatch eval` uses by default: MW_EVAL_DATA, else the workspace's copy beside the repo.
DATA_ENV = "MW_EVAL_DATA"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "facemask-voc"


def eval_data() -> Path | None:
    path = Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)
    return path if (path / "annotations").is_dir() and (path / "images").is_dir() else None


def profile(version_dir: Path, jpegs: Sequence[bytes], rounds: int = 3) -> dict[str, Any]:
    """Median CPU milliseconds (this process, all threads) per frame of each step of one frame's path through
    `python -m serving --runtime openvino` (batch 1): the request's tensor parsed, the runtime's steps, the answer
    serialised. CPU time, not wall-clock: on a shared machine a step's wall time is mostly the wait for a core. The
    classifier's mirror pass runs in the same batch as the first pass; its share is measured by running the first
    pass alone."""
    from tensorflow_serving.apis import predict_pb2

    from serving.ovmodel import OpenVinoMaskDetector

    model = OpenVinoMaskDetector(version_dir)
    model.predict(list(jpegs[:1]))
    per: dict[str, list[float]] = collections.defaultdict(list)
    crops_seen: list[int] = []
    for _ in range(rounds):
        for jpeg in jpegs:
            times: dict[str, float] = {}
            request = predict_pb2.PredictRequest()
            t = time.process_time()
            request.inputs[INPUT_IMAGES].CopyFrom(to_proto(np.array([jpeg], dtype=object)))
            wire = request.SerializeToString()
            parsed = predict_pb2.PredictRequest.FromString(wire)
            images = to_ndarray(parsed.inputs[INPUT_IMAGES])
            times["request: parse + tensor"] = time.process_time() - t
            out = model.predict([bytes(x) for x in images], stage=times.__setitem__, clock=time.process_time)
            t = time.process_time()
            response = predict_pb2.PredictResponse()
            for alias, value in out.items():
                response.outputs[alias].CopyFrom(to_proto(value))
            response.SerializeToString()
            times["response: serialise"] = time.process_time() - t
            faces = int(out[OUT_NUM][0])
            crops_seen.append(faces)
            for name, s in times.items():
                per[name].append(s * 1000)
    first_pass = _first_pass_ms(model, jpegs)
    steps = {name: round(Summary.of(v).median, 2) for name, v in per.items()}
    both = steps.get("classifier (+ mirror pass)")
    if both is not None and first_pass is not None:
        steps["classifier (+ mirror pass)"] = round(min(first_pass, both), 2)
        steps["mirror pass (same classifier batch)"] = round(max(both - first_pass, 0.0), 2)
        steps = {("classifier (first pass)" if k == "classifier (+ mirror pass)" else k): v for k, v in steps.items()}
    total = sum(steps.values())
    return {
        "ms_per_frame": steps,
        "share": {k: round(v / total, 3) for k, v in steps.items()} if total else {},
        "total_ms": round(total, 2),
        "faces_per_frame": round(float(np.mean(crops_seen)), 2) if crops_seen else 0.0,
        "how": "batch 1, one caller, CPU ms (process time, all threads), medians over the bench frames and rounds; "
        "box decoding + NMS is the graph's own DetectionOutput (TensorFlow ops)",
    }


def _first_pass_ms(model: Any, jpegs: Sequence[bytes]) -> float | None:
    """Median ms per frame of the classifier on the frames' crops without their mirror images."""
    cfg = model.config
    size = cfg.classifier_size
    rng = np.random.default_rng(0)
    counts = []
    for jpeg in jpegs:
        counts.append(int(model.predict([jpeg])[OUT_NUM][0]))
    faces = max(1, round(float(np.mean(counts)))) if counts else 1
    x = rng.uniform(-1, 1, (faces, size, size, 3)).astype(np.float32)
    model.classifier(x)
    samples = []
    for _ in range(max(5, len(jpegs))):
        t = time.process_time()
        model.classifier(x)
        samples.append((time.process_time() - t) * 1000)
    return Summary.of(samples).median


def accuracy(version_dir: Path, data: Path, limit: int = 0) -> dict[str, Any]:
    """TensorFlow against the OpenVINO runtime on the validation split that `maskwatch eval` uses: mAP, faces found at
    the operating point, and the row-for-row parity (serving.parity)."""
    import tensorflow as tf

    from maskwatch.eval import dataset, split
    from maskwatch.eval.cli import truth_of
    from maskwatch.eval.metrics import evaluate
    from maskwatch.eval.runner import to_predicted
    from maskwatch.model_api import parse_outputs
    from serving.ovmodel import OpenVinoMaskDetector
    from serving.parity import compare

    samples = split.split(dataset.load(data), split.DEFAULT_VAL_FRACTION, split.DEFAULT_SEED).part("val")
    if limit:
        samples = samples[:limit]
    jpegs = [s.read_jpeg() for s in samples]
    truths = [truth_of(s) for s in samples]
    serve = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_NAME]
    reference = [{k: v.numpy() for k, v in serve(**{INPUT_IMAGES: tf.constant([j])}).items()} for j in jpegs]
    model = OpenVinoMaskDetector(version_dir)
    outputs = [model.predict([j]) for j in jpegs]

    def score(outs: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        preds = [to_predicted(parse_outputs(o, 1)[0], s.width, s.height) for o, s in zip(outs, samples, strict=True)]
        report = evaluate(truths, preds, 0.5, 0.5)
        found = sum(int(v["found"] or 0) for v in report.recall_by_width.values())
        return {"map": report.mean_ap, "faces_found": found}

    ref, s = score(reference), score(outputs)
    parity = None
    for a, b in zip(reference, outputs, strict=True):
        parity = compare(a, b, parity)
    assert parity is not None
    return {
        "data": str(data),
        "images": len(samples),
        "tensorflow": ref,
        "openvino": {
            **s,
            "map_delta": round(s["map"] - ref["map"], 4) if s["map"] is not None and ref["map"] is not None else None,
            "faces_found_delta_pct": round(100 * (s["faces_found"] - ref["faces_found"]) / max(ref["faces_found"], 1), 2),
            "parity": {**parity.to_dict(), "examples": parity.examples[:5]},
        },
    }
