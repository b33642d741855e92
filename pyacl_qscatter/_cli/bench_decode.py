"""The ``decode`` scenario of ``python -m pyacl_qscatter bench``: one LLM decode step is L layers x (K, V)
in-place calls on views of a device-resident int8 cache, made four ways, against the C floor of the step.

Keys (all host times in microseconds, best of several rounds; the four ways of calling and the floor are
measured side by side, round by round, each round ending with an untimed synchronisation):
- ``decode_step_us``: a dict, the host time of one step for each way of calling: ``host_indices`` (NumPy
  indices each step, checked on the host), ``device_indices`` (device indices with ``check_indices=True``,
  which reads them back), ``prepared`` (device indices, ``check_indices=False``) and ``graph_replay``
  (`Graph.replay` of the captured prepared step; None without ACL graph support);
- ``decode_floor_us``: the C floor of one step: per call one ``aclrtMemcpyAsync`` of the indices from
  pinned memory, then phase 1 and phase 2 on descriptors made once, straight through the generated ffi;
- ``decode_ratio`` (host indices / floor) and ``decode_prepared_ratio`` (prepared / floor);
- ``host_waits_per_step`` and ``mallocs_per_step`` in the host-index steady state (emulator counters
  ``host_syncs`` and ``calls:aclrtMalloc``; None on a real toolkit);
- ``graph_step_us`` (``g.replay()`` alone) and ``graph_upload_us`` (`Graph.write_indices` of one step's
  indices, reported apart);
- ``memory_overhead`` (device bytes the allocator holds, in use and cached, over the bytes of the live
  arrays, with the decode arrays alive) and ``memory_after_del`` (bytes it still holds after every array
  is closed and ``empty_cache()``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import ml_dtypes
import numpy as np

from .. import _calls, _prepared
from ..api import quant_scatter_
from ..graph import Graph
from ..memory import H2D, DeviceArray, allocator_for
from ..runtime import Device, Stream, use_device
from .probe import Probe

# The step is 32 layers x K and V, batch 8, caches [8, 4096, 1024] int8 (32 MiB each, 2 GiB in all);
# the caches here are [8, 512, 256] (1 MiB each, one 64 MiB array) so that the step runs in seconds on two
# cores against the emulator. Host time per call does not depend on the cache's length.
STEP = {"layers": 32, "batch": 8, "seq": 512, "dim": 256}
BF16 = ml_dtypes.bfloat16


class _Decode:
    """The arrays of the scenario and the four ways of making one step."""

    def __init__(self, dev: Device, stream: Stream) -> None:
        layers, b, seq, dim = STEP["layers"], STEP["batch"], STEP["seq"], STEP["dim"]
        self.stream = stream
        rng = np.random.default_rng(0)
        self.cache = DeviceArray.zeros((layers, 2, b, seq, dim), np.int8, stream=stream)
        self.upd = DeviceArray.empty((layers, 2, b, 1, dim), BF16, stream=stream)
        self.upd.copy_from(rng.uniform(-2, 2, self.upd.shape).astype(BF16), stream=stream)
        self.sc = DeviceArray.empty((dim,), BF16, stream=stream)
        self.sc.copy_from(rng.uniform(0.02, 0.1, dim).astype(BF16), stream=stream)
        self.d_idx = DeviceArray.zeros((b,), np.int32, stream=stream)
        self.pairs = [(layer, kv) for layer in range(layers) for kv in (0, 1)]
        # Per-layer views made once, as a serving loop keeps its per-layer caches (views made afresh each
        # step find the same prepared calls too, at the cost of making the views).
        self.views = [(self.cache[layer, kv], self.upd[layer, kv]) for layer, kv in self.pairs]
        self.position = 0

    def arrays(self) -> list[DeviceArray]:
        return [self.cache, self.upd, self.sc, self.d_idx]

    def next_indices(self) -> np.ndarray[Any, Any]:
        self.position = (self.position + 1) % STEP["seq"]
        return np.full(STEP["batch"], self.position, np.int32)

    def host_step(self) -> None:
        idx, s, sc = self.next_indices(), self.stream, self.sc
        for cache, upd in self.views:
            quant_scatter_(cache, idx, upd, sc, stream=s)

    def device_step(self, check: bool) -> None:
        s, sc, d_idx = self.stream, self.sc, self.d_idx
        for cache, upd in self.views:
            quant_scatter_(cache, d_idx, upd, sc, stream=s, check_indices=check)


def _best(fn: Callable[[], None], steps: int, rounds: int, sync: Callable[[], None]) -> float:
    """Best per-step host time (seconds) over ``rounds`` runs of ``steps`` steps, synchronising between."""
    return _side_by_side({"fn": fn}, steps, rounds, sync)["fn"]


def _side_by_side(ways: dict[str, Callable[[], None]], steps: int, rounds: int, sync: Callable[[], None]
                  ) -> dict[str, float]:
    """Best per-step host time (seconds) of each way, measured side by side: every round runs ``steps``
    steps of each way in turn (the order rotating), with the stream synchronised, untimed, after each, so
    that every way meets the same load on the machine and starts from an idle stream."""
    best = dict.fromkeys(ways, float("inf"))
    names = list(ways)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = ways[name]
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
            sync()
    return best


def decode_figures(steps: int = 10, rounds: int = 25) -> dict[str, Any]:
    """Measure the decode scenario on the current device (loads CANN).

    >>> decode_figures(2, 1)["mallocs_per_step"]  # doctest: +SKIP
    0.0
    """
    cann = _calls.bind()
    probe = Probe(cann.paths["rt"])
    dev = Device.current()
    alloc = allocator_for(dev.id)
    layers, b, seq, dim = STEP["layers"], STEP["batch"], STEP["seq"], STEP["dim"]
    figures: dict[str, Any] = {
        "decode_shape": f"{layers} layers x K and V = {2 * layers} calls per step; caches [{b}, {seq}, {dim}] int8 "
                        f"(views of one [{layers}, 2, {b}, {seq}, {dim}] array), updates [{b}, 1, {dim}] bf16, "
                        f"1-D indices"}
    stream = Stream(dev)
    step = _Decode(dev, stream)
    try:
        sync = stream.synchronize
        step.host_step()  # warm-up: every call prepared, the workspace and staging buffers in place
        sync()
        figures.update(_counted(probe, step, steps))
        step.device_step(False)
        floor, release = _floor(step)
        try:
            with use_device(dev.id, stream.context):  # the raw calls need the package's context current
                t = _side_by_side({"host": step.host_step, "device": partial(step.device_step, True),
                                   "prepared": partial(step.device_step, False), "floor": floor},
                                  steps, rounds, sync)
        finally:
            release()
        t_host, t_device, t_prepared, t_floor = t["host"], t["device"], t["prepared"], t["floor"]
        graph = _graph_figures(step, steps, rounds) if cann.caps.graph else {
            "graph_step_us": None, "graph_upload_us": None, "graph": "this toolkit has no ACL graph capture"}
        figures["decode_step_us"] = {"host_indices": t_host * 1e6, "device_indices": t_device * 1e6,
                                     "prepared": t_prepared * 1e6, "graph_replay": graph["graph_step_us"]}
        figures.update(graph, decode_floor_us=t_floor * 1e6, decode_ratio=t_host / t_floor,
                       decode_prepared_ratio=t_prepared / t_floor)
        sync()
        held = alloc.stats()
        live = sum(arr.nbytes for arr in step.arrays())
        figures["memory_overhead"] = (held["in_use_bytes"] + held["cached_bytes"]) / live
    finally:
        for arr in step.arrays():
            arr.close()
        stream.close()
    gc.collect()
    alloc.empty_cache()
    held = alloc.stats()
    figures["memory_after_del"] = held["in_use_bytes"] + held["cached_bytes"]
    return figures


def _counted(probe: Probe, step: _Decode, steps: int) -> dict[str, Any]:
    """Host waits and allocations per host-index step, from the toolkit's counters where it has them."""
    if not probe.counters:
        return {"host_waits_per_step": None, "mallocs_per_step": None, "decode_counters": probe.why}
    names = ("host_syncs", "calls:aclrtMalloc")
    before = {n: probe.stat(n) or 0 for n in names}
    for _ in range(steps):
        step.host_step()
    after = {n: probe.stat(n) or 0 for n in names}
    step.stream.synchronize()
    return {"host_waits_per_step": (after["host_syncs"] - before["host_syncs"]) / steps,
            "mallocs_per_step": (after["calls:aclrtMalloc"] - before["calls:aclrtMalloc"]) / steps}


