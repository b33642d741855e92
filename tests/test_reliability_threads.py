"""Threads, verified against the emulator: 8 threads x 500 calls, each thread on a stream of its own, then all
on one shared stream. Each thread mixes device calls with host inputs, the steady-state path on fixed device
buffers, a device array made and closed per call, out-of-place device calls, NumPy calls through the npu
backend and stream/event churn. Results equal the cpu backend's, no thread hangs (joins time out), the
emulator detects no bad write, and nothing is left behind. CI runs the full size; no timing is asserted."""

from __future__ import annotations

import threading
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from emulator.emu import Emu
from reliability import settle

import pyacl_qscatter as qs
from pyacl_qscatter._cli.stress import mixed_device_call
from pyacl_qscatter.memory import DeviceArray
from pyacl_qscatter.runtime import Device, Event, Stream

pytestmark = pytest.mark.emulator
BF16 = ml_dtypes.bfloat16
THREADS, CALLS = 8, 500
JOIN_TIMEOUT = 300.0  # seconds: far beyond the few seconds a run takes; only a deadlock reaches it



def work(seed: int, shared: Stream | None, results: dict[int, Any]) -> None:
    try:
        stream = shared if shared is not None else Stream()
        rng = np.random.default_rng(seed)
        sc = rng.uniform(0.1, 1, 32).astype(BF16)
        host = np.zeros((2, 8, 32), np.int8)
        through_npu = host.copy()
        d: DeviceArray = DeviceArray.zeros(host.shape, np.int8, stream=stream)
        d_idx = DeviceArray.empty((2,), np.int32, stream=stream)
        d_upd = DeviceArray.empty((2, 1, 32), BF16, stream=stream)
        d_sc = DeviceArray.from_numpy(sc, stream=stream)
        for i in range(CALLS):
            idx = rng.permutation(8)[:2].astype(np.int32)
            upd = rng.uniform(-4, 4, (2, 1, 32)).astype(BF16)
            d = mixed_device_call(i, d, (d_idx, d_upd, d_sc), idx, upd, sc, stream)
            assert isinstance(d, DeviceArray) and not d.closed
            qs.quant_scatter_(through_npu, idx, upd, sc, backend="npu")
            qs.quant_scatter_(host, idx, upd, sc, backend="cpu")
            if i % 50 == 49:  # streams and events made and destroyed while the others work
                with Stream() as extra, Event() as event:
                    event.record(extra)
                    event.synchronize()
        results[seed] = (d.to_numpy(stream=stream), through_npu, host)
        for arr in (d, d_idx, d_upd, d_sc):
            arr.close()
        if shared is None:
            stream.close()
    except BaseException as exc:  # re-raised by the main thread
        results[seed] = exc


@pytest.mark.parametrize("mode", ["own streams", "shared stream"])
def test_threads(dev: Device, emu: Emu, mode: str) -> None:
    start = settle(emu)
    detected = emu.stat("errors_detected")
    shared = Stream() if mode == "shared stream" else None
    results: dict[int, Any] = {}
    threads = [threading.Thread(target=work, args=(seed, shared, results), daemon=True) for seed in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread hung (deadlock?)"
    if shared is not None:
        shared.close()
    assert sorted(results) == list(range(THREADS))
    for seed, result in results.items():
        if isinstance(result, BaseException):
            raise result
        on_device, through_npu, host = result
        np.testing.assert_array_equal(on_device, host, err_msg=f"thread {seed}: device calls")
        np.testing.assert_array_equal(through_npu, host, err_msg=f"thread {seed}: NumPy calls on the npu")
        assert np.count_nonzero(host) > 0
    assert emu.stat("errors_detected") == detected
    assert settle(emu) == start
