"""`maskwatch train`: fine-tune the detector and the 3-class classifier on a VOC set, write the weights, export a
new model version (which a watching model server loads) with its validation report."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.eval import dataset, report, split
from maskwatch.logs import setup_logging
from serving.signature import ASSETS_EXTRA, MODEL_NAME
from serving.train import model as tuned
from serving.train.config import ClassifierConfig, DetectorConfig
from serving.train.model import DEFAULT_CANDIDATE_THRESHOLD, DEFAULT_CANVAS_HW, DEFAULT_MAX_UPSCALE

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
REPORT_DIR = "validation"  # under the version's assets.extra/
# The training patches hold a face with half its side of context each way (serving.train.data.PATCH_CONTEXT), and a
# jittered crop grows by up to 1.2x: with a wider margin the largest crops would reach past the patch.
MAX_CROP_MARGIN = 0.3


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The `maskwatch train` options (also how maskwatch/cli.py builds its subcommand)."""
    d, c = DetectorConfig(), ClassifierConfig()
    ap.add_argument("--data", type=Path, required=True, help="VOC directory with annotations/ and images/")
    ap.add_argument("--out", type=Path, default=Path("models"), help="model base path (default: models)")
    ap.add_argument("--version", type=int, help="version to write (default: the next free number)")
    ap.add_argument("--epochs", type=int, default=d.epochs, help=f"detector epochs (default: {d.epochs})")
    ap.add_argument(
        "--classifier-epochs", type=int, default=c.epochs, help=f"classifier epochs (default: {c.epochs})"
    )
    ap.add_argument("--batch-size", type=int, default=d.batch_size, help="detector crops per step")
    ap.add_argument("--crop", type=int, default=d.crop, help="detector training crop side in pixels")
    ap.add_argument("--classifier-size", type=int, default=c.size, help="classifier input side in pixels")
    number = functools.partial(_number_option, ap)
    number("--crop-margin", c.margin, "context around a face in the classifier's crop, a fraction of its side each way")
    number("--mosaic", d.mosaic, "share of detector crops that are 4-image mosaics, 0-1")
    number("--paste-faces", d.paste, "share of detector crops with small bare or wrongly masked faces pasted in, 0-1")
    number("--detector-ema", d.ema, "end the detector with a moving average of its weights of this decay, e.g. 0.998; 0: none")
    number("--class-weight-power", c.weight_power, "classifier class weights (n / (classes * n_c)) ** power: 0 none, 1 balanced")
    ap.add_argument("--seed", type=int, default=split.DEFAULT_SEED, help="the split's and the training's seed")
    ap.add_argument(
        "--classifier-seed", type=int, help="the classifier's own seed, the split unchanged (default: --seed)"
    )
    ap.add_argument("--val-fraction", type=float, default=split.DEFAULT_VAL_FRACTION)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training images (quick runs)")
    ap.add_argument("--work-dir", type=Path, help="checkpoints and weights (default: <out>/.train)")
    ap.add_argument("--resume", action="store_true", help="carry on from the work directory's checkpoints")
    ap.add_argument("--install-weights", type=Path, help="also copy the weights here (e.g. serving/weights)")
    ap.add_argument(
        "--detector-from",
        type=Path,
        metavar="WEIGHTS_DIR",
        help="keep this weights directory's detector (e.g. serving/weights) and train only the classifier",
    )
    ap.add_argument(
        "--face-threshold",
        type=float,
        default=DEFAULT_CANDIDATE_THRESHOLD,
        help="the exported model's face threshold: the lowest candidate it reports (consumers count above MW_MIN_SCORE)",
    )
    ap.add_argument("--canvas", default="x".join(map(str, DEFAULT_CANVAS_HW)), help="detector input HxW when served")
    ap.add_argument(
        "--max-upscale",
        type=float,
        default=DEFAULT_MAX_UPSCALE,
        help=f"largest factor the served model scales a small image by to fill its canvas (default: {DEFAULT_MAX_UPSCALE:g})",
    )
    ap.add_argument("--threads", type=int, default=2, help="TensorFlow threads")
    ap.add_argument("--fps-frames", type=int, default=30, help="640x480 frames timed in the validation report")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _number_option(ap: argparse.ArgumentParser, flag: str, default: float, what: str) -> None:
    ap.add_argument(flag, type=float, default=default, help=f"{what} (default: {default:g})")


