"""aclTensor descriptors for device arrays: element strides and offset, storage from the block base."""

from __future__ import annotations

from typing import Any

from . import _calls
from .dtypes import ACL_DTYPE
from .memory import DeviceArray

ACL_FORMAT_ND = 2


def create_descriptor(arr: DeviceArray) -> Any:
    """An ``aclTensor *`` describing ``arr``; the caller destroys it with ``_calls.destroy_tensor``.

    >>> t = create_descriptor(DeviceArray.zeros((2, 32), "int8"))  # doctest: +SKIP
    """
    return _calls.create_tensor(arr.shape, ACL_DTYPE[arr.dtype], arr.strides, arr.offset, ACL_FORMAT_ND,
                                (arr.storage,), arr.ptr)
