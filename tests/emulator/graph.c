/* libascendcl: ACL graph capture (aclmdlRICaptureBegin/GetInfo/End, aclmdlRIExecuteAsync, aclmdlRIDestroy).
 *
 * Between begin and end, work launched on the captured stream is recorded into the model instance instead
 * of being queued (stream.c diverts it here); aclmdlRIExecuteAsync queues the recorded work again, with the
 * addresses and values it was captured with, so inputs change by writing into the same device buffers.
 * What the runtime refuses during a capture is refused here with its codes and invalidates the capture, so
 * that aclmdlRICaptureEnd fails with 507903. Behaviour follows hicann/runtime: src/acl/aclrt_impl/
 * model_ri.cpp (the ACL layer), src/runtime/feature/aclgraph/ (context_aclgraph.cc StreamBeginCapture,
 * StreamEndCapture, IsCaptureModeSupport; capture_model_utils.cc CheckCaptureStreamThreadIsMatch),
 * src/runtime/api/impl/api_error.cc (ModelExecuteAsync) and src/runtime/core/src/context/context.cc
 * (ModelDestroy). The CANN_EMU_NO_GRAPH build (an older CANN) leaves the aclmdlRI* symbols out; nothing
 * can be captured then, so the hooks below never refuse.
 *
 * The op's phase 2 on a captured stream: nnopbase launches exactly as without a capture (its launcher only
 * skips the overflow check when aclmdlRICaptureGetInfo says ACTIVE, src/nnopbase/common/inc/
 * kernel_launcher.h), and CommonOpExecutorRun (composite_op/aclnn_engine/op_executor.cpp) still deletes a
 * non-repeatable executor after the launch. The runtime copied the kernel's arguments into the captured
 * task, so replays need neither the executor nor the descriptors: here the recorded task owns a copy of
 * the views and addresses (op.c's qs_job). */
#include "emu_capture.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC visibility push(default)
#include "05_acl_graph.h"
#pragma GCC visibility pop

struct emu_graph {
    emu_graph *next_active; /* the list of ongoing captures */
    uint64_t serial;
    void *ctx;
    int device;
    void *stream; /* the captured stream, while capturing */
    int mode;
    pthread_t thread; /* that began the capture */
    int capturing;
    int invalidated;
    char why[512]; /* what invalidated it first */
    emu_task_desc *tasks;
    size_t ntasks, cap;
};

static emu_graph *g_active;

uint64_t emu_graph_serial(const emu_graph *g) { return g->serial; }

emu_graph *emu_capture_by_serial(uint64_t serial)
{
    for (emu_graph *g = g_active; g; g = g->next_active)
        if (g->serial == serial) return g;
    return NULL;
}

int emu_capture_record(emu_graph *g, const emu_task_desc *t)
{
    if (g->invalidated) {
        if (t->drop) t->drop(t->payload);
        emuInternalSetError("the capture on stream %p was invalidated earlier (%s): %s cannot be recorded into it; "
                            "end it and capture again (status %d)", g->stream, g->why, t->name,
                            EMU_RT_CAPTURE_INVALIDATED);
        return EMU_RT_CAPTURE_INVALIDATED;
    }
    if (g->ntasks == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 8;
        emu_task_desc *n = realloc(g->tasks, cap * sizeof *n);
        if (!n) {
            if (t->drop) t->drop(t->payload);
            emuInternalSetError("cannot record %s: out of host memory (status 507000)", t->name);
            return ACL_ERROR_RT_INTERNAL_ERROR;
        }
        g->tasks = n;
        g->cap = cap;
    }
    g->tasks[g->ntasks++] = *t;
    return 0;
}

static void invalidate(emu_graph *g, const char *why)
{
    if (g->invalidated) return; /* the first cause is the one worth reporting */
    g->invalidated = 1;
    snprintf(g->why, sizeof g->why, "%s", why);
}

int emu_capture_refuse(emu_graph *g, int code, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    invalidate(g, why);
    emuInternalSetError("%s; this invalidates the capture on stream %p: aclmdlRICaptureEnd will fail with %d "
                        "(status %d)", why, g->stream, EMU_RT_CAPTURE_INVALIDATED, code);
    return code;
}

