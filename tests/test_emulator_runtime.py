"""The emulated runtime: device memory, queued streams, events, faults, counters, devices, threads.

Each test shows the emulator catching the binding bug the behaviour exists for. Tests that need a fresh
process (aclInit/aclFinalize, CANN_EMU_FAIL, crashes) run a short script in a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from emulator.emu import INCLUDE, LIVE_COUNTERS, OPERANDS, CannError, CannLibs, Emu, load_case
from emulator.fixtures import DEVICE_SETTINGS, Rt, fails_with, unset_settings

pytestmark = pytest.mark.emulator

TESTS = Path(__file__).resolve().parent
VALID = sorted((TESTS / "data" / "conformance" / "valid").glob("*.npz"))
H2D, D2H, D2D = 1, 2, 3
RT_PARAM, CONTEXT_NULL, BAD_DEVICE, NO_MEMORY, AICORE = 107000, 107002, 107001, 207001, 507015
default_settings = unset_settings(*DEVICE_SETTINGS)


def run_script(lib64: Path, body: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter with ``c = CannLibs(lib64)`` and ``ffi`` ready."""
    prelude = (f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom emulator.emu import CannLibs\n"
               f"c = CannLibs({str(lib64)!r})\nffi = c.ffi\n")
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(body)], env=full_env,
                          capture_output=True, text=True, timeout=120, check=False)


# -- device memory is not host memory --

def test_host_pointer_is_refused_where_device_memory_is_expected(rt: Rt) -> None:
    c, ffi = rt.c, rt.c.ffi
    host = bytearray(64)
    hp = ffi.from_buffer(host)
    dev = c.malloc(64)
    fails_with(c, c.rt.aclrtMemcpy(hp, 64, hp, 64, H2D), RT_PARAM, "dst", "not device memory")
    fails_with(c, c.rt.aclrtMemcpy(hp, 64, hp, 64, D2H), RT_PARAM, "src", "not device memory")
    fails_with(c, c.rt.aclrtMemcpy(dev, 64, dev, 64, H2D), RT_PARAM, "device memory but the copy kind says host")
    fails_with(c, c.rt.aclrtMemset(hp, 64, 0, 64), RT_PARAM, "not device memory")
    fails_with(c, c.rt.aclrtFree(hp), RT_PARAM, "not device memory")
    with pytest.raises(CannError, match="not device memory"):
        c.tensor([64], 2, hp)
    pinned = ffi.new("void **")
    c.check(c.rt.aclrtMallocHost(pinned, 64))
    fails_with(c, c.rt.aclrtMemset(pinned[0], 64, 0, 64), RT_PARAM, "aclrtMallocHost, not device memory")
    fails_with(c, c.rt.aclrtFree(pinned[0]), RT_PARAM)
    fails_with(c, c.rt.aclrtFreeHost(dev), RT_PARAM, "free it with aclrtFree")
    c.check(c.rt.aclrtFreeHost(pinned[0]))
    c.free(dev)


def test_device_memory_cannot_be_read_by_the_host(emulator_root: Path) -> None:
    """A binding that dereferences a device pointer crashes, as on real hardware, instead of 'working'."""
    proc = run_script(emulator_root / "lib64", """
        import os
        c.init(); c.set_device(0)
        p = c.malloc(64)
        print("allocated", flush=True)
        ffi.buffer(ffi.cast("char *", p), 64)[:]
        print("read device memory from the host")
    """, {"ASCEND_OPP_PATH": str(emulator_root / "opp")})
    assert "allocated" in proc.stdout and "read device memory" not in proc.stdout
    assert proc.returncode < 0  # killed by SIGSEGV


