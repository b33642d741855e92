"""Addresses and handles from other runtimes as Python ints (one rule for pointers, streams and capsules)."""

from __future__ import annotations

import ctypes
import operator

from ._ffi._cann import ffi
from .errors import InvalidDtypeError, InvalidValueError

__all__ = ["as_address"]

_UINTPTR = ffi.typeof("uintptr_t")
_ADDRESS_LIMIT = 1 << 64


def as_address(value: object, param: str) -> int:
    """An address or handle as an int: accepts ``int``, NumPy integers, ``ctypes.c_void_p`` (and other
    ctypes pointers), cffi pointers and objects with ``__int__``; 0 stands for NULL.

    >>> import ctypes, numpy as np
    >>> as_address(np.uint64(4096), "ptr"), as_address(ctypes.c_void_p(4096), "ptr"), as_address(None, "ptr")
    (4096, 4096, 0)
    """
    if value is None:
        return 0
    if isinstance(value, bool):
        raise InvalidDtypeError(param, param, f"must be an address (int, ctypes or cffi pointer), got a bool "
                                f"({value!r})")
    if isinstance(value, ffi.CData):
        kind = ffi.typeof(value).kind
        if kind not in ("pointer", "primitive"):
            raise InvalidDtypeError(param, param, f"must be a cffi pointer, got {ffi.typeof(value).cname}")
        address = int(ffi.cast(_UINTPTR, value))
    elif isinstance(value, ctypes.c_void_p):
        address = value.value or 0
    elif isinstance(value, ctypes._Pointer):
        address = ctypes.cast(value, ctypes.c_void_p).value or 0
    else:
        try:
            address = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            convert = getattr(type(value), "__int__", None)
            if convert is None:
                raise InvalidDtypeError(param, param, f"must be an address (int, NumPy integer, ctypes or cffi "
                                        f"pointer, or an object with __int__), got {type(value).__name__}") from None
            address = int(value)  # type: ignore[call-overload]
    if not 0 <= address < _ADDRESS_LIMIT:
        raise InvalidValueError(param, param, f"must be an address in [0, 2**64), got {address}")
    return address
