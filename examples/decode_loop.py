"""A decode loop of an LLM served without PyTorch: every generated token, each of L layers writes one new K
row and one new V row per sequence into device-resident INT8 caches, at slot positions computed on the host.
Shown twice: calling the op directly each step, and replaying the whole step as one captured graph (where
the toolkit has ACL graph capture). Timing per step is printed; the caches are checked against the cpu
reference at the end.

Run: python examples/decode_loop.py   (needs CANN and a device, or the emulator)
"""

from __future__ import annotations

import statistics
import sys
import time

import ml_dtypes
import numpy as np

import pyacl_qscatter as qs
from pyacl_qscatter import DeviceArray, Stream

BF16 = ml_dtypes.bfloat16
LAYERS, BATCH, SEQ, DIM, STEPS = 4, 8, 256, 128, 16


def reference_caches(prompt_lens: np.ndarray, new_rows: list[list[np.ndarray]], scales: np.ndarray
                     ) -> list[np.ndarray]:
    """The same steps on the cpu reference: one K and one V cache per layer."""
    caches = [np.zeros((BATCH, SEQ, DIM), np.int8) for _ in range(2 * LAYERS)]
    for step, rows in enumerate(new_rows):
        positions = (prompt_lens + step).astype(np.int32)
        for i, cache in enumerate(caches):
            qs.quant_scatter_(cache, positions, rows[i], scales, backend="cpu")
    return caches


def run(stream: Stream, use_graph: bool, prompt_lens: np.ndarray, new_rows: list[list[np.ndarray]],
        scales: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    """Run every step on the device; return the caches and the host time of each step (seconds)."""
    caches = [DeviceArray.zeros((BATCH, SEQ, DIM), np.int8) for _ in range(2 * LAYERS)]
    rows = [DeviceArray.empty((BATCH, 1, DIM), BF16) for _ in range(2 * LAYERS)]  # the step's input buffers
    positions = DeviceArray.empty((BATCH,), np.int32)
    d_scales = DeviceArray.from_numpy(scales, stream=stream)

    def step_calls(indices: object, check: bool) -> None:
        for cache, row in zip(caches, rows, strict=True):
            qs.quant_scatter_(cache, indices, row, d_scales, stream=stream, check_indices=check)

    graph = None
    times = []
    for step, host_rows in enumerate(new_rows):
        start = time.perf_counter()
        for buffer, host in zip(rows, host_rows, strict=True):
            buffer.copy_from(host, stream=stream)  # queued; the host does not wait
        slot = (prompt_lens + step).astype(np.int32)
        if not use_graph:
            step_calls(slot, True)  # host indices: checked on the host, staged, queued
        elif graph is None:
            positions.copy_from(slot, stream=stream)
            step_calls(positions, True)  # warm-up on the device buffer (its indices checked: one wait)
            with qs.Graph(stream) as graph:  # recorded, not run: every call is prepared already
                step_calls(positions, False)
        else:
            graph.write_indices(0, slot)  # checked, into the buffer every captured call reads
            graph.replay()  # the whole step: one C call
        times.append(time.perf_counter() - start)
    stream.synchronize()
    result = [c.to_numpy(stream=stream) for c in caches]
    if graph is not None:
        graph.close()
    for arr in (*caches, *rows, positions, d_scales):
        arr.close()
    return result, times


def main() -> int:
    ok, why = qs.backend_status("npu")
    if not ok:
        print(f"needs CANN and a device (or the emulator, see the README): {why}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(3)
    prompt_lens = rng.integers(0, SEQ - STEPS, BATCH)
    scales = rng.uniform(0.01, 0.03, DIM).astype(BF16)
    new_rows = [[rng.normal(0, 1, (BATCH, 1, DIM)).astype(BF16) for _ in range(2 * LAYERS)] for _ in range(STEPS)]
    want = reference_caches(prompt_lens, new_rows, scales)
    print(f"{STEPS} decode steps, {LAYERS} layers x K and V = {2 * LAYERS} calls per step, caches "
          f"[{BATCH}, {SEQ}, {DIM}] int8 on the device, slot positions from the host")

    ok_all = True
    with Stream() as stream:
        ways = [("direct calls", False)]
        try:
            qs.Graph(stream).close()  # raises GraphCaptureError where the toolkit cannot capture
            ways.append(("graph replay", True))
        except qs.GraphCaptureError as exc:
            print(f"graph replay: not available here ({exc})")
        for name, use_graph in ways:
            got, times = run(stream, use_graph, prompt_lens, new_rows, scales)
            same = all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
            ok_all &= same
            steady = times[2:] if len(times) > 2 else times
            print(f"{name:13}: median {statistics.median(steady) * 1e6:8.1f} us of host time per step; caches "
                  f"{'equal' if same else 'DIFFER from'} the cpu reference")
    return 0 if ok_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
