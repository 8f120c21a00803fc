"""`maskwatch eval`: run a model over a VOC split and write the validation report (JSON, markdown, PR plot)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskwatch.detections import DEFAULT_MIN_SCORE
from maskwatch.logs import setup_logging
from maskwatch.model_api import MODEL_NAME
from model import tuned
from training.eval import crossval, dataset, report, runner, split
from training.eval.metrics import DEFAULT_IOU, Report, Truth, evaluate

logger = logging.getLogger(__name__)

DEFAULT_MODEL = Path("models") / MODEL_NAME
DEFAULT_OUT = Path(".maskwatch/eval")
DEFAULT_FPS_FRAMES = 50
DEFAULT_BOOTSTRAP = 200
MAX_FACES_FOR_FPS = 10


def truth_of(sample: dataset.Sample) -> Truth:
    return Truth(sample.boxes, sample.labels, sample.difficult)


@dataclass(frozen=True)
class SplitRun:
    """A model run over a split: each image's truth and detections (what `report.write` keeps for pooling), the
    metrics and the timings."""

    detections: report.ImageDetections
    report: Report
    meta: dict[str, Any]


def run_split(
    predictor: runner.Predictor,
    samples: Sequence[dataset.Sample],
    iou: float = DEFAULT_IOU,
    min_score: float = DEFAULT_MIN_SCORE,
    batch_size: int = 1,
    fps_frames: int = DEFAULT_FPS_FRAMES,
    bootstrap: int = DEFAULT_BOOTSTRAP,
) -> SplitRun:
    """The metrics of `predictor` on `samples`, and timings: the images as they are, then 640x480 frames made
    from images with at most MAX_FACES_FOR_FPS faces."""
    jpegs = [s.read_jpeg() for s in samples]
    preds, timing = runner.run(predictor, jpegs, [(s.width, s.height) for s in samples], batch_size)
    truths = [truth_of(s) for s in samples]
    result = evaluate(truths, preds, iou, min_score, bootstrap)
    timings = {f"data set images, batch {batch_size}": timing.to_dict()}
    few = [j for j, s in zip(jpegs, samples, strict=True) if len(s.labels) <= MAX_FACES_FOR_FPS]
    if fps_frames > 0 and few:
        frames = runner.frames_640x480(few, fps_frames)
        timings["640x480 frames (≤ 10 faces), batch 1"] = runner.time_frames(predictor, frames).to_dict()
    detections = report.ImageDetections(tuple(s.name for s in samples), tuple(truths), tuple(preds))
    return SplitRun(detections, result, {"model": predictor.name, "timing": timings})


def evaluate_split(
    predictor: runner.Predictor,
    samples: Sequence[dataset.Sample],
    iou: float = DEFAULT_IOU,
    min_score: float = DEFAULT_MIN_SCORE,
    batch_size: int = 1,
    fps_frames: int = DEFAULT_FPS_FRAMES,
    bootstrap: int = DEFAULT_BOOTSTRAP,
) -> tuple[Report, dict[str, Any]]:
    """`run_split`'s metrics and timings."""
    run = run_split(predictor, samples, iou, min_score, batch_size, fps_frames, bootstrap)
    return run.report, run.meta


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The `maskwatch eval` options (also how maskwatch/cli.py builds its subcommand)."""
    ap.add_argument("--data", type=Path, help="VOC directory with annotations/ and images/ (or --aggregate)")
    ap.add_argument(
        "--aggregate",
        type=Path,
        nargs="+",
        metavar="FOLD_REPORT_DIR",
        help="instead of running a model: aggregate the reports of K held-out folds (maskwatch train --folds) "
        "into mean ± sd and pooled figures",
    )
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--serving", metavar="HOST:PORT", help="a TF Serving API gRPC endpoint to evaluate through")
    where.add_argument(
        "--model", type=Path, help=f"a SavedModel version directory or a base path (highest version); default {DEFAULT_MODEL}"
    )
    ap.add_argument("--model-name", default=MODEL_NAME, help="model name on the server (with --serving)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report directory (default: {DEFAULT_OUT})")
    ap.add_argument("--split", choices=split.SPLITS, default="val", help="which part of the data (default: val)")
    ap.add_argument("--val-fraction", type=float, default=split.DEFAULT_VAL_FRACTION, help="as used for training")
    ap.add_argument("--seed", type=int, default=split.DEFAULT_SEED, help="split seed, as used for training")
    ap.add_argument("--iou", type=float, default=DEFAULT_IOU, help="IoU for a hit (default: 0.5)")
    ap.add_argument(
        "--min-score",
        type=float,
        default=DEFAULT_MIN_SCORE,
        help=f"operating score for recall, precision, widths and confusion (default: {DEFAULT_MIN_SCORE}, what the worker counts)",
    )
    ap.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_BOOTSTRAP,
        help=f"resamples for each AP's 95 %% interval (0: none; default: {DEFAULT_BOOTSTRAP})",
    )
    ap.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="K",
        help="with --split all: also cut the images into the K folds `maskwatch train --folds K` holds out (same "
        "--seed) and write each fold's report and their mean ± sd under <out>/folds/: a model that never trained on "
        "this data measured on the folds the recipe is cross-validated on",
    )
    ap.add_argument(
        "--fold-models",
        type=Path,
        metavar="WORK_DIR",
        help="with --split all --folds K: run each fold's images through the model `maskwatch train --folds K` trained "
        "without them (WORK_DIR/fold-<k>/weights, e.g. models/.train), a report per fold and their mean ± sd in "
        "<out>: a way of serving the recipe's models (--canvas, --max-upscale, --no-flip-average) measured by "
        "cross-validation",
    )
    tuned.add_serving_arguments(ap, "with --fold-models: ")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--fps-frames", type=int, default=DEFAULT_FPS_FRAMES, help="640x480 frames to time (0: skip)")
    ap.add_argument("--threads", type=int, default=2, help="TensorFlow threads for an in-process model")
    ap.add_argument(
        "--runtime",
        choices=("tensorflow", "openvino"),
        default="tensorflow",
        help="what runs an in-process model: its SavedModel in TensorFlow, or the OpenVINO networks exported beside "
        "it (as `python -m serving --runtime openvino`)",
    )
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N images of the split")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def check(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, if anything."""
    if (args.data is None) == (args.aggregate is None):
        return "give --data (to evaluate a model) or --aggregate (fold reports), not both"
    if not 0.0 < args.iou < 1.0:
        return "--iou must be in (0, 1)"
    if not 0.0 <= args.min_score <= 1.0:
        return "--min-score must be in [0, 1]"
    if args.folds and (not 2 <= args.folds <= split.MAX_FOLDS or args.split != "all" or args.limit):
        return f"--folds must be in [2, {split.MAX_FOLDS}], with --split all and without --limit"
    if args.fold_models and (not args.folds or args.serving or args.model or args.runtime != "tensorflow"):
        return "--fold-models needs --folds K and runs the fold models in TensorFlow (no --serving, --model or --runtime)"
    if not args.fold_models and (args.canvas or args.max_upscale is not None or args.flip_average is not None):
        return "--canvas, --max-upscale and --flip-average change how the fold models are served: only with --fold-models"
    if args.canvas and tuned.parse_canvas(args.canvas) is None:
        return "--canvas must look like 480x640 (each side >= 32)"
    if args.max_upscale is not None and args.max_upscale <= 0:
        return "--max-upscale must be > 0"
    if args.batch_size < 1 or args.threads < 1 or min(args.fps_frames, args.limit, args.bootstrap) < 0:
        return "--batch-size and --threads must be >= 1, --fps-frames, --limit and --bootstrap >= 0"
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="maskwatch eval", description=__doc__)
    add_arguments(ap)
    args = ap.parse_args(argv)
    problem = check(args)
    if problem:
        ap.error(problem)
    return args


