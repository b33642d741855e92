"""A prepared QuantScatter call: checked plan, the arrays' descriptors, a workspace, and an executor.

Repeated device calls with the same arrays (a KV cache updated every decode step) reuse all of it: the
descriptors belong to the arrays, the workspace to the call, and where CANN allows it the executor is made
repeatable after the first phase 1, so later calls are a single phase-2 launch. If CANN refuses a
repeatable executor the call falls back to phase 1 + phase 2 every time, for the rest of the process.
"""

from __future__ import annotations

import threading
from typing import Any

from . import _calls
from .contract import Plan
from .errors import CannError, InvalidValueError
from .memory import Block, DeviceArray, allocator_for
from .runtime import ARRAYS, EXECUTORS, Stream, _activate, _tls, ensure_runtime, track

__all__ = ["Prepared"]

REDUCTION_UPDATE = 1
_reuse = {"allowed": True}  # cleared for the process the first time CANN refuses a repeatable executor


def _destroy_executor(executor: Any, stream: int, device_id: int) -> None:
    _activate(device_id)
    _calls.synchronize_stream(stream)  # queued launches may still use it
    _calls.destroy_executor(executor)


def release_unconsumed(executor: Any) -> None:
    """Free an executor that phase 2 never consumed (possible only where it can be made repeatable).

    >>> release_unconsumed(executor)  # doctest: +SKIP
    """
    cann = _calls.bound()
    if cann is not None and cann.caps.repeatable_executor:
        _calls.set_executor_repeatable(executor)
        _calls.destroy_executor(executor)


class Prepared:
    """One checked call on fixed device arrays, ready to launch on one stream.

    >>> call = Prepared(plan, (d_self, d_idx, d_upd, d_sc, None), stream)  # doctest: +SKIP
    >>> call.run(); call.run(); call.close()  # doctest: +SKIP
    """

    def __init__(self, plan: Plan, arrays: tuple[DeviceArray | None, ...], stream: Stream, *, reuse: bool) -> None:
        cann = ensure_runtime()
        self.plan = plan
        # The inputs only: a cached call lives in self._prepared, so holding self would make a cycle.
        self.arrays = arrays[1:]
        self.stream = stream
        self.dead = False  # set first thing by close(): a dead call never launches again
        self.reuse = reuse and cann.caps.repeatable_executor
        self._v2 = plan.product.v2 and cann.caps.v2
        self._phase2 = _calls.quant_scatter_v2 if self._v2 else _calls.quant_scatter
        self.device_id = stream.device.id
        self._workspace: Block | None = None
        self._workspace_finalizer: Any = None
        self._size = 0
        self._executor: Any = None
        self._launch_args: tuple[Any, ...] = ()
        self._executor_finalizer: Any = None
        self._lock = threading.Lock()
        if stream.closed:
            raise InvalidValueError("closed", "stream", "is closed")
        self._tensors = tuple(None if a is None else a.descriptor() for a in arrays)
        for arr in arrays:
            if arr is not None:
                arr._calls.add(self)  # closing the array (or its allocation) closes this call first
                if arr.block is not None:
                    arr.block.use_on(stream.handle)
        stream._calls.add(self)

    def _phase1(self) -> tuple[int, Any]:
        t, p = self._tensors, self.plan
        if self._v2:
            return _calls.quant_scatter_v2_get_workspace_size(t[0], t[1], t[2], t[3], t[4], p.axis, p.quant_axis,
                                                              REDUCTION_UPDATE, "rint")
        return _calls.quant_scatter_get_workspace_size(t[0], t[1], t[2], t[3], t[4], p.axis, p.quant_axis,
                                                       REDUCTION_UPDATE)

    def _launch(self, executor: Any) -> None:
        ws = self._workspace.ptr if self._workspace is not None else 0
        self._phase2(ws, self._size, executor, self.stream.handle)

    def run(self) -> None:
        """Queue the op on the stream (phase 2 only when a repeatable executor is held).

        >>> call.run()  # doctest: +SKIP
        """
        with self._lock:
            if self.dead:
                raise InvalidValueError("closed", "self", "this prepared call was released: an array or the "
                                        "stream it used was closed")
            if getattr(_tls, "current", None) != self.device_id:
                _activate(self.device_id)
            if self._executor is not None:
                self._phase2(*self._launch_args)
                return
            size, executor = self._phase1()
            try:
                self._ensure_workspace(size)
                repeatable = self._make_repeatable(executor)
            except BaseException:
                release_unconsumed(executor)
                raise
            try:
                self._launch(executor)
            except CannError:
                # A refused launch leaves the executor unconsumed (verify on hardware: CANN does not say)
                if repeatable:
                    self._drop_executor()
                else:
                    release_unconsumed(executor)
                raise

    def _ensure_workspace(self, size: int) -> None:
        if size > (self._workspace.size if self._workspace is not None else 0):
            self._release_workspace()
            alloc = allocator_for(self.stream.device.id)
            self._workspace = alloc.alloc(size, self.stream.handle)
            # Back to the stream's cache when this call goes away: only later work on that stream reuses it.
            self._workspace_finalizer = track(ARRAYS, self, alloc.release, self._workspace)
        self._size = size

    def _release_workspace(self) -> None:
        if self._workspace_finalizer is not None:
            self._workspace_finalizer()
        self._workspace = self._workspace_finalizer = None

    def _make_repeatable(self, executor: Any) -> bool:
        if not (self.reuse and _reuse["allowed"]):
            return False
        try:
            _calls.set_executor_repeatable(executor)
        except CannError:
            _reuse["allowed"] = False  # fall back to phase 1 + phase 2 on every call
            return False
        self._executor = executor
        ws = self._workspace.ptr if self._workspace is not None else 0
        self._launch_args = (ws, self._size, executor, self.stream.handle)
        self._executor_finalizer = track(EXECUTORS, self, _destroy_executor, executor, self.stream.handle,
                                         self.stream.device.id)
        return True

    def _drop_executor(self) -> None:
        if self._executor_finalizer is not None:
            self._executor_finalizer()
        self._executor = self._executor_finalizer = None

    def close(self) -> None:
        """Mark the call dead, then destroy the executor (after the stream finished with it) and release the
        workspace (idempotent).

        >>> call.close()  # doctest: +SKIP
        """
        self.dead = True
        with self._lock:
            try:
                self._drop_executor()
            finally:
                self._release_workspace()
