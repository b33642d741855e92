"""Padding slots (skip_negative=True) and paged_indices, on every backend and form.

Padded cases are built from the shared conformance cases; the expected result comes from an oracle written
here on top of tests/slow_reference.py (row by row, padding rows skipped), never from the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from cases import case_paths, load_case
from emulator.emu import Emu
from slow_reference import vector_quant_scatter

import pyacl_qscatter as qs
from pyacl_qscatter.errors import InvalidDtypeError, InvalidValueError
from pyacl_qscatter.memory import DeviceArray, allocator_for
from pyacl_qscatter.padding import valid_pieces
from pyacl_qscatter.runtime import Device

BF16 = ml_dtypes.bfloat16
VALID = case_paths("valid")
PATTERNS = ("none", "all", "leading", "trailing", "interleaved")


def oracle(self_arr: np.ndarray, indices: np.ndarray, updates: np.ndarray, scales: np.ndarray,
           zero_points: np.ndarray | None, axis: int) -> np.ndarray:
    """The spec's padding rule spelled out: each non-padding row is one independent 2-D write."""
    out = self_arr.copy()
    for b in range(indices.shape[0]):
        row = indices[b]
        if np.any(row < 0):
            continue
        pair = np.array([[b, int(row)]] if indices.ndim == 1 else [[int(row[0]), int(row[1])]])
        out = vector_quant_scatter(out, pair, updates[b : b + 1], scales, zero_points, axis)
    return out


