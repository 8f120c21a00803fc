"""`maskwatch train`: fine-tune the detector and the 3-class classifier on a VOC set, write the weights, export a
new model version (which a watching model server loads) with its validation report."""

from __future__ import annotations

import argparse
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

from maskwatch.logs import setup_logging
from maskwatch.model_api import ASSETS_EXTRA, MODEL_NAME, VALIDATION_DIR
from model import tuned
from model.tuned import DEFAULT_CANDIDATE_THRESHOLD, DEFAULT_CANVAS_HW, DEFAULT_MAX_UPSCALE
from training.config import ClassifierConfig, DetectorConfig, TrainConfig
from training.eval import dataset, report, split

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"


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
    ap.add_argument(
        "--classifier-size", type=int, default=c.size, help=f"classifier input side in pixels (default: {c.size})"
    )
    ap.add_argument("--seed", type=int, default=split.DEFAULT_SEED, help="the split's and the training's seed")
    ap.add_argument(
        "--classifier-seed", type=int, help="the classifier's own seed, the split unchanged (default: --seed)"
    )
    ap.add_argument("--val-fraction", type=float, default=split.DEFAULT_VAL_FRACTION)
    ap.add_argument(
        "--folds",
        type=int,
        nargs="?",
        const=split.DEFAULT_FOLDS,
        default=0,
        metavar="K",
        help=f"cross-validate instead of exporting a model: train the recipe K times (default {split.DEFAULT_FOLDS}), "
        "each holding out one fold of the images (duplicates in one fold, each fold its share of faces worn "
        "incorrectly); each fold's report and the mean ± sd and pooled figures go to <out>/cross-validation/; "
        "with --resume, finished folds are kept and an interrupted one carries on",
    )
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training images (quick runs)")
    ap.add_argument("--work-dir", type=Path, help="checkpoints and weights (default: <out>/.train)")
    ap.add_argument("--resume", action="store_true", help="carry on from the work directory's checkpoints")
    ap.add_argument("--install-weights", type=Path, help="also copy the weights here (e.g. model/weights)")
    ap.add_argument(
        "--detector-from",
        type=Path,
        metavar="WEIGHTS_DIR",
        help="keep this weights directory's detector (e.g. model/weights) and train only the classifier",
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


def config_of(args: argparse.Namespace) -> TrainConfig:
    """The run's one config from parsed options; ValueError names the option that is wrong."""
    canvas = tuned.parse_canvas(args.canvas)
    if canvas is None:
        raise ValueError("--canvas must look like 480x640 (each side >= 32)")
    detector = replace(
        DetectorConfig(), epochs=args.epochs, batch_size=args.batch_size, crop=args.crop, seed=args.seed
    )
    classifier = replace(
        ClassifierConfig(),
        epochs=args.classifier_epochs,
        size=args.classifier_size,
        seed=args.seed if args.classifier_seed is None else args.classifier_seed,
    )
    return TrainConfig(
        data=args.data,
        out=args.out,
        version=args.version,
        detector=detector,
        classifier=classifier,
        seed=args.seed,
        val_fraction=args.val_fraction,
        limit=args.limit,
        work_dir=args.work_dir,
        resume=args.resume,
        install_weights=args.install_weights,
        detector_from=args.detector_from,
        face_threshold=args.face_threshold,
        canvas_hw=canvas,
        max_upscale=args.max_upscale,
        threads=args.threads,
        fps_frames=args.fps_frames,
        folds=args.folds,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="maskwatch train", description=__doc__)
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        config_of(args)
    except ValueError as exc:
        ap.error(str(exc))
    return args


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


def _seen_validation(source: dict[str, Any], config: TrainConfig) -> str | None:
    """Why this run's validation images may be among those the kept detector trained on (its manifest's `training`
    record: `source`), if they may."""
    trained_on, split_then = source.get("data"), source.get("split") or {}
    if not trained_on or Path(trained_on).resolve() != config.data.resolve():
        return None  # other data (a site's own frames): its images are unseen
    now = {"seed": config.seed, "val_fraction": config.val_fraction}
    if all(split_then.get(k) == v for k, v in now.items()):
        return None
    return f"the detector trained on {trained_on} split with {split_then}, this run splits it with {now}"


def train_main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """`maskwatch train` with parsed options; 0 when the new version is exported, 1 if it exists, 2 on bad input."""
    try:
        config = config_of(args)
    except ValueError as exc:
        print(f"maskwatch train: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, "kv", service="train")
    for noisy in ("absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return train(config)


class Refused(Exception):
    """A step found the data, a kept detector or the work directory unusable: the run stops with exit code 2."""


def train(config: TrainConfig) -> int:
    """The run as named steps: data → detector (trained or kept) → classifier → weights → validated export →
    installed weights."""
    started = time.monotonic()
    _start_tensorflow(config)
    if config.folds:
        return cross_validate(config)
    try:
        parts = load_split(config)
        kept = keep_detector(config)
        record = {"val_fraction": config.val_fraction, "seed": config.seed, "train": len(parts.train), "val": len(parts.val)}
        weights_dir = train_weights(config, parts, kept, config.work, record)
    except Refused as exc:
        logger.error("%s", exc)
        return 2
    try:
        path, figures = export_validated(config, weights_dir, parts.val)
    except FileExistsError as exc:
        logger.error("export refused error=%s", exc)
        return 1
    install_weights(config, weights_dir)
    logger.info(
        "trained version=%s path=%s mAP=%s minutes=%.1f report=%s",
        path.name,
        path,
        figures.get("mean_ap"),
        (time.monotonic() - started) / 60,
        path / ASSETS_EXTRA / VALIDATION_DIR / report.MARKDOWN_FILE,
    )
    return 0


def _start_tensorflow(config: TrainConfig) -> None:
    # TensorFlow's best-fit allocator on the CPU keeps the steps' large buffers for the next step where malloc maps and
    # unmaps them at every step: 10x fewer page faults and ~6 % faster detector epochs on a 2-core EPYC, the same
    # losses (to 4 decimals over 3 epochs). Read only when TensorFlow starts: `maskwatch train` in a process of its own.
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    import tensorflow as tf

    from training.eval import runner

    runner.limit_threads(config.threads)
    tf.random.set_seed(config.seed)


def load_split(config: TrainConfig) -> split.Split:
    """The data set split into training and validation images (near-duplicates on one side)."""
    try:
        samples = dataset.load(config.data)
        parts = split.split(samples, config.val_fraction, config.seed)
    except (dataset.DatasetError, ValueError) as exc:
        raise Refused(f"data unusable error={exc}") from exc
    logger.info("split images=%d groups=%d train=%d val=%d", len(samples), parts.groups, len(parts.train), len(parts.val))
    return parts


def keep_detector(config: TrainConfig) -> KeptDetector | None:
    """With --detector-from, that directory's detector (checked); a warning when it saw this run's validation images."""
    if not config.detector_from:
        return None
    try:
        kept = _kept_detector(config.detector_from)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Refused(f"detector weights unusable dir={config.detector_from} error={exc}") from exc
    seen = _seen_validation(kept.source_training, config)
    if seen:
        logger.warning("validation images in the kept detector's training: figures flattered reason=%s", seen)
    return kept


def train_weights(
    config: TrainConfig, parts: split.Split, kept: KeptDetector | None, work: Path, split_record: dict[str, Any]
) -> Path:
    """Both stages trained on `parts.train` (checkpoints in `work`, resumable) and written as a weights directory
    (returned) whose manifest records the split as `split_record`."""
    from model import caffe, export
    from model.ssd import TunedFaceDetector
    from training import data

    train_samples = parts.train[: config.limit] if config.limit else parts.train
    logger.info("training images=%d of=%d work=%s", len(train_samples), len(parts.train), work)
    state = {
        "data": str(config.data.resolve()),
        "train_images": [s.name for s in train_samples],
        "detector": {"from": kept.origin, "sha256": kept.sha256} if kept else asdict(config.detector),
        "classifier": asdict(config.classifier),
    }
    try:
        _prepare_work_dir(work, json.loads(json.dumps(state)), config.resume)
    except ValueError as exc:
        raise Refused(f"cannot resume error={exc}") from exc
    sources = export.default_sources()
    images = data.read_images(train_samples)
    detector = TunedFaceDetector(caffe.load(sources.prototxt, sources.caffemodel), config.canvas_hw)
    detector_record = fit_detector(config, detector, images, kept, work)
    classifier, classifier_record = fit_classifier(config, detector, images, train_samples, parts.val, work)
    manifest = tuned.Manifest(
        canvas_hw=config.canvas_hw,
        max_upscale=config.max_upscale,
        classifier_size=config.classifier.size,
        crop_margin=config.classifier.margin,
        face_threshold=config.face_threshold,
        face_output=config.classifier.face_output,
        training={
            "data": str(config.data),
            "split": split_record,
            "detector": detector_record,
            "classifier": classifier_record,
        },
    )
    weights_dir = work / "weights"
    tuned.write(
        weights_dir,
        {k: v.numpy() for k, v in detector.variables_by_name().items()},
        tuned.classifier_arrays(classifier),
        manifest,
    )
    logger.info("weights written dir=%s", weights_dir)
    return weights_dir


def fit_detector(
    config: TrainConfig, detector: Any, images: Sequence[Any], kept: KeptDetector | None, work: Path
) -> dict[str, Any]:
    """The detector trained in place (or the kept one loaded); returns the manifest's `training.detector` record."""
    if kept:
        detector.load_weights(kept.arrays)
        logger.info("detector kept dir=%s sha256=%s", kept.origin, kept.sha256[:16])
        return kept.record()
    from training import detector as det_train

    figures = det_train.train_detector(detector, images, config.detector, work / "detector", config.resume)
    return {**asdict(config.detector), "final": figures}


def fit_classifier(
    config: TrainConfig,
    detector: Any,
    images: Sequence[Any],
    train_samples: Sequence[dataset.Sample],
    val_samples: Sequence[dataset.Sample],
    work: Path,
) -> tuple[Any, dict[str, Any]]:
    """The classifier trained on the true faces and, as "not a face", on the detector's own false candidates on the
    training images; returns it and the manifest's `training.classifier` record."""
    import tf_keras

    from model import export
    from training import classifier as cls_train
    from training import data, negatives

    cls_cfg = config.classifier
    patches, labels = data.face_patches(images)
    val_patches, val_labels = data.face_patches(data.read_images(val_samples))
    not_faces = 0
    if cls_cfg.face_output:
        # the second stage learns the detector's own mistakes: its candidates on the training images that are no face
        found = negatives.candidates(detector, train_samples, config.max_upscale)
        extra = data.not_face_patches(images, found)
        not_faces = len(extra)
        patches = np.concatenate([patches, extra])
        labels = np.concatenate([labels, np.full(not_faces, len(tuned.TUNED_CLASS_IDS), np.int32)])
    tf_keras.utils.set_random_seed(cls_cfg.seed)  # the new output column's initial weights and dropout draws
    model = tuned.build_classifier(cls_cfg.size, len(tuned.TUNED_CLASS_IDS), face_output=cls_cfg.face_output)
    copied = cls_train.init_from_h5(model, export.load_classifier(export.default_sources().classifier))
    logger.info("classifier initialised layers_from_h5=%d faces=%d not_faces=%d", copied, len(patches) - not_faces, not_faces)
    figures = cls_train.train_classifier(
        model, patches, labels, cls_cfg, work / "classifier", config.resume, val=(val_patches, val_labels)
    )
    record = {
        **asdict(cls_cfg),
        "not_faces": not_faces,
        "not_face_scores": [negatives.MIN_SCORE, negatives.MAX_SCORE] if cls_cfg.face_output else None,
        "final": {k: v for k, v in figures.items() if not k.startswith("val_")},
    }
    return model, record


def export_validated(
    config: TrainConfig, weights_dir: Path, val_samples: Sequence[dataset.Sample]
) -> tuple[Path, dict[str, Any]]:
    """The next model version, published only once its validation report is written into it; FileExistsError when
    that version exists."""
    from model import export
    from training.eval import runner
    from training.eval.cli import evaluate_split

    version = config.version or next_version(config.out / MODEL_NAME)
    module, manifest = export.build_tuned_module(weights_dir, export.default_sources(), max_detections=export.DEFAULT_MAX_DETECTIONS)
    info = export.tuned_model_info(module, weights_dir, manifest)
    figures: dict[str, Any] = {}

    def validate(staging: Path) -> None:
        predictor = runner.SavedModelPredictor(staging)
        result, meta = evaluate_split(predictor, val_samples, fps_frames=config.fps_frames)
        meta = {
            **meta,
            "model": f"{MODEL_NAME}/{version}",
            "data": str(config.data),
            "split": "val",
            "note": "One validation split, not cross-validated: `maskwatch train --folds 5` measures the recipe.",
            "threads": config.threads,
        }
        paths = report.write(result, meta, staging / ASSETS_EXTRA / VALIDATION_DIR)
        figures.update(report.as_dict(result, meta))
        print(paths["markdown"].read_text(encoding="utf-8"))

    path = export.export(module, info, config.out, version, before_publish=validate)
    return path, figures


def install_weights(config: TrainConfig, weights_dir: Path) -> None:
    """With --install-weights, the three weights files copied there (e.g. model/weights)."""
    if not config.install_weights:
        return
    config.install_weights.mkdir(parents=True, exist_ok=True)
    for name in (tuned.DETECTOR_FILE, tuned.CLASSIFIER_FILE, tuned.MANIFEST_FILE):
        shutil.copy2(weights_dir / name, config.install_weights / name)
    logger.info("weights installed dir=%s", config.install_weights)


def cross_validate(config: TrainConfig) -> int:
    """--folds K: the recipe trained K times, each time on every fold but one and measured on the one held out (its
    report and detections in <cv_dir>/fold-<k>/), then the K reports aggregated in <cv_dir>. Resumable fold by fold:
    with --resume a fold whose report exists (made with these settings) is kept, an interrupted one carries on from
    its checkpoints. 0 when the report is written, 2 on unusable data or a fold made with other settings."""
    import tensorflow as tf

    from training.eval import crossval
    from training.eval.cli import DEFAULT_BOOTSTRAP, measure_fold

    started = time.monotonic()
    try:
        folds = split.folds(dataset.load(config.data), config.folds, config.seed)
    except (dataset.DatasetError, ValueError) as exc:
        logger.error("data unusable error=%s", exc)
        return 2
    logger.info(
        "folds k=%d images=%d groups=%d images_per_fold=%s incorrect_per_fold=%s",
        folds.k,
        len(folds.samples),
        folds.groups,
        [folds.fold.count(k) for k in range(folds.k)],
        folds.faces(split.STRATIFY_CLASS),
    )
    settings = fold_settings(config)
    if not config.resume:
        shutil.rmtree(config.cv_dir, ignore_errors=True)  # a fresh run: no report of an earlier one is mixed in
    fold_dirs = []
    for k in range(folds.k):
        name = f"fold-{k + 1}"
        fold_dir = config.cv_dir / name
        fold_dirs.append(fold_dir)
        try:
            if config.resume and _fold_done(fold_dir, settings):
                logger.info("fold kept fold=%d of=%d report=%s", k + 1, folds.k, fold_dir)
                continue
            parts = folds.part(k)
            record = {"folds": folds.k, "fold": k + 1, "seed": config.seed, "train": len(parts.train), "val": len(parts.val)}
            logger.info("fold training fold=%d of=%d train=%d held_out=%d", k + 1, folds.k, len(parts.train), len(parts.val))
            tf.random.set_seed(config.seed)  # each fold starts as a run of its own, whether or not folds before it ran here
            weights_dir = train_weights(config, parts, None, config.work / name, record)
        except Refused as exc:
            logger.error("%s", exc)
            return 2
        meta = {"data": str(config.data), "threads": config.threads, "training": settings}
        measure_fold(weights_dir, parts.val, fold_dir, f"{name} of {folds.k}", meta, config.fps_frames)
    cv = crossval.aggregate(fold_dirs, DEFAULT_BOOTSTRAP)
    meta = {
        "model": f"maskwatch train recipe, {folds.k} folds",
        "data": str(config.data),
        "how": "each fold held out from the training of its own model, so every image is measured by the one model that never saw it",
        "training": settings,
    }
    paths = crossval.write(cv, meta, config.cv_dir)
    print(paths["markdown"].read_text(encoding="utf-8"))
    logger.info(
        "cross-validated folds=%d pooled_mAP=%s minutes=%.1f report=%s",
        folds.k,
        cv.pooled.mean_ap,
        (time.monotonic() - started) / 60,
        paths["markdown"],
    )
    return 0


def fold_settings(config: TrainConfig) -> dict[str, Any]:
    """What makes a fold's result, as its report records it (JSON-normalised): a fold made otherwise is not reused."""
    settings = {
        "data": str(config.data.resolve()),
        "folds": config.folds,
        "seed": config.seed,
        "limit": config.limit,
        "detector": asdict(config.detector),
        "classifier": asdict(config.classifier),
        "canvas_hw": config.canvas_hw,
        "max_upscale": config.max_upscale,
        "face_threshold": config.face_threshold,
    }
    normalised: dict[str, Any] = json.loads(json.dumps(report.rounded(settings)))
    return normalised


def _fold_done(fold_dir: Path, settings: dict[str, Any]) -> bool:
    """Whether the fold's report is complete; Refused when it was made with other settings."""
    path = fold_dir / report.JSON_FILE
    if not path.is_file() or not (fold_dir / report.DETECTIONS_FILE).is_file():
        return False
    made = json.loads(path.read_text(encoding="utf-8")).get("training")
    if made != settings:
        differs = sorted(k for k in set(made or {}) | set(settings) if (made or {}).get(k) != settings.get(k))
        raise Refused(f"cannot resume error={fold_dir} was made with other settings ({', '.join(differs)}); drop --resume")
    return True


