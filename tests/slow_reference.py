"""A deliberately simple, loop-based oracle for QuantScatter (shared/spec/quant_scatter.md).

Independent of pyacl_qscatter on purpose: it never imports the package, does no validation beyond a few
asserts, and spells every step of the spec out as scalar float32 arithmetic in plain Python loops:

    x = float32(update); y = x / float32(scale[c]); y = y + float32(zp[c]); q = rint(y); NaN -> 0;
    q = clamp(q, -128, 127)

It expects inputs already in a legal dtype combination (bf16/bf16[/bf16] or fp16/fp32[/int32]).
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["quantize_one", "slow_quant_scatter", "vector_quant_scatter", "written_mask"]

_F32 = np.float32


def quantize_one(update: object, scale: np.float32, zero_point: np.float32 | None) -> int:
    """Quantize one element exactly as the spec says, returning a Python int in [-128, 127]."""
    with np.errstate(all="ignore"):
        x = _F32(update)  # exact for bfloat16 and float16
        y = _F32(x / scale)  # float32 / float32: one correctly rounded IEEE division
        if zero_point is not None:
            y = _F32(y + zero_point)  # second, separately rounded operation
        if np.isnan(y):
            return 0
        q = np.rint(y)  # round half to even, stays float32
        if q > 127:
            return 127
        if q < -128:
            return -128
        return int(q)


def _normalise_axis(axis: int, rank: int) -> int:
    a = int(axis)
    return a + rank if a < 0 else a


def _destination(indices: np.ndarray, b: int) -> tuple[int, int]:
    """(destination batch, block start) for batch row ``b``."""
    if indices.ndim == 1:
        return b, int(indices[b])
    return int(indices[b, 0]), int(indices[b, 1])


def slow_quant_scatter(
    self_arr: np.ndarray,
    indices: np.ndarray,
    updates: np.ndarray,
    quant_scales: np.ndarray,
    quant_zero_points: np.ndarray | None = None,
    axis: int = -2,
) -> np.ndarray:
    """Return a new int8 array: ``self_arr`` with the quantized blocks of ``updates`` written in."""
    out = np.array(self_arr, dtype=np.int8, copy=True)
    rank = out.ndim
    a = _normalise_axis(axis, rank)
    assert 1 <= a <= rank - 2, "axis must be neither the first nor the last dimension"
    assert updates.ndim == rank
    last = updates.shape[-1]

    scales = [_F32(s) for s in np.asarray(quant_scales).reshape(-1)]
    assert len(scales) == last
    zps: list[np.float32] | None = None
    if quant_zero_points is not None:
        zps = [_F32(z) for z in np.asarray(quant_zero_points).reshape(-1)]
        assert len(zps) == last

    batch = updates.shape[0]
    block = updates.shape[a]
    # dims other than batch, the axis and the last one
    middle = [d for d in range(1, rank - 1) if d != a]
    middle_ranges = [range(updates.shape[d]) for d in middle]

    for b in range(batch):
        dst_batch, start = _destination(indices, b)
        for k in range(block):
            for rest in itertools.product(*middle_ranges):
                src = [0] * rank
                src[0] = b
                src[a] = k
                for d, j in zip(middle, rest, strict=True):
                    src[d] = j
                dst = list(src)
                dst[0] = dst_batch
                dst[a] = start + k
                for c in range(last):
                    src[-1] = c
                    dst[-1] = c
                    zp = None if zps is None else zps[c]
                    out[tuple(dst)] = quantize_one(updates[tuple(src)], scales[c], zp)
    return out


def written_mask(self_shape: tuple[int, ...], indices: np.ndarray, updates_shape: tuple[int, ...],
                 axis: int = -2) -> np.ndarray:
    """Boolean mask of the positions of ``self`` that the operation writes."""
    rank = len(self_shape)
    a = _normalise_axis(axis, rank)
    mask = np.zeros(self_shape, dtype=bool)
    block = updates_shape[a]
    for b in range(updates_shape[0]):
        dst_batch, start = _destination(indices, b)
        sl: list[slice | int] = [slice(None)] * rank
        sl[0] = dst_batch
        sl[a] = slice(start, start + block)
        mask[tuple(sl)] = True
    return mask


def vector_quant_scatter(
    self_arr: np.ndarray,
    indices: np.ndarray,
    updates: np.ndarray,
    quant_scales: np.ndarray,
    quant_zero_points: np.ndarray | None = None,
    axis: int = -2,
) -> np.ndarray:
    """The same spec with whole-array float32 NumPy ops, for inputs too large for the loops.

    Not a second source of truth: tests cross-check it against `slow_quant_scatter` on every generated case.
    """
    out = np.array(self_arr, dtype=np.int8, copy=True)
    rank = out.ndim
    a = _normalise_axis(axis, rank)
    last = updates.shape[-1]
    with np.errstate(all="ignore"):
        x = np.asarray(updates).astype(np.float32)
        y = x / np.asarray(quant_scales).reshape(last).astype(np.float32)
        assert y.dtype == np.float32
        if quant_zero_points is not None:
            y = y + np.asarray(quant_zero_points).reshape(last).astype(np.float32)
            assert y.dtype == np.float32
        q = np.rint(y)
        q[np.isnan(q)] = 0
        q = np.clip(q, -128, 127).astype(np.int8)
    block = updates.shape[a]
    for b in range(updates.shape[0]):
        dst_batch, start = _destination(indices, b)
        sl: list[slice | int] = [slice(None)] * rank
        sl[0] = dst_batch
        sl[a] = slice(start, start + block)
        out[tuple(sl)] = q[b]
    return out
