"""The emulator is as strict as the real toolkit (shared/spec/emulator.md, "Strict like the real toolkit").

Each test makes the deliberately wrong call through the raw C interface and shows it reported: status,
message, counter. Behaviours read once per process (or that end ACL for the process) run in a child.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from emulator.build import build
from emulator.emu import OPERANDS, CannLibs, Emu, load_case
from emulator.fixtures import Rt, fails_with, unset_settings

pytestmark = pytest.mark.emulator

TESTS = Path(__file__).resolve().parent
VALID = sorted((TESTS / "data" / "conformance" / "valid").glob("*.npz"))
NULLPTR, INVALID_PARAM, INNER = 161001, 161002, 561000
default_settings = unset_settings("CANN_EMU_SOC", "CANN_EMU_WORKSPACE_BYTES", "CANN_EMU_REPEATABLE", "CANN_EMU_VERSION",
                                  "CANN_EMU_STOP_ON_FAILURE", "CANN_EMU_NAN_VALUE")


def run_script(lib64: Path, body: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter with ``c = CannLibs(lib64)``, ``ffi`` and ``stat`` ready."""
    prelude = (f"import sys, os\nsys.path.insert(0, {str(TESTS)!r})\nfrom emulator.emu import CannLibs\n"
               f"c = CannLibs({str(lib64)!r})\nffi = c.ffi\n"
               "def stat(name):\n    return int(c.rt.emuGetStat(name.encode()))\n")
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(body)], env=full_env,
                          capture_output=True, text=True, timeout=120, check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


@contextmanager
def prepared(c: CannLibs) -> Iterator[tuple[Any, int, dict[str, Any], dict[str, Any]]]:
    """Device copies and descriptors of a valid case and a phase-1 executor: (executor, size, blocks, tensors)."""
    ffi = c.ffi
    case = load_case(VALID[0])
    blocks = {n: c.malloc(a.nbytes) for n, a in case.arrays.items()}
    for n, a in case.arrays.items():
        c.h2d(blocks[n], a.tobytes())
    tensors = {n: c.tensor(a.shape, case.dtypes[n], blocks[n]) for n, a in case.arrays.items()}
    size, executor = ffi.new("uint64_t *"), ffi.new("aclOpExecutor **")
    try:
        c.check(c.op.aclnnInplaceQuantScatterGetWorkspaceSize(
            *[tensors.get(n, ffi.NULL) for n in OPERANDS], case.axis, case.quant_axis, 1, size, executor))
        yield executor[0], int(size[0]), blocks, tensors
    finally:
        for t in tensors.values():
            c.destroy_tensor(t)
        for b in blocks.values():
            c.free(b)


# -- 1. executors --

@pytest.mark.parametrize("launch_ok", [True, False], ids=["after-success", "after-failure"])
def test_phase2_consumes_the_executor_whatever_happens(rt: Rt, emu: Emu, launch_ok: bool) -> None:
    c, ffi = rt.c, rt.c.ffi
    executors = emu.stat("live_executors")
    with prepared(c) as (executor, size, blocks, tensors):
        ws = c.malloc(size)
        code = c.op.aclnnInplaceQuantScatter(ws if launch_ok else ffi.NULL, size, executor, rt.stream)
        assert (code == 0) == launch_ok
        c.last_error()
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))
        assert emu.stat("live_executors") == executors  # deleted by phase 2
        # Every later use is a use-after-free on hardware: refused, explained, counted.
        uses = [
            lambda: c.nnop.aclDestroyAclOpExecutor(executor),
            lambda: c.nnop.aclSetAclOpExecutorRepeatable(executor),
            lambda: c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream),
            lambda: c.nnop.aclSetInputTensorAddr(executor, 0, tensors["self"], blocks["self"]),
        ]
        for use in uses:
            before = emu.stat("errors_detected")
            fails_with(c, use(), INVALID_PARAM, "consumed")
            assert emu.stat("errors_detected") == before + 1
        c.free(ws)