def test_extent_must_lie_inside_one_live_block(rt: Rt) -> None:
    c, ffi = rt.c, rt.c.ffi
    p = c.malloc(100)
    src = ffi.new("char[]", 200)
    byte = ffi.cast("char *", p)
    fails_with(c, c.rt.aclrtMemcpy(p, 200, src, 101, H2D), RT_PARAM, "overruns")
    fails_with(c, c.rt.aclrtMemcpy(byte + 50, 200, src, 60, H2D), RT_PARAM, "overruns")
    fails_with(c, c.rt.aclrtMemset(byte + 99, 2, 0, 2), RT_PARAM, "overruns")
    fails_with(c, c.rt.aclrtMemcpy(p, 10, src, 11, H2D), 100000, "destMax")
    fails_with(c, c.rt.aclrtFree(byte + 1), RT_PARAM, "not its start")
    c.destroy_tensor(c.tensor([100], 2, p))  # exactly fits
    c.destroy_tensor(c.tensor([2, 30], 2, p, strides=[70, 1]))  # last element at 99
    bad: list[tuple[list[int], int, dict[str, Any], str]] = [
        ([101], 2, {}, "overruns"),
        ([50], 6, {"offset": 1}, "overruns"),  # int16: 51 elements = 102 bytes
        ([2, 30], 2, {"strides": [71, 1]}, "overruns"),
        ([50], 2, {"storage": [40]}, "storage"),
        ([4], 2, {"strides": [-1]}, "negative stride"),
        ([4], 2, {"offset": -1}, "negative"),
    ]
    for shape, dtype, kwargs, word in bad:
        with pytest.raises(CannError, match=word):
            c.tensor(shape, dtype, p, **kwargs)
    c.free(p)


def test_double_free_and_use_after_free_are_refused(rt: Rt) -> None:
    c, ffi = rt.c, rt.c.ffi
    p = c.malloc(64)
    c.free(p)
    fails_with(c, c.rt.aclrtFree(p), RT_PARAM, "double free")
    fails_with(c, c.rt.aclrtMemset(p, 64, 0, 64), RT_PARAM, "freed")
    with pytest.raises(CannError, match="freed"):
        c.tensor([8], 2, p)
    fails_with(c, c.rt.aclrtMalloc(ffi.new("void **"), 0, 0), 100000, "size is 0")


# -- queued work runs later --

def test_queued_work_runs_only_when_synchronised(rt: Rt, emu: Emu) -> None:
    c, ffi = rt.c, rt.c.ffi
    p = c.malloc(256)
    c.check(c.rt.aclrtMemset(p, 256, 0, 256))
    out = bytearray(256)
    syncs = emu.stat("syncs")
    c.check(c.rt.aclrtMemsetAsync(p, 256, 7, 256, rt.stream))
    c.check(c.rt.aclrtMemcpyAsync(ffi.from_buffer(out), 256, p, 256, D2H, rt.stream))
    assert c.d2h(p, 256) == bytes(256)  # a synchronous copy does not wait for queued work: stale
    assert out == bytes(256)
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    assert c.d2h(p, 256) == b"\x07" * 256
    assert out == b"\x07" * 256
    assert emu.stat("syncs") == syncs + 1
    c.free(p)


def test_fresh_device_memory_is_not_zeroed(rt: Rt) -> None:
    p = rt.c.malloc(16)
    assert rt.c.d2h(p, 16) == b"\xa5" * 16  # a binding that relies on zeroed blocks sees garbage
    rt.c.free(p)


def test_stream_is_fifo(rt: Rt) -> None:
    c, ffi = rt.c, rt.c.ffi
    p = c.malloc(32)
    data = bytes(range(100, 116))
    c.check(c.rt.aclrtMemsetAsync(p, 32, 1, 32, rt.stream))
    c.check(c.rt.aclrtMemcpyAsync(p, 32, ffi.from_buffer(data), 16, H2D, rt.stream))
    c.check(c.rt.aclrtMemsetAsync(ffi.cast("char *", p) + 8, 4, 9, 4, rt.stream))
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    assert c.d2h(p, 32) == data[:8] + b"\x09" * 4 + data[12:] + b"\x01" * 16
    c.free(p)


def test_free_while_queued_is_a_use_after_free(rt: Rt, emu: Emu) -> None:
    c = rt.c
    a, b = c.malloc(64), c.malloc(64)
    errors = emu.stat("errors_detected")
    c.check(c.rt.aclrtMemcpyAsync(b, 64, a, 64, D2D, rt.stream))
    c.free(a)  # aclrtFree does not wait
    assert emu.stat("errors_detected") == errors + 1
    fails_with(c, c.rt.aclrtSynchronizeStream(rt.stream), AICORE, "use after free", "memcpy")
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))  # reported once
    c.free(b)


