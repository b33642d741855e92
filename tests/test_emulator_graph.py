"""The emulated ACL graph capture: aclmdlRICaptureBegin/GetInfo/End, aclmdlRIExecuteAsync, aclmdlRIDestroy.

Raw calls through the emulator's C interface (no package). Work launched on a captured stream is recorded,
not run; a replay runs it again with the addresses and values captured. What the runtime refuses during a
capture is refused with its code and invalidates the capture, so that aclmdlRICaptureEnd fails.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from emulator.build import build
from emulator.emu import OPERANDS, CannLibs, Case, Emu, load_case
from emulator.fixtures import DEVICE_SETTINGS, Rt, fails_with, unset_settings

pytestmark = pytest.mark.emulator

TESTS = Path(__file__).resolve().parent
VALID = sorted((TESTS / "data" / "conformance" / "valid").glob("*.npz"))
H2D, D2D = 1, 3
GLOBAL, THREAD_LOCAL, RELAXED = 0, 1, 2
STATUS_NONE, STATUS_ACTIVE, STATUS_INVALIDATED = 0, 1, 2
ACL_EVENT_SYNC = 1
RT_PARAM, STREAM_CAPTURED, EVENT_CAPTURED, MODE_NOT_SUPPORT = 107000, 107027, 107028, 107030
NOT_CAPTURED, WRONG_THREAD, MODEL_CAPTURED, CAPTURE_DEPENDENCY = 107029, 107038, 107026, 107024
FEATURE_NOT_SUPPORT, INVALIDATED, AICORE, MODE_BLOCK_ASYNC = 207000, 507903, 507015, 107041
FRESH = 0xA5
default_settings = unset_settings(*DEVICE_SETTINGS)


def capture_status(c: CannLibs, stream: Any) -> tuple[int, Any]:
    status, model = c.ffi.new("aclmdlRICaptureStatus *"), c.ffi.new("aclmdlRI *")
    c.check(c.rt.aclmdlRICaptureGetInfo(stream, status, model))
    return int(status[0]), model[0]


def end(c: CannLibs, stream: Any) -> tuple[int, Any]:
    model = c.ffi.new("aclmdlRI *")
    code = c.rt.aclmdlRICaptureEnd(stream, model)
    return int(code), model[0]


def new_event(c: CannLibs, ex: bool) -> Any:
    out = c.ffi.new("aclrtEvent *")
    c.check(c.rt.aclrtCreateEventExWithFlag(out, ACL_EVENT_SYNC) if ex else c.rt.aclrtCreateEvent(out))
    return out[0]


class Buffers(NamedTuple):
    src: Any
    dst: Any
    pinned: Any


@pytest.fixture
def bufs(rt: Rt) -> Iterator[Buffers]:
    c = rt.c
    host = c.ffi.new("void **")
    c.check(c.rt.aclrtMallocHost(host, 64))
    b = Buffers(c.malloc(64), c.malloc(64), host[0])
    yield b
    c.free(b.src)
    c.free(b.dst)
    c.check(c.rt.aclrtFreeHost(b.pinned))


# -- recording and replay --

def test_captured_work_is_recorded_then_replayed_with_the_values_in_its_buffers(rt: Rt, bufs: Buffers,
                                                                                emu: Emu) -> None:
    c = rt.c
    start = emu.live()
    emu.reset()
    c.check(c.rt.aclmdlRICaptureBegin(rt.stream, GLOBAL))
    assert capture_status(c, rt.stream)[0] == STATUS_ACTIVE
    c.check(c.rt.aclrtMemcpyAsync(bufs.dst, 64, bufs.src, 64, D2D, rt.stream))
    c.check(c.rt.aclrtMemsetAsync(bufs.src, 8, 0, 8, rt.stream))
    code, graph = end(c, rt.stream)
    assert code == 0 and graph != c.ffi.NULL
    assert capture_status(c, rt.stream) == (STATUS_NONE, c.ffi.NULL)
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    assert c.d2h(bufs.dst, 64) == bytes([FRESH]) * 64  # recorded, not run
    previous = FRESH
    for value in (1, 2):  # inputs change by writing into the captured buffers
        c.h2d(bufs.src, bytes([value]) * 64)
        c.check(c.rt.aclmdlRIExecuteAsync(graph, rt.stream))
        assert c.d2h(bufs.dst, 64) == bytes([previous]) * 64  # queued, not run yet
        previous = value
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))
        assert c.d2h(bufs.dst, 64) == bytes([value]) * 64
        assert c.d2h(bufs.src, 64) == bytes(8) + bytes([value]) * 56
    counts = (emu.stat("captures"), emu.stat("graph_launches"), emu.stat("live_graphs"))
    assert counts == (1, 2, start["live_graphs"] + 1)
    c.check(c.rt.aclmdlRIDestroy(graph))
    fails_with(c, c.rt.aclmdlRIDestroy(graph), RT_PARAM, "destroyed")
    fails_with(c, c.rt.aclmdlRIExecuteAsync(graph, rt.stream), RT_PARAM, "destroyed")
    assert emu.live() == start


class Op(NamedTuple):
    blocks: dict[str, Any]
    tensors: list[Any]
    executor: Any
    workspace: Any
    size: int


def prepare(c: CannLibs, case: Case) -> Op:
    """Upload a case contiguously and run phase 1."""
    blocks = {name: c.malloc(arr.nbytes) for name, arr in case.arrays.items()}
    for name, arr in case.arrays.items():
        c.h2d(blocks[name], arr.tobytes())
    tensors = [c.tensor(case.arrays[n].shape, case.dtypes[n], blocks[n]) if n in blocks else c.ffi.NULL
               for n in OPERANDS]
    size, executor = c.ffi.new("uint64_t *"), c.ffi.new("aclOpExecutor **")
    red = 1 if case.reduce == "update" else 0
    c.check(c.op.aclnnInplaceQuantScatterGetWorkspaceSize(*tensors, case.axis, case.quant_axis, red, size, executor))
    workspace = c.malloc(int(size[0])) if size[0] else c.ffi.NULL
    return Op(blocks, tensors, executor[0], workspace, int(size[0]))


def test_the_operator_is_captured_with_its_executors_state(rt: Rt, emu: Emu) -> None:
    c = rt.c
    case = next(load_case(p) for p in VALID if not np.array_equal(load_case(p).expected, load_case(p).arrays["self"]))
    start = emu.live()
    op = prepare(c, case)
    c.check(c.rt.aclmdlRICaptureBegin(rt.stream, THREAD_LOCAL))
    c.check(c.op.aclnnInplaceQuantScatter(op.workspace, op.size, op.executor, rt.stream))
    code, graph = end(c, rt.stream)
    assert code == 0
    # Phase 2 consumed the single-use executor as usual (nnopbase); the recorded launch keeps what it needs,
    # so even the descriptors may go now.
    assert emu.stat("live_executors") == start["live_executors"]
    for t in op.tensors:
        if t != c.ffi.NULL:
            c.destroy_tensor(t)
    self_bytes = case.arrays["self"].nbytes
    for _ in range(2):
        c.h2d(op.blocks["self"], case.arrays["self"].tobytes())
        c.check(c.rt.aclmdlRIExecuteAsync(graph, rt.stream))
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))
        out = np.frombuffer(c.d2h(op.blocks["self"], self_bytes), np.int8).reshape(case.expected.shape)
        assert np.array_equal(out, case.expected)
    c.check(c.rt.aclmdlRIDestroy(graph))
    for block in (*op.blocks.values(), *([op.workspace] if op.size else [])):
        c.free(block)
    assert emu.live() == start


def test_an_event_recorded_in_a_capture_completes_when_the_graph_runs(rt: Rt, bufs: Buffers) -> None:
    c = rt.c
    event = new_event(c, ex=True)
    status = c.ffi.new("aclrtEventRecordedStatus *")
    c.check(c.rt.aclmdlRICaptureBegin(rt.stream, GLOBAL))
    c.check(c.rt.aclrtMemcpyAsync(bufs.dst, 64, bufs.src, 64, D2D, rt.stream))
    c.check(c.rt.aclrtRecordEvent(event, rt.stream))
    c.check(c.rt.aclrtStreamWaitEvent(rt.stream, event))  # recorded in this capture on this stream
    graph = end(c, rt.stream)[1]
    c.check(c.rt.aclrtQueryEventStatus(event, status))
    assert status[0] == 0  # its record belongs to the graph, which has not run
    c.h2d(bufs.src, bytes([4]) * 64)
    c.check(c.rt.aclmdlRIExecuteAsync(graph, rt.stream))
    c.check(c.rt.aclrtSynchronizeEvent(event))
    c.check(c.rt.aclrtQueryEventStatus(event, status))
    assert status[0] == 1 and c.d2h(bufs.dst, 64) == bytes([4]) * 64
    c.check(c.rt.aclmdlRIDestroy(graph))
    c.check(c.rt.aclrtDestroyEvent(event))


def test_destroying_a_graph_waits_for_its_queued_replays(rt: Rt, bufs: Buffers, emu: Emu) -> None:
    c = rt.c
    c.check(c.rt.aclmdlRICaptureBegin(rt.stream, GLOBAL))
    c.check(c.rt.aclrtMemsetAsync(bufs.dst, 64, 6, 64, rt.stream))
    graph = end(c, rt.stream)[1]
    c.check(c.rt.aclmdlRIExecuteAsync(graph, rt.stream))
    emu.reset()
    c.check(c.rt.aclmdlRIDestroy(graph))
    assert emu.stat("host_syncs") == 1
    assert c.d2h(bufs.dst, 64) == bytes([6]) * 64


def test_a_replay_of_freed_memory_is_a_use_after_free(rt: Rt, emu: Emu) -> None:
    c = rt.c
    block = c.malloc(32)
    c.check(c.rt.aclmdlRICaptureBegin(rt.stream, GLOBAL))
    c.check(c.rt.aclrtMemsetAsync(block, 32, 1, 32, rt.stream))
    graph = end(c, rt.stream)[1]
    c.free(block)  # allowed: the runtime does not check graphs at aclrtFree
    emu.reset()
    c.check(c.rt.aclmdlRIExecuteAsync(graph, rt.stream))
    fails_with(c, c.rt.aclrtSynchronizeStream(rt.stream), AICORE, "freed")
    assert emu.stat("errors_detected") == 1
    c.check(c.rt.aclmdlRIDestroy(graph))


def test_malloc_and_free_are_allowed_during_a_capture(rt: Rt) -> None:
    c = rt.c
    c.check(c.rt.aclmdlRICaptureBegin(rt.stream, GLOBAL))
    block = c.malloc(16)
    c.free(block)
    code, graph = end(c, rt.stream)
    assert code == 0
    c.check(c.rt.aclmdlRIDestroy(graph))


# -- refused during a capture, invalidating it --

Violation = Callable[[CannLibs, Rt, Buffers, list[Any]], int]


def _event_recorded_in_capture(c: CannLibs, rt: Rt, keep: list[Any]) -> Any:
    event = new_event(c, ex=True)
    keep.append(event)
    c.check(c.rt.aclrtRecordEvent(event, rt.stream))
    return event


def _event_recorded_outside(c: CannLibs, rt: Rt, keep: list[Any], ex: bool) -> Any:
    event = new_event(c, ex=ex)
    keep.append(event)
    other = c.create_stream()
    keep.append(("stream", other))
    c.check(c.rt.aclrtRecordEvent(event, other))
    return event


VIOLATIONS: dict[str, tuple[Violation, int, str, bool]] = {
    # name: (the call, its status, a word of its message, whether to set up an outside event first)
    "synchronize stream": (lambda c, rt, b, k: c.rt.aclrtSynchronizeStream(rt.stream), STREAM_CAPTURED,
                           "synchronising", False),
    "synchronize with timeout": (lambda c, rt, b, k: c.rt.aclrtSynchronizeStreamWithTimeout(rt.stream, 10),
                                 STREAM_CAPTURED, "synchronising", False),
    "query stream": (lambda c, rt, b, k: c.rt.aclrtStreamQuery(rt.stream, c.ffi.new("aclrtStreamStatus *")),
                     STREAM_CAPTURED, "querying", False),
    "destroy stream": (lambda c, rt, b, k: c.rt.aclrtDestroyStream(rt.stream), STREAM_CAPTURED, "destroying", False),
    "synchronize device": (lambda c, rt, b, k: c.rt.aclrtSynchronizeDevice(), STREAM_CAPTURED, "device 0", False),
    "synchronous copy": (lambda c, rt, b, k: c.rt.aclrtMemcpy(b.dst, 64, b.src, 64, D2D), MODE_NOT_SUPPORT,
                         "GLOBAL", False),
    "synchronous memset": (lambda c, rt, b, k: c.rt.aclrtMemset(b.dst, 64, 0, 64), MODE_NOT_SUPPORT, "RELAXED",
                           False),
    "pageable async copy": (lambda c, rt, b, k: c.rt.aclrtMemcpyAsync(b.dst, 64, c.ffi.from_buffer(k[0]), 64, H2D,
                                                                      rt.stream), RT_PARAM, "pageable", True),
    "synchronize captured event": (
        lambda c, rt, b, k: c.rt.aclrtSynchronizeEvent(_event_recorded_in_capture(c, rt, k)), EVENT_CAPTURED,
        "synchronising", False),
    "query captured event": (
        lambda c, rt, b, k: c.rt.aclrtQueryEventStatus(_event_recorded_in_capture(c, rt, k),
                                                       c.ffi.new("aclrtEventRecordedStatus *")),
        EVENT_CAPTURED, "querying", False),
    "wait for an outside record": (
        lambda c, rt, b, k: c.rt.aclrtStreamWaitEvent(rt.stream, _event_recorded_outside(c, rt, k, ex=True)),
        CAPTURE_DEPENDENCY, "outside the capture", False),
    "wait for a default event": (
        lambda c, rt, b, k: c.rt.aclrtStreamWaitEvent(rt.stream, _event_recorded_outside(c, rt, k, ex=False)),
        FEATURE_NOT_SUPPORT, "aclrtCreateEventExWithFlag", False),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_refused_during_a_capture_and_the_capture_is_invalidated(name: str, rt: Rt, bufs: Buffers,
                                                                 emu: Emu) -> None:
    c = rt.c
    call, want, word, pageable = VIOLATIONS[name]
    keep: list[Any] = [bytearray(64)] if pageable else []
    start = emu.live()
    c.check(c.rt.aclmdlRICaptureBegin(rt.stream, GLOBAL))
    c.check(c.rt.aclrtMemsetAsync(bufs.dst, 64, 1, 64, rt.stream))
    fails_with(c, call(c, rt, bufs, keep), want, word, "invalidates the capture")
    assert capture_status(c, rt.stream)[0] == STATUS_INVALIDATED
    fails_with(c, c.rt.aclrtMemsetAsync(bufs.dst, 64, 2, 64, rt.stream), INVALIDATED, "invalidated earlier")
    code, graph = end(c, rt.stream)
    assert (code, graph) == (INVALIDATED, c.ffi.NULL)
    assert capture_status(c, rt.stream)[0] == STATUS_NONE
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))  # an ordinary stream again
    assert c.d2h(bufs.dst, 64) == bytes([FRESH]) * 64  # nothing recorded ever ran
    for item in keep:
        if isinstance(item, tuple):
            c.check(c.rt.aclrtDestroyStream(item[1]))
        elif not isinstance(item, bytearray):
            c.check(c.rt.aclrtDestroyEvent(item))
    assert emu.live()["live_graphs"] == start["live_graphs"]


def test_the_end_says_what_invalidated_the_capture(rt: Rt) -> None:
    c = rt.c
    c.check(c.rt.aclmdlRICaptureBegin(rt.stream, GLOBAL))
    fails_with(c, c.rt.aclrtSynchronizeStream(rt.stream), STREAM_CAPTURED)
    code, _ = end(c, rt.stream)
    fails_with(c, code, INVALIDATED, "was invalidated", "synchronising")


def run_in_thread(fn: Callable[[], Any]) -> Any:
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join()
    return box[0]


@pytest.mark.parametrize(("mode", "here", "elsewhere"), [
    (GLOBAL, MODE_NOT_SUPPORT, MODE_NOT_SUPPORT),
    (THREAD_LOCAL, MODE_NOT_SUPPORT, 0),
    (RELAXED, 0, 0),
])
def test_synchronous_copies_follow_the_capture_mode(mode: int, here: int, elsewhere: int, rt: Rt,
                                                    bufs: Buffers) -> None:
    c = rt.c

    def other_thread() -> tuple[int, str | None]:
        c.set_device(0)
        code = c.rt.aclrtMemcpy(bufs.dst, 64, bufs.src, 64, D2D)
        msg = c.last_error()
        c.check(c.rt.aclrtResetDevice(0))
        return code, msg

    c.check(c.rt.aclmdlRICaptureBegin(rt.stream, mode))
    code, msg = run_in_thread(other_thread)
    assert code == elsewhere, msg
    fails_with(c, c.rt.aclrtMemset(bufs.dst, 64, 0, 64), here)
    code, graph = end(c, rt.stream)
    assert code == (INVALIDATED if here or elsewhere else 0)
    if graph != c.ffi.NULL:
        c.check(c.rt.aclmdlRIDestroy(graph))


def test_a_pageable_copy_made_synchronous_is_refused_during_a_global_capture(rt: Rt, bufs: Buffers,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    c = rt.c
    monkeypatch.setenv("CANN_EMU_VERSION", "8.5.0")  # pageable async copies run synchronously from 8.5
    other = c.create_stream()
    pageable = bytearray(64)
    c.check(c.rt.aclrtMemcpyAsync(bufs.dst, 64, c.ffi.from_buffer(pageable), 64, H2D, other))  # no capture: fine
    c.check(c.rt.aclmdlRICaptureBegin(rt.stream, GLOBAL))
    code = c.rt.aclrtMemcpyAsync(bufs.dst, 64, c.ffi.from_buffer(pageable), 64, H2D, other)
    fails_with(c, code, MODE_BLOCK_ASYNC, "pageable copy made synchronous", "GLOBAL")
    assert end(c, rt.stream) == (INVALIDATED, c.ffi.NULL)
    c.check(c.rt.aclrtDestroyStream(other))


@pytest.mark.parametrize("mode", [GLOBAL, THREAD_LOCAL, RELAXED])
def test_only_the_capturing_thread_ends_a_strict_capture(mode: int, rt: Rt, emu: Emu) -> None:
    c = rt.c
    start = emu.live()["live_graphs"]
    c.check(c.rt.aclmdlRICaptureBegin(rt.stream, mode))

    def other_thread() -> tuple[int, Any, str | None]:
        code, graph = end(c, rt.stream)
        return code, graph, c.last_error()

    code, graph, msg = run_in_thread(other_thread)
    if mode == RELAXED:
        assert code == 0, msg
        c.check(c.rt.aclmdlRIDestroy(graph))
    else:
        assert code == WRONG_THREAD and graph == c.ffi.NULL and "another thread" in (msg or "")
        # The runtime discards the capture: the stream is no longer captured.
        assert capture_status(c, rt.stream)[0] == STATUS_NONE
        fails_with(c, end(c, rt.stream)[0], NOT_CAPTURED, "aclmdlRICaptureBegin")
    assert emu.live()["live_graphs"] == start


def test_model_instance_misuse_is_refused(rt: Rt) -> None:
    c = rt.c
    other = c.create_stream()
    fails_with(c, c.rt.aclmdlRICaptureBegin(c.ffi.NULL, GLOBAL), 100000, "default stream")
    fails_with(c, c.rt.aclmdlRICaptureBegin(rt.stream, 3), RT_PARAM, "mode 3")
    c.check(c.rt.aclmdlRICaptureBegin(rt.stream, GLOBAL))
    fails_with(c, c.rt.aclmdlRICaptureBegin(rt.stream, GLOBAL), STREAM_CAPTURED, "already")
    _, capturing = capture_status(c, rt.stream)
    fails_with(c, c.rt.aclmdlRIExecuteAsync(capturing, other), MODEL_CAPTURED, "aclmdlRICaptureEnd")
    fails_with(c, c.rt.aclmdlRIDestroy(capturing), MODEL_CAPTURED, "still being captured")
    code, graph = end(c, rt.stream)
    assert code == 0 and graph == capturing  # the model made at begin
    fails_with(c, end(c, rt.stream)[0], NOT_CAPTURED)
    c.check(c.rt.aclmdlRICaptureBegin(other, GLOBAL))
    fails_with(c, c.rt.aclmdlRIExecuteAsync(graph, other), STREAM_CAPTURED, "being captured")
    code, empty = end(c, other)
    assert code == 0 and empty != c.ffi.NULL
    c.check(c.rt.aclmdlRIDestroy(empty))
    c.check(c.rt.aclmdlRIExecuteAsync(graph, other))
    c.check(c.rt.aclrtSynchronizeStream(other))
    c.check(c.rt.aclmdlRIDestroy(graph))
    c.check(c.rt.aclrtDestroyStream(other))


def test_no_graph_build_hides_the_graph_symbols(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                emulator_root: Path) -> None:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")

    def exports(lib64: Path) -> set[str]:
        out = subprocess.run([nm, "-D", "--defined-only", str(lib64 / "libascendcl.so")], capture_output=True,
                             text=True, check=True).stdout
        return set(out.split())

    graph = {"aclmdlRICaptureBegin", "aclmdlRICaptureGetInfo", "aclmdlRICaptureEnd", "aclmdlRIExecuteAsync",
             "aclmdlRIDestroy"}
    assert graph <= exports(emulator_root / "lib64")
    monkeypatch.setenv("CANN_EMU_NO_GRAPH", "1")
    old = exports(build(tmp_path / "old"))
    assert "aclrtStreamWaitEvent" in old and not graph & old
