"""Fuzz cases for ``python -m pyacl_qscatter stress`` (and the project's hypothesis tests).

`make_case` builds a QuantScatter call from a `Chooser` (random choices from NumPy's generator here; the
tests drive the same builder from hypothesis): a valid call, then up to three mutations (wrong dtypes,
ranks, axes, reductions, shapes and counts; negative, out-of-range, overlapping and huge indices; empty,
non-contiguous, Fortran-ordered, read-only, list, ragged and None inputs; NaN, inf and zero scales), and
where each operand lives (host, device array, strided device view). `check_case` runs it through the cpu
backend, the npu backend with NumPy arrays and with device arrays, in place and out of place, and reports
every departure from the contract: a result that differs from the cpu backend's, an exception that is not
a `QScatterError`, backends that disagree on the rule a call breaks, a failed call that changed ``self``
or wrote outside a view, an input that was modified, a bad write detected by the runtime, a leak.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from ..api import quant_scatter, quant_scatter_
from ..dtypes import ACL_DTYPE, BFLOAT16, FLOAT16, FLOAT32, INT32, INT64
from ..errors import ContractError, QScatterError
from .probe import Probe

__all__ = ["CaseOutcome", "Chooser", "FuzzCase", "RandomChooser", "check_case", "make_case"]

T = TypeVar("T")
Array = np.ndarray[Any, Any]
OPERANDS = ("self", "indices", "updates", "quant_scales", "quant_zero_points")
SENTINEL = 0x5A

_SPECIAL_UPDATES = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-30, 0.5, -0.5, 1.5, 2.5, -2.5,
                             126.5, 127.5, -128.5, 65504.0, -65504.0, 3e38, 6e-8])
_SPECIAL_SCALES = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-38, 1e-45, 3e38, 1.0, -1.0, 0.5, 2.0**-7,
                            65504.0, 6e-8])


class Chooser(Protocol):
    """Where a case's choices come from."""

    def integer(self, low: int, high: int) -> int:
        """An int in ``[low, high]``."""
        ...

    def pick(self, options: Sequence[T]) -> T:
        """One of ``options``."""
        ...


class RandomChooser:
    """Choices from NumPy's generator.

    >>> ch = RandomChooser(0)
    >>> 1 <= ch.integer(1, 3) <= 3, ch.pick("ab") in "ab"
    (True, True)
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def integer(self, low: int, high: int) -> int:
        """An int in ``[low, high]``.

        >>> RandomChooser(0).integer(5, 5)
        5
        """
        return int(self.rng.integers(low, high, endpoint=True))

    def pick(self, options: Sequence[T]) -> T:
        """One of ``options``.

        >>> RandomChooser(0).pick(["only"])
        'only'
        """
        return options[int(self.rng.integers(len(options)))]


@dataclass
class FuzzCase:
    """One call: canonical values, the layout of each operand on the host, and where it lives for device calls.

    ``values`` hold arrays (or, for malformed operands, whatever is passed as is); ``layout`` is "c",
    "strided", "fortran", "readonly" or "list" per operand; ``placement`` is "host", "device" or
    "device_view" per operand. ``extra`` are keyword arguments added to every call.
    """

    values: dict[str, Any]
    axis: Any
    quant_axis: Any
    reduce: Any
    layout: dict[str, str] = field(default_factory=dict)
    placement: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    steady: bool = False  # also run the device call with check_indices=False (when the indices are valid)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A one-line summary for reports.

        >>> make_case(RandomChooser(1)).describe().startswith("self ")
        True
        """
        parts = [f"{name} {_summary(self.values.get(name))}/{self.layout.get(name, 'c')}/"
                 f"{self.placement.get(name, 'host')}" for name in OPERANDS]
        return (", ".join(parts) + f", axis={self.axis!r}, quant_axis={self.quant_axis!r}, reduce={self.reduce!r}"
                + (f", {self.extra}" if self.extra else "") + (f" [{'; '.join(self.notes)}]" if self.notes else ""))


def _summary(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{list(value.shape)}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ------------------------------------------------------------------------------------------- building


def _updates(rng: np.random.Generator, shape: Sequence[int], dtype: Any, special: bool) -> Array:
    n = math.prod(shape)
    values = rng.normal(0.0, 40.0, n)
    if special:
        values = rng.choice(_SPECIAL_UPDATES, n)
    else:
        pick = rng.random(n) < 0.1
        values[pick] = rng.choice(_SPECIAL_UPDATES, int(pick.sum()))
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dtype).reshape(tuple(shape))


