"""Fault sweep, verified against the emulator: every CANN call a scenario makes fails once with each failure
class, and the package raises the matching exception with CANN's message, leaves the caller's data as it
was, leaks nothing but an object CANN itself refused to destroy, and the next call succeeds.

The calls of each scenario are discovered by running it once and reading the emulator's call counters, so
a new C call on the op path is swept without editing this file. Runtime start (aclInit, aclrtGetDeviceCount,
aclrtSetDevice, aclrtCreateStream, aclrtGetSocName) happens once per process, so those faults run in child
processes through ``CANN_EMU_FAIL``; teardown faults are in test_reliability_exit.py.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from emulator.emu import Emu
from reliability import CHILD_PROLOGUE, FAULT_CODES, LONG, report, run_script, settle

import pyacl_qscatter as qs
from pyacl_qscatter import _calls, _prepared, npu
from pyacl_qscatter.errors import (
    AclnnArgumentError,
    AclnnError,
    CannError,
    CannInternalError,
    CannOutOfMemoryError,
    CannResourceError,
    CannUsageError,
)
from pyacl_qscatter.memory import DeviceArray, allocator_for
from pyacl_qscatter.runtime import Device, Event, Stream

pytestmark = pytest.mark.emulator
BF16 = ml_dtypes.bfloat16

# The exception class each failure class must surface as (and what it must not be).
EXPECTED: dict[int, type[CannError]] = {
    107000: CannUsageError,        # usage: a ValueError too
    207004: CannResourceError,     # resource, not an allocation: not a MemoryError
    207001: CannOutOfMemoryError,  # allocation: a MemoryError
    507000: CannInternalError,
    161002: AclnnArgumentError,    # aclnn arguments: a ValueError too
    561002: AclnnError,
}
# Phase 2 deletes a non-repeatable executor even when it fails (nnopbase CommonOpExecutorRun), so the package
# never touches it again; the emulator's injected fault returns before its phase 2 runs and keeps it.
PHASE_2 = ("aclnnInplaceQuantScatter", "aclnnInplaceQuantScatterV2")
# Destroying calls: when CANN refuses, that one object stays with CANN (the package forgets it).
DESTROY_LEAK = {"aclDestroyTensor": "live_tensors", "aclDestroyAclOpExecutor": "live_executors",
                "aclrtDestroyStream": "live_streams", "aclrtDestroyEvent": "live_events",
                "aclrtFree": "live_device_blocks"}


@pytest.fixture
def dev(emu: Emu, monkeypatch: pytest.MonkeyPatch) -> Device:
    ok, why = npu.npu_status()
    assert ok, why
    # Repeatable executors are asked for once per process: ask again in each test, so the sweep sees the call.
    monkeypatch.setitem(_prepared._reuse, "accepted", None)
    Device(0).stream  # noqa: B018  (the package's stream exists before counters are read)
    return Device(0)


def inputs(seed: int = 0) -> tuple[np.ndarray[Any, Any], ...]:
    rng = np.random.default_rng(seed)
    cache = rng.integers(-128, 128, (4, 16, 64), dtype=np.int8)
    idx = rng.permutation(15)[:4].astype(np.int32)
    upd = rng.uniform(-4, 4, (4, 2, 64)).astype(BF16)
    sc = rng.uniform(0.05, 1, 64).astype(BF16)
    zp = rng.uniform(-2, 2, 64).astype(BF16)
    return cache, idx, upd, sc, zp


# -------------------------------------------------------------------------------------------- scenarios


@dataclass
class State:
    """What one run of a scenario made: the arrays to check and the objects to close afterwards."""

    original: np.ndarray[Any, Any]
    expected: np.ndarray[Any, Any]
    arrays: dict[str, Any] = field(default_factory=dict)
    closables: list[Any] = field(default_factory=list)
    result: np.ndarray[Any, Any] | None = None

    def close(self) -> None:
        for obj in reversed(self.closables):
            obj.close()


def _base_state() -> State:
    cache, idx, upd, sc, zp = inputs()
    state = State(cache.copy(), qs.quant_scatter(cache, idx, upd, sc, zp, backend="cpu"))
    state.arrays = {"self": cache, "indices": idx, "updates": upd, "quant_scales": sc, "quant_zero_points": zp}
    return state


def setup_numpy() -> State:
    return _base_state()


def run_numpy(state: State) -> None:
    a = state.arrays
    qs.quant_scatter_(a["self"], a["indices"], a["updates"], a["quant_scales"], a["quant_zero_points"],
                      backend="npu")
    state.result = a["self"]


def failed_numpy(state: State) -> None:
    assert state.arrays["self"].tobytes() == state.original.tobytes(), "self changed by a failed call"


def run_numpy_out(state: State) -> None:
    a = state.arrays
    state.result = qs.quant_scatter(a["self"], a["indices"], a["updates"], a["quant_scales"],
                                    a["quant_zero_points"], backend="npu")
    assert a["self"].tobytes() == state.original.tobytes()


def _device_state(prepared: bool) -> State:
    state = _base_state()
    stream = Stream()
    state.closables.append(stream)
    d = {k: DeviceArray.from_numpy(v, stream=stream) for k, v in state.arrays.items()}
    state.closables.extend(d.values())
    state.arrays = {**d, "stream": stream}
    if prepared:  # a prepared call with a repeatable executor; self back to the original afterwards
        _device_call(state, check_indices=False)
        stream.synchronize()
        d["self"].copy_from(state.original, stream=stream)
    return state


def _device_call(state: State, check_indices: bool) -> None:
    a = state.arrays
    qs.quant_scatter_(a["self"], a["indices"], a["updates"], a["quant_scales"], a["quant_zero_points"],
                      stream=a["stream"], check_indices=check_indices)


def setup_device() -> State:
    return _device_state(prepared=False)


def setup_device_steady() -> State:
    return _device_state(prepared=True)


def run_device(state: State) -> None:
    _device_call(state, check_indices=True)
    state.result = state.arrays["self"].to_numpy(stream=state.arrays["stream"])


def run_device_steady(state: State) -> None:
    _device_call(state, check_indices=False)
    state.arrays["stream"].synchronize()
    state.result = state.arrays["self"].to_numpy(stream=state.arrays["stream"])


def failed_device(state: State) -> None:
    # In place and queued: a failure after the launch may leave the finished op; nothing else is allowed.
    now = state.arrays["self"].to_numpy(stream=state.arrays["stream"])
    assert np.array_equal(now, state.original) or np.array_equal(now, state.expected), "self corrupted"


def run_device_out(state: State) -> None:
    a = state.arrays
    fresh = qs.quant_scatter(a["self"], a["indices"], a["updates"], a["quant_scales"], a["quant_zero_points"],
                             stream=a["stream"])
    try:
        state.result = fresh.to_numpy(stream=a["stream"])
    finally:
        fresh.close()


def run_device_prepare_close(state: State) -> None:
    """A prepared call on a new self, then close it (its executor, workspace, descriptor and block)."""
    a = state.arrays
    d_self = DeviceArray.from_numpy(state.original, stream=a["stream"])
    state.closables.append(d_self)
    qs.quant_scatter_(d_self, a["indices"], a["updates"], a["quant_scales"], a["quant_zero_points"],
                      stream=a["stream"], check_indices=False)
    state.result = d_self.to_numpy(stream=a["stream"])
    d_self.close()


def failed_device_out(state: State) -> None:
    now = state.arrays["self"].to_numpy(stream=state.arrays["stream"])
    assert now.tobytes() == state.original.tobytes(), "an out-of-place call changed self"


def setup_lifecycle() -> State:
    ones = np.arange(64, dtype=np.int8).reshape(2, 32)
    return State(ones, ones)


def run_lifecycle(state: State) -> None:
    """Streams, events, device memory and copies, each closed in turn."""
    stream = Stream()
    state.closables.append(stream)
    start, end = Event(), Event()
    state.closables += [start, end]
    d = DeviceArray.zeros(state.original.shape, np.int8, stream=stream)
    state.closables.append(d)
    start.record(stream)
    d.copy_from(state.original, stream=stream)
    end.record(stream)
    end.synchronize()
    assert start.elapsed_ms(end) >= 0
    state.result = d.to_numpy()
    for obj in (d, end, start, stream):
        obj.close()


@dataclass(frozen=True)
class Scenario:
    setup: Callable[[], State]
    run: Callable[[State], None]
    failed: Callable[[State], None]


SCENARIOS = {
    "numpy_inplace": Scenario(setup_numpy, run_numpy, failed_numpy),
    "numpy_out_of_place": Scenario(setup_numpy, run_numpy_out, failed_numpy),
    "device_checked": Scenario(setup_device, run_device, failed_device),
    "device_steady_state": Scenario(setup_device_steady, run_device_steady, failed_device),
    "device_out_of_place": Scenario(setup_device, run_device_out, failed_device_out),
    "device_prepare_and_close": Scenario(setup_device, run_device_prepare_close, failed_device_out),
    "lifecycle": Scenario(setup_lifecycle, run_lifecycle, lambda state: None),
}


def calls_made(emu: Emu, scenario: Scenario) -> list[str]:
    """The CANN symbols one fault-free run of ``scenario`` calls (after its setup)."""
    state = scenario.setup()
    try:
        emu.reset()
        scenario.run(state)
        called = [s for s in _calls._SYMBOLS if s != "aclGetRecentErrMsg" and emu.calls(s) > 0]
    finally:
        state.close()
    return called


def check_error(err: BaseException, symbol: str, code: int) -> list[str]:
    """What is wrong with the exception a fault of ``code`` in ``symbol`` raised (empty: nothing)."""
    problems = []
    if not isinstance(err, CannError):
        return [f"raised {type(err).__name__}: {err}"]
    # aclCreateTensor reports failure by returning NULL: the code is then always 161002, CANN's own
    # message carries the injected status.
    want_code = 161002 if symbol == "aclCreateTensor" else code
    if type(err) is not EXPECTED[want_code]:
        problems.append(f"{type(err).__name__} instead of {EXPECTED[want_code].__name__}")
    if isinstance(err, MemoryError) != (want_code == 207001):
        problems.append("MemoryError-ness wrong")
    if err.function != symbol or err.code != want_code:
        problems.append(f"names {err.function} {err.code}")
    if f"emulated fault injected into {symbol}" not in err.cann_message or f"status {code}" not in str(err):
        problems.append(f"CANN's message missing: {err}")
    return problems


_FULLY_SWEPT: set[str] = set()  # symbols that already failed with every class in this session


def _codes_for(symbol: str, codes: tuple[int, ...], n: int) -> tuple[int, ...]:
    """Every class the first time a symbol is swept (and always under PYACL_QSCATTER_FUZZ=long); one class,
    in turn, when another scenario reaches the same call again."""
    if LONG or symbol not in _FULLY_SWEPT:
        _FULLY_SWEPT.add(symbol)
        return codes
    return (codes[n % len(codes)],)


def sweep(emu: Emu, name: str, codes: tuple[int, ...]) -> tuple[int, list[str]]:
    """Inject every code into every call of scenario ``name``; return (faults injected, problems)."""
    scenario = SCENARIOS[name]
    symbols = calls_made(emu, scenario)
    assert symbols, name
    problems: list[str] = []
    injected = 0
    detected = emu.stat("errors_detected")
    for n, symbol in enumerate(symbols):
        for code in _codes_for(symbol, codes, n):
            where = f"{name}/{symbol}/{code}"
            start = settle(emu)
            state = scenario.setup()
            emu.reset()
            emu.inject(symbol, 1, code)
            injected += 1
            raised: BaseException | None = None
            try:
                scenario.run(state)
            except Exception as exc:
                raised = exc
            emu.reset()  # drop the fault if the call never reached it
            tolerated = (symbol == "aclSetAclOpExecutorRepeatable"  # falls back to phase 1 + phase 2
                         or (symbol == "aclrtMalloc" and code == 207001))  # retried after emptying the cache
            if raised is None:
                if not tolerated:
                    problems.append(f"{where}: no exception")
                elif state.result is None or not np.array_equal(state.result, state.expected):
                    problems.append(f"{where}: wrong result after a tolerated fault")
            else:
                problems += [f"{where}: {p}" for p in check_error(raised, symbol, code)]
                try:
                    scenario.failed(state)
                except AssertionError as exc:
                    problems.append(f"{where}: {exc}")
            state.close()
            failed = raised is not None
            raised = None  # leaks are counted once the caller has dropped the exception (and its traceback)
            _prepared._reuse["accepted"] = None
            # The next call succeeds and is right.
            again = scenario.setup()
            try:
                scenario.run(again)
                if again.result is None or not np.array_equal(again.result, again.expected):
                    problems.append(f"{where}: the next call gave a wrong result")
            except Exception as exc:
                problems.append(f"{where}: the next call failed: {exc!r}")
            finally:
                again.close()
            end = settle(emu)
            leak = {k: end[k] - start[k] for k in end if end[k] != start[k] and k != "live_device_bytes"}
            if symbol in PHASE_2 and failed:
                leak.pop("live_executors", None)  # consumed by phase 2 (see PHASE_2): never the package's to free
            allowed = {DESTROY_LEAK[symbol]: 1} if symbol in DESTROY_LEAK and failed else {}
            if leak != allowed:
                problems.append(f"{where}: leaked {leak} (allowed {allowed})")
    if emu.stat("errors_detected") != detected:
        problems.append(f"{name}: the emulator detected a bad write or a use-after-free")
    return injected, problems


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault_sweep(dev: Device, emu: Emu, name: str) -> None:
    injected, problems = sweep(emu, name, FAULT_CODES)
    assert injected > 0
    assert not problems, "\n".join(problems)


def test_the_sweep_covers_the_op_path(dev: Device, emu: Emu) -> None:
    called = set().union(*(calls_made(emu, s) for s in SCENARIOS.values()))
    for symbol in ("aclrtMalloc", "aclrtMemcpyAsync", "aclCreateTensor", "aclnnInplaceQuantScatterGetWorkspaceSize",
                   "aclnnInplaceQuantScatter", "aclrtSynchronizeStream", "aclDestroyTensor", "aclrtCreateStream",
                   "aclrtDestroyStream", "aclrtSynchronizeDevice", "aclSetAclOpExecutorRepeatable",
                   "aclrtCreateEventWithFlag", "aclrtRecordEvent", "aclrtDestroyEvent",
                   "aclrtMemsetAsync", "aclrtSynchronizeEvent", "aclrtEventElapsedTime", "aclrtFree"):
        assert symbol in called, symbol


def test_failed_free_in_empty_cache_leaks_only_that_block(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    alloc = allocator_for(0)
    blocks = [alloc.alloc(1000 * (i + 1), Device(0).stream.handle) for i in range(4)]
    for block in blocks:
        alloc.release(block)
    emu.inject("aclrtFree", 1, 507000)
    with pytest.raises(CannInternalError):
        alloc.empty_cache()
    emu.reset()
    end = settle(emu)
    assert end["live_device_blocks"] == start["live_device_blocks"] + 1  # only the block CANN refused


# ------------------------------------------------------------------------------------------ the SoC name


def test_a_failed_soc_name_query_is_not_remembered(dev: Device, emu: Emu, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Device(0), "_soc", None)
    monkeypatch.setenv("CANN_EMU_SOC", "Ascend950PR")
    emu.inject("aclrtGetSocName", 1, 507000)
    assert Device(0).soc_name == ""  # CANN returned NULL: unknown for now, the A2 rules apply
    assert Device(0).soc_name == "Ascend950PR"
    assert Device(0).product.name == "950"
    cache = np.zeros((1, 4, 48), np.int8)  # 48 channels: only Ascend 950 accepts them
    qs.quant_scatter_(cache, [1], np.ones((1, 1, 48), BF16), np.full(48, 0.5, BF16), backend="npu")
    assert cache[0, 1].tolist() == [2] * 48


def test_a_toolkit_without_soc_name_gets_the_a2_rules(dev: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    # What bind() installs for an optional symbol the toolkit does not export.
    monkeypatch.setattr(_calls, "_aclrtGetSocName", _calls._Missing("aclrtGetSocName", "an older toolkit"))
    monkeypatch.setattr(Device(0), "_soc", None)
    assert Device(0).soc_name == ""
    assert Device(0).product.name == "A2"
    assert npu.npu_status()[0]


# ------------------------------------------------------------------------------- runtime start, in children

START_SCRIPT = CHILD_PROLOGUE + r"""
import ml_dtypes
import numpy as np
import pyacl_qscatter as qs
from pyacl_qscatter import Device, DeviceArray, Stream

