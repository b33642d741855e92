"""The generated cffi module: fresh, and declaring exactly the C interface of shared/spec/cann_abi.md.

The tables below are written by hand from cann_abi.md (a second source): they are NOT parsed from
include/*.h, so a typo in a header shows up here as a mismatch.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "pyacl_qscatter" / "_ffi" / "_cann.py"

# name -> (return type, parameter types, library that exports it in CANN)
FUNCTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # libascendcl.so
    "aclInit": ("aclError", ("const char *",), "rt"),
    "aclFinalize": ("aclError", (), "rt"),
    "aclGetRecentErrMsg": ("const char *", (), "rt"),
    "aclrtGetVersion": ("aclError", ("int32_t *", "int32_t *", "int32_t *"), "rt"),
    "aclrtGetSocName": ("const char *", (), "rt"),
    "aclrtSetDevice": ("aclError", ("int32_t",), "rt"),
    "aclrtResetDevice": ("aclError", ("int32_t",), "rt"),
    "aclrtGetDevice": ("aclError", ("int32_t *",), "rt"),
    "aclrtGetDeviceCount": ("aclError", ("uint32_t *",), "rt"),
    "aclrtCreateContext": ("aclError", ("void **", "int32_t"), "rt"),
    "aclrtDestroyContext": ("aclError", ("void *",), "rt"),
    "aclrtSetCurrentContext": ("aclError", ("void *",), "rt"),
    "aclrtGetCurrentContext": ("aclError", ("void **",), "rt"),
    "aclrtCreateStream": ("aclError", ("void **",), "rt"),
    "aclrtDestroyStream": ("aclError", ("void *",), "rt"),
    "aclrtSynchronizeStream": ("aclError", ("void *",), "rt"),
    "aclrtSynchronizeStreamWithTimeout": ("aclError", ("void *", "int32_t"), "rt"),
    "aclrtSynchronizeDevice": ("aclError", (), "rt"),
    "aclrtMalloc": ("aclError", ("void **", "size_t", "aclrtMemMallocPolicy"), "rt"),
    "aclrtFree": ("aclError", ("void *",), "rt"),
    "aclrtMallocHost": ("aclError", ("void **", "size_t"), "rt"),
    "aclrtFreeHost": ("aclError", ("void *",), "rt"),
    "aclrtMemcpy": ("aclError", ("void *", "size_t", "const void *", "size_t", "aclrtMemcpyKind"), "rt"),
    "aclrtMemcpyAsync": (
        "aclError", ("void *", "size_t", "const void *", "size_t", "aclrtMemcpyKind", "void *"), "rt"),
    "aclrtMemset": ("aclError", ("void *", "size_t", "int32_t", "size_t"), "rt"),
    "aclrtMemsetAsync": ("aclError", ("void *", "size_t", "int32_t", "size_t", "void *"), "rt"),
    "aclrtGetMemInfo": ("aclError", ("aclrtMemAttr", "size_t *", "size_t *"), "rt"),
    "aclrtCreateEvent": ("aclError", ("void **",), "rt"),
    "aclrtCreateEventWithFlag": ("aclError", ("void **", "uint32_t"), "rt"),
    "aclrtRecordEvent": ("aclError", ("void *", "void *"), "rt"),
    "aclrtSynchronizeEvent": ("aclError", ("void *",), "rt"),
    "aclrtEventElapsedTime": ("aclError", ("float *", "void *", "void *"), "rt"),
    "aclrtDestroyEvent": ("aclError", ("void *",), "rt"),
    # libascendcl.so, from hicann/runtime include/external/acl/acl_rt.h (optional: newer toolkits)
    "aclFinalizeReference": ("aclError", ("uint64_t *",), "rt"),
    "aclsysGetVersionStr": ("aclError", ("char *", "char *"), "rt"),
    "aclrtStreamQuery": ("aclError", ("void *", "aclrtStreamStatus *"), "rt"),
    "aclrtStreamWaitEvent": ("aclError", ("void *", "void *"), "rt"),
    "aclrtSetStreamFailureMode": ("aclError", ("void *", "uint64_t"), "rt"),
    "aclrtMemcpy2dAsync": ("aclError", (
        "void *", "size_t", "const void *", "size_t", "size_t", "size_t", "aclrtMemcpyKind", "void *"), "rt"),
    "aclrtPointerGetAttributes": ("aclError", ("const void *", "aclrtPtrAttributes *"), "rt"),
    "aclrtCreateEventExWithFlag": ("aclError", ("void **", "uint32_t"), "rt"),
    "aclrtQueryEventStatus": ("aclError", ("void *", "aclrtEventRecordedStatus *"), "rt"),
    "aclmdlRICaptureBegin": ("aclError", ("void *", "aclmdlRICaptureMode"), "rt"),
    "aclmdlRICaptureGetInfo": ("aclError", ("void *", "aclmdlRICaptureStatus *", "void * *"), "rt"),
    "aclmdlRICaptureEnd": ("aclError", ("void *", "void * *"), "rt"),
    "aclmdlRIExecuteAsync": ("aclError", ("void *", "void *"), "rt"),
    "aclmdlRIDestroy": ("aclError", ("void *",), "rt"),
    # libnnopbase.so
    "aclCreateTensor": ("struct aclTensor *", (
        "const int64_t *", "uint64_t", "aclDataType", "const int64_t *", "int64_t", "aclFormat",
        "const int64_t *", "uint64_t", "void *"), "nnopbase"),
    "aclDestroyTensor": ("int32_t", ("const struct aclTensor *",), "nnopbase"),
    "aclSetAclOpExecutorRepeatable": ("int32_t", ("struct aclOpExecutor *",), "nnopbase"),
    "aclDestroyAclOpExecutor": ("int32_t", ("struct aclOpExecutor *",), "nnopbase"),
    "aclSetInputTensorAddr": (
        "int32_t", ("struct aclOpExecutor *", "size_t", "struct aclTensor *", "void *"), "nnopbase"),
    "aclSetOutputTensorAddr": (
        "int32_t", ("struct aclOpExecutor *", "size_t", "struct aclTensor *", "void *"), "nnopbase"),
    # libopapi.so (libopapi_nn.so, libaclnn_ops_infer.so)
    "aclnnInplaceQuantScatterGetWorkspaceSize": ("int32_t", (
        "struct aclTensor *", "const struct aclTensor *", "const struct aclTensor *",
        "const struct aclTensor *", "const struct aclTensor *", "int64_t", "int64_t", "int64_t",
        "uint64_t *", "struct aclOpExecutor **"), "opapi"),
    "aclnnInplaceQuantScatter": (
        "int32_t", ("void *", "uint64_t", "struct aclOpExecutor *", "void *"), "opapi"),
    "aclnnInplaceQuantScatterV2GetWorkspaceSize": ("int32_t", (
        "struct aclTensor *", "const struct aclTensor *", "const struct aclTensor *",
        "const struct aclTensor *", "const struct aclTensor *", "int64_t", "int64_t", "int64_t",
        "const char *", "uint64_t *", "struct aclOpExecutor **"), "opapi"),
    "aclnnInplaceQuantScatterV2": (
        "int32_t", ("void *", "uint64_t", "struct aclOpExecutor *", "void *"), "opapi"),
}

CONSTANTS: dict[str, int] = {
    # aclDataType
    "ACL_DT_UNDEFINED": -1, "ACL_FLOAT": 0, "ACL_FLOAT16": 1, "ACL_INT8": 2, "ACL_INT32": 3, "ACL_UINT8": 4,
    "ACL_INT16": 6, "ACL_UINT16": 7, "ACL_UINT32": 8, "ACL_INT64": 9, "ACL_UINT64": 10, "ACL_DOUBLE": 11,
    "ACL_BOOL": 12, "ACL_STRING": 13, "ACL_COMPLEX64": 16, "ACL_COMPLEX128": 17, "ACL_BF16": 27,
    "ACL_INT4": 29, "ACL_UINT1": 30, "ACL_COMPLEX32": 33, "ACL_HIFLOAT8": 34, "ACL_FLOAT8_E5M2": 35,
    "ACL_FLOAT8_E4M3FN": 36,
    # aclFormat
    "ACL_FORMAT_UNDEFINED": -1, "ACL_FORMAT_NCHW": 0, "ACL_FORMAT_NHWC": 1, "ACL_FORMAT_ND": 2,
    "ACL_FORMAT_NC1HWC0": 3, "ACL_FORMAT_FRACTAL_Z": 4, "ACL_FORMAT_FRACTAL_NZ": 29,
    # aclrtMemcpyKind, aclrtMemMallocPolicy, aclrtMemAttr, event flag
    "ACL_MEMCPY_HOST_TO_HOST": 0, "ACL_MEMCPY_HOST_TO_DEVICE": 1, "ACL_MEMCPY_DEVICE_TO_HOST": 2,
    "ACL_MEMCPY_DEVICE_TO_DEVICE": 3, "ACL_MEMCPY_DEFAULT": 4,
    "ACL_MEM_MALLOC_HUGE_FIRST": 0, "ACL_MEM_MALLOC_HUGE_ONLY": 1, "ACL_MEM_MALLOC_NORMAL_ONLY": 2,
    "ACL_DDR_MEM": 0, "ACL_HBM_MEM": 1, "ACL_EVENT_TIME_LINE": 8, "ACL_EVENT_SYNC": 1,
    "ACL_CONTINUE_ON_FAILURE": 0, "ACL_STOP_ON_FAILURE": 1,
    "ACL_STREAM_STATUS_COMPLETE": 0, "ACL_STREAM_STATUS_NOT_READY": 1, "ACL_STREAM_STATUS_RESERVED": 0xFFFF,
    "ACL_MEM_LOCATION_TYPE_MANAGED": 3, "ACL_MEM_LOCATION_TYPE_HOST_NUMA": 4, "ACL_PKG_VERSION_MAX_SIZE": 128,
    "ACL_EVENT_RECORDED_STATUS_NOT_READY": 0, "ACL_EVENT_RECORDED_STATUS_COMPLETE": 1,
    "ACL_MEM_LOCATION_TYPE_HOST": 0, "ACL_MEM_LOCATION_TYPE_DEVICE": 1, "ACL_MEM_LOCATION_TYPE_UNREGISTERED": 2,
    "ACL_MODEL_RI_CAPTURE_MODE_GLOBAL": 0, "ACL_MODEL_RI_CAPTURE_MODE_THREAD_LOCAL": 1,
    "ACL_MODEL_RI_CAPTURE_MODE_RELAXED": 2, "ACL_MODEL_RI_CAPTURE_STATUS_NONE": 0,
    "ACL_MODEL_RI_CAPTURE_STATUS_ACTIVE": 1, "ACL_MODEL_RI_CAPTURE_STATUS_INVALIDATED": 2,
    # ACL and runtime status codes
    "ACL_SUCCESS": 0, "ACL_ERROR_INVALID_PARAM": 100000, "ACL_ERROR_UNINITIALIZE": 100001,
    "ACL_ERROR_REPEAT_INITIALIZE": 100002, "ACL_ERROR_REPEAT_FINALIZE": 100037,
    "ACL_ERROR_BAD_ALLOC": 200000, "ACL_ERROR_API_NOT_SUPPORT": 200001, "ACL_ERROR_INVALID_DEVICE": 200002,
    "ACL_ERROR_INTERNAL_ERROR": 500000, "ACL_ERROR_FAILURE": 500001, "ACL_ERROR_RT_PARAM_INVALID": 107000,
    "ACL_ERROR_RT_INVALID_DEVICEID": 107001, "ACL_ERROR_RT_CONTEXT_NULL": 107002,
    "ACL_ERROR_RT_MEMORY_ALLOCATION": 207001, "ACL_ERROR_RT_NO_DEVICE": 207004,
    "ACL_ERROR_RT_DEVICE_OOM": 207018, "ACL_ERROR_RT_INTERNAL_ERROR": 507000,
    "ACL_ERROR_RT_AICORE_TIMEOUT": 507014, "ACL_ERROR_RT_AICORE_EXCEPTION": 507015,
    "ACL_ERROR_RT_STREAM_SYNC_TIMEOUT": 507046,
    # aclnn status codes
    "ACLNN_SUCCESS": 0, "ACLNN_ERR_PARAM_NULLPTR": 161001, "ACLNN_ERR_PARAM_INVALID": 161002,
    "ACLNN_ERR_RUNTIME_ERROR": 361001, "ACLNN_ERR_INNER": 561000, "ACLNN_ERR_INNER_TILING_ERROR": 561002,
    "ACLNN_ERR_INNER_FIND_KERNEL_ERROR": 561003, "ACLNN_ERR_INNER_CREATE_EXECUTOR": 561101,
    "ACLNN_ERR_INNER_NULLPTR": 561103, "ACLNN_ERR_INNER_OPP_PATH_NOT_FOUND": 561107,
}

# typedef -> what it must be (cann_abi.md "Types")
TYPEDEFS: dict[str, str] = {
    "aclError": "int", "aclnnStatus": "int32_t", "aclrtStream": "void *", "aclrtEvent": "void *",
    "aclrtContext": "void *", "aclTensor": "struct aclTensor", "aclOpExecutor": "struct aclOpExecutor",
    "aclDataType": "aclDataType", "aclFormat": "aclFormat", "aclrtMemcpyKind": "aclrtMemcpyKind",
    "aclrtMemMallocPolicy": "aclrtMemMallocPolicy", "aclrtMemAttr": "aclrtMemAttr",
    # hicann/runtime acl_rt.h
    "aclmdlRI": "void *", "aclmdlRICaptureMode": "aclmdlRICaptureMode",
    "aclmdlRICaptureStatus": "aclmdlRICaptureStatus", "aclrtStreamStatus": "aclrtStreamStatus",
    "aclrtEventRecordedStatus": "aclrtEventRecordedStatus", "aclrtMemLocationType": "aclrtMemLocationType",
    "aclrtMemLocation": "struct aclrtMemLocation", "aclrtPtrAttributes": "struct aclrtPtrAttributes",
    # dlpack.h (include/06_dlpack.h)
    "DLDevice": "DLDevice", "DLDataType": "DLDataType", "DLTensor": "DLTensor",
    "DLManagedTensor": "struct DLManagedTensor", "DLPackVersion": "DLPackVersion",
    "DLManagedTensorVersioned": "struct DLManagedTensorVersioned",
}

ENUMS: dict[str, str] = {  # the enum typedefs and a member that fixes each to its own kind
    "aclDataType": "ACL_BF16", "aclFormat": "ACL_FORMAT_ND", "aclrtMemcpyKind": "ACL_MEMCPY_DEFAULT",
    "aclrtMemMallocPolicy": "ACL_MEM_MALLOC_HUGE_ONLY", "aclrtMemAttr": "ACL_HBM_MEM",
    "aclmdlRICaptureMode": "ACL_MODEL_RI_CAPTURE_MODE_RELAXED",
    "aclmdlRICaptureStatus": "ACL_MODEL_RI_CAPTURE_STATUS_INVALIDATED",
    "aclrtStreamStatus": "ACL_STREAM_STATUS_NOT_READY",
    "aclrtEventRecordedStatus": "ACL_EVENT_RECORDED_STATUS_COMPLETE",
    "aclrtMemLocationType": "ACL_MEM_LOCATION_TYPE_UNREGISTERED",
}


def _load_build_ffi() -> Any:
    spec = importlib.util.spec_from_file_location("build_ffi", ROOT / "build_ffi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ffi() -> Any:
    from pyacl_qscatter._ffi._cann import ffi

    return ffi


@pytest.fixture(scope="module")
def stub_all_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stub library exporting every function of the table (cffi ABI mode types need a resolved symbol)."""
    from test_binding_support import compile_stub

    return compile_stub(tmp_path_factory.mktemp("abi") / "liball.so", FUNCTIONS)


