"""Tests on a real Ascend device (marker ``npu``): skipped, with the reason, where no CANN and device answer.

They run in subprocesses with the caller's environment as it was when the tests were collected, so that
a real toolkit never meets the emulator the other tests load into this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache

import pytest

pytestmark = pytest.mark.npu
ENV = dict(os.environ)  # captured at collection, before any fixture points ASCEND_HOME_PATH at the emulator

PROBE = """
import ctypes, json
from pyacl_qscatter import _loader
from pyacl_qscatter.backends import backend_status
ok, why = backend_status("npu")
if ok and hasattr(ctypes.CDLL(_loader.load().paths["rt"]), "emuGetStat"):
    ok, why = False, "the toolkit found is the test emulator, not a real CANN"
print(json.dumps([ok, why]))
"""


@cache
def device_answers() -> tuple[bool, str]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=ENV, timeout=300)
    if out.returncode:
        return False, f"probe failed: {out.stderr.strip().splitlines()[-1:]}"
    ok, why = json.loads(out.stdout.strip().splitlines()[-1])
    return bool(ok), str(why)


def require_device() -> None:
    ok, why = device_answers()
    if not ok:
        pytest.skip(f"no real CANN with an Ascend device answered: {why}")


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=600)


def test_ops_nn_smoke_vector() -> None:
    require_device()
    out = run("""
import numpy as np, pyacl_qscatter as qs
r = qs.quant_scatter(np.zeros((1, 1, 32), np.int8), np.array([0], np.int32), np.ones((1, 1, 32), np.float16),
                     np.full(32, 0.5, np.float32), np.zeros(32, np.int32), backend="npu")
print(r.ravel().tolist())
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([2] * 32)


def test_conformance_on_device() -> None:
    require_device()
    out = subprocess.run([sys.executable, "-m", "pyacl_qscatter", "selftest"], capture_output=True, text=True,
                         env=ENV, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0 mismatches" in out.stdout and "82 cases under the " in out.stdout


def test_device_arrays_on_device() -> None:
    require_device()
    out = run("""
import numpy as np, ml_dtypes, pyacl_qscatter as qs
from pyacl_qscatter.memory import DeviceArray
rng = np.random.default_rng(0)
cache = rng.integers(-128, 128, (4, 64, 128), dtype=np.int8)
idx = np.array([3, 0, 63, 17], np.int32)
upd = rng.uniform(-8, 8, (4, 1, 128)).astype(ml_dtypes.bfloat16)
sc = rng.uniform(0.05, 1, 128).astype(ml_dtypes.bfloat16)
with DeviceArray.from_numpy(cache) as d:
    qs.quant_scatter_(d, DeviceArray.from_numpy(idx), DeviceArray.from_numpy(upd), DeviceArray.from_numpy(sc))
    print(np.array_equal(d.to_numpy(), qs.quant_scatter(cache, idx, upd, sc, backend="cpu")))
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
