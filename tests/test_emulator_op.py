"""The emulated QuantScatter operator: phase-1 checks, executors, workspace, kernel, products.

Drives the emulator's libraries directly through cffi over include/*.h (not through the package), so
each test shows the emulator catching the binding bug it exists for.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from emulator.emu import OPERANDS, CannLibs, Case, Emu, load_case, place
from emulator.fixtures import Rt

pytestmark = pytest.mark.emulator

DATA = Path(__file__).resolve().parent / "data" / "conformance"
VALID = sorted((DATA / "valid").glob("*.npz"))
INVALID = sorted((DATA / "invalid").glob("*.npz"))

BF16, FP16, FP32, INT8, INT32, INT64 = 27, 1, 0, 2, 3, 9
NULLPTR, INVALID_PARAM, TILING = 161001, 161002, 561002
RT_PARAM, AICORE = 107000, 507015

# What CANN (and so the emulator) says about each kind of bad input; "kernel" means phase 1 accepts it
# (CANN never checks index values) and the kernel faults when the stream runs.
INVALID_CODES = {
    "self_dtype": INVALID_PARAM, "indices_dtype": INVALID_PARAM, "dtype_combo": INVALID_PARAM,
    "rank": INVALID_PARAM, "rank_mismatch": INVALID_PARAM, "reduce": INVALID_PARAM,
    "axis_first": TILING, "axis_last": TILING, "quant_axis": TILING, "alignment": TILING,
    "scales_count": TILING, "zp_count": TILING, "batch_mismatch": TILING, "indices_2d_shape": TILING,
    "update_dim_mismatch": TILING,
    "index_negative": "kernel", "index_too_large": "kernel", "overlap": "kernel",
}


@pytest.fixture(autouse=True)
def default_product(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CANN_EMU_SOC", "CANN_EMU_WORKSPACE_BYTES", "CANN_EMU_DEVICE_MEMORY", "CANN_EMU_DEVICE_COUNT"):
        monkeypatch.delenv(var, raising=False)


# -- reference for generated cases (float32 throughout, as the spec says) --

def bf16_bits(values: Any) -> np.ndarray:
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    assert not np.any(bits & 0xFFFF), "value not exactly representable in bfloat16"
    return (bits >> 16).astype(np.uint16)


def as_float32(arr: np.ndarray, dtype: int) -> np.ndarray:
    if dtype == BF16:
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32)


def expected_for(case: Case) -> np.ndarray:
    a = case.arrays
    x = as_float32(a["updates"], case.dtypes["updates"])
    s = as_float32(a["quant_scales"], case.dtypes["quant_scales"]).reshape(-1)
    with np.errstate(all="ignore"):
        y = (x / s).astype(np.float32)
        if "quant_zero_points" in a:
            zp = as_float32(a["quant_zero_points"], case.dtypes["quant_zero_points"]).reshape(-1)
            y = (y + zp).astype(np.float32)
        q = np.rint(y)
        q[np.isnan(q)] = 0
        q = np.clip(q, -128, 127).astype(np.int8)
    out = a["self"].copy()
    rank = out.ndim
    ax = case.axis % rank
    u = x.shape[ax]
    for b in range(x.shape[0]):
        idx = a["indices"]
        dst, start = (int(idx[b, 0]), int(idx[b, 1])) if idx.ndim == 2 else (b, int(idx[b]))
        sel: list[Any] = [slice(None)] * rank
        sel[0], sel[ax] = dst, slice(start, start + u)
        src: list[Any] = [slice(None)] * rank
        src[0] = b
        out[tuple(sel)] = q[tuple(src)]
    return out


def make_case(self_shape: tuple[int, ...], updates: np.ndarray, indices: Any, *, axis: int = -2,
              kind: str = "bf16", scales: Any = None, zps: Any = None, index_dtype: Any = np.int32) -> Case:
    """A case from float32 values: bf16 (values must be bf16-exact) or fp16 (FP32 scales, INT32 zps)."""
    c = updates.shape[-1]
    scales = np.full(c, 0.5, np.float32) if scales is None else np.asarray(scales, np.float32)
    rng = np.random.default_rng(7)
    arrays = {
        "self": rng.integers(-128, 128, self_shape, dtype=np.int8),
        "indices": np.asarray(indices, dtype=index_dtype),
    }
    if kind == "bf16":
        arrays["updates"], arrays["quant_scales"] = bf16_bits(updates), bf16_bits(scales)
        dtypes = {"updates": BF16, "quant_scales": BF16}
        if zps is not None:
            arrays["quant_zero_points"], dtypes["quant_zero_points"] = bf16_bits(zps), BF16
    else:
        arrays["updates"], arrays["quant_scales"] = updates.astype(np.float16), scales
        dtypes = {"updates": FP16, "quant_scales": FP32}
        if zps is not None:
            arrays["quant_zero_points"], dtypes["quant_zero_points"] = np.asarray(zps, np.int32), INT32
    dtypes.update({"self": INT8, "indices": INT32 if index_dtype == np.int32 else INT64})
    case = Case("generated", arrays, dtypes, axis=axis, quant_axis=-1)
    case.expected = expected_for(case)
    return case


def small_case(**kw: Any) -> Case:
    values = np.random.default_rng(3).integers(-200, 200, (2, 2, 32)).astype(np.float32)  # bf16-exact
    return make_case((3, 6, 32), values, [1, 4], **kw)


@contextmanager
def operands(c: CannLibs, case: Case, *, with_data: bool = True) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Device blocks and descriptors for a case's operands (contiguous), released afterwards."""
    blocks: dict[str, Any] = {}
    tensors: dict[str, Any] = {}
    try:
        for name, arr in case.arrays.items():
            blocks[name] = c.malloc(max(arr.nbytes, 1))
            if arr.nbytes:
                c.h2d(blocks[name], arr.tobytes())
            tensors[name] = c.tensor(arr.shape, case.dtypes[name], blocks[name] if with_data else c.ffi.NULL)
        yield blocks, tensors
    finally:
        for t in tensors.values():
            c.nnop.aclDestroyTensor(t)  # tests may have destroyed some already
        for b in blocks.values():
            c.rt.aclrtFree(b)
        c.last_error()


