"""DLPack both ways: `export` (behind ``DeviceArray.__dlpack__``) and `from_dlpack`, zero-copy.

The exchange structures are the C structs of dlpack.h, declared in ``include/06_dlpack.h`` and built with
cffi; the capsules are made and opened through CPython's PyCapsule API (``ctypes.pythonapi``).

Ascend stream semantics (DLPack defines ``stream`` only for CUDA and ROCm; this is what it means here):
``stream`` is the consumer's stream, where it will use the memory. An int is the consumer's
``aclrtStream`` handle (0 is the default stream), ``None`` means the device's default stream (NULL), and
``-1`` asks for no ordering at all. Otherwise the producer's pending work on the memory is ordered
before the consumer's stream with an event (a fence recorded on each producer stream that used the memory,
``aclrtStreamWaitEvent`` on the consumer's): the host never waits. A toolkit without
``aclrtStreamWaitEvent``, or a consumer stream in a context the package cannot use, gets a host wait on
the producer's streams instead.

Capsules carry no destructor: see `_sweep` for why, and for when an unconsumed capsule's tensor is released.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _calls
from ._fences import fences_for
from ._ffi._cann import ffi
from .dtypes import BFLOAT16, FLOAT16, FLOAT32, INT8, INT32, INT64, dtype_name
from .errors import InvalidDtypeError, InvalidValueError, QScatterError
from .runtime import ARRAYS, Device, Stream, as_address, ensure_runtime, is_open_stream, track, use_device

if TYPE_CHECKING:
    from .memory import DeviceArray

__all__ = ["KDL_ASCEND", "KDL_EXT_DEV", "DLPackError", "export", "from_dlpack", "order_streams"]

KDL_CPU, KDL_EXT_DEV, KDL_ASCEND = 1, 12, 21
DLPACK_VERSION = (1, 1)  # what this module produces, and the highest it asks producers for
FLAG_READ_ONLY, FLAG_IS_COPIED = 1, 2
ACL_MEM_LOCATION_TYPE_DEVICE = 1
NO_ORDERING = -1

# DLDataType (code, bits) of the dtypes a DeviceArray holds: kDLInt 0, kDLFloat 2, kDLBfloat 4; lanes 1.
_CODES: dict[np.dtype[Any], tuple[int, int]] = {
    INT8: (0, 8), INT32: (0, 32), INT64: (0, 64), FLOAT16: (2, 16), FLOAT32: (2, 32), BFLOAT16: (4, 16),
}
_DTYPES = {code: dt for dt, code in _CODES.items()}

# Capsule names (module constants: CPython keeps the pointer, not a copy).
_LEGACY, _VERSIONED = b"dltensor", b"dltensor_versioned"
_USED_LEGACY, _USED_VERSIONED = b"used_dltensor", b"used_dltensor_versioned"

_UINTPTR = ffi.typeof("uintptr_t")
_LEGACY_P = ffi.typeof("DLManagedTensor *")
_VERSIONED_P = ffi.typeof("DLManagedTensorVersioned *")


class DLPackError(QScatterError, BufferError):
    """A DLPack exchange that cannot happen as asked (device, dtype, layout, version or flags)."""


# ------------------------------------------------------------------------------------- PyCapsule API

_api = ctypes.pythonapi
_capsule_new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
    ("PyCapsule_New", _api))
_capsule_is_valid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_IsValid", _api))
_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", _api))
_capsule_set_name = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_SetName", _api))


# ---------------------------------------------------------------------------------------- ordering

def order_streams(device: Device, producers: list[int], consumer: int) -> None:
    """Make work queued later on the ``consumer`` stream wait for what is queued now on each ``producers``
    stream (handles; the same stream needs nothing): a fence event recorded on the producer and
    ``aclrtStreamWaitEvent`` on the consumer, without a host wait where the toolkit allows (see
    ``_fences.FencePool.order``, which recycles the events only once they have run).

    >>> order_streams(Device(0), [Device(0).stream.handle], their_stream_handle)  # doctest: +SKIP
    """
    fences = fences_for(device.id)
    for handle in dict.fromkeys(producers):
        fences.order(consumer, handle)


def _consumer_stream(stream: object) -> int | None:
    """The consumer's stream handle as DLPack's ``stream`` gives it; None for "no ordering" (-1)."""
    if stream is None:
        return 0  # the device's default stream (NULL)
    if isinstance(stream, Stream):
        return stream.handle
    if isinstance(stream, (int, np.integer)) and not isinstance(stream, bool) and int(stream) == NO_ORDERING:
        return None
    try:
        handle: int = as_address(stream, "stream")
        return handle
    except (InvalidDtypeError, InvalidValueError):
        raise InvalidDtypeError("stream", "stream", f"must be an aclrtStream handle (int), -1 (no ordering) or None "
                                f"(the default stream), got {stream!r}") from None


def _producer_streams(arr: DeviceArray) -> list[int]:
    """Every open stream our work on ``arr``'s memory may still be queued on: its own, and any other that
    used its block."""
    streams = [arr.stream.handle]
    if arr.block is not None:
        streams += [arr.block.stream, *sorted(arr.block.streams)]
    return [h for h in dict.fromkeys(streams) if is_open_stream(h)]


# ------------------------------------------------------------------------------------------ export

class _Export:
    """What one exported managed tensor keeps alive until its deleter runs: the C structs, the array, and
    the capsule while nobody has consumed it."""

    __slots__ = ("array", "capsule", "managed", "shape", "strides")

    def __init__(self, array: DeviceArray, managed: Any, shape: Any, strides: Any) -> None:
        self.array, self.managed, self.shape, self.strides = array, managed, shape, strides
        self.capsule: object = None


_exports: dict[int, _Export] = {}
_exports_lock = threading.Lock()
_ONLY_OURS = 3  # sys.getrefcount of a capsule referenced by its _Export alone (+ a local and the argument)


def _forget(managed: Any) -> None:
    with _exports_lock:
        _exports.pop(int(ffi.cast(_UINTPTR, managed)), None)


# The deleter, a C entry point alive for the whole process (consumers may call it at any time).
_delete_legacy = ffi.callback("void(DLManagedTensor *)", _forget)
_delete_versioned = ffi.callback("void(DLManagedTensorVersioned *)", _forget)


def _sweep() -> None:
    """Run the deleter of every capsule that nobody consumed and nobody holds any more, and let go of the
    capsules consumers have taken (renamed ``used_*``).

    The capsules carry no destructor on purpose: a consumer that fails drops the capsule while its
    exception is pending, and no Python code (a ctypes or cffi destructor) can run then without destroying
    that exception. Holding each capsule until its tensor is consumed or abandoned, and checking here (at
    every export and `exported_count`), releases the tensor from normal code instead.
    """
    with _exports_lock:
        entries = [e for e in _exports.values() if e.capsule is not None]
    for entry in entries:
        capsule = entry.capsule
        fresh = _capsule_is_valid(capsule, _VERSIONED) or _capsule_is_valid(capsule, _LEGACY)
        if not fresh:
            entry.capsule = None  # consumed: the consumer owns the tensor and calls the deleter
        elif sys.getrefcount(capsule) <= _ONLY_OURS:
            entry.capsule = None
            _forget(entry.managed)


def exported_count() -> int:
    """Managed tensors exported and not yet released (a leak check); abandoned capsules are swept first.

    >>> exported_count() >= 0
    True
    """
    _sweep()
    return len(_exports)


def _int_pair(name: str, value: object, rule: str) -> tuple[int, int]:
    """``value`` as two ints; otherwise an InvalidDtypeError that says parameter ``name`` must be ``rule``."""
    try:
        first, second = (int(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise InvalidDtypeError(name, name, f"must be {rule}, got {value!r}") from None
    return first, second


def _device_request(arr: DeviceArray, dl_device: object) -> int:
    if dl_device is None:
        return KDL_ASCEND
    kind, index = _int_pair("dl_device", dl_device, "a (device_type, device_id) pair")
    if kind == KDL_CPU:
        raise DLPackError(f"dl_device: {dl_device!r} asks for host memory; a DeviceArray lives on Ascend device "
                          f"{arr.device.id}: copy it with to_numpy() instead")
    if kind not in (KDL_ASCEND, KDL_EXT_DEV) or index != arr.device.id:
        raise DLPackError(f"dl_device: must be ({KDL_ASCEND}, {arr.device.id}) (kDLAscend) or ({KDL_EXT_DEV}, "
                          f"{arr.device.id}) (kDLExtDev, as torch_npu), got {dl_device!r}")
    return kind


def _wants_versioned(max_version: object) -> bool:
    if max_version is None:
        return False
    major, _minor = _int_pair("max_version", max_version, "a (major, minor) pair or None")
    return major >= 1


def export(arr: DeviceArray, *, stream: object = None, max_version: object = None, dl_device: object = None,
           copy: bool | None = None) -> Any:
    """A DLPack capsule for ``arr`` (``DeviceArray.__dlpack__``): versioned (``dltensor_versioned``) when
    ``max_version`` allows major version 1, else legacy (``dltensor``); zero-copy unless ``copy=True``.
    ``stream``: see the module's Ascend stream semantics.

    >>> capsule = export(d, stream=their_stream, max_version=(1, 0))  # doctest: +SKIP
    """
    arr._check_open()
    kind = _device_request(arr, dl_device)
    versioned = _wants_versioned(max_version)
    if copy not in (None, True, False):
        raise InvalidDtypeError("copy", "copy", f"must be True, False or None, got {copy!r}")
    consumer = _consumer_stream(stream)
    if arr.dtype not in _CODES:
        raise DLPackError(f"dtype: {dtype_name(arr.dtype)} has no DLPack type here")
    source = arr.copy() if copy else arr
    if consumer is not None:
        order_streams(arr.device, _producer_streams(source), consumer)
    code, bits = _CODES[source.dtype]
    shape = ffi.new("int64_t[]", list(source.shape) or [0])
    strides = ffi.new("int64_t[]", list(source.element_strides) or [0])
    managed = ffi.new(_VERSIONED_P if versioned else _LEGACY_P)
    tensor = managed.dl_tensor
    tensor.data = ffi.cast("void *", source.ptr)  # the aligned storage base; the view starts byte_offset later
    tensor.device.device_type, tensor.device.device_id = kind, source.device.id
    tensor.ndim = source.ndim
    tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes = code, bits, 1
    tensor.shape, tensor.strides = shape, strides
    tensor.byte_offset = source.offset * source.dtype.itemsize
    if versioned:
        managed.version.major, managed.version.minor = DLPACK_VERSION
        managed.flags = FLAG_IS_COPIED if copy else 0
        managed.deleter = _delete_versioned
    else:
        managed.deleter = _delete_legacy
    _sweep()
    entry = _Export(source, managed, shape, strides)
    entry.capsule = capsule = _capsule_new(int(ffi.cast(_UINTPTR, managed)), _VERSIONED if versioned else _LEGACY,
                                           None)
    with _exports_lock:
        _exports[int(ffi.cast(_UINTPTR, managed))] = entry
    return capsule


# ------------------------------------------------------------------------------------------ import

def _call_deleter(address: int, versioned: bool) -> None:
    managed = ffi.cast(_VERSIONED_P if versioned else _LEGACY_P, address)
    if managed.deleter != ffi.NULL:
        managed.deleter(managed)


def _take(capsule: object) -> tuple[int, bool]:
    """Consume a DLPack capsule: its managed tensor's address, and whether it is versioned."""
    for name, used, versioned in ((_VERSIONED, _USED_VERSIONED, True), (_LEGACY, _USED_LEGACY, False)):
        if _capsule_is_valid(capsule, name):
            address = int(_capsule_pointer(capsule, name))
            _capsule_set_name(capsule, used)  # from now on the tensor is ours: the capsule will not delete it
            return address, versioned
    raise DLPackError(f"obj.__dlpack__() returned {type(capsule).__name__}, not an unused DLPack capsule "
                      "(named dltensor or dltensor_versioned); a capsule can be consumed only once")


