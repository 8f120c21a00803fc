"""Contract 2 as names: model name, signature, input and output keys, and the `maskwatch.json` model-info file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from maskwatch.detections import OUT_BOXES, OUT_CLASSES, OUT_MULTICLASS_SCORES, OUT_NUM, OUT_SCORES

MODEL_NAME = "mask_detector"
SIGNATURE_NAME = "serving_default"
INPUT_IMAGES = "images"
# Extra output (allowed by Contract 2): each row's face score, which `detection_scores` repeats (a row is counted by
# how sure the model is that it is a face; its class is the most probable one).
OUT_FACE_SCORES = "detection_face_scores"
# Extra output (maskwatch.detections.OUT_MULTICLASS_SCORES, the TF Object Detection API's name): [N,K,1+3], column 0
# background (1 - face score), column c face score x the probability of Contract 2 class c.
OUTPUTS = (OUT_BOXES, OUT_SCORES, OUT_CLASSES, OUT_NUM, OUT_FACE_SCORES, OUT_MULTICLASS_SCORES)

ASSETS_EXTRA = "assets.extra"
MODEL_INFO_FILE = "maskwatch.json"
WARMUP_FILE = "tf_serving_warmup_requests"


@dataclass(frozen=True)
class ModelInfo:
    """What a consumer may want to know about an exported model beyond its signature."""

    face_threshold: float
    max_detections: int
    nms_threshold: float
    scores: str
    classes: dict[str, str]
    detector: str
    classifier: str

    def __post_init__(self) -> None:
        if not 0.0 < self.face_threshold < 1.0:
            raise ValueError(f"face_threshold {self.face_threshold} outside (0, 1)")
        if self.max_detections < 1:
            raise ValueError(f"max_detections {self.max_detections} < 1")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        return cls(**json.loads(text))

    @classmethod
    def read(cls, version_dir: Path) -> ModelInfo:
        """Read `<version_dir>/assets.extra/maskwatch.json`."""
        return cls.from_json((version_dir / ASSETS_EXTRA / MODEL_INFO_FILE).read_text(encoding="utf-8"))
