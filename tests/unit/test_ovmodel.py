"""The OpenVINO runtime's numpy steps against the TensorFlow ops of serving.graph they stand in for."""

from __future__ import annotations

import json

import numpy as np
import pytest
import simplejpeg
import tensorflow as tf

from maskwatch.model_api import OUT_BOXES, OUT_CLASSES, OUT_MULTICLASS_SCORES, OUT_NUM, OUT_SCORES
from serving import graph
from serving.ovmodel import (
    ModelFormatError,
    PipelineConfig,
    assemble,
    compact,
    context_box,
    crop,
    decode_jpeg,
    detector_input,
    frame_for_crops,
    image_boxes,
    letterbox_size,
)
from serving.parity import Parity, compare

CANVAS = (384, 512)


def config(**changes: object) -> PipelineConfig:
    base = dict(
        canvas_hw=CANVAS,
        max_upscale=2.0,
        classifier_size=96,
        crop_margin=0.15,
        class_ids=(1, 2, 3),
        face_output=True,
        flip_average=True,
        face_threshold=0.1,
        max_detections=5,
        nms_threshold=0.4,
        top_k=400,
        keep_top_k=200,
        confidence_threshold=0.05,
        variances=(0.1, 0.1, 0.2, 0.2),
    )
    return PipelineConfig(**{**base, **changes})  # type: ignore[arg-type]


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = tf.image.resize(rng.uniform(0, 255, (h // 8 + 1, w // 8 + 1, 3)), (h, w)).numpy()
    return np.clip(smooth + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("hw", [(480, 640), (227, 400), (100, 90), (1080, 1920), (384, 512), (1, 3000)])
def test_letterbox_size_is_the_graphs(hw: tuple[int, int]) -> None:
    want = graph.letterbox_size(tf.constant(hw), CANVAS, 2.0).numpy().tolist()
    assert list(letterbox_size(hw, CANVAS, 2.0)) == want


@pytest.mark.parametrize("hw", [(480, 640), (227, 400), (150, 120)])
def test_decode_and_detector_input_match_the_graph(hw: tuple[int, int]) -> None:
    jpeg = simplejpeg.encode_jpeg(photo(*hw), quality=90, colorspace="RGB")
    rgb = decode_jpeg(jpeg)
    tf_rgb = tf.io.decode_jpeg(jpeg, channels=3, dct_method="INTEGER_ACCURATE").numpy()
    assert np.array_equal(rgb, tf_rgb)
    blob, size = detector_input(rgb, CANVAS, 2.0)
    want = graph.detector_blob(graph.resize_like_opencv(tf_rgb, size)).numpy()
    assert blob.shape == (*CANVAS, 3)
    # rounding a bilinear sample that lands on .5 may go either way in float32: at most one level, rarely
    inside = blob[: size[0], : size[1]]
    assert np.abs(inside - want).max() <= 1.0
    assert np.mean(inside != want) < 1e-3
    assert not blob[size[0] :].any() and not blob[:, size[1] :].any()


def test_undecodable_bytes_are_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode_jpeg(b"\xff\xd8 not a jpeg")


@pytest.mark.parametrize(
    "box",
    [
        (0.2, 0.3, 0.6, 0.5),  # inside
        (-0.1, -0.2, 0.3, 0.2),  # past the top-left: zeros beyond the replicated edge
        (0.7, 0.8, 1.2, 1.1),  # past the bottom-right
        (0.0, 0.0, 1.0, 1.0),  # the whole image: samples on the replicated edge
        (0.5, 0.5, 0.5001, 0.5002),  # a tiny box: one pixel stretched
    ],
)
def test_crop_is_crop_and_resize_over_the_framed_image(box: tuple[float, float, float, float]) -> None:
    rgb = photo(61, 83, seed=3)
    b = np.asarray(box, np.float32)
    hw = tf.constant([rgb.shape[:2]], tf.int32)
    framed = graph.pad_for_crops(tf.constant(rgb), tf.constant(rgb.shape[:2]))[tf.newaxis]
    boxes = graph.crop_boxes(tf.constant(b[None]), hw, tf.shape(framed)[1:3], 24)
    want = tf.image.crop_and_resize(framed, boxes, [0], [24, 24]).numpy()[0]
    assert np.allclose(crop(frame_for_crops(rgb), rgb.shape[:2], b, 24), want, atol=1e-3)


def test_context_box_is_the_graphs() -> None:
    boxes = np.array([[0.1, 0.2, 0.3, 0.25], [0.5, 0.5, 0.9, 0.7]], np.float32)
    hw = np.array([[480, 640], [227, 400]], np.int32)
    want = graph.context_boxes(tf.constant(boxes), tf.constant(hw), 0.15).numpy()
    got = np.stack([context_box(b, tuple(s), 0.15) for b, s in zip(boxes, hw, strict=True)])
    assert np.allclose(got, want, atol=1e-6)
    assert np.array_equal(context_box(boxes[0], (480, 640), None), boxes[0])


def test_image_boxes_undo_the_letterbox() -> None:
    # a face over the left half of a 400x200 image letterboxed into the top of a 512x384 canvas (scaled to 512x256)
    xyxy = np.array([[0.0, 0.0, 0.5, 256 / 384]], np.float32)
    assert np.allclose(image_boxes(xyxy, (256, 512), CANVAS), [[0.0, 0.0, 1.0, 0.5]])


@pytest.mark.parametrize(
    ("keep", "key", "want"),
    [
        ([True, False, True, True], [0.2, 0.9, 0.7, 0.7], [2, 3, 0, 1]),  # ties keep their order
        ([False, False], [0.5, 0.6], [0, 1]),
    ],
)
def test_compact_is_the_graphs(keep: list[bool], key: list[float], want: list[int]) -> None:
    got = compact(np.array(keep), np.array(key, np.float32), len(keep))
    ref = graph.compact(tf.constant([keep]), tf.constant([key], tf.float32), len(keep)).numpy()[0]
    assert got.tolist() == want == ref.tolist()


def test_assemble_second_stage_and_rows() -> None:
    cfg = config(max_detections=3)
    boxes = np.array([[[0, 0, 0.1, 0.1], [0.2, 0.2, 0.4, 0.4], [0.5, 0.5, 0.6, 0.6]]], np.float32)
    face = np.array([[0.9, 0.12, 0.3]], np.float32)
    keep = np.array([[True, True, False]])
    # classes with_mask, without_mask, incorrect, then the face probability
    probs = np.array([[[0.7, 0.2, 0.1, 0.9], [0.1, 0.8, 0.1, 0.0], [0, 0, 0, 0]]], np.float32)
    out = assemble(boxes, face, keep, probs, cfg)
    # row 0: (0.9 + 0.9) / 2 = 0.9 kept; row 1: (0.12 + 0) / 2 = 0.06 < 0.1 dropped; row 2 was never kept
    assert out[OUT_NUM].tolist() == [1.0]
    assert np.allclose(out[OUT_SCORES][0], [0.9, 0, 0])
    assert out[OUT_CLASSES][0].tolist() == [1.0, 0.0, 0.0]
    assert np.allclose(out[OUT_BOXES][0, 0], boxes[0, 0]) and not out[OUT_BOXES][0, 1:].any()
    assert np.allclose(out[OUT_MULTICLASS_SCORES][0, 0], [0.1, 0.9 * 0.7, 0.9 * 0.2, 0.9 * 0.1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"face_threshold": 0.0}, "face_threshold"),
        ({"max_detections": 300}, "max_detections"),
    ],
)
def test_config_refuses_what_it_cannot_run(change: dict[str, object], message: str) -> None:
    with pytest.raises(ModelFormatError, match=message):
        config(**change)


def test_config_round_trips_and_names_a_missing_field() -> None:
    cfg = config()
    assert PipelineConfig.from_json(cfg.to_json()) == cfg
    raw = json.loads(cfg.to_json())
    del raw["canvas_hw"]
    with pytest.raises(ModelFormatError, match="canvas_hw"):
        PipelineConfig.from_json(json.dumps(raw))


def outputs(rows: list[tuple[tuple[float, float, float, float], float, float]], k: int = 4) -> dict[str, np.ndarray]:
    boxes = np.zeros((1, k, 4), np.float32)
    scores = np.zeros((1, k), np.float32)
    classes = np.zeros((1, k), np.float32)
    for i, (box, score, cls) in enumerate(rows):
        boxes[0, i], scores[0, i], classes[0, i] = box, score, cls
    return {OUT_BOXES: boxes, OUT_SCORES: scores, OUT_CLASSES: classes, OUT_NUM: np.array([len(rows)], np.float32)}


FACE = (0.1, 0.1, 0.3, 0.3)


@pytest.mark.parametrize(
    ("other", "field", "count"),
    [
        ([(FACE, 0.9, 1)], None, 0),
        ([((0.1 + 0.5 / 480, 0.1, 0.3, 0.3), 0.905, 1)], None, 0),  # half a pixel, 0.005: within tolerance
        ([((0.1 + 3 / 480, 0.1, 0.3, 0.3), 0.9, 1)], "unmatched", 1),  # 3 px off
        ([(FACE, 0.92, 1)], "score_differs", 1),
        ([(FACE, 0.9, 2)], "class_differs", 1),
        ([(FACE, 0.9, 1), ((0.6, 0.6, 0.7, 0.7), 0.5, 1)], "extra", 1),
        ([(FACE, 0.9, 1), ((0.6, 0.6, 0.7, 0.7), 0.105, 1)], None, 0),  # a row just over 0.1 may lack a twin
    ],
)
def test_parity_counts_each_kind_of_difference(other: list, field: str | None, count: int) -> None:
    parity = compare(outputs([(FACE, 0.9, 1)]), outputs(other))
    assert parity.rows == 1
    assert parity.ok == (field is None)
    if field is not None:
        assert getattr(parity, field) == count


def test_parity_adds_up_over_batches() -> None:
    parity = Parity()
    for _ in range(3):
        compare(outputs([(FACE, 0.9, 1)]), outputs([(FACE, 0.9, 1)]), parity)
    assert (parity.images, parity.rows, parity.ok) == (3, 3, True)
