"""Thin checked calls: one function per CANN C function the package uses; the only code that calls ``lib``.

Every function checks the status; on failure it reads ``aclGetRecentErrMsg()`` at once, on the failing
thread, before anything else, and raises :func:`pyacl_qscatter.errors.cann_error`'s exception.

Conventions: device and host pointers, streams, events and contexts are Python ``int`` (0 is NULL and, for
streams, the default stream), so that memory from other runtimes and ours look the same; tensor
descriptors and executors are cffi ``cdata`` pointers. CANN is loaded on the first call (see
``_loader``); :func:`bind` does it explicitly.

Example::

    from pyacl_qscatter import _calls
    _calls.init()
    _calls.set_device(0)
    ptr = _calls.malloc(1024)
    _calls.free(ptr)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _loader, errors
from ._ffi._cann import ffi
from .errors import CannError, DeviceFaultError, cann_error

__all__ = [
    "ACLNN_ERR_PARAM_INVALID",
    "ACL_ERROR_API_NOT_SUPPORT",
    "bind",
    "bound",
    "buffer_address",
    "capture_begin",
    "capture_end",
    "capture_get_info",
    "create_context",
    "create_event",
    "create_event_ex_with_flag",
    "create_event_with_flag",
    "create_stream",
    "create_tensor",
    "destroy_context",
    "destroy_event",
    "destroy_executor",
    "destroy_stream",
    "destroy_tensor",
    "event_elapsed_time",
    "finalize",
    "finalize_reference",
    "free",
    "free_host",
    "get_current_context",
    "get_device",
    "get_device_count",
    "get_mem_info",
    "get_soc_name",
    "get_version",
    "get_version_str",
    "init",
    "malloc",
    "malloc_host",
    "memcpy",
    "memcpy_2d_async",
    "memcpy_async",
    "memset",
    "memset_async",
    "pointer_get_attributes",
    "quant_scatter",
    "quant_scatter_get_workspace_size",
    "quant_scatter_v2",
    "quant_scatter_v2_get_workspace_size",
    "query_event_status",
    "recent_error_message",
    "record_event",
    "reset_device",
    "ri_destroy",
    "ri_execute_async",
    "set_current_context",
    "set_device",
    "set_executor_repeatable",
    "set_input_tensor_addr",
    "set_output_tensor_addr",
    "set_stream_failure_mode",
    "stream_query",
    "stream_wait_event",
    "synchronize_device",
    "synchronize_event",
    "synchronize_stream",
    "synchronize_stream_with_timeout",
]

ACL_ERROR_API_NOT_SUPPORT = 200001
ACLNN_ERR_PARAM_INVALID = 161002

_NULL = ffi.NULL
_new = ffi.new
_UINTPTR = ffi.typeof("uintptr_t")
_UINTPTRP = ffi.typeof("uintptr_t *")
_I32P = ffi.typeof("int32_t *")
_U32P = ffi.typeof("uint32_t *")
_U64P = ffi.typeof("uint64_t *")
_SIZEP = ffi.typeof("size_t *")
_FLOATP = ffi.typeof("float *")
_I64ARR = ffi.typeof("int64_t[]")
_EXECPP = ffi.typeof("aclOpExecutor **")
_VERSION_MAX = 128  # ACL_PKG_VERSION_MAX_SIZE
_STREAM_STATUS_P = ffi.typeof("aclrtStreamStatus *")
_EVENT_STATUS_P = ffi.typeof("aclrtEventRecordedStatus *")
_CAPTURE_STATUS_P = ffi.typeof("aclmdlRICaptureStatus *")
_PTR_ATTRS_P = ffi.typeof("aclrtPtrAttributes *")


class _Unbound:
    """Stands in for a C function until CANN is loaded; the first call loads it and rebinds everything."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any) -> Any:
        bind()
        return globals()["_" + self.name](*args)


class _Missing:
    """Stands in for an optional C function the loaded toolkit does not export."""

    __slots__ = ("name", "where")

    def __init__(self, name: str, where: str) -> None:
        self.name = name
        self.where = where

    def __call__(self, *args: Any) -> Any:
        raise cann_error(self.name, ACL_ERROR_API_NOT_SUPPORT,
                         f"{self.name} is not exported by the CANN loaded from {self.where} (an older toolkit)")