def phase1(c: CannLibs, case: Case, tensors: dict[str, Any], **override: Any) -> tuple[int, int, Any]:
    ffi = c.ffi
    t = [override.get(n, tensors.get(n, ffi.NULL)) for n in OPERANDS]
    size = override.get("size", ffi.new("uint64_t *"))
    executor = override.get("executor", ffi.new("aclOpExecutor **"))
    code = c.op.aclnnInplaceQuantScatterGetWorkspaceSize(*t, case.axis, case.quant_axis, 1, size, executor)
    ok = code == 0
    return code, int(size[0]) if ok else 0, executor[0] if ok else ffi.NULL


def read_self(c: CannLibs, case: Case, blocks: dict[str, Any]) -> np.ndarray:
    arr = case.arrays["self"]
    return np.frombuffer(c.d2h(blocks["self"], arr.nbytes), np.int8).reshape(arr.shape)


# -- the kernel reproduces the conformance set --

@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_case_contiguous(rt: Rt, path: Path) -> None:
    case = load_case(path)
    run = rt.c.run_case(case, rt.stream)
    assert (run.phase1, run.launch, run.sync) == (0, 0, 0), run.message
    assert np.array_equal(run.self_out, case.expected)


@pytest.mark.parametrize("layout", ["padded", "transposed"])
@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_case_strided(rt: Rt, path: Path, layout: str) -> None:
    """Every operand as a non-contiguous view at a nonzero offset inside a larger block."""
    case = load_case(path)
    run = rt.c.run_case(case, rt.stream, layout)
    assert (run.phase1, run.launch, run.sync) == (0, 0, 0), run.message
    assert np.array_equal(run.self_out, case.expected)
    assert run.outside_untouched, "the kernel wrote outside self's view"


def test_layouts_really_are_strided() -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.int8).reshape(2, 3, 4)
    padded, transposed = place(arr, "padded"), place(arr, "transposed")
    for p in (padded, transposed):
        assert p.offset > 0 and p.buffer.size > arr.size
        assert np.array_equal(p.view_of(p.buffer), arr)
    assert padded.strides[-1] == 2  # every other element of the last dim
    assert transposed.strides[0] < transposed.strides[1] < transposed.strides[2]  # dims permuted


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_case(rt: Rt, emu: Emu, path: Path) -> None:
    case = load_case(path)
    want = INVALID_CODES[str(case.error)]
    before = emu.stat("errors_detected")
    run = rt.c.run_case(case, rt.stream)
    assert run.message, "every failure comes with a readable message"
    assert run.self_untouched
    if want == "kernel":  # accepted like CANN; the emulated device faults instead of writing out of bounds
        assert (run.phase1, run.launch, run.sync) == (0, 0, AICORE), run.message
        assert emu.stat("errors_detected") == before + 1
        assert "out-of-range" in run.message or "overlapping" in run.message
    else:
        assert run.phase1 == want, run.message
        assert f"status {want}" in run.message


