"""Training settings: the detector's and the classifier's, with the defaults `maskwatch train` uses."""

from __future__ import annotations

from dataclasses import dataclass

from serving.train.model import DEFAULT_CLASSIFIER_SIZE, DEFAULT_CROP_MARGIN


@dataclass(frozen=True)
class DetectorConfig:
    # 36 (40 until 2026-12-03): on the slowest 2-core CPU seen, an AMD EPYC without AVX-512, an epoch takes ~60 s and a
    # run at 40 + 16 classifier epochs would have taken ~66 min; 36 + 16 keeps it within the hour (MODEL_CARD.md)
    epochs: int = 36
    batch_size: int = 8
    crop: int = 320
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    scale_range: tuple[float, float] = (0.6, 1.7)
    mosaic: float = 0.0  # share of crops that are 4-image mosaics (`serving.train.data.mosaic_crop`)
    paste: float = 0.0  # share of crops with small faces of the rarer classes pasted in (`serving.train.data.paste_faces`)
    ema: float = 0.0  # decay of a moving average of the weights that the run ends with (YOLOv5 keeps one); 0: none
    seed: int = 0


@dataclass(frozen=True)
class ClassifierConfig:
    # 16 (12 from 2026-12-03 evening to 2026-12-04): on the shipped detector, seeds 0 / 1 / 2 validate at per-class mAP
    # 83.2 / 82.4 / 80.0 % against 79.5 / 78.1 / 80.5 % with 12; 36 + 16 is ~53 min on the slowest CPU (MODEL_CARD.md)
    epochs: int = 16
    batch_size: int = 64
    size: int = DEFAULT_CLASSIFIER_SIZE
    margin: float = DEFAULT_CROP_MARGIN
    learning_rate: float = 5e-4
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    weight_power: float = 1.0
    # also learn "is this a face" from the detector's candidates that are none (the served model's second stage)
    face_output: bool = True
    seed: int = 0
