"""The binding against the C emulator of CANN (tests/emulator): loader, checked calls, faults, ``info``.

The emulator is found exactly like a real toolkit (ASCEND_HOME_PATH, set by the ``emulator_root``
fixture). Device work runs on a worker thread that sets and resets device 0 itself, so the main thread's
state is left to the other tests; aclInit is tolerated when someone already called it (100002).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import ml_dtypes
import numpy as np
import pytest

from pyacl_qscatter import _calls, _loader
from pyacl_qscatter.errors import (
    AclnnArgumentError,
    AclnnError,
    CannError,
    CannInternalError,
    CannOutOfMemoryError,
    CannResourceError,
    CannUsageError,
)

pytestmark = pytest.mark.emulator

ROOT = Path(__file__).resolve().parents[1]
R = TypeVar("R")

H2D, D2H = 1, 2
ACL_INT8, ACL_INT32, ACL_BF16, ND = 2, 3, 27, 2


@pytest.fixture
def cann(emulator_root: Any) -> Iterator[_loader.Cann]:
    """The process's CANN (the emulator), initialised."""
    loaded = _loader.load()
    assert loaded.home == os.path.abspath(os.environ["ASCEND_HOME_PATH"])
    _calls.bind(loaded)
    try:
        _calls.init()
    except CannError as exc:
        if exc.code != 100002:  # already initialised by another test: fine
            raise
    yield loaded


@pytest.fixture
def faults(cann: _loader.Cann, emu: Any) -> Iterator[Any]:
    """The emulator's controls; pending faults and counters are cleared afterwards."""
    yield emu
    emu.reset()


def on_device(fn: Callable[[], R]) -> R:
    """Run ``fn`` on a fresh thread with device 0 set (and reset afterwards); re-raise what it raises."""
    result: list[Any] = []

    def worker() -> None:
        try:
            _calls.set_device(0)
            try:
                result.append(fn())
            finally:
                _calls.reset_device(0)
        except BaseException as exc:  # handed to the caller
            result.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    (value,) = result
    if isinstance(value, BaseException):
        raise value
    return value  # type: ignore[no-any-return]


