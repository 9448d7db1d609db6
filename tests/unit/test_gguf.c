/* test_gguf: writer -> reader round trips, the real GGUFs in ../shared, a file written by gguf-py
 * (tests/fixtures/gguf, made by tools/oracle/gguf_fixture.py), every malformed-file rule, and
 * truncation at every prefix length. */
#include "gguf.h"
#include "gguf_write.h"
#include "log.h"
#include "quant.h"
#include "t.h"

#include <fcntl.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(n > 0 ? (size_t)n : 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return p;
}

/* ---- a byte builder for hand-made (malformed) files ---- */

struct bb {
    unsigned char *p;
    size_t n, cap;
};

static void bb_put(struct bb *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void bb_u32(struct bb *b, uint32_t v)
{
    bb_put(b, &v, 4);
}

static void bb_u64(struct bb *b, uint64_t v)
{
    bb_put(b, &v, 8);
}

static void bb_str(struct bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}

static void bb_hdr(struct bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    b->n = 0;
    bb_u32(b, GGUF_MAGIC);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}

static void bb_kv_u32(struct bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, GGUF_TYPE_UINT32);
    bb_u32(b, v);
}

static void bb_tensor(struct bb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                      uint32_t type, uint64_t offset)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) bb_u64(b, ne[i]);
    bb_u32(b, type);
    bb_u64(b, offset);
}

static void bb_pad(struct bb *b, size_t align)
{
    while (b->n % align) bb_put(b, "", 1);
}

static void bb_zeros(struct bb *b, size_t n)
{
    while (n--) bb_put(b, "", 1);
}

/* Open b's bytes (in an exactly-sized copy, so ASan sees any over-read) and expect failure with
 * an error naming the file and containing `phrase`. */
static void expect_bad_(struct bb *b, const char *phrase, int line)
{
    char err[1024] = "";
    struct gguf *g = (struct gguf *)1;
    unsigned char *copy = malloc(b->n ? b->n : 1);
    memcpy(copy, b->p, b->n);
    int rc = gguf_open_mem(copy, b->n, "bad.gguf", &g, err, sizeof(err));
    t_checks++;
    if (rc >= 0 || g != NULL || strncmp(err, "bad.gguf: ", 10) != 0 || !strstr(err, phrase)) {
        fprintf(stderr, "test_gguf.c:%d: expected failure with \"%s\", got rc %d, err \"%s\"\n",
                line, phrase, rc, err);
        t_failures++;
    }
    gguf_close(g == (struct gguf *)1 ? NULL : g);
    free(copy);
}
#define expect_bad(b, phrase) expect_bad_(b, phrase, __LINE__)

static struct gguf *open_bb(struct bb *b, char *err, size_t errsz)
{
    struct gguf *g = NULL;
    if (gguf_open_mem(b->p, b->n, "good.gguf", &g, err, errsz) != 0) {
        fprintf(stderr, "unexpected failure: %s\n", err);
        return NULL;
    }
    return g;
}

/* ---- round trip through the writer and the reader ---- */

struct tspec {
    const char *name;
    uint32_t type, n_dims;
    int64_t ne[4];
};

static const struct tspec tensors[] = {
    {"token_embd.weight", BT_F32, 2, {8, 5, 1, 1}},
    {"blk.0.attn_q.weight", BT_Q4_0, 2, {64, 3, 1, 1}},
    {"blk.0.ffn_down.weight", BT_Q8_0, 3, {32, 2, 3, 1}},
    {"blk.0.attn_norm.weight", BT_F16, 1, {7, 1, 1, 1}},
    {"output.weight", BT_Q6_K, 4, {256, 1, 2, 1}},
    {"x", BT_BF16, 1, {3, 1, 1, 1}},
};
#define N_TENSORS (sizeof(tensors) / sizeof(tensors[0]))

static const char str_with_nul[] = "a\0b";
static const struct gguf_str strs[] = {
    {"hello", 5}, {"", 0}, {str_with_nul, 3}, {"\xe2\x96\x81world", 8}, {"", 0},
};

static int build_kv(struct gguf_writer *w, uint32_t alignment)
{
    int rc = 0;
    rc |= gguf_writer_set_str(w, "general.architecture", "llama");
    rc |= gguf_writer_set_u32(w, "llama.block_count", 7);
    rc |= gguf_writer_set_i32(w, "t.i32", -123456);
    rc |= gguf_writer_set_u64(w, "t.u64", 0xfedcba9876543210ull);
    rc |= gguf_writer_set_f32(w, "t.f32", 1e-5f);
    rc |= gguf_writer_set_bool(w, "t.bool", true);
    rc |= gguf_writer_set_bool(w, "t.bool0", false);
    rc |= gguf_writer_set_str(w, "t.empty", "");
    /* scalar types without a setter go through copy_kv */
    struct gguf_kv kv = {.key = "t.u8", .type = GGUF_TYPE_UINT8, .v.u64 = 200};
    rc |= gguf_writer_copy_kv(w, &kv);
    kv = (struct gguf_kv){.key = "t.i8", .type = GGUF_TYPE_INT8, .v.i64 = -100};
    rc |= gguf_writer_copy_kv(w, &kv);
    kv = (struct gguf_kv){.key = "t.u16", .type = GGUF_TYPE_UINT16, .v.u64 = 65535};
    rc |= gguf_writer_copy_kv(w, &kv);
    kv = (struct gguf_kv){.key = "t.i16", .type = GGUF_TYPE_INT16, .v.i64 = -32768};
    rc |= gguf_writer_copy_kv(w, &kv);
    kv = (struct gguf_kv){.key = "t.i64", .type = GGUF_TYPE_INT64, .v.i64 = INT64_MIN};
    rc |= gguf_writer_copy_kv(w, &kv);
    kv = (struct gguf_kv){.key = "t.f64", .type = GGUF_TYPE_FLOAT64, .v.f64 = 3.141592653589793};
    rc |= gguf_writer_copy_kv(w, &kv);

    uint8_t a_u8[] = {0, 1, 255};
    int8_t a_i8[] = {-128, 0, 127};
    uint16_t a_u16[] = {0, 65535};
    int16_t a_i16[] = {-32768, 32767};
    uint32_t a_u32[] = {1, 2, 0xffffffffu};
    int32_t a_i32[] = {-1, INT32_MIN, INT32_MAX};
    float a_f32[] = {0.5f, -2.25f};
    uint8_t a_bool[] = {1, 0, 1};
    uint64_t a_u64[] = {UINT64_MAX, 0};
    int64_t a_i64[] = {INT64_MIN, -1, 5};
    double a_f64[] = {1e300, -0.0};
    rc |= gguf_writer_set_arr(w, "a.u8", GGUF_TYPE_UINT8, a_u8, 3);
    rc |= gguf_writer_set_arr(w, "a.i8", GGUF_TYPE_INT8, a_i8, 3);
    rc |= gguf_writer_set_arr(w, "a.u16", GGUF_TYPE_UINT16, a_u16, 2);
    rc |= gguf_writer_set_arr(w, "a.i16", GGUF_TYPE_INT16, a_i16, 2);
    rc |= gguf_writer_set_arr(w, "a.u32", GGUF_TYPE_UINT32, a_u32, 3);
    rc |= gguf_writer_set_arr(w, "a.i32", GGUF_TYPE_INT32, a_i32, 3);
    rc |= gguf_writer_set_arr(w, "a.f32", GGUF_TYPE_FLOAT32, a_f32, 2);
    rc |= gguf_writer_set_arr(w, "a.bool", GGUF_TYPE_BOOL, a_bool, 3);
    rc |= gguf_writer_set_arr(w, "a.u64", GGUF_TYPE_UINT64, a_u64, 2);
    rc |= gguf_writer_set_arr(w, "a.i64", GGUF_TYPE_INT64, a_i64, 3);
    rc |= gguf_writer_set_arr(w, "a.f64", GGUF_TYPE_FLOAT64, a_f64, 2);
    rc |= gguf_writer_set_arr(w, "a.empty", GGUF_TYPE_INT32, NULL, 0);
    rc |= gguf_writer_set_arr_str(w, "a.str", strs, sizeof(strs) / sizeof(strs[0]));
    rc |= gguf_writer_set_arr_str(w, "a.str_empty", NULL, 0);
    /* replacing a key keeps one record with the new value */
    rc |= gguf_writer_set_u32(w, "llama.block_count", 3);
    if (alignment) rc |= gguf_writer_set_u32(w, "general.alignment", alignment);
    return rc;
}