def _describe(address: int, versioned: bool) -> tuple[Any, int]:
    """(the DLTensor, flags) of a consumed managed tensor, after checking its version."""
    if versioned:
        managed = ffi.cast(_VERSIONED_P, address)
        if managed.version.major != DLPACK_VERSION[0]:
            raise DLPackError(f"version: the producer's DLPack is {managed.version.major}.{managed.version.minor}"
                              f"; this package reads major version {DLPACK_VERSION[0]}")
        return managed.dl_tensor, int(managed.flags)
    return ffi.cast(_LEGACY_P, address).dl_tensor, 0


def _layout(tensor: Any) -> tuple[int, tuple[int, ...], np.dtype[Any], tuple[int, ...]]:
    """(address of the first element, shape, dtype, element strides) of a DLTensor, checked."""
    code = (int(tensor.dtype.code), int(tensor.dtype.bits))
    if int(tensor.dtype.lanes) != 1 or code not in _DTYPES:
        names = ", ".join(dtype_name(d) for d in _CODES)
        raise DLPackError(f"dtype: DLPack type (code {code[0]}, bits {code[1]}, lanes {int(tensor.dtype.lanes)}) "
                          f"is not one a DeviceArray holds ({names})")
    ndim = int(tensor.ndim)
    shape = tuple(int(tensor.shape[i]) for i in range(ndim))
    if tensor.strides == ffi.NULL:  # compact row-major
        strides, acc = [0] * ndim, 1
        for i in reversed(range(ndim)):
            strides[i], acc = acc, acc * shape[i]
        element_strides = tuple(strides)
    else:
        element_strides = tuple(int(tensor.strides[i]) for i in range(ndim))
    if any(s < 0 for s in element_strides):
        raise DLPackError(f"strides: {element_strides} has a negative stride, which CANN cannot describe; make "
                          "the producer's tensor contiguous first")
    data = int(ffi.cast(_UINTPTR, tensor.data)) + int(tensor.byte_offset)
    return data, shape, _DTYPES[code], element_strides


