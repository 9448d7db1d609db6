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

/* kern_fuse.gemm (prompt rows, forward.h): a row's results are the same bit for bit whatever the
 * number of rows in the call and whatever the other rows, on every instruction set and pool size
 * (the prefix cache relies on it: a prompt token computed after a hit equals the one computed with
 * its whole prompt). Without the flag the matvec path (m < 4) may differ in the last bits, which
 * is why the flag exists: on a CPU with a vector instruction set it does for some type, checked
 * so that the test cannot pass by never taking the two paths. */
static void test_gemm_rows(struct bt_pool *pool)
{
    int mv_differs = 0;
    static const int64_t split[] = {1, 2, 3, 5, 16, 37}; /* then the rest of the 40 rows */
    for (int ti = 0; ti < NTYPES; ti++) {
        const uint32_t t = types[ti];
        const bool k = t == BT_Q4_K || t == BT_Q5_K || t == BT_Q6_K;
        const int64_t rows = 70, n = k ? 512 : 576, m = 40;
        struct problem P;
        problem_make(&P, t, rows, n, m, ti & 1);
        float *all = malloc(sizeof(float) * (size_t)(m * rows));
        float *part = malloc(sizeof(float) * (size_t)(m * rows));
        const struct kern_fuse fu = {.gemm = true};
        for (int ii = 0; ii < n_isa; ii++) {
            set_isa(isa_list[ii]);
            const struct kern_mat whole = {t, P.W, rows, all};
            CHECK_INT(kern_matmul_multi(pool, &whole, 1, n, P.X, m, &fu), 0);
            for (int s = 0; s < (int)(sizeof(split) / sizeof(split[0])); s++) {
                const int64_t a = split[s];
                const struct kern_mat m1 = {t, P.W, rows, part},
                                      m2 = {t, P.W, rows, part + a * rows};
                CHECK_INT(kern_matmul_multi(s & 1 ? NULL : pool, &m1, 1, n, P.X, a, &fu), 0);
                CHECK_INT(kern_matmul_multi(pool, &m2, 1, n, P.X + a * n, m - a, &fu), 0);
                if (memcmp(all, part, sizeof(float) * (size_t)(m * rows)) != 0) {
                    fprintf(stderr, "gemm rows: %s %s: rows 0..%lld computed apart differ\n",
                            isa_list[ii], bt_type_name(t), (long long)a - 1);
                    CHECK(0);
                }
            }
            int bad = 0; /* and right */
            for (int64_t i = 0; i < m * rows; i++) bad += !(fabs(all[i] - P.ref[i]) <= P.tol[i]);
            CHECK_INT(bad, 0);
            CHECK_INT(kern_matmul(pool, t, P.W, rows, n, P.X, 1, part), 0); /* the matvec */
            mv_differs += memcmp(all, part, sizeof(float) * (size_t)rows) != 0;
        }
        free(all);
        free(part);
        problem_free(&P);
    }
    if (n_isa > 1) CHECK(mv_differs > 0);
}

/* kern_matmul_multi: three matrices (one of them empty) or a pair, with a pre transform of X and
 * a post operation, equal bit for bit to kern_matmul on the transformed X; every output element
 * passed to post exactly once; mixed types take one job per matrix. */
static void multi_pre(const void *ctx, const float *x, float *out, int64_t c)
{
    const int64_t n = *(const int64_t *)ctx;
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * (1.0f + 0.25f * (float)c) - 0.125f;
}

struct multi_post {
    int64_t rows[3];
    float *y[3];
    int *seen[3]; /* (m, rows) visits */
    bool paired;
};

static void multi_post_fn(void *ctx, int mat, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    struct multi_post *o = ctx;
    for (int64_t c = c0; c < c1; c++)
        for (int64_t r = r0; r < r1; r++) {
            o->seen[mat][c * o->rows[mat] + r]++;
            if (o->paired) o->y[0][c * o->rows[0] + r] -= 2.0f * o->y[1][c * o->rows[1] + r];
        }
}

