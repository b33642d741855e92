/* libascendcl: the process-wide lock, initialisation, per-thread error messages, counters, the handle
 * registry and the emu* introspection symbols. */
#include "emu_rt.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- lock ---- */

/* Recursive: queued kernels (in libopapi) run while a synchronising call holds the lock and call back in. */
static pthread_mutex_t g_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;

void emuInternalLock(void) { pthread_mutex_lock(&g_lock); }
void emuInternalUnlock(void) { pthread_mutex_unlock(&g_lock); }

/* ---- counters ---- */

static int64_t g_stats[EMU_STAT_COUNT];
static const char *const g_stat_names[EMU_STAT_COUNT] = {
    "live_device_blocks", "live_device_bytes", "live_host_blocks", "live_tensors", "live_executors",
    "live_streams", "live_events", "live_host_bytes", "live_graphs", "bytes_h2d", "bytes_d2h", "bytes_d2d",
    "syncs", "errors_detected", "pageable_copies", "device_aborts", "captures", "graph_launches", "host_syncs",
};
/* Live counts describe objects that still exist, so emuReset must not touch them. */
#define EMU_FIRST_RESETTABLE EMU_STAT_BYTES_H2D

#define EMU_SYM_NAME_(name, code) #name,
EMU_HIDDEN const char *const emu_symbol_names[EMU_SYM_COUNT] = { EMU_SYMBOLS(EMU_SYM_NAME_) };
#undef EMU_SYM_NAME_
EMU_HIDDEN int64_t emu_calls[EMU_SYM_COUNT];

void emuInternalStatAdd(int stat, int64_t delta)
{
    if (stat >= 0 && stat < EMU_STAT_COUNT) g_stats[stat] += delta;
}

EMU_HIDDEN int emu_symbol_index(const char *name)
{
    for (int i = 0; i < EMU_SYM_COUNT; i++)
        if (strcmp(emu_symbol_names[i], name) == 0) return i;
    return -1;
}

EMU_HIDDEN void emu_faults_clear(void); /* fault.c */

int64_t emuGetStat(const char *name)
{
    if (!name) return -1;
    int64_t r = -1;
    emuInternalLock();
    if (strncmp(name, "calls:", 6) == 0) {
        int i = emu_symbol_index(name + 6);
        if (i >= 0) r = emu_calls[i];
    } else {
        for (int i = 0; i < EMU_STAT_COUNT; i++)
            if (strcmp(g_stat_names[i], name) == 0) r = g_stats[i];
    }
    emuInternalUnlock();
    return r;
}

void emuReset(void)
{
    emuInternalLock();
    for (int i = EMU_FIRST_RESETTABLE; i < EMU_STAT_COUNT; i++) g_stats[i] = 0;
    memset(emu_calls, 0, sizeof emu_calls);
    emu_faults_clear();
    emuInternalUnlock();
}

/* ---- per-thread error message ---- */

static _Thread_local char tl_msg[EMU_MSG_CAP];
static _Thread_local int tl_has_msg;
static _Thread_local char tl_returned[EMU_MSG_CAP]; /* what the last aclGetRecentErrMsg handed out */
EMU_HIDDEN _Thread_local int emu_current_symbol = -1;

static void set_error_v(const char *fmt, va_list ap)
{
    int n = 0;
    if (emu_current_symbol >= 0 && emu_current_symbol < EMU_SYM_COUNT)
        n = snprintf(tl_msg, sizeof tl_msg, "%s: ", emu_symbol_names[emu_current_symbol]);
    if (n < 0 || (size_t)n >= sizeof tl_msg) n = 0;
    vsnprintf(tl_msg + n, sizeof tl_msg - (size_t)n, fmt, ap);
    tl_has_msg = 1;
}

void emuInternalSetError(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error_v(fmt, ap);
    va_end(ap);
}

const char *aclGetRecentErrMsg(void)
{
    /* Not faultable: it is how faults are reported. Returns and clears; the returned text stays valid
     * until this thread's next call. */
    emuInternalLock();
    emuInternalEnter(EMU_SYM_aclGetRecentErrMsg);
    const char *r = NULL;
    if (tl_has_msg) {
        memcpy(tl_returned, tl_msg, sizeof tl_returned);
        tl_has_msg = 0;
        tl_msg[0] = '\0';
        r = tl_returned;
    }
    emuInternalUnlock();
    return r;
}

/* ---- initialisation ---- */

