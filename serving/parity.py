"""Output parity of two runs of a Contract 2 model (TensorFlow's graph and the OpenVINO runtime): every face row of
one matched in the other, boxes within a pixel at 640x480, scores within 0.01, the same class."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from maskwatch.model_api import OUT_BOXES, OUT_CLASSES, OUT_NUM, OUT_SCORES

FRAME_HW = (480, 640)  # boxes are compared in the pixels of a 640x480 frame
BOX_TOLERANCE_PX = 1.0
SCORE_TOLERANCE = 0.01
MIN_SCORE = 0.1  # rows scoring below are not compared (the model reports candidates from 0.1)


@dataclass
class Parity:
    """Counts over the compared rows; `ok` when nothing differs beyond the tolerances."""

    images: int = 0
    rows: int = 0  # rows scoring >= MIN_SCORE in the reference
    unmatched: int = 0  # reference rows with no row within BOX_TOLERANCE_PX in the other run
    extra: int = 0  # rows of the other run with no reference row within the tolerance
    score_differs: int = 0
    class_differs: int = 0
    max_box_px: float = 0.0
    max_score: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unmatched or self.extra or self.score_differs or self.class_differs)

    def to_dict(self) -> dict[str, object]:
        return {
            "images": self.images,
            "rows": self.rows,
            "unmatched": self.unmatched,
            "extra": self.extra,
            "score_differs": self.score_differs,
            "class_differs": self.class_differs,
            "max_box_px": round(self.max_box_px, 3),
            "max_score_diff": round(self.max_score, 4),
            "ok": self.ok,
        }


def _rows(outputs: Mapping[str, np.ndarray], i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = int(outputs[OUT_NUM][i])
    scores = np.asarray(outputs[OUT_SCORES][i][:n])
    keep = scores >= MIN_SCORE
    return np.asarray(outputs[OUT_BOXES][i][:n])[keep], scores[keep], np.asarray(outputs[OUT_CLASSES][i][:n])[keep]


def compare(
    reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray], parity: Parity | None = None
) -> Parity:
    """Add one batch's comparison to `parity` (a new one if None). A row of either run scoring within
    SCORE_TOLERANCE of MIN_SCORE may lack a twin: the other run may have scored it just under."""
    parity = parity or Parity()
    scale = np.array([*FRAME_HW, *FRAME_HW], np.float32)
    for i in range(len(reference[OUT_NUM])):
        parity.images += 1
        rb, rs, rc = _rows(reference, i)
        ob, os_, oc = _rows(other, i)
        used = np.zeros(len(ob), bool)
        parity.rows += len(rb)
        for j in range(len(rb)):
            dist = np.abs((ob - rb[j]) * scale).max(axis=1) if len(ob) else np.zeros(0)
            dist = np.where(used, np.inf, dist)
            best = int(np.argmin(dist)) if len(dist) else -1
            if best < 0 or dist[best] > BOX_TOLERANCE_PX:
                if rs[j] >= MIN_SCORE + SCORE_TOLERANCE:
                    parity.unmatched += 1
                    if len(parity.examples) < 10:
                        near = f"{dist[best]:.1f}" if best >= 0 else "-"
                        parity.examples.append(
                            f"image {parity.images - 1}: row score {rs[j]:.3f} unmatched (nearest {near} px)"
                        )
                continue
            used[best] = True
            parity.max_box_px = max(parity.max_box_px, float(dist[best]))
            diff = abs(float(os_[best]) - float(rs[j]))
            parity.max_score = max(parity.max_score, diff)
            parity.score_differs += diff > SCORE_TOLERANCE
            parity.class_differs += int(oc[best] != rc[j])
        parity.extra += int(np.sum(~used & (os_ >= MIN_SCORE + SCORE_TOLERANCE)))
    return parity