# -- phase 1 --

def test_phase1_null_arguments(rt: Rt) -> None:
    c = rt.c
    case = load_case(VALID[1])  # has zero points
    with operands(c, case) as (_, tensors):
        for name in ("self", "indices", "updates", "quant_scales"):
            code, _, _ = phase1(c, case, tensors, **{name: c.ffi.NULL})
            assert code == NULLPTR
            msg = c.last_error()
            assert msg and "is NULL" in msg and "aclnnInplaceQuantScatterGetWorkspaceSize" in msg
        assert phase1(c, case, tensors, executor=c.ffi.NULL)[0] == NULLPTR
        assert phase1(c, case, tensors, size=c.ffi.NULL)[0] == NULLPTR
        c.last_error()
        code, _, executor = phase1(c, case, tensors, quant_zero_points=c.ffi.NULL)  # optional
        assert code == 0
        c.check(c.nnop.aclDestroyAclOpExecutor(executor))


def test_phase1_refuses_a_destroyed_descriptor(rt: Rt) -> None:
    c = rt.c
    case = load_case(VALID[0])
    with operands(c, case) as (_, tensors):
        c.destroy_tensor(tensors["updates"])
        code, _, _ = phase1(c, case, tensors)
        assert code == INVALID_PARAM
        assert "not a live tensor" in (c.last_error() or "")


def test_error_message_is_per_thread_and_cleared_on_read(rt: Rt) -> None:
    c = rt.c
    case = load_case(VALID[0])
    with operands(c, case) as (_, tensors):
        assert phase1(c, case, tensors, self=c.ffi.NULL)[0] == NULLPTR
        seen: list[str | None] = []
        worker = threading.Thread(target=lambda: seen.append(c.last_error()))
        worker.start()
        worker.join()
        assert seen == [None]  # another thread has its own (empty) message
        assert "selfRef is NULL" in (c.last_error() or "")
        assert c.last_error() is None  # read once


def test_opp_path_is_required(rt: Rt, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASCEND_OPP_PATH")
    run = rt.c.run_case(load_case(VALID[0]), rt.stream)
    assert run.phase1 == 561107
    assert "ASCEND_OPP_PATH" in (run.message or "")


def test_empty_tensors_are_a_no_op(rt: Rt, emu: Emu) -> None:
    c = rt.c
    case = small_case()
    case.arrays["indices"] = case.arrays["indices"][:0]
    case.arrays["updates"] = case.arrays["updates"][:0]
    start = emu.live()
    with operands(c, case) as (blocks, tensors):
        code, size, executor = phase1(c, case, tensors)
        assert (code, size) == (0, 0)
        c.check(c.op.aclnnInplaceQuantScatter(c.ffi.NULL, 0, executor, rt.stream))
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))
        assert np.array_equal(read_self(c, case, blocks), case.arrays["self"])
    assert emu.live() == start


# -- executors --

def test_consumed_executor_cannot_run_twice(rt: Rt, emu: Emu) -> None:
    c = rt.c
    case = load_case(VALID[0])
    executors = emu.stat("live_executors")
    with operands(c, case) as (blocks, tensors):
        code, size, executor = phase1(c, case, tensors)
        assert code == 0 and size == 1 << 20  # CANN_EMU_WORKSPACE_BYTES default
        assert emu.stat("live_executors") == executors + 1
        ws = c.malloc(size)
        c.check(c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream))
        assert emu.stat("live_executors") == executors  # CANN frees a single-use executor itself
        assert c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream) == INVALID_PARAM
        assert "already consumed" in (c.last_error() or "")
        assert c.nnop.aclDestroyAclOpExecutor(executor) == INVALID_PARAM  # it is gone: no double free
        c.last_error()
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))
        assert np.array_equal(read_self(c, case, blocks), case.expected)
        c.free(ws)


