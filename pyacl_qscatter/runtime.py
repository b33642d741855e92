"""Process-wide CANN runtime: lazy aclInit, devices, streams and events, the caller's context, device faults,
fork, and teardown in the right order.

The first device use loads CANN and calls aclInit, once, under a lock. At interpreter exit every resource
the package still owns is released (device arrays and cached blocks, then events, then streams), then the
devices are reset and, last, the package gives back its aclInit: ``aclFinalizeReference`` once for every
aclInit it made (CANN >= 8.5), else ``aclFinalize`` only when the package's own aclInit was the first one in
the process (returned 0). A child made by ``fork`` after the parent used the device can use nothing and
releases nothing (ACL does not support use after fork).

The package is a guest on the caller's thread: `use_device` makes the device's context current for the
package's own calls and puts the caller's context back afterwards.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from . import _calls, _loader, errors
from ._ffi._cann import ffi as _ffi
from .contract import Product, resolve_product
from .errors import (
    CannError,
    DeviceFaultError,
    ForkedProcessError,
    InvalidDtypeError,
    InvalidValueError,
    cann_error,
)

__all__ = ["Device", "Event", "Stream", "as_address", "ensure_runtime", "use_device"]

ACL_ERROR_REPEAT_INITIALIZE = 100002
ACL_ERROR_RT_CONTEXT_NULL = 107002
ACL_EVENT_SYNC = 0x1
ACL_EVENT_TIME_LINE = 0x8

_lock = threading.RLock()
_tls = threading.local()
_initialised = False
_init_calls = 0  # aclInit calls this package made: each counts in ACL, a repeated one (100002) too (acl.cpp)
_init_owned = False  # the package's aclInit returned 0: it started ACL in this process
_device_sets: list[int] = []  # one entry per aclrtSetDevice we made, each paired with a reset at exit
# device id -> its default context, from the package's one aclrtSetDevice on it; other threads make it
# current with aclrtSetCurrentContext (CANN's way to share a context between threads).
_contexts: dict[int, int] = {}
# Live owned resources, in teardown order: executors, arrays and their descriptors, the allocators' caches,
# events, streams. Each entry is (finalizer, release, args); the entry is removed when release runs.
_Entry = tuple["weakref.finalize[Any, Any]", Callable[..., None], tuple[Any, ...]]
_live: tuple[dict[int, _Entry], ...] = ({}, {}, {}, {}, {})
_keys = itertools.count()
_open_streams: dict[int, int] = {}  # stream handle -> open Stream objects wrapping it
_forked_from: int | None = None  # the parent's pid once this process is a fork of one that used ACL
_stopped: dict[int, DeviceFaultError] = {}  # device id -> the fault that stopped it, until Device.reset()
_blocked = False  # True while _forked_from or _stopped is set: the one flag the hot path tests
_resetting: set[int] = set()  # devices inside Device.reset(): the refusals of their releases stop nothing


def is_open_stream(handle: int) -> bool:
    """True while some open `Stream` wraps ``handle`` (a closed one has no queued work left of ours).

    >>> is_open_stream(0)
    False
    """
    return _open_streams.get(handle, 0) > 0


def _open_stream(handle: int, delta: int) -> None:
    with _lock:
        count = _open_streams.get(handle, 0) + delta
        if count > 0:
            _open_streams[handle] = count
        else:
            _open_streams.pop(handle, None)
EXECUTORS, ARRAYS, CACHES, EVENTS, STREAMS = 0, 1, 2, 3, 4


def as_address(value: object, param: str) -> int:
    """A pointer or handle given as an ``int``, a NumPy integer, ``ctypes.c_void_p``, a cffi pointer or any
    object with ``__int__``, as a non-negative Python int (0 is NULL); ``param`` names it in the error.

    >>> import ctypes, numpy as np
    >>> as_address(np.uint64(4096), "ptr"), as_address(ctypes.c_void_p(64), "ptr"), as_address(None, "ptr")
    (4096, 64, 0)
    >>> as_address("0x10", "ptr")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyacl_qscatter.errors.InvalidDtypeError: ptr: must be an address (int, NumPy integer, ..., got str
    """
    if value is None:
        return 0
    if isinstance(value, (bool, str, bytes, float)):
        raise InvalidDtypeError(param, param, "must be an address (int, NumPy integer, ctypes.c_void_p, cffi "
                                f"pointer or an object with __int__), got {type(value).__name__}")
    if isinstance(value, _ffi.CData):
        return int(_ffi.cast("uintptr_t", value))
    if hasattr(value, "value") and type(value).__module__ == "ctypes":  # c_void_p and friends: .value
        inner = value.value
        return 0 if inner is None else as_address(inner, param)
    try:
        address: int = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        raise InvalidDtypeError(param, param, "must be an address (int, NumPy integer, ctypes.c_void_p, cffi "
                                f"pointer or an object with __int__), got {type(value).__name__}") from None
    if address < 0:
        raise InvalidValueError(param, param, f"must be a non-negative address, got {address}")
    return address


def _check_usable(device_id: int) -> None:
    """Raise at once when this process may not use ``device_id``: a fork child, or a stopped device."""
    if _forked_from is not None:
        raise ForkedProcessError(
            f"device {device_id}: this process (pid {os.getpid()}) was forked from pid {_forked_from} after that "
            "process had initialised CANN, and ACL does not support use after fork; use the device in the "
            "parent only, or start workers with multiprocessing's 'spawn' or 'forkserver' method")
    fault = _stopped.get(device_id)
    if fault is not None:
        raise DeviceFaultError(f"device {device_id} (stopped since {fault.function} failed)", fault.code,
                               f"nothing was queued. The earlier fault: {fault.cann_message or 'no message'}",
                               sticky=True)


# A kernel fault is reported by the call that waits for the work (and then cleared, in CANN's default mode).
# The same code from any other call means the device has stopped (stop-on-failure mode).
_REPORTING = frozenset({
    "aclrtSynchronizeStream", "aclrtSynchronizeStreamWithTimeout", "aclrtSynchronizeDevice",
    "aclrtSynchronizeEvent", "aclrtStreamQuery", "aclrtQueryEventStatus", "aclrtDestroyStream",
})


def _note_fault(exc: DeviceFaultError) -> None:
    """errors.cann_error's hook: a sticky fault stops the device this thread was working on."""
    global _blocked
    if not exc.sticky and exc.function in _REPORTING:
        return
    if not exc.sticky:
        exc.sticky = True
        exc.args = (exc._format(),)
    device_id = getattr(_tls, "active", None)
    if device_id is not None and device_id not in _resetting:
        with _lock:
            _stopped.setdefault(device_id, exc)
            _blocked = True


errors.fault_hook = _note_fault


def _after_fork_in_child() -> None:
    """Forget the parent's CANN state: nothing here may be used, and nothing is released at exit."""
    global _lock, _forked_from, _blocked
    _lock = threading.RLock()  # another thread of the parent may have held it at the fork
    if not _initialised:
        return  # the parent never started ACL: the child may
    _forked_from = os.getppid()
    _blocked = True
    for group in _live:
        group.clear()  # the finalizers stay alive (objects still look open) but release nothing here
    _device_sets.clear()
    _contexts.clear()
    _open_streams.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def ensure_runtime() -> _loader.Cann:
    """Load CANN and call aclInit once per process (thread-safe); return the loaded toolkit.

    >>> ensure_runtime().caps  # doctest: +SKIP
    Caps(v2=False, ...)
    """
    global _initialised, _init_calls, _init_owned
    cann = _calls.bound()
    if _initialised and cann is not None and _forked_from is None:
        return cann
    with _lock:
        if _forked_from is not None:
            _check_usable(0)
        cann = _calls.bind()
        if not _initialised:
            try:
                _calls.init(None)
                _init_owned = True
            except CannError as exc:  # another runtime in this process initialised ACL: share it
                if exc.code != ACL_ERROR_REPEAT_INITIALIZE:
                    raise
            _init_calls += 1  # a repeated aclInit (100002) still counts in ACL: hicann/runtime acl.cpp aclInitImpl
            # weakref.finalize registers its own exit hook with its first instance; making sure it exists
            # now puts it before ours, so that ours runs first (atexit is LIFO) and finalizers left for that
            # hook find the package's resources already released, instead of releasing them out of order.
            weakref.finalize(_teardown, _nothing)
            atexit.register(_teardown)
            _initialised = True
        return cann


def _nothing() -> None:
    """The callback of the finalizer that only places weakref's exit hook (see `ensure_runtime`)."""


def track(kind: int, obj: object, release: Callable[..., None], *args: Any) -> weakref.finalize[Any, Any]:
    """Register ``release(*args)`` to run once: when ``obj`` is collected, closed, or at exit (``kind`` order).

    >>> fin = track(STREAMS, stream_object, _calls.destroy_stream, handle)  # doctest: +SKIP
    """
    key = next(_keys)
    fin = weakref.finalize(obj, _run_release, kind, key)
    fin.atexit = False  # our own teardown runs them, in order, before the runtime goes away
    _live[kind][key] = (fin, release, args)
    return fin


def _run_release(kind: int, key: int) -> None:
    entry = _live[kind].pop(key, None)
    if entry is not None:
        entry[1](*entry[2])


def _teardown() -> None:
    global _initialised, _init_calls, _init_owned
    if _forked_from is not None:
        return  # a fork child owns none of what it inherited
    with _lock:
        # The releases are called here directly, not through their finalizers: weakref.finalize's own exit
        # hook makes every finalizer a no-op once it has run, and it runs first when it was registered after
        # this function (the first finalizer of the process is often created after aclInit).
        for group in _live:
            for key in list(group):
                entry = group.pop(key, None)
                if entry is None:
                    continue
                fin, release, args = entry
                fin.detach()
                with contextlib.suppress(CannError):  # exiting: keep releasing the rest, nobody to report to
                    release(*args)
        while _device_sets:
            device_id = _device_sets.pop()
            _contexts.pop(device_id, None)
            try:
                _calls.reset_device(device_id)
            except CannError:
                break
        _finalize_acl()
        _initialised = False


def _finalize_acl() -> None:
    """Give back the package's aclInit calls without ending ACL for another runtime in this process.

    aclFinalize resets ACL's init count to zero whoever else counts on it (acl.cpp aclFinalizeInternal), so
    it runs only where aclFinalizeReference is missing and the package's aclInit was the first in the
    process; aclFinalizeReference gives back one count per aclInit, whatever that aclInit returned.
    """
    global _init_calls, _init_owned
    cann = _calls.bound()
    calls, _init_calls = _init_calls, 0
    owned, _init_owned = _init_owned, False
    if cann is None:
        return
    if cann.caps.finalize_reference:
        for _ in range(calls):
            with contextlib.suppress(CannError):  # exiting: nobody to report to
                _calls.finalize_reference()
    elif owned:
        with contextlib.suppress(CannError):  # exiting: nobody to report to
            _calls.finalize()


def _current_context() -> int:
    """The thread's current context, 0 when it has none."""
    try:
        return _calls.get_current_context()
    except CannError as exc:
        if exc.code != ACL_ERROR_RT_CONTEXT_NULL:
            raise
        return 0


def _switch(device_id: int, context: int | None = None) -> int:
    """Make ``context`` (default: ``device_id``'s context for the package) current on this thread; return
    the context that was current before when it changed, else 0.

    The first use of a device in the process is aclrtSetDevice (paired with one reset at exit); every other
    switch is aclrtSetCurrentContext, since CANN counts aclrtSetDevice calls. The current context is asked
    for every time (one call), never cached: a foreign runtime may have changed it since our last call.
    """
    if _blocked:
        _check_usable(device_id)
    _tls.active = device_id  # the device a fault reported on this thread belongs to (_note_fault)
    if context is None:
        context = _contexts.get(device_id)
        if context is None:
            return _set_device(device_id)
    current = _current_context()
    if current == context:
        return 0
    _calls.set_current_context(context)
    return current


def _set_device(device_id: int) -> int:
    ensure_runtime()
    with _lock:
        current = _current_context()
        context = _contexts.get(device_id)
        if context is not None:  # another thread got there first
            _calls.set_current_context(context)
            return current
        _calls.set_device(device_id)
        _device_sets.append(device_id)
        _contexts[device_id] = _calls.get_current_context()
        return current


class use_device:  # lower case: used like a function, ``with use_device(0): ...``
    """Run the package's calls in ``device_id``'s context (or the given ``context``, e.g. a wrapped stream's)
    and leave the caller's thread as it found it.

    On entry it asks CANN for the thread's current context (one call) and switches only when that is not
    the wanted one; on exit it makes the caller's context current again if it switched (when the thread
    had no context before, the package's stays: CANN cannot make "none" current). Nesting costs one query
    per level and restores once. A device stopped by a fault, or a fork child, raises on entry, before
    any work is queued. One instance serves one ``with`` at a time.

    >>> with use_device(0):  # doctest: +SKIP
    ...     _calls.synchronize_stream(handle)
    """

    __slots__ = ("context", "device_id", "previous")

    def __init__(self, device_id: int, context: int | None = None) -> None:
        self.device_id = device_id
        self.context = context
        self.previous = 0

    def __enter__(self) -> use_device:
        self.previous = _switch(self.device_id, self.context)
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        previous, self.previous = self.previous, 0
        if not previous:
            return
        try:
            _calls.set_current_context(previous)
        except CannError as failure:
            if exc is None:
                raise
            exc.add_note(f"Restoring the caller's context afterwards failed too: {failure}")


def _device_of(obj: object) -> int | None:
    device = getattr(obj, "device", None)
    if isinstance(device, Device):
        return device.id
    stream = getattr(obj, "stream", None)
    if isinstance(stream, Stream):
        return stream.device.id
    device_id = getattr(obj, "device_id", None)
    return device_id if isinstance(device_id, int) else None


def call_each(release: Callable[[Any], object], items: Iterable[Any]) -> None:
    """``release(item)`` for every item even if one fails (a CANN refusal); then raise the first failure.
    Releasing the rest matters more than stopping at the first object CANN would not let go.

    >>> call_each(print, [1, 2])
    1
    2
    """
    failure: CannError | None = None
    for item in items:
        try:
            release(item)
        except CannError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def close_all(items: Iterable[Any]) -> None:
    """``close()`` every item, see `call_each`.

    >>> close_all([])
    """
    call_each(lambda item: item.close(), items)


class Device:
    """One Ascend device of this process (one object per id): the factory for streams and memory.

    >>> dev = Device(0)        # doctest: +SKIP
    >>> dev.soc_name, dev.product.name  # doctest: +SKIP
    ('Ascend910B1', 'A2')
    """

    _instances: ClassVar[dict[int, Device]] = {}

    id: int
    _stream: Stream | None
    _soc: str | None

    def __new__(cls, device_id: Device | int = 0) -> Device:
        if isinstance(device_id, Device):
            return device_id
        if isinstance(device_id, bool) or not isinstance(device_id, int):
            raise InvalidValueError("device", "device", f"must be an int device id, got {device_id!r}")
        with _lock:
            dev = cls._instances.get(device_id)
            if dev is None:
                count = Device.count()
                if not 0 <= device_id < count:
                    raise InvalidValueError("device", "device", f"must be in [0, {count}) (devices visible), "
                                            f"got {device_id}")
                dev = super().__new__(cls)
                dev.id, dev._stream, dev._soc = device_id, None, None
                cls._instances[device_id] = dev
            return dev

    @staticmethod
    def count() -> int:
        """Number of visible devices (loads CANN on first use).

        >>> Device.count() >= 0  # doctest: +SKIP
        True
        """
        ensure_runtime()
        return _calls.get_device_count()

    @staticmethod
    def current() -> Device:
        """This thread's current device (device 0 until another is activated).

        >>> Device.current().id  # doctest: +SKIP
        0
        """
        return Device(getattr(_tls, "chosen", None) or 0)

    def activate(self) -> Device:
        """Choose this device for the calling thread (where calls that name no device go); return it.

        >>> Device(0).activate().id  # doctest: +SKIP
        0
        """
        with use_device(self.id):  # sets the device up on this thread; the caller's context stays current
            _tls.chosen = self.id
        return self

    def __enter__(self) -> Device:
        previous = getattr(_tls, "chosen", None)
        self.activate()
        stack: list[int | None] = _tls.__dict__.setdefault("stack", [])
        stack.append(previous)
        return self

    def __exit__(self, *exc: object) -> None:
        previous = _tls.stack.pop()
        _tls.chosen = previous

    def reset(self) -> None:
        """Reset the device (``aclrtResetDevice``), e.g. after a `DeviceFaultError` that stopped it.

        First every array, view, stream, event and prepared call the package made on this device is
        closed: its memory is gone (using one raises the closed error; copy to the host first what you still
        need, if the device still answers). Streams wrapped with `Stream.from_handle` are forgotten, not
        destroyed. The device's cached blocks, pinned staging buffers and events are given back without
        waiting (a stopped device runs no more queued work). CANN may refuse some releases on a stopped
        device; the reset reclaims those. Then ``aclrtResetDevice`` for the package's ``aclrtSetDevice``;
        afterwards the device takes work again and the fault is forgotten.

        >>> Device(0).reset()  # doctest: +SKIP
        """
        global _blocked
        with _lock:
            _resetting.add(self.id)  # first: a finalizer may run (and be refused) at any allocation from here
            try:
                _stopped.pop(self.id, None)
                self._release_all()
                while self.id in _device_sets:
                    _device_sets.remove(self.id)
                    _calls.reset_device(self.id)
                _contexts.pop(self.id, None)
            finally:
                _resetting.discard(self.id)
                _blocked = bool(_stopped) or _forked_from is not None

    def _release_all(self) -> None:
        from . import _fences, memory, pinned

        for kind, group in enumerate(_live):
            for fin, _release, _args in list(group.values()):
                target = fin.peek()
                if kind == CACHES or target is None or _device_of(target[0]) != self.id:
                    continue
                close = getattr(target[0], "close", None)
                with contextlib.suppress(CannError):  # a stopped device may refuse: the reset reclaims it
                    close() if callable(close) else fin()
        # The device's caches (fences, pinned staging, device blocks) give everything back without
        # waiting (a stopped device runs no more queued work), then start afresh.
        for registry in (_fences._pools, pinned._pools, memory._allocators):
            cache = registry.get(self.id)
            if cache is not None:
                with contextlib.suppress(CannError):
                    cache.abandon()
                registry.pop(self.id, None)
        for key, (fin, _release, _args) in list(_live[CACHES].items()):
            target = fin.peek()
            if target is not None and _device_of(target[0]) == self.id:
                fin.detach()  # abandoned above: nothing is left for their release at exit
                _live[CACHES].pop(key, None)
        self._stream = None

    @property
    def soc_name(self) -> str:
        """The SoC name CANN reports (``aclrtGetSocName``), or "" when the toolkit lacks the call or the query
        failed (a failed query is asked again next time, so one failure does not fix the product's rules for
        the rest of the process).

        >>> Device(0).soc_name  # doctest: +SKIP
        'Ascend910B1'
        """
        if self._soc is None:
            try:
                with use_device(self.id):
                    name = _calls.get_soc_name()
            except CannError as exc:
                if exc.code != _calls.ACL_ERROR_API_NOT_SUPPORT:
                    raise
                name = ""  # a toolkit without aclrtGetSocName: the A2 rules, for good
            if name is None:  # CANN returned NULL; its message must not stick to this thread's next failure
                _calls.recent_error_message()
                return ""
            self._soc = name
        return self._soc

    @property
    def product(self) -> Product:
        """The product family whose rules apply on this device (A2 rules for an unknown SoC).

        >>> Device(0).product.name  # doctest: +SKIP
        'A2'
        """
        return resolve_product(self.soc_name or None)

    def mem_info(self) -> tuple[int, int]:
        """(free, total) bytes of device memory (HBM).

        >>> free, total = Device(0).mem_info()  # doctest: +SKIP
        """
        with use_device(self.id):
            return _calls.get_mem_info(1)

    def synchronize(self) -> None:
        """Wait for all work queued on this device.

        >>> Device(0).synchronize()  # doctest: +SKIP
        """
        from . import _fences

        before = _fences.mark()
        with use_device(self.id):
            _calls.synchronize_device()
        _fences.waited(self.id, None, before)  # the package's pinned staging behind them is free again

    @property
    def stream(self) -> Stream:
        """The package's own stream on this device, used when a call names none (made again if closed).

        >>> Device(0).stream.synchronize()  # doctest: +SKIP
        """
        stream = self._stream
        if stream is None or stream.closed:
            with _lock:
                if self._stream is None or self._stream.closed:
                    self._stream = Stream(self)
                stream = self._stream
        return stream

    def __repr__(self) -> str:
        return f"Device({self.id})"


def _destroy_stream(handle: int, device_id: int) -> None:
    from .memory import allocator_for

    with use_device(device_id):  # one switch for all of it: the allocator's frees run in the same context
        try:
            _calls.synchronize_stream(handle)
        finally:
            try:
                allocator_for(device_id).drop_stream(handle)
            finally:
                try:
                    _calls.destroy_stream(handle)
                finally:
                    _open_stream(handle, -1)


def _forget_stream(handle: int, device_id: int, context: int | None) -> None:
    """The last step of a wrapped stream: once no wrapper is left, free the blocks cached for it."""
    _open_stream(handle, -1)
    if not is_open_stream(handle):
        from .memory import allocator_for

        alloc = allocator_for(device_id)
        if alloc.holds_stream(handle):
            with use_device(device_id, context):
                _calls.synchronize_stream(handle)  # its owner's work may still use them
            alloc.drop_stream(handle)


class Stream:
    """A CANN stream: work queued on it runs in order. Owned streams are destroyed by `close()`;
    `from_handle` wraps a stream another runtime owns and never destroys it.

    >>> with Stream() as s:  # doctest: +SKIP
    ...     s.synchronize()
    """

    def __init__(self, device: Device | int | None = None) -> None:
        dev = Device.current() if device is None else Device(device)
        with use_device(dev.id):
            self.handle = _calls.create_stream()
        self.device = dev
        self.context: int | None = None  # the device's context for the package
        self.owned = True
        self._closed = False
        self._owner: object = None
        self._calls: weakref.WeakSet[Any] = weakref.WeakSet()  # prepared calls queued on this stream
        _open_stream(self.handle, +1)
        self._finalizer: weakref.finalize[Any, Any] | None = track(STREAMS, self, _destroy_stream, self.handle,
                                                                   dev.id)

    @classmethod
    def from_handle(cls, handle: object, *, device: Device | int | None = None, owner: object = None,
                    context: object = None) -> Stream:
        """Wrap an ``aclrtStream`` owned elsewhere; ``owner`` is kept alive meanwhile. Handles are ints, NumPy
        integers, ``ctypes.c_void_p``, cffi pointers or objects with ``__int__`` (`as_address`).

        ACL cannot tell a stream's context, and work on a stream of a context that is not current fails
        (107003), so the stream's work runs in ``context`` (an ``aclrtContext``), by default the context
        current on the calling thread now; the caller's context is put back after each call. ``device``
        defaults to the device of that context (else `Device.current`).

        >>> s = Stream.from_handle(other_runtime_stream_ptr, owner=other_runtime)  # doctest: +SKIP
        """
        address = as_address(handle, "handle")
        ctx = as_address(context, "context") if context is not None else 0
        if context is None and device is None:
            ensure_runtime()
            ctx = _current_context()
        if device is None and ctx:
            with use_device(0, ctx):
                device = _calls.get_device()
        self = cls.__new__(cls)
        self.device = Device.current() if device is None else Device(device)
        self.context = ctx or None
        self.handle = address
        self.owned = False
        self._closed = False
        self._owner = owner
        self._calls = weakref.WeakSet()
        _open_stream(self.handle, +1)
        self._finalizer = track(STREAMS, self, _forget_stream, self.handle, self.device.id,
                                self.context)  # never destroyed here
        return self

    def synchronize(self, timeout_ms: int | None = None) -> None:
        """Wait until everything queued on this stream has run (optionally at most ``timeout_ms``).

        >>> Stream().synchronize()  # doctest: +SKIP
        """
        from . import _fences

        before = _fences.mark()
        with use_device(self.device.id, self.context):
            if timeout_ms is None:
                _calls.synchronize_stream(self.handle)
            else:
                _calls.synchronize_stream_with_timeout(self.handle, int(timeout_ms))
        _fences.waited(self.device.id, self.handle, before)  # the package's pinned staging behind them is free

    def wait(self, event: Event) -> Stream:
        """Make work queued on this stream from now on wait, on the device, for the work before ``event``'s
        last `record` (``aclrtStreamWaitEvent``; the host does not wait). Where the toolkit lacks that call,
        the host waits for the event instead. ``event`` must be made with ``sync=True`` (the default).
        Returns self.

        >>> s2.wait(Event().record(s1))  # doctest: +SKIP
        """
        if not event.sync:
            raise InvalidValueError("event", "event", "was made with sync=False (a timing-only event): a stream "
                                    "can wait only on events made with ACL_EVENT_SYNC, Event(sync=True)")
        if event.device is not self.device:
            raise InvalidValueError("event", "event", f"belongs to device {event.device.id}, the stream to device "
                                    f"{self.device.id}")
        with use_device(self.device.id, self.context):
            if ensure_runtime().caps.stream_wait_event:
                _calls.stream_wait_event(self.handle, event.handle)
            else:
                _calls.synchronize_event(event.handle)
        return self

    def query(self) -> bool:
        """True when everything queued on this stream has run (``aclrtStreamQuery``; never waits).

        >>> Stream().query()  # doctest: +SKIP
        True
        """
        if not ensure_runtime().caps.stream_query:
            raise cann_error("aclrtStreamQuery", _calls.ACL_ERROR_API_NOT_SUPPORT,
                             "this CANN toolkit does not export aclrtStreamQuery")
        with use_device(self.device.id, self.context):
            return _calls.stream_query(self.handle)

    def close(self) -> None:
        """Release the prepared calls on this stream, then synchronise and destroy an owned stream
        (idempotent); a wrapped stream is only forgotten.

        >>> Stream().close()  # doctest: +SKIP
        """
        if self._closed:
            return
        self._closed = True
        calls, self._calls = list(self._calls), weakref.WeakSet()
        try:
            close_all(calls)  # their executors go while the stream they were queued on still exists
        finally:
            if self._finalizer is not None:
                fin, self._finalizer = self._finalizer, None
                fin()
            self._owner = None

    @property
    def closed(self) -> bool:
        """True once `close()` has run.

        >>> Stream().closed  # doctest: +SKIP
        False
        """
        return self._closed

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Stream(handle=0x{self.handle:x}, device={self.device.id}, owned={self.owned})"


def _destroy_event(handle: int, device_id: int) -> None:
    with use_device(device_id):
        _calls.destroy_event(handle)


class Event:
    """A CANN event: record it on a stream, wait for it (from the host, or from another stream with
    `Stream.wait`), query it, time the work between two events. ``timing`` adds ``ACL_EVENT_TIME_LINE``;
    ``sync`` (default) adds ``ACL_EVENT_SYNC``, without which CANN refuses a stream's wait on it.

    >>> start, end = Event(), Event()  # doctest: +SKIP
    >>> start.record(s); end.record(s); end.synchronize(); start.elapsed_ms(end)  # doctest: +SKIP
    0.012
    """

    def __init__(self, device: Device | int | None = None, *, timing: bool = True, sync: bool = True) -> None:
        dev = Device.current() if device is None else Device(device)
        cann = ensure_runtime()
        self.device = dev
        # CANN: a stream can wait only on an event made with ACL_EVENT_SYNC; ACL_EVENT_TIME_LINE lets it be timed.
        flags = (ACL_EVENT_SYNC if sync else 0) | (ACL_EVENT_TIME_LINE if timing else 0)
        self.sync = sync  # a plain aclrtCreateEvent event can be waited on too (CANN's documentation)
        with use_device(dev.id):
            if flags and cann.caps.event_with_flag:
                self.handle = _calls.create_event_with_flag(flags)
            else:
                self.handle = _calls.create_event()
        self._finalizer: weakref.finalize[Any, Any] | None = track(EVENTS, self, _destroy_event, self.handle, dev.id)

    def record(self, stream: Stream | None = None) -> Event:
        """Queue this event on ``stream`` (default: the device's package stream); return self.

        >>> done = Event().record(stream)  # doctest: +SKIP
        """
        s = self.device.stream if stream is None else stream
        with use_device(self.device.id, s.context):
            _calls.record_event(self.handle, s.handle)
        return self

    def synchronize(self) -> None:
        """Wait until the work queued before the last `record` has run.

        >>> Event().record(stream).synchronize()  # doctest: +SKIP
        """
        with use_device(self.device.id):
            _calls.synchronize_event(self.handle)

    def query(self) -> bool:
        """True when the work queued before the last `record` has run (``aclrtQueryEventStatus``; never
        waits).

        >>> Event().record(stream).query()  # doctest: +SKIP
        False
        """
        if not ensure_runtime().caps.event_query:
            raise cann_error("aclrtQueryEventStatus", _calls.ACL_ERROR_API_NOT_SUPPORT,
                             "this CANN toolkit does not export aclrtQueryEventStatus")
        with use_device(self.device.id):
            return _calls.query_event_status(self.handle)

    def elapsed_ms(self, end: Event) -> float:
        """Milliseconds between this event and ``end`` (both recorded and completed).

        >>> start.elapsed_ms(end)  # doctest: +SKIP
        0.25
        """
        return _calls.event_elapsed_time(self.handle, end.handle)

    def close(self) -> None:
        """Destroy the event (idempotent).

        >>> Event().close()  # doctest: +SKIP
        """
        if self._finalizer is not None:
            fin, self._finalizer = self._finalizer, None
            fin()

    def __enter__(self) -> Event:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
