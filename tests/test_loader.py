"""Library discovery: search order, what is loaded from where, capability flags and the failure report.

Fake toolkit trees are built from stub libraries (tests/test_binding_support.py); every search that can
dlopen them runs in a subprocess so that nothing stub-like is ever loaded into the test process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_binding_support import Stubs, get_stubs, run_search

from pyacl_qscatter import _loader
from pyacl_qscatter.errors import CannNotFoundError, QScatterError


@pytest.fixture
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Stubs:
    return get_stubs(tmp_path_factory)


def _reasons(result: dict[str, Any]) -> dict[str, str]:
    return {where: why for where, why in result["attempts"]}


def test_full_tree_from_ascend_home_path(stubs: Stubs, tmp_path: Path) -> None:
    home = stubs.standard(tmp_path / "cann")
    r = run_search({"ASCEND_HOME_PATH": str(home)})
    assert r["ok"], r
    assert r["home"] == str(home)
    assert r["source"] == "ASCEND_HOME_PATH"
    assert r["paths"] == {
        "rt": str(home / "lib64" / "libascendcl.so"),
        "nnopbase": str(home / "lib64" / "libnnopbase.so"),
        "opapi": str(home / "lib64" / "libopapi.so"),
    }
    assert all(os.path.isabs(p) for p in r["paths"].values())
    assert r["caps"] == {"v2": True, "repeatable_executor": True, "soc_name": True, "version": True,
                         "stream_sync_timeout": True, "event_with_flag": True, "event_ex_with_flag": True,
                         "stream_wait_event": True, "stream_query": True, "event_query": True,
                         "stream_failure_mode": True, "pointer_attributes": True, "memcpy_2d": True,
                         "finalize_reference": True, "version_str": True, "graph": True}
    assert set(r["functions"]) >= set(_loader.REQUIRED["rt"]) | {"aclnnInplaceQuantScatterV2"}
    assert _reasons(r)["PYACL_QSCATTER_CANN_HOME"] == "not set"


def test_old_toolkit_has_no_optional_caps(stubs: Stubs, tmp_path: Path) -> None:
    home = stubs.standard(tmp_path / "old", **{"libascendcl.so": "rt_old", "libnnopbase.so": "nnopbase_old",
                                               "libopapi.so": "opapi_v1"})
    r = run_search({"ASCEND_TOOLKIT_HOME": str(home)})
    assert r["ok"], r
    assert not any(r["caps"].values()), r["caps"]
    assert "aclnnInplaceQuantScatterV2" not in r["functions"]


def test_search_order(stubs: Stubs, tmp_path: Path) -> None:
    override = stubs.standard(tmp_path / "override")
    home = stubs.standard(tmp_path / "home")
    toolkit = stubs.standard(tmp_path / "toolkit")
    default = stubs.standard(tmp_path / "default")
    everything = {"PYACL_QSCATTER_CANN_HOME": str(override), "ASCEND_HOME_PATH": str(home),
                  "ASCEND_TOOLKIT_HOME": str(toolkit)}
    assert run_search(everything, [str(default)])["home"] == str(override)
    del everything["PYACL_QSCATTER_CANN_HOME"]
    assert run_search(everything, [str(default)])["home"] == str(home)
    del everything["ASCEND_HOME_PATH"]
    assert run_search(everything, [str(default)])["home"] == str(toolkit)
    r = run_search({}, [str(tmp_path / "absent"), str(default)])
    assert r["home"] == str(default) and r["source"] == str(default)
    assert _reasons(r)[str(tmp_path / "absent")] == "directory does not exist"


def test_broken_override_falls_through_and_is_reported(stubs: Stubs, tmp_path: Path) -> None:
    broken = stubs.standard(tmp_path / "broken", **{"libopapi.so": ""})
    good = stubs.standard(tmp_path / "good")
    r = run_search({"PYACL_QSCATTER_CANN_HOME": str(broken), "ASCEND_HOME_PATH": str(good)})
    assert r["ok"] and r["home"] == str(good)
    why = _reasons(r)[f"PYACL_QSCATTER_CANN_HOME={broken}"]
    assert "no usable opapi library" in why and "libopapi_nn.so: no such file" in why


def test_same_home_twice_is_tried_once(stubs: Stubs, tmp_path: Path) -> None:
    broken = stubs.standard(tmp_path / "broken", **{"libnnopbase.so": ""})
    r = run_search({"ASCEND_HOME_PATH": str(broken), "ASCEND_TOOLKIT_HOME": str(broken)})
    assert not r["ok"]
    assert "already tried" in _reasons(r)[f"ASCEND_TOOLKIT_HOME={broken}"]


def test_missing_required_symbols_are_all_listed(stubs: Stubs, tmp_path: Path) -> None:
    home = stubs.standard(tmp_path / "partial", **{"libascendcl.so": "rt_missing"})
    r = run_search({"ASCEND_HOME_PATH": str(home)})
    assert not r["ok"] and r["oserror"]
    why = _reasons(r)[f"ASCEND_HOME_PATH={home}"]
    assert "missing required symbols" in why
    assert "aclrtMemsetAsync" in why and "aclGetRecentErrMsg" in why
    assert "aclrtMalloc" not in why


def test_devlib_stub_is_never_loaded(stubs: Stubs, tmp_path: Path) -> None:
    home = stubs.tree(tmp_path / "devonly", {
        "x86_64-linux/devlib/libascendcl.so": "rt",
        "x86_64-linux/devlib/libnnopbase.so": "nnopbase",
        "x86_64-linux/devlib/libopapi.so": "opapi",
    })
    (home / "lib64").mkdir()
    r = run_search({"ASCEND_HOME_PATH": str(home)})
    assert not r["ok"]
    why = _reasons(r)[f"ASCEND_HOME_PATH={home}"]
    assert "libascendcl.so: no such file" in why and "libacl_rt.so: no such file" in why
    # a lib64 entry that links into devlib/ is refused too
    for name in ("libascendcl.so", "libnnopbase.so", "libopapi.so"):
        (home / "lib64" / name).symlink_to(home / "x86_64-linux" / "devlib" / name)
    r = run_search({"ASCEND_HOME_PATH": str(home)})
    assert not r["ok"]
    assert "link-time stub under devlib/" in _reasons(r)[f"ASCEND_HOME_PATH={home}"]


def test_devlib_on_ld_library_path_is_refused(stubs: Stubs, tmp_path: Path) -> None:
    home = stubs.tree(tmp_path / "sys", {
        "devlib/libascendcl.so": "rt", "devlib/libnnopbase.so": "nnopbase", "devlib/libopapi.so": "opapi",
    })
    r = run_search({}, system=True, ld_library_path=str(home / "devlib"))
    assert not r["ok"]
    assert "devlib" in _reasons(r)["system loader (LD_LIBRARY_PATH, ld.so.cache)"]


def test_libacl_rt_instead_of_libascendcl(stubs: Stubs, tmp_path: Path) -> None:
    home = stubs.standard(tmp_path / "rt", **{"libascendcl.so": "", "libacl_rt.so": "rt"})
    r = run_search({"ASCEND_HOME_PATH": str(home)})
    assert r["ok"], r
    assert r["paths"]["rt"] == str(home / "lib64" / "libacl_rt.so")


def test_runtime_without_probe_symbol_is_skipped(stubs: Stubs, tmp_path: Path) -> None:
    home = stubs.standard(tmp_path / "rt2", **{"libascendcl.so": "empty", "libacl_rt.so": "rt"})
    r = run_search({"ASCEND_HOME_PATH": str(home)})
    assert r["ok"], r
    assert r["paths"]["rt"].endswith("libacl_rt.so")


def test_op_in_libopapi_nn(stubs: Stubs, tmp_path: Path) -> None:
    # CANN 8.5 layout: libopapi.so still exists but the op moved to libopapi_nn.so
    home = stubs.standard(tmp_path / "c85", **{"libopapi.so": "empty", "libopapi_nn.so": "opapi"})
    r = run_search({"ASCEND_HOME_PATH": str(home)})
    assert r["ok"], r
    assert r["paths"]["opapi"] == str(home / "lib64" / "libopapi_nn.so")
    assert r["caps"]["v2"]


def test_op_in_libaclnn_ops_infer(stubs: Stubs, tmp_path: Path) -> None:
    home = stubs.standard(tmp_path / "infer", **{"libopapi.so": "", "libaclnn_ops_infer.so": "opapi_v1"})
    r = run_search({"ASCEND_HOME_PATH": str(home)})
    assert r["ok"], r
    assert r["paths"]["opapi"].endswith("libaclnn_ops_infer.so")
    assert not r["caps"]["v2"]


def test_system_loader_last(stubs: Stubs, tmp_path: Path) -> None:
    home = stubs.standard(tmp_path / "ld")
    r = run_search({}, [str(tmp_path / "nowhere")], system=True, ld_library_path=str(home / "lib64"))
    assert r["ok"], r
    assert r["home"] is None
    assert r["paths"]["rt"] == str(home / "lib64" / "libascendcl.so")  # found through dladdr
    assert list(_reasons(r))[-1].startswith("system loader")


def test_unloadable_file_reports_dlopen_error(tmp_path: Path) -> None:
    lib64 = tmp_path / "junk" / "lib64"
    lib64.mkdir(parents=True)
    (lib64 / "libascendcl.so").write_text("not an ELF file")
    r = run_search({"ASCEND_HOME_PATH": str(tmp_path / "junk")})
    assert not r["ok"]
    assert "dlopen failed" in _reasons(r)[f"ASCEND_HOME_PATH={tmp_path / 'junk'}"]


def test_failure_report_lists_every_place_and_the_fix(tmp_path: Path) -> None:
    env = {"ASCEND_HOME_PATH": str(tmp_path / "a")}
    (tmp_path / "b").mkdir()
    result = _loader.search(env, default_homes=(str(tmp_path / "b"),), system=False)
    assert isinstance(result, CannNotFoundError)
    assert isinstance(result, OSError) and isinstance(result, QScatterError)
    text = str(result)
    assert [where for where, _ in result.attempts] == [
        "PYACL_QSCATTER_CANN_HOME", f"ASCEND_HOME_PATH={tmp_path / 'a'}", "ASCEND_TOOLKIT_HOME",
        str(tmp_path / "b"),
    ]
    assert "directory does not exist" in text and "no lib64 directory" in text and "not set" in text
    assert "set_env.sh" in text and "ASCEND_HOME_PATH" in text and "PYACL_QSCATTER_CANN_HOME" in text


def test_relative_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _loader.search({"ASCEND_HOME_PATH": "rel"}, default_homes=(), system=False)
    assert isinstance(result, CannNotFoundError)
    assert result.attempts[1][0] == f"ASCEND_HOME_PATH={tmp_path / 'rel'}"


# ------------------------------------------------------------------------------- process-wide cache


@pytest.fixture
def fresh_loader(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """Forget any loaded CANN for the test; count the searches (which never touch the system loader)."""
    calls: list[dict[str, str]] = []
    real_search = _loader.search

    def counting_search(env: Any = None, **_: Any) -> Any:
        calls.append({k: os.environ.get(k, "") for k in _loader.ENV_VARS})
        return real_search(env, default_homes=(), system=False)

    monkeypatch.setattr(_loader, "_loaded", None)
    monkeypatch.setattr(_loader, "_failures", {})
    monkeypatch.setattr(_loader, "search", counting_search)
    for var in _loader.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return calls


def test_failure_is_cached_per_environment(
    fresh_loader: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(CannNotFoundError) as first:
        _loader.load()
    with pytest.raises(CannNotFoundError) as second:
        _loader.load()
    assert len(fresh_loader) == 1
    assert first.value is not second.value and first.value.attempts == second.value.attempts
    monkeypatch.setenv("ASCEND_HOME_PATH", str(tmp_path / "later"))
    with pytest.raises(CannNotFoundError) as third:
        _loader.load()
    assert len(fresh_loader) == 2
    assert f"ASCEND_HOME_PATH={tmp_path / 'later'}" in str(third.value)
    ok, why = _loader.is_available()
    assert ok is False and "CANN could not be loaded" in why
    assert isinstance(_loader.find(), CannNotFoundError)
    assert len(fresh_loader) == 2


def test_find_and_is_available_never_raise(
    fresh_loader: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(_loader, "search", boom)
    result = _loader.find()
    assert isinstance(result, CannNotFoundError) and "boom" in str(result)
    assert _loader.is_available()[0] is False


def test_concurrent_first_loads_search_once(fresh_loader: list[dict[str, str]]) -> None:
    import threading

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            _loader.load()
        except CannNotFoundError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 8 and len(fresh_loader) == 1


def test_kernel_path_is_set_from_the_toolkit_or_warned_once(stubs: Stubs, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    home = stubs.standard(tmp_path / "cann")
    code = """
