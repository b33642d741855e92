/* libascendcl: streams (FIFO queues run only when synchronised), events, waits, queries and synchronisation.
 *
 * Nothing queued runs at launch: the op, async copies/fills, event records and event waits wait until the
 * stream, its device or a later event is synchronised, so a caller that forgets to synchronise reads stale
 * data. A task that fails records the stream's error, reported (once) by the next synchronisation.
 *
 * A stream belongs to the context current when it was made; launching work on it (or destroying it)
 * from a thread whose current context is another one fails with 107003, as each of those entry points of
 * hicann/runtime's src/runtime/api/impl/api_impl.cc does (COND_RETURN_AND_MSG_INVALID_CONTEXT_STREAM_...
 * in KernelLaunch, StreamDestroy, StreamWaitEvent, EventRecord, MemcpyAsync, MemsetAsync).
 *
 * While a stream is captured (graph.c), work launched on it goes into the capture instead of its queue. */
#include "emu_capture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct task {
    struct task *next;
    uint64_t seq;
    emu_task_desc d;
    int poisoned;
    char why[256];
} task;

typedef struct emu_stream {
    struct emu_stream *prev_all, *next_all;
    uint64_t serial; /* tells a destroyed stream from a new one at the same address */
    void *ctx;
    int device;
    int user; /* made by aclrtCreateStream (else a context's default stream) */
    task *head, *tail;
    uint64_t last_seq;
    uint64_t progress; /* queries let the work queued up to here (at the previous query) complete */
    emu_graph *capture;
    int err;
    char errmsg[EMU_MSG_CAP];
} emu_stream;

enum { EV_NEVER, EV_PENDING, EV_DONE };
typedef struct emu_event {
    uint64_t serial;
    uint32_t flags;
    int plain; /* aclrtCreateEvent: the runtime's RT_EVENT_DEFAULT (DDSYNC | TIME_LINE | STREAM_MARK) */
    int ex;    /* aclrtCreateEventExWithFlag (the runtime's "new mode" event) */
    int state;
    emu_stream *stream; /* where the pending record waits */
    uint64_t stream_serial;
    uint64_t seq;       /* ... and its task */
    uint64_t record_id; /* bumped by every record: only the latest one completes the event */
    uint64_t capture;   /* serial of the capture the latest record went into, 0 when none */
    double t_ms;
} emu_event;

static emu_stream *g_streams;
static uint64_t g_stream_serial, g_event_serial;

/* ---- streams ---- */

void *emu_stream_create(void *ctx, int user)
{
    emu_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->serial = ++g_stream_serial;
    s->ctx = ctx;
    s->device = emu_context_device(ctx);
    s->user = user;
    s->next_all = g_streams;
    if (g_streams) g_streams->prev_all = s;
    g_streams = s;
    return s;
}

static int stream_exists(const emu_stream *s, uint64_t serial)
{
    for (emu_stream *it = g_streams; it; it = it->next_all)
        if (it == s) return it->serial == serial;
    return 0;
}

emu_graph *emu_stream_capture(void *stream) { return ((emu_stream *)stream)->capture; }
void emu_stream_set_capture(void *stream, emu_graph *g) { ((emu_stream *)stream)->capture = g; }
void *emu_stream_context(void *stream) { return ((emu_stream *)stream)->ctx; }

static void record_error(emu_stream *s, int rc, const char *task_name, const char *detail)
{
    if (s->err) return; /* the first failure is the one worth reporting */
    s->err = rc;
    snprintf(s->errmsg, sizeof s->errmsg, "queued %.64s failed: %.900s", task_name, detail);
    emu_stream_fault(s, s->device, rc); /* emu (fault.c): stop-on-failure may stop the device */
}

int emu_stream_drain(void *stream, uint64_t upto)
{
    emu_stream *s = stream;
    while (s->head && (upto == 0 || s->head->seq <= upto)) {
        task *t = s->head;
        s->head = t->next;
        if (!s->head) s->tail = NULL;
        if (t->poisoned) {
            record_error(s, ACL_ERROR_RT_AICORE_EXCEPTION, t->d.name, t->why);
        } else if (emu_device_abort_code(s->device)) {
            /* emu (fault.c): a stopped device runs nothing more; the task is dropped */
        } else {
            char msg[EMU_MSG_CAP] = "";
            int rc = t->d.run(t->d.payload, msg, sizeof msg);
            if (rc) record_error(s, rc, t->d.name, msg);
        }
        if (t->d.drop) t->d.drop(t->d.payload);
        free(t);
    }
    return s->err;
}

