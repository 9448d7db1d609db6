/* kernels_isa: the private interface between kernels.c (dispatch, threading, scalar code) and
 * the instruction-set files kernels_avx2.c and kernels_avx512.c. Not for use outside kernels*.c.
 *
 * Activations ("act rows"): kern_matmul converts each row of X once into an act row, whose
 * layout depends on the weight type's partner type:
 *  - F32 weights: the f32 row itself; F16: f32 values rounded to f16; BF16: bf16 values.
 *  - quantised weights: structure of arrays, each part 64-byte aligned within the row:
 *      int8_t  q[n]        quantised values (Q8_0/Q8_1/Q8_K numerics)
 *      float   d[n / B]    scale of each block of B values (f16-rounded for Q8_0/Q8_1; the
 *                          super-block scale, repeated, for Q8_K)
 *      int32_t corr[n / B] -off * sum(q) over the block: added to an integer dot product with
 *                          weights stored as q_w + off (unsigned) it removes the offset exactly
 *      float   s[n / B]    d * sum(q) over the block (f16-rounded as llama.cpp's Q8_1.s for the
 *                          Q8_1 family): multiplies a weight block's "min" term
 *    B is 32, or 16 for Q6_K (whose scales cover 16 values).
 *    With ilv = 2 or 4 (matvec of Q4_0 / Q4_1 on AVX-512), the q of each group of ilv blocks
 *    (ilv * i ...) are interleaved by halves: [b0 q0..15, b1 q0..15, .., b0 q16..31, b1 q16..31,
 *    ..], matching the nibbles of ilv weight blocks loaded side by side (low nibbles: values
 *    0..15, high: 16..31); blocks after the last whole group stay in order.
 *  - BF16 act rows have a zero appended when n is odd (the gemm reads values in pairs). */
#ifndef BATON_KERNELS_ISA_H
#define BATON_KERNELS_ISA_H

#include "quant.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum kern_act_kind { KACT_F32, KACT_F16, KACT_BF16, KACT_Q8_0, KACT_Q8_1, KACT_Q8_K, KACT_COUNT };

/* Columns (rows of X) that one matvec call handles at most, reusing each weight block. */
#define KERN_MV_COLS 4

struct kern_act {
    int kind;     /* enum kern_act_kind */
    int B;        /* values per scale block (quantised kinds) */
    int off;      /* weight offset folded into corr */
    int ilv;      /* Q8_0/Q8_1 kinds: q of groups of ilv (1, 2 or 4) blocks interleaved, below */
    int64_t n;    /* values per row */
    int64_t nb;   /* n / B */
    size_t off_d; /* byte offsets within a row */
    size_t off_corr;
    size_t off_s;
    size_t stride; /* bytes per act row (multiple of 64) */
};

/* Quantise x[n] into the act row `dst` (layout L). */
typedef void (*kern_quant_fn)(const float *x, uint8_t *dst, const struct kern_act *L);

/* Y[c * ldy + r] = W row r . act row c for r < nr, c < nc (1 <= nc <= KERN_MV_COLS).
 * W rows are wrow bytes apart; act rows L->stride bytes apart. */
typedef void (*kern_mv_fn)(const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
                           const struct kern_act *L, int nc, float *Y, int64_t ldy);

/* Matrix-matrix for nr rows (nr <= rows_per_call) and nc columns: like kern_mv_fn but reuses
 * repacked weights across all nc columns. scratch: gemm_scratch(n) bytes, 64-aligned. */
typedef void (*kern_gemm_fn)(const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
                             const struct kern_act *L, int64_t nc, float *Y, int64_t ldy,
                             void *scratch);

struct kern_ops {
    const char *name;
    kern_quant_fn quant[KACT_COUNT];  /* NULL: scalar */
    kern_mv_fn mv[BT_TYPE_COUNT];     /* NULL: scalar */
    kern_gemm_fn gemm[BT_TYPE_COUNT]; /* NULL: matvec in groups of KERN_MV_COLS */
    int act_off[BT_TYPE_COUNT];       /* offset (see corr) the ISA's kernels expect */
    uint8_t mv_ilv[BT_TYPE_COUNT];    /* its matvec kernel wants act.ilv = this (0: 1) */
    int gemm_rows;                    /* rows per gemm call (a multiple of its tile) */
    int gemm_min_m[BT_TYPE_COUNT];    /* use gemm from this many columns on */
    size_t (*gemm_scratch)(uint32_t wtype, int64_t n);
    void (*read_stream)(const void *buf, size_t bytes, float *sink);
    void (*swiglu)(float *g, const float *u, int64_t n); /* see kern_swiglu */
};

