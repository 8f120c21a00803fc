"""TF Serving's API protos without TensorFlow's runtime: ~35 MB and 0.2 s instead of ~750 MB and seconds per process.

`tensorflow-serving-api` imports its message types from `tensorflow.core.*`, and importing any
`tensorflow.*` module normally runs `tensorflow/__init__.py`, which loads the whole runtime. A
client (the worker, the dashboard's check page) or the OpenVINO model server needs only the generated
`*_pb2` modules, so its entry point calls `use_protos_only()` first: `tensorflow` becomes a bare namespace
over the same installed folder, and only the proto modules are loaded. A process that may still need the
runtime later (the OpenVINO model server, for a version without OpenVINO networks) gets it from
`load_tensorflow()`, never from `import tensorflow`.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import Any

_BARE = "_maskwatch_protos_only"
_loading = threading.Lock()


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
    setattr(pkg, _BARE, True)
    sys.modules["tensorflow"] = pkg
    return True


def load_tensorflow() -> Any:
    """TensorFlow's runtime (seconds and ~700 MB the first time). Where `use_protos_only()` made `tensorflow` a bare
    namespace, TensorFlow's `__init__` runs in that same module object, so the proto modules already loaded (and the
    messages made from them) stay the ones TensorFlow uses."""
    with _loading:
        pkg = sys.modules.get("tensorflow")
        if pkg is not None and getattr(pkg, _BARE, False):
            spec = pkg.__spec__
            assert spec is not None and spec.loader is not None
            delattr(pkg, _BARE)
            spec.loader.exec_module(pkg)
        import tensorflow

        return tensorflow
