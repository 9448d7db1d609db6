/* kernels_x86: the code that kernels_avx2.c and kernels_avx512.c share, included once by each.
 * Everything here is static (inline), so it is compiled in each file with that file's -m flags
 * (meson.build): the same source, an AVX2 and an AVX-512 build of it. Only the parts that do not
 * depend on the vector width live here: scalar loads, the Q8_K activation quantiser's steps, the
 * unpacking of weight blocks into 32-byte vectors (both files work on __m256i there), the gemm's
 * loop over tiles and the entry points that dispatch on the weight type and the number of
 * activation rows.
 *
 * The including file defines, before the #include:
 *   GEMM_ROWS  weight rows per gemm tile (one vector of 32-bit lanes, or two)
 * and, anywhere in the file, the functions declared under "hooks" below (the parts that differ
 * in vector width or instructions). Not for use outside kernels_avx2.c / kernels_avx512.c. */
#ifndef BATON_KERNELS_X86_H
#define BATON_KERNELS_X86_H

#include "kernels_isa.h"

#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#ifndef GEMM_ROWS
#error "define GEMM_ROWS before including kernels_x86.h"
#endif

#define AI static inline __attribute__((always_inline))

/* ---------------------------------------------------------------------------------------- */
/* hooks: defined by the including file                                                      */

/* for quant_q8_k, over the QK_K values of a super-block: the largest |x|; the first value
 * of that magnitude, with its sign; the values times iscale to q (round to nearest even, at most
 * 127) and the sums of q over each 16 into sum16[16] (64-byte aligned) */
AI float q8k_absmax(const float *x);
AI float q8k_first_of_abs(const float *x, float amax);
AI void q8k_quantize(const float *x, float iscale, int8_t *q, int *sum16);

/* one 32-value block as 32 bytes, natural order (q + off, see kernels_isa.h) */
AI __m256i unpack32(const int T, const uint8_t *blk);
/* Q5_K: add 16 to lo[l] where bit 2j of qh[l] is set, to hi[l] where bit 2j + 1 is (unpack_k4) */
AI void unpack_k5_high(const uint8_t *qh, int j, __m256i *lo, __m256i *hi);

/* matvec, NC (1, 2 or 4) activation rows: as kern_mv_fn */
AI void mv32(const int T, const int NC, const uint8_t *W, size_t wrow, int64_t nr,
             const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy);
AI void mv_k45(const int T, const int NC, const uint8_t *W, size_t wrow, int64_t nr,
               const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy);
AI void mv_q6k(const int NC, const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
               const struct kern_act *L, float *Y, int64_t ldy);
AI void mv_float(const int T, const int NC, const uint8_t *W, size_t wrow, int64_t nr,
                 const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy);

/* bytes of one scale block in the gemm tile: B/4 steps of 4 bytes of each of the GEMM_ROWS rows,
 * then dw[GEMM_ROWS] and (at least for the types with a min) mw[GEMM_ROWS] */
AI size_t gemm_tbs(const int T);
/* Repack rows [0, nr) (nr <= GEMM_ROWS; the rest are zero) of groups g0 .. g0 + ng - 1 into tile;
 * tmp: GEMM_ROWS x GEMM_KC vectors (gemm_unpack_rows) */
AI void gemm_repack(const int T, const uint8_t *W, size_t wrow, int64_t nr, int64_t g0, int ng,
                    uint8_t *tile, __m256i *tmp);
/* NC activation rows against the repacked tile (nblk scale blocks starting at block j0 of the
 * act rows); adds to or stores into Y rows [0, nr). */
AI void gemm_micro(const int T, const int NC, const uint8_t *tile, int nblk, int64_t j0,
                   const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy, int64_t nr,
                   bool add);
/* gemm of the float types F32 and F16: as kern_gemm_fn */
AI void fgemm(const int T, const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
              const struct kern_act *L, int64_t nc, float *Y, int64_t ldy, void *scratch);

