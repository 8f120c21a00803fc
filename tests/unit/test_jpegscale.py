"""Decode sizing (model/jpegscale.py): which frames the model server decodes downscaled, to what size, and that
both runtimes' decoders (TensorFlow's in the graph, simplejpeg in the OpenVINO runtime) give the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import simplejpeg
import tensorflow as tf

from model import graph, jpegscale
from model.ovmodel import decode_jpeg

CANVAS = (384, 512)


def anchors(width_px: float, aspect: float = 1.1, canvas_hw: tuple[int, int] = CANVAS) -> np.ndarray:
    """Two prior boxes about the canvas centre: `width_px` wide (height = width x aspect) and twice that."""
    h, w = canvas_hw
    boxes = []
    for side in (width_px, 2 * width_px):
        half_w, half_h = side / 2 / w, side * aspect / 2 / h
        boxes.append([0.5 - half_w, 0.5 - half_h, 0.5 + half_w, 0.5 + half_h])
    return np.asarray(boxes, np.float32)


# The shipped model: 12 px anchors (13.2 tall) on a 512x384 canvas; 96 px crops with a 15 % margin. A 12 px face's
# crop is 1.3 x 12 = 15.6 canvas px: the classifier uses the image up to 96 / 15.6 = 6.15 times the canvas.
SHIPPED_FLOOR = jpegscale.decode_floor(anchors(12.0), CANVAS, 96, 0.15)


def test_the_shipped_models_floor() -> None:
    assert jpegscale.smallest_box_px(anchors(12.0), CANVAS) == 12.0
    assert SHIPPED_FLOOR == (2364, 3151)


@pytest.mark.parametrize(
    ("frame_hw", "decoded_hw"),
    [
        # ordinary frames, 4K and anything up to the default pixel cap: full size
        ((480, 640), (480, 640)),
        ((720, 1280), (720, 1280)),
        ((1080, 1920), (1080, 1920)),
        ((2160, 3840), (2160, 3840)),
        ((2160, 4096), (2160, 4096)),
        # at 1/2 a 4200x4200 frame would be 2100 px tall: below the 2364 the letterbox's height needs
        ((4200, 4200), (4200, 4200)),
        # 8K, landscape or portrait: 1/2
        ((4320, 7680), (2160, 3840)),
        ((7680, 4320), (3840, 2160)),
        ((6300, 6300), (3150, 3150)),
        ((12000, 12000), (3000, 3000)),
        # the long side decides: a 20000 px wide strip fits the canvas by its width
        ((2000, 20000), (500, 5000)),
        ((20000, 2000), (2500, 250)),
        # 1/8 is the smallest libjpeg scale: a larger frame stays above the floor
        ((65000, 65000), (8125, 8125)),
        # sides round up
        ((4729, 6303), (2365, 3152)),
    ],
)
def test_decoded_size_of_a_frame(frame_hw: tuple[int, int], decoded_hw: tuple[int, int]) -> None:
    ratio = jpegscale.decode_ratio(frame_hw, SHIPPED_FLOOR, letterbox=True)
    assert jpegscale.scaled_size(frame_hw, ratio) == decoded_hw
    assert graph.decode_ratios(tf.constant([frame_hw]), SHIPPED_FLOOR, True).numpy().tolist() == [ratio]


@pytest.mark.parametrize(
    ("frame_hw", "ratio"),
    [
        ((4320, 7680), 1),  # squashed, both axes must keep 3168 px: 4320 / 2 = 2160 is too short
        ((7000, 7000), 2),
        ((13000, 13000), 4),
    ],
)
def test_a_squashed_input_needs_both_axes(frame_hw: tuple[int, int], ratio: int) -> None:
    """The pretrained model squashes the image into 300x300 and crops the box alone at 224 px: its smallest prior
    is 21.2 px (30 / sqrt 2), so both axes must keep 224 / 21.2 x 300 = 3168 px."""
    floor = jpegscale.decode_floor(anchors(30 / np.sqrt(2), aspect=2.0, canvas_hw=(300, 300)), (300, 300), 224, None)
    assert floor == (3168, 3168)
    assert jpegscale.decode_ratio(frame_hw, floor, letterbox=False) == ratio
    assert graph.decode_ratios(tf.constant([frame_hw]), floor, False).numpy().tolist() == [ratio]


def test_the_floor_is_never_below_the_canvas() -> None:
    """Big faces and a small classifier: the detector's input still needs the whole canvas."""
    assert jpegscale.decode_floor(anchors(200.0), CANVAS, 32, 0.0) == CANVAS


def photo(h: int, w: int) -> bytes:
    rng = np.random.default_rng(h * w)
    smooth = tf.image.resize(rng.uniform(0, 255, (h // 16 + 1, w // 16 + 1, 3)), (h, w)).numpy()
    pixels = np.clip(smooth + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    return simplejpeg.encode_jpeg(pixels, quality=90, colorspace="RGB")


@pytest.mark.parametrize(
    ("frame_hw", "decoded_hw"),
    [((150, 130), (150, 130)), ((300, 400), (150, 200)), ((480, 640), (120, 160)), ((1999, 801), (250, 101))],
)
def test_both_runtimes_decode_the_same_pixels(frame_hw: tuple[int, int], decoded_hw: tuple[int, int]) -> None:
    """At a small floor (100x150), so that small frames take every scale: 1, 1/2, 1/4, 1/8."""
    jpeg = photo(*frame_hw)
    floor = (100, 150)
    ratio = graph.decode_ratios(tf.constant([frame_hw]), floor, True)[0]
    in_graph = graph.decode_scaled(tf.constant(jpeg), ratio).numpy()
    assert in_graph.shape[:2] == decoded_hw
    assert np.array_equal(decode_jpeg(jpeg, floor), in_graph)
