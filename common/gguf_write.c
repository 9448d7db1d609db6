/* gguf_write: the streaming GGUF writer (see gguf_write.h): metadata and tensor infos are kept
 * in memory until gguf_writer_begin writes the header; tensor data goes straight to the file, in
 * declaration order, each tensor padded to the alignment. The layout is the one gguf.c reads. */
#include "gguf_write.h"

#include "gguf_internal.h"
#include "log.h"
#include "quant.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf_write.c assumes a little-endian host"
#endif

struct wkv {
    char *key;
    uint32_t type;
    uint8_t *val; /* serialised value (after the type) */
    size_t len;
};

struct wtensor {
    char *name;
    uint32_t type, n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint64_t offset, nbytes;
};

enum { W_BUILD, W_DATA, W_DONE, W_FAILED };

struct gguf_writer {
    struct wkv *kv;
    int64_t n_kv, cap_kv;
    struct wtensor *t;
    int64_t n_t, cap_t;
    uint64_t alignment;
    int state;
    FILE *f;
    char *path;
    uint64_t pos;      /* bytes written to f */
    int64_t cur;       /* tensor being written */
    uint64_t cur_done; /* its bytes written so far */
    char err[512];     /* first error */
};

/* Record the first error and return status. */
static int werr(struct gguf_writer *w, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int werr(struct gguf_writer *w, int status, const char *fmt, ...)
{
    if (!w->err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->err, sizeof(w->err), fmt, ap);
        va_end(ap);
    }
    return status;
}

struct gguf_writer *gguf_writer_new(void)
{
    struct gguf_writer *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(struct gguf_writer *w)
{
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (int64_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    if (w->f) fclose(w->f);
    free(w->path);
    free(w);
}

const char *gguf_writer_error(const struct gguf_writer *w)
{
    return w && w->err[0] ? w->err : NULL;
}

static int check_name(struct gguf_writer *w, const char *what, const char *name)
{
    if (!name || !name[0]) return werr(w, BT_EINVAL, "gguf writer: empty %s", what);
    size_t n = strlen(name);
    if (n > GGUF_MAX_NAME)
        return werr(w, BT_EINVAL, "gguf writer: %s of %zu bytes is longer than 65535", what, n);
    return 0;
}

/* Take ownership of val (malloc'd, len bytes) as the value of key. */
static int set_kv(struct gguf_writer *w, const char *key, uint32_t type, uint8_t *val, size_t len)
{
    int rc;
    char sb[GGUF_SHOWBUF];
    if (w->state != W_BUILD) {
        rc = werr(w, BT_EINVAL, "gguf writer: metadata set after gguf_writer_begin");
        goto fail;
    }
    if ((rc = check_name(w, "key", key))) goto fail;
    if (!strcmp(key, "general.alignment")) {
        uint32_t a = 0;
        if (type == GGUF_TYPE_UINT32) memcpy(&a, val, 4);
        if (type != GGUF_TYPE_UINT32 || a == 0 || (a & (a - 1))) {
            rc = werr(w, BT_EINVAL,
                      "gguf writer: general.alignment must be a non-zero power of two of type u32");
            goto fail;
        }
        w->alignment = a;
    }
    for (int64_t i = 0; i < w->n_kv; i++) {
        if (!strcmp(w->kv[i].key, key)) {
            free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = val;
            w->kv[i].len = len;
            return 0;
        }
    }
    if (gguf_grow((void **)&w->kv, &w->cap_kv, w->n_kv + 1, sizeof(*w->kv))) goto oom;
    char *k = strdup(key);
    if (!k) goto oom;
    w->kv[w->n_kv++] = (struct wkv){k, type, val, len};
    return 0;
oom:
    rc = werr(w, BT_ENOMEM, "gguf writer: out of memory setting '%s'",
              gguf_show(sb, sizeof(sb), key, strlen(key)));
fail:
    free(val);
    return rc;
}

static int set_scalar(struct gguf_writer *w, const char *key, uint32_t type, const void *v)
{
    size_t n = gguf_vtype_size[type];
    uint8_t *val = malloc(n);
    if (!val) return werr(w, BT_ENOMEM, "gguf writer: out of memory");
    memcpy(val, v, n);
    return set_kv(w, key, type, val, n);
}

int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
    return set_scalar(w, key, GGUF_TYPE_UINT32, &v);
}

int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v)
{
    return set_scalar(w, key, GGUF_TYPE_INT32, &v);
}

int gguf_writer_set_u64(struct gguf_writer *w, const char *key, uint64_t v)
{
    return set_scalar(w, key, GGUF_TYPE_UINT64, &v);
}

