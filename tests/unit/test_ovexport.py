"""The OpenVINO conversion's graph rewrite: a -inf Pad before a max pool folded into the pool's own padding."""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from model.ovexport import fold_pool_padding

LOWEST = float(np.finfo(np.float32).min)


def padded_pool(pad_value: float, pads_end: tuple[int, int, int, int] = (0, 0, 1, 1)) -> ov.Model:
    """x [1,2,6,7] -> Pad(value) -> 3x3 stride-2 VALID MaxPool, as model.ssd writes Caffe's round-up pooling."""
    x = ops.parameter([1, 2, 6, 7], np.float32, name="x")
    padded = ops.pad(
        x,
        ops.constant(np.zeros(4, np.int64)),
        ops.constant(np.array(pads_end, np.int64)),
        "constant",
        ops.constant(np.float32(pad_value)),
    )
    pool = ops.max_pool(padded, [2, 2], [1, 1], [0, 0], [0, 0], [3, 3], "floor", "valid")
    return ov.Model([pool.output(0)], [x])


def run(model: ov.Model, x: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.array(compiled.create_infer_request().infer({0: x})[compiled.outputs[0]])


def types(model: ov.Model) -> list[str]:
    return [op.get_type_name() for op in model.get_ordered_ops()]


def test_a_lowest_value_pad_becomes_the_pools_padding_with_the_same_outputs() -> None:
    x = np.random.default_rng(0).normal(size=(1, 2, 6, 7)).astype(np.float32) - 5  # all negative: padding must lose
    model = padded_pool(LOWEST)
    want = run(model, x)
    assert fold_pool_padding(model) == 1
    assert "Pad" not in types(model)
    got = run(model, x)
    assert got.shape == want.shape == (1, 2, 3, 3)
    assert np.array_equal(got, want)


@pytest.mark.parametrize(
    ("value", "pads_end"),
    [
        (0.0, (0, 0, 1, 1)),  # a zero pad can win a max: not the pool's padding
        (LOWEST, (0, 1, 1, 1)),  # padding channels is not spatial padding
    ],
)
def test_other_pads_stay(value: float, pads_end: tuple[int, int, int, int]) -> None:
    model = padded_pool(value, pads_end)
    assert fold_pool_padding(model) == 0
    assert "Pad" in types(model)
