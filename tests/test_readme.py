"""The README's Python examples run as written: the NumPy one anywhere, the device one on the emulator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_readme_has_the_two_commands_first() -> None:
    bash = re.search(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert bash is not None
    commands = [line for line in bash.group(1).splitlines() if line and not line.startswith("#")]
    assert commands[0].endswith("python -m pyacl_qscatter demo")
    assert commands[1].endswith('pip install -e ".[test]" && python -m pytest')
    assert commands[1] in (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()


def test_numpy_example_runs() -> None:
    env = dict(os.environ, PYACL_QSCATTER_BACKEND="cpu")
    out = run(BLOCKS[0] + "\nassert (fresh == cache).all() and cache.any()\n", env)
    assert out.returncode == 0, out.stderr


@pytest.mark.emulator
def test_device_example_runs(emulator_root: Path) -> None:
    env = dict(os.environ, ASCEND_HOME_PATH=str(emulator_root), ASCEND_OPP_PATH=str(emulator_root / "opp"))
    check = "\nimport numpy as np\nassert np.array_equal(host_copy, qs.quant_scatter(np.zeros((24, 4096, 128), " \
            "np.int8), positions, new_rows, scales, zero_points, backend='cpu'))\n"
    out = run(BLOCKS[0] + "\n" + BLOCKS[1] + check, env)
    assert out.returncode == 0, out.stderr
