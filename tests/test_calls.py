"""The checked-call layer against Python fakes of the C functions (no compiler, no CANN needed).

The fakes receive the arguments _calls builds (addresses as ints, out-parameters, NULL); cffi's own C-side
conversion is exercised against the emulator (test_binding_emulator.py) and by test_address_view below.
Failures check that aclGetRecentErrMsg is read first, on the failing thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from pyacl_qscatter import _calls, _loader
from pyacl_qscatter._ffi._cann import ffi
from pyacl_qscatter.errors import (
    AclnnArgumentError,
    AclnnError,
    CannError,
    CannNotFoundError,
    CannOutOfMemoryError,
    CannResourceError,
    CannUsageError,
)


class Fake:
    """Python stand-ins for the C functions; ``fail[symbol] = code`` makes a symbol fail."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.fail: dict[str, int] = {}
        self.local = threading.local()
        self._keep: list[Any] = []

    def recent(self) -> Any:
        self.log.append(("aclGetRecentErrMsg", threading.get_ident()))
        message = getattr(self.local, "message", None)
        self.local.message = None
        if message is None:
            return ffi.NULL
        buf = ffi.new("char[]", message.encode())
        self._keep.append(buf)
        return buf

    def make(self, symbol: str, effect: Callable[..., Any] | None = None, ret: Any = 0) -> Callable[..., Any]:
        def fn(*args: Any) -> Any:
            self.log.append((symbol, *args))
            code = self.fail.get(symbol)
            if code is not None:
                self.local.message = f"EZ1234 {symbol} failed on purpose"
                return code
            if effect is not None:
                effect(*args)
            return ret

        return fn


def _set(value: Any) -> Callable[..., None]:
    def effect(out: Any, *_: Any) -> None:
        out[0] = value

    return effect


def make_cann(fake: Fake, *, optional: bool = True) -> _loader.Cann:
    effects: dict[str, Callable[..., Any] | None] = {
        "aclrtGetDevice": _set(3), "aclrtGetDeviceCount": _set(2),
        "aclrtCreateContext": _set(0xC0), "aclrtGetCurrentContext": _set(0xC0),
        "aclrtCreateStream": _set(0x5000), "aclrtCreateEvent": _set(0xE0),
        "aclrtCreateEventWithFlag": _set(0xE8), "aclrtMalloc": _set(0x1000),
        "aclrtMallocHost": _set(0x2000), "aclrtEventElapsedTime": _set(1.5),
    }

    def version(major: Any, minor: Any, patch: Any) -> None:
        major[0], minor[0], patch[0] = 8, 1, 0

    def meminfo(_attr: int, free: Any, total: Any) -> None:
        free[0], total[0] = 100, 200

    def phase1(*args: Any) -> None:
        args[-2][0] = 4096
        args[-1][0] = ffi.cast("aclOpExecutor *", 0xEEE0)

    effects.update({"aclrtGetVersion": version, "aclrtGetMemInfo": meminfo,
                    "aclnnInplaceQuantScatterGetWorkspaceSize": phase1,
                    "aclnnInplaceQuantScatterV2GetWorkspaceSize": phase1})
    soc = ffi.new("char[]", b"Ascend910B1")
    fake._keep.append(soc)
    functions: dict[str, Any] = {name: fake.make(name, effects.get(name)) for name in _calls._SYMBOLS}
    functions["aclGetRecentErrMsg"] = fake.recent
    functions["aclrtGetSocName"] = fake.make("aclrtGetSocName", ret=soc)
    functions["aclCreateTensor"] = fake.make("aclCreateTensor", ret=ffi.cast("aclTensor *", 0x7E00))
    caps = _loader.Caps(**{name: optional for name in _loader.CAPABILITIES})
    if not optional:
        for _, (_, symbols) in _loader.CAPABILITIES.items():
            for symbol in symbols:
                functions.pop(symbol)
    return _loader.Cann(ffi=ffi, rt=None, nnopbase=None, opapi=None, paths={}, home="/fake/cann",
                        source="test", caps=caps, functions=functions)


@pytest.fixture
def fake() -> Iterator[Fake]:
    previous = _calls.bound()
    fake = Fake()
    _calls._unbind()
    _calls.bind(make_cann(fake))
    yield fake
    _calls._unbind()
    if previous is not None:
        _calls.bind(previous)


T = ffi.cast("aclTensor *", 0x7E00)
X = ffi.cast("aclOpExecutor *", 0xEEE0)

