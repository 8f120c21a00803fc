"""The warm-up file's TFRecord reader (serving.warmup, so the OpenVINO model server needs no TensorFlow) reads what
TensorFlow writes, and names what is wrong with a damaged file instead of replaying part of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import tensorflow as tf

from serving.warmup import WarmupError, read_tfrecords

RECORDS = [b"", b"a", b"PredictionLog" * 100, bytes(range(256))]


@pytest.fixture
def written(tmp_path: Path) -> Path:
    path = tmp_path / "tf_serving_warmup_requests"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in RECORDS:
            writer.write(record)
    return path


def test_reads_the_records_tensorflow_wrote(written: Path) -> None:
    assert read_tfrecords(str(written), 10) == RECORDS
    assert read_tfrecords(str(written), 2) == RECORDS[:3]  # one past the limit: the caller tells "too many"


@pytest.mark.parametrize(
    ("offset", "message"),
    [(0, "corrupted record length"), (9, "corrupted record length"), (12 + 0 + 4 + 12 + 1, "corrupted record data")],
)
def test_a_flipped_bit_is_refused_by_its_checksum(written: Path, offset: int, message: str) -> None:
    data = bytearray(written.read_bytes())
    data[offset] ^= 0x01
    written.write_bytes(bytes(data))
    with pytest.raises(WarmupError, match=message):
        read_tfrecords(str(written), 10)


@pytest.mark.parametrize("cut", [5, 12 + 4 + 12 + 1, -1])
def test_a_truncated_file_is_refused(written: Path, cut: int) -> None:
    written.write_bytes(written.read_bytes()[:cut])
    with pytest.raises(WarmupError, match="truncated"):
        read_tfrecords(str(written), 10)


def test_an_unreadable_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(WarmupError, match="cannot read warm-up records at .*missing"):
        read_tfrecords(str(tmp_path / "missing"), 10)
