"""The worker, unchanged, against a TF-Object-Detection-API style export (uint8 `input_tensor`): same verdicts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from kafka import KafkaProducer

from maskwatch.frames import Frame
from maskwatch.procs import free_port, wait_for
from maskwatch.store import Store
from producer.scene import compose
from tests.integration.worker_fixtures import ROOT, Procs, env_for

pytestmark = pytest.mark.slow  # minutes: started first (tests/conftest.py)

FRAMES = 4


@pytest.fixture(scope="module")
def tfod_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tfod")
    subprocess.run([sys.executable, "-m", "model.tfod", "--out", str(out)], check=True, cwd=ROOT, timeout=600)
    return out / "mask_detector"


@pytest.mark.timeout(400)
def test_worker_reads_metadata_and_sends_pixels(
    kafka: str, redis_url: str, tfod_model: Path, names: dict[str, str], topic: str, logs_dir: Path
) -> None:
    port = free_port()
    procs = Procs(logs_dir, env_for(kafka, redis_url, f"127.0.0.1:{port}", names))
    store = Store.from_url(redis_url, names["redis_prefix"])
    try:
        procs.serving("tfod-serving", port, tfod_model)
        procs.worker("w-tfod")
        p = KafkaProducer(bootstrap_servers=[kafka])
        for i, t in enumerate(np.linspace(0, 5, FRAMES)):
            ok, buf = cv2.imencode(".jpg", compose("mixed", float(t)), [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            f = Frame("tfod-cam", buf.tobytes(), i, int(__import__("time").time() * 1000), 640, 480, "test")
            p.send(topic, key=f.key, value=f.jpeg, headers=f.headers())
        p.flush()
        p.close()
        wait_for(lambda: store.totals("tfod-cam").frames >= FRAMES, 240, "frames counted through the pixels model", interval_s=0.5)
        c = store.totals("tfod-cam")
        assert (c.frames, c.with_mask, c.without_mask, c.invalid) == (FRAMES, FRAMES, FRAMES, 0), c
        log = (logs_dir / "w-tfod.log").read_text()
        assert "input=input_tensor" in log
    finally:
        procs.stop_all()
        store.close()