static void fill_tensor(unsigned char *p, size_t n, int idx)
{
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 31 + (size_t)idx * 7 + (i >> 8));
}

/* Write the round-trip file; data goes in chunks of `chunk` bytes. */
static int write_rt(const char *path, uint32_t alignment, size_t chunk)
{
    char err[512];
    int rc = -1;
    struct gguf_writer *w = gguf_writer_new();
    if (!w || build_kv(w, alignment) != 0) goto fail;
    for (size_t i = 0; i < N_TENSORS; i++)
        if (gguf_writer_add_tensor(w, tensors[i].name, tensors[i].type, tensors[i].n_dims,
                                   tensors[i].ne) != (int)i)
            goto fail;
    if (gguf_writer_begin(w, path, err, sizeof(err))) goto fail;
    for (size_t i = 0; i < N_TENSORS; i++) {
        size_t n = bt_row_size(tensors[i].type, tensors[i].ne[0]) *
                   (size_t)(tensors[i].ne[1] * tensors[i].ne[2] * tensors[i].ne[3]);
        unsigned char *d = malloc(n);
        fill_tensor(d, n, (int)i);
        for (size_t o = 0; o < n; o += chunk)
            if (gguf_writer_write(w, (int)i, d + o, n - o < chunk ? n - o : chunk)) {
                free(d);
                goto fail;
            }
        free(d);
    }
    if (gguf_writer_finish(w, err, sizeof(err))) goto fail;
    rc = 0;
fail:
    if (rc) fprintf(stderr, "write_rt: %s\n", gguf_writer_error(w) ? gguf_writer_error(w) : err);
    gguf_writer_free(w);
    return rc;
}

