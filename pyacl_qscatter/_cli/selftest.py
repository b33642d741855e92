"""``python -m pyacl_qscatter selftest``: every conformance case on the device against the reference.

The cases ship inside the package (``_cli/data/conformance.npz``, built from the public conformance set),
so the command works from an installed wheel. The first thing a user with hardware runs. On the device it
also reports the toolkit as ``info`` does (release, kernel path, repeatable executors, aclFinalizeReference,
graph capture). A broken environment (no kernels, a device that stopped) is one error, not a mismatch per
case.
"""

from __future__ import annotations

import argparse
import importlib.resources
from typing import Any

import ml_dtypes
import numpy as np

from ..api import quant_scatter, quant_scatter_
from ..backends import backend_status
from ..contract import resolve_product
from ..errors import CannError, ContractError, DeviceFaultError, QScatterError

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


Outcome = tuple[str, Any]  # ("result", int8 array), ("rejected", kind) or ("failed", message)
ACLNN_ERR_INNER_OPP_PATH_NOT_FOUND = 561107


class EnvironmentFailure(Exception):
    """A failure no case can get past (no kernels, a stopped device): reported once."""


def _environmental(exc: QScatterError) -> bool:
    if isinstance(exc, DeviceFaultError):
        return exc.sticky
    return isinstance(exc, CannError) and exc.code == ACLNN_ERR_INNER_OPP_PATH_NOT_FOUND


def outcome(call: list[Any], **kwargs: Any) -> Outcome:
    """Run ``quant_scatter(*call, **kwargs)`` and say how it ended; raise `EnvironmentFailure` when the
    failure is one every case would meet.

    >>> outcome([None] * 8, backend="cpu")[0]
    'rejected'
    """
    try:
        return "result", quant_scatter(*call, **kwargs)
    except ContractError as exc:
        return "rejected", exc.kind
    except QScatterError as exc:
        if _environmental(exc):
            raise EnvironmentFailure(str(exc)) from exc
        return "failed", str(exc).splitlines()[0]


def toolkit_lines() -> list[str]:
    """What ``info`` says about the toolkit, in a few lines (CANN loaded).

    >>> toolkit_lines()  # doctest: +SKIP
    ['CANN release 8.3.RC1 (aclsysGetVersionStr), ACL API 1.17.0', ...]
    """
    from .._diagnostics import collect

    r = collect()
    yes = {True: "yes", False: "no", None: "unknown"}
    return [
        f"CANN release {r.cann_release or 'unknown'} ({r.cann_release_source or 'no version source'}), "
        f"ACL API {r.acl_api_version or 'unknown'} (aclrtGetVersion)",
        f"kernel path {r.kernel_path or 'none'} ({r.kernel_path_source})",
        f"aclFinalizeReference {yes[r.finalize_reference]}, graph capture {yes[r.graph_capture]}",
    ]


def device_resident_case(product: Any) -> str | None:
    """The first conformance case the product accepts, as device arrays, run twice as a kept prepared call
    (the path that asks the toolkit, once per process, for a repeatable executor), against the reference;
    None when both agree.

    >>> device_resident_case(resolve_product("A2"))  # doctest: +SKIP
    """
    from ..memory import DeviceArray

    for case in load_cases():
        call: list[Any] = [case.get(k) for k in ARRAYS]
        axes = (int(case["axis"]), int(case["quant_axis"]), str(case["reduce"]))
        want = outcome([*call, *axes], backend="cpu", product=product)
        if want[0] != "result":
            continue
        arrays = [None if a is None else DeviceArray.from_numpy(np.ascontiguousarray(a)) for a in call]
        run: Any = quant_scatter_
        try:
            for _ in range(2):
                run(*arrays, *axes)
            got = arrays[0].to_numpy() if arrays[0] is not None else None
        except ContractError:
            continue  # inputs the NumPy form converts (device arrays are taken as they are): the next case
        finally:
            for arr in arrays:
                if arr is not None:
                    arr.close()
        diff = int(np.count_nonzero(got != want[1]))
        return None if diff == 0 else f"{case['name']} (device-resident): {diff} positions differ from the reference"
    return None


