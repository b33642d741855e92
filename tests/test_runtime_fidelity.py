"""The package against the strict toolkit (issue 10, items 5 to 10): the caller's context, addresses,
tensor alignment, device faults, fork, aclInit/aclFinalize pairing and the kernel path.

Each test shows the package no longer makes the wrong call: the caller's context is current again after
our calls, a stopped device gets no work queued, a fork child makes no CANN call at exit, the package
gives back exactly the aclInit calls it made.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from emulator.emu import CannLibs, Emu
from reliability import CHILD_PROLOGUE, report, run_script

import pyacl_qscatter as qs
from pyacl_qscatter import _calls, runtime
from pyacl_qscatter.errors import InvalidDtypeError, InvalidValueError
from pyacl_qscatter.memory import DeviceArray
from pyacl_qscatter.runtime import Device, Event, Stream, as_address, use_device

pytestmark = pytest.mark.emulator
BF16 = ml_dtypes.bfloat16


def current(c: CannLibs) -> int:
    out = c.ffi.new("aclrtContext *")
    c.check(c.rt.aclrtGetCurrentContext(out), "aclrtGetCurrentContext")
    return int(c.ffi.cast("uintptr_t", out[0]))


@contextlib.contextmanager
def foreign_context(c: CannLibs) -> Iterator[int]:
    """A context another runtime made with aclrtCreateContext (through the raw libraries): current inside."""
    before = current(c)
    out = c.ffi.new("aclrtContext *")
    c.check(c.rt.aclrtCreateContext(out, 0), "aclrtCreateContext")
    try:
        yield int(c.ffi.cast("uintptr_t", out[0]))
    finally:
        c.check(c.rt.aclrtSetCurrentContext(c.ffi.cast("aclrtContext", before)), "aclrtSetCurrentContext")
        c.check(c.rt.aclrtDestroyContext(out[0]), "aclrtDestroyContext")


def inputs(batch: int = 2, seq: int = 8, hidden: int = 32) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(7)
    cache = np.zeros((batch, seq, hidden), np.int8)
    idx = np.arange(batch, dtype=np.int32) % seq
    upd = rng.standard_normal((batch, 1, hidden)).astype(BF16)
    sc = np.full(hidden, 0.05, BF16)
    return cache, idx, upd, sc


# ------------------------------------------------------------------------------------ the caller's context


def test_use_device_switches_only_when_needed_and_restores(dev: Device, emulator_cann: CannLibs,
                                                           emu: Emu) -> None:
    c = emulator_cann
    ours = runtime._contexts[0]
    with foreign_context(c) as theirs:
        sets = emu.calls("aclrtSetCurrentContext")
        with use_device(0):
            assert current(c) == ours
            with use_device(0):  # nested: already current, nothing to switch or restore
                assert current(c) == ours
        assert current(c) == theirs
        assert emu.calls("aclrtSetCurrentContext") - sets == 2  # there and back, once
    sets = emu.calls("aclrtSetCurrentContext")
    with use_device(0):  # ours is current already: the hot path is one query, no switch
        pass
    assert emu.calls("aclrtSetCurrentContext") == sets


def test_runtime_calls_leave_a_foreign_context_current(dev: Device, emulator_cann: CannLibs) -> None:
    c = emulator_cann
    with foreign_context(c) as theirs:
        dev.stream.synchronize()
        dev.mem_info()
        dev.synchronize()
        with Stream() as s, Event() as e:
            e.record(s)
            e.synchronize()
            assert current(c) == theirs
        assert current(c) == theirs
        assert dev.activate() is dev and current(c) == theirs


def test_use_device_restores_even_when_the_call_fails(dev: Device, emulator_cann: CannLibs) -> None:
    c = emulator_cann
    with foreign_context(c) as theirs:
        with pytest.raises(qs.CannError), use_device(0):
            _calls.synchronize_stream(12345)  # not a stream: CANN refuses
        assert current(c) == theirs


def test_quant_scatter_leaves_a_foreign_context_current(dev: Device, emulator_cann: CannLibs) -> None:
    c = emulator_cann
    cache, idx, upd, sc = inputs()
    with foreign_context(c) as theirs:
        qs.quant_scatter_(cache, idx, upd, sc, backend="npu")
        assert current(c) == theirs
        d = DeviceArray.from_numpy(cache)
        qs.quant_scatter_(d, idx, upd, sc)
        d.to_numpy()
        assert current(c) == theirs
        d.close()


def test_from_handle_records_the_callers_context(dev: Device, emulator_cann: CannLibs) -> None:
    c = emulator_cann
    with foreign_context(c) as theirs:
        handle = c.create_stream()  # the foreign runtime's stream, in its context
        try:
            s = Stream.from_handle(c.ffi.cast("void *", handle), owner=c)
            assert s.context == theirs and s.device is dev and s.handle == as_address(handle, "handle")
            c.check(c.rt.aclrtSetCurrentContext(c.ffi.cast("aclrtContext", runtime._contexts[0])))
            s.synchronize()  # runs in the stream's context, then puts ours (the caller's now) back
            assert current(c) == runtime._contexts[0]
            c.check(c.rt.aclrtSetCurrentContext(c.ffi.cast("aclrtContext", theirs)))
            given = Stream.from_handle(int(c.ffi.cast("uintptr_t", handle)), device=0, context=np.uint64(theirs))
            assert given.context == theirs
            s.close()
            given.close()
        finally:
            c.check(c.rt.aclrtDestroyStream(handle), "aclrtDestroyStream")


class _Handle:
    def __int__(self) -> int:
        return 0x4000


@pytest.mark.parametrize("value", [0x4000, np.int64(0x4000), np.uint64(0x4000), ctypes.c_void_p(0x4000), _Handle()])
def test_as_address_accepts_every_handle_kind(value: Any) -> None:
    assert as_address(value, "handle") == 0x4000


def test_as_address_accepts_cffi_pointers(emulator_cann: CannLibs) -> None:
    ffi = emulator_cann.ffi
    assert as_address(ffi.cast("void *", 0x4000), "ptr") == 0x4000
    assert as_address(ffi.NULL, "ptr") == 0 and as_address(ctypes.c_void_p(), "ptr") == 0


@pytest.mark.parametrize("value", ["0x10", 1.5, True, b"x", object()])
def test_as_address_refuses_what_is_not_an_address(value: Any) -> None:
    with pytest.raises(InvalidDtypeError, match="handle: must be an address"):
        as_address(value, "handle")
    with pytest.raises(InvalidValueError, match="non-negative"):
        as_address(-1, "handle")


# --------------------------------------------------------------------------------- tensor address alignment


def test_from_pointer_requires_32_byte_alignment(dev: Device, emu: Emu) -> None:
    base = DeviceArray.zeros((256,), np.int8)
    errors = emu.stat("errors_detected")
    with pytest.raises(InvalidValueError, match="ptr: must be 32-byte aligned, as aclCreateTensor requires"):
        DeviceArray.from_pointer(base.ptr + 16, (64,), np.int8, owner=base)
    view = DeviceArray.from_pointer(base.ptr + 32, (64,), np.int8, owner=base)
    cache, idx, upd, sc = inputs(1, 2, 32)
    target = DeviceArray.from_pointer(base.ptr + 64, cache.shape, np.int8, owner=base)
    qs.quant_scatter_(target, idx, upd, sc)
    target.to_numpy()
    assert emu.stat("errors_detected") == errors  # nothing misaligned reached aclCreateTensor
    view.close()
    target.close()
    base.close()


# ---------------------------------------------------------------------------------------------- faults

FAULT_SCRIPT = CHILD_PROLOGUE + r"""
import numpy as np, ml_dtypes
import pyacl_qscatter as qs
from pyacl_qscatter.errors import DeviceFaultError
bf = ml_dtypes.bfloat16
cache = np.zeros((2, 8, 32), np.int8)
idx = np.array([1, 3], np.int32)
upd = np.ones((2, 1, 32), bf)
sc = np.full(32, 0.5, bf)
def call():
    qs.quant_scatter_(cache, idx, upd, sc)   # automatic backend: must never fall back to cpu silently
    return int(cache[0, 1, 0])
