"""Training pieces on tiny inputs: anchor matching, box encoding, crops and flips, class weights, detector and
classifier training that resume from a checkpoint to the same weights as an uninterrupted run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from model import caffe, export, tuned
from model.graph import MaskDetectorModule
from model.ssd import TUNED_LAYERS, TunedFaceDetector, anchor_boxes, decode_boxes, encode_boxes
from tests.voc_fixtures import write_voc
from training import classifier as cls_train
from training import data
from training import detector as det_train
from training.config import ClassifierConfig, DetectorConfig
from training.eval import dataset

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def test_anchor_layout_and_count() -> None:
    layer = TUNED_LAYERS[0]
    boxes = anchor_boxes((2, 3), (16, 24), layer)
    assert boxes.shape == (2 * 3 * len(layer.widths), 4)
    # location-major: the first location's anchors share a centre of (4, 4) px
    centre = (boxes[: len(layer.widths), :2] + boxes[: len(layer.widths), 2:]) / 2 * [24, 16]
    np.testing.assert_allclose(centre, [[4, 4]] * len(layer.widths))
    widths = (boxes[:3, 2] - boxes[:3, 0]) * 24
    np.testing.assert_allclose(widths, layer.widths)


def test_encode_is_the_inverse_of_decode() -> None:
    priors = np.array([[0.1, 0.1, 0.3, 0.35], [0.5, 0.4, 0.6, 0.9]], np.float32)
    boxes = np.array([[0.12, 0.08, 0.33, 0.3], [0.45, 0.5, 0.7, 0.8]], np.float32)
    offsets = encode_boxes(boxes, priors)
    variances = np.tile([0.1, 0.1, 0.2, 0.2], (2, 1)).astype(np.float32)
    np.testing.assert_allclose(decode_boxes(offsets, priors, variances).numpy(), boxes, atol=1e-6)


def test_anchor_targets_positive_ignored_and_best_anchor() -> None:
    priors = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [40, 40, 50, 50]], np.float32)
    norm = priors / 64
    # a face on anchor 0, a face overlapping anchor 1 only a little (its best anchor all the same), a tiny face
    faces = np.array([[0, 0, 10, 11], [24, 0, 34, 10], [41, 41, 46, 46]], np.float32)  # the last: 5 px, IoU 0.25
    labels, offsets = data.anchor_targets(faces, priors, norm, 64)
    assert labels.tolist() == [1, 1, 0, -1]
    np.testing.assert_allclose(decode_boxes(offsets[:1], norm[:1], np.tile([[0.1, 0.1, 0.2, 0.2]], (1, 1))).numpy()[0] * 64, faces[0], atol=1e-4)


def test_random_crop_moves_boxes_with_the_pixels() -> None:
    rng = np.random.default_rng(1)
    bgr = np.zeros((60, 80, 3), np.uint8)
    bgr[20:30, 40:50] = 255
    image = data.Image("x", bgr, np.array([[40, 20, 50, 30]], np.float32), ("with_mask",))
    for _ in range(20):
        canvas, boxes = data.random_crop(image, rng, 64, (0.8, 1.25))
        assert canvas.shape == (64, 64, 3)
        if len(boxes):
            x0, y0, x1, y1 = np.round(boxes[0]).astype(int)
            inside = canvas[max(y0, 0) + 2 : y1 - 2, max(x0, 0) + 2 : x1 - 2].mean()
            assert inside > canvas.mean()  # the white square is where the box says


def test_class_weights_favour_rare_classes() -> None:
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    w = data.class_weights(labels, 3, power=1.0)
    assert w[2] > w[1] > w[0]
    assert np.sum(w[labels]) / len(labels) == pytest.approx(1.0)
    np.testing.assert_allclose(data.class_weights(labels, 3, power=0.0), 1.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> list[data.Image]:
    root = tmp_path_factory.mktemp("voc")
    specs = [
        (f"im{i}", (96, 80), [("with_mask", (10 + 5 * i, 10, 34 + 5 * i, 36)), ("without_mask", (50, 30, 80, 64))])
        for i in range(4)
    ]
    return data.read_images(dataset.load(write_voc(root, specs)))


def _detector() -> TunedFaceDetector:
    sources = export.default_sources()
    return TunedFaceDetector(caffe.load(sources.prototxt, sources.caffemodel), (96, 96))


def test_detector_resumes_to_the_same_weights(tiny: list[data.Image], tmp_path: Path) -> None:
    # a learning rate high enough that the weights move: a resumed run that lost its optimiser state would end elsewhere
    config = replace(DetectorConfig(), epochs=2, batch_size=2, crop=96, learning_rate=1e-2)
    straight = _detector()
    det_train.train_detector(straight, tiny, config, tmp_path / "a", resume=False)

    class Interrupted(Exception):
        pass

    def stop_after_first(epoch: int, figures: dict[str, float]) -> None:
        assert np.isfinite(figures["cls_loss"]) and np.isfinite(figures["loc_loss"])
        raise Interrupted

    first = _detector()
    with pytest.raises(Interrupted):
        det_train.train_detector(first, tiny, config, tmp_path / "b", resume=False, on_epoch=stop_after_first)
    resumed = _detector()
    epochs: list[int] = []
    det_train.train_detector(resumed, tiny, config, tmp_path / "b", resume=True, on_epoch=lambda e, f: epochs.append(e))
    assert epochs == [2]
    a, b = straight.variables_by_name(), resumed.variables_by_name()
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-4, err_msg=key)
    assert not np.allclose(a["lateral_fc7/kernel"].numpy(), 0.0)  # trained, not left at its initial zeros
    boxes, scores, num = resumed(tf.zeros([1, 96, 96, 3]))
    assert boxes.shape[0] == 1 and int(num[0]) <= resumed.params.keep_top_k


def test_classifier_trains_from_the_h5_and_round_trips_its_weights(tiny: list[data.Image], tmp_path: Path) -> None:
    patches, labels = data.face_patches(tiny)
    assert patches.shape == (8, data.PATCH_PX, data.PATCH_PX, 3) and sorted(set(labels.tolist())) == [0, 1]
    config = replace(ClassifierConfig(), epochs=1, batch_size=4, size=32)
    model = tuned.build_classifier(config.size, 3)
    copied = cls_train.init_from_h5(model, export.load_classifier(export.default_sources().classifier))
    assert copied > 100  # the whole MobileNetV2 plus the dense layers
    figures = cls_train.train_classifier(model, patches, labels, config, tmp_path / "c", resume=False, val=(patches, labels))
    assert len(figures["val_recall"]) == 3 and figures["val_recall"][2] is None
    again = tuned.build_classifier(config.size, 3)
    tuned.load_classifier_arrays(again, tuned.classifier_arrays(model))
    x = tf.random.uniform([2, 32, 32, 3], -1, 1)
    np.testing.assert_allclose(again(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-6)


def test_training_graph_computes_what_the_served_graph_does() -> None:
    detector = _detector()
    x = tf.random.uniform([1, 96, 128, 3], -100, 100, seed=1)
    served = detector.heads(x, training=False)
    trained = detector.heads(x, training=True)
    for a, b in zip(served[:2], trained[:2], strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(served[2], trained[2])


@pytest.mark.parametrize(
    ("image_hw", "canvas_hw", "max_upscale", "size"),
    [
        ((300, 400), (480, 640), 1.0, (300, 400)),  # never upscaled past max_upscale
        ((300, 400), (480, 640), 2.0, (480, 640)),  # fills the canvas when allowed
        ((480, 640), (360, 480), 1.0, (360, 480)),  # shrunk to fit
        ((400, 301), (480, 640), 1.5, (480, 361)),  # portrait: height decides
    ],
)
def test_letterbox_size(
    image_hw: tuple[int, int], canvas_hw: tuple[int, int], max_upscale: float, size: tuple[int, int]
) -> None:
    from model.graph import letterbox_size

    assert tuple(letterbox_size(tf.constant(image_hw), canvas_hw, max_upscale).numpy()) == size


def test_context_boxes_are_squares_about_the_face() -> None:
    from model.graph import context_boxes

    # a 20x40 (w x h) face at x 10..30, y 20..60 in a 100x200 (h x w) image, margin 0.25 -> 60 px square
    out = context_boxes(tf.constant([[0.2, 0.05, 0.6, 0.15]]), tf.constant([[100, 200]]), 0.25).numpy()[0]
    np.testing.assert_allclose(out * [100, 200, 100, 200], [10, -10, 70, 50], atol=1e-4)


class _FixedDetector(tf.Module):
    """Finds one face at a fixed place of its 64x64 input."""

    input_hw = (64, 64)
    params = caffe.DetectionParams(2, 0, 0.45, 10, 5, 0.01)

    def prior_boxes(self) -> np.ndarray:
        return np.array([[0.25, 0.125, 0.5, 0.375]], np.float32)  # the face it finds: 16 px

    def __call__(self, blob: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        n = tf.shape(blob)[0]
        box = tf.constant([[[0.25, 0.125, 0.5, 0.375]] + [[0.0] * 4] * 4])  # xyxy: x 16..32, y 8..24 px
        return tf.tile(box, [n, 1, 1]), tf.tile(tf.constant([[0.9, 0, 0, 0, 0]]), [n, 1]), tf.fill([n], 1)


def _fixed_module(
    classifier: Callable[..., tf.Tensor], face_threshold: float = 0.5, face_output: bool = False, flip_average: bool = False
) -> MaskDetectorModule:
    """The fixed detector (score 0.9) with `classifier` (3 classes, then a face output with `face_output`),
    letterboxed at scale 1 at most, crops with context."""
    return MaskDetectorModule(
        _FixedDetector(),
        classifier,
        face_threshold=face_threshold,
        max_detections=3,
        classifier_size=16,
        class_ids=(1, 2, 3),
        crop_margin=0.2,
        letterbox=True,
        max_upscale=1.0,
        face_output=face_output,
        flip_average=flip_average,
    )


def _fixed_classes(x: tf.Tensor, training: bool = False) -> tf.Tensor:
    """A classifier that answers classes 0.1 / 0.2 / 0.7 for every crop."""
    return tf.tile(tf.constant([[0.1, 0.2, 0.7]]), [tf.shape(x)[0], 1])


def test_flip_average_is_the_mean_over_each_crop_and_its_mirror_image() -> None:
    def by_side(x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Class 1 (0.8) when a crop's left half is the brighter, else class 2 (0.7)."""
        half = x.shape[2] // 2
        left = tf.reduce_mean(x[:, :, :half], axis=[1, 2, 3]) > tf.reduce_mean(x[:, :, half:], axis=[1, 2, 3])
        return tf.where(left[:, tf.newaxis], tf.constant([[0.8, 0.1, 0.1]]), tf.constant([[0.2, 0.7, 0.1]]))

    # the fixed face is x 16..32 of the 64x64 input: its left half white, its right half black
    pixels = np.zeros([64, 64, 3], np.uint8)
    pixels[:, :24] = 255
    jpeg = tf.io.encode_jpeg(tf.constant(pixels), quality=100).numpy()
    module = _fixed_module(by_side)  # held: `serve` keeps only a weak reference to it
    plain = module.serve(tf.constant([jpeg]))
    assert plain["detection_classes"].numpy()[0, 0] == 1.0
    np.testing.assert_allclose(plain["detection_multiclass_scores"].numpy()[0, 0, 1:], [0.72, 0.09, 0.09], atol=1e-6)
    # mirrored, the crop reads as class 2: the mean is (0.5, 0.4, 0.1), still class 1 but at 0.5
    flipping = _fixed_module(by_side, flip_average=True)
    averaged = flipping.serve(tf.constant([jpeg]))
    assert averaged["detection_classes"].numpy()[0, 0] == 1.0
    np.testing.assert_allclose(averaged["detection_multiclass_scores"].numpy()[0, 0, 1:], [0.45, 0.36, 0.09], atol=1e-6)
    # counted as a face at the face score either way: hesitating over the class does not hide the face
    np.testing.assert_allclose([out["detection_scores"].numpy()[0, 0] for out in (plain, averaged)], [0.9, 0.9], atol=1e-6)


