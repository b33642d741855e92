"""Choosing a backend: "cpu" (the NumPy reference) or "npu" (CANN on an Ascend device)."""

from __future__ import annotations

import os
from typing import NamedTuple

from .errors import BackendUnavailableError, InvalidValueError

__all__ = ["BACKENDS", "ENV_VAR", "BackendChoice", "active_backend", "backend_status", "select_backend"]

BACKENDS = ("cpu", "npu")
ENV_VAR = "PYACL_QSCATTER_BACKEND"


class BackendChoice(NamedTuple):
    """Which backend runs, and why."""

    name: str
    reason: str


def backend_status(name: str) -> tuple[bool, str]:
    """Say whether a backend can run here and why. Never raises; loads CANN on the first "npu" question.

    >>> backend_status("cpu")
    (True, 'the NumPy reference backend is always available')
    """
    if name == "cpu":
        return True, "the NumPy reference backend is always available"
    if name == "npu":
        from .npu import npu_status  # deferred: importing the package must not load CANN

        return npu_status()
    return False, f"unknown backend {name!r}; expected one of {BACKENDS}"


def _validate(name: object, source: str) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise InvalidValueError("backend", source, f"must be one of {BACKENDS} or None (automatic), got "
                                f"{name!r}")
    return name


def active_backend() -> BackendChoice:
    """The backend an automatic call uses: ``$PYACL_QSCATTER_BACKEND`` if set, else npu when CANN and a
    device answer, else cpu, with the reason.

    >>> active_backend().name in ("cpu", "npu")
    True
    """
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced and forced != "auto":
        return BackendChoice(_validate(forced, ENV_VAR), f"chosen by {ENV_VAR}={forced}")
    ok, why = backend_status("npu")
    if ok:
        return BackendChoice("npu", why)
    return BackendChoice("cpu", f"npu unavailable: {why}")


def select_backend(backend: str | None) -> str:
    """Resolve the ``backend=`` argument of a call to "cpu" or "npu"; raise if "npu" cannot run.

    >>> select_backend("cpu")
    'cpu'
    """
    name = active_backend().name if backend is None else _validate(backend, "backend")
    if name == "npu":
        ok, why = backend_status("npu")
        if not ok:
            from .npu import last_status_failure

            # The CANN error (its class, code and message) stays reachable as __cause__.
            raise BackendUnavailableError(f"backend 'npu' is not available: {why}") from last_status_failure()
    return name
