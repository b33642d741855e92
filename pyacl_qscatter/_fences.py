"""Fences: events the package records on its streams to learn, without waiting, when queued work has run,
and to order one stream after another on the device.

A fence is an event created with ``ACL_EVENT_SYNC`` (CANN's documentation of ``aclrtStreamWaitEvent``: a
stream can wait only on such an event). It is recorded after some queued work; ``aclrtQueryEventStatus``
then tells whether that work ran, so memory it used (a pinned staging buffer, a device block) goes back
to a pool at that moment and never earlier. Fences are recycled once their record has completed. Where
the toolkit cannot query events, or too many fences are outstanding, the oldest one is waited for: the
only host wait, and off the steady state.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable

from . import _calls
from .errors import CannError
from .runtime import CACHES, call_each, ensure_runtime, track, use_device

__all__ = ["ACL_EVENT_SYNC", "REAP_AT", "FencePool", "create_sync_event", "fences_for", "mark", "waited"]

ACL_EVENT_SYNC = 1  # acl_rt.h
ACL_ERROR_RT_STREAM_CONTEXT = 107003  # rt_error_codes.h: the stream belongs to a context that is not current
MAX_PENDING = 256  # outstanding fences per device before the oldest is waited for
# Outstanding fences at which recording another one first reaps. A query per fence recorded would be a C
# call per upload; reaping in batches is a few queries per REAP_AT uploads, for at most this many events.
REAP_AT = 64
_seq = itertools.count()  # orders fence records and host waits across threads
_Entry = tuple[int, int, int, Callable[[], None] | None, object]  # event, stream, mark, done, keep


def mark() -> int:
    """A point in time: fences recorded before it get smaller numbers. Taken just before a host wait, so
    that `waited` retires only the fences whose work that wait covered.

    >>> mark() < mark()
    True
    """
    return next(_seq)


def waited(device_id: int, stream: int | None, before: int) -> None:
    """The host has waited for ``stream`` (None: the whole device) after taking the `mark` ``before``:
    retire the fences recorded there before that mark, whose work has therefore run.

    >>> waited(0, stream.handle, mark())  # doctest: +SKIP
    """
    pool = _pools.get(device_id)
    if pool is not None:
        pool.ran_before(before, stream)


def create_sync_event() -> int:
    """A new event that streams can wait on (``aclrtCreateEventExWithFlag`` or ``aclrtCreateEventWithFlag``
    with ``ACL_EVENT_SYNC``; a plain ``aclrtCreateEvent`` on toolkits with neither). The caller activated
    the device.

    >>> event = create_sync_event()  # doctest: +SKIP
    """
    caps = ensure_runtime().caps
    if caps.event_ex_with_flag:
        return _calls.create_event_ex_with_flag(ACL_EVENT_SYNC)
    if caps.event_with_flag:
        return _calls.create_event_with_flag(ACL_EVENT_SYNC)
    return _calls.create_event()


class FencePool:
    """Recorded fences of one device, oldest first, each with what to do once it has run.

    >>> pool = fences_for(0)  # doctest: +SKIP
    >>> pool.after(stream.handle, lambda: print("ran"))  # doctest: +SKIP
    """

    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self._lock = threading.RLock()
        self._free: list[int] = []
        # (event, stream, mark, done, keep): keep is held only so that it outlives the work the fence follows
        self._pending: deque[_Entry] = deque()

    def after(self, stream: int, done: Callable[[], None] | None = None, keep: object = None) -> int:
        """Record a fence after the work queued on ``stream`` so far; ``done()`` runs once that work is known
        to have run (at a later `reap` or `drain`), and ``keep`` (host memory a queued copy uses) stays alive
        until then. Returns the event, valid until then. Reaps first when `REAP_AT` fences are outstanding.

        >>> fences_for(0).after(stream.handle)  # doctest: +SKIP
        """
        if len(self._pending) >= REAP_AT:
            self.reap()
        with self._lock:
            event = self._free.pop() if self._free else None
        if event is None:
            with use_device(self.device_id):
                event = create_sync_event()
        try:
            _calls.record_event(event, stream)
        except BaseException:
            with self._lock:
                self._free.append(event)
            raise
        with self._lock:
            self._pending.append((event, stream, next(_seq), done, keep))
        return event

    def order(self, waiter: int, producer: int) -> None:
        """Make later work on stream ``waiter`` wait, on the device, for the work queued on ``producer`` so
        far (``aclrtStreamWaitEvent``, in the package's context of the device). The host waits for
        ``producer`` instead where the toolkit lacks that call, or where one of the streams belongs to
        another runtime's context (ACL cannot tell a stream's context: CANN refuses with 107003).

        >>> fences_for(0).order(s2.handle, s1.handle)  # doctest: +SKIP
        """
        if waiter == producer:
            return
        with use_device(self.device_id):
            if ensure_runtime().caps.stream_wait_event:
                try:
                    _calls.stream_wait_event(waiter, self.after(producer))
                    return
                except CannError as exc:
                    if exc.code != ACL_ERROR_RT_STREAM_CONTEXT:
                        raise
            _calls.synchronize_stream(producer)

    def reap(self) -> None:
        """Run the ``done`` of every leading fence that has completed (queried, never waited for; the fences
        of a stream whose newest one ran are retired together); wait for the oldest only when the toolkit
        cannot query or more than `MAX_PENDING` are outstanding.

        >>> fences_for(0).reap()  # doctest: +SKIP
        """
        if not self._pending:
            return
        can_query = ensure_runtime().caps.event_query
        while True:
            with self._lock:
                if not self._pending:
                    return
                entry = self._pending[0]
                crowded = len(self._pending) > MAX_PENDING
                newest = next(e for e in reversed(self._pending) if e[1] == entry[1])
            if can_query and _calls.query_event_status(entry[0]):
                # A stream runs in order: when its newest fence ran, so did all before it (one more query
                # retires the whole batch instead of one query per fence).
                if newest is not entry and _calls.query_event_status(newest[0]):
                    self.ran_before(newest[2] + 1, entry[1])
                    continue
            elif crowded:
                with use_device(self.device_id):
                    _calls.synchronize_event(entry[0])
            else:
                return
            self._retire(entry)

    def _retire(self, entry: _Entry) -> None:
        with self._lock:
            # By identity: another thread may have retired it meanwhile, and its event may already serve a
            # newer fence (events are recycled).
            if not self._pending or self._pending[0] is not entry:
                return
            self._pending.popleft()
            self._free.append(entry[0])
        if entry[3] is not None:
            entry[3]()

    def ran_before(self, before: int, stream: int | None = None) -> None:
        """Retire the fences recorded on ``stream`` (None: any) before the `mark` ``before``: the caller
        waited for that stream or the device after taking the mark. Reclaims without event queries.

        >>> fences_for(0).ran_before(mark(), stream.handle)  # doctest: +SKIP
        """
        def covered(entry: _Entry) -> bool:
            return entry[2] < before and (stream is None or entry[1] == stream)

        with self._lock:
            ran = [entry for entry in self._pending if covered(entry)]
            if not ran:
                return
            self._pending = deque(entry for entry in self._pending if not covered(entry))
            self._free.extend(entry[0] for entry in ran)
        for _, _, _, done, _ in ran:
            if done is not None:
                done()

    def drain(self) -> None:
        """Wait for every outstanding fence, run their ``done``, and destroy every event of the pool.

        >>> fences_for(0).drain()  # doctest: +SKIP
        """
        while True:
            with self._lock:
                if not self._pending:
                    break
                entry = self._pending[0]
            with use_device(self.device_id):
                _calls.synchronize_event(entry[0])
            self._retire(entry)
        with self._lock:
            events, self._free = self._free, []
        if events:
            with use_device(self.device_id):
                call_each(_calls.destroy_event, events)

    def abandon(self) -> None:
        """For `Device.reset` of a stopped device, which runs no more queued work: retire every fence
        without waiting (their ``done`` runs: buffers go back to their pools) and destroy every event.

        >>> fences_for(0).abandon()  # doctest: +SKIP
        """
        with self._lock:
            pending, self._pending = list(self._pending), deque()
            events, self._free = [entry[0] for entry in pending] + self._free, []
        call_each(lambda done: done(), [entry[3] for entry in pending if entry[3] is not None])
        if events:
            with use_device(self.device_id):
                call_each(_calls.destroy_event, events)

    @property
    def outstanding(self) -> int:
        """Fences recorded whose work is not yet known to have run.

        >>> fences_for(0).outstanding  # doctest: +SKIP
        0
        """
        return len(self._pending)


_pools: dict[int, FencePool] = {}
_pools_lock = threading.Lock()


def fences_for(device_id: int) -> FencePool:
    """The fence pool of a device (one per device per process; drained at exit with the caches).

    >>> fences_for(0).device_id  # doctest: +SKIP
    0
    """
    pool = _pools.get(device_id)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(device_id)
            if pool is None:
                pool = _pools[device_id] = FencePool(device_id)
                track(CACHES, pool, FencePool.drain, pool)
    return pool
