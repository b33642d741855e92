"""Property tests: the NumPy reference backend against the independent loop oracle in slow_reference.py.

Hypothesis draws the structure of a case (rank, axis and its sign, dtype combination, zero points or not,
1-D or 2-D indices and their dtype, last dim, scale layout, product) and a seed; the seed drives NumPy's
generator for shapes, block starts and values, with deliberate weight on the edges of the contract: the
last legal start S - U, ties at .5, NaN, +-inf, huge and subnormal values, zero and negative scales, int32
zero points beyond float32's exact range.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from slow_reference import quantize_one, slow_quant_scatter, vector_quant_scatter, written_mask

import pyacl_qscatter as pq
from pyacl_qscatter.errors import ContractError, InvalidValueError, QScatterError
from pyacl_qscatter.reference import SLICED_ROWS

BF16 = np.dtype(ml_dtypes.bfloat16)
COMBOS: dict[str, tuple[np.dtype, np.dtype, np.dtype]] = {
    "bf16": (BF16, BF16, BF16),
    "fp16": (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.int32)),
}
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_SPECIAL_UPDATES = np.array(
    [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-30, -1e-30, 6e-8, -6e-8, 1e-40, -1e-40,
     65504.0, -65504.0, 0.5, -0.5, 1.5, 2.5, -2.5, 126.5, 127.5, -127.5, -128.5, 128.0, -129.0, 3e38]
)
_SPECIAL_SCALES = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-38, 1e-45, 1e-40, 3e38, 1e38, 1.0, -1.0, 0.5, 2.0**-7,
     65504.0, 6e-8, 1e-3]
)
_SPECIAL_ZP_FLOAT = np.array([np.nan, np.inf, -np.inf, 1e30, -0.0, 0.5, -0.5, 127.5, -128.5, 255.0])
_SPECIAL_ZP_INT = np.array(
    [2**31 - 1, -(2**31), 2**24 + 1, -(2**24 + 1), 10**9, 128, -128, 127, -129, 0], dtype=np.int64
)


# ----------------------------------------------------------------------------------------------- values
def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dtype)


def updates_values(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    n = math.prod(shape)
    kind = rng.integers(0, 6, n)
    vals = rng.normal(0.0, 60.0, n)
    vals = np.where(kind == 1, rng.integers(-300, 300, n) + 0.5, vals)  # ties after a power-of-2 scale
    vals = np.where(kind == 2, rng.choice(_SPECIAL_UPDATES, n), vals)
    vals = np.where(kind == 3, rng.normal(0.0, 1.0, n) * 10.0 ** rng.integers(-8, 9, n), vals)
    out = _cast(vals, dtype)
    bits = rng.integers(0, 1 << 16, n, dtype=np.uint16).view(dtype)  # every bf16/fp16 pattern, NaNs too
    out[kind == 4] = bits[kind == 4]
    return out.reshape(shape)


def scale_values(rng: np.random.Generator, n: int, dtype: np.dtype) -> np.ndarray:
    kind = rng.integers(0, 8, n)
    sign = rng.choice([1.0, -1.0], n, p=[0.8, 0.2])
    vals = sign * 10.0 ** rng.uniform(-3.0, 3.0, n)
    vals = np.where(kind == 1, sign * 2.0 ** rng.integers(-10, 11, n), vals)
    vals = np.where(kind == 2, rng.choice(_SPECIAL_SCALES, n), vals)
    vals = np.where(kind == 3, rng.uniform(0.05, 2.0, n), vals)
    return _cast(vals, dtype)


def zero_point_values(rng: np.random.Generator, n: int, dtype: np.dtype) -> np.ndarray:
    kind = rng.integers(0, 5, n)
    if dtype == np.int32:
        vals = rng.integers(-300, 301, n)
        vals = np.where(kind == 1, rng.choice(_SPECIAL_ZP_INT, n), vals)
        return vals.astype(np.int32)
    fvals = rng.integers(-300, 301, n).astype(np.float64)
    fvals = np.where(kind == 1, rng.integers(-200, 200, n) + 0.5, fvals)
    fvals = np.where(kind == 2, rng.normal(0.0, 50.0, n), fvals)
    fvals = np.where(kind == 3, rng.choice(_SPECIAL_ZP_FLOAT, n), fvals)
    return _cast(fvals, dtype)


# ------------------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    self_arr: np.ndarray
    indices: np.ndarray
    updates: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    axis: int
    quant_axis: int = -1
    extra: dict[str, Any] = field(default_factory=dict)  # product, strict, reduce

    def args(self) -> tuple[Any, ...]:
        return (self.indices, self.updates, self.scales)

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"axis": self.axis, "quant_axis": self.quant_axis, "backend": "cpu"}
        if self.zero_points is not None:
            kw["quant_zero_points"] = self.zero_points
        kw.update(self.extra)
        return kw

    def expected(self) -> np.ndarray:
        return slow_quant_scatter(self.self_arr, self.indices, self.updates, self.scales, self.zero_points,
                                  self.axis)

    def mask(self) -> np.ndarray:
        return written_mask(self.self_arr.shape, self.indices, self.updates.shape, self.axis)

    def describe(self) -> str:
        return (f"self{self.self_arr.shape} idx{self.indices.shape}{self.indices.dtype}="
                f"{self.indices.tolist()} "
                f"upd{self.updates.shape}{self.updates.dtype} scales{self.scales.shape}{self.scales.dtype} "
                f"zp={None if self.zero_points is None else self.zero_points.dtype} axis={self.axis} "
                f"quant_axis={self.quant_axis} extra={self.extra}")


def _start(rng: np.random.Generator, s: int, u: int) -> int:
    if rng.random() < 0.35:
        return s - u  # the last start that fits: accepted by the spec's decision
    return int(rng.integers(0, s - u + 1))


def build_case(
    rng: np.random.Generator,
    *,
    rank: int,
    a: int,
    negative_axis: bool,
    combo: str,
    with_zp: bool,
    idx_2d: bool,
    idx_dtype: type,
    last: int,
    scale_layout: str,
    batch: int | None = None,
) -> Case:
    upd_dt, sc_dt, zp_dt = COMBOS[combo]
    s = int(rng.integers(1, 9))
    u = int(rng.integers(1, s + 1))
    if rng.random() < 0.3:
        u = min(s, max(u, 2))  # blocks taller than one row, often
    dims = [0] * rank
    budget = 6
    middle = [d for d in range(1, rank - 1) if d != a]
    for d in rng.permutation(middle):
        dims[d] = int(rng.integers(1, max(1, min(3, budget)) + 1))
        budget //= dims[d]
    self_batch = int(rng.integers(1, 5))
    dims[0] = self_batch
    dims[a] = s
    dims[-1] = last

    if not idx_2d:
        b = int(rng.integers(1, self_batch + 1)) if batch is None else batch
        idx = np.array([_start(rng, s, u) for _ in range(b)], dtype=idx_dtype)
        if b:
            idx[int(rng.integers(0, b))] = s - u
    else:
        target = int(rng.integers(1, 7)) if batch is None else batch
        rows: list[tuple[int, int]] = []
        for _ in range(8 * target):
            if len(rows) == target:
                break
            cb, cs = int(rng.integers(0, self_batch)), _start(rng, s, u)
            if all(rb != cb or cs + u <= rs or rs + u <= cs for rb, rs in rows):
                rows.append((cb, cs))
        idx = np.array(rows, dtype=idx_dtype).reshape(len(rows), 2)
    b = idx.shape[0]

    upd_shape = (b, *dims[1:a], u, *dims[a + 1:])
    updates = updates_values(rng, upd_shape, upd_dt)
    scales = scale_values(rng, last, sc_dt)
    zps = zero_point_values(rng, last, zp_dt) if with_zp else None
    layouts = {
        "flat": (last,),
        "row": (1, last),
        "full": (1,) * (rank - 1) + (last,),
        "split": (2, last // 2) if last % 2 == 0 else (last, 1),
        "column": (last, 1),
    }
    scales = scales.reshape(layouts[scale_layout])
    if zps is not None and scale_layout == "full":
        zps = zps.reshape(layouts["full"])
    self_arr = rng.integers(-128, 128, tuple(dims), dtype=np.int8)
    axis = a - rank if negative_axis else a
    return Case(self_arr, idx, updates, scales, zps, axis)


@st.composite
def cases(
    draw: st.DrawFn,
    lasts: tuple[int, ...] = (32, 64),
    products: tuple[Any, ...] = (None, "A2", "A3", "950"),
    allow_extra: bool = True,
) -> Case:
    rank = draw(st.sampled_from(range(3, 9)))
    a = draw(st.integers(1, rank - 2))
    combo = draw(st.sampled_from(sorted(COMBOS)))
    case = build_case(
        np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
        rank=rank,
        a=a,
        negative_axis=draw(st.booleans()),
        combo=combo,
        with_zp=draw(st.booleans()),
        idx_2d=draw(st.booleans()),
        idx_dtype=draw(st.sampled_from([np.int32, np.int64])),
        last=draw(st.sampled_from(lasts)),
        scale_layout=draw(st.sampled_from(["flat", "row", "full", "split", "column"])),
    )
    if allow_extra:
        case.quant_axis = draw(st.sampled_from([-1, rank - 1]))
        choices = products + (("310P",) if combo == "fp16" else ())
        product = draw(st.sampled_from(choices))
        if product is not None:
            case.extra["product"] = product
        if draw(st.booleans()):
            case.extra["strict"] = True  # every input is already in its native dtype
        if draw(st.booleans()):
            case.extra["reduce"] = "update"
    return case


def _snapshot(case: Case) -> list[tuple[np.ndarray, np.ndarray]]:
    arrs = [case.self_arr, case.indices, case.updates, case.scales]
    if case.zero_points is not None:
        arrs.append(case.zero_points)
    return [(arr, arr.copy()) for arr in arrs]


def _assert_untouched(snap: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for arr, before in snap:
        assert arr.dtype == before.dtype and arr.shape == before.shape
        assert arr.tobytes() == before.tobytes()


def _events(case: Case) -> None:
    rank = case.self_arr.ndim
    a = case.axis % rank
    starts = case.indices[:, 1] if case.indices.ndim == 2 else case.indices
    u, size = case.updates.shape[a], case.self_arr.shape[a]
    upd = case.updates.astype(np.float32)
    scales = case.scales.astype(np.float32)
    event(f"rank {rank}, axis {'negative' if case.axis < 0 else 'positive'}")
    event(f"indices {case.indices.ndim}-D {case.indices.dtype}")
    event(f"updates {case.updates.dtype}, zero points {case.zero_points is not None}")
    for flag, label in [
        (u > 1, "block taller than one row"),
        (bool(np.any(starts == size - u)), "a block ends exactly at S"),
        (bool(np.isnan(upd).any()), "NaN update"),
        (bool(np.isinf(upd).any()), "inf update"),
        (bool((scales == 0).any()), "zero scale"),
        (bool((scales < 0).any()), "negative scale"),
    ]:
        if flag:
            event(label)


def check_case(case: Case) -> None:
    if currently_in_test_context():
        note(case.describe())
        _events(case)
    expected = case.expected()
    mask = case.mask()
    # the oracles themselves: nothing outside the written blocks moves, and loops == whole-array ops
    assert np.array_equal(expected[~mask], case.self_arr[~mask])
    assert np.array_equal(expected, vector_quant_scatter(case.self_arr, case.indices, case.updates, case.scales,
                                                         case.zero_points, case.axis))

    snap = _snapshot(case)
    out = pq.quant_scatter(case.self_arr, *case.args(), **case.kwargs())
    _assert_untouched(snap)
    assert isinstance(out, np.ndarray)
    assert out is not case.self_arr
    assert not np.shares_memory(out, case.self_arr)
    assert out.dtype == np.int8 and out.shape == case.self_arr.shape
    assert np.array_equal(out[~mask], case.self_arr[~mask])
    np.testing.assert_array_equal(out, expected)

    target = case.self_arr.copy()
    others = _snapshot(case)[1:]
    ret = pq.quant_scatter_(target, *case.args(), **case.kwargs())
    assert ret is target
    _assert_untouched(others)
    np.testing.assert_array_equal(target, expected)


# ------------------------------------------------------------------------------------------------ tests
@PROPS
@given(cases())
def test_matches_slow_reference(case: Case) -> None:
    check_case(case)


@pytest.mark.parametrize(
    ("rank", "axis"),
    [(r, ax) for r in range(3, 9) for a in range(1, r - 1) for ax in (a, a - r)],
)
def test_every_rank_and_axis(rank: int, axis: int) -> None:
    a = axis + rank if axis < 0 else axis
    rng = np.random.default_rng(1000 * rank + 10 * a + (axis < 0))
    for combo, with_zp, idx_2d in [("bf16", True, False), ("fp16", True, True), ("bf16", False, True),
                                   ("fp16", False, False)]:
        case = build_case(rng, rank=rank, a=a, negative_axis=axis < 0, combo=combo, with_zp=with_zp,
                          idx_2d=idx_2d, idx_dtype=np.int32 if idx_2d else np.int64, last=32,
                          scale_layout="flat")
        assert case.axis == axis
        check_case(case)


@pytest.mark.parametrize("combo", sorted(COMBOS))
@pytest.mark.parametrize("idx_2d", [False, True])
def test_tall_block_at_last_start(combo: str, idx_2d: bool) -> None:
    """U > 1 and a block that ends exactly at S: start S - U is in bounds and accepted."""
    rng = np.random.default_rng(7)
    upd_dt, sc_dt, zp_dt = COMBOS[combo]
    s, u = 6, 4
    self_arr = rng.integers(-128, 128, (2, 3, s, 32), dtype=np.int8)
    idx = np.array([[1, s - u], [0, 0]] if idx_2d else [s - u, 1], dtype=np.int64)
    updates = updates_values(rng, (2, 3, u, 32), upd_dt)
    case = Case(self_arr, idx, updates, scale_values(rng, 32, sc_dt), zero_point_values(rng, 32, zp_dt), -2)
    check_case(case)


@pytest.mark.parametrize("idx_2d", [False, True])
def test_empty_batch_is_a_no_op(idx_2d: bool) -> None:
    rng = np.random.default_rng(3)
    self_arr = rng.integers(-128, 128, (2, 4, 32), dtype=np.int8)
    idx = np.zeros((0, 2) if idx_2d else (0,), dtype=np.int64)
    updates = np.zeros((0, 2, 32), dtype=BF16)
    scales = np.ones(32, dtype=BF16)
    before = self_arr.copy()
    out = pq.quant_scatter(self_arr, idx, updates, scales, backend="cpu")
    np.testing.assert_array_equal(out, before)
    ret = pq.quant_scatter_(self_arr, idx, updates, scales, backend="cpu")
    assert ret is self_arr
    np.testing.assert_array_equal(self_arr, before)


# --------------------------------------------------------------------------------- non-contiguous views
def _viewer(how: str, ndim: int) -> Any:
    if how == "step":
        return lambda base: base[tuple(slice(1, None, 2) for _ in range(ndim))]
    if how == "offset":
        return lambda base: base[tuple(slice(1, -1) for _ in range(ndim))]
    if how == "reverse":
        return lambda base: base[::-1]
    if how == "transpose":
        return lambda base: base.T
    raise AssertionError(how)


def _base_shape(how: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if how == "step":
        return tuple(2 * d + 1 for d in shape)
    if how == "offset":
        return tuple(d + 2 for d in shape)
    if how == "transpose":
        return shape[::-1]
    return shape


def embed(arr: np.ndarray, how: str, fill: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """A view equal to ``arr`` inside a larger (or differently strided) base filled with ``fill``."""
    viewer = _viewer(how, arr.ndim)
    base = np.full(_base_shape(how, arr.shape), fill, dtype=arr.dtype)
    view = viewer(base)
    assert view.shape == arr.shape
    view[...] = arr
    return view, base, viewer


VIEW_KINDS = ["step", "offset", "reverse", "transpose"]


@PROPS
@given(cases(allow_extra=False), st.sampled_from(VIEW_KINDS), st.sampled_from(VIEW_KINDS),
       st.integers(0, 2**32 - 1))
def test_strided_views(case: Case, self_how: str, other_how: str, seed: int) -> None:
    note(case.describe() + f" self_how={self_how} other_how={other_how}")
    expected = case.expected()
    rng = np.random.default_rng(seed)

    idx_view, idx_base, _ = embed(case.indices, other_how, 2**20)  # a stray read would be out of range
    upd_view, upd_base, _ = embed(case.updates, other_how, np.nan)
    sc_view, sc_base, _ = embed(case.scales, other_how, 0.0)
    zp_view = None
    bases = [idx_base, upd_base, sc_base]
    if case.zero_points is not None:
        zp_view, zp_base, _ = embed(case.zero_points, other_how, 0)
        bases.append(zp_base)
    assert np.array_equal(idx_view, case.indices)
    snap = [(b, b.copy()) for b in bases]

    viewer = _viewer(self_how, case.self_arr.ndim)
    self_base = rng.integers(-128, 128, _base_shape(self_how, case.self_arr.shape), dtype=np.int8)
    self_view = viewer(self_base)
    self_view[...] = case.self_arr
    base_before = self_base.copy()
    in_view = np.zeros(self_base.shape, dtype=bool)
    in_view.flat[viewer(np.arange(self_base.size).reshape(self_base.shape)).ravel()] = True

    kw = {"axis": case.axis, "backend": "cpu"}
    if zp_view is not None:
        kw["quant_zero_points"] = zp_view

    out = pq.quant_scatter(self_view, idx_view, upd_view, sc_view, **kw)
    np.testing.assert_array_equal(out, expected)
    assert self_base.tobytes() == base_before.tobytes()

    ret = pq.quant_scatter_(self_view, idx_view, upd_view, sc_view, **kw)
    assert ret is self_view
    np.testing.assert_array_equal(self_view, expected)  # written through the view into the base
    np.testing.assert_array_equal(self_base[~in_view], base_before[~in_view])  # and nowhere else
    _assert_untouched(snap)


# -------------------------------------------------------------------------------------------- products
UNALIGNED = (1, 2, 8, 16, 31, 33, 40, 48, 100)


@PROPS
@given(cases(lasts=UNALIGNED, allow_extra=False))
def test_950_lifts_alignment_and_a2_rules_reject_it(case: Case) -> None:
    case.extra["product"] = "950"
    check_case(case)
    combo = "fp16" if case.updates.dtype == np.float16 else "bf16"
    rejecting: list[Any] = [None, "A2", "A3"] + (["310P"] if combo == "fp16" else [])
    for product in rejecting:
        kw = replace(case, extra={} if product is None else {"product": product}).kwargs()
        for fn in (pq.quant_scatter_, pq.quant_scatter):
            target = case.self_arr.copy()
            with pytest.raises(InvalidValueError) as info:
                fn(target, *case.args(), **kw)
            err = info.value
            assert isinstance(err, ContractError) and isinstance(err, QScatterError)
            assert isinstance(err, ValueError)
            assert err.kind == "alignment", (product, err.kind, str(err))
            assert err.param in ("self", "updates")
            assert err.param in str(err)
            assert target.tobytes() == case.self_arr.tobytes()


def test_default_product_is_a2() -> None:
    rng = np.random.default_rng(11)
    case = build_case(rng, rank=4, a=2, negative_axis=False, combo="bf16", with_zp=True, idx_2d=True,
                      idx_dtype=np.int64, last=64, scale_layout="flat")
    a = pq.quant_scatter(case.self_arr, *case.args(), **case.kwargs())
    b = pq.quant_scatter(case.self_arr, *case.args(), **case.kwargs(), product="A2")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, case.expected())


# ------------------------------------------------------------------------------------------ large inputs
LARGE = {
    # name: (product, combo, self shape, updates shape, axis, 2-D indices)
    "chunked_a2_bf16": (None, "bf16", (3, 40, 40, 96), (3, 30, 40, 96), 1, False),  # > 2**18 elements
    "threaded_a2_fp16": (None, "fp16", (4, 64, 44, 96), (4, 64, 43, 96), -2, True),  # > 2**20 elements
    "threaded_950_odd_channels": ("950", "bf16", (3, 40, 270, 33), (3, 40, 265, 33), 2, False),
    "threaded_950_one_channel": ("950", "fp16", (2, 9, 70000, 1), (2, 8, 70000, 1), 1, True),
}


@pytest.mark.parametrize("name", sorted(LARGE))
def test_large_inputs_match_the_whole_array_oracle(name: str) -> None:
    """Sizes past the reference's chunk and thread thresholds, odd channel counts, checked element-wise."""
    product, combo, self_shape, upd_shape, axis, idx_2d = LARGE[name]
    upd_dt, sc_dt, zp_dt = COMBOS[combo]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    a = axis % len(self_shape)
    room = self_shape[a] - upd_shape[a]
    b = upd_shape[0]
    if idx_2d:
        idx = np.array([[b - 1 - i, room if i % 2 else 0] for i in range(b)], dtype=np.int64)
    else:
        idx = np.array([room if i % 2 == 0 else int(rng.integers(0, room + 1)) for i in range(b)], np.int32)
    case = Case(
        rng.integers(-128, 128, self_shape, dtype=np.int8),
        idx,
        updates_values(rng, upd_shape, upd_dt),
        scale_values(rng, upd_shape[-1], sc_dt),
        zero_point_values(rng, upd_shape[-1], zp_dt),
        axis,
        extra={} if product is None else {"product": product},
    )
    expected = vector_quant_scatter(case.self_arr, idx, case.updates, case.scales, case.zero_points, axis)
    out = pq.quant_scatter(case.self_arr, *case.args(), **case.kwargs())
    np.testing.assert_array_equal(out, expected)
    target = case.self_arr.copy()
    assert pq.quant_scatter_(target, *case.args(), **case.kwargs()) is target
    np.testing.assert_array_equal(target, expected)
    # spot-check the whole-array oracle against the loops on a few elements
    for flat in rng.integers(0, case.updates.size, 200):
        pos = np.unravel_index(int(flat), upd_shape)
        c = pos[-1]
        zp = np.float32(case.zero_points.reshape(-1)[c])
        q = quantize_one(case.updates[pos], np.float32(case.scales.reshape(-1)[c]), zp)
        dst = list(pos)
        dst[0], start = (int(idx[pos[0], 0]), int(idx[pos[0], 1])) if idx_2d else (pos[0], int(idx[pos[0]]))
        dst[a] += start
        assert out[tuple(dst)] == q, (pos, dst)


