"""NumPy conventions on DeviceArray, each compared with NumPy's own behaviour on the same data and layout."""

from __future__ import annotations

import ctypes
import itertools
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from emulator.emu import Emu

import pyacl_qscatter as qs
from pyacl_qscatter._ffi._cann import ffi
from pyacl_qscatter.errors import InvalidDtypeError, InvalidValueError, QScatterError
from pyacl_qscatter.memory import DeviceArray
from pyacl_qscatter.runtime import Device, Stream, ensure_runtime

pytestmark = pytest.mark.emulator
BF16 = ml_dtypes.bfloat16
SHAPE = (4, 6, 32)


def pair(dtype: Any = np.float16) -> tuple[np.ndarray, DeviceArray]:
    host = (np.arange(np.prod(SHAPE)) % 251 - 125).astype(dtype).reshape(SHAPE)
    return host, DeviceArray.from_numpy(host)


def same(d: DeviceArray, a: np.ndarray) -> None:
    """Shape, byte strides and contents as NumPy's."""
    assert d.shape == a.shape
    assert d.strides == a.strides
    np.testing.assert_array_equal(d.to_numpy(), a)


KEYS: list[Any] = [
    0, -1, -4, (1, 2), (-1, -6, -32), slice(None), slice(1, 3), slice(None, None, 2), (slice(None), slice(1, 5, 3)),
    (Ellipsis, 3), (Ellipsis, slice(4, 20, 4)), (1, Ellipsis), (None,), (None, 1), (slice(None), None, -2),
    (2, None, Ellipsis, None), (slice(5, 1),), (slice(-3, None), -2, slice(None, None, 7)), np.int64(2),
    (np.int32(-1), slice(0, 6, 5)), (slice(None, None, 3), slice(None, None, 2), slice(None, None, 16)), (),
]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_basic_indexing_matches_numpy(dev: Device, key: Any) -> None:
    host, d = pair()
    same(d[key], host[key])
    same(d[key][...], host[key][...])


@pytest.mark.parametrize(("key", "message"), [
    (slice(None, None, -1), "negative stride, which CANN cannot describe"),
    ((0, slice(5, 0, -2)), "negative stride"),
    ((0, 0, 0, 0), "too many indices"),
    (4, "4 is out of range for dimension 0 of size 4"),
    ((0, -7), "out of range"),
    ((Ellipsis, Ellipsis), "single Ellipsis"),
    (True, "basic indexing"),
    ([0, 1], "basic indexing"),
])
def test_indexing_numpy_does_differently_is_refused_clearly(dev: Device, key: Any, message: str) -> None:
    _, d = pair()
    with pytest.raises(InvalidValueError, match=message):
        d[key]


RESHAPES: list[tuple[Any, tuple[int, ...]]] = [
    ((), (24, 32)), ((), (-1,)), ((), (4, 3, 2, 32)), ((), (2, 2, 6, 32)), ((), (4, 6, 2, 16)),
    ((slice(1, 3),), (12, 32)), ((Ellipsis, slice(0, 16)), (4, 6, 2, 8)), ((Ellipsis, slice(0, 16)), (24, 16)),
    ((slice(None), 2), (2, 2, 32)), ((slice(None), 2), (128,)), ((None, 1), (6, 32, 1)),
    ((slice(None, None, 2),), (-1, 32)), ((slice(None, None, 2),), (2, 192)),
    ((Ellipsis, slice(None, None, 2)), (24, 16)), ((slice(None), 0, None), (2, 2, 32)),
]


@pytest.mark.parametrize(("key", "shape"), RESHAPES, ids=repr)
def test_reshape_is_a_view_exactly_where_numpy_gives_one(dev: Device, key: Any, shape: tuple[int, ...]) -> None:
    host, d = pair()
    view, hview = d[key], host[key]
    expected = hview.reshape(shape)
    if np.shares_memory(expected, host):  # NumPy could view it: so must we, on the same bytes
        got = view.reshape(shape)
        assert got.shape == expected.shape
        assert all(g == e for g, e, n in zip(got.strides, expected.strides, expected.shape, strict=True) if n > 1)
        np.testing.assert_array_equal(got.to_numpy(), expected)
        assert got.data_ptr == view.data_ptr
        assert view.reshape(*shape).shape == expected.shape
    else:
        with pytest.raises(InvalidValueError, match=r"without a copy; use d\.copy"):
            view.reshape(shape)
        np.testing.assert_array_equal(view.copy().reshape(shape).to_numpy(), expected)


def test_reshape_refuses_bad_shapes_like_numpy(dev: Device) -> None:
    host, d = pair()
    for shape in ((5, -1), (-1, -1, 32), (7, 32)):
        with pytest.raises(ValueError):
            host.reshape(shape)
        with pytest.raises(InvalidValueError, match="shape"):
            d.reshape(shape)
    with pytest.raises(InvalidValueError, match="at most one -1"):  # NumPy reads -2 as -1; we say so
        d.reshape(-2, 32)
    with pytest.raises(InvalidDtypeError, match="must be ints"):
        d.reshape(2.5, 12)


