"""Training settings: the detector's, the classifier's and the whole run's, with the defaults `maskwatch train` uses
(how they were chosen: model/EXPERIMENTS.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from model.tuned import (
    DEFAULT_CANDIDATE_THRESHOLD,
    DEFAULT_CANVAS_HW,
    DEFAULT_CLASSIFIER_SIZE,
    DEFAULT_CROP_MARGIN,
    DEFAULT_MAX_UPSCALE,
)
from training.eval import split


@dataclass(frozen=True)
class DetectorConfig:
    # 36 epochs + the classifier's 16 keep a default run within the hour on the slowest 2-core CPU seen
    epochs: int = 36
    batch_size: int = 8
    crop: int = 320
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    scale_range: tuple[float, float] = (0.6, 1.7)
    seed: int = 0


@dataclass(frozen=True)
class ClassifierConfig:
    epochs: int = 16
    batch_size: int = 64
    size: int = DEFAULT_CLASSIFIER_SIZE
    margin: float = DEFAULT_CROP_MARGIN
    learning_rate: float = 5e-4
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    weight_power: float = 1.0  # class weights (n / (classes * n_c)) ** power: the rare classes count as much
    # also learn "is this a face" from the detector's candidates that are none (the served model's second stage)
    face_output: bool = True
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """One `maskwatch train` run, validated when made: the data and its split, both stages' settings, the served
    graph's settings and where everything goes. A ValueError names the option that is wrong."""

    data: Path
    out: Path = Path("models")
    version: int | None = None  # None: the next free number
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    seed: int = split.DEFAULT_SEED
    val_fraction: float = split.DEFAULT_VAL_FRACTION
    limit: int = 0  # only the first N training images (quick runs); 0: all
    work_dir: Path | None = None  # checkpoints and weights; None: <out>/.train
    resume: bool = False
    install_weights: Path | None = None
    detector_from: Path | None = None  # keep this weights directory's detector, train the classifier only
    face_threshold: float = DEFAULT_CANDIDATE_THRESHOLD
    canvas_hw: tuple[int, int] = DEFAULT_CANVAS_HW
    max_upscale: float = DEFAULT_MAX_UPSCALE
    threads: int = 2
    fps_frames: int = 30
    folds: int = 0  # cross-validate: K runs of the recipe, each holding out one fold; 0: one split, one model version

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        d, c = self.detector, self.classifier
        if min(self.canvas_hw) < 32:
            return "--canvas must look like 480x640 (each side >= 32)"
        if self.version is not None and self.version < 1:
            return "--version must be >= 1"
        if min(d.epochs, c.epochs, d.batch_size, self.threads) < 1 or d.crop < 64 or c.size < 32:
            return "epochs, batch size and threads must be >= 1, --crop >= 64, --classifier-size >= 32"
        if not 0.0 < self.face_threshold < 1.0:
            return "--face-threshold must be in (0, 1)"
        if not 0.0 < self.val_fraction < 1.0 or self.limit < 0 or self.max_upscale <= 0 or self.fps_frames < 0:
            return "--val-fraction must be in (0, 1), --limit and --fps-frames >= 0, --max-upscale > 0"
        if self.folds and not 2 <= self.folds <= split.MAX_FOLDS:
            return f"--folds must be in [2, {split.MAX_FOLDS}]"
        if self.folds and (self.detector_from or self.install_weights or self.version is not None):
            return "--folds measures the recipe and exports no model: not with --detector-from, --install-weights or --version"
        return None

    @property
    def work(self) -> Path:
        return self.work_dir or self.out / ".train"

    @property
    def cv_dir(self) -> Path:
        """Where --folds writes each fold's report (fold-<k>/) and the cross-validation report."""
        return self.out / "cross-validation"
