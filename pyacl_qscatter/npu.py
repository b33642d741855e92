"""The NPU backend: contract checks -> descriptors -> phase 1 -> workspace -> phase 2 on a stream.

NumPy in-place calls move only what the operation needs: the device quantizes ``updates`` into a compact
int8 block (a scratch ``self`` shaped like ``updates``, written at start 0 of each batch row), that block
comes back, and the host places it into ``self`` with the contract's placement. ``self`` is written only
after every device step succeeded, so a failure leaves it unchanged. Device-resident calls run the op on
the real ``self`` asynchronously on a stream.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from . import _calls, _loader, reference
from ._host_calls import forget, host_call
from ._prepared import Prepared
from .contract import Plan, Product, check_arguments, check_indices
from .errors import InvalidValueError, QScatterError
from .memory import D2D, DeviceArray, close_on_error, stage_host
from .runtime import Device, Stream, _activate, close_all, ensure_runtime

__all__ = ["copy_device", "last_status_failure", "launch", "npu_status", "run_device", "run_host"]

Array = np.ndarray[Any, Any]
_status_lock = threading.Lock()
_status_ok: str | None = None
_status_failure = threading.local()  # the exception behind this thread's last failed status, for chaining


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
    kernels, why_not = _loader.kernel_path()
    if kernels is None:  # every aclnn call would fail with 561107: the automatic choice falls back to cpu
        return False, f"CANN loaded but {why_not}"
    with _status_lock:
        try:
            cann = ensure_runtime()
            count = Device.count()
            soc = (Device(0).soc_name or "unknown SoC") if count else ""
        except QScatterError as exc:
            _status_failure.error = exc
            return False, f"CANN loaded but the runtime failed: {exc}"
        if count == 0:
            return False, "CANN loaded but no Ascend device is visible"
        _status_ok = f"CANN at {cann.home or 'the system loader'}, {count} device(s), {soc}"
        return True, _status_ok


def last_status_failure() -> BaseException | None:
    """The CANN error behind this thread's last failed `npu_status`, if it was one (then cleared).

    >>> last_status_failure() is None or isinstance(last_status_failure(), Exception)
    True
    """
    error: BaseException | None = getattr(_status_failure, "error", None)
    _status_failure.error = None
    return error


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
    """Device arrays for the host inputs of one call, each filled through pinned memory on the call's
    stream without waiting (`memory.stage_host`). Closed once the call is queued: their blocks go back to
    that stream's cache, which only later work on the same stream reuses, and the pinned buffers go back
    to their pool when a fence shows their copies ran."""

    def __init__(self, device: Device, stream: Stream) -> None:
        self.device, self.stream = device, stream
        self.arrays: list[DeviceArray] = []

    def empty(self, shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        arr = DeviceArray.empty(shape, dtype, device=self.device, stream=self.stream)
        self.arrays.append(arr)
        return arr

    def upload(self, value: Any) -> DeviceArray:
        arr = stage_host(value, self.stream)
        self.arrays.append(arr)
        return arr

    def close(self) -> None:
        close_all(self.arrays)


_plans: dict[tuple[Any, ...], Plan] = {}  # the contract's verdict per layout: it looks at shapes and dtypes only
MAX_PLANS = 64


def _checked(self_: Array, indices: Array, updates: Array, scales: Array, zero_points: Array | None, axis: int,
             quant_axis: int, reduce: str, product: Product) -> Plan:
    """`check_arguments`, remembered per layout (exact ints and str only: True or 1.0 must meet the checks)."""
    if type(axis) is not int or type(quant_axis) is not int or type(reduce) is not str:
        return check_arguments(self_, indices, updates, scales, zero_points, axis, quant_axis, reduce, product)
    key = (self_.shape, self_.dtype, indices.shape, indices.dtype, updates.shape, updates.dtype, scales.shape,
           scales.dtype, None if zero_points is None else (zero_points.shape, zero_points.dtype), axis, quant_axis,
           reduce, product)
    plan = _plans.get(key)
    if plan is None:
        plan = check_arguments(self_, indices, updates, scales, zero_points, axis, quant_axis, reduce, product)
        if len(_plans) >= MAX_PLANS:
            _plans.clear()
        _plans[key] = plan
    return plan


def run_host(self_: Array, indices: Array, updates: Array, scales: Array, zero_points: Array | None,
             axis: int, quant_axis: int, reduce: str, device: Device | int | None = None) -> None:
    """The NumPy in-place call on the device: synchronous, one host wait (for the quantized rows), with
    the buffers of its layout kept for the next call (`_host_calls`); ``self_`` is written only after
    success.

    >>> run_host(cache, idx, upd, sc, None, -2, -1, "update")  # doctest: +SKIP
    """
    dev = Device.current() if device is None else Device(device)
    plan = _checked(self_, indices, updates, scales, zero_points, axis, quant_axis, reduce, dev.product)
    check_indices(plan, indices)
    if plan.empty:
        return
    parts = [updates, scales] if zero_points is None else [updates, scales, zero_points]
    while True:
        call = host_call(dev, plan, parts, reduce)
        with call.lock:
            if call.closed:  # released by another thread between the lookup and the lock: make it again
                continue
            try:
                quantized = call.run(parts)
            except BaseException:
                forget(call)  # queued work may still use its buffers: never reused
                raise
            reference.scatter(self_, indices, quantized, plan)
            return


def _to_device(value: Any, staging: _Staging) -> DeviceArray:
    return value if isinstance(value, DeviceArray) else staging.upload(value)


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
    an out-of-place call) runs once without keeping anything. Host (NumPy) inputs are staged through
    pinned memory and copied in on the stream without waiting; their index values are checked on the host.
    Index values on the device are checked through a small copy to the host (which waits) unless
    ``check_index_values`` is False.

    >>> run_device(d_cache, d_idx, d_upd, d_sc, None, -2, -1, "update", stream, True)  # doctest: +SKIP
    """
    s = self_.device.stream if stream is None else stream
    arrays = (self_, indices, updates, scales, zero_points)
    key = prepared_key(indices, updates, scales, zero_points, axis, quant_axis, reduce, stream)
    # Only exact ints hit the cache: True or 1.0 compare equal to 1 but must meet the contract's checks.
    call = self_._prepared.get(key) if type(axis) is int and type(quant_axis) is int else None
    if call is not None and not call.dead:
        if check_index_values:
            check_indices(call.plan, indices.to_numpy(stream=s))
        call.run()
        return
    _run_device_slow(self_, arrays, key if prepare else None, axis, quant_axis, reduce, s, check_index_values)


