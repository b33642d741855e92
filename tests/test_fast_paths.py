"""The fast paths of the device backend, against the emulator's counters: prepared calls reuse their
descriptors, workspace and executor, stay bit-exact, fall back cleanly, and release everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from emulator.emu import Emu
from reliability import settle

import pyacl_qscatter as qs
from pyacl_qscatter import _prepared, npu
from pyacl_qscatter.errors import InvalidValueError
from pyacl_qscatter.memory import DeviceArray
from pyacl_qscatter.runtime import Device, Stream

pytestmark = pytest.mark.emulator
BF16 = ml_dtypes.bfloat16



def step_inputs(step: int) -> tuple[np.ndarray[Any, Any], ...]:
    rng = np.random.default_rng(step)
    idx = rng.permutation(32)[:4].astype(np.int32)
    upd = rng.uniform(-6, 6, (4, 1, 64)).astype(BF16)
    sc = rng.uniform(0.05, 1, 64).astype(BF16)
    zp = rng.uniform(-3, 3, 64).astype(BF16)
    return idx, upd, sc, zp


def test_steady_state_is_one_launch_and_stays_exact(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    host = np.zeros((4, 32, 64), np.int8)
    idx, upd, sc, zp = step_inputs(0)
    with Stream() as stream:
        d = [DeviceArray.from_numpy(a, stream=stream) for a in (host, idx, upd, sc, zp)]
        qs.quant_scatter_(*d, stream=stream, check_indices=False)  # prepares
        qs.quant_scatter_(host, idx, upd, sc, zp, backend="cpu")
        emu.reset()
        for step in range(1, 51):  # a decode loop: new rows written into the same device buffers
            idx, upd, sc, zp = step_inputs(step)
            for buf, value in zip(d[1:], (idx, upd, sc, zp), strict=True):
                buf.copy_from(value, stream=stream)
            qs.quant_scatter_(*d, stream=stream, check_indices=False)
            qs.quant_scatter_(host, idx, upd, sc, zp, backend="cpu")
        stream.synchronize()
        assert emu.calls("aclnnInplaceQuantScatter") == 50
        assert emu.calls("aclnnInplaceQuantScatterGetWorkspaceSize") == 0  # the executor is reused
        assert emu.calls("aclCreateTensor") == 0 and emu.calls("aclrtMalloc") == 0
        np.testing.assert_array_equal(d[0].to_numpy(), host)
        for arr in d:
            arr.close()
    assert settle(emu) == start


def test_refused_repeatable_executor_falls_back_to_two_phases(dev: Device, emu: Emu,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_prepared._reuse, "allowed", True)
    start = settle(emu)
    host = np.zeros((4, 32, 64), np.int8)
    idx, upd, sc, zp = step_inputs(1)
    d = [DeviceArray.from_numpy(a) for a in (host, idx, upd, sc, zp)]
    emu.reset()
    emu.inject("aclSetAclOpExecutorRepeatable", 1, 0)
    for _ in range(5):
        qs.quant_scatter_(*d)
    assert not _prepared._reuse["allowed"]
    assert emu.calls("aclnnInplaceQuantScatterGetWorkspaceSize") == 5
    assert emu.calls("aclnnInplaceQuantScatter") == 5
    np.testing.assert_array_equal(d[0].to_numpy(), qs.quant_scatter(host, idx, upd, sc, zp, backend="cpu"))
    for arr in d:
        arr.close()
    assert settle(emu) == start


def test_closing_an_input_invalidates_the_prepared_call(dev: Device, emu: Emu) -> None:
    host = np.zeros((4, 32, 64), np.int8)
    idx, upd, sc, zp = step_inputs(2)
    d = [DeviceArray.from_numpy(a) for a in (host, idx, upd, sc, zp)]
    qs.quant_scatter_(*d, check_indices=False)
    d[2].close()
    with pytest.raises(InvalidValueError, match="closed"):
        qs.quant_scatter_(*d, check_indices=False)
    for arr in d:
        arr.close()


def test_prepared_calls_per_self_are_bounded_and_released(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    host = np.zeros((4, 32, 64), np.int8)
    d_self = DeviceArray.from_numpy(host)
    idx, upd, sc, zp = step_inputs(3)
    inputs = []
    for _ in range(npu.MAX_PREPARED + 5):  # new input arrays every call: each is a new prepared call
        arrays = [DeviceArray.from_numpy(a) for a in (idx, upd, sc, zp)]
        qs.quant_scatter_(d_self, *arrays)
        inputs.append(arrays)
        assert emu.stat("live_executors") - start["live_executors"] <= npu.MAX_PREPARED
    assert len(d_self._prepared) == npu.MAX_PREPARED
    d_self.close()
    for arrays in inputs:
        for arr in arrays:
            arr.close()
    del inputs
    assert settle(emu) == start


def test_dropping_a_prepared_self_without_close_releases_it(dev: Device, emu: Emu) -> None:
    start = settle(emu)
    idx, upd, sc, zp = step_inputs(4)
    d = [DeviceArray.from_numpy(a) for a in (np.zeros((4, 32, 64), np.int8), idx, upd, sc, zp)]
    qs.quant_scatter_(*d)
    Device(0).stream.synchronize()
    del d
    assert settle(emu) == start


def test_bench_figures_meet_the_goals_by_count(dev: Device, emulator_root: Path) -> None:
    env = dict(os.environ, ASCEND_HOME_PATH=str(emulator_root), ASCEND_OPP_PATH=str(emulator_root / "opp"))
    out = subprocess.run([sys.executable, "-m", "pyacl_qscatter", "bench", "--backend", "npu", "--calls", "200",
                          "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["mallocs_per_call"] == 0
    assert figures["descriptors_per_call"] == 0
    # One launch and one aclrtGetCurrentContext per call (the caller's context is never assumed: runtime._switch),
    # plus the two timing events over 200.
    assert figures["c_calls_per_call"] < 2.1
    assert figures["transfer_ratio"] == pytest.approx(1.0)
    assert figures["floor_calls"] == "aclnnInplaceQuantScatter (repeatable executor)"
    assert figures["overhead_us"] > 0 and figures["floor_us"] > 0  # printed, not judged: timings flake
