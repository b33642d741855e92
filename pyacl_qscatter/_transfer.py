"""Host <-> device copies of (possibly strided) device arrays through pinned memory.

Every asynchronous copy reads or writes pinned, 64-byte aligned host memory and starts at a 64-byte
aligned device address (``aclrtMemcpyAsync``'s documented rules up to CANN 8.3). A view is moved as its
contiguous runs ("rows"): in one copy of the aligned span around it when that span is at most 10% larger
than the view, else in one ``aclrtMemcpy2dAsync`` (where the toolkit has it and the rows are evenly
spaced at a multiple of 64 bytes), else in one copy per row, each from the aligned address at or below
the row. A write can only start at the row itself (the bytes before it belong to someone else): rows that
do not start at an aligned address are written with synchronous ``aclrtMemcpy`` after waiting for the
stream, which needs neither pinned memory nor alignment.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _calls
from ._ffi._cann import ffi
from .errors import CannError
from .pinned import ALIGN, PinnedPool, host_array, is_pinned, pinned_pool
from .runtime import Stream, ensure_runtime, use_device

if TYPE_CHECKING:
    from .memory import DeviceArray

__all__ = ["download", "upload"]

H2D, D2H = 1, 2
MAX_ROW_COPIES = 1024  # beyond this many separate copies, move the aligned span in one
MAX_2D_HEIGHT = 5 * 1024 * 1024  # aclrtMemcpy2dAsync's documented limit
SPAN_SLACK = 1.1  # the aligned span is moved whole when it is at most this much larger than the view

Array = np.ndarray[Any, Any]


def _wait(stream: Stream) -> None:
    stream.synchronize()  # retires the fences recorded on it before (runtime.Stream.synchronize)


def _down(addr: int) -> int:
    return addr & ~(ALIGN - 1)


def _up(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def rows(arr: DeviceArray) -> tuple[Array, int]:
    """Device addresses of the view's contiguous runs in C order, and the bytes of each run.

    >>> rows(d[:, :4])  # doctest: +SKIP
    (array([...]), 4096)
    """
    item = arr.dtype.itemsize
    dims = [(d, s) for d, s in zip(arr.shape, arr.element_strides, strict=True) if d != 1]
    run = 1
    while dims and dims[-1][1] == run:  # merge the trailing dimensions that are dense
        run *= dims.pop()[0]
    offsets = np.zeros(1, np.int64)
    for d, s in dims:
        offsets = (offsets[:, None] + np.arange(d, dtype=np.int64) * s).ravel()
    return arr.data_ptr + offsets * item, run * item


def _even(addrs: Array) -> int | None:
    """The constant distance between consecutive rows, if there is one."""
    if len(addrs) < 2:
        return 0
    steps = np.diff(addrs)
    return int(steps[0]) if bool((steps == steps[0]).all()) else None


def _gather(staging: Array, offsets: Array, run: int, arr: DeviceArray) -> Array:
    """The view's elements, out of the staging bytes where row i starts at ``offsets[i]``."""
    step = _even(offsets)
    if step is not None:
        picked = np.lib.stride_tricks.as_strided(staging[int(offsets[0]):], (len(offsets), run), (step, 1)).copy()
    else:
        picked = staging[offsets[:, None] + np.arange(run)]
    return picked.view(arr.dtype).reshape(arr.shape)


def download(arr: DeviceArray, stream: Stream, out: Array | None = None) -> Array:
    """Copy ``arr`` to the host on ``stream`` and wait for that stream (one host wait); return the host
    array (``out`` when given: right shape and dtype, checked by the caller).

    >>> download(d, Device(0).stream)  # doctest: +SKIP
    """
    if arr.nbytes == 0:
        return np.empty(arr.shape, arr.dtype) if out is None else out
    with use_device(arr.device.id, stream.context):
        return _download(arr, stream, out)


def _download(arr: DeviceArray, stream: Stream, out: Array | None) -> Array:
    addrs, run = rows(arr)
    n = len(addrs)
    lo, hi = int(addrs.min()), int(addrs.max()) + run
    start = _down(lo)
    handle = stream.handle
    if (n == 1 and out is not None and lo == start and is_pinned(out) and out.flags.c_contiguous
            and out.ctypes.data % ALIGN == 0):
        _calls.memcpy_async(out.ctypes.data, out.nbytes, lo, run, D2H, handle)  # straight into the user's pinned
        _wait(stream)
        return out
    pitch = _even(addrs)
    caps = ensure_runtime().caps
    if start < arr.ptr:  # the aligned address lies before the memory we were given: synchronous copy
        plan = "sync"
    elif hi - start <= SPAN_SLACK * n * run or n == 1:
        plan = "span"
    elif (caps.memcpy_2d and pitch and pitch % ALIGN == 0 and n <= MAX_2D_HEIGHT
          and _down(int(addrs[0])) >= arr.ptr):
        plan = "2d"
    elif n <= MAX_ROW_COPIES:
        plan = "rows"
    else:
        plan = "span"
    pool = pinned_pool(arr.device.id)
    width = run + ALIGN - 1 if plan in ("2d", "rows") else 0
    size = {"sync": hi - lo, "span": hi - start}.get(plan, _up(width) * n)
    ptr, taken = pool.take(size)
    try:
        staging = host_array(ptr, taken)
        if plan == "sync":
            _wait(stream)  # aclrtMemcpy is not ordered after queued work
            _calls.memcpy(ptr, taken, lo, hi - lo, D2H)
            offsets = addrs - lo
        elif plan == "span":
            _calls.memcpy_async(ptr, taken, start, hi - start, D2H, handle)
            _wait(stream)
            offsets = addrs - start
        elif plan == "2d":
            first = _down(int(addrs[0]))
            w = int(addrs[0]) - first + run
            dpitch = _up(w)
            _calls.memcpy_2d_async(ptr, dpitch, first, int(pitch or 0), w, n, D2H, handle)
            _wait(stream)
            offsets = np.arange(n, dtype=np.int64) * dpitch + (int(addrs[0]) - first)
        else:
            hp = _up(width)
            for i, addr in enumerate(addrs.tolist()):
                a = _down(addr)
                _calls.memcpy_async(ptr + i * hp, hp, a, addr - a + run, D2H, handle)
            _wait(stream)
            offsets = np.arange(n, dtype=np.int64) * hp + (addrs & (ALIGN - 1))
        result = _gather(staging, offsets, run, arr)
    except BaseException:
        _give_back(pool, ptr, taken, handle)
        raise
    pool.give(ptr, taken)  # every copy into it ran: the stream was waited for
    if out is None:
        return result
    np.copyto(out, result)
    return out


