/* libopapi: aclnnInplaceQuantScatter[V2] phase 1 (checks, workspace size, executor) and phase 2 (launch).
 *
 * Phase 1 makes the checks CANN makes, with CANN's codes: a NULL required argument 161001; dtypes, dtype
 * combinations, ranks, SoC support 161002; shape and axis rules 561002 (tiling). Like CANN it does not
 * look at index values: the kernel catches bad ones when it runs. Product rules follow CANN_EMU_SOC,
 * read at every call. */
#include "emu_op.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const NAMES[EMU_OP_TENSORS] = { "selfRef", "indices", "updates", "quantScales",
                                                   "quantZeroPoints" };

static int soc_is(const char *prefix)
{
    return strncmp(emu_env_str("CANN_EMU_SOC", "Ascend910B1"), prefix, strlen(prefix)) == 0;
}

static int invalid(int code, const char *what)
{
    emuInternalSetError("%s (status %d)", what, code);
    return code;
}

static int check_dtypes(const aclTensor *const in[EMU_OP_TENSORS])
{
    char m[512];
    int32_t self = in[QS_SELF]->v.dtype, idx = in[QS_INDICES]->v.dtype, upd = in[QS_UPDATES]->v.dtype;
    int32_t sc = in[QS_SCALES]->v.dtype, zp = in[QS_ZP] ? in[QS_ZP]->v.dtype : -1;
    if (self != ACL_INT8) {
        emu_format(m, sizeof m, "selfRef must be INT8, got %s", emu_dtype_name(self));
        return invalid(ACLNN_ERR_PARAM_INVALID, m);
    }
    if (idx != ACL_INT32 && idx != ACL_INT64) {
        emu_format(m, sizeof m, "indices must be INT32 or INT64, got %s", emu_dtype_name(idx));
        return invalid(ACLNN_ERR_PARAM_INVALID, m);
    }
    int bf16 = upd == ACL_BF16 && sc == ACL_BF16 && (zp < 0 || zp == ACL_BF16);
    int fp16 = upd == ACL_FLOAT16 && sc == ACL_FLOAT && (zp < 0 || zp == ACL_INT32);
    if (!bf16 && !fp16) {
        emu_format(m, sizeof m, "unsupported dtype combination (updates, quantScales, quantZeroPoints) = "
                   "(%s, %s, %s): expected (BF16, BF16, BF16) or (FLOAT16, FLOAT, INT32)",
                   emu_dtype_name(upd), emu_dtype_name(sc), zp < 0 ? "absent" : emu_dtype_name(zp));
        return invalid(ACLNN_ERR_PARAM_INVALID, m);
    }
    if (bf16 && soc_is("Ascend310P")) {
        emu_format(m, sizeof m, "%s supports only FLOAT16 updates with FLOAT scales and INT32 zero points",
                   emu_env_str("CANN_EMU_SOC", "Ascend910B1"));
        return invalid(ACLNN_ERR_PARAM_INVALID, m);
    }
    return 0;
}

static int check_ranks_formats(const aclTensor *const in[EMU_OP_TENSORS], int64_t reduction)
{
    char m[512];
    uint32_t r = in[QS_SELF]->v.ndim;
    if (r < 3 || r > 8) {
        emu_format(m, sizeof m, "selfRef must have 3 to 8 dims, got %u", r);
        return invalid(ACLNN_ERR_PARAM_INVALID, m);
    }
    if (in[QS_UPDATES]->v.ndim != r) {
        emu_format(m, sizeof m, "updates must have the rank of selfRef (%u), got %u", r, in[QS_UPDATES]->v.ndim);
        return invalid(ACLNN_ERR_PARAM_INVALID, m);
    }
    if (in[QS_INDICES]->v.ndim != 1 && in[QS_INDICES]->v.ndim != 2) {
        emu_format(m, sizeof m, "indices must be 1-D or 2-D, got %u dims", in[QS_INDICES]->v.ndim);
        return invalid(ACLNN_ERR_PARAM_INVALID, m);
    }
    if (reduction != 1) {
        emu_format(m, sizeof m, "reduction must be 1 (update), got %lld", (long long)reduction);
        return invalid(ACLNN_ERR_PARAM_INVALID, m);
    }
    for (int i = 0; i < EMU_OP_TENSORS; i++) {
        int32_t f = in[i] ? in[i]->v.format : ACL_FORMAT_ND;
        if (f != ACL_FORMAT_ND && f != ACL_FORMAT_NCHW && f != ACL_FORMAT_NHWC) {
            emu_format(m, sizeof m, "%s has format %d: only ND (or NCHW/NHWC, read as ND) is supported", NAMES[i], f);
            return invalid(ACLNN_ERR_PARAM_INVALID, m);
        }
    }
    return 0;
}

