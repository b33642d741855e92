"""``python -m pyacl_qscatter selftest``: every conformance case on the device against the reference.

The cases ship inside the package (``_cli/data/conformance.npz``, built from the public conformance set),
so the command works from an installed wheel. The first thing a user with hardware runs.
"""

from __future__ import annotations

import argparse
import importlib.resources
from typing import Any

import ml_dtypes
import numpy as np

from ..api import quant_scatter
from ..backends import backend_status
from ..errors import ContractError, QScatterError

ARRAYS = ("self", "indices", "updates", "quant_scales", "quant_zero_points")


def load_cases() -> list[dict[str, Any]]:
    """The packaged conformance cases as dicts (arrays restored to their dtypes, plus axis, error, ...).

    >>> len(load_cases())
    82
    """
    ref = importlib.resources.files("pyacl_qscatter._cli") / "data" / "conformance.npz"
    cases: dict[str, dict[str, Any]] = {}
    with importlib.resources.as_file(ref) as path, np.load(path) as z:
        for key in z.files:
            name, field = key.split("/", 1)
            cases.setdefault(name, {"name": name})[field] = z[key]
    out = []
    for case in cases.values():
        for field in ARRAYS:
            if field in case and str(case[f"{field}__dtype"]) == "bfloat16":
                case[field] = case[field].view(ml_dtypes.bfloat16)
        out.append(case)
    return sorted(out, key=lambda c: c["name"])


def main(argv: list[str]) -> int:
    """Run every case on ``--backend`` (default npu) and compare with the reference; exit 1 on mismatch.

    >>> main(["--backend", "cpu"])  # doctest: +ELLIPSIS
    selftest on cpu: ...
    82 cases: 64 valid reproduced, 18 invalid rejected, 0 mismatches
    0
    """
    parser = argparse.ArgumentParser(prog="python -m pyacl_qscatter selftest")
    parser.add_argument("--backend", choices=["npu", "cpu"], default="npu")
    args = parser.parse_args(argv)
    ok, why = backend_status(args.backend)
    print(f"selftest on {args.backend}: {why}")
    if not ok:
        return 2
    valid = rejected = 0
    mismatches: list[str] = []
    for case in load_cases():
        call: list[Any] = [case.get(k) for k in ARRAYS]
        call += [int(case["axis"]), int(case["quant_axis"]), str(case["reduce"])]
        if "expected" in case:
            try:
                got = quant_scatter(*call, backend=args.backend)
            except QScatterError as exc:
                mismatches.append(f"{case['name']}: failed: {exc}")
                continue
            reference = quant_scatter(*call, backend="cpu")
            if np.array_equal(got, reference) and np.array_equal(got, case["expected"]):
                valid += 1
            else:
                diff = int(np.count_nonzero(got != case["expected"]))
                mismatches.append(f"{case['name']}: {diff} positions differ from the expected result")
            continue
        try:
            quant_scatter(*call, backend=args.backend)
            mismatches.append(f"{case['name']}: accepted, expected rejection ({case['error']})")
        except ContractError as exc:  # the contract's own rejection: compare the kind
            if exc.kind == str(case["error"]):
                rejected += 1
            else:
                mismatches.append(f"{case['name']}: rejected as {exc.kind}, expected {case['error']}")
        except QScatterError as exc:
            mismatches.append(f"{case['name']}: failed instead of a contract rejection: {exc}")
    for line in mismatches:
        print("MISMATCH", line)
    print(f"{valid + rejected + len(mismatches)} cases: {valid} valid reproduced, {rejected} invalid rejected, "
          f"{len(mismatches)} mismatches")
    return 1 if mismatches else 0
