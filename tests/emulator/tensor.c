/* libnnopbase: tensor descriptors and the executor lifecycle calls.
 *
 * A descriptor records where its view lies in device memory; the extent (shape, element strides, offset,
 * item size) must fit one live device block, checked here when an address is given and again when the op
 * is launched and when it runs. A NULL address is allowed (CANN's repeatable executors get theirs later
 * through aclSetInputTensorAddr). */
#include "emu_internal.h"

#include <stdlib.h>
#include <string.h>

static uint64_t g_tensor_serial;

static aclTensor *create_locked(const int64_t *viewDims, uint64_t viewDimsNum, aclDataType dataType,
                                const int64_t *stride, int64_t offset, aclFormat format,
                                const int64_t *storageDims, uint64_t storageDimsNum, void *tensorData)
{
    emu_view v;
    memset(&v, 0, sizeof v);
    if (viewDimsNum > EMU_MAX_DIMS || (viewDimsNum && !viewDims)) {
        emuInternalSetError(viewDimsNum > EMU_MAX_DIMS ? "%llu view dims: at most 16 are supported"
                                                       : "viewDims is NULL but viewDimsNum is %llu",
                            (unsigned long long)viewDimsNum);
        return NULL;
    }
    if (emu_dtype_size(dataType) == 0) {
        emuInternalSetError("data type %d is not one this emulator can place in memory", (int)dataType);
        return NULL;
    }
    if (offset < 0) {
        emuInternalSetError("offset %lld is negative", (long long)offset);
        return NULL;
    }
    if (storageDimsNum > EMU_MAX_DIMS || (storageDimsNum && !storageDims)) {
        emuInternalSetError("storageDims (%llu of them) are missing or too many", (unsigned long long)storageDimsNum);
        return NULL;
    }
    v.dtype = dataType;
    v.format = format;
    v.ndim = (uint32_t)viewDimsNum;
    v.offset = offset;
    v.data = (uintptr_t)tensorData;
    int64_t contiguous = 1;
    for (int i = (int)viewDimsNum - 1; i >= 0; i--) {
        if (viewDims[i] < 0 || (stride && stride[i] < 0)) {
            emuInternalSetError("dim %d has a negative %s (%lld): copy the array to a plain layout first",
                                i, viewDims[i] < 0 ? "size" : "stride",
                                (long long)(viewDims[i] < 0 ? viewDims[i] : stride[i]));
            return NULL;
        }
        v.dims[i] = viewDims[i];
        /* NULL strides mean a contiguous view, as in CANN's own samples. */
        v.strides[i] = stride ? stride[i] : contiguous;
        if (__builtin_mul_overflow(contiguous, viewDims[i] ? viewDims[i] : 1, &contiguous)) {
            emuInternalSetError("the view's element count overflows");
            return NULL;
        }
    }
    v.storage_elems = -1;
    if (storageDimsNum) {
        int64_t n = 1;
        for (uint64_t i = 0; i < storageDimsNum; i++)
            if (storageDims[i] < 0 || __builtin_mul_overflow(n, storageDims[i], &n)) {
                emuInternalSetError("storageDims[%llu] = %lld is invalid", (unsigned long long)i,
                                    (long long)storageDims[i]);
                return NULL;
            }
        v.storage_elems = n;
    }
    uintptr_t lo, hi;
    int nonempty = emu_view_bytes(&v, &lo, &hi);
    if (nonempty < 0) {
        emuInternalSetError("the view's extent overflows");
        return NULL;
    }
    if (nonempty) {
        int64_t first, last;
        emu_view_span(&v, &first, &last);
        /* The storage is what CANN may copy as a whole (non-contiguous views): the view must lie in it. */
        if (v.storage_elems >= 0 && last >= v.storage_elems) {
            emuInternalSetError("the view reaches element %lld but the storage (storageDims) holds only %lld "
                                "elements: pass the whole storage's extent", (long long)last,
                                (long long)v.storage_elems);
            return NULL;
        }
        if (tensorData) {
            if (emuInternalDevCheck(lo, hi - lo, -1, "tensorData (view extent)") != 0) return NULL;
            int64_t isz = emu_dtype_size(dataType), sbytes;
            if (v.storage_elems > 0 && !__builtin_mul_overflow(v.storage_elems, isz, &sbytes) &&
                emuInternalDevCheck(v.data, (uint64_t)sbytes, -1, "tensorData (storage extent)") != 0)
                return NULL;
        }
    }
    /* CANN's aclCreateTensor documentation requires tensorData to be 32-byte aligned and calls anything else
     * undefined; nnopbase does not check, so the tensor is created and the misuse counted. */
    if (v.data % 32 != 0) emuInternalStatAdd(EMU_STAT_ERRORS_DETECTED, 1);
    aclTensor *t = calloc(1, sizeof *t);
    if (!t || emuInternalHandleAdd(EMU_H_TENSOR, t) != 0) {
        free(t);
        emuInternalSetError("out of host memory");
        return NULL;
    }
    t->serial = ++g_tensor_serial;
    t->v = v;
    emuInternalStatAdd(EMU_STAT_LIVE_TENSORS, 1);
    return t;
}

