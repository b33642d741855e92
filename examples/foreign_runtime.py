"""Embedding in another runtime: device memory and a stream made by someone else (here: plain ctypes calls
to libascendcl, as any runtime makes them) are wrapped without copying (`DeviceArray.from_pointer`,
`Stream.from_handle`), written by the op, then handed on through DLPack and read back. The foreign runtime
keeps ownership: the package never frees its memory or destroys its stream.

Run: python examples/foreign_runtime.py   (needs CANN and a device, or the emulator; ASCEND_HOME_PATH set)
"""

from __future__ import annotations

import ctypes
import os
import sys

import ml_dtypes
import numpy as np

import pyacl_qscatter as qs
from pyacl_qscatter import DeviceArray, Stream

BF16 = ml_dtypes.bfloat16
SHAPE = (4, 64, 128)  # [batch, seq, dim] int8
H2D, D2H = 1, 2  # aclrtMemcpyKind


class ForeignRuntime:
    """The other runtime: its own library handle, stream and device memory, released by itself."""

    def __init__(self) -> None:
        home = os.environ.get("ASCEND_HOME_PATH") or os.environ.get("ASCEND_TOOLKIT_HOME") or \
            "/usr/local/Ascend/ascend-toolkit/latest"
        self.acl = ctypes.CDLL(os.path.join(home, "lib64", "libascendcl.so"), mode=ctypes.RTLD_GLOBAL)
        self.acl.aclrtMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_int]
        self.acl.aclrtFree.argtypes = [ctypes.c_void_p]
        self.acl.aclrtCreateStream.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.acl.aclrtDestroyStream.argtypes = [ctypes.c_void_p]
        self.acl.aclrtSynchronizeStream.argtypes = [ctypes.c_void_p]
        self.acl.aclrtMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                                         ctypes.c_int]
        self.inited = self.acl.aclInit(None) == 0  # 100002 when ACL is up already: fine, still counted
        self.check(self.acl.aclrtSetDevice(0), "aclrtSetDevice")
        self.stream = ctypes.c_void_p()
        self.check(self.acl.aclrtCreateStream(ctypes.byref(self.stream)), "aclrtCreateStream")
        self.ptr = ctypes.c_void_p()
        self.nbytes = int(np.prod(SHAPE))
        self.check(self.acl.aclrtMalloc(ctypes.byref(self.ptr), self.nbytes, 0), "aclrtMalloc")

    @staticmethod
    def check(code: int, what: str) -> None:
        if code != 0:
            raise RuntimeError(f"{what} failed with {code}")

    def upload(self, host: np.ndarray) -> None:
        self.check(self.acl.aclrtMemcpy(self.ptr, self.nbytes, host.ctypes.data, host.nbytes, H2D), "aclrtMemcpy")

    def download(self) -> np.ndarray:
        out = np.empty(SHAPE, np.int8)
        self.check(self.acl.aclrtSynchronizeStream(self.stream), "aclrtSynchronizeStream")
        self.check(self.acl.aclrtMemcpy(out.ctypes.data, out.nbytes, self.ptr, self.nbytes, D2H), "aclrtMemcpy")
        return out

    def close(self) -> None:
        self.check(self.acl.aclrtSynchronizeStream(self.stream), "aclrtSynchronizeStream")
        self.check(self.acl.aclrtFree(self.ptr), "aclrtFree")
        self.check(self.acl.aclrtDestroyStream(self.stream), "aclrtDestroyStream")


def main() -> int:
    ok, why = qs.backend_status("npu")
    if not ok:
        print(f"needs CANN and a device (or the emulator, see the README): {why}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(5)
    initial = rng.integers(-128, 128, SHAPE, dtype=np.int8)
    positions = np.array([0, 10, 20, 63], np.int32)
    rows = rng.normal(0, 1, (4, 1, 128)).astype(BF16)
    scales = rng.uniform(0.01, 0.03, 128).astype(BF16)
    want = qs.quant_scatter(initial, positions, rows, scales, backend="cpu")

    other = ForeignRuntime()
    other.upload(initial)
    stream = Stream.from_handle(other.stream, owner=other)  # work runs on their stream, in their context
    cache = DeviceArray.from_pointer(other.ptr, SHAPE, np.int8, owner=other)  # their memory, never freed here
    qs.quant_scatter_(cache, positions, rows, scales, stream=stream)
    wrote = np.array_equal(other.download(), want)
    print(f"op on the foreign runtime's memory and stream: the runtime reads back "
          f"{'the cpu reference result' if wrote else 'a DIFFERENT result'}")

    # Hand the array on through DLPack (kDLAscend) and take it back: the same memory, no copy.
    again = qs.from_dlpack(cache)
    same_memory = again.data_ptr == cache.data_ptr
    print(f"DLPack: device {cache.__dlpack_device__()} (kDLAscend = 21), same address after the round trip: "
          f"{same_memory}")
    qs.quant_scatter_(again, np.array([1], np.int32), rows[:1] * 2, scales, stream=stream)
    want2 = want.copy()
    qs.quant_scatter_(want2, np.array([1], np.int32), rows[:1] * 2, scales, backend="cpu")
    via_dlpack = np.array_equal(other.download(), want2)
    print(f"a write through the imported array lands in the foreign memory: {via_dlpack}")

    again.close()
    cache.close()
    stream.close()  # forgets the stream; the foreign runtime destroys it
    other.close()
    return 0 if wrote and via_dlpack and same_memory else 1


if __name__ == "__main__":
    raise SystemExit(main())
