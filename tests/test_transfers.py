"""Host <-> device transfers: pinned staging and its recycling, views that move only their bytes,
asynchronous inputs, pinned_empty, against the strict emulator's counters (never timings)."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from emulator.emu import Emu
from reliability import CHILD_PROLOGUE, report, run_script, settle

import pyacl_qscatter as qs
from pyacl_qscatter import DeviceArray, Stream, _transfer, pinned_empty
from pyacl_qscatter.memory import allocator_for
from pyacl_qscatter.pinned import is_pinned, pinned_pool
from pyacl_qscatter.runtime import Device, ensure_runtime

pytestmark = pytest.mark.emulator
BF16 = ml_dtypes.bfloat16
KIB = 1024


def host_cache(seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).integers(-128, 128, (8, 64, 1024), dtype=np.int8)


# Views: (key, whether each run starts at a 64-byte aligned address, so that writes stay asynchronous)
VIEWS = [
    (np.s_[:, 10:13], True),       # 8 runs of 3 KiB, 64 KiB apart
    (np.s_[:, :, 64:128], True),   # 512 runs of 64 B, 1 KiB apart (one 2-D copy)
    (np.s_[3], True),              # contiguous
    (np.s_[:, 5, 1:1000], False),  # runs that start one byte past an aligned address
    (np.s_[:, :, 3:7], False),     # tiny runs: the aligned span would be 4x the view
]


@pytest.mark.parametrize(("key", "aligned"), VIEWS)
def test_a_view_moves_only_its_bytes_both_ways(dev: Device, emu: Emu, key: Any, aligned: bool) -> None:
    host = host_cache()
    runs = host[key].reshape(-1, host[key].shape[-1]).shape[0]  # every view here has dense last-axis runs
    with DeviceArray.from_numpy(host) as d:
        view = d[key]
        emu.reset()
        np.testing.assert_array_equal(view.to_numpy(), host[key])
        # Each copy starts at the aligned address at or below its run: at most 63 bytes more per run.
        assert view.nbytes <= emu.stat("bytes_d2h") <= view.nbytes + 63 * runs
        if aligned:
            assert emu.stat("bytes_d2h") <= 1.1 * view.nbytes
        new = np.random.default_rng(1).integers(-128, 128, view.shape, dtype=np.int8)
        emu.reset()
        view.copy_from(new)
        assert emu.stat("bytes_h2d") == view.nbytes
        assert (emu.calls("aclrtMemcpy") == 0) == aligned  # misaligned runs are written synchronously
        host[key] = new
        np.testing.assert_array_equal(d.to_numpy(), host)  # nothing around the view was touched
    assert emu.stat("errors_detected") == 0 and emu.stat("pageable_copies") == 0


def test_the_view_of_the_issue_moves_under_1_1x(dev: Device, emu: Emu) -> None:
    # issue 11: to_numpy() of a 0.78 MiB view of a 28 MiB cache copied the whole span
    with DeviceArray.zeros((8, 4096, 1024), np.int8) as cache:
        view = cache[:, 100:200]
        emu.reset()
        got = view.to_numpy()
        assert got.shape == (8, 100, 1024) and not got.any()
        assert emu.stat("bytes_d2h") <= 1.1 * view.nbytes
        assert emu.stat("errors_detected") == 0


def test_every_asynchronous_copy_uses_pinned_aligned_memory(dev: Device, emu: Emu) -> None:
    # The strict emulator counts an async copy from pageable or misaligned memory in errors_detected.
    emu.reset()
    odd = np.frombuffer(bytearray(4097), np.int8)[1:]  # a host buffer that starts at an odd address
    with DeviceArray.from_numpy(odd) as d, Stream() as s:
        d.copy_from(odd[::-1].copy(), stream=s)
        out = np.empty(4096 + 1, np.int8)[1:]
        d.to_numpy(out=out, stream=s)
        np.testing.assert_array_equal(out, odd[::-1])
    assert emu.calls("aclrtMemcpyAsync") >= 3 and emu.calls("aclrtMemcpy") == 0
    assert emu.stat("errors_detected") == 0


def test_staging_buffers_are_recycled_not_reallocated(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    rows = np.ones((8, 1, 1024), BF16)
    with DeviceArray.empty(rows.shape, BF16) as d:
        for _ in range(3):  # warm up the pool
            d.copy_from(rows)
            d.to_numpy()
        emu.reset()
        for i in range(50):
            d.copy_from(rows * i)
            assert float(d.to_numpy()[0, 0, 0]) == i
    assert emu.calls("aclrtMallocHost") == 0 and emu.calls("aclrtFreeHost") == 0
    assert emu.calls("aclrtMemcpyAsync") == 100
    assert emu.stat("errors_detected") == 0
    assert settle(emu) == start  # empty_cache gives the pinned pool back too


def test_copy_from_on_a_stream_does_not_wait(dev: Device, emu: Emu) -> None:
    with DeviceArray.empty((4, 1024), np.float16) as d, Stream() as s:
        d.copy_from(np.zeros((4, 1024), np.float16), stream=s)
        s.synchronize()
        emu.reset()
        src = np.full((4, 1024), 3, np.float16)
        d.copy_from(src, stream=s)
        src[...] = 7  # staged: the queued copy must not see this
        assert emu.calls("aclrtSynchronizeStream") == 0 and emu.calls("aclrtSynchronizeDevice") == 0
        assert emu.calls("aclrtMemcpy") == 0
        assert (d.to_numpy(stream=s) == 3).all()
    assert emu.stat("errors_detected") == 0


def test_pinned_empty_is_copied_without_staging_and_lives_until_its_copy_ran(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    a = pinned_empty((4, 1024), np.float16)
    assert isinstance(a, np.ndarray) and is_pinned(a) and is_pinned(a[1:]) and not is_pinned(a.copy())
    assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.flags.writeable
    assert emu.stat("live_host_blocks") == start["live_host_blocks"] + 1
    a[...] = 5
    with DeviceArray.empty((4, 1024), np.float16) as d, Stream() as s:
        d.to_numpy(stream=s)  # warm the staging pool for the read back below
        emu.reset()
        d.copy_from(a, stream=s)
        assert emu.calls("aclrtMallocHost") == 0 and emu.stat("bytes_h2d") == 0  # queued, straight from `a`
        held = emu.stat("live_host_blocks")
        del a
        gc.collect()
        assert emu.calls("aclrtFreeHost") == 0 and emu.stat("live_host_blocks") == held  # kept for the copy
        assert (d.to_numpy(stream=s) == 5).all()
        out = pinned_empty((4, 1024), np.float16)
        emu.reset()
        d.to_numpy(out=out, stream=s)
        assert (out == 5).all() and emu.stat("bytes_d2h") == out.nbytes
        del out
    assert emu.stat("errors_detected") == 0
    assert settle(emu) == start  # freed once collected and its copy ran


def test_pinned_empty_checks_its_arguments(dev: Device) -> None:
    with pytest.raises(qs.InvalidValueError, match="shape"):
        pinned_empty((-1, 4), np.int8)
    with pytest.raises(qs.InvalidDtypeError, match="dtype"):
        pinned_empty((4,), object)
    assert pinned_empty(0, np.int8).shape == (0,)


def test_a_numpy_call_is_one_host_wait_and_recycles_its_staging(dev: Device, emu: Emu) -> None:
    rng = np.random.default_rng(2)
    cache = np.zeros((8, 64, 1024), np.int8)
    upd = rng.uniform(-2, 2, (8, 1, 1024)).astype(BF16)
    sc = rng.uniform(0.1, 1, 1024).astype(BF16)
    for step in range(3):
        qs.quant_scatter_(cache, np.arange(8, dtype=np.int32) + step, upd, sc, backend="npu")
    emu.reset()
    for step in range(20):
        qs.quant_scatter_(cache, np.arange(8, dtype=np.int32) + step, upd, sc, backend="npu")
    waits = sum(emu.calls(s) for s in ("aclrtSynchronizeStream", "aclrtSynchronizeDevice", "aclrtSynchronizeEvent"))
    assert waits == 20 and emu.calls("aclrtMemcpy") == 0
    assert emu.calls("aclrtMalloc") == 0 and emu.calls("aclrtMallocHost") == 0
    assert emu.stat("errors_detected") == 0
    want = np.zeros_like(cache)
    for step in range(3):
        qs.quant_scatter_(want, np.arange(8, dtype=np.int32) + step, upd, sc, backend="cpu")
    for step in range(20):
        qs.quant_scatter_(want, np.arange(8, dtype=np.int32) + step, upd, sc, backend="cpu")
    np.testing.assert_array_equal(cache, want)


def test_a_decode_step_with_host_indices_makes_no_host_wait(dev: Device, emu: Emu) -> None:
    rng = np.random.default_rng(3)
    layers = 4
    caches = [DeviceArray.zeros((8, 64, 1024), np.int8) for _ in range(layers)]
    d_sc = DeviceArray.from_numpy(rng.uniform(0.1, 1, 1024).astype(BF16))
    want = [np.zeros((8, 64, 1024), np.int8) for _ in range(layers)]
    sc = d_sc.to_numpy()
    with Stream() as s:
        def step(t: int) -> None:
            idx = (np.arange(8, dtype=np.int32) * 3 + t) % 64
            upd = rng.uniform(-2, 2, (8, 1, 1024)).astype(BF16)
            for layer in range(layers):
                qs.quant_scatter_(caches[layer], idx, upd, d_sc, stream=s)
                qs.quant_scatter_(want[layer], idx, upd, sc, backend="cpu")

        for t in range(3):
            step(t)
        s.synchronize()  # the device caught up: the fences of the warm-up steps have run
        emu.reset()
        for t in range(3, 10):
            step(t)
            host_waits = emu.stat("host_syncs") + sum(emu.calls(f) for f in (
                "aclrtSynchronizeStream", "aclrtSynchronizeDevice", "aclrtSynchronizeEvent", "aclrtMemcpy"))
            assert host_waits == 0, f"step {t}"
            assert emu.calls("aclrtMalloc") == 0 and emu.calls("aclrtMallocHost") == 0, f"step {t}"
            s.synchronize()  # as a decode loop reading its logits would (not counted: reset below)
            emu.reset()
        for layer in range(layers):
            np.testing.assert_array_equal(caches[layer].to_numpy(stream=s), want[layer])
    assert emu.stat("errors_detected") == 0
    for arr in (*caches, d_sc):
        arr.close()


def test_a_decode_loop_without_syncs_queries_in_batches_and_stays_bounded(dev: Device, emu: Emu) -> None:
    # No host wait at all for many steps: staging buffers and fence events come back in batches of
    # REAP_AT (a few event queries per batch, never one per upload), so neither grows with the steps.
    from pyacl_qscatter._fences import REAP_AT

    start = settle(emu)
    steps = 6 * REAP_AT
    cache = DeviceArray.zeros((4, 64, 256), np.int8)
    want = np.zeros((4, 64, 256), np.int8)
    upd = np.random.default_rng(5).uniform(-2, 2, (4, 1, 256)).astype(BF16)
    sc = np.full(256, 0.05, BF16)
    d_upd, d_sc = DeviceArray.from_numpy(upd), DeviceArray.from_numpy(sc)
    with Stream() as s:
        qs.quant_scatter_(cache, np.zeros(4, np.int32), d_upd, d_sc, stream=s)  # warm-up: the call is prepared
        s.synchronize()
        emu.reset()
        live = []
        for t in range(steps):
            idx = (np.arange(4, dtype=np.int32) * 16 + t) % 64  # new host indices: one upload per step
            qs.quant_scatter_(cache, idx, d_upd, d_sc, stream=s)
            qs.quant_scatter_(want, idx, upd, sc, backend="cpu")
            live.append((emu.stat("live_events"), emu.stat("live_host_blocks")))
        host_waits = emu.stat("host_syncs") + sum(emu.calls(f) for f in (
            "aclrtSynchronizeStream", "aclrtSynchronizeDevice", "aclrtSynchronizeEvent", "aclrtMemcpy"))
        assert host_waits == 0
        assert emu.calls("aclrtMemcpyAsync") == steps
        # Per batch: the oldest fence, the newest of its stream, and one more before the device caught up.
        assert emu.calls("aclrtQueryEventStatus") <= 3 * (steps // REAP_AT + 1)
        # Events and staging buffers reach a plateau of about one batch (within three) and stay there.
        assert emu.calls("aclrtCreateEventExWithFlag") + emu.calls("aclrtCreateEventWithFlag") <= REAP_AT + 2
        assert emu.calls("aclrtMallocHost") <= REAP_AT + 2
        assert live[-1] == live[steps // 2] and max(live[steps // 2:]) == live[-1]
        np.testing.assert_array_equal(cache.to_numpy(stream=s), want)
    for arr in (cache, d_upd, d_sc):
        arr.close()
    assert emu.stat("errors_detected") == 0
    assert settle(emu) == start  # empty_cache frees the buffers and events of the pools


def test_host_index_values_are_still_checked_on_the_host(dev: Device, emu: Emu) -> None:
    with DeviceArray.zeros((8, 64, 1024), np.int8) as cache, Stream() as s:
        emu.reset()
        with pytest.raises(qs.InvalidValueError, match="indices"):
            qs.quant_scatter_(cache, np.full(8, 64, np.int32), np.ones((8, 1, 1024), BF16),
                              np.ones(1024, BF16), stream=s)
        s.synchronize()
        assert not cache.to_numpy().any()
    assert emu.stat("errors_detected") == 0


TRANSFERS_85 = CHILD_PROLOGUE + r"""
import numpy as np, ml_dtypes
import pyacl_qscatter as qs
from pyacl_qscatter import DeviceArray, Stream
bf = ml_dtypes.bfloat16
host = np.arange(8 * 64 * 1024, dtype=np.int64).astype(np.int8).reshape(8, 64, 1024)
with DeviceArray.from_numpy(host) as d, Stream() as s:
    ok = bool((d[:, 3:9].to_numpy() == host[:, 3:9]).all()
              and (d[:, :, 64:128].to_numpy(stream=s) == host[:, :, 64:128]).all())
    d[:, 1].copy_from(np.ones((8, 1024), np.int8), stream=s)
    cache = np.zeros((8, 64, 1024), np.int8)
    qs.quant_scatter_(cache, np.arange(8, dtype=np.int32), np.ones((8, 1, 1024), bf), np.ones(1024, bf), backend="npu")
    qs.quant_scatter_(d, np.arange(8, dtype=np.int32), np.ones((8, 1, 1024), bf), np.ones(1024, bf), stream=s)
    ok = ok and bool((d.to_numpy(stream=s)[:, 1] == 1).all() and (cache[np.arange(8), np.arange(8)] == 1).all())
