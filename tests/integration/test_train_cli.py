"""`maskwatch train` end to end on a tiny VOC set: a new version appears under a watching model server, which swaps
it in and answers Contract 2 with three classes; the version carries its validation report; --resume re-exports
from the checkpoints without training again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_status_pb2

from maskwatch.model_api import ASSETS_EXTRA, OUT_MULTICLASS_SCORES, VALIDATION_DIR, ModelClient, parse_outputs
from maskwatch.procs import version_states, wait_for
from model import tuned
from serving.server import ModelServer
from tests.integration.serving_fixtures import build_model, start_server
from tests.voc_fixtures import write_voc
from training.cli import train_main
from training.eval.cli import eval_main

pytestmark = pytest.mark.slow  # minutes: started first (tests/conftest.py)

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
POLL = ("--file_system_poll_wait_seconds", "0.2", "--max_num_load_retries", "0")
QUICK = ["--epochs", "1", "--classifier-epochs", "1", "--batch-size", "2", "--crop", "96", "--classifier-size", "32"]


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    specs = []
    for i in range(8):
        x, y = int(rng.integers(5, 50)), int(rng.integers(5, 30))
        side = int(rng.integers(18, 36))
        label = ("with_mask", "without_mask", "mask_weared_incorrect")[i % 3]
        specs.append((f"im{i}", (112, 84), [(label, (x, y, x + side, y + side))]))
    return write_voc(tmp_path / "voc", specs, seed=7)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ModelServer]:
    build_model(tmp_path / "models" / "mask_detector", 1)  # a cheap stand-in for the running version
    server = start_server("--model_base_path", str(tmp_path / "models" / "mask_detector"), *POLL)
    yield server
    server.stop(grace=2)


@pytest.mark.timeout(900)
def test_train_exports_a_version_the_server_swaps_in(
    voc: Path, server: ModelServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models"
    installed = tmp_path / "weights"
    # --fps-frames 0: the validation report's timing is not what this test checks (eval_main below times one frame)
    argv = ["--data", str(voc), "--out", str(out), "--val-fraction", "0.25", "--fps-frames", "0", *QUICK]
    assert train_main([*argv, "--install-weights", str(installed)]) == 0

    version = out / "mask_detector" / "2"  # the next free number
    assert (version / "saved_model.pb").is_file()
    validation = json.loads((version / ASSETS_EXTRA / VALIDATION_DIR / "report.json").read_text())
    assert validation["split"] == "val" and validation["images"] == 2
    assert set(validation["classes"]) == {"with_mask", "without_mask", "mask_worn_incorrectly", "face"}
    assert validation["compliance_error"]["min_score"] == 0.5  # what the operator reads, at the worker's operating point
    text = (version / ASSETS_EXTRA / VALIDATION_DIR / "report.md").read_text()
    assert "## Compliance error at the operating point" in text and "not cross-validated" in text
    assert (version / ASSETS_EXTRA / VALIDATION_DIR / "pr.png").is_file()
    assert not list((out / "mask_detector").glob(".export-*"))  # staging gone
    manifest = tuned.Manifest.read(installed)
    tuned.verify(installed, manifest)
    assert manifest.classifier_size == 32 and manifest.training["detector"]["epochs"] == 1
    # the classifier also learnt "not a face" from the detector's candidates, and the served graph uses it
    assert manifest.face_output and isinstance(manifest.training["classifier"]["not_faces"], int)

    target = f"127.0.0.1:{server.grpc_port}"
    wait_for(lambda: version_states(target).get(2) == AVAILABLE, 180, "version 2 to be served")
    client = ModelClient(target, timeout_s=60)
    try:
        info = client.load_metadata()
        assert info.version == 2 and info.input_name == "images"
        frame = cv2.imencode(".jpg", cv2.imread(str(voc / "images" / "im0.jpg")))[1].tobytes()
        answer = client.predict([frame])
        (detections,) = parse_outputs(answer, 1)
    finally:
        client.close()
    assert all(d.label in {"with_mask", "without_mask", "mask_worn_incorrectly"} for d in detections.items)
    assert OUT_MULTICLASS_SCORES not in answer  # the worker asks for Contract 2's outputs only
    # an evaluation asks for every face's score for every class too (background + 3 columns), and gets it over gRPC
    evaluating = ModelClient(target, timeout_s=60, optional_outputs=(OUT_MULTICLASS_SCORES,))
    try:
        evaluating.load_metadata()
        assert evaluating.predict([frame])[OUT_MULTICLASS_SCORES].shape == (1, 100, 4)
    finally:
        evaluating.close()
    report_dir = tmp_path / "eval"
    eval_argv = ["--data", str(voc), "--serving", target, "--split", "all", "--out", str(report_dir), "--fps-frames", "1"]
    assert eval_main([*eval_argv, "--bootstrap", "0"]) == 0
    through_server = json.loads((report_dir / "report.json").read_text())
    assert through_server["model"] == f"{target}/mask_detector/2" and through_server["images"] == 8
    # the server's part is done: stopped now, it does not load versions 3 and 5 beside their exports (2 cores)
    server.stop(grace=0)

    # resume: the checkpoints are complete, so the same weights are exported again as version 3, untrained
    capfd.readouterr()
    assert train_main([*argv, "--resume", "--version", "3"]) == 0
    text = capfd.readouterr().err
    assert "detector resumed" in text and "classifier resumed" in text
    assert "detector epoch=" not in text and "classifier epoch=" not in text
    again = tuned.Manifest.read(out / ".train" / "weights")
    assert again.files == manifest.files  # byte-identical weights
    # resuming with other settings is refused rather than mixing two runs
    assert train_main([*argv, "--resume", "--epochs", "2", "--version", "4"]) == 2
    assert not (out / "mask_detector" / "4").exists()

    # only the classifier retrained, on the installed weights' detector: the detector comes through unchanged
    capfd.readouterr()
    assert train_main([*argv, "--detector-from", str(installed), "--version", "5", "--classifier-seed", "3"]) == 0
    text = capfd.readouterr().err
    assert "detector kept" in text and "detector epoch=" not in text and "classifier epoch=" in text
    assert "figures flattered" not in text  # the same split the detector trained on
    kept = out / ".train" / "weights"
    before, after = tuned.read_arrays(installed / tuned.DETECTOR_FILE), tuned.read_arrays(kept / tuned.DETECTOR_FILE)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    classifier_before = tuned.read_arrays(installed / tuned.CLASSIFIER_FILE)
    classifier_after = tuned.read_arrays(kept / tuned.CLASSIFIER_FILE)
    assert not all(np.array_equal(classifier_before[k], classifier_after[k]) for k in classifier_before)
    record = tuned.Manifest.read(kept).training["detector"]
    assert record["from"] == str(installed.resolve()) and record["epochs"] == 1  # how that detector was trained
    assert (out / "mask_detector" / "5" / "saved_model.pb").is_file()
    # a directory without weights is refused with its name, before any training
    capfd.readouterr()
    assert train_main([*argv, "--detector-from", str(tmp_path / "nowhere"), "--version", "6"]) == 2
    assert "detector weights unusable" in capfd.readouterr().err and not (out / "mask_detector" / "6").exists()
