"""The NumPy-facing functions: quant_scatter_ (in place) and quant_scatter (a new array)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import numpy as np

from . import reference
from ._convert import host_inputs
from .backends import select_backend
from .contract import Product, check_arguments, check_indices, drop_padding
from .errors import InvalidDtypeError, InvalidValueError

if TYPE_CHECKING:
    from .memory import DeviceArray
    from .runtime import Stream

__all__ = ["npu_quant_scatter", "npu_quant_scatter_", "quant_scatter", "quant_scatter_"]

Array = np.ndarray[Any, Any]
SelfArray = Union[Array, "DeviceArray"]
_npu: Any = None  # the npu module once a device call loaded it (the NumPy path never imports it)


def _host_self(self: object, inplace: bool) -> Array:
    if not isinstance(self, np.ndarray):
        if _is_device(self):
            raise InvalidDtypeError("self_type", "self", "is a DeviceArray: device calls need backend='npu' or None")
        raise InvalidDtypeError("self_type", "self", f"must be a NumPy int8 array, got {type(self).__name__}")
    if inplace and not self.flags.writeable:
        raise InvalidValueError("readonly", "self", "is read-only; the in-place call must write into it "
                                "(use quant_scatter for a new array)")
    return self


def _is_device(value: object) -> bool:
    # Checked by class name so that the NumPy path never imports the device modules.
    return type(value).__name__ == "DeviceArray" and type(value).__module__ == "pyacl_qscatter.memory"


def _device_call(self: Any, indices: Any, updates: Any, quant_scales: Any, quant_zero_points: Any, axis: int,
                 quant_axis: int, reduce: str, backend: str | None, inplace: bool, stream: Any,
                 check_indices: bool, skip_negative: bool) -> DeviceArray:
    """Device-resident call: no dtype conversion (inputs must already have CANN's dtypes)."""
    global _npu
    from . import npu
    from .runtime import Stream

    _npu = npu  # device modules are loaded now: quant_scatter_ may take the steady state's short way
    if backend not in (None, "npu"):
        raise InvalidValueError("backend", "backend", f"device arrays run on backend 'npu', got {backend!r}")
    if not _is_device(self):
        raise InvalidDtypeError("self_type", "self", "must be a DeviceArray when other inputs are device arrays")
    if stream is not None and not isinstance(stream, Stream):
        raise InvalidDtypeError("stream", "stream", f"must be a pyacl_qscatter.Stream or None, got "
                                f"{type(stream).__name__}")
    for name, value in (("axis", axis), ("quant_axis", quant_axis), ("reduce", reduce)):
        try:
            hash(value)  # prepared calls are looked up by these
        except TypeError:
            want = "the str 'update'" if name == "reduce" else "an int"
            raise InvalidDtypeError(name, name, f"must be {want}, got {type(value).__name__}") from None
    # Host operands become arrays here, so a bad one is a contract error; the device path stages their bytes
    # in pinned memory, so they may be reused as soon as the call returns (_prepared, _transfer).
    indices, updates, quant_scales = (_device_operand(v, n) for v, n in (
        (indices, "indices"), (updates, "updates"), (quant_scales, "quant_scales")))
    if quant_zero_points is not None:
        quant_zero_points = _device_operand(quant_zero_points, "quant_zero_points")
    if skip_negative and _is_device(indices) and not check_indices:
        raise InvalidValueError("skip_negative", "check_indices", "must be True with skip_negative=True and device "
                                "indices: padding rows are found by reading the index values")
    target = self if inplace else npu.copy_device(self, stream)
    try:
        if skip_negative:
            from .padding import run_padded

            run_padded(target, indices, updates, quant_scales, quant_zero_points, axis, quant_axis, reduce, stream,
                       prepare=inplace)
        else:
            npu.run_device(target, indices, updates, quant_scales, quant_zero_points, axis, quant_axis, reduce,
                           stream, check_indices, prepare=inplace)
    except BaseException:
        if not inplace:
            target.close()
        raise
    return target


def _device_operand(value: object, param: str) -> Any:
    """A device array as it is; anything else as a C-contiguous NumPy array (no dtype conversion)."""
    if _is_device(value):
        return value
    if value is None:
        raise InvalidDtypeError(param, param, "is required, got None")
    try:
        return np.ascontiguousarray(value)
    except (TypeError, ValueError) as exc:  # ragged nested lists and the like (kinds as in _convert)
        kind = "indices_2d_shape" if param == "indices" else param
        raise InvalidValueError(kind, param, f"is not a rectangular array of numbers ({exc})") from None


def _flag(skip_negative: object) -> bool:
    if not isinstance(skip_negative, (bool, np.bool_)):
        raise InvalidDtypeError("skip_negative", "skip_negative", f"must be True or False, got {skip_negative!r}")
    return bool(skip_negative)


def _no_stream(stream: object) -> None:
    if stream is not None:
        raise InvalidValueError("stream", "stream", "applies to device arrays only; NumPy calls are synchronous")


def _run(self: Array, indices: object, updates: object, quant_scales: object, quant_zero_points: object,
         axis: int, quant_axis: int, reduce: str, backend: str | None, strict: bool,
         product: str | Product | None, skip_negative: bool) -> None:
    name = select_backend(backend)
    idx, upd, sc, zp = host_inputs(indices, updates, quant_scales, quant_zero_points, strict)
    if name == "npu":
        from . import npu

        if skip_negative:
            _run_host_padded(self, idx, upd, sc, zp, axis, quant_axis, reduce)
        else:
            npu.run_host(self, idx, upd, sc, zp, axis, quant_axis, reduce)
        return
    plan = check_arguments(self, idx, upd, sc, zp, axis, quant_axis, reduce, product, skip_negative=skip_negative)
    check_indices(plan, idx, skip_negative=skip_negative)
    reference.run(plan, self, idx, upd, sc, zp, skip_negative=skip_negative)


def _run_host_padded(self: Array, idx: Array, upd: Array, sc: Array, zp: Array | None, axis: int, quant_axis: int,
                     reduce: str) -> None:
    """NumPy arrays on the npu backend with padding: the whole call is checked, then the device runs only the
    valid rows (in the 2-D index form, so that 1-D rows keep their destination batch)."""
    from . import npu
    from .runtime import Device

    plan = check_arguments(self, idx, upd, sc, zp, axis, quant_axis, reduce, Device.current().product,
                           skip_negative=True)
    check_indices(plan, idx, skip_negative=True)
    if plan.empty:
        return
    kept, pairs, rows = drop_padding(plan, idx, upd)
    if kept.batch:
        npu.run_host(self, pairs, rows, sc, zp, plan.axis, quant_axis, reduce)


def quant_scatter_(
    self: SelfArray,
    indices: Any,
    updates: Any,
    quant_scales: Any,
    quant_zero_points: Any = None,
    axis: int = -2,
    quant_axis: int = -1,
    reduce: str = "update",
    *,
    backend: str | None = None,
    strict: bool = False,
    product: str | Product | None = None,
    stream: Stream | None = None,
    check_indices: bool = True,
    skip_negative: bool = False,
) -> SelfArray:
    """Quantize ``updates`` to int8 and write them into ``self`` in place at ``indices`` along ``axis``.

    Returns ``self``. Every contract check runs first; on any error ``self`` is left unchanged.
    ``backend``: "cpu", "npu" or None (``$PYACL_QSCATTER_BACKEND``, else npu when available, else cpu).
    ``strict``: refuse implicit dtype conversions. ``product``: the rules of the cpu backend ("A2" by
    default; "A3", "310P", "950" or a SoC name); the npu backend follows its device.

    With `DeviceArray` inputs the call is queued on ``stream`` (default: the device's package stream) and
    returns without waiting; results stay on the device; no dtype conversion happens. Index values on
    the device are checked through a small copy to the host, which waits for the stream;
    ``check_indices=False`` skips that check (CANN does not check: a bad index is then an out-of-bounds
    write on the device).

    ``skip_negative=True`` makes a batch row with a negative index (either column for 2-D indices) padding:
    nothing is written for it (vLLM's ``PAD_SLOT_ID``); every check applies to the other rows. On the
    device the valid rows run on views, with no new allocation; device indices then need
    ``check_indices=True`` (the values are read to find the padding). See `paged_indices`.

    >>> import numpy as np, ml_dtypes
    >>> bf = ml_dtypes.bfloat16
    >>> cache = np.zeros((2, 4, 32), np.int8)
    >>> out = quant_scatter_(cache, np.array([3, 0], np.int32), np.full((2, 1, 32), 1.5, bf),
    ...                      np.full(32, 0.5, bf), backend="cpu")
    >>> out is cache, int(cache[0, 3, 0]), int(cache[1, 0, 0])
    (True, 3, 3)
    >>> _ = quant_scatter_(cache, np.array([-1, 1], np.int32), np.full((2, 1, 32), 2.5, bf), np.full(32, 0.5, bf),
    ...                    backend="cpu", skip_negative=True)
    >>> int(cache[0, 3, 0]), int(cache[1, 1, 0])
    (3, 5)
    """
    npu = _npu
    if (not skip_negative and npu is not None and backend in (None, "npu") and type(self) is npu.DeviceArray
            and npu.run_prepared(self, indices, updates, quant_scales, quant_zero_points, axis, quant_axis, reduce,
                                 stream, check_indices)):
        return self  # the steady state of a device call: a prepared call for these layouts ran
    if any(_is_device(v) for v in (self, indices, updates, quant_scales, quant_zero_points)):
        return _device_call(self, indices, updates, quant_scales, quant_zero_points, axis, quant_axis, reduce,
                            backend, True, stream, check_indices, _flag(skip_negative))
    _no_stream(stream)
    target = _host_self(self, inplace=True)
    _run(target, indices, updates, quant_scales, quant_zero_points, axis, quant_axis, reduce, backend,
         strict, product, _flag(skip_negative))
    return target


def quant_scatter(
    self: SelfArray,
    indices: Any,
    updates: Any,
    quant_scales: Any,
    quant_zero_points: Any = None,
    axis: int = -2,
    quant_axis: int = -1,
    reduce: str = "update",
    *,
    backend: str | None = None,
    strict: bool = False,
    product: str | Product | None = None,
    stream: Stream | None = None,
    check_indices: bool = True,
    skip_negative: bool = False,
) -> SelfArray:
    """Like `quant_scatter_`, but return a new array (a new DeviceArray for device inputs) and leave
    ``self`` untouched.

    >>> import numpy as np
    >>> cache = np.zeros((1, 2, 32), np.int8)
    >>> new = quant_scatter(cache, [1], np.ones((1, 1, 32)), np.ones(32), backend="cpu")
    >>> int(cache.sum()), int(new[0, 1].sum())
    (0, 32)
    """
    if any(_is_device(v) for v in (self, indices, updates, quant_scales, quant_zero_points)):
        return _device_call(self, indices, updates, quant_scales, quant_zero_points, axis, quant_axis, reduce,
                            backend, False, stream, check_indices, _flag(skip_negative))
    _no_stream(stream)
    result = _host_self(self, inplace=False).copy()
    _run(result, indices, updates, quant_scales, quant_zero_points, axis, quant_axis, reduce, backend,
         strict, product, _flag(skip_negative))
    return result


# torch_npu's names, for code written against torch_npu.npu_quant_scatter_ / npu_quant_scatter.
npu_quant_scatter_ = quant_scatter_
npu_quant_scatter = quant_scatter