def test_pinned_host_memory_freed_while_queued(rt: Rt, emu: Emu) -> None:
    c, ffi = rt.c, rt.c.ffi
    pinned = ffi.new("void **")
    c.check(c.rt.aclrtMallocHost(pinned, 64))
    dev = c.malloc(64)
    errors = emu.stat("errors_detected")
    c.check(c.rt.aclrtMemcpyAsync(dev, 64, pinned[0], 64, H2D, rt.stream))
    c.check(c.rt.aclrtFreeHost(pinned[0]))
    fails_with(c, c.rt.aclrtSynchronizeStream(rt.stream), AICORE, "aclrtFreeHost")
    assert emu.stat("errors_detected") == errors + 1
    c.free(dev)


def test_default_stream_and_device_synchronisation(rt: Rt) -> None:
    c, ffi = rt.c, rt.c.ffi
    p = c.malloc(8)
    c.check(c.rt.aclrtMemsetAsync(p, 8, 3, 4, ffi.NULL))
    c.check(c.rt.aclrtMemsetAsync(ffi.cast("char *", p) + 4, 4, 4, 4, rt.stream))
    assert c.d2h(p, 8) == b"\xa5" * 8
    c.check(c.rt.aclrtSynchronizeDevice())  # every stream of the device, the default one included
    assert c.d2h(p, 8) == b"\x03" * 4 + b"\x04" * 4
    c.check(c.rt.aclrtMemsetAsync(p, 8, 5, 8, ffi.NULL))
    c.check(c.rt.aclrtSynchronizeStream(ffi.NULL))
    assert c.d2h(p, 8) == b"\x05" * 8
    c.free(p)


def test_events(rt: Rt, emu: Emu) -> None:
    c, ffi = rt.c, rt.c.ffi
    events = emu.stat("live_events")
    made = [ffi.new("aclrtEvent *") for _ in range(4)]
    for e in made[:3]:
        c.check(c.rt.aclrtCreateEvent(e))
    c.check(c.rt.aclrtCreateEventWithFlag(made[3], 0))  # no ACL_EVENT_TIME_LINE: cannot be timed
    start, end, later, untimed = (e[0] for e in made)
    assert emu.stat("live_events") == events + 4
    p = c.malloc(8)
    c.check(c.rt.aclrtRecordEvent(start, rt.stream))
    c.check(c.rt.aclrtMemsetAsync(p, 8, 1, 4, rt.stream))
    c.check(c.rt.aclrtRecordEvent(end, rt.stream))
    c.check(c.rt.aclrtRecordEvent(untimed, rt.stream))
    c.check(c.rt.aclrtMemsetAsync(ffi.cast("char *", p) + 4, 4, 2, 4, rt.stream))
    c.check(c.rt.aclrtRecordEvent(later, rt.stream))
    ms = ffi.new("float *")
    fails_with(c, c.rt.aclrtEventElapsedTime(ms, start, end), RT_PARAM, "has not completed")
    c.check(c.rt.aclrtSynchronizeEvent(end))  # runs the stream up to the record, not beyond
    assert c.d2h(p, 8) == b"\x01" * 4 + b"\xa5" * 4
    c.check(c.rt.aclrtEventElapsedTime(ms, start, end))
    assert ms[0] >= 0.0
    fails_with(c, c.rt.aclrtEventElapsedTime(ms, start, later), RT_PARAM, "endEvent has not completed")
    c.check(c.rt.aclrtSynchronizeEvent(later))
    assert c.d2h(p, 8) == b"\x01" * 4 + b"\x02" * 4
    c.check(c.rt.aclrtSynchronizeEvent(untimed))
    fails_with(c, c.rt.aclrtEventElapsedTime(ms, start, untimed), RT_PARAM, "ACL_EVENT_TIME_LINE")
    for e in (start, end, later, untimed):
        c.check(c.rt.aclrtDestroyEvent(e))
    fails_with(c, c.rt.aclrtSynchronizeEvent(start), RT_PARAM, "destroyed")
    assert emu.stat("live_events") == events
    c.free(p)


