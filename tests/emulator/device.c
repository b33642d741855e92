/* libascendcl: devices, contexts and each thread's current context.
 *
 * aclrtSetDevice gives the thread the device's default context (one per device, shared by threads);
 * aclrtCreateContext makes an extra one and makes it current. Memory, streams and events belong to the
 * device of the context current when they were made. */
#include "emu_rt.h"

#include <stdlib.h>

typedef struct emu_context {
    int device;
    int is_default;
    void *default_stream; /* what a NULL stream means while this context is current */
} emu_context;

static emu_context *g_default_ctx[EMU_MAX_DEVICES];
static int g_refcount[EMU_MAX_DEVICES];
static _Thread_local emu_context *tl_ctx;

int emu_device_count(void)
{
    uint64_t n = emu_env_u64("CANN_EMU_DEVICE_COUNT", 1);
    return n > EMU_MAX_DEVICES ? EMU_MAX_DEVICES : (int)n;
}

int emu_check_device_id(int32_t id)
{
    int n = emu_device_count();
    if (id >= 0 && id < n) return 0;
    emuInternalSetError("device id %d is invalid: %d device(s) visible (CANN_EMU_DEVICE_COUNT) "
                        "(status 107001)", (int)id, n);
    return ACL_ERROR_RT_INVALID_DEVICEID;
}

void *emu_current_context(void)
{
    emu_context *c = tl_ctx;
    if (!c || !emuInternalHandleLive(EMU_H_CONTEXT, c) || c->device >= emu_device_count()) return NULL;
    return c;
}

int emu_require_device(int *device)
{
    emu_context *c = emu_current_context();
    if (!c) {
        emuInternalSetError("this thread has no current context: call aclrtSetDevice (or "
                            "aclrtSetCurrentContext) on this thread first (status 107002)");
        return ACL_ERROR_RT_CONTEXT_NULL;
    }
    *device = c->device;
    return 0;
}

void *emu_context_default_stream(void *ctx) { return ((emu_context *)ctx)->default_stream; }
int emu_context_device(void *ctx) { return ((emu_context *)ctx)->device; }

static emu_context *new_context(int device, int is_default)
{
    emu_context *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->device = device;
    c->is_default = is_default;
    c->default_stream = emu_stream_create(c, 0);
    if (!c->default_stream || emuInternalHandleAdd(EMU_H_CONTEXT, c) != 0) {
        if (c->default_stream) emu_stream_release(c->default_stream);
        free(c);
        return NULL;
    }
    return c;
}

static aclError set_device_locked(int32_t id)
{
    int rc = emuInternalRequireInit();
    if (rc || (rc = emu_check_device_id(id)) || (rc = emu_device_check_abort(id))) return rc;
    if (!g_default_ctx[id] && !(g_default_ctx[id] = new_context(id, 1))) {
        emuInternalSetError("cannot create the default context (status 507000)");
        return ACL_ERROR_RT_INTERNAL_ERROR;
    }
    tl_ctx = g_default_ctx[id];
    g_refcount[id]++;
    return ACL_SUCCESS;
}

aclError aclrtSetDevice(int32_t deviceId) { EMU_CALL(aclrtSetDevice, set_device_locked(deviceId)); }

static aclError reset_device_locked(int32_t id)
{
    int rc = emuInternalRequireInit();
    if (rc || (rc = emu_check_device_id(id))) return rc;
    if (tl_ctx && tl_ctx->device == id) tl_ctx = NULL;
    if (g_refcount[id] > 0 && --g_refcount[id] == 0 && g_default_ctx[id]) {
        /* The device is released: finish what its default stream still holds. Blocks stay allocated so
         * that the live counters keep showing leaks. */
        emu_stream_drain(g_default_ctx[id]->default_stream, 0);
        emu_stream_take_error(g_default_ctx[id]->default_stream);
    }
    /* A stopped device is usable again after aclrtResetDevice (what it still held was dropped above). */
    emu_device_abort_clear(id);
    return ACL_SUCCESS;
}

