"""The "fresh venv" claim: the package builds into a pure-Python wheel that needs no compiler to install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_is_pure_python(tmp_path: Path) -> None:
    src = tmp_path / "src"  # build from a copy: never leave build/ or *.egg-info in the work tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "pyacl_qscatter", src / "pyacl_qscatter",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "dist"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "CC": "/nonexistent-cc", "CXX": "/nonexistent-cxx"}
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "pyacl_qscatter/_ffi/_cann.py" in names and "pyacl_qscatter/py.typed" in names
    assert "pyacl_qscatter/_cli/info.py" in names and "pyacl_qscatter/_loader.py" in names
    assert not [n for n in names if n.endswith((".so", ".c", ".h", ".pyd"))]

    # install it without a compiler and without the source tree, and use the generated ffi module
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q",
                           "--target", str(site), str(wheel)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code = ("import pyacl_qscatter, pyacl_qscatter._ffi._cann as c; "
            f"assert pyacl_qscatter.__file__.startswith({str(site)!r}); print(c.ffi.sizeof('aclError'))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**env, "PYTHONPATH": str(site)}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "4"
