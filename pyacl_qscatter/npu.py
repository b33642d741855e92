"""The NPU backend: QuantScatter through CANN's aclnn two-phase API."""

from __future__ import annotations

__all__ = ["npu_status"]


def npu_status() -> tuple[bool, str]:
    """Whether the NPU backend can run here, and why. Never raises.

    >>> isinstance(npu_status()[0], bool)
    True
    """
    return False, "the NPU backend is not built yet"
