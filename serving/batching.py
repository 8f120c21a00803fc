"""Server-side batching: TF Serving's BatchingParameters and a shared batch scheduler."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from google.protobuf.message import Message

from maskwatch.frames import image_size
from serving.status import ServingError, failed_precondition, invalid_argument, unavailable

logger = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray]
RunFn = Callable[[Arrays], dict[str, np.ndarray]]
BatchObserver = Callable[[Hashable, int, int], None]

QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"

# tensorflow_serving/servables/tensorflow/session_bundle_config.proto, BatchingParameters.
_BATCHING_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("max_batch_size", 1, "int64"),
    ("batch_timeout_micros", 2, "int64"),
    ("max_enqueued_batches", 3, "int64"),
    ("num_batch_threads", 4, "int64"),
    ("thread_pool_name", 5, "string"),
    ("allowed_batch_sizes", 6, "repeated"),
    ("pad_variable_length_inputs", 7, "bool"),
)


def batching_parameters_class() -> type[Message]:
    """TF Serving's BatchingParameters message class.

    The tensorflow-serving-api wheel does not ship session_bundle_config_pb2,
    so when it is missing the message is declared here, field for field.
    """
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2  # type: ignore[import-not-found]

        cls: type[Message] = session_bundle_config_pb2.BatchingParameters
        return cls
    except ImportError:
        pass
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    fdp = descriptor_pb2.FieldDescriptorProto
    for name, number, kind in _BATCHING_FIELDS:
        entry = message.field.add(name=name, number=number, json_name=name)
        if kind == "repeated":
            entry.label, entry.type = fdp.LABEL_REPEATED, fdp.TYPE_INT64
        elif kind == "bool":
            entry.label, entry.type = fdp.LABEL_OPTIONAL, fdp.TYPE_BOOL
        else:
            entry.label, entry.type = fdp.LABEL_OPTIONAL, fdp.TYPE_MESSAGE
            entry.type_name = ".google.protobuf.Int64Value" if kind == "int64" else ".google.protobuf.StringValue"
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


@dataclass(frozen=True)
class BatchingOptions:
    """Batching parameters, with BasicBatchScheduler's defaults for what is omitted."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    thread_pool_name: str = "model_server_batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be positive, got {self.max_batch_size}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must not be negative, got {self.batch_timeout_micros}")
        if self.max_enqueued_batches < 1:
            raise ValueError(f"max_enqueued_batches must be positive, got {self.max_enqueued_batches}")
        if self.num_batch_threads < 1:
            raise ValueError(f"num_batch_threads must be positive, got {self.num_batch_threads}")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(size < 1 for size in sizes):
                raise ValueError(f"allowed_batch_sizes entries must be positive, got {list(sizes)}")
            if any(a >= b for a, b in zip(sizes, sizes[1:], strict=False)):
                raise ValueError(f"allowed_batch_sizes entries must be monotonically increasing, got {list(sizes)}")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    f"final entry in allowed_batch_sizes ({sizes[-1]}) must equal max_batch_size "
                    f"({self.max_batch_size})"
                )

    @property
    def batch_timeout_seconds(self) -> float:
        """The batch timeout in seconds."""
        return self.batch_timeout_micros / 1e6

    def padded_size(self, size: int) -> int:
        """The smallest allowed batch size holding `size` rows (size itself when any is allowed)."""
        for allowed in self.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


def parse_batching_parameters(text: str) -> BatchingOptions:
    """Parse a BatchingParameters text proto (TF Serving's --batching_parameters_file)."""
    message = batching_parameters_class()()
    text_format.Parse(text, message)
    values: dict[str, Any] = {}
    for name, _number, kind in _BATCHING_FIELDS:
        if kind == "repeated":
            values[name] = tuple(int(v) for v in getattr(message, name))
        elif kind == "bool":
            values[name] = bool(getattr(message, name))
        elif message.HasField(name):
            wrapped = getattr(message, name).value
            values[name] = int(wrapped) if kind == "int64" else str(wrapped)
    return BatchingOptions(**values)


def load_batching_parameters(path: str) -> BatchingOptions:
    """Read --batching_parameters_file; an empty path gives the defaults."""
    if not path:
        return BatchingOptions()
    with open(path, encoding="utf-8") as handle:
        return parse_batching_parameters(handle.read())


class _Task:
    __slots__ = ("inputs", "size", "run", "done", "outputs", "error")

    def __init__(self, inputs: Arrays, size: int, run: RunFn) -> None:
        self.inputs = inputs
        self.size = size
        self.run = run
        self.done = threading.Event()
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: ServingError | None = None