static void test_multi(struct bt_pool *pool)
{
    static const int64_t ms[] = {1, 3, 8, 40};
    for (int ti = 0; ti < NTYPES; ti++) {
        const uint32_t t = types[ti];
        const bool k = t == BT_Q4_K || t == BT_Q5_K || t == BT_Q6_K;
        const int64_t n = k ? 512 : 160, mmax = 40;
        const int64_t rows[3] = {67, 0, 129};
        const uint32_t t2 = ti == 0 ? BT_F16 : BT_F32; /* a second type for the mixed case */
        uint8_t *W[3];
        float *Y[3], *R[3], *Xt = malloc(sizeof(float) * (size_t)(mmax * n));
        float *X = malloc(sizeof(float) * (size_t)(mmax * n)), *tmp = malloc(sizeof(float) * n);
        int *seen[3];
        for (int i = 0; i < 3; i++) {
            const uint32_t ti2 = i == 2 && (ti & 1) ? t2 : t;
            W[i] = malloc(bt_row_size(ti2, n) * (size_t)(rows[i] + 1));
            for (int64_t r = 0; r < rows[i]; r++)
                make_row(ti2, n, W[i] + (size_t)r * bt_row_size(ti2, n), (int)(r & 1), tmp);
            Y[i] = malloc(sizeof(float) * (size_t)(mmax * rows[i] + 1));
            R[i] = malloc(sizeof(float) * (size_t)(mmax * rows[i] + 1));
            seen[i] = calloc((size_t)(mmax * rows[i] + 1), sizeof(int));
        }
        for (int64_t i = 0; i < mmax * n; i++) X[i] = frand();
        for (int64_t c = 0; c < mmax; c++) multi_pre(&n, X + c * n, Xt + c * n, c);
        for (int ii = 0; ii < n_isa; ii++) {
            set_isa(isa_list[ii]);
            for (int mi = 0; mi < 4; mi++) {
                const int64_t m = ms[mi];
                for (int pi = 0; pi < 2; pi++) {
                    struct bt_pool *p = pi ? pool : NULL;
                    /* three matrices, the last of another type for odd ti */
                    struct kern_mat mats[3];
                    struct multi_post po = {{rows[0], rows[1], rows[2]}, {0}, {0}, false};
                    for (int i = 0; i < 3; i++) {
                        const uint32_t ti2 = i == 2 && (ti & 1) ? t2 : t;
                        mats[i] = (struct kern_mat){ti2, W[i], rows[i], Y[i]};
                        po.y[i] = Y[i];
                        po.seen[i] = seen[i];
                        memset(seen[i], 0, sizeof(int) * (size_t)(m * rows[i] + 1));
                        CHECK_INT(kern_matmul(p, ti2, W[i], rows[i], n, Xt, m, R[i]), 0);
                    }
                    struct kern_fuse fu = {multi_pre, &n, multi_post_fn, &po, false, false};
                    CHECK_INT(kern_matmul_multi(p, mats, 3, n, X, m, &fu), 0);
                    for (int i = 0; i < 3; i++) {
                        CHECK(memcmp(Y[i], R[i], sizeof(float) * (size_t)(m * rows[i])) == 0);
                        int bad = 0;
                        for (int64_t e = 0; e < m * rows[i]; e++) bad += seen[i][e] != 1;
                        CHECK_INT(bad, 0);
                    }
                    /* a pair (matrices 0 and 2 of the same rows: 2's first 67 rows) */
                    const uint32_t tp = mats[2].type;
                    mats[0].type = tp;
                    mats[0].W = W[2] + (size_t)62 * bt_row_size(tp, n);
                    mats[1] = (struct kern_mat){tp, W[2], rows[0], Y[1]};
                    float *y1 = Y[1];
                    Y[1] = malloc(sizeof(float) * (size_t)(mmax * rows[0]));
                    mats[1].Y = Y[1];
                    struct multi_post pp = {{rows[0], rows[0], 0}, {Y[0], Y[1]}, {seen[0]}, true};
                    memset(seen[0], 0, sizeof(int) * (size_t)(m * rows[0]));
                    CHECK_INT(kern_matmul(p, tp, mats[0].W, rows[0], n, Xt, m, R[0]), 0);
                    CHECK_INT(kern_matmul(p, tp, W[2], rows[0], n, Xt, m, R[2]), 0);
                    fu.post_ctx = &pp;
                    fu.paired = true;
                    CHECK_INT(kern_matmul_multi(p, mats, 2, n, X, m, &fu), 0);
                    int bad = 0;
                    for (int64_t e = 0; e < m * rows[0]; e++) {
                        bad += seen[0][e] != 1 || Y[1][e] != R[2][e];
                        bad += Y[0][e] != R[0][e] - 2.0f * R[2][e];
                    }
                    CHECK_INT(bad, 0);
                    free(Y[1]);
                    Y[1] = y1;
                    /* no fusion at all: kern_matmul */
                    CHECK_INT(kern_matmul_multi(p, mats, 1, n, Xt, m, NULL), 0);
                    CHECK(memcmp(Y[0], R[0], sizeof(float) * (size_t)(m * rows[0])) == 0);
                }
            }
        }
        struct kern_mat bad2[2] = {{t, W[0], 67, Y[0]}, {t, W[2], 66, Y[2]}};
        struct kern_fuse fp = {NULL, NULL, NULL, NULL, true, false};
        CHECK_INT(kern_matmul_multi(pool, bad2, 2, n, X, 1, &fp), BT_EINVAL);
        CHECK_INT(kern_matmul_multi(pool, bad2, 0, n, X, 1, NULL), BT_EINVAL);
        CHECK_INT(kern_matmul_multi(pool, bad2, KERN_MULTI_MAX + 1, n, X, 1, NULL), BT_EINVAL);
        for (int i = 0; i < 3; i++) {
            free(W[i]);
            free(Y[i]);
            free(R[i]);
            free(seen[i]);
        }
        free(X);
        free(Xt);
        free(tmp);
    }
}

