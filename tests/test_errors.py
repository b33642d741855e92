"""cann_error: every status code of cann_abi.md formats with its name, number, class and CANN's message.

The table is written here from cann_abi.md ("Status codes") and, for the device faults and 107003, from
hicann/runtime's include/external/acl/error_codes/rt_error_codes.h, independently of pyacl_qscatter._status.
"""

from __future__ import annotations

from typing import Any

import pytest

from pyacl_qscatter import errors
from pyacl_qscatter._status import STATUS
from pyacl_qscatter.errors import (
    AclnnArgumentError,
    AclnnError,
    CannError,
    CannInternalError,
    CannNotFoundError,
    CannOutOfMemoryError,
    CannResourceError,
    CannStateError,
    CannUsageError,
    DeviceFaultError,
    QScatterError,
    cann_error,
)

# code -> (name, expected class)
CODES: dict[int, tuple[str, type[CannError]]] = {
    100000: ("ACL_ERROR_INVALID_PARAM", CannUsageError),
    100001: ("ACL_ERROR_UNINITIALIZE", CannUsageError),
    100002: ("ACL_ERROR_REPEAT_INITIALIZE", CannUsageError),
    100037: ("ACL_ERROR_REPEAT_FINALIZE", CannUsageError),
    200000: ("ACL_ERROR_BAD_ALLOC", CannOutOfMemoryError),
    200001: ("ACL_ERROR_API_NOT_SUPPORT", CannResourceError),
    200002: ("ACL_ERROR_INVALID_DEVICE", CannResourceError),
    500000: ("ACL_ERROR_INTERNAL_ERROR", CannInternalError),
    500001: ("ACL_ERROR_FAILURE", CannInternalError),
    107000: ("ACL_ERROR_RT_PARAM_INVALID", CannUsageError),
    107001: ("ACL_ERROR_RT_INVALID_DEVICEID", CannUsageError),
    107002: ("ACL_ERROR_RT_CONTEXT_NULL", CannUsageError),
    207001: ("ACL_ERROR_RT_MEMORY_ALLOCATION", CannOutOfMemoryError),
    207004: ("ACL_ERROR_RT_NO_DEVICE", CannResourceError),
    207018: ("ACL_ERROR_RT_DEVICE_OOM", CannOutOfMemoryError),
    507000: ("ACL_ERROR_RT_INTERNAL_ERROR", CannInternalError),
    107003: ("ACL_ERROR_RT_STREAM_CONTEXT", CannUsageError),
    507014: ("ACL_ERROR_RT_AICORE_TIMEOUT", DeviceFaultError),
    507015: ("ACL_ERROR_RT_AICORE_EXCEPTION", DeviceFaultError),
    507016: ("ACL_ERROR_RT_AICORE_TRAP_EXCEPTION", DeviceFaultError),
    507034: ("ACL_ERROR_RT_VECTOR_CORE_TIMEOUT", DeviceFaultError),
    507035: ("ACL_ERROR_RT_VECTOR_CORE_EXCEPTION", DeviceFaultError),
    507036: ("ACL_ERROR_RT_VECTOR_CORE_TRAP_EXCEPTION", DeviceFaultError),
    507042: ("ACL_ERROR_RT_AICORE_TRAP_READ_OVERFLOW", DeviceFaultError),
    507043: ("ACL_ERROR_RT_AICORE_TRAP_WRITE_OVERFLOW", DeviceFaultError),
    507044: ("ACL_ERROR_RT_VECTOR_CORE_TRAP_READ_OVERFLOW", DeviceFaultError),
    507045: ("ACL_ERROR_RT_VECTOR_CORE_TRAP_WRITE_OVERFLOW", DeviceFaultError),
    507053: ("ACL_ERROR_RT_DEVICE_MEM_ERROR", DeviceFaultError),
    507054: ("ACL_ERROR_RT_HBM_MULTI_BIT_ECC_ERROR", DeviceFaultError),
    507055: ("ACL_ERROR_RT_SUSPECT_DEVICE_MEM_ERROR", DeviceFaultError),
    507046: ("ACL_ERROR_RT_STREAM_SYNC_TIMEOUT", CannInternalError),
    161001: ("ACLNN_ERR_PARAM_NULLPTR", AclnnArgumentError),
    161002: ("ACLNN_ERR_PARAM_INVALID", AclnnArgumentError),
    361001: ("ACLNN_ERR_RUNTIME_ERROR", AclnnError),
    561000: ("ACLNN_ERR_INNER", AclnnError),
    561002: ("ACLNN_ERR_INNER_TILING_ERROR", AclnnError),
    561003: ("ACLNN_ERR_INNER_FIND_KERNEL_ERROR", AclnnError),
    561101: ("ACLNN_ERR_INNER_CREATE_EXECUTOR", AclnnError),
    561103: ("ACLNN_ERR_INNER_NULLPTR", AclnnError),
    561107: ("ACLNN_ERR_INNER_OPP_PATH_NOT_FOUND", AclnnError),
}


