/* gguf: the reader (mmap, v2 and v3) of GGUF files. See gguf.h; the writer is gguf_write.c.
 *
 * Layout (all little-endian): magic u32, version u32, n_tensors u64, n_kv u64; n_kv records
 * (key string, value type u32, value); n_tensors infos (name string, n_dims u32, ne[n_dims] u64,
 * type u32, offset u64); padding to the alignment; tensor data. A string is a u64 length and
 * that many bytes. An array is an element type u32, a count u64 and the elements.
 *
 * The reader never trusts a count: each is bounded by the bytes left before anything is
 * allocated, and tables grow with the records actually parsed. */
#include "gguf.h"

#include "gguf_internal.h"
#include "log.h"
#include "quant.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

#define KV_MIN_BYTES 14u /* key length 8 + key 1 + type 4 + smallest value 1 */
#define TI_MIN_BYTES 33u /* name length 8 + name 1 + n_dims 4 + ne 8 + type 4 + offset 8 */

const uint8_t gguf_vtype_size[GGUF_TYPE_COUNT] = {
    [GGUF_TYPE_UINT8] = 1,   [GGUF_TYPE_INT8] = 1,  [GGUF_TYPE_UINT16] = 2,  [GGUF_TYPE_INT16] = 2,
    [GGUF_TYPE_UINT32] = 4,  [GGUF_TYPE_INT32] = 4, [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,
    [GGUF_TYPE_STRING] = 0,  [GGUF_TYPE_ARRAY] = 0, [GGUF_TYPE_UINT64] = 8,  [GGUF_TYPE_INT64] = 8,
    [GGUF_TYPE_FLOAT64] = 8,
};

static const char *const vtype_names[GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

const char *gguf_vtype_name(uint32_t t)
{
    return t < GGUF_TYPE_COUNT ? vtype_names[t] : "unknown";
}

static bool vtype_is_uint(uint32_t t)
{
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}

static bool vtype_is_sint(uint32_t t)
{
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

static bool vtype_is_float(uint32_t t)
{
    return t == GGUF_TYPE_FLOAT32 || t == GGUF_TYPE_FLOAT64;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#define FNV_OFFSET 0xcbf29ce484222325ull

const char *gguf_show(char *buf, size_t bufsz, const char *s, uint64_t n)
{
    size_t o = 0;
    for (uint64_t i = 0; i < n && o + 8 < bufsz; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == GGUF_NAME_SHOW) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            buf[o++] = (char)c;
        } else {
            snprintf(buf + o, bufsz - o, "\\x%02x", c);
            o += 4;
        }
    }
    buf[o] = 0;
    return buf;
}

/* ---------------------------------------------------------------------------------------------
 * reader */

struct name_chunk {
    struct name_chunk *next;
    size_t used, cap;
    char data[];
};

struct gguf {
    char *path;
    const uint8_t *base;
    uint64_t size;
    void *map;
    size_t map_len;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;
    uint64_t identity;

    struct gguf_kv *kv;
    int64_t n_kv, cap_kv;
    struct gguf_tensor *tensors;
    int64_t n_tensors, cap_tensors;

    int64_t *kv_slots; /* open addressing, -1 = empty */
    uint64_t kv_mask;
    int64_t *t_slots;
    uint64_t t_mask;

    struct name_chunk *names;
};

/* Parse cursor over the whole file. */
struct rd {
    const uint8_t *p;
    uint64_t pos, size;
    const char *path;
    char *err;
    size_t errsz;
};

static uint64_t rd_left(const struct rd *r)
{
    return r->size - r->pos;
}

static int rd_need(struct rd *r, uint64_t n, const char *what)
{
    if (n <= rd_left(r)) return 0;
    return bt_errf(r->err, r->errsz, BT_EFORMAT,
                   "%s: truncated: %s at offset %" PRIu64 " needs %" PRIu64 " bytes, %" PRIu64
                   " left",
                   r->path, what, r->pos, n, rd_left(r));
}

static int rd_u32(struct rd *r, uint32_t *v, const char *what)
{
    int rc = rd_need(r, 4, what);
    if (rc) return rc;
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int rd_u64(struct rd *r, uint64_t *v, const char *what)
{
    int rc = rd_need(r, 8, what);
    if (rc) return rc;
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return 0;
}

static int rd_str(struct rd *r, struct gguf_str *s, const char *what)
{
    uint64_t n, at = r->pos;
    int rc = rd_u64(r, &n, what);
    if (rc) return rc;
    if (n > rd_left(r))
        return bt_errf(r->err, r->errsz, BT_EFORMAT,
                       "%s: %s at offset %" PRIu64 ": string length %" PRIu64
                       " does not fit in the remaining %" PRIu64 " bytes",
                       r->path, what, at, n, rd_left(r));
    s->data = (const char *)r->p + r->pos;
    s->len = n;
    r->pos += n;
    return 0;
}

/* A key or tensor name: non-empty, at most 65535 bytes, no NUL. */
static int rd_name(struct rd *r, const char *kind, int64_t idx, struct gguf_str *s)
{
    char what[64], sb[GGUF_SHOWBUF];
    uint64_t at = r->pos;
    int rc;
    snprintf(what, sizeof(what), "%s #%" PRId64, kind, idx);
    if ((rc = rd_str(r, s, what))) return rc;
    if (s->len == 0)
        return bt_errf(r->err, r->errsz, BT_EFORMAT, "%s: %s at offset %" PRIu64 " is empty",
                       r->path, what, at);
    if (s->len > GGUF_MAX_NAME)
        return bt_errf(r->err, r->errsz, BT_EFORMAT,
                       "%s: %s at offset %" PRIu64 " is %" PRIu64
                       " bytes long (the limit is 65535)",
                       r->path, what, at, s->len);
    if (memchr(s->data, 0, s->len))
        return bt_errf(r->err, r->errsz, BT_EFORMAT, "%s: %s '%s' contains a NUL byte", r->path,
                       what, gguf_show(sb, sizeof(sb), s->data, s->len));
    return 0;
}

/* NUL-terminated copy of a name in the gguf's chunked arena (never moved once written). */
static char *name_copy(struct gguf *g, const char *s, size_t n)
{
    struct name_chunk *c = g->names;
    if (!c || c->cap - c->used < n + 1) {
        size_t cap = n + 1 > 65536 ? n + 1 : 65536;
        c = malloc(sizeof(*c) + cap);
        if (!c) return NULL;
        c->next = g->names;
        c->used = 0;
        c->cap = cap;
        g->names = c;
    }
    char *d = c->data + c->used;
    memcpy(d, s, n);
    d[n] = 0;
    c->used += n + 1;
    return d;
}

int gguf_grow(void **arr, int64_t *cap, int64_t need, size_t elem)
{
    if (need <= *cap) return 0;
    int64_t nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p) return BT_ENOMEM;
    *arr = p;
    *cap = nc;
    return 0;
}

static int rd_scalar(struct rd *r, uint32_t t, struct gguf_kv *kv, const char *what)
{
    int rc = rd_need(r, gguf_vtype_size[t], what);
    if (rc) return rc;
    const uint8_t *q = r->p + r->pos;
    switch (t) {
    case GGUF_TYPE_UINT8:
        kv->v.u64 = q[0];
        break;
    case GGUF_TYPE_BOOL:
        kv->v.u64 = q[0] != 0;
        break;
    case GGUF_TYPE_INT8:
        kv->v.i64 = (int8_t)q[0];
        break;
    case GGUF_TYPE_UINT16: {
        uint16_t x;
        memcpy(&x, q, 2);
        kv->v.u64 = x;
        break;
    }
    case GGUF_TYPE_INT16: {
        int16_t x;
        memcpy(&x, q, 2);
        kv->v.i64 = x;
        break;
    }
    case GGUF_TYPE_UINT32: {
        uint32_t x;
        memcpy(&x, q, 4);
        kv->v.u64 = x;
        break;
    }
    case GGUF_TYPE_INT32: {
        int32_t x;
        memcpy(&x, q, 4);
        kv->v.i64 = x;
        break;
    }
    case GGUF_TYPE_FLOAT32: {
        float x;
        memcpy(&x, q, 4);
        kv->v.f64 = x;
        break;
    }
    case GGUF_TYPE_UINT64:
        memcpy(&kv->v.u64, q, 8);
        break;
    case GGUF_TYPE_INT64:
        memcpy(&kv->v.i64, q, 8);
        break;
    case GGUF_TYPE_FLOAT64:
        memcpy(&kv->v.f64, q, 8);
        break;
    default:
        break;
    }
    r->pos += gguf_vtype_size[t];
    return 0;
}

static int parse_array(struct rd *r, struct gguf_kv *kv, const char *kname)
{
    char what[GGUF_SHOWBUF + 64];
    uint32_t et;
    uint64_t n;
    int rc;

    snprintf(what, sizeof(what), "array type of key '%s'", kname);
    if ((rc = rd_u32(r, &et, what))) return rc;
    if (et == GGUF_TYPE_ARRAY)
        return bt_errf(r->err, r->errsz, BT_EFORMAT,
                       "%s: key '%s': nested arrays are not supported", r->path, kname);
    if (et >= GGUF_TYPE_COUNT)
        return bt_errf(r->err, r->errsz, BT_EFORMAT, "%s: key '%s': unknown array element type %u",
                       r->path, kname, et);
    snprintf(what, sizeof(what), "array count of key '%s'", kname);
    if ((rc = rd_u64(r, &n, what))) return rc;
    kv->arr_type = et;
    if (et == GGUF_TYPE_STRING) {
        /* every element takes at least its 8-byte length: the index is at most the file size */
        if (n > rd_left(r) / 8)
            return bt_errf(r->err, r->errsz, BT_EFORMAT,
                           "%s: key '%s': array of %" PRIu64
                           " strings does not fit in the remaining %" PRIu64 " bytes",
                           r->path, kname, n, rd_left(r));
        const uint8_t **idx = malloc((n ? n : 1) * sizeof(*idx));
        if (!idx)
            return bt_errf(r->err, r->errsz, BT_ENOMEM, "%s: out of memory for key '%s'", r->path,
                           kname);
        kv->arr_data = idx; /* freed by gguf_close from here on */
        kv->arr_n = n;
        for (uint64_t j = 0; j < n; j++) {
            struct gguf_str s;
            idx[j] = r->p + r->pos;
            snprintf(what, sizeof(what), "string %" PRIu64 " of key '%s'", j, kname);
            if ((rc = rd_str(r, &s, what))) {
                kv->arr_n = j;
                return rc;
            }
        }
        return 0;
    }
    uint64_t es = gguf_vtype_size[et];
    if (n > rd_left(r) / es)
        return bt_errf(r->err, r->errsz, BT_EFORMAT,
                       "%s: key '%s': array of %" PRIu64
                       " %s elements does not fit in the remaining %" PRIu64 " bytes",
                       r->path, kname, n, vtype_names[et], rd_left(r));
    kv->arr_data = r->p + r->pos;
    kv->arr_n = n;
    r->pos += n * es;
    return 0;
}

static int parse_kvs(struct gguf *g, struct rd *r, uint64_t n_kv)
{
    char sb[GGUF_SHOWBUF], what[GGUF_SHOWBUF + 64];
    int rc;
    for (uint64_t i = 0; i < n_kv; i++) {
        struct gguf_str key;
        uint32_t type;
        if ((rc = rd_name(r, "key", (int64_t)i, &key))) return rc;
        gguf_show(sb, sizeof(sb), key.data, key.len);
        snprintf(what, sizeof(what), "value type of key '%s'", sb);
        if ((rc = rd_u32(r, &type, what))) return rc;
        if (type >= GGUF_TYPE_COUNT)
            return bt_errf(r->err, r->errsz, BT_EFORMAT, "%s: key '%s': unknown value type %u",
                           r->path, sb, type);
        if (gguf_grow((void **)&g->kv, &g->cap_kv, g->n_kv + 1, sizeof(*g->kv))) goto oom;
        struct gguf_kv *kv = &g->kv[g->n_kv];
        memset(kv, 0, sizeof(*kv));
        kv->type = type;
        if (!(kv->key = name_copy(g, key.data, key.len))) goto oom;
        g->n_kv++;
        snprintf(what, sizeof(what), "value of key '%s'", sb);
        if (type == GGUF_TYPE_STRING)
            rc = rd_str(r, &kv->v.str, what);
        else if (type == GGUF_TYPE_ARRAY)
            rc = parse_array(r, kv, sb);
        else
            rc = rd_scalar(r, type, kv, what);
        if (rc) return rc;
    }
    return 0;
oom:
    return bt_errf(r->err, r->errsz, BT_ENOMEM, "%s: out of memory reading the metadata", r->path);
}

static uint64_t name_hash(const char *s)
{
    return fnv1a(FNV_OFFSET, s, strlen(s));
}

/* Build an open-addressing index over n names; *dup = index of a repeated name or -1. */
static int build_index(const struct gguf *g, bool tensors, int64_t **slots_out, uint64_t *mask_out,
                       int64_t *dup)
{
    int64_t n = tensors ? g->n_tensors : g->n_kv;
    uint64_t size = 16;
    while (size < (uint64_t)n * 2) size *= 2;
    int64_t *slots = malloc(size * sizeof(*slots));
    if (!slots) return BT_ENOMEM;
    memset(slots, 0xff, size * sizeof(*slots));
    *dup = -1;
    for (int64_t i = 0; i < n; i++) {
        const char *name = tensors ? g->tensors[i].name : g->kv[i].key;
        uint64_t h = name_hash(name) & (size - 1);
        for (;;) {
            int64_t j = slots[h];
            if (j < 0) {
                slots[h] = i;
                break;
            }
            if (!strcmp(tensors ? g->tensors[j].name : g->kv[j].key, name)) {
                *dup = i;
                break;
            }
            h = (h + 1) & (size - 1);
        }
        if (*dup >= 0) break;
    }
    *slots_out = slots;
    *mask_out = size - 1;
    return 0;
}

static int64_t index_find(const struct gguf *g, bool tensors, const char *name)
{
    const int64_t *slots = tensors ? g->t_slots : g->kv_slots;
    uint64_t mask = tensors ? g->t_mask : g->kv_mask;
    if (!slots || !name) return -1;
    uint64_t h = name_hash(name) & mask;
    for (;;) {
        int64_t j = slots[h];
        if (j < 0) return -1;
        if (!strcmp(tensors ? g->tensors[j].name : g->kv[j].key, name)) return j;
        h = (h + 1) & mask;
    }
}

struct span {
    uint64_t off, end;
    int64_t idx;
};

static int span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

static int parse_tensors(struct gguf *g, struct rd *r, uint64_t n_t)
{
    char sb[GGUF_SHOWBUF], what[GGUF_SHOWBUF + 64];
    int rc;
    for (uint64_t i = 0; i < n_t; i++) {
        struct gguf_str name;
        uint32_t n_dims, type;
        uint64_t ne[GGUF_MAX_DIMS] = {1, 1, 1, 1}, offset;

        if ((rc = rd_name(r, "tensor name", (int64_t)i, &name))) return rc;
        gguf_show(sb, sizeof(sb), name.data, name.len);
        snprintf(what, sizeof(what), "n_dims of tensor '%s'", sb);
        if ((rc = rd_u32(r, &n_dims, what))) return rc;
        if (n_dims == 0 || n_dims > GGUF_MAX_DIMS)
            return bt_errf(r->err, r->errsz, BT_EFORMAT,
                           "%s: tensor '%s': n_dims %u is out of range 1..%d", r->path, sb, n_dims,
                           GGUF_MAX_DIMS);
        snprintf(what, sizeof(what), "shape of tensor '%s'", sb);
        for (uint32_t d = 0; d < n_dims; d++)
            if ((rc = rd_u64(r, &ne[d], what))) return rc;
        snprintf(what, sizeof(what), "type of tensor '%s'", sb);
        if ((rc = rd_u32(r, &type, what))) return rc;
        snprintf(what, sizeof(what), "data offset of tensor '%s'", sb);
        if ((rc = rd_u64(r, &offset, what))) return rc;

        int64_t nel = 1;
        for (uint32_t d = 0; d < n_dims; d++) {
            if ((int64_t)ne[d] <= 0)
                return bt_errf(r->err, r->errsz, BT_EFORMAT,
                               "%s: tensor '%s': dimension %u is %" PRId64 " (must be > 0)",
                               r->path, sb, d, (int64_t)ne[d]);
            if (__builtin_mul_overflow(nel, (int64_t)ne[d], &nel))
                return bt_errf(r->err, r->errsz, BT_EFORMAT,
                               "%s: tensor '%s': element count overflows (ne = %" PRIu64
                               " x %" PRIu64 " x %" PRIu64 " x %" PRIu64 ")",
                               r->path, sb, ne[0], ne[1], ne[2], ne[3]);
        }
        const struct bt_type_info *ti = bt_type_get(type);
        if (!ti || ti->blck_size <= 0 || ti->type_size == 0)
            return bt_errf(r->err, r->errsz, BT_EFORMAT, "%s: tensor '%s': unknown ggml type %u",
                           r->path, sb, type);
        if (ne[0] % (uint64_t)ti->blck_size)
            return bt_errf(r->err, r->errsz, BT_EFORMAT,
                           "%s: tensor '%s': ne[0] = %" PRIu64
                           " is not a multiple of the %s block size %d",
                           r->path, sb, ne[0], ti->name, ti->blck_size);
        uint64_t nbytes;
        if (__builtin_mul_overflow(ne[0] / (uint64_t)ti->blck_size, (uint64_t)ti->type_size,
                                   &nbytes) ||
            __builtin_mul_overflow(nbytes, (uint64_t)nel / ne[0], &nbytes) || nbytes > INT64_MAX)
            return bt_errf(r->err, r->errsz, BT_EFORMAT, "%s: tensor '%s': byte size overflows",
                           r->path, sb);
        if (offset % g->alignment)
            return bt_errf(r->err, r->errsz, BT_EFORMAT,
                           "%s: tensor '%s': data offset %" PRIu64
                           " is not a multiple of the alignment %" PRIu64,
                           r->path, sb, offset, g->alignment);

        if (gguf_grow((void **)&g->tensors, &g->cap_tensors, g->n_tensors + 1, sizeof(*g->tensors)))
            goto oom;
        struct gguf_tensor *t = &g->tensors[g->n_tensors];
        memset(t, 0, sizeof(*t));
        if (!(t->name = name_copy(g, name.data, name.len))) goto oom;
        t->type = type;
        t->n_dims = n_dims;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = (int64_t)ne[d];
        t->offset = offset;
        t->nbytes = nbytes;
        g->n_tensors++;
    }
    return 0;
oom:
    return bt_errf(r->err, r->errsz, BT_ENOMEM, "%s: out of memory reading the tensor index",
                   r->path);
}

/* Place the data section and every tensor in it; reject overlaps. */
static int place_tensors(struct gguf *g, struct rd *r)
{
    char sa[GGUF_SHOWBUF], sb[GGUF_SHOWBUF];
    int rc = 0;
    g->data_offset = (r->pos + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors == 0) return 0; /* files without tensors may end before the padding */
    if (g->data_offset > g->size)
        return bt_errf(r->err, r->errsz, BT_EFORMAT,
                       "%s: data section at offset %" PRIu64
                       " is past the end of the file (size %" PRIu64 ")",
                       r->path, g->data_offset, g->size);
    uint64_t room = g->size - g->data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct gguf_tensor *t = &g->tensors[i];
        if (t->offset > room || t->nbytes > room - t->offset) {
            uint64_t a, e; /* absolute [a, e) when it can be written so */
            gguf_show(sa, sizeof(sa), t->name, strlen(t->name));
            if (__builtin_add_overflow(g->data_offset, t->offset, &a) ||
                __builtin_add_overflow(a, t->nbytes, &e))
                return bt_errf(r->err, r->errsz, BT_EFORMAT,
                               "%s: tensor '%s' data at offset %" PRIu64 " + %" PRIu64
                               " of the data section (at %" PRIu64
                               ") is past the end of the file (size %" PRIu64 ")",
                               r->path, sa, t->offset, t->nbytes, g->data_offset, g->size);
            return bt_errf(r->err, r->errsz, BT_EFORMAT,
                           "%s: tensor '%s' data [%" PRIu64 ", %" PRIu64
                           ") is past the end of the file (size %" PRIu64 ")",
                           r->path, sa, a, e, g->size);
        }
        t->data = g->base + g->data_offset + t->offset;
    }
    struct span *sp = malloc((size_t)g->n_tensors * sizeof(*sp));
    if (!sp) return bt_errf(r->err, r->errsz, BT_ENOMEM, "%s: out of memory", r->path);
    for (int64_t i = 0; i < g->n_tensors; i++)
        sp[i] = (struct span){g->tensors[i].offset, g->tensors[i].offset + g->tensors[i].nbytes, i};
    qsort(sp, (size_t)g->n_tensors, sizeof(*sp), span_cmp);
    for (int64_t i = 1; i < g->n_tensors; i++) {
        if (sp[i].off < sp[i - 1].end) {
            const struct gguf_tensor *a = &g->tensors[sp[i - 1].idx], *b = &g->tensors[sp[i].idx];
            rc = bt_errf(r->err, r->errsz, BT_EFORMAT,
                         "%s: tensors '%s' [%" PRIu64 ", %" PRIu64 ") and '%s' [%" PRIu64
                         ", %" PRIu64 ") overlap",
                         r->path, gguf_show(sa, sizeof(sa), a->name, strlen(a->name)),
                         sp[i - 1].off, sp[i - 1].end,
                         gguf_show(sb, sizeof(sb), b->name, strlen(b->name)), sp[i].off, sp[i].end);
            break;
        }
    }
    free(sp);
    return rc;
}

static int parse(struct gguf *g, char *err, size_t errsz)
{
    struct rd r = {
        .p = g->base, .pos = 0, .size = g->size, .path = g->path, .err = err, .errsz = errsz};
    char sb[GGUF_SHOWBUF];
    uint32_t magic, version;
    uint64_t n_t, n_kv;
    int64_t dup;
    int rc;

    if ((rc = rd_u32(&r, &magic, "magic"))) return rc;
    if (magic != GGUF_MAGIC)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: bad magic 0x%08x (not a GGUF file)", g->path,
                       magic);
    if ((rc = rd_u32(&r, &version, "version"))) return rc;
    if (version == 1)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%s: GGUF version 1 is not supported (only versions 2 and 3)", g->path);
    if (version != 2 && version != 3)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%s: unsupported GGUF version %u (only versions 2 and 3%s)", g->path,
                       version, (version & 0xffff) == 0 ? "; a big-endian file?" : "");
    g->version = version;
    if ((rc = rd_u64(&r, &n_t, "tensor count"))) return rc;
    if ((rc = rd_u64(&r, &n_kv, "metadata count"))) return rc;
    if (n_kv > rd_left(&r) / KV_MIN_BYTES)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%s: n_kv %" PRIu64 " cannot fit in the remaining %" PRIu64 " bytes",
                       g->path, n_kv, rd_left(&r));
    if (n_t > (rd_left(&r) - n_kv * KV_MIN_BYTES) / TI_MIN_BYTES)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%s: n_tensors %" PRIu64 " cannot fit in the remaining %" PRIu64 " bytes",
                       g->path, n_t, rd_left(&r));

    if ((rc = parse_kvs(g, &r, n_kv))) return rc;
    if ((rc = build_index(g, false, &g->kv_slots, &g->kv_mask, &dup)))
        return bt_errf(err, errsz, rc, "%s: out of memory", g->path);
    if (dup >= 0)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: duplicate key '%s'", g->path,
                       gguf_show(sb, sizeof(sb), g->kv[dup].key, strlen(g->kv[dup].key)));

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const struct gguf_kv *al = gguf_find_kv(g, "general.alignment");
    if (al) {
        if (al->type != GGUF_TYPE_UINT32)
            return bt_errf(err, errsz, BT_EFORMAT,
                           "%s: general.alignment has type %s (expected u32)", g->path,
                           gguf_vtype_name(al->type));
        if (al->v.u64 == 0 || (al->v.u64 & (al->v.u64 - 1)))
            return bt_errf(err, errsz, BT_EFORMAT,
                           "%s: general.alignment %" PRIu64 " is not a non-zero power of two",
                           g->path, al->v.u64);
        g->alignment = al->v.u64;
    }

    if ((rc = parse_tensors(g, &r, n_t))) return rc;
    if ((rc = build_index(g, true, &g->t_slots, &g->t_mask, &dup)))
        return bt_errf(err, errsz, rc, "%s: out of memory", g->path);
    if (dup >= 0)
        return bt_errf(
            err, errsz, BT_EFORMAT, "%s: duplicate tensor name '%s'", g->path,
            gguf_show(sb, sizeof(sb), g->tensors[dup].name, strlen(g->tensors[dup].name)));
    if ((rc = place_tensors(g, &r))) return rc;

    uint64_t hashed = g->data_offset < g->size ? g->data_offset : g->size;
    g->identity = fnv1a(fnv1a(FNV_OFFSET, g->base, hashed), &g->size, sizeof(g->size));
    return 0;
}