# public call, its arguments, the C symbol it wraps
CALLS: list[tuple[Callable[..., Any], tuple[Any, ...], str]] = [
    (_calls.init, (), "aclInit"),
    (_calls.finalize, (), "aclFinalize"),
    (_calls.get_version, (), "aclrtGetVersion"),
    (_calls.set_device, (0,), "aclrtSetDevice"),
    (_calls.reset_device, (0,), "aclrtResetDevice"),
    (_calls.get_device, (), "aclrtGetDevice"),
    (_calls.get_device_count, (), "aclrtGetDeviceCount"),
    (_calls.synchronize_device, (), "aclrtSynchronizeDevice"),
    (_calls.create_context, (0,), "aclrtCreateContext"),
    (_calls.destroy_context, (0xC0,), "aclrtDestroyContext"),
    (_calls.set_current_context, (0xC0,), "aclrtSetCurrentContext"),
    (_calls.get_current_context, (), "aclrtGetCurrentContext"),
    (_calls.create_stream, (), "aclrtCreateStream"),
    (_calls.destroy_stream, (0x5000,), "aclrtDestroyStream"),
    (_calls.synchronize_stream, (0,), "aclrtSynchronizeStream"),
    (_calls.synchronize_stream_with_timeout, (0, 100), "aclrtSynchronizeStreamWithTimeout"),
    (_calls.create_event, (), "aclrtCreateEvent"),
    (_calls.create_event_with_flag, (8,), "aclrtCreateEventWithFlag"),
    (_calls.record_event, (0xE0, 0), "aclrtRecordEvent"),
    (_calls.synchronize_event, (0xE0,), "aclrtSynchronizeEvent"),
    (_calls.event_elapsed_time, (0xE0, 0xE8), "aclrtEventElapsedTime"),
    (_calls.destroy_event, (0xE0,), "aclrtDestroyEvent"),
    (_calls.malloc, (64,), "aclrtMalloc"),
    (_calls.free, (0x1000,), "aclrtFree"),
    (_calls.malloc_host, (64,), "aclrtMallocHost"),
    (_calls.free_host, (0x2000,), "aclrtFreeHost"),
    (_calls.memcpy, (0x1000, 64, 0x2000, 64, 1), "aclrtMemcpy"),
    (_calls.memcpy_async, (0x1000, 64, 0x2000, 64, 1, 0x5000), "aclrtMemcpyAsync"),
    (_calls.memset, (0x1000, 64, 0, 64), "aclrtMemset"),
    (_calls.memset_async, (0x1000, 64, 0, 64, 0), "aclrtMemsetAsync"),
    (_calls.get_mem_info, (), "aclrtGetMemInfo"),
    (_calls.destroy_tensor, (T,), "aclDestroyTensor"),
    (_calls.set_executor_repeatable, (X,), "aclSetAclOpExecutorRepeatable"),
    (_calls.destroy_executor, (X,), "aclDestroyAclOpExecutor"),
    (_calls.set_input_tensor_addr, (X, 1, T, 0x1000), "aclSetInputTensorAddr"),
    (_calls.set_output_tensor_addr, (X, 0, T, 0x1000), "aclSetOutputTensorAddr"),
    (_calls.quant_scatter_get_workspace_size, (T, T, T, T, None, -2, -1, 1),
     "aclnnInplaceQuantScatterGetWorkspaceSize"),
    (_calls.quant_scatter, (0x1000, 4096, X, 0x5000), "aclnnInplaceQuantScatter"),
    (_calls.quant_scatter_v2_get_workspace_size, (T, T, T, T, T, -2, -1, 1, "rint"),
     "aclnnInplaceQuantScatterV2GetWorkspaceSize"),
    (_calls.quant_scatter_v2, (0x1000, 4096, X, 0), "aclnnInplaceQuantScatterV2"),
    (_calls.finalize_reference, (), "aclFinalizeReference"),
    (_calls.get_version_str, (), "aclsysGetVersionStr"),
    (_calls.stream_query, (0x5000,), "aclrtStreamQuery"),
    (_calls.stream_wait_event, (0x5000, 0xE0), "aclrtStreamWaitEvent"),
    (_calls.set_stream_failure_mode, (0x5000, 1), "aclrtSetStreamFailureMode"),
    (_calls.memcpy_2d_async, (0x2000, 64, 0x1000, 128, 64, 4, 2, 0x5000), "aclrtMemcpy2dAsync"),
    (_calls.pointer_get_attributes, (0x1000,), "aclrtPointerGetAttributes"),
    (_calls.create_event_ex_with_flag, (1,), "aclrtCreateEventExWithFlag"),
    (_calls.query_event_status, (0xE0,), "aclrtQueryEventStatus"),
    (_calls.capture_begin, (0x5000, 1), "aclmdlRICaptureBegin"),
    (_calls.capture_get_info, (0x5000,), "aclmdlRICaptureGetInfo"),
    (_calls.capture_end, (0x5000,), "aclmdlRICaptureEnd"),
    (_calls.ri_execute_async, (0x9000, 0x5000), "aclmdlRIExecuteAsync"),
    (_calls.ri_destroy, (0x9000,), "aclmdlRIDestroy"),
]
IDS = [symbol for _, _, symbol in CALLS]


