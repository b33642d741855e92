"""Long run, verified against the emulator: decode-size device calls (self [24, 4096, 1024] int8 on the device,
updates [24, 1, 1024] bf16, 1-D indices, new rows every 1,000 calls) in a fresh process, through
``python -m pyacl_qscatter stress --sections longrun``. After the warm-up, resident memory, Python objects and
live device objects stay flat and the final cache equals the cpu backend's. CI runs 2,000 calls; the full
100,000 run on demand (PYACL_QSCATTER_FUZZ=long here, or the stress command itself)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from reliability import LONG, ROOT, subprocess_env

pytestmark = pytest.mark.emulator
CALLS = 100_000 if LONG else 2_000


def test_long_run_is_flat(emulator_root: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pyacl_qscatter", "stress", "--sections", "longrun", "--calls",
                          str(CALLS), "--json"], capture_output=True, text=True, env=subprocess_env(emulator_root),
                         cwd=str(ROOT), timeout=1800)
    assert out.returncode == 0, out.stdout + out.stderr
    figures = json.loads(out.stdout)
    assert figures["counters"] == "available"
    run = figures["longrun"]
    assert run["calls"] == CALLS and run["correct"] is True
    assert run["live_growth"] == {}  # no device block, descriptor, executor, stream or event more at the end
    assert run["python_objects_growth"] <= 10  # a Python object kept per call would add thousands
    assert run["rss_growth_bytes"] is not None and run["rss_growth_bytes"] < 1 << 20  # 1 KiB kept per call: 1.8 MiB
    assert run["rss_max_growth_bytes"] < 1 << 20
    assert len(run["samples"]) >= 10
    assert figures["problems"] == [] and figures["leaks_found"] == 0
