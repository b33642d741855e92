"""The public conformance set through the reference backend: valid cases bit for bit (contiguous and as
non-contiguous views), invalid cases rejected with the right class and kind, self untouched."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
from cases import DATA, TYPE_KINDS, case_paths, load_case, strided_view

import pyacl_qscatter as qs
from pyacl_qscatter.errors import InvalidDtypeError, InvalidValueError

VALID = case_paths("valid")
INVALID = case_paths("invalid")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "conformance"


def test_cases_present() -> None:
    assert len(VALID) == 64 and len(INVALID) == 18


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/conformance beside this checkout")
def test_copy_matches_shared() -> None:
    for kind in ("valid", "invalid"):
        names = sorted(p.name for p in (SHARED / kind).glob("*.npz"))
        assert names == sorted(p.name for p in (DATA / kind).glob("*.npz"))
        _, mismatch, errors = filecmp.cmpfiles(SHARED / kind, DATA / kind, names, shallow=False)
        assert not mismatch and not errors
    assert (SHARED / "README.md").read_bytes() == (DATA / "README.md").read_bytes()


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_contiguous(path: Path) -> None:
    case = load_case(path)
    args = case.args()
    original = case.arrays["self"].copy()
    out = qs.quant_scatter(*args, backend="cpu", strict=True)
    np.testing.assert_array_equal(out, case.expected)
    np.testing.assert_array_equal(case.arrays["self"], original)
    target = original.copy()
    assert qs.quant_scatter_(target, *args[1:], backend="cpu", strict=True) is target
    np.testing.assert_array_equal(target, case.expected)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_strided_views(path: Path) -> None:
    case = load_case(path)
    views = {k: strided_view(v) for k, v in case.arrays.items()}
    self_view, self_base = views["self"]
    base_before = self_base.copy()
    assert not self_view.flags.c_contiguous
    qs.quant_scatter_(self_view, views["indices"][0], views["updates"][0], views["quant_scales"][0],
                      views["quant_zero_points"][0] if "quant_zero_points" in views else None,
                      case.axis, case.quant_axis, case.reduce, backend="cpu", strict=True)
    np.testing.assert_array_equal(self_view, case.expected)
    outside = np.ones(self_base.shape, bool)
    outside[tuple(slice(1, 1 + 2 * d, 2) for d in self_view.shape)] = False
    np.testing.assert_array_equal(self_base[outside], base_before[outside])


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_rejected(path: Path) -> None:
    case = load_case(path)
    original = case.arrays["self"].copy()
    cls = InvalidDtypeError if case.error in TYPE_KINDS else InvalidValueError
    for fn in (qs.quant_scatter_, qs.quant_scatter):
        with pytest.raises(cls) as info:
            fn(*case.args(), backend="cpu")
        assert info.value.kind == case.error
        assert isinstance(info.value, qs.QScatterError)
        assert isinstance(info.value, TypeError if cls is InvalidDtypeError else ValueError)
        assert info.value.param in str(info.value)
        np.testing.assert_array_equal(case.arrays["self"], original)
        assert case.arrays["self"].tobytes() == original.tobytes()