def eval_main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """`maskwatch eval` with parsed options; 0 when the report is written, 2 on unusable options, data or model."""
    problem = check(args)
    if problem:
        print(f"maskwatch eval: error: {problem}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, "kv", service="eval")
    if args.aggregate:
        return aggregate(args.aggregate, args.out, args.bootstrap)
    try:
        samples = dataset.load(args.data)
        part = split.split(samples, args.val_fraction, args.seed).part(args.split)
    except (dataset.DatasetError, ValueError) as exc:
        logger.error("data unusable error=%s", exc)
        return 2
    if args.fold_models:
        return by_fold_models(samples, args)
    if args.limit:
        part = part[: args.limit]
    predictor: runner.Predictor
    if args.serving:
        predictor = runner.ServingPredictor(args.serving, args.model_name)
    else:
        runner.limit_threads(args.threads)
        try:
            if args.runtime == "openvino":
                predictor = runner.OpenVinoPredictor(args.model or DEFAULT_MODEL, threads=args.threads)
            else:
                predictor = runner.SavedModelPredictor(args.model or DEFAULT_MODEL)
        except (FileNotFoundError, ValueError) as exc:
            logger.error("model missing error=%s", exc)
            return 2
    logger.info("evaluating model=%s split=%s images=%d", predictor.name, args.split, len(part))
    started = time.monotonic()
    measured = run_split(predictor, part, args.iou, args.min_score, args.batch_size, args.fps_frames, args.bootstrap)
    result = measured.report
    meta = {
        **measured.meta,
        "data": str(args.data),
        "split": args.split,
        "val_fraction": args.val_fraction,
        "seed": args.seed,
        "threads": None if args.serving else args.threads,
    }
    paths = report.write(result, meta, args.out, measured.detections)
    print(report.markdown(result, meta))
    logger.info(
        "evaluated mAP=%s seconds=%.1f report=%s", result.mean_ap, time.monotonic() - started, paths["markdown"]
    )
    if args.folds:
        return by_folds(samples, measured.detections, args, meta)
    return 0


def by_folds(
    samples: Sequence[dataset.Sample], detections: report.ImageDetections, args: argparse.Namespace, meta: dict[str, Any]
) -> int:
    """--folds K: the run's detections cut into the K folds `maskwatch train --folds K` holds out, a report per fold
    under <out>/folds/fold-<k>/ and the spread across them in <out>/folds/; 2 when the data cannot be cut so."""
    try:
        folds = split.folds(samples, args.folds, args.seed)
    except ValueError as exc:
        logger.error("data unusable error=%s", exc)
        return 2
    fold_of = {s.name: f for s, f in zip(folds.samples, folds.fold, strict=True)}
    root = args.out / "folds"
    dirs = []
    for k in range(folds.k):
        idx = [i for i, name in enumerate(detections.names) if fold_of[name] == k]
        part = report.ImageDetections(
            tuple(detections.names[i] for i in idx),
            tuple(detections.truths[i] for i in idx),
            tuple(detections.preds[i] for i in idx),
        )
        result = evaluate(list(part.truths), list(part.preds), args.iou, args.min_score, args.bootstrap)
        dirs.append(root / f"fold-{k + 1}")
        report.write(result, {**meta, "split": f"fold-{k + 1} of {folds.k}"}, dirs[-1], part)
    cv = crossval.aggregate(dirs, args.bootstrap)
    how = "one model measured as it is on each fold (not trained per fold: unbiased only if it never trained on these images)"
    paths = crossval.write(cv, {"model": meta["model"], "data": meta["data"], "how": how}, root)
    print(paths["markdown"].read_text(encoding="utf-8"))
    logger.info("folds measured folds=%d report=%s", folds.k, paths["markdown"])
    return 0


def measure_fold(
    weights_dir: Path,
    held_out: Sequence[dataset.Sample],
    fold_dir: Path,
    name: str,
    meta: dict[str, Any],
    fps_frames: int,
    serve: dict[str, Any] | None = None,
) -> None:
    """A fold's model, built as export builds it (with `serve`'s changes: canvas_hw, max_upscale, flip_average) and
    run in process, measured on its held-out images: the report and detections written to `fold_dir` (report.json
    last, so a report there is a finished fold)."""
    from model import export

    module, _ = export.build_tuned_module(
        weights_dir, export.default_sources(), max_detections=export.DEFAULT_MAX_DETECTIONS, **(serve or {})
    )
    measured = run_split(runner.ModulePredictor(module, name), held_out, fps_frames=fps_frames)
    report.write(measured.report, {**measured.meta, **meta, "split": f"{name} (held out)"}, fold_dir, measured.detections)
    logger.info("fold measured fold=%s mAP=%s report=%s", name, measured.report.mean_ap, fold_dir / report.MARKDOWN_FILE)


def by_fold_models(samples: Sequence[dataset.Sample], args: argparse.Namespace) -> int:
    """--fold-models: each fold's held-out images through the model trained without them, served as the options
    say; 0 when the cross-validation report is written, 2 when a fold's model is missing or was trained on
    another cut of the data."""
    try:
        folds = split.folds(samples, args.folds, args.seed)
    except ValueError as exc:
        logger.error("data unusable error=%s", exc)
        return 2
    serve = {
        "canvas_hw": tuned.parse_canvas(args.canvas) if args.canvas else None,
        "max_upscale": args.max_upscale,
        "flip_average": args.flip_average,
    }
    changed = {key: v for key, v in serve.items() if v is not None}
    meta = {"data": str(args.data), "threads": args.threads, "serving": changed}
    runner.limit_threads(args.threads)
    dirs = []
    for k in range(folds.k):
        weights = args.fold_models / f"fold-{k + 1}" / "weights"
        expected = {"folds": folds.k, "fold": k + 1, "seed": args.seed}
        try:
            made = tuned.Manifest.read(weights).training.get("split", {})
        except (OSError, ValueError, KeyError) as exc:
            logger.error("fold model missing fold=%d error=%s", k + 1, exc)
            return 2
        if {key: made.get(key) for key in expected} != expected:
            logger.error("fold model of another cut fold=%d dir=%s made=%s expected=%s", k + 1, weights, made, expected)
            return 2
        dirs.append(args.out / f"fold-{k + 1}")
        measure_fold(weights, folds.part(k).val, dirs[-1], f"fold-{k + 1} of {folds.k}", meta, args.fps_frames, serve)
    cv = crossval.aggregate(dirs, args.bootstrap)
    served = ", ".join(f"{key}={v}" for key, v in changed.items()) or "as trained"
    summary = {
        "model": f"the fold models of {args.fold_models}, served {served}",
        "data": str(args.data),
        "how": "each fold measured by the model trained without it",
    }
    paths = crossval.write(cv, summary, args.out)
    print(paths["markdown"].read_text(encoding="utf-8"))
    logger.info("fold models measured folds=%d pooled_mAP=%s report=%s", folds.k, cv.pooled.mean_ap, paths["markdown"])
    return 0


def aggregate(fold_dirs: Sequence[Path], out: Path, bootstrap: int) -> int:
    """`maskwatch eval --aggregate`: 0 when the cross-validation report is written, 2 when the folds do not fit."""
    try:
        cv = crossval.aggregate(fold_dirs, bootstrap)
    except ValueError as exc:
        logger.error("fold reports unusable error=%s", exc)
        return 2
    first = cv.reports[0]
    meta = {"model": first.get("model", "?"), "data": first.get("data", "?")}
    paths = crossval.write(cv, meta, out)
    print(paths["markdown"].read_text(encoding="utf-8"))
    logger.info("aggregated folds=%d images=%d pooled_mAP=%s report=%s", len(cv.folds), cv.images, cv.pooled.mean_ap, paths["markdown"])
    return 0