/* Tiling rules; on success *axis_out is the normalised axis. */
static int check_shapes(const aclTensor *const in[EMU_OP_TENSORS], int64_t axis, int64_t quant_axis, int *axis_out)
{
    char m[512];
    const emu_view *S = &in[QS_SELF]->v, *I = &in[QS_INDICES]->v, *U = &in[QS_UPDATES]->v;
    int64_t r = S->ndim, a = axis < 0 ? axis + r : axis, qa = quant_axis < 0 ? quant_axis + r : quant_axis;
    if (a < 1 || a > r - 2) {
        emu_format(m, sizeof m, "axis %lld (normalised %lld) must be neither the first nor the last of %lld dims",
                   (long long)axis, (long long)a, (long long)r);
        return invalid(ACLNN_ERR_INNER_TILING_ERROR, m);
    }
    if (qa != r - 1) {
        emu_format(m, sizeof m, "quantAxis %lld must be the last dim (%lld)", (long long)quant_axis, (long long)(r - 1));
        return invalid(ACLNN_ERR_INNER_TILING_ERROR, m);
    }
    if (!soc_is("Ascend950") && (S->dims[r - 1] % 32 != 0 || U->dims[r - 1] % 32 != 0)) {
        emu_format(m, sizeof m, "the last dim of selfRef (%lld) and updates (%lld) must be a multiple of 32 on %s",
                   (long long)S->dims[r - 1], (long long)U->dims[r - 1], emu_env_str("CANN_EMU_SOC", "Ascend910B1"));
        return invalid(ACLNN_ERR_INNER_TILING_ERROR, m);
    }
    int64_t C = U->dims[r - 1];
    for (int i = QS_SCALES; i <= QS_ZP; i++)
        if (in[i] && emu_view_numel(&in[i]->v) != C) {
            emu_format(m, sizeof m, "%s must hold %lld elements (updates' last dim), got %lld", NAMES[i],
                       (long long)C, (long long)emu_view_numel(&in[i]->v));
            return invalid(ACLNN_ERR_INNER_TILING_ERROR, m);
        }
    if (U->dims[0] != I->dims[0] || (I->ndim == 1 && I->dims[0] > S->dims[0])) {
        emu_format(m, sizeof m, "batch mismatch: updates.shape[0]=%lld, indices.shape[0]=%lld, selfRef.shape[0]=%lld",
                   (long long)U->dims[0], (long long)I->dims[0], (long long)S->dims[0]);
        return invalid(ACLNN_ERR_INNER_TILING_ERROR, m);
    }
    if (I->ndim == 2 && I->dims[1] != 2) {
        emu_format(m, sizeof m, "2-D indices must be [B, 2], got [%lld, %lld]", (long long)I->dims[0], (long long)I->dims[1]);
        return invalid(ACLNN_ERR_INNER_TILING_ERROR, m);
    }
    for (int64_t d = 1; d < r; d++)
        if (d == a ? U->dims[d] > S->dims[d] : U->dims[d] != S->dims[d]) {
            emu_format(m, sizeof m, "updates.shape[%lld]=%lld does not fit selfRef.shape[%lld]=%lld", (long long)d,
                       (long long)U->dims[d], (long long)d, (long long)S->dims[d]);
            return invalid(ACLNN_ERR_INNER_TILING_ERROR, m);
        }
    *axis_out = (int)a;
    return 0;
}

