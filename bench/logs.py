"""Logging of the benchmark commands: timestamped lines, the clients' and TensorFlow's chatter muted."""

from __future__ import annotations

import logging


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("kafka", "tensorflow", "absl", "h5py", "matplotlib", "worker"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
