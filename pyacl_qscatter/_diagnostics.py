"""What ``python -m pyacl_qscatter info`` reports: version, backends, where CANN is (or every place tried),
the CANN release and the ACL API version, SoC, device count, the op entry points present, the kernel path
and where it came from, whether repeatable executors were accepted, aclFinalizeReference and graph capture,
and the ASCEND_* settings in force.

Collecting never raises; every failure becomes text in the report.

Example::

    print(format_report(collect(query_device=False)))
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from . import _loader
from .errors import CannError

__all__ = ["ENV_SHOWN", "Report", "collect", "format_report", "package_version", "release_from_files",
           "repeatable_executors"]

# Shown whether set or not; any other ASCEND_* variable in the environment is shown too.
ENV_SHOWN: tuple[str, ...] = (
    "PYACL_QSCATTER_CANN_HOME", "PYACL_QSCATTER_BACKEND", "ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME",
    "ASCEND_OPP_PATH", "ASCEND_GLOBAL_LOG_LEVEL", "ASCEND_SLOG_PRINT_TO_STDOUT", "ASCEND_PROCESS_LOG_PATH",
    "ASCEND_RT_VISIBLE_DEVICES",
)
_LOG_LEVELS = {"0": "debug", "1": "info", "2": "warning", "3": "error", "4": "off"}


@dataclass
class Report:
    """Everything ``info`` prints (``dataclasses.asdict`` gives a JSON-able dict)."""

    version: str
    python: str
    platform: str
    backends: dict[str, tuple[bool, str]]
    cann_found: bool
    home: str | None = None
    source: str | None = None
    paths: dict[str, str] = field(default_factory=dict)
    attempts: list[tuple[str, str]] = field(default_factory=list)
    fix: str | None = None
    entry_points: dict[str, bool] = field(default_factory=dict)
    caps: dict[str, bool] = field(default_factory=dict)
    cann_release: str | None = None
    """The CANN release, e.g. "8.3.RC1" (aclsysGetVersionStr, else the toolkit's version file)."""
    cann_release_source: str | None = None
    acl_api_version: str | None = None
    """aclrtGetVersion: the ACL API version (1.x), not the CANN release."""
    kernel_path: str | None = None
    kernel_path_source: str | None = None
    """Where ASCEND_OPP_PATH came from, or why there is no kernel path."""
    repeatable_executors: bool | None = None
    """Whether the toolkit accepted a repeatable executor for this op (None: not tried in this process)."""
    finalize_reference: bool | None = None
    graph_capture: bool | None = None
    soc_name: str | None = None
    device_count: int | None = None
    notes: list[str] = field(default_factory=list)
    environment: dict[str, str | None] = field(default_factory=dict)
    ld_library_path: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the report.

        Example::

            json.dumps(collect(query_device=False).as_dict())
        """
        return asdict(self)


def package_version() -> str:
    """The installed package's version (``__version__``, else the distribution metadata, else "unknown").

    >>> isinstance(package_version(), str)
    True
    """
    version = getattr(sys.modules.get("pyacl_qscatter"), "__version__", None)
    if isinstance(version, str):
        return version
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            return dist_version("pyacl_qscatter")
        except PackageNotFoundError:
            return "unknown (not installed)"
    except Exception:
        return "unknown"


def _backends() -> dict[str, tuple[bool, str]]:
    result: dict[str, tuple[bool, str]] = {"cpu": (True, "the NumPy reference backend is always available")}
    try:
        from .backends import backend_status

        for name in ("cpu", "npu"):
            ok, why = backend_status(name)
            result[name] = (bool(ok), str(why))
    except Exception as exc:
        ok, why = _loader.is_available()
        result["npu"] = (ok, why if ok else f"{why} (backend status unavailable: {exc})")
    return result


def _environment() -> tuple[dict[str, str | None], list[str]]:
    names = list(ENV_SHOWN) + sorted(k for k in os.environ if k.startswith("ASCEND_") and k not in ENV_SHOWN)
    env = {name: os.environ.get(name) for name in names}
    ld = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    return env, ld


def release_from_files(home: str | None) -> tuple[str | None, str | None]:
    """The CANN release written in the toolkit's ``share/info/<package>/version.info`` (``Version=...``, the
    file aclsysGetVersionStr reads: hicann/runtime acl.cpp) and that file's path; (None, None) if absent.

    >>> release_from_files("/nonexistent")
    (None, None)
    """
    if home is None:
        return None, None
    for package in ("runtime", "toolkit", "compiler", "opp"):
        path = os.path.join(home, "share", "info", package, "version.info")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("Version="):
                        return line.partition("=")[2].strip() or None, path
        except OSError:
            continue
    return None, None


def repeatable_executors() -> bool | None:
    """Whether the toolkit accepted a repeatable executor for this op in this process (None: not tried yet).
    Asked of ``_prepared.repeatable_accepted``.

    >>> repeatable_executors() in (True, False, None)
    True
    """
    from . import _prepared

    return _prepared.repeatable_accepted()


def _query_device(cann: _loader.Cann, report: Report) -> None:
    """Ask the runtime for its versions, SoC and device count, through the package's own aclInit (made once
    per process, given back at exit: see runtime)."""
    from . import _calls
    from .runtime import ensure_runtime

    try:
        ensure_runtime()
    except CannError as exc:
        report.notes.append(str(exc))
        return
    if cann.caps.version_str:
        try:
            report.cann_release, report.cann_release_source = _calls.get_version_str("runtime"), "aclsysGetVersionStr"
        except CannError as exc:
            report.notes.append(str(exc))
    if cann.caps.version:
        try:
            report.acl_api_version = ".".join(str(v) for v in _calls.get_version())
        except CannError as exc:
            report.notes.append(str(exc))
    else:
        report.notes.append("aclrtGetVersion is not exported by this toolkit")
    try:
        report.device_count = _calls.get_device_count()
    except CannError as exc:
        report.notes.append(str(exc))
    if cann.caps.soc_name:
        report.soc_name = _calls.get_soc_name()
        if report.soc_name is None:
            report.notes.append("aclrtGetSocName returned NULL")


def collect(*, query_device: bool = True) -> Report:
    """Gather the report. Never raises.

    With ``query_device`` it starts the package's runtime (its one aclInit per process, given back at exit,
    so a program may go on using the device) and asks for the versions, SoC and device count.

    Example::

        report = collect(query_device=False)
        report.cann_found, report.attempts
    """
    env, ld = _environment()
    report = Report(
        version=package_version(),
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        backends={},
        cann_found=False,
        environment=env,
        ld_library_path=ld,
    )
    try:
        report.backends = _backends()
        result = _loader.find()
        if isinstance(result, _loader.Cann):
            report.cann_found = True
            report.home, report.source = result.home, result.source
            report.paths = dict(result.paths)
            report.attempts = [tuple(a) for a in result.attempts]  # type: ignore[misc]
            report.caps = result.caps.as_dict()
            report.entry_points = {
                "aclnnInplaceQuantScatter (V1)": True,
                "aclnnInplaceQuantScatterV2 (V2)": result.caps.v2,
                "repeatable executors": result.caps.repeatable_executor,
            }
            report.finalize_reference = result.caps.finalize_reference
            report.graph_capture = result.caps.graph
            report.kernel_path, report.kernel_path_source = _loader.kernel_path()
            if query_device:
                _query_device(result, report)
            if report.cann_release is None:
                report.cann_release, report.cann_release_source = release_from_files(result.home)
            report.repeatable_executors = repeatable_executors()
        else:
            report.attempts = list(result.attempts)
            report.fix = result.fix
    except Exception as exc:
        report.notes.append(f"unexpected error while collecting: {type(exc).__name__}: {exc}")
    if report.cann_found and report.kernel_path is None:
        report.notes.append(report.kernel_path_source or "no kernel path")
    return report


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _hang(text: str, indent: int) -> str:
    """Indent the continuation lines of a multi-line message under its first line."""
    return text.replace("\n", "\n" + " " * indent)


def format_report(report: Report) -> str:
    """Render the report as the text ``info`` prints.

    Example::

        print(format_report(collect()))
    """
    out = [f"pyacl_qscatter {report.version} (Python {report.python}, {report.platform})", "", "Backends"]
    for name, (ok, why) in report.backends.items():
        out.append(f"  {name:4} {'available' if ok else 'unavailable':12} {_hang(why, 20)}")
    out += ["", "CANN"]
    if report.cann_found:
        out.append(f"  found at   {report.home or 'the system loader'} (via {report.source})")
        for role, label in (("rt", "runtime"), ("nnopbase", "nnopbase"), ("opapi", "op library")):
            out.append(f"  {label:10} {report.paths.get(role, '?')}")
        release = report.cann_release or "unknown"
        out.append(f"  release    {release}{f' ({report.cann_release_source})' if report.cann_release else ''}")
        out.append(f"  ACL API    {report.acl_api_version or 'unknown'} (aclrtGetVersion)")
        kernels = report.kernel_path or "none"
        out.append(f"  kernels    {kernels} ({report.kernel_path_source})")
        out.append(f"  SoC        {report.soc_name or 'unknown'}")
        out.append(f"  devices    {'unknown' if report.device_count is None else report.device_count}")
        out.append("  entry points")
        for name, present in report.entry_points.items():
            out.append(f"    {name:34} {_yes(present)}")
        accepted = {True: "accepted", False: "refused (phase 1 + phase 2 per call)", None: "not tried yet"}
        out.append(f"    {'repeatable executor accepted':34} {accepted[report.repeatable_executors]}")
        out.append(f"    {'aclFinalizeReference':34} {_yes(bool(report.finalize_reference))}")
        out.append(f"    {'graph capture (aclmdlRICapture*)':34} {_yes(bool(report.graph_capture))}")
        others = [f"{k} {_yes(v)}" for k, v in report.caps.items() if k not in ("v2", "repeatable_executor")]
        out.append(f"  other symbols: {', '.join(others)}")
        if len(report.attempts) > 1:
            out.append("  places tried before:")
            out += [f"    - {where}: {_hang(why, 6)}" for where, why in report.attempts[:-1]]
    else:
        out.append("  CANN not found. Places tried, in order:")
        out += [f"    - {where}: {_hang(why, 6)}" for where, why in report.attempts]
        if report.fix:
            out.append(f"  Fix: {report.fix}")
    out += ["", "Environment"]
    for name, value in report.environment.items():
        text = "(not set)" if value is None else value
        if name == "ASCEND_GLOBAL_LOG_LEVEL":
            text += f"  [{_LOG_LEVELS.get(value or '3', 'unknown')}{'; CANN default' if value is None else ''}]"
        out.append(f"  {name}={text}")
    logs = os.environ.get("ASCEND_PROCESS_LOG_PATH") or os.path.join(os.path.expanduser("~"), "ascend", "log")
    out.append(f"  CANN logs: {logs}")
    if report.ld_library_path:
        out.append(f"  LD_LIBRARY_PATH: set, {len(report.ld_library_path)} entries")
        out += [f"    {entry}" for entry in report.ld_library_path]
    else:
        out.append("  LD_LIBRARY_PATH: (not set)")
    if report.notes:
        out += ["", "Notes"]
        out += [f"  - {_hang(note, 4)}" for note in report.notes]
    return "\n".join(out)
