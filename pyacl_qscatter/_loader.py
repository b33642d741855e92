"""Find and load CANN's shared libraries: once per process, under a lock, on first device use only.

``import pyacl_qscatter`` loads nothing; the first call of :func:`load` (made by the device layer) does.

Search order -- the first place where every required symbol resolves wins:

1. ``$PYACL_QSCATTER_CANN_HOME`` (explicit override for this package)
2. ``$ASCEND_HOME_PATH`` (exported by the toolkit's ``set_env.sh``)
3. ``$ASCEND_TOOLKIT_HOME``
4. ``/usr/local/Ascend/cann`` (default install root of CANN >= 8.5)
5. ``/usr/local/Ascend/ascend-toolkit/latest`` (default install root of CANN <= 8.3)
6. the system loader: plain sonames, resolved through the ``LD_LIBRARY_PATH`` and ``ld.so.cache`` that
   were in force when the process started.

For a home ``H`` the libraries are loaded from ``H/lib64`` by absolute path with ``RTLD_NOW | RTLD_GLOBAL``,
in dependency order: the runtime (``libascendcl.so``, else ``libacl_rt.so``), ``libnnopbase.so``, then the
first of ``libopapi.so``, ``libopapi_nn.so``, ``libaclnn_ops_infer.so`` that exports
``aclnnInplaceQuantScatterGetWorkspaceSize``. Libraries under ``*/devlib/`` (link-time stubs that fail at
run time) are never loaded. Every required symbol is resolved at load time; optional ones become
:class:`Caps` flags. When nothing works, one :class:`~pyacl_qscatter.errors.CannNotFoundError` lists every
place tried, why it failed and how to fix it.

CANN's libraries carry no run path: their own dependencies (e.g. ``libascendcl.so`` needs the runtime's
private libraries) resolve only through the ``LD_LIBRARY_PATH`` the toolkit's ``set_env.sh`` exports before
Python starts. When a library fails to load because a dependency is missing, the error names it and the
``set_env.sh`` found beside the toolkit (``<home>/set_env.sh``, ``<home>/../set_env.sh`` as in
``ascend-toolkit/latest/..``, or ``<root>/ascend-toolkit/set_env.sh``).

The kernels of aclnn operators are found through ``ASCEND_OPP_PATH``: when it is unset and ``<home>/opp``
exists, loading sets it (before any aclnn call); `kernel_path` says what is in force and where it came from.

A success is cached for the process. A failure is cached per value of the environment variables above, so
repeated calls are cheap, yet setting ``ASCEND_HOME_PATH`` later triggers a fresh search.

Example::

    ok, why = is_available()   # never raises; False and every place tried when CANN is missing
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ._ffi._cann import ffi as _FFI
from .errors import CannNotFoundError

__all__ = [
    "CAPABILITIES",
    "DEFAULT_HOMES",
    "ENV_VARS",
    "REQUIRED",
    "Cann",
    "Caps",
    "find",
    "is_available",
    "kernel_path",
    "load",
    "search",
    "set_env_script",
]

ENV_VARS: tuple[str, ...] = ("PYACL_QSCATTER_CANN_HOME", "ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME")
DEFAULT_HOMES: tuple[str, ...] = ("/usr/local/Ascend/cann", "/usr/local/Ascend/ascend-toolkit/latest")

ROLES: tuple[str, ...] = ("rt", "nnopbase", "opapi")
CANDIDATES: dict[str, tuple[str, ...]] = {
    "rt": ("libascendcl.so", "libacl_rt.so"),
    "nnopbase": ("libnnopbase.so",),
    "opapi": ("libopapi.so", "libopapi_nn.so", "libaclnn_ops_infer.so"),
}
# A candidate library is accepted for its role only if it exports this symbol.
PROBES: dict[str, str] = {
    "rt": "aclInit",
    "nnopbase": "aclCreateTensor",
    "opapi": "aclnnInplaceQuantScatterGetWorkspaceSize",
}

REQUIRED: dict[str, tuple[str, ...]] = {
    "rt": (
        "aclInit", "aclFinalize", "aclGetRecentErrMsg",
        "aclrtSetDevice", "aclrtResetDevice", "aclrtGetDevice", "aclrtGetDeviceCount",
        "aclrtSynchronizeDevice",
        "aclrtCreateContext", "aclrtDestroyContext", "aclrtSetCurrentContext", "aclrtGetCurrentContext",
        "aclrtCreateStream", "aclrtDestroyStream", "aclrtSynchronizeStream",
        "aclrtMalloc", "aclrtFree", "aclrtMallocHost", "aclrtFreeHost",
        "aclrtMemcpy", "aclrtMemcpyAsync", "aclrtMemset", "aclrtMemsetAsync", "aclrtGetMemInfo",
        "aclrtCreateEvent", "aclrtRecordEvent", "aclrtSynchronizeEvent", "aclrtEventElapsedTime",
        "aclrtDestroyEvent",
    ),
    "nnopbase": ("aclCreateTensor", "aclDestroyTensor"),
    "opapi": ("aclnnInplaceQuantScatterGetWorkspaceSize", "aclnnInplaceQuantScatter"),
}

# Capability flag -> (role where the symbols normally live, symbols that must ALL be present).
CAPABILITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "v2": ("opapi", ("aclnnInplaceQuantScatterV2GetWorkspaceSize", "aclnnInplaceQuantScatterV2")),
    "repeatable_executor": ("nnopbase", (
        "aclSetAclOpExecutorRepeatable", "aclDestroyAclOpExecutor", "aclSetInputTensorAddr",
        "aclSetOutputTensorAddr",
    )),
    "soc_name": ("rt", ("aclrtGetSocName",)),
    "version": ("rt", ("aclrtGetVersion",)),
    "stream_sync_timeout": ("rt", ("aclrtSynchronizeStreamWithTimeout",)),
    "event_with_flag": ("rt", ("aclrtCreateEventWithFlag",)),
    "event_ex_with_flag": ("rt", ("aclrtCreateEventExWithFlag",)),
    "stream_wait_event": ("rt", ("aclrtStreamWaitEvent",)),
    "stream_query": ("rt", ("aclrtStreamQuery",)),
    "event_query": ("rt", ("aclrtQueryEventStatus",)),
    "stream_failure_mode": ("rt", ("aclrtSetStreamFailureMode",)),
    "pointer_attributes": ("rt", ("aclrtPointerGetAttributes",)),
    "memcpy_2d": ("rt", ("aclrtMemcpy2dAsync",)),
    "finalize_reference": ("rt", ("aclFinalizeReference",)),
    "version_str": ("rt", ("aclsysGetVersionStr",)),
    "graph": ("rt", ("aclmdlRICaptureBegin", "aclmdlRICaptureGetInfo", "aclmdlRICaptureEnd", "aclmdlRIExecuteAsync",
                     "aclmdlRIDestroy")),
}

FIX = (
    "source the toolkit's environment script (e.g. `source /usr/local/Ascend/ascend-toolkit/set_env.sh` or "
    "`source /usr/local/Ascend/cann/set_env.sh`), or set ASCEND_HOME_PATH (or PYACL_QSCATTER_CANN_HOME) "
    "to the toolkit root that contains lib64/libascendcl.so, lib64/libnnopbase.so and lib64/libopapi.so"
)

_DLFLAGS = _FFI.RTLD_NOW | _FFI.RTLD_GLOBAL
_SYMBOL_ERRORS = (AttributeError, _FFI.error)


@dataclass(frozen=True)
class Caps:
    """Optional parts of the C interface that the loaded toolkit provides.

    >>> Caps().v2
    False
    """

    v2: bool = False
    """``aclnnInplaceQuantScatterV2GetWorkspaceSize`` and ``aclnnInplaceQuantScatterV2`` (CANN >= 8.5)."""
    repeatable_executor: bool = False
    """``aclSetAclOpExecutorRepeatable``, ``aclDestroyAclOpExecutor``, ``aclSet{Input,Output}TensorAddr``."""
    soc_name: bool = False
    """``aclrtGetSocName``."""
    version: bool = False
    """``aclrtGetVersion``."""
    stream_sync_timeout: bool = False
    """``aclrtSynchronizeStreamWithTimeout``."""
    event_with_flag: bool = False
    """``aclrtCreateEventWithFlag``."""
    event_ex_with_flag: bool = False
    """``aclrtCreateEventExWithFlag``."""
    stream_wait_event: bool = False
    """``aclrtStreamWaitEvent``: order one stream after an event without a host wait."""
    stream_query: bool = False
    """``aclrtStreamQuery``."""
    event_query: bool = False
    """``aclrtQueryEventStatus``."""
    stream_failure_mode: bool = False
    """``aclrtSetStreamFailureMode``."""
    pointer_attributes: bool = False
    """``aclrtPointerGetAttributes``."""
    memcpy_2d: bool = False
    """``aclrtMemcpy2dAsync``."""
    finalize_reference: bool = False
    """``aclFinalizeReference`` (CANN >= 8.5): gives back one ``aclInit`` without ending ACL for others."""
    version_str: bool = False
    """``aclsysGetVersionStr``: the CANN release as text."""
    graph: bool = False
    """ACL graph capture and replay: ``aclmdlRICaptureBegin/GetInfo/End``, ``aclmdlRIExecuteAsync``,
    ``aclmdlRIDestroy``."""

    def as_dict(self) -> dict[str, bool]:
        """Return the flags by name.

        >>> Caps(v2=True).as_dict()["v2"]
        True
        """
        return {f.name: bool(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, eq=False)
class Cann:
    """A loaded CANN: the cffi ``ffi``, one library handle per role and every resolved function.

    ``functions`` maps each resolved symbol (all required ones, and the optional ones present) to its cffi
    function object. ``paths`` maps a role (``"rt"``, ``"nnopbase"``, ``"opapi"``) to the library's
    absolute path. ``home`` is the toolkit root, or ``None`` when the system loader found the libraries.

    Example::

        cann = load()
        cann.caps.v2, cann.paths["opapi"]
        # -> (False, '/usr/local/Ascend/ascend-toolkit/latest/lib64/libopapi.so')
    """

    ffi: Any
    rt: Any
    nnopbase: Any
    opapi: Any
    paths: Mapping[str, str]
    home: str | None
    source: str
    caps: Caps
    functions: Mapping[str, Any] = field(repr=False)
    attempts: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------------------------------------- search


def _has(lib: Any, name: str) -> bool:
    try:
        getattr(lib, name)
    except _SYMBOL_ERRORS:
        return False
    return True


def _is_devlib(path: str) -> bool:
    parts = set(os.path.normpath(path).split(os.sep)) | set(os.path.realpath(path).split(os.sep))
    return "devlib" in parts


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _dladdr_path(function: Any) -> str | None:
    """The file that defines a resolved cffi function, through dladdr(3); None if unknown."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
        dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        info = _DlInfo()
        address = ctypes.c_void_p(int(_FFI.cast("uintptr_t", function)))
        if dladdr(address, ctypes.byref(info)) and info.dli_fname:
            return os.path.abspath(os.fsdecode(info.dli_fname))
    except (AttributeError, OSError, ValueError, TypeError):
        pass
    return None