static void check_rt(const char *path, uint32_t alignment)
{
    char err[512];
    struct gguf *g = NULL;
    int rc = gguf_open(path, &g, err, sizeof(err));
    CHECK_INT(rc, 0);
    if (rc) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f32;
    double f64;
    bool b;
    struct gguf_str s;

    CHECK_INT(gguf_version(g), 3);
    CHECK_INT(gguf_alignment(g), alignment ? alignment : 32);
    CHECK_INT(gguf_data_offset(g) % gguf_alignment(g), 0);
    CHECK_INT(gguf_n_kv(g), 28 + (alignment ? 1 : 0));
    CHECK_INT(gguf_get_str(g, "general.architecture", &s), 0);
    CHECK(s.len == 5 && !memcmp(s.data, "llama", 5));
    CHECK_INT(gguf_get_u32(g, "llama.block_count", &u32), 0);
    CHECK_INT(u32, 3);
    CHECK_INT(gguf_find_kv(g, "llama.block_count")->type, GGUF_TYPE_UINT32);
    /* replaced key keeps its first position */
    CHECK_STR(gguf_kv_at(g, 1)->key, "llama.block_count");
    CHECK_INT(gguf_get_i32(g, "t.i32", &i32), 0);
    CHECK_INT(i32, -123456);
    CHECK_INT(gguf_get_u64(g, "t.u64", &u64), 0);
    CHECK(u64 == 0xfedcba9876543210ull);
    CHECK_INT(gguf_get_f32(g, "t.f32", &f32), 0);
    CHECK(f32 == 1e-5f);
    CHECK_INT(gguf_get_bool(g, "t.bool", &b), 0);
    CHECK(b == true);
    CHECK_INT(gguf_get_bool(g, "t.bool0", &b), 0);
    CHECK(b == false);
    CHECK_INT(gguf_get_str(g, "t.empty", &s), 0);
    CHECK_INT(s.len, 0);
    CHECK_INT(gguf_get_u32(g, "t.u8", &u32), 0);
    CHECK_INT(u32, 200);
    CHECK_INT(gguf_find_kv(g, "t.u8")->type, GGUF_TYPE_UINT8);
    CHECK_INT(gguf_get_i32(g, "t.i8", &i32), 0);
    CHECK_INT(i32, -100);
    CHECK_INT(gguf_get_u32(g, "t.u16", &u32), 0);
    CHECK_INT(u32, 65535);
    CHECK_INT(gguf_get_i32(g, "t.i16", &i32), 0);
    CHECK_INT(i32, -32768);
    CHECK_INT(gguf_get_i64(g, "t.i64", &i64), 0);
    CHECK(i64 == INT64_MIN);
    CHECK_INT(gguf_get_f64(g, "t.f64", &f64), 0);
    CHECK(f64 == 3.141592653589793);

    /* conversions and refusals; the output stays untouched on failure */
    u32 = 77;
    CHECK_INT(gguf_get_u32(g, "t.i32", &u32), BT_EFORMAT); /* negative */
    CHECK_INT(gguf_get_u32(g, "t.u64", &u32), BT_EFORMAT); /* too large */
    CHECK_INT(gguf_get_u32(g, "t.f32", &u32), BT_EFORMAT);
    CHECK_INT(gguf_get_u32(g, "t.bool", &u32), BT_EFORMAT);
    CHECK_INT(gguf_get_u32(g, "missing.key", &u32), BT_ENOTFOUND);
    CHECK_INT(u32, 77);
    CHECK_INT(gguf_get_i64(g, "t.u64", &i64), BT_EFORMAT); /* > INT64_MAX */
    CHECK_INT(gguf_get_i32(g, "t.i64", &i32), BT_EFORMAT);
    CHECK_INT(gguf_get_u64(g, "t.u8", &u64), 0);
    CHECK_INT(u64, 200);
    CHECK_INT(gguf_get_i64(g, "t.u16", &i64), 0);
    CHECK_INT(i64, 65535);
    CHECK_INT(gguf_get_f32(g, "t.f64", &f32), 0);
    CHECK_NEAR(f32, 3.14159265, 1e-6);
    CHECK_INT(gguf_get_f32(g, "t.i32", &f32), BT_EFORMAT);
    CHECK_INT(gguf_get_bool(g, "t.u8", &b), BT_EFORMAT);
    CHECK_INT(gguf_get_str(g, "t.u8", &s), BT_EFORMAT);
    uint32_t et;
    CHECK_INT(gguf_get_arr(g, "t.u8", &et, &u64), BT_EFORMAT);

    /* arrays */
    static const struct {
        const char *key;
        uint32_t type;
        uint64_t n;
        int64_t first, last;
    } arrs[] = {
        {"a.u8", GGUF_TYPE_UINT8, 3, 0, 255},
        {"a.i8", GGUF_TYPE_INT8, 3, -128, 127},
        {"a.u16", GGUF_TYPE_UINT16, 2, 0, 65535},
        {"a.i16", GGUF_TYPE_INT16, 2, -32768, 32767},
        {"a.u32", GGUF_TYPE_UINT32, 3, 1, 0xffffffffll},
        {"a.i32", GGUF_TYPE_INT32, 3, -1, INT32_MAX},
        {"a.bool", GGUF_TYPE_BOOL, 3, 1, 1},
        {"a.i64", GGUF_TYPE_INT64, 3, INT64_MIN, 5},
    };
    for (size_t i = 0; i < sizeof(arrs) / sizeof(arrs[0]); i++) {
        const struct gguf_kv *kv = gguf_find_kv(g, arrs[i].key);
        CHECK(kv != NULL);
        if (!kv) continue;
        CHECK_INT(gguf_get_arr(g, arrs[i].key, &et, &u64), 0);
        CHECK_INT(et, arrs[i].type);
        CHECK_INT(u64, arrs[i].n);
        CHECK_INT(gguf_arr_i64(kv, 0, &i64), 0);
        CHECK(i64 == arrs[i].first);
        CHECK_INT(gguf_arr_i64(kv, arrs[i].n - 1, &i64), 0);
        CHECK(i64 == arrs[i].last);
        CHECK_INT(gguf_arr_i64(kv, arrs[i].n, &i64), BT_EINVAL);
        CHECK_INT(gguf_arr_f64(kv, 0, &f64), BT_EFORMAT);
        CHECK_INT(gguf_arr_str(kv, 0, &s), BT_EFORMAT);
    }
    const struct gguf_kv *kv = gguf_find_kv(g, "a.i32");
    CHECK(kv && gguf_arr_i64(kv, 1, &i64) == 0 && i64 == INT32_MIN);
    kv = gguf_find_kv(g, "a.u64");
    CHECK(kv && gguf_arr_i64(kv, 0, &i64) == BT_EFORMAT); /* UINT64_MAX does not fit */
    CHECK(kv && gguf_arr_i64(kv, 1, &i64) == 0 && i64 == 0);
    kv = gguf_find_kv(g, "a.f32");
    CHECK(kv && gguf_arr_f64(kv, 1, &f64) == 0 && f64 == -2.25);
    CHECK(kv && gguf_arr_i64(kv, 0, &i64) == BT_EFORMAT);
    kv = gguf_find_kv(g, "a.f64");
    CHECK(kv && gguf_arr_f64(kv, 0, &f64) == 0 && f64 == 1e300);
    CHECK(kv && gguf_arr_f64(kv, 1, &f64) == 0 && f64 == 0 && signbit(f64));
    CHECK_INT(gguf_get_arr(g, "a.empty", &et, &u64), 0);
    CHECK_INT(et, GGUF_TYPE_INT32);
    CHECK_INT(u64, 0);
    CHECK_INT(gguf_get_arr(g, "a.str_empty", &et, &u64), 0);
    CHECK_INT(et, GGUF_TYPE_STRING);
    CHECK_INT(u64, 0);
    kv = gguf_find_kv(g, "a.str");
    CHECK(kv != NULL);
    if (kv) {
        CHECK_INT(kv->arr_n, sizeof(strs) / sizeof(strs[0]));
        for (uint64_t i = 0; i < kv->arr_n; i++) {
            CHECK_INT(gguf_arr_str(kv, i, &s), 0);
            CHECK(s.len == strs[i].len && !memcmp(s.data, strs[i].data, s.len));
        }
        CHECK_INT(gguf_arr_str(kv, kv->arr_n, &s), BT_EINVAL);
        CHECK_INT(gguf_arr_i64(kv, 0, &i64), BT_EFORMAT);
    }

    /* tensors */
    CHECK_INT(gguf_n_tensors(g), N_TENSORS);
    uint64_t end = 0;
    for (size_t i = 0; i < N_TENSORS; i++) {
        const struct gguf_tensor *t = gguf_find_tensor(g, tensors[i].name);
        CHECK(t != NULL && t == gguf_tensor_at(g, (int64_t)i));
        if (!t) continue;
        CHECK_STR(t->name, tensors[i].name);
        CHECK_INT(t->type, tensors[i].type);
        CHECK_INT(t->n_dims, tensors[i].n_dims);
        for (int d = 0; d < 4; d++) CHECK_INT(t->ne[d], tensors[i].ne[d]);
        size_t n = bt_row_size(tensors[i].type, tensors[i].ne[0]) *
                   (size_t)(tensors[i].ne[1] * tensors[i].ne[2] * tensors[i].ne[3]);
        CHECK_INT(t->nbytes, n);
        CHECK_INT(t->offset % gguf_alignment(g), 0);
        CHECK(t->offset >= end); /* in order, no overlap */
        end = t->offset + t->nbytes;
        CHECK((const unsigned char *)t->data ==
              (const unsigned char *)gguf_tensor_at(g, 0)->data + t->offset);
        unsigned char *want = malloc(n);
        fill_tensor(want, n, (int)i);
        CHECK(memcmp(t->data, want, n) == 0);
        free(want);
    }
    /* the last tensor is padded to the alignment too */
    CHECK_INT(gguf_file_size(g), gguf_data_offset(g) + (end + gguf_alignment(g) - 1) /
                                                           gguf_alignment(g) * gguf_alignment(g));
    CHECK(gguf_find_tensor(g, "nope") == NULL);
    CHECK(gguf_find_kv(g, "nope") == NULL);
    CHECK(gguf_kv_at(g, gguf_n_kv(g)) == NULL);
    CHECK(gguf_tensor_at(g, -1) == NULL);

    /* re-writing everything through copy_kv gives the same bytes */
    {
        char err2[512];
        const char *p2 = tmp_path("copy.gguf");
        struct gguf_writer *w = gguf_writer_new();
        int ok = 1;
        for (int64_t i = 0; i < gguf_n_kv(g); i++)
            ok &= gguf_writer_copy_kv(w, gguf_kv_at(g, i)) == 0;
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
            const struct gguf_tensor *t = gguf_tensor_at(g, i);
            ok &= gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne) == i;
        }
        ok &= gguf_writer_begin(w, p2, err2, sizeof(err2)) == 0;
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
            const struct gguf_tensor *t = gguf_tensor_at(g, i);
            ok &= gguf_writer_write(w, (int)i, t->data, t->nbytes) == 0;
        }
        ok &= gguf_writer_finish(w, err2, sizeof(err2)) == 0;
        gguf_writer_free(w);
        CHECK(ok);
        size_t n1, n2;
        unsigned char *b1 = read_file(path, &n1), *b2 = read_file(p2, &n2);
        CHECK(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0);
        free(b1);
        free(b2);
    }
    gguf_close(g);
}

