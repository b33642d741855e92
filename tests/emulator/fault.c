/* libascendcl: call counting, fault injection (CANN_EMU_FAIL and emuInjectFault), stopped devices. */
#include "emu_rt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EMU_MAX_FAULTS 256

extern EMU_HIDDEN const char *const emu_symbol_names[EMU_SYM_COUNT];
extern EMU_HIDDEN int64_t emu_calls[EMU_SYM_COUNT];
extern EMU_HIDDEN _Thread_local int emu_current_symbol;
EMU_HIDDEN int emu_symbol_index(const char *name);

#define EMU_SYM_CODE_(name, code) code,
static const int g_default_code[EMU_SYM_COUNT] = { EMU_SYMBOLS(EMU_SYM_CODE_) };
#undef EMU_SYM_CODE_

/* A pending fault: the remaining-th call of symbol from now fails with code. */
typedef struct fault {
    int symbol;
    int remaining;
    int nth;
    int code;
} fault;

static fault g_faults[EMU_MAX_FAULTS];
static int g_nfaults;

/* ---- stopped devices ----
 * hicann/runtime docs/zh/api_ref/06_stream_management.md (aclrtSetStreamFailureMode): by default
 * (ACL_CONTINUE_ON_FAILURE) a failed task is reported and the stream goes on; with ACL_STOP_ON_FAILURE the
 * stream stops at the failure and accepts no new work. A device-level fault (507053-507055) stops the
 * device whatever the mode. A stopped device answers every call that touches it with the fault's code
 * until aclrtResetDevice. CANN_EMU_STOP_ON_FAILURE=1 (read at each fault) plays the toolkit's
 * stop-on-failure mode for every stream. */

#define EMU_MAX_STOP_STREAMS 1024

static int g_abort[EMU_MAX_DEVICES];
static const void *g_stop_streams[EMU_MAX_STOP_STREAMS];
static int g_nstop;

static int is_kernel_fault(int code)
{
    return (code >= 507014 && code <= 507016) || (code >= 507034 && code <= 507036) ||
           (code >= 507042 && code <= 507045);
}

static int is_device_fault(int code) { return code >= 507053 && code <= 507055; }

static int stop_mode_everywhere(void) { return emu_env_u64("CANN_EMU_STOP_ON_FAILURE", 0) == 1; }

static int stream_stops(const void *stream)
{
    for (int i = 0; i < g_nstop; i++)
        if (g_stop_streams[i] == stream) return 1;
    return 0;
}

static void abort_device(int device, int code)
{
    if (device < 0 || device >= EMU_MAX_DEVICES || g_abort[device]) return;
    g_abort[device] = code;
    emuInternalStatAdd(EMU_STAT_DEVICE_ABORTS, 1);
}

int emu_device_abort_code(int device)
{
    return device >= 0 && device < EMU_MAX_DEVICES ? g_abort[device] : 0;
}

int emu_device_check_abort(int device)
{
    int code = emu_device_abort_code(device);
    if (code)
        emuInternalSetError("device %d stopped after a fault (status %d): every call that touches it fails "
                            "until aclrtResetDevice", device, code);
    return code;
}

void emu_device_abort_clear(int device)
{
    if (device >= 0 && device < EMU_MAX_DEVICES) g_abort[device] = 0;
}

void emu_stream_fault(const void *stream, int device, int code)
{
    if (is_device_fault(code) || (is_kernel_fault(code) && (stop_mode_everywhere() || stream_stops(stream))))
        abort_device(device, code);
}

void emu_stream_mode_forget(const void *stream)
{
    for (int i = 0; i < g_nstop; i++)
        if (g_stop_streams[i] == stream) {
            g_stop_streams[i] = g_stop_streams[--g_nstop];
            return;
        }
}

