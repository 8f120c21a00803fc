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


UPGRADE = """
from maskwatch.tfprotos import load_tensorflow, use_protos_only
assert use_protos_only()
from tensorflow_serving.apis import predict_pb2
request = predict_pb2.PredictRequest()
request.inputs["x"].float_val.extend([1.5, 2.5])
request.inputs["x"].dtype = 1  # DT_FLOAT
request.inputs["x"].tensor_shape.dim.add().size = 2
tf = load_tensorflow()  # the runtime, into the same `tensorflow` module
import tensorflow
assert tensorflow is tf and tf.make_ndarray(request.inputs["x"]).tolist() == [1.5, 2.5]
assert float(tf.reduce_sum(tf.constant([1.0, 2.0]))) == 3.0
print("ok")
"""


@pytest.mark.timeout(120)
def test_a_protos_only_process_can_still_load_the_runtime() -> None:
    """The OpenVINO model server, for a version without OpenVINO networks: the messages made before still work."""
    out = subprocess.run([sys.executable, "-c", UPGRADE], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "ok"