int emu_stream_take_error(void *stream)
{
    emu_stream *s = stream;
    int rc = s->err;
    if (rc) {
        emuInternalSetError("%s (status %d)", s->errmsg, rc);
        s->err = 0;
    }
    return rc;
}

void emu_stream_release(void *stream)
{
    emu_stream *s = stream;
    emu_stream_mode_forget(s); /* emu (fault.c) */
    for (task *t = s->head, *n; t; t = n) {
        n = t->next;
        if (t->d.drop) t->d.drop(t->d.payload);
        free(t);
    }
    if (s->prev_all) s->prev_all->next_all = s->next_all; else g_streams = s->next_all;
    if (s->next_all) s->next_all->prev_all = s->prev_all;
    free(s);
}

int emu_streams_poison(uintptr_t lo, uintptr_t hi, int host, const char *why)
{
    int n = 0;
    for (emu_stream *s = g_streams; s; s = s->next_all)
        for (task *t = s->head; t; t = t->next) {
            if (t->poisoned) continue;
            for (int i = 0; i < t->d.nranges; i++) {
                const emu_range *r = &t->d.ranges[i];
                if (r->host != host || r->hi <= lo || r->lo >= hi) continue;
                t->poisoned = 1;
                snprintf(t->why, sizeof t->why, "use after free: %s [%#lx, %#lx) while this queued work "
                         "still used it", why, (unsigned long)lo, (unsigned long)hi);
                emuInternalStatAdd(EMU_STAT_ERRORS_DETECTED, 1);
                n++;
                break;
            }
        }
    return n;
}

int emu_streams_wait_for(int (*match)(const emu_task_desc *t, const void *arg), const void *arg)
{
    int waited = 0;
    for (emu_stream *s = g_streams; s; s = s->next_all) {
        uint64_t last = 0;
        for (task *t = s->head; t; t = t->next)
            if (match(&t->d, arg)) last = t->seq;
        if (last) {
            emu_stream_drain(s, last); /* a failure stays recorded for the stream's next synchronisation */
            waited = 1;
        }
    }
    return waited;
}

