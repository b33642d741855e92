"""The QuantScatter contract: every check of shared/spec/quant_scatter.md, written once for every backend.

`check_arguments` looks only at dtypes and shapes (so it works on NumPy arrays and on device arrays alike)
and returns a `Plan`; `check_indices` looks at the index values (ranges and overlapping blocks, which
CANN itself never checks). Both raise `InvalidValueError` or `InvalidDtypeError` before anything changes.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .dtypes import BFLOAT16, FLOAT16, FLOAT32, INT8, INT32, INT64, dtype_name
from .errors import InvalidDtypeError, InvalidValueError

__all__ = ["PRODUCTS", "Plan", "Product", "check_arguments", "check_indices", "drop_padding", "padding_rows",
           "resolve_product"]


class ArrayLike(Protocol):
    """Anything with a NumPy dtype and a shape: a NumPy array or a DeviceArray."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...


@dataclass(frozen=True)
class Product:
    """An Ascend product family and the rules QuantScatter follows on it.

    >>> PRODUCTS["950"].alignment, PRODUCTS["310P"].bf16
    (False, False)
    """

    name: str
    soc_prefix: str
    alignment: bool  # last dim must be a multiple of 32 elements
    bf16: bool  # the BF16 combination is supported
    v2: bool  # aclnnInplaceQuantScatterV2 exists there


PRODUCTS: dict[str, Product] = {
    "A2": Product("A2", "Ascend910B", alignment=True, bf16=True, v2=False),
    "A3": Product("A3", "Ascend910_93", alignment=True, bf16=True, v2=False),
    "310P": Product("310P", "Ascend310P", alignment=True, bf16=False, v2=False),
    "950": Product("950", "Ascend950", alignment=False, bf16=True, v2=True),
}
ALIGN_ELEMENTS = 32
MIN_RANK, MAX_RANK = 3, 8


def resolve_product(product: str | Product | None) -> Product:
    """Turn a family name ("A2", "A3", "310P", "950"), a SoC name or None (A2) into a `Product`.

    An unknown SoC name gets the A2 rules, the strictest that allow both dtype combinations.

    >>> resolve_product("Ascend950PR").name, resolve_product(None).name
    ('950', 'A2')
    """
    if product is None:
        return PRODUCTS["A2"]
    if isinstance(product, Product):
        return product
    if not isinstance(product, str):
        raise InvalidDtypeError("product", "product", f"expected a str such as 'A2' or a SoC name, got "
                                f"{type(product).__name__}")
    if product in PRODUCTS:
        return PRODUCTS[product]
    # Longest prefix first: "Ascend910_93" must not match as "Ascend910B".
    for known in sorted(PRODUCTS.values(), key=lambda p: -len(p.soc_prefix)):
        if product.startswith(known.soc_prefix):
            return known
    if product.startswith("Ascend910"):
        return PRODUCTS["A2"]
    raise InvalidValueError("product", "product", f"expected one of {sorted(PRODUCTS)} or an Ascend SoC "
                            f"name, got {product!r}")


@dataclass(frozen=True)
class Plan:
    """What the checks established: normalised axes and the sizes a backend needs."""

    rank: int
    axis: int  # normalised, 1..rank-2
    quant_axis: int  # normalised, rank-1
    self_shape: tuple[int, ...]
    updates_shape: tuple[int, ...]
    batch: int  # B: rows of indices and updates
    block: int  # U: positions each batch row writes along axis
    channels: int  # C: last dimension, one scale (and zero point) each
    indices_2d: bool
    has_zero_points: bool
    combo: str  # "bf16" or "fp16"
    product: Product
    empty: bool  # some input has no elements: the call is a no-op


# (updates, scales, zero points) dtypes that exist in CANN.
COMBOS: dict[str, tuple[np.dtype[Any], np.dtype[Any], np.dtype[Any]]] = {
    "bf16": (BFLOAT16, BFLOAT16, BFLOAT16),
    "fp16": (FLOAT16, FLOAT32, INT32),
}