_SYMBOLS = (
    "aclInit", "aclFinalize", "aclGetRecentErrMsg", "aclrtGetVersion", "aclrtGetSocName",
    "aclrtSetDevice", "aclrtResetDevice", "aclrtGetDevice", "aclrtGetDeviceCount", "aclrtSynchronizeDevice",
    "aclrtCreateContext", "aclrtDestroyContext", "aclrtSetCurrentContext", "aclrtGetCurrentContext",
    "aclrtCreateStream", "aclrtDestroyStream", "aclrtSynchronizeStream", "aclrtSynchronizeStreamWithTimeout",
    "aclrtMalloc", "aclrtFree", "aclrtMallocHost", "aclrtFreeHost", "aclrtMemcpy", "aclrtMemcpyAsync",
    "aclrtMemset", "aclrtMemsetAsync", "aclrtGetMemInfo",
    "aclrtCreateEvent", "aclrtCreateEventWithFlag", "aclrtRecordEvent", "aclrtSynchronizeEvent",
    "aclrtEventElapsedTime", "aclrtDestroyEvent",
    "aclCreateTensor", "aclDestroyTensor", "aclSetAclOpExecutorRepeatable", "aclDestroyAclOpExecutor",
    "aclSetInputTensorAddr", "aclSetOutputTensorAddr",
    "aclnnInplaceQuantScatterGetWorkspaceSize", "aclnnInplaceQuantScatter",
    "aclnnInplaceQuantScatterV2GetWorkspaceSize", "aclnnInplaceQuantScatterV2",
    "aclFinalizeReference", "aclsysGetVersionStr", "aclrtStreamQuery", "aclrtStreamWaitEvent",
    "aclrtSetStreamFailureMode", "aclrtPointerGetAttributes", "aclrtMemcpy2dAsync", "aclrtCreateEventExWithFlag",
    "aclrtQueryEventStatus", "aclmdlRICaptureBegin", "aclmdlRICaptureGetInfo", "aclmdlRICaptureEnd",
    "aclmdlRIExecuteAsync", "aclmdlRIDestroy",
)

# Module globals "_<symbol>" hold the C functions (one global lookup per call, nothing else on the hot path);
# bind() replaces each placeholder by the cffi function, or by _Missing for an absent optional symbol.
_aclInit: Any = _Unbound("aclInit")
_aclFinalize: Any = _Unbound("aclFinalize")
_aclGetRecentErrMsg: Any = _Unbound("aclGetRecentErrMsg")
_aclrtGetVersion: Any = _Unbound("aclrtGetVersion")
_aclrtGetSocName: Any = _Unbound("aclrtGetSocName")
_aclrtSetDevice: Any = _Unbound("aclrtSetDevice")
_aclrtResetDevice: Any = _Unbound("aclrtResetDevice")
_aclrtGetDevice: Any = _Unbound("aclrtGetDevice")
_aclrtGetDeviceCount: Any = _Unbound("aclrtGetDeviceCount")
_aclrtSynchronizeDevice: Any = _Unbound("aclrtSynchronizeDevice")
_aclrtCreateContext: Any = _Unbound("aclrtCreateContext")
_aclrtDestroyContext: Any = _Unbound("aclrtDestroyContext")
_aclrtSetCurrentContext: Any = _Unbound("aclrtSetCurrentContext")
_aclrtGetCurrentContext: Any = _Unbound("aclrtGetCurrentContext")
_aclrtCreateStream: Any = _Unbound("aclrtCreateStream")
_aclrtDestroyStream: Any = _Unbound("aclrtDestroyStream")
_aclrtSynchronizeStream: Any = _Unbound("aclrtSynchronizeStream")
_aclrtSynchronizeStreamWithTimeout: Any = _Unbound("aclrtSynchronizeStreamWithTimeout")
_aclrtMalloc: Any = _Unbound("aclrtMalloc")
_aclrtFree: Any = _Unbound("aclrtFree")
_aclrtMallocHost: Any = _Unbound("aclrtMallocHost")
_aclrtFreeHost: Any = _Unbound("aclrtFreeHost")
_aclrtMemcpy: Any = _Unbound("aclrtMemcpy")
_aclrtMemcpyAsync: Any = _Unbound("aclrtMemcpyAsync")
_aclrtMemset: Any = _Unbound("aclrtMemset")
_aclrtMemsetAsync: Any = _Unbound("aclrtMemsetAsync")
_aclrtGetMemInfo: Any = _Unbound("aclrtGetMemInfo")
_aclrtCreateEvent: Any = _Unbound("aclrtCreateEvent")
_aclrtCreateEventWithFlag: Any = _Unbound("aclrtCreateEventWithFlag")
_aclrtRecordEvent: Any = _Unbound("aclrtRecordEvent")
_aclrtSynchronizeEvent: Any = _Unbound("aclrtSynchronizeEvent")
_aclrtEventElapsedTime: Any = _Unbound("aclrtEventElapsedTime")
_aclrtDestroyEvent: Any = _Unbound("aclrtDestroyEvent")
_aclCreateTensor: Any = _Unbound("aclCreateTensor")
_aclDestroyTensor: Any = _Unbound("aclDestroyTensor")
_aclSetAclOpExecutorRepeatable: Any = _Unbound("aclSetAclOpExecutorRepeatable")
_aclDestroyAclOpExecutor: Any = _Unbound("aclDestroyAclOpExecutor")
_aclSetInputTensorAddr: Any = _Unbound("aclSetInputTensorAddr")
_aclSetOutputTensorAddr: Any = _Unbound("aclSetOutputTensorAddr")
_aclnnInplaceQuantScatterGetWorkspaceSize: Any = _Unbound("aclnnInplaceQuantScatterGetWorkspaceSize")
_aclnnInplaceQuantScatter: Any = _Unbound("aclnnInplaceQuantScatter")
_aclnnInplaceQuantScatterV2GetWorkspaceSize: Any = _Unbound("aclnnInplaceQuantScatterV2GetWorkspaceSize")
_aclnnInplaceQuantScatterV2: Any = _Unbound("aclnnInplaceQuantScatterV2")
_aclFinalizeReference: Any = _Unbound("aclFinalizeReference")
_aclsysGetVersionStr: Any = _Unbound("aclsysGetVersionStr")
_aclrtStreamQuery: Any = _Unbound("aclrtStreamQuery")
_aclrtStreamWaitEvent: Any = _Unbound("aclrtStreamWaitEvent")
_aclrtSetStreamFailureMode: Any = _Unbound("aclrtSetStreamFailureMode")
_aclrtPointerGetAttributes: Any = _Unbound("aclrtPointerGetAttributes")
_aclrtMemcpy2dAsync: Any = _Unbound("aclrtMemcpy2dAsync")
_aclrtCreateEventExWithFlag: Any = _Unbound("aclrtCreateEventExWithFlag")
_aclrtQueryEventStatus: Any = _Unbound("aclrtQueryEventStatus")
_aclmdlRICaptureBegin: Any = _Unbound("aclmdlRICaptureBegin")
_aclmdlRICaptureGetInfo: Any = _Unbound("aclmdlRICaptureGetInfo")
_aclmdlRICaptureEnd: Any = _Unbound("aclmdlRICaptureEnd")
_aclmdlRIExecuteAsync: Any = _Unbound("aclmdlRIExecuteAsync")
_aclmdlRIDestroy: Any = _Unbound("aclmdlRIDestroy")