int emuInternalStreamResolve(aclrtStream stream, void **out, int *device)
{
    if (!stream) {
        void *ctx = emu_current_context();
        if (!ctx) {
            emuInternalSetError("the default (NULL) stream needs a current context: call aclrtSetDevice "
                                "on this thread first (status 107002)");
            return ACL_ERROR_RT_CONTEXT_NULL;
        }
        stream = emu_context_default_stream(ctx);
    } else if (!emuInternalHandleLive(EMU_H_STREAM, stream)) {
        emuInternalSetError("%p is not a live stream%s (status 107000)", stream,
                            emuInternalHandleDead(EMU_H_STREAM, stream) ? " (destroyed)" : "");
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    *out = stream;
    if (device) *device = ((emu_stream *)stream)->device;
    return 0;
}

int emuInternalStreamLaunch(aclrtStream stream, void **out, int *device, int context_status)
{
    int runtime = context_status == EMU_RT_STREAM_CONTEXT;
    void *ctx = emu_current_context(), *s;
    if (!ctx) {
        emuInternalSetError("%sthis thread has no current context: call aclrtSetDevice or aclrtSetCurrentContext "
                            "on it first (status %d)", runtime ? "" : "the runtime refused the launch (107002): ",
                            runtime ? ACL_ERROR_RT_CONTEXT_NULL : context_status);
        return runtime ? ACL_ERROR_RT_CONTEXT_NULL : context_status;
    }
    int rc = emuInternalStreamResolve(stream, &s, device);
    if (rc) return rc;
    emu_stream *st = s;
    if (st->ctx != ctx) {
        emuInternalSetError("%sstream %p belongs to context %p (device %d), not to this thread's current context "
                            "%p (device %d): make the stream's context current (aclrtSetCurrentContext) before "
                            "launching work on it (status %d)",
                            runtime ? "" : "the runtime refused the launch (107003, stream not in current context): ",
                            stream, st->ctx, st->device, ctx, emu_context_device(ctx), context_status);
        return context_status;
    }
    *out = s;
    return 0;
}

static uint64_t enqueue(emu_stream *s, const emu_task_desc *d)
{
    task *t = calloc(1, sizeof *t);
    if (!t) return 0;
    t->d = *d;
    t->seq = ++s->last_seq;
    if (s->tail) s->tail->next = t; else s->head = t;
    s->tail = t;
    return t->seq;
}

static int enqueue_seq(emu_stream *s, const emu_task_desc *t, uint64_t *seq)
{
    if ((*seq = enqueue(s, t))) return 0;
    if (t->drop) t->drop(t->payload);
    emuInternalSetError("cannot queue %s: out of host memory (status 507000)", t->name);
    return ACL_ERROR_RT_INTERNAL_ERROR;
}

int emu_stream_enqueue_plain(void *stream, const emu_task_desc *t)
{
    uint64_t seq;
    return enqueue_seq(stream, t, &seq);
}

int emuInternalEnqueue(void *stream, const emu_task_desc *task_)
{
    emu_stream *s = stream;
    if (s->capture) return emu_capture_record(s->capture, task_); /* recorded, not run */
    return emu_stream_enqueue_plain(s, task_);
}

static aclError create_stream_locked(aclrtStream *stream)
{
    int rc = emuInternalRequireInit(), dev;
    if (rc) return rc;
    if (!stream) {
        emuInternalSetError("stream is NULL (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    if ((rc = emu_require_device(&dev))) return rc;
    emu_stream *s = emu_stream_create(emu_current_context(), 1);
    if (!s || emuInternalHandleAdd(EMU_H_STREAM, s) != 0) {
        if (s) emu_stream_release(s);
        emuInternalSetError("cannot create a stream (status 507000)");
        return ACL_ERROR_RT_INTERNAL_ERROR;
    }
    emuInternalStatAdd(EMU_STAT_LIVE_STREAMS, 1);
    *stream = s;
    return ACL_SUCCESS;
}

aclError aclrtCreateStream(aclrtStream *stream) { EMU_CALL(aclrtCreateStream, create_stream_locked(stream)); }

/* Synchronising, querying or destroying a captured stream: 107027, as hicann/runtime's api_error.cc
 * (StreamSynchronize, StreamQuery, StreamDestroy) refuses it. */
static int refuse_captured(emu_stream *s, const char *what)
{
    return emu_capture_refuse(s->capture, EMU_RT_STREAM_CAPTURED, "stream %p is being captured "
                              "(aclmdlRICaptureBegin): %s it is not allowed until aclmdlRICaptureEnd", (void *)s, what);
}

static aclError destroy_stream_locked(aclrtStream stream)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (!stream) {
        emuInternalSetError("the default (NULL) stream cannot be destroyed (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    void *s;
    if ((rc = emuInternalStreamResolve(stream, &s, NULL))) return rc;
    if (((emu_stream *)s)->capture) return refuse_captured(s, "destroying");
    if ((rc = emuInternalStreamLaunch(stream, &s, NULL, EMU_RT_STREAM_CONTEXT))) return rc;
    /* CANN's documentation of aclrtDestroyStream: it waits for the stream's unfinished work (the host waits),
     * and the stream must belong to the current context. The work's failure is reported here. */
    if (((emu_stream *)s)->head) emuInternalStatAdd(EMU_STAT_HOST_SYNCS, 1);
    emu_stream_drain(s, 0);
    rc = emu_stream_take_error(s);
    emuInternalHandleRemove(EMU_H_STREAM, s);
    emu_stream_release(s);
    emuInternalStatAdd(EMU_STAT_LIVE_STREAMS, -1);
    return rc;
}

aclError aclrtDestroyStream(aclrtStream stream) { EMU_CALL(aclrtDestroyStream, destroy_stream_locked(stream)); }

static aclError sync_stream_locked(aclrtStream stream, int32_t timeout)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (timeout < -1 || timeout == 0) {
        /* hicann/runtime: aclrtSynchronizeStreamWithTimeoutImpl (src/acl/aclrt_impl/stream.cpp) refuses < -1
         * with 107000, and the runtime's StreamSynchronize (api_error.cc) also 0. */
        emuInternalSetError("timeout %d is invalid: -1 (forever) or > 0 ms (status 107000)", (int)timeout);
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    void *s;
    int dev;
    if ((rc = emuInternalStreamResolve(stream, &s, &dev))) return rc;
    if (((emu_stream *)s)->capture) return refuse_captured(s, "synchronising");
    if ((rc = emu_device_check_abort(dev))) return rc; /* emu (fault.c): the stream's device stopped */
    emuInternalStatAdd(EMU_STAT_SYNCS, 1);
    emuInternalStatAdd(EMU_STAT_HOST_SYNCS, 1);
    emu_stream_drain(s, 0); /* work runs instantly here, so no timeout can expire */
    return emu_stream_take_error(s);
}

aclError aclrtSynchronizeStream(aclrtStream stream)
{
    EMU_CALL(aclrtSynchronizeStream, sync_stream_locked(stream, -1));
}

aclError aclrtSynchronizeStreamWithTimeout(aclrtStream stream, int32_t timeout)
{
    EMU_CALL(aclrtSynchronizeStreamWithTimeout, sync_stream_locked(stream, timeout));
}

static aclError sync_device_locked(void)
{
    int rc = emuInternalRequireInit(), dev;
    if (rc || (rc = emu_require_device(&dev))) return rc;
    if ((rc = emu_capture_check_device_sync(dev))) return rc;
    emuInternalStatAdd(EMU_STAT_SYNCS, 1);
    emuInternalStatAdd(EMU_STAT_HOST_SYNCS, 1);
    int first = 0;
    for (emu_stream *s = g_streams; s; s = s->next_all) {
        if (s->device != dev) continue;
        emu_stream_drain(s, 0);
        if (!first) first = emu_stream_take_error(s); /* reports the first failure... */
        else s->err = 0;                              /* ...and clears the others */
    }
    return first;
}

aclError aclrtSynchronizeDevice(void) { EMU_CALL(aclrtSynchronizeDevice, sync_device_locked()); }

/* A query never waits. Queued work runs only at a synchronisation here, so a query lets complete what
 * was already queued at the previous query of the stream (time has passed since) and reports NOT_READY
 * while anything is left: the first query after a launch always says NOT_READY, and a polling loop
 * still ends. Never kinder than a device, where the work may still be running at any query. */
static void let_progress(emu_stream *s)
{
    if (s->progress) emu_stream_drain(s, s->progress);
    s->progress = s->last_seq;
}

static aclError stream_query_locked(aclrtStream stream, aclrtStreamStatus *status)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (!status) {
        emuInternalSetError("status is NULL (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    void *sv;
    if ((rc = emuInternalStreamResolve(stream, &sv, NULL))) return rc;
    emu_stream *s = sv;
    if (s->capture) return refuse_captured(s, "querying");
    let_progress(s);
    *status = s->head ? ACL_STREAM_STATUS_NOT_READY : ACL_STREAM_STATUS_COMPLETE;
    return emu_stream_take_error(s); /* a failure of the work that completed is reported, as a sync would */
}

aclError aclrtStreamQuery(aclrtStream stream, aclrtStreamStatus *status)
{
    EMU_CALL(aclrtStreamQuery, stream_query_locked(stream, status));
}

/* ---- events ---- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static aclError create_event_locked(aclrtEvent *event, uint32_t flags, int plain, int ex)
{
    int rc = emuInternalRequireInit(), dev;
    if (rc) return rc;
    if (!event) {
        emuInternalSetError("event is NULL (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    if ((rc = emu_require_device(&dev))) return rc;
    emu_event *e = calloc(1, sizeof *e);
    if (!e || emuInternalHandleAdd(EMU_H_EVENT, e) != 0) {
        free(e);
        emuInternalSetError("cannot create an event (status 507000)");
        return ACL_ERROR_RT_INTERNAL_ERROR;
    }
    e->serial = ++g_event_serial;
    e->flags = flags;
    e->plain = plain;
    e->ex = ex;
    emuInternalStatAdd(EMU_STAT_LIVE_EVENTS, 1);
    *event = e;
    return ACL_SUCCESS;
}

/* aclrtCreateEvent is rtEventCreate, which is rtEventCreateWithFlag(RT_EVENT_DEFAULT) with RT_EVENT_DEFAULT
 * = DDSYNC | TIME_LINE | STREAM_MARK (hicann/runtime src/runtime/api/api_c_event.cc,
 * pkg_inc/runtime/runtime/event.h): such an event can be timed and waited on, as CANN's documentation of
 * aclrtCreateEvent says ("统计两个Event之间的耗时、多Stream之间的任务同步"). With a flag, only ACL_EVENT_SYNC
 * makes an event a stream can wait on (documentation of aclrtCreateEventWithFlag/ExWithFlag). */
aclError aclrtCreateEvent(aclrtEvent *event)
{
    EMU_CALL(aclrtCreateEvent, create_event_locked(event, ACL_EVENT_TIME_LINE, 1, 0));
}

aclError aclrtCreateEventWithFlag(aclrtEvent *event, uint32_t flag)
{
    EMU_CALL(aclrtCreateEventWithFlag, create_event_locked(event, flag, 0, 0));
}

aclError aclrtCreateEventExWithFlag(aclrtEvent *event, uint32_t flag)
{
    EMU_CALL(aclrtCreateEventExWithFlag, create_event_locked(event, flag, 0, 1));
}

static int check_event(aclrtEvent event, const char *what)
{
    if (event && emuInternalHandleLive(EMU_H_EVENT, event)) return 0;
    emuInternalSetError("%s %p is not a live event%s (status 107000)", what, event,
                        event && emuInternalHandleDead(EMU_H_EVENT, event) ? " (destroyed)" : "");
    return ACL_ERROR_RT_PARAM_INVALID;
}

/* The capture the event's latest record went into, while it lasts. Once it has ended the event counts as
 * never recorded: that record belongs to the graph and happens when the graph runs. */
static emu_graph *event_capture(emu_event *e)
{
    if (!e->capture) return NULL;
    emu_graph *g = emu_capture_by_serial(e->capture);
    if (!g) {
        e->capture = 0;
        e->state = EV_NEVER;
    }
    return g;
}

/* Synchronising or querying an event recorded in an ongoing capture: 107028, as hicann/runtime's
 * api_error.cc (EventSynchronize, EventQueryStatus, EventElapsedTime) refuses it. */
static int refuse_captured_event(emu_graph *g, const emu_event *e, const char *what)
{
    return emu_capture_refuse(g, EMU_RT_EVENT_CAPTURED, "event %p was recorded in an ongoing capture: %s it is "
                              "not allowed until aclmdlRICaptureEnd", (const void *)e, what);
}

typedef struct record_job {
    emu_event *event;
    uint64_t serial, record_id;
} record_job;

static int run_record(void *payload, char *msg, size_t cap)
{
    (void)msg;
    (void)cap;
    record_job *j = payload;
    /* The event may have been destroyed (or re-recorded) since: then this record means nothing. */
    if (emuInternalHandleLive(EMU_H_EVENT, j->event) && j->event->serial == j->serial &&
        j->event->record_id == j->record_id) {
        j->event->state = EV_DONE;
        j->event->t_ms = now_ms();
    }
    return 0;
}

/* Queues a record of e on s (not captured); the caller has checked both. */
static int record_on(emu_event *e, emu_stream *s)
{
    record_job *j = malloc(sizeof *j);
    if (!j) return ACL_ERROR_RT_INTERNAL_ERROR;
    j->event = e;
    j->serial = e->serial;
    j->record_id = e->record_id + 1;
    emu_task_desc t = { "event record", run_record, free, j, 0, { { 0, 0, 0 } } };
    uint64_t seq;
    int rc = enqueue_seq(s, &t, &seq);
    if (rc) return rc;
    e->record_id = j->record_id;
    e->state = EV_PENDING;
    e->stream = s;
    e->stream_serial = s->serial;
    e->seq = seq;
    e->capture = 0;
    return ACL_SUCCESS;
}

int emu_event_replay_record(const emu_task_desc *t, void *stream, int *rc)
{
    if (t->run != run_record) return 0;
    const record_job *j = t->payload;
    *rc = 0;
    if (emuInternalHandleLive(EMU_H_EVENT, j->event) && j->event->serial == j->serial)
        *rc = record_on(j->event, stream); /* else the event was destroyed: its record does nothing */
    return 1;
}

/* What recording an event on a stream and making a stream wait for one check first, in this order: ACL
 * initialised, a live event, a stream that takes work in the calling thread's context. */
static int event_on_stream(aclrtEvent event, aclrtStream stream, emu_event **e, emu_stream **s)
{
    int rc = emuInternalRequireInit();
    if (rc || (rc = check_event(event, "event"))) return rc;
    void *sv;
    if ((rc = emuInternalStreamLaunch(stream, &sv, NULL, EMU_RT_STREAM_CONTEXT))) return rc;
    *e = event;
    *s = sv;
    return 0;
}

static aclError record_event_locked(aclrtEvent event, aclrtStream stream)
{
    emu_event *e;
    emu_stream *s;
    int rc = event_on_stream(event, stream, &e, &s);
    if (rc) return rc;
    if (!s->capture) return record_on(e, s);
    record_job *j = malloc(sizeof *j);
    if (!j) return ACL_ERROR_RT_INTERNAL_ERROR;
    *j = (record_job){ e, e->serial, 0 }; /* the graph's replays make fresh records (emu_event_replay_record) */
    emu_task_desc t = { "event record", run_record, free, j, 0, { { 0, 0, 0 } } };
    if ((rc = emu_capture_record(s->capture, &t))) return rc;
    e->record_id++; /* whatever record was pending before no longer completes this event */
    e->state = EV_PENDING;
    e->capture = emu_graph_serial(s->capture);
    return ACL_SUCCESS;
}

aclError aclrtRecordEvent(aclrtEvent event, aclrtStream stream)
{
    EMU_CALL(aclrtRecordEvent, record_event_locked(event, stream));
}

typedef struct wait_job {
    emu_stream *target;
    uint64_t serial, seq;
} wait_job;

/* Runs on the waiting stream: everything up to the awaited record completes first, without the host. A
 * wait names a record already queued when it was made, so waits cannot form a cycle. */
static int run_wait(void *payload, char *msg, size_t cap)
{
    (void)msg;
    (void)cap;
    wait_job *j = payload;
    /* A failure there is reported by that stream's own synchronisation. */
    if (stream_exists(j->target, j->serial)) emu_stream_drain(j->target, j->seq);
    return 0;
}

static aclError wait_event_locked(aclrtStream stream, aclrtEvent event)
{
    emu_event *e;
    emu_stream *s;
    int rc = event_on_stream(event, stream, &e, &s);
    if (rc) return rc;
    if (!e->plain && !(e->flags & ACL_EVENT_SYNC)) {
        /* CANN's documentation of aclrtCreateEventWithFlag and aclrtCreateEventExWithFlag: without
         * ACL_EVENT_SYNC the event cannot be used with aclrtStreamWaitEvent (a timing-only event). */
        emuInternalSetError("event %p was created with flags %#x, without ACL_EVENT_SYNC: a stream can only wait "
                            "for an event made with ACL_EVENT_SYNC (status 107000)", event, (unsigned)e->flags);
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    emu_graph *ec = event_capture(e), *sc = s->capture;
    if (ec) {
        if (sc == ec) return ACL_SUCCESS; /* recorded earlier on the same captured stream: already ordered */
        return emu_capture_refuse(ec, EMU_RT_FEATURE_NOT_SUPPORT, "event %p was recorded in a capture and stream "
                                  "%p is not that capture's stream: the emulator captures one stream only (a "
                                  "capture joining other streams is not modelled)", event, stream);
    }
    if (sc) {
        /* hicann/runtime api_impl.cc StreamWaitEvent on a capturing stream: an event not made in new mode
         * (ExWithFlag) is not supported, and one recorded outside the capture has no record in the graph
         * (RT_ERROR_STREAM_CAPTURE_ISOLATION, reported as ACL_ERROR_RT_CAPTURE_DEPENDENCY). */
        if (!e->ex)
            return emu_capture_refuse(sc, EMU_RT_FEATURE_NOT_SUPPORT, "a captured stream can only wait for an "
                                      "event made by aclrtCreateEventExWithFlag, and event %p was not", event);
        if (e->state != EV_NEVER)
            return emu_capture_refuse(sc, EMU_RT_CAPTURE_DEPENDENCY, "event %p was recorded outside the capture: "
                                      "the graph has no record to wait for", event);
        return ACL_SUCCESS;
    }
    if (e->state == EV_NEVER) {
        if (!e->plain) return ACL_SUCCESS; /* an ACL_EVENT_SYNC event never recorded: nothing to wait for */
        /* hicann/runtime event.cc Event::Wait: a default event that was never recorded is refused. */
        emuInternalSetError("event %p has not been recorded: record it (aclrtRecordEvent) before a stream waits "
                            "for it (status 107000)", event);
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    if (e->state == EV_DONE || !stream_exists(e->stream, e->stream_serial)) return ACL_SUCCESS;
    wait_job *j = malloc(sizeof *j);
    if (!j) return ACL_ERROR_RT_INTERNAL_ERROR;
    *j = (wait_job){ e->stream, e->stream_serial, e->seq };
    emu_task_desc t = { "event wait", run_wait, free, j, 0, { { 0, 0, 0 } } };
    return emu_stream_enqueue_plain(s, &t);
}

aclError aclrtStreamWaitEvent(aclrtStream stream, aclrtEvent event)
{
    EMU_CALL(aclrtStreamWaitEvent, wait_event_locked(stream, event));
}

static aclError sync_event_locked(aclrtEvent event)
{
    int rc = emuInternalRequireInit();
    if (rc || (rc = check_event(event, "event"))) return rc;
    emu_event *e = event;
    emu_graph *g = event_capture(e);
    if (g) return refuse_captured_event(g, e, "synchronising");
    emuInternalStatAdd(EMU_STAT_SYNCS, 1);
    emuInternalStatAdd(EMU_STAT_HOST_SYNCS, 1);
    if (e->state != EV_PENDING || !stream_exists(e->stream, e->stream_serial)) return ACL_SUCCESS;
    emu_stream_drain(e->stream, e->seq);
    return emu_stream_take_error(e->stream);
}

aclError aclrtSynchronizeEvent(aclrtEvent event) { EMU_CALL(aclrtSynchronizeEvent, sync_event_locked(event)); }

/* Never waits (see let_progress). hicann/runtime's aclrtQueryEventStatusImpl reports COMPLETE only for a
 * recorded event whose record has run, so a never-recorded event is NOT_READY. Failures of the work that
 * completes stay for the recording stream's next synchronisation. */
static aclError event_status_locked(aclrtEvent event, aclrtEventRecordedStatus *status)
{
    int rc = emuInternalRequireInit();
    if (rc || (rc = check_event(event, "event"))) return rc;
    if (!status) {
        emuInternalSetError("status is NULL (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    emu_event *e = event;
    emu_graph *g = event_capture(e);
    if (g) return refuse_captured_event(g, e, "querying");
    if (e->state == EV_PENDING && stream_exists(e->stream, e->stream_serial)) let_progress(e->stream);
    *status = e->state == EV_DONE ? ACL_EVENT_RECORDED_STATUS_COMPLETE : ACL_EVENT_RECORDED_STATUS_NOT_READY;
    return ACL_SUCCESS;
}

aclError aclrtQueryEventStatus(aclrtEvent event, aclrtEventRecordedStatus *status)
{
    EMU_CALL(aclrtQueryEventStatus, event_status_locked(event, status));
}

static aclError elapsed_locked(float *ms, aclrtEvent start, aclrtEvent end)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (!ms) {
        emuInternalSetError("ms is NULL (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    if ((rc = check_event(start, "startEvent")) || (rc = check_event(end, "endEvent"))) return rc;
    emu_event *a = start, *b = end;
    emu_graph *g = event_capture(a) ? event_capture(a) : event_capture(b);
    if (g) return refuse_captured_event(g, event_capture(a) ? a : b, "timing");
    if (!(a->flags & ACL_EVENT_TIME_LINE) || !(b->flags & ACL_EVENT_TIME_LINE)) {
        emuInternalSetError("both events need the ACL_EVENT_TIME_LINE flag to be timed (status 107000)");
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    if (a->state != EV_DONE || b->state != EV_DONE) {
        emuInternalSetError("%s has not completed: record it and synchronise first (status 107000)",
                            a->state != EV_DONE ? "startEvent" : "endEvent");
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    *ms = (float)(b->t_ms - a->t_ms);
    return ACL_SUCCESS;
}

aclError aclrtEventElapsedTime(float *ms, aclrtEvent startEvent, aclrtEvent endEvent)
{
    EMU_CALL(aclrtEventElapsedTime, elapsed_locked(ms, startEvent, endEvent));
}

static aclError destroy_event_locked(aclrtEvent event)
{
    int rc = emuInternalRequireInit();
    if (rc || (rc = check_event(event, "event"))) return rc;
    emuInternalHandleRemove(EMU_H_EVENT, event);
    free(event);
    emuInternalStatAdd(EMU_STAT_LIVE_EVENTS, -1);
    return ACL_SUCCESS;
}

aclError aclrtDestroyEvent(aclrtEvent event) { EMU_CALL(aclrtDestroyEvent, destroy_event_locked(event)); }
