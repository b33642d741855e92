"""``python -m pyacl_qscatter stress``: fuzzing, injected faults, threads and a long run, with the figures.

Sections (``--sections``, default all):

- ``fuzz``: random calls (`fuzz.make_case`) through every backend and form for ``--seconds``; every result
  must equal the cpu backend's and every rejection must be a ``QScatterError``.
- ``faults``: every CANN call of a NumPy call, a checked device call, a steady-state device call and a
  stream/event/memory lifecycle fails once with each failure class; then runtime start and teardown
  faults in child processes. Each must raise the matching exception with CANN's message, leave the
  caller's data as it was, leak nothing but an object CANN refused to destroy, and the next call must work.
  A failed launch (phase 2) must leave its executor alone (CANN deletes it). Device faults: a kernel fault
  reported by a synchronisation is a ``DeviceFaultError`` once, and the next call works; a device-level
  fault (in a child process) stops the device: later calls raise at once and queue nothing until
  ``Device.reset()``, after which calls work and nothing is left at exit.
- ``threads``: ``--threads`` threads x ``--thread-calls`` calls, each thread on its own stream, then all on
  one shared stream; results checked against the cpu backend; joins time out instead of hanging.
- ``longrun``: ``--calls`` decode-size device calls (self [24, 4096, 1024] int8 on the device, updates
  [24, 1, 1024] bf16, 1-D indices); resident memory, Python objects and live device objects after the
  warm-up and at the end.

Leaks and detected bad writes are read from the toolkit's introspection counters and faults are injected
through its ``emuInjectFault`` where it exports them (the project's emulator of CANN does; a real CANN does
not). Without them the command says so, skips fault injection and reports what it can still measure
(results, exceptions, resident memory).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ml_dtypes
import numpy as np

from ..api import quant_scatter, quant_scatter_
from ..backends import backend_status
from ..errors import (
    AclnnArgumentError,
    AclnnError,
    CannError,
    CannInternalError,
    CannOutOfMemoryError,
    CannResourceError,
    CannUsageError,
    DeviceFaultError,
    QScatterError,
)
from .fuzz import RandomChooser, check_case, make_case
from .probe import Probe, rss_bytes

__all__ = ["main"]

BF16 = ml_dtypes.bfloat16
SECTIONS = ("fuzz", "faults", "threads", "longrun")
# One status of each failure class and the exception it must surface as.
FAULT_CLASSES: dict[int, type[CannError]] = {
    107000: CannUsageError, 207004: CannResourceError, 207001: CannOutOfMemoryError, 507000: CannInternalError,
    161002: AclnnArgumentError, 561002: AclnnError,
}
# Phase 2 deletes a non-repeatable executor even when it fails (nnopbase CommonOpExecutorRun), so the package
# never touches it again; an injected fault in the emulator returns before its phase 2 runs and keeps it.
PHASE_2 = ("aclnnInplaceQuantScatter", "aclnnInplaceQuantScatterV2")
# A destroying call CANN refuses leaves that one object with CANN.
DESTROY_LEAK = {"aclDestroyTensor": "live_tensors", "aclDestroyAclOpExecutor": "live_executors",
                "aclrtDestroyStream": "live_streams", "aclrtDestroyEvent": "live_events",
                "aclrtFree": "live_device_blocks"}
START_SYMBOLS = ("aclInit", "aclrtGetDeviceCount", "aclrtSetDevice", "aclrtCreateStream", "aclrtGetSocName")
TEARDOWN_SYMBOLS = ("aclrtSynchronizeStream", "aclDestroyAclOpExecutor", "aclDestroyTensor", "aclrtFree",
                    "aclrtSynchronizeDevice", "aclrtDestroyEvent", "aclrtDestroyStream", "aclrtResetDevice",
                    "aclFinalize")
KERNEL_FAULT = 507015  # ACL_ERROR_RT_AICORE_EXCEPTION: reported once by a synchronisation (default mode)
DEVICE_FAULT = 507054  # ACL_ERROR_RT_HBM_MULTI_BIT_ECC_ERROR: a device-level fault, the device stops
# What the package may leave behind when a teardown call fails (the executor of a stream that failed to
# synchronise is not destroyed under work that may still use it).
TEARDOWN_LEAK = {**DESTROY_LEAK, "aclrtSynchronizeStream": "live_executors"}


def _settle(probe: Probe) -> dict[str, int] | None:
    """Collect garbage, give cached device blocks back, read the live counters (None without counters)."""
    from ..memory import allocator_for
    from ..runtime import Device

    gc.collect()
    for device_id in list(Device._instances):
        with contextlib.suppress(QScatterError):
            allocator_for(device_id).empty_cache()
    return probe.live()


def _growth(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


# ------------------------------------------------------------------------------------------------ fuzz


def fuzz(probe: Probe, seconds: float, seed: int, device: bool) -> dict[str, Any]:
    """Random cases for ``seconds``; counts, the rules rejected calls broke, and every problem found.

    >>> fuzz(Probe(None), 0.2, 0, device=False)["problems"]
    []
    """
    if device:
        from ..runtime import Device

        Device.current().stream  # noqa: B018  (the package's stream is made before counters are read)
    start_live = _settle(probe) if device else None
    detected = probe.detected()
    kinds: Counter[str] = Counter()
    problems: list[str] = []
    cases = calls = device_calls = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or cases == 0:
        case = make_case(RandomChooser(seed + cases))
        outcome = check_case(case, probe, device=device)
        cases += 1
        calls += outcome.calls
        device_calls += outcome.device_calls
        kinds[outcome.kind or "accepted"] += 1
        problems += [f"seed {seed + cases - 1}: {p} | {case.describe()}" for p in outcome.problems]
    after = probe.detected()
    return {"cases": cases, "calls": calls, "device_calls": device_calls, "accepted": kinds.pop("accepted", 0),
            "rejected": sum(kinds.values()), "rejected_by_rule": dict(kinds.most_common()),
            "problems": problems, "detected": None if after is None or detected is None else after - detected,
            "leaks": _growth(start_live, _settle(probe)) if device else None}


# ---------------------------------------------------------------------------------------------- faults


class _Run:
    """One run of a fault scenario: what it made, what it must produce, what it got."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.cache = rng.integers(-128, 128, (4, 16, 64), dtype=np.int8)
        self.args = (np.array([9, 0, 4, 13], np.int32), rng.uniform(-4, 4, (4, 2, 64)).astype(BF16),
                     rng.uniform(0.05, 1, 64).astype(BF16), rng.uniform(-2, 2, 64).astype(BF16))
        self.expected = np.asarray(quant_scatter(self.cache, *self.args, backend="cpu"))
        self.original = self.cache.copy()
        self.objects: list[Any] = []
        self.device: list[Any] = []
        self.result: np.ndarray[Any, Any] | None = None

    def close(self) -> None:
        for obj in reversed(self.objects):
            obj.close()