int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v)
{
    return set_scalar(w, key, GGUF_TYPE_FLOAT32, &v);
}

int gguf_writer_set_bool(struct gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return set_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

/* Serialise a string (u64 length + bytes) at dst; returns the bytes written. */
static size_t put_str(uint8_t *dst, const char *s, uint64_t n)
{
    memcpy(dst, &n, 8);
    if (n) memcpy(dst + 8, s, n);
    return 8 + n;
}

int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *s)
{
    if (!s) return werr(w, BT_EINVAL, "gguf writer: NULL string for a key");
    size_t n = strlen(s);
    uint8_t *val = malloc(8 + n);
    if (!val) return werr(w, BT_ENOMEM, "gguf writer: out of memory");
    put_str(val, s, n);
    return set_kv(w, key, GGUF_TYPE_STRING, val, 8 + n);
}

int gguf_writer_set_arr(struct gguf_writer *w, const char *key, uint32_t elem_type,
                        const void *data, uint64_t n)
{
    if (elem_type >= GGUF_TYPE_COUNT || elem_type == GGUF_TYPE_STRING ||
        elem_type == GGUF_TYPE_ARRAY)
        return werr(w, BT_EINVAL, "gguf writer: bad array element type %u for a numeric array",
                    elem_type);
    if (n && !data) return werr(w, BT_EINVAL, "gguf writer: NULL array data");
    uint64_t es = gguf_vtype_size[elem_type];
    if (n > (SIZE_MAX - 12) / es) return werr(w, BT_EINVAL, "gguf writer: array too large");
    size_t len = 12 + (size_t)(n * es);
    uint8_t *val = malloc(len);
    if (!val) return werr(w, BT_ENOMEM, "gguf writer: out of memory");
    memcpy(val, &elem_type, 4);
    memcpy(val + 4, &n, 8);
    if (n) memcpy(val + 12, data, (size_t)(n * es));
    return set_kv(w, key, GGUF_TYPE_ARRAY, val, len);
}

int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const struct gguf_str *strs,
                            uint64_t n)
{
    uint64_t len = 12;
    if (n && !strs) return werr(w, BT_EINVAL, "gguf writer: NULL string array");
    for (uint64_t i = 0; i < n; i++) {
        if (strs[i].len && !strs[i].data)
            return werr(w, BT_EINVAL, "gguf writer: NULL string in an array");
        if (strs[i].len > SIZE_MAX / 2 || len > SIZE_MAX / 2 - strs[i].len - 8)
            return werr(w, BT_EINVAL, "gguf writer: string array too large");
        len += 8 + strs[i].len;
    }
    uint8_t *val = malloc((size_t)len);
    if (!val) return werr(w, BT_ENOMEM, "gguf writer: out of memory");
    uint32_t et = GGUF_TYPE_STRING;
    memcpy(val, &et, 4);
    memcpy(val + 4, &n, 8);
    size_t o = 12;
    for (uint64_t i = 0; i < n; i++) o += put_str(val + o, strs[i].data, strs[i].len);
    return set_kv(w, key, GGUF_TYPE_ARRAY, val, (size_t)len);
}

int gguf_writer_copy_kv(struct gguf_writer *w, const struct gguf_kv *kv)
{
    if (!kv) return werr(w, BT_EINVAL, "gguf writer: NULL kv");
    switch (kv->type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_BOOL:
        /* little-endian: the low bytes of the widened value are the value */
        return set_scalar(w, kv->key, kv->type, &kv->v.u64);
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_INT16:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_INT64:
        return set_scalar(w, kv->key, kv->type, &kv->v.i64);
    case GGUF_TYPE_FLOAT32: {
        float f = (float)kv->v.f64;
        return set_scalar(w, kv->key, kv->type, &f);
    }
    case GGUF_TYPE_FLOAT64:
        return set_scalar(w, kv->key, kv->type, &kv->v.f64);
    case GGUF_TYPE_STRING: {
        if (kv->v.str.len > SIZE_MAX - 8) return werr(w, BT_EINVAL, "gguf writer: bad string");
        uint8_t *val = malloc(8 + (size_t)kv->v.str.len);
        if (!val) return werr(w, BT_ENOMEM, "gguf writer: out of memory");
        put_str(val, kv->v.str.data, kv->v.str.len);
        return set_kv(w, kv->key, kv->type, val, 8 + (size_t)kv->v.str.len);
    }
    case GGUF_TYPE_ARRAY:
        if (kv->arr_type == GGUF_TYPE_STRING) {
            struct gguf_str *s = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof(*s));
            if (!s) return werr(w, BT_ENOMEM, "gguf writer: out of memory");
            for (uint64_t i = 0; i < kv->arr_n; i++) gguf_arr_str(kv, i, &s[i]);
            int rc = gguf_writer_set_arr_str(w, kv->key, s, kv->arr_n);
            free(s);
            return rc;
        }
        return gguf_writer_set_arr(w, kv->key, kv->arr_type, kv->arr_data, kv->arr_n);
    default:
        return werr(w, BT_EINVAL, "gguf writer: bad value type %u", kv->type);
    }
}