static struct gguf *gguf_alloc(const char *name)
{
    struct gguf *g = calloc(1, sizeof(*g));
    if (!g) return NULL;
    if (!(g->path = strdup(name ? name : "(memory)"))) {
        free(g);
        return NULL;
    }
    return g;
}

int gguf_open_mem(const void *data, size_t size, const char *name, struct gguf **out, char *err,
                  size_t errsz)
{
    struct gguf *g = NULL;
    int rc;
    *out = NULL;
    if (!data && size)
        return bt_errf(err, errsz, BT_EINVAL, "%s: no data", name ? name : "(memory)");
    if (!(g = gguf_alloc(name))) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    g->base = data ? data : (const uint8_t *)"";
    g->size = size;
    if ((rc = parse(g, err, errsz))) goto fail;
    *out = g;
    return 0;
fail:
    gguf_close(g);
    return rc;
}

int gguf_open(const char *path, struct gguf **out, char *err, size_t errsz)
{
    struct gguf *g = NULL;
    struct stat st;
    int fd = -1, rc;

    *out = NULL;
    if (!path) return bt_errf(err, errsz, BT_EINVAL, "gguf_open: no path");
    if (!(g = gguf_alloc(path))) return bt_errf(err, errsz, BT_ENOMEM, "%s: out of memory", path);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = bt_errf(err, errsz, BT_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        rc = bt_errf(err, errsz, BT_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = bt_errf(err, errsz, BT_EIO, "%s: not a regular file", path);
        goto fail;
    }
    g->size = (uint64_t)st.st_size;
    g->base = (const uint8_t *)"";
    if (st.st_size > 0) {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            rc = bt_errf(err, errsz, BT_EIO, "%s: cannot map %" PRIu64 " bytes: %s", path, g->size,
                         strerror(errno));
            goto fail;
        }
        g->map = m;
        g->map_len = (size_t)st.st_size;
        g->base = m;
    }
    close(fd);
    fd = -1;
    if ((rc = parse(g, err, errsz))) goto fail;
    *out = g;
    return 0;
fail:
    if (fd >= 0) close(fd);
    gguf_close(g);
    return rc;
}

