"""Server-side batching: BatchingParameters parsing and the batch scheduler, with a recording fake model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from serving import batching
from serving.batching import (
    QUEUE_FULL_MESSAGE,
    BatchingOptions,
    BatchScheduler,
    load_batching_parameters,
    parse_batching_parameters,
)
from serving.status import ServingError

REPO_BATCHING = Path(__file__).resolve().parents[2] / "serving" / "batching.config"


class RecordingModel:
    """Doubles x, records every batch it is run on; can be held until released."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[int] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        self.release.wait(10)
        x = inputs["x"]
        self.batches.append(int(x.shape[0]))
        return {"y": x * 2, "n": np.full(x.shape[0], x.shape[0])}


@pytest.mark.timeout(10)
def test_parse_text_proto() -> None:
    options = parse_batching_parameters(
        """
        max_batch_size { value: 8 }
        batch_timeout_micros { value: 1500 }
        max_enqueued_batches { value: 3 }
        num_batch_threads { value: 2 }
        thread_pool_name { value: "pool" }
        allowed_batch_sizes: 2
        allowed_batch_sizes: 8
        """
    )
    assert options == BatchingOptions(
        max_batch_size=8,
        batch_timeout_micros=1500,
        max_enqueued_batches=3,
        num_batch_threads=2,
        thread_pool_name="pool",
        allowed_batch_sizes=(2, 8),
    )


@pytest.mark.timeout(10)
def test_omitted_fields_take_tf_serving_defaults() -> None:
    options = parse_batching_parameters("max_batch_size { value: 4 }")
    assert (options.max_batch_size, options.batch_timeout_micros, options.max_enqueued_batches) == (4, 0, 10)
    assert load_batching_parameters("").max_batch_size == 1000


@pytest.mark.timeout(10)
def test_repo_batching_config_parses() -> None:
    options = load_batching_parameters(str(REPO_BATCHING))
    assert options.max_batch_size == batching.MAX_ROWS_PER_RUN and options.num_batch_threads == 2  # batched runs not split again


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2 allowed_batch_sizes: 8",
            "monotonically increasing",
        ),
        ("max_batch_size { value: 8 } allowed_batch_sizes: 4", "must equal max_batch_size"),
        ("num_batch_threads { value: 0 }", "num_batch_threads must be positive"),
        ("max_batch_size: 8", 'Expected "{"'),
        ("no_such_field { value: 1 }", "no_such_field"),
    ],
)
def test_refused_parameters(text: str, message: str) -> None:
    with pytest.raises(Exception, match=message):
        parse_batching_parameters(text)


def _poll(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def _x(rows: int, start: float = 0.0) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + rows, dtype=np.float32)}


@pytest.mark.timeout(20)
def test_concurrent_calls_are_merged_and_split_back() -> None:
    model = RecordingModel()
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=64, batch_timeout_micros=200_000, num_batch_threads=1))
    barrier = threading.Barrier(16)

    def call(i: int) -> dict[str, np.ndarray]:
        barrier.wait()
        return scheduler.submit("m", _x(2, start=10 * i), model)

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, range(16)))
    finally:
        scheduler.close()
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.array([20 * i, 20 * i + 2], dtype=np.float32))
    assert sum(model.batches) == 32
    assert len(model.batches) < 16
    assert scheduler.stats.largest_batch_tasks > 1
    assert scheduler.stats.tasks == 16 and scheduler.stats.batches == len(model.batches)


@pytest.mark.timeout(20)
def test_full_batch_runs_without_waiting_for_timeout() -> None:
    model = RecordingModel()
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=4, batch_timeout_micros=60_000_000, num_batch_threads=1))
    try:
        result = scheduler.submit("m", _x(4), model)
    finally:
        scheduler.close()
    assert model.batches == [4]
    np.testing.assert_array_equal(result["n"], [4, 4, 4, 4])


