"""`maskwatch train --folds` end to end on a tiny VOC set: K models, each measured on the fold it never saw, the
cross-validation report over every image, and a resumed run that keeps finished folds and finishes an interrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.voc_fixtures import write_voc
from training.cli import train_main
from training.eval import report
from training.eval.cli import eval_main

pytestmark = pytest.mark.slow  # minutes: started first (tests/conftest.py)

QUICK = ["--epochs", "1", "--classifier-epochs", "1", "--batch-size", "2", "--crop", "96", "--classifier-size", "32"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(11)
    specs = []
    for i in range(8):
        x, y = int(rng.integers(5, 50)), int(rng.integers(5, 30))
        side = int(rng.integers(18, 36))
        label = ("with_mask", "without_mask", "with_mask", "mask_weared_incorrect")[i % 4]
        specs.append((f"im{i}", (112, 84), [(label, (x, y, x + side, y + side))]))
    return write_voc(tmp_path_factory.mktemp("data") / "voc", specs, seed=3)


def train_argv(voc: Path, out: Path) -> list[str]:
    return ["--data", str(voc), "--out", str(out), "--folds", "2", "--fps-frames", "0", *QUICK]


@pytest.fixture(scope="module")
def trained(voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`maskwatch train --folds 2` run once: its --out directory."""
    out = tmp_path_factory.mktemp("trained") / "models"
    assert train_main(train_argv(voc, out)) == 0
    return out


@pytest.mark.timeout(900)
def test_folds_measure_every_image_once_and_resume_fold_by_fold(
    voc: Path, trained: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = trained
    argv = train_argv(voc, out)
    cv = out / "cross-validation"
    held_out = []
    for k in (1, 2):
        fold = json.loads((cv / f"fold-{k}" / report.JSON_FILE).read_text())
        assert fold["split"] == f"fold-{k} of 2 (held out)" and fold["images"] == 4
        assert fold["compliance_error"]["min_score"] == 0.5  # the operator's error is in every fold's report
        held_out += report.ImageDetections.from_json((cv / f"fold-{k}" / report.DETECTIONS_FILE).read_text()).names
    assert sorted(held_out) == [f"im{i}" for i in range(8)]  # each image measured once, by the model that never saw it
    # the two faces worn incorrectly are shared out, one a fold
    truths = [report.ImageDetections.from_json((cv / f"fold-{k}" / report.DETECTIONS_FILE).read_text()).truths for k in (1, 2)]
    assert [sum(t.labels.count("mask_worn_incorrectly") for t in fold) for fold in truths] == [1, 1]
    summary = json.loads((cv / report.JSON_FILE).read_text())
    assert summary["cross_validation"]["folds"] == 2 and summary["cross_validation"]["images"] == 8
    spread = summary["cross_validation"]["mean_sd"]["AP face"]
    assert len(spread["folds"]) == 2 and spread["mean"] is not None
    assert summary["pooled"]["images"] == 8 and "compliance_error" in summary["pooled"]
    assert "| mAP@0.5, 3 classes, per-class scores |" in (cv / report.MARKDOWN_FILE).read_text()
    assert not (out / "mask_detector").exists()  # the folds' models measure the recipe: none is exported

    # interrupted after the first fold: its report is kept, the second carries on from its complete checkpoints
    (cv / "fold-2" / report.JSON_FILE).unlink()
    capfd.readouterr()
    assert train_main([*argv, "--resume"]) == 0
    text = capfd.readouterr().err
    assert "fold kept fold=1 of=2" in text and "fold kept fold=2" not in text
    assert "detector resumed" in text and "detector epoch=" not in text and "classifier epoch=" not in text
    assert (cv / "fold-2" / report.JSON_FILE).is_file()
    # a finished fold made with other settings is not mixed into the figures
    assert train_main([*argv, "--resume", "--classifier-epochs", "2"]) == 2
    assert "made with other settings (classifier)" in capfd.readouterr().err


def test_folds_refuse_what_they_cannot_do(voc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra in (["--folds", "1"], ["--folds", "--install-weights", "w"], ["--folds", "3", "--version", "2"]):
        with pytest.raises(SystemExit):
            train_main(["--data", str(voc), *extra])
        assert "--folds" in capsys.readouterr().err


def fold_detections(fold_dir: Path) -> report.ImageDetections:
    return report.ImageDetections.from_json((fold_dir / report.DETECTIONS_FILE).read_text())


@pytest.mark.timeout(900)
def test_fold_models_measure_a_way_of_serving_them_by_cross_validation(
    voc: Path, trained: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    common = ["--data", str(voc), "--split", "all", "--folds", "2", "--fps-frames", "0", "--bootstrap", "0"]
    again = tmp_path / "again"
    assert eval_main([*common, "--fold-models", str(trained / ".train"), "--out", str(again)]) == 0
    for k in (1, 2):  # served as trained: each fold's model finds on its held-out images what the training run measured
        ours, theirs = fold_detections(again / f"fold-{k}"), fold_detections(trained / "cross-validation" / f"fold-{k}")
        assert ours.names == theirs.names
        for a, b in zip(ours.preds, theirs.preds, strict=True):
            assert a.labels == b.labels and np.allclose(a.scores, b.scores, atol=1e-6)
    bigger = tmp_path / "bigger"
    argv = [*common, "--fold-models", str(trained / ".train"), "--out", str(bigger), "--canvas", "128x192", "--no-flip-average"]
    assert eval_main(argv) == 0
    fold = json.loads((bigger / "fold-1" / report.JSON_FILE).read_text())
    assert fold["serving"] == {"canvas_hw": [128, 192], "flip_average": False}
    summary = json.loads((bigger / report.JSON_FILE).read_text())
    assert summary["cross_validation"]["images"] == 8 and "canvas_hw=(128, 192)" in summary["model"]
    # models cut another way (another seed, or more folds than were trained) are refused, not measured
    capfd.readouterr()
    assert eval_main([*common, "--seed", "1", "--fold-models", str(trained / ".train"), "--out", str(tmp_path / "x")]) == 2
    assert "fold model of another cut fold=1" in capfd.readouterr().err
    common[common.index("--folds") + 1] = "3"
    assert eval_main([*common, "--fold-models", str(trained / ".train"), "--out", str(tmp_path / "y")]) == 2
    assert "fold model of another cut fold=1" in capfd.readouterr().err


def test_fold_model_options_are_refused_where_they_mean_nothing(voc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra, says in (
        (["--split", "all", "--fold-models", "w"], "--fold-models needs --folds K"),
        (["--split", "all", "--folds", "2", "--fold-models", "w", "--runtime", "openvino"], "--fold-models needs"),
        (["--canvas", "480x640"], "only with --fold-models"),
        (["--split", "all", "--folds", "2", "--fold-models", "w", "--canvas", "480"], "--canvas must look like"),
    ):
        with pytest.raises(SystemExit):
            eval_main(["--data", str(voc), *extra])
        assert says in capsys.readouterr().err