def test_repeatable_is_refused_for_this_op(rt: Rt, emu: Emu, monkeypatch: pytest.MonkeyPatch) -> None:
    c = rt.c
    with prepared(c) as (executor, size, _, _):
        fails_with(c, c.nnop.aclSetAclOpExecutorRepeatable(executor), INNER, "ViewCopy", "561000")
        # Refused, so still single-use: the launch consumes it.
        ws = c.malloc(size)
        c.check(c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream))
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))
        fails_with(c, c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream), INVALID_PARAM, "consumed")
        c.free(ws)
    monkeypatch.setenv("CANN_EMU_REPEATABLE", "1")
    live = emu.stat("live_executors")
    with prepared(c) as (executor, size, _, _):
        c.check(c.nnop.aclSetAclOpExecutorRepeatable(executor))
        ws = c.malloc(size)
        for _ in range(2):
            c.check(c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream))
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))
        # nnopbase's NULL-workspace error path deletes even a repeatable executor.
        assert c.op.aclnnInplaceQuantScatter(c.ffi.NULL, size, executor, rt.stream) == NULLPTR
        c.last_error()
        assert emu.stat("live_executors") == live
        fails_with(c, c.nnop.aclDestroyAclOpExecutor(executor), INVALID_PARAM, "consumed")
        c.free(ws)


def test_misaligned_tensor_address_is_created_but_counted(rt: Rt, emu: Emu) -> None:
    c, ffi = rt.c, rt.c.ffi
    block = c.malloc(256)
    before = emu.stat("errors_detected")
    aligned = c.tensor([4], 2, block)
    assert emu.stat("errors_detected") == before
    misaligned = c.tensor([4], 2, ffi.cast("char *", block) + 16)  # 16-byte aligned only
    assert emu.stat("errors_detected") == before + 1
    for t in (aligned, misaligned):
        c.destroy_tensor(t)
    c.free(block)


# -- 2. host memory of asynchronous copies, releases, 2-D copies, pointer attributes --

H2D, D2H, D2D = 1, 2, 3


def pinned(c: CannLibs, size: int) -> Any:
    out = c.ffi.new("void **")
    c.check(c.rt.aclrtMallocHost(out, size), "aclrtMallocHost")
    return out[0]


def test_pinned_bytes_are_counted(rt: Rt, emu: Emu) -> None:
    c = rt.c
    before = (emu.stat("live_host_blocks"), emu.stat("live_host_bytes"))
    p, q = pinned(c, 100), pinned(c, 28)
    assert int(c.ffi.cast("uintptr_t", p)) % 64 == 0  # as documented for aclrtMallocHost
    assert (emu.stat("live_host_blocks"), emu.stat("live_host_bytes")) == (before[0] + 2, before[1] + 128)
    c.check(c.rt.aclrtFreeHost(p))
    c.check(c.rt.aclrtFreeHost(q))
    assert (emu.stat("live_host_blocks"), emu.stat("live_host_bytes")) == before


def test_async_copy_of_pageable_memory_is_counted_before_8_5(rt: Rt, emu: Emu) -> None:
    c, ffi = rt.c, rt.c.ffi
    dev = c.malloc(256)
    host = pinned(c, 256)
    pageable = bytearray(256)
    emu.reset()
    c.check(c.rt.aclrtMemcpyAsync(dev, 256, host, 256, H2D, rt.stream))  # the right way
    c.check(c.rt.aclrtMemcpyAsync(host, 256, dev, 256, D2H, rt.stream))
    assert emu.stat("errors_detected") == 0
    # Pageable host memory: CANN 8.3 accepts the call and the copy is unpredictable on hardware.
    assert c.rt.aclrtMemcpyAsync(dev, 256, ffi.from_buffer(pageable), 256, H2D, rt.stream) == 0
    assert "aclrtMallocHost" in (c.last_error() or "")
    assert emu.stat("errors_detected") == 1
    # Running past the end of a pinned block is refused outright.
    fails_with(c, c.rt.aclrtMemcpyAsync(ffi.cast("char *", host) + 192, 128, dev, 128, D2H, rt.stream), 107000,
               "overruns its aclrtMallocHost block")
    # Misaligned host or device addresses: accepted, counted.
    assert c.rt.aclrtMemcpyAsync(ffi.cast("char *", dev) + 32, 64, host, 64, H2D, rt.stream) == 0
    assert "64-byte aligned" in (c.last_error() or "")
    assert c.rt.aclrtMemcpyAsync(dev, 64, ffi.cast("char *", host) + 8, 64, H2D, rt.stream) == 0
    assert c.rt.aclrtMemsetAsync(ffi.cast("char *", dev) + 4, 8, 0, 8, rt.stream) == 0
    c.last_error()
    assert emu.stat("errors_detected") == 4
    assert emu.stat("pageable_copies") == 0  # queued, not synchronous, before 8.5
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    c.check(c.rt.aclrtFreeHost(host))
    c.free(dev)