symbol, code, api = sys.argv[1], int(sys.argv[2]), sys.argv[3]
bf = ml_dtypes.bfloat16
cache = np.arange(4 * 16 * 64, dtype=np.int64).reshape(4, 16, 64).astype(np.int8)
idx = np.array([3, 0, 7, 12], np.int32)
upd = np.linspace(-9, 9, 4 * 64).reshape(4, 1, 64).astype(bf)
sc = np.full(64, 0.25, bf)
expected = qs.quant_scatter(cache, idx, upd, sc, backend="cpu")

def attempt():
    if api == "device":
        with Stream() as s, DeviceArray.from_numpy(cache, stream=s) as d:
            qs.quant_scatter_(d, idx, upd, sc, stream=s)
            return d.to_numpy(stream=s)
    target = cache.copy()
    try:
        qs.quant_scatter_(target, idx, upd, sc, backend="npu")
    finally:
        REPORT.setdefault("self_unchanged", target.tobytes() == cache.tobytes())
    return target

try:
    REPORT["first_ok"] = bool(np.array_equal(attempt(), expected))
except qs.QScatterError as exc:
    cause = exc.__cause__
    REPORT["error"] = {"mro": [c.__name__ for c in type(exc).__mro__], "code": getattr(exc, "code", None),
                       "function": getattr(exc, "function", None), "text": str(exc),
                       "cause": None if cause is None else [type(cause).__name__, getattr(cause, "function", None),
                                                            getattr(cause, "code", None)]}