# ----------------------------------------------------------------------------------- aliases, defaults
def test_npu_aliases_behave_the_same() -> None:
    rng = np.random.default_rng(5)
    case = build_case(rng, rank=3, a=1, negative_axis=True, combo="fp16", with_zp=True, idx_2d=False,
                      idx_dtype=np.int32, last=32, scale_layout="flat")
    expected = case.expected()
    out = pq.npu_quant_scatter(case.self_arr, *case.args(), **case.kwargs())
    np.testing.assert_array_equal(out, expected)
    target = case.self_arr.copy()
    assert pq.npu_quant_scatter_(target, *case.args(), **case.kwargs()) is target
    np.testing.assert_array_equal(target, expected)


def test_defaults_are_axis_minus_2_and_quant_axis_minus_1() -> None:
    rng = np.random.default_rng(6)
    case = build_case(rng, rank=5, a=3, negative_axis=True, combo="bf16", with_zp=False, idx_2d=True,
                      idx_dtype=np.int64, last=32, scale_layout="row")
    assert case.axis == -2
    out = pq.quant_scatter(case.self_arr, case.indices, case.updates, case.scales, backend="cpu")
    np.testing.assert_array_equal(out, case.expected())


# ------------------------------------------------------------------------------------ input conversion
def test_float_to_bf16_conversion_rounds_to_nearest_even() -> None:
    """float64 updates that sit exactly between two bf16 values: 1 + (2m+1)/256 -> bf16 1 + m'/128, m' even.

    Scale 1/128 and zero point -128 map bf16 1 + m/128 to q = m, so truncation and round-half-up differ.
    """
    m = np.arange(32)
    updates = (1.0 + (2 * m + 1) / 256.0).reshape(1, 1, 32)
    self_arr = np.zeros((1, 2, 32), dtype=np.int8)
    idx = np.array([1], dtype=np.int64)
    scales = np.full(32, 1.0 / 128.0, dtype=BF16)
    zps = np.full(32, -128.0, dtype=BF16)
    out = pq.quant_scatter(self_arr, idx, updates, scales, zps, backend="cpu")
    np.testing.assert_array_equal(out[0, 1], np.where(m % 2 == 0, m, m + 1).astype(np.int8))
    np.testing.assert_array_equal(out, slow_quant_scatter(self_arr, idx, updates.astype(BF16), scales, zps))


