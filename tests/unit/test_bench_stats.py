"""The benchmark's pure arithmetic: percentiles, summaries of repeated runs, rates, per-frame latency matching."""

from __future__ import annotations

import math

import pytest

from bench.stats import (
    Summary,
    frame_latencies,
    growth_pct,
    paired_ratio,
    per_core,
    percentile,
    rate_between,
    rate_in_window,
    scaling_efficiency,
    window_peaks,
)


@pytest.mark.parametrize(
    ("values", "q", "want"),
    [
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # order does not matter
        (list(range(1, 101)), 95, 95.05),
        (list(range(1, 101)), 99, 99.01),
    ],
)
def test_percentile_matches_linear_interpolation(values: list[float], q: float, want: float) -> None:
    assert percentile(values, q) == pytest.approx(want)


def test_percentile_agrees_with_numpy() -> None:
    np = pytest.importorskip("numpy")
    values = [float(x) for x in np.random.default_rng(1).exponential(100, 500)]
    for q in (1, 25, 50, 90, 95, 99, 99.9):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 100.5)])
def test_percentile_refuses_bad_input(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


def test_summary_reports_median_and_range() -> None:
    s = Summary.of([10.0, 30.0, 20.0])
    assert (s.median, s.low, s.high, s.runs) == (20.0, 10.0, 30.0, (10.0, 30.0, 20.0))
    assert s.spread_pct == pytest.approx(100.0)
    assert s.as_dict(1) == {"median": 20.0, "low": 10.0, "high": 30.0, "runs": [10.0, 30.0, 20.0]}


def test_summary_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        Summary.of([])


def test_paired_ratio_takes_the_median_of_round_ratios() -> None:
    # a load drift hits both sides of each round alike: the paired ratios stay at 0.5
    s = paired_ratio([5.0, 10.0, 2.0], [10.0, 20.0, 4.0])
    assert s.median == pytest.approx(0.5)
    assert s.low == s.high == pytest.approx(0.5)


@pytest.mark.parametrize(("nums", "dens"), [([1.0], [1.0, 2.0]), ([], []), ([1.0], [0.0])])
def test_paired_ratio_refuses_bad_pairs(nums: list[float], dens: list[float]) -> None:
    with pytest.raises(ValueError):
        paired_ratio(nums, dens)


def test_rate_between_skips_ramp_and_tail() -> None:
    # slow start (10/s), steady 20/s from t=2 to t=7, tail
    samples = [(0.0, 0), (1.0, 10), (2.0, 20), (3.0, 40), (4.0, 60), (5.0, 80), (6.0, 100), (7.0, 120), (8.0, 125)]
    assert rate_between(samples, 20, 120) == pytest.approx(20.0)


@pytest.mark.parametrize(("lo", "hi"), [(50, 500), (10, 10), (30, 20)])
def test_rate_between_refuses_unreached_or_empty_ranges(lo: float, hi: float) -> None:
    with pytest.raises(ValueError):
        rate_between([(0.0, 0), (1.0, 10), (2.0, 20)], lo, hi)


def test_rate_in_window() -> None:
    samples = [(0.0, 0), (1.0, 5), (2.0, 15), (3.0, 25), (4.0, 28)]
    assert rate_in_window(samples, 1.0, 3.0) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        rate_in_window(samples, 3.5, 3.9)


def test_frame_latencies_match_frames_in_camera_order() -> None:
    sent = {"a": [1000, 1100, 1200], "b": [1050, 1150]}
    updates = [
        (1300, {"a": 2}),  # a's first two frames
        (1400, {"b": 1, "a": 1}),
        (1500, {"b": 1}),
    ]
    lat, unmatched = frame_latencies(sent, updates)
    assert sorted(lat) == sorted([300.0, 200.0, 350.0, 200.0, 350.0])
    assert unmatched == 0


def test_frame_latencies_count_frames_nobody_sent() -> None:
    lat, unmatched = frame_latencies({"a": [0]}, [(10, {"a": 2, "ghost": 1})])
    assert lat == [10.0]
    assert unmatched == 2


def test_frame_latencies_of_nothing() -> None:
    assert frame_latencies({}, []) == ([], 0)


@pytest.mark.parametrize(
    ("fps", "n", "want"),
    [
        ({1: 10.0, 8: 80.0}, 8, 1.0),
        ({1: 10.0, 2: 15.0, 8: 40.0}, 8, 0.5),
        ({1: 10.0, 2: 20.0}, 2, 1.0),
    ],
)
def test_scaling_efficiency(fps: dict[int, float], n: int, want: float) -> None:
    assert scaling_efficiency(fps, n) == pytest.approx(want)


def test_scaling_efficiency_needs_both_ends() -> None:
    with pytest.raises(ValueError):
        scaling_efficiency({2: 20.0, 8: 80.0}, 8)


@pytest.mark.parametrize(("start", "end", "want"), [(100.0, 110.0, 10.0), (100.0, 100.0, 0.0), (200.0, 150.0, -25.0)])
def test_growth_pct(start: float, end: float, want: float) -> None:
    assert growth_pct(start, end) == pytest.approx(want)


def test_growth_from_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        growth_pct(0.0, 5.0)


def _samples(rss: list[float], step_s: float = 60.0) -> list[dict[str, object]]:
    return [{"t_s": i * step_s, "rss_mb": {"broker": v}} for i, v in enumerate(rss)]


@pytest.mark.parametrize(
    ("rss", "after_s", "want"),
    [
        # a sawtooth whose teeth stay level: every window peaks at the same height
        ([100, 300, 100, 300, 100, 300, 100, 300, 100, 300, 100, 300, 100], 0.0, [300.0, 300.0]),
        # a climb: each window's peak is higher
        ([100, 110, 120, 130, 140, 150, 160, 170, 180, 190, 200], 0.0, [140.0, 190.0]),
        # the warm-up is left out, and a window the run did not fill is not a window
        ([900, 100, 120, 110, 100, 100, 130, 100], 60.0, [120.0]),
        ([100, 200], 0.0, []),
    ],
)
def test_window_peaks(rss: list[float], after_s: float, want: list[float]) -> None:
    assert [w["broker"] for w in window_peaks(_samples(rss), ["broker"], after_s, 300.0)] == want


def test_per_core_divides_by_cores_actually_busy() -> None:
    assert per_core(20.0, cpu_seconds=15.0, wall_seconds=10.0) == pytest.approx(20.0 / 1.5)
    with pytest.raises(ValueError):
        per_core(20.0, 0.0, 10.0)
    assert not math.isnan(per_core(1.0, 1.0, 1.0))
