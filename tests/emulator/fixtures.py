"""Pytest fixtures for the CANN emulator (imported by tests/conftest.py with ``from emulator.fixtures import *``).

- ``emulator_root`` (session): builds the emulator once into a temporary toolkit root and points
  ``ASCEND_HOME_PATH`` / ``ASCEND_OPP_PATH`` at it for the rest of the session, so the package finds it
  through its normal search. If the build fails the dependent tests are skipped, or fail when
  ``PYACL_QSCATTER_REQUIRE_EMULATOR=1`` (CI), with the compiler's output.
- ``emu`` (function): an :class:`~emulator.emu.Emu` for that root (counters, fault injection).
- ``emulator_variant`` (session): ``emulator_variant(sanitize=False, no_v2=False) -> Path`` builds
  (once per combination) another root in its own temporary folder; load it in a subprocess, since a
  process keeps the first ``libascendcl.so`` it loads.
- ``emulator_cann`` (session): :class:`~emulator.emu.CannLibs` over ``emulator_root``, the raw C
  interface without the package.
- ``rt`` (function): :class:`Rt`, ``emulator_cann`` with device 0 set and a stream of its own.

For the raw-interface test modules: ``unset_settings(*names)`` makes the autouse fixture that unsets
emulator settings around each test, and ``fails_with`` asserts a status and the thread's message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from emulator.build import BuildError, build
from emulator.emu import CannLibs, Emu

__all__ = [
    "Rt",
    "build_or_skip",
    "emu",
    "emulator_cann",
    "emulator_root",
    "emulator_variant",
    "rt",
]

REQUIRE_ENV = "PYACL_QSCATTER_REQUIRE_EMULATOR"
DEVICE_SETTINGS = ("CANN_EMU_SOC", "CANN_EMU_WORKSPACE_BYTES", "CANN_EMU_DEVICE_MEMORY", "CANN_EMU_DEVICE_COUNT")


def unset_settings(*names: str) -> Any:
    """An autouse fixture, named ``default_settings``, that unsets the emulator settings ``names`` for each
    test of the module that binds it (``default_settings = unset_settings(*DEVICE_SETTINGS)``), so a setting
    left in the environment cannot change what the tests see."""

    @pytest.fixture(autouse=True, name="default_settings")
    def fixture(monkeypatch: pytest.MonkeyPatch) -> None:
        for var in names:
            monkeypatch.delenv(var, raising=False)

    return fixture


def fails_with(c: CannLibs, code: int, want: int, *words: str) -> str:
    """Assert a status and that the thread's message says each of ``words``; return the message."""
    msg = c.last_error() or ""
    assert code == want, f"{code} != {want}: {msg}"
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def build_or_skip(dest: Path, *, sanitize: bool = False, no_v2: bool | None = None) -> Path:
    """Build into ``dest`` and return the root; skip the test (or fail under ``PYACL_QSCATTER_REQUIRE_EMULATOR=1``)."""
    try:
        build(dest, sanitize=sanitize, no_v2=no_v2)
    except BuildError as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"the CANN emulator does not build ({REQUIRE_ENV}=1):\n{exc.output}", pytrace=False)
        pytest.skip(f"the CANN emulator does not build here (no working C compiler?): {str(exc).splitlines()[0]}")
    return dest


@pytest.fixture(scope="session")
def emulator_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_or_skip(tmp_path_factory.mktemp("cann-emulator"))
    os.environ["ASCEND_HOME_PATH"] = str(root)
    os.environ["ASCEND_OPP_PATH"] = str(root / "opp")
    return root


@pytest.fixture
def emu(emulator_root: Path) -> Emu:
    return Emu(emulator_root / "lib64")


@pytest.fixture(scope="session")
def emulator_variant(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    built: dict[tuple[bool, bool], Path] = {}

    def variant(*, sanitize: bool = False, no_v2: bool = False) -> Path:
        key = (sanitize, no_v2)
        if key not in built:
            name = "cann-emulator" + ("-asan" if sanitize else "") + ("-nov2" if no_v2 else "")
            built[key] = build_or_skip(tmp_path_factory.mktemp(name), sanitize=sanitize, no_v2=no_v2)
        return built[key]

    return variant


class Rt(NamedTuple):
    """The raw C interface (no package) with an initialised device 0 and a stream of its own."""

    c: CannLibs
    stream: Any


@pytest.fixture
def rt(emulator_cann: CannLibs) -> Iterator[Rt]:
    c = emulator_cann
    c.init()
    c.set_device(0)
    stream = c.create_stream()
    yield Rt(c, stream)
    c.check(c.rt.aclrtDestroyStream(stream), "aclrtDestroyStream")
    c.rt.aclrtResetDevice(0)
    c.last_error()


@pytest.fixture(scope="session")
def emulator_cann(emulator_root: Path) -> CannLibs:
    return CannLibs(emulator_root / "lib64")
