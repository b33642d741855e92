"""The emulated runtime's events for waits, stream and event queries, and contexts.

Raw calls through the emulator's C interface (no package). Each test makes the wrong call a binding could
make and shows the emulator reporting it, as the real toolkit would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from emulator.emu import CannLibs, Emu, load_case
from emulator.fixtures import DEVICE_SETTINGS, Rt, fails_with, unset_settings

pytestmark = pytest.mark.emulator

TESTS = Path(__file__).resolve().parent
VALID = sorted((TESTS / "data" / "conformance" / "valid").glob("*.npz"))
H2D, D2H, D2D = 1, 2, 3
ACL_EVENT_SYNC, ACL_EVENT_TIME_LINE = 1, 8
STREAM_COMPLETE, STREAM_NOT_READY = 0, 1
EVENT_NOT_READY, EVENT_COMPLETE = 0, 1
RT_PARAM, CONTEXT_NULL, STREAM_CONTEXT, ACLNN_RUNTIME = 107000, 107002, 107003, 361001
FRESH = 0xA5  # what a new device block holds
default_settings = unset_settings(*DEVICE_SETTINGS)


def new_event(c: CannLibs, how: str, flag: int = 0) -> Any:
    out = c.ffi.new("aclrtEvent *")
    if how == "plain":
        c.check(c.rt.aclrtCreateEvent(out))
    elif how == "flag":
        c.check(c.rt.aclrtCreateEventWithFlag(out, flag))
    else:
        c.check(c.rt.aclrtCreateEventExWithFlag(out, flag))
    return out[0]


class Pinned:
    """An aclrtMallocHost block (what asynchronous copies need) of ``n`` bytes."""

    def __init__(self, c: CannLibs, n: int) -> None:
        self.c, self.n = c, n
        out = c.ffi.new("void **")
        c.check(c.rt.aclrtMallocHost(out, n))
        self.ptr = out[0]

    def write(self, data: bytes) -> None:
        self.c.ffi.memmove(self.ptr, data, len(data))

    def free(self) -> None:
        self.c.check(self.c.rt.aclrtFreeHost(self.ptr))


@pytest.fixture
def two_streams(rt: Rt) -> Iterator[tuple[Any, Any]]:
    c = rt.c
    other = c.create_stream()
    yield rt.stream, other
    c.check(c.rt.aclrtDestroyStream(other))


# -- events for waits --

def test_a_stream_waits_only_for_an_event_made_to_be_waited_on(rt: Rt) -> None:
    c = rt.c
    timing = new_event(c, "flag", ACL_EVENT_TIME_LINE)
    c.check(c.rt.aclrtRecordEvent(timing, rt.stream))
    fails_with(c, c.rt.aclrtStreamWaitEvent(rt.stream, timing), RT_PARAM, "ACL_EVENT_SYNC", "0x8")
    good = [new_event(c, "flag", ACL_EVENT_SYNC), new_event(c, "ex", ACL_EVENT_SYNC),
            new_event(c, "ex", ACL_EVENT_SYNC | ACL_EVENT_TIME_LINE), new_event(c, "plain")]
    for event in good:
        c.check(c.rt.aclrtRecordEvent(event, rt.stream))
        c.check(c.rt.aclrtStreamWaitEvent(rt.stream, event))
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    for event in (timing, *good):
        c.check(c.rt.aclrtDestroyEvent(event))


def test_waiting_for_a_default_event_never_recorded_is_refused(rt: Rt) -> None:
    c = rt.c
    plain, sync = new_event(c, "plain"), new_event(c, "ex", ACL_EVENT_SYNC)
    fails_with(c, c.rt.aclrtStreamWaitEvent(rt.stream, plain), RT_PARAM, "not been recorded")
    c.check(c.rt.aclrtStreamWaitEvent(rt.stream, sync))  # an ACL_EVENT_SYNC event: nothing to wait for
    for event in (plain, sync):
        c.check(c.rt.aclrtDestroyEvent(event))


def test_a_wait_orders_another_streams_work_without_the_host(rt: Rt, two_streams: tuple[Any, Any],
                                                               emu: Emu) -> None:
    c = rt.c
    producer, consumer = two_streams
    host = Pinned(c, 64)
    host.write(bytes(range(64)))
    src, dst = c.malloc(64), c.malloc(64)
    event = new_event(c, "ex", ACL_EVENT_SYNC)

    def pipeline(wait: bool) -> tuple[bytes, int]:
        emu.reset()
        c.check(c.rt.aclrtMemcpyAsync(src, 64, host.ptr, 64, H2D, producer))
        c.check(c.rt.aclrtRecordEvent(event, producer))
        if wait:
            c.check(c.rt.aclrtStreamWaitEvent(consumer, event))
        c.check(c.rt.aclrtMemcpyAsync(dst, 64, src, 64, D2D, consumer))
        c.check(c.rt.aclrtSynchronizeStream(consumer))
        waits = emu.stat("host_syncs")
        return c.d2h(dst, 64), waits

    # The bug: the consumer reads src before the producer's copy has run.
    assert pipeline(wait=False) == (bytes([FRESH]) * 64, 1)
    c.check(c.rt.aclrtSynchronizeStream(producer))
    c.h2d(src, bytes(64))
    assert pipeline(wait=True) == (bytes(range(64)), 1)  # one host wait: the consumer's synchronisation
    status = c.ffi.new("aclrtStreamStatus *")
    c.check(c.rt.aclrtStreamQuery(producer, status))
    assert status[0] == STREAM_COMPLETE  # the wait ran the producer's work: nothing left there
    c.check(c.rt.aclrtDestroyEvent(event))
    c.free(src)
    c.free(dst)
    host.free()


def test_queries_never_wait(rt: Rt, emu: Emu) -> None:
    c, ffi = rt.c, rt.c.ffi
    block = c.malloc(32)
    event = new_event(c, "ex", ACL_EVENT_SYNC)
    stream_status, event_status = ffi.new("aclrtStreamStatus *"), ffi.new("aclrtEventRecordedStatus *")
    c.check(c.rt.aclrtQueryEventStatus(event, event_status))
    assert event_status[0] == EVENT_NOT_READY  # never recorded
    emu.reset()
    c.check(c.rt.aclrtMemsetAsync(block, 32, 7, 32, rt.stream))
    c.check(c.rt.aclrtRecordEvent(event, rt.stream))
    # Right after a launch the work is not done: a binding that reads now reads stale data.
    c.check(c.rt.aclrtQueryEventStatus(event, event_status))
    assert event_status[0] == EVENT_NOT_READY
    assert c.d2h(block, 32) == bytes([FRESH]) * 32
    c.check(c.rt.aclrtQueryEventStatus(event, event_status))  # polling ends: time has passed since
    assert event_status[0] == EVENT_COMPLETE
    assert c.d2h(block, 32) == bytes([7]) * 32
    c.check(c.rt.aclrtMemsetAsync(block, 32, 9, 32, rt.stream))
    c.check(c.rt.aclrtStreamQuery(rt.stream, stream_status))
    assert stream_status[0] == STREAM_NOT_READY
    assert c.d2h(block, 32) == bytes([7]) * 32
    c.check(c.rt.aclrtStreamQuery(rt.stream, stream_status))
    assert stream_status[0] == STREAM_COMPLETE
    assert c.d2h(block, 32) == bytes([9]) * 32
    assert emu.stat("syncs") == 0 and emu.calls("aclrtStreamQuery") == 2
    c.check(c.rt.aclrtDestroyEvent(event))
    c.free(block)


def test_a_query_reports_the_failure_of_work_that_completed(rt: Rt) -> None:
    c, ffi = rt.c, rt.c.ffi
    block = c.malloc(32)
    status = ffi.new("aclrtStreamStatus *")
    c.check(c.rt.aclrtMemsetAsync(block, 32, 1, 32, rt.stream))
    c.free(block)  # while the memset still needs it
    c.check(c.rt.aclrtStreamQuery(rt.stream, status))
    fails_with(c, c.rt.aclrtStreamQuery(rt.stream, status), 507015, "use after free")
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))  # reported once


def test_host_syncs_counts_each_host_wait(rt: Rt, emu: Emu) -> None:
    c = rt.c
    event = new_event(c, "plain")
    c.check(c.rt.aclrtRecordEvent(event, rt.stream))
    emu.reset()
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    c.check(c.rt.aclrtSynchronizeStreamWithTimeout(rt.stream, 100))
    c.check(c.rt.aclrtSynchronizeEvent(event))
    c.check(c.rt.aclrtSynchronizeDevice())
    assert emu.stat("host_syncs") == 4
    other = c.create_stream()
    c.check(c.rt.aclrtDestroyStream(other))  # nothing queued: no wait
    assert emu.stat("host_syncs") == 4
    other = c.create_stream()
    c.check(c.rt.aclrtRecordEvent(event, other))
    c.check(c.rt.aclrtDestroyStream(other))  # waits for the record first
    assert emu.stat("host_syncs") == 5
    c.check(c.rt.aclrtDestroyEvent(event))


# -- contexts --

def test_work_on_a_stream_of_another_context_is_refused(rt: Rt, emulator_cann: CannLibs) -> None:
    c, ffi = rt.c, rt.c.ffi
    block = c.malloc(64)
    host = Pinned(c, 64)
    event = new_event(c, "ex", ACL_EVENT_SYNC)
    default = ffi.new("aclrtContext *")
    c.check(c.rt.aclrtGetCurrentContext(default))
    mine = ffi.new("aclrtContext *")
    c.check(c.rt.aclrtCreateContext(mine, 0))  # now current: rt.stream belongs to the default context
    launches = {
        "aclrtMemcpyAsync": lambda: c.rt.aclrtMemcpyAsync(block, 64, host.ptr, 64, H2D, rt.stream),
        "aclrtMemsetAsync": lambda: c.rt.aclrtMemsetAsync(block, 64, 0, 64, rt.stream),
        "aclrtRecordEvent": lambda: c.rt.aclrtRecordEvent(event, rt.stream),
        "aclrtStreamWaitEvent": lambda: c.rt.aclrtStreamWaitEvent(rt.stream, event),
        "aclrtDestroyStream": lambda: c.rt.aclrtDestroyStream(rt.stream),
    }
    for name, launch in launches.items():
        msg = fails_with(c, launch(), STREAM_CONTEXT, "context", "aclrtSetCurrentContext")
        assert msg.startswith(name)
    # The op's phase 2 surfaces the runtime's refusal as aclnn's runtime error.
    run = c.run_case(load_case(VALID[0]), rt.stream)
    assert (run.phase1, run.launch) == (0, ACLNN_RUNTIME)
    assert "107003" in (run.message or "") and "context" in (run.message or "")
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))  # synchronising is not a launch: allowed
    c.check(c.rt.aclrtSetCurrentContext(default[0]))
    for launch in launches.values():
        if launch is not launches["aclrtDestroyStream"]:
            c.check(launch())
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    c.check(c.rt.aclrtDestroyContext(mine[0]))
    c.check(c.rt.aclrtDestroyEvent(event))
    host.free()
    c.free(block)


def test_a_stream_of_another_device_is_refused(rt: Rt, monkeypatch: pytest.MonkeyPatch) -> None:
    c = rt.c
    monkeypatch.setenv("CANN_EMU_DEVICE_COUNT", "2")
    block = c.malloc(16)
    ctx = c.ffi.new("aclrtContext *")
    c.check(c.rt.aclrtGetCurrentContext(ctx))
    c.set_device(1)
    fails_with(c, c.rt.aclrtMemsetAsync(block, 16, 0, 16, rt.stream), STREAM_CONTEXT, "device 0", "device 1")
    c.check(c.rt.aclrtResetDevice(1))
    c.check(c.rt.aclrtSetCurrentContext(ctx[0]))
    c.free(block)


def test_threads_that_set_the_device_share_its_default_context(rt: Rt) -> None:
    """The package's pattern (runtime._activate): aclrtSetDevice once per thread, then switching with
    aclrtSetCurrentContext; streams made on one thread take work from the others."""
    c, ffi = rt.c, rt.c.ffi
    block = c.malloc(16)
    ctx = ffi.new("aclrtContext *")
    c.check(c.rt.aclrtGetCurrentContext(ctx))
    codes: list[int] = []

    def worker() -> None:
        codes.append(c.rt.aclrtMemsetAsync(block, 16, 0, 16, rt.stream))  # no current context yet
        c.last_error()
        codes.append(c.rt.aclrtSetDevice(0))
        codes.append(c.rt.aclrtMemsetAsync(block, 16, 3, 16, rt.stream))
        mine = ffi.new("aclrtContext *")
        codes.append(c.rt.aclrtCreateContext(mine, 0))
        codes.append(c.rt.aclrtMemsetAsync(block, 16, 4, 16, rt.stream))  # the new context is current
        c.last_error()
        codes.append(c.rt.aclrtSetCurrentContext(ctx[0]))
        codes.append(c.rt.aclrtMemsetAsync(block, 16, 5, 16, rt.stream))
        codes.append(c.rt.aclrtDestroyContext(mine[0]))
        codes.append(c.rt.aclrtResetDevice(0))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert codes == [CONTEXT_NULL, 0, 0, 0, STREAM_CONTEXT, 0, 0, 0, 0]
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    assert np.frombuffer(c.d2h(block, 16), np.uint8).tolist() == [5] * 16
    c.free(block)