/* hicann/runtime src/acl/aclrt_impl/acl.cpp: aclInit counts its callers (a repeated call increments the
 * count and returns ACL_ERROR_REPEAT_INITIALIZE); aclFinalize finalizes whatever the count and sets it to
 * zero (ACL ends for every user in the process); aclFinalizeReference (8.5 and later) decrements and
 * finalizes when it reaches zero. The process id is recorded at aclInit: ACL does not survive a fork. */
static uint64_t g_init_count;
static int g_finalized;
static pid_t g_init_pid;

int emuInternalRequireInit(void)
{
    if (g_init_count) return 0;
    if (g_finalized) {
        emuInternalSetError("ACL was finalized (aclFinalize, or aclFinalizeReference reaching zero): "
                            "call aclInit again before using it (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    emuInternalSetError("aclInit has not been called (status 100001)");
    return ACL_ERROR_UNINITIALIZE;
}

EMU_HIDDEN int emu_forked_child(void) { return g_init_count && g_init_pid != getpid(); }
EMU_HIDDEN long emu_init_pid(void) { return (long)g_init_pid; }

static aclError init_locked(const char *configPath)
{
    if (g_init_count) {
        g_init_count++;
        emuInternalSetError("aclInit was already called in this process (%llu callers now; status 100002)",
                            (unsigned long long)g_init_count);
        return ACL_ERROR_REPEAT_INITIALIZE;
    }
    if (configPath && *configPath && access(configPath, R_OK) != 0) {
        emuInternalSetError("cannot read the config file '%s' (status 100000)", configPath);
        return ACL_ERROR_INVALID_PARAM;
    }
    g_init_count = 1;
    g_finalized = 0;
    g_init_pid = getpid();
    return ACL_SUCCESS;
}

aclError aclInit(const char *configPath) { EMU_CALL(aclInit, init_locked(configPath)); }

/* Objects stay registered: live counters keep showing what the caller never released. */
static void finalize_now(void)
{
    g_init_count = 0;
    g_finalized = 1;
}

static aclError finalize_locked(void)
{
    if (g_finalized) {
        emuInternalSetError("aclFinalize was already called (status 100037)");
        return ACL_ERROR_REPEAT_FINALIZE;
    }
    if (!g_init_count) {
        emuInternalSetError("aclInit has not been called (status 100001)");
        return ACL_ERROR_UNINITIALIZE;
    }
    finalize_now();
    return ACL_SUCCESS;
}

aclError aclFinalize(void) { EMU_CALL(aclFinalize, finalize_locked()); }

#ifndef EMU_NO_FINALIZE_REFERENCE
static aclError finalize_reference_locked(uint64_t *refCount)
{
    if (g_init_count < 1) {
        if (refCount) *refCount = 0;
        emuInternalSetError("aclFinalizeReference called repeatedly or without aclInit (status 100037)");
        return ACL_ERROR_REPEAT_FINALIZE;
    }
    if (--g_init_count == 0) finalize_now();
    if (refCount) *refCount = g_init_count;
    return ACL_SUCCESS;
}

aclError aclFinalizeReference(uint64_t *refCount)
{
    EMU_CALL(aclFinalizeReference, finalize_reference_locked(refCount));
}
#endif

/* aclrtGetVersion reports the version of the ACL API, not the CANN release: ACL_MAJOR_VERSION,
 * ACL_MINOR_VERSION and ACL_PATCH_VERSION of hicann/runtime's include/external/acl/acl_rt.h (1.17.0). */
static aclError version_locked(int32_t *major, int32_t *minor, int32_t *patch)
{
    if (!major || !minor || !patch) {
        emuInternalSetError("NULL output pointer (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    *major = 1;
    *minor = 17;
    *patch = 0;
    return ACL_SUCCESS;
}

aclError aclrtGetVersion(int32_t *majorVersion, int32_t *minorVersion, int32_t *patchVersion)
{
    EMU_CALL(aclrtGetVersion, version_locked(majorVersion, minorVersion, patchVersion));
}

/* ---- the emulated release ---- */

/* hicann/runtime src/acl/aclrt_impl/acl.cpp (aclsysGetVersionStr) reads "Version=" from
 * $ASCEND_HOME_PATH/share/info/<pkgName>/version.info (also trying '-' and '_' swapped) and fails with
 * ACL_ERROR_INVALID_FILE when there is none. build.py writes those files for the packages below; every
 * one reports the emulated release. */
static const char *const g_packages[] = { "runtime", "toolkit", "opp", "compiler" };

static aclError version_str_locked(char *pkgName, char *versionStr)
{
    if (!pkgName || !versionStr) {
        emuInternalSetError("%s is NULL (status 100000)", !pkgName ? "pkgName" : "versionStr");
        return ACL_ERROR_INVALID_PARAM;
    }
    for (size_t i = 0; i < sizeof g_packages / sizeof g_packages[0]; i++)
        if (strcmp(pkgName, g_packages[i]) == 0) {
            snprintf(versionStr, ACL_PKG_VERSION_MAX_SIZE, "%s", emuInternalRelease());
            return ACL_SUCCESS;
        }
    emuInternalSetError("version file not found for package '%.64s': no share/info/%.64s/version.info in the "
                        "toolkit (status 100003)", pkgName, pkgName);
    return EMU_ACL_ERROR_INVALID_FILE;
}

aclError aclsysGetVersionStr(char *pkgName, char *versionStr)
{
    EMU_CALL(aclsysGetVersionStr, version_str_locked(pkgName, versionStr));
}

static char g_soc[128];

const char *aclrtGetSocName(void)
{
    /* CANN_EMU_SOC is read at every call so that one process can play several products. */
    const char *r = NULL;
    emuInternalLock();
    if (emuInternalEnter(EMU_SYM_aclrtGetSocName) == 0 && emuInternalRequireInit() == 0) {
        snprintf(g_soc, sizeof g_soc, "%s", emu_env_str("CANN_EMU_SOC", "Ascend910B1"));
        r = g_soc;
    }
    emuInternalUnlock();
    return r;
}

/* ---- handle registry ---- */

/* Live handles plus a bounded memory of dead ones, so that a consumed executor or a destroyed stream is
 * reported as such rather than as an unknown pointer. Chained hash on (kind, pointer). */
#define EMU_BUCKETS 4096
#define EMU_DEAD_MEMORY 4096

typedef struct handle_node {
    struct handle_node *next;
    const void *p;
    int kind;
    int live;
} handle_node;

static handle_node *g_buckets[EMU_BUCKETS];
static struct { const void *p; int kind; } g_dead_ring[EMU_DEAD_MEMORY];
static size_t g_dead_next, g_dead_count;

static size_t bucket_of(int kind, const void *p)
{
    uintptr_t x = (uintptr_t)p ^ ((uintptr_t)kind * 0x9e3779b97f4a7c15u);
    x ^= x >> 17;
    x *= 0xbf58476d1ce4e5b9u;
    x ^= x >> 31;
    return (size_t)(x % EMU_BUCKETS);
}

static handle_node **find_slot(int kind, const void *p)
{
    handle_node **s = &g_buckets[bucket_of(kind, p)];
    while (*s && !((*s)->p == p && (*s)->kind == kind)) s = &(*s)->next;
    return s;
}

int emuInternalHandleAdd(int kind, const void *p)
{
    handle_node **s = find_slot(kind, p);
    if (*s) {
        (*s)->live = 1; /* a new object at the address of a dead one */
        return 0;
    }
    handle_node *n = calloc(1, sizeof *n);
    if (!n) return -1;
    n->p = p;
    n->kind = kind;
    n->live = 1;
    *s = n;
    return 0;
}

int emuInternalHandleLive(int kind, const void *p)
{
    handle_node **s = find_slot(kind, p);
    return *s && (*s)->live;
}

int emuInternalHandleDead(int kind, const void *p)
{
    handle_node **s = find_slot(kind, p);
    return *s && !(*s)->live;
}

static void forget(int kind, const void *p)
{
    handle_node **s = find_slot(kind, p);
    if (*s && !(*s)->live) {
        handle_node *n = *s;
        *s = n->next;
        free(n);
    }
}

void emuInternalHandleRemove(int kind, const void *p)
{
    handle_node **s = find_slot(kind, p);
    if (!*s || !(*s)->live) return;
    (*s)->live = 0;
    if (g_dead_count == EMU_DEAD_MEMORY)
        forget(g_dead_ring[g_dead_next].kind, g_dead_ring[g_dead_next].p);
    else
        g_dead_count++;
    g_dead_ring[g_dead_next].p = p;
    g_dead_ring[g_dead_next].kind = kind;
    g_dead_next = (g_dead_next + 1) % EMU_DEAD_MEMORY;
}