_NOT_FOUND = re.compile(r"([^\s:]+\.so[.\d]*): cannot open shared object file")


def _missing_dependency(dlopen_error: str, name: str) -> str | None:
    """The library a dlopen error says is missing, when it is not ``name`` itself (a missing dependency).

    >>> _missing_dependency("libruntime.so: cannot open shared object file: No such file or directory",
    ...                     "libascendcl.so")
    'libruntime.so'
    >>> _missing_dependency("libascendcl.so: cannot open shared object file", "libascendcl.so") is None
    True
    """
    match = _NOT_FOUND.search(dlopen_error)
    if match is None or os.path.basename(match.group(1)) == name:
        return None
    return os.path.basename(match.group(1))


def set_env_script(home: str) -> str | None:
    """The toolkit's ``set_env.sh`` beside ``home``: ``<home>/set_env.sh`` (CANN >= 8.5 layout),
    ``<home>/../set_env.sh`` (``ascend-toolkit/latest``), or ``<root>/ascend-toolkit/set_env.sh``; None if none.

    >>> set_env_script("/nonexistent/cann") is None
    True
    """
    parent = os.path.dirname(os.path.abspath(home))
    candidates = (os.path.join(home, "set_env.sh"), os.path.join(parent, "set_env.sh"),
                  os.path.join(os.path.dirname(parent), "ascend-toolkit", "set_env.sh"))
    return next((c for c in candidates if os.path.isfile(c)), None)