static void test_round_trip(void)
{
    const char *p = tmp_path("rt.gguf");
    CHECK_INT(write_rt(p, 0, 1000), 0);
    check_rt(p, 0);
    uint64_t id1 = 0, id2 = 0;
    struct gguf *g = NULL;
    char err[256];
    if (gguf_open(p, &g, err, sizeof(err)) == 0) id1 = gguf_identity(g);
    gguf_close(g);
    /* same content written in other chunk sizes: byte-identical, same identity */
    const char *p2 = tmp_path("rt2.gguf");
    CHECK_INT(write_rt(p2, 0, 7), 0);
    size_t n1, n2;
    unsigned char *b1 = read_file(p, &n1), *b2 = read_file(p2, &n2);
    CHECK(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0);
    g = NULL;
    if (gguf_open(p2, &g, err, sizeof(err)) == 0) id2 = gguf_identity(g);
    gguf_close(g);
    CHECK(id1 != 0 && id1 == id2);
    /* the identity changes with a metadata byte and with the file size */
    if (b1) {
        b1[40] ^= 1; /* inside the first key */
        g = NULL;
        CHECK_INT(gguf_open_mem(b1, n1, "m", &g, err, sizeof(err)), 0);
        if (g) CHECK(gguf_identity(g) != id1);
        gguf_close(g);
        b1[40] ^= 1;
        g = NULL;
        CHECK_INT(gguf_open_mem(b1, n1, "m", &g, err, sizeof(err)), 0);
        if (g) CHECK(gguf_identity(g) == id1);
        gguf_close(g);
    }
    free(b1);
    free(b2);
    /* a larger alignment */
    const char *p3 = tmp_path("rt64.gguf");
    CHECK_INT(write_rt(p3, 64, 4096), 0);
    check_rt(p3, 64);
}

/* ---- writer misuse ---- */