def test_table_matches_status_module() -> None:
    assert set(STATUS) - {0} == set(CODES)
    for code, (name, _) in CODES.items():
        assert STATUS[code].name == name


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_formats(code: int) -> None:
    name, cls = CODES[code]
    err = cann_error("aclSomething", code, "  EZ9999: the device said no  \n")
    assert type(err) is cls
    assert isinstance(err, CannError) and isinstance(err, QScatterError) and isinstance(err, RuntimeError)
    assert (err.function, err.code, err.name) == ("aclSomething", code, name)
    assert err.cann_message == "EZ9999: the device said no"
    text = str(err)
    assert text.startswith(f"aclSomething failed with {name} ({code}): ")
    assert text.endswith("\nCANN says: EZ9999: the device said no")
    assert STATUS[code].hint in text


@pytest.mark.parametrize("code", sorted(CODES))
def test_class_hierarchy(code: int) -> None:
    err = cann_error("f", code)
    first = code // 100000
    aclnn = code // 1000 in (161, 361, 561)
    assert isinstance(err, AclnnError) == aclnn
    assert isinstance(err, MemoryError) == (code in (200000, 207001, 207018))
    if aclnn:
        assert isinstance(err, ValueError) == (code // 1000 == 161)
        assert not isinstance(err, MemoryError)
    else:
        assert isinstance(err, ValueError) == (first == 1)
        if first == 2:
            assert isinstance(err, CannResourceError)
        if first == 5:
            assert isinstance(err, CannInternalError)


@pytest.mark.parametrize("message", [None, "", "   ", 42, b"bytes", object()])
def test_weird_messages(message: Any) -> None:
    err = cann_error("aclrtMalloc", 207001, message)
    assert err.cann_message == ""
    assert "CANN says" not in str(err)
    assert isinstance(err, MemoryError)


@pytest.mark.parametrize("code", [None, "x", 3.5, "161002", float("nan"), float("inf"), object(), -5, 0, 7, 42])
def test_weird_codes_never_raise(code: Any) -> None:
    err = cann_error("aclFoo", code, "msg")
    assert isinstance(err, CannError)
    assert isinstance(err.code, int)
    if err.code not in STATUS:
        assert err.name == f"UNKNOWN_STATUS_{err.code}"
        assert "unknown status code" in str(err)


def test_unknown_codes_keep_their_class_digit() -> None:
    assert isinstance(cann_error("f", 199999), CannUsageError)
    assert isinstance(cann_error("f", 388888), CannStateError)
    assert isinstance(cann_error("f", 161999), AclnnArgumentError)
    assert isinstance(cann_error("f", 561999), AclnnError)
    assert type(cann_error("f", 999999)) is CannInternalError
    assert "UNKNOWN_STATUS_123456" in str(cann_error("f", 123456))


def test_string_code_is_converted() -> None:
    err = cann_error("f", "161002")  # type: ignore[arg-type]
    assert err.code == 161002 and isinstance(err, AclnnArgumentError)


def test_not_found_error_is_an_oserror() -> None:
    err = CannNotFoundError([("ASCEND_HOME_PATH=/x", "directory does not exist")], "set ASCEND_HOME_PATH")
    assert isinstance(err, OSError) and isinstance(err, QScatterError)
    assert "ASCEND_HOME_PATH=/x: directory does not exist" in str(err)
    assert "Fix: set ASCEND_HOME_PATH" in str(err)
    assert "(no place to look)" in str(CannNotFoundError([], "fix"))


@pytest.mark.parametrize("code", [507014, 507035, 507045, 507053])
def test_device_faults_say_the_output_is_undefined(code: int) -> None:
    err = cann_error("aclrtSynchronizeStream", code, "EZ9999: aicore exception")
    assert isinstance(err, DeviceFaultError) and isinstance(err, RuntimeError)
    first = str(err).splitlines()[0]
    assert "What the failed work wrote is undefined" in first
    # A device-level fault stops the device; a kernel fault is reported once (CANN's default mode).
    assert err.sticky == (code == 507053)
    assert ("reset" in first) == (code == 507053)


def test_sticky_kernel_fault_says_reset_and_pickles() -> None:
    import pickle

    err = DeviceFaultError("aclnnInplaceQuantScatter", 507015, "stopped", sticky=True)
    again = pickle.loads(pickle.dumps(err))
    assert again.sticky and str(again) == str(err) and "Device.reset()" in str(err)


def test_cann_error_stays_pure_the_fault_hook_is_the_device_layers() -> None:
    seen: list[int] = []
    old, errors.fault_hook = errors.fault_hook, lambda e: seen.append(e.code)
    try:
        cann_error("f", 507015)  # building an exception (here, in a test) must stop no device
        cann_error("f", 507054)
    finally:
        errors.fault_hook = old
    assert seen == []


@pytest.mark.parametrize("code", [207001, 161002, 507015, 123])
def test_errors_pickle(code: int) -> None:  # they cross process boundaries (multiprocessing, pytest-xdist)
    import pickle

    err = cann_error("aclrtMalloc", code, "oom")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is type(err) and str(again) == str(err) and again.code == code
    nf = CannNotFoundError([("a", "b")], "fix")
    nf2 = pickle.loads(pickle.dumps(nf))
    assert str(nf2) == str(nf) and nf2.attempts == [("a", "b")]


def test_every_public_exception_is_exported() -> None:
    for name in errors.__all__:
        assert hasattr(errors, name)
