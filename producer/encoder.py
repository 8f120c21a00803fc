"""Captured frame → the JPEG that goes to Kafka: resized to the camera's max width, within the size limit.

A camera's own JPEG that already fits is passed through untouched (no second lossy encode, no
encode cost). A frame over the byte limit is re-encoded at lower quality, then smaller, and only
dropped when even that does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from producer.sources.base import Captured

MIN_QUALITY = 30
# (quality delta, scale) tried in order once a frame is over the limit
SHRINK_STEPS: tuple[tuple[int, float], ...] = ((-15, 1.0), (-30, 1.0), (-30, 0.75), (-30, 0.5), (-40, 0.35))


class EncodeError(ValueError):
    """The frame could not be decoded (a camera's broken JPEG) or encoded."""


class FrameTooLarge(ValueError):
    """Even the smallest re-encoding is over the byte limit."""


@dataclass(frozen=True)
class Encoded:
    jpeg: bytes
    width: int
    height: int
    source_width: int
    source_height: int
    reencoded: bool  # shrunk to fit the byte limit
    passthrough: bool  # the camera's own JPEG, sent as it came


def resize_to(img: np.ndarray, max_width: int) -> np.ndarray:
    h, w = img.shape[:2]
    if w <= max_width:
        return img
    return cv2.resize(img, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)


def _encode(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise EncodeError("JPEG encoding failed")
    return buf.tobytes()


def encode(cap: Captured, max_width: int, quality: int, max_bytes: int) -> Encoded:
    """Raises EncodeError or FrameTooLarge; never returns a JPEG over `max_bytes`."""
    img = cap.image
    if cap.jpeg is not None:
        img = cv2.imdecode(np.frombuffer(cap.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise EncodeError("the camera's JPEG does not decode")
    assert img is not None
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        if img.ndim == 2 and img.dtype == np.uint8:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        else:
            raise EncodeError(f"unsupported frame shape {img.shape} {img.dtype}")
    sh, sw = img.shape[:2]
    if cap.jpeg is not None and sw <= max_width and len(cap.jpeg) <= max_bytes:
        return Encoded(cap.jpeg, sw, sh, sw, sh, reencoded=False, passthrough=True)
    img = resize_to(img, max_width)
    jpeg = _encode(img, quality)
    if len(jpeg) <= max_bytes:
        h, w = img.shape[:2]
        return Encoded(jpeg, w, h, sw, sh, reencoded=False, passthrough=False)
    for dq, scale in SHRINK_STEPS:
        small = img if scale == 1.0 else cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        jpeg = _encode(small, max(MIN_QUALITY, quality + dq))
        if len(jpeg) <= max_bytes:
            h, w = small.shape[:2]
            return Encoded(jpeg, w, h, sw, sh, reencoded=True, passthrough=False)
    raise FrameTooLarge(f"{len(jpeg)} bytes after shrinking, limit {max_bytes}")
