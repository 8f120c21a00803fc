"""The model server's memory per request stays bounded (issue 32), on the real `python -m serving` with the exported
model, in both runtimes: header bombs are refused before anything decodes them, and a batch of 8K frames (the cap
raised to admit them) costs what the frames cost decoded at the size the networks can use (`model/jpegscale.py`:
1/2 scale, 3840x2160), not at their full size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf

from bench.security import PeakRss, header_bomb, large_jpeg
from maskwatch.model_api import OUT_BOXES, OUT_NUM
from tests.integration.serving_fixtures import ServerProcess, predict_request

pytestmark = pytest.mark.timeout(900)

FRAME_HW = (4320, 7680)
CAP = FRAME_HW[0] * FRAME_HW[1]  # --max_image_pixels: 8K frames are admitted
DECODED_HW = (2160, 3840)  # what the shipped model uses of one: 1/2 scale (tests/unit/test_jpegscale.py)
ROWS = 4
# What either runtime may hold per decoded pixel of a batch: the RGB image, the framed copy the crops read and the
# batch's padded stack (3 bytes each), one image's float32 copy at a time; ~10 bytes measured, 20 allowed. Decoded
# at full size, the same 4 frames took the server 893 MB (TensorFlow) and 1102 MB (OpenVINO), over the bound.
BYTES_PER_DECODED_PIXEL = 20
SLACK = 64 * 2**20  # allocator arenas, outputs, gRPC buffers


@pytest.fixture(scope="module", params=["tensorflow", "openvino"])
def server(request: pytest.FixtureRequest, model_base_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    runtime = request.param
    proc = ServerProcess(
        ["--model_base_path", str(model_base_path), "--runtime", runtime, "--max_image_pixels", str(CAP)],
        tmp_path_factory.mktemp(f"memory-{runtime}") / "serving.log",
    )
    try:
        proc.wait_available(timeout=300)
        # warm: the first Predict loads the runtime's code paths and buffers for a frame
        proc.stub().Predict(predict_request([large_jpeg(640, 480)]), timeout=300)
        yield proc
    finally:
        proc.stop()


def peak_rise(server: ServerProcess, jpegs: list[bytes]) -> tuple[float, dict[str, np.ndarray] | grpc.StatusCode]:
    """(peak RSS rise in bytes while one Predict of `jpegs` runs, its outputs or its error code)."""
    with PeakRss({"serving": server.proc.pid}) as rss:
        base = rss.now()["serving"]
        try:
            response = server.stub().Predict(predict_request(jpegs), timeout=600)
            answer: dict[str, np.ndarray] | grpc.StatusCode = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        except grpc.RpcError as error:
            answer = error.code()
    return (rss.peak["serving"] - base) * 2**20, answer


def test_header_bombs_are_refused_before_decoding(server: ServerProcess) -> None:
    bombs = [header_bomb(20000, 20000), header_bomb(12000, 12000)]
    rise, answer = peak_rise(server, bombs)
    assert answer == grpc.StatusCode.INVALID_ARGUMENT
    assert rise < 64 * 2**20, f"refusing {len(bombs)} header bombs took {rise / 2**20:.0f} MB"


def test_a_batch_of_8k_frames_costs_its_downscaled_pixels(server: ServerProcess) -> None:
    """4 x 7680x4320 frames in one Predict: answered, and the server's peak RSS rises by less than 4 x 3840x2160
    decoded pixels (a quarter of the cap each) x 20 bytes + 64 MB = 727 MB."""
    jpeg = large_jpeg(FRAME_HW[1], FRAME_HW[0])
    rise, answer = peak_rise(server, [jpeg] * ROWS)
    assert isinstance(answer, dict), answer
    assert answer[OUT_BOXES].shape[0] == ROWS and answer[OUT_NUM].tolist() == [answer[OUT_NUM][0]] * ROWS
    assert answer[OUT_NUM][0] >= 1, "the astronaut's face"
    bound = ROWS * DECODED_HW[0] * DECODED_HW[1] * BYTES_PER_DECODED_PIXEL + SLACK
    assert rise < bound, f"{ROWS} 8K frames took {rise / 2**20:.0f} MB, over {bound / 2**20:.0f} MB"
