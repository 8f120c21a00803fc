"""`maskwatch train`'s options: what each turns into, and the warning when a kept detector saw this run's
validation images."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.train.cli import MAX_CROP_MARGIN, _configs, _seen_validation, parse_args
from serving.train.data import crop_window


def test_classifier_seed_leaves_the_split_and_the_detector_seed_alone() -> None:
    args = parse_args(["--data", "voc", "--classifier-seed", "4"])
    detector, classifier = _configs(args)
    assert args.seed == 0 and detector.seed == 0 and classifier.seed == 4
    assert _configs(parse_args(["--data", "voc", "--seed", "2"]))[1].seed == 2  # by default the run's seed


def test_bad_options_are_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--data", "voc", "--mosaic", "1.5"])
    assert exit_info.value.code == 2 and "--mosaic must be in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--data", "voc", "--detector-ema", "1"])
    assert exit_info.value.code == 2 and "--detector-ema must be in [0, 1)" in capsys.readouterr().err


def test_detector_weight_average_is_off_by_default_and_carried_when_asked() -> None:
    assert _configs(parse_args(["--data", "voc"]))[0].ema == 0.0
    assert _configs(parse_args(["--data", "voc", "--detector-ema", "0.998"]))[0].ema == 0.998


def test_pasting_faces_is_off_by_default_and_refused_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert _configs(parse_args(["--data", "voc"]))[0].paste == 0.0
    assert _configs(parse_args(["--data", "voc", "--paste-faces", "0.5"]))[0].paste == 0.5
    with pytest.raises(SystemExit):
        parse_args(["--data", "voc", "--paste-faces", "2"])
    assert "--paste-faces must be in [0, 1]" in capsys.readouterr().err


def test_a_kept_detector_trained_on_another_split_of_the_same_data_is_flagged(tmp_path: Path) -> None:
    data = tmp_path / "voc"
    data.mkdir()
    trained = {"data": str(data), "split": {"seed": 0, "val_fraction": 0.2, "train": 8, "val": 2}}
    same = parse_args(["--data", str(data), "--detector-from", "w"])
    assert _seen_validation(trained, same) is None
    other_seed = parse_args(["--data", str(data), "--detector-from", "w", "--seed", "1"])
    reason = _seen_validation(trained, other_seed)
    assert reason is not None and "'seed': 1" in reason and str(data) in reason
    assert _seen_validation(trained, parse_args(["--data", str(data), "--detector-from", "w", "--val-fraction", "0.3"]))
    # another classifier seed keeps the split: nothing to flag
    assert _seen_validation(trained, parse_args(["--data", str(data), "--detector-from", "w", "--classifier-seed", "5"])) is None
    # the site's own frames are another data set: unseen whatever the split
    site = tmp_path / "site"
    site.mkdir()
    assert _seen_validation(trained, parse_args(["--data", str(site), "--detector-from", "w", "--seed", "9"])) is None


def test_crop_margin_reaches_the_classifier_and_stays_inside_the_training_patches() -> None:
    assert _configs(parse_args(["--data", "voc", "--crop-margin", "0.3"]))[1].margin == 0.3
    with pytest.raises(SystemExit):
        parse_args(["--data", "voc", "--crop-margin", "0.6"])
    assert crop_window(MAX_CROP_MARGIN) * 1.2 <= 0.5  # the widest jittered crop still lies within its patch
