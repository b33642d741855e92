"""Regression tests for lifetime and device-state rules of the device layer, against the emulator:
each test reproduces a way a binding can corrupt memory or leak, and shows ours does not."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from emulator.emu import Emu

import pyacl_qscatter as qs
from pyacl_qscatter.errors import InvalidValueError
from pyacl_qscatter.memory import DeviceArray, allocator_for
from pyacl_qscatter.runtime import Device, Stream

pytestmark = pytest.mark.emulator
BF16 = ml_dtypes.bfloat16



def inputs(seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [rng.permutation(4)[:2].astype(np.int32), rng.uniform(1, 4, (2, 1, 32)).astype(BF16),
            np.full(32, 0.5, BF16)]


def test_prepared_call_on_a_view_dies_with_its_base(dev: Device) -> None:
    base = DeviceArray.zeros((2, 4, 4, 32), np.int8)
    view = base[0]
    d_in = [DeviceArray.from_numpy(a) for a in inputs()]
    qs.quant_scatter_(view, *d_in, check_indices=False)
    base.close()
    other = DeviceArray.zeros((2, 4, 4, 32), np.int8)  # may take the freed block from the cache
    with pytest.raises(InvalidValueError, match="closed"):
        qs.quant_scatter_(view, *d_in, check_indices=False)
    Device(0).stream.synchronize()
    assert not other.to_numpy().any()
    other.close()
    for arr in d_in:
        arr.close()


@pytest.mark.parametrize("closed", ["view", "from_pointer"])
def test_closing_an_input_view_or_wrapper_releases_its_calls(dev: Device, emu: Emu, closed: str) -> None:
    cache = DeviceArray.zeros((4, 4, 32), np.int8)
    idx, upd, sc = (DeviceArray.from_numpy(a) for a in inputs())
    upd_in = upd[:, :, :] if closed == "view" else DeviceArray.from_pointer(upd.ptr, upd.shape, upd.dtype, owner=upd)
    qs.quant_scatter_(cache, idx, upd_in, sc, check_indices=False)
    tensors = emu.stat("live_tensors")
    upd_in.close()
    assert upd_in.closed
    assert emu.stat("live_tensors") == tensors - 4  # the prepared call's descriptors of its four operands
    with pytest.raises(InvalidValueError, match="closed"):
        qs.quant_scatter_(cache, idx, upd_in, sc, check_indices=False)
    for arr in (cache, idx, upd, sc):
        arr.close()


def test_closing_a_stream_releases_its_calls_and_later_closes_succeed(dev: Device, emu: Emu) -> None:
    gc.collect()
    allocator_for(0).empty_cache()
    start = {k: emu.stat(k) for k in ("live_device_blocks", "live_tensors", "live_executors", "live_streams")}
    cache = DeviceArray.zeros((4, 4, 32), np.int8)
    d_in = [DeviceArray.from_numpy(a) for a in inputs()]
    with Stream() as s2:
        qs.quant_scatter_(cache, *d_in, stream=s2, check_indices=False)
    for arr in (cache, *d_in):
        arr.close()  # no call here may touch the destroyed stream
    allocator_for(0).empty_cache()
    assert {k: emu.stat(k) for k in start} == start


def test_a_cached_block_waits_for_its_stream_before_use_on_another(dev: Device) -> None:
    idx, upd, sc = inputs(1)
    with Stream() as s2:
        d_self = DeviceArray.zeros((4, 4, 32), np.int8)
        d_upd = DeviceArray.from_numpy(upd)
        fresh = qs.quant_scatter(d_self, idx, d_upd, sc)  # queued on the package stream, reads d_upd
        d_upd.close()  # its block returns to the package stream's cache while the op may still be queued
        reuse = DeviceArray.empty(upd.shape, upd.dtype)  # takes that block
        reuse.copy_from(np.full(upd.shape, 100.0, BF16), stream=s2)  # must not overtake the queued op
        want = qs.quant_scatter(np.zeros((4, 4, 32), np.int8), idx, upd, sc, backend="cpu")
        np.testing.assert_array_equal(fresh.to_numpy(), want)
        for arr in (d_self, fresh, reuse):
            arr.close()


def test_package_stream_comes_back_after_close(dev: Device) -> None:
    Device(0).stream.close()
    cache = np.zeros((4, 4, 32), np.int8)
    qs.quant_scatter_(cache, *inputs(), backend="npu")
    assert cache.any() and not Device(0).stream.closed


def test_bool_or_float_axis_never_reaches_a_prepared_call(dev: Device) -> None:
    cache = DeviceArray.zeros((4, 4, 32), np.int8)
    d_in = [DeviceArray.from_numpy(a) for a in inputs()]
    qs.quant_scatter_(cache, *d_in, axis=1, check_indices=False)
    for bad in (True, 1.0):
        with pytest.raises(qs.InvalidDtypeError, match="axis"):
            qs.quant_scatter_(cache, *d_in, axis=bad, check_indices=False)
    for arr in (cache, *d_in):
        arr.close()


def test_host_indices_are_checked_even_without_the_device_check(dev: Device, emu: Emu) -> None:
    before = emu.stat("errors_detected")
    with DeviceArray.zeros((4, 4, 32), np.int8) as cache:
        with pytest.raises(InvalidValueError, match="indices"):
            qs.quant_scatter_(cache, np.array([0, 1000], np.int32), *inputs()[1:], check_indices=False)
        Device(0).stream.synchronize()
    assert emu.stat("errors_detected") == before


def test_switching_devices_sets_each_device_once_per_thread(dev: Device, emu: Emu,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANN_EMU_DEVICE_COUNT", "2")
    arrays = [DeviceArray.zeros((4,), np.int8, device=d) for d in (0, 1)]
    emu.reset()
    for _ in range(50):
        for arr in arrays:
            arr.to_numpy()
    assert emu.calls("aclrtSetDevice") <= 2
    with Device(0):
        Stream(1).close()  # an internal switch to device 1 ...
        fresh = DeviceArray.zeros((4,), np.int8)
        assert fresh.device.id == 0  # ... does not change where the user's next array goes
        fresh.close()
    for arr in arrays:
        arr.close()
    allocator_for(1).empty_cache()


def test_huge_shapes_are_refused_not_wrapped(dev: Device) -> None:
    with pytest.raises(InvalidValueError, match="bytes"):
        DeviceArray.empty((1 << 32, 1 << 32, 32), np.int8)


def test_collection_during_allocation_does_not_deadlock(emulator_root: Path) -> None:
    code = """
import gc, numpy as np, pyacl_qscatter as qs
gc.set_threshold(1)  # collect on nearly every allocation, so finalizers run inside allocator calls
for i in range(300):
    a = qs.DeviceArray.zeros((64,), np.int8)
    a.cycle = a  # only the cyclic collector frees it: its finalizer runs at an arbitrary allocation
print("done")
"""
    env = dict(os.environ, ASCEND_HOME_PATH=str(emulator_root), ASCEND_OPP_PATH=str(emulator_root / "opp"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr


@pytest.mark.parametrize("soc", ["Ascend910B1", "Ascend910_9391", "Ascend310P3", "Ascend950PR"])
def test_selftest_passes_on_every_product(emulator_root: Path, soc: str) -> None:
    env = dict(os.environ, ASCEND_HOME_PATH=str(emulator_root), ASCEND_OPP_PATH=str(emulator_root / "opp"),
               CANN_EMU_SOC=soc)
    out = subprocess.run([sys.executable, "-m", "pyacl_qscatter", "selftest"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.rstrip().endswith(" 0 mismatches")