import json, os, warnings
from pyacl_qscatter import _loader
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    a = _loader.load()
    b = _loader.load()
print(json.dumps({"same": a is b, "warnings": [str(w.message) for w in caught],
                  "categories": [w.category.__name__ for w in caught], "env": os.environ.get("ASCEND_OPP_PATH"),
                  "kernel_path": _loader.kernel_path()}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASCEND_", "PYACL_QSCATTER_"))}
    env.update({"ASCEND_HOME_PATH": str(home), "PYTHONPATH": str(Path(__file__).resolve().parents[1])})

    def run() -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        out: dict[str, Any] = json.loads(proc.stdout)
        return out

    out = run()  # no opp directory: nothing to set, one warning
    assert out["same"] and out["categories"] == ["RuntimeWarning"] and out["env"] is None
    assert "ASCEND_OPP_PATH is not set" in out["warnings"][0] and "561107" in out["warnings"][0]
    assert out["kernel_path"][0] is None and "no kernel path" in out["kernel_path"][1]
    (home / "opp").mkdir()
    out = run()  # unset, <home>/opp exists: set before any aclnn call, and said where it came from
    assert out["warnings"] == [] and out["env"] == str(home / "opp")
    assert out["kernel_path"] == [str(home / "opp"), f"set by pyacl_qscatter from the toolkit found ({home}/opp)"]
    env["ASCEND_OPP_PATH"] = str(home / "opp")
    out = run()
    assert out["warnings"] == [] and out["kernel_path"] == [str(home / "opp"), "environment"]
