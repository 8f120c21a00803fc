"""The one annotator (worker's latest frames, `/check`): one labelled box per face, in its class colour, inside the
image."""

from __future__ import annotations

import numpy as np
import pytest

from maskwatch.annotate import COLOURS, draw
from maskwatch.detections import INCORRECT, WITH_MASK, WITHOUT_MASK, Detection, Detections

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("label", [WITH_MASK, WITHOUT_MASK, INCORRECT])
def test_box_in_class_colour(label: str) -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    out = draw(image, Detections((Detection((0.4, 0.4, 0.8, 0.7), 0.87, label),)))
    assert image.sum() == 0, "the input is left alone"
    x0, y1 = int(0.4 * 300), int(0.8 * 200)
    assert tuple(out[y1 - 1, x0 + 20]) == COLOURS[label]  # bottom edge of the box


def test_boxes_at_the_edges_stay_inside() -> None:
    image = np.full((120, 160, 3), 40, np.uint8)
    dets = Detections(
        (
            Detection((0.0, 0.0, 0.2, 0.3), 0.5, WITHOUT_MASK),  # label cannot go above: drawn below
            Detection((0.8, 0.7, 1.0, 1.0), 0.99, WITH_MASK),
        )
    )
    out = draw(image, dets)
    assert out.shape == image.shape and (out != image).any()


def test_no_faces_no_change() -> None:
    image = np.full((50, 50, 3), 7, np.uint8)
    assert (draw(image, Detections.empty()) == image).all()
