"""Pure arithmetic of the benchmarks: percentiles, medians of repeated runs, steady-state rates, per-frame latencies."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in [0, 100], got {q}")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


@dataclass(frozen=True)
class Summary:
    """Repeated measurements of one figure: the median is what gets reported."""

    median: float
    low: float
    high: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, runs: Iterable[float]) -> Summary:
        r = tuple(float(x) for x in runs)
        if not r:
            raise ValueError("no runs")
        return cls(median(r), min(r), max(r), r)

    @property
    def spread_pct(self) -> float:
        """(high - low) / median, in percent: how noisy the repeats were."""
        return 100.0 * (self.high - self.low) / self.median if self.median else math.inf

    def as_dict(self, digits: int = 2) -> dict[str, object]:
        return {
            "median": round(self.median, digits),
            "low": round(self.low, digits),
            "high": round(self.high, digits),
            "runs": [round(x, digits) for x in self.runs],
        }


def ratio(num: float, den: float) -> float:
    if den <= 0:
        raise ValueError(f"ratio with non-positive denominator {den}")
    return num / den


def paired_ratio(nums: Sequence[float], dens: Sequence[float]) -> Summary:
    """Ratios of measurements taken side by side (round i of each), summarised: robust to slow drifts in load."""
    if len(nums) != len(dens) or not nums:
        raise ValueError(f"need equally many paired runs, got {len(nums)} and {len(dens)}")
    return Summary.of(ratio(n, d) for n, d in zip(nums, dens, strict=True))


def rate_between(samples: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    """Rate (count per second) of a monotone counter sampled as (time_s, count), between the first
    sample whose count reaches `lo` and the first whose count reaches `hi`.

    Used on a draining backlog: skipping the first and last part of it measures the steady state
    and leaves out start-up and the tail.
    """
    if hi <= lo:
        raise ValueError(f"hi {hi} must exceed lo {lo}")
    start = next((s for s in samples if s[1] >= lo), None)
    end = next((s for s in samples if s[1] >= hi), None)
    if start is None or end is None or end[0] <= start[0]:
        raise ValueError(f"counter never went from {lo} to {hi} in {len(samples)} samples")
    return (end[1] - start[1]) / (end[0] - start[0])


def rate_in_window(samples: Sequence[tuple[float, float]], t0: float, t1: float) -> float:
    """Rate of a monotone counter sampled as (time_s, count) over the samples within [t0, t1]."""
    inside = [s for s in samples if t0 <= s[0] <= t1]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        raise ValueError(f"fewer than two samples in [{t0}, {t1}]")
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def frame_latencies(
    sent: Mapping[str, Sequence[int]], updates: Iterable[tuple[int, Mapping[str, int]]]
) -> tuple[list[float], int]:
    """Per-frame capture → counted latencies (ms) from the worker's live updates.

    `sent[camera]` lists the capture times (`mw-ts`, ms) of the frames sent for that camera, in
    order. Each update is (write_ms, {camera: frames counted in that batch}) in publication order.
    A camera lives on one partition, read in order by one consumer at a time, so a batch that
    counts k frames of a camera counted that camera's next k frames. Returns the latencies and
    how many counted frames could not be matched to a sent one (should be 0).
    """
    queues = {cam: deque(ts) for cam, ts in sent.items()}
    out: list[float] = []
    unmatched = 0
    for write_ms, cams in updates:
        for cam, k in cams.items():
            q = queues.get(cam)
            for _ in range(k):
                if not q:
                    unmatched += 1
                    continue
                out.append(float(write_ms - q.popleft()))
    return out, unmatched


def scaling_efficiency(fps: Mapping[int, float], n: int) -> float:
    """throughput(n) / (n × throughput(1))."""
    if 1 not in fps or n not in fps:
        raise ValueError(f"need throughput at 1 and {n} workers, have {sorted(fps)}")
    return ratio(fps[n], n * fps[1])


def growth_pct(start: float, end: float) -> float:
    """Relative growth from start to end, in percent."""
    return 100.0 * ratio(end - start, start)


def window_peaks(samples: list[dict[str, Any]], procs: list[str], after_s: float, window_s: float) -> list[dict[str, float]]:
    """Per `window_s` window from `after_s` on (whole windows only), each process's highest sampled `rss_mb`.

    A sawtooth process (the broker between janitor steps) is bounded when these peaks stay level, whatever phase of
    the tooth the run's last sample falls on."""
    out: list[dict[str, float]] = []
    start = after_s
    last_t = float(samples[-1]["t_s"]) if samples else 0.0
    while last_t >= start + window_s:
        inside = [x for x in samples if start <= float(x["t_s"]) < start + window_s]
        if inside:
            out.append({p: max(float(x["rss_mb"][p]) for x in inside) for p in procs})
        start += window_s
    return out


def per_core(fps: float, cpu_seconds: float, wall_seconds: float) -> float:
    """Frames per second per core busy: fps divided by the cores actually used (CPU seconds / wall seconds)."""
    if cpu_seconds <= 0:
        raise ValueError(f"no CPU time ({cpu_seconds} s) to divide by")
    return fps / ratio(cpu_seconds, wall_seconds)