aclTensor *aclCreateTensor(const int64_t *viewDims, uint64_t viewDimsNum, aclDataType dataType,
                           const int64_t *stride, int64_t offset, aclFormat format,
                           const int64_t *storageDims, uint64_t storageDimsNum, void *tensorData)
{
    emuInternalLock();
    aclTensor *t = NULL;
    if (emuInternalEnter(EMU_SYM_aclCreateTensor) == 0)
        t = create_locked(viewDims, viewDimsNum, dataType, stride, offset, format, storageDims,
                          storageDimsNum, tensorData);
    emuInternalUnlock();
    return t;
}

static aclnnStatus destroy_tensor_locked(const aclTensor *tensor)
{
    if (!tensor) {
        emuInternalSetError("tensor is NULL (status 161001)");
        return ACLNN_ERR_PARAM_NULLPTR;
    }
    if (!emuInternalHandleLive(EMU_H_TENSOR, tensor)) {
        emuInternalSetError("%p is not a live tensor%s (status 161002)", (const void *)tensor,
                            emuInternalHandleDead(EMU_H_TENSOR, tensor) ? ": it was already destroyed" : "");
        return ACLNN_ERR_PARAM_INVALID;
    }
    emuInternalHandleRemove(EMU_H_TENSOR, tensor);
    free((void *)tensor);
    emuInternalStatAdd(EMU_STAT_LIVE_TENSORS, -1);
    return ACLNN_SUCCESS;
}

aclnnStatus aclDestroyTensor(const aclTensor *tensor) { EMU_CALL(aclDestroyTensor, destroy_tensor_locked(tensor)); }

/* 0 for a live executor; else the status for a NULL, consumed or foreign one (message set). A consumed
 * executor is memory nnopbase already deleted (CommonOpExecutorRun deletes every non-repeatable executor
 * after phase 2, success or failure): touching it is a use-after-free on hardware, so it is counted. */
static int check_executor(const aclOpExecutor *e, int null_code)
{
    if (!e) {
        emuInternalSetError("executor is NULL (status %d)", null_code);
        return null_code;
    }
    if (emuInternalHandleLive(EMU_H_EXECUTOR, e)) return 0;
    if (emuInternalHandleDead(EMU_H_EXECUTOR, e)) {
        emuInternalStatAdd(EMU_STAT_ERRORS_DETECTED, 1);
        emuInternalSetError("executor %p was already consumed by its phase 2 or destroyed: phase 2 deletes a "
                            "non-repeatable executor whether it succeeds or fails, so using it again is a "
                            "use after free (status 161002)", (const void *)e);
    } else
        emuInternalSetError("%p is not an executor from a phase-1 call (status 161002)", (const void *)e);
    return ACLNN_ERR_PARAM_INVALID;
}

