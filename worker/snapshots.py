"""Violation snapshots: a face's sharpness, and its crop (blurred when the site asks) as a JPEG."""

from __future__ import annotations

import cv2
import numpy as np

from maskwatch.annotate import encode
from maskwatch.detections import Detection


def sharpness(img: np.ndarray, d: Detection) -> float:
    """Variance of the Laplacian over the face box: higher is sharper (0 for an empty box)."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = d.pixel_box(w, h)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return 0.0
    grey = cv2.cvtColor(img[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def crop(img: np.ndarray, d: Detection, blur: bool, margin: float = 0.15) -> bytes | None:
    h, w = img.shape[:2]
    x0, y0, x1, y1 = d.pixel_box(w, h)
    mx, my = int((x1 - x0) * margin), int((y1 - y0) * margin)
    x0, y0, x1, y1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    face = img[y0:y1, x0:x1]
    if blur:
        k = max(3, ((x1 - x0) // 4) | 1)
        face = cv2.GaussianBlur(face, (k, k), 0)
    return encode(face, 80)