def settled():
    import gc
    gc.collect()
    qs.allocator_for(0).empty_cache()
    return live()
assert call() == 2
start = settled()
inject(sys.argv[1], 1, int(sys.argv[2]))
first = None
try:
    call()
except DeviceFaultError as exc:
    first = {"code": exc.code, "sticky": exc.sticky, "text": str(exc).splitlines()[0]}
cache[:] = 0
launches = stat("calls:aclnnInplaceQuantScatter"), stat("calls:aclrtMemcpyAsync"), stat("calls:aclrtMalloc")
second = None
try:
    second = call()
except DeviceFaultError as exc:
    second = {"code": exc.code, "sticky": exc.sticky, "text": str(exc).splitlines()[0]}
queued = [stat("calls:aclnnInplaceQuantScatter"), stat("calls:aclrtMemcpyAsync"), stat("calls:aclrtMalloc")]
queued = [a - b for a, b in zip(queued, launches)]
reset = None
if isinstance(second, dict):
    qs.Device(0).reset()
    reset = call()
REPORT.update(first=first, second=second, queued=queued, reset=reset, errors=stat("errors_detected"),
              leaked={k: v - start[k] for k, v in settled().items() if v != start[k]},
              aborts=stat("device_aborts"))
_print_report()
"""


def test_a_kernel_fault_is_reported_once_then_the_device_works(emulator_root: Path) -> None:
    out = report(run_script(FAULT_SCRIPT, emulator_root, "aclrtSynchronizeStream", "507015"))
    assert out["first"]["code"] == 507015 and not out["first"]["sticky"]
    assert "ACL_ERROR_RT_AICORE_EXCEPTION (507015)" in out["first"]["text"]
    assert "What the failed work wrote is undefined" in out["first"]["text"]
    assert out["second"] == 2 and out["reset"] is None  # the next call works: CANN's default mode
    assert out["errors"] == 0 and out["leaked"] == {} and out["aborts"] == 0


def test_a_device_level_fault_stops_the_device_until_reset(emulator_root: Path) -> None:
    # A device-level fault is sticky wherever it is reported; here by the first call of a package call, so
    # that no queued work refers to the memory the reset frees (the emulator would count that as a use after
    # free, although a stopped device never runs its queue).
    symbol, code = "aclrtGetCurrentContext", 507054
    out = report(run_script(FAULT_SCRIPT, emulator_root, symbol, str(code)))
    assert out["first"]["code"] == code and out["first"]["sticky"]
    assert "Device.reset()" in out["first"]["text"]
    second = out["second"]
    assert isinstance(second, dict) and second["code"] == code and second["sticky"]
    assert second["text"].startswith(f"device 0 (stopped since {symbol} failed) failed with")
    assert out["queued"] == [0, 0, 0]  # raised at once: no launch, no copy, no allocation
    assert out["reset"] == 2  # after Device.reset() the device takes work again
    assert out["errors"] == 0 and out["aborts"] == 1 and out["leaked"] == {}


STOP_SCRIPT = CHILD_PROLOGUE + r"""
import numpy as np, ml_dtypes
import pyacl_qscatter as qs
from pyacl_qscatter.errors import DeviceFaultError
bf = ml_dtypes.bfloat16
def settled():
    import gc
    gc.collect()
    qs.allocator_for(0).empty_cache()
    return live()
