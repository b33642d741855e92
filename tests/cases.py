"""Loading the conformance cases (tests/data/conformance, a copy of shared/conformance) and making
non-contiguous views of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

DATA = Path(__file__).parent / "data" / "conformance"
ARRAYS = ("self", "indices", "updates", "quant_scales", "quant_zero_points")
TYPE_KINDS = {"self_dtype", "indices_dtype", "dtype_combo"}  # rejected with TypeError, the rest ValueError


@dataclass
class Case:
    name: str
    arrays: dict[str, np.ndarray[Any, Any]]
    axis: int
    quant_axis: int
    reduce: str
    expected: np.ndarray[Any, Any] | None
    error: str | None

    def args(self) -> tuple[Any, ...]:
        a = self.arrays
        return (a["self"], a["indices"], a["updates"], a["quant_scales"], a.get("quant_zero_points"),
                self.axis, self.quant_axis, self.reduce)


def load_case(path: Path) -> Case:
    with np.load(path) as z:
        arrays = {}
        for key in ARRAYS:
            if key in z.files:
                arr = z[key]
                arrays[key] = arr.view(ml_dtypes.bfloat16) if str(z[f"{key}__dtype"]) == "bfloat16" else arr
        return Case(path.stem, arrays, int(z["axis"]), int(z["quant_axis"]), str(z["reduce"]),
                    z["expected"] if "expected" in z.files else None,
                    str(z["error"]) if "error" in z.files else None)


def case_paths(kind: str) -> list[Path]:
    return sorted((DATA / kind).glob("*.npz"))


def strided_view(a: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Return (view, base): a non-contiguous view equal to ``a`` (offset 1, stride 2 in every dimension)
    inside a larger base array filled with a sentinel."""
    base = np.empty(tuple(2 * d + 1 for d in a.shape), a.dtype)
    base.view(np.uint8)[...] = 0x5A
    view = base[tuple(slice(1, 1 + 2 * d, 2) for d in a.shape)]
    view[...] = a
    return view, base
