"""TensorProto <-> numpy conversion, written the way TF Serving writes tensors."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

# Typed repeated field TF's Tensor::AsProtoField fills for each dtype.
_FIELD_BY_DTYPE: dict[int, str] = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
}


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode a request tensor (raises TypeError/ValueError when it is malformed)."""
    array: np.ndarray = tf.make_ndarray(proto)
    return array


def to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Encode an output tensor as TF Serving does: values in the typed field, not tensor_content."""
    proto: tensor_pb2.TensorProto = tf.make_tensor_proto(array)
    field = _FIELD_BY_DTYPE.get(proto.dtype)
    if field is not None and proto.tensor_content:
        proto.ClearField("tensor_content")
        getattr(proto, field).extend(np.asarray(array).ravel().tolist())
    elif proto.dtype == types_pb2.DT_HALF and proto.tensor_content:
        proto.ClearField("tensor_content")
        proto.half_val.extend(np.asarray(array, dtype=np.float16).ravel().view(np.uint16).tolist())
    return proto


def dtype_name(dtype: int) -> str:
    """TF's short name of a DataType enum value (`string`, `float`), as its errors spell it."""
    if dtype == types_pb2.DT_INVALID:
        return "invalid"
    try:
        return str(tf.dtypes.as_dtype(dtype).name).replace("float32", "float").replace("float64", "double")
    except TypeError:
        return types_pb2.DataType.Name(dtype)