qs.Device(0).stream
start = settled()
cache = qs.DeviceArray.zeros((2, 8, 32), np.int8)
upd = qs.DeviceArray.from_numpy(np.ones((2, 1, 32), bf))
sc = qs.DeviceArray.from_numpy(np.full(32, 0.5, bf))
bad = qs.DeviceArray.from_numpy(np.array([1, 99], np.int32))   # out of range: only the kernel sees it
good = qs.DeviceArray.from_numpy(np.array([1, 3], np.int32))
seen = []
def step(idx):
    try:
        qs.quant_scatter_(cache, idx, upd, sc, check_indices=False)
        qs.Device(0).stream.synchronize()
        seen.append("ok")
    except DeviceFaultError as exc:
        seen.append([exc.code, exc.sticky, str(exc).splitlines()[0]])
step(bad)                        # reported by the synchronisation, like any kernel fault
step(good)                       # the stopped device refuses the launch: from now on the package knows
before = [stat("calls:aclnnInplaceQuantScatter"), stat("calls:aclrtMemcpyAsync"), stat("calls:aclrtMalloc")]
step(good)                       # raised at once
queued = [a - b for a, b in zip([stat("calls:aclnnInplaceQuantScatter"), stat("calls:aclrtMemcpyAsync"),
                                 stat("calls:aclrtMalloc")], before)]