void gguf_close(struct gguf *g)
{
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].type == GGUF_TYPE_ARRAY && g->kv[i].arr_type == GGUF_TYPE_STRING)
            free((void *)g->kv[i].arr_data);
    free(g->kv);
    free(g->tensors);
    free(g->kv_slots);
    free(g->t_slots);
    while (g->names) {
        struct name_chunk *c = g->names;
        g->names = c->next;
        free(c);
    }
    if (g->map) munmap(g->map, g->map_len);
    free(g->path);
    free(g);
}

const char *gguf_path(const struct gguf *g)
{
    return g->path;
}

uint32_t gguf_version(const struct gguf *g)
{
    return g->version;
}

uint64_t gguf_file_size(const struct gguf *g)
{
    return g->size;
}

uint64_t gguf_alignment(const struct gguf *g)
{
    return g->alignment;
}

uint64_t gguf_data_offset(const struct gguf *g)
{
    return g->data_offset;
}

uint64_t gguf_identity(const struct gguf *g)
{
    return g->identity;
}

int64_t gguf_n_kv(const struct gguf *g)
{
    return g->n_kv;
}

const struct gguf_kv *gguf_kv_at(const struct gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? &g->kv[i] : NULL;
}

const struct gguf_kv *gguf_find_kv(const struct gguf *g, const char *key)
{
    int64_t i = index_find(g, false, key);
    return i >= 0 ? &g->kv[i] : NULL;
}