def _numpy_setup() -> _Run:
    return _Run()


def _numpy_run(run: _Run) -> None:
    quant_scatter_(run.cache, *run.args, backend="npu")
    run.result = run.cache


def _numpy_failed(run: _Run) -> str | None:
    return None if run.cache.tobytes() == run.original.tobytes() else "self changed by a failed call"


def _device_setup(prepared: bool) -> Callable[[], _Run]:
    def setup() -> _Run:
        from ..memory import DeviceArray
        from ..runtime import Stream

        run = _Run()
        stream = Stream()
        run.objects.append(stream)
        run.device = [DeviceArray.from_numpy(a, stream=stream) for a in (run.cache, *run.args)]
        run.objects += run.device
        run.device.append(stream)
        if prepared:
            _device_run(run, check=False)
            stream.synchronize()
            run.device[0].copy_from(run.original, stream=stream)
        return run

    return setup


def _device_run(run: _Run, check: bool = True) -> None:
    d_self, idx, upd, sc, zp, stream = run.device
    quant_scatter_(d_self, idx, upd, sc, zp, stream=stream, check_indices=check)
    stream.synchronize()
    run.result = d_self.to_numpy(stream=stream)


def _device_failed(run: _Run) -> str | None:
    now = run.device[0].to_numpy(stream=run.device[-1])
    ok = np.array_equal(now, run.original) or np.array_equal(now, run.expected)
    return None if ok else "self corrupted by a failed call"


def _lifecycle_run(run: _Run) -> None:
    from ..memory import DeviceArray
    from ..runtime import Event, Stream

    stream = Stream()
    run.objects.append(stream)
    start, end = Event(), Event()
    run.objects += [start, end]
    d = DeviceArray.zeros(run.cache.shape, np.int8, stream=stream)
    run.objects.append(d)
    start.record(stream)
    d.copy_from(run.expected, stream=stream)
    end.record(stream)
    end.synchronize()
    start.elapsed_ms(end)
    run.result = d.to_numpy()
    for obj in (d, end, start, stream):
        obj.close()


SCENARIOS: dict[str, tuple[Callable[[], _Run], Callable[[_Run], None], Callable[[_Run], str | None]]] = {
    "numpy call": (_numpy_setup, _numpy_run, _numpy_failed),
    "checked device call": (_device_setup(False), _device_run, _device_failed),
    "steady-state device call": (_device_setup(True), lambda run: _device_run(run, check=False), _device_failed),
    "stream, event and memory lifecycle": (_numpy_setup, _lifecycle_run, lambda run: None),
}


def _symbols_called(probe: Probe, setup: Callable[[], _Run], body: Callable[[_Run], None]) -> list[str]:
    from .. import _calls

    run = setup()
    try:
        probe.clear_faults()
        body(run)
        return [s for s in _calls._SYMBOLS if s != "aclGetRecentErrMsg" and (probe.stat(f"calls:{s}") or 0) > 0]
    finally:
        run.close()


