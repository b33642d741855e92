"""Graph replay: capture a decode step's calls once (ACL graph, ``aclmdlRICaptureBegin/End``) and queue them
all again with one C call (``aclmdlRIExecuteAsync``).

A replay queues the recorded work with the addresses and values captured, so inputs change by writing into
the same device buffers between replays (``copy_from``, or `Graph.write_indices` for checked indices). The
calls inside a capture must already be prepared (run the step once before capturing): nothing inside may
wait for the device, allocate, or copy from the host, and each refusal says why.

Executors under capture: each captured call still runs phase 1 and phase 2; phase 2 records the kernel
launch into the graph and, as always, consumes a non-repeatable executor (nnopbase ``CommonOpExecutorRun``).
What a replay runs is the recorded task, with the descriptors' addresses and the workspace as captured, so
no executor is touched again; the graph keeps the calls, their arrays and the stream's workspace block
alive instead (a repeatable executor, where a toolkit accepts one, stays with its call).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from . import _calls
from .contract import check_indices
from .errors import InvalidValueError, QScatterError
from .memory import DeviceArray
from .runtime import EXECUTORS, Device, Stream, ensure_runtime, track, use_device

__all__ = ["Graph", "GraphCaptureError"]

MODES = {"global": 0, "thread_local": 1, "relaxed": 2}  # aclmdlRICaptureMode (acl_rt.h)
capturing: dict[int, Graph] = {}  # stream handle -> the graph capturing it (read on every device call)
_capture_lock = threading.Lock()


class GraphCaptureError(QScatterError, RuntimeError):
    """Graph capture or replay cannot do what was asked (missing toolkit support, a call that would wait,
    allocate or copy inside a capture, a closed graph).

    >>> isinstance(GraphCaptureError("nothing to replay: the graph is closed"), RuntimeError)
    True
    """


def _destroy_graph(model: int, device_id: int, streams: dict[int, int | None]) -> None:
    with use_device(device_id):
        for handle, context in streams.items():  # replays queued there may still run the model
            with use_device(device_id, context):
                _calls.synchronize_stream(handle)
        _calls.ri_destroy(model)


class Graph:
    """The device calls of one step, captured on ``stream`` and replayed with one C call.

    ``with Graph(stream) as g:`` records every `quant_scatter_` queued on ``stream`` inside the block (each
    must have run once before, with the same arrays, and use device operands only); ``g.replay()`` queues
    them all again. The graph keeps every array, descriptor and workspace its calls use alive until
    `close`; closing one of those arrays, or the stream, closes the graph first. ``mode``: the capture
    mode of ``aclmdlRICaptureBegin`` ("thread_local" by default: other threads may keep synchronising).

    >>> with Graph(stream) as g:  # doctest: +SKIP
    ...     for layer in range(32):
    ...         quant_scatter_(k_cache[layer], d_idx, d_k[layer], d_ks, stream=stream, check_indices=False)
    >>> g.write_indices(0, next_positions); g.replay()  # doctest: +SKIP
    """

    def __init__(self, stream: Stream | None = None, *, mode: str = "thread_local") -> None:
        cann = ensure_runtime()
        if not cann.caps.graph:
            raise GraphCaptureError("this CANN has no ACL graph capture (aclmdlRICaptureBegin, aclmdlRIExecuteAsync "
                                    "and aclmdlRIDestroy are not exported; an older toolkit): run the calls directly")
        if mode not in MODES:
            raise InvalidValueError("mode", "mode", f"must be one of {sorted(MODES)}, got {mode!r}")
        self.stream = Device.current().stream if stream is None else stream
        if self.stream.closed:
            raise InvalidValueError("closed", "stream", "is closed")
        self.mode = mode
        self.model = 0
        # (prepared call, the operands it was given), in capture order: `write_indices` numbers them so.
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []
        self._workspaces: list[Any] = []
        # Where replays were queued, with the stream's context: synchronised before the model is destroyed.
        self._streams: dict[int, int | None] = {self.stream.handle: self.stream.context}
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closed = False
        self._state = "new"

    # ------------------------------------------------------------------------------------------ capture

    def __enter__(self) -> Graph:
        if self._state != "new":
            raise GraphCaptureError("a Graph captures once: make a new Graph for another capture")
        handle = self.stream.handle
        with _capture_lock:
            if handle in capturing:
                raise GraphCaptureError(f"{self.stream!r} is already being captured")
            with use_device(self.stream.device.id, self.stream.context):
                _calls.capture_begin(handle, MODES[self.mode])
            capturing[handle] = self
        self._state = "capturing"
        self.stream._calls.add(self)  # closing the stream closes the graph first
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        handle = self.stream.handle
        with _capture_lock:
            capturing.pop(handle, None)
        self._state = "captured"
        try:
            with use_device(self.stream.device.id, self.stream.context):
                self.model = _calls.capture_end(handle)
        except BaseException:
            self.close()
            if exc is None:
                raise
            return  # the error raised inside the block is the one to report
        self._finalizer = track(EXECUTORS, self, _destroy_graph, self.model, self.stream.device.id, self._streams)
        if exc is not None:
            self.close()

    def _adopt(self, call: Any, operands: tuple[Any, ...], check_index_values: bool) -> None:
        """Record a prepared call queued inside the capture, refusing what a replay could not repeat."""
        for name, value in zip(("self", "indices", "updates", "quant_scales", "quant_zero_points"), operands,
                               strict=True):
            if value is not None and not isinstance(value, DeviceArray):
                raise GraphCaptureError(f"{name} is a host array: inside a capture every operand must be a device "
                                        f"array (copy it into a device buffer before capturing; a replay reads "
                                        f"that buffer)")
        if check_index_values:
            raise GraphCaptureError("check_indices=True would wait for the stream to read the indices back: pass "
                                    "check_indices=False inside a capture and write new indices with "
                                    "Graph.write_indices, which checks them")
        self.calls.append((call, operands))
        call.graphs.add(self)
        ws = call._ws
        if ws not in self._workspaces:
            ws.graphs.add(self)
            self._workspaces.append(ws)

    # ------------------------------------------------------------------------------------------- replay

    def replay(self, stream: Stream | None = None) -> None:
        """Queue every captured call again on ``stream`` (default: the stream it was captured on), with one
        ``aclmdlRIExecuteAsync``. Another stream must be ordered after the capture stream's earlier work
        (e.g. `Stream.wait` on an event). Returns without waiting.

        A replay runs WITHOUT the package's index checks: the index buffers hold whatever was written into
        them, and CANN does not check them (a bad index is an out-of-bounds write on the device). Write new
        host indices with `write_indices`, which checks them.

        >>> g.replay()  # doctest: +SKIP
        """
        if self._state != "captured" or self._closed:
            raise GraphCaptureError("nothing to replay: the graph is closed or its capture did not finish")
        s = self.stream if stream is None else stream
        if s.handle not in self._streams:
            if s.device is not self.stream.device:
                raise InvalidValueError("stream", "stream", f"belongs to device {s.device.id}, the graph to device "
                                        f"{self.stream.device.id}")
            self._streams[s.handle] = s.context
            s._calls.add(self)
        with use_device(s.device.id, s.context):
            _calls.ri_execute_async(self.model, s.handle)

    def write_indices(self, call: int, indices: Any) -> None:
        """Check host ``indices`` against captured call number ``call`` (in capture order) and copy them into
        that call's index buffer, queued on the graph's stream before the next replay.

        >>> g.write_indices(0, np.array([5, 9, 2, 7], np.int32))  # doctest: +SKIP
        """
        if self._closed:
            raise GraphCaptureError("the graph is closed")
        if not 0 <= call < len(self.calls):
            raise InvalidValueError("call", "call", f"must be in [0, {len(self.calls)}) (calls captured), got {call}")
        prepared, operands = self.calls[call]
        target: DeviceArray = operands[1]
        host = np.asarray(indices)
        if host.shape != target.shape or host.dtype.kind not in "iu":
            raise InvalidValueError("indices", "indices", f"must be integers of shape {target.shape}, got "
                                    f"{host.dtype} of shape {host.shape}")
        check_indices(prepared.plan, host)  # in range, so the cast to the buffer's dtype is exact
        target.copy_from(host.astype(target.dtype, copy=False), stream=self.stream)

    # ------------------------------------------------------------------------------------------ closing

    @property
    def closed(self) -> bool:
        """True once `close` ran.

        >>> g.closed  # doctest: +SKIP
        False
        """
        return self._closed

    def close(self) -> None:
        """Destroy the captured model (after the streams it was replayed on finished) and let go of the
        arrays, calls and workspaces it held (idempotent).

        >>> g.close()  # doctest: +SKIP
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._finalizer is not None:
                fin, self._finalizer = self._finalizer, None
                fin()
        finally:
            for call, _ in self.calls:
                call.graphs.discard(self)
            workspaces, self._workspaces, self.calls = self._workspaces, [], []
            for ws in workspaces:
                ws.unpin(self)

    def __repr__(self) -> str:
        return f"Graph(calls={len(self.calls)}, stream={self.stream!r}, state={self._state}, closed={self._closed})"