def test_every_wrapped_symbol_is_covered() -> None:
    covered = set(IDS) | {"aclGetRecentErrMsg", "aclrtGetSocName", "aclCreateTensor"}
    assert covered == set(_calls._SYMBOLS)
    required = {s for symbols in _loader.REQUIRED.values() for s in symbols}
    optional = {s for _, symbols in _loader.CAPABILITIES.values() for s in symbols}
    assert set(_calls._SYMBOLS) == required | optional


@pytest.mark.parametrize(("call", "args", "symbol"), CALLS, ids=IDS)
def test_success_calls_the_symbol_once(fake: Fake, call: Callable[..., Any], args: tuple[Any, ...],
                                       symbol: str) -> None:
    call(*args)
    assert [entry[0] for entry in fake.log] == [symbol]


@pytest.mark.parametrize("code", [100000, 207001, 161002, 561002, 507015])
@pytest.mark.parametrize(("call", "args", "symbol"), CALLS, ids=IDS)
def test_failure_reads_the_message_first(fake: Fake, call: Callable[..., Any], args: tuple[Any, ...],
                                         symbol: str, code: int) -> None:
    fake.fail[symbol] = code
    with pytest.raises(CannError) as info:
        call(*args)
    err = info.value
    assert (err.function, err.code) == (symbol, code)
    assert err.cann_message == f"EZ1234 {symbol} failed on purpose"
    assert [entry[0] for entry in fake.log] == [symbol, "aclGetRecentErrMsg"]
    assert isinstance(err, MemoryError) == (code == 207001)
    assert isinstance(err, AclnnError) == (code in (161002, 561002))


def test_message_is_read_on_the_failing_thread(fake: Fake) -> None:
    fake.fail["aclrtMalloc"] = 207001
    seen: list[BaseException] = []

    def worker() -> None:
        try:
            _calls.malloc(1 << 40)
        except CannError as exc:
            seen.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    (err,) = seen
    assert isinstance(err, CannOutOfMemoryError)
    assert "EZ1234 aclrtMalloc" in str(err)
    assert fake.log[-1] == ("aclGetRecentErrMsg", t.ident)


def test_no_message_gives_none(fake: Fake) -> None:
    fake.fail["aclrtSetDevice"] = 107001

    def silent() -> Any:
        fake.log.append(("aclGetRecentErrMsg",))
        return ffi.NULL

    _calls._aclGetRecentErrMsg = silent
    with pytest.raises(CannUsageError) as info:
        _calls.set_device(7)
    assert info.value.cann_message == "" and "CANN says" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_return_values(fake: Fake) -> None:
    assert _calls.get_version() == (8, 1, 0)
    assert _calls.get_soc_name() == "Ascend910B1"
    assert _calls.get_device() == 3 and _calls.get_device_count() == 2
    assert _calls.malloc(64) == 0x1000 and _calls.malloc_host(8) == 0x2000
    assert _calls.create_stream() == 0x5000 and _calls.create_event() == 0xE0
    assert _calls.create_event_with_flag(8) == 0xE8
    assert _calls.create_context(0) == 0xC0 and _calls.get_current_context() == 0xC0
    assert _calls.event_elapsed_time(0xE0, 0xE8) == 1.5
    assert _calls.get_mem_info() == (100, 200)
    size, executor = _calls.quant_scatter_get_workspace_size(T, T, T, T, None, -2, -1, 1)
    assert size == 4096 and int(ffi.cast("uintptr_t", executor)) == 0xEEE0
    assert all(isinstance(v, int) for v in (_calls.malloc(1), _calls.create_stream()))


def test_arguments_are_marshalled(fake: Fake) -> None:
    _calls.memcpy_async(0x1000, 64, 0x2000, 32, 2, 0)
    assert fake.log[-1][1:] == (0x1000, 64, 0x2000, 32, 2, 0)  # addresses as ints; stream 0 = default (NULL)
    _calls.quant_scatter_get_workspace_size(T, T, T, T, None, -2, -1, 1)
    args = fake.log[-1][1:]
    assert args[4] == ffi.NULL and args[5:8] == (-2, -1, 1)
    _calls.quant_scatter_v2_get_workspace_size(T, T, T, T, T, 0, -1, 1, "rint")
    args = fake.log[-1][1:]
    assert args[4] == T and args[8] == b"rint"  # cffi turns bytes into a NUL-terminated char *
    _calls.init("/etc/acl.json")
    assert fake.log[-1][1] == b"/etc/acl.json"
    _calls.init()
    assert fake.log[-1][1] == ffi.NULL


