"""A foreign DLPack runtime for the tests, written with ctypes only (it never imports pyacl_qscatter).

- :class:`Borrowed` is a consumer: it takes a capsule, renames it ``used_*`` as DLPack says, reads the
  managed tensor and calls its deleter once when released.
- :class:`ForeignTensor` is a producer: device memory from the emulator's ``aclrtMalloc`` (through
  :class:`emulator.emu.CannLibs`, as another runtime would allocate it), exported as ``kDLAscend`` or as
  ``kDLExtDev`` like torch_npu, contiguous or strided (with a byte offset), legacy or versioned; it counts
  its deleter calls and records the ``stream`` each ``__dlpack__`` call received.
"""

from __future__ import annotations

import ctypes
from typing import Any

import ml_dtypes
import numpy as np
from numpy.lib.stride_tricks import as_strided

KDL_EXT_DEV, KDL_ASCEND = 12, 21
READ_ONLY, IS_COPIED = 1, 2
DTYPES = {(0, 8): np.dtype(np.int8), (0, 32): np.dtype(np.int32), (0, 64): np.dtype(np.int64),
          (2, 16): np.dtype(np.float16), (2, 32): np.dtype(np.float32), (4, 16): np.dtype(ml_dtypes.bfloat16),
          (1, 8): np.dtype(np.uint8)}
CODES = {dt: code for code, dt in DTYPES.items()}


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32), ("dtype", DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", DELETER)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p), ("deleter", DELETER),
                ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]


_api = ctypes.pythonapi
_is_valid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_IsValid", _api))
_get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_GetPointer", _api))
_set_name = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(("PyCapsule_SetName", _api))
_get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", _api))
CAPSULE_DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, CAPSULE_DESTRUCTOR)(
    ("PyCapsule_New", _api))
_raw_valid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(("PyCapsule_IsValid", _api))
_raw_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(("PyCapsule_GetPointer", _api))
NAMES = {False: b"dltensor", True: b"dltensor_versioned"}
USED = {False: b"used_dltensor", True: b"used_dltensor_versioned"}


def capsule_name(capsule: object) -> str:
    return _get_name(capsule).decode()


class Borrowed:
    """A consumer's hold on a DLPack tensor."""

    def __init__(self, capsule: object) -> None:
        versioned = bool(_is_valid(capsule, NAMES[True]))
        assert versioned or _is_valid(capsule, NAMES[False]), f"not a fresh DLPack capsule: {capsule!r}"
        self.address = _get_pointer(capsule, NAMES[versioned])
        assert _set_name(capsule, USED[versioned]) == 0
        self.versioned = versioned
        kind = DLManagedTensorVersioned if versioned else DLManagedTensor
        self.managed = kind.from_address(self.address)
        t = self.managed.dl_tensor
        self.version = (self.managed.version.major, self.managed.version.minor) if versioned else None
        self.flags = int(self.managed.flags) if versioned else 0
        self.data = int(t.data or 0) + int(t.byte_offset)
        self.device = (int(t.device.device_type), int(t.device.device_id))
        self.shape = tuple(t.shape[i] for i in range(t.ndim))
        self.strides = None if not t.strides else tuple(t.strides[i] for i in range(t.ndim))
        self.dtype = DTYPES[(t.dtype.code, t.dtype.bits)]
        assert t.dtype.lanes == 1
        self.released = False

    def read(self, c: Any) -> np.ndarray:
        """The tensor's elements, by a synchronous copy (callers order queued work first)."""
        item = self.dtype.itemsize
        strides = self.strides or tuple(int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape)))
        extent = 1 + sum((n - 1) * s for n, s in zip(self.shape, strides, strict=True)) if all(self.shape) else 0
        raw = np.frombuffer(c.d2h(c.ffi.cast("void *", self.data), extent * item), self.dtype) if extent else \
            np.empty(0, self.dtype)
        return as_strided(raw, self.shape, tuple(s * item for s in strides)).copy()

    def release(self) -> None:
        assert not self.released, "released twice"
        self.released = True
        if self.managed.deleter:
            self.managed.deleter(self.address)


def consume(obj: Any, **kwargs: Any) -> Borrowed:
    return Borrowed(obj.__dlpack__(**kwargs))


