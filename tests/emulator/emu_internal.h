/* Internal interface of the CANN emulator, shared by its three libraries.
 *
 * All state (device blocks, streams, events, contexts, handles, counters, faults, error messages) lives
 * in libascendcl.so; libnnopbase.so and libopapi.so reach it through the emuInternal* functions below,
 * which libascendcl exports (the emu prefix keeps them apart from CANN's names). Everything else is
 * hidden (-fvisibility=hidden), so each library exports exactly the CANN symbols of its real namesake
 * plus the emu ones. */
#ifndef EMU_INTERNAL_H
#define EMU_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* must precede every system header: include this header first */
#endif
#include <stddef.h>
#include <stdint.h>

/* The project's own headers: our definitions must match the binding's prototypes exactly. Declarations
 * made here get default visibility, so each CANN function a library defines is exported. */
#pragma GCC visibility push(default)
#include "00_acl_base.h"
#include "01_acl.h"
#include "02_acl_rt.h"
#include "03_acl_meta.h"
#include "04_aclnn_quant_scatter.h"
#pragma GCC visibility pop

#include "emu_symbols.h"

#define EMU_MAX_DIMS 16 /* descriptors accept more dims than the op (3..8) so phase 1 can reject them */
#define EMU_OP_TENSORS 5 /* self, indices, updates, quantScales, quantZeroPoints */
#define EMU_TASK_MAX_RANGES 8
#define EMU_MSG_CAP 1024

enum emu_stat {
    EMU_STAT_LIVE_DEVICE_BLOCKS,
    EMU_STAT_LIVE_DEVICE_BYTES,
    EMU_STAT_LIVE_HOST_BLOCKS,
    EMU_STAT_LIVE_TENSORS,
    EMU_STAT_LIVE_EXECUTORS,
    EMU_STAT_LIVE_STREAMS,
    EMU_STAT_LIVE_EVENTS,
    EMU_STAT_LIVE_HOST_BYTES,
    EMU_STAT_LIVE_GRAPHS,
    EMU_STAT_BYTES_H2D,
    EMU_STAT_BYTES_D2H,
    EMU_STAT_BYTES_D2D,
    EMU_STAT_SYNCS,
    EMU_STAT_ERRORS_DETECTED,
    EMU_STAT_PAGEABLE_COPIES,
    EMU_STAT_DEVICE_ABORTS,
    EMU_STAT_CAPTURES,
    EMU_STAT_GRAPH_LAUNCHES,
    EMU_STAT_HOST_SYNCS,
    EMU_STAT_COUNT
};

/* Handle kinds: every object the caller gets a pointer to is registered, so a stale or foreign pointer is
 * refused with a status instead of being dereferenced. */
enum emu_handle_kind { EMU_H_TENSOR, EMU_H_EXECUTOR, EMU_H_STREAM, EMU_H_EVENT, EMU_H_CONTEXT };

/* What a view means, in elements (as aclCreateTensor takes it). data is a device address. */
typedef struct emu_view {
    int32_t dtype;
    int32_t format;
    uint32_t ndim;
    int64_t dims[EMU_MAX_DIMS];
    int64_t strides[EMU_MAX_DIMS];
    int64_t offset;
    int64_t storage_elems; /* product of storageDims, -1 when none were given */
    uintptr_t data;
} emu_view;

struct aclTensor {
    uint64_t serial; /* unique per descriptor: tells a destroyed tensor from a new one at the same address */
    emu_view v;
};

struct aclOpExecutor {
    uint64_t serial;
    int v2;         /* made by the V2 phase 1: only the V2 phase 2 may run it */
    int repeatable; /* aclSetAclOpExecutorRepeatable was called */
    int empty;      /* an empty input: the op does nothing */
    int has_zp;
    int axis;       /* normalised */
    uint64_t workspace_size;
    emu_view t[EMU_OP_TENSORS];                /* copies; addresses refreshed by aclSet*TensorAddr */
    const aclTensor *src[EMU_OP_TENSORS];      /* the descriptors given at phase 1 (NULL when absent) */
    uint64_t src_serial[EMU_OP_TENSORS];
};

/* Queued work. ranges name the memory the task touches (device blocks, or aclrtMallocHost blocks when
 * host is set) so that aclrtFree/aclrtFreeHost can find queued users and record a use-after-free. */
typedef struct emu_range {
    uintptr_t lo, hi;
    int host;
} emu_range;
typedef int (*emu_task_run)(void *payload, char *msg, size_t cap); /* 0 or an aclError */
typedef void (*emu_task_drop)(void *payload);
typedef struct emu_task_desc {
    const char *name;
    emu_task_run run;
    emu_task_drop drop; /* frees payload; called once, whether or not the task ran */
    void *payload;
    int nranges;
    emu_range ranges[EMU_TASK_MAX_RANGES];
} emu_task_desc;