def _repeatable_line() -> str:
    from .._diagnostics import repeatable_executors

    said = {True: "accepted", False: "refused by the toolkit (phase 1 + phase 2 per call)",
            None: "not tried in this run"}
    return f"repeatable executors: {said[repeatable_executors()]}"


def judge(name: str, got: Outcome, want: Outcome) -> str | None:
    """None when ``got`` matches ``want``, else a line saying how they differ.

    >>> judge("c", ("rejected", "rank"), ("rejected", "rank")) is None
    True
    """
    if got[0] == want[0] == "result":
        diff = int(np.count_nonzero(got[1] != want[1]))
        return None if diff == 0 else f"{name}: {diff} positions differ from the reference"
    if got == want:
        return None
    return f"{name}: {got[0]} {got[1] if got[0] != 'result' else ''} where the reference {want[0]} " \
           f"{want[1] if want[0] != 'result' else ''}".rstrip()


def main(argv: list[str]) -> int:
    """Run every case on ``--backend`` (default npu) and compare with the reference backend under the same
    product's rules (for A2 and A3 those are the conformance set's own expectations); exit 1 on a mismatch.

    >>> main(["--backend", "cpu"])  # doctest: +ELLIPSIS
    selftest on cpu: ...
    82 cases under the A2 rules: 64 results reproduced, 18 rejections reproduced, 0 mismatches
    0
    """
    if "--report" in argv:  # the hardware report (_cli/report.py) takes the rest of the options
        from .report import main as report

        return report([a for a in argv if a != "--report"])
    parser = argparse.ArgumentParser(prog="python -m pyacl_qscatter selftest")
    parser.add_argument("--backend", choices=["npu", "cpu"], default="npu")
    args = parser.parse_args(argv)
    ok, why = backend_status(args.backend)
    print(f"selftest on {args.backend}: {why}")
    if not ok:
        return 2
    product = resolve_product(None)
    if args.backend == "npu":
        from ..runtime import Device

        for line in toolkit_lines():
            print(line)
        product = resolve_product(Device.current().soc_name or None)
    try:
        counts, mismatches = _run_cases(args.backend, product)
    except EnvironmentFailure as exc:
        print(f"ENVIRONMENT ERROR (no case can pass until it is fixed): {exc}")
        return 2
    if args.backend == "npu":
        problem = device_resident_case(product)
        if problem:
            mismatches.append(problem)
    for line in mismatches:
        print("MISMATCH", line)
    if args.backend == "npu":
        print(_repeatable_line())
    print(f"{sum(counts.values()) + len(mismatches)} cases under the {product.name} rules: {counts['result']} results "
          f"reproduced, {counts['rejected']} rejections reproduced, {len(mismatches)} mismatches")
    return 1 if mismatches else 0


def _run_cases(backend: str, product: Any) -> tuple[dict[str, int], list[str]]:
    counts = {"result": 0, "rejected": 0}
    mismatches: list[str] = []
    for case in load_cases():
        call: list[Any] = [case.get(k) for k in ARRAYS]
        call += [int(case["axis"]), int(case["quant_axis"]), str(case["reduce"])]
        want = outcome(call, backend="cpu", product=product)
        if product.name in ("A2", "A3"):  # the rules the conformance set was written for
            stored: Outcome = ("result", case["expected"]) if "expected" in case else ("rejected", str(case["error"]))
            problem = judge(case["name"] + " (reference vs conformance set)", want, stored)
            if problem:
                mismatches.append(problem)
        problem = judge(case["name"], outcome(call, backend=backend), want)
        if problem:
            mismatches.append(problem)
        elif want[0] in counts:
            counts[want[0]] += 1
    return counts, mismatches
