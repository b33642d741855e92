"""Padding slots for serving engines: `paged_indices`, and the device form of ``skip_negative=True``.

A padded batch (vLLM's ``PAD_SLOT_ID = -1``) runs on the device as runs of valid rows, each launched on
zero-copy views of ``self``, ``indices`` and ``updates``: no new allocation, nothing filtered on the host.
Each run is cut into power-of-two pieces, so that however the padding moves from step to step the pieces
take at most ``log2(B) + 1`` shapes, and prepared calls found by layout serve every step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .contract import check_arguments, check_indices, padding_rows
from .dtypes import INT32, INT64, dtype_name
from .errors import InvalidDtypeError, InvalidValueError

if TYPE_CHECKING:
    from .memory import DeviceArray
    from .runtime import Stream

__all__ = ["paged_indices", "run_padded", "valid_pieces"]

Array = np.ndarray[Any, Any]


def paged_indices(slot_mapping: Any, block_size: int) -> Array:
    """Flat slot ids of a paged cache ``[num_blocks, block_size, ...]`` as the 2-D index form: slot ``s``
    becomes ``(s // block_size, s % block_size)``; a negative slot (padding) becomes ``(-1, -1)``.
    The result keeps an int32 or int64 dtype (int64 otherwise); use it with ``axis=1`` and, when there is
    padding, ``skip_negative=True``.

    >>> paged_indices([5, -1, 16], 16).tolist()
    [[0, 5], [-1, -1], [1, 0]]
    """
    if isinstance(block_size, (bool, np.bool_)) or not isinstance(block_size, (int, np.integer)):
        raise InvalidDtypeError("block_size", "block_size", f"must be a positive int, got {block_size!r}")
    if block_size <= 0:
        raise InvalidValueError("block_size", "block_size", f"must be a positive int, got {block_size}")
    slots = np.asarray(slot_mapping)
    if slots.dtype.kind not in "iu" and slots.size:
        raise InvalidDtypeError("slot_mapping", "slot_mapping", f"must hold integers, got {dtype_name(slots.dtype)}")
    if slots.ndim != 1:
        raise InvalidValueError("slot_mapping", "slot_mapping", f"must be 1-D [B], got shape {slots.shape}")
    dtype = slots.dtype if slots.dtype in (INT32, INT64) else INT64
    flat = slots.astype(INT64)
    if block_size > np.iinfo(dtype).max:
        raise InvalidValueError("block_size", "block_size", f"{block_size} does not fit {dtype_name(dtype)}")
    out = np.stack([flat // block_size, flat % block_size], axis=1)
    out[flat < 0] = -1
    return out.astype(dtype)


def valid_pieces(indices: Array) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges that together cover every non-padding row: the runs of valid rows, each
    cut into power-of-two lengths (largest first).

    >>> valid_pieces(np.array([0, 1, 2, -1, 4, 5, 6, 7, 8, 9, 10]))
    [(0, 2), (2, 3), (4, 8), (8, 10), (10, 11)]
    """
    keep = ~padding_rows(indices)
    edges = np.flatnonzero(np.diff(np.concatenate(([False], keep, [False])).astype(np.int8)))
    pieces = []
    for start, stop in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        while start < stop:
            length = 1 << ((stop - start).bit_length() - 1)
            pieces.append((start, start + length))
            start += length
    return pieces


def run_padded(self_: DeviceArray, indices: Any, updates: Any, scales: Any, zero_points: Any, axis: int,
               quant_axis: int, reduce: str, stream: Stream | None, prepare: bool) -> None:
    """The device-resident call with ``skip_negative=True``: check the whole call, read the index values
    (a small copy that waits for the stream when they are on the device), then launch the valid pieces on
    views. Returns without waiting for the launches.

    >>> run_padded(d_cache, d_slots, d_upd, d_sc, None, 1, -1, "update", None, True)  # doctest: +SKIP
    """
    from . import npu
    from .memory import DeviceArray

    s = self_.device.stream if stream is None else stream
    plan = check_arguments(self_, indices, updates, scales, zero_points, axis, quant_axis, reduce,
                           self_.device.product, skip_negative=True)
    host = indices.to_numpy(stream=s) if isinstance(indices, DeviceArray) else np.asarray(indices)
    check_indices(plan, host, skip_negative=True)
    if plan.empty:
        return
    for start, stop in valid_pieces(host):
        target = self_ if plan.indices_2d else self_[start:stop]  # 1-D row b writes batch b of self
        npu.run_device(target, indices[start:stop], updates[start:stop], scales, zero_points, axis, quant_axis,
                       reduce, stream, False, prepare=prepare)