def _scales(rng: np.random.Generator, n: int, dtype: Any, special: bool) -> Array:
    values = rng.uniform(0.05, 2.0, n) * rng.choice([1.0, -1.0], n, p=[0.9, 0.1])
    if special:
        values = rng.choice(_SPECIAL_SCALES, n)
    with np.errstate(over="ignore", invalid="ignore"):
        out: Array = values.astype(dtype)
    return out


def make_case(ch: Chooser) -> FuzzCase:
    """A valid QuantScatter call, then up to three mutations, each operand in some layout and place.

    >>> case = make_case(RandomChooser(3))
    >>> sorted(case.values) == sorted(OPERANDS)
    True
    """
    rng = np.random.default_rng(ch.integer(0, 2**32 - 1))
    combo = ch.pick(("bf16", "fp16"))
    upd_dtype, sc_dtype, zp_dtype = (BFLOAT16, BFLOAT16, BFLOAT16) if combo == "bf16" else (FLOAT16, FLOAT32, INT32)
    rank = ch.integer(3, 6)
    a = ch.integer(1, rank - 2)
    two_d = ch.pick((False, True))
    n0 = ch.integer(1, 4)
    channels = ch.pick((32, 64, 32, 64, 48))  # 48: not 32-aligned, rejected on A2
    self_shape = [n0] + [ch.integer(1, 3) for _ in range(rank - 2)] + [channels]
    self_shape[a] = ch.integer(1, 8)
    size = self_shape[a]
    block = ch.integer(1, size)
    batch = ch.integer(1, 4) if two_d else ch.integer(1, n0)
    upd_shape = [batch, *self_shape[1:]]
    upd_shape[a] = block
    if two_d:
        slots = [(d, s) for d in range(n0) for s in range(0, size - block + 1, block)]
        chosen = rng.permutation(len(slots))[:batch] if batch <= len(slots) else rng.integers(0, len(slots), batch)
        indices = np.array([slots[i] for i in chosen], np.int64).reshape(batch, 2)
    else:
        indices = rng.integers(0, size - block + 1, batch)
    special = ch.pick((False, False, True))
    values: dict[str, Any] = {
        "self": rng.integers(-128, 128, self_shape, dtype=np.int8),
        "indices": indices.astype(ch.pick((np.int32, np.int64))),
        "updates": _updates(rng, upd_shape, upd_dtype, special),
        "quant_scales": _scales(rng, channels, sc_dtype, special).reshape(ch.pick(((channels,), (1, 1, channels)))),
        "quant_zero_points": None,
    }
    if ch.pick((False, True)):
        zp = rng.integers(-5, 6, channels) if combo == "fp16" else rng.uniform(-3, 3, channels)
        values["quant_zero_points"] = zp.astype(zp_dtype)
    case = FuzzCase(values, a if ch.pick((True, False)) else a - rank, ch.pick((-1, rank - 1)), "update")
    for _ in range(ch.pick((0, 0, 1, 1, 2, 3))):
        name = ch.pick(tuple(MUTATIONS))
        case.notes.append(name)
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                MUTATIONS[name](case, ch, rng)
        except (ValueError, TypeError, IndexError, OverflowError):  # an earlier mutation left nothing to mutate
            case.notes[-1] += " (not applicable)"
    for name in OPERANDS:
        case.layout.setdefault(name, ch.pick(("c", "c", "c", "strided", "fortran", "readonly")))
        case.placement[name] = ch.pick(("device", "device_view") if name == "self" else
                                       ("host", "device", "device", "device_view"))
        if case.layout[name] == "list" and name != "self":
            case.placement[name] = "host"  # a list is what the caller passes, to every form
    case.steady = ch.pick((False, True))
    return case


# ------------------------------------------------------------------------------------------- mutations


def _astype(value: Any, dtype: Any) -> Any:
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # complex to real, and the like: the point of the mutation
            return np.asarray(value).astype(dtype)
    except (TypeError, ValueError, OverflowError):  # a malformed operand stays as it is
        return value


