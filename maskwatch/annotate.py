"""Draws verdicts on an image (a box per face in its class colour, labelled with class and score), for the worker's
latest frames and the dashboard's `/check`; JPEG decode and encode around it."""

from __future__ import annotations

import cv2
import numpy as np

from maskwatch.detections import INCORRECT, WITH_MASK, WITHOUT_MASK, Detections

# BGR colours of the boxes drawn per class.
COLOURS = {WITH_MASK: (80, 175, 76), WITHOUT_MASK: (54, 67, 244), INCORRECT: (0, 152, 255)}


def decode(jpeg: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def draw(image: np.ndarray, dets: Detections) -> np.ndarray:
    """A copy of `image` (BGR) with a labelled box per face; labels stay inside the image."""
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(2, round(min(h, w) / 250))
    for d in dets.items:
        x0, y0, x1, y1 = d.pixel_box(w, h)
        colour = COLOURS[d.label]
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thick)
        text = f"{d.label.replace('_', ' ')} {d.score:.0%}"
        scale = max(0.45, min(h, w) / 900)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y0 - 4 if y0 - th - base - 4 >= 0 else y1 + th + base + 4
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw + 6, ty + base // 2), colour, -1)
        cv2.putText(
            out, text, (x0 + 3, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
        )
    return out


def encode(img: np.ndarray, quality: int = 75) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encode failed")
    return buf.tobytes()
