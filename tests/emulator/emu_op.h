/* Hidden interface between the op's host side (op.c) and its emulated kernel (kernel.c), in libopapi. */
#ifndef EMU_OP_H
#define EMU_OP_H

#include "emu_internal.h"

enum { QS_SELF, QS_INDICES, QS_UPDATES, QS_SCALES, QS_ZP };

/* Everything one launch needs, copied at launch: the kernel reads memory only when the stream runs it. */
typedef struct qs_job {
    emu_view t[EMU_OP_TENSORS];
    int has_zp;
    int axis;
    uintptr_t workspace;
    uint64_t workspace_size;
} qs_job;

EMU_HIDDEN int emu_qs_kernel(void *job, char *msg, size_t cap); /* an emu_task_run */

#endif
