"""Cross-validation figures from fold reports: mean ± sd per figure, pooled AP over every held-out image, and the
fold reports refused when they do not fit together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.eval import crossval, report
from training.eval.cli import eval_main
from training.eval.metrics import Predicted, Truth, evaluate

pytestmark = pytest.mark.timeout(60)

WM, WO = "with_mask", "without_mask"
FACE_A, FACE_B = [0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]


def _fold(root: Path, name: str, labels: tuple[str, str], min_score: float = 0.5) -> Path:
    """One image with a masked face (A) and a bare one (B); the model finds both, calling them `labels`."""
    truth = Truth(np.array([FACE_A, FACE_B]), (WM, WO))
    pred = Predicted(np.array([FACE_A, FACE_B]), np.array([0.9, 0.8]), labels)
    detections = report.ImageDetections((name,), (truth,), (pred,))
    result = evaluate([truth], [pred], min_score=min_score)
    report.write(result, {"model": "m", "data": "voc", "split": name}, root / name, detections)
    return root / name


def test_fold_reports_give_mean_sd_and_a_pooled_map(tmp_path: Path) -> None:
    right = _fold(tmp_path, "a", (WM, WO))  # mAP 1.0
    wrong = _fold(tmp_path, "b", (WM, WM))  # the bare face called masked: with_mask AP 1.0, without_mask 0: mAP 0.5
    cv = crossval.aggregate([right, wrong])
    m = cv.spreads["mAP@0.5, 3 classes, per-class scores"]
    assert m.values == (1.0, 0.5) and m.mean == pytest.approx(0.75) and m.sd == pytest.approx(np.std([1, 0.5], ddof=1))
    # pooled: with_mask's three detections rank a's and b's masked faces first (AP 1); without_mask finds 1 of 2 (AP 0.5)
    assert cv.images == 2 and cv.pooled.classes[WM].ap == pytest.approx(1.0) and cv.pooled.classes[WO].ap == pytest.approx(0.5)
    assert cv.pooled.mean_ap == pytest.approx(0.75) and cv.pooled.compliance is not None
    assert cv.spreads[f"count bias {WO} (counted ÷ true)"].values == (1.0, 0.0)
    assert cv.spreads["compliance error, one image: mean abs"].mean is None  # no image has 4 faces

    out = tmp_path / "cv"
    assert eval_main(["--aggregate", str(right), str(wrong), "--out", str(out), "--bootstrap", "0"]) == 0
    saved = json.loads((out / "report.json").read_text())
    spread = saved["cross_validation"]["mean_sd"]["mAP@0.5, 3 classes, per-class scores"]
    assert spread["folds"] == [1.0, 0.5] and spread["mean"] == 0.75 and spread["sd"] == pytest.approx(0.3536, abs=1e-4)
    assert saved["pooled"]["mean_ap"] == 0.75 and saved["cross_validation"]["folds"] == 2
    text = (out / "report.md").read_text()
    assert "| mAP@0.5, 3 classes, per-class scores | 75.0 ± 35.4 | 100.0 | 50.0 |" in text
    assert "## Pooled over the folds:" in text and "### Compliance error at the operating point" in text


def test_fold_reports_that_do_not_fit_are_refused(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    a = _fold(tmp_path, "a", (WM, WO))
    with pytest.raises(ValueError, match="at least 2"):
        crossval.aggregate([a])
    again = tmp_path / "again"
    again.mkdir()
    for f in (report.JSON_FILE, report.DETECTIONS_FILE):
        (again / f).write_bytes((a / f).read_bytes())
    with pytest.raises(ValueError, match="image a is in .* not folds of one data set"):
        crossval.aggregate([a, again])
    other_point = _fold(tmp_path / "other", "b", (WM, WO), min_score=0.3)
    with pytest.raises(ValueError, match="differ in min_score"):
        crossval.aggregate([a, other_point])
    (other_point / report.DETECTIONS_FILE).unlink()
    with pytest.raises(ValueError, match=f"{other_point}: not a fold report with its detections"):
        crossval.aggregate([a, other_point])
    assert eval_main(["--aggregate", str(a), str(other_point), "--out", str(tmp_path / "cv")]) == 2
    assert "fold reports unusable" in capfd.readouterr().err


def test_detections_round_trip(tmp_path: Path) -> None:
    truth = Truth(np.array([FACE_A]), (WM,), (True,))
    pred = Predicted(np.array([FACE_A, FACE_B]), np.array([0.9, 0.2]), (WM, WO), np.array([[0.9, 0.05, 0.0], [0.1, 0.2, 0.0]]))
    detections = report.ImageDetections(("x",), (truth,), (Predicted.empty(),))
    back = report.ImageDetections.from_json(report.ImageDetections(("x", "y"), (truth, truth), (pred, Predicted.empty())).to_json())
    assert back.names == ("x", "y") and back.truths[0].difficult == (True,)
    np.testing.assert_allclose(back.preds[0].class_scores, pred.class_scores)  # type: ignore[arg-type]
    assert back.preds[1].labels == () and back.preds[1].class_scores is None
    assert report.ImageDetections.from_json(detections.to_json()).preds[0].boxes.shape == (0, 4)
    with pytest.raises(ValueError, match="image z"):
        report.ImageDetections.from_json(json.dumps({"images": [{"image": "z", "truth": {}, "predicted": {}}]}))


def test_eval_wants_data_or_fold_reports(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["--data", "voc", "--aggregate", "a", "b"]):
        with pytest.raises(SystemExit):
            eval_main(argv)
        assert "give --data (to evaluate a model) or --aggregate" in capsys.readouterr().err
