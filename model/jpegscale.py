"""How far the served model decodes a JPEG: the size below which its networks would lose detail they can use, and
the libjpeg DCT scale (1/2, 1/4, 1/8) that decodes a larger image straight to no less than that.

The detector sees the image letterboxed into its canvas; the classifier sees each face's crop (with its context
margin) resampled to `classifier_size` pixels, from the decoded image. The smallest face the detector is built to
find is its smallest prior box; the classifier can use every decoded pixel of that face's crop until the crop holds
`classifier_size` of them. Past that, decoding more pixels only costs memory and time: a 7680x4320 frame is
decoded at 1/2 scale (3840x2160), never at full size. Both runtimes (`model.graph`, in TensorFlow, and
`model.ovmodel`, with simplejpeg) size decoding with these functions, so they decode the same pixels.
"""

from __future__ import annotations

import math

import numpy as np

# libjpeg's DCT scales that tf.io.decode_jpeg offers (its `ratio`), largest first; 1 is full size.
RATIOS = (8, 4, 2)


def smallest_box_px(priors: np.ndarray, canvas_hw: tuple[int, int]) -> float:
    """The shorter side, in canvas pixels, of the smallest of the detector's prior boxes [P,4] (xmin, ymin, xmax,
    ymax, normalised): the smallest face it is built to find. Rounded to 1/1000 px (the boxes are float32)."""
    boxes = np.asarray(priors, np.float64).reshape(-1, 4)
    h, w = canvas_hw
    sides = np.minimum((boxes[:, 3] - boxes[:, 1]) * h, (boxes[:, 2] - boxes[:, 0]) * w)
    return round(float(sides.min()), 3)


def decode_floor(
    priors: np.ndarray, canvas_hw: tuple[int, int], classifier_size: int, crop_margin: float | None
) -> tuple[int, int]:
    """(height, width): decoded to this (on the axis the letterbox fits, or on both axes when squashed), an image
    loses nothing the networks can use. That is the canvas itself (the detector's input) or, when larger, the
    canvas times the magnification at which the smallest face's crop, side (1 + 2 * margin) x that face, holds
    `classifier_size` decoded pixels."""
    crop_px = (1.0 + 2.0 * (crop_margin or 0.0)) * smallest_box_px(priors, canvas_hw)
    need = max(1.0, classifier_size / crop_px)
    return math.ceil(need * canvas_hw[0]), math.ceil(need * canvas_hw[1])


def scaled_size(image_hw: tuple[int, int], ratio: int) -> tuple[int, int]:
    """The size libjpeg decodes an image to at 1/ratio scale (sides rounded up)."""
    return -(-image_hw[0] // ratio), -(-image_hw[1] // ratio)


def decode_ratio(image_hw: tuple[int, int], floor_hw: tuple[int, int], letterbox: bool) -> int:
    """The largest DCT ratio (8, 4, 2, else 1) that decodes an image of image_hw to no less than floor_hw: on
    either axis when letterboxed (the axis the canvas fits decides the scale), on both when squashed."""
    for ratio in RATIOS:
        h, w = scaled_size(image_hw, ratio)
        fits = (h >= floor_hw[0] or w >= floor_hw[1]) if letterbox else (h >= floor_hw[0] and w >= floor_hw[1])
        if fits:
            return ratio
    return 1
