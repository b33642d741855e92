"""Turning what a caller passes into the arrays the contract checks (the documented conversion rule).

Rule, in one sentence: Python numbers and lists, and arrays in NumPy's default dtypes (float64, int64), are
converted to the dtype the combination needs, the combination being chosen by ``updates`` (float16 updates:
float32 scales and int32 zero points; anything else: bfloat16 throughout); an array in any other dtype is
used exactly as it is, so it must already be a dtype CANN takes there.

So a dtype the caller chose (float32 scales, float16 scales, int8 updates) is never changed behind their
back: it is refused with the rule in the message. Floats become bfloat16 by rounding to nearest even;
int32 zero points must be integral; indices must hold integers (lists become int64). ``strict=True``
refuses every conversion. ``self`` is never converted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .dtypes import BFLOAT16, FLOAT16, FLOAT32, INT32, INT64, dtype_name
from .errors import InvalidDtypeError, InvalidValueError

__all__ = ["host_inputs"]

Array = np.ndarray[Any, Any]

# Dtypes CANN accepts for each parameter: these pass through untouched.
NATIVE = {
    "updates": (BFLOAT16, FLOAT16),
    "quant_scales": (BFLOAT16, FLOAT32),
    "quant_zero_points": (BFLOAT16, INT32),
    "indices": (np.dtype(np.int32), INT64),
}
# NumPy's dtypes for numbers nobody typed (``np.asarray(0.1)``, ``np.arange``): the only arrays converted.
DEFAULTS = (np.dtype(np.float64), INT64)
TARGET = {  # combination -> dtype of (scales, zero points)
    "bf16": (BFLOAT16, BFLOAT16),
    "fp16": (FLOAT32, INT32),
}


def _numeric(value: object, param: str) -> Array:
    if value is None:
        raise InvalidDtypeError(param, param, "is required, got None")
    if isinstance(value, (str, bytes)):
        raise InvalidDtypeError(param, param, f"expected numbers, got a {type(value).__name__}: {value!r:.40}")
    try:
        arr = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise InvalidValueError(param, param, f"is not a rectangular array of numbers ({exc})") from None
    if arr.dtype == BFLOAT16 or arr.dtype.kind in "iuf":
        return arr
    raise InvalidDtypeError(param, param, f"expected a numeric array, got dtype {dtype_name(arr.dtype)}")


def _convert(value: object, param: str, target: np.dtype[Any], strict: bool) -> Array:
    arr = _numeric(value, param)
    if arr.dtype in NATIVE[param]:
        return arr
    typed = isinstance(value, (np.ndarray, np.generic))
    if strict:
        raise InvalidDtypeError(param, param, f"strict=True: must already be one of "
                                f"{[dtype_name(d) for d in NATIVE[param]]}, got {dtype_name(arr.dtype)}"
                                f"{'' if typed else ' (not an ndarray)'}")
    if typed and arr.dtype not in DEFAULTS:
        needs = " or ".join(dtype_name(d) for d in NATIVE[param]) if param == "updates" else dtype_name(target)
        raise InvalidDtypeError("dtype_combo", param, f"dtype {dtype_name(arr.dtype)} is used as given (only "
                                f"Python numbers, lists and float64/int64 arrays are converted), and CANN needs "
                                f"{needs} here: pass {param}.astype(...) of that dtype")
    if target == INT32:
        if arr.dtype.kind == "f" or arr.dtype == BFLOAT16:
            f64 = arr.astype(np.float64)
            if not np.all(np.isfinite(f64)) or np.any(f64 != np.round(f64)):
                raise InvalidValueError(param, param, "int32 zero points (float16 combination) must be "
                                        "integral and finite")
            arr = f64
        lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
        if arr.size and (arr.min() < lo or arr.max() > hi):
            raise InvalidValueError(param, param, f"values must fit in int32, got range [{arr.min()}, "
                                    f"{arr.max()}]")
    elif target == BFLOAT16 and arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)  # exact for the ints that survive bf16 rounding anyway
    with np.errstate(over="ignore"):  # beyond the target's range is +-inf, which the contract defines
        return arr.astype(target)


def _indices(value: object, strict: bool) -> Array:
    if value is None:
        raise InvalidDtypeError("indices", "indices", "is required, got None")
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except ValueError as exc:
            raise InvalidValueError("indices_2d_shape", "indices", f"is not a rectangular array ({exc})") from None
    if arr.dtype in NATIVE["indices"] and (isinstance(value, np.ndarray) or not strict):
        return arr
    if arr.dtype.kind in "iu" and not strict and not isinstance(value, np.ndarray):
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise InvalidValueError("index_too_large", "indices", f"values must fit in int64, got {int(arr.max())}")
        return arr.astype(INT64)  # nested lists of Python ints
    if strict and arr.dtype in NATIVE["indices"]:
        raise InvalidDtypeError("indices_dtype", "indices", "strict=True: must already be an int32 or int64 ndarray, "
                                f"got a {type(value).__name__}")
    raise InvalidDtypeError("indices_dtype", "indices", f"must be int32 or int64, got "
                            f"{dtype_name(arr.dtype)}")


def host_inputs(
    indices: object, updates: object, quant_scales: object, quant_zero_points: object, strict: bool
) -> tuple[Array, Array, Array, Array | None]:
    """Apply the conversion rule; return (indices, updates, quant_scales, quant_zero_points) as arrays.

    >>> i, u, s, z = host_inputs([0], [[[1.5] * 32]], [0.5] * 32, None, strict=False)
    >>> i.dtype, u.dtype, s.dtype, z
    (dtype('int64'), dtype(bfloat16), dtype(bfloat16), None)
    """
    upd = _convert(updates, "updates", BFLOAT16, strict)
    sc_t, zp_t = TARGET["fp16" if upd.dtype == FLOAT16 else "bf16"]
    scales = _convert(quant_scales, "quant_scales", sc_t, strict)
    zps = None if quant_zero_points is None else _convert(quant_zero_points, "quant_zero_points", zp_t, strict)
    return _indices(indices, strict), upd, scales, zps