int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                           const int64_t *ne)
{
    char sb[GGUF_SHOWBUF];
    int rc;
    if (w->state != W_BUILD)
        return werr(w, BT_EINVAL, "gguf writer: tensor added after gguf_writer_begin");
    if ((rc = check_name(w, "tensor name", name))) return rc;
    gguf_show(sb, sizeof(sb), name, strlen(name));
    const struct bt_type_info *ti = bt_type_get(type);
    if (!ti || ti->blck_size <= 0 || ti->type_size == 0)
        return werr(w, BT_EINVAL, "gguf writer: tensor '%s': unknown type %u", sb, type);
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS || !ne)
        return werr(w, BT_EINVAL, "gguf writer: tensor '%s': n_dims %u out of range", sb, n_dims);
    struct wtensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    int64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] <= 0 || __builtin_mul_overflow(nel, ne[d], &nel))
            return werr(w, BT_EINVAL, "gguf writer: tensor '%s': bad dimension %u = %" PRId64, sb,
                        d, ne[d]);
        t.ne[d] = ne[d];
    }
    if (ne[0] % ti->blck_size)
        return werr(w, BT_EINVAL,
                    "gguf writer: tensor '%s': ne[0] = %" PRId64
                    " is not a multiple of the %s block size %d",
                    sb, ne[0], ti->name, ti->blck_size);
    if (__builtin_mul_overflow((uint64_t)(ne[0] / ti->blck_size), (uint64_t)ti->type_size,
                               &t.nbytes) ||
        __builtin_mul_overflow(t.nbytes, (uint64_t)(nel / ne[0]), &t.nbytes) ||
        t.nbytes > INT64_MAX / 2)
        return werr(w, BT_EINVAL, "gguf writer: tensor '%s': too large", sb);
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name))
            return werr(w, BT_EINVAL, "gguf writer: duplicate tensor name '%s'", sb);
    if (w->n_t >= INT32_MAX) return werr(w, BT_EINVAL, "gguf writer: too many tensors");
    if (gguf_grow((void **)&w->t, &w->cap_t, w->n_t + 1, sizeof(*w->t)) || !(t.name = strdup(name)))
        return werr(w, BT_ENOMEM, "gguf writer: out of memory");
    w->t[w->n_t] = t;
    return (int)w->n_t++;
}

static int wr(struct gguf_writer *w, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, w->f) != n) {
        w->state = W_FAILED;
        return werr(w, BT_EIO, "%s: write failed: %s", w->path, strerror(errno));
    }
    w->pos += n;
    return 0;
}

static int wr_u32(struct gguf_writer *w, uint32_t v)
{
    return wr(w, &v, 4);
}

static int wr_u64(struct gguf_writer *w, uint64_t v)
{
    return wr(w, &v, 8);
}

static int wr_str(struct gguf_writer *w, const char *s)
{
    int rc = wr_u64(w, strlen(s));
    return rc ? rc : wr(w, s, strlen(s));
}

static int wr_pad(struct gguf_writer *w)
{
    static const uint8_t zeros[256];
    uint64_t pad = (w->alignment - w->pos % w->alignment) % w->alignment;
    while (pad) {
        size_t n = pad > sizeof(zeros) ? sizeof(zeros) : (size_t)pad;
        int rc = wr(w, zeros, n);
        if (rc) return rc;
        pad -= n;
    }
    return 0;
}

static uint64_t pad_to(uint64_t n, uint64_t a)
{
    return (n + a - 1) / a * a;
}

