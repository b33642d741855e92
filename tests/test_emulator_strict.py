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
from emulator.emu import OPERANDS, CannLibs, Emu, load_case
from emulator.fixtures import Rt

pytestmark = pytest.mark.emulator

TESTS = Path(__file__).resolve().parent
VALID = sorted((TESTS / "data" / "conformance" / "valid").glob("*.npz"))
NULLPTR, INVALID_PARAM, INNER = 161001, 161002, 561000


@pytest.fixture(autouse=True)
def default_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CANN_EMU_SOC", "CANN_EMU_WORKSPACE_BYTES", "CANN_EMU_REPEATABLE", "CANN_EMU_VERSION",
                "CANN_EMU_STOP_ON_FAILURE", "CANN_EMU_NAN_VALUE"):
        monkeypatch.delenv(var, raising=False)


def fails_with(c: CannLibs, code: int, want: int, *words: str) -> str:
    """Assert a status and that the thread's message says each of ``words``; return the message."""
    msg = c.last_error() or ""
    assert code == want, f"{code} != {want}: {msg}"
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


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
