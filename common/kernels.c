/* kernels: dispatch, threading, activation conversion and the portable scalar kernels.
 * See kernels.h for the contract and kernels_isa.h for the layout of the activations. */
#include "kernels.h"

#include "kernels_isa.h"
#include "log.h"
#include "quant.h"
#include "threadpool.h"

#include <math.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* Weight blocks, unpacked to integer multipliers + per-scale-block factors                  */

static inline float f16(bt_f16 h)
{
    return bt_f16_to_f32(h);
}

float kern_f16_round(float x)
{
    return bt_f16_to_f32(bt_f32_to_f16(x));
}

static void unpack_q4_0(const uint8_t *blk, int8_t *q, float *dw, float *mw)
{
    const block_q4_0 *b = (const block_q4_0 *)blk;
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((b->qs[j] & 15) - 8);
        q[j + 16] = (int8_t)((b->qs[j] >> 4) - 8);
    }
    dw[0] = f16(b->d);
    mw[0] = 0.0f;
}

static void unpack_q4_1(const uint8_t *blk, int8_t *q, float *dw, float *mw)
{
    const block_q4_1 *b = (const block_q4_1 *)blk;
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(b->qs[j] & 15);
        q[j + 16] = (int8_t)(b->qs[j] >> 4);
    }
    dw[0] = f16(b->d);
    mw[0] = f16(b->m);
}