def _check_device_memory(address: int, device_id: int) -> None:
    """kDLExtDev is shared by unrelated backends: ask ACL whether the address is Ascend device memory."""
    cann = ensure_runtime()
    if not cann.caps.pointer_attributes:
        raise DLPackError("device: a kDLExtDev tensor cannot be checked for Ascend device memory: this toolkit "
                          "lacks aclrtPointerGetAttributes; ask the producer for kDLAscend (21)")
    with use_device(device_id):
        kind, where = _calls.pointer_get_attributes(address)
    if kind != ACL_MEM_LOCATION_TYPE_DEVICE or where != device_id:
        raise DLPackError(f"device: the kDLExtDev tensor at 0x{address:x} is not memory of Ascend device "
                          f"{device_id} (aclrtPointerGetAttributes says location type {kind}, id {where})")


def from_dlpack(obj: Any, *, stream: Stream | None = None) -> DeviceArray:
    """A zero-copy `DeviceArray` over a DLPack producer's Ascend memory (``kDLAscend``, or ``kDLExtDev``
    checked with ``aclrtPointerGetAttributes``).

    ``stream`` is where the array will be used (default: the device's package stream); the producer is
    asked to order its pending work before it. The producer ``obj`` stays alive while the array (or a view
    of it) does, and its deleter runs exactly once: at `DeviceArray.close()` or when the array is collected.

    >>> d = from_dlpack(their_tensor)  # doctest: +SKIP
    """
    from .memory import DeviceArray

    probe = getattr(obj, "__dlpack_device__", None)
    if probe is None or not hasattr(obj, "__dlpack__"):
        raise InvalidDtypeError("obj", "obj", f"must support DLPack (__dlpack__ and __dlpack_device__), got "
                                f"{type(obj).__name__}")
    kind, device_id = (int(v) for v in probe())
    if kind not in (KDL_ASCEND, KDL_EXT_DEV):
        hint = "; for host arrays use DeviceArray.from_numpy" if kind == KDL_CPU else ""
        raise DLPackError(f"obj: DLPack device type {kind} is not Ascend memory (kDLAscend {KDL_ASCEND} or "
                          f"kDLExtDev {KDL_EXT_DEV}){hint}")
    device = Device(device_id)
    if stream is not None and stream.device is not device:
        raise InvalidValueError("stream", "stream", f"belongs to device {stream.device.id}, the tensor to device "
                                f"{device_id}")
    consumer = device.stream if stream is None else stream
    try:
        capsule = obj.__dlpack__(stream=consumer.handle, max_version=DLPACK_VERSION)
    except TypeError:  # a producer older than DLPack 1.0 knows no max_version
        capsule = obj.__dlpack__(stream=consumer.handle)
    address, versioned = _take(capsule)
    try:
        tensor, flags = _describe(address, versioned)
        if flags & FLAG_READ_ONLY:
            raise DLPackError("flags: the producer marked the tensor read-only; a DeviceArray is always writable "
                              "(QuantScatter writes in place)")
        if (int(tensor.device.device_type), int(tensor.device.device_id)) != (kind, device_id):
            raise DLPackError(f"device: the tensor says ({int(tensor.device.device_type)}, "
                              f"{int(tensor.device.device_id)}), __dlpack_device__ said ({kind}, {device_id})")
        data, shape, dtype, element_strides = _layout(tensor)
        if kind == KDL_EXT_DEV:
            _check_device_memory(data, device_id)
        # CANN wants 32-byte aligned tensor addresses: start at the aligned address at or below the first
        # element (inside the same allocation, which starts aligned) and reach the element with an offset.
        base = data - data % 32
        if (data - base) % dtype.itemsize:
            raise DLPackError(f"data: address 0x{data:x} is not aligned to its {dtype_name(dtype)} elements")
        arr = DeviceArray.from_pointer(base, shape, dtype, element_strides=element_strides,
                                       offset=(data - base) // dtype.itemsize, device=device, owner=obj)
    except BaseException:
        _call_deleter(address, versioned)
        raise
    arr._stream = consumer
    arr._finalizer = track(ARRAYS, arr, _call_deleter, address, versioned)
    arr._owns = True  # close() runs the deleter; views share the finalizer and close with it
    return arr
