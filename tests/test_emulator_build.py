"""Building the CANN emulator: the toolkit-shaped tree, library metadata, exports, variants, sanitizers."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from emulator.build import BuildError, build
from emulator.emu import INCLUDE
from emulator.fixtures import REQUIRE_ENV, build_or_skip

pytestmark = pytest.mark.emulator

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
EMULATOR = TESTS / "emulator"
LIBS = ("libascendcl.so", "libnnopbase.so", "libopapi.so")
V2 = {"aclnnInplaceQuantScatterV2GetWorkspaceSize", "aclnnInplaceQuantScatterV2"}
NNOPBASE = {"aclCreateTensor", "aclDestroyTensor", "aclSetAclOpExecutorRepeatable", "aclDestroyAclOpExecutor",
            "aclSetInputTensorAddr", "aclSetOutputTensorAddr"}
OPAPI_V1 = {"aclnnInplaceQuantScatterGetWorkspaceSize", "aclnnInplaceQuantScatter"}
INTROSPECTION = {"emuGetStat", "emuReset", "emuInjectFault"}
SINCE_8_5 = {"aclFinalizeReference"}


def header_functions() -> set[str]:
    text = "".join(h.read_text() for h in sorted(INCLUDE.glob("*.h")))
    return set(re.findall(r"^\s*(?:const\s+)?\w+\s*\*?\s*(acl\w+)\s*\(", text, flags=re.MULTILINE))


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} (binutils) is not installed")
    return path


def exports(lib: Path) -> set[str]:
    out = subprocess.run([tool("nm"), "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.split()[1:2] in (["T"], ["W"])}


def dynamic_section(lib: Path) -> str:
    return subprocess.run([tool("readelf"), "-d", str(lib)], capture_output=True, text=True, check=True).stdout


def test_cli_builds_a_toolkit_tree_and_prints_lib64(tmp_path: Path) -> None:
    dest = tmp_path / "toolkit"
    proc = subprocess.run([sys.executable, str(EMULATOR / "build.py"), str(dest)], capture_output=True, text=True,
                          check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(dest / "lib64")
    assert sorted(p.name for p in (dest / "lib64").iterdir()) == sorted(LIBS)
    assert (dest / "opp").is_dir()


def test_build_writes_nothing_outside_dest(tmp_path: Path) -> None:
    def snapshot() -> dict[str, float]:
        return {str(p): p.stat().st_mtime for d in (EMULATOR, INCLUDE) for p in d.rglob("*")
                if "__pycache__" not in p.parts}

    before = snapshot()
    lib64 = build(tmp_path / "x")
    assert lib64 == (tmp_path / "x" / "lib64").resolve()
    assert snapshot() == before


def test_libraries_find_each_other_like_a_toolkit(emulator_root: Path) -> None:
    lib64 = emulator_root / "lib64"
    needed = {}
    for lib in LIBS:
        section = dynamic_section(lib64 / lib)
        assert f"Library soname: [{lib}]" in section
        assert "[$ORIGIN]" in section  # run path
        needed[lib] = set(re.findall(r"Shared library: \[(lib\w+\.so)\]", section))
    assert needed["libnnopbase.so"] >= {"libascendcl.so"}
    assert needed["libopapi.so"] >= {"libascendcl.so", "libnnopbase.so"}
    # Loading only libopapi.so by path pulls in its siblings from lib64, as a real toolkit's does.
    code = textwrap.dedent(f"""
        import ctypes
        ctypes.CDLL({str(lib64 / 'libopapi.so')!r})
        maps = open('/proc/self/maps').read()
        print(all({str(lib64)!r} + '/' + n in maps for n in ('libascendcl.so', 'libnnopbase.so')))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env={k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"})
    assert proc.stdout.strip() == "True", proc.stderr


def test_exports_are_cann_symbols_from_the_right_library(emulator_root: Path) -> None:
    lib64 = emulator_root / "lib64"
    rt, nnop, op = (exports(lib64 / lib) for lib in LIBS)
    declared = header_functions()
    assert nnop == NNOPBASE
    assert op == OPAPI_V1 | V2
    runtime = declared - NNOPBASE - OPAPI_V1 - V2 - SINCE_8_5  # the default tree is CANN 8.3.RC1
    internal = {s for s in rt if s.startswith("emuInternal")}
    assert rt == runtime | INTROSPECTION | internal  # nothing else leaks out
    assert declared - SINCE_8_5 <= rt | nnop | op


def test_no_v2_build_hides_the_v2_symbols(emulator_variant: Callable[..., Path]) -> None:
    root = emulator_variant(no_v2=True)
    assert exports(root / "lib64" / "libopapi.so") == OPAPI_V1
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import numpy as np
        from emulator.emu import CannLibs, load_case
        c = CannLibs({str(root / 'lib64')!r})
        try:
            c.op.aclnnInplaceQuantScatterV2GetWorkspaceSize
        except AttributeError:
            print("no V2")
        c.init(); c.set_device(0)
        case = load_case({str(sorted((TESTS / 'data/conformance/valid').glob('*.npz'))[0])!r})
        assert np.array_equal(c.run_case(case, c.ffi.NULL).self_out, case.expected)
        print(int(c.rt.emuGetStat(b"calls:aclnnInplaceQuantScatterV2")),
              int(c.rt.emuGetStat(b"calls:aclnnInplaceQuantScatter")))
    """)
    env = {**os.environ, "ASCEND_OPP_PATH": str(root / "opp")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["no", "V2", "-1", "1"]


def test_no_v2_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANN_EMU_NO_V2", "1")
    lib64 = build(tmp_path / "old")
    assert exports(lib64 / "libopapi.so") == OPAPI_V1


def test_build_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BuildError, match="cannot run the C compiler") as missing:
        build(tmp_path / "a", cc=str(tmp_path / "no-such-cc"))
    assert missing.value.output
    with pytest.raises(BuildError, match=r"building libascendcl\.so failed") as failed:
        build(tmp_path / "b", cc=f"{os.environ.get('CC') or 'cc'} -include {tmp_path / 'missing.h'}")
    assert "state.c" in failed.value.output and "missing.h" in failed.value.output  # command and diagnostics
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="does not build"):
        build_or_skip(tmp_path / "c")
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="does not build"):
        build_or_skip(tmp_path / "d")


SANITIZED_WORKLOAD = """
import glob, sys, threading
sys.path.insert(0, {tests!r})
import numpy as np
from emulator.emu import CannError, CannLibs, load_case
c = CannLibs({lib64!r})
ffi = c.ffi
c.init(); c.set_device(0)
s = c.create_stream()
for path in sorted(glob.glob({valid!r})):
    case = load_case(path)
    for layout in ("contiguous", "padded", "transposed"):
        run = c.run_case(case, s, layout)
        assert np.array_equal(run.self_out, case.expected) and run.outside_untouched, (path, layout, run.message)
for path in sorted(glob.glob({invalid!r})):
    run = c.run_case(load_case(path), s, "padded")
    assert run.self_untouched and run.message, path
# error paths: foreign and stale pointers, use after free, faults, events, a second thread
host = bytearray(64)
assert c.rt.aclrtMemcpy(ffi.from_buffer(host), 64, ffi.from_buffer(host), 64, 1) == 107000
p = c.malloc(64)
q = c.malloc(64)
assert c.rt.aclrtMemcpyAsync(q, 64, p, 64, 3, s) == 0
c.free(p)
assert c.rt.aclrtFree(p) == 107000
assert c.rt.aclrtSynchronizeStream(s) == 507015
try:
    c.tensor([65], 2, q)
except CannError:
    pass
c.rt.emuInjectFault(b"aclrtMalloc", 1, 0)
assert c.rt.aclrtMalloc(ffi.new("void **"), 8, 0) == 207001
e = ffi.new("aclrtEvent *")
assert c.rt.aclrtCreateEvent(e) == 0 and c.rt.aclrtRecordEvent(e[0], s) == 0
assert c.rt.aclrtDestroyEvent(e[0]) == 0 and c.rt.aclrtSynchronizeStream(s) == 0
c.free(q)
t = threading.Thread(target=lambda: c.run_case(load_case(sorted(glob.glob({valid!r}))[0]), s))
t.start(); t.join()
assert c.rt.aclrtDestroyStream(s) == 0
assert c.rt.aclrtResetDevice(0) == 0 and c.rt.aclFinalize() == 0
print("ok")
"""


def test_sanitized_build_runs_a_workload_cleanly(emulator_variant: Callable[..., Path]) -> None:
    cc = os.environ.get("CC") or "cc"
    runtimes = []
    for name in ("libasan.so", "libubsan.so"):
        found = subprocess.run([*cc.split(), f"-print-file-name={name}"], capture_output=True, text=True,
                               check=False).stdout.strip()
        if not os.path.isabs(found):
            pytest.skip(f"{cc} has no {name}")
        runtimes.append(found)
    root = emulator_variant(sanitize=True)
    script = SANITIZED_WORKLOAD.format(
        tests=str(TESTS), lib64=str(root / "lib64"), valid=str(TESTS / "data/conformance/valid/*.npz"),
        invalid=str(TESTS / "data/conformance/invalid/*.npz"))
    env = {**os.environ, "LD_PRELOAD": " ".join(runtimes), "ASCEND_OPP_PATH": str(root / "opp"),
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == "ok"
    for marker in ("AddressSanitizer", "UndefinedBehaviorSanitizer", "runtime error:", "LeakSanitizer"):
        assert marker not in proc.stderr, proc.stderr[-4000:]


def test_as_shipped_tree_needs_its_set_env(tmp_path: Path) -> None:
    root = tmp_path / "shipped"
    proc = subprocess.run([sys.executable, str(EMULATOR / "build.py"), str(root), "--as-shipped"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    lib64 = root / "lib64"
    assert sorted(p.name for p in lib64.iterdir()) == sorted((*LIBS, "libruntime.so"))
    for lib in (*LIBS, "libruntime.so"):
        section = dynamic_section(lib64 / lib)
        assert "RPATH" not in section and "RUNPATH" not in section, lib
        assert f"Library soname: [{lib}]" in section
    assert "Shared library: [libruntime.so]" in dynamic_section(lib64 / "libascendcl.so")
    load = f"import ctypes; ctypes.CDLL({str(lib64 / 'libascendcl.so')!r}); print('loaded')"
    bare = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "ASCEND_HOME_PATH", "ASCEND_OPP_PATH")}
    proc = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, check=False, env=bare)
    assert proc.returncode != 0 and "libruntime.so" in proc.stderr  # found only through LD_LIBRARY_PATH
    # Sourcing set_env.sh is all it takes, as with the toolkit.
    work = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(TESTS)!r})
        from emulator.emu import CannLibs
        c = CannLibs(os.environ["ASCEND_HOME_PATH"] + "/lib64")
        c.init(); c.set_device(0)
        p = c.malloc(64)
        c.h2d(p, bytes(range(64)))
        assert c.d2h(p, 64) == bytes(range(64))
        assert os.environ["ASCEND_OPP_PATH"] == os.environ["ASCEND_HOME_PATH"] + "/opp"
        print("works")
    """)
    script = f". {shlex.quote(str(root / 'set_env.sh'))} && exec {shlex.quote(sys.executable)} -c {shlex.quote(work)}"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False, env=bare)
    assert proc.stdout.strip() == "works", proc.stderr
