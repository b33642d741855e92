"""Shared test fixtures: conformance data and the CANN emulator (see tests/emulator/fixtures.py)."""

from __future__ import annotations

from emulator.fixtures import *  # noqa: F403  (emulator_root, emu: build and drive the C emulator)
