/* Small helpers compiled into each of the three libraries (hidden there): dtypes, view extents, env. */
#include "emu_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int64_t emu_dtype_size(int32_t dtype)
{
    switch (dtype) {
    case ACL_INT8: case ACL_UINT8: case ACL_BOOL: case ACL_HIFLOAT8: case ACL_FLOAT8_E5M2:
    case ACL_FLOAT8_E4M3FN:
    case ACL_INT4: case ACL_UINT1: /* sub-byte types: a byte per element over-estimates, never under */
        return 1;
    case ACL_FLOAT16: case ACL_BF16: case ACL_INT16: case ACL_UINT16:
        return 2;
    case ACL_FLOAT: case ACL_INT32: case ACL_UINT32: case ACL_COMPLEX32:
        return 4;
    case ACL_INT64: case ACL_UINT64: case ACL_DOUBLE: case ACL_COMPLEX64:
        return 8;
    case ACL_COMPLEX128:
        return 16;
    default:
        return 0;
    }
}

const char *emu_dtype_name(int32_t dtype)
{
    switch (dtype) {
    case ACL_FLOAT: return "FLOAT";
    case ACL_FLOAT16: return "FLOAT16";
    case ACL_INT8: return "INT8";
    case ACL_INT32: return "INT32";
    case ACL_UINT8: return "UINT8";
    case ACL_INT16: return "INT16";
    case ACL_UINT16: return "UINT16";
    case ACL_UINT32: return "UINT32";
    case ACL_INT64: return "INT64";
    case ACL_UINT64: return "UINT64";
    case ACL_DOUBLE: return "DOUBLE";
    case ACL_BOOL: return "BOOL";
    case ACL_STRING: return "STRING";
    case ACL_COMPLEX64: return "COMPLEX64";
    case ACL_COMPLEX128: return "COMPLEX128";
    case ACL_BF16: return "BF16";
    case ACL_INT4: return "INT4";
    case ACL_UINT1: return "UINT1";
    case ACL_COMPLEX32: return "COMPLEX32";
    case ACL_HIFLOAT8: return "HIFLOAT8";
    case ACL_FLOAT8_E5M2: return "FLOAT8_E5M2";
    case ACL_FLOAT8_E4M3FN: return "FLOAT8_E4M3FN";
    default: return "UNKNOWN";
    }
}

int64_t emu_view_numel(const emu_view *v)
{
    int64_t n = 1;
    for (uint32_t i = 0; i < v->ndim; i++)
        if (__builtin_mul_overflow(n, v->dims[i], &n)) return -1;
    return n;
}

int emu_view_span(const emu_view *v, int64_t *first, int64_t *last)
{
    /* Strides and offset are never negative (aclCreateTensor refuses them), so the first element is at
     * offset and the last at offset + sum((dim-1)*stride). */
    int64_t hi = v->offset;
    for (uint32_t i = 0; i < v->ndim; i++) {
        int64_t step;
        if (__builtin_mul_overflow(v->dims[i] - 1, v->strides[i], &step)) return -1;
        if (__builtin_add_overflow(hi, step, &hi)) return -1;
    }
    *first = v->offset;
    *last = hi;
    return 0;
}

int emu_view_bytes(const emu_view *v, uintptr_t *lo, uintptr_t *hi)
{
    int64_t n = emu_view_numel(v), first, last, isz = emu_dtype_size(v->dtype);
    if (n < 0) return -1;
    if (n == 0) return 0;
    if (isz == 0 || emu_view_span(v, &first, &last) != 0) return -1;
    int64_t b0, b1;
    if (__builtin_mul_overflow(first, isz, &b0)) return -1;
    if (__builtin_add_overflow(last, 1, &b1) || __builtin_mul_overflow(b1, isz, &b1)) return -1;
    uintptr_t l, h;
    if (__builtin_add_overflow(v->data, (uintptr_t)b0, &l)) return -1;
    if (__builtin_add_overflow(v->data, (uintptr_t)b1, &h)) return -1;
    *lo = l;
    *hi = h;
    return 1;
}

const char *emu_env_str(const char *name, const char *fallback)
{
    const char *s = getenv(name);
    return (s && *s) ? s : fallback;
}

uint64_t emu_env_u64(const char *name, uint64_t fallback)
{
    const char *s = getenv(name);
    if (!s || !*s) return fallback;
    char *end = NULL;
    unsigned long long x = strtoull(s, &end, 0);
    if (!end || *end != '\0' || s[0] == '-') return fallback;
    return (uint64_t)x;
}

void emu_format(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}
