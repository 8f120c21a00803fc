"""`maskwatch train`'s options: the one config they turn into, the options refused by name, and the warning when a
kept detector saw this run's validation images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.cli import Refused, _fold_done, _seen_validation, config_of, fold_settings, parse_args
from training.config import ClassifierConfig, DetectorConfig, TrainConfig
from training.data import Image, crop_window, random_crop
from training.eval import report


def test_classifier_seed_leaves_the_split_and_the_detector_seed_alone() -> None:
    config = config_of(parse_args(["--data", "voc", "--classifier-seed", "4"]))
    assert config.seed == 0 and config.detector.seed == 0 and config.classifier.seed == 4
    assert config_of(parse_args(["--data", "voc", "--seed", "2"])).classifier.seed == 2  # by default the run's seed


def test_the_default_options_are_the_recipe_defaults() -> None:
    config = config_of(parse_args(["--data", "voc"]))
    assert config.detector == DetectorConfig() and config.classifier == ClassifierConfig()
    assert config.canvas_hw == (384, 512) and config.work == Path("models/.train")
    assert config_of(parse_args(["--data", "voc", "--work-dir", "w"])).work == Path("w")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--canvas", "480"], "--canvas must look like 480x640"),
        (["--canvas", "16x640"], "--canvas must look like 480x640"),
        (["--version", "0"], "--version must be >= 1"),
        (["--epochs", "0"], "epochs, batch size and threads must be >= 1"),
        (["--crop", "32"], "--crop >= 64"),
        (["--face-threshold", "1"], "--face-threshold must be in (0, 1)"),
        (["--val-fraction", "1"], "--val-fraction must be in (0, 1)"),
        (["--limit", "-1"], "--limit and --fps-frames >= 0"),
        (["--blur", "1.5"], "--blur must be in [0, 1]"),
    ],
)
def test_bad_options_are_refused_by_name(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--data", "voc", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--mosaic", "--paste-faces", "--detector-ema", "--crop-margin", "--class-weight-power"])
def test_options_whose_trials_were_rejected_are_gone(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--data", "voc", flag, "0.5"])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_a_config_made_in_code_is_validated_too() -> None:
    with pytest.raises(ValueError, match="--max-upscale > 0"):
        TrainConfig(data=Path("voc"), max_upscale=0)


def test_a_kept_detector_trained_on_another_split_of_the_same_data_is_flagged(tmp_path: Path) -> None:
    data = tmp_path / "voc"
    data.mkdir()
    trained = {"data": str(data), "split": {"seed": 0, "val_fraction": 0.2, "train": 8, "val": 2}}

    def config(*argv: str) -> TrainConfig:
        return config_of(parse_args(["--detector-from", "w", *argv]))

    assert _seen_validation(trained, config("--data", str(data))) is None
    reason = _seen_validation(trained, config("--data", str(data), "--seed", "1"))
    assert reason is not None and "'seed': 1" in reason and str(data) in reason
    assert _seen_validation(trained, config("--data", str(data), "--val-fraction", "0.3"))
    # another classifier seed keeps the split: nothing to flag
    assert _seen_validation(trained, config("--data", str(data), "--classifier-seed", "5")) is None
    # the site's own frames are another data set: unseen whatever the split
    site = tmp_path / "site"
    site.mkdir()
    assert _seen_validation(trained, config("--data", str(site), "--seed", "9")) is None


def test_the_classifier_crop_stays_inside_the_training_patches() -> None:
    assert crop_window(ClassifierConfig().margin) * 1.2 <= 0.5  # the widest jittered crop still lies within its patch


def test_folds_default_to_one_split_and_to_five_when_asked_without_a_number() -> None:
    assert config_of(parse_args(["--data", "voc"])).folds == 0  # the default run exports one model, as before
    assert config_of(parse_args(["--data", "voc", "--folds"])).folds == 5
    config = config_of(parse_args(["--data", "voc", "--folds", "3", "--out", "o"]))
    assert config.folds == 3 and config.cv_dir == Path("o/cross-validation")


def _textured_image() -> Image:
    pixels = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    return Image("x", pixels, np.array([[10, 10, 50, 60]], np.float32), ("with_mask",))


def _sharpness(bgr: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(bgr, cv2.CV_32F)).mean())


def test_detector_crops_are_defocused_only_when_asked() -> None:
    image = _textured_image()
    for e in range(6):
        plain, plain_boxes = random_crop(image, np.random.default_rng([0, e]), 320, (0.6, 1.7))
        off, off_boxes = random_crop(image, np.random.default_rng([0, e]), 320, (0.6, 1.7), blur=0.0)
        blurred, blurred_boxes = random_crop(image, np.random.default_rng([0, e]), 320, (0.6, 1.7), blur=1.0)
        # blur 0 draws nothing: the default recipe's crops are the crops it had before the option existed
        assert np.array_equal(plain, off) and np.array_equal(plain_boxes, off_boxes)
        # the same window and faces, defocused (the brightness and contrast drawn after it differ)
        assert np.array_equal(plain_boxes, blurred_boxes)
        assert _sharpness(blurred) < 0.6 * _sharpness(plain)


def _fold_made_before_blur_existed(tmp_path: Path) -> Path:
    """A finished fold whose report records the settings of a run from before `--blur` existed."""
    made = fold_settings(config_of(parse_args(["--data", str(tmp_path), "--folds", "5"])))
    del made["detector"]["blur"]
    fold = tmp_path / "fold-1"
    fold.mkdir()
    (fold / report.JSON_FILE).write_text(json.dumps({"training": made}), encoding="utf-8")
    (fold / report.DETECTIONS_FILE).write_text("[]", encoding="utf-8")
    return fold


def test_a_fold_made_before_an_option_existed_resumes_with_it_off(tmp_path: Path) -> None:
    """The shipped recipe's folds (model/cross-validation/) predate `--blur`; they are the same run with it off
    (training.cli.ADDED_SINCE), whatever the option's default becomes."""
    fold = _fold_made_before_blur_existed(tmp_path)
    same = fold_settings(config_of(parse_args(["--data", str(tmp_path), "--folds", "5"])))
    assert _fold_done(fold, same) is True
    other = fold_settings(config_of(parse_args(["--data", str(tmp_path), "--folds", "5", "--blur", "0.3"])))
    with pytest.raises(Refused, match=r"made with other settings \(detector\)"):
        _fold_done(fold, other)