_bound: _loader.Cann | None = None


def _address_view(fn: Any) -> Any:
    """The same C function, seen with ``void *`` parameters as ``uintptr_t`` and ``void **`` as ``uintptr_t *``.

    Addresses travel as Python ints; converting an int to ``uintptr_t`` is several times cheaper than
    ``ffi.cast("void *", n)`` on every call, and out-parameters then read back as ints directly. On the
    only ABIs CANN ships for (LP64 Linux on x86-64 and AArch64) a pointer and a ``uintptr_t`` argument are
    passed identically. Anything that is not a cffi C function (a test double) is returned unchanged.

    >>> _address_view(print) is print
    True
    """
    if not isinstance(fn, ffi.CData):
        return fn
    ctype = ffi.typeof(fn)
    args: list[str] = []
    for arg in ctype.args:
        if arg.kind == "pointer" and arg.item.kind == "void":
            args.append("uintptr_t")
        elif arg.kind == "pointer" and arg.item.kind == "pointer" and arg.item.item.kind == "void":
            args.append("uintptr_t *")
        else:
            args.append(arg.cname)
    return ffi.cast(f"{ctype.result.cname}(*)({', '.join(args) or 'void'})", fn)


def bind(cann: _loader.Cann | None = None) -> _loader.Cann:
    """Bind the module to a loaded CANN (default: :func:`_loader.load`, which may raise CannNotFoundError).

    Example::

        cann = bind()
        cann.caps.v2
        # -> False
    """
    global _bound
    cann = _loader.load() if cann is None else cann
    if _bound is cann:
        return cann
    where = cann.home or "the system loader"
    namespace = globals()
    for name in _SYMBOLS:
        fn = cann.functions.get(name)
        namespace["_" + name] = _Missing(name, where) if fn is None else _address_view(fn)
    _bound = cann
    return cann


def _unbind() -> None:
    """Forget the bound CANN (for tests): the next call binds again through the loader."""
    global _bound
    namespace = globals()
    for name in _SYMBOLS:
        namespace["_" + name] = _Unbound(name)
    _bound = None


def bound() -> _loader.Cann | None:
    """The CANN this module is bound to, or None before the first call. Never loads anything.

    >>> bound() is None or bound().caps is not None
    True
    """
    return _bound


# ------------------------------------------------------------------------------------------- errors


def recent_error_message() -> str | None:
    """Read (and clear) this thread's last CANN error message; None if there is none. Never raises.

    Example::

        recent_error_message()
        # -> 'EE1001: The argument is invalid...'
    """
    if _bound is None:
        return None
    try:
        p = _aclGetRecentErrMsg()
        if p == _NULL:
            return None
        text: str = ffi.string(p).decode("utf-8", "replace").strip()
        return text or None
    except Exception:
        return None


