"""Model warm-up: replay `assets.extra/tf_serving_warmup_requests` when a version loads."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from maskwatch.model_api import ASSETS_EXTRA, WARMUP_FILE

logger = logging.getLogger(__name__)

MAX_WARMUP_RECORDS = 1000


class WarmupError(Exception):
    """The warm-up file is unreadable, too long, or a replayed request failed."""


def warmup_path(version_path: str) -> str:
    """Where TF Serving looks for a version's warm-up requests."""
    return os.path.join(version_path, ASSETS_EXTRA, WARMUP_FILE)


def read_warmup_logs(path: str) -> Iterator[prediction_log_pb2.PredictionLog]:
    """PredictionLog records from a TFRecord file, at most MAX_WARMUP_RECORDS."""
    try:
        records = list(tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS + 1).as_numpy_iterator())
    except tf.errors.OpError as error:
        raise WarmupError(f"cannot read warm-up records at {path}: {error.message}") from error
    if len(records) > MAX_WARMUP_RECORDS:
        raise WarmupError(f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}")
    for index, record in enumerate(records):
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except Exception as error:  # protobuf's DecodeError varies by backend
            raise WarmupError(f"warm-up record {index} at {path} is not a PredictionLog: {error}") from error
        yield log


def run_warmup(version_path: str, predict: Callable[[predict_pb2.PredictRequest], object]) -> int:
    """Replay the version's warm-up Predict requests; return how many ran (0 when no file)."""
    path = warmup_path(version_path)
    if not os.path.isfile(path):
        return 0
    count = 0
    for log in read_warmup_logs(path):
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
            raise WarmupError(f"Unsupported log_type for warmup: {kind} in {path}")
        predict(log.predict_log.request)
        count += 1
    logger.info("warmup done path=%s requests=%d", path, count)
    return count
