"""The worker process loads TF Serving's protos without TensorFlow's runtime."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import worker.__main__  # the worker's entry point installs the protos-only import
import numpy as np
from maskwatch.model_api import to_ndarray, to_proto
t = to_proto(np.array([b"a", b"bc"], dtype=object))
assert list(t.string_val) == [b"a", b"bc"] and t.tensor_shape.dim[0].size == 2
loaded = sorted(m for m in sys.modules if m.startswith("tensorflow.python"))
rss_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
print(len(loaded), rss_kb // 1024)  # current RSS: ru_maxrss would include the forking parent's
"""


@pytest.mark.timeout(60)
def test_worker_imports_no_tensorflow_runtime() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    runtime_modules, rss_mb = (int(x) for x in out.stdout.split())
    assert runtime_modules == 0
    assert rss_mb < 300, f"worker imports cost {rss_mb} MB"