/* ---------------------------------------------------------------------------------------- */
/* scalar loads                                                                              */

AI float h2f(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

AI uint64_t ld16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

AI uint32_t ld32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ---------------------------------------------------------------------------------------- */
/* activation conversion (bit-identical to the reference quantisers in quant.c)              */

/* Q8_K act rows (kern_quant_fn), as quant.c's q_q8_K: d = max / -127 (max: the value of largest
 * magnitude), q = nearest(x * -127 / max) */
static void quant_q8_k(const float *x, uint8_t *dst, const struct kern_act *L)
{
    int8_t *q = (int8_t *)dst;
    float *d = (float *)(dst + L->off_d), *s = (float *)(dst + L->off_s);
    int32_t *corr = (int32_t *)(dst + L->off_corr);
    const int per = QK_K / L->B, B = L->B;
    for (int64_t i = 0; i < L->n / QK_K; i++, x += QK_K, q += QK_K) {
        const float amax = q8k_absmax(x);
        float *dd = d + i * per, *ss = s + i * per;
        int32_t *cc = corr + i * per;
        if (amax == 0.0f) {
            memset(q, 0, QK_K);
            for (int j = 0; j < per; j++) dd[j] = ss[j] = 0.0f, cc[j] = 0;
            continue;
        }
        const float iscale = -127.f / q8k_first_of_abs(x, amax);
        const float dq = 1 / iscale;
        int sum16[16] __attribute__((aligned(64)));
        q8k_quantize(x, iscale, q, sum16);
        for (int j = 0; j < per; j++) {
            int sum = B == 16 ? sum16[j] : sum16[2 * j] + sum16[2 * j + 1];
            dd[j] = dq;
            ss[j] = dq * (float)sum;
            cc[j] = -L->off * sum;
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* weight blocks                                                                             */

/* bytes of a block of the 32-value types */
AI size_t bsize32(const int T)
{
    return T == BT_Q4_0 ? 18 : T == BT_Q4_1 ? 20 : T == BT_Q5_0 ? 22 : T == BT_Q5_1 ? 24 : 34;
}

/* the 32 nibbles of qs[16] in value order: low nibbles (values 0..15), then high ones */
AI __m256i nibbles32(const uint8_t *qs)
{
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)),
                            _mm256_set1_epi8(15));
}

/* the 8 6-bit scales and mins of a Q4_K/Q5_K super-block, as bytes */
AI void kscales(const uint8_t *s, uint64_t *sc, uint64_t *mn)
{
    uint32_t a = ld32(s), b = ld32(s + 4), c = ld32(s + 8);
    uint32_t sc_lo = a & 0x3f3f3f3fu, mn_lo = b & 0x3f3f3f3fu;
    uint32_t sc_hi = (c & 0x0f0f0f0fu) | ((a >> 6) & 0x03030303u) << 4;
    uint32_t mn_hi = ((c >> 4) & 0x0f0f0f0fu) | ((b >> 6) & 0x03030303u) << 4;
    *sc = sc_lo | (uint64_t)sc_hi << 32;
    *mn = mn_lo | (uint64_t)mn_hi << 32;
}

/* 8 bytes to 8 floats */
AI __m256 u8x8_to_ps(uint64_t v)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)v)));
}

/* 128 values of half h of a Q6_K super-block as 4 x 32 unsigned bytes (q + 32) */
AI void unpack_q6k(const uint8_t *blk, int h, __m256i *v)
{
    const uint8_t *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
    const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
    __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
    __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
    __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
    v[0] =
        _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
    v[1] =
        _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
    v[2] =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30));
    v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
}

