"""Captured frame → JPEG for Kafka: resize, pass-through of a camera's own JPEG, shrinking to fit the byte limit."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from producer.encoder import EncodeError, FrameTooLarge, encode
from producer.scene import compose
from producer.sources.base import Captured

pytestmark = pytest.mark.timeout(30)


def _jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _noise(w: int, h: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8)  # incompressible


@pytest.mark.parametrize(
    ("size", "max_width", "expect"),
    [((640, 480), 640, (640, 480)), ((1280, 720), 640, (640, 360)), ((320, 240), 640, (320, 240))],
)
def test_pixels_are_resized_to_max_width(size: tuple[int, int], max_width: int, expect: tuple[int, int]) -> None:
    enc = encode(Captured(1, image=compose("mixed", 0, *size)), max_width, 80, 1 << 20)
    assert (enc.width, enc.height) == expect and (enc.source_width, enc.source_height) == size
    assert enc.jpeg.startswith(b"\xff\xd8\xff") and not enc.passthrough and not enc.reencoded
    img = cv2.imdecode(np.frombuffer(enc.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (expect[1], expect[0])


def test_a_cameras_jpeg_that_fits_passes_through_untouched() -> None:
    raw = _jpeg(compose("mixed", 0, 320, 240))
    enc = encode(Captured(1, jpeg=raw), 640, 80, 1 << 20)
    assert enc.passthrough and enc.jpeg is raw and (enc.width, enc.height) == (320, 240)


def test_a_cameras_jpeg_that_is_too_wide_is_reencoded() -> None:
    enc = encode(Captured(1, jpeg=_jpeg(compose("mixed", 0, 1280, 720))), 640, 80, 1 << 20)
    assert not enc.passthrough and (enc.width, enc.height) == (640, 360)


def test_over_the_limit_is_shrunk_until_it_fits() -> None:
    img = _noise(640, 480)
    full = len(_jpeg(img, 90))
    limit = full // 3
    enc = encode(Captured(1, image=img), 640, 90, limit)
    assert enc.reencoded and len(enc.jpeg) <= limit


def test_a_cameras_jpeg_over_the_limit_is_shrunk_too() -> None:
    raw = _jpeg(_noise(320, 240), 95)
    enc = encode(Captured(1, jpeg=raw), 640, 95, len(raw) // 2)
    assert enc.reencoded and len(enc.jpeg) <= len(raw) // 2


def test_hopelessly_large_is_refused() -> None:
    with pytest.raises(FrameTooLarge):
        encode(Captured(1, image=_noise(640, 480)), 640, 80, 2000)


@pytest.mark.parametrize(
    "cap",
    [
        Captured(1, jpeg=b"\xff\xd8\xff\xe0 not really a jpeg"),
        Captured(1, image=np.zeros((4, 4, 4), np.float32)),
    ],
)
def test_undecodable_or_odd_frames_are_encode_errors(cap: Captured) -> None:
    with pytest.raises(EncodeError):
        encode(cap, 640, 80, 1 << 20)


def test_grey_frames_become_colour() -> None:
    enc = encode(Captured(1, image=np.full((120, 160), 128, np.uint8)), 640, 80, 1 << 20)
    assert (enc.width, enc.height) == (160, 120)


def test_captured_holds_exactly_one_payload() -> None:
    with pytest.raises(ValueError):
        Captured(1)
    with pytest.raises(ValueError):
        Captured(1, image=np.zeros((2, 2, 3), np.uint8), jpeg=b"x")