def test_letterboxed_module_maps_boxes_back_to_each_image() -> None:
    module = _fixed_module(_fixed_classes)
    wide = tf.io.encode_jpeg(tf.zeros([32, 48, 3], tf.uint8)).numpy()  # fits at scale 1: 48x32 of the 64x64 input
    big = tf.io.encode_jpeg(tf.zeros([128, 64, 3], tf.uint8)).numpy()  # shrunk by 2 to 32x64
    out = module.serve(tf.constant([wide, big]))
    boxes = out["detection_boxes"].numpy()
    # in pixels of the detector input the face is y 8..24, x 16..32
    np.testing.assert_allclose(boxes[0, 0] * [32, 48, 32, 48], [8, 16, 24, 32], atol=1e-4)
    np.testing.assert_allclose(boxes[1, 0] * [128, 64, 128, 64], [16, 32, 48, 64], atol=1e-4)
    assert out["detection_classes"].numpy()[:, 0].tolist() == [3.0, 3.0]
    np.testing.assert_allclose(out["detection_scores"].numpy()[:, 0], [0.9, 0.9], atol=1e-6)
    assert out["num_detections"].numpy().tolist() == [1.0, 1.0]


def test_a_large_image_is_decoded_downscaled_to_what_the_networks_use() -> None:
    """The fixed module's networks use 64x64 (its canvas; its 16 px crops of a 16 px face need no more): a 512x256
    image is decoded at 1/8 scale (libjpeg's DCT scaling), a 64x48 one at full size; boxes stay normalised."""
    module = _fixed_module(_fixed_classes)
    assert module.decode_floor_hw == (64, 64)
    large = tf.io.encode_jpeg(tf.zeros([256, 512, 3], tf.uint8)).numpy()
    small = tf.io.encode_jpeg(tf.zeros([48, 64, 3], tf.uint8)).numpy()
    _, padded, sizes = module.decode(tf.constant([large, small]))
    assert sizes.numpy().tolist() == [[32, 64], [48, 64]]
    assert padded.shape == (2, 48 + 2, 64 + 2, 3)  # the batch's decoded size, framed by the crop border
    boxes = module.serve(tf.constant([large]))["detection_boxes"].numpy()
    # the face is y 8..24, x 16..32 of the detector input, which the decoded 32x64 image fills at scale 1
    np.testing.assert_allclose(boxes[0, 0] * [256, 512, 256, 512], [64, 128, 192, 256], atol=1e-3)