static void test_writer_errors(void)
{
    char err[512] = "";
    int64_t ne[4] = {33, 2, 1, 1};
    struct gguf_writer *w = gguf_writer_new();
    CHECK(gguf_writer_error(w) == NULL);
    CHECK(gguf_writer_add_tensor(w, "q", BT_Q4_0, 2, ne) < 0); /* 33 % 32 */
    CHECK(strstr(gguf_writer_error(w) ? gguf_writer_error(w) : "", "block size 32") != NULL);
    gguf_writer_free(w);

    w = gguf_writer_new();
    ne[0] = 32;
    CHECK_INT(gguf_writer_add_tensor(w, "a", BT_Q4_0, 2, ne), 0);
    CHECK(gguf_writer_add_tensor(w, "a", BT_F32, 1, ne) < 0);
    CHECK(strstr(gguf_writer_error(w), "duplicate tensor name 'a'") != NULL);
    gguf_writer_free(w);

    w = gguf_writer_new();
    CHECK(gguf_writer_add_tensor(w, "", BT_F32, 1, ne) < 0);
    gguf_writer_free(w);
    w = gguf_writer_new();
    CHECK(gguf_writer_add_tensor(w, "t", 4, 1, ne) < 0); /* type id 4 is not defined */
    gguf_writer_free(w);
    w = gguf_writer_new();
    CHECK(gguf_writer_add_tensor(w, "t", BT_F32, 5, ne) < 0);
    gguf_writer_free(w);
    w = gguf_writer_new();
    CHECK(gguf_writer_set_u32(w, "general.alignment", 48) < 0);
    CHECK(gguf_writer_set_u64(w, "general.alignment", 64) < 0);
    CHECK(gguf_writer_set_u32(w, "", 1) < 0);
    /* the first error is reported by begin, which creates no file */
    CHECK(gguf_writer_begin(w, tmp_path("never.gguf"), err, sizeof(err)) < 0);
    CHECK(strstr(err, "never.gguf: ") && strstr(err, "general.alignment"));
    CHECK(access(tmp_path("never.gguf"), F_OK) != 0);
    gguf_writer_free(w);

    /* data in the wrong order, too much data, missing data */
    w = gguf_writer_new();
    ne[0] = 4;
    CHECK_INT(gguf_writer_add_tensor(w, "a", BT_F32, 1, ne), 0);
    CHECK_INT(gguf_writer_add_tensor(w, "b", BT_F32, 1, ne), 1);
    CHECK_INT(gguf_writer_begin(w, tmp_path("partial.gguf"), err, sizeof(err)), 0);
    float d[8] = {0};
    CHECK(gguf_writer_set_u32(w, "late", 1) < 0);
    gguf_writer_free(w);

    w = gguf_writer_new();
    CHECK_INT(gguf_writer_add_tensor(w, "a", BT_F32, 1, ne), 0);
    CHECK_INT(gguf_writer_add_tensor(w, "b", BT_F32, 1, ne), 1);
    CHECK_INT(gguf_writer_begin(w, tmp_path("partial.gguf"), err, sizeof(err)), 0);
    CHECK(gguf_writer_write(w, 1, d, 16) < 0);
    gguf_writer_free(w);

    w = gguf_writer_new();
    CHECK_INT(gguf_writer_add_tensor(w, "a", BT_F32, 1, ne), 0);
    CHECK_INT(gguf_writer_begin(w, tmp_path("partial.gguf"), err, sizeof(err)), 0);
    CHECK(gguf_writer_write(w, 0, d, 20) < 0);
    gguf_writer_free(w);

    w = gguf_writer_new();
    CHECK_INT(gguf_writer_add_tensor(w, "a", BT_F32, 1, ne), 0);
    CHECK_INT(gguf_writer_add_tensor(w, "b", BT_F32, 1, ne), 1);
    CHECK_INT(gguf_writer_begin(w, tmp_path("partial.gguf"), err, sizeof(err)), 0);
    CHECK_INT(gguf_writer_write(w, 0, d, 16), 0);
    CHECK_INT(gguf_writer_write(w, 1, d, 8), 0);
    CHECK(gguf_writer_finish(w, err, sizeof(err)) < 0);
    CHECK(strstr(err, "tensor 'b' has 8 of 16 bytes written") != NULL);
    gguf_writer_free(w);
    /* the partial file is not a valid GGUF: b's data is past the end */
    struct gguf *g = NULL;
    CHECK(gguf_open(tmp_path("partial.gguf"), &g, err, sizeof(err)) < 0);
    CHECK(strstr(err, "is past the end of the file") != NULL);

    w = gguf_writer_new();
    CHECK(gguf_writer_begin(w, "/nonexistent-dir/x.gguf", err, sizeof(err)) < 0);
    CHECK(strstr(err, "/nonexistent-dir/x.gguf: cannot create") != NULL);
    gguf_writer_free(w);
    gguf_writer_free(NULL);
    gguf_close(NULL);
}

/* ---- real files ---- */

static void test_stories(void)
{
    char err[512];
    struct gguf *g = NULL;
    const char *p = t_path("BATON_SHARED", "models/stories260K.gguf");
    int rc = gguf_open(p, &g, err, sizeof(err));
    CHECK_INT(rc, 0);
    if (rc) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    struct gguf_str s;
    uint32_t u32, et;
    uint64_t n;
    CHECK_INT(gguf_version(g), 3);
    CHECK_INT(gguf_n_tensors(g), 48);
    CHECK_INT(gguf_n_kv(g), 19);
    CHECK_INT(gguf_data_offset(g), 14176);
    CHECK_INT(gguf_file_size(g), 1185376);
    CHECK_INT(gguf_get_str(g, "general.architecture", &s), 0);
    CHECK(s.len == 5 && !memcmp(s.data, "llama", 5));
    CHECK_INT(gguf_get_u32(g, "llama.block_count", &u32), 0);
    CHECK_INT(u32, 5);
    CHECK_INT(gguf_get_u32(g, "llama.embedding_length", &u32), 0);
    CHECK_INT(u32, 64);
    CHECK_INT(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n), 0);
    CHECK_INT(et, GGUF_TYPE_STRING);
    CHECK_INT(n, 512);
    const struct gguf_kv *kv = gguf_find_kv(g, "tokenizer.ggml.tokens");
    CHECK(kv && gguf_arr_str(kv, 0, &s) == 0 && s.len == 5 && !memcmp(s.data, "<unk>", 5));
    CHECK(kv && gguf_arr_str(kv, 1, &s) == 0 && s.len == 3 && !memcmp(s.data, "<s>", 3));
    const struct gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
    CHECK(t != NULL);
    if (t) {
        CHECK_INT(t->type, BT_F32);
        CHECK_INT(t->ne[0], 64);
        CHECK_INT(t->ne[1], 512);
    }
    uint64_t total = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) total += gguf_tensor_at(g, i)->nbytes;
    CHECK(total > 1000000 && total <= gguf_file_size(g) - gguf_data_offset(g));
    gguf_close(g);
}

static void test_vocabs(void)
{
    static const struct {
        const char *file, *model;
        uint64_t n_tokens;
    } v[] = {
        {"ggml-vocab-llama-spm.gguf", "llama", 32000},
        {"ggml-vocab-gpt-2.gguf", "gpt2", 50257},
        {"ggml-vocab-deepseek-llm.gguf", "gpt2", 102400},
        {"ggml-vocab-falcon.gguf", "gpt2", 65024},
        {"ggml-vocab-phi-3.gguf", "llama", 32064},
        {"ggml-vocab-starcoder.gguf", "gpt2", 49152},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char rel[256], err[512];
        struct gguf *g = NULL;
        snprintf(rel, sizeof(rel), "models/vocab/%s", v[i].file);
        int rc = gguf_open(t_path("BATON_SHARED", rel), &g, err, sizeof(err));
        CHECK_INT(rc, 0);
        if (rc) {
            fprintf(stderr, "%s\n", err);
            continue;
        }
        struct gguf_str s;
        uint32_t et;
        uint64_t n;
        CHECK_INT(gguf_n_tensors(g), 0);
        CHECK_INT(gguf_get_str(g, "tokenizer.ggml.model", &s), 0);
        CHECK(s.len == strlen(v[i].model) && !memcmp(s.data, v[i].model, s.len));
        CHECK_INT(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n), 0);
        CHECK_INT(n, v[i].n_tokens);
        const struct gguf_kv *kv = gguf_find_kv(g, "tokenizer.ggml.tokens");
        uint64_t total = 0;
        for (uint64_t j = 0; kv && j < kv->arr_n; j++)
            if (gguf_arr_str(kv, j, &s) == 0) total += s.len;
        CHECK(total > n && total < gguf_file_size(g));
        gguf_close(g);
    }
}

/* A file written by gguf-py's GGUFWriter (tools/oracle/gguf_fixture.py): read it, and check our
 * writer produces the same bytes from the same content. */