@pytest.mark.timeout(20)
def test_full_queue_fails_fast_with_unavailable() -> None:
    model = RecordingModel(hold=True)
    scheduler = BatchScheduler(
        BatchingOptions(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1, num_batch_threads=1)
    )
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(scheduler.submit, "m", _x(1), model)
        assert model.entered.wait(5)
        queued = pool.submit(scheduler.submit, "m", _x(1), model)
        _poll(lambda: scheduler.stats.tasks == 2)
        with pytest.raises(ServingError) as raised:
            scheduler.submit("m", _x(1), model)
        model.release.set()
        running.result(5)
        queued.result(5)
    scheduler.close()
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert raised.value.message == QUEUE_FULL_MESSAGE
    assert scheduler.stats.rejected_full == 1


@pytest.mark.timeout(10)
def test_task_larger_than_max_batch_size_is_invalid() -> None:
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=2, num_batch_threads=1))
    try:
        with pytest.raises(ServingError) as raised:
            scheduler.submit("m", _x(5), RecordingModel())
    finally:
        scheduler.close()
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.message == "Task size 5 is larger than maximum batch size 2"


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": np.array(1.0, np.float32)}, "at least one dimension"),
        ({"x": np.zeros(2), "z": np.zeros(3)}, "equal 0th-dimension size"),
    ],
)
def test_unbatchable_inputs(inputs: dict[str, np.ndarray], message: str) -> None:
    scheduler = BatchScheduler(BatchingOptions(num_batch_threads=1))
    try:
        with pytest.raises(ServingError, match=message):
            scheduler.submit("m", inputs, RecordingModel())
    finally:
        scheduler.close()


@pytest.mark.timeout(10)
def test_padding_to_allowed_batch_size() -> None:
    model = RecordingModel()
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, allowed_batch_sizes=(4, 8), num_batch_threads=1))
    try:
        result = scheduler.submit("m", _x(3, start=1), model)
    finally:
        scheduler.close()
    assert model.batches == [4]
    np.testing.assert_array_equal(result["y"], [2, 4, 6])
    assert scheduler.stats.padded_rows == 4 and scheduler.stats.rows == 3


@pytest.mark.timeout(10)
def test_model_error_reaches_every_caller_of_the_batch() -> None:
    def failing(_inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "bad jpeg")

    scheduler = BatchScheduler(BatchingOptions(num_batch_threads=1))
    try:
        with pytest.raises(ServingError, match="bad jpeg"):
            scheduler.submit("m", _x(1), failing)
    finally:
        scheduler.close()


@pytest.mark.timeout(10)
def test_output_not_batched_is_refused() -> None:
    def scalar_output(_inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"total": np.array(1.0, np.float32)}

    scheduler = BatchScheduler(BatchingOptions(num_batch_threads=1))
    try:
        with pytest.raises(ServingError) as raised:
            scheduler.submit("m", _x(2), scalar_output)
    finally:
        scheduler.close()
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.timeout(10)
def test_different_keys_and_shapes_are_not_merged() -> None:
    model = RecordingModel()
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=16, batch_timeout_micros=100_000, num_batch_threads=2))
    try:
        with ThreadPoolExecutor(3) as pool:
            a = pool.submit(scheduler.submit, "a", _x(1), model)
            b = pool.submit(scheduler.submit, "b", _x(1), model)
            c = pool.submit(scheduler.submit, "a", {"x": np.zeros((1, 2), np.float32)}, model)
            for future in (a, b, c):
                future.result(5)
    finally:
        scheduler.close()
    assert sorted(model.batches) == [1, 1, 1]


@pytest.mark.timeout(10)
def test_close_runs_queued_calls_then_refuses_new_ones() -> None:
    model = RecordingModel()
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, batch_timeout_micros=30_000_000, num_batch_threads=1))
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(scheduler.submit, "m", _x(2), model)
        _poll(lambda: scheduler.stats.tasks == 1)
        scheduler.close()
        np.testing.assert_array_equal(waiting.result(5)["y"], [0, 2])
    with pytest.raises(ServingError) as raised:
        scheduler.submit("m", _x(1), model)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE


