"""The device figures of ``python -m pyacl_qscatter bench``: host overhead against the raw C calls, C calls,
allocations and descriptors per call, bytes moved by a NumPy call, device time from events.

Counts of C calls, allocations and bytes come from the toolkit's introspection counters (``emuGetStat``,
exported by the test emulator of CANN) when the loaded runtime has them; a real toolkit does not, and
those figures are then reported as None with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np

from .. import _calls, _prepared
from ..api import quant_scatter_
from ..memory import DeviceArray
from ..runtime import Device, Event, Stream, use_device
from .probe import Probe
from .seed import seed_inputs

DECODE = {"batch": 24, "seq": 4096, "dim": 1024}


def _snapshot(probe: Probe, symbols: list[str]) -> dict[str, int]:
    """Traffic and per-symbol call counters (missing ones as 0)."""
    names = ["bytes_h2d", "bytes_d2h"] + [f"calls:{s}" for s in symbols]
    return {n: probe.stat(n) or 0 for n in names}


def _interleaved_best(ours: Callable[[], object], floor: Callable[[], object], calls: int, rounds: int,
                      sync: Callable[[], None]) -> tuple[float, float]:
    """Best per-call host time of each, measured in alternating rounds so both see the same machine."""
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, fn in enumerate((ours, floor)):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[i] = min(best[i], (time.perf_counter() - start) / calls)
            sync()
    return best[0], best[1]


def npu_figures(calls: int = 1000, rounds: int = 5) -> dict[str, Any]:
    """Measure the device figures on the current device (loads CANN).

    >>> npu_figures(100)["overhead_ratio"] > 0  # doctest: +SKIP
    True
    """
    cann = _calls.bind()
    probe = Probe(cann.paths["rt"])
    symbols = sorted(cann.functions)
    dev = Device.current()
    rng = np.random.default_rng(0)
    b, seq, dim = DECODE["batch"], DECODE["seq"], DECODE["dim"]
    figures: dict[str, Any] = {"npu_soc": dev.soc_name, "npu_toolkit": cann.home,
                               "decode_shape": f"self [{b}, {seq}, {dim}] int8 on the device, updates [{b}, 1, "
                                               f"{dim}] bf16, 1-D indices"}
    with Stream(dev) as stream:
        arrays = [DeviceArray.zeros((b, seq, dim), np.int8, stream=stream),
                  DeviceArray.from_numpy(rng.permutation(seq)[:b].astype(np.int32), stream=stream),
                  DeviceArray.from_numpy(rng.uniform(1, 2, (b, 1, dim)).astype(ml_dtypes.bfloat16), stream=stream),
                  DeviceArray.from_numpy(rng.uniform(0.1, 1, dim).astype(ml_dtypes.bfloat16), stream=stream),
                  DeviceArray.from_numpy(rng.uniform(0, 1, dim).astype(ml_dtypes.bfloat16), stream=stream)]
        try:
            figures.update(_overhead(arrays, stream, calls, rounds, probe, symbols))
        finally:
            stream.synchronize()
            for arr in arrays:
                arr.close()
    figures.update(_transfer(probe, symbols))
    figures.update(_numpy_call(rng, rounds))
    return figures


def _numpy_call(rng: np.random.Generator, rounds: int, calls: int = 50) -> dict[str, Any]:
    """NumPy in, NumPy out at decode size (cache [8, 4096, 1024] int8 on the host, updates [8, 1, 1024] bf16):
    host time of the npu backend's call (upload, two phases, download, one wait) over the cpu backend's,
    measured in alternating rounds."""
    b, seq, dim = 8, 4096, 1024
    cache = np.zeros((b, seq, dim), np.int8)
    indices = rng.permutation(seq)[:b].astype(np.int32)
    updates = rng.uniform(1, 2, (b, 1, dim)).astype(ml_dtypes.bfloat16)
    scales = rng.uniform(0.1, 1, dim).astype(ml_dtypes.bfloat16)
    npu, cpu = _interleaved_best(lambda: quant_scatter_(cache, indices, updates, scales, backend="npu"),
                                 lambda: quant_scatter_(cache, indices, updates, scales, backend="cpu"),
                                 calls, rounds, lambda: None)
    return {"numpy_call_us": npu * 1e6, "numpy_call_cpu_us": cpu * 1e6, "numpy_call_ratio": npu / cpu}


def _overhead(arrays: list[DeviceArray], stream: Stream, calls: int, rounds: int, probe: Probe,
              symbols: list[str]) -> dict[str, Any]:
    d_self, d_idx, d_upd, d_sc, d_zp = arrays

    def ours() -> None:
        quant_scatter_(d_self, d_idx, d_upd, d_sc, d_zp, stream=stream, check_indices=False)

    for _ in range(10):  # reach the steady state: prepared call, cached blocks
        ours()
    stream.synchronize()
    before = _snapshot(probe, symbols) if probe.counters else {}
    start, end = Event(stream.device), Event(stream.device)
    start.record(stream)
    for _ in range(calls):
        ours()
    end.record(stream)
    end.synchronize()
    figures: dict[str, Any] = {"device_us_per_call": start.elapsed_ms(end) * 1e3 / calls}
    if probe.counters:  # the toolkit is the emulator: its kernels run at synchronisation, not on a device
        figures["device_us_note"] = "measured against the CANN emulator: meaningless (no device runs the kernel)"
    start.close()
    end.close()
    if probe.counters:
        after = _snapshot(probe, symbols)
        per = {k: (after[k] - before[k]) / calls for k in after}
        figures["mallocs_per_call"] = per["calls:aclrtMalloc"]
        figures["descriptors_per_call"] = per["calls:aclCreateTensor"]
        figures["c_calls_per_call"] = sum(v for k, v in per.items() if k.startswith("calls:"))
    else:
        figures.update(mallocs_per_call=None, descriptors_per_call=None, c_calls_per_call=None, counters=probe.why)
    floor, what = _floor(arrays, stream)
    with use_device(stream.device.id, stream.context):  # the raw calls need the package's context current
        t_ours, t_floor = _interleaved_best(ours, floor, calls, rounds, stream.synchronize)
    figures.update(overhead_us=t_ours * 1e6, floor_us=t_floor * 1e6, overhead_ratio=t_ours / t_floor,
                   floor_calls=what)
    return figures


def _floor(arrays: list[DeviceArray], stream: Stream) -> tuple[Callable[[], None], str]:
    """The C calls a steady-state call makes, made straight through the generated ffi with the prepared
    call's descriptors and workspace: phase 1 + phase 2, or phase 2 alone when the toolkit accepted a
    repeatable executor (`_prepared.repeatable_accepted`)."""
    call = _prepared.find(_prepared.key_of(tuple(arrays), -2, -1, "update", stream))
    if call is None:
        raise RuntimeError("the steady state was reached before the floor is measured")
    cann = _calls.bound()
    assert cann is not None
    fns, ffi = cann.functions, cann.ffi
    ws, s = ffi.cast("void *", call._ws.ptr), ffi.cast("void *", stream.handle)
    name = "aclnnInplaceQuantScatterV2" if call._v2 else "aclnnInplaceQuantScatter"
    phase2 = fns[name]
    if call._executor is not None:
        executor, size = call._executor, call._size

        def floor() -> None:
            phase2(ws, size, executor, s)

        return floor, f"{name} (repeatable executor)"
    phase1 = fns[name + "GetWorkspaceSize"]
    p = call.plan
    extra = (ffi.new("char[]", b"rint"),) if call._v2 else ()
    out_size, out_exec = ffi.new("uint64_t *"), ffi.new("aclOpExecutor **")
    args = (*(ffi.NULL if t is None else t for t in call._t), p.axis, p.quant_axis, 1, *extra, out_size, out_exec)

    def floor_two_phase() -> None:
        phase1(*args)
        phase2(ws, out_size[0], out_exec[0], s)

    return floor_two_phase, f"{name}GetWorkspaceSize + {name}"


def _transfer(probe: Probe, symbols: list[str]) -> dict[str, Any]:
    x = seed_inputs()
    minimum = sum(x[k].nbytes for k in ("indices", "updates", "quant_scales", "quant_zero_points"))
    minimum += x["updates"].size  # the written int8 blocks come back
    if not probe.counters:
        return {"transfer_ratio": None, "transfer_min_bytes": minimum}
    before = _snapshot(probe, symbols)
    quant_scatter_(x["self"], x["indices"], x["updates"], x["quant_scales"], x["quant_zero_points"], backend="npu")
    after = _snapshot(probe, symbols)
    moved = after["bytes_h2d"] - before["bytes_h2d"] + after["bytes_d2h"] - before["bytes_d2h"]
    return {"transfer_ratio": moved / minimum, "transfer_bytes": moved, "transfer_min_bytes": minimum}
