"""The public API surface: names, defaults, aliases, backend selection, conversions, a light import."""

from __future__ import annotations

import inspect
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import pyacl_qscatter as qs
from pyacl_qscatter.backends import ENV_VAR


def test_signatures_match_and_defaults() -> None:
    a, b = inspect.signature(qs.quant_scatter_), inspect.signature(qs.quant_scatter)
    assert a.parameters == b.parameters
    p = a.parameters
    assert list(p)[:8] == ["self", "indices", "updates", "quant_scales", "quant_zero_points", "axis",
                           "quant_axis", "reduce"]
    assert (p["quant_zero_points"].default, p["axis"].default, p["quant_axis"].default, p["reduce"].default) \
        == (None, -2, -1, "update")
    assert p["backend"].kind is inspect.Parameter.KEYWORD_ONLY and p["backend"].default is None
    assert qs.npu_quant_scatter_ is qs.quant_scatter_ and qs.npu_quant_scatter is qs.quant_scatter


def test_env_forces_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "cpu")
    choice = qs.active_backend()
    assert choice.name == "cpu" and ENV_VAR in choice.reason


def test_env_rejects_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "gpu")
    with pytest.raises(qs.InvalidValueError, match=ENV_VAR):
        qs.active_backend()


def test_unknown_backend_argument() -> None:
    with pytest.raises(qs.InvalidValueError, match="backend"):
        qs.quant_scatter(np.zeros((1, 2, 32), np.int8), [0], np.ones((1, 1, 32)), np.ones(32), backend="tpu")


def test_float_inputs_follow_conversion_rule() -> None:
    cache = np.zeros((1, 2, 32), np.int8)
    upd = np.linspace(-3, 3, 32).reshape(1, 1, 32)  # float64 -> bfloat16 (round to nearest even)
    got = qs.quant_scatter(cache, [1], upd, np.full(32, 0.1), backend="cpu")
    bf = ml_dtypes.bfloat16
    want = qs.quant_scatter(cache, np.array([1], np.int32), upd.astype(bf), np.full(32, 0.1).astype(bf),
                            backend="cpu", strict=True)
    np.testing.assert_array_equal(got, want)


def test_fp16_updates_convert_scales_to_float32_and_zero_points_to_int32() -> None:
    cache = np.zeros((1, 2, 32), np.int8)
    upd = np.full((1, 1, 32), 3.0, np.float16)
    got = qs.quant_scatter(cache, [0], upd, [0.5] * 32, [1.0] * 32, backend="cpu")
    assert got[0, 0].tolist() == [7] * 32  # 3 / 0.5 + 1


def test_import_loads_no_cann() -> None:
    """Importing the package loads no CANN library (its cost is a ``bench`` figure, ``import_ratio``)."""
    code = "import sys, pyacl_qscatter; print(any('_cann' in m or m.endswith('._loader') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
    maps = subprocess.run([sys.executable, "-c", "import pyacl_qscatter; print(open('/proc/self/maps').read())"],
                          capture_output=True, text=True, check=True).stdout
    assert "libascendcl" not in maps and "libopapi" not in maps
    assert "libc" in maps  # the maps were really read
