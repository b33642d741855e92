"""``python -m pyacl_qscatter info`` without CANN, and with a stub toolkit (no device queries)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_binding_support import get_stubs

from pyacl_qscatter import _diagnostics, _loader
from pyacl_qscatter._cli import info

ROOT = Path(__file__).resolve().parents[1]


def run_info(*args: str, env_extra: dict[str, str] | None = None, module: str = "pyacl_qscatter") -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASCEND_", "PYACL_QSCATTER_"))}
    env.pop("LD_LIBRARY_PATH", None)
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, "-m", module, *(["info"] if module == "pyacl_qscatter" else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def test_info_without_cann() -> None:
    proc = run_info(env_extra={"ASCEND_HOME_PATH": "/nonexistent/cann", "ASCEND_GLOBAL_LOG_LEVEL": "1"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("pyacl_qscatter ")
    assert "CANN not found" in out
    for place in ("PYACL_QSCATTER_CANN_HOME: not set", "ASCEND_HOME_PATH=/nonexistent/cann: directory does not exist",
                  "/usr/local/Ascend/cann", "/usr/local/Ascend/ascend-toolkit/latest", "system loader"):
        assert place in out, place
    assert "Fix: source the toolkit's environment script" in out
    assert "cpu  available" in out and "npu  unavailable" in out
    assert "ASCEND_GLOBAL_LOG_LEVEL=1  [info]" in out
    assert "ASCEND_OPP_PATH=(not set)" in out and "LD_LIBRARY_PATH: (not set)" in out
    assert "ASCEND_SLOG_PRINT_TO_STDOUT=(not set)" in out and "ASCEND_PROCESS_LOG_PATH=(not set)" in out


def test_info_json_and_direct_module() -> None:
    proc = run_info("--json", "--no-device", module="pyacl_qscatter._cli.info",
                    env_extra={"LD_LIBRARY_PATH": "/a:/b", "ASCEND_EXTRA_THING": "x"})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["cann_found"] is False and data["backends"]["cpu"][0] is True
    assert data["ld_library_path"] == ["/a", "/b"]
    assert data["environment"]["ASCEND_EXTRA_THING"] == "x"
    assert data["attempts"][0] == ["PYACL_QSCATTER_CANN_HOME", "not set"]


def test_info_bad_option_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert info.main(["--bogus"]) == 2
    assert info.main(["--help"]) == 0
    assert "--no-device" in capsys.readouterr().out


def test_info_with_a_stub_toolkit(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    home = get_stubs(tmp_path_factory).standard(tmp_path / "cann", **{"libopapi.so": "opapi_v1"})
    proc = run_info("--no-device", env_extra={"ASCEND_HOME_PATH": str(home), "ASCEND_OPP_PATH": str(home / "opp")})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"found at   {home} (via ASCEND_HOME_PATH)" in out
    assert f"runtime    {home}/lib64/libascendcl.so" in out
    assert f"op library {home}/lib64/libopapi.so" in out
    assert "aclnnInplaceQuantScatter (V1)" in out and "aclnnInplaceQuantScatterV2 (V2)    no" in out
    assert "repeatable executors               yes" in out
    assert "places tried before:" in out and "PYACL_QSCATTER_CANN_HOME: not set" in out


def test_collect_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(_loader, "find", boom)
    report = _diagnostics.collect(query_device=False)
    assert any("boom" in note for note in report.notes)
    assert "pyacl_qscatter" in _diagnostics.format_report(report)


def test_package_version_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyacl_qscatter

    assert _diagnostics.package_version() == pyacl_qscatter.__version__
    monkeypatch.delattr(pyacl_qscatter, "__version__")
    assert isinstance(_diagnostics.package_version(), str) and _diagnostics.package_version()