/* 64 values of chunk j (0..3) of a Q4_K/Q5_K super-block: lo = sub-block 2j, hi = 2j + 1 */
AI void unpack_k4(const int T, const uint8_t *blk, int j, __m256i *lo, __m256i *hi)
{
    const uint8_t *qs = blk + (T == BT_Q4_K ? 16 : 48) + 32 * j;
    __m256i v = _mm256_loadu_si256((const __m256i *)qs);
    const __m256i m4 = _mm256_set1_epi8(15);
    *lo = _mm256_and_si256(v, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    if (T == BT_Q5_K) unpack_k5_high(blk + 16, j, lo, hi);
}

/* ---------------------------------------------------------------------------------------- */
/* gemm, quantised types: tiles of GEMM_ROWS weight rows x GEMM_KC groups of 32 values        */

#define GEMM_KC 16 /* 32-value groups per k-chunk (a multiple of 8: whole K-quant blocks) */
#define GEMM_NC 4  /* activation rows per microkernel call */

/* values per scale block */
AI int gemm_B(const int T)
{
    return T == BT_Q6_K ? 16 : 32;
}

/* the type has a min term (mw) */
AI bool gemm_min(const int T)
{
    return T == BT_Q4_1 || T == BT_Q5_1 || T == BT_Q4_K || T == BT_Q5_K;
}

/* Unpack groups g0 .. g0 + ng - 1 (of 32 values) of one row into out[] (q + off as bytes) and
 * the scales of their blocks into dw[], mw[] (gemm_tbs(T) bytes apart: one slot per tile row). */
AI void gemm_unpack_row(const int T, const uint8_t *row, int64_t g0, int ng, __m256i *out,
                        float *dw, float *mw)
{
    const size_t tstride = gemm_tbs(T) / 4; /* floats between blocks in the tile */
    if (T == BT_Q4_K || T == BT_Q5_K) {
        const size_t bs = T == BT_Q4_K ? 144 : 176;
        for (int g = 0; g < ng; g += 8) {
            const uint8_t *blk = row + (size_t)((g0 + g) / 8) * bs;
            const float d = h2f(blk), dmin = h2f(blk + 2);
            uint64_t sc, mn;
            kscales(blk + 4, &sc, &mn);
            for (int j = 0; j < 4; j++) unpack_k4(T, blk, j, &out[g + 2 * j], &out[g + 2 * j + 1]);
            for (int j = 0; j < 8; j++) {
                dw[(size_t)(g + j) * tstride] = d * (float)((sc >> (8 * j)) & 0xff);
                mw[(size_t)(g + j) * tstride] = -dmin * (float)((mn >> (8 * j)) & 0xff);
            }
        }
    } else if (T == BT_Q6_K) {
        for (int g = 0; g < ng; g += 8) {
            const uint8_t *blk = row + (size_t)((g0 + g) / 8) * 210;
            const float d = h2f(blk + 208);
            unpack_q6k(blk, 0, &out[g]);
            unpack_q6k(blk, 1, &out[g + 4]);
            for (int j = 0; j < 16; j++)
                dw[(size_t)(2 * g + j) * tstride] = d * (float)(int8_t)blk[192 + j];
        }
    } else {
        const size_t bs = bsize32(T);
        for (int g = 0; g < ng; g++) {
            const uint8_t *blk = row + (size_t)(g0 + g) * bs;
            out[g] = unpack32(T, blk);
            dw[(size_t)g * tstride] = h2f(blk);
            if (gemm_min(T)) mw[(size_t)g * tstride] = h2f(blk + 2);
        }
    }
}

/* The first half of gemm_repack: rows [0, nr) of the tile unpacked into tmp[GEMM_ROWS][GEMM_KC],
 * their scales into the tile's dw and mw slots (gemm_tbs); rows nr .. GEMM_ROWS - 1 zero. */
AI void gemm_unpack_rows(const int T, const uint8_t *W, size_t wrow, int64_t nr, int64_t g0, int ng,
                         uint8_t *tile, __m256i *tmp)
{
    const size_t tbs = gemm_tbs(T);
    const int nblk = ng * 32 / gemm_B(T);
    float *dw0 = (float *)(tile + (size_t)gemm_B(T) * GEMM_ROWS), *mw0 = dw0 + GEMM_ROWS;
    for (int r = 0; r < GEMM_ROWS; r++) {
        if (r < nr) {
            gemm_unpack_row(T, W + (size_t)r * wrow, g0, ng, tmp + r * GEMM_KC, dw0 + r, mw0 + r);
        } else {
            for (int g = 0; g < ng; g++) tmp[r * GEMM_KC + g] = _mm256_setzero_si256();
            for (int j = 0; j < nblk; j++) {
                dw0[(size_t)j * tbs / 4 + r] = 0.0f;
                if (gemm_min(T)) mw0[(size_t)j * tbs / 4 + r] = 0.0f;
            }
        }
    }
}

AI void gemm(const int T, const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
             const struct kern_act *L, int64_t nc, float *Y, int64_t ldy, void *scratch)
{
    const int B = gemm_B(T);
    const int64_t ngroups = L->n / 32;
    uint8_t *tile = scratch;
    __m256i *tmp = (__m256i *)((uint8_t *)scratch + gemm_tbs(T) * (GEMM_KC * 32 / 16));
    for (int64_t r0 = 0; r0 < nr; r0 += GEMM_ROWS) {
        const int64_t rows = nr - r0 < GEMM_ROWS ? nr - r0 : GEMM_ROWS;
        for (int64_t g0 = 0; g0 < ngroups; g0 += GEMM_KC) {
            const int ng = ngroups - g0 < GEMM_KC ? (int)(ngroups - g0) : GEMM_KC;
            const int nblk = ng * 32 / B;
            kern_gemm_prefetch(W, wrow, nr, ngroups, GEMM_ROWS, GEMM_KC, r0, g0);
            gemm_repack(T, W + (size_t)r0 * wrow, wrow, rows, g0, ng, tile, tmp);
            const bool add = g0 > 0;
            const int64_t j0 = g0 * 32 / B;
            int64_t c = 0;
            for (; c + GEMM_NC <= nc; c += GEMM_NC)
                gemm_micro(T, GEMM_NC, tile, nblk, j0, act + (size_t)c * L->stride, L,
                           Y + c * ldy + r0, ldy, rows, add);
            /* the rest one by one: keeps the code (and its compile time) small */
            for (; c < nc; c++)
                gemm_micro(T, 1, tile, nblk, j0, act + (size_t)c * L->stride, L, Y + c * ldy + r0,
                           ldy, rows, add);
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* entry points (kern_mv_fn, kern_gemm_fn) and their tables                                  */

/* A kern_mv_fn `name` (with function attributes attr) running CALL(NC) for 1, 2 or 4 activation
 * rows per pass (3 = 2 + 1: fewer variants, less code). CALL uses the arguments by name. */
#define MV_ENTRY_ATTR(name, CALL, attr)                                                            \
    static attr void name(const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,           \
                          const struct kern_act *L, int nc, float *Y, int64_t ldy)                 \
    {                                                                                              \
        if (nc >= 4) {                                                                             \
            CALL(4);                                                                               \
            return;                                                                                \
        }                                                                                          \
        if (nc >= 2) {                                                                             \
            CALL(2);                                                                               \
            act += 2 * L->stride;                                                                  \
            Y += 2 * ldy;                                                                          \
            nc -= 2;                                                                               \
        }                                                                                          \
        if (nc == 1) CALL(1);                                                                      \
    }
#define MV_ENTRY(name, CALL) MV_ENTRY_ATTR(name, CALL, )

#define C_Q4_0(NC) mv32(BT_Q4_0, NC, W, wrow, nr, act, L, Y, ldy)
#define C_Q4_1(NC) mv32(BT_Q4_1, NC, W, wrow, nr, act, L, Y, ldy)
#define C_Q5_0(NC) mv32(BT_Q5_0, NC, W, wrow, nr, act, L, Y, ldy)
#define C_Q5_1(NC) mv32(BT_Q5_1, NC, W, wrow, nr, act, L, Y, ldy)
#define C_Q8_0(NC) mv32(BT_Q8_0, NC, W, wrow, nr, act, L, Y, ldy)
#define C_Q4_K(NC) mv_k45(BT_Q4_K, NC, W, wrow, nr, act, L, Y, ldy)
#define C_Q5_K(NC) mv_k45(BT_Q5_K, NC, W, wrow, nr, act, L, Y, ldy)
#define C_Q6_K(NC) mv_q6k(NC, W, wrow, nr, act, L, Y, ldy)
#define C_F32(NC)  mv_float(BT_F32, NC, W, wrow, nr, act, L, Y, ldy)
#define C_F16(NC)  mv_float(BT_F16, NC, W, wrow, nr, act, L, Y, ldy)
#define C_BF16(NC) mv_float(BT_BF16, NC, W, wrow, nr, act, L, Y, ldy)

MV_ENTRY(mv_q4_0, C_Q4_0)
MV_ENTRY(mv_q4_1, C_Q4_1)
MV_ENTRY(mv_q5_0, C_Q5_0)
MV_ENTRY(mv_q5_1, C_Q5_1)
MV_ENTRY(mv_q8_0, C_Q8_0)
MV_ENTRY(mv_q4_k, C_Q4_K)
MV_ENTRY(mv_q5_k, C_Q5_K)
MV_ENTRY(mv_q6_k, C_Q6_K)
MV_ENTRY(mv_f32, C_F32)
MV_ENTRY(mv_f16, C_F16)
MV_ENTRY(mv_bf16, C_BF16)

#define GEMM_ENTRY(name, F, T)                                                                     \
    static void name(const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,                \
                     const struct kern_act *L, int64_t nc, float *Y, int64_t ldy, void *scratch)   \
    {                                                                                              \
        F(T, W, wrow, nr, act, L, nc, Y, ldy, scratch);                                            \
    }
GEMM_ENTRY(gemm_q4_0, gemm, BT_Q4_0)
GEMM_ENTRY(gemm_q4_1, gemm, BT_Q4_1)
GEMM_ENTRY(gemm_q5_0, gemm, BT_Q5_0)
GEMM_ENTRY(gemm_q5_1, gemm, BT_Q5_1)
GEMM_ENTRY(gemm_q8_0, gemm, BT_Q8_0)
GEMM_ENTRY(gemm_q4_k, gemm, BT_Q4_K)
GEMM_ENTRY(gemm_q5_k, gemm, BT_Q5_K)
GEMM_ENTRY(gemm_q6_k, gemm, BT_Q6_K)
GEMM_ENTRY(fgemm_f32, fgemm, BT_F32)
GEMM_ENTRY(fgemm_f16, fgemm, BT_F16)

/* kern_ops.mv and kern_ops.gemm of the entry points above */
#define X86_MV_TABLE                                                                               \
    {                                                                                              \
        [BT_F32] = mv_f32, [BT_F16] = mv_f16, [BT_BF16] = mv_bf16, [BT_Q4_0] = mv_q4_0,            \
        [BT_Q4_1] = mv_q4_1, [BT_Q5_0] = mv_q5_0, [BT_Q5_1] = mv_q5_1, [BT_Q8_0] = mv_q8_0,        \
        [BT_Q4_K] = mv_q4_k, [BT_Q5_K] = mv_q5_k, [BT_Q6_K] = mv_q6_k,                             \
    }
#define X86_GEMM_TABLE                                                                             \
    {                                                                                              \
        [BT_Q4_0] = gemm_q4_0, [BT_Q4_1] = gemm_q4_1, [BT_Q5_0] = gemm_q5_0,                       \
        [BT_Q5_1] = gemm_q5_1, [BT_Q8_0] = gemm_q8_0, [BT_Q4_K] = gemm_q4_k,                       \
        [BT_Q5_K] = gemm_q5_k, [BT_Q6_K] = gemm_q6_k, [BT_F32] = fgemm_f32, [BT_F16] = fgemm_f16,  \
    }

#endif