static const char *mode_name(int mode)
{
    switch (mode) {
    case ACL_MODEL_RI_CAPTURE_MODE_GLOBAL: return "GLOBAL";
    case ACL_MODEL_RI_CAPTURE_MODE_THREAD_LOCAL: return "THREAD_LOCAL";
    default: return "RELAXED";
    }
}

/* Context::IsCaptureModeSupport with the thread's exchange mode at its default (global): refused while
 * a GLOBAL capture runs in the thread's current context, or a THREAD_LOCAL one begun by this thread. */
int emu_capture_check_sync_work(const char *what, int code)
{
    void *ctx = emu_current_context();
    emu_graph *first = NULL;
    for (emu_graph *g = g_active; g; g = g->next_active) {
        int forbids = (g->mode == ACL_MODEL_RI_CAPTURE_MODE_GLOBAL && g->ctx == ctx) ||
                      (g->mode == ACL_MODEL_RI_CAPTURE_MODE_THREAD_LOCAL && pthread_equal(g->thread, pthread_self()));
        if (!forbids) continue;
        if (!first) first = g;
        else invalidate(g, "a synchronous copy or memset was made during the capture");
    }
    if (!first) return 0;
    return emu_capture_refuse(first, code, "%s is not allowed while stream %p is captured "
                              "in %s mode (only ACL_MODEL_RI_CAPTURE_MODE_RELAXED allows it)", what, first->stream,
                              mode_name(first->mode));
}

/* Context::Synchronize refuses while any of its streams is captured. */
int emu_capture_check_device_sync(int device)
{
    emu_graph *first = NULL;
    for (emu_graph *g = g_active; g; g = g->next_active) {
        if (g->device != device) continue;
        if (!first) first = g;
        else invalidate(g, "aclrtSynchronizeDevice was called during the capture");
    }
    if (!first) return 0;
    return emu_capture_refuse(first, EMU_RT_STREAM_CAPTURED, "synchronising device %d is not allowed while its "
                              "stream %p is captured", device, first->stream);
}

#ifndef EMU_NO_GRAPH

static void unlink_active(emu_graph *g)
{
    for (emu_graph **p = &g_active; *p; p = &(*p)->next_active)
        if (*p == g) {
            *p = g->next_active;
            break;
        }
    if (g->stream) emu_stream_set_capture(g->stream, NULL);
    g->stream = NULL;
    g->capturing = 0;
}

static void release(emu_graph *g)
{
    for (size_t i = 0; i < g->ntasks; i++)
        if (g->tasks[i].drop) g->tasks[i].drop(g->tasks[i].payload);
    free(g->tasks);
    emuInternalHandleRemove(EMU_H_GRAPH, g);
    emuInternalStatAdd(EMU_STAT_LIVE_GRAPHS, -1);
    free(g);
}

static int null_param(const char *what)
{
    emuInternalSetError("%s is NULL (status 100000)", what);
    return ACL_ERROR_INVALID_PARAM;
}

static int check_graph(aclmdlRI modelRI)
{
    if (!modelRI) return null_param("modelRI");
    if (emuInternalHandleLive(EMU_H_GRAPH, modelRI)) return 0;
    emuInternalSetError("%p is not a live model instance%s (status 107000)", modelRI,
                        emuInternalHandleDead(EMU_H_GRAPH, modelRI) ? " (destroyed)" : "");
    return ACL_ERROR_RT_PARAM_INVALID;
}

/* ApiImpl::ModelExecuteAsync / ModelDestroy: the model must belong to the thread's current context. */
static int check_graph_context(const emu_graph *g)
{
    void *ctx = emu_current_context();
    if (!ctx) {
        emuInternalSetError("this thread has no current context: call aclrtSetDevice first (status 107002)");
        return ACL_ERROR_RT_CONTEXT_NULL;
    }
    if (ctx == g->ctx) return 0;
    emuInternalSetError("model instance %p belongs to context %p, not to this thread's current context %p "
                        "(status %d)", (const void *)g, g->ctx, ctx, EMU_RT_MODEL_CONTEXT);
    return EMU_RT_MODEL_CONTEXT;
}

