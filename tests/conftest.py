"""Shared test fixtures: conformance data and the CANN emulator (see tests/emulator/fixtures.py)."""

from __future__ import annotations

import pytest
from emulator.emu import Emu
from emulator.fixtures import *  # noqa: F403  (emulator_root, emu: build and drive the C emulator)

from pyacl_qscatter import npu
from pyacl_qscatter.runtime import Device


@pytest.fixture
def dev(emu: Emu) -> Device:
    """Device 0 of the emulator through the package; its package stream exists before counters are read."""
    ok, why = npu.npu_status()
    assert ok, why
    Device(0).stream  # noqa: B018
    return Device(0)
