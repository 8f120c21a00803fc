"""The benchmark's frames: 640×480 JPEGs with 1–4 faces, composed from the demo scene's real portraits."""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from producer.scene import backdrop, tile

WIDTH, HEIGHT = 640, 480
JPEG_QUALITY = 80  # the producer's default camera quality


def compose_faces(faces: int, t: float = 0.0, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A frame with `faces` (1–4) people, every other one masked, drifting with `t` like the demo scene.

    One or two people stand in one row (as in producer.scene.compose); three or four in a 2×2 grid.
    """
    if not 1 <= faces <= 4:
        raise ValueError(f"faces must be 1..4, got {faces}")
    frame = backdrop(width, height)
    rows = 1 if faces <= 2 else 2
    cols = 1 if faces == 1 else 2
    cell_w, cell_h = width // cols, height // rows
    tile_h = int(cell_h * (0.78 if rows == 1 else 0.96))
    for i in range(faces):
        person = tile(i, masked=i % 2 == 0, height=tile_h)
        th, tw = person.shape[:2]
        tw = min(tw, cell_w)
        r, c = divmod(i, cols)
        dx = int(8 * math.sin(t * 0.7 + i * 2.1))
        dy = int(4 * math.sin(t * 1.1 + i))
        x = max(0, min(width - tw, c * cell_w + (cell_w - tw) // 2 + dx))
        y = max(0, min(height - th, r * cell_h + (cell_h - th) // 2 + dy))
        frame[y : y + th, x : x + tw] = person[:th, :tw]
    return frame


def encode(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encode failed")
    return buf.tobytes()


@functools.cache
def frame_set(count: int = 32) -> tuple[tuple[bytes, int], ...]:
    """`count` distinct JPEG frames as (jpeg, faces drawn), faces cycling 1, 2, 3, 4."""
    return tuple((encode(compose_faces(1 + i % 4, t=i * 0.37)), 1 + i % 4) for i in range(count))


def jpegs(count: int = 32) -> list[bytes]:
    return [j for j, _ in frame_set(count)]