int gguf_writer_begin(struct gguf_writer *w, const char *path, char *err, size_t errsz)
{
    int rc;
    if (!w || !path) return bt_errf(err, errsz, BT_EINVAL, "gguf_writer_begin: no writer or path");
    if (w->err[0]) return bt_errf(err, errsz, BT_EINVAL, "%s: %s", path, w->err);
    if (w->state != W_BUILD)
        return bt_errf(err, errsz, BT_EINVAL, "%s: gguf_writer_begin called twice", path);
    if (!(w->path = strdup(path))) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        if (__builtin_add_overflow(off, pad_to(w->t[i].nbytes, w->alignment), &off) ||
            off > INT64_MAX)
            return bt_errf(err, errsz, BT_EINVAL, "%s: the tensors' total size overflows", path);
    }
    if (!(w->f = fopen(path, "wb"))) {
        w->state = W_FAILED;
        return bt_errf(err, errsz, BT_EIO, "%s: cannot create: %s", path, strerror(errno));
    }
    setvbuf(w->f, NULL, _IOFBF, 1 << 20);
    w->state = W_DATA;
    if ((rc = wr_u32(w, GGUF_MAGIC)) || (rc = wr_u32(w, 3)) || (rc = wr_u64(w, (uint64_t)w->n_t)) ||
        (rc = wr_u64(w, (uint64_t)w->n_kv)))
        goto fail;
    for (int64_t i = 0; i < w->n_kv; i++)
        if ((rc = wr_str(w, w->kv[i].key)) || (rc = wr_u32(w, w->kv[i].type)) ||
            (rc = wr(w, w->kv[i].val, w->kv[i].len)))
            goto fail;
    for (int64_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        if ((rc = wr_str(w, t->name)) || (rc = wr_u32(w, t->n_dims))) goto fail;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if ((rc = wr_u64(w, (uint64_t)t->ne[d]))) goto fail;
        if ((rc = wr_u32(w, t->type)) || (rc = wr_u64(w, t->offset))) goto fail;
    }
    if ((rc = wr_pad(w))) goto fail;
    w->cur = 0;
    w->cur_done = 0;
    return 0;
fail:
    return bt_errf(err, errsz, rc, "%s", w->err);
}

int gguf_writer_write(struct gguf_writer *w, int idx, const void *data, size_t nbytes)
{
    int rc;
    char sb[GGUF_SHOWBUF];
    if (w->state != W_DATA)
        return werr(w, BT_EINVAL, "gguf writer: tensor data written outside begin..finish");
    if (idx < 0 || idx != w->cur || w->cur >= w->n_t)
        return werr(w, BT_EINVAL, "gguf writer: data for tensor %d while tensor %" PRId64 " is due",
                    idx, w->cur);
    const struct wtensor *t = &w->t[w->cur];
    if (nbytes > t->nbytes - w->cur_done)
        return werr(w, BT_EINVAL,
                    "gguf writer: tensor '%s': %zu bytes written past its size %" PRIu64,
                    gguf_show(sb, sizeof(sb), t->name, strlen(t->name)), nbytes, t->nbytes);
    if (nbytes && !data) return werr(w, BT_EINVAL, "gguf writer: NULL data");
    if ((rc = wr(w, data, nbytes))) return rc;
    w->cur_done += nbytes;
    if (w->cur_done == t->nbytes) {
        if ((rc = wr_pad(w))) return rc;
        w->cur++;
        w->cur_done = 0;
    }
    return 0;
}

int gguf_writer_finish(struct gguf_writer *w, char *err, size_t errsz)
{
    char sb[GGUF_SHOWBUF];
    int rc;
    if (!w) return bt_errf(err, errsz, BT_EINVAL, "gguf_writer_finish: no writer");
    if (w->state == W_BUILD)
        return bt_errf(err, errsz, BT_EINVAL, "gguf_writer_finish: gguf_writer_begin not called");
    if (w->err[0]) {
        w->state = W_FAILED;
        return bt_errf(err, errsz, BT_EINVAL, "%s: %s", w->path ? w->path : "gguf", w->err);
    }
    if (w->state != W_DATA)
        return bt_errf(err, errsz, BT_EINVAL, "%s: gguf_writer_finish called twice", w->path);
    if (w->cur < w->n_t) {
        const struct wtensor *t = &w->t[w->cur];
        w->state = W_FAILED;
        return bt_errf(err, errsz, BT_EINVAL,
                       "%s: tensor '%s' has %" PRIu64 " of %" PRIu64 " bytes written", w->path,
                       gguf_show(sb, sizeof(sb), t->name, strlen(t->name)), w->cur_done, t->nbytes);
    }
    FILE *f = w->f;
    w->f = NULL;
    w->state = W_DONE;
    rc = fflush(f) != 0 ? -1 : 0;
    if (fclose(f) != 0) rc = -1;
    if (rc) {
        w->state = W_FAILED;
        return bt_errf(err, errsz, BT_EIO, "%s: write failed: %s", w->path, strerror(errno));
    }
    return 0;
}
