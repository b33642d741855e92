"""Device memory: a caching allocator per device and `DeviceArray`, a typed strided view of device memory.

Cached blocks are kept per (device, stream): work on one stream runs in order, so a block released after
work was queued on its stream can be handed to later work on that same stream without waiting. A block
used on another stream is ordered on the device with fences (``aclrtStreamWaitEvent``): the other
stream's first use waits for the block's own stream, and the block's release makes its own stream wait
for the others. Steady-state calls therefore never reach aclrtMalloc or aclrtFree, and never make the
host wait (aclrtFree does not wait for queued work, so it runs only after a synchronisation).

Sizes are rounded finely (`pinned.round_size`: 512-byte steps below 1 MiB, 1 MiB steps above), and the
bytes cached but free are capped (`CachingAllocator.cache_limit`, default `DEFAULT_CACHE_LIMIT`).
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import _calls, _transfer
from ._fences import fences_for
from .dtypes import ACL_DTYPE, dtype_name
from .errors import CannError, CannOutOfMemoryError, InvalidDtypeError, InvalidValueError
from .pinned import pinned_pool, round_size
from .runtime import (
    ARRAYS,
    CACHES,
    Device,
    Stream,
    call_each,
    close_all,
    is_open_stream,
    track,
    use_device,
)

__all__ = ["DEFAULT_CACHE_LIMIT", "CachingAllocator", "DeviceArray", "allocator_for", "on_empty_cache"]

H2D, D2H, D2D = 1, 2, 3
ACL_FORMAT_ND = 2
DEFAULT_CACHE_LIMIT = 1 << 30  # bytes of free blocks a device's allocator keeps for reuse


_empty_cache_hooks: list[Callable[[int], None]] = []


def on_empty_cache(hook: Callable[[int], None]) -> None:
    """Have ``hook(device_id)`` release what a layer above keeps for reuse on that device whenever
    `CachingAllocator.empty_cache` runs (before the cache is taken).

    >>> on_empty_cache(lambda device_id: None)
    """
    _empty_cache_hooks.append(hook)


class Block:
    """One device allocation handed out by the allocator: ``stream`` is the stream it is cached for,
    ``streams`` every other stream that used it since."""

    __slots__ = ("device_id", "ptr", "size", "stream", "streams")

    def __init__(self, ptr: int, size: int, device_id: int, stream: int) -> None:
        self.ptr, self.size, self.device_id, self.stream = ptr, size, device_id, stream
        self.streams: set[int] = set()

    def use_on(self, stream: int) -> None:
        """Record that work on ``stream`` uses this block. The first time for a stream other than the one it
        is cached for, order that stream after the work queued so far on the block's own stream (a fence
        it waits for on the device; a host wait where the toolkit has no ``aclrtStreamWaitEvent``): a
        previous owner's queued work may still touch the memory.

        >>> block.use_on(other_stream.handle)  # doctest: +SKIP
        """
        if stream != self.stream and stream not in self.streams:
            fences_for(self.device_id).order(stream, self.stream)
            self.streams.add(stream)


class CachingAllocator:
    """Per-device cache of device blocks keyed by (stream, size).

    The lock is re-entrant and nothing is allocated while it is held: a garbage-collected array's
    finalizer may release a block on this very thread in the middle of `alloc`.

    >>> alloc = allocator_for(0)  # doctest: +SKIP
    >>> block = alloc.alloc(1000, stream.handle); alloc.release(block)  # doctest: +SKIP
    """

    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self._lock = threading.RLock()
        self._free: defaultdict[tuple[int, int], list[int]] = defaultdict(list)
        self.cached_bytes = 0
        self.in_use_bytes = 0
        self.peak_bytes = 0
        self.mallocs = 0  # aclrtMalloc calls made, for the benchmark's mallocs_per_call
        self.cache_limit = DEFAULT_CACHE_LIMIT

    def stats(self) -> dict[str, int]:
        """The allocator's figures, in bytes except the count: ``in_use_bytes`` (blocks handed out),
        ``cached_bytes`` (free blocks kept for reuse), ``peak_bytes`` (the most device memory the allocator
        held at once, in use plus cached), ``allocations`` (aclrtMalloc calls made).

        >>> sorted(allocator_for(0).stats())  # doctest: +SKIP
        ['allocations', 'cached_bytes', 'in_use_bytes', 'peak_bytes']
        """
        with self._lock:
            return {"in_use_bytes": self.in_use_bytes, "cached_bytes": self.cached_bytes,
                    "peak_bytes": self.peak_bytes, "allocations": self.mallocs}

    def set_cache_limit(self, nbytes: int) -> None:
        """Keep at most ``nbytes`` of free blocks cached (default `DEFAULT_CACHE_LIMIT`, 1 GiB); blocks
        beyond it are freed once the streams they are cached for are idle. 0 caches nothing.

        >>> allocator_for(0).set_cache_limit(256 << 20)  # doctest: +SKIP
        """
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise InvalidValueError("cache_limit", "nbytes", f"must be a non-negative int, got {nbytes!r}")
        self.cache_limit = nbytes
        self._trim()

    def alloc(self, nbytes: int, stream: int) -> Block:
        """A block of at least ``nbytes`` for work on ``stream``; on a device allocation failure, free the
        cache and retry once before raising `CannOutOfMemoryError`.

        >>> allocator_for(0).alloc(4096, Device(0).stream.handle).size  # doctest: +SKIP
        4096
        """
        size = round_size(nbytes)
        ptr = None
        with self._lock:
            bucket = self._free.get((stream, size))
            if bucket:
                self.cached_bytes -= size
                ptr = bucket.pop()
        if ptr is None:
            with use_device(self.device_id):
                try:
                    ptr = _calls.malloc(size)
                except CannOutOfMemoryError:
                    self.empty_cache()
                    ptr = _calls.malloc(size)
            self.mallocs += 1
        with self._lock:
            self.in_use_bytes += size
            self.peak_bytes = max(self.peak_bytes, self.in_use_bytes + self.cached_bytes)
        return Block(ptr, size, self.device_id, stream)

    def release(self, block: Block) -> None:
        """Return a block to the cache of its stream, after ordering that stream behind the other open
        streams that used it (on the device: work queued there may still touch it; a closed stream has
        finished everything). A block whose own stream is gone is freed once the device is idle.

        >>> allocator_for(0).release(block)  # doctest: +SKIP
        """
        others = [s for s in block.streams if s != block.stream and is_open_stream(s)]
        if not is_open_stream(block.stream):
            with use_device(self.device_id):
                for other in others:
                    _calls.synchronize_stream(other)
                with self._lock:
                    self.in_use_bytes -= block.size
                _calls.free(block.ptr)  # its own stream finished everything when it was closed
            return
        if others:
            fences = fences_for(self.device_id)
            for other in others:
                fences.order(block.stream, other)
        with self._lock:
            self._free[(block.stream, block.size)].append(block.ptr)
            self.cached_bytes += block.size
            self.in_use_bytes -= block.size
            over = self.cached_bytes > self.cache_limit
        if over:
            self._trim()

    def _trim(self) -> None:
        """Free cached blocks, largest first, until the cache fits its limit; each after its stream is idle."""
        with self._lock:
            taken: list[tuple[int, int, int]] = []
            excess = self.cached_bytes - self.cache_limit
            for (stream, size) in sorted(self._free, key=lambda k: -k[1]):
                bucket = self._free[stream, size]
                while bucket and excess > 0:
                    taken.append((stream, size, bucket.pop()))
                    excess -= size
                    self.cached_bytes -= size
        if not taken:
            return
        with use_device(self.device_id):
            for stream in {s for s, _, _ in taken}:
                if is_open_stream(stream):
                    _calls.synchronize_stream(stream)
            call_each(_calls.free, [p for _, _, p in taken])

    def holds_stream(self, stream: int) -> bool:
        """True when blocks are cached for ``stream``.

        >>> allocator_for(0).holds_stream(stream.handle)  # doctest: +SKIP
        False
        """
        with self._lock:
            return any(k[0] == stream and bucket for k, bucket in self._free.items())

    def drop_stream(self, stream: int) -> None:
        """Free the blocks cached for a stream whose work has all run (the caller synchronised it).

        >>> allocator_for(0).drop_stream(stream.handle)  # doctest: +SKIP
        """
        with self._lock:
            keys = [k for k in self._free if k[0] == stream]
            taken = [(p, k[1]) for k in keys for p in self._free.pop(k)]
            self.cached_bytes -= sum(size for _, size in taken)
        if taken:
            with use_device(self.device_id):
                call_each(_calls.free, [p for p, _ in taken])

    def empty_cache(self) -> None:
        """Free every cached block and the device's pinned staging buffers and fences: take them off the
        cache, wait for the device, then free them (a block released meanwhile stays cached, since aclrtFree
        does not wait for queued work).

        >>> allocator_for(0).empty_cache()  # doctest: +SKIP
        """
        for hook in _empty_cache_hooks:
            hook(self.device_id)
        with self._lock:
            taken = [(key, p) for key, bucket in self._free.items() for p in bucket]
            self._free.clear()
            self.cached_bytes = 0
        try:
            with use_device(self.device_id):
                _calls.synchronize_device()
        except BaseException:  # not known to be idle: keep them cached (a stream's teardown frees its own)
            with self._lock:
                for key, p in taken:
                    self._free[key].append(p)
                    self.cached_bytes += key[1]
            raise
        try:
            with use_device(self.device_id):
                call_each(_calls.free, [p for _, p in taken])  # the device was synchronised
        finally:
            pinned_pool(self.device_id).drain()

    def abandon(self) -> None:
        """For `Device.reset` of a stopped device, which runs no more queued work: free every cached block
        without waiting for the device (a wait would only return the fault again).

        >>> allocator_for(0).abandon()  # doctest: +SKIP
        """
        with self._lock:
            taken = [p for bucket in self._free.values() for p in bucket]
            self._free.clear()
            self.cached_bytes = 0
        with use_device(self.device_id):
            call_each(_calls.free, taken)


_allocators: dict[int, CachingAllocator] = {}
_alloc_lock = threading.RLock()  # re-entrant: a finalizer run by the collector may come back here


def allocator_for(device_id: int) -> CachingAllocator:
    """The caching allocator of a device (one per device per process).

    >>> allocator_for(0).device_id  # doctest: +SKIP
    0
    """
    alloc = _allocators.get(device_id)
    if alloc is not None:
        return alloc
    with _alloc_lock:
        alloc = _allocators.get(device_id)
        if alloc is None:
            alloc = _allocators[device_id] = CachingAllocator(device_id)
            track(CACHES, alloc, _drain, alloc)  # at exit: after arrays returned their blocks, before streams
        return alloc


def _drain(alloc: CachingAllocator) -> None:
    alloc.empty_cache()


def _release_block(block: Block) -> None:
    allocator_for(block.device_id).release(block)


MAX_BYTES = 1 << 48  # far beyond any device; guards the size arithmetic against wrap-around


@contextlib.contextmanager
def close_on_error(arr: DeviceArray) -> Iterator[DeviceArray]:
    """Close a freshly made array if filling it fails, so a held exception does not pin its memory.

    >>> with close_on_error(DeviceArray.empty((4,), np.int8)) as d:  # doctest: +SKIP
    ...     d.copy_from(np.ones(4, np.int8))
    """
    try:
        yield arr
    except BaseException:
        with contextlib.suppress(CannError):  # the failure being raised is the one to report
            arr.close()
        raise


def _element_count(shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    count = math.prod(shape)
    if count * dtype.itemsize > MAX_BYTES:
        raise InvalidValueError("shape", "shape", f"{shape} of {dtype_name(dtype)} needs {count * dtype.itemsize} "
                                f"bytes, more than any device holds")
    return count


def _extent(shape: tuple[int, ...], strides: tuple[int, ...], offset: int) -> int:
    """Elements of storage a view needs, counted from the storage base (0 for an empty view)."""
    if any(d == 0 for d in shape):
        return 0
    return offset + sum((d - 1) * s for d, s in zip(shape, strides, strict=True)) + 1


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


def _check_dtype(dtype: Any) -> np.dtype[Any]:
    dt: np.dtype[Any] = np.dtype(dtype)
    if dt not in ACL_DTYPE:
        raise InvalidDtypeError("dtype", "dtype", f"must be one of {[dtype_name(d) for d in ACL_DTYPE]}, got "
                                f"{dtype_name(dt)}")
    return dt


class DeviceArray:
    """A typed, strided view of device memory: `strides` in bytes as in NumPy; `element_strides` and
    `offset` in elements, as CANN takes them.

    Owns its block when made by `empty`, `zeros` or `from_numpy` (released by `close()`, or when the last
    view is collected); wraps memory another runtime owns with `from_pointer` (never freed here).

    >>> import numpy as np
    >>> with DeviceArray.from_numpy(np.arange(6, dtype=np.int32).reshape(2, 3)) as d:  # doctest: +SKIP
    ...     d[:, 1:].to_numpy().tolist()
    [[1, 2], [4, 5]]
    """

    __array_priority__ = 10

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype[Any], strides: tuple[int, ...],
                 offset: int, device: Device, storage: int, block: Block | None, owner: object) -> None:
        self.ptr = ptr  # storage base address
        self.shape = shape
        self.dtype = dtype
        self.element_strides = strides  # elements, as aclCreateTensor takes them (`strides` counts bytes)
        self.offset = offset  # elements from ptr to the first element
        self.device = device
        self.storage = storage  # elements of storage from ptr (aclCreateTensor's storage dims)
        self._block = block
        self._owner = owner  # keeps the memory's owner (or the parent view) alive
        self._owns = False  # True for the array that allocated the block; views share its finalizer
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._tensor: Any = None  # this array's aclTensor, made on first use and reused by every call
        self._tensor_finalizer: weakref.finalize[Any, Any] | None = None
        self._prepared: dict[Any, Any] = {}  # calls prepared with this array as self (see npu.py)
        # Prepared calls that use this memory, shared by an allocation and all its views: closing any of
        # them releases these calls before the memory or a descriptor goes.
        self._calls: weakref.WeakSet[Any] = weakref.WeakSet()
        self._closed_self = False

    # ------------------------------------------------------------------------------------ construction

    @classmethod
    def empty(cls, shape: tuple[int, ...] | list[int], dtype: Any, *, device: Device | int | None = None,
              stream: Stream | None = None) -> DeviceArray:
        """Uninitialised device memory of ``shape`` and ``dtype`` (contiguous).

        >>> DeviceArray.empty((2, 32), np.int8).shape  # doctest: +SKIP
        (2, 32)
        """
        dev = _device(device, stream)
        dt = _check_dtype(dtype)
        shp = tuple(int(d) for d in shape)
        if any(d < 0 for d in shp):
            raise InvalidValueError("shape", "shape", f"must not be negative, got {shp}")
        count = _element_count(shp, dt)
        s = dev.stream if stream is None else stream
        block = allocator_for(dev.id).alloc(count * dt.itemsize, s.handle)
        arr = cls(block.ptr, shp, dt, _contiguous_strides(shp), 0, dev, block.size // dt.itemsize, block, None)
        arr._finalizer = track(ARRAYS, arr, _release_block, block)
        arr._owns = True
        return arr

    @classmethod
    def zeros(cls, shape: tuple[int, ...] | list[int], dtype: Any, *, device: Device | int | None = None,
              stream: Stream | None = None) -> DeviceArray:
        """Device memory filled with zeros (synchronous unless ``stream`` is given).

        >>> DeviceArray.zeros((4,), np.float32).to_numpy().tolist()  # doctest: +SKIP
        [0.0, 0.0, 0.0, 0.0]
        """
        arr = cls.empty(shape, dtype, device=device, stream=stream)
        nbytes = arr.nbytes
        if nbytes:
            with close_on_error(arr):
                s = arr.device.stream if stream is None else stream
                with use_device(arr.device.id, s.context):
                    _calls.memset_async(arr.ptr, arr.storage * arr.dtype.itemsize, 0, nbytes, s.handle)
                if stream is None:
                    s.synchronize()
        return arr

    @classmethod
    def from_numpy(cls, a: Any, *, device: Device | int | None = None, stream: Stream | None = None) -> DeviceArray:
        """Copy a NumPy array to the device through pinned memory. Without ``stream`` the copy has finished
        when this returns; with one it is queued there and this returns without waiting (``a`` may be
        reused at once: its bytes were staged).

        >>> d = DeviceArray.from_numpy(np.ones((2, 32), np.int8))  # doctest: +SKIP
        """
        host = np.ascontiguousarray(a)
        arr = cls.empty(host.shape, host.dtype, device=device, stream=stream)
        with close_on_error(arr):
            arr.copy_from(host, stream=stream)
        return arr

    @classmethod
    def from_pointer(cls, ptr: int, shape: tuple[int, ...] | list[int], dtype: Any,
                     strides: tuple[int, ...] | list[int] | None = None, *, offset: int = 0,
                     device: Device | int | None = None, owner: object = None) -> DeviceArray:
        """Wrap device memory another runtime owns: never freed here; ``owner`` is kept alive meanwhile.
        ``strides`` and ``offset`` count elements (default: contiguous, 0).

        >>> view = DeviceArray.from_pointer(ptr, (24, 4096, 128), np.int8, owner=their_tensor)  # doctest: +SKIP
        """
        dev = _device(device, None)
        dt = _check_dtype(dtype)
        shp = tuple(int(d) for d in shape)
        st = _contiguous_strides(shp) if strides is None else tuple(int(s) for s in strides)
        if len(st) != len(shp) or any(s < 0 for s in st) or any(d < 0 for d in shp) or offset < 0:
            raise InvalidValueError("strides", "strides", f"must be {len(shp)} non-negative element strides "
                                    f"with a non-negative offset, got {st} and {offset}")
        if not isinstance(ptr, int) or isinstance(ptr, bool) or ptr <= 0:
            raise InvalidValueError("ptr", "ptr", f"must be a non-NULL device address (int), got {ptr!r}")
        if ptr % 32:  # aclCreateTensor's documented requirement; CANN itself does not check (undefined results)
            raise InvalidValueError("alignment", "ptr", f"must be 32-byte aligned, as aclCreateTensor requires "
                                    f"(wrap the allocation's start and pass offset=), got 0x{ptr:x}")
        return cls(ptr, shp, dt, st, offset, dev, _extent(shp, st, offset), None, owner)

    # -------------------------------------------------------------------------------------- properties

    @property
    def strides(self) -> tuple[int, ...]:
        """Bytes between neighbours along each dimension, as in NumPy (`element_strides` counts elements).

        >>> DeviceArray.empty((2, 32), np.int16).strides  # doctest: +SKIP
        (64, 2)
        """
        item = self.dtype.itemsize
        return tuple(s * item for s in self.element_strides)

    @property
    def ndim(self) -> int:
        """Number of dimensions.

        >>> DeviceArray.zeros((2, 32), np.int8).ndim  # doctest: +SKIP
        2
        """
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements.

        >>> DeviceArray.zeros((2, 32), np.int8).size  # doctest: +SKIP
        64
        """
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the elements (not of the storage).

        >>> DeviceArray.zeros((2, 32), np.float16).nbytes  # doctest: +SKIP
        128
        """
        return self.size * self.dtype.itemsize

    @property
    def data_ptr(self) -> int:
        """Device address of the first element.

        >>> d[1:].data_ptr - d.data_ptr == d.strides[0]  # doctest: +SKIP
        True
        """
        return self.ptr + self.offset * self.dtype.itemsize

    @property
    def is_contiguous(self) -> bool:
        """True when the elements are dense in C order.

        >>> d = DeviceArray.zeros((4, 32), np.int8); d.is_contiguous, d[:, ::2].is_contiguous  # doctest: +SKIP
        (True, False)
        """
        return self.size == 0 or all(
            s == c for d, s, c in zip(self.shape, self.element_strides, _contiguous_strides(self.shape), strict=True)
            if d > 1)

    @property
    def closed(self) -> bool:
        """True once this array, or the allocation it views, was closed.

        >>> d.closed  # doctest: +SKIP
        False
        """
        return self._closed_self or (self._finalizer is not None and not self._finalizer.alive)

    @property
    def block(self) -> Block | None:
        """The allocator block behind this array (None for `from_pointer` memory).

        >>> DeviceArray.zeros((4,), np.int8).block.size  # doctest: +SKIP
        512
        """
        return self._block

    def _use_on(self, stream: Stream) -> None:
        if self._block is not None:
            self._block.use_on(stream.handle)

    def _check_open(self, param: str = "array") -> None:
        if self.closed:
            raise InvalidValueError("closed", param, "is closed; its device memory was released")

    # ---------------------------------------------------------------------------------------- views

    def __getitem__(self, key: Any) -> DeviceArray:
        """Basic slicing (ints, slices with positive steps, Ellipsis): a strided view of the same memory.

        >>> DeviceArray.zeros((4, 8, 32), np.int8)[1, ::2].strides  # doctest: +SKIP
        (64, 1)
        """
        self._check_open()
        keys = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in keys):
            i = keys.index(Ellipsis)
            fill = (slice(None),) * (self.ndim - (len(keys) - 1))
            keys = keys[:i] + fill + keys[i + 1 :]
        if len(keys) > self.ndim:
            raise InvalidValueError("index", "index", f"too many indices for a {self.ndim}-d array: {key!r}")
        offset, shape, strides = self.offset, [], []
        for dim, k in enumerate(keys + (slice(None),) * (self.ndim - len(keys))):
            n, st = self.shape[dim], self.element_strides[dim]
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step <= 0:
                    raise InvalidValueError("index", "index", f"slices must have a positive step, got {k!r}")
                offset += start * st
                shape.append(max(0, -(-(stop - start) // step)))
                strides.append(st * step)
            elif isinstance(k, (int, np.integer)) and not isinstance(k, bool):
                i = int(k) + n if int(k) < 0 else int(k)
                if not 0 <= i < n:
                    raise InvalidValueError("index", "index", f"{int(k)} is out of range for dimension {dim} of "
                                            f"size {n}")
                offset += i * st
            else:
                raise InvalidValueError("index", "index", f"only ints, slices and Ellipsis are supported, got "
                                        f"{k!r}")
        view = DeviceArray(self.ptr, tuple(shape), self.dtype, tuple(strides), offset, self.device, self.storage,
                           self._block, self)
        view._finalizer = self._finalizer
        view._calls = self._calls
        return view

    # -------------------------------------------------------------------------------------- host copies

    def to_numpy(self, out: np.ndarray[Any, Any] | None = None, *, stream: Stream | None = None
                 ) -> np.ndarray[Any, Any]:
        """Copy to the host, after the work queued before: on the whole device, or on ``stream`` only.

        Only the view's own bytes move (its contiguous runs, each copy starting at a 64-byte aligned
        address, through pinned memory; see ``_transfer``). An ``out`` from `pinned_empty` receives a
        contiguous, aligned array without staging.

        >>> d.to_numpy().dtype  # doctest: +SKIP
        dtype('int8')
        """
        self._check_open()
        if out is not None and (out.shape != self.shape or out.dtype != self.dtype or not out.flags.writeable):
            raise InvalidValueError("out", "out", f"must be a writable array of shape {self.shape} and dtype "
                                    f"{dtype_name(self.dtype)}, got {out.shape} {dtype_name(out.dtype)} "
                                    f"(writable: {out.flags.writeable})")
        s = self.device.stream if stream is None else stream
        if stream is None and self.nbytes:
            with use_device(self.device.id):
                _calls.synchronize_device()
        self._use_on(s)
        return _transfer.download(self, s, out)

    def copy_from(self, host: Any, *, stream: Stream | None = None) -> DeviceArray:
        """Overwrite this array (or view) with a host array of the same shape and dtype; return self.

        The bytes are staged in pinned memory and the copy is queued on ``stream`` after the work already
        there. Without ``stream`` (the device's package stream) the copy has finished when this returns;
        with one, this returns at once, and ``host`` may be reused (a `pinned_empty` array is copied
        without staging: it is read when the stream gets there, so do not write it before). Only the
        view's bytes are written; a view whose runs do not start at 64-byte aligned addresses is written
        synchronously (after waiting for the stream), since CANN's asynchronous copies need aligned ones.

        >>> d_updates.copy_from(next_rows, stream=s)  # doctest: +SKIP
        """
        self._check_open()
        data = host if isinstance(host, np.ndarray) and host.flags.c_contiguous else np.ascontiguousarray(host)
        if data.shape != self.shape or data.dtype != self.dtype:
            raise InvalidValueError("host", "host", f"must have shape {self.shape} and dtype {dtype_name(self.dtype)}"
                                    f", got {data.shape} {dtype_name(data.dtype)}")
        s = self.device.stream if stream is None else stream
        if data.nbytes:
            self._use_on(s)
            _transfer.upload(self, data, s, wait=stream is None)
        return self

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        """``np.asarray(d)``: a host copy (``copy=False`` is refused: device memory cannot be viewed).

        >>> np.asarray(DeviceArray.zeros((2,), np.int8)).tolist()  # doctest: +SKIP
        [0, 0]
        """
        if copy is False:
            raise InvalidValueError("copy", "copy", "False is impossible: a device array is always copied to the host")
        host = self.to_numpy()
        return host if dtype is None else host.astype(dtype)

    # -------------------------------------------------------------------------------------- lifetime

    def descriptor(self) -> Any:
        """This array's ``aclTensor *`` (created on first use, destroyed by `close()` or collection).

        >>> DeviceArray.zeros((2, 32), np.int8).descriptor()  # doctest: +SKIP
        <cdata 'struct aclTensor *' 0x...>
        """
        if self._tensor is None:
            self._check_open()
            self._tensor = _calls.create_tensor(self.shape, ACL_DTYPE[self.dtype], self.element_strides, self.offset,
                                                ACL_FORMAT_ND, (self.storage,), self.ptr)
            self._tensor_finalizer = track(ARRAYS, self, _calls.destroy_tensor, self._tensor)
        return self._tensor

    def close(self) -> None:
        """Release the prepared calls that use this memory, this array's descriptor, and the block it
        allocated (idempotent; its views become unusable). Closing a view or a `from_pointer` array
        releases the calls and its own descriptor and drops its reference to the owner.

        >>> d.close(); d.closed  # doctest: +SKIP
        True
        """
        if self._closed_self:
            return
        self._closed_self = True
        calls = list(self._calls)  # taken first: clearing _prepared may drop the last reference to some
        self._prepared.clear()
        try:
            close_all(calls)
        finally:
            try:
                if self._tensor_finalizer is not None:
                    fin, self._tensor_finalizer, self._tensor = self._tensor_finalizer, None, None
                    fin()
            finally:  # the memory goes back even if CANN refused to destroy the descriptor
                if self._owns and self._finalizer is not None:
                    self._finalizer()
                self._owner = None

    def __enter__(self) -> DeviceArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"DeviceArray(shape={self.shape}, dtype={dtype_name(self.dtype)}, strides={self.element_strides}, "
                f"offset={self.offset}, device={self.device.id})")


def _device(device: Device | int | None, stream: Stream | None) -> Device:
    if stream is not None:
        if device is not None and Device(device) is not stream.device:
            raise InvalidValueError("device", "device", f"is {Device(device).id} but the stream belongs to device "
                                    f"{stream.device.id}")
        return stream.device
    return Device.current() if device is None else Device(device)
