"""Exact device memory (fine sizes, a cap on the cache, stats, nothing held after del) and cross-stream
order with events (Stream.wait, Stream.query, Event.query), against the emulator's counters."""

from __future__ import annotations

import dataclasses
import gc
from types import SimpleNamespace

import ml_dtypes
import numpy as np
import pytest
from emulator.emu import Emu
from reliability import settle

import pyacl_qscatter as qs
from pyacl_qscatter import DeviceArray, Event, Stream, _calls, runtime
from pyacl_qscatter.memory import DEFAULT_CACHE_LIMIT, allocator_for
from pyacl_qscatter.pinned import round_size
from pyacl_qscatter.runtime import Device, ensure_runtime

pytestmark = pytest.mark.emulator
BF16 = ml_dtypes.bfloat16
MIB = 1 << 20


def needs(cap: str, symbol: str) -> None:
    if not getattr(ensure_runtime().caps, cap):
        pytest.skip(f"the toolkit loaded does not export {symbol} (the emulator gains it on branch emu2)")


def test_sizes_are_rounded_finely() -> None:
    assert [round_size(n) for n in (0, 1, 512, 513, MIB - 1)] == [512, 512, 512, 1024, MIB]
    assert round_size(MIB + 1) == 2 * MIB and round_size(33 * MIB + 5) == 34 * MIB