def canvas_hw(text: str) -> tuple[int, int] | None:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        return None
    return (h, w) if min(h, w) >= 32 else None


def check(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, if anything."""
    if canvas_hw(args.canvas) is None:
        return "--canvas must look like 480x640 (each side >= 32)"
    if args.version is not None and args.version < 1:
        return "--version must be >= 1"
    if min(args.epochs, args.classifier_epochs, args.batch_size, args.threads) < 1 or args.crop < 64:
        return "epochs, batch size and threads must be >= 1, --crop >= 64"
    if not 0.0 <= args.mosaic <= 1.0:
        return "--mosaic must be in [0, 1]"
    if not 0.0 <= args.paste_faces <= 1.0:
        return "--paste-faces must be in [0, 1]"
    if not 0.0 <= args.detector_ema < 1.0:
        return "--detector-ema must be in [0, 1)"
    if not 0.0 <= args.crop_margin <= MAX_CROP_MARGIN:
        return f"--crop-margin must be in [0, {MAX_CROP_MARGIN:g}]"
    if not 0.0 <= args.class_weight_power <= 2.0:
        return "--class-weight-power must be in [0, 2]"
    if not 0.0 < args.face_threshold < 1.0:
        return "--face-threshold must be in (0, 1)"
    if not 0.0 < args.val_fraction < 1.0 or args.limit < 0 or args.max_upscale <= 0:
        return "--val-fraction must be in (0, 1), --limit >= 0, --max-upscale > 0"
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="maskwatch train", description=__doc__)
    add_arguments(ap)
    args = ap.parse_args(argv)
    problem = check(args)
    if problem:
        ap.error(problem)
    return args


def _configs(args: argparse.Namespace) -> tuple[DetectorConfig, ClassifierConfig]:
    det = replace(
        DetectorConfig(),
        epochs=args.epochs,
        batch_size=args.batch_size,
        crop=args.crop,
        mosaic=args.mosaic,
        paste=args.paste_faces,
        ema=args.detector_ema,
        seed=args.seed,
    )
    cls = replace(
        ClassifierConfig(),
        epochs=args.classifier_epochs,
        size=args.classifier_size,
        margin=args.crop_margin,
        weight_power=args.class_weight_power,
        seed=args.seed if args.classifier_seed is None else args.classifier_seed,
    )
    return det, cls


def _prepare_work_dir(work: Path, state: dict[str, Any], resume: bool) -> None:
    """A fresh work directory, or with `resume` the same one, refused if it was made with other settings."""
    state_file = work / STATE_FILE
    if resume and state_file.is_file():
        before = json.loads(state_file.read_text(encoding="utf-8"))
        differs = sorted(k for k in set(before) | set(state) if before.get(k) != state.get(k))
        if differs:
            raise ValueError(f"{work} was started with other settings ({', '.join(differs)}); drop --resume")
        return
    for sub in ("detector", "classifier", "weights"):
        shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class KeptDetector:
    """A weights directory's detector for `--detector-from`."""

    arrays: dict[str, np.ndarray]
    origin: str  # the directory, resolved
    sha256: str
    source_training: dict[str, Any]  # its manifest's `training` record: the data, split and settings it came from

    def record(self) -> dict[str, Any]:
        """The new manifest's `training.detector`: how the kept detector was trained and where it came from."""
        return {**self.source_training.get("detector", {}), "from": self.origin, "sha256": self.sha256}


def _kept_detector(weights_dir: Path) -> KeptDetector:
    """The detector's arrays, checked against its manifest's digest."""
    source = tuned.Manifest.read(weights_dir)
    tuned.verify(weights_dir, source)
    path = weights_dir / tuned.DETECTOR_FILE
    return KeptDetector(
        arrays=tuned.read_arrays(path),
        origin=str(weights_dir.resolve()),
        sha256=source.files.get(tuned.DETECTOR_FILE) or tuned.sha256(path),  # verified above when the manifest has it
        source_training=source.training,
    )


def _seen_validation(source: dict[str, Any], args: argparse.Namespace) -> str | None:
    """Why this run's validation images may be among those the kept detector trained on (its manifest's `training`
    record: `source`), if they may."""
    trained_on, split_then = source.get("data"), source.get("split") or {}
    if not trained_on or Path(trained_on).resolve() != args.data.resolve():
        return None  # other data (a site's own frames): its images are unseen
    now = {"seed": args.seed, "val_fraction": args.val_fraction}
    if all(split_then.get(k) == v for k, v in now.items()):
        return None
    return f"the detector trained on {trained_on} split with {split_then}, this run splits it with {now}"


def train_main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """`maskwatch train` with parsed options; 0 when the new version is exported, 1 if it exists, 2 on bad input."""
    problem = check(args)
    if problem:
        print(f"maskwatch train: error: {problem}", file=sys.stderr)
        return 2
    canvas = canvas_hw(args.canvas)
    assert canvas is not None
    setup_logging(args.log_level, "kv", service="train")
    for noisy in ("absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # TensorFlow's best-fit allocator on the CPU keeps the steps' large buffers for the next step where malloc maps and
    # unmaps them at every step: 10x fewer page faults and ~6 % faster detector epochs on a 2-core EPYC, the same
    # losses (to 4 decimals over 3 epochs). Read only when TensorFlow starts: `maskwatch train` in a process of its own.
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    import tensorflow as tf

    from maskwatch.eval import runner
    from maskwatch.eval.cli import evaluate_split
    from serving import caffe, export
    from serving.ssd import TunedFaceDetector
    from serving.train import classifier as cls_train
    from serving.train import data, negatives
    from serving.train import detector as det_train

    runner.limit_threads(args.threads)
    tf.random.set_seed(args.seed)
    started = time.monotonic()
    try:
        samples = dataset.load(args.data)
        parts = split.split(samples, args.val_fraction, args.seed)
    except (dataset.DatasetError, ValueError) as exc:
        logger.error("data unusable error=%s", exc)
        return 2
    train_samples = parts.train[: args.limit] if args.limit else parts.train
    logger.info(
        "split images=%d groups=%d train=%d val=%d using_train=%d",
        len(samples),
        parts.groups,
        len(parts.train),
        len(parts.val),
        len(train_samples),
    )
    det_cfg, cls_cfg = _configs(args)
    kept: KeptDetector | None = None
    if args.detector_from:
        try:
            kept = _kept_detector(args.detector_from)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.error("detector weights unusable dir=%s error=%s", args.detector_from, exc)
            return 2
        seen = _seen_validation(kept.source_training, args)
        if seen:
            logger.warning("validation images in the kept detector's training: figures flattered reason=%s", seen)
    work = args.work_dir or args.out / ".train"
    state = {
        "data": str(args.data.resolve()),
        "train_images": [s.name for s in train_samples],
        "detector": {"from": kept.origin, "sha256": kept.sha256} if kept else asdict(det_cfg),
        "classifier": asdict(cls_cfg),
    }
    try:
        _prepare_work_dir(work, json.loads(json.dumps(state)), args.resume)
    except ValueError as exc:
        logger.error("cannot resume error=%s", exc)
        return 2
    sources = export.default_sources()
    images = data.read_images(train_samples)

    detector = TunedFaceDetector(caffe.load(sources.prototxt, sources.caffemodel), canvas)
    if kept:
        detector.load_weights(kept.arrays)
        logger.info("detector kept dir=%s sha256=%s", kept.origin, kept.sha256[:16])
        detector_training = kept.record()
    else:
        det_figures = det_train.train_detector(detector, images, det_cfg, work / "detector", args.resume)
        detector_training = {**asdict(det_cfg), "final": det_figures}

    patches, labels = data.face_patches(images)
    val_patches, val_labels = data.face_patches(data.read_images(parts.val))
    not_faces = 0
    if cls_cfg.face_output:
        # the second stage learns the detector's own mistakes: its candidates on the training images that are no face
        found = negatives.candidates(detector, train_samples, args.max_upscale)
        extra = data.not_face_patches(images, found)
        not_faces = len(extra)
        patches = np.concatenate([patches, extra])
        labels = np.concatenate([labels, np.full(not_faces, len(tuned.TUNED_CLASS_IDS), np.int32)])
    import tf_keras

    tf_keras.utils.set_random_seed(cls_cfg.seed)  # the new output column's initial weights and dropout draws
    model = tuned.build_classifier(cls_cfg.size, len(tuned.TUNED_CLASS_IDS), face_output=cls_cfg.face_output)
    copied = cls_train.init_from_h5(model, export.load_classifier(sources.classifier))
    logger.info("classifier initialised layers_from_h5=%d faces=%d not_faces=%d", copied, len(patches) - not_faces, not_faces)
    cls_figures = cls_train.train_classifier(
        model, patches, labels, cls_cfg, work / "classifier", args.resume, val=(val_patches, val_labels)
    )

    manifest = tuned.Manifest(
        canvas_hw=canvas,
        max_upscale=args.max_upscale,
        classifier_size=cls_cfg.size,
        crop_margin=cls_cfg.margin,
        face_threshold=args.face_threshold,
        face_output=cls_cfg.face_output,
        training={
            "data": str(args.data),
            "split": {"val_fraction": args.val_fraction, "seed": args.seed, "train": len(parts.train), "val": len(parts.val)},
            "detector": detector_training,
            "classifier": {
                **asdict(cls_cfg),
                "not_faces": not_faces,
                "not_face_scores": [negatives.MIN_SCORE, negatives.MAX_SCORE] if cls_cfg.face_output else None,
                "final": {k: v for k, v in cls_figures.items() if not k.startswith("val_")},
            },
        },
    )
    weights_dir = work / "weights"
    manifest = tuned.write(
        weights_dir,
        {k: v.numpy() for k, v in detector.variables_by_name().items()},
        tuned.classifier_arrays(model),
        manifest,
    )
    logger.info("weights written dir=%s", weights_dir)

    model_dir = args.out / MODEL_NAME
    version = args.version or next_version(model_dir)
    module, manifest = export.build_tuned_module(weights_dir, sources, max_detections=export.DEFAULT_MAX_DETECTIONS)
    info = export.tuned_model_info(module, weights_dir, manifest)
    figures: dict[str, Any] = {}

    def validate(staging: Path) -> None:
        predictor = runner.SavedModelPredictor(staging)
        result, meta = evaluate_split(predictor, parts.val, fps_frames=args.fps_frames)
        meta = {**meta, "model": f"{MODEL_NAME}/{version}", "data": str(args.data), "split": "val", "threads": args.threads}
        paths = report.write(result, meta, staging / ASSETS_EXTRA / REPORT_DIR)
        figures.update(report.as_dict(result, meta))
        print(paths["markdown"].read_text(encoding="utf-8"))

    try:
        path = export.export(module, info, args.out, version, before_publish=validate)
    except FileExistsError as exc:
        logger.error("export refused error=%s", exc)
        return 1
    if args.install_weights:
        args.install_weights.mkdir(parents=True, exist_ok=True)
        for name in (tuned.DETECTOR_FILE, tuned.CLASSIFIER_FILE, tuned.MANIFEST_FILE):
            shutil.copy2(weights_dir / name, args.install_weights / name)
        logger.info("weights installed dir=%s", args.install_weights)
    logger.info(
        "trained version=%d path=%s mAP=%s minutes=%.1f report=%s",
        version,
        path,
        figures.get("mean_ap"),
        (time.monotonic() - started) / 60,
        path / ASSETS_EXTRA / REPORT_DIR / report.MARKDOWN_FILE,
    )
    return 0