def _set_dtype(name: str, dtypes: Sequence[Any]) -> Callable[[FuzzCase, Chooser, np.random.Generator], None]:
    def mutate(case: FuzzCase, ch: Chooser, rng: np.random.Generator) -> None:
        value = case.values[name]
        if value is None:
            value = np.ones(np.asarray(case.values["quant_scales"]).size)
        case.values[name] = _astype(value, ch.pick(dtypes))

    return mutate


def _start_column(case: FuzzCase) -> tuple[Array, int] | None:
    idx = case.values["indices"]
    if not isinstance(idx, np.ndarray) or idx.size == 0 or idx.ndim not in (1, 2):
        return None
    return idx, 1 if idx.ndim == 2 and idx.shape[1] >= 2 else 0


def _bad_start(values: Sequence[int]) -> Callable[[FuzzCase, Chooser, np.random.Generator], None]:
    def mutate(case: FuzzCase, ch: Chooser, rng: np.random.Generator) -> None:
        found = _start_column(case)
        if found is None:
            return
        idx, col = found
        idx = idx.astype(np.int64)
        row = ch.integer(0, idx.shape[0] - 1)
        a = _axis(case)
        self_shape, upd_shape = _shape(case.values["self"]), _shape(case.values["updates"])
        size = self_shape[a] if a is not None and len(self_shape) > a else 8
        block = upd_shape[a] if a is not None and len(upd_shape) > a else 1
        value = ch.pick(values) if values else size - block + ch.integer(1, 2)
        if idx.ndim == 2:
            idx[row, col] = value
        else:
            idx[row] = value
        case.values["indices"] = idx
        case.notes[-1] += f"={value}"

    return mutate


def _shape(value: Any) -> tuple[int, ...]:
    return value.shape if isinstance(value, np.ndarray) else ()


def _axis(case: FuzzCase) -> int | None:
    shape = getattr(case.values["self"], "shape", None)
    if not isinstance(case.axis, int) or isinstance(case.axis, bool) or not shape:
        return None
    a = case.axis + len(shape) if case.axis < 0 else case.axis
    return a if 0 <= a < len(shape) else None


def _dest_out_of_range(case: FuzzCase, ch: Chooser, rng: np.random.Generator) -> None:
    idx = case.values["indices"]
    if isinstance(idx, np.ndarray) and idx.ndim == 2 and idx.size:
        idx = idx.astype(np.int64)
        idx[ch.integer(0, idx.shape[0] - 1), 0] = ch.pick((-1, np.asarray(case.values["self"]).shape[0], 2**40))
        case.values["indices"] = idx


def _overlap(case: FuzzCase, ch: Chooser, rng: np.random.Generator) -> None:
    idx = case.values["indices"]
    upd = case.values["updates"]
    a = _axis(case)
    if isinstance(idx, np.ndarray) and idx.ndim == 2 and idx.shape[0] >= 2 and idx.shape[1] >= 2 and a is not None:
        block = _shape(upd)[a] if len(_shape(upd)) > a else 1
        idx = idx.copy()
        idx[1] = idx[0]
        idx[1, 1] = idx[0, 1] + ch.integer(0, max(block - 1, 0))
        case.values["indices"] = idx


def _reshape(name: str) -> Callable[[FuzzCase, Chooser, np.random.Generator], None]:
    """Grow or shrink one dimension of an operand by one (or make it 0: an empty input)."""

    def mutate(case: FuzzCase, ch: Chooser, rng: np.random.Generator) -> None:
        value = case.values[name]
        if not isinstance(value, np.ndarray) or value.ndim == 0:
            return
        dim = ch.integer(0, value.ndim - 1)
        shape = list(value.shape)
        shape[dim] = max(0, shape[dim] + ch.pick((-1, 1, -shape[dim])))
        fill = np.resize(value, shape) if math.prod(shape) else np.empty(shape, value.dtype)
        case.values[name] = fill.astype(value.dtype)
        case.notes[-1] += f" dim {dim} -> {shape[dim]}"

    return mutate


def _rank(name: str) -> Callable[[FuzzCase, Chooser, np.random.Generator], None]:
    def mutate(case: FuzzCase, ch: Chooser, rng: np.random.Generator) -> None:
        value = case.values[name]
        if not isinstance(value, np.ndarray):
            return
        how = ch.pick(("add", "drop", "tiny", "huge"))
        if how == "add":
            case.values[name] = value[None]
        elif how == "drop" and value.ndim:
            case.values[name] = value[0] if value.shape[0] else value.reshape(value.shape[1:])
        elif how == "tiny":
            case.values[name] = value.reshape(-1)[:64].copy()
        else:
            case.values[name] = np.zeros((1,) * 8 + (32,), value.dtype)

    return mutate


