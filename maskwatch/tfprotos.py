"""TF Serving's API protos without TensorFlow's runtime: ~35 MB and 0.2 s instead of ~750 MB and seconds per process.

`tensorflow-serving-api` imports its message types from `tensorflow.core.*`, and importing any
`tensorflow.*` module normally runs `tensorflow/__init__.py`, which loads the whole runtime. A
client (the worker, the dashboard's check page) needs only the generated `*_pb2` modules, so its
entry point calls `use_protos_only()` first: `tensorflow` becomes a bare namespace over the same
installed folder, and only the proto modules are loaded. Never call it in a process that runs models.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def use_protos_only() -> bool:
    """Make `import tensorflow.core...` load only the protos; False when TensorFlow is already imported."""
    if "tensorflow" in sys.modules:
        return False
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or spec.submodule_search_locations is None:
        return False
    pkg = types.ModuleType("tensorflow")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    pkg.__doc__ = "protos only (maskwatch.tfprotos)"
    sys.modules["tensorflow"] = pkg
    return True
