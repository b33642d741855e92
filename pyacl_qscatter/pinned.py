"""Pinned host memory: the staging pool behind every asynchronous transfer, and `pinned_empty`.

CANN's documentation of ``aclrtMemcpyAsync`` (8.0.RC2 to 8.1.RC1) requires host memory from
``aclrtMallocHost`` and 64-byte aligned addresses on both sides; other memory gives no error but fails
unpredictably later, and from 8.5 pageable memory makes the copy synchronous. So NumPy data is first
copied (on the host) into a pinned staging buffer, and the asynchronous copy reads or writes that buffer.
``aclrtMallocHost`` returns 64-byte aligned memory (its documentation says so). A staging buffer goes back
to the pool only after a fence recorded behind its copy shows that the copy ran (queried, never waited
for on the hot path), so it is never reused or freed under a queued copy.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import numpy as np

from . import _calls
from ._fences import fences_for
from .dtypes import dtype_name
from .errors import InvalidDtypeError, InvalidValueError
from .runtime import ARRAYS, CACHES, Device, call_each, track, use_device

__all__ = ["ALIGN", "DEFAULT_PINNED_CACHE_LIMIT", "REAP_BYTES", "PinnedPool", "host_array", "is_pinned", "pinned_empty",
           "pinned_pool", "round_size"]

ALIGN = 64  # bytes: aclrtMemcpyAsync's alignment rule for host and device addresses
# Free staging bytes a device's pool keeps (CANN's documentation of aclrtMallocHost: too much page-locked
# memory slows the whole system); a buffer given back beyond it is freed at once.
DEFAULT_PINNED_CACHE_LIMIT = 256 << 20
# Staging bytes handed out (and not yet known free) beyond which a take that finds no free buffer first
# reaps the fences (event queries); below it, a new buffer is allocated instead. Small uploads then cost
# no query each: their buffers come back in batches (`_fences.REAP_AT`), large ones are reused at once.
REAP_BYTES = 1 << 20
_SMALL_STEP, _LARGE_STEP, _LARGE = 512, 1 << 20, 1 << 20


def round_size(nbytes: int) -> int:
    """Allocation size for ``nbytes``: 512-byte steps below 1 MiB, 1 MiB steps from there (at least 512).

    >>> round_size(1), round_size(1000), round_size((1 << 20) + 1) == 2 << 20
    (512, 1024, True)
    """
    step = _SMALL_STEP if nbytes < _LARGE else _LARGE_STEP
    return max(-(-nbytes // step) * step, _SMALL_STEP)


class _HostMemory:
    """Exposes host memory at an address to NumPy; the resulting array keeps this object as its base."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.ptr = ptr
        self.__array_interface__ = {"data": (ptr, False), "shape": shape, "typestr": dtype.str, "version": 3}


class _Pinned(_HostMemory):
    """The owner of a `pinned_empty` allocation (freed when the last array using it is collected)."""


def host_array(ptr: int, nbytes: int) -> np.ndarray[Any, Any]:
    """A uint8 NumPy view of ``nbytes`` of host memory at ``ptr`` (the caller keeps the memory alive).

    >>> a = np.arange(4, dtype=np.uint8); host_array(a.ctypes.data, 4).tolist()
    [0, 1, 2, 3]
    """
    return np.asarray(_HostMemory(ptr, (nbytes,), np.dtype(np.uint8)))


def is_pinned(a: np.ndarray[Any, Any]) -> bool:
    """True when ``a`` lies in memory from `pinned_empty` (asynchronous copies may read or write it directly).

    >>> is_pinned(np.zeros(4))
    False
    """
    base: Any = a
    while base is not None:
        if isinstance(base, _Pinned):
            return True
        base = getattr(base, "base", None)
    return False


def _free_host(ptr: int, device_id: int) -> None:
    with use_device(device_id):
        _calls.free_host(ptr)


def pinned_empty(shape: tuple[int, ...] | list[int] | int, dtype: Any, *, device: Device | int | None = None
                 ) -> np.ndarray[Any, Any]:
    """An uninitialised C-contiguous NumPy array in pinned host memory (``aclrtMallocHost``, 64-byte
    aligned). `DeviceArray.copy_from` and `DeviceArray.to_numpy` copy it without staging. The memory is
    freed (``aclrtFreeHost``) when the array and every view of it are collected; copies queued from it keep
    it alive until they ran. ``device``: whose context allocates it (default: the current device).

    >>> import numpy as np
    >>> rows = pinned_empty((8, 1, 1024), np.float16)  # doctest: +SKIP
    >>> rows.shape, rows.ctypes.data % 64  # doctest: +SKIP
    ((8, 1, 1024), 0)
    """
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise InvalidDtypeError("dtype", "dtype", f"must be a NumPy dtype, got {dtype!r}") from exc
    if dt.hasobject:
        raise InvalidDtypeError("dtype", "dtype", f"must be a plain data type, got {dtype_name(dt)}")
    shp = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    if any(d < 0 for d in shp):
        raise InvalidValueError("shape", "shape", f"must not be negative, got {shp}")
    nbytes = int(np.prod(shp, dtype=np.int64)) * dt.itemsize
    dev = Device.current() if device is None else Device(device)
    with use_device(dev.id):
        ptr = _calls.malloc_host(max(nbytes, 1))
    owner = _Pinned(ptr, shp, dt)
    track(ARRAYS, owner, _free_host, ptr, dev.id)
    return np.asarray(owner)