def _source_hint(home: str) -> str:
    script = set_env_script(home)
    if script is None:
        return (f"source the toolkit's set_env.sh before starting Python (none found beside {home}; looked for "
                "set_env.sh in it, in its parent and in <root>/ascend-toolkit)")
    return (f"source {script} before starting Python (`source {script} && python ...`); setting "
            "LD_LIBRARY_PATH inside a running Python does not reach the loader")


def _close(libs: Sequence[Any]) -> None:
    for lib in reversed(libs):
        with contextlib.suppress(Exception):  # best effort, after a failed attempt
            _FFI.dlclose(lib)


def _try_place(where: str, home: str | None) -> tuple[Cann | None, str]:
    """Load one place (a home, or the system loader if ``home`` is None): (Cann, "loaded") or (None, why)."""
    reasons: list[str] = []
    opened: list[Any] = []
    chosen: dict[str, tuple[Any, str]] = {}
    lib64 = os.path.join(home, "lib64") if home is not None else None
    if home is not None:
        if not os.path.isdir(home):
            return None, "directory does not exist"
        if lib64 is None or not os.path.isdir(lib64):
            return None, f"no lib64 directory (expected {os.path.join(home, 'lib64', 'libascendcl.so')})"
    for role in ROLES:
        for name in CANDIDATES[role]:
            target = os.path.join(lib64, name) if lib64 is not None else name
            if lib64 is not None:
                if not os.path.lexists(target):
                    reasons.append(f"{name}: no such file")
                    continue
                if _is_devlib(target):
                    reasons.append(f"{target}: is a link-time stub under devlib/, not loaded")
                    continue
            try:
                lib = _FFI.dlopen(target, _DLFLAGS)
            except OSError as exc:
                text = str(exc).removeprefix(f"cannot load library '{target}': ")
                dependency = _missing_dependency(text, name)
                if dependency is not None and home is not None:
                    _close(opened)
                    return None, (f"{name}: dlopen failed: {text}. {name} needs {dependency}, which CANN's libraries "
                                  "find only through LD_LIBRARY_PATH (they carry no run path): "
                                  f"{_source_hint(home)}")
                reasons.append(f"{name}: dlopen failed: {text}")
                continue
            opened.append(lib)
            if not _has(lib, PROBES[role]):
                reasons.append(f"{target}: does not export {PROBES[role]}")
                continue
            path = target
            if lib64 is None:
                path = _dladdr_path(getattr(lib, PROBES[role])) or name
                if _is_devlib(path):
                    reasons.append(f"{path}: is a link-time stub under devlib/ (found through the system "
                                   "loader), not used")
                    continue
            chosen[role] = (lib, path)
            break
        if role not in chosen:
            _close(opened)
            return None, f"no usable {role} library ({'; '.join(reasons)})"
    libs = {role: lib for role, (lib, _) in chosen.items()}

    def resolve(role: str, symbol: str) -> Any | None:
        for r in (role, *[x for x in ROLES if x != role]):
            try:
                return getattr(libs[r], symbol)
            except _SYMBOL_ERRORS:
                continue
        return None

    functions: dict[str, Any] = {}
    missing: list[str] = []
    for role, symbols in REQUIRED.items():
        for symbol in symbols:
            fn = resolve(role, symbol)
            if fn is None:
                missing.append(symbol)
            else:
                functions[symbol] = fn
    if missing:
        _close(opened)
        return None, f"missing required symbols: {', '.join(missing)}"
    flags: dict[str, bool] = {}
    for cap, (role, symbols) in CAPABILITIES.items():
        found = {s: resolve(role, s) for s in symbols}
        flags[cap] = all(fn is not None for fn in found.values())
        if flags[cap]:
            functions.update(found)
    _close([lib for lib in opened if all(lib is not kept for kept in libs.values())])
    cann = Cann(
        ffi=_FFI, rt=libs["rt"], nnopbase=libs["nnopbase"], opapi=libs["opapi"],
        paths={role: path for role, (_, path) in chosen.items()}, home=home, source=where,
        caps=Caps(**flags), functions=functions,
    )
    return cann, "loaded"