static aclError begin_locked(aclrtStream stream, aclmdlRICaptureMode mode)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (!stream) return null_param("stream (the default stream cannot be captured)");
    if ((unsigned)mode > ACL_MODEL_RI_CAPTURE_MODE_RELAXED) {
        emuInternalSetError("mode %d is not an aclmdlRICaptureMode: 0 (GLOBAL), 1 (THREAD_LOCAL) or 2 (RELAXED) "
                            "(status 107000)", (int)mode);
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    void *s;
    int dev;
    if ((rc = emuInternalStreamLaunch(stream, &s, &dev, EMU_RT_STREAM_CONTEXT))) return rc;
    if (emu_stream_capture(s)) {
        emuInternalSetError("stream %p is already being captured (status %d)", stream, EMU_RT_STREAM_CAPTURED);
        return EMU_RT_STREAM_CAPTURED;
    }
    static uint64_t serial;
    emu_graph *g = calloc(1, sizeof *g);
    if (!g || emuInternalHandleAdd(EMU_H_GRAPH, g) != 0) {
        free(g);
        emuInternalSetError("cannot create a model instance (status 507000)");
        return ACL_ERROR_RT_INTERNAL_ERROR;
    }
    g->serial = ++serial;
    g->ctx = emu_stream_context(s);
    g->device = dev;
    g->stream = s;
    g->mode = (int)mode;
    g->thread = pthread_self();
    g->capturing = 1;
    g->next_active = g_active;
    g_active = g;
    emu_stream_set_capture(s, g);
    /* The runtime makes the model at begin (Context::StreamBeginCapture), so it is live from here on. */
    emuInternalStatAdd(EMU_STAT_LIVE_GRAPHS, 1);
    emuInternalStatAdd(EMU_STAT_CAPTURES, 1);
    return ACL_SUCCESS;
}

aclError aclmdlRICaptureBegin(aclrtStream stream, aclmdlRICaptureMode mode)
{
    EMU_CALL(aclmdlRICaptureBegin, begin_locked(stream, mode));
}

static aclError get_info_locked(aclrtStream stream, aclmdlRICaptureStatus *status, aclmdlRI *modelRI)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (!stream) return null_param("stream");
    if (!status && !modelRI) return null_param("status and modelRI (one may be NULL, not both)");
    void *s;
    if ((rc = emuInternalStreamResolve(stream, &s, NULL))) return rc;
    emu_graph *g = emu_stream_capture(s);
    if (status)
        *status = !g ? ACL_MODEL_RI_CAPTURE_STATUS_NONE
                     : g->invalidated ? ACL_MODEL_RI_CAPTURE_STATUS_INVALIDATED : ACL_MODEL_RI_CAPTURE_STATUS_ACTIVE;
    if (modelRI) *modelRI = g;
    return ACL_SUCCESS;
}

aclError aclmdlRICaptureGetInfo(aclrtStream stream, aclmdlRICaptureStatus *status, aclmdlRI *modelRI)
{
    EMU_CALL(aclmdlRICaptureGetInfo, get_info_locked(stream, status, modelRI));
}

static aclError end_locked(aclrtStream stream, aclmdlRI *modelRI)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (!stream) return null_param("stream");
    if (!modelRI) return null_param("modelRI");
    *modelRI = NULL;
    void *s;
    if ((rc = emuInternalStreamResolve(stream, &s, NULL))) return rc;
    emu_graph *g = emu_stream_capture(s);
    if (!g) {
        emuInternalSetError("stream %p is not being captured: call aclmdlRICaptureBegin first (status %d)", stream,
                            EMU_RT_STREAM_NOT_CAPTURED);
        return EMU_RT_STREAM_NOT_CAPTURED;
    }
    if (g->mode != ACL_MODEL_RI_CAPTURE_MODE_RELAXED && !pthread_equal(g->thread, pthread_self())) {
        /* StreamEndCapture clears the capture model when the thread does not match. */
        emuInternalSetError("the capture on stream %p was begun by another thread in %s mode: only that thread can "
                            "end it (any thread in RELAXED mode); the capture is discarded (status %d)", stream,
                            mode_name(g->mode), EMU_RT_CAPTURE_WRONG_THREAD);
        unlink_active(g);
        release(g);
        return EMU_RT_CAPTURE_WRONG_THREAD;
    }
    if (g->invalidated) {
        emuInternalSetError("the capture on stream %p was invalidated: %s; nothing was kept (status %d)", stream,
                            g->why, EMU_RT_CAPTURE_INVALIDATED);
        unlink_active(g);
        release(g);
        return EMU_RT_CAPTURE_INVALIDATED;
    }
    unlink_active(g);
    *modelRI = g;
    return ACL_SUCCESS;
}

