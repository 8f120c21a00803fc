"""Model warm-up: replay `assets.extra/tf_serving_warmup_requests` when a version loads."""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Iterator

import crc32c
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from maskwatch.model_api import ASSETS_EXTRA, WARMUP_FILE

logger = logging.getLogger(__name__)

MAX_WARMUP_RECORDS = 1000


class WarmupError(Exception):
    """The warm-up file is unreadable, too long, or a replayed request failed."""


def warmup_path(version_path: str) -> str:
    """Where TF Serving looks for a version's warm-up requests."""
    return os.path.join(version_path, ASSETS_EXTRA, WARMUP_FILE)


def _masked_crc(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated right by 15 bits, plus a constant."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecords(path: str, limit: int) -> list[bytes]:
    """The records of a TFRecord file (length, its checksum, data, its checksum, each checked), at most `limit` + 1
    of them, so that a caller can tell a file with more than `limit`; WarmupError names what is wrong."""
    records: list[bytes] = []
    try:
        with open(path, "rb") as handle:
            while len(records) <= limit:
                header = handle.read(12)
                if not header:
                    break
                if len(header) < 12:
                    raise WarmupError(f"cannot read warm-up records at {path}: truncated record header")
                length, length_crc = struct.unpack("<QI", header)
                if _masked_crc(header[:8]) != length_crc:
                    raise WarmupError(f"cannot read warm-up records at {path}: corrupted record length")
                data, data_crc = handle.read(length), handle.read(4)
                if len(data) < length or len(data_crc) < 4:
                    raise WarmupError(f"cannot read warm-up records at {path}: truncated record")
                if _masked_crc(data) != struct.unpack("<I", data_crc)[0]:
                    raise WarmupError(f"cannot read warm-up records at {path}: corrupted record data")
                records.append(data)
    except OSError as error:
        raise WarmupError(f"cannot read warm-up records at {path}: {error}") from error
    return records


def read_warmup_logs(path: str) -> Iterator[prediction_log_pb2.PredictionLog]:
    """PredictionLog records from a TFRecord file, at most MAX_WARMUP_RECORDS."""
    records = read_tfrecords(path, MAX_WARMUP_RECORDS)
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