def _scalar(name: str, options: Sequence[Any]) -> Callable[[FuzzCase, Chooser, np.random.Generator], None]:
    def mutate(case: FuzzCase, ch: Chooser, rng: np.random.Generator) -> None:
        value = ch.pick(options)
        setattr(case, name, [1] if isinstance(value, str) and value == "list" else value)

    return mutate


def _malformed(case: FuzzCase, ch: Chooser, rng: np.random.Generator) -> None:
    name = ch.pick(("indices", "updates", "quant_scales", "quant_zero_points"))
    case.values[name] = ch.pick((None, "abc", b"\x00", [[0], [1, 2]], {"a": 1}, 3.5, object(),
                                 np.array([object()] * 4)))
    case.layout[name] = "c"
    case.notes[-1] += f" {name}"


def _as_list(case: FuzzCase, ch: Chooser, rng: np.random.Generator) -> None:
    name = ch.pick(("indices", "updates", "quant_scales", "quant_zero_points"))
    if isinstance(case.values[name], np.ndarray):
        case.layout[name] = "list"
        case.notes[-1] += f" {name}"


def _special_values(case: FuzzCase, ch: Chooser, rng: np.random.Generator) -> None:
    upd, sc = case.values["updates"], case.values["quant_scales"]
    if isinstance(upd, np.ndarray) and upd.dtype in (BFLOAT16, FLOAT16):
        case.values["updates"] = _updates(rng, upd.shape, upd.dtype, True)
    if isinstance(sc, np.ndarray) and sc.dtype in (BFLOAT16, FLOAT32):
        case.values["quant_scales"] = _scales(rng, sc.size, sc.dtype, True).reshape(sc.shape)


def _extra(case: FuzzCase, ch: Chooser, rng: np.random.Generator) -> None:
    key, value = ch.pick((("backend", "gpu"), ("backend", 1), ("stream", 5), ("stream", "s"), ("strict", True),
                          ("product", "Ascend910B4"), ("product", "nonsense")))
    case.extra[key] = value


MUTATIONS: dict[str, Callable[[FuzzCase, Chooser, np.random.Generator], None]] = {
    "self dtype": _set_dtype("self", (np.int16, np.uint8, np.float32, np.bool_, np.int32)),
    "indices dtype": _set_dtype("indices", (np.float32, np.float64, np.uint8, np.int16, np.uint64, np.bool_)),
    "updates dtype": _set_dtype("updates", (np.float32, np.float64, np.int32, np.complex64, np.bool_, np.int8,
                                            FLOAT16, BFLOAT16)),
    "scales dtype": _set_dtype("quant_scales", (np.float16, np.float64, np.int32, FLOAT32, BFLOAT16)),
    "zero points dtype": _set_dtype("quant_zero_points", (np.float32, np.int32, np.int64, BFLOAT16, np.float16)),
    "self rank": _rank("self"),
    "updates rank": _rank("updates"),
    "self shape": _reshape("self"),
    "updates shape": _reshape("updates"),
    "indices shape": _reshape("indices"),
    "scales count": _reshape("quant_scales"),
    "zero points count": _reshape("quant_zero_points"),
    "axis": _scalar("axis", (0, -1, 2, 5, 8, -9, 2**63, -(2**70), 1.5, "1", None, True, "list", np.int64(1))),
    "quant_axis": _scalar("quant_axis", (0, 1, 2, -2, 7, -9, 1.0, None, "list", np.int32(-1))),
    "reduce": _scalar("reduce", ("add", "", None, 1, "UPDATE", "list", b"update")),
    "index negative": _bad_start((-1, -2, -(2**31), -(2**63))),
    "index too large": _bad_start(()),
    "index huge": _bad_start((2**31 - 1, 2**40, 2**62, 2**63 - 1)),
    "destination out of range": _dest_out_of_range,
    "overlap": _overlap,
    "malformed operand": _malformed,
    "list operand": _as_list,
    "special values": _special_values,
    "bad keyword": _extra,
}