/* kern_swiglu against g / (1 + expf(-g)) * u in double, every instruction set, with tails and
 * extreme inputs. */
static void test_swiglu(const char *isa)
{
    enum { N = 203 };
    float g[N], u[N], r[N];
    for (int i = 0; i < N; i++) {
        g[i] = frand() * (i < 100 ? 8.0f : 40.0f);
        u[i] = frand() * 2.0f;
    }
    g[0] = 0.0f;
    g[1] = -100.0f;
    g[2] = 100.0f;
    g[3] = -87.0f;
    g[4] = 89.0f;
    g[5] = 1e-30f;
    memcpy(r, g, sizeof(g));
    kern_swiglu(r, u, N - 3); /* the last 3 stay as they are */
    int bad = 0;
    for (int i = 0; i < N; i++) {
        const double x = g[i], ref = x / (1.0 + exp(-x)) * u[i];
        const double want = i < N - 3 ? ref : x;
        if (!(fabs(r[i] - want) <= 4e-7 * fabs(want) + 1e-35)) {
            if (!bad)
                fprintf(stderr, "kern_swiglu %s: g %.9g u %.9g -> %.9g, want %.9g\n", isa, x,
                        (double)u[i], (double)r[i], want);
            bad++;
        }
    }
    CHECK_INT(bad, 0);
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
        test_swiglu(isas[i]);
        isa_list[n_isa++] = isas[i];
    }
    test_matmul(pool);
    test_large(pool);
    test_multi(pool);
    test_gemm_rows(pool);
    CHECK_INT(kern_set_isa("auto"), 0);
    CHECK_STR(kern_isa(), best);

    double bw = kern_measure_read_bw(pool, 8 << 20);
    CHECK(bw > 1e8);
    bt_pool_free(pool);
    return t_done();
}