def _mask(pattern: str, rows: int) -> np.ndarray:
    """Which of ``rows`` rows are padding."""
    pad = np.zeros(rows, bool)
    half = max(1, rows // 2)
    if pattern == "all":
        pad[:] = True
    elif pattern == "leading":
        pad[:half] = True
    elif pattern == "trailing":
        pad[rows - half :] = True
    elif pattern == "interleaved":
        pad[::2] = True
    return pad


def padded(path: Path, pattern: str) -> tuple[tuple[Any, ...], np.ndarray]:
    """(arguments, expected) of a conformance case with padding: 1-D indices get rows replaced by -1 (a row's
    position is its destination batch); 2-D indices get padding rows inserted, with garbage updates and an
    in-range or out-of-range other column, since either negative column makes a row padding."""
    case = load_case(path)
    a = case.arrays
    idx, upd = a["indices"].copy(), a["updates"]
    rng = np.random.default_rng(int(path.stem[-3:]))
    if idx.ndim == 1:
        idx[_mask(pattern, idx.shape[0])] = -1
        new_upd = upd
    else:
        pad = _mask(pattern, 2 * idx.shape[0])
        if pattern == "none":
            pad[:] = False
        slots = pad.size if pattern != "none" else idx.shape[0]
        pad = pad[:slots]
        new_idx = np.empty((slots, 2), idx.dtype)
        new_upd = np.empty((slots, *upd.shape[1:]), upd.dtype)
        real = iter(range(idx.shape[0]))
        for r in range(slots):
            if pad[r]:
                other = int(rng.integers(0, 10**6))
                new_idx[r] = (-1, other) if r % 3 == 0 else (other, -1) if r % 3 == 1 else (-1, -1)
                new_upd[r] = np.array(rng.uniform(-1e4, 1e4, upd.shape[1:])).astype(upd.dtype)
            else:
                j = next(real, None)
                if j is None:  # more real slots than rows: pad the rest
                    new_idx[r] = (-1, -1)
                    new_upd[r] = 0
                else:
                    new_idx[r], new_upd[r] = idx[j], upd[j]
        idx = new_idx
    zp = a.get("quant_zero_points")
    expected = oracle(a["self"], idx, new_upd, a["quant_scales"], zp, case.axis)
    return (a["self"], idx, new_upd, a["quant_scales"], zp, case.axis, case.quant_axis, case.reduce), expected


CASES = [(p, pattern) for p in VALID for pattern in PATTERNS]
SOME = [(p, pattern) for p in VALID[::5] for pattern in PATTERNS]


def _id(item: Any) -> str:
    return item.stem if isinstance(item, Path) else str(item)


@pytest.mark.parametrize(("path", "pattern"), CASES, ids=_id)
def test_cpu_padded_cases_match_oracle(path: Path, pattern: str) -> None:
    args, expected = padded(path, pattern)
    out = qs.quant_scatter(*args, backend="cpu", skip_negative=True)
    np.testing.assert_array_equal(out, expected)
    target = args[0].copy()
    assert qs.npu_quant_scatter_(target, *args[1:], backend="cpu", skip_negative=True) is target
    np.testing.assert_array_equal(target, expected)


def test_oracle_rows_really_differ() -> None:
    # The padded cases are not trivial: with padding ignored, some rows would land (2-D garbage rows would
    # be out of range, so compare 1-D cases, where padding rows' updates are real data).
    changed = 0
    for path in VALID:
        case = load_case(path)
        if case.arrays["indices"].ndim == 1 and case.arrays["indices"].shape[0] > 1:
            _, expected = padded(path, "leading")
            changed += not np.array_equal(expected, case.expected)
    assert changed > 5


@pytest.mark.parametrize(("path", "pattern"), SOME, ids=_id)
def test_npu_numpy_padded_cases(dev: Device, path: Path, pattern: str) -> None:
    args, expected = padded(path, pattern)
    np.testing.assert_array_equal(qs.quant_scatter(*args, backend="npu", skip_negative=True), expected)


@pytest.mark.parametrize(("path", "pattern"), SOME, ids=_id)
def test_npu_device_padded_cases(dev: Device, emu: Emu, path: Path, pattern: str) -> None:
    args, expected = padded(path, pattern)
    d_self, d_idx, d_upd, d_sc = (DeviceArray.from_numpy(v) for v in args[:4])
    d_zp = None if args[4] is None else DeviceArray.from_numpy(args[4])
    fresh = qs.quant_scatter(d_self, d_idx, d_upd, d_sc, d_zp, *args[5:], skip_negative=True)
    qs.quant_scatter_(d_self, d_idx, d_upd, d_sc, d_zp, *args[5:], skip_negative=True)
    np.testing.assert_array_equal(d_self.to_numpy(), expected)
    np.testing.assert_array_equal(fresh.to_numpy(), expected)
    # host indices and updates with a device self
    d_self[...] = args[0]
    qs.quant_scatter_(d_self, args[1], args[2], d_sc, d_zp, *args[5:], skip_negative=True)
    np.testing.assert_array_equal(d_self.to_numpy(), expected)
    assert emu.stat("errors_detected") == 0


def test_padding_without_the_option_is_an_error() -> None:
    cache = np.zeros((2, 4, 32), np.int8)
    upd, sc = np.ones((2, 1, 32), BF16), np.ones(32, BF16)
    with pytest.raises(InvalidValueError, match=r"row 1 .*skip_negative=True") as err:
        qs.quant_scatter_(cache, np.array([0, -1]), upd, sc, backend="cpu")
    assert err.value.kind == "index_negative"
    with pytest.raises(InvalidDtypeError, match="skip_negative: must be True or False"):
        qs.quant_scatter_(cache, np.array([0, -1]), upd, sc, backend="cpu", skip_negative=1)
    assert not cache.any()


def test_checks_apply_to_the_remaining_rows_with_the_callers_row_numbers() -> None:
    cache = np.zeros((2, 4, 32), np.int8)
    upd, sc = np.ones((3, 1, 32), BF16), np.ones(32, BF16)
    with pytest.raises(InvalidValueError, match="row 2 must be in") as err:
        qs.quant_scatter_(cache, np.array([[0, 1], [-1, 99], [1, 4]]), upd, sc, backend="cpu", skip_negative=True)
    assert err.value.kind == "index_too_large"
    with pytest.raises(InvalidValueError, match="rows 0 and 2 write overlapping") as err:
        qs.quant_scatter_(cache, np.array([[0, 1], [-1, 1], [0, 1]]), upd, sc, backend="cpu", skip_negative=True)
    assert err.value.kind == "overlap"
    # a padding row may repeat a valid row's slot: it writes nothing, so nothing overlaps
    qs.quant_scatter_(cache, np.array([[0, 1], [0, -1], [1, 3]]), 2 * upd, sc, backend="cpu", skip_negative=True)
    assert cache[0, 1, 0] == 2 and cache[1, 3, 0] == 2 and int(np.count_nonzero(cache)) == 64
    # 1-D: row b writes batch b, so more rows than self has batches is fine only while the extra rows are
    # padding (the batch-size rule applies to the remaining rows)
    qs.quant_scatter_(cache, np.array([0, -1, -1]), 3 * upd, sc, backend="cpu", skip_negative=True)
    assert cache[0, 0, 0] == 3 and cache[1, 0, 0] == 0
    with pytest.raises(InvalidValueError, match=r"row 2 is not padding but self\.shape") as err:
        qs.quant_scatter_(cache, np.array([0, -1, 1]), upd, sc, backend="cpu", skip_negative=True)
    assert err.value.kind == "batch_mismatch"
    # shape rules still look at the whole call
    with pytest.raises(InvalidValueError) as err:
        qs.quant_scatter_(cache, np.array([0, -1]), upd, sc, backend="cpu", skip_negative=True)
    assert err.value.kind == "batch_mismatch"


def test_device_indices_without_the_check_are_refused(dev: Device) -> None:
    d_cache = DeviceArray.zeros((2, 4, 32), np.int8)
    d_idx = DeviceArray.from_numpy(np.array([0, -1], np.int32))
    upd, sc = np.ones((2, 1, 32), BF16), np.ones(32, BF16)
    with pytest.raises(InvalidValueError, match="check_indices: must be True with skip_negative=True"):
        qs.quant_scatter_(d_cache, d_idx, upd, sc, skip_negative=True, check_indices=False)
    assert not d_cache.to_numpy().any()
    # host indices are always read, so check_indices=False is fine there
    qs.quant_scatter_(d_cache, np.array([0, -1], np.int32), upd, sc, skip_negative=True, check_indices=False)
    assert d_cache.to_numpy()[0, 0].tolist() == [1] * 32 and not d_cache.to_numpy()[1].any()
    # more 1-D rows than batches, the extra ones padding: fine on the device too
    more = DeviceArray.from_numpy(np.array([-1, 2, -1], np.int32))
    qs.quant_scatter_(d_cache, more, np.full((3, 1, 32), 2, BF16), sc, skip_negative=True)
    assert d_cache.to_numpy()[1, 2].tolist() == [2] * 32


def test_paged_indices_matches_divmod() -> None:
    slots = np.array([0, 15, 16, -1, 47, -7], np.int32)
    out = qs.paged_indices(slots, 16)
    assert out.dtype == np.int32 and out.shape == (6, 2)
    expected = [[s // 16, s % 16] if s >= 0 else [-1, -1] for s in slots.tolist()]
    assert out.tolist() == expected
    assert qs.paged_indices([3, -1], 2).dtype == np.int64
    assert qs.paged_indices(np.array([], np.int64), 4).shape == (0, 2)
    with pytest.raises(InvalidValueError, match="block_size: must be a positive int, got 0"):
        qs.paged_indices(slots, 0)
    with pytest.raises(InvalidDtypeError, match="block_size"):
        qs.paged_indices(slots, 16.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidDtypeError, match="slot_mapping: must hold integers, got float32"):
        qs.paged_indices(np.ones(3, np.float32), 4)
    with pytest.raises(InvalidValueError, match=r"slot_mapping: must be 1-D \[B\], got shape \(2, 2\)"):
        qs.paged_indices(np.ones((2, 2), np.int32), 4)


def test_paged_cache_recipe_equals_flat_view_writes() -> None:
    # A paged cache [num_blocks, block_size, heads, dim] written through paged_indices equals writing the
    # same rows into a flat [num_blocks * block_size, ...] NumPy view at the slot numbers.
    rng = np.random.default_rng(3)
    cache = np.zeros((4, 8, 2, 32), np.int8)
    slots = np.array([5, -1, 17, 30, -1], np.int64)
    upd = rng.uniform(-3, 3, (5, 1, 2, 32)).astype(BF16)
    sc = rng.uniform(0.05, 1, 32).astype(BF16)
    qs.quant_scatter_(cache, qs.paged_indices(slots, 8), upd, sc, axis=1, backend="cpu", skip_negative=True)
    flat = np.zeros((32, 2, 32), np.int8)
    for b, s in enumerate(slots.tolist()):
        if s >= 0:
            flat[s] = vector_quant_scatter(np.zeros((1, 1, 2, 32), np.int8), np.array([[0, 0]]), upd[b : b + 1], sc,
                                           None, 1)[0, 0]
    np.testing.assert_array_equal(cache.reshape(32, 2, 32), flat)


def test_valid_pieces_cover_exactly_the_valid_rows_in_power_of_two_lengths() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows = int(rng.integers(0, 40))
        idx = np.where(rng.random(rows) < 0.3, -1, 1)
        pieces = valid_pieces(idx)
        covered = np.zeros(rows, bool)
        for start, stop in pieces:
            length = stop - start
            assert length & (length - 1) == 0 and not covered[start:stop].any()
            covered[start:stop] = True
        np.testing.assert_array_equal(covered, idx >= 0)


def _decode_steps(steps: int, seed: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    num_blocks, block_size, batch = 4, 16, 8
    plan = []
    for _ in range(steps):
        slots = rng.permutation(num_blocks * block_size)[:batch]
        slots[rng.random(batch) < rng.uniform(0, 0.8)] = -1  # varying padding, anywhere
        plan.append((qs.paged_indices(slots.astype(np.int32), block_size), rng.uniform(-4, 4, (batch, 1, 32))
                     .astype(BF16)))
    return np.zeros((num_blocks, block_size, 32), np.int8), plan


def test_padded_decode_steps_stay_flat_on_the_device(dev: Device, emu: Emu) -> None:
    # 1,000 decode steps with padding that moves every step: after warming up, no device or pinned host
    # allocation, no new descriptor (prepared calls are found by layout), nothing left behind.
    cache, plan = _decode_steps(1000, seed=5)
    sc = np.full(32, 0.25, BF16)
    d_cache, d_sc = DeviceArray.from_numpy(cache), DeviceArray.from_numpy(sc)
    d_idx = DeviceArray.empty((8, 2), np.int32)
    d_upd = DeviceArray.empty((8, 1, 32), BF16)
    alloc = allocator_for(0)
    expected = cache.copy()
    for step, (idx, upd) in enumerate(plan):
        if step == 500:  # warmed up: every piece length, and the pinned staging pool, seen
            emu.reset()
            mallocs, live = alloc.mallocs, emu.live()
        d_idx[...] = idx
        d_upd[...] = upd
        qs.quant_scatter_(d_cache, d_idx, d_upd, d_sc, axis=1, skip_negative=True)
        qs.quant_scatter_(expected, idx, upd, sc, axis=1, backend="cpu", skip_negative=True)
    np.testing.assert_array_equal(d_cache.to_numpy(), expected)
    assert alloc.mallocs == mallocs
    assert emu.calls("aclrtMalloc") == 0 and emu.calls("aclrtMallocHost") == 0
    assert emu.calls("aclCreateTensor") == 0  # no new prepared call
    assert emu.live() == live
    assert emu.stat("errors_detected") == 0