def test_repeatable_executor_with_address_updates(rt: Rt, emu: Emu, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANN_EMU_REPEATABLE", "1")  # CANN refuses it for this op by default
    c = rt.c
    ffi = c.ffi
    case = load_case(VALID[0])  # no zero points: input index 4 does not exist
    executors = emu.stat("live_executors")
    with operands(c, case, with_data=False) as (blocks, tensors):
        code, size, executor = phase1(c, case, tensors)
        assert code == 0
        assert c.nnop.aclSetInputTensorAddr(executor, 0, tensors["self"], blocks["self"]) == INVALID_PARAM
        assert "not repeatable" in (c.last_error() or "")
        c.check(c.nnop.aclSetAclOpExecutorRepeatable(executor))
        ws = c.malloc(size)
        assert c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream) == NULLPTR  # no addresses yet
        assert "no device address" in (c.last_error() or "")
        for i, name in enumerate(OPERANDS[:4]):
            c.check(c.nnop.aclSetInputTensorAddr(executor, i, tensors[name], blocks[name]))
        assert c.nnop.aclSetInputTensorAddr(executor, 4, tensors["self"], blocks["self"]) == INVALID_PARAM
        assert c.nnop.aclSetInputTensorAddr(executor, 1, tensors["self"], blocks["self"]) == INVALID_PARAM
        assert c.nnop.aclSetInputTensorAddr(ffi.NULL, 0, tensors["self"], blocks["self"]) == 561103
        c.last_error()
        c.check(c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream))
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))
        assert np.array_equal(read_self(c, case, blocks), case.expected)
        # Run it again on a fresh copy of self placed elsewhere.
        other = c.malloc(case.arrays["self"].nbytes)
        c.h2d(other, case.arrays["self"].tobytes())
        c.check(c.nnop.aclSetOutputTensorAddr(executor, 0, tensors["self"], other))
        c.check(c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream))
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))
        assert np.array_equal(read_self(c, case, {"self": other}), case.expected)
        assert emu.stat("live_executors") == executors + 1  # lives until destroyed
        c.check(c.nnop.aclDestroyAclOpExecutor(executor))
        assert emu.stat("live_executors") == executors
        c.free(other)
        c.free(ws)


def test_descriptors_must_live_until_phase2(rt: Rt) -> None:
    c = rt.c
    case = load_case(VALID[0])
    with operands(c, case) as (_, tensors):
        _, size, executor = phase1(c, case, tensors)
        c.destroy_tensor(tensors["indices"])
        ws = c.malloc(size)
        assert c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream) == INVALID_PARAM
        assert "destroyed before phase 2" in (c.last_error() or "")
        # The failed phase 2 consumed the executor (nnopbase deletes it either way).
        assert c.nnop.aclDestroyAclOpExecutor(executor) == INVALID_PARAM
        assert "already consumed" in (c.last_error() or "")
        c.free(ws)


# -- workspace --

def test_workspace_rules(rt: Rt, emu: Emu, monkeypatch: pytest.MonkeyPatch) -> None:
    c = rt.c
    ffi = c.ffi
    case = load_case(VALID[0])
    monkeypatch.setenv("CANN_EMU_WORKSPACE_BYTES", "4096")
    with operands(c, case) as (blocks, tensors):
        code, size, executor = phase1(c, case, tensors)
        assert (code, size) == (0, 4096)
        host = bytearray(4096)
        small = c.malloc(1000)
        ws = c.malloc(4096)
        bad = [(ffi.NULL, size, NULLPTR, "workspace is NULL"),
               (ffi.from_buffer(host), size, RT_PARAM, "not device memory"),
               (small, size, RT_PARAM, "overruns"), (ws, size - 1, INVALID_PARAM, "smaller than")]
        for workspace, given, want, words in bad:
            assert c.op.aclnnInplaceQuantScatter(workspace, given, executor, rt.stream) == want
            assert words in (c.last_error() or "")
            # Each failure consumed the executor: a fresh phase 1 for the next attempt.
            code, size, executor = phase1(c, case, tensors)
            assert code == 0
        c.check(c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream))
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))
        assert c.d2h(ws, 4096) == b"\xee" * 4096  # the kernel used its workspace
        assert np.array_equal(read_self(c, case, blocks), case.expected)
        c.free(small)
        c.free(ws)
    monkeypatch.setenv("CANN_EMU_WORKSPACE_BYTES", "0")
    run = c.run_case(case, rt.stream)
    assert (run.phase1, run.workspace_size, run.sync) == (0, 0, 0)
    assert np.array_equal(run.self_out, case.expected)