def test_create_tensor(fake: Fake) -> None:
    tensor = _calls.create_tensor([2, 3], 1, [3, 1], 0, 2, [6], 0x1000)
    assert int(ffi.cast("uintptr_t", tensor)) == 0x7E00
    (_, dims, ndim, dtype, strides, offset, fmt, storage, nstorage, data) = fake.log[-1]
    assert list(ffi.unpack(dims, ndim)) == [2, 3] and list(ffi.unpack(strides, 2)) == [3, 1]
    assert (dtype, offset, fmt, nstorage) == (1, 0, 2, 1) and list(ffi.unpack(storage, 1)) == [6]
    assert data == 0x1000


def test_create_tensor_null_raises(fake: Fake) -> None:
    def null_with_message(*args: Any) -> Any:
        fake.local.message = "EZ0001 bad dims"
        return ffi.NULL

    _calls._aclCreateTensor = null_with_message
    with pytest.raises(AclnnArgumentError) as info:
        _calls.create_tensor([2], 1, [1], 0, 2, [2], 0x1000)
    assert info.value.code == 161002 and info.value.cann_message == "EZ0001 bad dims"
    _calls._aclCreateTensor = lambda *args: ffi.NULL
    with pytest.raises(AclnnArgumentError) as info:
        _calls.create_tensor([2], 1, [1], 0, 2, [2], 0x1000)
    assert "aclCreateTensor returned NULL" in info.value.cann_message and "shape=[2]" in str(info.value)


def test_missing_optional_symbols() -> None:
    previous = _calls.bound()
    try:
        _calls._unbind()
        _calls.bind(make_cann(Fake(), optional=False))
        with pytest.raises(CannResourceError) as info:
            _calls.quant_scatter_v2(0, 0, X, 0)
        assert info.value.code == 200001 and "aclnnInplaceQuantScatterV2 is not exported" in str(info.value)
        assert "/fake/cann" in str(info.value)
        assert _calls.get_soc_name.__name__ == "get_soc_name"
        with pytest.raises(CannResourceError):
            _calls.get_soc_name()
        _calls.malloc(8)  # required symbols still work
    finally:
        _calls._unbind()
        if previous is not None:
            _calls.bind(previous)


def test_first_call_binds_through_the_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = _calls.bound()
    fake = Fake()
    cann = make_cann(fake)
    loads: list[int] = []

    def load() -> _loader.Cann:
        loads.append(1)
        return cann

    try:
        _calls._unbind()
        assert _calls.bound() is None and _calls.recent_error_message() is None  # never loads
        monkeypatch.setattr(_loader, "load", load)
        assert _calls.malloc(8) == 0x1000
        assert _calls.bound() is cann and loads == [1]
        _calls.free(0x1000)
        assert loads == [1]
    finally:
        _calls._unbind()
        if previous is not None:
            _calls.bind(previous)


def test_first_call_without_cann_raises_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = _calls.bound()

    def load() -> _loader.Cann:
        raise CannNotFoundError([("ASCEND_HOME_PATH", "not set")], "source set_env.sh")

    try:
        _calls._unbind()
        monkeypatch.setattr(_loader, "load", load)
        with pytest.raises(CannNotFoundError):
            _calls.set_device(0)
    finally:
        _calls._unbind()
        if previous is not None:
            _calls.bind(previous)


def test_buffer_address() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert _calls.buffer_address(a) == a.ctypes.data
    assert _calls.buffer_address(bytearray(4), writable=True) > 0
    with pytest.raises((ValueError, BufferError, TypeError)):
        _calls.buffer_address(a[:, ::2])
    ro = a.copy()
    ro.flags.writeable = False
    assert _calls.buffer_address(ro) == ro.ctypes.data
    with pytest.raises((ValueError, BufferError, TypeError)):
        _calls.buffer_address(ro, writable=True)


def test_address_view_matches_the_declared_abi(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every C function _calls uses, seen through _address_view: same arity and result, and each parameter
    either unchanged or a void pointer (or void **) turned into uintptr_t (or uintptr_t *)."""
    from test_binding_support import compile_stub
    from test_ffi import FUNCTIONS

    lib = ffi.dlopen(str(compile_stub(tmp_path_factory.mktemp("view") / "liball.so", FUNCTIONS)))
    try:
        for name in _calls._SYMBOLS:
            declared = ffi.typeof(getattr(lib, name))
            view = ffi.typeof(_calls._address_view(getattr(lib, name)))
            assert view.result == declared.result and len(view.args) == len(declared.args), name
            for d, v in zip(declared.args, view.args, strict=True):
                if d.cname == "void *":
                    assert v.cname == "uintptr_t", name
                elif d.cname == "void * *":
                    assert v.cname == "uintptr_t *", name
                else:
                    assert v == d, name
        assert ffi.sizeof("uintptr_t") == ffi.sizeof("void *")
    finally:
        ffi.dlclose(lib)
