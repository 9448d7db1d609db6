/* fuzz_gguf: libFuzzer target for the GGUF reader and writer. Opens the input with
 * gguf_open_mem, then walks every kv, every array element and every tensor, touching each
 * tensor's data bytes, so that any index or offset the reader accepted but got wrong shows up
 * under ASan. An input that opens is then copied through the writer (copy_kv, add_tensor, write)
 * into a temporary file, which must read back with the same records and data. Built as a
 * libFuzzer binary with -Dfuzz=true (clang), and linked with replay.c in every build. */
#include "gguf.h"
#include "gguf_write.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static bool same_kv(const struct gguf_kv *a, const struct gguf_kv *b)
{
    if (strcmp(a->key, b->key) || a->type != b->type) return false;
    switch (a->type) {
    case GGUF_TYPE_STRING:
        return a->v.str.len == b->v.str.len && !memcmp(a->v.str.data, b->v.str.data, a->v.str.len);
    case GGUF_TYPE_FLOAT32:
    case GGUF_TYPE_FLOAT64:
        return a->v.f64 == b->v.f64 || (a->v.f64 != a->v.f64 && b->v.f64 != b->v.f64);
    case GGUF_TYPE_ARRAY:
        if (a->arr_type != b->arr_type || a->arr_n != b->arr_n) return false;
        for (uint64_t i = 0; i < a->arr_n && a->arr_type == GGUF_TYPE_STRING; i++) {
            struct gguf_str x, y;
            if (gguf_arr_str(a, i, &x) || gguf_arr_str(b, i, &y) || x.len != y.len ||
                memcmp(x.data, y.data, x.len))
                return false;
        }
        if (a->arr_type != GGUF_TYPE_STRING && a->arr_n) {
            size_t es = a->arr_type == GGUF_TYPE_UINT8 || a->arr_type == GGUF_TYPE_INT8 ||
                                a->arr_type == GGUF_TYPE_BOOL
                            ? 1
                        : a->arr_type == GGUF_TYPE_UINT16 || a->arr_type == GGUF_TYPE_INT16 ? 2
                        : a->arr_type == GGUF_TYPE_UINT32 || a->arr_type == GGUF_TYPE_INT32 ||
                                a->arr_type == GGUF_TYPE_FLOAT32
                            ? 4
                            : 8;
            return !memcmp(a->arr_data, b->arr_data, es * a->arr_n);
        }
        return true;
    default:
        return a->v.u64 == b->v.u64;
    }
}

/* Copy g through the writer into a temporary file and check it reads back the same. */
static void round_trip(const struct gguf *g)
{
    char path[512], err[512];
    const char *dir = getenv("TMPDIR");
    struct gguf_writer *w = gguf_writer_new();
    struct gguf *h = NULL;
    snprintf(path, sizeof(path), "%s/fuzz_gguf.%d.gguf", dir && *dir ? dir : "/tmp", (int)getpid());
    if (!w) __builtin_trap();
    for (int64_t i = 0; i < gguf_n_kv(g); i++)
        if (gguf_writer_copy_kv(w, gguf_kv_at(g, i))) __builtin_trap();
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        if (gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne) != i) __builtin_trap();
    }
    if (gguf_writer_begin(w, path, err, sizeof(err))) goto out; /* e.g. no writable TMPDIR */
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        if (gguf_writer_write(w, (int)i, t->data, t->nbytes)) __builtin_trap();
    }
    if (gguf_writer_finish(w, err, sizeof(err))) __builtin_trap();
    if (gguf_open(path, &h, err, sizeof(err))) __builtin_trap();
    if (gguf_n_kv(h) != gguf_n_kv(g) || gguf_n_tensors(h) != gguf_n_tensors(g) ||
        gguf_alignment(h) != gguf_alignment(g))
        __builtin_trap();
    for (int64_t i = 0; i < gguf_n_kv(g); i++)
        if (!same_kv(gguf_kv_at(g, i), gguf_kv_at(h, i))) __builtin_trap();
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *a = gguf_tensor_at(g, i), *b = gguf_tensor_at(h, i);
        if (strcmp(a->name, b->name) || a->type != b->type || a->n_dims != b->n_dims ||
            memcmp(a->ne, b->ne, sizeof(a->ne)) || a->nbytes != b->nbytes ||
            memcmp(a->data, b->data, a->nbytes))
            __builtin_trap();
    }
out:
    gguf_close(h);
    gguf_writer_free(w);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    struct gguf *g = NULL;
    uint64_t acc = 0;

    if (gguf_open_mem(data, size, "fuzz.gguf", &g, err, sizeof(err)) != 0) {
        /* the error must be one NUL-terminated line naming the input */
        if (strncmp(err, "fuzz.gguf: ", 11) != 0 || strchr(err, '\n')) __builtin_trap();
        return 0;
    }
    acc += gguf_version(g) + gguf_alignment(g) + gguf_data_offset(g) + gguf_identity(g);
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);
        struct gguf_str s;
        uint32_t u32, et;
        int64_t i64;
        uint64_t n;
        double f64;
        float f32;
        bool b;
        if (gguf_find_kv(g, kv->key) != kv) __builtin_trap();
        acc += strlen(kv->key);
        acc += (uint64_t)gguf_get_u32(g, kv->key, &u32) + (uint64_t)gguf_get_i64(g, kv->key, &i64);
        acc += (uint64_t)gguf_get_f32(g, kv->key, &f32) + (uint64_t)gguf_get_bool(g, kv->key, &b);
        if (gguf_get_str(g, kv->key, &s) == 0 && s.len) acc += (uint8_t)s.data[s.len - 1];
        if (gguf_get_arr(g, kv->key, &et, &n) != 0) continue;
        for (uint64_t j = 0; j < n; j++) {
            if (et == GGUF_TYPE_STRING) {
                if (gguf_arr_str(kv, j, &s) != 0) __builtin_trap();
                if (s.len) acc += (uint8_t)s.data[0] + (uint8_t)s.data[s.len - 1];
            } else if (gguf_arr_i64(kv, j, &i64) == 0) {
                acc += (uint64_t)i64;
            } else if (gguf_arr_f64(kv, j, &f64) == 0) {
                acc += f64 > 0;
            }
        }
        if (gguf_arr_str(kv, n, &s) == 0) __builtin_trap();
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        const uint8_t *p = t->data;
        if (gguf_find_tensor(g, t->name) != t) __builtin_trap();
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS || t->nbytes == 0) __builtin_trap();
        if (t->offset % gguf_alignment(g)) __builtin_trap();
        acc += p[0] + p[t->nbytes - 1];
        for (uint64_t k = 0; k < t->nbytes; k += 4096) acc += p[k];
    }
    sink = acc;
    round_trip(g);
    gguf_close(g);
    return 0;
}
