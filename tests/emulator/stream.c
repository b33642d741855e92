/* libascendcl: streams (FIFO queues run only when synchronised), events and synchronisation.
 *
 * Nothing queued runs at launch: the op, async copies/fills and event records wait until the stream,
 * its device or a later event is synchronised, so a caller that forgets to synchronise reads stale data.
 * A task that fails records the stream's error, reported (once) by the next synchronisation. */
#include "emu_rt.h"

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
    int device;
    int user; /* made by aclrtCreateStream (else a context's default stream) */
    task *head, *tail;
    uint64_t last_seq;
    int err;
    char errmsg[EMU_MSG_CAP];
} emu_stream;

enum { EV_NEVER, EV_PENDING, EV_DONE };
typedef struct emu_event {
    uint64_t serial;
    uint32_t flags;
    int state;
    emu_stream *stream; /* where the pending record waits */
    uint64_t seq;       /* ... and its task */
    double t_ms;
} emu_event;

static emu_stream *g_streams;
static uint64_t g_event_serial;

/* ---- streams ---- */

void *emu_stream_create(void *ctx, int user)
{
    emu_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->device = emu_context_device(ctx);
    s->user = user;
    s->next_all = g_streams;
    if (g_streams) g_streams->prev_all = s;
    g_streams = s;
    return s;
}

static int stream_exists(const emu_stream *s)
{
    for (emu_stream *it = g_streams; it; it = it->next_all)
        if (it == s) return 1;
    return 0;
}

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

int emuInternalEnqueue(void *stream, const emu_task_desc *task_)
{
    if (enqueue(stream, task_)) return 0;
    if (task_->drop) task_->drop(task_->payload);
    emuInternalSetError("cannot queue %s: out of host memory (status 507000)", task_->name);
    return ACL_ERROR_RT_INTERNAL_ERROR;
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
    /* Like a device, the work already queued still completes; its failure is reported here. */
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
    if (timeout < -1) {
        emuInternalSetError("timeout %d is invalid: -1 (forever) or >= 0 ms (status 100000)", (int)timeout);
        return ACL_ERROR_INVALID_PARAM;
    }
    void *s;
    int dev;
    if ((rc = emuInternalStreamResolve(stream, &s, &dev))) return rc;
    if ((rc = emu_device_check_abort(dev))) return rc; /* emu (fault.c): the stream's device stopped */
    emuInternalStatAdd(EMU_STAT_SYNCS, 1);
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
    emuInternalStatAdd(EMU_STAT_SYNCS, 1);
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

/* ---- events ---- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static aclError create_event_locked(aclrtEvent *event, uint32_t flags)
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
    emuInternalStatAdd(EMU_STAT_LIVE_EVENTS, 1);
    *event = e;
    return ACL_SUCCESS;
}

/* Plain aclrtCreateEvent events can be timed; WithFlag ones only with ACL_EVENT_TIME_LINE. */
aclError aclrtCreateEvent(aclrtEvent *event)
{
    EMU_CALL(aclrtCreateEvent, create_event_locked(event, ACL_EVENT_TIME_LINE | 1u));
}

aclError aclrtCreateEventWithFlag(aclrtEvent *event, uint32_t flag)
{
    EMU_CALL(aclrtCreateEventWithFlag, create_event_locked(event, flag));
}

static int check_event(aclrtEvent event, const char *what)
{
    if (event && emuInternalHandleLive(EMU_H_EVENT, event)) return 0;
    emuInternalSetError("%s %p is not a live event%s (status 107000)", what, event,
                        event && emuInternalHandleDead(EMU_H_EVENT, event) ? " (destroyed)" : "");
    return ACL_ERROR_RT_PARAM_INVALID;
}

typedef struct record_job {
    emu_event *event;
    uint64_t serial, seq;
} record_job;

static int run_record(void *payload, char *msg, size_t cap)
{
    (void)msg;
    (void)cap;
    record_job *j = payload;
    /* The event may have been destroyed (or re-recorded) since: then this record means nothing. */
    if (emuInternalHandleLive(EMU_H_EVENT, j->event) && j->event->serial == j->serial && j->event->seq == j->seq) {
        j->event->state = EV_DONE;
        j->event->t_ms = now_ms();
    }
    return 0;
}

static aclError record_event_locked(aclrtEvent event, aclrtStream stream)
{
    int rc = emuInternalRequireInit();
    if (rc || (rc = check_event(event, "event"))) return rc;
    void *s;
    if ((rc = emuInternalStreamResolve(stream, &s, NULL))) return rc;
    emu_event *e = event;
    record_job *j = malloc(sizeof *j);
    if (!j) return ACL_ERROR_RT_INTERNAL_ERROR;
    j->event = e;
    j->serial = e->serial;
    j->seq = ((emu_stream *)s)->last_seq + 1; /* the sequence number enqueue() is about to give it */
    emu_task_desc t = { "event record", run_record, free, j, 0, { { 0, 0, 0 } } };
    if ((rc = emuInternalEnqueue(s, &t))) return rc;
    e->state = EV_PENDING;
    e->stream = s;
    e->seq = j->seq;
    return ACL_SUCCESS;
}

aclError aclrtRecordEvent(aclrtEvent event, aclrtStream stream)
{
    EMU_CALL(aclrtRecordEvent, record_event_locked(event, stream));
}

static aclError sync_event_locked(aclrtEvent event)
{
    int rc = emuInternalRequireInit();
    if (rc || (rc = check_event(event, "event"))) return rc;
    emu_event *e = event;
    emuInternalStatAdd(EMU_STAT_SYNCS, 1);
    if (e->state != EV_PENDING || !stream_exists(e->stream)) return ACL_SUCCESS; /* nothing to wait for */
    emu_stream_drain(e->stream, e->seq);
    return emu_stream_take_error(e->stream);
}

aclError aclrtSynchronizeEvent(aclrtEvent event) { EMU_CALL(aclrtSynchronizeEvent, sync_event_locked(event)); }

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