@pytest.mark.parametrize("axes", [None, (0, 2, 1), (2, 0, 1), (-1, 0, -2), (1, 0, 2)], ids=repr)
def test_transpose_and_T_match_numpy(dev: Device, axes: Any) -> None:
    host, d = pair(np.float32)
    for dv, hv in ((d, host), (d[1:, ::2, 3:19], host[1:, ::2, 3:19])):
        same(dv.transpose() if axes is None else dv.transpose(axes), hv.transpose(axes))
        if axes is not None:
            same(dv.transpose(*axes), hv.transpose(*axes))
        same(dv.T, hv.T)
    with pytest.raises(InvalidValueError, match="permutation"):
        d.transpose(0, 0, 1)
    with pytest.raises(InvalidValueError, match="out of range"):
        d.transpose(0, 1, 3)


def test_len_matches_numpy(dev: Device) -> None:
    host, d = pair()
    assert (len(d), len(d[1:3]), len(d[0]), len(d[None])) == (len(host), len(host[1:3]), len(host[0]),
                                                               len(host[None]))
    with pytest.raises(TypeError):
        len(host[0, 0, 0])
    with pytest.raises(InvalidDtypeError, match="0-d"):
        len(d[0, 0, 0])


@pytest.mark.parametrize("key", [(), (slice(None, None, 2),), (Ellipsis, slice(1, 30, 3)), (slice(None), 1),
                                 (None, 2, slice(None, None, 4))], ids=repr)
def test_copy_is_contiguous_independent_and_equal(dev: Device, emu: Emu, key: Any) -> None:
    host, d = pair(BF16)
    src, hsrc = d[key], host[key]
    c = src.copy()
    same(c, hsrc.copy())
    assert c.is_contiguous and c.data_ptr != src.data_ptr
    src[...] = 0
    np.testing.assert_array_equal(c.to_numpy(), hsrc)
    assert emu.stat("errors_detected") == 0


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.float16, np.float32, BF16], ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("value", [0, -1, 3, 2.75, -128])
def test_fill_matches_numpy(dev: Device, emu: Emu, dtype: Any, value: Any) -> None:
    host, d = pair(dtype)
    for key in ((), (slice(1, 3), slice(None, None, 2)), (Ellipsis, slice(3, 17))):
        expected = host.copy()
        expected[key].fill(value)
        d[key].fill(value)
        np.testing.assert_array_equal(d.to_numpy(), expected)
        host = expected
    assert emu.stat("errors_detected") == 0


SETS: list[tuple[Any, Any]] = [
    ((), 7),
    ((1,), np.arange(6 * 32).reshape(6, 32)),
    ((-1, slice(None, None, 2)), np.arange(32)),  # broadcast over rows
    ((slice(None), 0, None), 5),
    ((Ellipsis, slice(1, None, 4)), np.arange(8).astype(np.float64) * 1.5),  # cast like NumPy
    ((slice(1, 3), slice(2, 5)), [[1], [2], [3]]),
    ((0, 0, 0), -3),
    ((slice(None, None, 3), None), np.full((1, 6, 32), 9, np.float16)),
]


@pytest.mark.parametrize(("key", "value"), SETS, ids=lambda v: repr(v)[:40])
def test_setitem_matches_numpy(dev: Device, emu: Emu, key: Any, value: Any) -> None:
    host, d = pair(np.float16)
    expected = host.copy()
    expected[key] = value
    d[key] = value
    np.testing.assert_array_equal(d.to_numpy(), expected)
    assert emu.stat("errors_detected") == 0


def test_setitem_from_a_device_array_and_refusals(dev: Device) -> None:
    host, d = pair(np.float16)
    other = DeviceArray.from_numpy(np.full((6, 16), 4, np.float16))
    d[2, :, ::2] = other
    host[2, :, ::2] = 4
    d[3, :, 16:] = other.T.T  # a view of a device array
    host[3, :, 16:] = 4
    np.testing.assert_array_equal(d.to_numpy(), host)
    with pytest.raises(InvalidValueError, match=r"shape \(6, 32\)"):
        d[0] = other
    with pytest.raises(InvalidValueError, match="cannot be written"):
        d[0] = np.ones((5, 32))
    with pytest.raises(ValueError):
        host[0] = np.ones((5, 32))
    d_small = DeviceArray.zeros((4,), np.int8)  # NumPy 2 raises OverflowError here; NumPy 1.x wraps with a warning
    with pytest.raises(InvalidValueError, match="cannot be written"):
        d_small[0] = 1 << 20


def test_setitem_is_queued_on_the_arrays_stream(dev: Device, emu: Emu) -> None:
    with Stream() as s:
        d = DeviceArray.zeros((4, 64), np.int8, stream=s)
        s.synchronize()
        emu.reset()
        d[1] = np.arange(64)
        d[2:] = 5
        assert emu.calls("aclrtSynchronizeDevice") == 0 and emu.calls("aclrtSynchronizeStream") == 0
        assert d.stream is s
        assert d.to_numpy(stream=s)[1:, :3].tolist() == [[0, 1, 2], [5, 5, 5], [5, 5, 5]]