def _places(
    env: Mapping[str, str], default_homes: Sequence[str], system: bool
) -> list[tuple[str, str | None]]:
    places: list[tuple[str, str | None]] = []
    for var in ENV_VARS:
        value = env.get(var, "")
        places.append((var, os.path.abspath(value) if value else ""))
    places.extend((home, home) for home in default_homes)
    if system:
        places.append(("system loader (LD_LIBRARY_PATH, ld.so.cache)", None))
    return places


def search(
    env: Mapping[str, str] | None = None,
    *,
    default_homes: Sequence[str] = DEFAULT_HOMES,
    system: bool = True,
) -> Cann | CannNotFoundError:
    """Run the whole search once, without any caching; return the loaded CANN or the error describing it all.

    ``env`` defaults to ``os.environ``. :func:`load` is the cached, locked entry point; call this directly
    only to inspect a toolkit without touching the process-wide state.

    >>> result = search({}, default_homes=(), system=False)
    >>> isinstance(result, CannNotFoundError)
    True
    """
    env = os.environ if env is None else env
    attempts: list[tuple[str, str]] = []
    tried: dict[str, str] = {}
    for where, home in _places(env, default_homes, system):
        label = where if home is None or where == home else f"{where}={home}"
        if home == "":
            attempts.append((where, "not set"))
            continue
        key = os.path.realpath(home) if home is not None else "<system>"
        if key in tried:
            attempts.append((label, f"same place as {tried[key]}, already tried"))
            continue
        tried[key] = label
        try:
            cann, why = _try_place(where, home)
        except Exception as exc:
            cann, why = None, f"unexpected error: {type(exc).__name__}: {exc}"
        attempts.append((label, why))
        if cann is not None:
            return dataclasses.replace(cann, attempts=tuple(attempts))
    dependency = next((why for _, why in attempts if "carry no run path" in why), None)
    if dependency is not None:  # a toolkit is there; only its environment is missing
        return CannNotFoundError(attempts, dependency.rpartition("(they carry no run path): ")[2])
    return CannNotFoundError(attempts, FIX)