static aclError failure_mode_locked(aclrtStream stream, uint64_t mode)
{
    int rc = emuInternalRequireInit(), dev;
    if (rc) return rc;
    if (mode != ACL_CONTINUE_ON_FAILURE && mode != ACL_STOP_ON_FAILURE) {
        emuInternalSetError("mode %llu is invalid: ACL_CONTINUE_ON_FAILURE (0) or ACL_STOP_ON_FAILURE (1) "
                            "(status 100000)", (unsigned long long)mode);
        return ACL_ERROR_INVALID_PARAM;
    }
    if (!stream && strncmp(emu_env_str("CANN_EMU_SOC", "Ascend910B1"), "Ascend310P", 10) == 0) {
        emuInternalSetError("the default (NULL) stream cannot be given a failure mode on %s (status 100000)",
                            emu_env_str("CANN_EMU_SOC", "Ascend910B1"));
        return ACL_ERROR_INVALID_PARAM;
    }
    void *s;
    if ((rc = emuInternalStreamResolve(stream, &s, &dev))) return rc;
    if (mode == ACL_STOP_ON_FAILURE && !stream_stops(s)) {
        if (g_nstop == EMU_MAX_STOP_STREAMS) {
            emuInternalSetError("too many streams in stop-on-failure mode (status 507000)");
            return ACL_ERROR_RT_INTERNAL_ERROR;
        }
        g_stop_streams[g_nstop++] = s;
    } else if (mode == ACL_CONTINUE_ON_FAILURE) {
        emu_stream_mode_forget(s);
    }
    return ACL_SUCCESS;
}

aclError aclrtSetStreamFailureMode(aclrtStream stream, uint64_t mode)
{
    EMU_CALL(aclrtSetStreamFailureMode, failure_mode_locked(stream, mode));
}

/* Calls that do not touch a device (process state, descriptors, phase 1) or release things: a stopped
 * device does not refuse them, so that a caller can still clean up before aclrtResetDevice. */
static const char *const g_untouched[] = {
    "aclInit", "aclFinalize", "aclFinalizeReference", "aclGetRecentErrMsg", "aclrtGetVersion",
    "aclsysGetVersionStr", "aclrtGetSocName", "aclrtSetDevice", "aclrtResetDevice", "aclrtGetDevice",
    "aclrtGetDeviceCount", "aclrtGetCurrentContext", "aclrtSetCurrentContext", "aclrtDestroyContext",
    "aclrtFree", "aclrtFreeHost", "aclrtDestroyStream", "aclrtDestroyEvent", "aclrtPointerGetAttributes",
    "aclCreateTensor", "aclDestroyTensor", "aclDestroyAclOpExecutor", "aclSetAclOpExecutorRepeatable",
    "aclSetInputTensorAddr", "aclSetOutputTensorAddr", "aclnnInplaceQuantScatterGetWorkspaceSize",
    "aclnnInplaceQuantScatterV2GetWorkspaceSize", "aclmdlRIDestroy",
};

static int touches_device(int symbol)
{
    static signed char untouched[EMU_SYM_COUNT];
    static int ready;
    if (!ready) {
        ready = 1;
        for (size_t i = 0; i < sizeof g_untouched / sizeof g_untouched[0]; i++) {
            int s = emu_symbol_index(g_untouched[i]);
            if (s >= 0) untouched[s] = 1;
        }
    }
    return !untouched[symbol];
}

static int current_device(void)
{
    void *ctx = emu_current_context();
    return ctx ? emu_context_device(ctx) : -1;
}

EMU_HIDDEN void emu_faults_clear(void)
{
    g_nfaults = 0;
    memset(g_abort, 0, sizeof g_abort);
}

/* -1 when the symbol is unknown or cannot fail (aclGetRecentErrMsg reports faults, so it has none). */
static int add_fault(const char *symbol, int nth, int code)
{
    int s = emu_symbol_index(symbol);
    if (s < 0 || g_default_code[s] == 0 || nth < 1 || g_nfaults == EMU_MAX_FAULTS) return -1;
    g_faults[g_nfaults].symbol = s;
    g_faults[g_nfaults].remaining = nth;
    g_faults[g_nfaults].nth = nth;
    g_faults[g_nfaults].code = code ? code : g_default_code[s];
    g_nfaults++;
    return 0;
}