def test_pageable_copy_is_synchronous_from_8_5(rt: Rt, emu: Emu, monkeypatch: pytest.MonkeyPatch) -> None:
    c, ffi = rt.c, rt.c.ffi
    monkeypatch.setenv("CANN_EMU_VERSION", "8.5.0")
    dev = c.malloc(64)
    c.h2d(dev, bytes(range(64)))
    emu.reset()
    c.check(c.rt.aclrtMemsetAsync(dev, 64, 7, 64, rt.stream))  # queued first: the copy must wait for it
    out = bytearray(64)
    c.check(c.rt.aclrtMemcpyAsync(ffi.from_buffer(out), 64, dev, 64, D2H, rt.stream))
    assert out == bytes([7]) * 64  # done when the call returned
    assert (emu.stat("pageable_copies"), emu.stat("host_syncs"), emu.stat("errors_detected")) == (1, 1, 0)
    # From 8.5 alignment is not a rule any more.
    c.check(c.rt.aclrtMemsetAsync(ffi.cast("char *", dev) + 4, 8, 0, 8, rt.stream))
    assert emu.stat("errors_detected") == 0
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    c.free(dev)


def test_synchronous_copies_count_host_syncs(rt: Rt, emu: Emu) -> None:
    c = rt.c
    dev = c.malloc(64)
    emu.reset()
    c.h2d(dev, bytes(64))
    c.check(c.rt.aclrtMemset(dev, 64, 1, 64))
    assert c.d2h(dev, 64) == bytes([1]) * 64
    assert emu.stat("host_syncs") == 3
    c.free(dev)