def _run_device_slow(self_: DeviceArray, arrays: tuple[Any, ...], key: tuple[Any, ...] | None, axis: int,
                     quant_axis: int, reduce: str, s: Stream, check_index_values: bool) -> None:
    dev = self_.device
    self_._check_open("self")
    if s.closed:
        raise InvalidValueError("closed", "stream", "is closed")
    if s.device is not dev:
        raise InvalidValueError("stream", "stream", f"belongs to device {s.device.id}, self to device {dev.id}")
    names = ("self", "indices", "updates", "quant_scales", "quant_zero_points")
    for name, value in zip(names[1:], arrays[1:], strict=True):
        if isinstance(value, DeviceArray):
            value._check_open(name)
            if value.device is not dev:
                raise InvalidValueError("device", name, f"is on device {value.device.id}, self on device {dev.id}")
    _activate(dev.id)
    staging = _Staging(dev, s)
    try:
        d_idx, d_upd, d_sc = (_to_device(v, staging) for v in arrays[1:4])
        d_zp = None if arrays[4] is None else _to_device(arrays[4], staging)
        plan = check_arguments(self_, d_idx, d_upd, d_sc, d_zp, axis, quant_axis, reduce, dev.product)
        indices = arrays[1]
        if not isinstance(indices, DeviceArray):  # host index values cost nothing to check: always checked
            check_indices(plan, np.asarray(indices))
        elif check_index_values:
            check_indices(plan, indices.to_numpy(stream=s))
        if plan.empty:
            return
        prepared = (self_, d_idx, d_upd, d_sc, d_zp)
        if staging.arrays or key is None:
            launch(plan, prepared, s)
            return
        call = Prepared(plan, prepared, s, reuse=True)
        cache = self_._prepared
        stale = cache.pop(key, None)
        cache[key] = call
        call.run()
        if stale is not None:
            stale.close()  # already closed when an array or stream it used was closed; else released now
        if len(cache) > MAX_PREPARED:
            cache.pop(next(iter(cache))).close()
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
    if not src.nbytes:
        return dst
    with close_on_error(dst):
        if src.block is not None:
            src.block.use_on(s.handle)
        _activate(src.device.id)
        _calls.memcpy_async(dst.ptr, dst.storage * dst.dtype.itemsize, src.data_ptr, src.nbytes, D2D, s.handle)
    return dst