# ---------------------------------------------------------------------------------------- process cache

_lock = threading.Lock()
_loaded: Cann | None = None
_failures: dict[tuple[str | None, ...], CannNotFoundError] = {}
_kernel_origin: str | None = None


def _env_key() -> tuple[str | None, ...]:
    return tuple(os.environ.get(var) for var in ENV_VARS)


def _set_kernel_path(cann: Cann) -> None:
    """Before the first aclnn call: set ASCEND_OPP_PATH from the toolkit found when it is unset (aclnn finds
    its kernels through it: 561107 without), and remember where the value came from."""
    global _kernel_origin
    if os.environ.get("ASCEND_OPP_PATH"):
        _kernel_origin = "environment"
        return
    if cann.home is not None and os.path.isdir(os.path.join(cann.home, "opp")):
        os.environ["ASCEND_OPP_PATH"] = os.path.join(cann.home, "opp")
        _kernel_origin = f"set by pyacl_qscatter from the toolkit found ({cann.home}/opp)"
        return
    _kernel_origin = None
    warnings.warn(kernel_path()[1], RuntimeWarning, stacklevel=3)


def kernel_path() -> tuple[str | None, str]:
    """(ASCEND_OPP_PATH in force, where it came from) when it names a directory, else (None, why not).

    >>> path, why = kernel_path()
    >>> path is None or isinstance(why, str)
    True
    """
    value = os.environ.get("ASCEND_OPP_PATH")
    if value and os.path.isdir(value):
        return value, _kernel_origin or "environment"
    home = _loaded.home if _loaded is not None else None
    found = f"; the toolkit at {home} has no opp directory either" if home is not None else ""
    if value:
        return None, (f"no kernel path: ASCEND_OPP_PATH={value} is not a directory, so aclnn operators fail with "
                      "561107 (ACLNN_ERR_INNER_OPP_PATH_NOT_FOUND); source the toolkit's set_env.sh")
    return None, (f"no kernel path: ASCEND_OPP_PATH is not set{found}, so aclnn operators fail with 561107 "
                  "(ACLNN_ERR_INNER_OPP_PATH_NOT_FOUND); source the toolkit's set_env.sh")


def load() -> Cann:
    """Load CANN (once per process) and return it; raise ``CannNotFoundError`` listing every place tried.

    Example::

        cann = load()
        sorted(cann.paths)
        # -> ['nnopbase', 'opapi', 'rt']
    """
    global _loaded
    cann = _loaded
    if cann is not None:
        return cann
    with _lock:
        if _loaded is not None:
            return _loaded
        key = _env_key()
        failure = _failures.get(key)
        if failure is None:
            result = search()
            if isinstance(result, Cann):
                _loaded = result
                _set_kernel_path(result)
                return result
            _failures[key] = failure = result
    raise CannNotFoundError(failure.attempts, failure.fix)  # a fresh instance: no traceback build-up


def find() -> Cann | CannNotFoundError:
    """Like :func:`load`, but return the error instead of raising it (for diagnostics).

    Example::

        result = find()
        print(result if isinstance(result, CannNotFoundError) else result.paths)
    """
    try:
        return load()
    except CannNotFoundError as exc:
        return exc
    except Exception as exc:
        return CannNotFoundError([("loader", f"unexpected error: {type(exc).__name__}: {exc}")], FIX)


def is_available() -> tuple[bool, str]:
    """Return (True, where CANN was loaded from) or (False, why not). Never raises.

    Example::

        is_available()
        # -> (False, 'CANN could not be loaded. Tried, in order: ...')
    """
    try:
        result = find()
        if isinstance(result, Cann):
            where = result.home if result.home is not None else "the system loader"
            return True, f"CANN loaded from {where} (via {result.source})"
        return False, str(result)
    except Exception as exc:
        return False, f"unexpected error while looking for CANN: {type(exc).__name__}: {exc}"


def loaded() -> Cann | None:
    """Return the process's loaded CANN without triggering a search (None if not loaded yet).

    >>> loaded() is None or isinstance(loaded(), Cann)
    True
    """
    return _loaded
