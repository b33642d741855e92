"""Device memory pressure, verified against the emulator (``CANN_EMU_DEVICE_MEMORY`` caps the bytes a device
may have allocated; it is read at every aclrtMalloc). An allocation that fails empties the caching allocator
and is retried once; what still does not fit raises ``CannOutOfMemoryError`` (a ``MemoryError``), leaves the
caller's data as it was and leaks nothing; later calls that fit succeed."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from emulator.emu import Emu
from reliability import settle

import pyacl_qscatter as qs
from pyacl_qscatter.errors import CannOutOfMemoryError, QScatterError
from pyacl_qscatter.memory import DeviceArray, allocator_for
from pyacl_qscatter.runtime import Device

pytestmark = pytest.mark.emulator
BF16 = ml_dtypes.bfloat16
MIB = 1 << 20



def call_inputs(rows: int, seed: int = 0) -> tuple[np.ndarray[Any, Any], ...]:
    rng = np.random.default_rng(seed)
    cache = rng.integers(-128, 128, (4, 64, 1024), dtype=np.int8)
    idx = np.array([0, 8, 16, 24], np.int32)
    upd = rng.uniform(-4, 4, (4, rows, 1024)).astype(BF16)
    sc = rng.uniform(0.05, 1, 1024).astype(BF16)
    return cache, idx, upd, sc


def test_a_call_that_fits_once_the_cache_is_emptied_succeeds(dev: Device, emu: Emu,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    start = settle(emu)
    cache, idx, upd, sc = call_inputs(rows=8)
    qs.quant_scatter_(cache.copy(), idx, upd, sc, backend="npu")  # keeps its blocks for the next call
    alloc = allocator_for(0)
    cached_blocks = emu.stat("live_device_blocks") - start["live_device_blocks"]
    stats = alloc.stats()  # in the cache, or kept with its layout's buffers (npu._host_calls): all reusable
    assert stats["cached_bytes"] + stats["in_use_bytes"] > MIB and cached_blocks >= 4
    # Nothing new fits next to the cache; the next call (other sizes) fits once the cache is gone.
    monkeypatch.setenv("CANN_EMU_DEVICE_MEMORY", str(emu.stat("live_device_bytes") + 1024))
    cache, idx, upd, sc = call_inputs(rows=2, seed=1)
    original = cache.copy()
    emu.reset()
    qs.quant_scatter_(cache, idx, upd, sc, backend="npu")
    np.testing.assert_array_equal(cache, qs.quant_scatter(original, idx, upd, sc, backend="cpu"))
    assert emu.calls("aclrtFree") >= cached_blocks  # the cache was given back ...
    assert emu.calls("aclrtSynchronizeDevice") >= 1  # ... after the device finished with it
    assert emu.stat("errors_detected") == 0
    monkeypatch.delenv("CANN_EMU_DEVICE_MEMORY")
    assert settle(emu) == start


@pytest.mark.parametrize("cached", [False, True])
def test_a_call_that_never_fits_raises_out_of_memory(dev: Device, emu: Emu, monkeypatch: pytest.MonkeyPatch,
                                                     cached: bool) -> None:
    start = settle(emu)
    if cached:
        small = call_inputs(rows=1, seed=2)
        qs.quant_scatter_(small[0].copy(), *small[1:], backend="npu")
    cache, idx, upd, sc = call_inputs(rows=4, seed=3)
    original = cache.copy()
    # Room for nothing but what is cached: the workspace alone (1 MiB) can never fit beside it.
    monkeypatch.setenv("CANN_EMU_DEVICE_MEMORY", str(start["live_device_bytes"] + 4096))
    emu.reset()
    with pytest.raises(CannOutOfMemoryError) as info:
        qs.quant_scatter_(cache, idx, upd, sc, backend="npu")
    err = info.value
    assert isinstance(err, MemoryError) and isinstance(err, QScatterError)
    assert err.function == "aclrtMalloc" and err.code == 207001
    assert "CANN_EMU_DEVICE_MEMORY" in err.cann_message and "207001" in str(err)
    assert cache.tobytes() == original.tobytes()
    failed_sizes = emu.calls("aclrtMalloc")
    assert failed_sizes >= 2  # the first attempt, and the retry after emptying the cache
    assert allocator_for(0).cached_bytes <= 4096 or not cached
    assert emu.stat("errors_detected") == 0
    # Later calls that fit succeed.
    monkeypatch.setenv("CANN_EMU_DEVICE_MEMORY", str(start["live_device_bytes"] + 64 * MIB))
    qs.quant_scatter_(cache, idx, upd, sc, backend="npu")
    np.testing.assert_array_equal(cache, qs.quant_scatter(original, idx, upd, sc, backend="cpu"))
    monkeypatch.delenv("CANN_EMU_DEVICE_MEMORY")
    assert settle(emu) == start


def test_the_retry_is_made_once(dev: Device, emu: Emu, monkeypatch: pytest.MonkeyPatch) -> None:
    settle(emu)
    monkeypatch.setenv("CANN_EMU_DEVICE_MEMORY", str(emu.stat("live_device_bytes")))
    emu.reset()
    with pytest.raises(CannOutOfMemoryError):
        DeviceArray.empty((MIB,), np.int8)
    assert emu.calls("aclrtMalloc") == 2
    assert emu.calls("aclrtSynchronizeDevice") == 1


def test_device_arrays_up_to_the_limit_and_back(dev: Device, emu: Emu, monkeypatch: pytest.MonkeyPatch) -> None:
    start = settle(emu)
    monkeypatch.setenv("CANN_EMU_DEVICE_MEMORY", str(start["live_device_bytes"] + 4 * MIB + 64 * 1024))
    arrays: list[DeviceArray] = []
    with pytest.raises(CannOutOfMemoryError):
        for _ in range(10):
            arrays.append(DeviceArray.zeros((MIB,), np.int8))
    assert len(arrays) == 4
    cache = np.zeros((4, 16, 64), np.int8)
    d_cache = DeviceArray.from_numpy(cache)  # small blocks still fit beside the four arrays ...
    args = (np.arange(4, dtype=np.int32), np.ones((4, 1, 64), BF16), np.full(64, 0.5, BF16))
    with pytest.raises(CannOutOfMemoryError):  # ... the call's 1 MiB workspace does not
        qs.quant_scatter_(d_cache, *args)
    np.testing.assert_array_equal(d_cache.to_numpy(), cache)
    for arr in arrays:
        arr.close()
    arrays.clear()
    qs.quant_scatter_(d_cache, *args)  # fits once the closed arrays' cached blocks are given back
    np.testing.assert_array_equal(d_cache.to_numpy(), qs.quant_scatter(cache, *args, backend="cpu"))
    d_cache.close()  # its prepared call goes, and with it the stream's workspace
    # The closed arrays' blocks went back to the cache; the next large array reuses or frees them.
    again = [DeviceArray.zeros((MIB,), np.int8) for _ in range(4)]
    assert all(np.count_nonzero(a.to_numpy()) == 0 for a in again)
    for arr in again:
        arr.close()
    monkeypatch.delenv("CANN_EMU_DEVICE_MEMORY")
    assert settle(emu) == start