static void unpack_q5_0(const uint8_t *blk, int8_t *q, float *dw, float *mw)
{
    const block_q5_0 *b = (const block_q5_0 *)blk;
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(((b->qs[j] & 15) | (((qh >> j) & 1) << 4)) - 16);
        q[j + 16] = (int8_t)(((b->qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16);
    }
    dw[0] = f16(b->d);
    mw[0] = 0.0f;
}

static void unpack_q5_1(const uint8_t *blk, int8_t *q, float *dw, float *mw)
{
    const block_q5_1 *b = (const block_q5_1 *)blk;
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((b->qs[j] & 15) | (((qh >> j) & 1) << 4));
        q[j + 16] = (int8_t)((b->qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
    }
    dw[0] = f16(b->d);
    mw[0] = f16(b->m);
}

static void unpack_q8_0(const uint8_t *blk, int8_t *q, float *dw, float *mw)
{
    const block_q8_0 *b = (const block_q8_0 *)blk;
    memcpy(q, b->qs, 32);
    dw[0] = f16(b->d);
    mw[0] = 0.0f;
}

/* 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block. */
static inline void kscale(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* dw, mw of the 8 sub-blocks of a Q4_K/Q5_K super-block (scales: its 12 packed bytes) */
static inline void unpack_k4_scales(const uint8_t *scales, float d, float dmin, float *dw,
                                    float *mw)
{
    for (int j = 0; j < 8; j++) {
        int sc, m;
        kscale(scales, j, &sc, &m);
        dw[j] = d * (float)sc;
        mw[j] = -dmin * (float)m;
    }
}

static void unpack_q4_k(const uint8_t *blk, int8_t *q, float *dw, float *mw)
{
    const block_q4_K *b = (const block_q4_K *)blk;
    float d = f16(b->d), dmin = f16(b->dmin);
    for (int j = 0; j < 4; j++) {
        const uint8_t *qs = b->qs + 32 * j;
        for (int l = 0; l < 32; l++) {
            q[64 * j + l] = (int8_t)(qs[l] & 15);
            q[64 * j + 32 + l] = (int8_t)(qs[l] >> 4);
        }
    }
    unpack_k4_scales(b->scales, d, dmin, dw, mw);
}

static void unpack_q5_k(const uint8_t *blk, int8_t *q, float *dw, float *mw)
{
    const block_q5_K *b = (const block_q5_K *)blk;
    float d = f16(b->d), dmin = f16(b->dmin);
    for (int j = 0; j < 4; j++) {
        const uint8_t *qs = b->qs + 32 * j;
        for (int l = 0; l < 32; l++) {
            q[64 * j + l] = (int8_t)((qs[l] & 15) | (((b->qh[l] >> (2 * j)) & 1) << 4));
            q[64 * j + 32 + l] = (int8_t)((qs[l] >> 4) | (((b->qh[l] >> (2 * j + 1)) & 1) << 4));
        }
    }
    unpack_k4_scales(b->scales, d, dmin, dw, mw);
}

static void unpack_q6_k(const uint8_t *blk, int8_t *q, float *dw, float *mw)
{
    const block_q6_K *b = (const block_q6_K *)blk;
    float d = f16(b->d);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        int8_t *y = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            y[l] = (int8_t)(((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32);
            y[l + 32] = (int8_t)(((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32);
            y[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            y[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
    for (int j = 0; j < 16; j++) {
        dw[j] = d * (float)b->scales[j];
        mw[j] = 0.0f;
    }
}

static const struct kern_wtype wtypes[BT_TYPE_COUNT] = {
    [BT_F32] = {1, 1, KACT_F32, false, NULL},
    [BT_F16] = {1, 1, KACT_F16, false, NULL},
    [BT_BF16] = {1, 1, KACT_BF16, false, NULL},
    [BT_Q4_0] = {32, 32, KACT_Q8_0, false, unpack_q4_0},
    [BT_Q4_1] = {32, 32, KACT_Q8_1, true, unpack_q4_1},
    [BT_Q5_0] = {32, 32, KACT_Q8_0, false, unpack_q5_0},
    [BT_Q5_1] = {32, 32, KACT_Q8_1, true, unpack_q5_1},
    [BT_Q8_0] = {32, 32, KACT_Q8_0, false, unpack_q8_0},
    [BT_Q4_K] = {256, 32, KACT_Q8_K, true, unpack_q4_k},
    [BT_Q5_K] = {256, 32, KACT_Q8_K, true, unpack_q5_k},
    [BT_Q6_K] = {256, 16, KACT_Q8_K, false, unpack_q6_k},
};

const struct kern_wtype *kern_wtype_get(uint32_t wtype)
{
    if (wtype >= BT_TYPE_COUNT || wtypes[wtype].qk == 0) return NULL;
    return &wtypes[wtype];
}

bool kern_supports(uint32_t wtype)
{
    return kern_wtype_get(wtype) != NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Activation rows                                                                           */

static inline size_t round64(size_t x)
{
    return (x + 63) & ~(size_t)63;
}

static void act_layout(struct kern_act *L, int kind, int B, int off, int64_t n)
{
    memset(L, 0, sizeof(*L));
    L->kind = kind;
    L->B = B;
    L->off = off;
    L->n = n;
    switch (kind) {
    case KACT_F32:
        L->stride = (size_t)n * 4; /* X itself: the caller's rows are contiguous */
        break;
    case KACT_F16:
        L->stride = round64((size_t)n * 4);
        break;
    case KACT_BF16:
        L->stride = round64((size_t)n * 2);
        break;
    default:
        L->nb = n / B;
        L->off_d = round64((size_t)n);
        L->off_corr = L->off_d + round64((size_t)L->nb * 4);
        L->off_s = L->off_corr + round64((size_t)L->nb * 4);
        L->stride = L->off_s + round64((size_t)L->nb * 4);
        break;
    }
}

static void quant_f32_scalar(const float *x, uint8_t *dst, const struct kern_act *L)
{
    memcpy(dst, x, (size_t)L->n * sizeof(float));
}

static void quant_f16_scalar(const float *x, uint8_t *dst, const struct kern_act *L)
{
    float *y = (float *)dst;
    for (int64_t i = 0; i < L->n; i++) y[i] = kern_f16_round(x[i]);
}

static void quant_bf16_scalar(const float *x, uint8_t *dst, const struct kern_act *L)
{
    uint16_t *y = (uint16_t *)dst;
    for (int64_t i = 0; i < L->n; i++) y[i] = bt_f32_to_bf16(x[i]);
    if (L->n & 1) y[L->n] = 0; /* gemm kernels read values in pairs */
}

/* the 32 q of block b at their place in the act row (see kern_act.ilv) */
static void act_store_q(const struct kern_act *L, int8_t *q, int64_t b, const int8_t *src)
{
    const int g = L->ilv > 1 ? L->ilv : 1;
    if (g == 1 || b >= (L->nb / g) * g) {
        memcpy(q + 32 * b, src, 32);
        return;
    }
    int8_t *base = q + 32 * g * (b / g) + 16 * (b % g);
    memcpy(base, src, 16);
    memcpy(base + 16 * g, src + 16, 16);
}

/* Q8_0 and Q8_1 through the reference quantiser, one block at a time. */
static void quant_q8_01_scalar(const float *x, uint8_t *dst, const struct kern_act *L)
{
    int8_t *q = (int8_t *)dst;
    float *d = (float *)(dst + L->off_d), *s = (float *)(dst + L->off_s);
    int32_t *corr = (int32_t *)(dst + L->off_corr);
    for (int64_t b = 0; b < L->nb; b++) {
        int sum = 0;
        if (L->kind == KACT_Q8_1) {
            block_q8_1 blk;
            bt_quantize_row(BT_Q8_1, x + 32 * b, &blk, 32);
            act_store_q(L, q, b, blk.qs);
            for (int i = 0; i < 32; i++) sum += blk.qs[i];
            d[b] = f16(blk.d);
            s[b] = f16(blk.s);
        } else {
            block_q8_0 blk;
            bt_quantize_row(BT_Q8_0, x + 32 * b, &blk, 32);
            act_store_q(L, q, b, blk.qs);
            for (int i = 0; i < 32; i++) sum += blk.qs[i];
            d[b] = f16(blk.d);
            s[b] = d[b] * (float)sum;
        }
        corr[b] = -L->off * sum;
    }
}

static void quant_q8_k_scalar(const float *x, uint8_t *dst, const struct kern_act *L)
{
    int8_t *q = (int8_t *)dst;
    float *d = (float *)(dst + L->off_d), *s = (float *)(dst + L->off_s);
    int32_t *corr = (int32_t *)(dst + L->off_corr);
    int per = QK_K / L->B;
    for (int64_t i = 0; i < L->n / QK_K; i++) {
        block_q8_K blk;
        bt_quantize_row(BT_Q8_K, x + QK_K * i, &blk, QK_K);
        memcpy(q + QK_K * i, blk.qs, QK_K);
        for (int j = 0; j < per; j++) {
            int sum = 0;
            for (int k = 0; k < L->B; k++) sum += blk.qs[j * L->B + k];
            d[i * per + j] = blk.d;
            s[i * per + j] = blk.d * (float)sum;
            corr[i * per + j] = -L->off * sum;
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Scalar kernels                                                                            */

static void mv_q_generic(const struct kern_wtype *wt, size_t bsize, const uint8_t *W, size_t wrow,
                         int64_t nr, const uint8_t *act, const struct kern_act *L, int nc, float *Y,
                         int64_t ldy)
{
    int8_t q[QK_K];
    float dw[QK_K / 16], mw[QK_K / 16];
    const int qk = wt->qk, B = wt->B, nsub = qk / B;
    const int64_t nblk = L->n / qk;
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *row = W + (size_t)r * wrow;
        float acc[KERN_MV_COLS] = {0};
        for (int64_t b = 0; b < nblk; b++) {
            wt->unpack(row + (size_t)b * bsize, q, dw, mw);
            for (int c = 0; c < nc; c++) {
                const uint8_t *ar = act + (size_t)c * L->stride;
                const int8_t *a = (const int8_t *)ar + b * qk;
                const float *d = (const float *)(ar + L->off_d) + b * nsub;
                const float *s = (const float *)(ar + L->off_s) + b * nsub;
                for (int j = 0; j < nsub; j++) {
                    int isum = 0;
                    for (int i = 0; i < B; i++) isum += q[j * B + i] * a[j * B + i];
                    acc[c] += (dw[j] * d[j]) * (float)isum;
                    if (wt->has_min) acc[c] += mw[j] * s[j];
                }
            }
        }
        for (int c = 0; c < nc; c++) Y[c * ldy + r] = acc[c];
    }
}

#define MV_Q_SCALAR(name, T, BLK)                                                                  \
    static void mv_scalar_##name(const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,    \
                                 const struct kern_act *L, int nc, float *Y, int64_t ldy)          \
    {                                                                                              \
        mv_q_generic(&wtypes[T], sizeof(BLK), W, wrow, nr, act, L, nc, Y, ldy);                    \
    }
MV_Q_SCALAR(q4_0, BT_Q4_0, block_q4_0)
MV_Q_SCALAR(q4_1, BT_Q4_1, block_q4_1)
MV_Q_SCALAR(q5_0, BT_Q5_0, block_q5_0)
MV_Q_SCALAR(q5_1, BT_Q5_1, block_q5_1)
MV_Q_SCALAR(q8_0, BT_Q8_0, block_q8_0)
MV_Q_SCALAR(q4_k, BT_Q4_K, block_q4_K)
MV_Q_SCALAR(q5_k, BT_Q5_K, block_q5_K)
MV_Q_SCALAR(q6_k, BT_Q6_K, block_q6_K)

static void mv_scalar_f32(const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
                          const struct kern_act *L, int nc, float *Y, int64_t ldy)
{
    for (int64_t r = 0; r < nr; r++) {
        const float *w = (const float *)(W + (size_t)r * wrow);
        for (int c = 0; c < nc; c++) {
            const float *x = (const float *)(act + (size_t)c * L->stride);
            float acc = 0.0f;
            for (int64_t k = 0; k < L->n; k++) acc += w[k] * x[k];
            Y[c * ldy + r] = acc;
        }
    }
}

static void mv_scalar_f16(const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
                          const struct kern_act *L, int nc, float *Y, int64_t ldy)
{
    for (int64_t r = 0; r < nr; r++) {
        const bt_f16 *w = (const bt_f16 *)(W + (size_t)r * wrow);
        float acc[KERN_MV_COLS] = {0};
        for (int64_t k = 0; k < L->n; k++) {
            float wk = f16(w[k]);
            for (int c = 0; c < nc; c++) acc[c] += wk * ((const float *)(act + c * L->stride))[k];
        }
        for (int c = 0; c < nc; c++) Y[c * ldy + r] = acc[c];
    }
}

static void mv_scalar_bf16(const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
                           const struct kern_act *L, int nc, float *Y, int64_t ldy)
{
    for (int64_t r = 0; r < nr; r++) {
        const bt_bf16 *w = (const bt_bf16 *)(W + (size_t)r * wrow);
        float acc[KERN_MV_COLS] = {0};
        for (int64_t k = 0; k < L->n; k++) {
            float wk = bt_bf16_to_f32(w[k]);
            for (int c = 0; c < nc; c++)
                acc[c] += wk * bt_bf16_to_f32(((const bt_bf16 *)(act + c * L->stride))[k]);
        }
        for (int c = 0; c < nc; c++) Y[c * ldy + r] = acc[c];
    }
}

static void read_stream_scalar(const void *buf, size_t bytes, float *sink)
{
    const uint64_t *p = buf;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t n = bytes / 8;
    for (size_t i = 0; i + 4 <= n; i += 4) {
        a ^= p[i];
        b ^= p[i + 1];
        c ^= p[i + 2];
        d ^= p[i + 3];
    }
    *sink += (float)((a ^ b ^ c ^ d) & 1);
}

static void swiglu_scalar(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static const struct kern_ops scalar_ops = {
    .name = "scalar",
    .quant =
        {
            [KACT_F32] = quant_f32_scalar,
            [KACT_F16] = quant_f16_scalar,
            [KACT_BF16] = quant_bf16_scalar,
            [KACT_Q8_0] = quant_q8_01_scalar,
            [KACT_Q8_1] = quant_q8_01_scalar,
            [KACT_Q8_K] = quant_q8_k_scalar,
        },
    .mv =
        {
            [BT_F32] = mv_scalar_f32,
            [BT_F16] = mv_scalar_f16,
            [BT_BF16] = mv_scalar_bf16,
            [BT_Q4_0] = mv_scalar_q4_0,
            [BT_Q4_1] = mv_scalar_q4_1,
            [BT_Q5_0] = mv_scalar_q5_0,
            [BT_Q5_1] = mv_scalar_q5_1,
            [BT_Q8_0] = mv_scalar_q8_0,
            [BT_Q4_K] = mv_scalar_q4_k,
            [BT_Q5_K] = mv_scalar_q5_k,
            [BT_Q6_K] = mv_scalar_q6_k,
        },
    .gemm_rows = 0,
    .gemm_scratch = NULL,
    .read_stream = read_stream_scalar,
    .swiglu = swiglu_scalar,
};

/* ---------------------------------------------------------------------------------------- */
/* Instruction set selection                                                                 */

enum { ISA_SCALAR, ISA_AVX2, ISA_AVX512, ISA_COUNT };
static const char *const isa_names[ISA_COUNT] = {"scalar", "avx2", "avx512"};

static struct kern_ops isa_table[ISA_COUNT]; /* merged: NULL entries filled from lower levels */
static bool isa_ok[ISA_COUNT];
static int isa_best;
static _Atomic int isa_cur = -1;
static pthread_once_t isa_once = PTHREAD_ONCE_INIT;

static void merge_ops(struct kern_ops *dst, const struct kern_ops *src)
{
    if (!src) return;
    dst->name = src->name;
    for (int i = 0; i < KACT_COUNT; i++)
        if (src->quant[i]) dst->quant[i] = src->quant[i];
    for (int i = 0; i < BT_TYPE_COUNT; i++) {
        if (src->mv[i]) {
            dst->mv[i] = src->mv[i];
            dst->act_off[i] = src->act_off[i];
            dst->mv_ilv[i] = src->mv_ilv[i];
            dst->gemm[i] = NULL; /* a lower level's gemm may expect another offset */
        }
        if (src->gemm[i]) {
            dst->gemm[i] = src->gemm[i];
            dst->gemm_min_m[i] = src->gemm_min_m[i];
        }
    }
    if (src->gemm_rows) {
        dst->gemm_rows = src->gemm_rows;
        dst->gemm_scratch = src->gemm_scratch;
    }
    if (src->read_stream) dst->read_stream = src->read_stream;
    if (src->swiglu) dst->swiglu = src->swiglu;
}

static void isa_init(void)
{
    isa_table[ISA_SCALAR] = scalar_ops;
    isa_ok[ISA_SCALAR] = true;
    isa_best = ISA_SCALAR;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                __builtin_cpu_supports("f16c");
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vnni");
    isa_table[ISA_AVX2] = isa_table[ISA_SCALAR];
    if (avx2 && kern_ops_avx2()) {
        merge_ops(&isa_table[ISA_AVX2], kern_ops_avx2());
        isa_ok[ISA_AVX2] = true;
        isa_best = ISA_AVX2;
    }
    isa_table[ISA_AVX512] = isa_table[ISA_AVX2];
    if (avx512 && isa_ok[ISA_AVX2] && kern_ops_avx512()) {
        merge_ops(&isa_table[ISA_AVX512], kern_ops_avx512());
        isa_ok[ISA_AVX512] = true;
        isa_best = ISA_AVX512;
    }
#endif
    const char *e = getenv("BATON_KERN_ISA");
    int want = isa_best;
    if (e && *e)
        for (int i = 0; i < ISA_COUNT; i++)
            if (!strcmp(e, isa_names[i]) && isa_ok[i]) want = i;
    atomic_store(&isa_cur, want);
}

static const struct kern_ops *ops_get(void)
{
    pthread_once(&isa_once, isa_init);
    return &isa_table[atomic_load_explicit(&isa_cur, memory_order_relaxed)];
}

const char *kern_isa(void)
{
    return ops_get()->name;
}

int kern_set_isa(const char *isa)
{
    pthread_once(&isa_once, isa_init);
    if (!isa) return BT_EINVAL;
    if (!strcmp(isa, "auto")) {
        atomic_store(&isa_cur, isa_best);
        return BT_OK;
    }
    for (int i = 0; i < ISA_COUNT; i++) {
        if (strcmp(isa, isa_names[i]) != 0) continue;
        if (!isa_ok[i]) return BT_EUNSUP;
        atomic_store(&isa_cur, i);
        return BT_OK;
    }
    return BT_EINVAL;
}

/* ---------------------------------------------------------------------------------------- */
/* Per-thread scratch                                                                        */

struct scratch {
    void *p;
    size_t cap;
};
static _Thread_local struct scratch tls_scratch;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
    free(p);
}

static void scratch_key_init(void)
{
    pthread_key_create(&scratch_key, scratch_free);
}

/* The calling thread's scratch, at least `need` bytes (64-aligned); NULL if it cannot grow.
 * Contents are not kept across growth. */
static void *scratch_get(size_t need)
{
    struct scratch *s = &tls_scratch;
    if (need <= s->cap) return s->p;
    pthread_once(&scratch_once, scratch_key_init);
    size_t cap = s->cap ? s->cap : 65536;
    while (cap < need) cap *= 2;
    void *p = aligned_alloc(64, cap);
    if (!p) return NULL;
    free(s->p);
    s->p = p;
    s->cap = cap;
    pthread_setspecific(scratch_key, p);
    return p;
}

/* ---------------------------------------------------------------------------------------- */
/* kern_matmul, kern_matmul_multi                                                            */

/* Up to this many rows of X, every thread converts all of X itself (no barrier). */
#define ACT_PRIVATE_MAX_M 4
/* The most threads a pool has (threadpool.c caps its size there). */
#define KERN_MAX_THREADS 256
/* Bounds that keep every size computation far from overflow. */
#define KERN_MAX_DIM  ((int64_t)1 << 28)
#define KERN_MAX_ROWS ((int64_t)1 << 40)

/* A group of rows that a work unit covers: one matrix, or (paired) the same rows of two. */
struct mm_slot {
    const uint8_t *W[2];
    float *Y[2];
    int nw; /* 1, or 2 when paired */
    int64_t rows;
    int64_t n_rtiles;
    int64_t u0; /* first unit of the slot */
    int index;  /* the matrix's index in kern_matmul_multi (the post op's `mat`) */
};

struct mm_job {
    const struct kern_ops *ops;
    const struct kern_wtype *wt;
    uint32_t wtype;
    size_t wrow;
    int64_t n, m;
    const float *X;
    struct kern_act L;
    struct bt_pool *pool;
    struct mm_slot slot[KERN_MULTI_MAX];
    int n_slots;
    const struct kern_fuse *fu; /* NULL: none */
    uint8_t *act_shared;        /* caller's scratch when the act rows are shared */
    bool act_private;           /* each thread converts X into its own scratch */
    bool act_direct;            /* F32 without a pre transform: act rows are X itself */
    size_t act_bytes;           /* m * L.stride */
    size_t priv_bytes;          /* per-thread private scratch (gemm repacking) */
    size_t pre_bytes; /* one transformed row of X (f32), per thread, in the caller's scratch */
    bool gemm;
    int64_t unit_rows; /* rows per work unit */
    int64_t unit_cols; /* columns per work unit */
    int64_t n_ctiles, n_units;
    /* work sharing: thread i first takes the units of its own contiguous range [i * n_units /
     * nth, (i + 1) * n_units / nth) in order, then helps the others with the rest of theirs.
     * Contiguous ranges stream the weights better than interleaved units (F16 gemm on 2 threads:
     * +15-20 %), and the stealing keeps the balance when a thread is slowed down. */
    alignas(64) _Atomic int64_t next[KERN_MAX_THREADS]; /* next unit of each range */
};

/* a slot of one matrix */
static struct mm_slot mm_single(const void *W, float *Y, int64_t rows, int index)
{
    return (struct mm_slot){.W = {W}, .Y = {Y}, .nw = 1, .rows = rows, .index = index};
}

static void mm_convert(const struct mm_job *j, uint8_t *act, int64_t c0, int64_t c1, float *tmp)
{
    kern_quant_fn q = j->ops->quant[j->L.kind];
    for (int64_t c = c0; c < c1; c++) {
        const float *x = j->X + c * j->n;
        if (j->fu && j->fu->pre) {
            j->fu->pre(j->fu->pre_ctx, x, tmp, c);
            x = tmp;
        }
        q(x, act + (size_t)c * j->L.stride, &j->L);
    }
}

/* rows [r0, r1) of one weight matrix against act rows [c0, c1) */
static void mm_block(const struct mm_job *j, const uint8_t *W0, float *Y0, int64_t ldy, int64_t r0,
                     int64_t r1, int64_t c0, int64_t c1, const uint8_t *act, void *priv)
{
    const uint8_t *W = W0 + (size_t)r0 * j->wrow;
    if (j->gemm) {
        for (int64_t r = r0; r < r1; r += j->ops->gemm_rows) {
            const int64_t nr = r1 - r < j->ops->gemm_rows ? r1 - r : j->ops->gemm_rows;
            j->ops->gemm[j->wtype](W0 + (size_t)r * j->wrow, j->wrow, nr,
                                   act + (size_t)c0 * j->L.stride, &j->L, c1 - c0,
                                   Y0 + c0 * ldy + r, ldy, priv);
        }
        return;
    }
    kern_mv_fn mv = j->ops->mv[j->wtype];
    for (int64_t c = c0; c < c1; c += KERN_MV_COLS) {
        int nc = (int)(c1 - c < KERN_MV_COLS ? c1 - c : KERN_MV_COLS);
        mv(W, j->wrow, r1 - r0, act + (size_t)c * j->L.stride, &j->L, nc, Y0 + c * ldy + r0, ldy);
    }
}

static void mm_unit(const struct mm_job *j, int64_t u, const uint8_t *act, void *priv)
{
    int s = 0;
    while (s + 1 < j->n_slots && u >= j->slot[s + 1].u0) s++;
    const struct mm_slot *sl = &j->slot[s];
    u -= sl->u0;
    int64_t rt = u % sl->n_rtiles, ct = u / sl->n_rtiles;
    int64_t r0 = rt * j->unit_rows, r1 = r0 + j->unit_rows;
    int64_t c0 = ct * j->unit_cols, c1 = c0 + j->unit_cols;
    if (r1 > sl->rows) r1 = sl->rows;
    if (c1 > j->m) c1 = j->m;
    for (int w = 0; w < sl->nw; w++)
        mm_block(j, sl->W[w], sl->Y[w], sl->rows, r0, r1, c0, c1, act, priv);
    if (j->fu && j->fu->post) j->fu->post(j->fu->post_ctx, sl->index, r0, r1, c0, c1);
}

static void mm_worker(void *ctx, int ith, int nth)
{
    struct mm_job *j = ctx;
    const uint8_t *act = j->act_shared;
    uint8_t *priv = NULL;
    /* the pre transform's row, in the caller's scratch (j->act_shared is NULL without one) */
    float *tmp =
        j->pre_bytes
            ? (float *)(j->act_shared + j->act_bytes + j->priv_bytes + (size_t)ith * j->pre_bytes)
            : NULL;
    bool ok = true;
    if (j->act_direct) {
        act = (const uint8_t *)j->X;
        if (ith == 0)
            priv = j->act_shared;
        else if (j->priv_bytes)
            ok = (priv = scratch_get(j->priv_bytes)) != NULL;
    } else if (j->act_private) {
        uint8_t *base = ith == 0 ? j->act_shared : scratch_get(j->act_bytes + j->priv_bytes);
        if (base) {
            mm_convert(j, base, 0, j->m, tmp);
            act = base;
            priv = base + j->act_bytes;
        } else {
            ok = false;
        }
    } else {
        int64_t c0 = j->m * ith / nth, c1 = j->m * (ith + 1) / nth;
        mm_convert(j, j->act_shared, c0, c1, tmp);
        if (ith == 0)
            priv = j->act_shared + j->act_bytes;
        else if (j->priv_bytes)
            ok = (priv = scratch_get(j->priv_bytes)) != NULL;
        bt_pool_barrier(j->pool);
    }
    /* a thread without scratch takes no units: the others do its share */
    if (!ok) return;
    for (int k = 0; k < nth; k++) {
        const int v = (ith + k) % nth;
        const int64_t end = j->n_units * (v + 1) / nth;
        for (;;) {
            int64_t u = atomic_fetch_add_explicit(&j->next[v], 1, memory_order_relaxed);
            if (u >= end) break;
            mm_unit(j, u, act, priv);
        }
    }
}

/* Plan a call over the slots already in j (rows set): fills everything in j but the pointers to
 * data. Returns the caller's scratch size and the size every other thread may need. */
static void mm_plan(struct mm_job *j, const struct kern_ops *ops, uint32_t wtype, int64_t n,
                    int64_t m, int nth, bool pre, bool gemm, size_t *caller_need,
                    size_t *worker_need)
{
    const struct kern_wtype *wt = &wtypes[wtype];
    j->ops = ops;
    j->wt = wt;
    j->wtype = wtype;
    j->n = n;
    j->m = m;
    j->wrow = bt_row_size(wtype, n);
    act_layout(&j->L, wt->act, wt->B, ops->act_off[wtype], n);
    j->act_direct = wt->act == KACT_F32 && !pre;
    if (wt->act == KACT_F32 && pre) j->L.stride = round64((size_t)n * 4);
    j->act_private = !j->act_direct && (m <= ACT_PRIVATE_MAX_M || nth == 1);
    j->act_bytes = j->act_direct ? 0 : (size_t)m * j->L.stride;
    j->pre_bytes = pre ? round64((size_t)n * 4) : 0;
    j->gemm = ops->gemm[wtype] && ops->gemm_rows > 0 && (m >= ops->gemm_min_m[wtype] || gemm);
    j->L.ilv = !j->gemm && ops->mv_ilv[wtype] ? ops->mv_ilv[wtype] : 1;
    j->priv_bytes = j->gemm ? ops->gemm_scratch(wtype, n) : 0;
    int64_t work_rows = 0; /* rows of weights, all slots */
    for (int s = 0; s < j->n_slots; s++) work_rows += j->slot[s].rows * j->slot[s].nw;
    if (j->gemm) {
        j->unit_rows = ops->gemm_rows;
        j->unit_cols = m <= 256 ? m : 128;
    } else {
        /* a few units per thread: balance against the cost of taking one */
        int64_t per = work_rows / ((int64_t)nth * 4 * (j->n_slots ? j->slot[0].nw : 1));
        if (per < 16) per = 16;
        per = (per + 15) & ~(int64_t)15;
        j->unit_rows = per;
        /* the gemm asked for but none for this type: one row of X per unit, so that every row
         * is computed the same way whatever m (the matvec kernels group up to 4 rows) */
        j->unit_cols = gemm ? 1 : m <= 64 ? m : 64;
    }
    int64_t n_rtiles = 0;
    for (int s = 0; s < j->n_slots; s++) {
        j->slot[s].n_rtiles = (j->slot[s].rows + j->unit_rows - 1) / j->unit_rows;
        n_rtiles += j->slot[s].n_rtiles;
    }
    /* few row tiles for many threads (a small matrix, a big batch): split the columns too */
    while (j->gemm && n_rtiles * ((m + j->unit_cols - 1) / j->unit_cols) < 2 * (int64_t)nth &&
           j->unit_cols > 16)
        j->unit_cols = (j->unit_cols / 2 + 3) & ~(int64_t)3;
    j->n_ctiles = (m + j->unit_cols - 1) / j->unit_cols;
    j->n_units = 0;
    for (int s = 0; s < j->n_slots; s++) {
        j->slot[s].u0 = j->n_units;
        j->n_units += j->slot[s].n_rtiles * j->n_ctiles;
    }
    *caller_need = j->act_bytes + j->priv_bytes + (size_t)nth * j->pre_bytes;
    *worker_need = (j->act_private ? j->act_bytes : 0) + j->priv_bytes;
}

static int mm_run(struct bt_pool *p, struct mm_job *j, uint32_t wtype, int64_t n, const float *X,
                  int64_t m, const struct kern_fuse *fu)
{
    const struct kern_ops *ops = ops_get();
    size_t caller_need, worker_need;
    mm_plan(j, ops, wtype, n, m, bt_pool_size(p), fu && fu->pre, fu && fu->gemm, &caller_need,
            &worker_need);
    (void)worker_need;
    j->X = X;
    j->pool = p;
    j->fu = fu;
    if (caller_need) {
        j->act_shared = scratch_get(caller_need);
        if (!j->act_shared) return BT_ENOMEM;
    }
    const int nth = bt_pool_size(p);
    for (int i = 0; i < nth; i++)
        atomic_store_explicit(&j->next[i], j->n_units * i / nth, memory_order_relaxed);
    bt_pool_run(p, mm_worker, j);
    return BT_OK;
}

static int mm_check(uint32_t wtype, const void *W, int64_t rows, int64_t n, const float *X,
                    int64_t m, const float *Y)
{
    const struct kern_wtype *wt = kern_wtype_get(wtype);
    if (!wt) return BT_EUNSUP;
    if (!W || !X || !Y || rows < 0 || m < 0 || n <= 0 || n % wt->qk != 0) return BT_EINVAL;
    if (n > KERN_MAX_DIM || m > KERN_MAX_DIM || rows > KERN_MAX_ROWS) return BT_EINVAL;
    return BT_OK;
}

int kern_matmul(struct bt_pool *p, uint32_t wtype, const void *W, int64_t rows, int64_t n,
                const float *X, int64_t m, float *Y)
{
    int rc = mm_check(wtype, W, rows, n, X, m, Y);
    if (rc < 0) return rc;
    if (rows == 0 || m == 0) return BT_OK;
    struct mm_job j;
    memset(&j, 0, sizeof(j));
    j.n_slots = 1;
    j.slot[0] = mm_single(W, Y, rows, 0);
    return mm_run(p, &j, wtype, n, X, m, NULL);
}

int kern_matmul_multi(struct bt_pool *p, const struct kern_mat *mats, int n_mats, int64_t n,
                      const float *X, int64_t m, const struct kern_fuse *fu)
{
    if (!mats || n_mats < 1 || n_mats > KERN_MULTI_MAX) return BT_EINVAL;
    const bool paired = fu && fu->paired;
    if (paired && (n_mats != 2 || mats[0].rows != mats[1].rows)) return BT_EINVAL;
    bool same = true;
    for (int i = 0; i < n_mats; i++) {
        int rc = mm_check(mats[i].type, mats[i].W, mats[i].rows, n, X, m, mats[i].Y);
        if (rc < 0) return rc;
        if (mats[i].type != mats[0].type) same = false;
    }
    if (m == 0) return BT_OK;
    struct mm_job j;
    if (!same) {
        /* one job per matrix, each with the whole fusion (pre again, post for its own slot) */
        if (paired) return BT_EINVAL;
        for (int i = 0; i < n_mats; i++) {
            memset(&j, 0, sizeof(j));
            j.n_slots = 1;
            j.slot[0] = mm_single(mats[i].W, mats[i].Y, mats[i].rows, i);
            int rc = mm_run(p, &j, mats[i].type, n, X, m, fu);
            if (rc < 0) return rc;
        }
        return BT_OK;
    }
    memset(&j, 0, sizeof(j));
    if (paired) {
        if (mats[0].rows == 0) return BT_OK;
        j.n_slots = 1;
        j.slot[0] = (struct mm_slot){.W = {mats[0].W, mats[1].W},
                                     .Y = {mats[0].Y, mats[1].Y},
                                     .nw = 2,
                                     .rows = mats[0].rows};
    } else {
        for (int i = 0; i < n_mats; i++)
            j.slot[j.n_slots++] = mm_single(mats[i].W, mats[i].Y, mats[i].rows, i);
    }
    return mm_run(p, &j, mats[0].type, n, X, m, fu);
}

struct reserve_job {
    size_t need;
    _Atomic int fail;
};

static void reserve_worker(void *ctx, int ith, int nth)
{
    struct reserve_job *r = ctx;
    (void)ith;
    (void)nth;
    if (!scratch_get(r->need)) atomic_store(&r->fail, 1);
}

int kern_reserve(struct bt_pool *p, uint32_t wtype, int64_t n, int64_t m)
{
    const struct kern_wtype *wt = kern_wtype_get(wtype);
    if (!wt) return BT_EUNSUP;
    if (n <= 0 || m <= 0 || n % wt->qk != 0 || n > KERN_MAX_DIM || m > KERN_MAX_DIM)
        return BT_EINVAL;
    struct mm_job j;
    size_t caller_need, worker_need;
    /* every m' <= m must fit: the largest need is at m itself or just below the switch to
     * shared activations / gemm; reserve the maximum over the few candidates */
    struct reserve_job r = {0, 0};
    int64_t cand[4] = {m, m < ACT_PRIVATE_MAX_M ? m : ACT_PRIVATE_MAX_M, m > 1 ? m - 1 : 1, 1};
    const struct kern_ops *ops = ops_get();
    for (int i = 0; i < 16; i++) { /* without and with a pre transform, the gemm forced or not */
        memset(&j, 0, sizeof(j));
        j.n_slots = 1;
        j.slot[0] = mm_single(NULL, NULL, 1, 0);
        mm_plan(&j, ops, wtype, n, cand[i / 4], bt_pool_size(p), i & 1, i & 2, &caller_need,
                &worker_need);
        if (caller_need > r.need) r.need = caller_need;
        if (worker_need > r.need) r.need = worker_need;
    }
    if (r.need == 0) return BT_OK;
    bt_pool_run(p, reserve_worker, &r);
    return atomic_load(&r.fail) ? BT_ENOMEM : BT_OK;
}

void kern_swiglu(float *g, const float *u, int64_t n)
{
    if (n > 0) ops_get()->swiglu(g, u, n);
}

/* ---------------------------------------------------------------------------------------- */
/* kern_quantize_row                                                                         */

int kern_quantize_row(uint32_t type, const float *x, void *dst, int64_t n)
{
    int kind, B;
    if (type == BT_Q8_0)
        kind = KACT_Q8_0, B = 32;
    else if (type == BT_Q8_1)
        kind = KACT_Q8_1, B = 32;
    else if (type == BT_Q8_K)
        kind = KACT_Q8_K, B = 16;
    else
        return BT_EUNSUP;
    int qk = type == BT_Q8_K ? QK_K : 32;
    if (!x || !dst || n <= 0 || n % qk != 0) return BT_EINVAL;
    struct kern_act L;
    act_layout(&L, kind, B, 0, qk);
    uint8_t buf[1024] __attribute__((aligned(64)));
    if (L.stride > sizeof(buf)) return BT_ERR;
    const struct kern_ops *ops = ops_get();
    for (int64_t i = 0; i < n / qk; i++) {
        ops->quant[kind](x + i * qk, buf, &L);
        const int8_t *q = (const int8_t *)buf;
        const float *d = (const float *)(buf + L.off_d), *s = (const float *)(buf + L.off_s);
        if (type == BT_Q8_0) {
            block_q8_0 *y = (block_q8_0 *)dst + i;
            y->d = bt_f32_to_f16(d[0]);
            memcpy(y->qs, q, 32);
        } else if (type == BT_Q8_1) {
            block_q8_1 *y = (block_q8_1 *)dst + i;
            y->d = bt_f32_to_f16(d[0]);
            y->s = bt_f32_to_f16(s[0]);
            memcpy(y->qs, q, 32);
        } else {
            block_q8_K *y = (block_q8_K *)dst + i;
            y->d = d[0];
            memcpy(y->qs, q, QK_K);
            for (int j = 0; j < QK_K / 16; j++) {
                int sum = 0;
                for (int k = 0; k < 16; k++) sum += q[16 * j + k];
                y->bsums[j] = (int16_t)sum;
            }
        }
    }
    return BT_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* kern_measure_read_bw                                                                      */

struct bw_job {
    const struct kern_ops *ops;
    const uint8_t *buf;
    size_t bytes;
    float sink[64];
};

static void bw_worker(void *ctx, int ith, int nth)
{
    struct bw_job *b = ctx;
    size_t per = (b->bytes / (size_t)nth) & ~(size_t)255;
    b->ops->read_stream(b->buf + per * (size_t)ith, per, &b->sink[ith & 63]);
}

double kern_measure_read_bw(struct bt_pool *p, size_t bytes)
{
    bytes &= ~(size_t)4095;
    if (bytes < 4096) bytes = 4096;
    uint8_t *buf = aligned_alloc(4096, bytes);
    if (!buf) return -1.0;
    for (size_t i = 0; i < bytes; i++) buf[i] = (uint8_t)(i * 131u);
    struct bw_job b = {.ops = ops_get(), .buf = buf, .bytes = bytes};
    double best = 0.0;
    size_t done = ((bytes / (size_t)bt_pool_size(p)) & ~(size_t)255) * (size_t)bt_pool_size(p);
    for (int it = 0; it < 6; it++) {
        double t0 = bt_now_s();
        bt_pool_run(p, bw_worker, &b);
        double dt = bt_now_s() - t0;
        if (dt > 0 && (double)done / dt > best) best = (double)done / dt;
    }
    free(buf);
    return best;
}