def _upload_dense(arr: DeviceArray, data: Array, stream: Stream, wait: bool) -> None:
    """The common case (a whole array, or a dense view at an aligned address): one host copy into a staging
    buffer and one aclrtMemcpyAsync, without working out rows."""
    pool, handle, nbytes = pinned_pool(arr.device.id), stream.handle, arr.nbytes
    ptr, taken = pool.take(nbytes)
    try:
        ffi.memmove(ffi.cast("char *", ptr), data.reshape(-1).view(np.uint8), nbytes)
        _calls.memcpy_async(arr.data_ptr, nbytes, ptr, nbytes, H2D, handle)
        if wait:
            _wait(stream)
    except BaseException:
        _give_back(pool, ptr, taken, handle)
        raise
    if wait:
        pool.give(ptr, taken)
    else:
        pool.give_after(ptr, taken, handle)


def _give_back(pool: PinnedPool, ptr: int, size: int, stream: int) -> None:
    """After a failure: the buffer returns once the copies queued before it ran (never earlier)."""
    with contextlib.suppress(CannError):  # the failure being raised is the one to report
        pool.give_after(ptr, size, stream)


def upload(arr: DeviceArray, data: Array, stream: Stream, *, wait: bool) -> None:
    """Copy the C-contiguous host array ``data`` (same shape and dtype, checked by the caller) into ``arr``
    on ``stream``, through pinned memory; wait for the copy only when ``wait`` is True. The host array may
    be reused as soon as this returns (its bytes were staged), unless it is itself pinned (then it is
    read when the stream gets there, and kept alive until then).

    >>> upload(d, np.ones(d.shape, d.dtype), stream, wait=False)  # doctest: +SKIP
    """
    if arr.nbytes:
        with use_device(arr.device.id, stream.context):
            _upload(arr, data, stream, wait)


def _upload(arr: DeviceArray, data: Array, stream: Stream, wait: bool) -> None:
    if arr.is_contiguous and arr.data_ptr % ALIGN == 0 and not is_pinned(data):
        _upload_dense(arr, data, stream, wait)
        return
    addrs, run = rows(arr)
    n = len(addrs)
    handle = stream.handle
    pool = pinned_pool(arr.device.id)
    aligned = bool((addrs % ALIGN == 0).all())
    pitch = _even(addrs)
    if n == 1 and aligned and is_pinned(data) and data.ctypes.data % ALIGN == 0:
        _calls.memcpy_async(int(addrs[0]), run, data.ctypes.data, run, H2D, handle)
        if wait:
            _wait(stream)
        else:
            pool.hold_until_run(handle, data)
        return
    caps = ensure_runtime().caps
    use_2d = (n > 1 and aligned and caps.memcpy_2d and pitch is not None and pitch > 0 and pitch % ALIGN == 0
              and n <= MAX_2D_HEIGHT)
    if not aligned or (n > MAX_ROW_COPIES and not use_2d):
        _wait(stream)  # aclrtMemcpy is not ordered after queued work
        flat = data.reshape(n, run // data.dtype.itemsize)
        for addr, row in zip(addrs.tolist(), flat, strict=True):
            _calls.memcpy(addr, run, _calls.buffer_address(row), run, H2D)
        return
    hp = run if n == 1 else _up(run)
    ptr, taken = pool.take(hp * n)
    try:
        staging = host_array(ptr, taken)
        packed = np.lib.stride_tricks.as_strided(staging, (n, run), (hp, 1))
        packed[...] = data.reshape(-1).view(np.uint8).reshape(n, run)
        if n == 1:
            _calls.memcpy_async(int(addrs[0]), run, ptr, run, H2D, handle)
        elif use_2d:
            _calls.memcpy_2d_async(int(addrs[0]), pitch or 0, ptr, hp, run, n, H2D, handle)
        else:
            for i, addr in enumerate(addrs.tolist()):
                _calls.memcpy_async(addr, run, ptr + i * hp, run, H2D, handle)
        if wait:
            _wait(stream)
    except BaseException:
        _give_back(pool, ptr, taken, handle)
        raise
    if wait:
        pool.give(ptr, taken)
    else:
        pool.give_after(ptr, taken, handle)
