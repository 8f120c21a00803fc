"""The upload check's reading of an image's type and size from its header."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from maskwatch.frames import ImageSize, image_size

pytestmark = pytest.mark.timeout(30)


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
