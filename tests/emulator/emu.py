"""Python side of the CANN emulator: its introspection symbols, and the raw C interface for tests.

:class:`Emu` reads the counters and injects faults. It opens ``<lib64>/libascendcl.so`` by the same
absolute path as the package's loader, so both get the same library instance and see the same state.

:class:`CannLibs` opens the three libraries directly (``RTLD_NOW | RTLD_GLOBAL``, in the order
ascendcl, nnopbase, opapi) with a cffi interface parsed from the project's ``include/*.h``; the
emulator's own tests drive CANN through it without the package. :func:`load_case`, :func:`place` and
:meth:`CannLibs.run_case` run a conformance case through the two-phase call with any memory layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cffi
import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "ACL_DTYPES",
    "COUNTERS",
    "EMU_CDEF",
    "INCLUDE",
    "LAYOUTS",
    "LIVE_COUNTERS",
    "OPERANDS",
    "CannError",
    "CannLibs",
    "Case",
    "CaseRun",
    "Emu",
    "Placed",
    "load_case",
    "place",
]

INCLUDE = Path(__file__).resolve().parent.parent.parent / "include"

EMU_CDEF = """
int64_t emuGetStat(const char *name);
void emuReset(void);
int emuInjectFault(const char *symbol, int nth, int code);
"""

LIVE_COUNTERS: tuple[str, ...] = (
    "live_device_blocks", "live_device_bytes", "live_host_blocks", "live_tensors", "live_executors",
    "live_streams", "live_events", "live_host_bytes", "live_graphs",
)
COUNTERS: tuple[str, ...] = (*LIVE_COUNTERS, "bytes_h2d", "bytes_d2h", "bytes_d2d", "syncs", "errors_detected",
                             "pageable_copies", "device_aborts", "captures", "graph_launches", "host_syncs")


class Emu:
    """Counters and fault injection of the emulator built into ``lib64``. For example::

        emu = Emu(root / "lib64")
        emu.inject("aclrtMalloc", nth=2)   # the 2nd aclrtMalloc from now fails with 207001
        emu.live()["live_device_blocks"]   # blocks allocated and not yet freed
    """

    def __init__(self, lib64: Path | str) -> None:
        self.lib64 = Path(lib64)
        self.ffi = cffi.FFI()
        self.ffi.cdef(EMU_CDEF)
        self._lib: Any = self.ffi.dlopen(str(self.lib64 / "libascendcl.so"), self.ffi.RTLD_NOW | self.ffi.RTLD_GLOBAL)

    def stat(self, name: str) -> int:
        """A counter (see :data:`COUNTERS`, or ``"calls:<symbol>"``); -1 for an unknown name."""
        return int(self._lib.emuGetStat(name.encode()))

    def calls(self, symbol: str) -> int:
        """How often the CANN function ``symbol`` was called since the last :meth:`reset`."""
        return self.stat(f"calls:{symbol}")

    def reset(self) -> None:
        """Zero the traffic counters and call counts and drop pending faults; live counts stay true."""
        self._lib.emuReset()

    def inject(self, symbol: str, nth: int = 1, code: int = 0) -> None:
        """Make the ``nth`` call of ``symbol`` from now fail with ``code`` (0: the function's usual failure)."""
        if self._lib.emuInjectFault(symbol.encode(), nth, code) != 0:
            raise ValueError(f"cannot inject a fault into {symbol!r} (nth={nth}): unknown or not faultable")

    def live(self) -> dict[str, int]:
        """Every ``live_*`` counter by name."""
        return {name: self.stat(name) for name in LIVE_COUNTERS}


class CannError(AssertionError):
    """A CANN call returned a failure status; ``message`` is what ``aclGetRecentErrMsg`` said."""

    def __init__(self, what: str, code: int, message: str | None) -> None:
        super().__init__(f"{what} failed with {code}: {message}")
        self.code = code
        self.message = message


class CannLibs:
    """The emulator's three libraries behind one cffi interface built from ``include/*.h``.

    Attributes ``rt``, ``nnop`` and ``op`` are the library handles; ``ffi`` is the interface. The helpers
    keep tests short: :meth:`check` turns a status into :class:`CannError` with the thread's message.
    """

    def __init__(self, lib64: Path | str) -> None:
        self.lib64 = Path(lib64)
        self.ffi = cffi.FFI()
        for header in sorted(INCLUDE.glob("*.h")):  # file-name order, as the binding reads them
            self.ffi.cdef(header.read_text())
        self.ffi.cdef(EMU_CDEF)
        flags = self.ffi.RTLD_NOW | self.ffi.RTLD_GLOBAL
        self.rt: Any = self.ffi.dlopen(str(self.lib64 / "libascendcl.so"), flags)
        self.nnop: Any = self.ffi.dlopen(str(self.lib64 / "libnnopbase.so"), flags)
        self.op: Any = self.ffi.dlopen(str(self.lib64 / "libopapi.so"), flags)

    # -- status handling --

    def last_error(self) -> str | None:
        """The calling thread's recent error message (reading clears it)."""
        msg = self.rt.aclGetRecentErrMsg()
        return None if msg == self.ffi.NULL else self.ffi.string(msg).decode()

    def check(self, code: int, what: str = "CANN call") -> None:
        if code != 0:
            raise CannError(what, int(code), self.last_error())

    # -- setup --

    def init(self) -> None:
        """aclInit, tolerating an earlier one in this process (the package may have made it)."""
        code = self.rt.aclInit(self.ffi.NULL)
        if code not in (0, 100002):
            self.check(code, "aclInit")
        self.last_error()

    def set_device(self, device: int = 0) -> None:
        self.check(self.rt.aclrtSetDevice(device), "aclrtSetDevice")

    def create_stream(self) -> Any:
        out = self.ffi.new("aclrtStream *")
        self.check(self.rt.aclrtCreateStream(out), "aclrtCreateStream")
        return out[0]

    # -- memory --

    def malloc(self, size: int) -> Any:
        out = self.ffi.new("void **")
        self.check(self.rt.aclrtMalloc(out, size, 0), "aclrtMalloc")
        return out[0]

    def free(self, ptr: Any) -> None:
        self.check(self.rt.aclrtFree(ptr), "aclrtFree")

    def h2d(self, dst: Any, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        """Synchronous host-to-device copy of ``data`` to ``dst + offset`` bytes."""
        buf = self.ffi.from_buffer(data)
        n = len(buf)
        self.check(self.rt.aclrtMemcpy(self.ffi.cast("char *", dst) + offset, n, buf, n, 1), "aclrtMemcpy H2D")

    def d2h(self, src: Any, nbytes: int, offset: int = 0) -> bytes:
        """Synchronous device-to-host copy: NOT ordered after queued work, like the device."""
        out = bytearray(nbytes)
        buf = self.ffi.from_buffer(out)
        self.check(self.rt.aclrtMemcpy(buf, nbytes, self.ffi.cast("char *", src) + offset, nbytes, 2),
                   "aclrtMemcpy D2H")
        return bytes(out)

    # -- descriptors --

    def tensor(self, shape: tuple[int, ...] | list[int], dtype: int, data: Any, *,
               strides: tuple[int, ...] | list[int] | None = None, offset: int = 0,
               storage: tuple[int, ...] | list[int] | None = None, fmt: int = 2) -> Any:
        """aclCreateTensor with element strides (contiguous when None); storage defaults to the view's span."""
        shape = list(shape)
        if strides is None:
            strides, acc = [0] * len(shape), 1
            for i in range(len(shape) - 1, -1, -1):
                strides[i] = acc
                acc *= max(shape[i], 1)
        strides = list(strides)
        if storage is None:
            span = offset + sum((d - 1) * s for d, s in zip(shape, strides, strict=True)) + 1
            storage = [span if all(shape) else 0]
        t = self.nnop.aclCreateTensor(
            self.ffi.new("int64_t[]", shape), len(shape), dtype, self.ffi.new("int64_t[]", strides), offset, fmt,
            self.ffi.new("int64_t[]", list(storage)), len(storage), data,
        )
        if t == self.ffi.NULL:
            raise CannError("aclCreateTensor", -1, self.last_error())
        return t

    def destroy_tensor(self, t: Any) -> None:
        self.check(self.nnop.aclDestroyTensor(t), "aclDestroyTensor")

    # -- the operator, end to end --

    def run_case(self, case: Case, stream: Any, layout: str = "contiguous", *, v2: bool = False,
                 round_mode: str | None = "rint", reduction: int | None = None) -> CaseRun:
        """Place every operand in its own device block with ``layout``, run both phases, synchronise.

        Stops at the first failing step and records its status and message. Releases everything it made.
        """
        ffi = self.ffi
        placed = {name: place(arr, layout) for name, arr in case.arrays.items()}
        blocks: dict[str, Any] = {}
        tensors: dict[str, Any] = {}
        run = CaseRun()
        workspace = ffi.NULL
        try:
            for name, p in placed.items():
                blocks[name] = self.malloc(max(p.buffer.nbytes, 1))
                self.h2d(blocks[name], p.buffer.tobytes())
                tensors[name] = self.tensor(p.shape, case.dtypes[name], blocks[name], strides=p.strides,
                                            offset=p.offset, storage=[p.buffer.size])
            t = [tensors.get(name, ffi.NULL) for name in OPERANDS]
            size = ffi.new("uint64_t *")
            executor = ffi.new("aclOpExecutor **")
            red = reduction if reduction is not None else (1 if case.reduce == "update" else 0)
            if v2:
                mode = ffi.NULL if round_mode is None else ffi.new("char[]", round_mode.encode())
                run.phase1 = self.op.aclnnInplaceQuantScatterV2GetWorkspaceSize(
                    *t, case.axis, case.quant_axis, red, mode, size, executor)
            else:
                run.phase1 = self.op.aclnnInplaceQuantScatterGetWorkspaceSize(
                    *t, case.axis, case.quant_axis, red, size, executor)
            if run.phase1 == 0:
                run.workspace_size = int(size[0])
                if run.workspace_size:
                    workspace = self.malloc(run.workspace_size)
                launch = self.op.aclnnInplaceQuantScatterV2 if v2 else self.op.aclnnInplaceQuantScatter
                run.launch = launch(workspace, run.workspace_size, executor[0], stream)
                if run.launch == 0:
                    run.sync = self.rt.aclrtSynchronizeStream(stream)
            if run.phase1 or run.launch or run.sync:
                run.message = self.last_error()
            me = placed["self"]
            after = np.frombuffer(self.d2h(blocks["self"], me.buffer.nbytes), dtype=me.buffer.dtype)
            run.self_out = me.view_of(after).copy()
            run.self_untouched = bool(np.array_equal(after, me.buffer))
            run.outside_untouched = bool(np.array_equal(after[~me.mask], me.buffer[~me.mask]))
        finally:
            for tensor in tensors.values():
                self.destroy_tensor(tensor)
            for block in blocks.values():
                self.free(block)
            if workspace != ffi.NULL:
                self.free(workspace)
        return run


# -- conformance cases and memory layouts --

OPERANDS: tuple[str, ...] = ("self", "indices", "updates", "quant_scales", "quant_zero_points")
ACL_DTYPES: dict[str, int] = {
    "float32": 0, "float16": 1, "int8": 2, "int32": 3, "uint8": 4, "int16": 6, "uint16": 7, "int64": 9,
    "float64": 11, "bool": 12, "bfloat16": 27,
}
LAYOUTS: tuple[str, ...] = ("contiguous", "padded", "transposed")


@dataclass
class Case:
    """One QuantScatter call: raw arrays (bfloat16 as uint16 bit patterns) and their ACL dtypes."""

    name: str
    arrays: dict[str, np.ndarray]
    dtypes: dict[str, int]
    axis: int = -2
    quant_axis: int = -1
    reduce: str = "update"
    expected: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))  # empty for invalid cases
    error: str | None = None


