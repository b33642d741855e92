"""The CPU reference backend: the contract's arithmetic in NumPy, bit for bit.

Quantization runs in cache-sized chunks (NumPy ufuncs with ``out=``; the chunks are split across threads,
since ufuncs release the GIL), then the quantized blocks are scattered into ``self`` with one fancy
assignment. Knows nothing of CANN or cffi.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .contract import Plan, drop_padding
from .dtypes import BFLOAT16, FLOAT16
from .errors import InvalidDtypeError

__all__ = ["quantize", "run", "scatter"]

Array = np.ndarray[Any, Any]

CHUNK_ELEMENTS = 1 << 18  # 1 MiB of float32: stays in a core's L2 across the passes over one chunk
MIN_PARALLEL_ELEMENTS = 1 << 20
SLICED_ROWS = 64  # up to this many batch rows, scatter copies one block per row (a loop in Python)
_LOW, _HIGH = np.float32(-128.0), np.float32(127.0)
_pool: ThreadPoolExecutor | None = None


def thread_count() -> int:
    """Threads the reference backend uses for large inputs (at most 4, at most the usable cores).

    >>> thread_count() >= 1
    True
    """
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=thread_count(), thread_name_prefix="pyacl_qscatter-ref")
    return _pool


def _channel_vector(values: Array | None, channels: int) -> Array | None:
    """Scales or zero points as a flat float32 vector (exact for bf16; int32 rounds to nearest)."""
    if values is None:
        return None
    flat = np.asarray(values).reshape(channels).astype(np.float32)
    # A float32 NaN may carry any payload; make it the default NaN so it quantizes like every NaN.
    flat[np.isnan(flat)] = np.float32(np.nan)
    return flat


def _quantize_rows(src: Array, out: Array, scales: Array, zps: Array | None) -> None:
    """Quantize rows of ``src`` ([n, C], bf16 as uint16 bits or fp16) into ``out`` ([n, C] int8)."""
    n, c = src.shape
    rows = max(1, min(n, CHUNK_ELEMENTS // max(c, 1)))
    bits = np.empty((rows, c), np.uint32)
    tiled_s = np.tile(scales, (rows, 1))
    tiled_z = None if zps is None else np.tile(zps, (rows, 1))
    is_bf16 = src.dtype == np.uint16
    with np.errstate(all="ignore"):  # inf, NaN and zero scales are defined by the contract, not errors
        _quantize_chunks(src, out, bits, tiled_s, tiled_z, rows, is_bf16)


def _quantize_chunks(src: Array, out: Array, bits: Array, tiled_s: Array, tiled_z: Array | None, rows: int,
                     is_bf16: bool) -> None:
    y = bits.view(np.float32)
    for r0 in range(0, src.shape[0], rows):
        part = src[r0 : r0 + rows]
        m = part.shape[0]
        yy = y[:m]
        if is_bf16:
            np.left_shift(part, 16, out=bits[:m], dtype=np.uint32)  # bf16 is the top half of a float32
        else:
            np.copyto(yy, part)
        np.divide(yy, tiled_s[:m], out=yy)  # a true division, as the device does
        if tiled_z is not None:
            np.add(yy, tiled_z[:m], out=yy)
        np.clip(yy, _LOW, _HIGH, out=yy)  # clamping first is exact: the bounds are integers
        np.rint(yy, out=yy)  # round half to even
        dst = out[r0 : r0 + m]
        np.copyto(dst, yy, casting="unsafe")
        if np.isnan(np.maximum.reduce(yy, axis=None)):  # maximum propagates NaN (and is 5x cheaper than a sum)
            dst[np.isnan(yy)] = 0


def quantize(updates: Array, quant_scales: Array, quant_zero_points: Array | None = None) -> Array:
    """Quantize ``updates`` per channel of the last dimension to int8, as the contract defines.

    >>> import numpy as np, ml_dtypes
    >>> u = np.array([[[1.0, -3.0, 1000.0, np.nan]]], ml_dtypes.bfloat16)
    >>> quantize(u, np.array([0.5, 2, 2, 1], ml_dtypes.bfloat16)).tolist()
    [[[2, -2, 127, 0]]]
    """
    updates = np.asarray(updates)
    channels = updates.shape[-1]
    out = np.empty(updates.shape, np.int8)
    if updates.size == 0:
        return out
    scales = _channel_vector(quant_scales, channels)
    zps = _channel_vector(quant_zero_points, channels)
    assert scales is not None
    if updates.dtype == BFLOAT16:
        src = np.ascontiguousarray(updates).view(np.uint16).reshape(-1, channels)
    elif updates.dtype == FLOAT16:
        src = np.ascontiguousarray(updates).reshape(-1, channels)
    else:
        raise InvalidDtypeError("dtype_combo", "updates", f"must be bfloat16 or float16, got {updates.dtype}")
    flat_out = out.reshape(-1, channels)
    n = src.shape[0]
    workers = thread_count() if updates.size >= MIN_PARALLEL_ELEMENTS else 1
    if workers == 1:
        _quantize_rows(src, flat_out, scales, zps)
        return out
    step = -(-n // workers)
    jobs = [_executor().submit(_quantize_rows, src[i : i + step], flat_out[i : i + step], scales, zps)
            for i in range(0, n, step)]
    for job in jobs:
        job.result()
    return out


def scatter(self: Array, indices: Array, quantized: Array, plan: Plan) -> None:
    """Write each batch row's quantized block into ``self`` (in place) at its index along ``plan.axis``.

    >>> import numpy as np
    >>> from pyacl_qscatter.contract import check_arguments
    >>> import ml_dtypes
    >>> s = np.zeros((2, 3, 32), np.int8)
    >>> q = np.ones((2, 1, 32), np.int8)
    >>> plan = check_arguments(s, np.array([2, 0]), q.astype(ml_dtypes.bfloat16),
    ...                        np.ones(32, ml_dtypes.bfloat16), None, 1, -1, "update")
    >>> scatter(s, np.array([2, 0]), q, plan); s[:, :, 0].tolist()
    [[0, 0, 1], [1, 0, 0]]
    """
    a, block = plan.axis, plan.block
    idx = np.asarray(indices).astype(np.int64, copy=False)
    if plan.indices_2d:
        dest, start = idx[:, 0], idx[:, 1]
    else:
        dest, start = np.arange(idx.shape[0]), idx
    # Bring axis next to the batch axis: target[dest[b], start[b] + k, ...] = q[b, k, ...].
    target = np.moveaxis(self, a, 1)
    source = np.moveaxis(quantized, a, 1)
    if idx.shape[0] <= SLICED_ROWS:  # one block copy per row: about 3x faster than fancy indexing
        for b, (d, s) in enumerate(zip(dest.tolist(), start.tolist(), strict=True)):
            target[d, s : s + block] = source[b]
        return
    positions = start[:, None] + np.arange(block)[None, :]
    target[dest[:, None], positions] = source


def run(plan: Plan, self: Array, indices: Array, updates: Array, quant_scales: Array,
        quant_zero_points: Array | None, *, skip_negative: bool = False) -> None:
    """Run the checked operation on host arrays: quantize, then scatter into ``self`` in place.
    With ``skip_negative``, padding rows (a negative index) write nothing and are not even quantized.

    >>> import numpy as np, ml_dtypes
    >>> from pyacl_qscatter.contract import check_arguments
    >>> bf = ml_dtypes.bfloat16
    >>> s, i, u, sc = np.zeros((1, 2, 32), np.int8), np.array([1]), np.ones((1, 1, 32), bf), np.ones(32, bf)
    >>> run(check_arguments(s, i, u, sc, None, 1, -1, "update"), s, i, u, sc, None); s[0, :, 0].tolist()
    [0, 1]
    >>> run(check_arguments(s, i, u, sc, None, 1, -1, "update"), s, np.array([-1]), 2 * u, sc, None,
    ...     skip_negative=True); s[0, :, 0].tolist()
    [0, 1]
    """
    if plan.empty:
        return
    if skip_negative:
        plan, indices, updates = drop_padding(plan, indices, updates)
    scatter(self, indices, quantize(updates, quant_scales, quant_zero_points), plan)
