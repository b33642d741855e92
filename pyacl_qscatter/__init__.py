"""pyacl_qscatter: Huawei CANN's QuantScatter on Ascend NPUs from NumPy, with a bit-exact NumPy reference.

>>> import numpy as np, ml_dtypes, pyacl_qscatter as qs
>>> cache = np.zeros((1, 4, 32), np.int8)
>>> qs.quant_scatter_(cache, [2], np.ones((1, 1, 32), ml_dtypes.bfloat16),
...                   np.full(32, 0.25, ml_dtypes.bfloat16), backend="cpu")[0, 2, :3].tolist()
[4, 4, 4]

Importing the package loads no CANN library: the first device use does.
"""

from __future__ import annotations

from .api import npu_quant_scatter, npu_quant_scatter_, quant_scatter, quant_scatter_
from .backends import active_backend, backend_status
from .contract import PRODUCTS, Product
from .errors import (
    BackendUnavailableError,
    CannError,
    CannNotFoundError,
    ContractError,
    InvalidDtypeError,
    InvalidValueError,
    QScatterError,
)

__version__ = "0.1.0"

__all__ = [
    "PRODUCTS",
    "BackendUnavailableError",
    "CannError",
    "CannNotFoundError",
    "ContractError",
    "InvalidDtypeError",
    "InvalidValueError",
    "Product",
    "QScatterError",
    "__version__",
    "active_backend",
    "backend_status",
    "npu_quant_scatter",
    "npu_quant_scatter_",
    "quant_scatter",
    "quant_scatter_",
]
