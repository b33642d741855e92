/* The emulated CANN release. Built into libascendcl.so, or (build.py --as-shipped) into a private
 * libruntime.so that libascendcl.so needs by soname, the way the toolkit's libascendcl needs its runtime. */
#include "emu_internal.h"

#include <stdio.h>

#ifndef EMU_CANN_RELEASE
#define EMU_CANN_RELEASE "8.3.RC1"
#endif

const char *emuInternalRelease(void) { return emu_env_str("CANN_EMU_VERSION", EMU_CANN_RELEASE); }

int emuInternalReleaseAtLeast(int major, int minor)
{
    int ma = 0, mi = 0;
    if (sscanf(emuInternalRelease(), "%d.%d", &ma, &mi) != 2) return 0; /* unreadable: the oldest rules */
    return ma > major || (ma == major && mi >= minor);
}