def _same(got: np.ndarray[Any, Any] | None, want: np.ndarray[Any, Any]) -> bool:
    return got is not None and bool(np.array_equal(got, want))


def _judge(exc: BaseException | None, symbol: str, code: int) -> str | None:
    """What is wrong with how a fault of ``code`` in ``symbol`` surfaced (None: nothing)."""
    if exc is None:
        tolerated = symbol == "aclSetAclOpExecutorRepeatable" or (symbol == "aclrtMalloc" and code == 207001)
        return None if tolerated else "no exception"
    if not isinstance(exc, CannError):
        return f"{type(exc).__name__} is not a CannError: {exc}"
    want = 161002 if symbol == "aclCreateTensor" else code  # a NULL descriptor is reported as 161002
    if type(exc) is not FAULT_CLASSES[want] or exc.function != symbol or exc.code != want:
        return f"{type(exc).__name__} {exc.function} {exc.code}, expected {FAULT_CLASSES[want].__name__}"
    if not exc.cann_message:
        return "CANN's message is missing"
    return None


def _next_call(probe: Probe, setup: Callable[[], _Run], body: Callable[[_Run], None],
               before: dict[str, int] | None, problem: str | None) -> tuple[str | None, dict[str, int]]:
    """After a fault: run the scenario once more and settle. Return ``problem``, or if None what the next call
    did wrong, and the counters' growth since ``before`` without device bytes (the cache may keep blocks)."""
    again = setup()
    try:
        body(again)
        if problem is None and not _same(again.result, again.expected):
            problem = "the next call gave a wrong result"
    except Exception as exc:
        problem = problem or f"the next call failed: {exc!r}"
    finally:
        again.close()
    leak = _growth(before, _settle(probe)) or {}
    leak.pop("live_device_bytes", None)
    return problem, leak


def fault_sweep(probe: Probe, codes: tuple[int, ...]) -> dict[str, Any]:
    """Inject each code into each call of each scenario in this process; count what survived.

    >>> fault_sweep(Probe(None), (507000,))["available"]
    False
    """
    if not probe.faults:
        return {"available": False, "why": probe.why or "the toolkit exports no fault injection"}
    from .. import _prepared

    injected = survived = 0
    failures: list[str] = []
    for name, (setup, body, failed) in SCENARIOS.items():
        warm = setup()  # what only a process's first call makes (the package's stream) is not swept here
        try:
            body(warm)
        finally:
            warm.close()
        for symbol in _symbols_called(probe, setup, body):
            for code in codes:
                where = f"{name} / {symbol} / {code}"
                before = _settle(probe)
                run = setup()
                probe.clear_faults()
                probe.inject(symbol, 1, code)
                injected += 1
                problem: str | None = None
                try:
                    body(run)
                    error: BaseException | None = None
                except Exception as exc:
                    error = exc
                probe.clear_faults()
                problem = _judge(error, symbol, code)
                if problem is None and error is not None:
                    problem = failed(run)
                if problem is None and error is None and not _same(run.result, run.expected):
                    problem = "wrong result after a tolerated fault"
                refused = error is not None and symbol in DESTROY_LEAK
                consumed = error is not None and symbol in PHASE_2
                error = None
                with contextlib.suppress(QScatterError):
                    run.close()
                _prepared._reuse["accepted"] = None  # a refused repeatable executor must not outlive the sweep
                problem, leak = _next_call(probe, setup, body, before, problem)
                if consumed:
                    leak.pop("live_executors", None)  # phase 2 consumed it (see PHASE_2): never ours to free
                allowed = {DESTROY_LEAK[symbol]: 1} if refused else {}
                if problem is None and leak != allowed:
                    problem = f"leaked {leak}"
                if problem is None:
                    survived += 1
                else:
                    failures.append(f"{where}: {problem}")
    return {"available": True, "injected": injected, "survived": survived, "failures": failures}


def kernel_faults(probe: Probe) -> dict[str, Any]:
    """A kernel fault reported by the synchronisation of each scenario: a `DeviceFaultError` that says the
    output is undefined, not sticky; nothing leaked; the next call works.

    >>> kernel_faults(Probe(None))["available"]
    False
    """
    if not probe.faults:
        return {"available": False, "why": probe.why or "the toolkit exports no fault injection"}
    injected = survived = 0
    failures: list[str] = []
    for name, (setup, body, _failed) in SCENARIOS.items():
        if "aclrtSynchronizeStream" not in _symbols_called(probe, setup, body):
            continue
        before = _settle(probe)
        run = setup()
        probe.clear_faults()
        probe.inject("aclrtSynchronizeStream", 1, KERNEL_FAULT)
        injected += 1
        problem: str | None = None
        try:
            body(run)
            problem = "no exception"
        except DeviceFaultError as exc:
            if exc.sticky or exc.code != KERNEL_FAULT or "undefined" not in str(exc):
                problem = f"wrong report: {str(exc).splitlines()[0]}"
        except Exception as exc:
            problem = f"{type(exc).__name__} is not a DeviceFaultError: {exc}"
        probe.clear_faults()
        with contextlib.suppress(QScatterError):
            run.close()
        problem, leak = _next_call(probe, setup, body, before, problem)
        if problem is None and leak:
            problem = f"leaked {leak}"
        if problem is None:
            survived += 1
        else:
            failures.append(f"{name} / aclrtSynchronizeStream / {KERNEL_FAULT}: {problem}")
    return {"available": True, "injected": injected, "survived": survived, "failures": failures}