def test_synchronise_with_timeout(rt: Rt) -> None:
    c = rt.c
    p = c.malloc(4)
    c.check(c.rt.aclrtMemsetAsync(p, 4, 6, 4, rt.stream))
    c.check(c.rt.aclrtSynchronizeStreamWithTimeout(rt.stream, 100))
    assert c.d2h(p, 4) == b"\x06" * 4
    c.check(c.rt.aclrtSynchronizeStreamWithTimeout(rt.stream, -1))
    fails_with(c, c.rt.aclrtSynchronizeStreamWithTimeout(rt.stream, -2), 107000, "timeout")  # ACL's own check
    fails_with(c, c.rt.aclrtSynchronizeStreamWithTimeout(rt.stream, 0), 107000, "timeout")  # the runtime's
    c.free(p)


def test_destroyed_stream_is_refused_and_its_work_completes(rt: Rt, emu: Emu) -> None:
    c = rt.c
    streams = emu.stat("live_streams")
    s = c.create_stream()
    p = c.malloc(4)
    c.check(c.rt.aclrtMemsetAsync(p, 4, 8, 4, s))
    c.check(c.rt.aclrtDestroyStream(s))
    assert c.d2h(p, 4) == b"\x08" * 4
    fails_with(c, c.rt.aclrtSynchronizeStream(s), RT_PARAM, "destroyed")
    fails_with(c, c.rt.aclrtDestroyStream(c.ffi.NULL), 100000, "default (NULL) stream")
    assert emu.stat("live_streams") == streams
    c.free(p)


# -- faults on demand --

def test_injected_faults(rt: Rt, emu: Emu) -> None:
    c, ffi = rt.c, rt.c.ffi
    emu.reset()
    emu.inject("aclrtMalloc", nth=2)
    first = c.malloc(8)
    fails_with(c, c.rt.aclrtMalloc(ffi.new("void **"), 8, 0), NO_MEMORY, "emulated fault", "aclrtMalloc")
    second = c.malloc(8)  # the next call succeeds
    assert emu.calls("aclrtMalloc") == 3
    emu.inject("aclrtSynchronizeStream", code=507014)
    c.check(c.rt.aclrtMemsetAsync(first, 8, 1, 8, rt.stream))
    fails_with(c, c.rt.aclrtSynchronizeStream(rt.stream), 507014, "507014")
    assert c.d2h(first, 8) == b"\xa5" * 8  # the failed call did nothing
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    assert c.d2h(first, 8) == b"\x01" * 8
    emu.inject("aclCreateTensor")
    with pytest.raises(CannError, match="emulated fault"):
        c.tensor([8], 2, first)
    c.destroy_tensor(c.tensor([8], 2, first))
    emu.inject("aclnnInplaceQuantScatterGetWorkspaceSize", code=561003)
    case = load_case(VALID[0])
    run = c.run_case(case, rt.stream)
    assert run.phase1 == 561003 and "emulated fault" in (run.message or "")
    assert np.array_equal(c.run_case(case, rt.stream).self_out, case.expected)
    emu.inject("aclrtFree")
    emu.reset()  # drops pending faults
    c.free(first)
    c.free(second)
    for bad in (("nope", 1), ("aclGetRecentErrMsg", 1), ("aclrtMalloc", 0)):
        with pytest.raises(ValueError, match="cannot inject"):
            emu.inject(*bad)