def test_workspace_freed_while_queued_is_caught(rt: Rt, emu: Emu) -> None:
    """The classic binding bug: aclrtFree(workspace) right after the launch, before synchronising."""
    c = rt.c
    case = load_case(VALID[0])
    before = emu.stat("errors_detected")
    with operands(c, case) as (blocks, tensors):
        _, size, executor = phase1(c, case, tensors)
        ws = c.malloc(size)
        c.check(c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream))
        c.check(c.rt.aclrtFree(ws))  # does not wait for the queued kernel
        assert c.rt.aclrtSynchronizeStream(rt.stream) == AICORE
        msg = c.last_error() or ""
        assert "use after free" in msg and "QuantScatter" in msg
        assert emu.stat("errors_detected") == before + 1
        assert np.array_equal(read_self(c, case, blocks), case.arrays["self"])  # the kernel did not run
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))  # reported once


# -- queued execution --

def test_result_read_without_sync_is_stale(rt: Rt) -> None:
    c = rt.c
    case = load_case(VALID[6])
    with operands(c, case) as (blocks, tensors):
        _, size, executor = phase1(c, case, tensors)
        ws = c.malloc(size)
        c.check(c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream))
        assert np.array_equal(read_self(c, case, blocks), case.arrays["self"])  # not run yet: stale
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))
        assert np.array_equal(read_self(c, case, blocks), case.expected)
        c.free(ws)


def test_kernel_reads_its_inputs_when_it_runs(rt: Rt) -> None:
    """Descriptors hold addresses, not data: what is in memory when the stream runs is what counts."""
    c = rt.c
    case = load_case(VALID[6])
    with operands(c, case) as (blocks, tensors):
        c.h2d(blocks["updates"], bytes(case.arrays["updates"].nbytes))  # zeros at launch time
        _, size, executor = phase1(c, case, tensors)
        ws = c.malloc(size)
        c.check(c.op.aclnnInplaceQuantScatter(ws, size, executor, rt.stream))
        c.h2d(blocks["updates"], case.arrays["updates"].tobytes())  # the real data, before the stream runs
        c.check(c.rt.aclrtSynchronizeStream(rt.stream))
        assert np.array_equal(read_self(c, case, blocks), case.expected)
        c.free(ws)


def test_default_stream(rt: Rt) -> None:
    case = load_case(VALID[3])
    run = rt.c.run_case(case, rt.c.ffi.NULL)
    assert (run.phase1, run.launch, run.sync) == (0, 0, 0), run.message
    assert np.array_equal(run.self_out, case.expected)


# -- the kernel guards memory that CANN does not --

@pytest.mark.parametrize(("what", "indices", "word"), [
    ("start one past the last fit", [1, 5], "out-of-range"),
    ("negative start", [-1, 0], "out-of-range"),
    ("2-D batch out of range", [[3, 0], [0, 0]], "out-of-range"),
    ("2-D negative batch", [[-1, 0], [0, 0]], "out-of-range"),
    ("overlapping blocks (1-D, same row twice)", [[0, 1], [0, 2]], "overlapping"),
])
def test_bad_indices_fault_without_writing(rt: Rt, emu: Emu, what: str, indices: Any, word: str) -> None:
    case = small_case()
    case.arrays["indices"] = np.asarray(indices, np.int32)
    before = emu.stat("errors_detected")
    run = rt.c.run_case(case, rt.stream, "padded")
    assert (run.phase1, run.launch, run.sync) == (0, 0, AICORE), (what, run.message)
    assert word in (run.message or "")
    assert emu.stat("errors_detected") == before + 1
    assert run.self_untouched  # nothing written, in the view or around it


def test_last_start_that_fits_is_accepted(rt: Rt) -> None:
    case = small_case()
    case.arrays["indices"] = np.asarray([0, 4], np.int32)  # S - U = 6 - 2
    case.expected = expected_for(case)
    run = rt.c.run_case(case, rt.stream, "transposed")
    assert run.sync == 0, run.message
    assert np.array_equal(run.self_out, case.expected)


# -- arithmetic --

SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -127.5, 300.0, -300.0,
                     0.0, -0.0, 3.0] * 2, dtype=np.float32)


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_special_values(rt: Rt, kind: str) -> None:
    scales = np.ones(32, np.float32)
    scales[1], scales[5], scales[16] = 0.0, -1.0, 0.25  # zero scale, negative scale, exact power of two
    zps = np.zeros(32, np.float32) if kind == "bf16" else np.zeros(32, np.int32)
    zps[20:] = 1
    case = make_case((2, 3, 32), SPECIALS.reshape(1, 1, 32), [1], kind=kind, scales=scales, zps=zps)
    run = rt.c.run_case(case, rt.stream, "padded")
    assert run.sync == 0, run.message
    assert np.array_equal(run.self_out, case.expected)
    row = list(run.self_out[0, 1])
    assert row[:4] == [0, 127, -128, 0]  # NaN -> 0, inf / 0 saturates, -inf, 0.5 ties to even
    assert row[4:11] == [2, -2, 0, -2, -2, 126, -128]  # ties to even (2.5 / -1 = -2.5 -> -2), clamps


def test_fp16_subnormals_convert_exactly(rt: Rt) -> None:
    """x = m * 2^-24 with scale 2^-24 quantizes to m exactly only if the fp16 conversion is exact."""
    m = np.arange(-64, 64, dtype=np.int32)
    bits = np.where(m < 0, 0x8000 | -m, m).astype(np.uint16)  # fp16 subnormals and zeros
    updates = bits.view(np.float16).astype(np.float32).reshape(1, 4, 32)
    case = make_case((2, 5, 32), updates, [0], kind="fp16", scales=np.full(32, 2.0**-24, np.float32))
    run = rt.c.run_case(case, rt.stream)
    assert run.sync == 0, run.message
    assert np.array_equal(run.self_out[0, :4].reshape(-1), m.astype(np.int8))


# -- products --

def test_alignment_rule_on_910b_not_on_950(rt: Rt, monkeypatch: pytest.MonkeyPatch) -> None:
    upd = (np.arange(48, dtype=np.float32) - 24).reshape(1, 1, 48)
    case = make_case((2, 4, 48), upd, [2])
    run = rt.c.run_case(case, rt.stream)
    assert run.phase1 == TILING
    assert "multiple of 32" in (run.message or "")
    monkeypatch.setenv("CANN_EMU_SOC", "Ascend950PR_9599")
    run = rt.c.run_case(case, rt.stream)
    assert run.sync == 0, run.message
    assert np.array_equal(run.self_out, case.expected)


def test_310p_accepts_only_fp16(rt: Rt, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANN_EMU_SOC", "Ascend310P3")
    bf16_case, fp16_case = load_case(VALID[0]), load_case(VALID[4])
    run = rt.c.run_case(bf16_case, rt.stream)
    assert run.phase1 == INVALID_PARAM
    assert "Ascend310P3" in (run.message or "")
    run = rt.c.run_case(fp16_case, rt.stream)
    assert run.sync == 0, run.message
    assert np.array_equal(run.self_out, fp16_case.expected)


def test_soc_name_follows_the_environment(rt: Rt, monkeypatch: pytest.MonkeyPatch) -> None:
    c = rt.c
    assert c.ffi.string(c.rt.aclrtGetSocName()) == b"Ascend910B1"
    monkeypatch.setenv("CANN_EMU_SOC", "Ascend950DT")
    assert c.ffi.string(c.rt.aclrtGetSocName()) == b"Ascend950DT"


def test_v2_only_on_950(rt: Rt, monkeypatch: pytest.MonkeyPatch) -> None:
    c = rt.c
    case = load_case(VALID[1])
    run = c.run_case(case, rt.stream, v2=True)
    assert run.phase1 == INVALID_PARAM
    assert "only on Ascend950" in (run.message or "")
    monkeypatch.setenv("CANN_EMU_SOC", "Ascend950PR")
    assert c.run_case(case, rt.stream, v2=True, round_mode=None).phase1 == NULLPTR
    assert c.run_case(case, rt.stream, v2=True, round_mode="round").phase1 == INVALID_PARAM
    run = c.run_case(case, rt.stream, "padded", v2=True)
    assert run.sync == 0, run.message
    assert np.array_equal(run.self_out, case.expected)
    with operands(c, case) as (_, tensors):
        _, size, executor = phase1(c, case, tensors)  # a V1 executor...
        ws = c.malloc(size)
        assert c.op.aclnnInplaceQuantScatterV2(ws, size, executor, rt.stream) == INVALID_PARAM  # ...not for V2
        assert "V1 phase 1" in (c.last_error() or "")
        assert c.nnop.aclDestroyAclOpExecutor(executor) == INVALID_PARAM  # the failed launch consumed it
        c.free(ws)
