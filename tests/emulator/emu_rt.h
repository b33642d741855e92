/* Hidden helpers shared by the source files of libascendcl only. */
#ifndef EMU_RT_H
#define EMU_RT_H

#include "emu_internal.h"

#define EMU_MAX_DEVICES 64

/* The error codes the emulator needs beyond include/ (values from hicann/runtime acl_base_rt.h). */
#define EMU_ACL_ERROR_INVALID_FILE 100003
#define EMU_ACL_ERROR_RT_DRV_INTERNAL 507899 /* ACL_ERROR_RT_DRV_INTERNAL_ERROR: the driver refuses the call */

/* state.c */
EMU_HIDDEN int emu_forked_child(void); /* ACL is initialised, by another process (we are a fork's child) */
EMU_HIDDEN long emu_init_pid(void);

/* device.c */
EMU_HIDDEN int emu_device_count(void);          /* CANN_EMU_DEVICE_COUNT, read at each call */
EMU_HIDDEN int emu_check_device_id(int32_t id); /* 0, or 107001 with a message */
EMU_HIDDEN void *emu_current_context(void);     /* this thread's live context, or NULL */
EMU_HIDDEN int emu_require_device(int *device); /* 0, or 107002 with a message */
EMU_HIDDEN void *emu_context_default_stream(void *ctx);
EMU_HIDDEN int emu_context_device(void *ctx);

/* memory.c */
EMU_HIDDEN int emu_is_device_address(uintptr_t p); /* inside a device block, live or freed */
EMU_HIDDEN int emu_host_block_live(uintptr_t lo, uintptr_t hi); /* range inside a live aclrtMallocHost block */
EMU_HIDDEN int emu_host_block_known(uintptr_t p);            /* start inside a live aclrtMallocHost block */

/* fault.c: stopped devices (sticky faults). */
EMU_HIDDEN int emu_device_abort_code(int device);  /* the fault that stopped the device, or 0 */
EMU_HIDDEN int emu_device_check_abort(int device); /* the same, with the thread's message set */
EMU_HIDDEN void emu_device_abort_clear(int device);
/* A queued task on stream failed with code: stops the device when the failure mode says so. */
EMU_HIDDEN void emu_stream_fault(const void *stream, int device, int code);
EMU_HIDDEN void emu_stream_mode_forget(const void *stream); /* the stream is gone */

/* stream.c */
EMU_HIDDEN void *emu_stream_create(void *ctx, int user);
EMU_HIDDEN int emu_stream_drain(void *stream, uint64_t upto); /* run queued work; upto 0 = all */
EMU_HIDDEN int emu_stream_take_error(void *stream);           /* the recorded error, reported once */
EMU_HIDDEN void emu_stream_release(void *stream);
/* Marks queued tasks that touch [lo, hi) as use-after-free; returns how many. */
EMU_HIDDEN int emu_streams_poison(uintptr_t lo, uintptr_t hi, int host, const char *why);

#endif