def _error(function: str, code: int) -> CannError:
    # First thing after the failing call: the message is per thread and the next CANN call may clear it.
    message = recent_error_message()
    error = cann_error(function, code, message)
    if isinstance(error, DeviceFaultError) and errors.fault_hook is not None:
        errors.fault_hook(error)  # the device layer notes a device that stopped
    return error


# ------------------------------------------------------------------------------------- process, device


def init(config_path: str | None = None) -> None:
    """aclInit. A second call in one process fails with 100002 (ACL_ERROR_REPEAT_INITIALIZE).

    Example::

        init()
    """
    rc = _aclInit(_NULL if config_path is None else config_path.encode())
    if rc:
        raise _error("aclInit", rc)


def finalize() -> None:
    """aclFinalize.

    Example::

        finalize()
    """
    rc = _aclFinalize()
    if rc:
        raise _error("aclFinalize", rc)


def finalize_reference() -> int:
    """aclFinalizeReference (CANN >= 8.5): give back one aclInit; return the count left (0: ACL finalized).

    Example::

        finalize_reference()
        # -> 0
    """
    count = _new(_U64P)
    rc = _aclFinalizeReference(count)
    if rc:
        raise _error("aclFinalizeReference", rc)
    return int(count[0])


def get_version_str(package: str = "runtime") -> str:
    """aclsysGetVersionStr: the CANN release of ``package`` as text, e.g. "8.1.RC1".

    Example::

        get_version_str()
        # -> '8.3.RC1'
    """
    out = _new("char[]", _VERSION_MAX)
    rc = _aclsysGetVersionStr(package.encode(), out)
    if rc:
        raise _error("aclsysGetVersionStr", rc)
    return str(ffi.string(out).decode("utf-8", "replace"))


def get_version() -> tuple[int, int, int]:
    """aclrtGetVersion: the runtime's (major, minor, patch).

    Example::

        get_version()
        # -> (8, 1, 0)
    """
    major, minor, patch = _new(_I32P), _new(_I32P), _new(_I32P)
    rc = _aclrtGetVersion(major, minor, patch)
    if rc:
        raise _error("aclrtGetVersion", rc)
    return int(major[0]), int(minor[0]), int(patch[0])


def get_soc_name() -> str | None:
    """aclrtGetSocName: e.g. "Ascend910B1"; None if CANN returns NULL (no device or not initialised).

    Example::

        get_soc_name()
        # -> 'Ascend910B1'
    """
    p = _aclrtGetSocName()
    if p == _NULL:
        return None
    name: str = ffi.string(p).decode("utf-8", "replace")
    return name


def set_device(device_id: int) -> None:
    """aclrtSetDevice (per thread; gives the thread the device's default context).

    Example::

        set_device(0)
    """
    rc = _aclrtSetDevice(device_id)
    if rc:
        raise _error("aclrtSetDevice", rc)


def reset_device(device_id: int) -> None:
    """aclrtResetDevice.

    Example::

        reset_device(0)
    """
    rc = _aclrtResetDevice(device_id)
    if rc:
        raise _error("aclrtResetDevice", rc)


def get_device() -> int:
    """aclrtGetDevice: this thread's current device id.

    Example::

        get_device()
        # -> 0
    """
    out = _new(_I32P)
    rc = _aclrtGetDevice(out)
    if rc:
        raise _error("aclrtGetDevice", rc)
    return int(out[0])


def get_device_count() -> int:
    """aclrtGetDeviceCount.

    Example::

        get_device_count()
        # -> 8
    """
    out = _new(_U32P)
    rc = _aclrtGetDeviceCount(out)
    if rc:
        raise _error("aclrtGetDeviceCount", rc)
    return int(out[0])


def synchronize_device() -> None:
    """aclrtSynchronizeDevice: wait for all work queued on the current device.

    Example::

        synchronize_device()
    """
    rc = _aclrtSynchronizeDevice()
    if rc:
        raise _error("aclrtSynchronizeDevice", rc)


# ------------------------------------------------------------------------------------------ contexts


def create_context(device_id: int) -> int:
    """aclrtCreateContext: a new context on the device (it becomes the thread's current one).

    Example::

        ctx = create_context(0)
    """
    out = _new(_UINTPTRP)
    rc = _aclrtCreateContext(out, device_id)
    if rc:
        raise _error("aclrtCreateContext", rc)
    return int(out[0])


def destroy_context(context: int) -> None:
    """aclrtDestroyContext.

    Example::

        destroy_context(ctx)
    """
    rc = _aclrtDestroyContext(context)
    if rc:
        raise _error("aclrtDestroyContext", rc)


def set_current_context(context: int) -> None:
    """aclrtSetCurrentContext.

    Example::

        set_current_context(ctx)
    """
    rc = _aclrtSetCurrentContext(context)
    if rc:
        raise _error("aclrtSetCurrentContext", rc)


