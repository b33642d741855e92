"""Prepared QuantScatter calls: the descriptors of one layout, the stream's workspace, and the two phases.

A decode loop calls the op with the same layouts every step, often through views made afresh and with
host indices. A prepared call is found by what its operands describe (device memory by address, offset,
shape, strides, dtype and storage; host operands by shape and dtype), the stream and the axes, never by
object identity, so a fresh view of the same memory finds it. It holds its operands weakly: it is
released when the allocation behind any of them is closed or collected, so it never keeps device memory
alive. Host operands land in device buffers shared by the stream's prepared calls (work on a stream runs
in order, so a buffer rewritten for the next call is never read by an earlier one): they are copied in
only when their values differ from what the buffer already holds, so the 64 calls of a decode step that
share one host index array upload it once (and check it once per plan).

Each run is phase 1 + phase 2: real CANN refuses repeatable executors for this op (its ``selfRef`` is
written through an in-place ViewCopy), so that is the steady state. Where a toolkit accepts
``aclSetAclOpExecutorRepeatable`` (tried once per process, see `repeatable_accepted`) a call keeps its
executor and later runs are phase 2 alone.

Executor ownership follows nnopbase (hicann/opbase, ``op_executor.cpp``, ``CommonOpExecutorRun``): phase 2
deletes a non-repeatable executor whether the launch succeeds or fails, and its NULL-workspace error path
(``ACLNN_ERR_PARAM_NULLPTR``, 161001) deletes even a repeatable one. So after phase 2 a non-repeatable
executor is never touched again; one that was never launched is freed with ``aclDestroyAclOpExecutor``.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from . import _calls
from ._ffi._cann import ffi
from ._transfer import upload
from .contract import Plan, check_indices
from .dtypes import ACL_DTYPE
from .errors import CannError, InvalidValueError
from .graph import GraphCaptureError, capturing
from .memory import ACL_FORMAT_ND, Block, DeviceArray, allocator_for
from .runtime import ARRAYS, EXECUTORS, Stream, call_each, ensure_runtime, track, use_device

__all__ = ["Prepared", "find", "key_of", "repeatable_accepted"]

REDUCTION_UPDATE = 1
ACLNN_ERR_PARAM_NULLPTR = 161001  # nnopbase's NULL-workspace error: the executor was deleted, even a repeatable one
MAX_PREPARED = 1024  # prepared calls kept in all; the oldest one no graph holds is released beyond this
NAMES = ("self", "indices", "updates", "quant_scales", "quant_zero_points")

# The toolkit's answer to aclSetAclOpExecutorRepeatable: None until asked, once per process.
_reuse: dict[str, bool | None] = {"accepted": None}
_reuse_lock = threading.Lock()
_cache: dict[tuple[Any, ...], Prepared] = {}
_plans: weakref.WeakValueDictionary[Plan, Plan] = weakref.WeakValueDictionary()
_workspaces: weakref.WeakKeyDictionary[Stream, _Workspace] = weakref.WeakKeyDictionary()
_workspace_lock = threading.Lock()


def repeatable_accepted() -> bool | None:
    """Whether the toolkit accepted a repeatable executor for this op: None until a device call tried it
    (once per process), then True or False. Real CANN refuses it; the package then runs phase 1 + phase 2
    per call, which is its steady state anyway.

    >>> repeatable_accepted() in (None, True, False)
    True
    """
    return _reuse["accepted"]


def _layout(value: Any) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if isinstance(value, DeviceArray):
        return (value.ptr, value.offset, value.shape, value.element_strides, value.dtype, value.storage)
    if isinstance(value, np.ndarray):
        return ("host", value.shape, value.dtype)
    return ("unconverted", id(value))  # never prepared: the checked way converts it first


def key_of(operands: tuple[Any, ...], axis: int, quant_axis: int, reduce: str, stream: Stream) -> tuple[Any, ...]:
    """What identifies a prepared call: the stream, the axes and each operand's layout.

    >>> key_of((None,) * 5, -2, -1, "update", stream)[:3]  # doctest: +SKIP
    (-2, -1, 'update')
    """
    key: list[Any] = [axis, quant_axis, reduce, stream.handle]
    for v in operands:  # `_layout`, inlined for the common operands: this runs on every call
        if v is None:
            key.append(None)
        elif type(v) is DeviceArray:
            key.append((v.ptr, v.offset, v.shape, v.element_strides, v.dtype, v.storage))
        else:
            key.append(_layout(v))
    return tuple(key)


def find(key: tuple[Any, ...]) -> Prepared | None:
    """The live prepared call for ``key``, if any.

    >>> find(key) is None  # doctest: +SKIP
    True
    """
    call = _cache.get(key)
    return call if call is not None and not call.dead else None


def _root(arr: DeviceArray) -> DeviceArray:
    """The array whose collection ends the memory a view sees (views keep their parent as owner)."""
    while isinstance(arr._owner, DeviceArray):
        arr = arr._owner
    return arr


def _expire(key: tuple[Any, ...], call: Prepared) -> None:
    if _cache.get(key) is call:
        del _cache[key]
    call.close()


def _destroy_tensors(tensors: list[Any]) -> None:
    call_each(_calls.destroy_tensor, [t for t in tensors if t is not None])


def _destroy_executor(executor: Any, stream: int, device_id: int, context: int | None) -> None:
    with use_device(device_id, context):
        _calls.synchronize_stream(stream)  # queued launches may still use it
        _calls.destroy_executor(executor)


def _destroy_unlaunched(executor: Any) -> None:
    """Free an executor phase 2 never saw (aclDestroyAclOpExecutor; a toolkit without it keeps it)."""
    cann = _calls.bound()
    if cann is not None and cann.caps.repeatable_executor:
        _calls.destroy_executor(executor)


def _make_repeatable(executor: Any) -> bool:
    """Ask the toolkit once per process; afterwards follow its answer (a refusal leaves the executor as it was)."""
    if _reuse["accepted"] is False:
        return False
    with _reuse_lock:
        try:
            _calls.set_executor_repeatable(executor)
        except CannError:
            if _reuse["accepted"] is None:
                _reuse["accepted"] = False
            return False
        _reuse["accepted"] = True
        return True


class _HostSlot:
    """A device buffer for one host operand (position, shape, dtype) of a stream's prepared calls, with the
    bytes it holds once the copies queued so far ran, and the plan those values were last checked for."""

    __slots__ = ("buf", "data", "plan")

    def __init__(self, buf: DeviceArray) -> None:
        self.buf = buf
        self.data: bytes | None = None
        self.plan: Plan | None = None


class _Workspace:
    """What the prepared calls on one stream share: work on a stream runs in order, so one workspace block,
    grown to the largest size asked, serves them all, and so does one device buffer per kind of host
    operand. They go back to the allocator when the last call using them is released; a workspace block a
    graph captured stays until that graph closes."""

    def __init__(self, stream: Stream) -> None:
        self.stream = weakref.ref(stream)
        self.slots: dict[tuple[Any, ...], _HostSlot] = {}
        self.device_id, self.handle = stream.device.id, stream.handle
        self.block: Block | None = None
        self.ptr = self.size = 0
        self.users = 0  # live prepared calls on the stream
        self.graphs: weakref.WeakSet[Any] = weakref.WeakSet()  # open graphs whose captured calls use it
        self._retired: list[Block] = []
        self._lock = threading.RLock()
        self._finalizer = track(ARRAYS, stream, _release_blocks, self)  # at exit, or when the stream goes

    def grow(self, size: int) -> None:
        if self.handle in capturing:
            raise GraphCaptureError(f"a call inside the capture needs a workspace of {size} bytes, more than the "
                                    f"{self.size} prepared: run the step once before capturing (a warm-up)")
        block = allocator_for(self.device_id).alloc(size, self.handle)
        with self._lock:
            old, self.block, self.ptr, self.size = self.block, block, block.ptr, block.size
            if old is not None:
                self._retired.append(old)
        if not self.graphs:
            self._release_retired()

    def slot(self, position: int, value: np.ndarray[Any, Any]) -> _HostSlot:
        """The shared device buffer for host operand ``position`` shaped like ``value`` (made on first use).

        >>> workspace.slot(1, np.zeros(8, np.int32)).buf.shape  # doctest: +SKIP
        (8,)
        """
        key = (position, value.shape, value.dtype)
        slot = self.slots.get(key)
        if slot is None:
            stream = self.stream()
            assert stream is not None, "a workspace is used only while its stream lives"
            slot = self.slots[key] = _HostSlot(DeviceArray.empty(value.shape, value.dtype, device=stream.device,
                                                                 stream=stream))
        return slot

    def enter(self) -> None:
        """A prepared call on the stream was made.

        >>> workspace.enter()  # doctest: +SKIP
        """
        with self._lock:
            self.users += 1

    def leave(self) -> None:
        """A prepared call was released: the last one gives the block back (unless a graph holds it).

        >>> workspace.leave()  # doctest: +SKIP
        """
        with self._lock:
            self.users -= 1
            if self.users or self.graphs:
                return
        _release_blocks(self)

    def unpin(self, graph: Any) -> None:
        """A graph closed: blocks retired while graphs used them go back once none is left.

        >>> workspace.unpin(graph)  # doctest: +SKIP
        """
        self.graphs.discard(graph)
        if not self.graphs:
            if self.users:
                self._release_retired()
            else:
                _release_blocks(self)

    def _release_retired(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        call_each(allocator_for(self.device_id).release, retired)

    def close(self) -> None:
        """The stream is closing: close the graphs that use this workspace, then release its blocks.

        >>> workspace.close()  # doctest: +SKIP
        """
        try:
            call_each(lambda graph: graph.close(), list(self.graphs))
        finally:
            self._finalizer()


def _release_blocks(ws: _Workspace) -> None:
    with ws._lock:
        blocks = ws._retired + ([ws.block] if ws.block is not None else [])
        ws._retired, ws.block, ws.ptr, ws.size = [], None, 0, 0
        slots, ws.slots = list(ws.slots.values()), {}
    try:
        call_each(lambda slot: slot.buf.close(), slots)
    finally:
        call_each(allocator_for(ws.device_id).release, blocks)


def workspace_for(stream: Stream) -> _Workspace:
    """The shared workspace of ``stream`` (made on first use; released when the stream closes).

    >>> workspace_for(Device(0).stream).size  # doctest: +SKIP
    0
    """
    ws = _workspaces.get(stream)
    if ws is None:
        with _workspace_lock:
            ws = _workspaces.get(stream)
            if ws is None:
                ws = _workspaces[stream] = _Workspace(stream)
                stream._calls.add(ws)  # Stream.close() closes it with the stream's calls
    return ws


class Prepared:
    """One checked call on fixed layouts, ready to run on one stream: its descriptors, device buffers for
    host operands, and (where the toolkit allows) a repeatable executor.

    >>> call = Prepared(plan, (d_self, d_idx, d_upd, d_sc, None), stream)  # doctest: +SKIP
    >>> call((d_self, d_idx, d_upd, d_sc, None)); call.close()  # doctest: +SKIP
    """

    def __init__(self, plan: Plan, operands: tuple[Any, ...], stream: Stream, *, key: tuple[Any, ...] | None = None
                 ) -> None:
        cann = ensure_runtime()
        if stream.closed:
            raise InvalidValueError("closed", "stream", "is closed")
        # Equal plans are one object, so that a shared index buffer checked for one plan is known checked
        # for every call with that plan by identity.
        self.plan = _plans.setdefault(plan, plan)
        self.stream, self.key = stream, key
        self.dead = False  # set first thing by close(): a dead call never launches again
        self.reuse = key is not None and cann.caps.repeatable_executor
        self.device_id = stream.device.id
        self._v2 = plan.product.v2 and cann.caps.v2
        self._lock = threading.Lock()
        self._executor: Any = None
        self._executor_finalizer: Any = None
        self._size = 0
        self.graphs: weakref.WeakSet[Any] = weakref.WeakSet()  # open graphs that captured this call
        self._expiries: list[weakref.finalize[Any, Any]] = []
        # Host operands land in the stream's shared buffers (position -> slot), filled when their values change.
        self.buffers: dict[int, _HostSlot] = {}
        self._tensors: list[Any] = []
        self._tensor_finalizer = track(ARRAYS, self, _destroy_tensors, self._tensors)
        self._ws = workspace_for(stream)
        self._ws.enter()
        # Left by close(), or when the call is collected unclosed (else the stream's workspace stays forever).
        self._leave = track(ARRAYS, self, _Workspace.leave, self._ws)
        try:
            arrays = [self._device_operand(i, v) for i, v in enumerate(operands)]
            for arr in arrays:
                if arr is None:
                    self._tensors.append(None)
                    continue
                self._tensors.append(_calls.create_tensor(arr.shape, ACL_DTYPE[arr.dtype], arr.element_strides,
                                                          arr.offset, ACL_FORMAT_ND, (arr.storage,), arr.ptr))
                arr._calls.add(self)  # closing the array (or its allocation) closes this call first
                if arr.block is not None:
                    arr.block.use_on(stream.handle)
            stream._calls.add(self)
            if key is not None:
                owned = {id(slot.buf) for slot in self.buffers.values()}
                roots = {id(r): r for r in (_root(a) for a in arrays if a is not None and id(a) not in owned)}
                self._expiries = [weakref.finalize(r, _expire, key, self) for r in roots.values()]
                for fin in self._expiries:
                    fin.atexit = False  # at exit the package's teardown releases the call, in its order
        except BaseException:
            self.close()
            raise
        self._t = tuple(self._tensors)
        # Phase 1's arguments, out-parameters included, made once: a run is then two C calls and the reads
        # of two out-parameters (runs of one call never overlap: `_launch` holds the call's lock).
        self._out_size, self._out_executor = ffi.new("uint64_t *"), ffi.new("aclOpExecutor **")
        tensors = tuple(ffi.NULL if t is None else t for t in self._t)
        extra = (ffi.new("char[]", b"rint"),) if self._v2 else ()
        self._phase1_args: tuple[Any, ...] = (*tensors, plan.axis, plan.quant_axis, REDUCTION_UPDATE, *extra,
                                              self._out_size, self._out_executor)
        self._name = "aclnnInplaceQuantScatterV2" if self._v2 else "aclnnInplaceQuantScatter"

    def _device_operand(self, position: int, value: Any) -> DeviceArray | None:
        if value is None or isinstance(value, DeviceArray):
            return value
        slot = self.buffers[position] = self._ws.slot(position, value)
        return slot.buf

    def __call__(self, operands: tuple[Any, ...], check_index_values: bool) -> None:
        """Copy host operands in, check index values, and queue phase 1 + phase 2 (or phase 2 alone with a
        repeatable executor) on the stream. Returns without waiting for the device.

        >>> call((d_self, host_idx, d_upd, d_sc, None), False)  # doctest: +SKIP
        """
        if self.dead:
            raise InvalidValueError("closed", "self", "this prepared call was released: an array or the stream "
                                    "it used was closed")
        stream = self.stream
        graph = capturing.get(stream.handle)
        if graph is not None:
            graph._adopt(self, operands, check_index_values)
        if check_index_values and 1 not in self.buffers:
            check_indices(self.plan, operands[1].to_numpy(stream=stream))
        with use_device(self.device_id, stream.context):  # the caller's context comes back after
            if not self.buffers:
                self._launch()
                return
            with self._ws._lock:  # a shared buffer's copy and the launch that reads it are one unit on the stream
                for position, slot in self.buffers.items():
                    value = operands[position]
                    data = value.tobytes()
                    if position == 1 and (data != slot.data or slot.plan is not self.plan):
                        check_indices(self.plan, value)  # host index values are always checked (on the host)
                        slot.plan = self.plan
                    if data != slot.data:
                        slot.data = None  # unknown until the copy is queued
                        upload(slot.buf, np.ascontiguousarray(value), stream, wait=False)
                        slot.data = data
                self._launch()

    def _launch(self) -> None:
        """Phase 1 + phase 2 (phase 2 alone with a held executor), straight through the bound C functions."""
        with self._lock:
            if self.dead:
                raise InvalidValueError("closed", "self", "this prepared call was released while it was called")
            ws, handle, executor = self._ws, self.stream.handle, self._executor
            if executor is not None:
                self._launch_held(ws.ptr, executor, handle)
                return
            phase1, phase2 = ((_calls._aclnnInplaceQuantScatterV2GetWorkspaceSize, _calls._aclnnInplaceQuantScatterV2)
                              if self._v2 else
                              (_calls._aclnnInplaceQuantScatterGetWorkspaceSize, _calls._aclnnInplaceQuantScatter))
            rc = phase1(*self._phase1_args)
            if rc:
                raise _calls._error(self._name + "GetWorkspaceSize", rc)
            size, executor = self._out_size[0], self._out_executor[0]
            if size > ws.size or self.reuse:
                self._first_run(size, executor, handle)
                return
            rc = phase2(ws.ptr, size, executor, handle)
            if rc:
                raise _calls._error(self._name, rc)  # the executor is gone, whatever phase 2 returned

    def _phase2(self, workspace: int, size: int, executor: Any, stream: int) -> None:
        rc = (_calls._aclnnInplaceQuantScatterV2 if self._v2 else _calls._aclnnInplaceQuantScatter)(
            workspace, size, executor, stream)
        if rc:
            raise _calls._error(self._name, rc)

    def _launch_held(self, workspace: int, executor: Any, stream: int) -> None:
        try:
            self._phase2(workspace, self._size, executor, stream)
        except CannError as exc:
            self._forget_executor(exc)
            raise

    def _first_run(self, size: int, executor: Any, handle: int) -> None:
        """Phase 2 of an executor that needs a larger workspace first, or that may become repeatable."""
        ws = self._ws
        try:
            if size > ws.size:
                ws.grow(size)
            repeatable = self.reuse and _make_repeatable(executor)
        except BaseException:
            _destroy_unlaunched(executor)  # phase 2 never saw it
            raise
        if repeatable:
            self._executor, self._size = executor, size
            self._executor_finalizer = track(EXECUTORS, self, _destroy_executor, executor, handle, self.device_id,
                                             self.stream.context)
        elif _reuse["accepted"] is False:
            self.reuse = False  # the toolkit refused: later runs take the short way
        try:
            self._phase2(ws.ptr, size, executor, handle)
        except CannError as exc:
            if repeatable:
                self._forget_executor(exc)
            raise  # a non-repeatable executor is gone, whatever phase 2 returned

    def _forget_executor(self, exc: CannError) -> None:
        """A repeatable executor's launch failed: nnopbase deleted it on the NULL-workspace path, else it is
        freed here; the next run starts from phase 1."""
        fin, self._executor, self._executor_finalizer = self._executor_finalizer, None, None
        if fin is None:
            return
        if exc.code == ACLNN_ERR_PARAM_NULLPTR:
            fin.detach()
        else:
            fin()

    def close(self) -> None:
        """Release the call (idempotent): close the graphs that captured it, forget its layout, destroy a
        held executor (after the stream finished with it), its descriptors and its host-operand buffers.

        >>> call.close()  # doctest: +SKIP
        """
        if self.dead:
            return
        self.dead = True
        if self.key is not None and _cache.get(self.key) is self:
            del _cache[self.key]
        for fin in self._expiries:
            fin.detach()
        with self._lock:  # a launch in progress finishes first
            graphs = list(self.graphs)
            executor, self._executor_finalizer, self._executor = self._executor_finalizer, None, None
        try:
            call_each(lambda graph: graph.close(), graphs)
        finally:
            try:
                if executor is not None:
                    executor()
            finally:
                try:
                    self._tensor_finalizer()
                finally:
                    self.buffers = {}
                    self._leave()  # the last call on the stream gives back the shared buffers


def prepare(plan: Plan, operands: tuple[Any, ...], stream: Stream, key: tuple[Any, ...]) -> Prepared:
    """Make the prepared call for ``key`` and keep it (replacing a stale one; the oldest beyond
    `MAX_PREPARED` that no graph holds is released).

    >>> call = prepare(plan, operands, stream, key_of(operands, -2, -1, "update", stream))  # doctest: +SKIP
    """
    call = Prepared(plan, operands, stream, key=key)
    stale = _cache.pop(key, None)
    _cache[key] = call
    if stale is not None:
        stale.close()
    if len(_cache) > MAX_PREPARED:
        for old_key, old in list(_cache.items()):
            if not old.graphs:
                del _cache[old_key]
                old.close()
                break
    return call