# What each child script starts with: its report, printed last at exit with the live counters then.
_CHILD_PRELUDE = r"""
import atexit, json, sys
from pyacl_qscatter._cli.probe import Probe
probe = Probe.for_loaded_cann()
out = {}
def _final():  # registered before the package initialises: runs after its teardown
    out["after"] = probe.live()
    sys.stdout.write("STRESS-CHILD " + json.dumps(out) + "\n")
    sys.stdout.flush()
atexit.register(_final)
"""

STICKY_CHILD = _CHILD_PRELUDE + r"""
from pyacl_qscatter._cli.stress import sticky_workload
out.update(sticky_workload(probe))
"""


def sticky_workload(probe: Probe) -> dict[str, Any]:
    """In a child process: a device-level fault stops the device; the next call raises at once and queues
    nothing; `Device.reset()`; then calls work.

    >>> sticky_workload(Probe.for_loaded_cann())  # doctest: +SKIP
    {'first': [507054, True], 'second': [507054, True], 'queued': 0, 'after_reset': True}
    """
    from ..runtime import Device

    report: dict[str, Any] = {}
    run = _Run()
    _numpy_run(run)
    probe.inject("aclrtSynchronizeStream", 1, DEVICE_FAULT)
    for key in ("first", "second"):
        run = _Run()
        launches = [probe.stat(f"calls:{s}") for s in ("aclnnInplaceQuantScatter", "aclrtMemcpyAsync")]
        try:
            _numpy_run(run)
            report[key] = "no exception"
        except DeviceFaultError as exc:
            report[key] = [exc.code, exc.sticky]
        if key == "second":
            after = [probe.stat(f"calls:{s}") for s in ("aclnnInplaceQuantScatter", "aclrtMemcpyAsync")]
            report["queued"] = sum((a or 0) - (b or 0) for a, b in zip(after, launches, strict=True))
        report[f"{key}_unchanged"] = bool(np.array_equal(run.cache, run.original))
    Device(0).reset()
    run = _Run()
    _numpy_run(run)
    report["after_reset"] = _same(run.result, run.expected)
    return report


def sticky_fault(probe: Probe) -> dict[str, Any]:
    """`sticky_workload` in a child process, judged; nothing may be left at its exit.

    >>> sticky_fault(Probe(None))["available"]
    False
    """
    if not probe.faults:
        return {"available": False, "why": probe.why or "the toolkit exports no fault injection"}
    r = _run_child(STICKY_CHILD)
    problem: str | None = None
    if isinstance(r, str):
        problem = r
    else:
        after = {k: v for k, v in (r.get("after") or {}).items() if v and k != "live_device_bytes"}
        if r["first"] != [DEVICE_FAULT, True] or r["second"] != [DEVICE_FAULT, True]:
            problem = f"reported {r['first']} then {r['second']}, expected a sticky {DEVICE_FAULT} twice"
        elif r["queued"] or not (r["first_unchanged"] and r["second_unchanged"]):
            problem = f"work queued on the stopped device ({r['queued']} calls) or self changed"
        elif not r["after_reset"]:
            problem = "no working call after Device.reset()"
        elif after:
            problem = f"left behind at exit: {after}"
    failures = [] if problem is None else [f"sticky fault / {DEVICE_FAULT}: {problem}"]
    return {"available": True, "injected": 1, "survived": 1 - len(failures), "failures": failures}


CHILD = _CHILD_PRELUDE + r"""
from pyacl_qscatter._cli.stress import child_workload
out.update(child_workload())
symbol, code = sys.argv[1], int(sys.argv[2])
def _inject():  # registered after the package's teardown hook: runs just before it
    if symbol != "none":
        probe.inject(symbol, 1, code)
atexit.register(_inject)
"""

_kept: list[Any] = []