def get_current_context() -> int:
    """aclrtGetCurrentContext (0 if the thread has none and CANN reports success).

    Example::

        get_current_context()
        # -> 94823412
    """
    out = _new(_UINTPTRP)
    rc = _aclrtGetCurrentContext(out)
    if rc:
        raise _error("aclrtGetCurrentContext", rc)
    return int(out[0])


# ------------------------------------------------------------------------------------------- streams


def create_stream() -> int:
    """aclrtCreateStream on the current context.

    Example::

        stream = create_stream()
    """
    out = _new(_UINTPTRP)
    rc = _aclrtCreateStream(out)
    if rc:
        raise _error("aclrtCreateStream", rc)
    return int(out[0])


def destroy_stream(stream: int) -> None:
    """aclrtDestroyStream.

    Example::

        destroy_stream(stream)
    """
    rc = _aclrtDestroyStream(stream)
    if rc:
        raise _error("aclrtDestroyStream", rc)


def synchronize_stream(stream: int) -> None:
    """aclrtSynchronizeStream: block until everything queued on ``stream`` (0: default) has run.

    Example::

        synchronize_stream(stream)
    """
    rc = _aclrtSynchronizeStream(stream)
    if rc:
        raise _error("aclrtSynchronizeStream", rc)


def synchronize_stream_with_timeout(stream: int, timeout_ms: int) -> None:
    """aclrtSynchronizeStreamWithTimeout (``timeout_ms`` -1 waits forever); 507046 on timeout.

    Example::

        synchronize_stream_with_timeout(stream, 1000)
    """
    rc = _aclrtSynchronizeStreamWithTimeout(stream, timeout_ms)
    if rc:
        raise _error("aclrtSynchronizeStreamWithTimeout", rc)


# -------------------------------------------------------------------------------------------- events


def create_event() -> int:
    """aclrtCreateEvent.

    Example::

        event = create_event()
    """
    out = _new(_UINTPTRP)
    rc = _aclrtCreateEvent(out)
    if rc:
        raise _error("aclrtCreateEvent", rc)
    return int(out[0])


def create_event_with_flag(flag: int) -> int:
    """aclrtCreateEventWithFlag (``ACL_EVENT_TIME_LINE`` = 8 for timing events).

    Example::

        event = create_event_with_flag(8)
    """
    out = _new(_UINTPTRP)
    rc = _aclrtCreateEventWithFlag(out, flag)
    if rc:
        raise _error("aclrtCreateEventWithFlag", rc)
    return int(out[0])


def record_event(event: int, stream: int) -> None:
    """aclrtRecordEvent: queue a record of ``event`` on ``stream``.

    Example::

        record_event(event, stream)
    """
    rc = _aclrtRecordEvent(event, stream)
    if rc:
        raise _error("aclrtRecordEvent", rc)


def synchronize_event(event: int) -> None:
    """aclrtSynchronizeEvent: block until ``event`` has been recorded.

    Example::

        synchronize_event(event)
    """
    rc = _aclrtSynchronizeEvent(event)
    if rc:
        raise _error("aclrtSynchronizeEvent", rc)


def event_elapsed_time(start: int, end: int) -> float:
    """aclrtEventElapsedTime: milliseconds between two recorded events.

    Example::

        event_elapsed_time(start, end)
        # -> 0.125
    """
    out = _new(_FLOATP)
    rc = _aclrtEventElapsedTime(out, start, end)
    if rc:
        raise _error("aclrtEventElapsedTime", rc)
    return float(out[0])


def destroy_event(event: int) -> None:
    """aclrtDestroyEvent.

    Example::

        destroy_event(event)
    """
    rc = _aclrtDestroyEvent(event)
    if rc:
        raise _error("aclrtDestroyEvent", rc)


def create_event_ex_with_flag(flag: int) -> int:
    """aclrtCreateEventExWithFlag (``ACL_EVENT_SYNC`` = 1 for an event streams can wait on).

    Example::

        event = create_event_ex_with_flag(1)
    """
    out = _new(_UINTPTRP)
    rc = _aclrtCreateEventExWithFlag(out, flag)
    if rc:
        raise _error("aclrtCreateEventExWithFlag", rc)
    return int(out[0])


def query_event_status(event: int) -> bool:
    """aclrtQueryEventStatus: True when the event's last record has run (never waits).

    Example::

        query_event_status(event)
        # -> True
    """
    out = _new(_EVENT_STATUS_P)
    rc = _aclrtQueryEventStatus(event, out)
    if rc:
        raise _error("aclrtQueryEventStatus", rc)
    return int(out[0]) == 1


