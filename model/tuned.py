"""The fine-tuned mask model as files: `face_detector.npz` + `mask_classifier.npz` + `manifest.json` (how to
rebuild it), read by `python -m model.export` and written by `maskwatch train`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.detections import CLASS_IDS, INCORRECT, WITH_MASK, WITHOUT_MASK

DETECTOR_FILE = "face_detector.npz"
CLASSIFIER_FILE = "mask_classifier.npz"
MANIFEST_FILE = "manifest.json"
# The weights committed with the code (see model/MODEL_CARD.md).
PACKAGED_WEIGHTS = Path(__file__).resolve().parent / "weights"
# Classifier outputs, in order, as Contract 2 class ids.
TUNED_CLASS_IDS = (CLASS_IDS[WITH_MASK], CLASS_IDS[WITHOUT_MASK], CLASS_IDS[INCORRECT])
# Served detector input (sides divisible by the coarsest stride, 64): 640x480 frames are shrunk by 0.8. 448x576
# finds a few more small faces at 1.3x the cost (model/EXPERIMENTS.md; `python -m model.export --canvas 448x576`).
DEFAULT_CANVAS_HW = (384, 512)
# A smaller image is upscaled by up to this factor to fill the canvas (free: the canvas size is fixed).
DEFAULT_MAX_UPSCALE = 2.0
DEFAULT_CLASSIFIER_SIZE = 96
DEFAULT_CROP_MARGIN = 0.15
# The served model reports faces down to this score; consumers count above maskwatch.detections.DEFAULT_MIN_SCORE.
DEFAULT_CANDIDATE_THRESHOLD = 0.1
# The classifier's "is this a face" output layer (`build_classifier(face_output=True)`).
FACE_LAYER = "face"
MIN_CANVAS_SIDE = 32


def add_serving_arguments(ap: Any, when: str = "") -> None:
    """--canvas, --max-upscale and --flip-average: how a weights directory is served (unset: its manifest's), for
    `python -m model.export` and `maskwatch eval --fold-models` (`when` starts each help text, e.g. "with X: ")."""
    import argparse

    ap.add_argument("--canvas", help=f"{when}the detector's input HxW, e.g. 480x640 (default: the manifest's)")
    ap.add_argument(
        "--max-upscale", type=float, help=f"{when}largest factor a small image is scaled by (default: the manifest's)"
    )
    ap.add_argument(
        "--flip-average",
        action=argparse.BooleanOptionalAction,
        help=f"{when}average each crop's classes with its mirror image's (default: the manifest's, on)",
    )


def parse_canvas(text: str) -> tuple[int, int] | None:
    """A detector canvas written HxW (e.g. "480x640"), or None when it is not one (or a side is under 32)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        return None
    return (h, w) if min(h, w) >= MIN_CANVAS_SIDE else None


@dataclass(frozen=True)
class Manifest:
    """How the weights files become a model: detector input, classifier input and crop, recommended threshold."""

    canvas_hw: tuple[int, int] = DEFAULT_CANVAS_HW
    max_upscale: float = DEFAULT_MAX_UPSCALE
    classifier_size: int = DEFAULT_CLASSIFIER_SIZE
    crop_margin: float = DEFAULT_CROP_MARGIN
    class_ids: tuple[int, ...] = TUNED_CLASS_IDS
    face_threshold: float = DEFAULT_CANDIDATE_THRESHOLD
    # The classifier also says whether a candidate is a face (a last, sigmoid output); False for older weights.
    face_output: bool = False
    # The classifier's outputs are the mean over each crop and its mirror image (an inference choice: older
    # manifests get it too).
    flip_average: bool = True
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    training: dict[str, Any] = field(default_factory=dict)  # data, split, epochs, seed, figures

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, weights_dir: Path) -> Manifest:
        raw = json.loads((weights_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        raw["canvas_hw"] = tuple(raw["canvas_hw"])
        raw["class_ids"] = tuple(raw["class_ids"])
        return cls(**raw)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def has_weights(weights_dir: Path) -> bool:
    return all((weights_dir / f).is_file() for f in (DETECTOR_FILE, CLASSIFIER_FILE, MANIFEST_FILE))


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def verify(weights_dir: Path, manifest: Manifest) -> None:
    """Raise ValueError when a weights file differs from the manifest's digest."""
    for name, digest in manifest.files.items():
        actual = sha256(weights_dir / name)
        if actual != digest:
            raise ValueError(f"{weights_dir / name}: sha256 {actual[:16]}… differs from the manifest's {digest[:16]}…")


def write(weights_dir: Path, detector: dict[str, np.ndarray], classifier: dict[str, np.ndarray], manifest: Manifest) -> Manifest:
    """Write the three files (float32 arrays, compressed); returns the manifest with the files' digests."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, arrays in ((DETECTOR_FILE, detector), (CLASSIFIER_FILE, classifier)):
        path = weights_dir / name
        np.savez_compressed(path, allow_pickle=False, **{k: np.asarray(v, np.float32) for k, v in arrays.items()})
        digests[name] = sha256(path)
    final = Manifest(**{**asdict(manifest), "files": digests})
    (weights_dir / MANIFEST_FILE).write_text(final.to_json(), encoding="utf-8")
    return final


def build_classifier(size: int, classes: int, dropout: float = 0.2, face_output: bool = False) -> Any:
    """MobileNetV2 (alpha 1) at `size` px, global average pooling, dense 128 ReLU, dropout, dense softmax: the
    pre-trained H5 classifier's shape with a smaller input and `classes` outputs. A tf-keras (Keras 2) model.

    With `face_output`, a sigmoid "is this a face" column follows the softmax (outputs [M, classes + 1]): the
    second stage that re-checks the detector's candidates (see `MaskDetectorModule`)."""
    import tf_keras

    base = tf_keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None, alpha=1.0)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    x = tf_keras.layers.Dense(128, activation="relu", name="dense")(x)
    x = tf_keras.layers.Dropout(dropout, name="dropout")(x)
    out = tf_keras.layers.Dense(classes, activation="softmax", name="dense_1")(x)
    if face_output:
        face = tf_keras.layers.Dense(1, activation="sigmoid", name=FACE_LAYER)(x)
        out = tf_keras.layers.Concatenate(name="class_and_face")([out, face])
    return tf_keras.Model(base.input, out, name="mask_classifier")


def classifier_arrays(model: Any) -> dict[str, np.ndarray]:
    """Every weight (trainable or not, e.g. BatchNorm statistics) keyed by its variable name."""
    return {w.name: w.numpy() for w in model.weights}


def load_classifier_arrays(model: Any, arrays: dict[str, np.ndarray]) -> None:
    missing = sorted({w.name for w in model.weights} - set(arrays))
    if missing:
        raise ValueError(f"classifier weights lack {missing[:5]}")
    for w in model.weights:
        if tuple(arrays[w.name].shape) != tuple(w.shape):
            raise ValueError(f"classifier weight {w.name} has shape {arrays[w.name].shape}, want {tuple(w.shape)}")
        w.assign(arrays[w.name])
