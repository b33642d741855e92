"""A paged KV cache as serving engines keep it: blocks of `block_size` slots, a flat slot mapping per step
with -1 for padding slots (vLLM's PAD_SLOT_ID), written with 2-D indices (block, offset) and
skip_negative=True so padding rows are skipped instead of rejected.

Run: python examples/paged_cache.py   (on the device when one answers, else on the cpu reference)
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

import pyacl_qscatter as qs

BF16 = ml_dtypes.bfloat16
NUM_BLOCKS, BLOCK_SIZE, HEADS, DIM = 16, 8, 2, 64


def by_hand(cache: np.ndarray, slots: np.ndarray, rows: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The same writes made one slot at a time on the flat view of the cache (the cpu reference quantizes)."""
    out = cache.copy()
    flat = out.reshape(NUM_BLOCKS * BLOCK_SIZE, HEADS, DIM)
    for b, slot in enumerate(slots):
        if slot >= 0:
            one = qs.quant_scatter(np.zeros((1, 1, HEADS, DIM), np.int8), np.array([[0, 0]]), rows[b:b + 1],
                                   scales, axis=1, backend="cpu")
            flat[slot] = one[0, 0]
    return out


def main() -> int:
    rng = np.random.default_rng(11)
    npu, why = qs.backend_status("npu")
    print(f"backend: {'npu' if npu else 'cpu'} ({why})")
    cache = rng.integers(-128, 128, (NUM_BLOCKS, BLOCK_SIZE, HEADS, DIM), dtype=np.int8)
    scales = rng.uniform(0.01, 0.03, DIM).astype(BF16)
    ok = True
    for step, slots in enumerate([np.array([3, 17, -1, 42, 127, -1]), np.array([-1, -1, 64, 65, 0, 9]),
                                  np.array([-1, -1, -1, -1, -1, -1])]):
        rows = rng.normal(0, 1, (len(slots), 1, HEADS, DIM)).astype(BF16)
        indices = qs.paged_indices(slots, BLOCK_SIZE)  # slot s -> (s // BLOCK_SIZE, s % BLOCK_SIZE); -1 -> (-1, -1)
        want = by_hand(cache, slots, rows, scales)
        if npu:
            from pyacl_qscatter import DeviceArray, Stream

            with Stream() as stream:
                d_cache = DeviceArray.from_numpy(cache, stream=stream)
                qs.quant_scatter_(d_cache, indices, DeviceArray.from_numpy(rows, stream=stream), scales, axis=1,
                                  skip_negative=True, stream=stream)
                cache = d_cache.to_numpy(stream=stream)
                d_cache.close()
        else:
            qs.quant_scatter_(cache, indices, rows, scales, axis=1, skip_negative=True, backend="cpu")
        same = np.array_equal(cache, want)
        ok &= same
        print(f"step {step}: slots {slots.tolist()} -> indices {indices.tolist()}: "
              f"{int((slots >= 0).sum())} rows written, {int((slots < 0).sum())} padding rows skipped; "
              f"{'equal to' if same else 'DIFFERENT from'} the same writes made by hand")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
