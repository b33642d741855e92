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
import operator
import threading
import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import _calls, _transfer
from ._fences import fences_for
from .dtypes import ACL_DTYPE, dtype_name
from .errors import CannError, CannOutOfMemoryError, InvalidDtypeError, InvalidValueError
from .pinned import ALIGN, pinned_pool, round_size
from .runtime import (
    ARRAYS,
    CACHES,
    Device,
    Stream,
    as_address,
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
        failure: CannError | None = None
        for hook in _empty_cache_hooks:  # what they release comes back here first
            try:
                hook(self.device_id)
            except CannError as exc:  # reported once the rest is released
                failure = failure or exc
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
        if failure is not None:
            raise failure

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
        # Prepared calls that use this memory, shared by an allocation and all its views: closing any of
        # them releases these calls before the memory or a descriptor goes.
        self._calls: weakref.WeakSet[Any] = weakref.WeakSet()
        self._closed_self = False
        self._stream: Stream | None = None  # the stream its memory was made or imported for (see `stream`)

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
        arr._stream = stream
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
    def from_pointer(cls, ptr: Any, shape: tuple[int, ...] | list[int], dtype: Any,
                     strides: tuple[int, ...] | list[int] | None = None, *, offset: int = 0,
                     element_strides: tuple[int, ...] | list[int] | None = None,
                     device: Device | int | None = None, owner: object = None) -> DeviceArray:
        """Wrap device memory another runtime owns: never freed here; ``owner`` is kept alive meanwhile.

        ``ptr`` is an address in any form (int, NumPy integer, ``ctypes.c_void_p``, cffi pointer, an object
        with ``__int__``). ``strides`` count bytes, as in NumPy (multiples of the item size, not negative);
        ``element_strides`` gives them in elements instead, as CANN takes them; default: contiguous.
        ``offset`` counts elements from ``ptr`` to the first element.

        >>> view = DeviceArray.from_pointer(ptr, (24, 4096, 128), np.int8, owner=their_tensor)  # doctest: +SKIP
        """
        dev = _device(device, None)
        dt = _check_dtype(dtype)
        shp = tuple(int(d) for d in shape)
        if any(d < 0 for d in shp):
            raise InvalidValueError("shape", "shape", f"must not be negative, got {shp}")
        if strides is not None and element_strides is not None:
            raise InvalidValueError("strides", "strides", "give strides (bytes) or element_strides (elements), "
                                    "not both")
        if strides is not None:
            byte_strides = tuple(int(s) for s in strides)
            if len(byte_strides) != len(shp) or any(s < 0 or s % dt.itemsize for s in byte_strides):
                raise InvalidValueError("strides", "strides", f"must be {len(shp)} non-negative byte strides, each "
                                        f"a multiple of the item size {dt.itemsize} ({dtype_name(dt)}), got "
                                        f"{byte_strides}")
            st = tuple(s // dt.itemsize for s in byte_strides)
        elif element_strides is not None:
            st = tuple(int(s) for s in element_strides)
            if len(st) != len(shp) or any(s < 0 for s in st):
                raise InvalidValueError("element_strides", "element_strides", f"must be {len(shp)} non-negative "
                                        f"element strides, got {st}")
        else:
            st = _contiguous_strides(shp)
        if int(offset) < 0:
            raise InvalidValueError("offset", "offset", f"must be a non-negative element count, got {offset}")
        address = as_address(ptr, "ptr")
        if address == 0:
            raise InvalidValueError("ptr", "ptr", f"must be a non-NULL device address, got {ptr!r}")
        if address % 32:  # aclCreateTensor's documented requirement; CANN itself does not check (undefined results)
            raise InvalidValueError("alignment", "ptr", f"must be 32-byte aligned, as aclCreateTensor requires "
                                    f"(wrap the allocation's start and pass offset=), got 0x{address:x}")
        return cls(address, shp, dt, st, int(offset), dev, _extent(shp, st, int(offset)), None, owner)

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

    @property
    def stream(self) -> Stream:
        """The array's own stream: the one its memory was made (or imported) for, where its copies,
        fills and `np.asarray` are queued; the device's package stream when none was given.

        >>> DeviceArray.empty((4,), np.int8, stream=s).stream is s  # doctest: +SKIP
        True
        """
        s = self._stream
        return self.device.stream if s is None or s.closed else s

    @property
    def T(self) -> DeviceArray:
        """The view with the dimensions reversed (`transpose()`), as ``ndarray.T``.

        >>> DeviceArray.zeros((2, 3, 32), np.int8).T.shape  # doctest: +SKIP
        (32, 3, 2)
        """
        return self.transpose()

    def _view(self, shape: tuple[int, ...], strides: tuple[int, ...], offset: int) -> DeviceArray:
        view = DeviceArray(self.ptr, shape, self.dtype, strides, offset, self.device, self.storage, self._block, self)
        view._finalizer = self._finalizer
        view._calls = self._calls
        view._stream = self._stream
        return view

    def __len__(self) -> int:
        """The size of the first dimension, as ``len(ndarray)``.

        >>> len(DeviceArray.zeros((3, 32), np.int8))  # doctest: +SKIP
        3
        """
        if not self.shape:
            raise InvalidDtypeError("len", "array", "len() of a 0-d DeviceArray is undefined (as in NumPy)")
        return self.shape[0]

    def __getitem__(self, key: Any) -> DeviceArray:
        """Basic indexing as in NumPy: ints (negative count from the end), slices with positive steps,
        ``None`` (a new axis of length 1) and ``Ellipsis``; a strided view of the same memory.

        >>> DeviceArray.zeros((4, 8, 32), np.int8)[-1, ::2, None].strides  # doctest: +SKIP
        (64, 0, 1)
        """
        self._check_open()
        keys = key if isinstance(key, tuple) else (key,)
        if sum(k is Ellipsis for k in keys) > 1:
            raise InvalidValueError("index", "index", f"an index can only have a single Ellipsis, got {key!r}")
        used = sum(k is not None and k is not Ellipsis for k in keys)
        if used > self.ndim:
            raise InvalidValueError("index", "index", f"too many indices for a {self.ndim}-d array: {key!r}")
        if Ellipsis in keys:
            i = keys.index(Ellipsis)
            keys = keys[:i] + (slice(None),) * (self.ndim - used) + keys[i + 1 :]
        else:
            keys = keys + (slice(None),) * (self.ndim - used)
        offset, shape, strides, dim = self.offset, [], [], 0
        for k in keys:
            if k is None:
                shape.append(1)
                strides.append(0)  # NumPy's stride for a new axis
                continue
            n, st = self.shape[dim], self.element_strides[dim]
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step < 0:
                    raise InvalidValueError("index", "index", f"step {step} in {k!r} would need a negative stride, "
                                            "which CANN cannot describe; slice with a positive step (reverse on the "
                                            "host after to_numpy())")
                count = len(range(start, stop, step))
                offset += start * st if count else 0
                shape.append(count)
                strides.append(st * step)
            elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
                i = int(k) + n if int(k) < 0 else int(k)
                if not 0 <= i < n:
                    raise InvalidValueError("index", "index", f"{int(k)} is out of range for dimension {dim} of "
                                            f"size {n}")
                offset += i * st
            else:
                raise InvalidValueError("index", "index", f"only ints, slices, None and Ellipsis are supported (basic "
                                        f"indexing), got {k!r}")
            dim += 1
        return self._view(tuple(shape), tuple(strides), offset)

    def transpose(self, *axes: Any) -> DeviceArray:
        """A view with the dimensions permuted (reversed when no axes are given), as ``ndarray.transpose``.

        >>> DeviceArray.zeros((2, 3, 32), np.int8).transpose(0, 2, 1).shape  # doctest: +SKIP
        (2, 32, 3)
        """
        self._check_open()
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = () if axes[0] is None else tuple(axes[0])
        if not axes:
            order = tuple(reversed(range(self.ndim)))
        else:
            try:
                order = tuple(_axis(a, self.ndim) for a in axes)
            except TypeError:
                raise InvalidDtypeError("axes", "axes", f"must be ints, got {axes!r}") from None
            if sorted(order) != list(range(self.ndim)):
                raise InvalidValueError("axes", "axes", f"must be a permutation of the {self.ndim} dimensions, got "
                                        f"{axes!r}")
        return self._view(tuple(self.shape[a] for a in order), tuple(self.element_strides[a] for a in order),
                          self.offset)

    def reshape(self, *shape: Any) -> DeviceArray:
        """A view with a new shape (one dimension may be -1), as ``ndarray.reshape``; a layout that would
        need a copy is refused (``d.copy().reshape(...)`` makes one).

        >>> DeviceArray.zeros((4, 8, 32), np.int8).reshape(-1, 32).shape  # doctest: +SKIP
        (32, 32)
        """
        self._check_open()
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        try:
            dims = [int(_index(d)) for d in shape]
        except TypeError:
            raise InvalidDtypeError("shape", "shape", f"must be ints, got {shape!r}") from None
        new = _infer_shape(dims, self.size, self.shape)
        strides = _reshape_strides(self.shape, self.element_strides, new)
        if strides is None:
            raise InvalidValueError("reshape", "shape", f"{new} cannot view this array of shape {self.shape} with "
                                    f"strides {self.strides} (bytes) without a copy; use d.copy().reshape(...)")
        return self._view(new, strides, self.offset)

    def _device_runs(self, stream: Stream, dst: Any, src: Any, run: int, value: int = 0) -> None:
        """Device-side copies (``src`` addresses) or fills (``src`` None, byte ``value``) of ``run`` bytes at
        each ``dst`` address, queued on ``stream`` when every address is 64-byte aligned (CANN's rule for
        asynchronous copies and fills before 8.5); otherwise done synchronously after waiting for the stream."""
        starts = [int(a) for a in dst]
        sources = None if src is None else [int(a) for a in src]
        aligned = all(a % ALIGN == 0 for a in starts + (sources or []))
        with use_device(self.device.id, stream.context):
            if not aligned:
                _calls.synchronize_stream(stream.handle)
            for i, addr in enumerate(starts):
                if sources is None and aligned:
                    _calls.memset_async(addr, run, value, run, stream.handle)
                elif sources is None:
                    _calls.memset(addr, run, value, run)
                elif aligned:
                    _calls.memcpy_async(addr, run, sources[i], run, D2D, stream.handle)
                else:
                    _calls.memcpy(addr, run, sources[i], run, D2D)

    def copy(self) -> DeviceArray:
        """A new contiguous array with this array's contents, queued on its stream (no host wait when the
        view's runs are 64-byte aligned), as ``ndarray.copy``.

        >>> DeviceArray.from_numpy(np.arange(4, dtype=np.int8))[::2].copy().to_numpy().tolist()  # doctest: +SKIP
        [0, 2]
        """
        self._check_open()
        s = self.stream
        dst = DeviceArray.empty(self.shape, self.dtype, device=self.device, stream=s)
        if self.size:
            with close_on_error(dst):
                self._use_on(s)
                src, run = _transfer.rows(self)
                dst._device_runs(s, dst.data_ptr + np.arange(len(src), dtype=np.int64) * run, src, run)
        return dst

    def fill(self, value: Any) -> None:
        """Set every element to the scalar ``value`` (queued on the array's stream), as ``ndarray.fill``.

        >>> d = DeviceArray.zeros((2, 32), np.int8); d.fill(3); int(d.to_numpy().sum())  # doctest: +SKIP
        192
        """
        self[...] = value

    def __setitem__(self, key: Any, value: Any) -> None:
        """``d[key] = value`` as in NumPy, from a host array or scalar (broadcast, cast like NumPy) or a device
        array of the same dtype and shape; queued on the array's stream. Host data goes through
        `copy_from`'s pinned staging; a scalar whose bytes are all equal (0, -1) through a device memset.

        >>> d = DeviceArray.zeros((4, 32), np.int8); d[1:3] = 7; d[-1, ::2] = np.arange(16)  # doctest: +SKIP
        """
        target = self[key]
        if target.size == 0:
            return
        s = self.stream
        if type(value) is DeviceArray:
            if value.dtype != self.dtype or value.shape != target.shape:
                raise InvalidValueError("value", "value", f"a device array must have shape {target.shape} and dtype "
                                        f"{dtype_name(self.dtype)}, got {value.shape} {dtype_name(value.dtype)}")
            value._check_open("value")
            fences_for(self.device.id).order(s.handle, value.stream.handle)
            src = value if value.is_contiguous else value.copy()
            try:
                target._use_on(s)
                dst, run = _transfer.rows(target)
                target._device_runs(s, dst, src.data_ptr + np.arange(len(dst), dtype=np.int64) * run, run)
            finally:
                if src is not value:
                    src.close()  # back to the stream's cache: only later work on s reuses it
            return
        data = np.empty(target.shape, self.dtype)
        scalar = np.ndim(value) == 0
        try:
            with warnings.catch_warnings():
                # NumPy 1.x only warns (and wraps) where NumPy 2 raises for out-of-range Python integers.
                warnings.simplefilter("error", DeprecationWarning)
                data[...] = value  # NumPy's own assignment rules: broadcasting, casting, overflow errors
        except (TypeError, ValueError, OverflowError, DeprecationWarning) as exc:
            raise InvalidValueError("value", "value", f"cannot be written into a {dtype_name(self.dtype)} view of "
                                    f"shape {target.shape}: {exc}") from None
        pattern = data.flat[0].tobytes() if scalar else b""
        if pattern and pattern == pattern[:1] * len(pattern):
            target._use_on(s)
            dst, run = _transfer.rows(target)
            target._device_runs(s, dst, None, run, pattern[0])
            return
        target.copy_from(data, stream=s)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """Refuse NumPy arithmetic: a device array does not compute on the host.

        >>> np.ones(2) + DeviceArray.zeros((2,), np.int8)  # doctest: +SKIP
        Traceback (most recent call last):
        pyacl_qscatter.errors.InvalidDtypeError: operand: a DeviceArray does not do arithmetic ...
        """
        raise _no_arithmetic(getattr(ufunc, "__name__", str(ufunc)))

    def __dlpack__(self, *, stream: Any = None, max_version: tuple[int, int] | None = None,
                   dl_device: tuple[int, int] | None = None, copy: bool | None = None) -> Any:
        """Export as a DLPack capsule (zero-copy): versioned when ``max_version`` is (1, x) or later, else
        legacy; ``dl_device=(12, id)`` describes it as kDLExtDev (torch_npu's type), default (21, id)
        kDLAscend. ``stream``: the consumer's ``aclrtStream`` handle (int), ``None`` for the device's
        default stream, ``-1`` for no ordering; pending work on this array is ordered before that stream with
        an event, without a host wait. ``np.from_dlpack`` refuses device memory: use `to_numpy`.

        >>> capsule = d.__dlpack__(stream=their_stream_handle, max_version=(1, 0))  # doctest: +SKIP
        """
        from .dlpack import export

        return export(self, stream=stream, max_version=max_version, dl_device=dl_device, copy=copy)

    def __dlpack_device__(self) -> tuple[int, int]:
        """``(21, device_id)``: kDLAscend, DLPack's device type for Ascend NPUs.

        >>> DeviceArray.zeros((2,), np.int8).__dlpack_device__()  # doctest: +SKIP
        (21, 0)
        """
        return (21, self.device.id)

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
        """``np.asarray(d)``: a host copy that waits for the array's own stream only (other streams that used
        its memory are ordered before it on the device); ``copy=False`` is refused.

        >>> np.asarray(DeviceArray.zeros((2,), np.int8)).tolist()  # doctest: +SKIP
        [0, 0]
        """
        if copy is False:
            raise InvalidValueError("copy", "copy", "False is impossible: a device array is always copied to the host")
        self._check_open()
        from .dlpack import order_streams

        s = self.stream
        others = [h for h in ([] if self._block is None else [self._block.stream, *self._block.streams])
                  if is_open_stream(h)]
        order_streams(self.device, others, s.handle)
        host = self.to_numpy(stream=s)
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
        calls = list(self._calls)  # a snapshot that holds every call alive while they close
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
        return (f"DeviceArray(shape={self.shape}, dtype={dtype_name(self.dtype)}, strides={self.strides}, "
                f"offset={self.offset}, device={self.device.id})")


def _device(device: Device | int | None, stream: Stream | None) -> Device:
    if stream is not None:
        if device is not None and Device(device) is not stream.device:
            raise InvalidValueError("device", "device", f"is {Device(device).id} but the stream belongs to device "
                                    f"{stream.device.id}")
        return stream.device
    return Device.current() if device is None else Device(device)


def _index(value: Any) -> int:
    """An int from an int-like (NumPy integers included), TypeError for anything else, bools too."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("bool")
    return operator.index(value)


def _axis(value: Any, ndim: int) -> int:
    a = _index(value)
    if not -ndim <= a < ndim:
        raise InvalidValueError("axes", "axes", f"axis {a} is out of range for a {ndim}-d array")
    return a % ndim


def _infer_shape(dims: list[int], size: int, old: tuple[int, ...]) -> tuple[int, ...]:
    unknown = [i for i, d in enumerate(dims) if d == -1]
    if len(unknown) > 1 or any(d < -1 for d in dims):
        raise InvalidValueError("shape", "shape", f"must be non-negative sizes with at most one -1, got {tuple(dims)}")
    known = math.prod(d for d in dims if d != -1)
    if unknown and known and size % known == 0:
        dims[unknown[0]] = size // known
    if math.prod(dims) != size or (unknown and not known):
        raise InvalidValueError("shape", "shape", f"cannot reshape an array of size {size} (shape {old}) into "
                                f"{tuple(dims)}")
    return tuple(dims)


def _reshape_strides(old: tuple[int, ...], strides: tuple[int, ...], new: tuple[int, ...]) -> tuple[int, ...] | None:
    """Element strides that view the same elements in C order with shape ``new``, or None if that needs a copy.

    Dimensions are matched in groups of equal element count; a group of old dimensions can be re-split only
    when it is itself one dense run (each stride the next one times its size).
    """
    if math.prod(new) == 0:
        return _contiguous_strides(new)
    olds = [(n, s) for n, s in zip(old, strides, strict=True) if n != 1]
    news = [i for i, n in enumerate(new) if n != 1]
    result = [0] * len(new)
    oi = ni = 0
    while oi < len(olds) and ni < len(news):
        oj, nj = oi + 1, ni + 1
        o_count, n_count = olds[oi][0], new[news[ni]]
        while o_count != n_count:
            if o_count < n_count:
                o_count *= olds[oj][0]
                oj += 1
            else:
                n_count *= new[news[nj]]
                nj += 1
        if any(olds[k][1] != olds[k + 1][0] * olds[k + 1][1] for k in range(oi, oj - 1)):
            return None
        stride = olds[oj - 1][1]
        for k in range(nj - 1, ni - 1, -1):
            result[news[k]] = stride
            stride *= new[news[k]]
        oi, ni = oj, nj
    for i, n in enumerate(new):  # a dimension of 1: NumPy's choice, the stride a dense layout would give
        if n == 1:
            result[i] = math.prod(new[i + 1 :]) if i + 1 < len(new) else 1
    return tuple(result)


def _no_arithmetic(operation: str) -> InvalidDtypeError:
    return InvalidDtypeError("arithmetic", "operand", f"a DeviceArray does not do arithmetic ({operation}): bring the "
                             "data to the host with d.to_numpy() or np.asarray(d), compute there, and write results "
                             "back with d[...] = host_array")


def _refuse(name: str) -> Any:
    def operator_method(self: DeviceArray, *other: Any) -> Any:
        raise _no_arithmetic(name)

    operator_method.__name__ = operator_method.__qualname__ = name
    operator_method.__doc__ = f"Refused: a DeviceArray does not do arithmetic ({name})."
    return operator_method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift",
              "rshift", "divmod"):
    for _dunder in (f"__{_name}__", f"__r{_name}__", f"__i{_name}__"):
        if _dunder != "__idivmod__":
            setattr(DeviceArray, _dunder, _refuse(_dunder))
for _dunder in ("__neg__", "__pos__", "__abs__", "__invert__", "__lt__", "__le__", "__gt__", "__ge__"):
    setattr(DeviceArray, _dunder, _refuse(_dunder))
