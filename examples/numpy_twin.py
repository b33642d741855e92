"""The NumPy reference backend as the device's twin: the same call on the NPU and on the cpu, compared bit for
bit, including a prefill block, a strided view of the cache, NaN and infinities.

Run: python examples/numpy_twin.py   (needs CANN and a device, or the emulator)
"""

from __future__ import annotations

import sys

import ml_dtypes
import numpy as np

import pyacl_qscatter as qs
from pyacl_qscatter import DeviceArray, Stream

BF16 = ml_dtypes.bfloat16


def main() -> int:
    ok, why = qs.backend_status("npu")
    if not ok:
        print(f"needs CANN and a device (or the emulator, see the README): {why}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(7)
    cache = rng.integers(-128, 128, (4, 256, 2, 64), dtype=np.int8)   # [batch, seq, heads, dim]
    starts = np.array([0, 37, 100, 255 - 15], np.int32)               # the last one ends exactly at S
    rows = rng.normal(0, 2, (4, 16, 2, 64)).astype(BF16)              # a 16-token prefill per sequence
    rows[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    scales = rng.uniform(0.01, 0.05, 64).astype(BF16)
    zero_points = rng.integers(-8, 8, 64).astype(BF16)

    twin = qs.quant_scatter(cache, starts, rows, scales, zero_points, axis=1, backend="cpu")

    with Stream() as stream:
        d_cache = DeviceArray.from_numpy(cache, stream=stream)
        qs.quant_scatter_(d_cache, starts, DeviceArray.from_numpy(rows, stream=stream), scales, zero_points,
                          axis=1, stream=stream)
        device_result = d_cache.to_numpy(stream=stream)
        same = np.array_equal(device_result, twin)
        print(f"prefill of 4 x 16 rows into a [4, 256, 2, 64] cache: device and cpu reference "
              f"{'agree bit for bit' if same else 'DIFFER'}; NaN, +inf, -inf became "
              f"{device_result[0, 0, 0, :3].tolist()}")

        # A strided view of the cache (every other sequence), as CANN takes it: element strides and offset.
        view = d_cache[1::2]
        qs.quant_scatter_(view, np.array([3, 4], np.int32), DeviceArray.from_numpy(rows[:2, :1], stream=stream),
                          scales, zero_points, axis=1, stream=stream)
        twin_view = twin.copy()
        qs.quant_scatter_(twin_view[1::2], np.array([3, 4], np.int32), rows[:2, :1], scales, zero_points, axis=1,
                          backend="cpu")
        same_view = np.array_equal(d_cache.to_numpy(stream=stream), twin_view)
        print(f"one row into each of sequences 1 and 3 through a strided view: "
              f"{'agree bit for bit' if same_view else 'DIFFER'}")
        d_cache.close()
    return 0 if same and same_view else 1


if __name__ == "__main__":
    raise SystemExit(main())