static aclnnStatus repeatable_locked(aclOpExecutor *e)
{
    int rc = check_executor(e, ACLNN_ERR_PARAM_NULLPTR);
    if (rc) return rc;
    /* ops-nn's op_api/aclnn_quant_scatter.cpp writes selfRef back through an in-place ViewCopy, which
     * CANN's executor-reuse rules exclude (shared/spec/emulator.md, "Strict like the real toolkit"), so
     * the call is refused. CANN_EMU_REPEATABLE=1 (read at each call) accepts it, so that a package path
     * that uses it stays testable. */
    if (emu_env_u64("CANN_EMU_REPEATABLE", 0) != 1) {
        emuInternalSetError("QuantScatter cannot be made repeatable: it writes selfRef in place through a "
                            "ViewCopy, which executor reuse does not support (status 561000)");
        return ACLNN_ERR_INNER;
    }
    e->repeatable = 1;
    return ACLNN_SUCCESS;
}

aclnnStatus aclSetAclOpExecutorRepeatable(aclOpExecutor *executor)
{
    EMU_CALL(aclSetAclOpExecutorRepeatable, repeatable_locked(executor));
}

static aclnnStatus destroy_executor_locked(aclOpExecutor *e)
{
    int rc = check_executor(e, ACLNN_ERR_PARAM_NULLPTR);
    if (rc) return rc;
    /* Queued launches hold their own copy of what they need, so this never breaks pending work. */
    emuInternalHandleRemove(EMU_H_EXECUTOR, e);
    free(e);
    emuInternalStatAdd(EMU_STAT_LIVE_EXECUTORS, -1);
    return ACLNN_SUCCESS;
}

aclnnStatus aclDestroyAclOpExecutor(aclOpExecutor *executor)
{
    EMU_CALL(aclDestroyAclOpExecutor, destroy_executor_locked(executor));
}

/* Inputs are numbered in the op's parameter order: 0 selfRef, 1 indices, 2 updates, 3 quantScales,
 * 4 quantZeroPoints; the only output, 0, is selfRef again. */
static aclnnStatus set_addr_locked(aclOpExecutor *e, size_t slot, size_t index, aclTensor *tensor, void *addr)
{
    if (!e || !tensor) {
        emuInternalSetError("%s is NULL (status 561103)", !e ? "executor" : "tensor");
        return ACLNN_ERR_INNER_NULLPTR;
    }
    int rc = check_executor(e, ACLNN_ERR_INNER_NULLPTR);
    if (rc) return rc;
    if (!e->repeatable) {
        emuInternalSetError("the executor is not repeatable: call aclSetAclOpExecutorRepeatable right after "
                            "phase 1 (status 161002)");
        return ACLNN_ERR_PARAM_INVALID;
    }
    if (slot >= EMU_OP_TENSORS || !e->src[slot]) {
        emuInternalSetError("index %zu is out of range or names a tensor that was NULL at phase 1 "
                            "(status 161002)", index);
        return ACLNN_ERR_PARAM_INVALID;
    }
    if (tensor != e->src[slot] || !emuInternalHandleLive(EMU_H_TENSOR, tensor) ||
        tensor->serial != e->src_serial[slot]) {
        emuInternalSetError("tensor %p is not the live descriptor given at phase 1 for index %zu "
                            "(status 161002)", (void *)tensor, index);
        return ACLNN_ERR_PARAM_INVALID;
    }
    emu_view v = e->t[slot];
    v.data = (uintptr_t)addr;
    uintptr_t lo, hi;
    if (addr && emu_view_bytes(&v, &lo, &hi) == 1 && (rc = emuInternalDevCheck(lo, hi - lo, -1, "addr")))
        return rc;
    e->t[slot].data = (uintptr_t)addr;
    tensor->v.data = (uintptr_t)addr;
    return ACLNN_SUCCESS;
}

aclnnStatus aclSetInputTensorAddr(aclOpExecutor *executor, const size_t index, aclTensor *tensor, void *addr)
{
    EMU_CALL(aclSetInputTensorAddr, set_addr_locked(executor, index, index, tensor, addr));
}

aclnnStatus aclSetOutputTensorAddr(aclOpExecutor *executor, const size_t index, aclTensor *tensor, void *addr)
{
    /* Output 0 is selfRef, input 0; any other output index does not exist. */
    EMU_CALL(aclSetOutputTensorAddr,
             set_addr_locked(executor, index == 0 ? 0 : EMU_OP_TENSORS, index, tensor, addr));
}