def test_a_32_mib_cache_costs_at_most_5_percent_more_and_nothing_after_del(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    alloc = allocator_for(0)
    before = alloc.stats()
    cache = DeviceArray.zeros((8, 4100, 1024), np.int8)  # issue 11: took 64 MiB for 32 MiB of data
    held = emu.stat("live_device_bytes") - start["live_device_bytes"]
    assert cache.nbytes <= held <= 1.05 * cache.nbytes
    stats = alloc.stats()
    assert stats["in_use_bytes"] - before["in_use_bytes"] == held
    assert stats["allocations"] == before["allocations"] + 1 and stats["peak_bytes"] >= held
    del cache
    gc.collect()
    assert alloc.stats()["in_use_bytes"] == before["in_use_bytes"]
    alloc.empty_cache()
    assert alloc.stats()["cached_bytes"] == 0
    assert settle(emu) == start and emu.stat("live_device_bytes") == start["live_device_bytes"]


def test_stats_has_exactly_its_documented_keys(dev: Device) -> None:
    stats = allocator_for(0).stats()
    assert sorted(stats) == ["allocations", "cached_bytes", "in_use_bytes", "peak_bytes"]
    assert all(isinstance(v, int) and v >= 0 for v in stats.values())


def test_cached_free_memory_is_capped(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    alloc = allocator_for(0)
    assert alloc.cache_limit == DEFAULT_CACHE_LIMIT == 1 << 30
    try:
        alloc.set_cache_limit(3 * MIB)
        arrays = [DeviceArray.empty((2 * MIB,), np.int8) for _ in range(4)]
        emu.reset()
        del arrays
        gc.collect()
        assert alloc.stats()["cached_bytes"] <= 3 * MIB
        assert emu.calls("aclrtFree") == 3  # one 2 MiB block stays cached
        with pytest.raises(qs.InvalidValueError, match="nbytes"):
            alloc.set_cache_limit(-1)
        alloc.set_cache_limit(0)
        assert alloc.stats()["cached_bytes"] == 0
    finally:
        alloc.set_cache_limit(DEFAULT_CACHE_LIMIT)
    assert emu.stat("errors_detected") == 0
    assert settle(emu) == start


def test_closing_a_wrapped_stream_releases_its_cached_blocks(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    rng = np.random.default_rng(0)
    cache = DeviceArray.zeros((4, 16, 1024), np.int8)
    d_in = [DeviceArray.from_numpy(a) for a in (np.arange(4, dtype=np.int32), rng.uniform(-1, 1, (4, 1, 1024))
                                               .astype(BF16), np.ones(1024, BF16))]
    alloc = allocator_for(0)
    for _ in range(3):  # issue 11: 33 foreign streams left 33 MiB of workspaces behind
        handle = _calls.create_stream()  # another runtime's stream
        wrapped = Stream.from_handle(handle)
        qs.quant_scatter_(cache, *d_in, stream=wrapped, check_indices=False)
        wrapped.close()
        assert not alloc.holds_stream(handle)
        _calls.destroy_stream(handle)  # by its owner, after our wrapper let go
    for arr in (cache, *d_in):
        arr.close()
    assert emu.stat("errors_detected") == 0
    assert settle(emu) == start


def test_a_block_used_on_another_stream_is_ordered_without_a_host_wait(dev: Device, emu: Emu) -> None:
    needs("stream_wait_event", "aclrtStreamWaitEvent")
    rng = np.random.default_rng(1)
    idx, upd = np.arange(4, dtype=np.int32), rng.uniform(-1, 1, (4, 1, 1024)).astype(BF16)
    sc = np.ones(1024, BF16)
    cache = DeviceArray.zeros((4, 16, 1024), np.int8, stream=Device(0).stream)
    d_in = [DeviceArray.from_numpy(a) for a in (idx, upd, sc)]
    with Stream() as s2:
        emu.reset()
        qs.quant_scatter_(cache, *d_in, stream=s2, check_indices=False)  # first use of these blocks on s2
        assert emu.calls("aclrtStreamWaitEvent") >= 1
        assert sum(emu.calls(f) for f in ("aclrtSynchronizeStream", "aclrtSynchronizeDevice",
                                          "aclrtSynchronizeEvent")) == 0
        got = cache.to_numpy(stream=s2)
    want = qs.quant_scatter(np.zeros((4, 16, 1024), np.int8), idx, upd, sc, backend="cpu")
    np.testing.assert_array_equal(got, want)
    for arr in (cache, *d_in):
        arr.close()
    assert emu.stat("errors_detected") == 0


def test_stream_wait_orders_one_stream_after_another(dev: Device, emu: Emu) -> None:
    host = np.arange(4096, dtype=np.int32)
    with Stream() as s1, Stream() as s2, DeviceArray.empty((4096,), np.int32, stream=s1) as d:
        d.copy_from(host, stream=s1)
        done = Event().record(s1)
        emu.reset()
        assert s2.wait(done) is s2
        waited_on_device = ensure_runtime().caps.stream_wait_event
        assert emu.calls("aclrtStreamWaitEvent") == (1 if waited_on_device else -1)  # -1: not exported
        assert emu.calls("aclrtSynchronizeEvent") == int(not waited_on_device)  # the fallback: a host wait
        np.testing.assert_array_equal(d.to_numpy(stream=s2), host)
        with Event(sync=False) as timing_only, pytest.raises(qs.InvalidValueError, match="ACL_EVENT_SYNC"):
            s2.wait(timing_only.record(s1))
    assert emu.stat("errors_detected") == 0


def test_stream_and_event_queries_never_wait(dev: Device, emu: Emu) -> None:
    needs("stream_query", "aclrtStreamQuery")
    needs("event_query", "aclrtQueryEventStatus")
    with Stream() as s, DeviceArray.empty((1024,), np.int32, stream=s) as d:
        s.synchronize()
        assert s.query() is True
        d.copy_from(np.ones(1024, np.int32), stream=s)
        ev = Event().record(s)
        emu.reset()
        pending = (s.query(), ev.query())
        assert emu.calls("aclrtSynchronizeStream") == 0 and emu.calls("aclrtSynchronizeEvent") == 0
        s.synchronize()
        assert (s.query(), ev.query()) == (True, True)
        assert all(isinstance(p, bool) for p in pending)
        ev.close()


def test_queries_say_when_the_toolkit_cannot_answer(dev: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    with Stream() as s, Event() as ev:
        ev.record(s)
        s.synchronize()
        older = SimpleNamespace(caps=dataclasses.replace(ensure_runtime().caps, stream_query=False,
                                                         event_query=False))
        monkeypatch.setattr(runtime, "ensure_runtime", lambda: older)  # a toolkit without both queries
        for ask, symbol in ((s.query, "aclrtStreamQuery"), (ev.query, "aclrtQueryEventStatus")):
            with pytest.raises(qs.CannError, match=symbol) as info:
                ask()
            assert info.value.code == 200001