CONVERSIONS = {
    # name: (updates, scales, zero points) given -> the combo the rule says they become. Only NumPy's default
    # dtypes (float64, int64) and Python numbers and lists are converted; every other dtype is used as given.
    "f64_updates_f64_scales_f64_zp": (np.float64, np.float64, np.float64, "bf16"),
    "bf16_updates_f64_scales": (BF16, np.float64, None, "bf16"),
    "bf16_updates_i64_zp": (BF16, BF16, np.int64, "bf16"),
    "f16_updates_f64_scales": (np.float16, np.float64, None, "fp16"),
    "f16_updates_f64_zp_integral": (np.float16, np.float32, np.float64, "fp16"),
    "f16_updates_i64_zp": (np.float16, np.float32, np.int64, "fp16"),
}


@pytest.mark.parametrize("name", sorted(CONVERSIONS))
def test_default_dtype_inputs_are_converted(name: str) -> None:
    upd_t, sc_t, zp_t, combo = CONVERSIONS[name]
    upd_dt, sc_dt, zp_dt = COMBOS[combo]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    self_arr = rng.integers(-128, 128, (3, 5, 64), dtype=np.int8)
    idx = np.array([[2, 1], [0, 3]], dtype=np.int32)
    raw_upd = rng.normal(0, 80, (2, 2, 64))
    raw_sc = rng.uniform(0.2, 3.0, 64) * rng.choice([1, -1], 64)
    raw_zp = rng.integers(-50, 50, 64).astype(np.float64)
    if combo == "bf16" and zp_t != np.int64:
        raw_zp = raw_zp + 0.5
    updates = raw_upd.astype(upd_t)
    scales = raw_sc.astype(sc_t)
    zps = None if zp_t is None else raw_zp.astype(zp_t)
    # what the package must do: cast the given arrays to the combination's dtypes
    expected = slow_quant_scatter(self_arr, idx, updates.astype(upd_dt), scales.astype(sc_dt),
                                  None if zps is None else zps.astype(zp_dt))
    before = [updates.copy(), scales.copy()]
    out = pq.quant_scatter(self_arr, idx, updates, scales, zps, backend="cpu")
    np.testing.assert_array_equal(out, expected)
    assert updates.dtype == upd_t and scales.dtype == sc_t  # the caller's arrays are not converted in place
    assert np.array_equal(updates, before[0], equal_nan=True) and np.array_equal(scales, before[1])