class PinnedPool:
    """Pinned staging buffers of one device, by size (`round_size`): `take` one, fill or read it, and give
    it back with `give_after` once a copy using it is queued.

    >>> pool = pinned_pool(0)  # doctest: +SKIP
    >>> ptr, size = pool.take(4096); pool.give_after(ptr, size, stream.handle)  # doctest: +SKIP
    """

    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self.fences = fences_for(device_id)
        self._lock = threading.RLock()
        self._free: defaultdict[int, list[int]] = defaultdict(list)
        self._parked: list[tuple[int, int]] = []  # buffers whose copies' end could not be fenced: freed at drain
        self.cached_bytes = 0  # free buffers held for reuse
        self.cache_limit = DEFAULT_PINNED_CACHE_LIMIT
        self.allocations = 0  # aclrtMallocHost calls made
        self.taken_bytes = 0  # buffers handed out by take and not given back (parked ones included)

    def _reuse(self, size: int) -> int | None:
        with self._lock:
            bucket = self._free.get(size)
            if not bucket:
                return None
            self.cached_bytes -= size
            self.taken_bytes += size
            return bucket.pop()

    def take(self, nbytes: int) -> tuple[int, int]:
        """A free pinned buffer of at least ``nbytes``: (address, size). Reuses buffers whose copies ran;
        when none is free and `REAP_BYTES` are out, first retires the fences whose copies ran.

        >>> pinned_pool(0).take(100)[1]  # doctest: +SKIP
        512
        """
        size = round_size(nbytes)
        ptr = self._reuse(size)
        if ptr is None and self.taken_bytes + size > REAP_BYTES:
            self.fences.reap()
            ptr = self._reuse(size)
        if ptr is not None:
            return ptr, size
        with use_device(self.device_id):
            ptr = _calls.malloc_host(size)
        with self._lock:
            self.allocations += 1
            self.taken_bytes += size
        return ptr, size

    def give(self, ptr: int, size: int) -> None:
        """Return a buffer that no queued copy uses (freed at once beyond ``cache_limit`` free bytes, default
        `DEFAULT_PINNED_CACHE_LIMIT`).

        >>> pinned_pool(0).give(ptr, size)  # doctest: +SKIP
        """
        with self._lock:
            self.taken_bytes -= size
            keep = self.cached_bytes + size <= self.cache_limit
            if keep:
                self._free[size].append(ptr)
                self.cached_bytes += size
        if not keep:
            with use_device(self.device_id):
                _calls.free_host(ptr)

    def give_after(self, ptr: int, size: int, stream: int, keep: object = None) -> None:
        """Return a buffer once the work queued on ``stream`` so far has run; ``keep`` (for example a user's
        pinned array a copy reads) stays alive until then too.

        >>> pinned_pool(0).give_after(ptr, size, stream.handle)  # doctest: +SKIP
        """
        try:
            self.fences.after(stream, lambda: self.give(ptr, size), keep)
        except BaseException:
            with self._lock:  # a copy may still be queued: kept apart until the device is known idle
                self._parked.append((ptr, size))
            raise

    def hold_until_run(self, stream: int, keep: object) -> None:
        """Keep ``keep`` alive until the work queued on ``stream`` so far has run.

        >>> pinned_pool(0).hold_until_run(stream.handle, user_array)  # doctest: +SKIP
        """
        self.fences.after(stream, None, keep)

    def drain(self) -> None:
        """Wait for the copies that use staging buffers, then free every free buffer (``aclrtFreeHost``).

        >>> pinned_pool(0).drain()  # doctest: +SKIP
        """
        self.fences.drain()
        if self._parked:
            with use_device(self.device_id):
                _calls.synchronize_device()
        self._free_everything()

    def abandon(self) -> None:
        """For `Device.reset` of a stopped device, which runs no more queued work: free every buffer, the
        parked ones too, without waiting (call after the fences' `FencePool.abandon`).

        >>> pinned_pool(0).abandon()  # doctest: +SKIP
        """
        self._free_everything()

    def _free_everything(self) -> None:
        """Free every free and parked buffer now (the caller made sure no queued copy still uses them)."""
        with self._lock:
            taken = [p for bucket in self._free.values() for p in bucket] + [p for p, _ in self._parked]
            self.taken_bytes -= sum(size for _, size in self._parked)
            self._free.clear()
            self._parked.clear()
            self.cached_bytes = 0
        if taken:
            with use_device(self.device_id):
                call_each(_calls.free_host, taken)


_pools: dict[int, PinnedPool] = {}
_pools_lock = threading.Lock()


def pinned_pool(device_id: int) -> PinnedPool:
    """The pinned staging pool of a device (one per device per process; drained by
    ``allocator_for(device).empty_cache()`` and at exit).

    >>> pinned_pool(0).device_id  # doctest: +SKIP
    0
    """
    pool = _pools.get(device_id)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(device_id)
            if pool is None:
                pool = _pools[device_id] = PinnedPool(device_id)
                track(CACHES, pool, PinnedPool.drain, pool)
    return pool
