"""The `maskwatch.json` model-info file an export writes in `assets.extra/`: thresholds, scoring, classes, sources."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from maskwatch.model_api import ASSETS_EXTRA

MODEL_INFO_FILE = "maskwatch.json"


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