/* Software prefetch of the weight stream into L2 (__builtin_prefetch locality 2: prefetcht1 on
 * x86), KERN_PF_DIST bytes ahead of the reads, for the matvec kernels. Matvec is bound by how
 * many cache lines a core keeps in flight: with the L1 fill buffers busy with the kernel's own
 * loads, the hardware prefetchers alone reached about half of the streaming read bandwidth for
 * Q4_0 / Q8_0 (2 threads, Sapphire Rapids); the L2 queue is deeper. The rows of a matrix are
 * contiguous, so one stream runs across the rows of a call. */
#define KERN_PF_DIST 4096

struct kern_pf {
    const uint8_t *next; /* first line not yet prefetched */
};

static inline void kern_pf_init(struct kern_pf *s, const uint8_t *p)
{
    s->next = (const uint8_t *)(((uintptr_t)p + KERN_PF_DIST) & ~(uintptr_t)63);
}

/* the reads have reached p: prefetch up to p + KERN_PF_DIST */
static inline void kern_pf_to(struct kern_pf *s, const uint8_t *p)
{
    const uint8_t *e = p + KERN_PF_DIST;
    while (s->next < e) {
        __builtin_prefetch(s->next, 0, 2);
        s->next += 64;
    }
}

/* Weight block unpacking (portable, in kernels.c): one block of weights of qk values into
 * q[qk] (the signed integer multipliers), dw[qk / B] and mw[qk / B], so that the block's dot
 * product with an act block is sum_j dw[j] * d[j] * (sum_i q * a) + mw[j] * s[j]. */
typedef void (*kern_unpack_fn)(const uint8_t *blk, int8_t *q, float *dw, float *mw);

struct kern_wtype {
    int qk;       /* values per weight block */
    int B;        /* values per scale block (for quantised types) */
    int act;      /* enum kern_act_kind */
    bool has_min; /* mw is not all zero */
    kern_unpack_fn unpack;
};

const struct kern_wtype *kern_wtype_get(uint32_t wtype);

const struct kern_ops *kern_ops_avx2(void); /* NULL if not compiled for x86 */
const struct kern_ops *kern_ops_avx512(void);

/* expf for the vector SwiGLU: Cephes' degree-6 polynomial on x - k ln 2 (about 1 ulp), x
 * clamped to [-87.3, 88.3] (a larger -g only changes silu(g) below 1e-36). */
#define KERN_EXP_LO (-87.3f)
#define KERN_EXP_HI 88.3f
#define KERN_LOG2E  1.44269504088896341f
#define KERN_LN2_HI 0.693359375f
#define KERN_LN2_LO (-2.12194440e-4f)
#define KERN_EXP_P0 1.9875691500e-4f
#define KERN_EXP_P1 1.3981999507e-3f
#define KERN_EXP_P2 8.3334519073e-3f
#define KERN_EXP_P3 4.1665795894e-2f
#define KERN_EXP_P4 1.6666665459e-1f
#define KERN_EXP_P5 5.0000001201e-1f

/* The quantised gemms repack tiles of `tr` weight rows x `kc` groups of 32 values, row tiles
 * outer, k-chunks inner, reading a short piece of every row of the tile at once: a pattern the
 * hardware prefetchers do not follow, so a small batch (a server's decode step, a pipeline's
 * micro-batch) waited on memory for most of its time (baton-bench -p 4: 56 -> 69 tokens/s on
 * TinyLlama Q4_0, AVX-512). Called before tile (r0, g0) is repacked, this asks for the next
 * tile's bytes (into L2: better than L1 there). ngroups: groups per row; a row's bytes are
 * spread evenly over its groups (K-quant chunks are whole blocks). */
static inline void kern_gemm_prefetch(const uint8_t *W, size_t wrow, int64_t nr, int64_t ngroups,
                                      int tr, int kc, int64_t r0, int64_t g0)
{
    const int64_t per = (ngroups + kc - 1) / kc; /* chunks per row tile */
    const int64_t i = (r0 / tr) * per + g0 / kc + 1;
    const int64_t pr = (i / per) * tr, pg = (i % per) * kc;
    if (pr >= nr) return;
    const int64_t rows = nr - pr < tr ? nr - pr : tr;
    const int64_t ng = ngroups - pg < kc ? ngroups - pg : kc;
    const size_t b0 = ((size_t)pg * wrow / (size_t)ngroups) & ~(size_t)63;
    const size_t b1 = (size_t)(pg + ng) * wrow / (size_t)ngroups;
    for (int64_t r = 0; r < rows; r++) {
        const char *row = (const char *)W + (size_t)(pr + r) * wrow;
        for (size_t b = b0; b < b1; b += 64) __builtin_prefetch(row + b, 0, 2);
    }
}

/* Round to f16 and back (scalar helpers shared by the ISA files). */
float kern_f16_round(float x);

#endif