def test_faults_from_the_environment(emulator_root: Path) -> None:
    proc = run_script(emulator_root / "lib64", """
        s = ffi.new("aclrtStream *")
        p = ffi.new("void **")
        assert c.rt.aclInit(ffi.NULL) == 0
        c.set_device(0)
        assert c.rt.aclrtCreateStream(s) == 507000, "default code"
        assert "emulated fault" in c.last_error()
        assert c.rt.aclrtCreateStream(s) == 0
        assert c.rt.aclrtMalloc(p, 8, 0) == 0
        assert c.rt.aclrtMalloc(p, 8, 0) == 207018, "chosen code"
        assert "aclrtMalloc" in c.last_error()
        assert c.rt.aclrtMalloc(p, 8, 0) == 0
        print("ok")
    """, {"CANN_EMU_FAIL": "aclrtMalloc:2:207018, aclrtCreateStream:1,bogus,aclInit:x"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "ignoring CANN_EMU_FAIL entry 'bogus'" in proc.stderr
    assert "'aclInit:x'" in proc.stderr
    proc = run_script(emulator_root / "lib64", """
        assert c.rt.aclInit(ffi.NULL) == 500000
        assert "aclInit" in c.last_error()
        assert c.rt.aclInit(ffi.NULL) == 0
        print("ok")
    """, {"CANN_EMU_FAIL": "aclInit:1"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_initialisation_rules(emulator_root: Path, tmp_path: Path) -> None:
    config = tmp_path / "acl.json"
    config.write_text("{}")
    proc = run_script(emulator_root / "lib64", f"""
        p = ffi.new("void **")
        assert c.rt.aclrtSetDevice(0) == 100001
        assert "aclInit has not been called" in c.last_error()
        assert c.rt.aclrtMalloc(p, 8, 0) == 100001
        assert c.rt.aclrtGetSocName() == ffi.NULL
        v = [ffi.new("int32_t *") for _ in range(3)]
        assert c.rt.aclrtGetVersion(*v) == 0 and [x[0] for x in v] == [1, 17, 0]  # the ACL API, not the release
        assert c.rt.aclFinalize() == 100001
        assert c.rt.aclInit(b"/nonexistent/acl.json") == 100000
        assert c.rt.aclInit({str(config).encode()!r}) == 0
        assert c.rt.aclInit(ffi.NULL) == 100002
        assert "already called" in c.last_error()
        assert ffi.string(c.rt.aclrtGetSocName()) == b"Ascend910B1"
        assert c.rt.aclFinalize() == 0
        assert c.rt.aclFinalize() == 100037
        assert c.rt.aclrtSetDevice(0) == 100000, "ACL is over until the next aclInit"
        assert c.rt.aclInit(ffi.NULL) == 0, "again after aclFinalize"
        assert c.rt.aclrtSetDevice(0) == 0
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# -- counters --

def cann_functions() -> list[str]:
    text = "".join(h.read_text() for h in sorted(INCLUDE.glob("*.h")))
    return re.findall(r"^\s*(?:const\s+)?\w+\s*\*?\s*(acl\w+)\s*\(", text, flags=re.MULTILINE)


def test_counters(rt: Rt, emu: Emu) -> None:
    c, ffi = rt.c, rt.c.ffi
    assert emu.stat("no_such_counter") == -1
    assert emu.stat("calls:no_such_symbol") == -1
    # aclFinalizeReference exists from CANN 8.5; this tree is built as 8.3.RC1.
    functions = [f for f in cann_functions() if f != "aclFinalizeReference"]
    assert len(functions) >= 40
    assert all(emu.calls(f) >= 0 for f in functions), [f for f in functions if emu.calls(f) < 0]
    emu.reset()
    assert all(emu.stat(n) == 0 for n in ("bytes_h2d", "bytes_d2h", "bytes_d2d", "syncs", "errors_detected"))
    assert emu.calls("aclrtMalloc") == 0
    a, b = c.malloc(100), c.malloc(100)
    c.h2d(a, bytes(100))
    c.d2h(a, 40)
    c.check(c.rt.aclrtMemcpy(b, 100, a, 10, D2D))
    c.check(c.rt.aclrtMemcpyAsync(b, 100, a, 20, D2D, rt.stream))
    assert emu.stat("bytes_d2d") == 10  # the queued copy has not run
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    assert (emu.stat("bytes_h2d"), emu.stat("bytes_d2h"), emu.stat("bytes_d2d"), emu.stat("syncs")) == (100, 40, 30, 1)
    assert emu.calls("aclrtMalloc") == 2 and emu.calls("aclrtMemcpy") == 3
    live = emu.live()
    emu.reset()
    assert emu.live() == live  # live objects are still there
    c.free(a)
    c.free(b)
    del ffi


def test_clean_run_returns_live_counts_to_start(rt: Rt, emu: Emu) -> None:
    c, ffi = rt.c, rt.c.ffi
    start = emu.live()
    assert set(start) == set(LIVE_COUNTERS)
    s = c.create_stream()
    event = ffi.new("aclrtEvent *")
    c.check(c.rt.aclrtCreateEvent(event))
    pinned = ffi.new("void **")
    c.check(c.rt.aclrtMallocHost(pinned, 32))
    for path in VALID[:4]:
        case = load_case(path)
        assert np.array_equal(c.run_case(case, s, "padded").self_out, case.expected)
    c.check(c.rt.aclrtRecordEvent(event[0], s))
    c.check(c.rt.aclrtSynchronizeEvent(event[0]))
    middle = emu.live()
    assert middle["live_streams"] == start["live_streams"] + 1
    assert middle["live_events"] == start["live_events"] + 1
    assert middle["live_host_blocks"] == start["live_host_blocks"] + 1
    c.check(c.rt.aclrtDestroyEvent(event[0]))
    c.check(c.rt.aclrtFreeHost(pinned[0]))
    c.check(c.rt.aclrtDestroyStream(s))
    assert emu.live() == start


def test_an_unrun_executor_is_a_leak(rt: Rt, emu: Emu) -> None:
    c, ffi = rt.c, rt.c.ffi
    case = load_case(VALID[0])
    arrays = case.arrays
    blocks = {n: c.malloc(a.nbytes) for n, a in arrays.items()}
    tensors = {n: c.tensor(a.shape, case.dtypes[n], blocks[n]) for n, a in arrays.items()}
    executors = emu.stat("live_executors")
    executor = ffi.new("aclOpExecutor **")
    size = ffi.new("uint64_t *")
    c.check(c.op.aclnnInplaceQuantScatterGetWorkspaceSize(
        *[tensors.get(n, ffi.NULL) for n in OPERANDS], case.axis, case.quant_axis, 1, size, executor))
    assert emu.stat("live_executors") == executors + 1  # never launched: CANN would leak it
    c.check(c.nnop.aclDestroyAclOpExecutor(executor[0]))
    assert emu.stat("live_executors") == executors
    for t in tensors.values():
        c.destroy_tensor(t)
    for b in blocks.values():
        c.free(b)


# -- devices and limits --

def test_device_memory_limit(rt: Rt, monkeypatch: pytest.MonkeyPatch) -> None:
    c, ffi = rt.c, rt.c.ffi
    free, total = ffi.new("size_t *"), ffi.new("size_t *")
    c.check(c.rt.aclrtGetMemInfo(1, free, total))
    assert total[0] == 1 << 30  # CANN_EMU_DEVICE_MEMORY default
    used = total[0] - free[0]
    monkeypatch.setenv("CANN_EMU_DEVICE_MEMORY", str(used + (1 << 20)))
    c.check(c.rt.aclrtGetMemInfo(0, free, total))
    assert (free[0], total[0]) == (1 << 20, used + (1 << 20))
    block = c.malloc(1 << 20)  # exactly what is left
    fails_with(c, c.rt.aclrtMalloc(ffi.new("void **"), 1, 0), NO_MEMORY, "out of device memory")
    c.check(c.rt.aclrtGetMemInfo(1, free, total))
    assert free[0] == 0
    c.free(block)
    c.check(c.rt.aclrtGetMemInfo(1, free, total))
    assert free[0] == 1 << 20


def test_two_devices(rt: Rt, monkeypatch: pytest.MonkeyPatch) -> None:
    c, ffi = rt.c, rt.c.ffi
    count = ffi.new("uint32_t *")
    c.check(c.rt.aclrtGetDeviceCount(count))
    assert count[0] == 1
    fails_with(c, c.rt.aclrtSetDevice(1), BAD_DEVICE, "CANN_EMU_DEVICE_COUNT")
    monkeypatch.setenv("CANN_EMU_DEVICE_COUNT", "2")
    c.check(c.rt.aclrtGetDeviceCount(count))
    assert count[0] == 2
    ctx0 = ffi.new("aclrtContext *")
    c.check(c.rt.aclrtGetCurrentContext(ctx0))
    free, total, dev = ffi.new("size_t *"), ffi.new("size_t *"), ffi.new("int32_t *")
    c.check(c.rt.aclrtGetMemInfo(1, free, total))
    free0 = free[0]

    c.set_device(1)
    c.check(c.rt.aclrtGetDevice(dev))
    assert dev[0] == 1
    c.check(c.rt.aclrtGetMemInfo(1, free, total))
    free1 = free[0]
    case = load_case(VALID[0])
    blocks = {n: c.malloc(a.nbytes) for n, a in case.arrays.items()}  # memory of device 1
    c.check(c.rt.aclrtGetMemInfo(1, free, total))
    assert free[0] < free1

    c.set_device(0)
    c.check(c.rt.aclrtGetMemInfo(1, free, total))
    assert free[0] == free0  # device 0 did not pay for it
    tensors = {n: c.tensor(a.shape, case.dtypes[n], blocks[n]) for n, a in case.arrays.items()}
    size, executor = ffi.new("uint64_t *"), ffi.new("aclOpExecutor **")
    c.check(c.op.aclnnInplaceQuantScatterGetWorkspaceSize(
        *[tensors.get(n, ffi.NULL) for n in OPERANDS], case.axis, case.quant_axis, 1, size, executor))
    ws = c.malloc(size[0])
    fails_with(c, c.op.aclnnInplaceQuantScatter(ws, size[0], executor[0], rt.stream), RT_PARAM,
               "lives on device 1 but the work runs on device 0")
    fails_with(c, c.nnop.aclDestroyAclOpExecutor(executor[0]), 161002, "already consumed")  # the failed launch ate it
    for t in tensors.values():
        c.destroy_tensor(t)
    for b in (*blocks.values(), ws):
        c.free(b)

    ctx = ffi.new("aclrtContext *")
    c.check(c.rt.aclrtCreateContext(ctx, 1))  # becomes current
    c.check(c.rt.aclrtGetDevice(dev))
    assert dev[0] == 1
    c.check(c.rt.aclrtSetCurrentContext(ctx0[0]))
    c.check(c.rt.aclrtGetDevice(dev))
    assert dev[0] == 0
    c.check(c.rt.aclrtDestroyContext(ctx[0]))
    fails_with(c, c.rt.aclrtSetCurrentContext(ctx[0]), RT_PARAM, "destroyed")
    fails_with(c, c.rt.aclrtDestroyContext(ctx0[0]), RT_PARAM, "default context")
    c.check(c.rt.aclrtResetDevice(1))


# -- threads --

def test_a_thread_without_a_device_is_refused(rt: Rt) -> None:
    c, ffi = rt.c, rt.c.ffi
    seen: list[tuple[int, str | None]] = []

    def worker() -> None:
        seen.append((c.rt.aclrtMalloc(ffi.new("void **"), 8, 0), c.last_error()))
        seen.append((c.rt.aclrtSynchronizeStream(ffi.NULL), c.last_error()))
        # an explicit stream needs a current context too (hicann/runtime api_impl.cc MemsetAsync)
        seen.append((c.rt.aclrtMemsetAsync(ffi.NULL, 0, 0, 0, rt.stream), c.last_error()))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert [code for code, _ in seen] == [CONTEXT_NULL, CONTEXT_NULL, CONTEXT_NULL]
    assert "aclrtSetDevice" in (seen[0][1] or "")


def test_two_threads_run_the_operator_concurrently(emulator_cann: CannLibs, rt: Rt) -> None:
    c = emulator_cann
    failures: list[str] = []

    def worker(paths: list[Path]) -> None:
        try:
            c.set_device(0)
            stream = c.create_stream()
            for path in paths:
                case = load_case(path)
                run = c.run_case(case, stream, "transposed")
                if not np.array_equal(run.self_out, case.expected):
                    failures.append(f"{path.stem}: {run.message}")
            c.check(c.rt.aclrtDestroyStream(stream))
            c.check(c.rt.aclrtResetDevice(0))
        except Exception as exc:  # reported below, on the main thread
            failures.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(VALID[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
