"""pyacl_qscatter: Huawei CANN's QuantScatter on Ascend NPUs from NumPy, with a bit-exact NumPy reference.

>>> import numpy as np, ml_dtypes, pyacl_qscatter as qs
>>> cache = np.zeros((1, 4, 32), np.int8)
>>> qs.quant_scatter_(cache, [2], np.ones((1, 1, 32), ml_dtypes.bfloat16),
...                   np.full(32, 0.25, ml_dtypes.bfloat16), backend="cpu")[0, 2, :3].tolist()
[4, 4, 4]

Importing the package loads no CANN library: the first device use does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .api import npu_quant_scatter, npu_quant_scatter_, quant_scatter, quant_scatter_
from .backends import active_backend, backend_status
from .contract import PRODUCTS, Product
from .errors import (
    BackendUnavailableError,
    CannError,
    CannNotFoundError,
    ContractError,
    DeviceFaultError,
    ForkedProcessError,
    InvalidDtypeError,
    InvalidValueError,
    QScatterError,
)
from .padding import paged_indices

if TYPE_CHECKING:
    from .dlpack import from_dlpack
    from .graph import Graph, GraphCaptureError
    from .memory import DeviceArray, allocator_for
    from .pinned import pinned_empty
    from .runtime import Device, Event, Stream

__version__ = "0.1.0"

# The device layer is imported on first access, so that ``import pyacl_qscatter`` stays light.
_LAZY = {"DeviceArray": "memory", "allocator_for": "memory", "Device": "runtime", "Event": "runtime",
         "Stream": "runtime", "Graph": "graph", "GraphCaptureError": "graph", "pinned_empty": "pinned",
         "from_dlpack": "dlpack"}


def __getattr__(name: str) -> Any:
    """Resolve the device classes lazily (PEP 562).

    >>> import pyacl_qscatter
    >>> pyacl_qscatter.DeviceArray.__name__
    'DeviceArray'
    """
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pyacl_qscatter' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "PRODUCTS",
    "BackendUnavailableError",
    "CannError",
    "CannNotFoundError",
    "ContractError",
    "Device",
    "DeviceArray",
    "DeviceFaultError",
    "Event",
    "ForkedProcessError",
    "Graph",
    "GraphCaptureError",
    "InvalidDtypeError",
    "InvalidValueError",
    "Product",
    "QScatterError",
    "Stream",
    "__version__",
    "active_backend",
    "allocator_for",
    "backend_status",
    "from_dlpack",
    "npu_quant_scatter",
    "npu_quant_scatter_",
    "paged_indices",
    "pinned_empty",
    "quant_scatter",
    "quant_scatter_",
]
