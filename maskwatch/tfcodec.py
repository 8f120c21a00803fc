"""TF Serving's tensor messages <-> numpy, without TensorFlow's runtime: the codec of the model's clients (worker, /check).

Imports `tensorflow.core` protos: a client process calls `maskwatch.tfprotos.use_protos_only()` first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

_NP_OF = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
}


def string_tensor(values: Sequence[bytes]) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    t.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))]))
    t.string_val.extend(values)
    return t


def uint8_tensor(arr: np.ndarray) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8)
    t.tensor_shape.CopyFrom(
        tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(s)) for s in arr.shape])
    )
    t.tensor_content = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    return t


def to_numpy(t: tensor_pb2.TensorProto) -> np.ndarray:
    """A numeric TensorProto as a numpy array (tensor_content or the typed *_val field)."""
    if t.dtype not in _NP_OF:
        raise ValueError(f"unsupported output dtype {t.dtype}")
    dtype, field = _NP_OF[t.dtype]
    shape = [d.size for d in t.tensor_shape.dim]
    if t.tensor_content:
        arr = np.frombuffer(t.tensor_content, dtype=dtype)
    else:
        vals = np.asarray(getattr(t, field), dtype=dtype)
        n = int(np.prod(shape)) if shape else 1
        arr = np.full(n, vals[0], dtype=dtype) if vals.size == 1 and n > 1 else vals
    return arr.reshape(shape)
