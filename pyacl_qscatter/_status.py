"""Every CANN status code the binding knows: its name, its documented class and what to do about it."""

from __future__ import annotations

from typing import NamedTuple


class Status(NamedTuple):
    name: str
    hint: str


# Codes from CANN's acl_base.h, the runtime's error codes and aclnn's status codes (see cann_abi.md).
STATUS: dict[int, Status] = {
    0: Status("ACL_SUCCESS", "success"),
    100000: Status("ACL_ERROR_INVALID_PARAM", "an argument is invalid"),
    100001: Status("ACL_ERROR_UNINITIALIZE", "aclInit has not been called"),
    100002: Status("ACL_ERROR_REPEAT_INITIALIZE", "aclInit was already called in this process"),
    100037: Status("ACL_ERROR_REPEAT_FINALIZE", "aclFinalize was already called"),
    107000: Status("ACL_ERROR_RT_PARAM_INVALID", "a runtime argument is invalid (often a host pointer given "
                   "where device memory is expected, or an extent outside its allocation)"),
    107001: Status("ACL_ERROR_RT_INVALID_DEVICEID", "no device has that id; check aclrtGetDeviceCount"),
    107002: Status("ACL_ERROR_RT_CONTEXT_NULL", "this thread has no current context: set a device first"),
    107003: Status("ACL_ERROR_RT_STREAM_CONTEXT", "the stream belongs to a context that is not current on this "
                   "thread"),
    200000: Status("ACL_ERROR_BAD_ALLOC", "host or device allocation failed"),
    200001: Status("ACL_ERROR_API_NOT_SUPPORT", "this API is not supported by the installed CANN or SoC"),
    200002: Status("ACL_ERROR_INVALID_DEVICE", "the device is invalid or unavailable"),
    207001: Status("ACL_ERROR_RT_MEMORY_ALLOCATION", "device memory allocation failed: free memory or use "
                   "smaller inputs"),
    207004: Status("ACL_ERROR_RT_NO_DEVICE", "no Ascend device is visible (driver, permissions, "
                   "ASCEND_RT_VISIBLE_DEVICES)"),
    207018: Status("ACL_ERROR_RT_DEVICE_OOM", "the device is out of memory"),
    500000: Status("ACL_ERROR_INTERNAL_ERROR", "internal error in CANN; see the CANN logs"),
    500001: Status("ACL_ERROR_FAILURE", "CANN reported a failure; see the CANN logs"),
    507000: Status("ACL_ERROR_RT_INTERNAL_ERROR", "internal runtime error; see the CANN logs"),
    507014: Status("ACL_ERROR_RT_AICORE_TIMEOUT", "a kernel timed out on the AI Core"),
    507015: Status("ACL_ERROR_RT_AICORE_EXCEPTION", "a kernel faulted on the AI Core (out-of-bounds access, "
                   "use of freed memory)"),
    507016: Status("ACL_ERROR_RT_AICORE_TRAP_EXCEPTION", "a kernel hit a trap on the AI Core"),
    507034: Status("ACL_ERROR_RT_VECTOR_CORE_TIMEOUT", "a kernel timed out on the vector core"),
    507035: Status("ACL_ERROR_RT_VECTOR_CORE_EXCEPTION", "a kernel faulted on the vector core (out-of-bounds "
                   "access, use of freed memory)"),
    507036: Status("ACL_ERROR_RT_VECTOR_CORE_TRAP_EXCEPTION", "a kernel hit a trap on the vector core"),
    507042: Status("ACL_ERROR_RT_AICORE_TRAP_READ_OVERFLOW", "a kernel read out of bounds on the AI Core"),
    507043: Status("ACL_ERROR_RT_AICORE_TRAP_WRITE_OVERFLOW", "a kernel wrote out of bounds on the AI Core"),
    507044: Status("ACL_ERROR_RT_VECTOR_CORE_TRAP_READ_OVERFLOW", "a kernel read out of bounds on the vector "
                   "core"),
    507045: Status("ACL_ERROR_RT_VECTOR_CORE_TRAP_WRITE_OVERFLOW", "a kernel wrote out of bounds on the vector "
                   "core"),
    507046: Status("ACL_ERROR_RT_STREAM_SYNC_TIMEOUT", "waiting for the stream timed out"),
    507053: Status("ACL_ERROR_RT_DEVICE_MEM_ERROR", "device memory error: the device must be reset"),
    507054: Status("ACL_ERROR_RT_HBM_MULTI_BIT_ECC_ERROR", "multi-bit ECC error in HBM: the device must be reset"),
    507055: Status("ACL_ERROR_RT_SUSPECT_DEVICE_MEM_ERROR", "suspected device memory error: the device must be "
                   "reset"),
    161001: Status("ACLNN_ERR_PARAM_NULLPTR", "a required tensor was NULL"),
    161002: Status("ACLNN_ERR_PARAM_INVALID", "the operator rejected its arguments (dtype, rank, "
                   "SoC support)"),
    361001: Status("ACLNN_ERR_RUNTIME_ERROR", "the runtime failed while running the operator"),
    561000: Status("ACLNN_ERR_INNER", "internal error in the operator library"),
    561002: Status("ACLNN_ERR_INNER_TILING_ERROR", "tiling failed: a shape or axis the kernel cannot handle"),
    561003: Status("ACLNN_ERR_INNER_FIND_KERNEL_ERROR", "no kernel for this SoC and dtype combination"),
    561101: Status("ACLNN_ERR_INNER_CREATE_EXECUTOR", "creating the op executor failed"),
    561103: Status("ACLNN_ERR_INNER_NULLPTR", "an internal pointer was NULL"),
    561107: Status("ACLNN_ERR_INNER_OPP_PATH_NOT_FOUND", "operator kernels not found: set ASCEND_OPP_PATH "
                   "(source the toolkit's set_env.sh)"),
}

ACLNN_CODES = frozenset(code for code, s in STATUS.items() if s.name.startswith("ACLNN_"))

# Device faults (hicann/runtime rt_error_codes.h). Kernel faults: in CANN's default mode
# (ACL_CONTINUE_ON_FAILURE) reported at one synchronisation, then cleared. Device-level faults: the device
# refuses every later call until it is reset.
KERNEL_FAULT_CODES = frozenset({507014, 507015, 507016, 507034, 507035, 507036, 507042, 507043, 507044, 507045})
DEVICE_FAULT_CODES = frozenset({507053, 507054, 507055})
FAULT_CODES = KERNEL_FAULT_CODES | DEVICE_FAULT_CODES

# Runtime allocation failures; surfaced as MemoryError subclasses.
ALLOCATION_CODES = frozenset({200000, 207001, 207018})


def status_name(code: int) -> str:
    """Return the symbolic name of a CANN status code, or an "unknown" marker naming the code.

    >>> status_name(161002)
    'ACLNN_ERR_PARAM_INVALID'
    >>> status_name(123)
    'UNKNOWN_STATUS_123'
    """
    entry = STATUS.get(code)
    return entry.name if entry is not None else f"UNKNOWN_STATUS_{code}"