def stream_wait_event(stream: int, event: int) -> None:
    """aclrtStreamWaitEvent: later work on ``stream`` waits for ``event`` (no host wait).

    Example::

        stream_wait_event(stream, event)
    """
    rc = _aclrtStreamWaitEvent(stream, event)
    if rc:
        raise _error("aclrtStreamWaitEvent", rc)


def stream_query(stream: int) -> bool:
    """aclrtStreamQuery: True when everything queued on ``stream`` has run (never waits).

    Example::

        stream_query(stream)
        # -> True
    """
    out = _new(_STREAM_STATUS_P)
    rc = _aclrtStreamQuery(stream, out)
    if rc:
        raise _error("aclrtStreamQuery", rc)
    return int(out[0]) == 0


def set_stream_failure_mode(stream: int, mode: int) -> None:
    """aclrtSetStreamFailureMode (``ACL_CONTINUE_ON_FAILURE`` = 0, ``ACL_STOP_ON_FAILURE`` = 1).

    Example::

        set_stream_failure_mode(stream, 1)
    """
    rc = _aclrtSetStreamFailureMode(stream, mode)
    if rc:
        raise _error("aclrtSetStreamFailureMode", rc)


# --------------------------------------------------------------------------------- graph capture


def capture_begin(stream: int, mode: int) -> None:
    """aclmdlRICaptureBegin: record (not run) the work launched on ``stream`` from now on.

    Example::

        capture_begin(stream, 1)  # ACL_MODEL_RI_CAPTURE_MODE_THREAD_LOCAL
    """
    rc = _aclmdlRICaptureBegin(stream, mode)
    if rc:
        raise _error("aclmdlRICaptureBegin", rc)


def capture_get_info(stream: int) -> tuple[int, int]:
    """aclmdlRICaptureGetInfo: (status, model) of ``stream``'s capture (status 0 none, 1 active, 2 invalidated).

    Example::

        capture_get_info(stream)
        # -> (0, 0)
    """
    status, model = _new(_CAPTURE_STATUS_P), _new(_UINTPTRP)
    rc = _aclmdlRICaptureGetInfo(stream, status, model)
    if rc:
        raise _error("aclmdlRICaptureGetInfo", rc)
    return int(status[0]), int(model[0])


def capture_end(stream: int) -> int:
    """aclmdlRICaptureEnd: stop recording; return the model runtime instance holding the work.

    Example::

        model = capture_end(stream)
    """
    model = _new(_UINTPTRP)
    rc = _aclmdlRICaptureEnd(stream, model)
    if rc:
        raise _error("aclmdlRICaptureEnd", rc)
    return int(model[0])


def ri_execute_async(model: int, stream: int) -> None:
    """aclmdlRIExecuteAsync: queue the captured work again on ``stream``.

    Example::

        ri_execute_async(model, stream)
    """
    rc = _aclmdlRIExecuteAsync(model, stream)
    if rc:
        raise _error("aclmdlRIExecuteAsync", rc)


def ri_destroy(model: int) -> None:
    """aclmdlRIDestroy.

    Example::

        ri_destroy(model)
    """
    rc = _aclmdlRIDestroy(model)
    if rc:
        raise _error("aclmdlRIDestroy", rc)


# -------------------------------------------------------------------------------------------- memory


def malloc(size: int, policy: int = 0) -> int:
    """aclrtMalloc: ``size`` bytes of device memory (policy 0: ACL_MEM_MALLOC_HUGE_FIRST).

    Example::

        ptr = malloc(1 << 20)
    """
    out = _new(_UINTPTRP)
    rc = _aclrtMalloc(out, size, policy)
    if rc:
        raise _error("aclrtMalloc", rc)
    return int(out[0])


def free(ptr: int) -> None:
    """aclrtFree. It does NOT wait for queued work that still uses the block: synchronise first.

    Example::

        free(ptr)
    """
    rc = _aclrtFree(ptr)
    if rc:
        raise _error("aclrtFree", rc)


def malloc_host(size: int) -> int:
    """aclrtMallocHost: ``size`` bytes of pinned host memory.

    Example::

        host = malloc_host(4096)
    """
    out = _new(_UINTPTRP)
    rc = _aclrtMallocHost(out, size)
    if rc:
        raise _error("aclrtMallocHost", rc)
    return int(out[0])


def free_host(ptr: int) -> None:
    """aclrtFreeHost.

    Example::

        free_host(host)
    """
    rc = _aclrtFreeHost(ptr)
    if rc:
        raise _error("aclrtFreeHost", rc)


def memcpy(dst: int, dst_max: int, src: int, count: int, kind: int) -> None:
    """aclrtMemcpy (synchronous for the host, NOT ordered after work queued on a stream).

    ``kind``: 0 host->host, 1 host->device, 2 device->host, 3 device->device. Host addresses of NumPy
    arrays come from :func:`buffer_address`.

    Example::

        a = np.arange(4, dtype=np.float32)
        memcpy(dev, 16, buffer_address(a), a.nbytes, 1)
    """
    rc = _aclrtMemcpy(dst, dst_max, src, count, kind)
    if rc:
        raise _error("aclrtMemcpy", rc)