REPORT.update(ok=ok, pageable=stat("pageable_copies"), detected=stat("errors_detected"))
_print_report()
"""


@pytest.mark.parametrize("version", ["8.3.RC1", "8.5.0"])
def test_no_pageable_copies_on_either_side_of_8_5(emulator_root: Path, version: str) -> None:
    out = run_script(TRANSFERS_85, emulator_root, CANN_EMU_VERSION=version)
    assert out.returncode == 0, out.stderr
    result = report(out)
    assert result == {"ok": True, "pageable": 0, "detected": 0}


def test_pools_are_per_device_and_drained_by_empty_cache(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    with DeviceArray.from_numpy(np.ones(100 * KIB, np.int8)) as d:
        d.to_numpy()
    pool = pinned_pool(0)
    assert pool.cached_bytes >= 100 * KIB
    allocator_for(0).empty_cache()
    assert pool.cached_bytes == 0 and pool.fences.outstanding == 0
    assert settle(emu) == start


def test_numpy_calls_work_again_after_a_device_reset(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    rng = np.random.default_rng(4)
    cache, want = np.zeros((8, 64, 1024), np.int8), np.zeros((8, 64, 1024), np.int8)
    upd, sc = rng.uniform(-2, 2, (8, 1, 1024)).astype(BF16), rng.uniform(0.1, 1, 1024).astype(BF16)
    idx = np.arange(8, dtype=np.int32)
    qs.quant_scatter_(cache, idx, upd, sc, backend="npu")  # keeps this layout's buffers
    Device(0).reset()  # closes them with everything else on the device
    qs.quant_scatter_(cache, idx + 8, upd, sc, backend="npu")  # made afresh
    for i in (idx, idx + 8):
        qs.quant_scatter_(want, i, upd, sc, backend="cpu")
    np.testing.assert_array_equal(cache, want)
    assert emu.stat("errors_detected") == 0
    Device(0).stream  # noqa: B018  (the fixture's package stream, made again after the reset)
    assert settle(emu) == start


def test_the_pinned_pool_keeps_at_most_its_limit(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    pool = pinned_pool(0)
    limit = pool.cache_limit
    try:
        pool.cache_limit = 64 * KIB
        with DeviceArray.zeros((100 * KIB,), np.int8) as d:
            emu.reset()
            assert not d.to_numpy().any()
            assert emu.calls("aclrtMallocHost") == 1 and emu.calls("aclrtFreeHost") == 1  # too big to keep
            assert pool.cached_bytes == 0
            assert not d[: 32 * KIB].to_numpy().any()
            assert pool.cached_bytes == 32 * KIB  # fits: kept for the next copy
    finally:
        pool.cache_limit = limit
    assert settle(emu) == start


@pytest.mark.parametrize(("key", "copies"), [(np.s_[:, 10:13], 8), (np.s_[:, 5, 0:1000], 8)])
def test_without_2d_copies_a_view_moves_one_copy_per_run(dev: Device, emu: Emu, monkeypatch: pytest.MonkeyPatch,
                                                         key: Any, copies: int) -> None:
    cann = ensure_runtime()
    without = SimpleNamespace(caps=dataclasses.replace(cann.caps, memcpy_2d=False))
    monkeypatch.setattr(_transfer, "ensure_runtime", lambda: without)  # a toolkit without aclrtMemcpy2dAsync
    host = host_cache(5)
    with DeviceArray.from_numpy(host) as d:
        view = d[key]
        emu.reset()
        np.testing.assert_array_equal(view.to_numpy(), host[key])
        assert emu.calls("aclrtMemcpyAsync") == copies and emu.calls("aclrtMemcpy2dAsync") == 0
        assert emu.stat("bytes_d2h") <= 1.1 * view.nbytes
        new = np.ones(view.shape, np.int8)
        emu.reset()
        view.copy_from(new)
        assert emu.calls("aclrtMemcpyAsync") == copies and emu.stat("bytes_h2d") == view.nbytes
        host[key] = new
        np.testing.assert_array_equal(d.to_numpy(), host)
    assert emu.stat("errors_detected") == 0
