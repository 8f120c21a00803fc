"""Draws verdicts on a frame (boxes coloured by class, labels) and cuts blurred face crops for violation snapshots."""

from __future__ import annotations

import cv2
import numpy as np

from maskwatch.detections import INCORRECT, WITH_MASK, WITHOUT_MASK, Detection, Detections

COLOURS = {WITH_MASK: (80, 175, 76), WITHOUT_MASK: (54, 67, 244), INCORRECT: (0, 152, 255)}
LABELS = {WITH_MASK: "mask", WITHOUT_MASK: "no mask", INCORRECT: "incorrect"}


def decode(jpeg: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def annotate(img: np.ndarray, dets: Detections) -> np.ndarray:
    out = img.copy()
    h, w = out.shape[:2]
    thick = max(2, w // 320)
    for d in dets.items:
        x0, y0, x1, y1 = d.pixel_box(w, h)
        c = COLOURS[d.label]
        cv2.rectangle(out, (x0, y0), (x1, y1), c, thick)
        text = f"{LABELS[d.label]} {d.score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = max(th + 4, y0)
        cv2.rectangle(out, (x0, ty - th - 4), (x0 + tw + 4, ty), c, -1)
        cv2.putText(out, text, (x0 + 2, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def encode(img: np.ndarray, quality: int = 75) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encode failed")
    return buf.tobytes()


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
