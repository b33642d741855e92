"""The command line as a newcomer meets it: a closed pipe ends a command quietly, an unknown command lists
the commands."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pyacl_qscatter.__main__ import COMMANDS


@pytest.mark.parametrize("argv", [["demo"], ["info"], ["selftest", "--backend", "cpu"]], ids=lambda a: a[0])
def test_closed_pipe_ends_quietly(argv: list[str]) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written: every write is a broken pipe
    env = dict(os.environ, PYACL_QSCATTER_BACKEND="cpu")
    proc = subprocess.run([sys.executable, "-m", "pyacl_qscatter", *argv], stdout=write, stderr=subprocess.PIPE,
                          text=True, env=env, timeout=300)
    os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 1


def test_unknown_command_lists_every_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "pyacl_qscatter", "benchmark"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown command 'benchmark'" in proc.stderr
    for name, text in COMMANDS.items():
        assert f"  {name:10} {text}" in proc.stderr