# ------------------------------------------------------------------------------------------- layouts


def host_operand(value: Any, layout: str) -> tuple[Any, Array | None, Any]:
    """``value`` in ``layout``: (what to pass, the base array of a strided view or None, the view's slices).

    >>> view, base, _ = host_operand(np.arange(3, dtype=np.int8), "strided")
    >>> view.tolist(), base.shape, view.flags.c_contiguous
    ([0, 1, 2], (7,), False)
    """
    if not isinstance(value, np.ndarray):
        return value, None, None
    if layout == "list":
        return value.tolist(), None, None
    if layout == "fortran":
        return np.array(value, order="F"), None, None  # always a copy: calls may write into it
    if layout == "readonly":
        ro = value.copy()
        ro.flags.writeable = False
        return ro, None, None
    if layout == "strided" and value.ndim:
        base = np.empty(tuple(2 * d + 1 for d in value.shape), value.dtype)
        base.view(np.uint8)[...] = SENTINEL
        slices = tuple(slice(1, 1 + 2 * d, 2) for d in value.shape)
        base[slices] = value
        return base[slices], base, slices
    return value.copy(), None, None


def _native(value: Any, name: str) -> bool:
    native = {"indices": (INT32, INT64), "updates": (BFLOAT16, FLOAT16), "quant_scales": (BFLOAT16, FLOAT32),
              "quant_zero_points": (BFLOAT16, INT32)}
    return isinstance(value, np.ndarray) and (name == "self" or value.dtype in native[name])


# ------------------------------------------------------------------------------------------- checking


@dataclass
class CaseOutcome:
    """What `check_case` saw: whether the contract accepted the call, how many calls ran, what went wrong."""

    accepted: bool
    kind: str | None  # the contract rule a rejected call breaks (None: accepted, or not a contract rule)
    calls: int = 0
    device_calls: int = 0
    problems: list[str] = field(default_factory=list)
    expected: Array | None = None  # the cpu backend's out-of-place result


@dataclass
class _Result:
    value: Any = None
    kind: str | None = None  # ContractError.kind, "QScatterError:<class>" or "unexpected:<class>"; None: success
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.kind is None


def _call(fn: Callable[[], Any], problems: list[str], where: str) -> _Result:
    try:
        return _Result(fn())
    except ContractError as exc:
        return _Result(kind=exc.kind, error=str(exc))
    except QScatterError as exc:
        return _Result(kind=f"QScatterError:{type(exc).__name__}", error=str(exc))
    except Exception as exc:  # a departure from the contract: report it and keep fuzzing
        problems.append(f"{where}: raised {type(exc).__name__}, not a QScatterError: {exc}")
        return _Result(kind=f"unexpected:{type(exc).__name__}", error=str(exc))


def _int8(value: Any) -> Array:
    return np.asarray(value).view(np.int8)


def check_case(case: FuzzCase, probe: Probe, *, device: bool = True) -> CaseOutcome:
    """Run ``case`` through every backend and form; return what went wrong (an empty ``problems`` list: all
    results agree bit for bit and every rejection is the same `ContractError` rule).

    The npu backend ignores ``product`` (it follows its device) and device calls take no ``strict`` (they never
    convert), so those forms are compared with the cpu backend called without them.

    >>> out = check_case(make_case(RandomChooser(5)), Probe(None), device=False)
    >>> out.problems
    []
    """
    problems: list[str] = []
    args = (case.axis, case.quant_axis, case.reduce)
    snapshot = {n: v.copy() for n, v in case.values.items() if isinstance(v, np.ndarray)}
    refs: dict[tuple[str, ...], _Result] = {}

    def host(name: str) -> Any:
        return host_operand(case.values[name], case.layout.get(name, "c"))[0]

    def extra(drop: tuple[str, ...]) -> dict[str, Any]:
        return {k: v for k, v in case.extra.items() if k not in drop}

    def reference(drop: tuple[str, ...]) -> _Result:
        if drop not in refs:
            kw = {"backend": "cpu", **extra(drop)}
            refs[drop] = _call(lambda: quant_scatter(host("self"), *[host(n) for n in OPERANDS[1:]], *list(args), **kw),
                               problems, "cpu out of place")
        return refs[drop]

    cpu_out = reference(())
    outcome = CaseOutcome(accepted=cpu_out.ok, kind=cpu_out.kind, calls=1,
                          expected=cpu_out.value if cpu_out.ok else None)
    _in_place_host(case, host, args, {"backend": "cpu", **case.extra}, cpu_out, problems, "cpu in place")
    outcome.calls += 1
    if device:
        npu_ref = reference(("product",))
        kw = {"backend": "npu", **extra(("product",))}
        got = _call(lambda: quant_scatter(host("self"), *[host(n) for n in OPERANDS[1:]], *list(args), **kw), problems,
                    "npu out of place")
        _same_outcome(got, npu_ref, problems, "npu out of place")
        _in_place_host(case, host, args, kw, npu_ref, problems, "npu in place")
        outcome.calls += 2
        outcome.device_calls = _device_forms(case, host, args, extra(("product", "strict")),
                                             reference(("product", "strict")), probe, problems)
    for name, before in snapshot.items():
        value = case.values[name]
        if value.shape != before.shape or value.tobytes() != before.tobytes():
            problems.append(f"the call modified its input {name}")
    outcome.problems = problems
    return outcome