def test_asarray_waits_for_the_arrays_own_stream_only(dev: Device, emu: Emu) -> None:
    if not ensure_runtime().caps.stream_query:
        pytest.skip("needs aclrtStreamQuery")
    with Stream() as mine, Stream() as other:
        host = np.arange(64, dtype=np.int8)
        d = DeviceArray.from_numpy(host, stream=mine)
        busy = DeviceArray.zeros((1 << 16,), np.int8, stream=other)
        other.synchronize()
        busy.fill(1)  # queued on `other`, never waited for here
        emu.reset()
        np.testing.assert_array_equal(np.asarray(d), host)
        assert emu.calls("aclrtSynchronizeDevice") == 0
        assert not other.query()  # the other stream's work is still pending
        np.testing.assert_array_equal(np.asarray(d, dtype=np.int32), host.astype(np.int32))
        with pytest.raises(InvalidValueError, match="copy: False is impossible"):
            d.__array__(copy=False)  # what np.asarray(d, copy=False) calls on NumPy 2 (1.x has no copy=)
        other.synchronize()


@pytest.mark.parametrize("operation", [
    lambda d: d + 1, lambda d: 1 + d, lambda d: np.ones(4) + d, lambda d: d * np.ones(4), lambda d: np.add(d, 1),
    lambda d: -d, lambda d: d < 2, lambda d: np.ones(4) < d, lambda d: d @ d, lambda d: abs(d), lambda d: np.sqrt(d),
    lambda d: np.ones(4) - d, lambda d: divmod(d, 2),
])
def test_arithmetic_is_refused_with_the_way_to_the_host(dev: Device, operation: Any) -> None:
    d = DeviceArray.from_numpy(np.ones(4, np.float32))
    with pytest.raises(TypeError, match=r"does not do arithmetic .*d\.to_numpy\(\)") as err:
        operation(d)
    assert isinstance(err.value, QScatterError)


def test_in_place_operators_are_refused_too(dev: Device) -> None:
    d = DeviceArray.from_numpy(np.ones(4, np.float32))
    with pytest.raises(InvalidDtypeError, match="does not do arithmetic"):
        d += 1
    host = np.ones(4, np.float32)
    with pytest.raises(InvalidDtypeError, match="does not do arithmetic"):
        host += d


def test_from_pointer_takes_byte_strides_and_any_address(dev: Device) -> None:
    host = np.arange(6 * 64, dtype=np.float16).reshape(6, 64)
    base = DeviceArray.from_numpy(host)
    hview = host[1::2, 8:40]
    for address in (base.ptr, np.uint64(base.ptr), ctypes.c_void_p(base.ptr), ffi.cast("void *", base.ptr),
                    type("Handle", (), {"__int__": lambda self: base.ptr})()):
        view = DeviceArray.from_pointer(address, hview.shape, np.float16, hview.strides, offset=64 + 8, owner=base)
        same(view, hview)
    by_elements = DeviceArray.from_pointer(base.ptr, hview.shape, np.float16, element_strides=(128, 1), offset=72)
    same(by_elements, hview)
    with pytest.raises(InvalidValueError, match="multiple of the item size 2"):
        DeviceArray.from_pointer(base.ptr, (2, 3), np.float16, (6, 1))
    with pytest.raises(InvalidValueError, match="not both"):
        DeviceArray.from_pointer(base.ptr, (2, 3), np.float16, (6, 2), element_strides=(3, 1))
    with pytest.raises(InvalidValueError, match="32-byte aligned"):
        DeviceArray.from_pointer(base.ptr + 2, (2, 3), np.float16)
    with pytest.raises(InvalidDtypeError, match="ptr"):
        DeviceArray.from_pointer("0x1000", (2, 3), np.float16)


def test_copy_from_on_a_view_blames_the_right_thing(dev: Device) -> None:
    host, d = pair(np.float16)
    view = d[:, ::2, 1:9]
    view.copy_from(np.full(view.shape, 3, np.float16))  # a non-contiguous view is fine
    host[:, ::2, 1:9] = 3
    np.testing.assert_array_equal(d.to_numpy(), host)
    with pytest.raises(InvalidValueError) as err:
        view.copy_from(np.ones((4, 3, 9), np.float16))
    assert "(4, 3, 8)" in str(err.value) and "(4, 3, 9)" in str(err.value) and "contiguous" not in str(err.value)


def test_strides_are_bytes_everywhere(dev: Device) -> None:
    for dtype in (np.int8, np.float16, np.int32, np.int64, BF16):
        host = np.zeros(SHAPE, dtype)
        d = DeviceArray.from_numpy(host)
        for key in itertools.islice(KEYS, 12):
            assert d[key].strides == host[key].strides
        assert d[key].element_strides == tuple(s // host.itemsize for s in host[key].strides)
        assert f"strides={host.strides}" in repr(d)
    assert qs.DeviceArray is DeviceArray