REPORT["second_ok"] = bool(np.array_equal(attempt(), expected))
REPORT["soc"] = Device(0).soc_name
REPORT["live"] = live()
_print_report()
"""

START_SYMBOLS = ("aclInit", "aclrtGetDeviceCount", "aclrtSetDevice", "aclrtCreateStream", "aclrtGetSocName")


def _start_cases() -> list[tuple[str, int, str]]:
    cases = []
    for n, symbol in enumerate(START_SYMBOLS):
        for k, code in enumerate(FAULT_CODES):
            cases.append((symbol, code, "device"))
            if LONG or k == n % len(FAULT_CODES):  # CI: one class per symbol through the NumPy call
                cases.append((symbol, code, "numpy"))
    return cases


def _check_start(symbol: str, code: int, api: str, result: dict[str, Any]) -> list[str]:
    where = f"{symbol}/{code}/{api}"
    problems = []
    if not result.get("second_ok"):
        problems.append(f"{where}: the next call did not succeed correctly")
    if result.get("soc") != "Ascend910B1":
        problems.append(f"{where}: SoC name {result.get('soc')!r} remembered wrongly")
    if api == "numpy" and not result.get("self_unchanged", True) and "error" in result:
        problems.append(f"{where}: self changed by a failed call")
    if symbol == "aclrtGetSocName":  # NULL name: A2 rules for that call, nothing raised
        if not result.get("first_ok"):
            problems.append(f"{where}: the first call failed: {result.get('error')}")
        return problems
    error = result.get("error")
    if error is None:
        return [*problems, f"{where}: no exception"]
    if f"emulated fault injected into {symbol}" not in error["text"]:
        problems.append(f"{where}: CANN's message missing: {error['text']}")
    npu_probe = api == "numpy" and symbol in ("aclInit", "aclrtGetDeviceCount", "aclrtSetDevice")
    if npu_probe:  # backend="npu" asks npu_status (which sets the device), which reports why it cannot run
        if "BackendUnavailableError" not in error["mro"]:
            problems.append(f"{where}: {error['mro'][0]}")
        elif error.get("cause") != [EXPECTED[code].__name__, symbol, code]:
            problems.append(f"{where}: cause {error.get('cause')}")
    elif error["mro"][0] != EXPECTED[code].__name__ or (error["function"], error["code"]) != (symbol, code):
        problems.append(f"{where}: {error['mro'][0]} {error['function']} {error['code']}")
    return problems


def test_faults_at_runtime_start(emulator_root: Path) -> None:
    cases = _start_cases()

    def one(case: tuple[str, int, str]) -> list[str]:
        symbol, code, api = case
        out = run_script(START_SCRIPT, emulator_root, symbol, str(code), api, CANN_EMU_FAIL=f"{symbol}:1:{code}")
        if out.returncode != 0 or "Traceback" in out.stderr:
            return [f"{case}: exit {out.returncode}\n{out.stderr}"]
        return _check_start(symbol, code, api, report(out))

    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for found in pool.map(one, cases) for p in found]
    assert len(cases) >= len(START_SYMBOLS) * len(FAULT_CODES)
    assert not problems, "\n".join(problems)


# A device array made inside a call that then fails is released only when the exception and its traceback
# go away (a logger or sys.last_traceback can keep them for long): npu.copy_device, DeviceArray.from_numpy and
# DeviceArray.zeros close what they allocated when their copy or memset fails.
PINNED_BY_TRACEBACK = {
    "copy_device": ("aclrtMemcpyAsync", lambda d, a: qs.quant_scatter(d, *a)),
    "from_numpy": ("aclrtMemcpyAsync", lambda d, a: DeviceArray.from_numpy(a[1])),
    "zeros": ("aclrtMemsetAsync", lambda d, a: DeviceArray.zeros((4, 64), np.int8)),
}


@pytest.mark.parametrize("where", list(PINNED_BY_TRACEBACK))
def test_a_failed_call_releases_what_it_allocated_at_once(dev: Device, emu: Emu, where: str) -> None:
    symbol, call = PINNED_BY_TRACEBACK[where]
    cache, idx, upd, sc, zp = inputs()
    with DeviceArray.from_numpy(cache) as d:
        start = settle(emu)
        emu.inject(symbol, 1, 507000)
        with pytest.raises(CannInternalError) as info:
            call(d, (idx, upd, sc, zp))
        emu.reset()
        assert info.value.function == symbol
        assert settle(emu) == start  # the exception is still held here, as a logger would hold it


ACTIVE_SCRIPT = CHILD_PROLOGUE + r"""
import pyacl_qscatter as qs
try:
    REPORT["choice"] = list(qs.active_backend())
except Exception as exc:
    REPORT["raised"] = f"{type(exc).__name__}: {exc}"
_print_report()
"""


def test_the_automatic_choice_survives_a_device_that_fails_to_start(emulator_root: Path) -> None:
    out = run_script(ACTIVE_SCRIPT, emulator_root, CANN_EMU_FAIL="aclrtSetDevice:1:507000")
    assert out.returncode == 0, out.stderr
    result = report(out)
    assert "raised" not in result, result["raised"]
    name, reason = result["choice"]
    assert name == "cpu" and "aclrtSetDevice" in reason