static void test_gguf_py_fixture(void)
{
    char err[512];
    struct gguf *g = NULL;
    const char *p = t_path("BATON_SRC", "tests/fixtures/gguf/gguf_py.bin");
    int rc = gguf_open(p, &g, err, sizeof(err));
    CHECK_INT(rc, 0);
    if (rc) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    struct gguf_str s;
    uint32_t u32;
    int32_t i32;
    float f32;
    bool b;
    CHECK_INT(gguf_get_str(g, "general.architecture", &s), 0);
    CHECK(s.len == 5 && !memcmp(s.data, "llama", 5));
    CHECK_INT(gguf_get_u32(g, "t.u32", &u32), 0);
    CHECK_INT(u32, 4000000000u);
    CHECK_INT(gguf_get_i32(g, "t.i32", &i32), 0);
    CHECK_INT(i32, -7);
    CHECK_INT(gguf_get_f32(g, "t.f32", &f32), 0);
    CHECK(f32 == 0.25f);
    CHECK_INT(gguf_get_bool(g, "t.bool", &b), 0);
    CHECK(b);
    const struct gguf_kv *kv = gguf_find_kv(g, "t.strs");
    CHECK(kv && kv->arr_n == 3);
    CHECK(kv && gguf_arr_str(kv, 1, &s) == 0 && s.len == 0);
    CHECK(kv && gguf_arr_str(kv, 2, &s) == 0 && s.len == 3 && !memcmp(s.data, "x\0y", 3));
    kv = gguf_find_kv(g, "t.i32s");
    int64_t i64;
    CHECK(kv && kv->arr_n == 3 && gguf_arr_i64(kv, 2, &i64) == 0 && i64 == -3);
    CHECK_INT(gguf_n_tensors(g), 2);
    const struct gguf_tensor *t = gguf_find_tensor(g, "w");
    CHECK(t && t->type == BT_F32 && t->ne[0] == 4 && t->ne[1] == 3);
    if (t) {
        float want[12];
        for (int i = 0; i < 12; i++) want[i] = (float)i * 0.5f;
        CHECK(memcmp(t->data, want, sizeof(want)) == 0);
    }
    t = gguf_find_tensor(g, "q");
    CHECK(t && t->type == BT_Q8_0 && t->ne[0] == 64 && t->ne[1] == 2 && t->nbytes == 136);

    /* the same content through our writer */
    const char *p2 = tmp_path("py_same.gguf");
    struct gguf_writer *w = gguf_writer_new();
    int ok = 1;
    for (int64_t i = 0; i < gguf_n_kv(g); i++) ok &= gguf_writer_copy_kv(w, gguf_kv_at(g, i)) == 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        t = gguf_tensor_at(g, i);
        ok &= gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne) == i;
    }
    ok &= gguf_writer_begin(w, p2, err, sizeof(err)) == 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        t = gguf_tensor_at(g, i);
        ok &= gguf_writer_write(w, (int)i, t->data, t->nbytes) == 0;
    }
    ok &= gguf_writer_finish(w, err, sizeof(err)) == 0;
    gguf_writer_free(w);
    CHECK(ok);
    size_t n1, n2;
    unsigned char *b1 = read_file(p, &n1), *b2 = read_file(p2, &n2);
    CHECK(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0);
    free(b1);
    free(b2);
    gguf_close(g);
}

/* ---- malformed files: each rule, one check ---- */