aborts = stat("device_aborts")
qs.Device(0).reset()
closed = cache.closed
cache = qs.DeviceArray.zeros((2, 8, 32), np.int8)
upd = qs.DeviceArray.from_numpy(np.ones((2, 1, 32), bf))
sc = qs.DeviceArray.from_numpy(np.full(32, 0.5, bf))
good = qs.DeviceArray.from_numpy(np.array([1, 3], np.int32))
step(good)
value = int(cache.to_numpy()[0, 1, 0])
for a in (cache, upd, sc, good, bad):
    a.close()
REPORT.update(seen=seen, queued=queued, aborts=aborts, closed=closed, value=value,
              leaked={k: v - start[k] for k, v in settled().items() if v != start[k]},
              errors=stat("errors_detected"))
_print_report()
"""


def test_stop_on_failure_mode_stops_the_device_until_reset(emulator_root: Path) -> None:
    out = report(run_script(STOP_SCRIPT, emulator_root, CANN_EMU_STOP_ON_FAILURE="1"))
    first, second, third, after = out["seen"]
    assert first[:2] == [507015, False] and "What the failed work wrote is undefined" in first[2]
    assert second[:2] == [507015, True] and "Device.reset()" in second[2]
    assert third[:2] == [507015, True] and third[2].startswith("device 0 (stopped since")
    assert out["queued"] == [0, 0, 0] and out["aborts"] == 1
    assert after == "ok" and out["value"] == 2 and out["closed"]  # reset closed the arrays made before it
    assert out["errors"] == 1  # the out-of-range write itself, seen by the emulated kernel
    # The refused launch's executor is the package's to forget (nnopbase deletes it whatever phase 2
    # returns); the emulator refuses a stopped device's phase 2 before consuming it, so it stays counted.
    leaked = dict(out["leaked"])
    assert leaked.pop("live_executors", 0) <= 1 and leaked == {}


# ------------------------------------------------------------------------------------------------ fork

FORK_SCRIPT = CHILD_PROLOGUE + r"""
import numpy as np, ml_dtypes
import pyacl_qscatter as qs
from pyacl_qscatter.errors import ForkedProcessError
bf = ml_dtypes.bfloat16
cache = np.zeros((2, 8, 32), np.int8)
args = (np.array([1, 3], np.int32), np.ones((2, 1, 32), bf), np.full(32, 0.5, bf))
qs.quant_scatter_(cache, *args, backend="npu")
keep = qs.DeviceArray.from_numpy(cache)
stream = qs.Stream()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    watched = ["aclrtFree", "aclrtDestroyStream", "aclrtResetDevice", "aclFinalize", "aclrtSynchronizeStream",
               "aclDestroyTensor", "aclrtMemcpyAsync"]
    before = {s: stat("calls:" + s) for s in watched}
    refused = []
    for attempt in (lambda: qs.quant_scatter_(cache, *args, backend="npu"), lambda: keep.to_numpy(),
                    lambda: qs.Stream(), lambda: qs.Device(0).synchronize()):
        try:
            attempt()
            refused.append("ran")
        except ForkedProcessError as exc:
            refused.append(str(exc))
    during = {s: stat("calls:" + s) - before[s] for s in watched}
    def at_exit():  # atexit is LIFO: this runs before the teardown the parent registered, so run that first
        qs.runtime._teardown()
        os.write(w, json.dumps({"refused": refused, "during": during,
                                "exit": {s: stat("calls:" + s) - before[s] for s in watched}}).encode())
    atexit.register(at_exit)
    del keep, stream
    sys.exit(0)
os.close(w)
child = b""
while chunk := os.read(r, 65536):
    child += chunk