def _same_outcome(got: _Result, want: _Result, problems: list[str], where: str) -> None:
    if want.ok and got.ok:
        if not np.array_equal(_int8(got.value), _int8(want.value)):
            problems.append(f"{where}: result differs from the cpu backend's")
    elif want.kind != got.kind:
        problems.append(f"{where}: {got.kind or 'accepted'} where the cpu backend says {want.kind or 'accepted'}"
                        f" ({got.error or want.error})")


def _in_place_host(case: FuzzCase, host: Callable[[str], Any], args: tuple[Any, ...], kw: dict[str, Any],
                   want: _Result, problems: list[str], where: str) -> None:
    """In place into a host ``self`` in the case's layout: the out-of-place result, or nothing written at all.
    A read-only ``self`` is the one rejection the out-of-place call cannot make."""
    target, base, slices = host_operand(case.values["self"], case.layout.get("self", "c"))
    storage = base if base is not None else target
    before = storage.copy() if isinstance(storage, np.ndarray) else None
    inputs = [host(n) for n in OPERANDS[1:]]
    got = _call(lambda: quant_scatter_(target, *inputs, *args, **kw), problems, where)
    if got.ok:
        if got.value is not target:
            problems.append(f"{where}: did not return self")
        if not want.ok:
            problems.append(f"{where}: accepted what the cpu backend rejects out of place ({want.kind})")
        elif not np.array_equal(_int8(target), _int8(want.value)):
            problems.append(f"{where}: result differs from the cpu backend's out-of-place result")
    else:
        if before is not None and storage.tobytes() != before.tobytes():
            problems.append(f"{where}: a rejected call ({got.kind}) changed self")
        if got.kind != "readonly" and got.kind != want.kind:
            problems.append(f"{where}: {got.kind} ({got.error}) where the cpu backend says {want.kind or 'accepted'}")
    if base is not None and slices is not None:
        outside = np.ones(base.shape, bool)
        outside[slices] = False
        raw = np.ascontiguousarray(base).view(np.uint8).reshape(*base.shape, base.itemsize)
        if np.any(raw[outside] != SENTINEL):
            problems.append(f"{where}: wrote outside the view")


# Rejections a device call makes before (or instead of) the contract's own checks.
_DEVICE_ONLY_KINDS = ("axis", "quant_axis", "reduce", "stream", "self_type", "dtype", "self")


def _device_forms(case: FuzzCase, host: Callable[[str], Any], args: tuple[Any, ...], kw: dict[str, Any],
                  want: _Result, probe: Probe, problems: list[str]) -> int:
    """The device forms: in place (and, with valid indices, the steady-state path), out of place. A result must
    equal the cpu backend's; with every operand in CANN's own dtypes, the same calls must be accepted."""
    detected = probe.detected()
    try:
        calls = _device_calls(case, host, args, kw, want, problems)
    except QScatterError as exc:  # a copy, a synchronisation or a release failed around the calls
        problems.append(f"device forms: {type(exc).__name__}: {exc}")
        calls = 0
        with contextlib.suppress(QScatterError):
            from ..runtime import Device

            Device(0).synchronize()
    after = probe.detected()
    if detected is not None and after is not None and after != detected:
        problems.append(f"the runtime detected {after - detected} bad write(s) or use(s) after free")
    return calls