static void test_malformed(void)
{
    struct bb b = {0};
    char err[1024];
    uint64_t ne2[2] = {32, 2};

    b.n = 0;
    bb_u32(&b, GGUF_MAGIC);
    expect_bad(&b, "truncated: version at offset 4");
    b.n = 0;
    expect_bad(&b, "truncated: magic");
    bb_hdr(&b, 3, 0, 0);
    b.p[0] = 'X';
    expect_bad(&b, "bad magic");
    bb_hdr(&b, 1, 0, 0);
    expect_bad(&b, "GGUF version 1 is not supported");
    bb_hdr(&b, 4, 0, 0);
    expect_bad(&b, "unsupported GGUF version 4");
    bb_hdr(&b, 0x03000000, 0, 0);
    expect_bad(&b, "big-endian");
    bb_hdr(&b, 3, 0, 0);
    b.n -= 4;
    expect_bad(&b, "truncated: metadata count");

    /* a minimal valid file: v2 and v3 */
    bb_hdr(&b, 2, 0, 0);
    struct gguf *g = open_bb(&b, err, sizeof(err));
    CHECK(g && gguf_version(g) == 2 && gguf_n_kv(g) == 0);
    gguf_close(g);

    /* counts that cannot fit */
    bb_hdr(&b, 3, 0, 1000000);
    bb_kv_u32(&b, "a", 1);
    expect_bad(&b, "n_kv 1000000 cannot fit in the remaining 17 bytes");
    bb_hdr(&b, 3, UINT64_MAX, 0);
    expect_bad(&b, "n_tensors 18446744073709551615 cannot fit");
    bb_hdr(&b, 3, 2, 1);
    bb_kv_u32(&b, "a", 1);
    bb_zeros(&b, 40);
    expect_bad(&b, "n_tensors 2 cannot fit in the remaining 57 bytes");

    /* strings */
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 1ull << 40);
    bb_put(&b, "key", 3);
    bb_zeros(&b, 8);
    expect_bad(&b, "key #0 at offset 24: string length 1099511627776 does not fit");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, UINT64_MAX);
    bb_put(&b, "abc", 3);
    expect_bad(&b,
               "value of key 'k' at offset 37: string length 18446744073709551615 does not fit");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "");
    bb_u32(&b, GGUF_TYPE_UINT8);
    bb_zeros(&b, 2);
    expect_bad(&b, "key #0 at offset 24 is empty");
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 65536);
    for (int i = 0; i < 65536; i++) bb_put(&b, "k", 1);
    bb_u32(&b, GGUF_TYPE_UINT8);
    bb_zeros(&b, 1);
    expect_bad(&b, "key #0 at offset 24 is 65536 bytes long (the limit is 65535)");
    b.n = 0; /* 65535 is fine */
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 65535);
    for (int i = 0; i < 65535; i++) bb_put(&b, "k", 1);
    bb_u32(&b, GGUF_TYPE_UINT8);
    bb_zeros(&b, 1);
    g = open_bb(&b, err, sizeof(err));
    CHECK(g && strlen(gguf_kv_at(g, 0)->key) == 65535);
    gguf_close(g);
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_u32(&b, GGUF_TYPE_UINT8);
    bb_zeros(&b, 1);
    expect_bad(&b, "key #0 'a\\x00b' contains a NUL byte");

    /* value types */
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, 13);
    bb_zeros(&b, 8);
    expect_bad(&b, "key 'k': unknown value type 13");
    bb_hdr(&b, 3, 0, 2);
    bb_kv_u32(&b, "k", 1);
    bb_kv_u32(&b, "k", 2);
    expect_bad(&b, "duplicate key 'k'");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_TYPE_UINT64);
    bb_zeros(&b, 7);
    expect_bad(&b, "truncated: value of key 'k' at offset 37 needs 8 bytes, 7 left");

    /* arrays */
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u64(&b, 1);
    bb_u32(&b, GGUF_TYPE_UINT8);
    bb_u64(&b, 1);
    bb_zeros(&b, 1);
    expect_bad(&b, "key 'arr': nested arrays are not supported");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, 99);
    bb_u64(&b, 1);
    bb_zeros(&b, 8);
    expect_bad(&b, "key 'arr': unknown array element type 99");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_UINT32);
    bb_u64(&b, 3);
    bb_zeros(&b, 11);
    expect_bad(&b, "key 'arr': array of 3 u32 elements does not fit in the remaining 11 bytes");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_UINT64);
    bb_u64(&b, 1ull << 61); /* * 8 wraps to 0 */
    expect_bad(&b, "array of 2305843009213693952 u64 elements does not fit");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, 1ull << 60);
    bb_zeros(&b, 64);
    expect_bad(&b, "key 'arr': array of 1152921504606846976 strings does not fit");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, 2);
    bb_str(&b, "ok");
    bb_u64(&b, 100);
    bb_zeros(&b, 10);
    expect_bad(&b, "string 1 of key 'arr' at offset 61: string length 100 does not fit");

    /* alignment */
    bb_hdr(&b, 3, 0, 1);
    bb_kv_u32(&b, "general.alignment", 0);
    expect_bad(&b, "general.alignment 0 is not a non-zero power of two");
    bb_hdr(&b, 3, 0, 1);
    bb_kv_u32(&b, "general.alignment", 48);
    expect_bad(&b, "general.alignment 48 is not a non-zero power of two");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, GGUF_TYPE_UINT64);
    bb_u64(&b, 64);
    expect_bad(&b, "general.alignment has type u64 (expected u32)");

    /* tensor infos */
    uint64_t ne[4] = {32, 2, 1, 1};
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 0, ne, BT_F32, 0);
    bb_zeros(&b, 64);
    expect_bad(&b, "tensor 't': n_dims 0 is out of range 1..4");
    bb_hdr(&b, 3, 1, 0);
    bb_str(&b, "t");
    bb_u32(&b, 5);
    bb_zeros(&b, 80);
    expect_bad(&b, "tensor 't': n_dims 5 is out of range 1..4");
    ne[1] = 0;
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, ne, BT_F32, 0);
    bb_zeros(&b, 64);
    expect_bad(&b, "tensor 't': dimension 1 is 0 (must be > 0)");
    ne[1] = (uint64_t)-5;
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, ne, BT_F32, 0);
    bb_zeros(&b, 64);
    expect_bad(&b, "tensor 't': dimension 1 is -5 (must be > 0)");
    uint64_t big[4] = {1ull << 32, 1ull << 31, 4, 1};
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 3, big, BT_F32, 0);
    bb_zeros(&b, 64);
    expect_bad(&b, "tensor 't': element count overflows");
    uint64_t big2[4] = {1ull << 32, 1ull << 30, 1, 1}; /* 2^62 elements fit, 2^64 bytes do not */
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, big2, BT_F32, 0);
    bb_zeros(&b, 64);
    expect_bad(&b, "tensor 't': byte size overflows");
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, big2, BT_Q4_0, 0); /* fits in u64, but not in the file */
    bb_zeros(&b, 64);
    expect_bad(&b, "is past the end of the file");
    ne[0] = 33;
    ne[1] = 2;
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, ne, BT_Q4_0, 0);
    bb_zeros(&b, 64);
    expect_bad(&b, "tensor 't': ne[0] = 33 is not a multiple of the q4_0 block size 32");
    ne[0] = 32;
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, ne, 4, 0); /* the removed Q4_2 */
    bb_zeros(&b, 64);
    expect_bad(&b, "tensor 't': unknown ggml type 4");
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, ne, 0xffffffffu, 0);
    bb_zeros(&b, 64);
    expect_bad(&b, "tensor 't': unknown ggml type 4294967295");
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, ne, BT_F32, 16);
    bb_pad(&b, 32);
    bb_zeros(&b, 512);
    expect_bad(&b, "tensor 't': data offset 16 is not a multiple of the alignment 32");
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "", 2, ne, BT_F32, 0);
    bb_zeros(&b, 512);
    expect_bad(&b, "tensor name #0 at offset 24 is empty");
    bb_hdr(&b, 3, 1, 0);
    bb_u64(&b, 70000);
    bb_zeros(&b, 70100);
    expect_bad(&b, "tensor name #0 at offset 24 is 70000 bytes long (the limit is 65535)");
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, ne, BT_F32, 0);
    b.n -= 3;
    expect_bad(&b, "truncated: data offset of tensor 't' at offset");

    /* placement: data past EOF, overlaps, duplicates */
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, ne, BT_F32, 0); /* 256 bytes */
    bb_pad(&b, 32);
    size_t data_at = b.n;
    bb_zeros(&b, 255);
    expect_bad(&b, "tensor 't' data [");
    char want[128];
    snprintf(want, sizeof(want), "data [%zu, %zu) is past the end of the file (size %zu)", data_at,
             data_at + 256, b.n);
    expect_bad(&b, want);
    bb_zeros(&b, 1); /* exactly enough */
    g = open_bb(&b, err, sizeof(err));
    CHECK(g && gguf_find_tensor(g, "t") && gguf_find_tensor(g, "t")->nbytes == 256);
    gguf_close(g);
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, ne, BT_F32, 1ull << 63);
    bb_pad(&b, 32);
    bb_zeros(&b, 256);
    expect_bad(&b, "tensor 't' data [9223372036854775904, 9223372036854776160) is past the end");
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, ne, BT_F32, UINT64_MAX - 31); /* the absolute offset wraps */
    bb_pad(&b, 32);
    bb_zeros(&b, 256);
    expect_bad(&b, "tensor 't' data at offset 18446744073709551584 + 256 of the data section (at "
                   "96) is past the end of the file (size 352)");
    bb_hdr(&b, 3, 1, 0);
    bb_tensor(&b, "t", 2, ne, BT_F32, 0);
    expect_bad(&b, "data section at offset 96 is past the end of the file (size 65)");
    bb_hdr(&b, 3, 2, 0);
    bb_tensor(&b, "a", 2, ne, BT_F32, 0);
    bb_tensor(&b, "b", 2, ne2, BT_F32, 224);
    bb_pad(&b, 32);
    bb_zeros(&b, 1024);
    expect_bad(&b, "tensors 'a' [0, 256) and 'b' [224, 480) overlap");
    bb_hdr(&b, 3, 3, 0);
    bb_tensor(&b, "big", 1, (uint64_t[]){1024}, BT_F32, 0); /* [0, 4096) */
    bb_tensor(&b, "x", 1, (uint64_t[]){8}, BT_F32, 256);
    bb_tensor(&b, "y", 1, (uint64_t[]){8}, BT_F32, 512);
    bb_pad(&b, 32);
    bb_zeros(&b, 4096);
    expect_bad(&b, "tensors 'big' [0, 4096) and 'x' [256, 288) overlap");
    bb_hdr(&b, 3, 2, 0);
    bb_tensor(&b, "a", 2, ne, BT_F32, 0);
    bb_tensor(&b, "a", 2, ne, BT_F32, 256);
    bb_pad(&b, 32);
    bb_zeros(&b, 1024);
    expect_bad(&b, "duplicate tensor name 'a'");
    /* out of order but disjoint is fine */
    bb_hdr(&b, 3, 2, 0);
    bb_tensor(&b, "a", 2, ne, BT_F32, 256);
    bb_tensor(&b, "b", 2, ne, BT_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 512);
    g = open_bb(&b, err, sizeof(err));
    CHECK(g && gguf_find_tensor(g, "b")->offset == 0 && gguf_find_tensor(g, "a")->offset == 256);
    gguf_close(g);

    /* hostile names are shown escaped and cut */
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b,
           "\x1b[31mevil\n0123456789012345678901234567890123456789012345678901234567890123456789"
           "0123456789");
    bb_u32(&b, 77);
    expect_bad(&b, "key '\\x1b[31mevil\\x0a012");
    expect_bad(&b, "...': unknown value type 77");

    free(b.p);
}

