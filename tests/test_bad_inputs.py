"""Bad inputs beyond the conformance kinds: wrong Python types, forbidden conversions, edge indices.

Every rejection must be a ``ContractError`` (so a ``QScatterError``) of the right class, ``ValueError`` for a
bad value or shape and ``TypeError`` for a bad type or dtype, whose message names the parameter, raised
before anything is modified: ``self`` and every other input stay byte-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from slow_reference import slow_quant_scatter

import pyacl_qscatter as pq
from pyacl_qscatter.errors import ContractError, InvalidDtypeError, InvalidValueError, QScatterError

BF16 = np.dtype(ml_dtypes.bfloat16)
S, U = 6, 3  # self.shape[axis] and updates.shape[axis] of the base case: the last legal start is 3

Kw = dict[str, Any]


def base(combo: str = "bf16", zp: bool = True) -> Kw:
    """A valid call: self (3, 6, 32), 1-D int64 indices [0, 3], updates (2, 3, 32), axis -2."""
    rng = np.random.default_rng(0)
    upd_dt, sc_dt, zp_dt = {
        "bf16": (BF16, BF16, BF16),
        "fp16": (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.int32)),
    }[combo]
    kw: Kw = {
        "self": rng.integers(-128, 128, (3, S, 32), dtype=np.int8),
        "indices": np.array([0, S - U], dtype=np.int64),
        "updates": rng.normal(0, 40, (2, U, 32)).astype(upd_dt),
        "quant_scales": rng.uniform(0.25, 2.0, 32).astype(sc_dt),
        "axis": -2,
    }
    if zp:
        kw["quant_zero_points"] = rng.integers(-10, 10, 32).astype(zp_dt)
    return kw


def two_d(rows: list[list[int]], **changes: Any) -> Kw:
    kw = base()
    kw["indices"] = np.array(rows, dtype=np.int64)
    kw["updates"] = np.random.default_rng(1).normal(0, 40, (len(rows), U, 32)).astype(BF16)
    kw.update(changes)
    return kw


def call(fn: Callable[..., Any], kw: Kw) -> Any:
    kw = dict(kw)
    self_arg = kw.pop("self")
    kw.setdefault("backend", "cpu")
    return fn(self_arg, **kw)


def _snap(kw: Kw) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    return {k: (v, v.copy(), v.flags.writeable) for k, v in kw.items() if isinstance(v, np.ndarray)}


def _assert_unchanged(snap: dict[str, tuple[np.ndarray, np.ndarray, bool]]) -> None:
    for name, (arr, before, writeable) in snap.items():
        assert arr.dtype == before.dtype and arr.shape == before.shape, name
        assert arr.tobytes() == before.tobytes(), f"{name} was modified by a rejected call"
        assert arr.flags.writeable == writeable, name


def assert_rejected(
    kw: Kw,
    cls: type[ContractError] | tuple[type[ContractError], ...],
    params: str | tuple[str, ...],
    kind: str | tuple[str, ...] | None = None,
    fns: tuple[Callable[..., Any], ...] = (pq.quant_scatter_, pq.quant_scatter),
) -> None:
    params = (params,) if isinstance(params, str) else params
    kinds = (kind,) if isinstance(kind, str) else kind
    originals = {k: v.copy() for k, v in kw.items() if isinstance(v, np.ndarray)}
    for fn in fns:
        snap = _snap(kw)
        with pytest.raises(cls) as info:
            call(fn, kw)
        err = info.value
        assert isinstance(err, QScatterError) and isinstance(err, ContractError)
        if isinstance(err, InvalidValueError):
            assert isinstance(err, ValueError) and not isinstance(err, TypeError)
        else:
            assert isinstance(err, InvalidDtypeError)
            assert isinstance(err, TypeError) and not isinstance(err, ValueError)
        assert err.param in params, (err.param, str(err))
        assert err.param in str(err), str(err)
        if kinds is not None:
            assert err.kind in kinds, (err.kind, str(err))
        _assert_unchanged(snap)
    for k, v in originals.items():
        assert kw[k].tobytes() == v.tobytes(), k


def assert_accepted(kw: Kw) -> np.ndarray:
    """Both calls succeed and agree with the slow oracle; returns the expected array."""
    idx = np.asarray(kw["indices"])
    expected = slow_quant_scatter(kw["self"], idx, np.asarray(kw["updates"]), np.asarray(kw["quant_scales"]),
                                  kw.get("quant_zero_points"), kw.get("axis", -2))
    before = kw["self"].copy()
    out = call(pq.quant_scatter, kw)
    np.testing.assert_array_equal(out, expected)
    assert kw["self"].tobytes() == before.tobytes()
    if kw["self"].flags.writeable:
        target = kw["self"]
        assert call(pq.quant_scatter_, kw) is target
        np.testing.assert_array_equal(target, expected)
    return expected


def _with(**changes: Any) -> Callable[[], Kw]:
    def make() -> Kw:
        kw = base()
        for k, v in changes.items():
            kw[k] = v(kw) if callable(v) else v
        return kw

    return make


def _with_fp16(**changes: Any) -> Callable[[], Kw]:
    def make() -> Kw:
        kw = base("fp16")
        for k, v in changes.items():
            kw[k] = v(kw) if callable(v) else v
        return kw

    return make


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def _obj(arr: np.ndarray) -> np.ndarray:
    return arr.astype(object)


def _as(name: str, dtype: Any) -> Callable[[Kw], np.ndarray]:
    return lambda kw: kw[name].astype(dtype)


def _as_list(name: str) -> Callable[[Kw], list[Any]]:
    return lambda kw: kw[name].astype(np.float64).tolist()


VE, TE = InvalidValueError, InvalidDtypeError
EITHER = (InvalidValueError, InvalidDtypeError)
COMBO_PARAMS = ("updates", "quant_scales", "quant_zero_points")

# id: (make kwargs, exception class, acceptable param names, acceptable kinds or None)
BAD: dict[str, tuple[Callable[[], Kw], Any, Any, Any]] = {
    # None for each required argument
    "self_none": (_with(self=None), TE, "self", None),
    "indices_none": (_with(indices=None), TE, "indices", None),
    "updates_none": (_with(updates=None), TE, "updates", None),
    "scales_none": (_with(quant_scales=None), TE, "quant_scales", None),
    # strings
    "self_str": (_with(self="abc"), TE, "self", None),
    "indices_str": (_with(indices="03"), TE, "indices", None),
    "updates_str": (_with(updates="1.0"), TE, "updates", None),
    "scales_str": (_with(quant_scales="1.0"), TE, "quant_scales", None),
    "zp_str": (_with(quant_zero_points="0"), TE, "quant_zero_points", None),
    "scales_list_of_str": (_with(quant_scales=["1.0"] * 32), TE, "quant_scales", None),
    # 0-d arrays
    "self_0d": (_with(self=np.array(1, dtype=np.int8)), VE, "self", "rank"),
    "indices_0d": (_with(indices=np.array(0, dtype=np.int64)), VE, "indices", "indices_2d_shape"),
    "indices_3d": (_with(indices=np.zeros((2, 1, 1), dtype=np.int64)), VE, "indices", "indices_2d_shape"),
    "updates_0d": (_with(updates=np.array(1.0, dtype=BF16)), VE, "updates", "rank_mismatch"),
    "scales_0d": (_with(quant_scales=np.array(1.0, dtype=BF16)), VE, "quant_scales", "scales_count"),
    "zp_0d": (_with(quant_zero_points=np.array(0.0, dtype=BF16)), VE, "quant_zero_points", "zp_count"),
    "scales_python_scalar_32_channels": (_with(quant_scales=0.5), VE, "quant_scales", "scales_count"),
    # self: int8 ndarray only, never converted
    "self_list": (_with(self=lambda k: k["self"].tolist()), TE, "self", None),
    "self_uint8": (_with(self=lambda k: k["self"].view(np.uint8)), TE, "self", "self_dtype"),
    "self_int64": (_with(self=lambda k: k["self"].astype(np.int64)), TE, "self", "self_dtype"),
    "self_object": (_with(self=lambda k: _obj(k["self"])), TE, "self", "self_dtype"),
    "self_bool": (_with(self=lambda k: k["self"] > 0), TE, "self", "self_dtype"),
    # ragged lists
    "indices_ragged": (_with(indices=[[0, 1], [1]]), EITHER, "indices", None),
    "updates_ragged": (_with(updates=[[[0.0] * 32] * 3, [[0.0] * 31] * 3]), EITHER, "updates", None),
    "scales_ragged": (_with(quant_scales=[[1.0] * 16, [1.0] * 15]), EITHER, "quant_scales", None),
    # indices: integers only
    "indices_float64": (_with(indices=np.array([0.0, 3.0])), TE, "indices", "indices_dtype"),
    "indices_float32": (_with(indices=np.array([0, 3], dtype=np.float32)), TE, "indices", "indices_dtype"),
    "indices_float_list": (_with(indices=[0.0, 3.0]), TE, "indices", "indices_dtype"),
    "indices_float_list_2d": (_with(indices=[[0.0, 0.0], [1.0, 3.0]]), TE, "indices", "indices_dtype"),
    "indices_bool": (_with(indices=np.array([False, True])), TE, "indices", "indices_dtype"),
    "indices_bool_list": (_with(indices=[False, True]), TE, "indices", "indices_dtype"),
    "indices_object": (_with(indices=lambda k: _obj(k["indices"])), TE, "indices", "indices_dtype"),
    "indices_complex": (_with(indices=np.array([0, 3], dtype=np.complex64)), TE, "indices", "indices_dtype"),
    # object / non-float arrays for the float inputs
    "updates_object": (_with(updates=lambda k: _obj(k["updates"].astype(np.float32))), TE, "updates", None),
    "scales_object": (_with(quant_scales=lambda k: _obj(k["quant_scales"].astype(np.float32))), TE,
                      "quant_scales", None),
    "updates_bool": (_with(updates=lambda k: k["updates"].astype(np.float32) > 0), TE, "updates", None),
    "updates_complex": (_with(updates=lambda k: k["updates"].astype(np.complex64)), TE, "updates", None),
    # reduce
    "reduce_int": (_with(reduce=1), TE, "reduce", None),
    "reduce_none": (_with(reduce=None), TE, "reduce", None),
    "reduce_bytes": (_with(reduce=b"update"), TE, "reduce", None),
    "reduce_upper": (_with(reduce="UPDATE"), VE, "reduce", "reduce"),
    "reduce_empty": (_with(reduce=""), VE, "reduce", "reduce"),
    "reduce_none_str": (_with(reduce="none"), VE, "reduce", "reduce"),
    # axis and quant_axis
    "axis_float": (_with(axis=1.0), TE, "axis", None),
    "axis_numpy_float": (_with(axis=np.float64(1.0)), TE, "axis", None),
    "axis_str": (_with(axis="1"), TE, "axis", None),
    "axis_bool": (_with(axis=True), TE, "axis", None),
    "axis_none": (_with(axis=None), TE, "axis", None),
    "axis_huge": (_with(axis=10**30), VE, "axis", None),
    "axis_huge_negative": (_with(axis=-(10**30)), VE, "axis", None),
    "axis_just_past_rank": (_with(axis=3), VE, "axis", None),
    "axis_just_before_minus_rank": (_with(axis=-4), VE, "axis", None),
    "quant_axis_float": (_with(quant_axis=2.0), TE, "quant_axis", None),
    "quant_axis_bool": (_with(quant_axis=True), TE, "quant_axis", None),
    "quant_axis_str": (_with(quant_axis="-1"), TE, "quant_axis", None),
    "quant_axis_huge": (_with(quant_axis=10**30), VE, "quant_axis", None),
    "quant_axis_minus_rank_minus_1": (_with(quant_axis=-4), VE, "quant_axis", None),
    # strict=True refuses every conversion
    "strict_f32_updates": (_with(strict=True, updates=lambda k: k["updates"].astype(np.float32)), TE,
                           "updates", None),
    "strict_f64_scales": (_with(strict=True, quant_scales=lambda k: k["quant_scales"].astype(np.float64)), TE,
                          "quant_scales", None),
    "strict_f64_zp": (_with(strict=True, quant_zero_points=_as("quant_zero_points", np.float64)), TE,
                      "quant_zero_points", None),
    "strict_list_indices": (_with(strict=True, indices=[0, 3]), TE, "indices", None),
    "strict_list_updates": (_with(strict=True, updates=_as_list("updates")), TE, "updates", None),
    "strict_list_scales": (_with(strict=True, quant_scales=_as_list("quant_scales")), TE, "quant_scales",
                           None),
    "strict_fp16_f16_scales": (_with_fp16(strict=True, quant_scales=_as("quant_scales", np.float16)), TE,
                               "quant_scales", None),
    "strict_fp16_f64_zp": (_with_fp16(strict=True, quant_zero_points=_as("quant_zero_points", float)), TE,
                           "quant_zero_points", None),
    # int32 zero points from floats must be integral (and fit)
    "zp_half_f64": (_with_fp16(quant_zero_points=np.full(32, 0.5)), VE, "quant_zero_points", None),
    "zp_frac_f64": (_with_fp16(quant_zero_points=np.full(32, -1.25)), VE, "quant_zero_points", None),
    "zp_frac_list": (_with_fp16(quant_zero_points=[0.0] * 31 + [2.5]), VE, "quant_zero_points", None),
    "zp_nan": (_with_fp16(quant_zero_points=np.array([np.nan] + [0.0] * 31)), VE, "quant_zero_points", None),
    "zp_inf": (_with_fp16(quant_zero_points=np.array([0.0] * 31 + [np.inf])), VE, "quant_zero_points", None),
    "zp_beyond_int32": (_with_fp16(quant_zero_points=np.array([0.0] * 31 + [3e9])), VE, "quant_zero_points",
                        None),
    # a dtype the caller chose is used as given (only Python numbers, lists and float64/int64 arrays are
    # converted), so a dtype CANN does not take there is an error, not a cast
    "bf16_updates_f16_scales": (_with(quant_scales=_as("quant_scales", np.float16)), TE, "quant_scales",
                                "dtype_combo"),
    "fp16_updates_f16_scales": (_with_fp16(quant_scales=_as("quant_scales", np.float16)), TE, "quant_scales",
                                "dtype_combo"),
    "fp16_updates_f32_zp": (_with_fp16(quant_zero_points=np.zeros(32, np.float32)), TE, "quant_zero_points",
                            "dtype_combo"),
    "int8_updates": (_with(updates=lambda k: k["updates"].astype(np.int8)), TE, "updates", "dtype_combo"),
    "f32_updates": (_with(updates=_as("updates", np.float32)), TE, "updates", "dtype_combo"),
    "uint8_indices": (_with(indices=lambda k: k["indices"].astype(np.uint8)), TE, "indices", "indices_dtype"),
    "bf16_updates_f32_scales": (_with(quant_scales=lambda k: k["quant_scales"].astype(np.float32)), TE,
                                COMBO_PARAMS, "dtype_combo"),
    "bf16_updates_int32_zp": (_with(quant_zero_points=lambda k: k["quant_zero_points"].astype(np.int32)), TE,
                              COMBO_PARAMS, "dtype_combo"),
    "fp16_updates_bf16_scales": (_with_fp16(quant_scales=lambda k: k["quant_scales"].astype(BF16)), TE,
                                 COMBO_PARAMS, "dtype_combo"),
    "fp16_updates_bf16_zp": (_with_fp16(quant_zero_points=lambda k: k["quant_zero_points"].astype(BF16)), TE,
                             COMBO_PARAMS, "dtype_combo"),
    "bf16_on_310P": (_with(product="310P"), TE, (*COMBO_PARAMS, "product"), "dtype_combo"),
    "unknown_product": (_with(product="Ascend999"), VE, "product", None),
    "product_int": (_with(product=950), TE, "product", None),
    # overlap: same destination batch, 2-D indices (1-D rows always go to distinct batches)
    "overlap_2d_partial": (lambda: two_d([[0, 0], [0, 2]]), VE, "indices", "overlap"),
    "overlap_2d_identical": (lambda: two_d([[1, 1], [1, 1]]), VE, "indices", "overlap"),
    "overlap_2d_far_apart_rows": (lambda: two_d([[0, 3], [1, 0], [2, 0], [0, 1]]), VE, "indices", "overlap"),
    "overlap_2d_last_start": (lambda: two_d([[2, S - U], [2, S - U - 2]]), VE, "indices", "overlap"),
    # index ranges: the first column of 2-D indices addresses self's batch
    "idx2d_batch_too_large": (lambda: two_d([[0, 0], [3, 0]]), VE, "indices", "index_too_large"),
    "idx2d_batch_huge": (lambda: two_d([[2**62, 0]]), VE, "indices", "index_too_large"),
    "idx2d_batch_negative": (lambda: two_d([[-1, 0], [0, 3]]), VE, "indices", "index_negative"),
    "idx2d_start_past_last": (lambda: two_d([[0, S - U + 1]]), VE, "indices", "index_too_large"),
    "idx2d_start_negative": (lambda: two_d([[0, -1]]), VE, "indices", "index_negative"),
    "idx1d_start_past_last": (_with(indices=np.array([0, S - U + 1], dtype=np.int32)), VE, "indices",
                              "index_too_large"),
    "idx1d_start_int32_min": (_with(indices=np.array([0, -(2**31)], dtype=np.int32)), VE, "indices",
                              "index_negative"),
    "idx1d_start_int64_max": (_with(indices=np.array([0, 2**63 - 1], dtype=np.int64)), VE, "indices",
                              "index_too_large"),
    "idx1d_more_rows_than_self_batch": (
        _with(indices=np.zeros(4, dtype=np.int64),
              updates=lambda k: np.zeros((4, U, 32), dtype=BF16)),
        VE, ("indices", "updates", "self"), "batch_mismatch"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_rejected(name: str) -> None:
    make, cls, params, kind = BAD[name]
    assert_rejected(make(), cls, params, kind)


@pytest.mark.parametrize("big", [2**63, 2**64 - 1])
def test_huge_unsigned_index_is_not_wrapped(big: int) -> None:
    """uint64 indices are not a CANN dtype: refusing them or range-checking them are both fine,
    but the value must not wrap to a negative number on the way."""
    kw = _with(indices=np.array([0, big], dtype=np.uint64))()
    for fn in (pq.quant_scatter_, pq.quant_scatter):
        before = kw["self"].copy()
        with pytest.raises(ContractError) as info:
            call(fn, kw)
        err = info.value
        assert kw["self"].tobytes() == before.tobytes()
        assert "indices" in str(err)
        if isinstance(err, InvalidValueError):
            assert err.kind == "index_too_large", str(err)
            assert str(big) in str(err), str(err)
        else:
            assert isinstance(err, InvalidDtypeError) and err.kind == "indices_dtype", str(err)


# ------------------------------------------------------------------------------------------- read-only
def test_readonly_self_in_place_is_rejected() -> None:
    kw = base()
    _readonly(kw["self"])
    assert_rejected(kw, VE, "self", "readonly", fns=(pq.quant_scatter_, pq.npu_quant_scatter_))


def test_readonly_view_of_writable_base_in_place_is_rejected() -> None:
    kw = base()
    kw["self"] = kw["self"].view()
    _readonly(kw["self"])
    assert_rejected(kw, VE, "self", "readonly", fns=(pq.quant_scatter_,))


def test_readonly_self_is_fine_out_of_place() -> None:
    kw = base()
    _readonly(kw["self"])
    assert_accepted(kw)
    assert not kw["self"].flags.writeable


def test_readonly_other_inputs_are_fine() -> None:
    kw = base()
    for name in ("indices", "updates", "quant_scales", "quant_zero_points"):
        _readonly(kw[name])
    assert_accepted(kw)


# ------------------------------------------------------------------------------- edges that are legal
def test_start_exactly_s_minus_u_is_accepted_1d() -> None:
    kw = _with(indices=np.array([S - U, S - U], dtype=np.int32))()
    assert_accepted(kw)


def test_start_exactly_s_minus_u_is_accepted_2d() -> None:
    assert_accepted(two_d([[2, S - U], [0, S - U]]))


def test_same_start_in_1d_indices_never_overlaps() -> None:
    """1-D row b writes batch b, so equal starts address different batches."""
    assert_accepted(_with(indices=np.array([1, 1], dtype=np.int64))())


def test_touching_blocks_in_2d_do_not_overlap() -> None:
    assert_accepted(two_d([[0, 0], [0, U]]))
    assert_accepted(two_d([[1, U], [1, 0]]))


def test_same_start_in_different_batches_2d() -> None:
    assert_accepted(two_d([[0, 2], [1, 2], [2, 2]]))


def test_2d_indices_may_outnumber_self_batch() -> None:
    """The batch bound applies to 1-D indices only: 2-D rows can fill one batch with several blocks."""
    kw = base()
    kw["self"] = kw["self"][:1].copy()
    kw["indices"] = np.array([[0, 0], [0, U]], dtype=np.int32)
    assert_accepted(kw)


def test_numpy_integer_axes_are_accepted() -> None:
    assert_accepted(_with(axis=np.int64(1), quant_axis=np.int32(2))())
    assert_accepted(_with(axis=np.int32(-2), quant_axis=np.int64(-1))())


def test_integral_float_zero_points_become_int32() -> None:
    kw = _with_fp16(quant_zero_points=np.arange(-16, 16, dtype=np.float64))()
    expected = slow_quant_scatter(kw["self"], kw["indices"], kw["updates"], kw["quant_scales"],
                                  np.arange(-16, 16, dtype=np.int32))
    np.testing.assert_array_equal(call(pq.quant_scatter, kw), expected)


def test_strict_accepts_native_dtypes() -> None:
    assert_accepted(_with(strict=True)())
    assert_accepted(_with_fp16(strict=True)())