static int check_opp_path(void)
{
    const char *p = getenv("ASCEND_OPP_PATH");
    struct stat st;
    if (p && *p && stat(p, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    return invalid(ACLNN_ERR_INNER_OPP_PATH_NOT_FOUND,
                   "cannot find the operator kernels: ASCEND_OPP_PATH is unset or not a directory "
                   "(source the toolkit's set_env.sh)");
}

static aclnnStatus phase1(int v2, aclTensor *self, const aclTensor *indices, const aclTensor *updates,
                          const aclTensor *scales, const aclTensor *zps, int64_t axis, int64_t quant_axis,
                          int64_t reduction, const char *round_mode, uint64_t *workspace_size,
                          aclOpExecutor **executor)
{
    const aclTensor *const in[EMU_OP_TENSORS] = { self, indices, updates, scales, zps };
    char m[512];
    int rc = emuInternalRequireInit(), a = 0;
    if (rc) return rc;
    for (int i = 0; i < QS_ZP; i++)
        if (!in[i]) {
            emu_format(m, sizeof m, "%s is NULL", NAMES[i]);
            return invalid(ACLNN_ERR_PARAM_NULLPTR, m);
        }
    if (!workspace_size || !executor)
        return invalid(ACLNN_ERR_PARAM_NULLPTR, !executor ? "executor is NULL" : "workspaceSize is NULL");
    if (v2 && !round_mode) return invalid(ACLNN_ERR_PARAM_NULLPTR, "roundMode is NULL");
    for (int i = 0; i < EMU_OP_TENSORS; i++)
        if (in[i] && !emuInternalHandleLive(EMU_H_TENSOR, in[i])) {
            emu_format(m, sizeof m, "%s (%p) is not a live tensor from aclCreateTensor", NAMES[i], (const void *)in[i]);
            return invalid(ACLNN_ERR_PARAM_INVALID, m);
        }
    if (v2 && !soc_is("Ascend950")) {
        emu_format(m, sizeof m, "aclnnInplaceQuantScatterV2 is supported only on Ascend950, not %s",
                   emu_env_str("CANN_EMU_SOC", "Ascend910B1"));
        return invalid(ACLNN_ERR_PARAM_INVALID, m);
    }
    if (v2 && strcmp(round_mode, "rint") != 0) {
        emu_format(m, sizeof m, "roundMode must be \"rint\" for INT8 output, got \"%.32s\"", round_mode);
        return invalid(ACLNN_ERR_PARAM_INVALID, m);
    }
    if ((rc = check_dtypes(in)) || (rc = check_ranks_formats(in, reduction)) ||
        (rc = check_shapes(in, axis, quant_axis, &a)))
        return rc;
    int empty = 0;
    for (int i = 0; i < QS_ZP; i++) empty |= emu_view_numel(&in[i]->v) == 0;
    if (!empty && (rc = check_opp_path())) return rc;

    aclOpExecutor *e = calloc(1, sizeof *e);
    if (!e || emuInternalHandleAdd(EMU_H_EXECUTOR, e) != 0) {
        free(e);
        return invalid(ACLNN_ERR_INNER_CREATE_EXECUTOR, "out of host memory");
    }
    static uint64_t serial;
    e->serial = ++serial;
    e->v2 = v2;
    e->empty = empty;
    e->has_zp = zps != NULL;
    e->axis = a;
    /* Empty inputs need no workspace; otherwise the size a test asked for (default 1 MiB). */
    e->workspace_size = empty ? 0 : emu_env_u64("CANN_EMU_WORKSPACE_BYTES", 1u << 20);
    for (int i = 0; i < EMU_OP_TENSORS; i++)
        if (in[i]) {
            e->t[i] = in[i]->v;
            e->src[i] = in[i];
            e->src_serial[i] = in[i]->serial;
        }
    emuInternalStatAdd(EMU_STAT_LIVE_EXECUTORS, 1); /* until phase 2 consumes it, or it is destroyed */
    *workspace_size = e->workspace_size;
    *executor = e;
    return ACLNN_SUCCESS;
}

static int check_launch_executor(aclOpExecutor *e)
{
    if (!e) return invalid(ACLNN_ERR_PARAM_NULLPTR, "executor is NULL");
    if (emuInternalHandleDead(EMU_H_EXECUTOR, e)) {
        /* Already deleted by nnopbase: on hardware this launch reads freed memory. */
        emuInternalStatAdd(EMU_STAT_ERRORS_DETECTED, 1);
        return invalid(ACLNN_ERR_PARAM_INVALID, "the executor was already consumed (use after free): phase 2 "
                       "deletes a non-repeatable executor whether it succeeds or fails, and "
                       "aclDestroyAclOpExecutor deletes any");
    }
    if (!emuInternalHandleLive(EMU_H_EXECUTOR, e))
        return invalid(ACLNN_ERR_PARAM_INVALID, "not an executor from a phase-1 call");
    return 0;
}

/* Everything phase 2 does with a live executor; *null_workspace says the NULL-workspace error happened. */
static int launch(int v2, void *workspace, uint64_t workspace_size, aclOpExecutor *e, aclrtStream stream,
                  int *null_workspace)
{
    char m[512];
    void *s;
    int dev, rc;
    if (e->v2 != v2)
        return invalid(ACLNN_ERR_PARAM_INVALID, v2 ? "the executor came from the V1 phase 1"
                                                   : "the executor came from the V2 phase 1");
    if ((rc = emuInternalStreamLaunch(stream, &s, &dev, ACLNN_ERR_RUNTIME_ERROR))) return rc;
    if (e->empty) return 0;
    if (workspace_size < e->workspace_size) {
        emu_format(m, sizeof m, "workspaceSize %llu is smaller than the %llu bytes phase 1 asked for",
                   (unsigned long long)workspace_size, (unsigned long long)e->workspace_size);
        return invalid(ACLNN_ERR_PARAM_INVALID, m);
    }
    if (e->workspace_size && !workspace) {
        *null_workspace = 1;
        return invalid(ACLNN_ERR_PARAM_NULLPTR, "workspace is NULL");
    }
    if (e->workspace_size && (rc = emuInternalDevCheck((uintptr_t)workspace, e->workspace_size, dev, "workspace")))
        return rc;
    qs_job job = { .has_zp = e->has_zp, .axis = e->axis, .workspace = (uintptr_t)workspace,
                   .workspace_size = e->workspace_size };
    emu_task_desc t = { "QuantScatter kernel", emu_qs_kernel, free, NULL, 0, { { 0, 0, 0 } } };
    for (int i = 0; i < EMU_OP_TENSORS; i++) {
        if (!e->src[i]) continue;
        if (!emuInternalHandleLive(EMU_H_TENSOR, e->src[i]) || e->src[i]->serial != e->src_serial[i]) {
            emu_format(m, sizeof m, "the %s descriptor was destroyed before phase 2: keep descriptors "
                       "alive until phase 2 returns", NAMES[i]);
            return invalid(ACLNN_ERR_PARAM_INVALID, m);
        }
        uintptr_t lo, hi;
        if (emu_view_bytes(&e->t[i], &lo, &hi) == 1) {
            if (!e->t[i].data) {
                emu_format(m, sizeof m, "%s has no device address (set one with aclSetInputTensorAddr)", NAMES[i]);
                return invalid(ACLNN_ERR_PARAM_NULLPTR, m);
            }
            if ((rc = emuInternalDevCheck(lo, hi - lo, dev, NAMES[i]))) return rc;
            t.ranges[t.nranges++] = (emu_range){ lo, hi, 0 };
        }
        job.t[i] = e->t[i];
    }
    if (e->workspace_size)
        t.ranges[t.nranges++] = (emu_range){ (uintptr_t)workspace, (uintptr_t)workspace + e->workspace_size, 0 };
    if (!(t.payload = malloc(sizeof job))) return invalid(ACLNN_ERR_INNER, "out of host memory");
    memcpy(t.payload, &job, sizeof job);
    return emuInternalEnqueue(s, &t);
}

static aclnnStatus phase2(int v2, void *workspace, uint64_t workspace_size, aclOpExecutor *e, aclrtStream stream)
{
    int rc = emuInternalRequireInit(), null_workspace = 0;
    if (rc || (rc = check_launch_executor(e))) return rc;
    rc = launch(v2, workspace, workspace_size, e, stream, &null_workspace);
    /* nnopbase's CommonOpExecutorRun (hicann/opbase): after the run a repeatable executor keeps its cache and
     * any other is deleted, whether the launch succeeded or failed; its NULL-workspace error path deletes the
     * executor even when it is repeatable. */
    if (!e->repeatable || null_workspace) {
        emuInternalHandleRemove(EMU_H_EXECUTOR, e);
        free(e);
        emuInternalStatAdd(EMU_STAT_LIVE_EXECUTORS, -1);
    }
    return rc;
}

aclnnStatus aclnnInplaceQuantScatterGetWorkspaceSize(aclTensor *selfRef, const aclTensor *indices,
                                                     const aclTensor *updates, const aclTensor *quantScales,
                                                     const aclTensor *quantZeroPoints, int64_t axis,
                                                     int64_t quantAxis, int64_t reduction,
                                                     uint64_t *workspaceSize, aclOpExecutor **executor)
{
    EMU_CALL(aclnnInplaceQuantScatterGetWorkspaceSize,
             phase1(0, selfRef, indices, updates, quantScales, quantZeroPoints, axis, quantAxis, reduction,
                    NULL, workspaceSize, executor));
}

aclnnStatus aclnnInplaceQuantScatter(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor,
                                     aclrtStream stream)
{
    EMU_CALL(aclnnInplaceQuantScatter, phase2(0, workspace, workspaceSize, executor, stream));
}

#ifndef EMU_NO_V2
aclnnStatus aclnnInplaceQuantScatterV2GetWorkspaceSize(aclTensor *selfRef, const aclTensor *indices,
                                                       const aclTensor *updates, const aclTensor *quantScales,
                                                       const aclTensor *quantZeroPoints, int64_t axis,
                                                       int64_t quantAxis, int64_t reduction,
                                                       const char *roundMode, uint64_t *workspaceSize,
                                                       aclOpExecutor **executor)
{
    EMU_CALL(aclnnInplaceQuantScatterV2GetWorkspaceSize,
             phase1(1, selfRef, indices, updates, quantScales, quantZeroPoints, axis, quantAxis, reduction,
                    roundMode, workspaceSize, executor));
}

aclnnStatus aclnnInplaceQuantScatterV2(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor,
                                       aclrtStream stream)
{
    EMU_CALL(aclnnInplaceQuantScatterV2, phase2(1, workspace, workspaceSize, executor, stream));
}
#endif
