/* libascendcl: device and pinned-host memory, synchronous and queued copies and fills.
 *
 * A device block is an address range reserved with PROT_NONE (so the host can never dereference a device
 * pointer, and no host object can ever share its address) backed by a separate host buffer that only the
 * emulator touches. Freed blocks keep their reservation for a while (quarantine), so a stale pointer is
 * recognised as "freed" instead of aliasing a new block. */
#include "emu_capture.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define EMU_QUARANTINE 1024
#define EMU_FRESH_BYTE 0xA5 /* new blocks are not zeroed on a device: make reliance on zeros visible */

typedef struct dev_block {
    uintptr_t addr;
    size_t size;     /* what the caller asked for: the checked extent */
    size_t reserved; /* address space held (page-rounded) */
    unsigned char *host;
    int device;
    int live;
    uint64_t freed_seq;
} dev_block;

typedef struct host_block {
    uintptr_t addr;
    size_t size;
} host_block;

static dev_block *g_blocks; /* sorted by addr; live and quarantined */
static size_t g_nblocks, g_capblocks;
static uint64_t g_free_seq;
static size_t g_quarantined;
static uint64_t g_used[EMU_MAX_DEVICES];

static host_block *g_hosts;
static size_t g_nhosts, g_caphosts;

/* ---- registry ---- */

static size_t lower_index(uintptr_t p) /* first block with addr > p */
{
    size_t lo = 0, hi = g_nblocks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g_blocks[mid].addr <= p) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static dev_block *find_block(uintptr_t p)
{
    size_t i = lower_index(p);
    if (i == 0) return NULL;
    dev_block *b = &g_blocks[i - 1];
    return (p - b->addr < b->reserved) ? b : NULL;
}

static int insert_block(const dev_block *nb)
{
    if (g_nblocks == g_capblocks) {
        size_t cap = g_capblocks ? g_capblocks * 2 : 64;
        dev_block *n = realloc(g_blocks, cap * sizeof *n);
        if (!n) return -1;
        g_blocks = n;
        g_capblocks = cap;
    }
    size_t i = lower_index(nb->addr);
    memmove(&g_blocks[i + 1], &g_blocks[i], (g_nblocks - i) * sizeof *g_blocks);
    g_blocks[i] = *nb;
    g_nblocks++;
    return 0;
}

static void drop_oldest_quarantined(void)
{
    size_t victim = g_nblocks;
    for (size_t i = 0; i < g_nblocks; i++)
        if (!g_blocks[i].live && (victim == g_nblocks || g_blocks[i].freed_seq < g_blocks[victim].freed_seq))
            victim = i;
    if (victim == g_nblocks) return;
    munmap((void *)g_blocks[victim].addr, g_blocks[victim].reserved);
    memmove(&g_blocks[victim], &g_blocks[victim + 1], (g_nblocks - victim - 1) * sizeof *g_blocks);
    g_nblocks--;
    g_quarantined--;
}

int emu_is_device_address(uintptr_t p) { return find_block(p) != NULL; }

static host_block *find_host(uintptr_t p)
{
    for (size_t i = 0; i < g_nhosts; i++)
        if (p - g_hosts[i].addr < g_hosts[i].size) return &g_hosts[i];
    return NULL;
}

int emu_host_block_known(uintptr_t p) { return find_host(p) != NULL; }

int emu_host_block_live(uintptr_t lo, uintptr_t hi)
{
    host_block *h = find_host(lo);
    return h && hi - h->addr <= h->size;
}