def test_nested_lists_are_converted() -> None:
    rng = np.random.default_rng(21)
    self_arr = rng.integers(-128, 128, (2, 4, 32), dtype=np.int8)
    upd = np.round(rng.normal(0, 30, (2, 1, 32)), 2)
    sc = np.round(rng.uniform(0.1, 2.0, 32), 3)
    zp = rng.integers(-20, 20, 32)
    idx = [[1, 0], [1, 3]]
    expected = slow_quant_scatter(self_arr, np.array(idx, dtype=np.int64), upd.astype(BF16), sc.astype(BF16),
                                  zp.astype(BF16))
    out = pq.quant_scatter(self_arr, idx, upd.tolist(), sc.tolist(), zp.tolist(), backend="cpu")
    np.testing.assert_array_equal(out, expected)
    # fp16 updates decide the combination: float lists become float32 scales and int32 zero points
    upd16 = upd.astype(np.float16)
    expected16 = slow_quant_scatter(self_arr, np.array(idx), upd16, sc.astype(np.float32),
                                    zp.astype(np.int32))
    out16 = pq.quant_scatter(self_arr, idx, upd16, sc.tolist(), zp.tolist(), backend="cpu")
    np.testing.assert_array_equal(out16, expected16)


def test_python_scalar_scale_with_one_channel_on_950() -> None:
    self_arr = np.zeros((2, 3, 1), dtype=np.int8)
    updates = np.array([[[1.0], [2.5]], [[-3.0], [7.0]]], dtype=BF16)
    idx = np.array([1, 0], dtype=np.int64)
    out = pq.quant_scatter(self_arr, idx, updates, 0.5, product="950", backend="cpu")
    np.testing.assert_array_equal(out, slow_quant_scatter(self_arr, idx, updates, np.array([0.5], BF16)))
    np.testing.assert_array_equal(out[:, :, 0], [[0, 2, 5], [-6, 14, 0]])


