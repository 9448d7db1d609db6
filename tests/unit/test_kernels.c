/* kernels: kern_matmul for every weight type x every instruction set this CPU has x several
 * shapes, against a double-precision reference built from bt_dequantize_row of the weights and of
 * the activations quantised by the reference quantiser; kern_quantize_row against
 * bt_quantize_row; results independent of the thread count; argument checks. */
#include "kernels.h"
#include "log.h"
#include "quant.h"
#include "threadpool.h"
#include "t.h"

#include <stdint.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dull;
}

static float frand(void) /* [-1, 1) */
{
    return (float)((double)(rng() >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static const uint32_t types[] = {BT_F32,  BT_F16,  BT_BF16, BT_Q8_0, BT_Q4_0, BT_Q4_1,
                                 BT_Q5_0, BT_Q5_1, BT_Q4_K, BT_Q5_K, BT_Q6_K};
#define NTYPES (int)(sizeof(types) / sizeof(types[0]))

static uint32_t act_type(uint32_t t)
{
    switch (t) {
    case BT_Q4_0:
    case BT_Q5_0:
    case BT_Q8_0:
        return BT_Q8_0;
    case BT_Q4_1:
    case BT_Q5_1:
        return BT_Q8_1;
    case BT_Q4_K:
    case BT_Q5_K:
    case BT_Q6_K:
        return BT_Q8_K;
    default:
        return t;
    }
}

static bt_f16 rand_scale(float lo, float hi)
{
    return bt_f32_to_f16(lo + (hi - lo) * (frand() * 0.5f + 0.5f));
}

/* Fill one row of weights: mode 0 quantises random floats with the reference quantiser, mode 1
 * uses random bits for the quants (every integer value occurs) with sane f16 scales. */
static void make_row(uint32_t t, int64_t n, void *dst, int mode, float *tmp)
{
    for (int64_t i = 0; i < n; i++) tmp[i] = frand() * (1.0f + (float)(i % 7));
    if (mode == 0 || t == BT_F32 || t == BT_F16 || t == BT_BF16) {
        CHECK_INT(bt_quantize_row(t, tmp, dst, n), 0);
        return;
    }
    size_t bytes = bt_row_size(t, n);
    uint8_t *p = dst;
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)rng();
    const struct bt_type_info *ti = bt_type_get(t);
    int64_t nb = n / ti->blck_size;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *blk = p + (size_t)b * ti->type_size;
        bt_f16 h[2] = {rand_scale(0.001f, 0.1f), rand_scale(-0.5f, 0.5f)};
        switch (t) {
        case BT_Q4_1:
        case BT_Q5_1:
        case BT_Q4_K:
        case BT_Q5_K:
            memcpy(blk, h, 4);
            break;
        case BT_Q6_K:
            memcpy(blk + 208, h, 2);
            break;
        default:
            memcpy(blk, h, 2);
            break;
        }
    }
}

struct problem {
    uint32_t t;
    int64_t rows, n, m;
    uint8_t *W;
    float *X;
    double *ref; /* (m, rows) */
    double *tol; /* (m, rows) */
};

static void problem_make(struct problem *P, uint32_t t, int64_t rows, int64_t n, int64_t m,
                         int mode)
{
    P->t = t;
    P->rows = rows;
    P->n = n;
    P->m = m;
    size_t rb = bt_row_size(t, n);
    P->W = malloc(rb * (size_t)rows);
    P->X = malloc(sizeof(float) * (size_t)(m * n));
    P->ref = malloc(sizeof(double) * (size_t)(m * rows));
    P->tol = malloc(sizeof(double) * (size_t)(m * rows));
    float *tmp = malloc(sizeof(float) * (size_t)n);
    float *wd = malloc(sizeof(float) * (size_t)(rows * n));
    float *ad = malloc(sizeof(float) * (size_t)(m * n));
    void *aq = malloc(bt_row_size(BT_F32, n) + 64); /* F32 is the largest per value */
    for (int64_t r = 0; r < rows; r++) {
        make_row(t, n, P->W + (size_t)r * rb, mode, tmp);
        CHECK_INT(bt_dequantize_row(t, P->W + (size_t)r * rb, wd + r * n, n), 0);
    }
    uint32_t at = act_type(t);
    for (int64_t c = 0; c < m; c++) {
        float *x = P->X + c * n;
        for (int64_t i = 0; i < n; i++) x[i] = frand() * (i % 5 == 0 ? 3.0f : 1.0f);
        if (c == 1 && n >= 64) /* a row with an all-zero block */
            for (int64_t i = 0; i < 32; i++) x[i] = 0.0f;
        CHECK_INT(bt_quantize_row(at, x, aq, n), 0);
        CHECK_INT(bt_dequantize_row(at, aq, ad + c * n, n), 0);
    }
    for (int64_t c = 0; c < m; c++) {
        for (int64_t r = 0; r < rows; r++) {
            double s = 0, sa = 0, smin = 0;
            const float *w = wd + r * n, *a = ad + c * n;
            for (int64_t i = 0; i < n; i++) {
                s += (double)w[i] * (double)a[i];
                sa += fabs((double)w[i] * (double)a[i]);
            }
            if (t == BT_Q4_1 || t == BT_Q5_1) {
                /* llama.cpp's Q8_1 keeps d * sum(q) as f16: allow for its rounding */
                const uint8_t *row = P->W + (size_t)r * rb;
                for (int64_t b = 0; b < n / 32; b++) {
                    bt_f16 mh;
                    memcpy(&mh, row + (size_t)b * (t == BT_Q4_1 ? 20 : 24) + 2, 2);
                    double asum = 0;
                    for (int i = 0; i < 32; i++) asum += fabs((double)a[b * 32 + i]);
                    smin += fabs((double)bt_f16_to_f32(mh)) * asum;
                }
            }
            P->ref[c * rows + r] = s;
            P->tol[c * rows + r] = 2e-5 * sa + 1e-3 * smin + 1e-30;
        }
    }
    free(tmp);
    free(wd);
    free(ad);
    free(aq);
}

static void problem_free(struct problem *P)
{
    free(P->W);
    free(P->X);
    free(P->ref);
    free(P->tol);
}

/* Runs kern_matmul and compares; returns the number of mismatches (reported once). */
static int problem_check(const struct problem *P, struct bt_pool *pool, float *Y, const char *isa)
{
    for (int64_t i = 0; i < P->m * P->rows; i++) Y[i] = NAN;
    int rc = kern_matmul(pool, P->t, P->W, P->rows, P->n, P->X, P->m, Y);
    CHECK_INT(rc, 0);
    int bad = 0;
    for (int64_t i = 0; i < P->m * P->rows; i++) {
        double err = fabs((double)Y[i] - P->ref[i]);
        if (!(err <= P->tol[i])) {
            if (!bad)
                fprintf(stderr,
                        "mismatch %s %s rows %" PRId64 " n %" PRId64 " m %" PRId64
                        " pool %d: Y[%" PRId64 "][%" PRId64 "] = %.9g, ref %.9g, tol %.3g\n",
                        isa, bt_type_name(P->t), P->rows, P->n, P->m, bt_pool_size(pool),
                        i / P->rows, i % P->rows, (double)Y[i], P->ref[i], P->tol[i]);
            bad++;
        }
    }
    t_checks++;
    if (bad) t_failures++;
    return bad;
}

/* the instruction sets this CPU has (filled by main) */
static const char *isa_list[3];
static int n_isa;

static void set_isa(const char *isa)
{
    CHECK_INT(kern_set_isa(isa), 0);
}

static void test_matmul(struct bt_pool *pool)
{
    static const int64_t ms[] = {1, 3, 8, 33};
    static const int64_t rows_list[] = {1, 7, 67};
    for (int ti = 0; ti < NTYPES; ti++) {
        uint32_t t = types[ti];
        bool k = t == BT_Q4_K || t == BT_Q5_K || t == BT_Q6_K;
        bool f = t == BT_F32 || t == BT_F16 || t == BT_BF16; /* any n: odd ones for the tails */
        int64_t ns[3] = {k ? 256 : f ? 37 : 32, k ? 512 : 96, k ? 768 : f ? 545 : 544};
        for (int ni = 0; ni < 3; ni++) {
            for (int ri = 0; ri < 3; ri++) {
                int64_t rows = rows_list[ri];
                struct problem P;
                int64_t mmax = ms[3];
                problem_make(&P, t, rows, ns[ni], mmax, (ni + ri) & 1);
                float *Y = malloc(sizeof(float) * (size_t)(mmax * rows));
                for (int ii = 0; ii < n_isa; ii++) {
                    set_isa(isa_list[ii]);
                    for (int mi = 0; mi < 4; mi++) {
                        struct problem Q = P;
                        Q.m = ms[mi]; /* the first m rows of X; ref is (m, rows) row-major too */
                        problem_check(&Q, NULL, Y, isa_list[ii]);
                        problem_check(&Q, pool, Y, isa_list[ii]);
                    }
                }
                free(Y);
                problem_free(&P);
            }
        }
    }
}

/* Larger shapes: several gemm tiles, k-chunks and column tiles; identical across pool sizes. */
static void test_large(struct bt_pool *pool)
{
    for (int ti = 0; ti < NTYPES; ti++) {
        uint32_t t = types[ti];
        struct problem P;
        bool f = t == BT_F32 || t == BT_F16 || t == BT_BF16;
        int64_t rows = 131, n = 2048 + (t == BT_Q4_K || t == BT_Q5_K || t == BT_Q6_K ? 256
                                        : f                                          ? 97
                                                                                     : 96);
        int64_t m = ti == 3 ? 300 : 40;
        problem_make(&P, t, rows, n, m, ti & 1);
        float *Y1 = malloc(sizeof(float) * (size_t)(m * rows));
        float *Y2 = malloc(sizeof(float) * (size_t)(m * rows));
        for (int ii = 0; ii < n_isa; ii++) {
            set_isa(isa_list[ii]);
            problem_check(&P, pool, Y1, isa_list[ii]);
            CHECK_INT(kern_matmul(NULL, t, P.W, rows, n, P.X, m, Y2), 0);
            CHECK(memcmp(Y1, Y2, sizeof(float) * (size_t)(m * rows)) == 0);
            /* m = 1 through the matvec path, also identical across pool sizes */
            CHECK_INT(kern_matmul(NULL, t, P.W, rows, n, P.X, 1, Y2), 0);
            CHECK_INT(kern_matmul(pool, t, P.W, rows, n, P.X, 1, Y1), 0);
            CHECK(memcmp(Y1, Y2, sizeof(float) * (size_t)rows) == 0);
        }
        free(Y1);
        free(Y2);
        problem_free(&P);
        /* long rows (272 blocks of 32, 34 super-blocks) */
        problem_make(&P, t, 9, 8704, 6, ti & 1);
        Y1 = malloc(sizeof(float) * 9 * 6);
        for (int ii = 0; ii < n_isa; ii++) {
            set_isa(isa_list[ii]);
            for (int64_t m2 = 1; m2 <= 6; m2 += 5) {
                struct problem Q = P;
                Q.m = m2;
                problem_check(&Q, pool, Y1, isa_list[ii]);
            }
        }
        free(Y1);
        problem_free(&P);
    }
}

static void test_quantize_row(const char *isa)
{
    static const uint32_t qt[] = {BT_Q8_0, BT_Q8_1, BT_Q8_K};
    const int64_t n = 1280; /* 40 blocks of 32: a partial group of 16 */
    float *x = malloc(sizeof(float) * n);
    uint8_t *a = malloc(bt_row_size(BT_Q8_K, n) + 64), *b = malloc(bt_row_size(BT_Q8_K, n) + 64);
    for (int round = 0; round < 20; round++) {
        for (int64_t i = 0; i < n; i++) x[i] = frand() * (float)(1 + round);
        for (int64_t i = 256; i < 512; i++) x[i] = 0.0f;             /* zero blocks */
        x[600] = 5.0f * (float)(round + 1);                          /* a dominant value */
        if (round & 1) x[601] = -x[600];                             /* tie for the max */
        for (int64_t i = 700; i < 732; i++) x[i] = (float)(i - 716); /* exact steps */
        for (int qi = 0; qi < 3; qi++) {
            size_t bytes = bt_row_size(qt[qi], n);
            memset(a, 0xAA, bytes);
            memset(b, 0x55, bytes);
            CHECK_INT(bt_quantize_row(qt[qi], x, a, n), 0);
            CHECK_INT(kern_quantize_row(qt[qi], x, b, n), 0);
            if (memcmp(a, b, bytes) != 0) {
                fprintf(stderr, "kern_quantize_row %s %s differs (round %d)\n", isa,
                        bt_type_name(qt[qi]), round);
                CHECK(0);
            }
        }
    }
    CHECK_INT(kern_quantize_row(BT_Q4_0, x, b, 32), BT_EUNSUP);
    CHECK_INT(kern_quantize_row(BT_Q8_0, x, b, 33), BT_EINVAL);
    free(x);
    free(a);
    free(b);
}

int main(void)
{
    struct bt_pool *pool = bt_pool_new(3);
    CHECK(pool != NULL);
    const char *best = kern_isa();
    fprintf(stderr, "best isa: %s\n", best);
    CHECK(!strcmp(best, "avx512") || !strcmp(best, "avx2") || !strcmp(best, "scalar"));

    /* argument checks */
    float x[64] = {0}, y[4];
    uint8_t w[256] = {0};
    CHECK_INT(kern_matmul(NULL, BT_Q2_K, w, 1, 256, x, 1, y), BT_EUNSUP);
    CHECK_INT(kern_matmul(NULL, 999, w, 1, 32, x, 1, y), BT_EUNSUP);
    CHECK_INT(kern_matmul(NULL, BT_Q4_0, w, 1, 48, x, 1, y), BT_EINVAL);
    CHECK_INT(kern_matmul(NULL, BT_Q4_0, w, 1, 32, x, 0, y), 0);
    CHECK_INT(kern_matmul(NULL, BT_Q4_0, NULL, 1, 32, x, 1, y), BT_EINVAL);
    CHECK_INT(kern_matmul(NULL, BT_F32, w, 1, (int64_t)1 << 40, x, 1, y), BT_EINVAL);
    CHECK_INT(kern_matmul(NULL, BT_F32, w, -1, 16, x, 1, y), BT_EINVAL);
    CHECK(kern_supports(BT_Q6_K));
    CHECK(!kern_supports(BT_Q3_K));
    CHECK_INT(kern_set_isa("bogus"), BT_EINVAL);
    CHECK_INT(kern_set_isa(NULL), BT_EINVAL);
    CHECK_INT(kern_reserve(pool, BT_Q4_K, 2048, 64), 0);

    static const char *isas[] = {"scalar", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        int rc = kern_set_isa(isas[i]);
        if (rc == BT_EUNSUP) {
            fprintf(stderr, "isa %s: not available, skipped\n", isas[i]);
            continue;
        }
        CHECK_INT(rc, 0);
        CHECK_STR(kern_isa(), isas[i]);
        test_quantize_row(isas[i]);
        isa_list[n_isa++] = isas[i];
    }
    test_matmul(pool);
    test_large(pool);
    CHECK_INT(kern_set_isa("auto"), 0);
    CHECK_STR(kern_isa(), best);

    double bw = kern_measure_read_bw(pool, 8 << 20);
    CHECK(bw > 1e8);
    bt_pool_free(pool);
    return t_done();
}
