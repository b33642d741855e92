"""``python -m pyacl_qscatter stress``: its figures against the emulator, and what it says without CANN."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from emulator.emu import Emu
from reliability import LIVE, ROOT, subprocess_env

from pyacl_qscatter import npu
from pyacl_qscatter.__main__ import main as cli
from pyacl_qscatter._cli.probe import Probe
from pyacl_qscatter._cli.stress import summary
from pyacl_qscatter.errors import CannInternalError
from pyacl_qscatter.memory import DeviceArray, allocator_for


def _run(root: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(root) if root is not None else subprocess_env(Path("/nonexistent"))
    if root is None:
        for key in ("ASCEND_HOME_PATH", "ASCEND_OPP_PATH", "ASCEND_TOOLKIT_HOME"):
            env.pop(key, None)
        env["PYACL_QSCATTER_CANN_HOME"] = "/nonexistent/cann"
    return subprocess.run([sys.executable, "-m", "pyacl_qscatter", "stress", *args], capture_output=True, text=True,
                          env=env, cwd=str(ROOT), timeout=600)


@pytest.mark.emulator
def test_stress_reports_every_figure(emulator_root: Path) -> None:
    out = _run(emulator_root, "--quick", "--seconds", "2", "--thread-calls", "25", "--calls", "1000", "--json")
    figures = json.loads(out.stdout)
    assert figures["counters"] == "available" and figures["npu"].startswith("CANN at ")
    fuzz = figures["fuzz"]
    assert fuzz["cases"] >= 50 and fuzz["accepted"] > 0 and fuzz["rejected"] > 0 and fuzz["device_calls"] > 0
    assert fuzz["problems"] == [] and fuzz["detected"] == 0 and fuzz["leaks"] == {}
    for key, at_least in (("faults", 40), ("process_faults", 28), ("kernel_faults", 3), ("sticky_fault", 1)):
        faults = figures[key]
        assert faults["available"] and faults["injected"] >= at_least
        assert faults["failures"] == [] and faults["survived"] == faults["injected"]
    threads = figures["threads"]
    for mode in ("own streams", "shared stream"):
        m = threads["modes"][mode]
        assert (m["threads"], m["calls_per_thread"], m["mismatches"], m["hung"], m["errors"]) == (8, 25, 0, 0, [])
    assert threads["leaks"] == {} and threads["detected"] == 0
    run = figures["longrun"]
    assert run["calls"] == 1000 and run["correct"] and run["live_growth"] == {}
    assert figures["problems"] == [] and figures["leaks_found"] == 0
    assert out.returncode == 0, out.stderr
    text = "\n".join(summary(figures))
    for phrase in ("fuzz: ", "faults in process: ", "faults at start and teardown: ", "kernel faults reported once: ",
                   "sticky device fault, then reset: 1 injected, 1 survived", "threads (own streams): 8 x 25",
                   "threads (shared stream): 8 x 25", "long run: 1000 decode-size calls", "RSS ", "leaks found: "):
        assert phrase in text, phrase


def test_stress_without_cann_says_so() -> None:
    out = _run(None, "--quick", "--seconds", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("npu backend: unavailable: ")
    assert lines[1].startswith("counters: unavailable: ")
    assert any(line.startswith("fuzz: ") and "problems 0" in line for line in lines)
    assert "skipped (the npu backend is unavailable): faults, threads, longrun" in out.stdout
    assert "leaks found: n/a (no counters)" in out.stdout


def test_stress_is_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--help"]) == 0
    assert "stress" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli(["stress", "--sections", "nonsense"])


def test_a_toolkit_without_introspection() -> None:
    libc = ctypes.util.find_library("c")
    assert libc is not None
    probe = Probe(libc)
    assert not probe.counters and not probe.faults and "real CANN" in probe.why
    assert probe.live() is None and probe.detected() is None and not probe.inject("aclrtMalloc", 1, 207001)


@pytest.mark.emulator
def test_the_probe_sees_the_emulator_the_package_loaded(emu: Emu) -> None:
    ok, why = npu.npu_status()
    assert ok, why
    probe = Probe.for_loaded_cann()
    assert probe.counters and probe.faults
    live = probe.live()
    assert live is not None and live == {k: emu.stat(k) for k in LIVE}
    allocator_for(0).empty_cache()  # nothing cached: the next array reaches aclrtMalloc
    assert probe.inject("aclrtMalloc", 1, 507000)
    with pytest.raises(CannInternalError):
        DeviceArray.empty((1 << 20,), np.int8)
    detected = probe.detected()
    probe.clear_faults()
    assert probe.detected() == detected  # clearing faults keeps the running total of detected errors
    with DeviceArray.empty((1 << 20,), np.int8) as arr:
        assert arr.size == 1 << 20