aclError aclmdlRICaptureEnd(aclrtStream stream, aclmdlRI *modelRI)
{
    EMU_CALL(aclmdlRICaptureEnd, end_locked(stream, modelRI));
}

typedef struct replay_job {
    emu_graph *graph; /* kept alive: aclmdlRIDestroy waits for queued replays */
    size_t index;
} replay_job;

static int run_replay(void *payload, char *msg, size_t cap)
{
    replay_job *j = payload;
    emu_task_desc *t = &j->graph->tasks[j->index];
    return t->run(t->payload, msg, cap);
}

static int is_replay_of(const emu_task_desc *t, const void *graph)
{
    return t->run == run_replay && ((const replay_job *)t->payload)->graph == graph;
}

static aclError execute_locked(aclmdlRI modelRI, aclrtStream stream)
{
    int rc = emuInternalRequireInit();
    if (rc || (rc = check_graph(modelRI))) return rc;
    emu_graph *g = modelRI;
    if (g->capturing) {
        emuInternalSetError("model instance %p is still being captured: call aclmdlRICaptureEnd first (status %d)",
                            modelRI, EMU_RT_MODEL_CAPTURED);
        return EMU_RT_MODEL_CAPTURED;
    }
    void *s;
    if ((rc = emuInternalStreamLaunch(stream, &s, NULL, EMU_RT_STREAM_CONTEXT))) return rc;
    if (emu_stream_capture(s)) { /* ApiErrorDecorator::ModelExecuteAsync */
        emuInternalSetError("stream %p is being captured: a model instance cannot be executed on it (status %d)",
                            s, EMU_RT_STREAM_CAPTURED);
        return EMU_RT_STREAM_CAPTURED;
    }
    if ((rc = check_graph_context(g))) return rc;
    for (size_t i = 0; i < g->ntasks; i++) {
        const emu_task_desc *rec = &g->tasks[i];
        if (emu_event_replay_record(rec, s, &rc)) {
            if (rc) return rc;
            continue;
        }
        replay_job *j = malloc(sizeof *j);
        if (!j) return ACL_ERROR_RT_INTERNAL_ERROR;
        *j = (replay_job){ g, i };
        emu_task_desc t = *rec; /* the same memory ranges, so aclrtFree of a block still poisons it */
        t.run = run_replay;
        t.drop = free;
        t.payload = j;
        if ((rc = emu_stream_enqueue_plain(s, &t))) return rc;
    }
    emuInternalStatAdd(EMU_STAT_GRAPH_LAUNCHES, 1);
    return ACL_SUCCESS;
}

aclError aclmdlRIExecuteAsync(aclmdlRI modelRI, aclrtStream stream)
{
    EMU_CALL(aclmdlRIExecuteAsync, execute_locked(modelRI, stream));
}

static aclError destroy_locked(aclmdlRI modelRI)
{
    int rc = emuInternalRequireInit();
    if (rc || (rc = check_graph(modelRI))) return rc;
    emu_graph *g = modelRI;
    if ((rc = check_graph_context(g))) return rc;
    if (g->capturing) {
        emuInternalSetError("model instance %p is still being captured: end the capture first (status %d)",
                            modelRI, EMU_RT_MODEL_CAPTURED);
        return EMU_RT_MODEL_CAPTURED;
    }
    /* Context::ModelDestroy waits for the model's running executions before tearing it down. */
    if (emu_streams_wait_for(is_replay_of, g)) emuInternalStatAdd(EMU_STAT_HOST_SYNCS, 1);
    release(g);
    return ACL_SUCCESS;
}

aclError aclmdlRIDestroy(aclmdlRI modelRI) { EMU_CALL(aclmdlRIDestroy, destroy_locked(modelRI)); }

#endif
