"""Server metrics in Prometheus text format, named as TF Serving exports them."""

from __future__ import annotations

import bisect
import contextlib
import math
import threading
from collections.abc import Iterator, Sequence

# TF Serving exports /tensorflow/serving/... as :tensorflow:serving:...
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
INPUT_BATCH_SIZE = ":tensorflow:serving:batching_session:input_batch_size"
PROCESSED_BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
PADDING_SIZE = ":tensorflow:serving:batching_session:padding_size"
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"
MODEL_VERSIONS_AVAILABLE = ":maskwatch:serving:model_versions_available"
INFLIGHT_REQUESTS = ":maskwatch:serving:inflight_requests"

LATENCY_BUCKETS_US: tuple[float, ...] = tuple(10.0 * 1.8**i for i in range(33))
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Histogram:
    __slots__ = ("counts", "total", "count")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)
        self.total = 0.0
        self.count = 0


class Metrics:
    """Counters, gauges and histograms with labels; render() gives the exposition text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}
        self._values: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, dict[Labels, _Histogram]] = {}
        self._buckets: dict[str, Sequence[float]] = {}
        self.counter(REQUEST_COUNT, "Total number of requests, by model and status.")
        self.histogram(REQUEST_LATENCY, "Request latency in microseconds.", LATENCY_BUCKETS_US)
        self.histogram(RUNTIME_LATENCY, "Model run latency in microseconds.", LATENCY_BUCKETS_US)
        self.histogram(INPUT_BATCH_SIZE, "Rows in a call entering the batch scheduler.", BATCH_BUCKETS)
        self.histogram(PROCESSED_BATCH_SIZE, "Rows in a batch run by the model, padding included.", BATCH_BUCKETS)
        self.histogram(PADDING_SIZE, "Padding rows added to reach an allowed batch size.", BATCH_BUCKETS)
        self.counter(LOAD_ATTEMPT_COUNT, "SavedModel load attempts, by path and status.")
        self.gauge(MODEL_VERSIONS_AVAILABLE, "Versions currently available, by model.")
        self.gauge(INFLIGHT_REQUESTS, "Calls being answered now, by API and entrypoint.")

    def counter(self, name: str, help_text: str) -> None:
        """Declare a counter."""
        self._help[name] = ("counter", help_text)
        self._values.setdefault(name, {})

    def gauge(self, name: str, help_text: str) -> None:
        """Declare a gauge."""
        self._help[name] = ("gauge", help_text)
        self._values.setdefault(name, {})

    def histogram(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        """Declare a histogram with upper bounds `buckets`."""
        self._help[name] = ("histogram", help_text)
        self._histograms.setdefault(name, {})
        self._buckets[name] = tuple(sorted(buckets))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add to a counter (or move a gauge)."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[name][key] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record one observation in a histogram."""
        key = tuple(sorted(labels.items()))
        buckets = self._buckets[name]
        with self._lock:
            series = self._histograms[name]
            histogram = series.get(key)
            if histogram is None:
                histogram = series[key] = _Histogram(len(buckets))
            histogram.counts[bisect.bisect_left(buckets, value)] += 1
            histogram.total += value
            histogram.count += 1

    def value(self, name: str, **labels: str) -> float:
        """A counter's or gauge's current value (0 when never touched)."""
        with self._lock:
            return self._values[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_text) in sorted(self._help.items()):
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                if kind == "histogram":
                    buckets = self._buckets[name]
                    for key, histogram in sorted(self._histograms[name].items()):
                        cumulative = 0
                        for bound, count in zip([*buckets, math.inf], histogram.counts, strict=True):
                            cumulative += count
                            lines.append(f"{name}_bucket{_labels(key, (('le', _number(bound)),))} {cumulative}")
                        lines.append(f"{name}_sum{_labels(key)} {_number(histogram.total)}")
                        lines.append(f"{name}_count{_labels(key)} {histogram.count}")
                else:
                    for key, value in sorted(self._values[name].items()):
                        lines.append(f"{name}{_labels(key)} {_number(value)}")
        return "\n".join(lines) + "\n"


@contextlib.contextmanager
def in_flight(metrics: Metrics, api: str, entrypoint: str) -> Iterator[None]:
    """Count a call in INFLIGHT_REQUESTS while it runs."""
    metrics.inc(INFLIGHT_REQUESTS, 1, API=api, entrypoint=entrypoint)
    try:
        yield
    finally:
        metrics.inc(INFLIGHT_REQUESTS, -1, API=api, entrypoint=entrypoint)


def record_request(metrics: Metrics, model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
    """Count one API call and its latency (TF Serving's request_count and request_latency)."""
    metrics.inc(REQUEST_COUNT, model_name=model_name, status=status)
    metrics.observe(REQUEST_LATENCY, seconds * 1e6, model_name=model_name, API=api, entrypoint=entrypoint)