# ---- bounded memory per batch: images grouped by size, header bombs refused --------------------------------


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real tiny JPEG whose start-of-frame header announces width x height (a header bomb when large)."""
    import cv2

    raw = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    i = raw.index(b"\xff\xc0")
    return raw[: i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + raw[i + 9 :]


@pytest.mark.parametrize(
    ("sizes", "cap", "groups"),
    [
        pytest.param([(640, 480)] * 4, 640 * 480, [[0, 1, 2, 3]], id="frames alike stay together"),
        pytest.param([(20000, 440), (440, 20000)], 20000 * 440, [[0], [1]], id="wide and tall never pad together"),
        pytest.param([(640, 480), (480, 640), (640, 480)], 640 * 640, [[0, 2, 1]], id="small mix within the cap"),
        pytest.param([(640, 480), (3840, 2160), (640, 480)], 3840 * 2160, [[0, 2, 1]], id="4K pads the others"),
        pytest.param([(100, 100), (4000, 100), (100, 4000)], 4000 * 100, [[0, 1], [2]], id="sorted by height"),
        pytest.param([], 10, [], id="nothing"),
    ],
)
def test_size_groups(sizes: list[tuple[int, int]], cap: int, groups: list[list[int]]) -> None:
    got = batching.size_groups(sizes, cap)
    assert got == groups
    for group in got:
        assert max(sizes[i][0] for i in group) * max(sizes[i][1] for i in group) <= cap


def test_run_by_image_size_splits_and_restores_order() -> None:
    images = np.array([_jpeg_claiming(2000, 200), _jpeg_claiming(200, 2000), _jpeg_claiming(2000, 200)], dtype=object)
    runs: list[int] = []

    def run(arrays: batching.Arrays) -> dict[str, np.ndarray]:
        rows = arrays["images"]
        runs.append(len(rows))
        widths = np.array([batching.image_size(bytes(r)).width for r in rows])  # type: ignore[union-attr]
        return {"w": widths, "k": np.zeros((len(rows), 1 + len(runs)), np.float32)}

    out = batching.run_by_image_size({"images": images}, run, 2000 * 200)
    assert sorted(runs) == [1, 2]
    assert list(out["w"]) == [2000, 200, 2000]
    assert out["k"].shape == (3, 3)  # a group's shorter second dimension is zero-padded


def test_a_large_call_runs_at_most_max_rows_per_run_images_at_a_time() -> None:
    """A Predict of many frames (no batching to bound it) runs in pieces: a model run's memory grows per image."""
    assert batching.size_groups([(640, 480)] * 5, 640 * 480, max_rows=2) == [[0, 1], [2, 3], [4]]
    n = 2 * batching.MAX_ROWS_PER_RUN + 3
    images = np.array([_jpeg_claiming(640, 480 + (i % 2)) for i in range(n)], dtype=object)
    runs: list[int] = []

    def run(arrays: batching.Arrays) -> dict[str, np.ndarray]:
        rows = arrays["images"]
        runs.append(len(rows))
        return {"h": np.array([batching.image_size(bytes(r)).height for r in rows])}  # type: ignore[union-attr]

    out = batching.run_by_image_size({"images": images}, run, 640 * 481)
    assert max(runs) == batching.MAX_ROWS_PER_RUN and sum(runs) == n
    assert list(out["h"]) == [480 + (i % 2) for i in range(n)]  # every row's answer in its place


def test_run_by_image_size_refuses_a_header_bomb_before_running() -> None:
    def run(arrays: batching.Arrays) -> dict[str, np.ndarray]:
        raise AssertionError("must not run")

    images = np.array([_jpeg_claiming(640, 480), _jpeg_claiming(12000, 12000)], dtype=object)
    with pytest.raises(ServingError) as exc:
        batching.run_by_image_size({"images": images}, run, 4096 * 2160)
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT and "12000x12000" in exc.value.message


def test_run_by_image_size_leaves_other_inputs_alone() -> None:
    calls: list[batching.Arrays] = []

    def run(arrays: batching.Arrays) -> dict[str, np.ndarray]:
        calls.append(arrays)
        return {"y": np.zeros(2)}

    pixels = {"input_tensor": np.zeros((2, 4, 4, 3), np.uint8)}
    batching.run_by_image_size(pixels, run, 1)
    strings = {"x": np.array([b"not an image", b"x"], dtype=object)}
    batching.run_by_image_size(strings, run, 1)
    assert calls == [pixels, strings]
