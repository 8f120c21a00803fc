"""`maskwatch eval` end to end on a tiny VOC set: a fake predictor, then a real SavedModel through `eval_main`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from maskwatch.detections import Detection, Detections
from tests.voc_fixtures import write_voc
from training.eval import dataset, report
from training.eval.cli import eval_main, evaluate_split, parse_args

pytestmark = pytest.mark.timeout(120)


class FakePredictor:
    """Answers from a table keyed by image size; records every call's batch size."""

    name = "fake"

    def __init__(self, answers: dict[tuple[int, int], list[Detection]], jpeg_sizes: dict[bytes, tuple[int, int]]) -> None:
        self.answers = answers
        self.sizes = jpeg_sizes
        self.calls: list[int] = []

    def predict(self, jpegs: Sequence[bytes]) -> list[Detections]:
        self.calls.append(len(jpegs))
        return [Detections(tuple(self.answers.get(self.sizes.get(j, (0, 0)), []))) for j in jpegs]


def test_evaluate_split_on_a_tiny_set(tmp_path: Path) -> None:
    write_voc(
        tmp_path,
        [
            ("a", (100, 50), [("with_mask", (10, 10, 30, 30)), ("without_mask", (60, 10, 90, 40))]),
            ("b", (80, 80), [("mask_weared_incorrect", (0, 0, 40, 40))]),
        ],
    )
    samples = dataset.load(tmp_path)
    sizes = {s.read_jpeg(): (s.width, s.height) for s in samples}
    answers = {
        # normalised (ymin, xmin, ymax, xmax): a's masked face exactly, a's bare face called masked
        (100, 50): [Detection((0.2, 0.1, 0.6, 0.3), 0.9, "with_mask"), Detection((0.2, 0.6, 0.8, 0.9), 0.8, "with_mask")],
        (80, 80): [Detection((0.0, 0.0, 0.5, 0.5), 0.7, "mask_worn_incorrectly")],
    }
    fake = FakePredictor(answers, sizes)
    result, meta = evaluate_split(fake, samples, fps_frames=3)
    assert result.classes["with_mask"].ap == pytest.approx(1.0)
    assert result.classes["without_mask"].ap == pytest.approx(0.0)
    assert result.classes["mask_worn_incorrectly"].ap == pytest.approx(1.0)
    assert result.mean_ap == pytest.approx(2 / 3)
    assert result.classes["face"].ap == pytest.approx(1.0)
    assert result.confusion["without_mask"]["with_mask"] == 1
    assert fake.calls == [1] * 7  # warm-up + 2 images, then warm-up + 3 timed 640x480 frames
    assert set(meta["timing"]) == {"data set images, batch 1", "640x480 frames (≤ 10 faces), batch 1"}

    paths = report.write(result, {**meta, "split": "all", "data": str(tmp_path)}, tmp_path / "out")
    saved = json.loads(paths["json"].read_text())
    assert saved["mean_ap"] == pytest.approx(0.6667, abs=1e-4)
    assert saved["classes"]["without_mask"]["recall"] == 0.0
    assert saved["recall_by_width"]["faces_16_32"] == {"faces": 2, "found": 2, "recall": 1.0}
    text = paths["markdown"].read_text()
    assert "**mAP@0.5 (3 classes): 66.7 (" in text and "| 16–32 | 2 | 2 | 100.0 |" in text
    low, high = saved["ap_interval_95"]["mean_ap"]  # two images: resamples move the mAP widely
    assert low <= 0.6667 <= high and high - low > 0.2 and saved["bootstrap_resamples"] == 200
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # what the operator reads: 2 masked faces of 3 counted against 1 of 3 annotated (a bare face called masked)
    assert saved["compliance_error"]["count_bias"] == {"with_mask": 2.0, "without_mask": 0.0, "mask_worn_incorrectly": 1.0}
    assert saved["compliance_error"]["per_image"]["measured"] == 0  # no image has 4 faces
    assert "## Compliance error at the operating point (score ≥ 0.5)" in text