def run_py(code: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASCEND_", "PYACL_QSCATTER_", "CANN_EMU_"))}
    env.update(env_extra)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


# ------------------------------------------------------------------------------------------- loader


def test_load_finds_the_emulator_like_a_toolkit(cann: _loader.Cann) -> None:
    home = Path(os.environ["ASCEND_HOME_PATH"]).resolve()
    assert cann.source in _loader.ENV_VARS
    assert {role: Path(p).resolve() for role, p in cann.paths.items()} == {
        "rt": home / "lib64" / "libascendcl.so",
        "nnopbase": home / "lib64" / "libnnopbase.so",
        "opapi": home / "lib64" / "libopapi.so",
    }
    # Everything the strict emulator exports; aclFinalizeReference only from CANN 8.5 (the default is 8.3.RC1).
    everything = {name: True for name in _loader.Caps().as_dict()}
    assert cann.caps == _loader.Caps(**{**everything, "finalize_reference": False})
    assert _loader.load() is cann and _loader.is_available()[0]


def test_load_without_v2(emulator_variant: Callable[..., Path]) -> None:
    old = emulator_variant(no_v2=True)  # an older toolkit; loaded in a subprocess (one libascendcl per process)
    code = """
import json
from pyacl_qscatter import _calls, _loader
from pyacl_qscatter.errors import CannResourceError
cann = _loader.load()
try:
    _calls.quant_scatter_v2(0, 0, cann.ffi.NULL, 0)
    raised = None
except CannResourceError as exc:
    raised = [exc.code, str(exc)]
print(json.dumps({"caps": cann.caps.as_dict(), "raised": raised, "v1": "aclnnInplaceQuantScatter" in cann.functions}))
"""
    proc = run_py(code, {"ASCEND_HOME_PATH": str(old), "ASCEND_OPP_PATH": str(old / "opp")})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["caps"]["v2"] is False and out["caps"]["repeatable_executor"] is True and out["v1"]
    assert out["raised"][0] == 200001 and "aclnnInplaceQuantScatterV2 is not exported" in out["raised"][1]


# ------------------------------------------------------------------------------------- checked calls


def test_memory_roundtrip(cann: _loader.Cann, emu: Any) -> None:
    before = emu.stat("live_device_blocks")

    def work() -> np.ndarray:
        src = np.arange(64, dtype=np.float32)
        dev = _calls.malloc(src.nbytes)
        try:
            _calls.memcpy(dev, src.nbytes, _calls.buffer_address(src), src.nbytes, H2D)
            _calls.memset(dev, src.nbytes, 0, 16)  # first four floats -> 0.0
            dst = np.empty_like(src)
            _calls.memcpy(_calls.buffer_address(dst, writable=True), dst.nbytes, dev, dst.nbytes, D2H)
            free, total = _calls.get_mem_info(1)
            assert 0 < free <= total
            return dst
        finally:
            _calls.free(dev)

    got = on_device(work)
    assert got[:4].tolist() == [0.0] * 4 and got[4:].tolist() == list(range(4, 64))
    assert emu.stat("live_device_blocks") == before


def test_streams_events_and_async_copies(cann: _loader.Cann, emu: Any) -> None:
    def work() -> tuple[list[int], float, int, int]:
        assert _calls.get_device() == 0 and _calls.get_device_count() >= 1
        stream = _calls.create_stream()
        start, end = _calls.create_event_with_flag(8), _calls.create_event_with_flag(8)
        src = np.arange(8, dtype=np.int32)
        dst = np.zeros_like(src)
        dev = _calls.malloc(src.nbytes)
        try:
            _calls.record_event(start, stream)
            _calls.memcpy_async(dev, src.nbytes, _calls.buffer_address(src), src.nbytes, H2D, stream)
            _calls.memset_async(dev + 4, src.nbytes - 4, 0, 4, stream)  # element 1 -> 0
            _calls.memcpy_async(_calls.buffer_address(dst, writable=True), dst.nbytes, dev, dst.nbytes, D2H,
                                stream)
            _calls.record_event(end, stream)
            _calls.synchronize_event(end)
            _calls.synchronize_stream_with_timeout(stream, 10_000)
            _calls.synchronize_stream(stream)
            elapsed = _calls.event_elapsed_time(start, end)
            live = emu.stat("live_streams"), emu.stat("live_events")
        finally:
            _calls.free(dev)
            _calls.destroy_event(start)
            _calls.destroy_event(end)
            _calls.destroy_stream(stream)
        return dst.tolist(), elapsed, *live

    streams, events = emu.stat("live_streams"), emu.stat("live_events")
    values, elapsed, live_streams, live_events = on_device(work)
    assert values == [0, 0, 2, 3, 4, 5, 6, 7]
    assert elapsed >= 0.0
    assert live_streams == streams + 1 and live_events == events + 2
    assert (emu.stat("live_streams"), emu.stat("live_events")) == (streams, events)


def test_contexts(cann: _loader.Cann) -> None:
    def work() -> tuple[int, int]:
        default = _calls.get_current_context()
        ctx = _calls.create_context(0)
        current = _calls.get_current_context()
        _calls.set_current_context(default)
        _calls.destroy_context(ctx)
        return ctx, current

    ctx, current = on_device(work)
    assert ctx != 0 and current == ctx


def test_version_and_soc(cann: _loader.Cann) -> None:
    major, minor, patch = _calls.get_version()
    assert major >= 1 and minor >= 0 and patch >= 0
    assert _calls.get_soc_name()


# --------------------------------------------------------------------------------- faults and errors


def test_injected_fault_surfaces_with_the_emulators_message(faults: Any) -> None:
    faults.inject("aclrtMalloc", 1, 207001)

    def work() -> None:
        _calls.malloc(64)

    with pytest.raises(CannOutOfMemoryError) as info:
        on_device(work)
    err = info.value
    assert (err.function, err.code, err.name) == ("aclrtMalloc", 207001, "ACL_ERROR_RT_MEMORY_ALLOCATION")
    assert err.cann_message, "the emulator's message must reach the exception"
    assert isinstance(err, MemoryError) and f"CANN says: {err.cann_message}" in str(err)
    assert _calls.recent_error_message() is None  # read and cleared on the failing thread only


def test_default_injected_code(faults: Any) -> None:
    faults.inject("aclrtCreateStream", 1, 0)  # 0: the emulator's default for the function (507000)
    with pytest.raises(CannInternalError) as info:
        on_device(_calls.create_stream)
    assert info.value.code == 507000 and info.value.cann_message


def test_host_pointer_where_device_memory_is_expected(cann: _loader.Cann) -> None:
    host = np.zeros(16, np.uint8)

    def work() -> None:
        src = np.ones(16, np.uint8)
        _calls.memcpy(_calls.buffer_address(host, writable=True), 16, _calls.buffer_address(src), 16, H2D)

    with pytest.raises(CannError) as info:
        on_device(work)
    assert info.value.code in (107000, 100000) and isinstance(info.value, CannUsageError)
    assert isinstance(info.value, ValueError) and info.value.cann_message
    assert host.tolist() == [0] * 16


def test_create_tensor_null_carries_the_emulators_message(faults: Any) -> None:
    faults.inject("aclCreateTensor", 1, 0)

    def work() -> None:
        dev = _calls.malloc(64)
        try:
            _calls.create_tensor([2, 32], ACL_INT8, [32, 1], 0, ND, [2, 32], dev)
        finally:
            _calls.free(dev)

    with pytest.raises(AclnnArgumentError) as info:
        on_device(work)
    assert info.value.code == 161002 and info.value.function == "aclCreateTensor"
    assert info.value.cann_message and "returned NULL" not in info.value.cann_message


def _put(array: np.ndarray) -> int:
    raw = np.ascontiguousarray(array).view(np.uint8)
    dev = _calls.malloc(max(raw.nbytes, 1))
    _calls.memcpy(dev, raw.nbytes, _calls.buffer_address(raw), raw.nbytes, H2D)
    return dev


def _tensor(array: np.ndarray, dtype: int, dev: int) -> Any:
    shape = list(array.shape)
    strides = [s // array.itemsize for s in array.strides]
    return _calls.create_tensor(shape, dtype, strides, 0, ND, shape, dev)


def test_two_phase_op_through_checked_calls(cann: _loader.Cann, emu: Any) -> None:
    bf16 = ml_dtypes.bfloat16
    cache = np.zeros((1, 4, 32), np.int8)
    indices = np.array([2], np.int32)
    updates = np.ones((1, 1, 32), bf16)
    scales = np.full(32, 0.25, bf16)
    before = {name: emu.stat(name) for name in ("live_tensors", "live_executors", "live_device_blocks")}

    def work() -> np.ndarray:
        stream = _calls.create_stream()
        blocks = [_put(a) for a in (cache, indices, updates, scales)]
        tensors = [_tensor(a, t, d) for a, t, d in zip((cache, indices, updates, scales),
                                                        (ACL_INT8, ACL_INT32, ACL_BF16, ACL_BF16), blocks, strict=True)]
        workspace = 0
        try:
            t_self, t_indices, t_updates, t_scales = tensors
            size, executor = _calls.quant_scatter_get_workspace_size(t_self, t_indices, t_updates, t_scales, None,
                                                                     -2, -1, 1)
            workspace = _calls.malloc(size) if size else 0
            _calls.quant_scatter(workspace, size, executor, stream)
            _calls.synchronize_stream(stream)
            out = np.empty_like(cache)
            _calls.memcpy(_calls.buffer_address(out, writable=True), out.nbytes, blocks[0], out.nbytes, D2H)
            return out
        finally:
            for t in tensors:
                _calls.destroy_tensor(t)
            for b in [*blocks, workspace]:
                if b:
                    _calls.free(b)
            _calls.destroy_stream(stream)

    out = on_device(work)
    assert out[0, 2].tolist() == [4] * 32
    assert out[0, [0, 1, 3]].tolist() == [[0] * 32] * 3
    assert {name: emu.stat(name) for name in before} == before


def test_phase_one_rejection_is_an_aclnn_error(faults: Any) -> None:
    faults.inject("aclnnInplaceQuantScatterGetWorkspaceSize", 1, 561002)

    def work() -> None:
        cache = np.zeros((1, 4, 32), np.int8)
        dev = _put(cache)
        t = _tensor(cache, ACL_INT8, dev)
        try:
            _calls.quant_scatter_get_workspace_size(t, t, t, t, None, -2, -1, 1)
        finally:
            _calls.destroy_tensor(t)
            _calls.free(dev)

    with pytest.raises(AclnnError) as info:
        on_device(work)
    assert info.value.code == 561002 and not isinstance(info.value, ValueError)
    assert info.value.cann_message


def test_messages_stay_on_their_thread(faults: Any) -> None:
    faults.inject("aclrtMalloc", 1, 207001)
    errors: dict[str, BaseException] = {}
    barrier = threading.Barrier(2)

    def failing() -> None:
        try:
            on_device(lambda: _calls.malloc(8))
        except CannError as exc:
            errors["failing"] = exc
        barrier.wait()

    def bystander() -> None:
        barrier.wait()
        errors["bystander_message"] = Exception(_calls.recent_error_message())

    threads = [threading.Thread(target=failing), threading.Thread(target=bystander)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    err = errors["failing"]
    assert isinstance(err, CannOutOfMemoryError) and err.cann_message
    assert errors["bystander_message"].args == (None,)


def test_api_not_supported_is_a_resource_error() -> None:
    assert issubclass(CannResourceError, CannError)


# ---------------------------------------------------------------------------------------------- info


def test_info_reports_the_emulator(emulator_root: Any) -> None:
    home = os.environ["ASCEND_HOME_PATH"]
    env = {"ASCEND_HOME_PATH": home, "ASCEND_OPP_PATH": os.path.join(home, "opp"),
           "CANN_EMU_SOC": "Ascend910B3", "CANN_EMU_DEVICE_COUNT": "2"}
    proc = run_py("from pyacl_qscatter._cli.info import main; raise SystemExit(main([]))", env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"found at   {os.path.abspath(home)} (via ASCEND_HOME_PATH)" in out
    assert "SoC        Ascend910B3" in out and "devices    2" in out
    assert "ACL API    unknown" not in out and "release    " in out
    assert "aclnnInplaceQuantScatterV2 (V2)    yes" in out
    assert "Notes" not in out or "failed" not in out.split("Notes", 1)[1]
    proc = run_py("from pyacl_qscatter._cli.info import main; raise SystemExit(main(['--json']))", env)
    data = json.loads(proc.stdout)
    assert data["cann_found"] and data["device_count"] == 2 and data["soc_name"] == "Ascend910B3"
    assert data["caps"]["v2"] and data["paths"]["rt"].endswith("lib64/libascendcl.so")


def test_info_in_a_fresh_process_makes_one_acl_init_and_gives_it_back(emulator_root: Any) -> None:
    # info used to call aclInit itself after the npu backend check had made the package's own: it then
    # reported "already initialised in this process" in a fresh process, and left a count behind.
    home = os.environ["ASCEND_HOME_PATH"]
    code = """
import atexit, json
from pyacl_qscatter import _diagnostics, _loader
emu = Emu(_loader.load().paths["rt"].rsplit("/", 1)[0])
atexit.register(lambda: print(json.dumps({k: emu.calls(k) for k in ("aclInit", "aclFinalize",
                                           "aclFinalizeReference")})))  # runs after the package's teardown
report = _diagnostics.collect()
print(json.dumps({"notes": report.notes, "count": report.device_count, "api": report.acl_api_version,
                  "inits": emu.calls("aclInit")}))
"""
    prelude = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\nfrom emulator.emu import Emu\n"
    proc = run_py(prelude + code, {"ASCEND_HOME_PATH": home, "ASCEND_OPP_PATH": os.path.join(home, "opp")})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    during, at_exit = json.loads(lines[-2]), json.loads(lines[-1])
    assert not any("already initialised" in n for n in during["notes"]), during["notes"]
    assert during["inits"] == 1 and during["count"] == 1 and during["api"]
    assert at_exit["aclInit"] == 1
    assert at_exit["aclFinalize"] + max(at_exit["aclFinalizeReference"], 0) == 1  # whichever the toolkit has


def test_info_survives_a_failing_runtime(emulator_root: Any) -> None:
    home = os.environ["ASCEND_HOME_PATH"]
    env = {"ASCEND_HOME_PATH": home, "ASCEND_OPP_PATH": os.path.join(home, "opp"),
           "CANN_EMU_FAIL": "aclInit:1,aclInit:2"}  # the npu backend check and info's device query both fail
    proc = run_py("from pyacl_qscatter._cli.info import main; raise SystemExit(main([]))", env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "npu  unavailable" in out and f"found at   {os.path.abspath(home)}" in out
    notes = out.split("\nNotes\n", 1)[1]
    assert "  - aclInit failed with ACL_ERROR_INTERNAL_ERROR (500000)" in notes
    assert "\n    CANN says: " in notes  # multi-line messages stay indented under their item