int64_t gguf_n_tensors(const struct gguf *g)
{
    return g->n_tensors;
}

const struct gguf_tensor *gguf_tensor_at(const struct gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name)
{
    int64_t i = index_find(g, true, name);
    return i >= 0 ? &g->tensors[i] : NULL;
}

/* ---- getters ---- */

/* Integer value of a scalar of type t: *neg tells whether it is a negative signed value. */
static bool int_value(uint32_t t, uint64_t u, int64_t s, bool *neg, uint64_t *mag)
{
    if (vtype_is_uint(t)) {
        *neg = false;
        *mag = u;
        return true;
    }
    if (vtype_is_sint(t)) {
        *neg = s < 0;
        *mag = (uint64_t)s; /* two's complement bit pattern; only used when !neg or for i64 */
        return true;
    }
    return false;
}

static int to_u64(uint32_t t, uint64_t u, int64_t s, uint64_t max, uint64_t *out)
{
    bool neg;
    uint64_t m;
    if (!int_value(t, u, s, &neg, &m) || neg || m > max) return BT_EFORMAT;
    *out = m;
    return 0;
}

static int to_i64(uint32_t t, uint64_t u, int64_t s, int64_t min, int64_t max, int64_t *out)
{
    bool neg;
    uint64_t m;
    if (!int_value(t, u, s, &neg, &m)) return BT_EFORMAT;
    if (neg) {
        if (s < min) return BT_EFORMAT;
        *out = s;
        return 0;
    }
    if (m > (uint64_t)max) return BT_EFORMAT;
    *out = (int64_t)m;
    return 0;
}

