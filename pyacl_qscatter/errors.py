"""The package's exceptions: one base, and subclasses that also derive from the matching built-in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._status import ACLNN_CODES, ALLOCATION_CODES, DEVICE_FAULT_CODES, FAULT_CODES, STATUS, status_name

__all__ = [
    "AclnnArgumentError",
    "AclnnError",
    "BackendUnavailableError",
    "CannError",
    "CannInternalError",
    "CannNotFoundError",
    "CannOutOfMemoryError",
    "CannResourceError",
    "CannStateError",
    "CannUsageError",
    "ContractError",
    "DeviceFaultError",
    "ForkedProcessError",
    "InvalidDtypeError",
    "InvalidValueError",
    "QScatterError",
    "cann_error",
]


class QScatterError(Exception):
    """Base class of every exception pyacl_qscatter raises on purpose.

    >>> import numpy as np, pyacl_qscatter as qs
    >>> try:
    ...     qs.quant_scatter(np.zeros((1, 2, 32), np.int8), [5], np.ones((1, 1, 32)), np.ones(32), backend="cpu")
    ... except QScatterError as exc:
    ...     print(type(exc).__name__, exc.kind)
    InvalidValueError index_too_large
    """


class ContractError(QScatterError):
    """An input breaks the operator contract; raised before anything is modified.

    ``kind`` is the rule's name (the conformance set's ``error`` key), ``param`` the offending parameter.

    >>> err = ContractError("reduce", "reduce", "must be 'update', got 'add'")
    >>> err.kind, err.param, str(err)
    ('reduce', 'reduce', "reduce: must be 'update', got 'add'")
    """

    def __init__(self, kind: str, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.kind = kind
        self.param = param


class InvalidValueError(ContractError, ValueError):
    """A bad value or shape (a ``ValueError``).

    >>> isinstance(InvalidValueError("rank", "self", "must have 3 to 8 dimensions, got 2"), ValueError)
    True
    """


class InvalidDtypeError(ContractError, TypeError):
    """A bad type or dtype (a ``TypeError``).

    >>> isinstance(InvalidDtypeError("self_dtype", "self", "must be int8, got int16"), TypeError)
    True
    """


class BackendUnavailableError(QScatterError, RuntimeError):
    """The requested backend cannot run here; the message says why.

    >>> isinstance(BackendUnavailableError("npu: CANN could not be loaded"), RuntimeError)
    True
    """


class CannNotFoundError(QScatterError, OSError):
    """No usable CANN toolkit was found; ``attempts`` lists every place tried and why it failed.

    >>> err = CannNotFoundError([("ASCEND_HOME_PATH", "not set")], "source set_env.sh")
    >>> isinstance(err, OSError), err.attempts
    (True, [('ASCEND_HOME_PATH', 'not set')])
    """

    def __init__(self, attempts: Sequence[tuple[str, str]], fix: str) -> None:
        lines = [f"  - {where}: {why}" for where, why in attempts] or ["  (no place to look)"]
        super().__init__("CANN could not be loaded. Tried, in order:\n" + "\n".join(lines) + f"\nFix: {fix}")
        self.attempts = list(attempts)
        self.fix = fix

    def __reduce__(self) -> tuple[type[CannNotFoundError], tuple[list[tuple[str, str]], str]]:
        return type(self), (self.attempts, self.fix)


class CannError(QScatterError, RuntimeError):
    """A CANN call failed: carries the function, the status code, its name and CANN's own message.

    >>> err = CannError("aclrtSetDevice", 107001, "invalid device id")
    >>> err.function, err.code, err.name, err.cann_message
    ('aclrtSetDevice', 107001, 'ACL_ERROR_RT_INVALID_DEVICEID', 'invalid device id')
    """

    def __init__(self, function: str, code: int, cann_message: str | None = None) -> None:
        self.function = function
        self.code = int(code)
        self.name = status_name(self.code)
        self.cann_message = (cann_message or "").strip()
        super().__init__(self._format())

    def __reduce__(self) -> tuple[type[CannError], tuple[str, int, str | None]]:
        return type(self), (self.function, self.code, self.cann_message or None)

    def _format(self) -> str:
        entry = STATUS.get(self.code)
        hint = entry.hint if entry is not None else "unknown status code (not in pyacl_qscatter's table)"
        text = f"{self.function} failed with {self.name} ({self.code}): {hint}"
        if self.cann_message:
            text += f"\nCANN says: {self.cann_message}"
        return text


class CannUsageError(CannError, ValueError):
    """Status class 1: a usage error the caller can fix."""


class CannResourceError(CannError):
    """Status class 2: a resource is missing or exhausted."""


class CannOutOfMemoryError(CannResourceError, MemoryError):
    """Host or device memory could not be allocated (a ``MemoryError``)."""


class CannStateError(CannError):
    """Status class 3: the service is in a state that does not allow the call."""


class CannInternalError(CannError):
    """Status class 5 (or unknown): an internal failure in CANN or on the device."""


class DeviceFaultError(CannInternalError):
    """The device reported a fault (a kernel's AI Core / vector core fault, 5070xx, or a device-level memory
    fault, 507053-507055): what the failed work wrote is undefined. ``sticky`` is True when the device
    refuses all work until `Device.reset()` (a device-level fault, or CANN's stop-on-failure mode).

    >>> err = DeviceFaultError("aclrtSynchronizeStream", 507053, "HBM ECC error")
    >>> isinstance(err, RuntimeError), err.sticky
    (True, True)
    """

    def __init__(self, function: str, code: int, cann_message: str | None = None, *, sticky: bool = False) -> None:
        self.sticky = bool(sticky or code in DEVICE_FAULT_CODES)
        super().__init__(function, code, cann_message)

    def __reduce__(self) -> tuple[Any, tuple[str, int, str | None, bool]]:  # type: ignore[override]
        return _device_fault, (self.function, self.code, self.cann_message or None, self.sticky)

    def _format(self) -> str:
        text = super()._format()
        head, _, rest = text.partition("\n")
        head += ". What the failed work wrote is undefined"
        if self.sticky:
            head += "; the device refuses all work until it is reset (Device.reset())"
        return head + ("\n" + rest if rest else "")


def _device_fault(function: str, code: int, cann_message: str | None, sticky: bool) -> DeviceFaultError:
    return DeviceFaultError(function, code, cann_message, sticky=sticky)


class ForkedProcessError(QScatterError, RuntimeError):
    """Device use in a child made by ``fork`` after the parent used the device: ACL does not support it.

    >>> isinstance(ForkedProcessError("device 0: use it in the parent only"), RuntimeError)
    True
    """


class AclnnError(CannError):
    """An aclnn operator status (161xxx, 361xxx, 561xxx), apart from the runtime's codes."""


class AclnnArgumentError(AclnnError, ValueError):
    """aclnn 161xxx: the operator rejected its arguments."""


fault_hook: Callable[[DeviceFaultError], None] | None = None
"""Called by ``_calls`` with every `DeviceFaultError` a CANN call returned (the device layer notes which
device stopped); `cann_error` itself stays a pure function."""


def cann_error(function: str, code: int, cann_message: str | None = None) -> CannError:
    """Build the exception that matches a CANN status code. Never raises.

    >>> err = cann_error("aclrtMalloc", 207001, "out of memory")
    >>> isinstance(err, MemoryError), err.name
    (True, 'ACL_ERROR_RT_MEMORY_ALLOCATION')
    """
    try:
        code = int(code)
    except (TypeError, ValueError, OverflowError):
        code = -1
    cls: type[CannError]
    if code in FAULT_CODES:
        cls = DeviceFaultError
    elif code in ACLNN_CODES or 161000 <= code < 162000 or 361000 <= code < 362000 or 561000 <= code < 562000:
        cls = AclnnArgumentError if 161000 <= code < 162000 else AclnnError
    elif code in ALLOCATION_CODES:
        cls = CannOutOfMemoryError
    else:
        cls = {1: CannUsageError, 2: CannResourceError, 3: CannStateError}.get(
            code // 100000 if code >= 100000 else 0, CannInternalError
        )
    if not isinstance(cann_message, str):
        cann_message = None
    return cls(function, code, cann_message)