def _device_calls(case: FuzzCase, host: Callable[[str], Any], args: tuple[Any, ...], kw: dict[str, Any],
                  want: _Result, problems: list[str]) -> int:
    from ..memory import DeviceArray
    from ..runtime import Device

    calls = 0
    with contextlib.ExitStack() as stack:

        def place(name: str) -> Any:
            value, where = case.values[name], case.placement.get(name, "host")
            if where == "host" or not (isinstance(value, np.ndarray) and value.dtype in ACL_DTYPE):
                return host(name)
            if where == "device_view" and value.ndim:
                _, base, slices = host_operand(value, "strided")
                return stack.enter_context(DeviceArray.from_numpy(base))[slices]
            return stack.enter_context(DeviceArray.from_numpy(value))

        d_self = place("self")
        if not isinstance(d_self, DeviceArray):
            return 0
        d_inputs = [place(n) for n in OPERANDS[1:]]
        strict = not kw and all((case.values[n] is None and n == "quant_zero_points")
                                or (_native(case.values[n], n) and case.layout.get(n, "c") != "list")
                                for n in OPERANDS)
        original = _storage(d_self)
        got = _call(lambda: quant_scatter_(d_self, *d_inputs, *args, **kw), problems, "device in place")
        calls += 1
        _check_device(d_self, original, got, want, strict, problems, "device in place")
        if want.ok and case.steady and not kw and all(isinstance(v, DeviceArray) or v is None for v in d_inputs):
            steady = place("self")
            before = _storage(steady)
            for _ in range(2):  # the first call prepares, the second takes the steady-state entry
                got = _call(lambda: quant_scatter_(steady, *d_inputs, *args, check_indices=False), problems,
                            "device steady state")
                calls += 1
            _check_device(steady, before, got, want, strict, problems, "device steady state")
        out_self = place("self")
        before = _storage(out_self)
        got = _call(lambda: quant_scatter(out_self, *d_inputs, *args, **kw), problems, "device out of place")
        calls += 1
        if got.ok:
            stack.callback(got.value.close)
            if not want.ok:
                problems.append(f"device out of place: accepted what the cpu backend rejects ({want.kind})")
            elif not np.array_equal(got.value.to_numpy(), want.value):
                problems.append("device out of place: result differs from the cpu backend's")
        if _storage(out_self).tobytes() != before.tobytes():
            problems.append("device out of place: changed self")
        Device(0).synchronize()
    return calls


def _storage(arr: Any) -> Array:
    """The whole device array behind ``arr`` (a view's surroundings included), copied to the host."""
    owner = arr._owner if type(arr._owner).__name__ == "DeviceArray" else arr
    host: Array = owner.to_numpy()
    return host


def _check_device(d_self: Any, original: Array, got: _Result, want: _Result, strict: bool, problems: list[str],
                  where: str) -> None:
    now = _storage(d_self)
    if got.ok:
        if not want.ok:
            problems.append(f"{where}: accepted what the cpu backend rejects ({want.kind})")
        elif not np.array_equal(d_self.to_numpy(), want.value):
            problems.append(f"{where}: result differs from the cpu backend's")
        mask = _view_mask(d_self, now.shape)
        if mask is not None and np.any(now[~mask] != original[~mask]):
            problems.append(f"{where}: wrote outside the view")
        return
    if now.tobytes() != original.tobytes():
        problems.append(f"{where}: a rejected call ({got.kind}) changed self")
    if strict and (want.ok or (got.kind != want.kind and got.kind not in _DEVICE_ONLY_KINDS)):
        problems.append(f"{where}: {got.kind} ({got.error}) where the cpu backend says {want.kind or 'accepted'}")


def _view_mask(view: Any, shape: tuple[int, ...]) -> Array | None:
    """Which elements of its base a device view covers (None when ``view`` is not a view)."""
    if type(view._owner).__name__ != "DeviceArray":
        return None
    idx = np.full((), view.offset, np.int64)
    for d, s in zip(view.shape, view.element_strides, strict=True):
        idx = idx[..., None] + np.arange(d, dtype=np.int64) * s
    mask = np.zeros(math.prod(shape), bool)
    mask[idx.reshape(-1)] = True
    return mask.reshape(shape)