static const struct gguf_kv *find_or(const struct gguf *g, const char *key, int *rc)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    *rc = kv ? 0 : BT_ENOTFOUND;
    return kv;
}

int gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out)
{
    int rc;
    uint64_t v;
    const struct gguf_kv *kv = find_or(g, key, &rc);
    if (!kv) return rc;
    if ((rc = to_u64(kv->type, kv->v.u64, kv->v.i64, UINT32_MAX, &v))) return rc;
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_u64(const struct gguf *g, const char *key, uint64_t *out)
{
    int rc;
    const struct gguf_kv *kv = find_or(g, key, &rc);
    if (!kv) return rc;
    return to_u64(kv->type, kv->v.u64, kv->v.i64, UINT64_MAX, out);
}

int gguf_get_i32(const struct gguf *g, const char *key, int32_t *out)
{
    int rc;
    int64_t v;
    const struct gguf_kv *kv = find_or(g, key, &rc);
    if (!kv) return rc;
    if ((rc = to_i64(kv->type, kv->v.u64, kv->v.i64, INT32_MIN, INT32_MAX, &v))) return rc;
    *out = (int32_t)v;
    return 0;
}

int gguf_get_i64(const struct gguf *g, const char *key, int64_t *out)
{
    int rc;
    const struct gguf_kv *kv = find_or(g, key, &rc);
    if (!kv) return rc;
    return to_i64(kv->type, kv->v.u64, kv->v.i64, INT64_MIN, INT64_MAX, out);
}

int gguf_get_f32(const struct gguf *g, const char *key, float *out)
{
    int rc;
    const struct gguf_kv *kv = find_or(g, key, &rc);
    if (!kv) return rc;
    if (!vtype_is_float(kv->type)) return BT_EFORMAT;
    *out = (float)kv->v.f64;
    return 0;
}

int gguf_get_f64(const struct gguf *g, const char *key, double *out)
{
    int rc;
    const struct gguf_kv *kv = find_or(g, key, &rc);
    if (!kv) return rc;
    if (!vtype_is_float(kv->type)) return BT_EFORMAT;
    *out = kv->v.f64;
    return 0;
}

int gguf_get_bool(const struct gguf *g, const char *key, bool *out)
{
    int rc;
    const struct gguf_kv *kv = find_or(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != GGUF_TYPE_BOOL) return BT_EFORMAT;
    *out = kv->v.u64 != 0;
    return 0;
}

int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out)
{
    int rc;
    const struct gguf_kv *kv = find_or(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != GGUF_TYPE_STRING) return BT_EFORMAT;
    *out = kv->v.str;
    return 0;
}