def _as_int(value: object, param: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise InvalidDtypeError(param, param, f"expected an int, got a bool ({value!r})")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidDtypeError(param, param, f"expected an int, got {type(value).__name__} "
                                f"({value!r})") from None


def _shape_dtype(value: object, param: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if not isinstance(shape, tuple) or not isinstance(dtype, np.dtype):
        raise InvalidDtypeError(param, param, f"expected an array, got {type(value).__name__}")
    return shape, dtype


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def check_arguments(
    self: ArrayLike,
    indices: ArrayLike,
    updates: ArrayLike,
    quant_scales: ArrayLike,
    quant_zero_points: ArrayLike | None,
    axis: int,
    quant_axis: int,
    reduce: str,
    product: str | Product | None = None,
    *,
    skip_negative: bool = False,
) -> Plan:
    """Check dtypes, ranks, axes, shapes and counts; return the normalised `Plan`. With ``skip_negative``
    the 1-D rule ``updates.shape[0] <= self.shape[0]`` concerns the rows that are not padding, so
    `check_indices` makes it on the index values.

    >>> import numpy as np, ml_dtypes
    >>> bf = ml_dtypes.bfloat16
    >>> plan = check_arguments(np.zeros((2, 4, 32), np.int8), np.array([0, 1], np.int32),
    ...                        np.ones((2, 1, 32), bf), np.ones(32, bf), None, -2, -1, "update")
    >>> plan.axis, plan.block, plan.combo
    (1, 1, 'bf16')
    """
    prod = resolve_product(product)
    self_shape, self_dtype = _shape_dtype(self, "self")
    idx_shape, idx_dtype = _shape_dtype(indices, "indices")
    upd_shape, upd_dtype = _shape_dtype(updates, "updates")
    sc_shape, sc_dtype = _shape_dtype(quant_scales, "quant_scales")
    zp = None if quant_zero_points is None else _shape_dtype(quant_zero_points, "quant_zero_points")

    if self_dtype != INT8:
        raise InvalidDtypeError("self_dtype", "self", f"must be int8, got {dtype_name(self_dtype)}")
    if idx_dtype not in (INT32, INT64):
        raise InvalidDtypeError("indices_dtype", "indices", f"must be int32 or int64, got "
                                f"{dtype_name(idx_dtype)}")
    combo = _check_combo(upd_dtype, sc_dtype, None if zp is None else zp[1], prod)

    rank = len(self_shape)
    if not MIN_RANK <= rank <= MAX_RANK:
        raise InvalidValueError("rank", "self", f"must have {MIN_RANK} to {MAX_RANK} dimensions, got "
                                f"{rank} (shape {self_shape})")
    if len(upd_shape) != rank:
        raise InvalidValueError("rank_mismatch", "updates", f"must have the rank of self ({rank}), got "
                                f"{len(upd_shape)} (shape {upd_shape})")
    a = _normalise_axis(_as_int(axis, "axis"), rank)
    qa = _as_int(quant_axis, "quant_axis")
    if not -rank <= qa < rank or qa % rank != rank - 1:
        raise InvalidValueError("quant_axis", "quant_axis", f"must be the last dimension ({rank - 1} or -1)"
                                f", got {quant_axis!r}")
    if not isinstance(reduce, str):
        raise InvalidDtypeError("reduce", "reduce", f"must be the str 'update', got {type(reduce).__name__}")
    if reduce != "update":
        raise InvalidValueError("reduce", "reduce", f"only 'update' is supported, got {reduce!r}")

    empty = any(_size(s) == 0 for s in (self_shape, idx_shape, upd_shape, sc_shape))
    plan = Plan(rank=rank, axis=a, quant_axis=rank - 1, self_shape=self_shape, updates_shape=upd_shape,
                batch=upd_shape[0], block=upd_shape[a], channels=upd_shape[-1], indices_2d=len(idx_shape) == 2,
                has_zero_points=zp is not None, combo=combo, product=prod, empty=empty)
    if empty:
        return plan

    if prod.alignment:
        for param, shape in (("self", self_shape), ("updates", upd_shape)):
            if shape[-1] % ALIGN_ELEMENTS:
                raise InvalidValueError("alignment", param, f"last dimension must be a multiple of "
                                        f"{ALIGN_ELEMENTS} elements (32-byte aligned) on {prod.name}, got "
                                        f"{shape[-1]} (shape {shape}); Ascend 950 lifts this rule")
    if len(idx_shape) not in (1, 2) or (len(idx_shape) == 2 and idx_shape[1] != 2):
        raise InvalidValueError("indices_2d_shape", "indices", f"must have shape [B] or [B, 2], got "
                                f"{idx_shape}")
    if idx_shape[0] != upd_shape[0]:
        raise InvalidValueError("batch_mismatch", "indices", f"must have as many rows as updates.shape[0] "
                                f"({upd_shape[0]}), got {idx_shape[0]}")
    if len(idx_shape) == 1 and upd_shape[0] > self_shape[0] and not skip_negative:
        raise InvalidValueError("batch_mismatch", "updates", f"with 1-D indices, updates.shape[0] must be <= "
                                f"self.shape[0] ({self_shape[0]}), got {upd_shape[0]}")
    for d in range(1, rank):
        ok = upd_shape[d] <= self_shape[d] if d == a else upd_shape[d] == self_shape[d]
        if not ok:
            rule = "<=" if d == a else "=="
            raise InvalidValueError("update_dim_mismatch", "updates", f"dimension {d} must be {rule} "
                                    f"self's ({self_shape[d]}), got {upd_shape[d]} (updates {upd_shape}, "
                                    f"self {self_shape}, axis {a})")
    channels = upd_shape[-1]
    if _size(sc_shape) != channels:
        raise InvalidValueError("scales_count", "quant_scales", f"must have updates.shape[-1] = {channels} "
                                f"elements, got {_size(sc_shape)} (shape {sc_shape})")
    if zp is not None and _size(zp[0]) != channels:
        raise InvalidValueError("zp_count", "quant_zero_points", f"must have updates.shape[-1] = {channels} "
                                f"elements, got {_size(zp[0])} (shape {zp[0]})")
    return plan


def _normalise_axis(axis: int, rank: int) -> int:
    a = axis + rank if axis < 0 else axis
    if a <= 0:
        what = "is the first dimension" if a == 0 else "is out of range"
        raise InvalidValueError("axis_first", "axis", f"must satisfy 1 <= axis <= rank-2 = {rank - 2} "
                                f"(normalised), got {axis} which {what}")
    if a >= rank - 1:
        what = "is the last dimension" if a == rank - 1 else "is out of range"
        raise InvalidValueError("axis_last", "axis", f"must satisfy 1 <= axis <= rank-2 = {rank - 2} "
                                f"(normalised), got {axis} which {what}")
    return a


def _check_combo(upd: np.dtype[Any], sc: np.dtype[Any], zp: np.dtype[Any] | None, prod: Product) -> str:
    for combo, (u, s, z) in COMBOS.items():
        if upd == u:
            if sc != s or (zp is not None and zp != z):
                given = f"updates {dtype_name(upd)}, quant_scales {dtype_name(sc)}"
                if zp is not None:
                    given += f", quant_zero_points {dtype_name(zp)}"
                raise InvalidDtypeError("dtype_combo", "quant_scales" if sc != s else "quant_zero_points",
                                        f"dtypes must be (bfloat16, bfloat16, bfloat16) or (float16, float32, "
                                        f"int32); got {given}")
            if combo == "bf16" and not prod.bf16:
                raise InvalidDtypeError("dtype_combo", "updates", f"bfloat16 is not supported on {prod.name}; "
                                        "use float16 updates with float32 scales and int32 zero points")
            return combo
    raise InvalidDtypeError("dtype_combo", "updates", f"must be bfloat16 or float16, got {dtype_name(upd)}")


def padding_rows(indices: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Which batch rows are padding under ``skip_negative=True``: a negative index (either column in 2-D).

    >>> padding_rows(np.array([[0, 1], [-1, -1], [2, -1]])).tolist()
    [False, True, True]
    """
    negative: np.ndarray[Any, Any] = np.asarray(indices) < 0
    return np.any(negative, axis=1) if negative.ndim == 2 else negative


def drop_padding(plan: Plan, indices: np.ndarray[Any, Any], updates: np.ndarray[Any, Any]
                 ) -> tuple[Plan, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The call without its padding rows, in the 2-D index form (so that 1-D rows keep their destination
    batch): ``(plan, indices [n, 2] int64, updates rows)``. Host arrays only.

    >>> import ml_dtypes
    >>> bf = ml_dtypes.bfloat16
    >>> plan = check_arguments(np.zeros((3, 4, 32), np.int8), np.zeros(3, np.int32), np.ones((3, 1, 32), bf),
    ...                        np.ones(32, bf), None, 1, -1, "update")
    >>> kept, idx, upd = drop_padding(plan, np.array([2, -1, 0]), np.ones((3, 1, 32), bf))
    >>> idx.tolist(), upd.shape, kept.batch
    ([[0, 2], [2, 0]], (2, 1, 32), 2)
    """
    idx = np.asarray(indices).astype(np.int64, copy=False)
    keep = ~padding_rows(idx)
    pairs = idx[keep] if plan.indices_2d else np.stack([np.flatnonzero(keep), idx[keep]], axis=1)
    rows = np.asarray(updates)[keep]
    return dataclasses.replace(plan, indices_2d=True, batch=int(keep.sum()), updates_shape=rows.shape), pairs, rows


def check_indices(plan: Plan, indices: np.ndarray[Any, Any], *, skip_negative: bool = False) -> None:
    """Check index values: every block inside self, no two blocks of one destination overlapping.
    With ``skip_negative``, padding rows (`padding_rows`) are left out of every check.

    >>> import numpy as np, ml_dtypes
    >>> bf = ml_dtypes.bfloat16
    >>> plan = check_arguments(np.zeros((1, 4, 32), np.int8), np.zeros((2, 2), np.int32),
    ...                        np.ones((2, 2, 32), bf), np.ones(32, bf), None, 1, -1, "update")
    >>> check_indices(plan, np.array([[0, 0], [0, 1]]))
    Traceback (most recent call last):
    ...
    pyacl_qscatter.errors.InvalidValueError: indices: rows 0 and 1 write overlapping blocks ...
    """
    if plan.empty:
        return
    idx = np.asarray(indices).astype(np.int64, copy=False)
    n_dest, size, block = plan.self_shape[0], plan.self_shape[plan.axis], plan.block
    rows = np.arange(idx.shape[0])
    if skip_negative:
        rows = np.flatnonzero(~padding_rows(idx))
        idx = idx[rows]
    if plan.indices_2d:
        dest, start = idx[:, 0], idx[:, 1]
        _check_range(dest, rows, 0, n_dest - 1, "column 0 (destination batch)", f"[0, {n_dest})")
    else:
        dest, start = rows, idx
        if rows.size and int(rows[-1]) >= n_dest:  # only reachable with padding (else a shape error)
            raise InvalidValueError("batch_mismatch", "indices", f"with 1-D indices, row b writes batch b of self: "
                                    f"row {int(rows[-1])} is not padding but self.shape[0] is {n_dest}")
    _check_range(start, rows, 0, size - block, "start", f"[0, {size - block}] (self.shape[{plan.axis}] = {size} "
                 f"minus block height {block})")
    if plan.indices_2d and len(start) > 1:
        order = np.lexsort((start, dest))
        d, s = dest[order], start[order]
        clash = np.flatnonzero((d[1:] == d[:-1]) & (s[1:] - s[:-1] < block))
        if clash.size:
            i, j = sorted((int(order[clash[0]]), int(order[clash[0] + 1])))
            raise InvalidValueError("overlap", "indices", f"rows {int(rows[i])} and {int(rows[j])} write "
                                    f"overlapping blocks of {block} positions into destination batch "
                                    f"{int(d[clash[0]])} (starts {int(start[i])} and {int(start[j])}); blocks must "
                                    "not overlap")


def _check_range(values: np.ndarray[Any, Any], rows: np.ndarray[Any, Any], low: int, high: int, what: str,
                 allowed: str) -> None:
    if values.size == 0:
        return
    lo, hi = int(values.min()), int(values.max())
    if lo < low:
        i = int(np.argmax(values < low))
        raise InvalidValueError("index_negative", "indices", f"{what} of row {int(rows[i])} must be in {allowed}, "
                                f"got {int(values[i])} (skip_negative=True makes negative rows padding)")
    if hi > high:
        i = int(np.argmax(values > high))
        raise InvalidValueError("index_too_large", "indices", f"{what} of row {int(rows[i])} must be in {allowed}, "
                                f"got {int(values[i])}")