def _graph_figures(step: _Decode, steps: int, rounds: int) -> dict[str, Any]:
    sync = step.stream.synchronize
    with Graph(step.stream) as g:
        step.device_step(False)  # prepared by the steps measured before
    try:
        idx = step.next_indices()
        t_replay = _best(g.replay, steps, rounds, sync)
        t_upload = _best(lambda: g.write_indices(0, idx), steps, rounds, sync)
    finally:
        g.close()
    return {"graph_step_us": t_replay * 1e6, "graph_upload_us": t_upload * 1e6}


def _floor(step: _Decode) -> tuple[Callable[[], None], Callable[[], None]]:
    """One step's C floor and the release of its pinned buffer: per call one aclrtMemcpyAsync of the indices
    from pinned memory, then phase 1 and phase 2 on descriptors made once (those of the prepared calls, with
    their workspace), straight through the generated ffi."""
    cann = _calls.bound()
    assert cann is not None
    fns, ffi, s = cann.functions, cann.ffi, step.stream
    nbytes = STEP["batch"] * 4
    calls = [_prepared.find(_prepared.key_of((cache, step.d_idx, upd, step.sc, None), -2, -1, "update", s))
             for cache, upd in step.views]
    if any(call is None for call in calls):
        raise RuntimeError("the prepared step must run before its floor is measured")
    name = "aclnnInplaceQuantScatterV2" if calls[0]._v2 else "aclnnInplaceQuantScatter"  # type: ignore[union-attr]
    memcpy, phase1, phase2 = fns["aclrtMemcpyAsync"], fns[name + "GetWorkspaceSize"], fns[name]
    out_size, out_exec = ffi.new("uint64_t *"), ffi.new("aclOpExecutor **")
    extra = (ffi.new("char[]", b"rint"),) if calls[0]._v2 else ()  # type: ignore[union-attr]
    tensors = [[ffi.NULL if t is None else t for t in c._t] for c in calls]  # type: ignore[union-attr]
    plan = calls[0].plan  # type: ignore[union-attr]
    phase1_args = [(*t, plan.axis, plan.quant_axis, 1, *extra, out_size, out_exec) for t in tensors]
    host = _calls.malloc_host(nbytes)
    src, dst = ffi.cast("void *", host), ffi.cast("void *", step.d_idx.ptr)
    ffi.memmove(src, step.next_indices().tobytes(), nbytes)  # valid positions: the floor's kernels really run
    stream, ws = ffi.cast("void *", s.handle), ffi.cast("void *", calls[0]._ws.ptr)  # type: ignore[union-attr]

    def floor() -> None:
        for args in phase1_args:
            memcpy(dst, nbytes, src, nbytes, H2D, stream)
            phase1(*args)
            phase2(ws, out_size[0], out_exec[0], stream)

    def release() -> None:
        s.synchronize()  # queued copies read the pinned buffer
        _calls.free_host(host)

    return floor, release


__all__ = ["STEP", "decode_figures"]
