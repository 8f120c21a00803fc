"""`maskwatch train`'s options: the one config they turn into, the options refused by name, and the warning when a
kept detector saw this run's validation images."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.cli import _seen_validation, config_of, parse_args
from training.config import ClassifierConfig, DetectorConfig, TrainConfig
from training.data import crop_window


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
    ],
)
def test_bad_options_are_refused_by_name(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--data", "voc", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag", ["--mosaic", "--paste-faces", "--detector-ema", "--crop-margin", "--class-weight-power", "--blur"]
)
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
