"""Helpers shared by the tests/test_reliability_*.py files: live counters, settling, subprocess scripts."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from emulator.emu import Emu

from pyacl_qscatter.memory import allocator_for
from pyacl_qscatter.runtime import Device

ROOT = Path(__file__).resolve().parent.parent
# Live objects the package could leak (live_device_bytes follows live_device_blocks).
LIVE = ("live_device_blocks", "live_device_bytes", "live_tensors", "live_executors", "live_streams",
        "live_events", "live_host_blocks")


def settle(emu: Emu) -> dict[str, int]:
    """Collect garbage, give every cached device block back, then read the live counters."""
    gc.collect()
    visible = Device.count()  # another test may have shown a second device for a while
    for device_id in list(Device._instances):
        if device_id < visible:
            allocator_for(device_id).empty_cache()
    return {k: emu.stat(k) for k in LIVE}


def subprocess_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process that loads the emulator at ``root`` like a toolkit."""
    env = dict(os.environ, ASCEND_HOME_PATH=str(root), ASCEND_OPP_PATH=str(root / "opp"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    for key in ("CANN_EMU_FAIL", "CANN_EMU_DEVICE_MEMORY", "CANN_EMU_SOC", "PYACL_QSCATTER_BACKEND"):
        env.pop(key, None)
    env.update(extra)
    return env


def run_script(script: str, root: Path, *args: str, timeout: float = 120,
               **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -c script args...`` against the emulator at ``root``."""
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env=subprocess_env(root, **env), timeout=timeout, cwd=str(ROOT))


def report(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object a child printed on its ``REPORT `` line (the last one wins)."""
    lines = [line for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, f"no REPORT line; exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    result: dict[str, Any] = json.loads(lines[-1][len("REPORT "):])
    return result


# Prologue of child scripts: the emulator's introspection symbols through ctypes (the same library instance
# the package loads, found by the same absolute path), before anything imports the package.
CHILD_PROLOGUE = r"""
import atexit, ctypes, json, os, sys
_emu = ctypes.CDLL(os.path.join(os.environ["ASCEND_HOME_PATH"], "lib64", "libascendcl.so"))
_emu.emuGetStat.restype = ctypes.c_int64
_emu.emuGetStat.argtypes = [ctypes.c_char_p]
_emu.emuInjectFault.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
LIVE = ["live_device_blocks", "live_device_bytes", "live_tensors", "live_executors", "live_streams",
        "live_events", "live_host_blocks"]
def stat(name):
    return int(_emu.emuGetStat(name.encode()))
def live():
    return {n: stat(n) for n in LIVE}
def inject(symbol, nth, code):
    assert _emu.emuInjectFault(symbol.encode(), nth, code) == 0, symbol
REPORT = {}
def _print_report():
    sys.stdout.write("REPORT " + json.dumps(REPORT) + "\n")
    sys.stdout.flush()
"""

# PYACL_QSCATTER_FUZZ=long selects the long profiles (more fuzz examples, every fault class at every
# teardown call, the full thread and long-run sizes); CI runs the short ones.
LONG = os.environ.get("PYACL_QSCATTER_FUZZ", "").strip().lower() == "long"
# One code of each failure class: usage, resource, allocation, internal, aclnn argument, aclnn internal.
FAULT_CODES = (107000, 207004, 207001, 507000, 161002, 561002)
