"""Bad and unusual inputs the fuzzer (test_reliability_fuzz.py) found mishandled, kept as plain regressions.

Each asserts the contract's result or the package's own exception; the device ones run against the emulator.
"""

from __future__ import annotations

import warnings
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from emulator.emu import Emu

import pyacl_qscatter as qs
from pyacl_qscatter.errors import InvalidDtypeError, InvalidValueError
from pyacl_qscatter.memory import DeviceArray
from pyacl_qscatter.runtime import Device

BF16 = ml_dtypes.bfloat16



def inputs(seed: int = 0) -> tuple[np.ndarray[Any, Any], ...]:
    rng = np.random.default_rng(seed)
    cache = rng.integers(-128, 128, (4, 8, 64), dtype=np.int8)
    idx = np.array([5, 0, 2, 6], np.int32)
    upd = rng.uniform(-4, 4, (4, 2, 64)).astype(BF16)
    sc = rng.uniform(0.05, 1, 64).astype(BF16)
    zp = rng.uniform(-2, 2, 64).astype(BF16)
    return cache, idx, upd, sc, zp


@pytest.mark.emulator
@pytest.mark.parametrize("layout", ["fortran", "strided", "list"])
def test_device_call_with_host_operands_in_any_layout(dev: Device, emu: Emu, layout: str) -> None:
    # The host operands of a device call are copied asynchronously; a temporary contiguous copy used to be
    # freed before the device read it (every result wrong against the emulator).
    cache, idx, upd, sc, zp = inputs()
    want = qs.quant_scatter(cache, idx, upd, sc, zp, backend="cpu")
    if layout == "fortran":
        args: tuple[Any, ...] = (idx, np.asfortranarray(upd), sc, zp)
    elif layout == "strided":
        big = np.zeros((8, 4, 128), BF16)
        big[::2, ::2, ::2] = upd
        args = (idx[::-1][::-1], big[::2, ::2, ::2], np.repeat(sc, 2)[::2], zp)
    else:
        args = (idx.tolist(), upd, sc, zp)
    detected = emu.stat("errors_detected")
    for _ in range(5):
        with DeviceArray.from_numpy(cache) as d_cache:
            qs.quant_scatter_(d_cache, *args)
            np.testing.assert_array_equal(d_cache.to_numpy(), want)
            fresh = qs.quant_scatter(d_cache, *args)
            np.testing.assert_array_equal(fresh.to_numpy(), want)
            fresh.close()
    assert emu.stat("errors_detected") == detected


@pytest.mark.emulator
@pytest.mark.parametrize("check_indices", [True, False])
@pytest.mark.parametrize(("name", "value"), [("axis", [1]), ("quant_axis", [2]), ("reduce", ["update"]),
                                             ("axis", {1: 1}), ("reduce", {"update"})])
def test_unhashable_scalars_on_device_are_contract_errors(dev: Device, name: str, value: Any,
                                                          check_indices: bool) -> None:
    cache, idx, upd, sc, zp = inputs()
    with DeviceArray.from_numpy(cache) as d_cache:
        d_in = [DeviceArray.from_numpy(a) for a in (idx, upd, sc, zp)]
        qs.quant_scatter_(d_cache, *d_in, check_indices=False)  # a prepared call exists for these arrays
        before = d_cache.to_numpy()
        for fn in (qs.quant_scatter_, qs.quant_scatter):
            with pytest.raises(InvalidDtypeError) as info:
                fn(d_cache, *d_in, **{name: value}, check_indices=check_indices)
            assert info.value.kind == name and name in str(info.value)
        np.testing.assert_array_equal(d_cache.to_numpy(), before)
        for arr in d_in:
            arr.close()
    # The NumPy path reports the same rule.
    with pytest.raises(InvalidDtypeError) as info:
        qs.quant_scatter(cache, idx, upd, sc, zp, backend="cpu", **{name: value})
    assert info.value.kind == name


@pytest.mark.emulator
@pytest.mark.parametrize("stream", [5, "s", object(), 0x1234])
def test_a_stream_that_is_not_a_stream(dev: Device, stream: Any) -> None:
    cache, idx, upd, sc, zp = inputs()
    with DeviceArray.from_numpy(cache) as d_cache:
        for fn in (qs.quant_scatter_, qs.quant_scatter):
            with pytest.raises(InvalidDtypeError) as info:
                fn(d_cache, idx, upd, sc, zp, stream=stream)
            assert info.value.kind == "stream"
        np.testing.assert_array_equal(d_cache.to_numpy(), cache)


@pytest.mark.emulator
@pytest.mark.parametrize(("name", "value", "kind"), [
    ("indices", [[1], [1, 2]], "indices_2d_shape"),
    ("updates", [[[1.0] * 64], [[1.0] * 3]], "updates"),
    ("indices", None, "indices"),
    ("updates", None, "updates"),
    ("quant_scales", None, "quant_scales"),
])
def test_ragged_and_missing_host_operands_on_device(dev: Device, name: str, value: Any, kind: str) -> None:
    cache, idx, upd, sc, zp = inputs()
    args = {"indices": idx, "updates": upd, "quant_scales": sc, "quant_zero_points": zp, name: value}
    with DeviceArray.from_numpy(cache) as d_cache:
        with pytest.raises((InvalidValueError, InvalidDtypeError)) as info:
            qs.quant_scatter_(d_cache, **args)
        assert info.value.kind == kind
        np.testing.assert_array_equal(d_cache.to_numpy(), cache)
    with pytest.raises((InvalidValueError, InvalidDtypeError)) as info:  # the same rule on the NumPy path
        qs.quant_scatter_(cache.copy(), backend="cpu", **args)
    assert info.value.kind == kind


@pytest.mark.parametrize("backend", ["cpu", pytest.param("npu", marks=pytest.mark.emulator)])
def test_float64_beyond_the_target_range_converts_quietly(backend: str, request: pytest.FixtureRequest) -> None:
    # Conversion to bfloat16/float32 overflows to +-inf, which the contract defines; NumPy's overflow warning
    # used to escape (an exception under -W error).
    if backend == "npu":
        request.getfixturevalue("dev")
    cache = np.zeros((1, 2, 32), np.int8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = qs.quant_scatter(cache, [0], np.full((1, 1, 32), 1e300), np.full(32, 1.0), backend=backend)
        tiny = qs.quant_scatter(cache, [1], np.full((1, 1, 32), -5.0), np.full(32, 1e300), backend=backend)
        fp16 = qs.quant_scatter(cache, [0], np.full((1, 1, 32), 3.0, np.float16), np.full(32, -1e300),
                                np.zeros(32), backend=backend)
    assert big[0, 0].tolist() == [127] * 32
    assert tiny[0, 1].tolist() == [0] * 32  # -5 / inf = -0
    assert fp16[0, 0].tolist() == [0] * 32
