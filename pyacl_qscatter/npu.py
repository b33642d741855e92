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

from . import _calls, _loader, _prepared, reference
from ._host_calls import forget, host_call
from ._prepared import Prepared
from .contract import Plan, Product, check_arguments, check_indices
from .errors import CannError, InvalidValueError, QScatterError
from .graph import GraphCaptureError, capturing
from .memory import D2D, DeviceArray, close_on_error
from .runtime import Device, Stream, ensure_runtime, use_device

__all__ = ["copy_device", "last_status_failure", "launch", "npu_status", "run_device", "run_host",
           "run_prepared"]

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


def launch(plan: Plan, operands: tuple[Any, ...], stream: Stream, check_index_values: bool = False) -> None:
    """Queue one checked call on ``stream`` and release what it prepared (its host-operand buffers go back
    to the stream's cache, where only later work on the same stream can reuse them).

    >>> launch(plan, (s, i, u, sc, None), Device(0).stream)  # doctest: +SKIP
    """
    call = Prepared(plan, operands, stream)
    try:
        call(operands, check_index_values)
    finally:
        call.close()


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
                with contextlib.suppress(CannError):  # the failure being raised is the one to report
                    forget(call)  # queued work may still use its buffers: never reused
                raise
            reference.scatter(self_, indices, quantized, plan)
            return


def run_prepared(self_: DeviceArray, indices: Any, updates: Any, scales: Any, zero_points: Any, axis: Any,
                 quant_axis: Any, reduce: Any, stream: Any, check_index_values: bool) -> bool:
    """The steady state of a device call: run the prepared call for these layouts if there is one (True),
    else do nothing (False: the caller takes the checked way, `run_device`).

    >>> run_prepared(d_cache[3], host_idx, d_upd, d_sc, None, -2, -1, "update", None, True)  # doctest: +SKIP
    True
    """
    if type(axis) is not int or type(quant_axis) is not int or type(reduce) is not str:
        return False  # True or 1.0 compare equal to 1 but must meet the contract's checks
    s = self_.device.stream if stream is None else stream
    if type(s) is not Stream:
        return False
    operands = (self_, indices, updates, scales, zero_points)
    call = _prepared.find(_prepared.key_of(operands, axis, quant_axis, reduce, s))
    if call is None:
        return False
    call(operands, check_index_values)
    return True


def run_device(self_: DeviceArray, indices: Any, updates: Any, scales: Any, zero_points: Any, axis: int,
               quant_axis: int, reduce: str, stream: Stream | None, check_index_values: bool,
               prepare: bool = True) -> None:
    """The device-resident in-place call: queued on ``stream``; returns without waiting for the device.

    Calls are prepared once per layout (see `_prepared`): later calls whose operands describe the same
    memory, shapes and dtypes (fresh views included) on the same stream reuse the descriptors, the
    stream's workspace and the device buffers of host operands, and run phase 1 + phase 2 alone.
    ``prepare=False`` (a one-off self, as in an out-of-place call) runs once without keeping anything.
    Host operands are copied in on the stream; host index values are always checked (on the host);
    device index values through a copy to the host (which waits) unless ``check_index_values`` is False.

    >>> run_device(d_cache, d_idx, d_upd, d_sc, None, -2, -1, "update", stream, True)  # doctest: +SKIP
    """
    if prepare and run_prepared(self_, indices, updates, scales, zero_points, axis, quant_axis, reduce, stream,
                                check_index_values):
        return
    s = self_.device.stream if stream is None else stream
    if s.handle in capturing:
        raise GraphCaptureError("this call was not prepared before the capture: run the step once before "
                                "capturing (a warm-up) with the same arrays, stream and axes")
    operands = (self_, indices, updates, scales, zero_points)
    dev = self_.device
    self_._check_open("self")
    if s.closed:
        raise InvalidValueError("closed", "stream", "is closed")
    if s.device is not dev:
        raise InvalidValueError("stream", "stream", f"belongs to device {s.device.id}, self to device {dev.id}")
    for name, value in zip(_prepared.NAMES[1:], operands[1:], strict=True):
        if isinstance(value, DeviceArray):
            value._check_open(name)
            if value.device is not dev:
                raise InvalidValueError("device", name, f"is on device {value.device.id}, self on device {dev.id}")
    plan = check_arguments(*operands, axis, quant_axis, reduce, dev.product)
    if plan.empty:
        if not isinstance(indices, DeviceArray):
            check_indices(plan, indices)
        return
    if not prepare or type(axis) is not int or type(quant_axis) is not int:
        launch(plan, operands, s, check_index_values)
        return
    call = _prepared.prepare(plan, operands, s, _prepared.key_of(operands, axis, quant_axis, reduce, s))
    call(operands, check_index_values)


def copy_device(src: DeviceArray, stream: Stream | None) -> DeviceArray:
    """A new contiguous device array with ``src``'s contents (queued on ``stream``).

    >>> fresh = copy_device(d_cache, None)  # doctest: +SKIP
    """
    if not src.is_contiguous:
        raise InvalidValueError("self", "self", "out-of-place calls on the device need a contiguous self")
    s = src.device.stream if stream is None else stream
    if s.handle in capturing:
        raise GraphCaptureError("an out-of-place call allocates its result, which a capture cannot repeat: use "
                                "quant_scatter_ on a device array made before the capture")
    dst = DeviceArray.empty(src.shape, src.dtype, device=src.device, stream=s)
    if not src.nbytes:
        return dst
    with close_on_error(dst):
        if src.block is not None:
            src.block.use_on(s.handle)
        with use_device(src.device.id, s.context):
            _calls.memcpy_async(dst.ptr, dst.storage * dst.dtype.itemsize, src.data_ptr, src.nbytes, D2D, s.handle)
    return dst
