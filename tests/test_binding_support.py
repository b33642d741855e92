"""Helpers for the binding tests: stub shared libraries compiled with ``cc`` and fake toolkit trees.

The stubs export CANN's symbol names (as ``int name(void) { return 0; }``: the loader only resolves
symbols, it never calls them). They carry no soname, so loading them can never satisfy a real (or
emulated) library's dependency by name. Tests that dlopen them with RTLD_GLOBAL do so in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from test_ffi import FUNCTIONS

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_EMULATOR = os.environ.get("PYACL_QSCATTER_REQUIRE_EMULATOR") == "1"

OPTIONAL = {
    "aclrtGetSocName", "aclrtGetVersion", "aclrtSynchronizeStreamWithTimeout", "aclrtCreateEventWithFlag",
    "aclSetAclOpExecutorRepeatable", "aclDestroyAclOpExecutor", "aclSetInputTensorAddr",
    "aclSetOutputTensorAddr", "aclnnInplaceQuantScatterV2GetWorkspaceSize", "aclnnInplaceQuantScatterV2",
    "aclFinalizeReference", "aclsysGetVersionStr", "aclrtStreamQuery", "aclrtStreamWaitEvent",
    "aclrtSetStreamFailureMode", "aclrtMemcpy2dAsync", "aclrtPointerGetAttributes", "aclrtCreateEventExWithFlag",
    "aclrtQueryEventStatus", "aclmdlRICaptureBegin", "aclmdlRICaptureGetInfo", "aclmdlRICaptureEnd",
    "aclmdlRIExecuteAsync", "aclmdlRIDestroy",
}
V2 = {"aclnnInplaceQuantScatterV2GetWorkspaceSize", "aclnnInplaceQuantScatterV2"}


def symbols_of(library: str) -> set[str]:
    """The functions cann_abi.md places in ``library`` ("rt", "nnopbase" or "opapi")."""
    return {name for name, (_, _, lib) in FUNCTIONS.items() if lib == library}


def c_compiler() -> str:
    """Return a C compiler, or skip (fail if PYACL_QSCATTER_REQUIRE_EMULATOR=1) when there is none."""
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    if REQUIRE_EMULATOR:
        pytest.fail("no C compiler (cc, gcc, clang) found, and PYACL_QSCATTER_REQUIRE_EMULATOR=1")
    pytest.skip("no C compiler (cc, gcc, clang) found: cannot build stub libraries")


def compile_stub(out: Path, symbols: Iterable[str]) -> Path:
    """Build a shared library at ``out`` exporting each symbol as a trivial function."""
    cc = c_compiler()
    src = out.with_suffix(".c")
    body = "".join(f"int {name}(void) {{ return 0; }}\n" for name in sorted(symbols))
    src.write_text(body or "int pyacl_qscatter_stub_nothing(void) { return 0; }\n")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(src)], check=True, capture_output=True)
    return out


class Stubs:
    """A directory of prebuilt stub libraries, copied into fake trees by name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        rt, nn, op = symbols_of("rt"), symbols_of("nnopbase"), symbols_of("opapi")
        specs = {
            "rt": rt,
            "rt_missing": rt - {"aclrtMemsetAsync", "aclGetRecentErrMsg"},
            "rt_old": rt - OPTIONAL,
            "nnopbase": nn,
            "nnopbase_old": nn - OPTIONAL,
            "opapi": op,
            "opapi_v1": op - V2,
            "empty": set(),
        }
        self.libs = {name: compile_stub(root / f"{name}.so", syms) for name, syms in specs.items()}

    def tree(self, home: Path, files: Mapping[str, str]) -> Path:
        """Create ``home`` with ``files`` (relative path -> stub name) and return it."""
        for rel, stub in files.items():
            target = home / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.libs[stub], target)
        home.mkdir(parents=True, exist_ok=True)
        return home

    def standard(self, home: Path, **overrides: str) -> Path:
        """A complete toolkit tree; ``overrides`` maps a lib64 file name to a stub name (or "" to drop it)."""
        files = {"libascendcl.so": "rt", "libnnopbase.so": "nnopbase", "libopapi.so": "opapi"}
        files.update(overrides)
        return self.tree(home, {f"lib64/{name}": stub for name, stub in files.items() if stub})


_STUBS: list[Stubs] = []


def get_stubs(tmp_path_factory: pytest.TempPathFactory) -> Stubs:
    """Stub libraries, built once per session (call from a fixture)."""
    if not _STUBS:
        _STUBS.append(Stubs(tmp_path_factory.mktemp("stubs")))
    return _STUBS[0]


@pytest.fixture
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Stubs:
    """Stub libraries built once per session."""
    return get_stubs(tmp_path_factory)


_SEARCH_SCRIPT = r"""
import json, sys
from pyacl_qscatter import _loader
env, homes, system = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "1"
r = _loader.search(env, default_homes=homes, system=system)
if isinstance(r, _loader.Cann):
    out = {"ok": True, "paths": dict(r.paths), "home": r.home, "source": r.source,
           "caps": r.caps.as_dict(), "attempts": r.attempts, "functions": sorted(r.functions)}
else:
    out = {"ok": False, "attempts": r.attempts, "message": str(r), "oserror": isinstance(r, OSError)}
print(json.dumps(out))
"""


def run_search(
    env: Mapping[str, str],
    default_homes: Iterable[str] = (),
    *,
    system: bool = False,
    ld_library_path: str | None = None,
) -> dict[str, Any]:
    """Run ``_loader.search`` in a fresh interpreter (stub libraries never enter the test process)."""
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("ASCEND_", "PYACL_QSCATTER_"))}
    proc_env["PYTHONPATH"] = str(ROOT) + os.pathsep + proc_env.get("PYTHONPATH", "")
    if ld_library_path is not None:
        proc_env["LD_LIBRARY_PATH"] = ld_library_path
    else:
        proc_env.pop("LD_LIBRARY_PATH", None)
    proc = subprocess.run(
        [sys.executable, "-c", _SEARCH_SCRIPT, json.dumps(dict(env)), json.dumps(list(default_homes)),
         "1" if system else "0"],
        capture_output=True, text=True, env=proc_env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_stubs_export_what_they_claim(stubs: Stubs) -> None:
    out = subprocess.run(["nm", "-D", "--defined-only", str(stubs.libs["rt"])],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("nm is not available")
    assert "aclInit" in out.stdout and "aclCreateTensor" not in out.stdout
