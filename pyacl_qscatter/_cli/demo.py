"""``python -m pyacl_qscatter demo``: the seed's example on the active backend, checked against the spec."""

from __future__ import annotations

import argparse
import time

import numpy as np

from ..api import quant_scatter_
from ..backends import active_backend
from .seed import seed_inputs


def main(argv: list[str]) -> int:
    """Run the seed's example and print backend, time, positions changed and a checked sample.

    >>> main(["--backend", "cpu"])  # doctest: +ELLIPSIS
    backend: cpu ...
    0
    """
    parser = argparse.ArgumentParser(prog="python -m pyacl_qscatter demo")
    parser.add_argument("--backend", choices=["cpu", "npu"], default=None,
                        help="default: automatic (npu when CANN and a device answer, else cpu)")
    args = parser.parse_args(argv)
    choice = active_backend()
    name = args.backend or choice.name
    reason = "chosen with --backend" if args.backend else choice.reason
    print(f"backend: {name} ({reason})")

    x = seed_inputs()
    before = x["self"].copy()
    start = time.perf_counter()
    quant_scatter_(x["self"], x["indices"], x["updates"], x["quant_scales"], x["quant_zero_points"],
                   axis=-2, quant_axis=-1, reduce="update", backend=name)
    elapsed = time.perf_counter() - start
    changed = int(np.count_nonzero(x["self"] != before))
    print(f"self {x['self'].shape} int8, indices {x['indices'].shape} int32, updates {x['updates'].shape} "
          f"bfloat16, scales and zero points {x['quant_scales'].shape} bfloat16, axis -2, quant_axis -1")
    print(f"time: {elapsed * 1e3:.2f} ms; positions changed: {changed} of {x['updates'].size} written")

    # Expected values straight from the contract's formula, computed here in float32.
    b, row = 0, int(x["indices"][0])
    u = x["updates"][b, 0, :8].astype(np.float32)
    s = x["quant_scales"].reshape(-1)[:8].astype(np.float32)
    z = x["quant_zero_points"].reshape(-1)[:8].astype(np.float32)
    expected = np.clip(np.rint(u / s + z), -128, 127).astype(np.int8)
    got = x["self"][b, row, :8]
    print(f"sample self[0, {row}, :8]: got {got.tolist()}")
    print(f"                 expected {expected.tolist()}")
    ok = bool(np.array_equal(got, expected))
    print("sample matches the contract" if ok else "SAMPLE MISMATCH")
    return 0 if ok else 1