_, status = os.waitpid(pid, 0)
after = qs.quant_scatter_(np.zeros_like(cache), *args, backend="npu")   # the parent goes on
REPORT.update(child=json.loads(child), status=status, parent_ok=int(after[0, 1, 0]))
_print_report()
"""


def test_a_fork_child_refuses_device_use_and_releases_nothing(emulator_root: Path) -> None:
    out = report(run_script(FORK_SCRIPT, emulator_root))
    child = out["child"]
    assert out["status"] == 0 and out["parent_ok"] == 2
    assert len(child["refused"]) == 4 and all("forked from pid" in r for r in child["refused"]), child["refused"]
    assert all("ACL does not support use after fork" in r for r in child["refused"])
    assert set(child["during"].values()) == {0} and set(child["exit"].values()) == {0}, child


# -------------------------------------------------------------------------------- aclInit / aclFinalize

INIT_SCRIPT = CHILD_PROLOGUE + r"""
if sys.argv[1] == "foreign-first":   # another runtime in the process initialised ACL before us
    _emu.aclInit.argtypes = [ctypes.c_char_p]
    assert _emu.aclInit(None) == 0
import numpy as np, ml_dtypes
import pyacl_qscatter as qs
atexit.register(lambda: (REPORT.update({s: stat("calls:" + s) for s in
                         ("aclInit", "aclFinalize", "aclFinalizeReference", "aclrtSetDevice")}), _print_report()))
bf = ml_dtypes.bfloat16
qs.quant_scatter_(np.zeros((2, 8, 32), np.int8), np.array([1, 3], np.int32), np.ones((2, 1, 32), bf),
                  np.full(32, 0.5, bf), backend="npu")
with qs.Device(0):
    qs.Stream().close()
"""


@pytest.fixture(scope="module")
def cann85(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emulator.build import BuildError, build

    root = tmp_path_factory.mktemp("cann-8.5")
    try:
        build(root, cann_version="8.5.0")
    except BuildError as exc:
        pytest.skip(f"the emulator does not build here: {str(exc).splitlines()[0]}")
    return root


@pytest.mark.parametrize("order", ["fresh", "foreign-first"])
def test_without_finalize_reference_acl_finalize_only_ends_what_we_started(emulator_root: Path, order: str) -> None:
    out = report(run_script(INIT_SCRIPT, emulator_root, order))
    assert out["aclInit"] == 1 + (order == "foreign-first")
    assert out["aclrtSetDevice"] == 1  # one per device and process; other threads share its context
    assert out["aclFinalizeReference"] < 0  # 8.3: not exported
    # aclFinalize only when our aclInit started ACL: it would end ACL for the other runtime (acl.cpp).
    assert out["aclFinalize"] == (1 if order == "fresh" else 0)


@pytest.mark.parametrize("order", ["fresh", "foreign-first"])
def test_finalize_reference_gives_back_each_of_our_acl_inits(cann85: Path, order: str) -> None:
    out = report(run_script(INIT_SCRIPT, cann85, order, CANN_EMU_VERSION="8.5.0"))
    assert out["aclInit"] == 1 + (order == "foreign-first")
    # Once per aclInit of ours, whatever it returned (100002 counts too), and never aclFinalize.
    assert out["aclFinalizeReference"] == 1 and out["aclFinalize"] == 0


# -------------------------------------------------------------------------------------------- kernel path

OPP_SCRIPT = r"""
import json, os, warnings
warnings.simplefilter("ignore")
import pyacl_qscatter as qs
from pyacl_qscatter import npu
print(json.dumps({"status": npu.npu_status(), "auto": list(qs.active_backend()),
                  "opp": os.environ.get("ASCEND_OPP_PATH")}))