class _Batch:
    __slots__ = ("key", "tasks", "size", "started")

    def __init__(self, key: Hashable, started: float) -> None:
        self.key = key
        self.tasks: list[_Task] = []
        self.size = 0
        self.started = started


class _Queue:
    __slots__ = ("batches",)

    def __init__(self) -> None:
        self.batches: deque[_Batch] = deque()


def batch_size_of(inputs: Arrays) -> int:
    """The common 0th-dimension size of a call's inputs, as BatchingSession requires."""
    sizes = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise invalid_argument("Batching session Run() input tensors must have at least one dimension")
        sizes.add(int(array.shape[0]))
    if not sizes:
        raise invalid_argument("Batching session Run() must have at least one input tensor")
    if len(sizes) > 1:
        raise invalid_argument("Batching session Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


def shape_key(inputs: Arrays) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """What calls must share to be concatenated: names, dtypes and non-batch dimensions."""
    return tuple(sorted((name, array.dtype.str, tuple(array.shape[1:])) for name, array in inputs.items()))


@dataclass
class BatchStats:
    """Counters of the scheduler's work: calls submitted, model runs, largest run."""

    tasks: int = 0
    batches: int = 0
    rows: int = 0
    padded_rows: int = 0
    largest_batch_tasks: int = 0
    rejected_full: int = 0


class BatchScheduler:
    """Merges concurrent calls with the same key into one run along dim 0.

    Like TF Serving's shared batch scheduler: each key has a queue of batches;
    a batch is run when full, when it is no longer the open batch, or when its
    oldest call has waited `batch_timeout_micros`; at most `max_enqueued_batches`
    wait per key, and a call that would need one more fails at once with
    UNAVAILABLE. `num_batch_threads` threads run batches for all keys.
    """

    def __init__(self, options: BatchingOptions, observer: BatchObserver | None = None) -> None:
        self.options = options
        self.stats = BatchStats()
        self._observer = observer
        self._cond = threading.Condition()
        self._queues: dict[Hashable, _Queue] = {}
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{options.thread_pool_name}-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, inputs: Arrays, run: RunFn) -> dict[str, np.ndarray]:
        """Run `inputs` as part of a batch of calls sharing `key`; block until answered."""
        size = batch_size_of(inputs)
        if size > self.options.max_batch_size:
            raise invalid_argument(f"Task size {size} is larger than maximum batch size {self.options.max_batch_size}")
        task = _Task(inputs, size, run)
        with self._cond:
            if self._closed:
                raise unavailable("Batch scheduler is shutting down")
            queue = self._queues.setdefault((key, shape_key(inputs)), _Queue())
            batches = queue.batches
            if not batches or batches[-1].size + size > self.options.max_batch_size:
                if len(batches) >= self.options.max_enqueued_batches:
                    self.stats.rejected_full += 1
                    raise unavailable(QUEUE_FULL_MESSAGE)
                batches.append(_Batch(key, time.monotonic()))
            batch = batches[-1]
            batch.tasks.append(task)
            batch.size += size
            self.stats.tasks += 1
            self._cond.notify_all()
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def close(self, timeout: float = 10.0) -> None:
        """Run what is queued, then stop the batch threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _ready_batch(self, now: float) -> tuple[_Batch | None, float | None]:
        """Pop the next batch to run, or say how long until one is due."""
        wait: float | None = None
        timeout = self.options.batch_timeout_seconds
        for key, queue in list(self._queues.items()):
            if not queue.batches:
                del self._queues[key]
                continue
            first = queue.batches[0]
            due = first.started + timeout
            if len(queue.batches) > 1 or first.size >= self.options.max_batch_size or self._closed or now >= due:
                queue.batches.popleft()
                if not queue.batches:
                    del self._queues[key]
                return first, None
            wait = due - now if wait is None else min(wait, due - now)
        return None, wait

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    batch, wait = self._ready_batch(time.monotonic())
                    if batch is not None:
                        break
                    if self._closed and not self._queues:
                        return
                    self._cond.wait(wait)
            self._process(batch)

    def _process(self, batch: _Batch) -> None:
        tasks = batch.tasks
        padded = self.options.padded_size(batch.size)
        try:
            outputs = self._run_merged(tasks, batch.size, padded)
        except ServingError as error:
            self._fail(tasks, error)
            return
        except Exception as error:  # a batch thread must answer its callers whatever happens
            logger.exception("batch failed tasks=%d rows=%d", len(tasks), batch.size)
            self._fail(tasks, ServingError(grpc.StatusCode.INTERNAL, f"batch run failed: {error}"))
            return
        with self._cond:
            stats = self.stats
            stats.batches += 1
            stats.rows += batch.size
            stats.padded_rows += padded
            stats.largest_batch_tasks = max(stats.largest_batch_tasks, len(tasks))
        if self._observer is not None:
            self._observer(batch.key, batch.size, padded)
        logger.debug("batch run tasks=%d rows=%d padded=%d", len(tasks), batch.size, padded)
        offset = 0
        for task in tasks:
            task.outputs = {name: value[offset : offset + task.size] for name, value in outputs.items()}
            offset += task.size
            task.done.set()

    @staticmethod
    def _fail(tasks: Sequence[_Task], error: ServingError) -> None:
        for task in tasks:
            task.error = error
            task.done.set()

    @staticmethod
    def _run_merged(tasks: Sequence[_Task], size: int, padded: int) -> dict[str, np.ndarray]:
        names = list(tasks[0].inputs)
        merged: dict[str, np.ndarray] = {}
        for name in names:
            parts = [task.inputs[name] for task in tasks]
            if padded > size:
                first_row = parts[0][:1]
                parts.append(np.repeat(first_row, padded - size, axis=0))
            merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        outputs = tasks[0].run(merged)
        for name, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != padded:
                raise failed_precondition(
                    f"Batched output tensor's 0th dimension does not equal the sum of the 0th dimension "
                    f"sizes of the input tensors (output {name})"
                )
        return outputs


# Images one model run takes at most: its memory grows with them (~21 MB per 640x480 frame in TensorFlow) and its
# time per image does not fall beyond a few on CPUs. The batching's max_batch_size (serving/batching.config) is the
# same, so batched calls are not split further; a Predict without batching of more images runs in several.
MAX_ROWS_PER_RUN = 32


def size_groups(sizes: Sequence[tuple[int, int]], max_pixels: int, max_rows: int = MAX_ROWS_PER_RUN) -> list[list[int]]:
    """Row indices grouped so that each group's padded canvas (tallest x widest) holds at most `max_pixels`, and
    each group at most `max_rows` rows.

    A model decoding a batch of images pads each to the batch's largest height x largest width, so a 20000x2000
    and a 2000x20000 image together would cost 20000x20000 each. Sorted by (height, width), rows join a group
    while the padded canvas stays within the cap: a batch then costs at most `max_pixels` x its rows, and rows of
    one size (every camera frame alike) stay in one group, up to `max_rows` of them.
    """
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i][1], sizes[i][0]))
    groups: list[list[int]] = []
    max_w = max_h = 0
    for i in order:
        w, h = sizes[i]
        if groups and len(groups[-1]) < max_rows and max(max_w, w) * max(max_h, h) <= max_pixels:
            groups[-1].append(i)
            max_w, max_h = max(max_w, w), max(max_h, h)
        else:
            groups.append([i])
            max_w, max_h = w, h
    return groups


def encoded_image_sizes(images: np.ndarray, max_pixels: int) -> list[tuple[int, int]] | None:
    """(width, height) of every JPEG/PNG in a string tensor [N], from its header; None when one is not an image.

    Raises INVALID_ARGUMENT for an image over `max_pixels`, before anything decodes it.
    """
    sizes: list[tuple[int, int]] = []
    for row, raw in enumerate(images):
        size = image_size(bytes(raw)) if isinstance(raw, bytes) else None
        if size is None:
            return None
        if size.pixels > max_pixels:
            raise invalid_argument(f"image {row} is {size.width}x{size.height}, over the cap of {max_pixels} pixels")
        sizes.append((size.width, size.height))
    return sizes


def run_by_image_size(inputs: Arrays, run: RunFn, max_pixels: int) -> dict[str, np.ndarray]:
    """`run(inputs)`, with a batch of encoded images split by `size_groups` when one run would pad past the cap or
    hold more than MAX_ROWS_PER_RUN images.

    Applies to a call whose only input is a 1-D string tensor of JPEG/PNG images; other calls run as they are.
    """
    if len(inputs) != 1:
        return run(inputs)
    (name, images), = inputs.items()
    if images.ndim != 1 or images.dtype != object or len(images) == 0:
        return run(inputs)
    sizes = encoded_image_sizes(images, max_pixels)
    if sizes is None:
        return run(inputs)
    groups = size_groups(sizes, max_pixels)
    if len(groups) == 1:
        return run(inputs)
    logger.debug("batch split by image size rows=%d groups=%d", len(images), len(groups))
    parts = [(group, run({name: images[group]})) for group in groups]
    out: dict[str, np.ndarray] = {}
    for key in parts[0][1]:
        shape = np.max([value[key].shape for _, value in parts], axis=0)
        merged = np.zeros((len(images), *shape[1:]), parts[0][1][key].dtype)
        for group, value in parts:
            part = value[key]
            merged[tuple([group] + [slice(0, n) for n in part.shape[1:]])] = part
        out[key] = merged
    return out