int emuInternalDevCheck(uintptr_t addr, uint64_t len, int device, const char *what)
{
    dev_block *b = find_block(addr);
    if (!b) {
        if (addr == 0)
            emuInternalSetError("%s is NULL where device memory is required (status 107000)", what);
        else if (find_host(addr))
            emuInternalSetError("%s %#lx is host memory from aclrtMallocHost, not device memory "
                                "(status 107000)", what, (unsigned long)addr);
        else
            emuInternalSetError("%s %#lx is not device memory from aclrtMalloc (a host pointer?) "
                                "(status 107000)", what, (unsigned long)addr);
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    if (!b->live) {
        emuInternalSetError("%s %#lx points into a device block that was freed (use after free) "
                            "(status 107000)", what, (unsigned long)addr);
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    uint64_t off = addr - b->addr;
    if (off > b->size || len > b->size - off) {
        emuInternalSetError("%s extent [%#lx, +%llu bytes) overruns its device block [%#lx, +%zu bytes) "
                            "(status 107000)", what, (unsigned long)addr, (unsigned long long)len,
                            (unsigned long)b->addr, b->size);
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    if (device >= 0 && b->device != device) {
        emuInternalSetError("%s %#lx lives on device %d but the work runs on device %d (status 107000)",
                            what, (unsigned long)addr, b->device, device);
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    return 0;
}

void *emuInternalDevHost(uintptr_t addr, uint64_t len)
{
    dev_block *b = find_block(addr);
    if (!b || !b->live) return NULL;
    uint64_t off = addr - b->addr;
    if (off > b->size || len > b->size - off) return NULL;
    return b->host + off;
}

/* ---- allocation ---- */

static aclError malloc_locked(void **devPtr, size_t size)
{
    int rc = emuInternalRequireInit(), dev;
    if (rc) return rc;
    if (!devPtr || size == 0) {
        emuInternalSetError("%s (status 100000)", !devPtr ? "devPtr is NULL" : "size is 0");
        return ACL_ERROR_INVALID_PARAM;
    }
    if ((rc = emu_require_device(&dev))) return rc;
    uint64_t limit = emu_env_u64("CANN_EMU_DEVICE_MEMORY", 1ull << 30);
    uint64_t avail = limit > g_used[dev] ? limit - g_used[dev] : 0;
    if (size > avail) {
        emuInternalSetError("out of device memory: requested %zu bytes, device %d has %llu of %llu bytes "
                            "free (CANN_EMU_DEVICE_MEMORY) (status 207001)", size, dev,
                            (unsigned long long)avail, (unsigned long long)limit);
        return ACL_ERROR_RT_MEMORY_ALLOCATION;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t reserved = (size + page - 1) / page * page;
    if (g_quarantined >= EMU_QUARANTINE) drop_oldest_quarantined();
    void *addr = mmap(NULL, reserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    unsigned char *host = addr == MAP_FAILED ? NULL : malloc(size);
    dev_block b = { (uintptr_t)addr, size, reserved, host, dev, 1, 0 };
    if (!host || insert_block(&b) != 0) {
        if (addr != MAP_FAILED) munmap(addr, reserved);
        free(host);
        emuInternalSetError("the host could not back %zu bytes (status 207001)", size);
        return ACL_ERROR_RT_MEMORY_ALLOCATION;
    }
    memset(host, EMU_FRESH_BYTE, size);
    g_used[dev] += size;
    emuInternalStatAdd(EMU_STAT_LIVE_DEVICE_BLOCKS, 1);
    emuInternalStatAdd(EMU_STAT_LIVE_DEVICE_BYTES, (int64_t)size);
    *devPtr = addr;
    return ACL_SUCCESS;
}

aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy)
{
    (void)policy; /* huge/normal pages make no difference here */
    EMU_CALL(aclrtMalloc, malloc_locked(devPtr, size));
}

static aclError free_locked(void *devPtr)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    uintptr_t p = (uintptr_t)devPtr;
    if (!devPtr) {
        emuInternalSetError("devPtr is NULL (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    dev_block *b = find_block(p);
    if (!b) {
        emuInternalSetError("%#lx is not device memory from aclrtMalloc (status 107000)", (unsigned long)p);
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    if (!b->live) {
        emuInternalSetError("%#lx was already freed (double free) (status 107000)", (unsigned long)p);
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    if (b->addr != p) {
        emuInternalSetError("%#lx is %lu bytes into a block, not its start (status 107000)",
                            (unsigned long)p, (unsigned long)(p - b->addr));
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    /* aclrtFree does not wait for queued work: whatever still uses the block fails when it runs. */
    emu_streams_poison(b->addr, b->addr + b->size, 0, "aclrtFree released a device block");
    free(b->host);
    b->host = NULL;
    b->live = 0;
    b->freed_seq = ++g_free_seq;
    g_quarantined++;
    g_used[b->device] -= b->size;
    emuInternalStatAdd(EMU_STAT_LIVE_DEVICE_BLOCKS, -1);
    emuInternalStatAdd(EMU_STAT_LIVE_DEVICE_BYTES, -(int64_t)b->size);
    return ACL_SUCCESS;
}

aclError aclrtFree(void *devPtr) { EMU_CALL(aclrtFree, free_locked(devPtr)); }

static aclError malloc_host_locked(void **hostPtr, size_t size)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (!hostPtr || size == 0) {
        emuInternalSetError("%s (status 100000)", !hostPtr ? "hostPtr is NULL" : "size is 0");
        return ACL_ERROR_INVALID_PARAM;
    }
    if (g_nhosts == g_caphosts) {
        size_t cap = g_caphosts ? g_caphosts * 2 : 16;
        host_block *n = realloc(g_hosts, cap * sizeof *n);
        if (!n) return ACL_ERROR_RT_MEMORY_ALLOCATION;
        g_hosts = n;
        g_caphosts = cap;
    }
    /* aclrtMallocHost's documentation promises a 64-byte aligned start. */
    void *p = NULL;
    if (posix_memalign(&p, 64, size) != 0) p = NULL;
    if (!p) {
        emuInternalSetError("cannot allocate %zu bytes of host memory (status 207001)", size);
        return ACL_ERROR_RT_MEMORY_ALLOCATION;
    }
    g_hosts[g_nhosts].addr = (uintptr_t)p;
    g_hosts[g_nhosts].size = size;
    g_nhosts++;
    emuInternalStatAdd(EMU_STAT_LIVE_HOST_BLOCKS, 1);
    emuInternalStatAdd(EMU_STAT_LIVE_HOST_BYTES, (int64_t)size);
    *hostPtr = p;
    return ACL_SUCCESS;
}

aclError aclrtMallocHost(void **hostPtr, size_t size)
{
    EMU_CALL(aclrtMallocHost, malloc_host_locked(hostPtr, size));
}

static aclError free_host_locked(void *hostPtr)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    uintptr_t p = (uintptr_t)hostPtr;
    for (size_t i = 0; hostPtr && i < g_nhosts; i++) {
        if (g_hosts[i].addr != p) continue;
        emu_streams_poison(p, p + g_hosts[i].size, 1, "aclrtFreeHost released a host block");
        free(hostPtr);
        emuInternalStatAdd(EMU_STAT_LIVE_HOST_BYTES, -(int64_t)g_hosts[i].size);
        g_hosts[i] = g_hosts[--g_nhosts];
        emuInternalStatAdd(EMU_STAT_LIVE_HOST_BLOCKS, -1);
        return ACL_SUCCESS;
    }
    if (emu_is_device_address(p))
        emuInternalSetError("%#lx is device memory: free it with aclrtFree (status 107000)", (unsigned long)p);
    else
        emuInternalSetError("%#lx is not a live block from aclrtMallocHost (status 107000)", (unsigned long)p);
    return ACL_ERROR_RT_PARAM_INVALID;
}

aclError aclrtFreeHost(void *hostPtr) { EMU_CALL(aclrtFreeHost, free_host_locked(hostPtr)); }

static aclError mem_info_locked(aclrtMemAttr attr, size_t *free_, size_t *total)
{
    int rc = emuInternalRequireInit(), dev;
    if (rc) return rc;
    (void)attr; /* one kind of memory here: DDR and HBM report the same device budget */
    if (!free_ || !total) {
        emuInternalSetError("NULL output pointer (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    if ((rc = emu_require_device(&dev))) return rc;
    uint64_t limit = emu_env_u64("CANN_EMU_DEVICE_MEMORY", 1ull << 30);
    *total = (size_t)limit;
    *free_ = (size_t)(limit > g_used[dev] ? limit - g_used[dev] : 0);
    return ACL_SUCCESS;
}

aclError aclrtGetMemInfo(aclrtMemAttr attr, size_t *free, size_t *total)
{
    EMU_CALL(aclrtGetMemInfo, mem_info_locked(attr, free, total));
}

/* ---- copies and fills ---- */

/* A copy is height rows of width bytes, pitch bytes apart on each side; 1-D copies and fills are one row. */
typedef struct copy_job {
    uintptr_t dst, src;
    size_t width, height, dpitch, spitch;
    int dst_dev, src_dev;   /* which sides are device memory */
    int dst_pin, src_pin;   /* host sides that are aclrtMallocHost blocks (checked again when run) */
    int is_set;
    int value;
} copy_job;

/* Bytes from the first to the last byte a side touches, 0 when nothing is copied. */
static size_t side_extent(size_t pitch, size_t width, size_t height)
{
    return (width && height) ? (height - 1) * pitch + width : 0;
}

/* Checks one side of a copy against the kind; on success says whether it is device memory. */
static int check_side(uintptr_t p, size_t n, int kind_says_device, int *is_dev, const char *what)
{
    if (!p) {
        emuInternalSetError("%s is NULL (status 100000)", what);
        return ACL_ERROR_INVALID_PARAM;
    }
    int dev = kind_says_device < 0 ? emu_is_device_address(p) : kind_says_device;
    if (dev) {
        int rc = emuInternalDevCheck(p, n, -1, what);
        if (rc) return rc;
    } else if (emu_is_device_address(p)) {
        emuInternalSetError("%s %#lx is device memory but the copy kind says host memory (status 107000)",
                            what, (unsigned long)p);
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    *is_dev = dev;
    return 0;
}

/* Fills j from the arguments (j->width/height/pitches already set) and checks both sides. */
static int plan_copy(copy_job *j, void *dst, const void *src, aclrtMemcpyKind kind)
{
    static const int dst_dev_of[] = { 0, 1, 0, 1, -1 }, src_dev_of[] = { 0, 0, 1, 1, -1 };
    if ((unsigned)kind > ACL_MEMCPY_DEFAULT) {
        emuInternalSetError("unknown copy kind %d (status 100000)", (int)kind);
        return ACL_ERROR_INVALID_PARAM;
    }
    j->dst = (uintptr_t)dst;
    j->src = (uintptr_t)src;
    size_t dn = side_extent(j->dpitch, j->width, j->height), sn = side_extent(j->spitch, j->width, j->height);
    if (dn == 0) return 0;
    int rc = check_side(j->dst, dn, dst_dev_of[kind], &j->dst_dev, "dst");
    if (!rc) rc = check_side(j->src, sn, src_dev_of[kind], &j->src_dev, "src");
    if (rc) return rc;
    j->dst_pin = !j->dst_dev && emu_host_block_known(j->dst);
    j->src_pin = !j->src_dev && emu_host_block_known(j->src);
    /* Running past the end of a pinned block would corrupt the emulator's own heap: refuse it outright. */
    if ((j->dst_pin && !emu_host_block_live(j->dst, j->dst + dn)) ||
        (j->src_pin && !emu_host_block_live(j->src, j->src + sn))) {
        emuInternalSetError("%s host extent overruns its aclrtMallocHost block (status 107000)",
                            j->dst_pin && !emu_host_block_live(j->dst, j->dst + dn) ? "dst" : "src");
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    return 0;
}

/* Resolves one side when the copy runs; NULL means the memory went away in the meantime. */
static unsigned char *side_at_run(uintptr_t p, size_t n, int is_dev, int pinned)
{
    if (is_dev) return emuInternalDevHost(p, n);
    if (pinned && !emu_host_block_live(p, p + n)) return NULL;
    return (unsigned char *)p;
}

static int run_copy(void *payload, char *msg, size_t cap)
{
    copy_job *j = payload;
    size_t dn = side_extent(j->dpitch, j->width, j->height), sn = side_extent(j->spitch, j->width, j->height);
    if (dn == 0) return 0;
    unsigned char *d = side_at_run(j->dst, dn, j->dst_dev, j->dst_pin);
    unsigned char *s = j->is_set ? d : side_at_run(j->src, sn, j->src_dev, j->src_pin);
    if (!d || !s) {
        emuInternalStatAdd(EMU_STAT_ERRORS_DETECTED, 1);
        emu_format(msg, cap, "queued %s touched memory that was freed before it ran (use after free)",
                   j->is_set ? "memset" : "memcpy");
        return ACL_ERROR_RT_AICORE_EXCEPTION;
    }
    if (j->is_set) {
        memset(d, j->value, j->width);
        return 0;
    }
    for (size_t r = 0; r < j->height; r++) memmove(d + r * j->dpitch, s + r * j->spitch, j->width);
    int64_t bytes = (int64_t)(j->width * j->height);
    if (j->dst_dev && j->src_dev) emuInternalStatAdd(EMU_STAT_BYTES_D2D, bytes);
    else if (j->dst_dev) emuInternalStatAdd(EMU_STAT_BYTES_H2D, bytes);
    else if (j->src_dev) emuInternalStatAdd(EMU_STAT_BYTES_D2H, bytes);
    return 0;
}

/* Host memory of a queued copy or fill. CANN's documentation of aclrtMemcpyAsync / aclrtMemsetAsync before
 * 8.5 requires host memory from aclrtMallocHost and 64-byte aligned host and device addresses, and calls
 * anything else unpredictable: the call still succeeds, so here it is counted (errors_detected) and
 * explained in the thread's message. From 8.5 (hicann/runtime docs/zh/api_ref/11-03_memory_copy_and_set.md)
 * pageable host memory is allowed and the call returns only when the copy is done. Returns 1 when the job
 * must run synchronously (an 8.5 pageable copy), else 0. */
static int host_rules(const copy_job *j)
{
    size_t dn = side_extent(j->dpitch, j->width, j->height), sn = side_extent(j->spitch, j->width, j->height);
    if (dn == 0) return 0;
    int has_src = !j->is_set;
    uintptr_t pageable = 0, misaligned = 0;
    if (!j->dst_dev && !emu_host_block_live(j->dst, j->dst + dn)) pageable = j->dst;
    if (has_src && !j->src_dev && !emu_host_block_live(j->src, j->src + sn)) pageable = j->src;
    if (j->dst % 64) misaligned = j->dst;
    if (has_src && j->src % 64) misaligned = j->src;
    if (emuInternalReleaseAtLeast(8, 5)) return pageable != 0;
    if (!pageable && !misaligned) return 0;
    emuInternalStatAdd(EMU_STAT_ERRORS_DETECTED, 1);
    if (pageable)
        emuInternalSetError("host address %#lx is not inside a live aclrtMallocHost block: CANN %s requires "
                            "pinned host memory for asynchronous copies (the call succeeds, the copy is "
                            "unpredictable on hardware)", (unsigned long)pageable, emuInternalRelease());
    else
        emuInternalSetError("address %#lx is not 64-byte aligned: CANN %s requires 64-byte aligned host and "
                            "device addresses for asynchronous copies and fills (the call succeeds, the "
                            "result is unpredictable on hardware)", (unsigned long)misaligned, emuInternalRelease());
    return 0;
}

/* Queues j on stream, or (an 8.5 pageable copy) waits for the stream and runs it now. */
static aclError submit_async(const copy_job *j, aclrtStream stream)
{
    void *s;
    int dev, rc = emuInternalStreamLaunch(stream, &s, &dev, EMU_RT_STREAM_CONTEXT);
    if (rc) return rc;
    size_t dn = side_extent(j->dpitch, j->width, j->height), sn = side_extent(j->spitch, j->width, j->height);
    /* hicann/runtime api_error.cc MemcpyAsync refuses a copy of pageable host memory on a capturing stream
     * ("The pageable memory copy task does not support graph capture") before any 8.5 conversion. */
    if (emu_stream_capture(s) && dn &&
        ((!j->dst_dev && !emu_host_block_live(j->dst, j->dst + dn)) ||
         (!j->is_set && !j->src_dev && !emu_host_block_live(j->src, j->src + sn))))
        return emu_capture_refuse(emu_stream_capture(s), ACL_ERROR_RT_PARAM_INVALID, "an asynchronous copy of "
                                  "pageable host memory (not from aclrtMallocHost) cannot be captured");
    if (host_rules(j)) {
        /* The runtime makes it a synchronous copy, which a capture's mode may forbid (then 107041). */
        if ((rc = emu_capture_check_sync_work("a pageable copy made synchronous", EMU_RT_CAPTURE_MODE_BLOCK_ASYNC)))
            return rc;
        emuInternalStatAdd(EMU_STAT_PAGEABLE_COPIES, 1);
        emuInternalStatAdd(EMU_STAT_HOST_SYNCS, 1);
        emu_stream_drain(s, 0); /* what is queued runs first; its failure stays for the next synchronisation */
        char msg[256] = "";
        copy_job now = *j;
        if ((rc = run_copy(&now, msg, sizeof msg))) emuInternalSetError("%s (status %d)", msg, rc);
        return rc;
    }
    copy_job *copy = malloc(sizeof *copy);
    if (!copy) return ACL_ERROR_RT_MEMORY_ALLOCATION;
    *copy = *j;
    emu_task_desc t = { j->is_set ? "memset" : "memcpy", run_copy, free, copy, 0, { { 0, 0, 0 } } };
    if (dn) {
        if (j->dst_dev || j->dst_pin) t.ranges[t.nranges++] = (emu_range){ j->dst, j->dst + dn, !j->dst_dev };
        if (!j->is_set && (j->src_dev || j->src_pin))
            t.ranges[t.nranges++] = (emu_range){ j->src, j->src + sn, !j->src_dev };
    }
    return emuInternalEnqueue(s, &t);
}

/* A synchronous copy or fill makes the host wait for the device. */
static aclError run_now(copy_job *j)
{
    char msg[256] = "";
    emuInternalStatAdd(EMU_STAT_HOST_SYNCS, 1);
    int rc = run_copy(j, msg, sizeof msg);
    if (rc) emuInternalSetError("%s (status %d)", msg, rc);
    return rc;
}

static aclError memcpy_locked(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                              int async, aclrtStream stream)
{
    int rc = emuInternalRequireInit(), dev;
    if (rc) return rc;
    /* A synchronous copy needs a current context; a queued one gets its device from the stream. */
    if (!async && (rc = emu_require_device(&dev))) return rc;
    if (!async && (rc = emu_capture_check_sync_work("a synchronous copy (aclrtMemcpy)",
                                                    EMU_RT_CAPTURE_MODE_NOT_SUPPORT)))
        return rc;
    if (count > destMax) {
        emuInternalSetError("count %zu exceeds destMax %zu (status 100000)", count, destMax);
        return ACL_ERROR_INVALID_PARAM;
    }
    copy_job j = { .width = count, .height = 1, .dpitch = count, .spitch = count };
    if ((rc = plan_copy(&j, dst, src, kind))) return rc;
    if (async) return submit_async(&j, stream);
    /* Runs now, NOT after work queued on any stream: exactly the device's behaviour. */
    return run_now(&j);
}

aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind)
{
    EMU_CALL(aclrtMemcpy, memcpy_locked(dst, destMax, src, count, kind, 0, NULL));
}

aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                          aclrtStream stream)
{
    EMU_CALL(aclrtMemcpyAsync, memcpy_locked(dst, destMax, src, count, kind, 1, stream));
}

/* Limits and kinds from hicann/runtime docs/zh/api_ref/11-03_memory_copy_and_set.md (aclrtMemcpy2dAsync). */
#define EMU_2D_MAX_WIDTH 5000000u
#define EMU_2D_MAX_HEIGHT (5u * 1024u * 1024u)

static aclError memcpy_2d_locked(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                                 size_t height, aclrtMemcpyKind kind, aclrtStream stream)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (kind != ACL_MEMCPY_HOST_TO_DEVICE && kind != ACL_MEMCPY_DEVICE_TO_HOST &&
        kind != ACL_MEMCPY_DEVICE_TO_DEVICE) {
        emuInternalSetError("kind %d is not supported: only HOST_TO_DEVICE, DEVICE_TO_HOST or DEVICE_TO_DEVICE "
                            "(status 100000)", (int)kind);
        return ACL_ERROR_INVALID_PARAM;
    }
    if (kind == ACL_MEMCPY_DEVICE_TO_DEVICE && strncmp(emu_env_str("CANN_EMU_SOC", "Ascend910B1"), "Ascend310P", 10) == 0) {
        emuInternalSetError("DEVICE_TO_DEVICE 2-D copies are not supported on %s (status 100000)",
                            emu_env_str("CANN_EMU_SOC", "Ascend910B1"));
        return ACL_ERROR_INVALID_PARAM;
    }
    if (width > dpitch || width > spitch) {
        emuInternalSetError("width %zu must not exceed dpitch %zu or spitch %zu (status 100000)", width, dpitch,
                            spitch);
        return ACL_ERROR_INVALID_PARAM;
    }
    if (width > EMU_2D_MAX_WIDTH || height > EMU_2D_MAX_HEIGHT) {
        emuInternalSetError("%s %zu exceeds its maximum %u (status 100000)", width > EMU_2D_MAX_WIDTH ? "width"
                            : "height", width > EMU_2D_MAX_WIDTH ? width : height,
                            width > EMU_2D_MAX_WIDTH ? EMU_2D_MAX_WIDTH : EMU_2D_MAX_HEIGHT);
        return ACL_ERROR_INVALID_PARAM;
    }
    size_t span;
    if (height && (__builtin_mul_overflow(height - 1, dpitch > spitch ? dpitch : spitch, &span) ||
                   __builtin_add_overflow(span, width, &span))) {
        emuInternalSetError("the extent of %zu rows overflows (status 100000)", height);
        return ACL_ERROR_INVALID_PARAM;
    }
    copy_job j = { .width = width, .height = height, .dpitch = dpitch, .spitch = spitch };
    if ((rc = plan_copy(&j, dst, src, kind))) return rc;
    return submit_async(&j, stream);
}

aclError aclrtMemcpy2dAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                            aclrtMemcpyKind kind, aclrtStream stream)
{
    EMU_CALL(aclrtMemcpy2dAsync, memcpy_2d_locked(dst, dpitch, src, spitch, width, height, kind, stream));
}

static aclError memset_locked(void *devPtr, size_t maxCount, int32_t value, size_t count, int async,
                              aclrtStream stream)
{
    int rc = emuInternalRequireInit(), dev;
    if (rc) return rc;
    if (!async && (rc = emu_require_device(&dev))) return rc;
    if (!async && (rc = emu_capture_check_sync_work("a synchronous memset (aclrtMemset)",
                                                    EMU_RT_CAPTURE_MODE_NOT_SUPPORT)))
        return rc;
    if (count > maxCount) {
        emuInternalSetError("count %zu exceeds maxCount %zu (status 100000)", count, maxCount);
        return ACL_ERROR_INVALID_PARAM;
    }
    copy_job j = { .dst = (uintptr_t)devPtr, .width = count, .height = 1, .dpitch = count, .spitch = count,
                   .dst_dev = 1, .is_set = 1, .value = (unsigned char)value };
    if (count && (rc = emuInternalDevCheck(j.dst, count, -1, "devPtr"))) return rc;
    if (async) return submit_async(&j, stream);
    return run_now(&j);
}

aclError aclrtMemset(void *devPtr, size_t maxCount, int32_t value, size_t count)
{
    EMU_CALL(aclrtMemset, memset_locked(devPtr, maxCount, value, count, 0, NULL));
}

aclError aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value, size_t count, aclrtStream stream)
{
    EMU_CALL(aclrtMemsetAsync, memset_locked(devPtr, maxCount, value, count, 1, stream));
}

/* ---- pointer attributes ---- */

/* hicann/runtime docs/zh/api_ref/11-05_unified_addressing.md (aclrtPointerGetAttributes): where memory
 * lives and its page size. Device blocks report DEVICE and their device id, aclrtMallocHost blocks HOST,
 * anything else (pageable host memory, freed blocks) UNREGISTERED. */
static aclError pointer_attributes_locked(const void *ptr, aclrtPtrAttributes *attributes)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (!ptr || !attributes) {
        emuInternalSetError("%s is NULL (status 100000)", !ptr ? "ptr" : "attributes");
        return ACL_ERROR_INVALID_PARAM;
    }
    memset(attributes, 0, sizeof *attributes);
    attributes->pageSize = (uint32_t)sysconf(_SC_PAGESIZE);
    dev_block *b = find_block((uintptr_t)ptr);
    if (b && b->live && (uintptr_t)ptr - b->addr < b->size) {
        attributes->location.type = ACL_MEM_LOCATION_TYPE_DEVICE;
        attributes->location.id = (uint32_t)b->device;
    } else if (find_host((uintptr_t)ptr)) {
        attributes->location.type = ACL_MEM_LOCATION_TYPE_HOST;
    } else {
        attributes->location.type = ACL_MEM_LOCATION_TYPE_UNREGISTERED;
    }
    return ACL_SUCCESS;
}

aclError aclrtPointerGetAttributes(const void *ptr, aclrtPtrAttributes *attributes)
{
    EMU_CALL(aclrtPointerGetAttributes, pointer_attributes_locked(ptr, attributes));
}
