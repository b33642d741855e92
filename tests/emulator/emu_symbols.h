/* Every CANN symbol the emulator exports, with the status a fault injected into it returns when the
 * injection does not name one (code 0). X(name, default_fault_code). One list so that the call counters
 * ("calls:<symbol>"), the fault table and the export tests cannot drift apart. */
#ifndef EMU_SYMBOLS_H
#define EMU_SYMBOLS_H

/* aclFinalizeReference exists from CANN 8.5: a tree built as an older release does not export it. */
#ifdef EMU_NO_FINALIZE_REFERENCE
#define EMU_SYMBOLS_FINALIZE_REFERENCE(X)
#else
#define EMU_SYMBOLS_FINALIZE_REFERENCE(X) X(aclFinalizeReference, 500000)
#endif

#define EMU_SYMBOLS_ASCENDCL(X)                                   \
    X(aclInit, 500000)                                            \
    X(aclFinalize, 500000)                                        \
    EMU_SYMBOLS_FINALIZE_REFERENCE(X)                             \
    X(aclsysGetVersionStr, 100003)                                \
    X(aclrtMemcpy2dAsync, 507000)                                 \
    X(aclrtPointerGetAttributes, 107000)                          \
    X(aclrtSetStreamFailureMode, 507000)                          \
    X(aclGetRecentErrMsg, 0)                                      \
    X(aclrtGetVersion, 507000)                                    \
    X(aclrtGetSocName, 507000)                                    \
    X(aclrtSetDevice, 507000)                                     \
    X(aclrtResetDevice, 507000)                                   \
    X(aclrtGetDevice, 107002)                                     \
    X(aclrtGetDeviceCount, 207004)                                \
    X(aclrtSynchronizeDevice, 507015)                             \
    X(aclrtCreateContext, 507000)                                 \
    X(aclrtDestroyContext, 507000)                                \
    X(aclrtSetCurrentContext, 507000)                             \
    X(aclrtGetCurrentContext, 107002)                             \
    X(aclrtCreateStream, 507000)                                  \
    X(aclrtDestroyStream, 507000)                                 \
    X(aclrtSynchronizeStream, 507015)                             \
    X(aclrtSynchronizeStreamWithTimeout, 507046)                  \
    X(aclrtMalloc, 207001)                                        \
    X(aclrtFree, 507000)                                          \
    X(aclrtMallocHost, 207001)                                    \
    X(aclrtFreeHost, 507000)                                      \
    X(aclrtMemcpy, 507000)                                        \
    X(aclrtMemcpyAsync, 507000)                                   \
    X(aclrtMemset, 507000)                                        \
    X(aclrtMemsetAsync, 507000)                                   \
    X(aclrtGetMemInfo, 507000)                                    \
    X(aclrtCreateEvent, 507000)                                   \
    X(aclrtCreateEventWithFlag, 507000)                           \
    X(aclrtRecordEvent, 507000)                                   \
    X(aclrtSynchronizeEvent, 507015)                              \
    X(aclrtEventElapsedTime, 507000)                              \
    X(aclrtDestroyEvent, 507000)                                  \
    X(aclrtStreamWaitEvent, 507000)                               \
    X(aclrtCreateEventExWithFlag, 507000)                         \
    X(aclrtStreamQuery, 507000)                                   \
    X(aclrtQueryEventStatus, 507000)                              \
    EMU_SYMBOLS_GRAPH(X)

/* ACL graph capture (acl_rt.h / acl_mdl.h); a CANN_EMU_NO_GRAPH build (an older CANN) has none of them. */
#ifdef EMU_NO_GRAPH
#define EMU_SYMBOLS_GRAPH(X)
#else
#define EMU_SYMBOLS_GRAPH(X)                                      \
    X(aclmdlRICaptureBegin, 507000)                               \
    X(aclmdlRICaptureGetInfo, 507000)                             \
    X(aclmdlRICaptureEnd, 507903)                                 \
    X(aclmdlRIExecuteAsync, 507000)                               \
    X(aclmdlRIDestroy, 507000)
#endif

#define EMU_SYMBOLS_NNOPBASE(X)                                   \
    X(aclCreateTensor, 561103)                                    \
    X(aclDestroyTensor, 561000)                                   \
    X(aclSetAclOpExecutorRepeatable, 561000)                      \
    X(aclDestroyAclOpExecutor, 561000)                            \
    X(aclSetInputTensorAddr, 561000)                              \
    X(aclSetOutputTensorAddr, 561000)

#define EMU_SYMBOLS_OPAPI_V1(X)                                   \
    X(aclnnInplaceQuantScatterGetWorkspaceSize, 561002)           \
    X(aclnnInplaceQuantScatter, 361001)

#define EMU_SYMBOLS_OPAPI_V2(X)                                   \
    X(aclnnInplaceQuantScatterV2GetWorkspaceSize, 561002)         \
    X(aclnnInplaceQuantScatterV2, 361001)

/* A build without V2 (an older CANN) neither exports nor counts the V2 pair. */
#ifdef EMU_NO_V2
#define EMU_SYMBOLS(X) EMU_SYMBOLS_ASCENDCL(X) EMU_SYMBOLS_NNOPBASE(X) EMU_SYMBOLS_OPAPI_V1(X)
#else
#define EMU_SYMBOLS(X) \
    EMU_SYMBOLS_ASCENDCL(X) EMU_SYMBOLS_NNOPBASE(X) EMU_SYMBOLS_OPAPI_V1(X) EMU_SYMBOLS_OPAPI_V2(X)
#endif

#define EMU_SYM_ENUM_(name, code) EMU_SYM_##name,
enum emu_symbol { EMU_SYMBOLS(EMU_SYM_ENUM_) EMU_SYM_COUNT };
#undef EMU_SYM_ENUM_

#endif