def _face_module(face_threshold: float, sure: float = 0.9) -> MaskDetectorModule:
    """The fixed detector (score 0.9) and a classifier with a face output that calls bright crops faces (`sure`)
    and dark ones not (0.01); classes 0.1 / 0.2 / 0.7 either way."""

    def classifier(x: tf.Tensor, training: bool = False) -> tf.Tensor:
        bright = tf.reduce_mean(x, axis=[1, 2, 3]) > 0.0  # crops arrive scaled to -1..1
        p_face = tf.where(bright, sure, 0.01)[:, tf.newaxis]
        return tf.concat([_fixed_classes(x), p_face], axis=-1)

    return _fixed_module(classifier, face_threshold, face_output=True)


def test_face_output_rescores_candidates_and_drops_what_is_no_face() -> None:
    white = tf.io.encode_jpeg(tf.fill([64, 64, 3], tf.constant(255, tf.uint8))).numpy()
    black = tf.io.encode_jpeg(tf.zeros([64, 64, 3], tf.uint8)).numpy()
    module = _face_module(face_threshold=0.5)  # held: `serve` keeps only a weak reference to it
    out = module.serve(tf.constant([white, black]))
    # white: face score (0.9 + 0.9) / 2 = 0.9, class 3 (0.7); black: (0.9 + 0.01) / 2 = 0.455 < 0.5, dropped
    assert out["num_detections"].numpy().tolist() == [1.0, 0.0]
    np.testing.assert_allclose(out["detection_face_scores"].numpy()[:, 0], [0.9, 0.0], atol=1e-6)
    np.testing.assert_allclose(out["detection_scores"].numpy()[:, 0], [0.9, 0.0], atol=1e-6)
    assert out["detection_classes"].numpy()[0, 0] == 3.0
    # every class's score for the face, TF Object Detection API layout: background, then classes 1, 2, 3
    multiclass = out["detection_multiclass_scores"].numpy()
    assert multiclass.shape == (2, 3, 4)
    np.testing.assert_allclose(multiclass[0, 0], [0.1, 0.9 * 0.1, 0.9 * 0.2, 0.9 * 0.7], atol=1e-6)
    assert not multiclass[1].any() and not multiclass[0, 1:].any()
    # a threshold under both keeps the dark candidate with its lowered score
    lenient = _face_module(face_threshold=0.05)
    low = lenient.serve(tf.constant([black]))
    np.testing.assert_allclose(low["detection_face_scores"].numpy()[0, 0], (0.9 + 0.01) / 2, atol=1e-6)


