"""Process-wide CANN runtime: lazy aclInit, devices, streams and events, and teardown in the right order.

The first device use loads CANN and calls aclInit, once, under a lock. At interpreter exit every resource
the package still owns is released (device arrays and cached blocks, then events, then streams), then the
devices are reset and, last, aclFinalize runs (only when this package initialised ACL).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from . import _calls, _loader
from .contract import Product, resolve_product
from .errors import CannError, InvalidValueError, cann_error

__all__ = ["Device", "Event", "Stream", "ensure_runtime"]

ACL_ERROR_REPEAT_INITIALIZE = 100002
ACL_EVENT_SYNC = 0x1
ACL_EVENT_TIME_LINE = 0x8

_lock = threading.RLock()
_tls = threading.local()
_initialised = False
_we_called_init = False
_device_sets: list[int] = []  # one entry per aclrtSetDevice we made, each paired with a reset at exit
# Live owned resources, in teardown order: executors, arrays and their descriptors, the allocators' caches,
# events, streams. Each entry is (finalizer, release, args); the entry is removed when release runs.
_Entry = tuple["weakref.finalize[Any, Any]", Callable[..., None], tuple[Any, ...]]
_live: tuple[dict[int, _Entry], ...] = ({}, {}, {}, {}, {})
_keys = itertools.count()
_open_streams: dict[int, int] = {}  # stream handle -> open Stream objects wrapping it


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


def ensure_runtime() -> _loader.Cann:
    """Load CANN and call aclInit once per process (thread-safe); return the loaded toolkit.

    >>> ensure_runtime().caps  # doctest: +SKIP
    Caps(v2=False, ...)
    """
    global _initialised, _we_called_init
    cann = _calls.bound()
    if _initialised and cann is not None:
        return cann
    with _lock:
        cann = _calls.bind()
        if not _initialised:
            try:
                _calls.init(None)
                _we_called_init = True
            except CannError as exc:  # another runtime in this process initialised ACL: share it
                if exc.code != ACL_ERROR_REPEAT_INITIALIZE:
                    raise
            atexit.register(_teardown)
            _initialised = True
        return cann


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
    global _initialised
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
            try:
                _calls.reset_device(device_id)
            except CannError:
                break
        if _we_called_init:
            with contextlib.suppress(CannError):  # exiting: nobody to report to
                _calls.finalize()
        _initialised = False


def _activate(device_id: int) -> None:
    """Make ``device_id``'s context current on this thread, for the package's own calls.

    The first time on a thread this is aclrtSetDevice (paired with one reset at exit); later switches go
    through aclrtSetCurrentContext, since CANN counts aclrtSetDevice calls. The device a user chose (see
    `Device.current`) is kept apart, so internal switches never change where their next array goes.
    """
    if getattr(_tls, "current", None) == device_id:
        return
    ensure_runtime()
    contexts: dict[int, int] = _tls.__dict__.setdefault("contexts", {})
    context = contexts.get(device_id)
    if context is None:
        _calls.set_device(device_id)
        contexts[device_id] = _calls.get_current_context()
        with _lock:
            _device_sets.append(device_id)
    else:
        _calls.set_current_context(context)
    _tls.current = device_id


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
        _activate(self.id)
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
        if previous is not None and previous != self.id:
            _activate(previous)

    @property
    def soc_name(self) -> str:
        """The SoC name CANN reports (``aclrtGetSocName``), or "" when the toolkit lacks the call or the query
        failed (a failed query is asked again next time, so one failure does not fix the product's rules for
        the rest of the process).

        >>> Device(0).soc_name  # doctest: +SKIP
        'Ascend910B1'
        """
        if self._soc is None:
            _activate(self.id)
            try:
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
        _activate(self.id)
        return _calls.get_mem_info(1)

    def synchronize(self) -> None:
        """Wait for all work queued on this device.

        >>> Device(0).synchronize()  # doctest: +SKIP
        """
        _activate(self.id)
        _calls.synchronize_device()

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

    _activate(device_id)
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


def _forget_stream(handle: int, device_id: int) -> None:
    """The last step of a wrapped stream: once no wrapper is left, free the blocks cached for it."""
    _open_stream(handle, -1)
    if not is_open_stream(handle):
        from .memory import allocator_for

        alloc = allocator_for(device_id)
        if alloc.holds_stream(handle):
            _activate(device_id)
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
        _activate(dev.id)
        self.device = dev
        self.handle = _calls.create_stream()
        self.owned = True
        self._closed = False
        self._owner: object = None
        self._calls: weakref.WeakSet[Any] = weakref.WeakSet()  # prepared calls queued on this stream
        _open_stream(self.handle, +1)
        self._finalizer: weakref.finalize[Any, Any] | None = track(STREAMS, self, _destroy_stream, self.handle,
                                                                   dev.id)

    @classmethod
    def from_handle(cls, handle: int, *, device: Device | int | None = None, owner: object = None) -> Stream:
        """Wrap an ``aclrtStream`` owned elsewhere (an int address); ``owner`` is kept alive meanwhile.

        >>> s = Stream.from_handle(other_runtime_stream_ptr, owner=other_runtime)  # doctest: +SKIP
        """
        self = cls.__new__(cls)
        self.device = Device.current() if device is None else Device(device)
        self.handle = int(handle)
        self.owned = False
        self._closed = False
        self._owner = owner
        self._calls = weakref.WeakSet()
        _open_stream(self.handle, +1)
        self._finalizer = track(STREAMS, self, _forget_stream, self.handle, self.device.id)  # never destroyed here
        return self

    def synchronize(self, timeout_ms: int | None = None) -> None:
        """Wait until everything queued on this stream has run (optionally at most ``timeout_ms``).

        >>> Stream().synchronize()  # doctest: +SKIP
        """
        _activate(self.device.id)
        if timeout_ms is None:
            _calls.synchronize_stream(self.handle)
        else:
            _calls.synchronize_stream_with_timeout(self.handle, int(timeout_ms))

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
        _activate(self.device.id)
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
        _activate(self.device.id)
        if not ensure_runtime().caps.stream_query:
            raise cann_error("aclrtStreamQuery", _calls.ACL_ERROR_API_NOT_SUPPORT,
                            "this CANN toolkit does not export aclrtStreamQuery")
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
    _activate(device_id)
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
        _activate(dev.id)
        cann = ensure_runtime()
        self.device = dev
        # CANN: a stream can wait only on an event made with ACL_EVENT_SYNC; ACL_EVENT_TIME_LINE lets it be timed.
        flags = (ACL_EVENT_SYNC if sync else 0) | (ACL_EVENT_TIME_LINE if timing else 0)
        self.sync = sync  # a plain aclrtCreateEvent event can be waited on too (CANN's documentation)
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
        _activate(self.device.id)
        _calls.record_event(self.handle, s.handle)
        return self

    def synchronize(self) -> None:
        """Wait until the work queued before the last `record` has run.

        >>> Event().record(stream).synchronize()  # doctest: +SKIP
        """
        _activate(self.device.id)
        _calls.synchronize_event(self.handle)

    def query(self) -> bool:
        """True when the work queued before the last `record` has run (``aclrtQueryEventStatus``; never
        waits).

        >>> Event().record(stream).query()  # doctest: +SKIP
        False
        """
        _activate(self.device.id)
        if not ensure_runtime().caps.event_query:
            raise cann_error("aclrtQueryEventStatus", _calls.ACL_ERROR_API_NOT_SUPPORT,
                            "this CANN toolkit does not export aclrtQueryEventStatus")
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
