"""``import pyacl_qscatter`` loads no CANN library, even when a loadable toolkit is configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_binding_support import Stubs, get_stubs

ROOT = Path(__file__).resolve().parents[1]

_PROBE = r"""
import json, sys
import ml_dtypes
import numpy as np
import pyacl_qscatter
if sys.argv[1] == "cpu":
    cache = np.zeros((1, 4, 32), np.int8)
    bf16 = ml_dtypes.bfloat16
    pyacl_qscatter.quant_scatter_(cache, [1], np.ones((1, 1, 32), bf16), np.ones(32, bf16), backend="cpu")
maps = open("/proc/self/maps").read()
loader = sys.modules.get("pyacl_qscatter._loader")
calls = sys.modules.get("pyacl_qscatter._calls")
print(json.dumps({
    "mapped": sorted({line.split()[-1] for line in maps.splitlines()
                      if any(n in line for n in ("libascendcl", "libnnopbase", "libopapi", "libacl_rt"))}),
    "loaded": loader is not None and loader.loaded() is not None,
    "bound": calls is not None and calls.bound() is not None,
}))
"""


def _probe(env_extra: dict[str, str], mode: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASCEND_", "PYACL_QSCATTER_"))}
    env.update(env_extra)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("mode", ["import", "cpu"])
def test_import_loads_nothing_without_cann(mode: str) -> None:
    assert _probe({}, mode) == {"mapped": [], "loaded": False, "bound": False}


@pytest.mark.parametrize("mode", ["import", "cpu"])
def test_import_loads_nothing_with_a_loadable_toolkit(
    mode: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    stubs: Stubs = get_stubs(tmp_path_factory)
    home = stubs.standard(tmp_path / "cann")
    env = {"ASCEND_HOME_PATH": str(home), "PYACL_QSCATTER_CANN_HOME": str(home)}
    assert _probe(env, mode) == {"mapped": [], "loaded": False, "bound": False}
    # control: the same environment does load the toolkit once asked to
    check = subprocess.run(
        [sys.executable, "-c", "from pyacl_qscatter import _loader; print(_loader.load().paths['rt'])"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT), "ASCEND_OPP_PATH": str(home / "opp")},
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == str(home / "lib64" / "libascendcl.so")