int gguf_get_arr(const struct gguf *g, const char *key, uint32_t *elem_type, uint64_t *n)
{
    int rc;
    const struct gguf_kv *kv = find_or(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != GGUF_TYPE_ARRAY) return BT_EFORMAT;
    *elem_type = kv->arr_type;
    *n = kv->arr_n;
    return 0;
}

int gguf_arr_str(const struct gguf_kv *kv, uint64_t i, struct gguf_str *out)
{
    if (!kv || kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING) return BT_EFORMAT;
    if (i >= kv->arr_n) return BT_EINVAL;
    const uint8_t *const *idx = kv->arr_data;
    uint64_t len;
    memcpy(&len, idx[i], 8);
    out->data = (const char *)idx[i] + 8;
    out->len = len;
    return 0;
}

/* Raw element i of a numeric array, widened like the scalar values. */
static void arr_elem(const struct gguf_kv *kv, uint64_t i, struct gguf_kv *tmp)
{
    struct rd r = {.p = (const uint8_t *)kv->arr_data + i * gguf_vtype_size[kv->arr_type],
                   .pos = 0,
                   .size = gguf_vtype_size[kv->arr_type]};
    memset(tmp, 0, sizeof(*tmp));
    rd_scalar(&r, kv->arr_type, tmp, "element");
}

int gguf_arr_i64(const struct gguf_kv *kv, uint64_t i, int64_t *out)
{
    struct gguf_kv e;
    if (!kv || kv->type != GGUF_TYPE_ARRAY) return BT_EFORMAT;
    uint32_t t = kv->arr_type;
    if (!vtype_is_uint(t) && !vtype_is_sint(t) && t != GGUF_TYPE_BOOL) return BT_EFORMAT;
    if (i >= kv->arr_n) return BT_EINVAL;
    arr_elem(kv, i, &e);
    if (t == GGUF_TYPE_BOOL) {
        *out = (int64_t)e.v.u64;
        return 0;
    }
    return to_i64(t, e.v.u64, e.v.i64, INT64_MIN, INT64_MAX, out);
}

int gguf_arr_f64(const struct gguf_kv *kv, uint64_t i, double *out)
{
    struct gguf_kv e;
    if (!kv || kv->type != GGUF_TYPE_ARRAY || !vtype_is_float(kv->arr_type)) return BT_EFORMAT;
    if (i >= kv->arr_n) return BT_EINVAL;
    arr_elem(kv, i, &e);
    *out = e.v.f64;
    return 0;
}
