"""Fuzzing, verified against the emulator: arbitrary shapes, dtypes, axes, indices (negative, out of range,
overlapping, huge), non-contiguous, Fortran-ordered, read-only, list, ragged and None operands, NaN, inf and
zero scales, through the cpu backend, the npu backend with NumPy arrays and with device arrays (plain and
strided views; in place, out of place and the steady-state path).

Every call returns the cpu backend's result bit for bit or raises a ``QScatterError`` (the same contract
rule on every backend where they see the same dtypes); a rejected call changes nothing; nothing outside a
view is written; inputs are never modified; the emulator never detects an out-of-range or overlapping write
or a use after free; no device object is left behind. Accepted small cases are also checked against the
loop oracle in tests/slow_reference.py.

Hypothesis drives the same case builder as ``python -m pyacl_qscatter stress`` (pyacl_qscatter/_cli/fuzz.py).
Profiles: ``reliability-ci`` (default, a few seconds) and ``reliability-long`` (PYACL_QSCATTER_FUZZ=long).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import pytest
from emulator.emu import Emu
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from reliability import LIVE, LONG, settle
from slow_reference import slow_quant_scatter

from pyacl_qscatter import npu
from pyacl_qscatter._cli.fuzz import FuzzCase, RandomChooser, check_case, make_case
from pyacl_qscatter._cli.probe import Probe
from pyacl_qscatter._convert import host_inputs
from pyacl_qscatter.memory import allocator_for
from pyacl_qscatter.runtime import Device

T = TypeVar("T")
_HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("reliability-ci", max_examples=250, deadline=None, suppress_health_check=_HEALTH)
settings.register_profile("reliability-long", max_examples=int(os.environ.get("PYACL_QSCATTER_FUZZ_EXAMPLES", 20000)),
                          deadline=None, suppress_health_check=_HEALTH)
PROFILE = settings.get_profile("reliability-long" if LONG else "reliability-ci")
_COLLECTED: list[bool] = []  # garbage is collected once, before the first example
SLOW_REFERENCE_LIMIT = 4096  # elements of updates up to which the loop oracle is cheap enough


class HypothesisChooser:
    """The fuzz builder's choices drawn by hypothesis (so failures shrink)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def pick(self, options: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(options))


@pytest.fixture
def probe(emu: Emu) -> Probe:
    ok, why = npu.npu_status()
    assert ok, why
    Device(0).stream  # noqa: B018  (the package's stream exists before counters are read)
    return Probe.for_loaded_cann()


def _live(emu: Emu, collect: bool = False) -> dict[str, int]:
    if collect:  # what earlier tests left for the collector must not be freed in the middle of an example
        gc.collect()
    allocator_for(0).empty_cache()
    return {k: emu.stat(k) for k in LIVE}


def _slow_check(case: FuzzCase, expected: np.ndarray[Any, Any]) -> None:
    v = case.values
    idx, upd, sc, zp = host_inputs(v["indices"], v["updates"], v["quant_scales"], v["quant_zero_points"], False)
    if upd.size > SLOW_REFERENCE_LIMIT or case.extra or 0 in (np.size(v["self"]), idx.size, upd.size, sc.size):
        return  # too big for the loop oracle, or empty (a no-op, which the oracle does not model)
    oracle = slow_quant_scatter(np.asarray(v["self"]), idx, upd, sc, zp, axis=int(case.axis))
    np.testing.assert_array_equal(expected, oracle)


@pytest.mark.emulator
@PROFILE
@given(st.data())
def test_fuzz_every_backend_and_form(probe: Probe, emu: Emu, data: st.DataObject) -> None:
    case = make_case(HypothesisChooser(data))
    note(case.describe())
    start = _live(emu, collect=not _COLLECTED)
    _COLLECTED.append(True)
    detected = emu.stat("errors_detected")
    outcome = check_case(case, probe)
    assert not outcome.problems, "\n".join(outcome.problems)
    assert outcome.device_calls >= 1 or case.values["self"] is None or not isinstance(case.values["self"], np.ndarray) \
        or case.values["self"].dtype.name not in ("int8", "int32", "int64", "float16", "float32", "bfloat16")
    if outcome.accepted:
        assert outcome.expected is not None
        _slow_check(case, outcome.expected)
    assert emu.stat("errors_detected") == detected
    assert _live(emu) == start


@pytest.mark.emulator
def test_fuzz_reaches_every_rule_and_leaves_nothing_behind(probe: Probe, emu: Emu) -> None:
    """A fixed sample: the builder reaches acceptance and every contract rule, and the whole sample leaves
    no device object behind once garbage is collected."""
    start = settle(emu)
    kinds: set[str | None] = set()
    forms = 0
    for seed in range(400 if not LONG else 5000):
        outcome = check_case(make_case(RandomChooser(seed)), probe)
        assert not outcome.problems, (seed, outcome.problems)
        kinds.add(outcome.kind)
        forms += outcome.device_calls
    assert settle(emu) == start
    assert forms > 400
    for rule in (None, "self_dtype", "indices_dtype", "dtype_combo", "rank", "rank_mismatch", "axis_first",
                 "axis_last", "quant_axis", "reduce", "alignment", "scales_count", "zp_count", "batch_mismatch",
                 "indices_2d_shape", "update_dim_mismatch", "index_negative", "index_too_large", "overlap"):
        assert rule in kinds, rule


@settings(max_examples=150 if not LONG else 5000, deadline=None)
@given(st.data())
def test_fuzz_cpu_backend_alone(data: st.DataObject) -> None:
    """The cpu backend on its own (no emulator needed): results equal the loop oracle, rejections are
    QScatterErrors, rejected in-place calls change nothing."""
    case = make_case(HypothesisChooser(data))
    note(case.describe())
    outcome = check_case(case, Probe(None), device=False)
    assert not outcome.problems, "\n".join(outcome.problems)
    if outcome.accepted:
        assert outcome.expected is not None
        _slow_check(case, outcome.expected)
