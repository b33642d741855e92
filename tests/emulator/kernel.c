/* libopapi: the emulated QuantScatter kernel (shared/spec/quant_scatter.md), run when its stream runs.
 *
 * Bit-exact contract: float32 arithmetic, x / scale as a true division, + zero point as a second
 * separately rounded operation (built with -ffp-contract=off so nothing fuses), round half to even
 * (rintf in the default rounding mode), NaN -> 0, saturation to [-128, 127]. Every view is read through
 * its own strides and offset. Like the device, the kernel does not trust the indices: out-of-range or
 * overlapping blocks are detected before anything is written and reported as an AI Core exception. */
#include "emu_op.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WORKSPACE_FILL 0xEE /* the kernel scribbles on its workspace, as a real one would use it */

typedef struct resolved {
    const emu_view *v;
    unsigned char *base; /* host backing of the view's first element */
    int64_t first, isz;
} resolved;

static unsigned char *at(const resolved *r, int64_t element)
{
    return r->base + (element - r->first) * r->isz;
}

static float bf16_to_float(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE binary16 -> binary32, exact for every input (subnormals are renormalised, NaN payloads kept). */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + (127 - 15)) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        uint32_t e = 127 - 15 + 1; /* value = man * 2^-24: shift until the implicit bit appears */
        while (!(man & 0x400u)) {
            man <<= 1;
            e--;
        }
        bits = sign | (e << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float load_float(const unsigned char *p, int32_t dtype)
{
    uint16_t h;
    int32_t i;
    float f;
    switch (dtype) {
    case ACL_BF16: memcpy(&h, p, 2); return bf16_to_float(h);
    case ACL_FLOAT16: memcpy(&h, p, 2); return half_to_float(h);
    case ACL_INT32: memcpy(&i, p, 4); return (float)i;
    default: memcpy(&f, p, 4); return f;
    }
}

static int64_t load_index(const unsigned char *p, int32_t dtype)
{
    if (dtype == ACL_INT32) {
        int32_t i;
        memcpy(&i, p, 4);
        return i;
    }
    int64_t l;
    memcpy(&l, p, 8);
    return l;
}

/* What a NaN quantizes to: 0 as the contract says, or CANN_EMU_NAN_VALUE (read at each launch run,
 * clamped to int8), a deliberate divergence so that a test can show a hardware report disagreeing. */
static int8_t nan_value(void)
{
    const char *s = emu_env_str("CANN_EMU_NAN_VALUE", "0");
    char *end = NULL;
    long v = strtol(s, &end, 0);
    if (!end || *end) return 0;
    return (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
}

static int8_t quantize(float x, float scale, float zp, int has_zp, int8_t nan_q)
{
    float y = x / scale;
    if (has_zp) y = y + zp;
    if (isnan(y)) return nan_q;
    float q = rintf(y);
    if (q >= 127.0f) return 127;
    if (q <= -128.0f) return -128;
    return (int8_t)q;
}

/* Element of a view at flat (C-order) position i: how "read flat" is meant for scales and zero points. */
static int64_t flat_element(const emu_view *v, int64_t i)
{
    int64_t el = v->offset;
    for (int k = (int)v->ndim - 1; k >= 0; k--) {
        el += (i % v->dims[k]) * v->strides[k];
        i /= v->dims[k];
    }
    return el;
}

typedef struct block { int64_t dst, start; } block;

static int by_dst_then_start(const void *a, const void *b)
{
    const block *x = a, *y = b;
    if (x->dst != y->dst) return x->dst < y->dst ? -1 : 1;
    return (x->start > y->start) - (x->start < y->start);
}

static int fault(char *msg, size_t cap, const char *what)
{
    emuInternalStatAdd(EMU_STAT_ERRORS_DETECTED, 1);
    emu_format(msg, cap, "%s (nothing was written)", what);
    return ACL_ERROR_RT_AICORE_EXCEPTION;
}

int emu_qs_kernel(void *payload, char *msg, size_t cap)
{
    qs_job *j = payload;
    static const char *const names[EMU_OP_TENSORS] = { "selfRef", "indices", "updates", "quantScales",
                                                       "quantZeroPoints" };
    resolved r[EMU_OP_TENSORS];
    char why[512];
    int n = j->has_zp ? EMU_OP_TENSORS : EMU_OP_TENSORS - 1;
    for (int i = 0; i < n; i++) {
        uintptr_t lo, hi;
        emu_view_bytes(&j->t[i], &lo, &hi); /* non-empty and checked at launch */
        r[i].v = &j->t[i];
        r[i].isz = emu_dtype_size(j->t[i].dtype);
        r[i].first = j->t[i].offset;
        r[i].base = emuInternalDevHost(lo, hi - lo);
        if (!r[i].base) {
            emu_format(why, sizeof why, "%s memory was freed before the kernel ran (use after free)", names[i]);
            return fault(msg, cap, why);
        }
    }
    if (j->workspace_size) {
        unsigned char *ws = emuInternalDevHost(j->workspace, j->workspace_size);
        if (!ws) return fault(msg, cap, "the workspace was freed before the kernel ran (use after free)");
        memset(ws, WORKSPACE_FILL, j->workspace_size);
    }

    const emu_view *S = r[QS_SELF].v, *I = r[QS_INDICES].v, *U = r[QS_UPDATES].v;
    int rank = (int)S->ndim, a = j->axis;
    int64_t B = U->dims[0], UA = U->dims[a], C = U->dims[rank - 1];
    block *blocks = malloc((size_t)B * sizeof *blocks);
    float *scale = malloc((size_t)C * sizeof *scale), *zp = malloc((size_t)C * sizeof *zp);
    int rc = 0;
    if (!blocks || !scale || !zp) {
        emu_format(msg, cap, "out of host memory");
        rc = ACL_ERROR_RT_INTERNAL_ERROR;
        goto out;
    }
    for (int64_t c = 0; c < C; c++) {
        scale[c] = load_float(at(&r[QS_SCALES], flat_element(r[QS_SCALES].v, c)), r[QS_SCALES].v->dtype);
        zp[c] = j->has_zp ? load_float(at(&r[QS_ZP], flat_element(r[QS_ZP].v, c)), r[QS_ZP].v->dtype) : 0.0f;
    }

    /* Where each batch row goes, checked like the device would not: before any write. */
    for (int64_t b = 0; b < B; b++) {
        int64_t row = I->offset + b * I->strides[0];
        if (I->ndim == 2) {
            blocks[b].dst = load_index(at(&r[QS_INDICES], row), I->dtype);
            blocks[b].start = load_index(at(&r[QS_INDICES], row + I->strides[1]), I->dtype);
        } else {
            blocks[b].dst = b;
            blocks[b].start = load_index(at(&r[QS_INDICES], row), I->dtype);
        }
        if (blocks[b].dst < 0 || blocks[b].dst >= S->dims[0] || blocks[b].start < 0 ||
            blocks[b].start > S->dims[a] - UA) {
            emu_format(why, sizeof why, "out-of-range write: batch row %lld targets selfRef[%lld] at %lld..%lld "
                       "along axis %d, but selfRef has shape[0]=%lld and shape[%d]=%lld", (long long)b,
                       (long long)blocks[b].dst, (long long)blocks[b].start,
                       (long long)(blocks[b].start + UA - 1), a, (long long)S->dims[0], a, (long long)S->dims[a]);
            rc = fault(msg, cap, why);
            goto out;
        }
    }
    block *sorted = malloc((size_t)B * sizeof *sorted);
    if (!sorted) {
        emu_format(msg, cap, "out of host memory");
        rc = ACL_ERROR_RT_INTERNAL_ERROR;
        goto out;
    }
    memcpy(sorted, blocks, (size_t)B * sizeof *sorted);
    qsort(sorted, (size_t)B, sizeof *sorted, by_dst_then_start);
    for (int64_t b = 1; b < B; b++) {
        if (sorted[b].dst != sorted[b - 1].dst || sorted[b].start >= sorted[b - 1].start + UA) continue;
        emu_format(why, sizeof why, "overlapping writes: two batch rows write selfRef[%lld] at %lld and %lld "
                   "(blocks of %lld along axis %d)", (long long)sorted[b].dst, (long long)sorted[b - 1].start,
                   (long long)sorted[b].start, (long long)UA, a);
        free(sorted);
        rc = fault(msg, cap, why);
        goto out;
    }
    free(sorted);

    /* Walk every updates row (all dims but the last) with an odometer over dims 1..rank-2. */
    int8_t nan_q = nan_value();
    int64_t m[EMU_MAX_DIMS];
    for (int64_t b = 0; b < B; b++) {
        memset(m, 0, sizeof m);
        for (;;) {
            int64_t u_el = U->offset + b * U->strides[0];
            int64_t s_el = S->offset + blocks[b].dst * S->strides[0];
            for (int k = 1; k < rank - 1; k++) {
                u_el += m[k] * U->strides[k];
                s_el += (k == a ? blocks[b].start + m[k] : m[k]) * S->strides[k];
            }
            for (int64_t c = 0; c < C; c++) {
                float x = load_float(at(&r[QS_UPDATES], u_el + c * U->strides[rank - 1]), U->dtype);
                *(int8_t *)at(&r[QS_SELF], s_el + c * S->strides[rank - 1]) = quantize(x, scale[c], zp[c], j->has_zp, nan_q);
            }
            int k = rank - 2;
            while (k >= 1 && ++m[k] == U->dims[k]) m[k--] = 0;
            if (k < 1) break;
        }
    }
out:
    free(blocks);
    free(scale);
    free(zp);
    return rc;
}