def memcpy_async(dst: int, dst_max: int, src: int, count: int, kind: int, stream: int) -> None:
    """aclrtMemcpyAsync on ``stream``; host memory must stay alive until the stream has finished.

    Example::

        memcpy_async(dev, 16, buffer_address(a), 16, 1, stream)
    """
    rc = _aclrtMemcpyAsync(dst, dst_max, src, count, kind,
                           stream)
    if rc:
        raise _error("aclrtMemcpyAsync", rc)


def memcpy_2d_async(dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, kind: int,
                    stream: int) -> None:
    """aclrtMemcpy2dAsync: ``height`` rows of ``width`` bytes, rows ``spitch`` / ``dpitch`` bytes apart.

    Example::

        memcpy_2d_async(host, 64, dev, 4096, 64, 8, 2, stream)
    """
    rc = _aclrtMemcpy2dAsync(dst, dpitch, src, spitch, width, height, kind, stream)
    if rc:
        raise _error("aclrtMemcpy2dAsync", rc)


def pointer_get_attributes(ptr: int) -> tuple[int, int]:
    """aclrtPointerGetAttributes: (location type, device or host id) of ``ptr``
    (type 0 host, 1 device, 2 not registered with ACL).

    Example::

        pointer_get_attributes(dev_ptr)
        # -> (1, 0)
    """
    attrs = _new(_PTR_ATTRS_P)
    rc = _aclrtPointerGetAttributes(ptr, attrs)
    if rc:
        raise _error("aclrtPointerGetAttributes", rc)
    return int(attrs.location.type), int(attrs.location.id)


def memset(ptr: int, max_count: int, value: int, count: int) -> None:
    """aclrtMemset: set ``count`` bytes at ``ptr`` to ``value``.

    Example::

        memset(dev, 16, 0, 16)
    """
    rc = _aclrtMemset(ptr, max_count, value, count)
    if rc:
        raise _error("aclrtMemset", rc)


def memset_async(ptr: int, max_count: int, value: int, count: int, stream: int) -> None:
    """aclrtMemsetAsync on ``stream``.

    Example::

        memset_async(dev, 16, 0, 16, stream)
    """
    rc = _aclrtMemsetAsync(ptr, max_count, value, count, stream)
    if rc:
        raise _error("aclrtMemsetAsync", rc)


def get_mem_info(attr: int = 1) -> tuple[int, int]:
    """aclrtGetMemInfo: (free, total) bytes of the current device (attr 1: HBM, 0: DDR).

    Example::

        free_bytes, total_bytes = get_mem_info()
    """
    free_out, total_out = _new(_SIZEP), _new(_SIZEP)
    rc = _aclrtGetMemInfo(attr, free_out, total_out)
    if rc:
        raise _error("aclrtGetMemInfo", rc)
    return int(free_out[0]), int(total_out[0])


def buffer_address(obj: Any, *, writable: bool = False) -> int:
    """The address of a contiguous host buffer (a NumPy array, bytearray, ...), for memcpy's host side.

    The caller keeps ``obj`` alive for as long as CANN may use the address. Non-contiguous arrays are
    refused (ValueError/BufferError from the buffer protocol); ``writable=True`` refuses read-only ones.

    >>> import numpy as np
    >>> a = np.zeros(4, np.float32)
    >>> buffer_address(a) == a.ctypes.data
    True
    """
    return int(ffi.cast(_UINTPTR, ffi.from_buffer(obj, require_writable=writable)))


# ----------------------------------------------------------------------------- descriptors, executors


def create_tensor(
    shape: Sequence[int],
    data_type: int,
    strides: Sequence[int],
    offset: int,
    fmt: int,
    storage_shape: Sequence[int],
    data: int,
) -> Any:
    """aclCreateTensor; ``strides`` and ``offset`` count ELEMENTS. Returns an ``aclTensor *``.

    A NULL result raises ``AclnnArgumentError`` (161002) with CANN's message when it gave one.

    Example::

        t = create_tensor([2, 3], 0, [3, 1], 0, 2, [2, 3], dev)
        destroy_tensor(t)
    """
    tensor = _aclCreateTensor(
        _new(_I64ARR, shape), len(shape), data_type, _new(_I64ARR, strides), offset, fmt,
        _new(_I64ARR, storage_shape), len(storage_shape), data,
    )
    if tensor == _NULL:
        message = recent_error_message() or (
            f"aclCreateTensor returned NULL (shape={list(shape)}, strides={list(strides)}, offset={offset}, "
            f"dtype={data_type}, format={fmt}, storage={list(storage_shape)})"
        )
        raise cann_error("aclCreateTensor", ACLNN_ERR_PARAM_INVALID, message)
    return tensor