#define EMU_API __attribute__((visibility("default")))
#define EMU_HIDDEN __attribute__((visibility("hidden")))
#define EMU_PRINTF(a, b) __attribute__((format(printf, a, b)))

#pragma GCC visibility push(default)
/* Introspection for tests and tools (exact interface from emulator.md). */
int64_t emuGetStat(const char *name);
void emuReset(void);
int emuInjectFault(const char *symbol, int nth, int code);

/* One recursive process-wide lock: every exported function holds it for its whole duration, and queued
 * work runs under it too, so kernels may call back into the registry. */
void emuInternalLock(void);
void emuInternalUnlock(void);
/* Counts the call, remembers the symbol for error messages, and fires a due fault: returns 0 or the
 * fault's status (with the thread's message set). Call with the lock held. */
int emuInternalEnter(int symbol);
int emuInternalRequireInit(void); /* 0, or 100001 with a message */
void emuInternalSetError(const char *fmt, ...) EMU_PRINTF(1, 2); /* prefixed with the current symbol */
void emuInternalStatAdd(int stat, int64_t delta);

int emuInternalHandleAdd(int kind, const void *p);
int emuInternalHandleLive(int kind, const void *p);
int emuInternalHandleDead(int kind, const void *p); /* removed earlier and remembered (consumed/freed) */
void emuInternalHandleRemove(int kind, const void *p);

/* Device memory. DevCheck: 0 when [addr, addr+len) lies in one live block (on device, unless device < 0),
 * else 107000 with a message naming what. DevHost: the host backing of such a range, or NULL. */
int emuInternalDevCheck(uintptr_t addr, uint64_t len, int device, const char *what);
void *emuInternalDevHost(uintptr_t addr, uint64_t len);

/* Streams: NULL means the current context's default stream. */
int emuInternalStreamResolve(aclrtStream stream, void **out, int *device);
int emuInternalEnqueue(void *stream, const emu_task_desc *task);
#pragma GCC visibility pop

/* Helpers compiled into each library (common.c, hidden). */
EMU_HIDDEN int64_t emu_dtype_size(int32_t dtype); /* bytes per element; 0 for an unknown dtype */
EMU_HIDDEN const char *emu_dtype_name(int32_t dtype);
EMU_HIDDEN int64_t emu_view_numel(const emu_view *v); /* -1 on overflow */
/* Element span [first, last] of a non-empty view relative to data; 0 ok, -1 overflow. */
EMU_HIDDEN int emu_view_span(const emu_view *v, int64_t *first, int64_t *last);
/* Byte range of a view: 1 when non-empty (lo/hi set), 0 when empty, -1 on overflow. */
EMU_HIDDEN int emu_view_bytes(const emu_view *v, uintptr_t *lo, uintptr_t *hi);
EMU_HIDDEN const char *emu_env_str(const char *name, const char *fallback);
EMU_HIDDEN uint64_t emu_env_u64(const char *name, uint64_t fallback); /* fallback when unset/invalid */
EMU_HIDDEN void emu_format(char *buf, size_t cap, const char *fmt, ...) EMU_PRINTF(3, 4);

/* Take the lock, count the call, fire faults, then run body; every exported function is one of these. */
#define EMU_CALL(sym, body)                          \
    do {                                             \
        emuInternalLock();                           \
        int emu_rc_ = emuInternalEnter(EMU_SYM_##sym); \
        if (emu_rc_ == 0) emu_rc_ = (body);          \
        emuInternalUnlock();                         \
        return emu_rc_;                              \
    } while (0)

/* The emulated CANN release: CANN_EMU_VERSION (read at each call) or the one the tree was built as
 * (build.py --cann-version, default 8.3.RC1). runtime.c; a private libruntime.so in an --as-shipped tree. */
#pragma GCC visibility push(default)
const char *emuInternalRelease(void);
int emuInternalReleaseAtLeast(int major, int minor);
#pragma GCC visibility pop

/* ---- contexts and graph capture (emu2) ---- */
enum { EMU_H_GRAPH = EMU_H_CONTEXT + 1 }; /* aclmdlRI handles */
#pragma GCC visibility push(default)
/* The stream work is launched on (NULL: the current context's default stream). Like the runtime's
 * api_impl.cc, the thread needs a current context (107002) that owns the stream: else context_status
 * (107003 from the runtime, 361001 through aclnn's phase 2) with a message naming both contexts. */
int emuInternalStreamLaunch(aclrtStream stream, void **out, int *device, int context_status);
#pragma GCC visibility pop

#endif