int emuInjectFault(const char *symbol, int nth, int code)
{
    if (!symbol) return -1;
    emuInternalLock();
    int r = add_fault(symbol, nth, code);
    emuInternalUnlock();
    return r;
}

/* CANN_EMU_FAIL="symbol:nth[:code],...": entries that do not parse are reported on stderr and skipped. */
static void emu_faults_load_env(void)
{
    const char *env = getenv("CANN_EMU_FAIL");
    if (!env || !*env) return;
    char *copy = strdup(env);
    if (!copy) return;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ') item++;
        if (!*item) continue;
        char name[128];
        int nth = 0, code = 0, used = 0;
        int n = sscanf(item, "%127[^:]:%d%n:%d%n", name, &nth, &used, &code, &used);
        if (n < 2 || item[used] != '\0' || add_fault(name, nth, code) != 0)
            fprintf(stderr, "cann-emulator: ignoring CANN_EMU_FAIL entry '%s' (want symbol:nth[:code])\n",
                    item);
    }
    free(copy);
}

int emuInternalEnter(int symbol)
{
    /* CANN_EMU_FAIL is read once, at the first call of any CANN function, so it counts every call of the
     * process (a fault on "aclInit:1" works too). */
    static int env_loaded;
    if (!env_loaded) {
        env_loaded = 1;
        emu_faults_load_env();
    }
    emu_current_symbol = symbol;
    if (symbol < 0 || symbol >= EMU_SYM_COUNT) return 0;
    emu_calls[symbol]++;
    /* ACL does not support use after fork (shared/spec/emulator.md: the child inherits the parent's ACL
     * state but none of its device handles): any call from a process other than the one that called aclInit
     * fails. The emulator chooses the driver's 507899 for it. Reading the thread's message stays possible,
     * so the failure can be explained. */
    if (symbol != EMU_SYM_aclGetRecentErrMsg && emu_forked_child()) {
        emuInternalStatAdd(EMU_STAT_ERRORS_DETECTED, 1);
        emuInternalSetError("ACL was initialised by process %ld but this is process %ld: ACL cannot be used "
                            "after fork (status %d)", emu_init_pid(), (long)getpid(), EMU_ACL_ERROR_RT_DRV_INTERNAL);
        return EMU_ACL_ERROR_RT_DRV_INTERNAL;
    }
    int stopped = touches_device(symbol) ? emu_device_check_abort(current_device()) : 0;
    if (stopped) return stopped;
    for (int i = 0; i < g_nfaults; i++) {
        if (g_faults[i].symbol != symbol || --g_faults[i].remaining > 0) continue;
        fault f = g_faults[i];
        memmove(&g_faults[i], &g_faults[i + 1], (size_t)(g_nfaults - i - 1) * sizeof g_faults[0]);
        g_nfaults--;
        /* Later faults on the same symbol still count this call. */
        for (int j = i; j < g_nfaults; j++)
            if (g_faults[j].symbol == symbol && g_faults[j].remaining > 1) g_faults[j].remaining--;
        emuInternalSetError("emulated fault injected into %s (call %d from injection) -> status %d",
                            emu_symbol_names[symbol], f.nth, f.code);
        /* An injected fault has no stream: the device-level ones, or any kernel fault in the process-wide
         * stop-on-failure mode, stop the thread's current device (device 0 without one). */
        if (is_device_fault(f.code) || (is_kernel_fault(f.code) && stop_mode_everywhere())) {
            int dev = current_device();
            abort_device(dev < 0 ? 0 : dev, f.code);
        }
        return f.code;
    }
    return 0;
}