def child_workload() -> dict[str, Any]:
    """In a child process: a device call (which may meet a start fault), a second one that must work, then
    live arrays, a prepared call, an event and streams left for the interpreter's exit.

    >>> child_workload()  # doctest: +SKIP
    {'first': 'ok', 'second_ok': True}
    """
    from ..memory import DeviceArray
    from ..runtime import Event, Stream

    run = _Run()
    report: dict[str, Any] = {}

    def attempt() -> bool:
        with Stream() as stream, DeviceArray.from_numpy(run.cache, stream=stream) as d:
            quant_scatter_(d, *run.args, stream=stream)
            return bool(np.array_equal(d.to_numpy(stream=stream), run.expected))

    try:
        report["first"] = "ok" if attempt() else "wrong"
    except QScatterError as exc:
        report["first"] = {"class": type(exc).__name__, "code": getattr(exc, "code", None),
                           "function": getattr(exc, "function", None), "message": str(exc)}
    report["second_ok"] = attempt()
    stream = Stream()
    d: list[Any] = [DeviceArray.from_numpy(a, stream=stream) for a in (run.cache, *run.args)]
    for _ in range(2):
        quant_scatter_(*d, stream=stream, check_indices=False)
    event = Event()
    event.record(stream)
    _kept.extend([stream, event, d, d[0][1:, 2:]])
    return report


def _run_child(script: str, *args: str, fail: str | None = None) -> dict[str, Any] | str:
    """Run ``script`` in a child process, with ``CANN_EMU_FAIL`` set to ``fail`` or unset; return the report
    it printed last, or what went wrong."""
    env = dict(os.environ)
    env.pop("CANN_EMU_FAIL", None)
    if fail is not None:
        env["CANN_EMU_FAIL"] = fail
    try:
        out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                             timeout=120)
    except subprocess.TimeoutExpired:
        return "the child process hung"
    lines = [x for x in out.stdout.splitlines() if x.startswith("STRESS-CHILD ")]
    if out.returncode != 0 or "Traceback" in out.stderr or not lines:
        return f"exit status {out.returncode}: {out.stderr.strip()[-300:]}"
    report: dict[str, Any] = json.loads(lines[-1].split(" ", 1)[1])
    return report


def _child(symbol: str, code: int, start: bool) -> str | None:
    if start:  # the emulator reads CANN_EMU_FAIL at the first CANN call
        report = _run_child(CHILD, "none", "0", fail=f"{symbol}:1:{code}")
    else:
        report = _run_child(CHILD, symbol, str(code))
    if isinstance(report, str):
        return report
    if not report["second_ok"]:
        return "the next call did not work"
    if start:
        first = report["first"]
        if symbol == "aclrtGetSocName":  # CANN returned NULL: the A2 rules for that call, nothing raised
            return None if first == "ok" else f"the first call failed: {first}"
        if not isinstance(first, dict):
            return "no exception"
        if (first["class"], first["function"], first["code"]) != (FAULT_CLASSES[code].__name__, symbol, code):
            return f"{first['class']} {first['function']} {first['code']}"
        return None
    after = report["after"] or {}
    after.pop("live_device_bytes", None)
    leaks = {k: v for k, v in after.items() if v}
    allowed = TEARDOWN_LEAK.get(symbol)
    if leaks and (len(leaks) > 1 or allowed not in leaks or leaks[allowed] > 1):
        return f"left behind at exit: {leaks}"
    return None


def process_faults(probe: Probe, codes: tuple[int, ...], workers: int = 4) -> dict[str, Any]:
    """Start faults and teardown faults, each in a child process of its own.

    >>> process_faults(Probe(None), (507000,))["available"]
    False
    """
    if not probe.faults:
        return {"available": False, "why": probe.why or "the toolkit exports no fault injection"}
    jobs = [(s, c, True) for s in START_SYMBOLS for c in codes]
    jobs += [(s, c, False) for s in ("none", *TEARDOWN_SYMBOLS) for c in (codes if s != "none" else (0,))]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda job: _child(*job), jobs))
    failures = [f"{'start' if start else 'teardown'} / {s} / {c}: {r}"
                for (s, c, start), r in zip(jobs, results, strict=True) if r is not None]
    return {"available": True, "injected": len(jobs) - 1, "survived": len(jobs) - len(failures) - 1,
            "failures": failures}


# --------------------------------------------------------------------------------------------- threads


def threads(probe: Probe, n_threads: int, calls: int, timeout: float = 600) -> dict[str, Any]:
    """``n_threads`` threads x ``calls`` mixed calls, first each on its own stream, then on one shared stream.

    >>> threads(Probe(None), 2, 4)["modes"]["own streams"]["mismatches"]  # doctest: +SKIP
    0
    """
    from ..runtime import Device, Stream

    Device.current().stream  # noqa: B018  (made before counters are read)
    before = _settle(probe)
    detected = probe.detected()
    modes: dict[str, Any] = {}
    for mode in ("own streams", "shared stream"):
        shared = Stream() if mode == "shared stream" else None
        errors: list[str] = []
        mismatches = [0]
        lock = threading.Lock()
        workers = [threading.Thread(target=_thread_work, args=(seed, calls, shared, errors, mismatches, lock),
                                    daemon=True) for seed in range(n_threads)]
        started = time.perf_counter()
        for t in workers:
            t.start()
        deadline = started + timeout
        for t in workers:
            t.join(max(0.0, deadline - time.perf_counter()))
        hung = sum(t.is_alive() for t in workers)
        if shared is not None and not hung:
            shared.close()
        modes[mode] = {"threads": n_threads, "calls_per_thread": calls, "seconds": time.perf_counter() - started,
                       "mismatches": mismatches[0], "errors": errors[:5], "hung": hung}
    after = probe.detected()
    return {"modes": modes, "leaks": _growth(before, _settle(probe)),
            "detected": None if after is None or detected is None else after - detected}