def destroy_tensor(tensor: Any) -> None:
    """aclDestroyTensor.

    Example::

        destroy_tensor(t)
    """
    rc = _aclDestroyTensor(tensor)
    if rc:
        raise _error("aclDestroyTensor", rc)


def set_executor_repeatable(executor: Any) -> None:
    """aclSetAclOpExecutorRepeatable (right after phase 1); the executor must then be destroyed explicitly.

    Example::

        set_executor_repeatable(executor)
    """
    rc = _aclSetAclOpExecutorRepeatable(executor)
    if rc:
        raise _error("aclSetAclOpExecutorRepeatable", rc)


def destroy_executor(executor: Any) -> None:
    """aclDestroyAclOpExecutor (repeatable executors only).

    Example::

        destroy_executor(executor)
    """
    rc = _aclDestroyAclOpExecutor(executor)
    if rc:
        raise _error("aclDestroyAclOpExecutor", rc)


def set_input_tensor_addr(executor: Any, index: int, tensor: Any, addr: int) -> None:
    """aclSetInputTensorAddr: point input ``index`` of a repeatable executor at new device memory.

    Example::

        set_input_tensor_addr(executor, 1, t, dev)
    """
    rc = _aclSetInputTensorAddr(executor, index, tensor, addr)
    if rc:
        raise _error("aclSetInputTensorAddr", rc)


def set_output_tensor_addr(executor: Any, index: int, tensor: Any, addr: int) -> None:
    """aclSetOutputTensorAddr: point output ``index`` of a repeatable executor at new device memory.

    Example::

        set_output_tensor_addr(executor, 0, t, dev)
    """
    rc = _aclSetOutputTensorAddr(executor, index, tensor, addr)
    if rc:
        raise _error("aclSetOutputTensorAddr", rc)


# ------------------------------------------------------------------------------------------- the op


def quant_scatter_get_workspace_size(
    self_ref: Any, indices: Any, updates: Any, quant_scales: Any, quant_zero_points: Any | None,
    axis: int, quant_axis: int, reduction: int,
) -> tuple[int, Any]:
    """Phase 1 of aclnnInplaceQuantScatter: (workspace bytes, executor). ``quant_zero_points`` may be None.

    Example::

        size, executor = quant_scatter_get_workspace_size(s, i, u, q, None, -2, -1, 1)
    """
    size = _new(_U64P)
    executor = _new(_EXECPP)
    rc = _aclnnInplaceQuantScatterGetWorkspaceSize(
        self_ref, indices, updates, quant_scales, _NULL if quant_zero_points is None else quant_zero_points,
        axis, quant_axis, reduction, size, executor,
    )
    if rc:
        raise _error("aclnnInplaceQuantScatterGetWorkspaceSize", rc)
    return int(size[0]), executor[0]


def quant_scatter(workspace: int, workspace_size: int, executor: Any, stream: int) -> None:
    """Phase 2 of aclnnInplaceQuantScatter: queue the op on ``stream`` (consumes a non-repeatable executor).

    Example::

        quant_scatter(ws, size, executor, stream)
    """
    rc = _aclnnInplaceQuantScatter(workspace, workspace_size, executor,
                                   stream)
    if rc:
        raise _error("aclnnInplaceQuantScatter", rc)


def quant_scatter_v2_get_workspace_size(
    self_ref: Any, indices: Any, updates: Any, quant_scales: Any, quant_zero_points: Any | None,
    axis: int, quant_axis: int, reduction: int, round_mode: str,
) -> tuple[int, Any]:
    """Phase 1 of aclnnInplaceQuantScatterV2 (CANN >= 8.5, Ascend 950): (workspace bytes, executor).

    Example::

        size, ex = quant_scatter_v2_get_workspace_size(s, i, u, q, None, -2, -1, 1, "rint")
    """
    size = _new(_U64P)
    executor = _new(_EXECPP)
    rc = _aclnnInplaceQuantScatterV2GetWorkspaceSize(
        self_ref, indices, updates, quant_scales, _NULL if quant_zero_points is None else quant_zero_points,
        axis, quant_axis, reduction, round_mode.encode(), size, executor,
    )
    if rc:
        raise _error("aclnnInplaceQuantScatterV2GetWorkspaceSize", rc)
    return int(size[0]), executor[0]


def quant_scatter_v2(workspace: int, workspace_size: int, executor: Any, stream: int) -> None:
    """Phase 2 of aclnnInplaceQuantScatterV2.

    Example::

        quant_scatter_v2(ws, size, ex, stream)
    """
    rc = _aclnnInplaceQuantScatterV2(workspace, workspace_size, executor,
                                     stream)
    if rc:
        raise _error("aclnnInplaceQuantScatterV2", rc)