@pytest.mark.parametrize("rows", [SLICED_ROWS, SLICED_ROWS + 1, 300])
@pytest.mark.parametrize("idx_2d", [False, True])
def test_scatter_by_row_and_by_fancy_index_agree_with_the_oracle(rows: int, idx_2d: bool) -> None:
    """Few batch rows are copied one block at a time, many through one fancy-indexed assignment: both
    must write what the independent oracle writes, and nothing else."""
    rng = np.random.default_rng(rows)
    s, u = 40, 3
    if idx_2d:
        self_ = rng.integers(-128, 128, (rows // 2 + 1, s, 32), dtype=np.int8)
        slots = rng.permutation(self_.shape[0] * (s // u))[:rows]  # disjoint blocks of u positions
        indices = np.stack([slots // (s // u), (slots % (s // u)) * u], axis=1).astype(np.int64)
    else:
        self_ = rng.integers(-128, 128, (rows, s, 32), dtype=np.int8)
        indices = rng.integers(0, s - u + 1, rows).astype(np.int32)
    updates = rng.uniform(-200, 200, (rows, u, 32)).astype(ml_dtypes.bfloat16)
    scales = rng.uniform(0.5, 2, 32).astype(ml_dtypes.bfloat16)
    expected = vector_quant_scatter(self_, indices, updates, scales)
    got = pq.quant_scatter(self_, indices, updates, scales, backend="cpu")
    np.testing.assert_array_equal(got, expected)