class ForeignTensor:
    """A producer's tensor in device memory it allocated itself (freed by :meth:`free`), or, made by
    :meth:`over`, a re-export of memory it borrowed."""

    def __init__(self, c: Any, host: np.ndarray, *, device_type: int = KDL_ASCEND, strided: bool = False,
                 flags: int = 0, version: tuple[int, int] = (1, 0), dtype_code: tuple[int, int] | None = None,
                 negative: bool = False) -> None:
        host = np.ascontiguousarray(host)
        if strided:  # inside a larger buffer: offset 1 and stride 2 in every dimension, sentinel around
            base = np.full(tuple(2 * d + 1 for d in host.shape), 0x5A, np.uint8).view(np.int8).astype(host.dtype)
            view = base[tuple(slice(1, 1 + 2 * d, 2) for d in host.shape)]
        else:
            base = np.empty(host.shape, host.dtype)
            view = base[...]
        view[...] = host
        self.host, self.base, self.strided = host, base, strided
        self.ptr = c.malloc(max(base.nbytes, 1))
        c.h2d(self.ptr, base.tobytes())
        byte_offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        elem_strides = tuple(s // host.dtype.itemsize for s in view.strides)
        if negative:
            elem_strides = (-elem_strides[0], *elem_strides[1:])
        self._setup(c, int(c.ffi.cast("uintptr_t", self.ptr)), byte_offset, host.shape, elem_strides,
                    dtype_code or CODES[host.dtype], device_type, flags, version)

    @classmethod
    def over(cls, c: Any, got: Borrowed) -> ForeignTensor:
        """A tensor of this runtime over memory it borrowed (never freed by it)."""
        self = cls.__new__(cls)
        self.ptr = None
        strides = got.strides or tuple(int(np.prod(got.shape[i + 1 :])) for i in range(len(got.shape)))
        self._setup(c, got.data, 0, got.shape, strides, CODES[got.dtype], got.device[0], 0, (1, 0))
        return self

    def _setup(self, c: Any, address: int, byte_offset: int, shape: tuple[int, ...], elem_strides: tuple[int, ...],
               code: tuple[int, int], device_type: int, flags: int, version: tuple[int, int]) -> None:
        self.c, self.address, self.byte_offset = c, address, byte_offset
        self.shape, self.elem_strides, self.code = shape, elem_strides, code
        self.device_type, self.flags, self.version = device_type, flags, version
        self.streams: list[Any] = []
        self.deleted = 0
        self._keep: dict[int, tuple[Any, ...]] = {}
        self._deleter = DELETER(self._on_delete)
        self._destructor = CAPSULE_DESTRUCTOR(self._on_capsule_gone)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (self.device_type, 0)

    def __dlpack__(self, *, stream: Any = None, max_version: tuple[int, int] | None = None, **_: Any) -> object:
        self.streams.append(stream)
        versioned = max_version is not None and max_version[0] >= 1
        managed: Any = DLManagedTensorVersioned() if versioned else DLManagedTensor()
        ndim = len(self.shape)
        shape = (ctypes.c_int64 * max(ndim, 1))(*self.shape)
        strides = (ctypes.c_int64 * max(ndim, 1))(*self.elem_strides)
        t = managed.dl_tensor
        t.data, t.byte_offset = self.address, self.byte_offset
        t.device.device_type, t.device.device_id = self.device_type, 0
        t.ndim = ndim
        t.dtype.code, t.dtype.bits, t.dtype.lanes = self.code[0], self.code[1], 1
        t.shape, t.strides = shape, strides
        managed.deleter = self._deleter
        if versioned:
            managed.version.major, managed.version.minor = self.version
            managed.flags = self.flags
        address = ctypes.addressof(managed)
        self._keep[address] = (managed, shape, strides)
        return _new(address, NAMES[versioned], self._destructor)

    def _on_delete(self, address: int) -> None:
        assert self._keep.pop(address, None) is not None, "deleter called twice for one tensor"
        self.deleted += 1

    def _on_capsule_gone(self, capsule: int) -> None:
        for versioned in (True, False):
            if _raw_valid(capsule, NAMES[versioned]):
                self._on_delete(_raw_pointer(capsule, NAMES[versioned]))

    def to_numpy(self) -> np.ndarray:
        """The tensor's current elements (a synchronous copy)."""
        raw = np.frombuffer(self.c.d2h(self.ptr, self.base.nbytes), self.base.dtype).reshape(self.base.shape)
        return raw[tuple(slice(1, 1 + 2 * d, 2) for d in self.host.shape)].copy() if self.strided else raw.copy()

    def free(self) -> None:
        self.c.free(self.ptr)