aclError aclrtResetDevice(int32_t deviceId) { EMU_CALL(aclrtResetDevice, reset_device_locked(deviceId)); }

static aclError get_device_locked(int32_t *id)
{
    int rc = emuInternalRequireInit(), dev;
    if (rc) return rc;
    if (!id) {
        emuInternalSetError("deviceId is NULL (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    if ((rc = emu_require_device(&dev))) return rc;
    *id = dev;
    return ACL_SUCCESS;
}

aclError aclrtGetDevice(int32_t *deviceId) { EMU_CALL(aclrtGetDevice, get_device_locked(deviceId)); }

static aclError device_count_locked(uint32_t *count)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (!count) {
        emuInternalSetError("count is NULL (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    *count = (uint32_t)emu_device_count();
    return ACL_SUCCESS;
}

aclError aclrtGetDeviceCount(uint32_t *count) { EMU_CALL(aclrtGetDeviceCount, device_count_locked(count)); }

static aclError create_context_locked(aclrtContext *context, int32_t id)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (!context) {
        emuInternalSetError("context is NULL (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    if ((rc = emu_check_device_id(id))) return rc;
    emu_context *c = new_context(id, 0);
    if (!c) {
        emuInternalSetError("cannot create a context (status 507000)");
        return ACL_ERROR_RT_INTERNAL_ERROR;
    }
    tl_ctx = c; /* as in CANN, the new context becomes the thread's current one */
    *context = c;
    return ACL_SUCCESS;
}

aclError aclrtCreateContext(aclrtContext *context, int32_t deviceId)
{
    EMU_CALL(aclrtCreateContext, create_context_locked(context, deviceId));
}

static int check_context(aclrtContext context)
{
    if (context && emuInternalHandleLive(EMU_H_CONTEXT, context)) return 0;
    emuInternalSetError("%p is not a live context%s (status 107000)", context,
                        context && emuInternalHandleDead(EMU_H_CONTEXT, context) ? " (destroyed)" : "");
    return ACL_ERROR_RT_PARAM_INVALID;
}

static aclError destroy_context_locked(aclrtContext context)
{
    int rc = emuInternalRequireInit();
    if (rc || (rc = check_context(context))) return rc;
    emu_context *c = context;
    if (c->is_default) {
        emuInternalSetError("the default context of device %d is released by aclrtResetDevice, not "
                            "destroyed (status 107000)", c->device);
        return ACL_ERROR_RT_PARAM_INVALID;
    }
    emu_stream_drain(c->default_stream, 0);
    emu_stream_take_error(c->default_stream);
    emu_stream_release(c->default_stream);
    emuInternalHandleRemove(EMU_H_CONTEXT, c);
    if (tl_ctx == c) tl_ctx = NULL;
    free(c);
    return ACL_SUCCESS;
}

aclError aclrtDestroyContext(aclrtContext context)
{
    EMU_CALL(aclrtDestroyContext, destroy_context_locked(context));
}

static aclError set_context_locked(aclrtContext context)
{
    int rc = emuInternalRequireInit();
    if (rc || (rc = check_context(context))) return rc;
    tl_ctx = context;
    return ACL_SUCCESS;
}

aclError aclrtSetCurrentContext(aclrtContext context)
{
    EMU_CALL(aclrtSetCurrentContext, set_context_locked(context));
}

static aclError get_context_locked(aclrtContext *context)
{
    int rc = emuInternalRequireInit();
    if (rc) return rc;
    if (!context) {
        emuInternalSetError("context is NULL (status 100000)");
        return ACL_ERROR_INVALID_PARAM;
    }
    void *c = emu_current_context();
    if (!c) {
        emuInternalSetError("this thread has no current context (status 107002)");
        return ACL_ERROR_RT_CONTEXT_NULL;
    }
    *context = c;
    return ACL_SUCCESS;
}

aclError aclrtGetCurrentContext(aclrtContext *context)
{
    EMU_CALL(aclrtGetCurrentContext, get_context_locked(context));
}