"""


def test_without_kernels_the_automatic_choice_is_cpu_with_the_reason(emulator_root: Path, tmp_path: Path) -> None:
    import json
    import shutil

    home = tmp_path / "no-opp"
    shutil.copytree(emulator_root / "lib64", home / "lib64", symlinks=True)
    out = run_script(OPP_SCRIPT, home, ASCEND_OPP_PATH="")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"][0] is False and "no kernel path" in result["status"][1]
    assert result["auto"][0] == "cpu" and "561107" in result["auto"][1]
    out = run_script(OPP_SCRIPT, emulator_root, ASCEND_OPP_PATH="")  # unset, <home>/opp exists: set from it
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"][0] is True and result["opp"] == str(emulator_root / "opp")
    assert result["auto"][0] == "npu"


def test_selftest_reports_the_toolkit_and_one_environment_error(emulator_root: Path, tmp_path: Path) -> None:
    import shutil

    script = "import sys; from pyacl_qscatter._cli.selftest import main; raise SystemExit(main([]))"
    out = run_script(script, emulator_root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ACL API" in out.stdout and f"kernel path {emulator_root / 'opp'} (environment)" in out.stdout
    assert "repeatable executors: refused by the toolkit" in out.stdout and "graph capture " in out.stdout
    home = tmp_path / "no-opp"
    shutil.copytree(emulator_root / "lib64", home / "lib64", symlinks=True)
    out = run_script(script, home, ASCEND_OPP_PATH="")
    assert out.returncode == 2 and "MISMATCH" not in out.stdout
    assert len(out.stdout.strip().splitlines()) == 1 and "no kernel path" in out.stdout



# ------------------------------------------------------------------------------------- a toolkit as shipped


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emulator.build import BuildError, build

    root = tmp_path_factory.mktemp("as-shipped") / "cann"
    try:
        build(root, as_shipped=True)
    except BuildError as exc:
        pytest.skip(f"the emulator does not build here: {str(exc).splitlines()[0]}")
    return root


def _clean_env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ASCEND_", "PYACL_QSCATTER_", "CANN_EMU_")) and k != "LD_LIBRARY_PATH"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env.update(extra)
    return env


SHIPPED_USE = """
import numpy as np, ml_dtypes, pyacl_qscatter as qs
bf = ml_dtypes.bfloat16
cache = qs.quant_scatter(np.zeros((2, 8, 32), np.int8), np.array([1, 3], np.int32), np.ones((2, 1, 32), bf),
                         np.full(32, 0.5, bf), backend="npu")
print("value", int(cache[0, 1, 0]), qs.active_backend().name)
"""


def test_a_toolkit_as_shipped_needs_its_set_env_sh(shipped: Path) -> None:
    import subprocess
    import sys

    # ASCEND_HOME_PATH alone (as a user might export it): libascendcl.so cannot find its own dependency.
    proc = subprocess.run([sys.executable, "-c", "from pyacl_qscatter import _loader; _loader.load()"],
                          capture_output=True, text=True, env=_clean_env(ASCEND_HOME_PATH=str(shipped)), timeout=120)
    assert proc.returncode == 1 and "CannNotFoundError" in proc.stderr
    assert "libascendcl.so needs libruntime.so" in proc.stderr and "carry no run path" in proc.stderr
    assert f"Fix: source {shipped / 'set_env.sh'} before starting Python" in proc.stderr
    proc = subprocess.run([sys.executable, "-c", "import pyacl_qscatter as qs; print(qs.active_backend())"],
                          capture_output=True, text=True, env=_clean_env(ASCEND_HOME_PATH=str(shipped)), timeout=120)
    assert proc.returncode == 0 and "name='cpu'" in proc.stdout and "set_env.sh" in proc.stdout  # says why
    # Sourced first, as the toolkit's installation guide says: everything works.
    script = f"source {shipped / 'set_env.sh'} && {sys.executable} -c '{SHIPPED_USE}'"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=_clean_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "value 2 npu" in proc.stdout


def test_the_set_env_script_is_found_beside_the_toolkit(tmp_path: Path) -> None:
    from pyacl_qscatter import _loader

    latest = tmp_path / "Ascend" / "ascend-toolkit" / "latest"  # CANN <= 8.3: <toolkit>/set_env.sh
    latest.mkdir(parents=True)
    assert _loader.set_env_script(str(latest)) is None
    (latest.parent / "set_env.sh").write_text("")
    assert _loader.set_env_script(str(latest)) == str(latest.parent / "set_env.sh")
    cann = tmp_path / "Ascend" / "cann"  # CANN >= 8.5: <home>/set_env.sh
    cann.mkdir()
    (cann / "set_env.sh").write_text("")
    assert _loader.set_env_script(str(cann)) == str(cann / "set_env.sh")
    versioned = tmp_path / "Ascend" / "cann-8.5.0"  # no script of its own: <root>/ascend-toolkit/set_env.sh
    versioned.mkdir()
    assert _loader.set_env_script(str(versioned / "latest")) == str(latest.parent / "set_env.sh")
