"""The dtypes QuantScatter knows, their names and their CANN aclDataType codes."""

from __future__ import annotations

import ml_dtypes
import numpy as np

__all__ = ["ACL_DTYPE", "BFLOAT16", "FLOAT16", "FLOAT32", "INT8", "INT32", "INT64", "dtype_name"]

BFLOAT16: np.dtype[np.generic] = np.dtype(ml_dtypes.bfloat16)
FLOAT16: np.dtype[np.generic] = np.dtype(np.float16)
FLOAT32: np.dtype[np.generic] = np.dtype(np.float32)
INT8: np.dtype[np.generic] = np.dtype(np.int8)
INT32: np.dtype[np.generic] = np.dtype(np.int32)
INT64: np.dtype[np.generic] = np.dtype(np.int64)

# aclDataType values (acl_base.h) for the dtypes a device array may hold.
ACL_DTYPE: dict[np.dtype[np.generic], int] = {
    FLOAT32: 0,
    FLOAT16: 1,
    INT8: 2,
    INT32: 3,
    INT64: 9,
    BFLOAT16: 27,
}


def dtype_name(dtype: object) -> str:
    """Return a readable name for a dtype (``bfloat16`` for ml_dtypes' type, never raises).

    >>> dtype_name(BFLOAT16), dtype_name(np.int8)
    ('bfloat16', 'int8')
    """
    try:
        return str(np.dtype(dtype))  # type: ignore[call-overload]
    except TypeError:
        return repr(dtype)