def _constant_model(path: Path) -> Path:
    """A Contract 2 SavedModel that finds one masked face in the middle of every image."""
    import tensorflow as tf

    class Constant(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            n = tf.shape(images)[0]
            row = tf.constant([[[0.25, 0.25, 0.75, 0.75], [0, 0, 0, 0]]], tf.float32)
            return {
                "detection_boxes": tf.tile(row, [n, 1, 1]),
                "detection_scores": tf.tile(tf.constant([[0.9, 0.0]]), [n, 1]),
                "detection_classes": tf.tile(tf.constant([[1.0, 0.0]]), [n, 1]),
                "num_detections": tf.fill([n], 1.0),
            }

    module = Constant()
    version = path / "mask_detector" / "3"
    tf.saved_model.save(module, str(version), signatures={"serving_default": module.serve})
    return version


def test_eval_main_with_a_saved_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_voc(
        tmp_path / "voc",
        [("a", (40, 40), [("with_mask", (10, 10, 30, 30))]), ("b", (40, 40), [("without_mask", (10, 10, 30, 30))])],
    )
    _constant_model(tmp_path / "models")
    out = tmp_path / "report"
    rc = eval_main(
        ["--data", str(data), "--model", str(tmp_path / "models" / "mask_detector"), "--split", "all", "--out", str(out), "--fps-frames", "2"]
    )
    assert rc == 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["model"].endswith("mask_detector/3")  # the highest version under the base path
    assert saved["classes"]["with_mask"]["ap"] == 1.0 and saved["classes"]["without_mask"]["ap"] == 0.0
    assert saved["mean_ap"] == 0.5 and saved["classes"]["face"]["ap"] == 1.0
    assert saved["timing"]["640x480 frames (≤ 10 faces), batch 1"]["frames"] == 2
    assert "mAP@0.5 (3 classes): 50.0 (" in capsys.readouterr().out


def test_eval_main_reports_a_missing_model(tmp_path: Path) -> None:
    data = write_voc(tmp_path / "voc", [("a", (40, 40), [])])
    assert eval_main(["--data", str(data), "--model", str(tmp_path / "none"), "--split", "all", "--out", str(tmp_path / "r")]) == 2


@pytest.mark.parametrize(
    "argv",
    [["--iou", "1.5"], ["--min-score", "-1"], ["--batch-size", "0"], ["--split", "test"], ["--serving", "x:1", "--model", "m"]],
)
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--data", "d", *argv])


def test_eval_by_folds_measures_a_fixed_model_on_the_folds_train_holds_out(tmp_path: Path) -> None:
    labels = ("with_mask", "without_mask", "mask_weared_incorrect")
    data = write_voc(tmp_path / "voc", [(f"im{i}", (40, 40), [(labels[i % 3], (10, 10, 30, 30))]) for i in range(6)])
    _constant_model(tmp_path / "models")
    out = tmp_path / "report"
    argv = ["--data", str(data), "--model", str(tmp_path / "models" / "mask_detector"), "--out", str(out)]
    assert eval_main([*argv, "--split", "all", "--folds", "3", "--fps-frames", "0", "--bootstrap", "0"]) == 0
    whole = json.loads((out / "report.json").read_text())
    names = []
    for k in (1, 2, 3):
        fold = json.loads((out / "folds" / f"fold-{k}" / "report.json").read_text())
        assert fold["split"] == f"fold-{k} of 3" and fold["images"] == 2
        names += report.ImageDetections.from_json((out / "folds" / f"fold-{k}" / "detections.json").read_text()).names
    assert sorted(names) == [f"im{i}" for i in range(6)]
    summary = json.loads((out / "folds" / "report.json").read_text())
    assert summary["cross_validation"]["folds"] == 3 and summary["pooled"]["images"] == whole["images"] == 6
    assert summary["pooled"]["classes"]["face"]["ap"] == whole["classes"]["face"]["ap"] == 1.0  # every face found
    assert "not trained per fold" in (out / "folds" / "report.md").read_text()
    with pytest.raises(SystemExit):
        eval_main([*argv, "--folds", "3"])  # the folds cut the whole data set: --split all only