def test_second_stage_lifts_a_candidate_under_the_face_threshold_that_it_is_sure_of() -> None:
    white = tf.io.encode_jpeg(tf.fill([64, 64, 3], tf.constant(255, tf.uint8))).numpy()
    # the detector's 0.9 is under the threshold 0.92 but over half of it: the classifier sees it and is sure (0.99)
    module = _face_module(face_threshold=0.92, sure=0.99)
    out = module.serve(tf.constant([white]))
    assert out["num_detections"].numpy().tolist() == [1.0]
    np.testing.assert_allclose(out["detection_scores"].numpy()[0, 0], (0.9 + 0.99) / 2, atol=1e-6)
    # without a second stage the threshold applies to the detector's score
    plain = _fixed_module(_fixed_classes, 0.92)
    assert plain.serve(tf.constant([white]))["num_detections"].numpy().tolist() == [0.0]


def test_not_face_patches_are_the_candidates_that_miss_every_face(tiny: list[data.Image]) -> None:
    image = tiny[0]  # faces at x 10..34, y 10..36 and x 50..80, y 30..64
    candidates = np.array([[11, 10, 35, 36], [52, 32, 80, 62], [0, 60, 20, 80], [40, 0, 60, 20]], np.float32)
    patches = data.not_face_patches([image], [candidates])
    assert patches.shape == (2, data.PATCH_PX, data.PATCH_PX, 3)
    rgb = image.bgr[:, :, ::-1]
    np.testing.assert_array_equal(patches[0], data.context_patch(np.ascontiguousarray(rgb), candidates[2]))
    assert data.not_face_patches([image], [np.zeros((0, 4), np.float32)]).shape[0] == 0