def mixed_device_call(i: int, d: Any, buffers: tuple[Any, Any, Any], idx: Any, upd: Any, sc: Any,
                      stream: Any) -> Any:
    """Call ``i`` of the thread workload on device self ``d``, by ``i % 4``: host inputs with checked
    indices; the steady-state path on the fixed device ``buffers`` (indices, updates, scales); a device
    array made and closed per call; out of place, the new array replacing ``d``. Returns the self to use next.

    >>> d = mixed_device_call(1, d, (d_idx, d_upd, d_sc), idx, upd, sc, stream)  # doctest: +SKIP
    """
    from ..memory import DeviceArray

    kind = i % 4
    if kind == 0:
        quant_scatter_(d, idx, upd, sc, stream=stream)
    elif kind == 1:
        d_idx, d_upd, d_sc = buffers
        d_idx.copy_from(idx, stream=stream)
        d_upd.copy_from(upd, stream=stream)
        quant_scatter_(d, d_idx, d_upd, d_sc, stream=stream, check_indices=False)
    elif kind == 2:
        with DeviceArray.from_numpy(upd, stream=stream) as d_new:
            quant_scatter_(d, idx, d_new, sc, stream=stream)
    else:
        fresh = quant_scatter(d, idx, upd, sc, stream=stream)
        d.close()
        d = fresh
    return d


