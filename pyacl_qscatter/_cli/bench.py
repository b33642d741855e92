"""``python -m pyacl_qscatter bench``: figures measured side by side in one run (see README)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np

from .. import reference
from ..backends import backend_status
from ..contract import check_arguments, check_indices
from .bench_import import import_figures

GOALS = {
    "overhead_ratio": "host time of a steady-state device call / the same C calls made raw (goal <= 2.0)",
    "mallocs_per_call": "aclrtMalloc calls per steady-state call (goal 0)",
    "numpy_call_ratio": "NumPy-in/out call at decode size on the npu backend / on the cpu backend (goal <= 1.5)",
    "transfer_ratio": "bytes moved by a NumPy in-place call at the seed's shape / the minimum (goal <= 1.2)",
    "cpu_memcpy_ratio": "NumPy copy time of the updates' bytes / reference quantize time (goal >= 0.15)",
    "decode_ratio": "host time of a decode step with host indices / its C floor (goal <= 4.0)",
    "decode_prepared_ratio": "host time of a prepared decode step on device indices / its C floor (goal <= 2.0)",
    "host_waits_per_step": "host waits for the device per decode step with host indices (goal 0)",
    "mallocs_per_step": "aclrtMalloc calls per decode step (goal 0)",
    "graph_step_us": "host time of Graph.replay() of a whole step (goal <= 5 x decode_floor_us / calls per step)",
    "memory_overhead": "device bytes held (in use and cached) / bytes of the live arrays (goal <= 1.05)",
    "memory_after_del": "device bytes still held after closing every array and empty_cache() (goal 0)",
    "device_us_per_call": "device time per call from events: meaningless against the emulator (kernels run "
                          "at synchronisation), a real figure on hardware",
}


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Smallest wall time of ``repeat`` runs of ``fn`` (seconds): the least disturbed measurement.

    >>> best_of(lambda: None, 3) >= 0
    True
    """
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def cpu_figures(repeat: int) -> dict[str, Any]:
    """The reference backend at the seed's prefill shape against a NumPy copy of the updates' bytes.

    >>> cpu_figures(1)["cpu_memcpy_ratio"] > 0
    True
    """
    rng = np.random.default_rng(0)
    bf16 = ml_dtypes.bfloat16
    self_ = rng.integers(-128, 128, (24, 4096, 128), dtype=np.int8)
    updates = rng.uniform(1, 2, (24, 4096, 128)).astype(bf16)
    scales = rng.uniform(0, 1, (1, 1, 128)).astype(bf16)
    zps = rng.uniform(0, 1, (1, 1, 128)).astype(bf16)
    indices = np.zeros(24, np.int32)
    plan = check_arguments(self_, indices, updates, scales, zps, -2, -1, "update")
    check_indices(plan, indices)
    copy_dst = np.empty_like(updates)
    t_copy = best_of(lambda: np.copyto(copy_dst, updates), repeat)
    t_quant = best_of(lambda: reference.quantize(updates, scales, zps), repeat)
    t_call = best_of(lambda: reference.run(plan, self_, indices, updates, scales, zps), repeat)
    return {
        "cpu_shape": "updates [24, 4096, 128] bf16 into self [24, 4096, 128] int8",
        "cpu_threads": reference.thread_count(),
        "cpu_copy_ms": t_copy * 1e3,
        "cpu_quantize_ms": t_quant * 1e3,
        "cpu_call_ms": t_call * 1e3,
        "cpu_memcpy_ratio": t_copy / t_quant,
        "cpu_call_memcpy_ratio": t_copy / t_call,
    }


def main(argv: list[str]) -> int:
    """Print the figures (``--json``: one JSON object).

    >>> main(["--backend", "cpu", "--repeat", "1", "--json"])  # doctest: +ELLIPSIS
    {"backend": "cpu", ...}
    0
    """
    parser = argparse.ArgumentParser(prog="python -m pyacl_qscatter bench")
    parser.add_argument("--backend", choices=["cpu", "npu", "all"], default=None,
                        help="default: all when the npu backend is available, else cpu")
    parser.add_argument("--repeat", type=int, default=10, help="runs per cpu figure; the best is kept")
    parser.add_argument("--calls", type=int, default=1000, help="calls per npu figure")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    backend = args.backend or ("all" if backend_status("npu")[0] else "cpu")
    figures: dict[str, Any] = {"backend": backend}
    if backend in ("npu", "all"):
        from .bench_decode import decode_figures  # loads CANN
        from .bench_npu import npu_figures

        figures.update(npu_figures(args.calls))
        figures.update(decode_figures())
    if backend in ("cpu", "all"):
        figures.update(cpu_figures(args.repeat))
    figures.update(import_figures())  # import_ratio: the package's import over its dependencies'
    if args.json:
        print(json.dumps(figures))
        return 0
    for key, value in figures.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
        print(f"{key:24} {value:.4g}" if isinstance(value, float) else f"{key:24} {value}")
    for key, text in GOALS.items():
        if key in figures:
            print(f"{key}: {text}")
    return 0