def load_case(path: Path | str) -> Case:
    """Read a conformance ``.npz`` (see tests/data/conformance/README.md)."""
    with np.load(path) as d:
        arrays = {n: np.ascontiguousarray(d[n]) for n in OPERANDS if n in d.files}
        dtypes = {n: ACL_DTYPES[str(d[f"{n}__dtype"])] for n in arrays}
        return Case(
            name=Path(path).stem, arrays=arrays, dtypes=dtypes, axis=int(d["axis"]), quant_axis=int(d["quant_axis"]),
            reduce=str(d["reduce"]), expected=d["expected"].copy() if "expected" in d.files else np.empty(0, np.int8),
            error=str(d["error"]) if "error" in d.files else None,
        )


@dataclass
class Placed:
    """An array laid into a flat storage ``buffer`` as the view (shape, element strides, element offset)."""

    buffer: np.ndarray
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int
    mask: np.ndarray = field(repr=False)  # True where the view's elements are

    def view_of(self, storage: np.ndarray) -> np.ndarray:
        item = storage.itemsize
        return as_strided(storage[self.offset:], self.shape, tuple(s * item for s in self.strides), writeable=False)


def place(arr: np.ndarray, layout: str = "contiguous", fill: int = 0x5A) -> Placed:
    """Lay ``arr`` into a larger storage filled with ``fill`` bytes.

    ``contiguous``: the plain C layout. ``padded``: a nonzero offset, every other element of a padded
    last dim, and gaps between rows. ``transposed``: stored with the dims reversed (Fortran order) in a
    storage one larger in every dim, then sliced ``[1:]`` in every dim: permuted strides and an offset.
    """
    shape = tuple(int(d) for d in arr.shape)
    if layout == "contiguous":
        strides, acc = [0] * len(shape), 1
        for k in range(len(shape) - 1, -1, -1):
            strides[k], acc = acc, acc * max(shape[k], 1)
        offset, size = 0, max(acc, 1)
    elif layout == "padded":
        strides = [0] * len(shape)
        step = 2
        for k in range(len(shape) - 1, -1, -1):
            strides[k] = step
            step = step * max(shape[k], 1) + 3
        offset = 7
        size = offset + sum((d - 1) * s for d, s in zip(shape, strides, strict=True)) + 1 + 5
    elif layout == "transposed":
        big = [d + 1 for d in reversed(shape)]
        strides_big, acc = [0] * len(big), 1
        for k in range(len(big) - 1, -1, -1):
            strides_big[k], acc = acc, acc * big[k]
        strides = list(reversed(strides_big))  # the transpose
        offset, size = sum(strides), acc  # the [1:] slice in every dim
    else:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    raw = np.frombuffer(bytes([fill]) * (size * arr.itemsize), dtype=arr.dtype).copy()
    mask = np.zeros(size, dtype=bool)
    item = arr.itemsize
    as_strided(raw[offset:], shape, tuple(s * item for s in strides))[...] = arr
    as_strided(mask[offset:], shape, tuple(strides))[...] = True
    return Placed(raw, shape, tuple(strides), offset, mask)


@dataclass
class CaseRun:
    """What :meth:`CannLibs.run_case` saw: each step's status, the first message, ``self`` afterwards."""

    phase1: int = -1
    launch: int = -1
    sync: int = -1
    workspace_size: int = 0
    message: str | None = None
    self_out: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))
    self_untouched: bool = False     # the whole self storage is as it was uploaded
    outside_untouched: bool = False  # nothing outside self's view changed