def _thread_work(seed: int, calls: int, shared: Any, errors: list[str], mismatches: list[int],
                 lock: threading.Lock) -> None:
    from ..memory import DeviceArray
    from ..runtime import Stream

    try:
        stream = shared if shared is not None else Stream()
        rng = np.random.default_rng(seed)
        sc = rng.uniform(0.1, 1, 32).astype(BF16)
        host = np.zeros((2, 8, 32), np.int8)
        through_npu = host.copy()
        d: Any = DeviceArray.zeros(host.shape, np.int8, stream=stream)
        d_idx = DeviceArray.empty((2,), np.int32, stream=stream)
        d_upd = DeviceArray.empty((2, 1, 32), BF16, stream=stream)
        d_sc = DeviceArray.from_numpy(sc, stream=stream)
        for i in range(calls):
            idx = rng.permutation(8)[:2].astype(np.int32)
            upd = rng.uniform(-4, 4, (2, 1, 32)).astype(BF16)
            d = mixed_device_call(i, d, (d_idx, d_upd, d_sc), idx, upd, sc, stream)
            quant_scatter_(through_npu, idx, upd, sc, backend="npu")
            quant_scatter_(host, idx, upd, sc, backend="cpu")
        bad = int(not np.array_equal(d.to_numpy(stream=stream), host)) + int(not np.array_equal(through_npu, host))
        for arr in (d, d_idx, d_upd, d_sc):
            arr.close()
        if shared is None:
            stream.close()
        with lock:
            mismatches[0] += bad
    except Exception as exc:
        with lock:
            errors.append(f"thread {seed}: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------------- long run


def long_run(probe: Probe, calls: int, sync_every: int = 100, rows_every: int = 1000) -> dict[str, Any]:
    """``calls`` decode-size device calls; growth of resident memory, Python objects and live device objects
    between the end of the warm-up (a tenth of the calls, at least 200) and the end.

    >>> long_run(Probe(None), 2000)["rss_growth_bytes"]  # doctest: +SKIP
    0
    """
    from ..memory import DeviceArray
    from ..runtime import Stream

    b, seq, dim = 24, 4096, 1024
    rng = np.random.default_rng(0)
    warmup = max(200, calls // 10)
    host = np.empty((b, seq, dim), np.int8)
    host.fill(0)  # touched now: pages first written later (transparent huge pages) would look like growth
    upd_host = rng.uniform(1, 2, (b, 1, dim)).astype(BF16)
    sc, zp = rng.uniform(0.1, 1, dim).astype(BF16), rng.uniform(0, 1, dim).astype(BF16)
    samples: list[tuple[int, int | None, int]] = []
    with Stream() as stream:
        d: list[Any] = [DeviceArray.zeros((b, seq, dim), np.int8, stream=stream),
             DeviceArray.from_numpy(rng.permutation(seq)[:b].astype(np.int32), stream=stream),
             DeviceArray.from_numpy(upd_host, stream=stream), DeviceArray.from_numpy(sc, stream=stream),
             DeviceArray.from_numpy(zp, stream=stream)]
        idx_host = d[1].to_numpy(stream=stream)
        warm: tuple[int | None, int, dict[str, int] | None] = (None, 0, None)
        started = time.perf_counter()
        for i in range(calls):
            if i % rows_every == 0:  # a new decode step: new positions and rows, written into the same buffers
                idx_host = rng.permutation(seq)[:b].astype(np.int32)
                upd_host = rng.uniform(-3, 3, (b, 1, dim)).astype(BF16)
                d[1].copy_from(idx_host, stream=stream)
                d[2].copy_from(upd_host, stream=stream)
                quant_scatter_(host, idx_host, upd_host, sc, zp, backend="cpu")
            quant_scatter_(*d, stream=stream, check_indices=False)
            if (i + 1) % sync_every == 0 or i + 1 == calls:
                stream.synchronize()
            if i + 1 == warmup or i + 1 == calls or (i + 1) % max(1, calls // 10) == 0:
                stream.synchronize()
                gc.collect()
                samples.append((i + 1, rss_bytes(), len(gc.get_objects())))
                if i + 1 == warmup:
                    warm = (rss_bytes(), len(gc.get_objects()), probe.live())
        seconds = time.perf_counter() - started
        end_live = probe.live()
        end_rss, end_objects = rss_bytes(), len(gc.get_objects())
        correct = bool(np.array_equal(d[0].to_numpy(stream=stream), host))
        for arr in d:
            arr.close()
    rss_warm, objects_warm, live_warm = warm
    after_warm = [s for s in samples if s[0] >= warmup]
    rss_values = [s[1] for s in after_warm if s[1] is not None]
    return {"calls": calls, "warmup_calls": warmup, "seconds": seconds, "us_per_call": seconds / max(calls, 1) * 1e6,
            "correct": correct, "rss_after_warmup_bytes": rss_warm, "rss_end_bytes": end_rss,
            "rss_growth_bytes": None if rss_warm is None or end_rss is None else end_rss - rss_warm,
            "rss_max_growth_bytes": None if rss_warm is None or not rss_values else max(rss_values) - rss_warm,
            "python_objects_growth": end_objects - objects_warm,
            "live_growth": _growth(live_warm, end_live), "samples": samples}


# ------------------------------------------------------------------------------------------------ main


def _size(n: int | None) -> str:
    """A signed byte count for people.

    >>> _size(4096), _size(-3 * 2**20), _size(None)
    ('+4.0 KiB', '-3.00 MiB', 'n/a')
    """
    if n is None:
        return "n/a"
    return f"{n / 2**20:+.2f} MiB" if abs(n) >= 2**20 else f"{n / 1024:+.1f} KiB"


def _na(value: Any) -> str:
    return "n/a (no counters)" if value is None else str(value)


def summary(figures: dict[str, Any]) -> list[str]:
    """The human-readable lines of a run's figures.

    >>> summary({"npu": "CANN at /x", "counters": "available", "problems": [], "leaks_found": 0})
    ['npu backend: CANN at /x', 'counters: available', 'leaks found: 0; problems: 0']
    """
    npu, counters = figures["npu"].splitlines(), figures["counters"].splitlines()
    more = " (python -m pyacl_qscatter info lists every place tried)" if len(npu) > 1 else ""
    lines = [f"npu backend: {npu[0]}{more}", f"counters: {counters[0]}"]
    if "fuzz" in figures:
        f = figures["fuzz"]
        lines.append(f"fuzz: {f['cases']} cases ({f['accepted']} accepted, {f['rejected']} rejected by "
                     f"{len(f['rejected_by_rule'])} rules), {f['calls']} host calls, {f['device_calls']} device "
                     f"calls; problems {len(f['problems'])}; bad writes detected {_na(f['detected'])}; leaks "
                     f"{_na(f['leaks'])}")
    for key, label in (("faults", "faults in process"), ("process_faults", "faults at start and teardown"),
                       ("kernel_faults", "kernel faults reported once"),
                       ("sticky_fault", "sticky device fault, then reset")):
        if key in figures:
            f = figures[key]
            lines.append(f"{label}: {f['injected']} injected, {f['survived']} survived, "
                         f"{len(f['failures'])} failed" if f["available"] else f"{label}: not run: {f['why']}")
    if "threads" in figures:
        t = figures["threads"]
        for mode, m in t["modes"].items():
            lines.append(f"threads ({mode}): {m['threads']} x {m['calls_per_thread']} calls, {m['mismatches']} "
                         f"mismatches, {len(m['errors'])} errors, {m['hung']} hung, {m['seconds']:.1f} s")
        lines.append(f"threads: leaks {_na(t['leaks'])}, bad writes detected {_na(t['detected'])}")
    if "longrun" in figures:
        r = figures["longrun"]
        lines.append(f"long run: {r['calls']} decode-size calls in {r['seconds']:.1f} s ({r['us_per_call']:.1f} "
                     f"us/call), correct {r['correct']}; after {r['warmup_calls']} warm-up calls: RSS "
                     f"{_size(r['rss_growth_bytes'])} (max {_size(r['rss_max_growth_bytes'])}), Python objects "
                     f"{r['python_objects_growth']:+d}, live device objects {_na(r['live_growth'])}")
    if figures.get("skipped"):
        lines.append(f"skipped (the npu backend is unavailable): {', '.join(figures['skipped'])}")
    for line in figures.get("problems", [])[:20]:
        lines.append(f"PROBLEM {line}")
    leaks = figures["leaks_found"]
    lines.append(f"leaks found: {leaks if leaks is not None else 'n/a (no counters)'}; problems: "
                 f"{len(figures['problems'])}")
    return lines


def _problems(figures: dict[str, Any]) -> tuple[list[str], int | None]:
    problems: list[str] = []
    leaks: int | None = 0 if figures["counters"] == "available" else None
    if "fuzz" in figures:
        problems += figures["fuzz"]["problems"]
        if figures["fuzz"]["detected"]:
            problems.append(f"fuzz: {figures['fuzz']['detected']} bad writes detected")
        if figures["fuzz"]["leaks"] and leaks is not None:
            leaks += 1
            problems.append(f"fuzz leaked {figures['fuzz']['leaks']}")
    for key in ("faults", "process_faults", "kernel_faults", "sticky_fault"):
        if figures.get(key, {}).get("available"):
            problems += figures[key]["failures"]
            if leaks is not None:
                leaks += sum("leak" in f or "left behind" in f for f in figures[key]["failures"])
    if "threads" in figures:
        t = figures["threads"]
        for mode, m in t["modes"].items():
            problems += m["errors"]
            if m["mismatches"] or m["hung"]:
                problems.append(f"threads ({mode}): {m['mismatches']} mismatches, {m['hung']} hung")
        if t["leaks"] and leaks is not None:
            leaks += 1
            problems.append(f"threads leaked {t['leaks']}")
        if t["detected"]:
            problems.append(f"threads: {t['detected']} bad writes detected")
    if "longrun" in figures:
        r = figures["longrun"]
        if not r["correct"]:
            problems.append("long run: wrong result")
        if r["live_growth"] and leaks is not None:
            leaks += 1
            problems.append(f"long run: live device objects grew {r['live_growth']}")
    return problems, leaks


def main(argv: list[str]) -> int:
    """Run the sections and print the figures (``--json``: one JSON object); exit 1 when anything failed.

    >>> main(["--quick", "--json"])  # doctest: +SKIP
    {"npu": "CANN at ...", ...}
    0
    """
    parser = argparse.ArgumentParser(prog="python -m pyacl_qscatter stress", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="short profile: 5 s of fuzzing, one fault class per call, 8 x 100 thread calls, "
                             "2,000 long-run calls")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {SECTIONS}")
    parser.add_argument("--seconds", type=float, default=None, help="fuzzing time (default 60, quick 5)")
    parser.add_argument("--seed", type=int, default=0, help="first fuzz seed")
    parser.add_argument("--calls", type=int, default=None, help="long-run calls (default 100000, quick 2000)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--thread-calls", type=int, default=None, help="calls per thread (default 500, quick 100)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    ok, why = backend_status("npu")
    probe = Probe.for_loaded_cann() if ok else Probe(None, "the npu backend is unavailable")
    figures: dict[str, Any] = {"npu": why if ok else f"unavailable: {why}",
                               "counters": "available" if probe.counters else f"unavailable: {probe.why}"}
    codes = tuple(FAULT_CLASSES) if not args.quick else (507000, 107000)
    if "fuzz" in sections:
        seconds = args.seconds if args.seconds is not None else (5.0 if args.quick else 60.0)
        figures["fuzz"] = fuzz(probe, seconds, args.seed, device=ok)
    if ok and "faults" in sections:
        figures["faults"] = fault_sweep(probe, codes)
        figures["process_faults"] = process_faults(probe, codes)
        figures["kernel_faults"] = kernel_faults(probe)
        figures["sticky_fault"] = sticky_fault(probe)
    if ok and "threads" in sections:
        calls = args.thread_calls if args.thread_calls is not None else (100 if args.quick else 500)
        figures["threads"] = threads(probe, args.threads, calls)
    if ok and "longrun" in sections:
        calls = args.calls if args.calls is not None else (2000 if args.quick else 100_000)
        figures["longrun"] = long_run(probe, calls)
    if not ok:
        figures["skipped"] = [s for s in sections if s != "fuzz"]
    figures["problems"], figures["leaks_found"] = _problems(figures)
    if args.json:
        print(json.dumps(figures, default=str))
    else:
        print("\n".join(summary(figures)))
    return 1 if figures["problems"] else 0
