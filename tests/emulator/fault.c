/* libascendcl: call counting and fault injection (CANN_EMU_FAIL and emuInjectFault). */
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

EMU_HIDDEN void emu_faults_clear(void) { g_nfaults = 0; }

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
        return f.code;
    }
    return 0;
}
