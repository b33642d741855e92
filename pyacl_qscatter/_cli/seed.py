"""The seed's example inputs (torch_npu's npu_quant_scatter_ documentation example, in NumPy)."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

Array = np.ndarray[Any, Any]


def seed_inputs(seed: int = 0, rows: int = 1, head_dim: int = 128) -> dict[str, Array]:
    """self [24, 4096, head_dim] int8 random, indices [24] int32, updates [24, rows, head_dim] bf16 from
    uniform(1, 2), scales and zero points [1, 1, head_dim] bf16 from uniform(0, 1).

    >>> sorted(seed_inputs().keys())
    ['indices', 'quant_scales', 'quant_zero_points', 'self', 'updates']
    """
    rng = np.random.default_rng(seed)
    bf16 = ml_dtypes.bfloat16
    batch, seq = 24, 4096
    return {
        "self": rng.integers(-128, 128, (batch, seq, head_dim), dtype=np.int8),
        "indices": rng.integers(0, seq - rows + 1, batch).astype(np.int32),
        "updates": rng.uniform(1, 2, (batch, rows, head_dim)).astype(bf16),
        "quant_scales": rng.uniform(0, 1, (1, 1, head_dim)).astype(bf16),
        "quant_zero_points": rng.uniform(0, 1, (1, 1, head_dim)).astype(bf16),
    }
