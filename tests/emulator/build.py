"""Build the CANN emulator into a toolkit-shaped tree: ``DEST/lib64/lib{ascendcl,nnopbase,opapi}.so`` + ``DEST/opp/``.

Point the package at it exactly as at a real toolkit: ``ASCEND_HOME_PATH=DEST ASCEND_OPP_PATH=DEST/opp``.

    python tests/emulator/build.py DEST [--sanitize] [--no-v2] [--no-graph] [--cann-version 8.3.RC1]
                                        [--as-shipped]
    # prints DEST/lib64

Only DEST is written. Each library carries its soname and names its dependencies by soname (nnopbase ->
ascendcl; opapi -> nnopbase, ascendcl). By default each also carries an ``$ORIGIN`` run path, so they
find each other wherever the tree is. ``--as-shipped`` builds the tree the way CANN ships it: no run
paths, ``libascendcl.so`` needs a private ``libruntime.so`` that only ``LD_LIBRARY_PATH`` finds, and
``DEST/set_env.sh`` sets the environment like the toolkit's own script.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

__all__ = ["LIBRARIES", "SHIPPED_LIBRARIES", "BuildError", "build", "main", "release_at_least", "write_set_env",
           "write_version_files"]

HERE = Path(__file__).resolve().parent
INCLUDE = HERE.parent.parent / "include"

# library -> (its sources, the emulator libraries it links against by soname)
LIBRARIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ascendcl": (("state.c", "fault.c", "device.c", "memory.c", "stream.c", "graph.c", "runtime.c", "common.c"),
                 ()),
    "nnopbase": (("tensor.c", "common.c"), ("ascendcl",)),
    "opapi": (("op.c", "kernel.c", "common.c"), ("nnopbase", "ascendcl")),
}
# --as-shipped: runtime.c moves into a private libruntime.so that libascendcl.so needs.
SHIPPED_LIBRARIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "runtime": (("runtime.c", "common.c"), ()),
    "ascendcl": (("state.c", "fault.c", "device.c", "memory.c", "stream.c", "graph.c", "common.c"), ("runtime",)),
    "nnopbase": LIBRARIES["nnopbase"],
    "opapi": LIBRARIES["opapi"],
}

BASE_FLAGS = (
    "-std=c11", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", "-pthread",
    # Bit-exact kernel: no fused multiply-add, no value-changing optimisations.
    "-ffp-contract=off", "-fno-fast-math",
    # Export only CANN's symbols and the emu* ones (see emu_internal.h).
    "-fvisibility=hidden",
    # Every symbol must resolve at link time: catches a missing dependency here, not at dlopen.
    "-Wl,--no-undefined",
)
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined")


class BuildError(RuntimeError):
    """The compiler failed; ``output`` holds its command line and messages."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(f"{message}\n{output}")
        self.output = output


DEFAULT_RELEASE = "8.3.RC1"
# Packages whose version file the tree carries (aclsysGetVersionStr answers for exactly these).
VERSION_PACKAGES = ("runtime", "toolkit", "opp", "compiler")


def _no_v2_from_env() -> bool:
    return os.environ.get("CANN_EMU_NO_V2", "") == "1"


def release_at_least(release: str, major: int, minor: int) -> bool:
    """Whether a CANN release string such as ``8.3.RC1`` or ``8.5.0`` is at least ``major.minor``.

    >>> release_at_least("8.3.RC1", 8, 5), release_at_least("8.5.0", 8, 5), release_at_least("9.0.0", 8, 5)
    (False, True, True)
    """
    match = re.match(r"(\d+)\.(\d+)", release)
    if not match:
        return False
    return (int(match[1]), int(match[2])) >= (major, minor)


def write_version_files(root: Path, release: str) -> None:
    """Write ``root/share/info/<package>/version.info`` as the toolkit lays it out.

    hicann/runtime ``src/acl/aclrt_impl/acl.cpp`` (aclsysGetVersionStr, aclsysGetCANNVersion) reads the
    line ``Version=<release>`` from ``$ASCEND_HOME_PATH/share/info/<package>/version.info``.
    """
    for package in VERSION_PACKAGES:
        info = root / "share" / "info" / package
        info.mkdir(parents=True, exist_ok=True)
        (info / "version.info").write_text(f"Version={release}\n")


def write_set_env(root: Path) -> Path:
    """Write ``root/set_env.sh``, which a shell sources to use the tree, like the toolkit's own script.

    CANN's ``set_env.sh`` (``<toolkit>/set_env.sh``, sourced as the installation guide says) exports
    ``ASCEND_TOOLKIT_HOME``, ``ASCEND_HOME_PATH``, ``ASCEND_OPP_PATH`` and prepends ``lib64`` to
    ``LD_LIBRARY_PATH``, which is how the libraries find their dependencies at run time.
    """
    home = shlex.quote(str(root))
    script = root / "set_env.sh"
    script.write_text(
        "# Environment for the pyacl_qscatter CANN emulator, built by tests/emulator/build.py --as-shipped.\n"
        "# Source it (. set_env.sh) the way the toolkit's own set_env.sh is sourced.\n"
        f"export ASCEND_TOOLKIT_HOME={home}\n"
        'export ASCEND_HOME_PATH="${ASCEND_TOOLKIT_HOME}"\n'
        'export ASCEND_OPP_PATH="${ASCEND_TOOLKIT_HOME}/opp"\n'
        'export LD_LIBRARY_PATH="${ASCEND_TOOLKIT_HOME}/lib64${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"\n'
    )
    return script


