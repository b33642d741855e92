"""The NPU backend: contract checks -> descriptors -> phase 1 -> workspace -> phase 2 on a stream.

NumPy in-place calls move only what the operation needs: the device quantizes ``updates`` into a compact
int8 block (a scratch ``self`` shaped like ``updates``, written at start 0 of each batch row), that block
comes back, and the host places it into ``self`` with the contract's placement. ``self`` is written only
after every device step succeeded, so a failure leaves it unchanged. Device-resident calls run the op on
the real ``self`` asynchronously on a stream.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np

from . import _calls, _loader, reference
from ._prepared import Prepared
from .contract import Plan, check_arguments, check_indices
from .errors import CannError, InvalidValueError, QScatterError
from .memory import D2D, D2H, DeviceArray
from .runtime import Device, Stream, ensure_runtime

__all__ = ["copy_device", "launch", "npu_status", "run_device", "run_host"]

Array = np.ndarray[Any, Any]
_status_lock = threading.Lock()
_status_ok: str | None = None


def npu_status() -> tuple[bool, str]:
    """Whether the NPU backend can run here, and why. Never raises; a success is remembered.

    >>> isinstance(npu_status()[0], bool)
    True
    """
    global _status_ok
    if _status_ok is not None:
        return True, _status_ok
    ok, why = _loader.is_available()
    if not ok:
        return False, why
    with _status_lock:
        try:
            cann = ensure_runtime()
            count = Device.count()
        except QScatterError as exc:
            return False, f"CANN loaded but the runtime failed: {exc}"
        if count == 0:
            return False, "CANN loaded but no Ascend device is visible"
        soc = Device(0).soc_name or "unknown SoC"
        _status_ok = f"CANN at {cann.home or 'the system loader'}, {count} device(s), {soc}"
        return True, _status_ok


def launch(plan: Plan, arrays: tuple[DeviceArray | None, ...], stream: Stream) -> None:
    """Queue one checked call on ``stream`` and release what it prepared (its workspace goes back to the
    stream's cache, where only later work on the same stream can reuse it).

    >>> launch(plan, (s, i, u, sc, None), Device(0).stream)  # doctest: +SKIP
    """
    call = Prepared(plan, arrays, stream, reuse=False)
    try:
        call.run()
    finally:
        call.close()


class _Staging:
    """Device blocks for host inputs of one call; released together (after the stream finished)."""

    def __init__(self, device: Device, stream: Stream) -> None:
        self.device, self.stream = device, stream
        self.arrays: list[DeviceArray] = []

    def upload(self, host: Array) -> DeviceArray:
        arr = DeviceArray.empty(host.shape, host.dtype, device=self.device, stream=self.stream)
        self.arrays.append(arr)
        if host.nbytes:
            _calls.memcpy_async(arr.ptr, arr.storage * arr.dtype.itemsize, _calls.buffer_address(host),
                                host.nbytes, 1, self.stream.handle)
        return arr

    def empty(self, shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        arr = DeviceArray.empty(shape, dtype, device=self.device, stream=self.stream)
        self.arrays.append(arr)
        return arr

    def close(self) -> None:
        """Close every staged array even if one fails (a descriptor CANN would not destroy); then raise."""
        failure: CannError | None = None
        for arr in self.arrays:
            try:
                arr.close()
            except CannError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure


def run_host(self_: Array, indices: Array, updates: Array, scales: Array, zero_points: Array | None,
             axis: int, quant_axis: int, reduce: str, device: Device | int | None = None) -> None:
    """The NumPy in-place call on the device: synchronous; ``self_`` is written only after success.

    >>> run_host(cache, idx, upd, sc, None, -2, -1, "update")  # doctest: +SKIP
    """
    dev = Device.current() if device is None else Device(device)
    plan = check_arguments(self_, indices, updates, scales, zero_points, axis, quant_axis, reduce, dev.product)
    check_indices(plan, indices)
    if plan.empty:
        return
    stream = dev.stream
    dev.activate()
    host = [np.ascontiguousarray(a) for a in (updates, scales, zero_points) if a is not None]
    batch_starts = np.zeros(plan.batch, np.int32)  # row b of the compact block: batch b, start 0
    staging = _Staging(dev, stream)
    try:
        compact = staging.empty(plan.updates_shape, np.int8)
        d_idx = staging.upload(batch_starts)
        d_upd, d_sc = staging.upload(host[0]), staging.upload(host[1])
        d_zp = staging.upload(host[2]) if zero_points is not None else None
        compact_plan = check_arguments(compact, d_idx, d_upd, d_sc, d_zp, plan.axis, plan.quant_axis, reduce,
                                       dev.product)
        launch(compact_plan, (compact, d_idx, d_upd, d_sc, d_zp), stream)
        quantized = np.empty(plan.updates_shape, np.int8)
        _calls.memcpy_async(_calls.buffer_address(quantized, writable=True), quantized.nbytes, compact.ptr,
                            quantized.nbytes, D2H, stream.handle)
        stream.synchronize()
    except CannError:
        _drain_after_failure(stream)
        raise
    finally:
        staging.close()
    reference.scatter(self_, indices, quantized, plan)


def _drain_after_failure(stream: Stream) -> None:
    """After a failure, wait for what was queued so staging blocks are idle before they are reused."""
    with contextlib.suppress(CannError):  # the failure being raised already reports this stream's trouble
        stream.synchronize()


def _to_device(value: Any, staging: _Staging) -> DeviceArray:
    return value if isinstance(value, DeviceArray) else staging.upload(np.ascontiguousarray(value))


MAX_PREPARED = 8  # prepared calls kept per self; the oldest is released beyond this


def prepared_key(indices: Any, updates: Any, scales: Any, zero_points: Any, axis: int, quant_axis: int,
                 reduce: str, stream: Stream | None) -> tuple[Any, ...]:
    """The key of a prepared call in ``self._prepared`` (api.py builds the same tuple inline).

    >>> len(prepared_key(1, 2, 3, None, -2, -1, "update", None))
    8
    """
    return (id(indices), id(updates), id(scales), id(zero_points), axis, quant_axis, reduce, id(stream))


def run_device(self_: DeviceArray, indices: Any, updates: Any, scales: Any, zero_points: Any, axis: int,
               quant_axis: int, reduce: str, stream: Stream | None, check_index_values: bool,
               prepare: bool = True) -> None:
    """The device-resident in-place call: queued on ``stream`` and returns without waiting.

    Calls whose inputs are all device arrays are prepared once per (arrays, axes, stream) and then reuse
    their descriptors, workspace and (where CANN allows) executor; ``prepare=False`` (a one-off self, as in
    an out-of-place call) runs once without keeping anything. Host (NumPy) inputs are copied in first,
    which waits for the stream. Index values on the device are checked through a small copy to the host
    (which also waits) unless ``check_index_values`` is False.

    >>> run_device(d_cache, d_idx, d_upd, d_sc, None, -2, -1, "update", stream, True)  # doctest: +SKIP
    """
    s = self_.device.stream if stream is None else stream
    arrays = (self_, indices, updates, scales, zero_points)
    key = prepared_key(indices, updates, scales, zero_points, axis, quant_axis, reduce, stream)
    call = self_._prepared.get(key)
    if call is not None and call.valid():
        if check_index_values:
            check_indices(call.plan, indices.to_numpy(stream=s))
        call.run()
        return
    _run_device_slow(self_, arrays, key if prepare else None, axis, quant_axis, reduce, s, check_index_values)


def _run_device_slow(self_: DeviceArray, arrays: tuple[Any, ...], key: tuple[Any, ...] | None, axis: int,
                     quant_axis: int, reduce: str, s: Stream, check_index_values: bool) -> None:
    dev = self_.device
    self_._check_open()
    if s.device is not dev:
        raise InvalidValueError("stream", "stream", f"belongs to device {s.device.id}, self to device {dev.id}")
    names = ("self", "indices", "updates", "quant_scales", "quant_zero_points")
    for name, value in zip(names[1:], arrays[1:], strict=True):
        if isinstance(value, DeviceArray):
            value._check_open()
            if value.device is not dev:
                raise InvalidValueError("device", name, f"is on device {value.device.id}, self on device {dev.id}")
    dev.activate()
    staging = _Staging(dev, s)
    try:
        d_idx, d_upd, d_sc = (_to_device(v, staging) for v in arrays[1:4])
        d_zp = None if arrays[4] is None else _to_device(arrays[4], staging)
        if staging.arrays:
            s.synchronize()  # host buffers must outlive their copies
        plan = check_arguments(self_, d_idx, d_upd, d_sc, d_zp, axis, quant_axis, reduce, dev.product)
        if check_index_values:
            indices = arrays[1]
            host_idx = indices.to_numpy(stream=s) if isinstance(indices, DeviceArray) else indices
            check_indices(plan, np.asarray(host_idx))
        if plan.empty:
            return
        prepared = (self_, d_idx, d_upd, d_sc, d_zp)
        if staging.arrays or key is None:
            launch(plan, prepared, s)
            return
        call = Prepared(plan, prepared, s, reuse=True)
        cache = self_._prepared
        if len(cache) >= MAX_PREPARED:
            cache.pop(next(iter(cache))).close()
        cache[key] = call
        call.run()
    finally:
        staging.close()


def copy_device(src: DeviceArray, stream: Stream | None) -> DeviceArray:
    """A new contiguous device array with ``src``'s contents (queued on ``stream``).

    >>> fresh = copy_device(d_cache, None)  # doctest: +SKIP
    """
    if not src.is_contiguous:
        raise InvalidValueError("self", "self", "out-of-place calls on the device need a contiguous self")
    s = src.device.stream if stream is None else stream
    dst = DeviceArray.empty(src.shape, src.dtype, device=src.device, stream=s)
    if src.nbytes:
        src.device.activate()
        _calls.memcpy_async(dst.ptr, dst.storage * dst.dtype.itemsize, src.data_ptr, src.nbytes, D2D, s.handle)
    return dst
