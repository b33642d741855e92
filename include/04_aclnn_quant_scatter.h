/* Mirrors CANN include/aclnnop/aclnn_quant_scatter.h (CANN 8.1.RC1; V2 from CANN 8.5, Ascend 950 only).
 * Exported by libopapi.so (<= 8.3), libopapi_nn.so (>= 8.5) or libaclnn_ops_infer.so.
 * Written for pyacl_qscatter from the published interface; cdef-ready (no preprocessor logic). */

aclnnStatus aclnnInplaceQuantScatterGetWorkspaceSize(aclTensor *selfRef, const aclTensor *indices,
                                                     const aclTensor *updates, const aclTensor *quantScales,
                                                     const aclTensor *quantZeroPoints, int64_t axis,
                                                     int64_t quantAxis, int64_t reduction,
                                                     uint64_t *workspaceSize, aclOpExecutor **executor);
aclnnStatus aclnnInplaceQuantScatter(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor,
                                     aclrtStream stream);

aclnnStatus aclnnInplaceQuantScatterV2GetWorkspaceSize(aclTensor *selfRef, const aclTensor *indices,
                                                       const aclTensor *updates, const aclTensor *quantScales,
                                                       const aclTensor *quantZeroPoints, int64_t axis,
                                                       int64_t quantAxis, int64_t reduction,
                                                       const char *roundMode, uint64_t *workspaceSize,
                                                       aclOpExecutor **executor);
aclnnStatus aclnnInplaceQuantScatterV2(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor,
                                       aclrtStream stream);