def _no_graph_from_env() -> bool:
    return os.environ.get("CANN_EMU_NO_GRAPH", "") == "1"


def build(dest: Path | str, *, sanitize: bool = False, no_v2: bool | None = None, cc: str | None = None,
          cann_version: str | None = None, as_shipped: bool = False, no_graph: bool | None = None) -> Path:
    """Compile the three libraries into ``dest/lib64`` (created), make ``dest/opp``, return the lib64 path.

    ``no_v2=None`` reads ``CANN_EMU_NO_V2=1`` from the environment; hiding the V2 symbols is a build-time
    choice because an exported symbol cannot be withdrawn at run time; ``no_graph=None`` reads
    ``CANN_EMU_NO_GRAPH=1`` the same way, to leave out the ACL graph symbols (``aclmdlRI*``).
    ``cann_version`` is the release the tree is built as (default ``$CANN_EMU_VERSION`` or 8.3.RC1): it is
    written to the version files and decides whether ``aclFinalizeReference`` (8.5 and later) is exported.
    ``as_shipped`` builds without run paths, with a private ``libruntime.so``, and writes
    ``dest/set_env.sh`` (see :func:`write_set_env`).
    ``cc`` defaults to ``$CC`` or ``cc``. Raises :class:`BuildError` with the compiler's output when a
    compilation fails.
    """
    root = Path(dest).resolve()
    lib64 = root / "lib64"
    opp = root / "opp"
    lib64.mkdir(parents=True, exist_ok=True)
    opp.mkdir(parents=True, exist_ok=True)
    (opp / "EMULATOR").write_text("Operator kernels of the pyacl_qscatter CANN emulator live in lib64/libopapi.so.\n")
    if no_v2 is None:
        no_v2 = _no_v2_from_env()
    release = cann_version or os.environ.get("CANN_EMU_VERSION") or DEFAULT_RELEASE
    if not re.fullmatch(r"[0-9A-Za-z.]+", release):
        raise BuildError(f"bad CANN release {release!r}", "expected something like 8.3.RC1 or 8.5.0")
    write_version_files(root, release)
    compiler = shlex.split(cc or os.environ.get("CC") or "cc")
    flags = [*BASE_FLAGS, *(SANITIZE_FLAGS if sanitize else ()), "-O1" if sanitize else "-O2",
             f"-I{INCLUDE}", f"-I{HERE}"]
    if no_v2:
        flags.append("-DEMU_NO_V2")
    if no_graph if no_graph is not None else _no_graph_from_env():
        flags.append("-DEMU_NO_GRAPH")
    flags.append(f'-DEMU_CANN_RELEASE="{release}"')
    if not release_at_least(release, 8, 5):
        flags.append("-DEMU_NO_FINALIZE_REFERENCE")
    libraries = SHIPPED_LIBRARIES if as_shipped else LIBRARIES
    # -rpath-link lets the link step follow dependencies of dependencies without recording anything.
    paths = [f"-Wl,-rpath-link,{lib64}"] if as_shipped else ["-Wl,-rpath,$ORIGIN"]
    for name, (sources, deps) in libraries.items():  # dependency order: each links against earlier ones
        soname = f"lib{name}.so"
        cmd = [
            *compiler, *flags, *(str(HERE / s) for s in sources),
            f"-Wl,-soname,{soname}", *paths, f"-L{lib64}",
            # Record every dependency even where the toolchain defaults to --as-needed (Debian, Ubuntu).
            "-Wl,--no-as-needed", *(f"-l{d}" for d in deps), "-Wl,--as-needed", "-lm",
            "-o", str(lib64 / soname),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise BuildError(f"cannot run the C compiler {compiler[0]!r}", str(exc)) from exc
        if proc.returncode != 0:
            raise BuildError(f"building {soname} failed (exit {proc.returncode})",
                             shlex.join(cmd) + "\n" + proc.stdout + proc.stderr)
    if as_shipped:
        write_set_env(root)
    return lib64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the CANN emulator into DEST/lib64 and print that path.")
    parser.add_argument("dest", type=Path, help="toolkit root to create (ASCEND_HOME_PATH)")
    parser.add_argument("--sanitize", action="store_true", help="build with AddressSanitizer and UBSan")
    parser.add_argument("--no-v2", action="store_true", default=None,
                        help="omit the V2 symbols, like an older CANN (default: CANN_EMU_NO_V2=1)")
    parser.add_argument("--cann-version", default=None,
                        help=f"the CANN release to build as (default: CANN_EMU_VERSION or {DEFAULT_RELEASE})")
    parser.add_argument("--as-shipped", action="store_true",
                        help="no run paths, a private libruntime.so found only through LD_LIBRARY_PATH, "
                             "and DEST/set_env.sh (like the toolkit)")
    parser.add_argument("--no-graph", action="store_true", default=None,
                        help="omit the ACL graph symbols, like an older CANN (default: CANN_EMU_NO_GRAPH=1)")
    args = parser.parse_args(argv)
    try:
        print(build(args.dest, sanitize=args.sanitize, no_v2=args.no_v2, cann_version=args.cann_version,
                    as_shipped=args.as_shipped, no_graph=args.no_graph))
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
