"""The upload check's drawing: one labelled box per face, in its class colour, inside the image."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from dashboard.predict import COLOURS, draw
from maskwatch.detections import INCORRECT, WITH_MASK, WITHOUT_MASK, Detection, Detections
from maskwatch.frames import ImageSize, image_size

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


def _png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def _jpeg(width: int, height: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.zeros((height, width, 3), np.uint8))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (_jpeg(64, 48), ImageSize("image/jpeg", 64, 48)),
        (_jpeg(7, 300), ImageSize("image/jpeg", 7, 300)),
        (_png(100_000, 100_000), ImageSize("image/png", 100_000, 100_000)),  # a bomb announces itself in the header
        (b"GIF89a\x01\x00\x01\x00", None),
        (b"BM\x00\x00", None),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (b"\xff\xd8\xff", None),  # a JPEG cut short
        (b"", None),
    ],
)
def test_image_size(raw: bytes, expected: ImageSize | None) -> None:
    assert image_size(raw) == expected
