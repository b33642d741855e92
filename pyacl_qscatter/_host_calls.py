"""NumPy in, NumPy out on the device: buffers kept per layout, so that a call costs the contract checks,
one upload per input, the op, one download and one host wait.

The device quantizes ``updates`` into a compact int8 block (a scratch ``self`` shaped like ``updates``,
written at start 0 of each batch row, so its indices are zeros, uploaded once); the block comes back and
the host places it into ``self``. For each layout (device, shapes, dtypes, axes) the inputs' device
block, the compact block, the index zeros, their prepared call, and two pinned buffers (the inputs at
512-byte offsets, as in their device block; the compact block's download) stay for the next call with
that layout, up to `MAX_LAYOUTS`. `memory.CachingAllocator.empty_cache` releases them, like every other
cached block.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from . import _calls, _fences
from ._prepared import Prepared
from .contract import Plan, check_arguments
from .errors import CannError
from .memory import DeviceArray, on_empty_cache
from .pinned import PinnedPool, host_array, pinned_pool
from .runtime import ARRAYS, Device, call_each, close_all, track, use_device

__all__ = ["MAX_LAYOUTS", "HostCall", "host_call"]

Array = np.ndarray[Any, Any]
H2D, D2H = 1, 2
MAX_LAYOUTS = 4  # layouts whose buffers are kept per process; the least recently used goes beyond it
_STEP = 512  # offsets of the inputs in their shared device block and pinned buffer


def _give_back(pool: PinnedPool, ptr: int, size: int, stream: int) -> None:
    # After anything still queued that uses it. A refusal (a stopped device) parks the buffer until the
    # device is idle or reset, and has nobody to go to: this often runs from the garbage collector.
    with contextlib.suppress(CannError):
        pool.give_after(ptr, size, stream)


class HostCall:
    """The kept buffers and prepared call of one layout. `run` holds ``lock``; the array it returns is
    valid until the next `run`.

    >>> quantized = host_call(dev, plan, upd, sc, None, "update").run(upd, sc, None)  # doctest: +SKIP
    """

    def __init__(self, dev: Device, plan: Plan, parts: list[Array], reduce: str) -> None:
        self.lock = threading.Lock()
        self.closed = False
        self.device = dev  # Device.reset closes what belongs to its device
        self.stream = stream = dev.stream
        offsets, total = [], 0
        for part in parts:
            offsets.append(total)
            total += -(-max(part.nbytes, 1) // _STEP) * _STEP
        self._arrays: list[DeviceArray] = []
        self._finalizers: list[Any] = []
        self.call: Prepared | None = None
        try:
            block = self._keep(DeviceArray.empty((total,), np.int8, device=dev, stream=stream))
            inputs = [self._keep(DeviceArray.from_pointer(block.ptr + off, part.shape, part.dtype, device=dev,
                                                          owner=block)) for off, part in zip(offsets, parts,
                                                                                             strict=True)]
            self.compact = self._keep(DeviceArray.empty(plan.updates_shape, np.int8, device=dev, stream=stream))
            # Zeroed before anything else is queued (made once per layout: the wait costs nothing later).
            index = self._keep(DeviceArray.zeros((plan.batch,), np.int32, device=dev))
            d_zp = inputs[2] if len(inputs) > 2 else None
            compact_plan = check_arguments(self.compact, index, inputs[0], inputs[1], d_zp, plan.axis,
                                           plan.quant_axis, reduce, dev.product)
            self.operands = (self.compact, index, inputs[0], inputs[1], d_zp)
            self.call = Prepared(compact_plan, self.operands, stream)
            self.block_ptr = block.ptr
            self.spans = [(off, part.nbytes) for off, part in zip(offsets, parts, strict=True) if part.nbytes]
            pool = pinned_pool(dev.id)
            self.in_ptr, self.out_ptr = (self._pinned(pool, n) for n in (total, self.compact.nbytes))
            staged = host_array(self.in_ptr, total)
            self.hosts = [staged[off:off + part.nbytes].view(part.dtype).reshape(part.shape)
                          for off, part in zip(offsets, parts, strict=True)]
            self.out = host_array(self.out_ptr, self.compact.nbytes).view(np.int8).reshape(plan.updates_shape)
        except BaseException:
            self.close()
            raise

    def _keep(self, arr: DeviceArray) -> DeviceArray:
        self._arrays.append(arr)
        return arr

    def _pinned(self, pool: PinnedPool, nbytes: int) -> int:
        ptr, size = pool.take(nbytes)
        self._finalizers.append(track(ARRAYS, self, _give_back, pool, ptr, size, self.stream.handle))
        return ptr

    def run(self, parts: list[Array]) -> Array:
        """Upload ``parts`` (the inputs, in the layout's order), quantize, download and wait; return the
        compact block (a view of pinned memory, valid until the next run). The caller holds ``lock``.

        >>> call.run([upd, sc])  # doctest: +SKIP
        """
        for host, part in zip(self.hosts, parts, strict=True):
            np.copyto(host, part)
        stream, call = self.stream, self.call
        assert call is not None  # made in __init__, or __init__ raised
        with use_device(stream.device.id):
            for off, size in self.spans:  # each part's own bytes, at 64-byte aligned addresses on both sides
                _calls.memcpy_async(self.block_ptr + off, size, self.in_ptr + off, size, H2D, stream.handle)
            call(self.operands, False)
            n = self.compact.nbytes
            _calls.memcpy_async(self.out_ptr, n, self.compact.ptr, n, D2H, stream.handle)
            before = _fences.mark()
            _calls.synchronize_stream(stream.handle)
        _fences.waited(stream.device.id, stream.handle, before)
        return self.out

    def close(self) -> None:
        """Release everything (pinned buffers behind a fence: a failed call may have left copies queued).

        >>> call.close()  # doctest: +SKIP
        """
        self.closed = True
        try:
            if self.call is not None:
                self.call.close()
        finally:
            try:
                close_all(reversed(self._arrays))
            finally:
                for fin in self._finalizers:
                    fin()


_layouts: OrderedDict[tuple[Any, ...], HostCall] = OrderedDict()
_layouts_lock = threading.Lock()


def host_call(dev: Device, plan: Plan, parts: list[Array], reduce: str) -> HostCall:
    """The kept `HostCall` for this layout, made on first use (the least recently used beyond
    `MAX_LAYOUTS` is released).

    >>> host_call(Device(0), plan, [upd, sc], "update")  # doctest: +SKIP
    """
    key = (dev.id, plan.axis, plan.quant_axis, reduce, plan.updates_shape, plan.batch,
           *((p.shape, p.dtype) for p in parts))
    with _layouts_lock:
        found = _layouts.get(key)
        if found is not None and not found.closed:
            _layouts.move_to_end(key)
            return found
        _layouts.pop(key, None)  # closed with its device's reset
    made = HostCall(dev, plan, parts, reduce)
    with _layouts_lock:
        found = _layouts.get(key)
        if found is not None and not found.closed:  # another thread made it meanwhile: one is kept, not two
            evicted: HostCall | None = made
            made = found
        else:
            _layouts[key] = made
            evicted = _layouts.popitem(last=False)[1] if len(_layouts) > MAX_LAYOUTS else None
    if evicted is not None:
        with evicted.lock:
            evicted.close()
    return made


def forget(call: HostCall) -> None:
    """Drop a layout whose call failed (its buffers may be in use by queued work) and release it.

    >>> forget(call)  # doctest: +SKIP
    """
    with _layouts_lock:
        for key, value in list(_layouts.items()):
            if value is call:
                del _layouts[key]
    call.close()


def _release_device(device_id: int) -> None:
    # A layout in use right now (this very thread may be inside its run, short of memory) stays.
    with _layouts_lock:
        idle = [(k, v) for k, v in _layouts.items() if k[0] == device_id and v.lock.acquire(blocking=False)]
        for key, _ in idle:
            del _layouts[key]
    def close(call: HostCall) -> None:
        try:
            call.close()
        finally:
            call.lock.release()

    call_each(close, [call for _, call in idle])


on_empty_cache(_release_device)
