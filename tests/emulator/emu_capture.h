/* Hidden interface between libascendcl's streams and events (stream.c), its ACL graph capture (graph.c)
 * and the capture hooks of memory.c. Codes are the runtime's (hicann/runtime
 * include/external/acl/error_codes/rt_error_codes.h); 00_acl_base.h declares only what the binding uses. */
#ifndef EMU_CAPTURE_H
#define EMU_CAPTURE_H

#include "emu_rt.h"

#define EMU_RT_STREAM_CONTEXT 107003          /* ACL_ERROR_RT_STREAM_CONTEXT: stream not in current context */
#define EMU_RT_MODEL_CONTEXT 107004           /* ACL_ERROR_RT_MODEL_CONTEXT: model not in current context */
#define EMU_RT_CAPTURE_DEPENDENCY 107024      /* ACL_ERROR_RT_CAPTURE_DEPENDENCY */
#define EMU_RT_MODEL_CAPTURED 107026          /* ACL_ERROR_RT_MODEL_CAPTURED: model is captured */
#define EMU_RT_STREAM_CAPTURED 107027         /* ACL_ERROR_RT_STREAM_CAPTURED: stream is captured */
#define EMU_RT_EVENT_CAPTURED 107028          /* ACL_ERROR_RT_EVENT_CAPTURED: event is captured */
#define EMU_RT_STREAM_NOT_CAPTURED 107029     /* ACL_ERROR_RT_STREAM_NOT_CAPTURED */
#define EMU_RT_CAPTURE_MODE_NOT_SUPPORT 107030 /* ACL_ERROR_RT_CAPTURE_MODE_NOT_SUPPORT */
#define EMU_RT_CAPTURE_WRONG_THREAD 107038    /* ACL_ERROR_RT_STREAM_CAPTURE_WRONG_THREAD */
#define EMU_RT_CAPTURE_MODE_BLOCK_ASYNC 107041 /* ACL_ERROR_RT_CAPTURE_MODE_BLOCK_ASYNC */
#define EMU_RT_FEATURE_NOT_SUPPORT 207000     /* ACL_ERROR_RT_FEATURE_NOT_SUPPORT */
#define EMU_RT_CAPTURE_INVALIDATED 507903     /* ACL_ERROR_RT_STREAM_CAPTURE_INVALIDATED */

typedef struct emu_graph emu_graph; /* an aclmdlRI: while captured, also the capture itself */

/* stream.c */
EMU_HIDDEN emu_graph *emu_stream_capture(void *stream); /* the capture begun on it and not ended, or NULL */
EMU_HIDDEN void emu_stream_set_capture(void *stream, emu_graph *g);
EMU_HIDDEN void *emu_stream_context(void *stream);
/* Queues a task that replays a recorded one (no capture diversion): 0 or an aclError. */
EMU_HIDDEN int emu_stream_enqueue_plain(void *stream, const emu_task_desc *t);
/* A recorded event record is replayed as a fresh record of the same event on stream: 1 when t was one. */
EMU_HIDDEN int emu_event_replay_record(const emu_task_desc *t, void *stream, int *rc);
/* Runs every queued task for which match() holds, with all work queued before it on its stream; returns
 * whether anything had to run (the host waited). */
EMU_HIDDEN int emu_streams_wait_for(int (*match)(const emu_task_desc *t, const void *arg), const void *arg);

/* graph.c (stubs when built without graphs) */
EMU_HIDDEN uint64_t emu_graph_serial(const emu_graph *g);
EMU_HIDDEN emu_graph *emu_capture_by_serial(uint64_t serial); /* an active capture, or NULL */
/* Appends a task to an active capture, which takes its payload: 0, or 507903 when it was invalidated. */
EMU_HIDDEN int emu_capture_record(emu_graph *g, const emu_task_desc *t);
/* Invalidates the capture (aclmdlRICaptureEnd will fail with 507903), sets the thread's message from
 * fmt and returns code. */
EMU_HIDDEN int emu_capture_refuse(emu_graph *g, int code, const char *fmt, ...) EMU_PRINTF(3, 4);
/* Synchronous copies and memsets: 0, or code (107030, or 107041 for an asynchronous copy the runtime made
 * synchronous), invalidating, when a capture's mode forbids them here. */
EMU_HIDDEN int emu_capture_check_sync_work(const char *what, int code);
/* Device synchronisation: 0, or 107027 (invalidating) while any stream of device is captured. */
EMU_HIDDEN int emu_capture_check_device_sync(int device);

#endif
