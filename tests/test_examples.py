"""Every example in examples/ runs as written against the emulator, exits 0 and says what it checked (each
compares its result with the cpu reference itself and exits 1 when they differ)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SAYS = {  # what each example prints when its checks pass
    "decode_loop.py": ["caches equal the cpu reference"],
    "paged_cache.py": ["padding rows skipped; equal to the same writes made by hand"],
    "foreign_runtime.py": ["reads back the cpu reference result", "same address after the round trip: True",
                           "lands in the foreign memory: True"],
    "numpy_twin.py": ["device and cpu reference agree bit for bit", "strided view: agree bit for bit"],
}


def run(example: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / example)], capture_output=True, text=True, env=env,
                          timeout=600)


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SAYS)


@pytest.mark.emulator
@pytest.mark.parametrize("example", sorted(SAYS))
def test_example_runs_against_the_emulator(example: str, emulator_root: Path) -> None:
    env = dict(os.environ, ASCEND_HOME_PATH=str(emulator_root), ASCEND_OPP_PATH=str(emulator_root / "opp"))
    out = run(example, env)
    assert out.returncode == 0, out.stdout + out.stderr
    for text in SAYS[example]:
        assert text in out.stdout, out.stdout
    assert "DIFFER" not in out.stdout


def test_paged_cache_runs_without_a_device() -> None:
    env = dict(os.environ, PYACL_QSCATTER_CANN_HOME="/nonexistent", ASCEND_HOME_PATH="/nonexistent")
    out = run("paged_cache.py", env)
    assert out.returncode == 0, out.stderr
    assert "backend: cpu" in out.stdout and out.stdout.count("equal to the same writes made by hand") == 3


def test_device_examples_say_what_they_need_without_a_device() -> None:
    env = dict(os.environ, PYACL_QSCATTER_CANN_HOME="/nonexistent", ASCEND_HOME_PATH="/nonexistent")
    out = run("numpy_twin.py", env)
    assert out.returncode == 2 and "needs CANN and a device" in out.stderr
