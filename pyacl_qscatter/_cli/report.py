"""``python -m pyacl_qscatter selftest --report [--json] [--out FILE]``: the open hardware questions, answered
by experiment on the device, in a report a user can paste into an issue.

For each question the report gives what the reference backend (or, for runtime behaviour, the package's
documented assumption) predicts, what the device did, and whether they agree (``None``: not answered here,
for example because the toolkit lacks the calls). Op questions run through the public device API; the
questions about executors, capture and copies call the checked CANN calls (``_calls``) directly, so they
depend on nothing but the toolkit. The header says which toolkit answered, including whether its runtime
library exports the CANN emulator's ``emu*`` introspection symbols: answers from the emulator say nothing
about hardware.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import ml_dtypes
import numpy as np

from .. import _calls, _loader
from ..api import quant_scatter, quant_scatter_
from ..backends import backend_status
from ..contract import Product, resolve_product
from ..errors import CannError, ContractError, QScatterError

__all__ = ["Entry", "describe", "main"]

BF16 = np.dtype(ml_dtypes.bfloat16)
Array = np.ndarray[Any, Any]
Outcome = tuple[str, Any]  # ("result", int8 array), ("rejected", kind) or ("failed", text)
CAPTURE_MODE_THREAD_LOCAL = 1  # ACL_MODEL_RI_CAPTURE_MODE_THREAD_LOCAL (acl_rt.h)
H2D, D2H = 1, 2  # ACL_MEMCPY_HOST_TO_DEVICE, ACL_MEMCPY_DEVICE_TO_HOST


@dataclass
class Entry:
    """One answered question.

    >>> Entry("q", "a question", "1", "1", True).agrees
    True
    """

    id: str
    question: str
    predicted: str
    observed: str
    agrees: bool | None


def describe(outcome: Outcome, region: tuple[Any, ...] = (Ellipsis,)) -> str:
    """An outcome as one line: the first values written in ``region`` and a digest of the whole result.

    >>> describe(("result", np.array([[0, 127, -128]], np.int8)))
    'result [0, 127, -128] (sha256 6a5eedc19b26)'
    >>> describe(("rejected", "alignment"))
    'rejected: alignment'
    """
    if outcome[0] != "result":
        return f"{outcome[0]}: {outcome[1]}"
    values = np.asarray(outcome[1])[region].ravel()
    shown = values[:12].tolist()
    more = "..." if values.size > 12 else ""
    digest = hashlib.sha256(np.ascontiguousarray(outcome[1]).tobytes()).hexdigest()[:12]
    return f"result {shown}{more} (sha256 {digest})"


def _same(a: Outcome, b: Outcome) -> bool:
    if a[0] == b[0] == "result":
        return bool(np.array_equal(a[1], b[1]))
    return a == b


def _device_outcome(self_: Array, args: tuple[Any, ...], axis: int, stream: Any) -> Outcome:
    """Run the op on device copies of the arrays through the public API; read ``self`` back."""
    from ..memory import DeviceArray

    arrays = [DeviceArray.from_numpy(np.ascontiguousarray(a), stream=stream) for a in (self_, *args) if a is not None]
    try:
        zp = arrays[4] if len(arrays) == 5 else None
        quant_scatter_(arrays[0], arrays[1], arrays[2], arrays[3], zp, axis, stream=stream)
        stream.synchronize()
        return "result", arrays[0].to_numpy()
    except ContractError as exc:
        return "rejected", exc.kind
    except QScatterError as exc:
        return "failed", str(exc).splitlines()[0]
    finally:
        for arr in arrays:
            arr.close()


def _reference(self_: Array, args: tuple[Any, ...], axis: int, product: Product) -> Outcome:
    try:
        idx, upd, sc, zp = args
        return "result", quant_scatter(self_, idx, upd, sc, zp, axis, backend="cpu", product=product, strict=True)
    except ContractError as exc:
        return "rejected", exc.kind


# ------------------------------------------------------------------------------------------ the op questions

Case = tuple[Array, tuple[Any, ...], int, tuple[Any, ...]]  # self, (indices, updates, scales, zps), axis, region


def _bf16(values: Any) -> Array:
    return np.asarray(values, np.float64).astype(BF16)


def _nan_inf(rng: np.random.Generator) -> Case:
    row = np.resize(np.array([np.nan, np.inf, -np.inf, -np.nan, 1.0, -1.0]), 32)
    upd = _bf16(np.broadcast_to(row, (2, 1, 32)))
    return np.zeros((2, 4, 32), np.int8), (np.array([1, 2], np.int32), upd, _bf16(np.full(32, 0.5)), None), -2, \
        (0, 1, slice(0, 6))


def _ties(combo: str) -> Callable[[np.random.Generator], Case]:
    def make(rng: np.random.Generator) -> Case:
        row = np.arange(-16, 16) + 0.5  # every value exactly halfway between two integers
        if combo == "bf16":
            args = (np.array([0], np.int32), _bf16(row.reshape(1, 1, 32)), _bf16(np.ones(32)), _bf16(np.zeros(32)))
        else:
            args = (np.array([0], np.int32), row.reshape(1, 1, 32).astype(np.float16), np.ones(32, np.float32),
                    np.zeros(32, np.int32))
        return np.zeros((1, 2, 32), np.int8), args, -2, (0, 0, slice(12, 20))
    return make


def _division(combo: str) -> Callable[[np.random.Generator], Case]:
    def make(rng: np.random.Generator) -> Case:
        # Scales that are not powers of two, so x / s and x * (1 / s) round differently for some x.
        upd = rng.uniform(-200, 200, (4, 8, 128))
        scales = rng.uniform(0.3, 3.0, 128)
        zps = rng.integers(-20, 20, 128)
        idx = np.array([0, 1, 2, 3], np.int32)
        if combo == "bf16":
            args = (idx, _bf16(upd), _bf16(scales), _bf16(zps))
        else:
            args = (idx, upd.astype(np.float16), scales.astype(np.float32), zps.astype(np.int32))
        return np.zeros((4, 16, 128), np.int8), args, -2, (0, 0, slice(0, 12))
    return make


def _random_bf16(shape_self: tuple[int, ...], shape_upd: tuple[int, ...], idx: Array, axis: int,
                 region: tuple[Any, ...]) -> Callable[[np.random.Generator], Case]:
    def make(rng: np.random.Generator) -> Case:
        upd = _bf16(rng.uniform(-3, 3, shape_upd))
        last = shape_upd[-1]
        args = (idx, upd, _bf16(rng.uniform(0.02, 0.1, last)), _bf16(rng.uniform(-2, 2, last)))
        return rng.integers(-128, 128, shape_self, dtype=np.int8), args, axis, region
    return make


OP_QUESTIONS: dict[str, tuple[str, Callable[[np.random.Generator], Case]]] = {
    "nan_inf": ("NaN and +-inf in updates (the reference writes 0 for NaN, 127 for +inf, -128 for -inf)", _nan_inf),
    "ties_bf16": ("ties at .5, bf16/bf16/bf16 (round half to even)", _ties("bf16")),
    "ties_fp16": ("ties at .5, fp16/fp32/int32 (round half to even)", _ties("fp16")),
    "division_fp16": ("FP16 updates: x / scale rounded in float32, then + zero point, separately rounded",
                      _division("fp16")),
    "division_bf16": ("BF16 updates: x / scale rounded in float32, then + zero point, separately rounded",
                      _division("bf16")),
    "indices_2d": ("2-D indices [B, 2] (batch, start)",
                   _random_bf16((3, 8, 32), (2, 2, 32), np.array([[2, 1], [0, 5]], np.int32), -2, (2, slice(1, 3)))),
    "rank_above_3": ("rank 5 self and updates",
                     _random_bf16((2, 3, 2, 6, 32), (2, 3, 2, 2, 32), np.array([4, 0], np.int32), -2,
                                  (0, 0, 0, slice(4, 6)))),
    "axis_not_minus_2": ("axis = 1 on rank 4 (not -2)",
                         _random_bf16((2, 6, 3, 32), (2, 2, 3, 32), np.array([1, 4], np.int32), 1,
                                      (0, slice(1, 3), 0))),
    "int64_indices": ("INT64 indices",
                      _random_bf16((2, 8, 32), (2, 1, 32), np.array([7, 3], np.int64), -2, (0, 7))),
    "start_s_minus_u": ("a block starting at exactly S - U (the documents say [0, S - U), the package accepts it)",
                        _random_bf16((2, 8, 32), (2, 3, 32), np.array([5, 0], np.int32), -2, (0, slice(5, 8)))),
}


def _op_entry(qid: str, stream: Any, product: Product, rng: np.random.Generator) -> Entry:
    title, make = OP_QUESTIONS[qid]
    self_, args, axis, region = make(rng)
    predicted = _reference(self_, args, axis, product)
    observed = _device_outcome(self_, args, axis, stream)
    return Entry(qid, title, describe(predicted, region), describe(observed, region), _same(predicted, observed))


def _non_contiguous(stream: Any, product: Product, rng: np.random.Generator) -> Entry:
    """``self`` and ``updates`` as strided views of larger device arrays; everything around them must stay."""
    from ..memory import DeviceArray

    base = rng.integers(-128, 128, (2, 12, 64), dtype=np.int8)
    upd_base = _bf16(rng.uniform(-3, 3, (2, 4, 64)))
    idx, sc, zp = np.array([1, 3], np.int32), _bf16(rng.uniform(0.02, 0.1, 32)), _bf16(rng.uniform(-2, 2, 32))
    want = base.copy()
    quant_scatter_(want[:, ::2, 32:], idx, upd_base[:, ::2, 32:], sc, zp, backend="cpu", product=product, strict=True)
    d_base, d_upd = DeviceArray.from_numpy(base, stream=stream), DeviceArray.from_numpy(upd_base, stream=stream)
    observed: Outcome
    try:
        quant_scatter_(d_base[:, ::2, 32:], idx, d_upd[:, ::2, 32:], sc, zp, stream=stream)
        stream.synchronize()
        observed = ("result", d_base.to_numpy())
    except QScatterError as exc:
        observed = ("failed", str(exc).splitlines()[0])
    finally:
        d_base.close()
        d_upd.close()
    region = (0, slice(2, 3), slice(32, 44))
    return Entry("non_contiguous", "non-contiguous self and updates (strided views, offsets; the rest untouched)",
                 describe(("result", want), region), describe(observed, region), _same(("result", want), observed))


# ------------------------------------------------------------------------------- runtime questions (_calls)


def _small_call(stream: Any, rng: np.random.Generator) -> tuple[list[Any], Array, Callable[[], tuple[int, Any]]]:
    """Device arrays of a small valid call, the reference result, and its phase 1."""
    from ..memory import DeviceArray

    self_ = rng.integers(-128, 128, (2, 4, 32), dtype=np.int8)
    idx, upd = np.array([1, 3], np.int32), _bf16(rng.uniform(-3, 3, (2, 1, 32)))
    sc = _bf16(rng.uniform(0.02, 0.1, 32))
    want = np.asarray(quant_scatter(self_, idx, upd, sc, backend="cpu", strict=True))
    arrays = [DeviceArray.from_numpy(a, stream=stream) for a in (self_, idx, upd, sc)]
    stream.synchronize()
    t = [a.descriptor() for a in arrays]
    return arrays, want, lambda: _calls.quant_scatter_get_workspace_size(t[0], t[1], t[2], t[3], None, -2, -1, 1)


@contextlib.contextmanager
def _workspace(size: int) -> Any:
    ptr = _calls.malloc(size) if size else 0
    try:
        yield ptr
    finally:
        if ptr:
            _calls.free(ptr)


def _repeatable(cann: _loader.Cann, stream: Any, rng: np.random.Generator) -> Entry:
    title = "repeatable executors for this op (aclSetAclOpExecutorRepeatable after phase 1)"
    predicted = "refused (the op writes self through an in-place ViewCopy, which CANN's executor reuse excludes)"
    if not cann.caps.repeatable_executor:
        return Entry("repeatable_executor", title, predicted, "not answered: the toolkit lacks the calls", None)
    arrays, want, phase1 = _small_call(stream, rng)
    try:
        size, executor = phase1()
        with _workspace(size) as ws:
            try:
                _calls.set_executor_repeatable(executor)
            except CannError as exc:
                _calls.quant_scatter(ws, size, executor, stream.handle)  # the only way to give it back
                stream.synchronize()
                return Entry("repeatable_executor", title, predicted, f"refused: {exc.name} ({exc.code})", True)
            try:
                for _ in range(2):
                    _calls.quant_scatter(ws, size, executor, stream.handle)
                stream.synchronize()
            finally:
                _calls.destroy_executor(executor)
        right = np.array_equal(arrays[0].to_numpy(), want)
        return Entry("repeatable_executor", title, predicted, "accepted; two launches of one executor "
                     f"{'wrote the reference result' if right else 'did NOT write the reference result'}", False)
    except CannError as exc:
        return Entry("repeatable_executor", title, predicted, f"failed: {str(exc).splitlines()[0]}", False)
    finally:
        for arr in arrays:
            arr.close()


def _capture(cann: _loader.Cann, stream: Any, rng: np.random.Generator) -> Entry:
    title = "graph capture of the op (aclmdlRICaptureBegin/End, then aclmdlRIExecuteAsync)"
    predicted = "the captured launch does not run; one replay writes the reference result"
    if not cann.caps.graph:
        return Entry("graph_capture", title, predicted, "not answered: the toolkit lacks the ACL graph calls", None)
    arrays, want, phase1 = _small_call(stream, rng)
    before = arrays[0].to_numpy()
    try:
        size, executor = phase1()
        with _workspace(size) as ws:
            _calls.capture_begin(stream.handle, CAPTURE_MODE_THREAD_LOCAL)
            try:
                _calls.quant_scatter(ws, size, executor, stream.handle)
            finally:
                model = _calls.capture_end(stream.handle)
            try:
                ran_at_capture = not np.array_equal(arrays[0].to_numpy(), before)
                _calls.ri_execute_async(model, stream.handle)
                stream.synchronize()
                right = np.array_equal(arrays[0].to_numpy(), want)
            finally:
                _calls.ri_destroy(model)
        observed = (f"the captured launch {'RAN at capture' if ran_at_capture else 'did not run'}; the replay "
                    f"{'wrote' if right else 'did NOT write'} the reference result")
        return Entry("graph_capture", title, predicted, observed, right and not ran_at_capture)
    except CannError as exc:
        return Entry("graph_capture", title, predicted, f"failed: {str(exc).splitlines()[0]}", False)
    finally:
        for arr in arrays:
            arr.close()


def _copy_in(host: int, data: Array, stream: Any) -> tuple[bool | str, float]:
    """Asynchronously copy ``data`` (already at ``host``) to the device and back; (intact or error, seconds)."""
    dev = _calls.malloc(data.nbytes)
    try:
        start = time.perf_counter()
        try:
            _calls.memcpy_async(dev, data.nbytes, host, data.nbytes, H2D, stream.handle)
            stream.synchronize()
        except CannError as exc:
            return f"{exc.name} ({exc.code})", 0.0
        seconds = time.perf_counter() - start
        back = np.empty_like(data)
        _calls.memcpy(back.ctypes.data, back.nbytes, dev, data.nbytes, D2H)
        return bool(np.array_equal(back, data)), seconds
    finally:
        _calls.free(dev)


def _copies(stream: Any, rng: np.random.Generator) -> Entry:
    title = "pageable versus pinned host memory for aclrtMemcpyAsync (1 MiB host -> device)"
    predicted = ("pinned (aclrtMallocHost) arrives intact; pageable is undefined before CANN 8.5 and synchronous "
                 "from 8.5, so the package copies asynchronously from pinned memory only")
    data = rng.integers(0, 256, 1 << 20, dtype=np.uint8)
    pinned = _calls.malloc_host(data.nbytes)
    try:
        ctypes.memmove(pinned, data.ctypes.data, data.nbytes)
        pinned_ok, pinned_s = _copy_in(pinned, data, stream)
    finally:
        _calls.free_host(pinned)
    pageable = data.copy()
    pageable_ok, pageable_s = _copy_in(pageable.ctypes.data, pageable, stream)

    def say(ok: bool | str, seconds: float) -> str:
        if isinstance(ok, str):
            return f"refused: {ok}"
        return f"{'intact' if ok else 'CORRUPTED'} in {seconds * 1e6:.0f} us"

    observed = f"pinned: {say(pinned_ok, pinned_s)}; pageable: {say(pageable_ok, pageable_s)}"
    return Entry("pageable_vs_pinned", title, predicted, observed, pinned_ok is True)


def _timing(stream: Any, is_emulator: bool) -> Entry:
    from ..memory import DeviceArray
    from ..runtime import Event

    rng = np.random.default_rng(1)
    calls = 100
    arrays = [DeviceArray.from_numpy(a, stream=stream) for a in (
        np.zeros((24, 4096, 128), np.int8), np.arange(24, dtype=np.int32), _bf16(rng.uniform(1, 2, (24, 1, 128))),
        _bf16(rng.uniform(0.5, 1, 128)))]
    d_self, d_idx, d_upd, d_sc = arrays
    start, end = Event(), Event()
    try:
        quant_scatter_(d_self, d_idx, d_upd, d_sc, stream=stream, check_indices=False)  # warm up: prepared once
        stream.synchronize()
        t0 = time.perf_counter()
        start.record(stream)
        for _ in range(calls):
            quant_scatter_(d_self, d_idx, d_upd, d_sc, stream=stream, check_indices=False)
        end.record(stream)
        host = (time.perf_counter() - t0) / calls
        end.synchronize()
        device_ms = start.elapsed_ms(end) / calls
    finally:
        for arr in arrays:
            arr.close()
        start.close()
        end.close()
    note = " (the emulator: these figures say nothing about hardware)" if is_emulator else ""
    return Entry("timing", "time per call at decode size (self [24, 4096, 128] int8, updates [24, 1, 128] bf16)",
                 "no prediction: a figure to collect", f"{device_ms * 1e3:.1f} us per call on the device (events), "
                 f"{host * 1e6:.1f} us per call on the host to enqueue{note}", None)


# ------------------------------------------------------------------------------------------------ the report


def _toolkit(cann: _loader.Cann, soc: str, product: Product) -> dict[str, Any]:
    if cann.caps.version_str:
        version = _calls.get_version_str()
    else:
        version = "unknown (no aclsysGetVersionStr); ACL API {}.{}.{}".format(*_calls.get_version())
    emulator = hasattr(ctypes.CDLL(cann.paths["rt"]), "emuGetStat")  # a fact about the library, nothing more
    return {"version": version, "soc": soc, "rules": product.name, "home": cann.home, "libraries": dict(cann.paths),
            "emulator": emulator, "emulator_evidence": "the runtime library exports emuGetStat, the CANN emulator's "
            "introspection symbol: this is the emulator, not hardware" if emulator else "no emu* symbols"}


def _conformance() -> str:
    from .selftest import main as selftest

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        selftest(["--backend", "npu"])
    lines = out.getvalue().splitlines()
    return "; ".join([line for line in lines if line.startswith("MISMATCH")][:5] + lines[-1:])


def collect() -> dict[str, Any]:
    """Run every experiment on device 0 and return the report as a JSON-able dict.

    >>> collect()["questions"][0]["id"]  # doctest: +SKIP
    'nan_inf'
    """
    from ..runtime import Device, Stream, ensure_runtime

    cann = ensure_runtime()
    device = Device(0)
    soc = device.soc_name or "unknown"
    product = resolve_product(device.soc_name or None)
    report: dict[str, Any] = {"toolkit": _toolkit(cann, soc, product), "conformance": _conformance()}
    rng = np.random.default_rng(20261202)
    entries: list[Entry] = []
    experiments: list[tuple[str, Callable[[Any], Entry]]] = [
        *((qid, lambda s, q=qid: _op_entry(q, s, product, rng)) for qid in OP_QUESTIONS),
        ("non_contiguous", lambda s: _non_contiguous(s, product, rng)),
        ("repeatable_executor", lambda s: _repeatable(cann, s, rng)),
        ("graph_capture", lambda s: _capture(cann, s, rng)),
        ("timing", lambda s: _timing(s, report["toolkit"]["emulator"])),
        ("pageable_vs_pinned", lambda s: _copies(s, rng)),  # last: a pageable copy may upset the device < 8.5
    ]
    with device, Stream() as stream:
        for qid, experiment in experiments:
            try:
                entries.append(experiment(stream))
            except QScatterError as exc:  # the experiment itself broke: report it and go on with the others
                entries.append(Entry(qid, qid.replace("_", " "), "the experiment runs", "failed: "
                                     f"{type(exc).__name__}: {str(exc).splitlines()[0]}", False))
    report["questions"] = [asdict(e) for e in entries]
    return report


def format_text(report: dict[str, Any]) -> str:
    """The report as text that reads on its own.

    >>> print(format_text({"toolkit": {"version": "8.3.RC1", "soc": "Ascend910B1", "rules": "A2", "home": "/x",
    ...     "libraries": {}, "emulator": False, "emulator_evidence": "no emu* symbols"}, "conformance": "ok",
    ...     "questions": [{"id": "q", "question": "Q?", "predicted": "a", "observed": "a", "agrees": True}]}))
    ... # doctest: +ELLIPSIS
    pyacl_qscatter hardware report
    ...
    [q] Q?: agrees
        predicted: a
        observed:  a
    <BLANKLINE>
    1 agree, 0 disagree, 0 without a verdict
    """
    t = report["toolkit"]
    lines = ["pyacl_qscatter hardware report", "",
             f"toolkit:     CANN {t['version']} at {t['home'] or 'the system loader'}",
             f"SoC:         {t['soc']} (rules of {t['rules']})",
             *(f"library:     {role} = {path}" for role, path in t["libraries"].items()),
             f"emulator:    {'YES, ' if t['emulator'] else 'no, '}{t['emulator_evidence']}",
             f"conformance: {report['conformance']}", ""]
    verdict = {True: "agrees", False: "DISAGREES", None: "no verdict"}
    for q in report["questions"]:
        lines += [f"[{q['id']}] {q['question']}: {verdict[q['agrees']]}", f"    predicted: {q['predicted']}",
                  f"    observed:  {q['observed']}"]
    counts = [sum(q["agrees"] is v for q in report["questions"]) for v in (True, False, None)]
    lines += ["", f"{counts[0]} agree, {counts[1]} disagree, {counts[2]} without a verdict"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print (or write to ``--out``) the report; exit 0 when nothing disagrees, 1 when something does, 2 when
    there is no device to ask.

    >>> main(["--json"])  # doctest: +SKIP
    0
    """
    parser = argparse.ArgumentParser(prog="python -m pyacl_qscatter selftest --report",
                                     description="Answer the open hardware questions by experiment on device 0.")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    parser.add_argument("--out", metavar="FILE", help="write the report to FILE instead of stdout")
    args = parser.parse_args(argv)
    ok, why = backend_status("npu")
    if not ok:
        print(f"selftest --report needs a device: {why}", file=sys.stderr)
        return 2
    report = collect()
    text = json.dumps(report, indent=2) if args.json else format_text(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
        print(f"report written to {args.out}")
    else:
        print(text)
    return 1 if any(q["agrees"] is False for q in report["questions"]) else 0