/* A valid small file cut at every length: fails cleanly below the end of the last tensor's data,
 * opens from there on (only the final padding is missing). */
static void test_truncation(void)
{
    const char *p = tmp_path("trunc.gguf");
    char err[1024];
    struct gguf_writer *w = gguf_writer_new();
    int64_t ne[2] = {32, 2};
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_u32(w, "general.alignment", 16);
    gguf_writer_set_arr_str(w, "a.str", strs, 3);
    uint32_t a[3] = {1, 2, 3};
    gguf_writer_set_arr(w, "a.u32", GGUF_TYPE_UINT32, a, 3);
    gguf_writer_set_f32(w, "f", 0.5f);
    gguf_writer_add_tensor(w, "q", BT_Q8_0, 2, ne);
    gguf_writer_add_tensor(w, "f", BT_F16, 1, ne);
    unsigned char d[68] = {1, 2, 3};
    CHECK_INT(gguf_writer_begin(w, p, err, sizeof(err)), 0);
    CHECK_INT(gguf_writer_write(w, 0, d, 68), 0);
    CHECK_INT(gguf_writer_write(w, 1, d, 64), 0);
    CHECK_INT(gguf_writer_finish(w, err, sizeof(err)), 0);
    gguf_writer_free(w);
    size_t n;
    unsigned char *full = read_file(p, &n);
    struct gguf *g = NULL;
    CHECK_INT(gguf_open_mem(full, n, "t.gguf", &g, err, sizeof(err)), 0);
    if (!g) {
        free(full);
        return;
    }
    const struct gguf_tensor *tf = gguf_find_tensor(g, "f");
    size_t need = (size_t)(gguf_data_offset(g) + tf->offset + tf->nbytes);
    gguf_close(g);
    int bad = 0;
    for (size_t len = 0; len <= n; len++) {
        unsigned char *cut = malloc(len ? len : 1);
        memcpy(cut, full, len);
        g = NULL;
        err[0] = 0;
        int rc = gguf_open_mem(cut, len, "t.gguf", &g, err, sizeof(err));
        bool ok = len >= need ? (rc == 0 && g != NULL)
                              : (rc < 0 && g == NULL && !strncmp(err, "t.gguf: ", 8));
        if (!ok) {
            if (!bad) fprintf(stderr, "truncation at %zu: rc %d err %s\n", len, rc, err);
            bad++;
        }
        gguf_close(g);
        free(cut);
    }
    CHECK_INT(bad, 0);
    t_checks += (int)n;

    /* on disk: a file whose tensor data is past EOF */
    CHECK_INT(truncate(p, (off_t)need - 1), 0);
    g = NULL;
    CHECK(gguf_open(p, &g, err, sizeof(err)) < 0 && g == NULL);
    CHECK(strstr(err, p) == err && strstr(err, "tensor 'f' data [") &&
          strstr(err, "is past the end of the file"));
    CHECK_INT(truncate(p, 0), 0);
    CHECK(gguf_open(p, &g, err, sizeof(err)) < 0);
    CHECK(strstr(err, "truncated: magic") != NULL);
    CHECK(gguf_open(tmp_path("does-not-exist.gguf"), &g, err, sizeof(err)) == BT_EIO);
    CHECK(strstr(err, "does-not-exist.gguf: cannot open") != NULL);
    CHECK(gguf_open(tmpdir, &g, err, sizeof(err)) == BT_EIO);
    CHECK(strstr(err, "not a regular file") != NULL);
    free(full);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "%s/test_gguf.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_writer_errors();
    test_stories();
    test_vocabs();
    test_gguf_py_fixture();
    test_malformed();
    test_truncation();

    const char *names[] = {"rt.gguf",      "rt2.gguf",   "rt64.gguf",   "copy.gguf",
                           "partial.gguf", "trunc.gguf", "py_same.gguf"};
    if (getenv("TEST_GGUF_KEEP")) { /* leave the files for a look with other tools */
        fprintf(stderr, "files kept in %s\n", tmpdir);
    } else {
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) unlink(tmp_path(names[i]));
        rmdir(tmpdir);
    }
    return t_done();
}