def test_classifier_learns_a_face_output_from_not_face_patches(tiny: list[data.Image], tmp_path: Path) -> None:
    faces, labels = data.face_patches(tiny)
    not_faces = np.zeros((4, data.PATCH_PX, data.PATCH_PX, 3), np.uint8)
    patches = np.concatenate([faces, not_faces])
    all_labels = np.concatenate([labels, np.full(4, 3, np.int32)])
    config = replace(ClassifierConfig(), epochs=1, batch_size=4, size=32)
    plain = tuned.build_classifier(config.size, 3)
    with pytest.raises(ValueError, match="face output"):
        cls_train.train_classifier(plain, patches, all_labels, config, tmp_path / "p", resume=False)
    model = tuned.build_classifier(config.size, 3, face_output=True)
    assert model.output_shape == (None, 4) and cls_train.has_face_output(model)
    cls_train.init_from_h5(model, export.load_classifier(export.default_sources().classifier))
    figures = cls_train.train_classifier(model, patches, all_labels, config, tmp_path / "c", resume=False, val=(faces, labels))
    assert len(figures["val_recall"]) == 3 and 0.0 <= figures["val_face_recall"] <= 1.0
    probs = model(tf.random.uniform([3, 32, 32, 3], -1, 1), training=False).numpy()
    np.testing.assert_allclose(probs[:, :3].sum(axis=1), 1.0, atol=1e-5)  # classes: a softmax; the face: a sigmoid
    assert np.all((probs[:, 3] > 0) & (probs[:, 3] < 1))


def test_mining_maps_the_served_detectors_boxes_to_image_pixels(tmp_path: Path) -> None:
    from training import negatives

    samples = dataset.load(write_voc(tmp_path / "voc", [("a", (48, 32), []), ("b", (64, 128), [])]))
    found = negatives.candidates(_FixedDetector(), samples, max_upscale=1.0, min_score=0.5, max_score=1.0)
    # the fixed face is at x 16..32, y 8..24 of the 64x64 input; "a" fits at scale 1, "b" is shrunk by 2
    np.testing.assert_allclose(found[0], [[16, 8, 32, 24]], atol=1e-3)
    np.testing.assert_allclose(found[1], [[32, 16, 64, 48]], atol=1e-3)
    assert [len(b) for b in negatives.candidates(_FixedDetector(), samples, 1.0, min_score=0.95)] == [0, 0]
    # a candidate the detector is sure of (0.9) is more likely a face nobody annotated than not: it is left out
    assert [len(b) for b in negatives.candidates(_FixedDetector(), samples, 1.0, min_score=0.5, max_score=0.85)] == [0, 0]
    assert [len(b) for b in negatives.candidates(_FixedDetector(), samples, 1.0, min_score=0.5, max_score=0.95)] == [1, 1]