# --------------------------------------------------------------------------------- (a) freshness


def test_generated_module_is_fresh(tmp_path: Path) -> None:
    build_ffi = _load_build_ffi()
    out = tmp_path / "_cann.py"
    assert build_ffi.main(["--output", str(out)]) == 0
    fresh = out.read_bytes()
    committed = GENERATED.read_bytes()
    assert fresh == committed, (
        "pyacl_qscatter/_ffi/_cann.py is stale (or was generated by another cffi version): "
        "run `python build_ffi.py` and commit it"
    )


def test_generated_module_is_marked_and_deterministic() -> None:
    build_ffi = _load_build_ffi()
    first_line = GENERATED.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# generated by build_ffi.py")
    assert "do not edit" in first_line
    assert build_ffi.render() == build_ffi.render()
    names = [p.name for p in build_ffi.header_files()]
    assert names == sorted(p.name for p in (ROOT / "include").glob("*.h"))


def test_check_mode_exit_status(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, str(ROOT / "build_ffi.py"), "--check"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    stale = tmp_path / "_cann.py"
    stale.write_text(GENERATED.read_text(encoding="utf-8") + "# edited by hand\n", encoding="utf-8")
    bad = subprocess.run(
        [sys.executable, str(ROOT / "build_ffi.py"), "--check", "--output", str(stale)],
        capture_output=True, text=True,
    )
    assert bad.returncode == 1
    assert "stale" in bad.stderr


def test_generated_module_needs_only_cffi_backend() -> None:
    text = GENERATED.read_text(encoding="utf-8")
    imports = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["import _cffi_backend"]


# ---------------------------------------------------------------------------- (b) declarations


def test_constants_and_enum_values(ffi: Any) -> None:
    lib = ffi.dlopen(None)  # constants need no symbol lookup in ABI mode
    for name, value in CONSTANTS.items():
        assert getattr(lib, name) == value, name
    declared = set(dir(lib))
    assert declared == set(CONSTANTS) | set(FUNCTIONS), (
        f"declared but not in the table: {sorted(declared - set(CONSTANTS) - set(FUNCTIONS))}; "
        f"in the table but not declared: {sorted(set(CONSTANTS) | set(FUNCTIONS) - declared)}"
    )


def test_typedefs(ffi: Any) -> None:
    typedefs, structs, unions = ffi.list_types()
    assert sorted(typedefs) == sorted(TYPEDEFS)
    assert sorted(structs) == ["DLManagedTensor", "DLManagedTensorVersioned", "aclOpExecutor", "aclTensor",
                               "aclrtMemLocation", "aclrtPtrAttributes"]
    # the layout of aclrtPtrAttributes (acl_rt.h): location {id, type}, pageSize, rsv[4]
    assert [f for f, _ in ffi.typeof("aclrtPtrAttributes").fields] == ["location", "pageSize", "rsv"]
    assert ffi.sizeof("aclrtPtrAttributes") == 28
    # dlpack.h's layouts on a 64-bit ABI: DLTensor 48 bytes; the versioned tensor puts dl_tensor last
    assert [f for f, _ in ffi.typeof("DLTensor").fields] == ["data", "device", "ndim", "dtype", "shape", "strides",
                                                            "byte_offset"]
    sizes = [ffi.sizeof(t) for t in ("DLTensor", "DLManagedTensor", "DLManagedTensorVersioned")]
    assert sizes == [48, 64, 80]
    assert ffi.offsetof("DLManagedTensorVersioned", "dl_tensor") == 32
    assert unions == []
    for name, target in TYPEDEFS.items():
        if name in ENUMS:
            ctype = ffi.typeof(name)
            assert ctype.kind == "enum", name
            assert ctype.elements[getattr(ffi.dlopen(None), ENUMS[name])] == ENUMS[name]
            assert ffi.sizeof(name) == 4
        else:
            assert ffi.typeof(name) == ffi.typeof(target), name
    assert ffi.typeof("aclTensor").kind == "struct"  # opaque: used through pointers only


def test_function_signatures(ffi: Any, stub_all_library: Path) -> None:
    lib = ffi.dlopen(str(stub_all_library), ffi.RTLD_NOW | ffi.RTLD_LOCAL)
    try:
        mismatches = []
        for name, (ret, params, _) in FUNCTIONS.items():
            expected = ffi.typeof(f"{ret}(*)({', '.join(params) or 'void'})")
            actual = ffi.typeof(getattr(lib, name))
            if actual != expected:
                mismatches.append(f"{name}: declared {actual.cname}, cann_abi.md says {expected.cname}")
        assert not mismatches, "\n".join(mismatches)
    finally:
        ffi.dlclose(lib)


def test_type_widths(ffi: Any) -> None:
    assert ffi.sizeof("aclError") == 4 and ffi.sizeof("aclnnStatus") == 4
    assert ffi.sizeof("aclrtStream") == ffi.sizeof("void *")
    assert ffi.typeof("aclnnStatus(*)(void)") == ffi.typeof("int32_t(*)(void)")