def test_version_is_reported_like_the_toolkit(rt: Rt, emulator_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c, ffi = rt.c, rt.c.ffi
    out = ffi.new("char[]", 128)
    c.check(c.rt.aclsysGetVersionStr(ffi.new("char[]", b"runtime"), out))
    assert ffi.string(out) == b"8.3.RC1"
    info = emulator_root / "share" / "info" / "runtime" / "version.info"
    assert "Version=8.3.RC1" in info.read_text().splitlines()
    monkeypatch.setenv("CANN_EMU_VERSION", "8.5.0")
    c.check(c.rt.aclsysGetVersionStr(ffi.new("char[]", b"runtime"), out))
    assert ffi.string(out) == b"8.5.0"
    fails_with(c, c.rt.aclsysGetVersionStr(ffi.new("char[]", b"nosuchpkg"), out), 100003, "version.info")
    fails_with(c, c.rt.aclsysGetVersionStr(ffi.NULL, out), 100000, "pkgName")
    v = [ffi.new("int32_t *") for _ in range(3)]
    c.check(c.rt.aclrtGetVersion(*v))
    assert v[0][0] == 1  # the ACL API version, not the CANN release


def test_2d_copy(rt: Rt, emu: Emu, monkeypatch: pytest.MonkeyPatch) -> None:
    c, ffi = rt.c, rt.c.ffi
    dev = c.malloc(4 * 64)
    host = pinned(c, 4 * 64)
    buf = ffi.buffer(ffi.cast("char *", host), 4 * 64)
    buf[:] = bytes(range(256))
    c.check(c.rt.aclrtMemset(dev, 256, 0, 256))
    # 4 rows of 16 bytes, 64 bytes apart on both sides.
    c.check(c.rt.aclrtMemcpy2dAsync(dev, 64, host, 64, 16, 4, H2D, rt.stream))
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    got = c.d2h(dev, 256)
    for r in range(4):
        assert got[r * 64:r * 64 + 16] == bytes(range(r * 64, r * 64 + 16))
        assert got[r * 64 + 16:(r + 1) * 64] == bytes(48)
    fails_with(c, c.rt.aclrtMemcpy2dAsync(dev, 8, host, 64, 16, 4, H2D, rt.stream), 100000, "width 16")
    fails_with(c, c.rt.aclrtMemcpy2dAsync(dev, 64, host, 64, 16, 4, 0, rt.stream), 100000, "kind 0")
    fails_with(c, c.rt.aclrtMemcpy2dAsync(dev, 64, host, 64, 16, 6 * 1024 * 1024, H2D, rt.stream), 100000, "height")
    # The extent of the last row is checked against the block.
    fails_with(c, c.rt.aclrtMemcpy2dAsync(dev, 128, host, 64, 16, 4, H2D, rt.stream), 107000, "overruns")
    # The pinned-memory rule applies as for 1-D copies.
    emu.reset()
    pageable = bytearray(256)
    assert c.rt.aclrtMemcpy2dAsync(ffi.from_buffer(pageable), 64, dev, 64, 16, 4, D2H, rt.stream) == 0
    assert emu.stat("errors_detected") == 1
    c.last_error()
    monkeypatch.setenv("CANN_EMU_VERSION", "8.5.0")
    c.check(c.rt.aclrtMemcpy2dAsync(ffi.from_buffer(pageable), 64, dev, 64, 16, 4, D2H, rt.stream))
    assert pageable[64:80] == bytes(range(64, 80)) and emu.stat("pageable_copies") == 1
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    c.check(c.rt.aclrtFreeHost(host))
    c.free(dev)


def test_pointer_attributes(rt: Rt) -> None:
    c, ffi = rt.c, rt.c.ffi
    attrs = ffi.new("aclrtPtrAttributes *")
    dev, host, pageable = c.malloc(64), pinned(c, 64), bytearray(64)
    expected = [(dev, 1), (ffi.cast("char *", dev) + 10, 1), (host, 0), (ffi.from_buffer(pageable), 2)]
    for ptr, kind in expected:
        c.check(c.rt.aclrtPointerGetAttributes(ptr, attrs))
        assert (attrs.location.type, attrs.location.id) == (kind, 0)
        assert attrs.pageSize > 0
    c.free(dev)
    c.check(c.rt.aclrtPointerGetAttributes(dev, attrs))
    assert attrs.location.type == 2  # freed: no longer registered
    fails_with(c, c.rt.aclrtPointerGetAttributes(host, ffi.NULL), 100000, "attributes")
    c.check(c.rt.aclrtFreeHost(host))


# -- 3. aclInit / aclFinalize / aclFinalizeReference --

@pytest.fixture(scope="module")
def root_8_5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree built as CANN 8.5.0 (exports aclFinalizeReference)."""
    root = tmp_path_factory.mktemp("cann-emulator-8.5")
    build(root, cann_version="8.5.0")
    return root


def test_repeated_init_is_counted_and_finalize_ends_acl_for_everyone(emulator_root: Path) -> None:
    ok(run_script(emulator_root / "lib64", """
        p = ffi.new("void **")
        assert c.rt.aclInit(ffi.NULL) == 0
        assert c.rt.aclInit(ffi.NULL) == 100002 and "2 callers" in c.last_error()
        assert c.rt.aclInit(ffi.NULL) == 100002 and "3 callers" in c.last_error()
        try:
            c.rt.aclFinalizeReference
            raise SystemExit("aclFinalizeReference is exported by an 8.3 tree")
        except AttributeError:
            pass
        assert c.rt.aclFinalize() == 0  # one call ends ACL for all three callers
        assert c.rt.aclrtSetDevice(0) == 100000 and "finalized" in c.last_error()
        assert c.rt.aclrtMalloc(p, 8, 0) == 100000
        assert c.rt.aclFinalize() == 100037
        assert c.rt.aclInit(ffi.NULL) == 0  # a new start, counted from one
        assert c.rt.aclrtSetDevice(0) == 0
        print("ok")
    """))


def test_finalize_reference_from_8_5(root_8_5: Path) -> None:
    ok(run_script(root_8_5 / "lib64", """
        out = ffi.new("char[]", 128)
        assert c.rt.aclsysGetVersionStr(ffi.new("char[]", b"runtime"), out) == 0
        assert ffi.string(out) == b"8.5.0"
        assert open(os.environ["ROOT"] + "/share/info/runtime/version.info").read() == "Version=8.5.0\\n"
        n = ffi.new("uint64_t *")
        assert c.rt.aclFinalizeReference(n) == 100037  # nothing to finalize yet
        for _ in range(3):
            c.rt.aclInit(ffi.NULL)
        c.last_error()
        assert c.rt.aclFinalizeReference(n) == 0 and n[0] == 2
        assert c.rt.aclrtSetDevice(0) == 0  # still initialised for the other two
        assert c.rt.aclFinalizeReference(n) == 0 and n[0] == 1
        assert c.rt.aclFinalizeReference(ffi.NULL) == 0  # the last one finalizes
        assert c.rt.aclrtSetDevice(0) == 100000
        assert c.rt.aclFinalizeReference(n) == 100037 and n[0] == 0
        assert c.rt.aclFinalize() == 100037
        print("ok")
    """, {"ROOT": str(root_8_5)}))


# -- 4. fork --

def test_acl_is_refused_in_a_forked_child(emulator_root: Path) -> None:
    ok(run_script(emulator_root / "lib64", """
        p = ffi.new("void **")
        assert c.rt.aclInit(ffi.NULL) == 0 and c.rt.aclrtSetDevice(0) == 0
        pid = os.fork()
        if pid == 0:
            before = stat("errors_detected")
            code = c.rt.aclrtMalloc(p, 64, 0)
            msg = c.last_error() or ""
            good = code == 507899 and "after fork" in msg and stat("errors_detected") == before + 1
            good = good and c.rt.aclInit(ffi.NULL) == 507899  # no way back in the child
            os._exit(0 if good else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0, "the child was not refused"
        assert c.rt.aclrtMalloc(p, 64, 0) == 0  # the parent carries on
        assert c.rt.aclrtFree(p[0]) == 0
        print("ok")
    """))


# -- 5. device faults: reported once by default, sticky in stop-on-failure mode --

AICORE = 507015


def queue_use_after_free(c: CannLibs, stream: Any) -> None:
    """Queue a fill of a block, then free the block: the fill faults when the stream runs."""
    block = c.malloc(64)
    c.check(c.rt.aclrtMemsetAsync(block, 64, 1, 64, stream))
    c.free(block)


def restart_device(c: CannLibs) -> None:
    c.check(c.rt.aclrtResetDevice(0), "aclrtResetDevice")
    c.set_device(0)


def test_kernel_fault_is_reported_once_by_default(rt: Rt, emu: Emu) -> None:
    c = rt.c
    emu.reset()
    queue_use_after_free(c, rt.stream)
    fails_with(c, c.rt.aclrtSynchronizeStream(rt.stream), AICORE, "use after free")
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))  # cleared
    c.free(c.malloc(64))  # the device carries on
    emu.inject("aclrtSynchronizeStream", 1, 507035)  # an injected vector-core fault: once as well
    fails_with(c, c.rt.aclrtSynchronizeStream(rt.stream), 507035)
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))
    assert emu.stat("device_aborts") == 0


def test_stop_on_failure_from_the_environment_is_sticky(rt: Rt, emu: Emu, monkeypatch: pytest.MonkeyPatch) -> None:
    c, ffi = rt.c, rt.c.ffi
    monkeypatch.setenv("CANN_EMU_STOP_ON_FAILURE", "1")
    emu.reset()
    queue_use_after_free(c, rt.stream)
    kept, spare = c.malloc(64), c.malloc(64)
    c.h2d(kept, bytes(64))
    c.check(c.rt.aclrtMemsetAsync(kept, 64, 9, 64, rt.stream))  # queued after the fault: never runs
    fails_with(c, c.rt.aclrtSynchronizeStream(rt.stream), AICORE, "use after free")
    assert emu.stat("device_aborts") == 1
    p = ffi.new("void **")
    for call in (lambda: c.rt.aclrtSynchronizeStream(rt.stream), lambda: c.rt.aclrtMalloc(p, 64, 0),
                 lambda: c.rt.aclrtMemset(kept, 64, 0, 64), lambda: c.rt.aclrtSynchronizeDevice()):
        fails_with(c, call(), AICORE, "stopped", "aclrtResetDevice")
    c.free(spare)  # releasing still works while stopped, so the caller can clean up
    restart_device(c)
    assert c.d2h(kept, 64) == bytes(64)  # the fill queued after the fault was dropped
    c.free(kept)
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))


def test_stop_on_failure_mode_of_one_stream(rt: Rt, emu: Emu) -> None:
    c = rt.c
    other = c.create_stream()
    fails_with(c, c.rt.aclrtSetStreamFailureMode(rt.stream, 2), 100000, "mode 2")
    c.check(c.rt.aclrtSetStreamFailureMode(other, 1))  # ACL_STOP_ON_FAILURE
    emu.reset()
    queue_use_after_free(c, rt.stream)  # a stream in the default mode: reported once
    fails_with(c, c.rt.aclrtSynchronizeStream(rt.stream), AICORE)
    c.free(c.malloc(64))
    queue_use_after_free(c, other)  # the stop-on-failure stream: the device stops
    fails_with(c, c.rt.aclrtSynchronizeStream(other), AICORE)
    assert emu.stat("device_aborts") == 1
    fails_with(c, c.rt.aclrtSynchronizeStream(rt.stream), AICORE, "stopped")
    c.check(c.rt.aclrtDestroyStream(other))
    restart_device(c)
    c.check(c.rt.aclrtSynchronizeStream(rt.stream))


def test_injected_device_fault_is_sticky(rt: Rt, emu: Emu) -> None:
    c, ffi = rt.c, rt.c.ffi
    emu.reset()
    emu.inject("aclrtSynchronizeStream", 1, 507054)
    fails_with(c, c.rt.aclrtSynchronizeStream(rt.stream), 507054, "emulated fault")
    p = ffi.new("void **")
    fails_with(c, c.rt.aclrtMalloc(p, 64, 0), 507054, "stopped")
    fails_with(c, c.rt.aclrtSetDevice(0), 507054, "stopped")
    assert emu.stat("device_aborts") == 1
    restart_device(c)
    c.free(c.malloc(64))


# -- 7. a deliberate divergence for testing hardware reports --

def test_nan_value_divergence(rt: Rt, monkeypatch: pytest.MonkeyPatch) -> None:
    c = rt.c
    case = load_case(VALID[0])  # BF16 updates [1, 1, 32], 1-D indices: row 0, at indices[0] along axis 1
    assert case.arrays["updates"].shape == (1, 1, 32) and case.arrays["indices"].ndim == 1
    case.arrays["updates"] = case.arrays["updates"].copy()
    case.arrays["updates"][..., :16] = 0x7FC0  # BF16 quiet NaN
    at = int(case.arrays["indices"][0])
    contract = c.run_case(case, rt.stream)
    assert contract.sync == 0, contract.message
    assert (contract.self_out[0, at, :16] == 0).all()  # the contract: NaN -> 0
    monkeypatch.setenv("CANN_EMU_NAN_VALUE", "7")
    diverged = c.run_case(case, rt.stream)
    assert (diverged.self_out[0, at, :16] == 7).all()
    diverged.self_out[0, at, :16] = 0
    assert (diverged.self_out == contract.self_out).all()  # nothing else differs
