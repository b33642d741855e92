"""The NPU backend end to end against the CANN emulator, loaded the way a real toolkit is."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from cases import TYPE_KINDS, case_paths, load_case, strided_view
from emulator.emu import Emu
from reliability import settle

import pyacl_qscatter as qs
from pyacl_qscatter.errors import CannError, InvalidDtypeError, InvalidValueError
from pyacl_qscatter.memory import DeviceArray, allocator_for
from pyacl_qscatter.runtime import Device, Event, Stream

pytestmark = pytest.mark.emulator
VALID = case_paths("valid")
INVALID = case_paths("invalid")
BF16 = ml_dtypes.bfloat16



def small_inputs(seed: int = 0, batch: int = 4, rows: int = 1) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    cache = rng.integers(-128, 128, (batch, 16, 64), dtype=np.int8)
    idx = rng.permutation(16 - rows + 1)[:batch].astype(np.int32)
    upd = rng.uniform(-4, 4, (batch, rows, 64)).astype(BF16)
    sc = rng.uniform(0.01, 1, 64).astype(BF16)
    zp = rng.uniform(-2, 2, 64).astype(BF16)
    return cache, idx, upd, sc, zp


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_numpy(dev: Device, path: Path) -> None:
    case = load_case(path)
    out = qs.quant_scatter(*case.args(), backend="npu", strict=True)
    np.testing.assert_array_equal(out, case.expected)
    target = case.arrays["self"].copy()
    qs.quant_scatter_(target, *case.args()[1:], backend="npu")
    np.testing.assert_array_equal(target, case.expected)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_device_arrays(dev: Device, path: Path) -> None:
    case = load_case(path)
    d = {k: DeviceArray.from_numpy(v) for k, v in case.arrays.items()}
    try:
        result = qs.quant_scatter_(d["self"], d["indices"], d["updates"], d["quant_scales"],
                                   d.get("quant_zero_points"), case.axis, case.quant_axis, case.reduce)
        assert result is d["self"]
        np.testing.assert_array_equal(d["self"].to_numpy(), case.expected)
        fresh = qs.quant_scatter(d["self"], d["indices"], d["updates"], d["quant_scales"],
                                 d.get("quant_zero_points"), case.axis, case.quant_axis, case.reduce)
        np.testing.assert_array_equal(np.asarray(fresh), case.expected)
        fresh.close()
    finally:
        for arr in d.values():
            arr.close()


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_strided_device_views(dev: Device, path: Path) -> None:
    case = load_case(path)
    bases, views = {}, {}
    for k, v in case.arrays.items():
        _, host_base = strided_view(v)
        bases[k] = DeviceArray.from_numpy(host_base)
        views[k] = bases[k][tuple(slice(1, 1 + 2 * n, 2) for n in v.shape)]
        assert views[k].offset > 0 and (views[k].size <= 1 or not views[k].is_contiguous)
    before = bases["self"].to_numpy()
    try:
        qs.quant_scatter_(views["self"], views["indices"], views["updates"], views["quant_scales"],
                          views.get("quant_zero_points"), case.axis, case.quant_axis, case.reduce)
        np.testing.assert_array_equal(views["self"].to_numpy(), case.expected)
        after = bases["self"].to_numpy()
        inside = np.zeros(after.shape, bool)
        inside[tuple(slice(1, 1 + 2 * n, 2) for n in case.arrays["self"].shape)] = True
        np.testing.assert_array_equal(after[~inside], before[~inside])
    finally:
        for arr in bases.values():
            arr.close()


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_rejected_before_device_work(dev: Device, emu: Emu, path: Path) -> None:
    case = load_case(path)
    original = case.arrays["self"].copy()
    cls = InvalidDtypeError if case.error in TYPE_KINDS else InvalidValueError
    phase1 = emu.calls("aclnnInplaceQuantScatterGetWorkspaceSize")
    detected = emu.stat("errors_detected")
    with pytest.raises(cls) as info:
        qs.quant_scatter_(*case.args(), backend="npu")
    assert info.value.kind == case.error
    assert case.arrays["self"].tobytes() == original.tobytes()
    if case.arrays["self"].dtype == np.int8 and case.arrays["indices"].dtype.kind == "i":
        d_self = DeviceArray.from_numpy(case.arrays["self"])
        d_idx = DeviceArray.from_numpy(case.arrays["indices"])
        try:
            with pytest.raises(cls) as info:
                qs.quant_scatter_(d_self, d_idx, *case.args()[2:])
            assert info.value.kind == case.error
            np.testing.assert_array_equal(d_self.to_numpy(), original)
        finally:
            d_self.close()
            d_idx.close()
    assert emu.calls("aclnnInplaceQuantScatterGetWorkspaceSize") == phase1
    assert emu.stat("errors_detected") == detected


def test_ops_nn_smoke_vector(dev: Device) -> None:
    out = qs.quant_scatter(np.zeros((1, 1, 32), np.int8), np.array([0], np.int32), np.ones((1, 1, 32), np.float16),
                           np.full(32, 0.5, np.float32), np.zeros(32, np.int32), backend="npu")
    assert out.tolist() == [[[2] * 32]]


def test_numpy_call_moves_only_what_it_needs(dev: Device, emu: Emu) -> None:
    cache, idx, upd, sc, zp = small_inputs()
    emu.reset()
    qs.quant_scatter_(cache, idx, upd, sc, zp, backend="npu")
    # The compact block's indices are zeros made on the device (aclrtMemsetAsync), once per layout.
    assert emu.stat("bytes_h2d") == upd.nbytes + sc.nbytes + zp.nbytes
    assert emu.stat("bytes_d2h") == upd.size  # the int8 blocks, not the whole cache


def test_mixed_calls_leave_no_live_objects(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    detected = emu.stat("errors_detected")
    rng = np.random.default_rng(1)
    failures = 0
    with Stream() as stream:
        d_cache = DeviceArray.zeros((4, 16, 64), np.int8)
        for i in range(1000):
            cache, idx, upd, sc, zp = small_inputs(i % 7, rows=1 + i % 3)
            kind = i % 5
            if kind == 0:
                qs.quant_scatter_(cache, idx, upd, sc, zp, backend="npu")
            elif kind == 1:
                qs.quant_scatter_(d_cache, idx, upd, sc, None, stream=stream)
            elif kind == 2:
                bad = idx.copy()
                bad[0] = 99 if rng.random() < 0.5 else -1
                with pytest.raises(InvalidValueError):
                    qs.quant_scatter_(d_cache, bad, upd, sc, zp, stream=stream)
                failures += 1
            elif kind == 3:
                emu.inject("aclnnInplaceQuantScatterGetWorkspaceSize", 1, 561002)
                with pytest.raises(CannError):
                    qs.quant_scatter_(cache, idx, upd, sc, zp, backend="npu")
                failures += 1
            else:
                with DeviceArray.from_numpy(upd) as d_upd:
                    out = qs.quant_scatter(d_cache, idx, d_upd, sc, zp, stream=stream)
                    out.close()
        stream.synchronize()
        d_cache.close()
    assert failures == 400
    assert settle(emu) == start
    assert emu.stat("errors_detected") == detected


# A NumPy call's first call with a layout (its descriptors stay with the layout's buffers until
# empty_cache, which is where aclDestroyTensor runs: test_a_failed_release_at_empty_cache_is_reported).
OP_PATH = ["aclrtMalloc", "aclrtMemcpyAsync", "aclCreateTensor", "aclnnInplaceQuantScatterGetWorkspaceSize",
           "aclnnInplaceQuantScatter", "aclrtSynchronizeStream"]


@pytest.mark.parametrize("symbol", OP_PATH)
def test_fault_at_each_call_of_the_op_path(dev: Device, emu: Emu, symbol: str) -> None:
    cache, idx, upd, sc, zp = small_inputs(3)
    original = cache.copy()
    start = settle(emu)
    emu.reset()
    # An allocation failure (the default for aclrtMalloc) is retried once after emptying the cache, so
    # inject an internal error there; every other call fails with the emulator's default code.
    emu.inject(symbol, 1, 507000 if symbol == "aclrtMalloc" else 0)
    with pytest.raises(CannError) as info:
        qs.quant_scatter_(cache, idx, upd, sc, zp, backend="npu")
    err = info.value
    assert err.function == symbol and err.cann_message, str(err)
    assert str(err.code) in str(err) and err.name in str(err)
    assert cache.tobytes() == original.tobytes()
    after = settle(emu)
    if symbol == "aclnnInplaceQuantScatter":
        # Phase 2 consumed the executor (nnopbase deletes it even on failure), so the package never frees it;
        # the emulator's injected fault returns before its phase 2 runs and keeps it on its own books.
        after["live_executors"] = start["live_executors"]
        assert emu.stat("errors_detected") == 0
    assert after == start
    qs.quant_scatter_(cache, idx, upd, sc, zp, backend="npu")
    np.testing.assert_array_equal(cache, qs.quant_scatter(original, idx, upd, sc, zp, backend="cpu"))


def test_a_failed_release_at_empty_cache_is_reported(dev: Device, emu: Emu) -> None:
    cache, idx, upd, sc, zp = small_inputs(4)
    start = settle(emu)
    qs.quant_scatter_(cache, idx, upd, sc, zp, backend="npu")  # keeps the layout's descriptors
    emu.inject("aclDestroyTensor", 1, 0)
    with pytest.raises(CannError) as info:
        allocator_for(0).empty_cache()
    assert info.value.function == "aclDestroyTensor" and info.value.cann_message
    # A descriptor whose destroy failed stays with CANN; every other object is released.
    assert settle(emu) == {k: v + (1 if k == "live_tensors" else 0) for k, v in start.items()}


def test_allocation_failure_is_retried_after_emptying_the_cache(dev: Device, emu: Emu) -> None:
    cache, idx, upd, sc, zp = small_inputs(4)
    settle(emu)
    emu.inject("aclrtMalloc", 1, 207001)
    qs.quant_scatter_(cache, idx, upd, sc, zp, backend="npu")
    np.testing.assert_array_equal(cache, qs.quant_scatter(small_inputs(4)[0], idx, upd, sc, zp, backend="cpu"))
    assert emu.calls("aclrtMalloc") >= 2


def test_from_pointer_and_from_handle_are_never_freed(dev: Device, emu: Emu, emulator_cann: Any) -> None:
    raw = emulator_cann
    raw.init()
    raw.set_device(0)
    cache, idx, upd, sc, zp = small_inputs(5)
    ptr = raw.malloc(cache.nbytes)
    raw.h2d(ptr, cache.tobytes())
    handle = raw.create_stream()
    address = int(raw.ffi.cast("uintptr_t", ptr))
    settle(emu)
    blocks, streams = emu.stat("live_device_blocks"), emu.stat("live_streams")
    owner = object()
    view = DeviceArray.from_pointer(address, cache.shape, np.int8, owner=owner)
    assert view._owner is owner
    theirs = Stream.from_handle(int(raw.ffi.cast("uintptr_t", handle)), owner=raw)
    qs.quant_scatter_(view, idx, upd, sc, zp, stream=theirs)
    theirs.synchronize()
    expected = qs.quant_scatter(cache, idx, upd, sc, zp, backend="cpu")
    np.testing.assert_array_equal(view.to_numpy(stream=theirs), expected)
    view.close()
    theirs.close()
    del view, theirs
    settle(emu)
    assert emu.stat("live_device_blocks") == blocks and emu.stat("live_streams") == streams
    assert np.frombuffer(raw.d2h(ptr, cache.nbytes), np.int8).reshape(cache.shape).tolist() == expected.tolist()
    raw.free(ptr)
    raw.check(raw.rt.aclrtDestroyStream(handle), "aclrtDestroyStream")


def test_threads_on_their_own_streams(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            with Stream() as stream:
                d_cache = DeviceArray.zeros((4, 16, 64), np.int8, stream=stream)
                host = np.zeros((4, 16, 64), np.int8)
                for i in range(30):
                    _, idx, upd, sc, zp = small_inputs(seed * 100 + i)
                    qs.quant_scatter_(d_cache, idx, upd, sc, zp, stream=stream)
                    qs.quant_scatter_(host, idx, upd, sc, zp, backend="cpu")
                np.testing.assert_array_equal(d_cache.to_numpy(stream=stream), host)
                d_cache.close()
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert settle(emu) == start


def test_two_devices(dev: Device, emu: Emu, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANN_EMU_DEVICE_COUNT", "2")
    assert Device.count() == 2
    cache, idx, upd, sc, zp = small_inputs(9)
    expected = qs.quant_scatter(cache, idx, upd, sc, zp, backend="cpu")
    for device_id in (1, 0):
        with Device(device_id):
            d_cache = DeviceArray.from_numpy(cache)
            assert d_cache.device.id == device_id
            qs.quant_scatter_(d_cache, idx, upd, sc, zp)
            np.testing.assert_array_equal(d_cache.to_numpy(), expected)
            d_cache.close()
    allocator_for(1).empty_cache()
    with pytest.raises(InvalidValueError, match="device"):
        other = DeviceArray.from_numpy(idx, device=1)
        try:
            qs.quant_scatter_(DeviceArray.from_numpy(cache, device=0), other, upd, sc, zp)
        finally:
            other.close()


def test_unsynchronised_read_is_prevented_by_to_numpy(dev: Device) -> None:
    cache, idx, upd, sc, zp = small_inputs(11)
    with Stream() as stream, DeviceArray.from_numpy(cache, stream=stream) as d_cache:
        qs.quant_scatter_(d_cache, idx, upd, sc, zp, stream=stream, check_indices=False)
        # to_numpy without a stream waits for the whole device, so the queued op is visible
        np.testing.assert_array_equal(d_cache.to_numpy(), qs.quant_scatter(cache, idx, upd, sc, zp, backend="cpu"))


def test_events_time_work(dev: Device, emu: Emu) -> None:
    start_live = emu.stat("live_events")
    with Stream() as stream, Event() as start, Event() as end:
        start.record(stream)
        end.record(stream)
        end.synchronize()
        assert start.elapsed_ms(end) >= 0
    assert emu.stat("live_events") == start_live


def test_device_index_check_opt_out_reaches_the_kernel(dev: Device, emu: Emu) -> None:
    cache, idx, upd, sc, zp = small_inputs(13)
    bad = idx.copy()
    bad[1] = bad[0]  # no overlap is possible with 1-D indices, so make one out of range instead
    bad[1] = 16
    with DeviceArray.from_numpy(cache) as d_cache, DeviceArray.from_numpy(bad) as d_idx:
        with pytest.raises(InvalidValueError, match="indices"):
            qs.quant_scatter_(d_cache, d_idx, upd, sc, zp)
        before = emu.stat("errors_detected")
        qs.quant_scatter_(d_cache, d_idx, upd, sc, zp, check_indices=False)
        with pytest.raises(CannError) as info:
            Device(0).stream.synchronize()
        assert info.value.code == 507015
        assert emu.stat("errors_detected") == before + 1
    emu.reset()


def test_demo_uses_npu_and_says_so(emulator_root: Path) -> None:
    env = dict(os.environ, ASCEND_HOME_PATH=str(emulator_root), ASCEND_OPP_PATH=str(emulator_root / "opp"))
    env.pop("PYACL_QSCATTER_BACKEND", None)
    out = subprocess.run([sys.executable, "-m", "pyacl_qscatter", "demo"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("backend: npu (CANN at " + str(emulator_root))
    assert "sample matches the contract" in out.stdout
