/* kernels_avx512: AVX-512 (F, BW, VL, DQ, VNNI; BF16 when the CPU has it) kernels.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni (meson.build); only
 * called after kernels.c has checked the CPU (the BF16 functions carry their own target
 * attribute and are installed only if the CPU has AVX512_BF16). Integer dot products use
 * vpdpbusd (unsigned weight bytes x signed activation bytes): every weight type is brought to
 * unsigned bytes q + off (off = 8 for Q4_0, 16 for Q5_0, 128 for Q8_0, 32 for Q6_K, 0 for types
 * with a min), and the activations carry -off * sum(a) per block (see kernels_isa.h), so the
 * integer parts are exact.
 *
 * matvec (mv_*), one weight row at a time against 1, 2 or 4 activation rows:
 *  - 32-blocks: the f16 scales of a group of blocks are fetched with one word permute and
 *    multiplied by the activation scales while the previous group is computed; Q4_0 / Q4_1 take
 *    four blocks per zmm against an interleaved activation layout, Q8_0 two blocks per zmm;
 *  - K-quants: sub-block scales applied in integers (vpmaddwd), one float fma per super-block;
 *  - float types: f32 FMAs (F16 converted with vcvtph2ps), BF16 with vdpbf16ps;
 *  - row results are reduced 8 rows at a time.
 * gemm_*: 32 weight rows are unpacked and transposed ("repacked") into a small tile so that one
 * zmm holds 4 consecutive bytes of 16 rows; the microkernel broadcasts 4 activation bytes per
 * column and accumulates 2 x 16 rows x 4 columns in registers, the tile reused for all columns.
 * fgemm_*: the same with f32 (F32, F16) or bf16 pairs (BF16) and 8 columns.
 * What this file shares with kernels_avx2.c (helpers, the gemm loop, the entry points mv_* and
 * gemm_*) is in kernels_x86.h. Thread-safe: pure functions of their arguments. */
#define GEMM_ROWS 32 /* weight rows per gemm tile: two zmm of 16 lanes */
#include "kernels_x86.h"

#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                   */

AI __m512i load_words(const uint8_t *p, int nwords)
{
    const __mmask32 k = nwords >= 32  ? (__mmask32)0xffffffffu
                        : nwords <= 0 ? (__mmask32)0
                                      : (__mmask32)((1u << nwords) - 1);
    return _mm512_maskz_loadu_epi16(k, p);
}

/* The f16 scale d (at byte 0) and, with has_min, m (at byte 2) of g consecutive blocks of bs
 * bytes at p, as floats: lanes 0..7 d, lanes 8..15 m (0 beyond g). One word permute over a
 * 128-byte window; the loads stop at the last byte needed. Needs (g - 1) * bs + 4 <= 128. */
AI __m512 gather_dm(const uint8_t *p, size_t bs, int g, bool has_min)
{
    const int h = (int)bs / 2;
    const __m512i idx = _mm512_zextsi256_si512(_mm256_setr_epi16(
        0, (short)h, (short)(2 * h), (short)(3 * h), (short)(4 * h), (short)(5 * h), (short)(6 * h),
        (short)(7 * h), 1, (short)(h + 1), (short)(2 * h + 1), (short)(3 * h + 1),
        (short)(4 * h + 1), (short)(5 * h + 1), (short)(6 * h + 1), (short)(7 * h + 1)));
    const __mmask32 lanes = (__mmask32)(((1u << g) - 1) * (has_min ? 0x101u : 1u));
    __m512i a0, a1;
    if (g * (int)bs >= 128) { /* a full group: the 128 bytes lie within its blocks */
        a0 = _mm512_loadu_si512(p);
        a1 = _mm512_loadu_si512(p + 64);
    } else {
        const int nw = ((g - 1) * (int)bs + (has_min ? 4 : 2)) / 2;
        a0 = load_words(p, nw);
        a1 = load_words(p + 64, nw - 32);
    }
    __m512i r = _mm512_maskz_permutex2var_epi16(lanes, a0, idx, a1);
    return _mm512_cvtph_ps(_mm512_castsi512_si256(r));
}

/* lane k = sum of the lanes of v[k] (8 vectors) */
AI __m256 reduce8_ps(const __m256 *v)
{
    __m256 h01 = _mm256_hadd_ps(v[0], v[1]), h23 = _mm256_hadd_ps(v[2], v[3]);
    __m256 h45 = _mm256_hadd_ps(v[4], v[5]), h67 = _mm256_hadd_ps(v[6], v[7]);
    __m256 q0 = _mm256_hadd_ps(h01, h23), q1 = _mm256_hadd_ps(h45, h67);
    return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                         _mm256_permute2f128_ps(q0, q1, 0x31));
}

/* Row results of the matvec kernels, reduced 8 rows at a time (one transposing reduction and
 * one store instead of 8 horizontal sums): put row r's NC partial-sum vectors; flushes to
 * Y[c * ldy + r] after every 8th row and after the last. */
struct rowacc {
    __m256 v[KERN_MV_COLS][8];
};

AI void rowacc_put(struct rowacc *ra, const int NC, int64_t r, int64_t nr, const __m256 *t,
                   float *Y, int64_t ldy)
{
    const int k = (int)(r & 7);
    for (int c = 0; c < NC; c++) ra->v[c][k] = t[c];
    if (k != 7 && r != nr - 1) return;
    for (int c = 0; c < NC; c++) {
        for (int i = k + 1; i < 8; i++) ra->v[c][i] = _mm256_setzero_ps();
        _mm256_mask_storeu_ps(Y + c * ldy + (r - k), (__mmask8)((2u << k) - 1),
                              reduce8_ps(ra->v[c]));
    }
}

/* rowacc_put of NC sums of NA zmm accumulators each */
AI void rowacc_put_zmm(struct rowacc *ra, const int NC, const int NA, int64_t r, int64_t nr,
                       __m512 (*acc)[4], float *Y, int64_t ldy)
{
    __m256 t[KERN_MV_COLS];
    for (int c = 0; c < NC; c++) {
        __m512 z = acc[c][0];
        for (int a = 1; a < NA; a++) z = _mm512_add_ps(z, acc[c][a]);
        t[c] = _mm256_add_ps(_mm512_castps512_ps256(z), _mm512_extractf32x8_ps(z, 1));
    }
    rowacc_put(ra, NC, r, nr, t, Y, ldy);
}

AI __m256i dot_u8s8(__m256i acc, __m256i w, const int8_t *a)
{
    return _mm256_dpbusd_epi32(acc, w, _mm256_loadu_si256((const __m256i *)a));
}

/* ---------------------------------------------------------------------------------------- */
/* activation conversion (bit-identical to the reference quantisers in quant.c)              */

/* (int)roundf(v) (ties away from zero) for |v| < 2^22: trunc(v + copysign(0.5 - 2^-25, v)) is
 * exact there (checked exhaustively for |v| <= 128, the range used here). */
AI __m512i round_away_i32(__m512 v)
{
    const __m512i c = _mm512_castps_si512(_mm512_set1_ps(0.49999997f));
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    /* (v & sign) | c */
    __m512 h =
        _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(v), sign, c, 0xEA));
    return _mm512_cvttps_epi32(_mm512_add_ps(v, h));
}

/* lane k of the result = reduction of v[k] over its 16 lanes (op: 0 max_ps, 1 add_epi32) */
AI __m512i reduce16(__m512i *v, const int op)
{
#define RED(a, b)                                                                                  \
    (op == 0 ? _mm512_castps_si512(_mm512_max_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b)))  \
             : _mm512_add_epi32(a, b))
    for (int i = 0; i < 8; i++) {
        __m512i a = v[2 * i], b = v[2 * i + 1];
        v[i] = RED(_mm512_mask_shuffle_epi32(a, 0xAAAA, b, _MM_PERM_CDAB),
                   _mm512_mask_shuffle_epi32(b, 0x5555, a, _MM_PERM_CDAB));
    }
    for (int i = 0; i < 4; i++) {
        __m512i a = v[2 * i], b = v[2 * i + 1];
        v[i] = RED(_mm512_mask_shuffle_epi32(a, 0xCCCC, b, _MM_PERM_BADC),
                   _mm512_mask_shuffle_epi32(b, 0x3333, a, _MM_PERM_BADC));
    }
    for (int i = 0; i < 2; i++) {
        __m512i a = v[2 * i], b = v[2 * i + 1];
        v[i] = RED(_mm512_mask_shuffle_i32x4(a, 0xF0F0, b, b, 0xB1),
                   _mm512_mask_shuffle_i32x4(b, 0x0F0F, a, a, 0xB1));
    }
    return RED(_mm512_mask_shuffle_i32x4(v[0], 0xFF00, v[1], v[1], 0x4E),
               _mm512_mask_shuffle_i32x4(v[1], 0x00FF, v[0], v[0], 0x4E));
#undef RED
}

/* Q8_0 / Q8_1 numerics, 16 blocks of 32 at a time (nb16 <= 16 blocks; the rest are zero).
 * ilv_end: blocks below it are stored interleaved in groups of ilv (kern_act.ilv). */
AI void quant_q8_01_16(const float *x, int nb16, int8_t *q, float *d, int32_t *corr, float *s,
                       int off, bool q81, int ilv, int ilv_end)
{
    __m512i v[16];
    for (int k = 0; k < 16; k++) {
        if (k < nb16) {
            __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + 32 * k));
            __m512 b = _mm512_abs_ps(_mm512_loadu_ps(x + 32 * k + 16));
            v[k] = _mm512_castps_si512(_mm512_max_ps(a, b));
        } else {
            v[k] = _mm512_setzero_si512();
        }
    }
    const __m512 amax = _mm512_castsi512_ps(reduce16(v, 0));
    const __m512 dd = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
    const __mmask16 nz = _mm512_cmp_ps_mask(dd, _mm512_setzero_ps(), _CMP_NEQ_OQ);
    const __m512 id = _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0f), dd);
    float ids[16] __attribute__((aligned(64)));
    _mm512_store_ps(ids, id);
    for (int k = 0; k < nb16; k++) {
        const __m512 vid = _mm512_set1_ps(ids[k]);
        __m512i i0 = round_away_i32(_mm512_mul_ps(_mm512_loadu_ps(x + 32 * k), vid));
        __m512i i1 = round_away_i32(_mm512_mul_ps(_mm512_loadu_ps(x + 32 * k + 16), vid));
        /* the reference clamps to [-128, 127]; saturation does the same */
        __m128i b0 = _mm512_cvtsepi32_epi8(i0), b1 = _mm512_cvtsepi32_epi8(i1);
        int8_t *lo = q + 32 * k, *hi = lo + 16;
        if (k < ilv_end) {
            lo = q + 32 * ilv * (k / ilv) + 16 * (k % ilv);
            hi = lo + 16 * ilv;
        }
        _mm_storeu_si128((__m128i *)lo, b0);
        _mm_storeu_si128((__m128i *)hi, b1);
        v[k] = _mm512_add_epi32(_mm512_cvtepi8_epi32(b0), _mm512_cvtepi8_epi32(b1));
    }
    for (int k = nb16; k < 16; k++) v[k] = _mm512_setzero_si512();
    const __m512i sum = reduce16(v, 1);
    const __m512 sumf = _mm512_cvtepi32_ps(sum);
    const __m512 dr = _mm512_cvtph_ps(_mm512_cvtps_ph(dd, _MM_FROUND_TO_NEAREST_INT));
    const __m512 sv =
        q81 ? _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_mul_ps(sumf, dd), _MM_FROUND_TO_NEAREST_INT))
            : _mm512_mul_ps(dr, sumf);
    const __mmask16 km = nb16 >= 16 ? 0xffff : (__mmask16)((1u << nb16) - 1);
    _mm512_mask_storeu_ps(d, km, dr);
    _mm512_mask_storeu_ps(s, km, sv);
    _mm512_mask_storeu_epi32(corr, km, _mm512_mullo_epi32(sum, _mm512_set1_epi32(-off)));
}

static void quant_q8_01(const float *x, uint8_t *dst, const struct kern_act *L)
{
    int8_t *q = (int8_t *)dst;
    float *d = (float *)(dst + L->off_d), *s = (float *)(dst + L->off_s);
    int32_t *corr = (int32_t *)(dst + L->off_corr);
    const bool q81 = L->kind == KACT_Q8_1;
    for (int64_t b = 0; b < L->nb; b += 16) {
        const int nb16 = L->nb - b < 16 ? (int)(L->nb - b) : 16;
        const int ilv = L->ilv > 1 ? L->ilv : 1; /* 1, 2 or 4: groups never straddle 16 */
        quant_q8_01_16(x + 32 * b, nb16, q + 32 * b, d + b, corr + b, s + b, L->off, q81, ilv,
                       ilv > 1 ? nb16 / ilv * ilv : 0);
    }
}

/* quant_q8_k's hooks (kernels_x86.h) */
AI float q8k_absmax(const float *x)
{
    __m512 am = _mm512_setzero_ps();
    for (int k = 0; k < 16; k++) am = _mm512_max_ps(am, _mm512_abs_ps(_mm512_loadu_ps(x + 16 * k)));
    return _mm512_reduce_max_ps(am);
}

AI float q8k_first_of_abs(const float *x, float amax)
{
    const __m512 vam = _mm512_set1_ps(amax);
    for (int k = 0; k < 16; k++) {
        __mmask16 m =
            _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + 16 * k)), vam, _CMP_EQ_OQ);
        if (m) return x[16 * k + __builtin_ctz(m)];
    }
    return 0.0f;
}

AI void q8k_quantize(const float *x, float iscale, int8_t *q, int *sum16)
{
    const __m512 vis = _mm512_set1_ps(iscale);
    const __m512i v127 = _mm512_set1_epi32(127);
    __m512i v[16];
    for (int k = 0; k < 16; k++) {
        /* nearest_int: round to nearest even, as cvtps does by default */
        __m512i t = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * k), vis));
        t = _mm512_min_epi32(t, v127);
        __m128i b8 = _mm512_cvtsepi32_epi8(t);
        _mm_storeu_si128((__m128i *)(q + 16 * k), b8);
        v[k] = _mm512_cvtepi8_epi32(b8);
    }
    _mm512_store_si512(sum16, reduce16(v, 1));
}

static void quant_f16(const float *x, uint8_t *dst, const struct kern_act *L)
{
    float *y = (float *)dst;
    int64_t i = 0;
    for (; i + 16 <= L->n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(x + i),
                                                                _MM_FROUND_TO_NEAREST_INT)));
    if (i < L->n) {
        __mmask16 k = (__mmask16)((1u << (L->n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, k,
                              _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_maskz_loadu_ps(k, x + i),
                                                              _MM_FROUND_TO_NEAREST_INT)));
    }
}

/* round to nearest even like bt_f32_to_bf16 (NaN quietened) */
AI __m256i f32_to_bf16_16(__m512 v)
{
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(64));
    return _mm512_cvtepi32_epi16(r);
}

static void quant_bf16(const float *x, uint8_t *dst, const struct kern_act *L)
{
    uint16_t *y = (uint16_t *)dst;
    int64_t i = 0;
    for (; i + 16 <= L->n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i), f32_to_bf16_16(_mm512_loadu_ps(x + i)));
    if (i < L->n) {
        __mmask16 k = (__mmask16)((1u << (L->n - i)) - 1);
        _mm256_mask_storeu_epi16(y + i, k, f32_to_bf16_16(_mm512_maskz_loadu_ps(k, x + i)));
    }
    if (L->n & 1) y[L->n] = 0; /* the gemm reads values in pairs */
}

/* ---------------------------------------------------------------------------------------- */
/* weights of the 32-blocks as unsigned bytes (q + off), natural order                      */

/* blocks whose scales one gather_dm fetches */
AI int mv_group(const int T)
{
    return T == BT_Q4_0 ? 8 : T == BT_Q4_1 ? 7 : T == BT_Q8_0 ? 4 : 6;
}

AI __m256i unpack32(const int T, const uint8_t *blk)
{
    switch (T) {
    case BT_Q4_0:
        return nibbles32(blk + 2);
    case BT_Q4_1:
        return nibbles32(blk + 4);
    case BT_Q5_0: {
        __m256i v = nibbles32(blk + 6);
        return _mm256_mask_add_epi8(v, (__mmask32)ld32(blk + 2), v, _mm256_set1_epi8(16));
    }
    case BT_Q5_1: {
        __m256i v = nibbles32(blk + 8);
        return _mm256_mask_add_epi8(v, (__mmask32)ld32(blk + 4), v, _mm256_set1_epi8(16));
    }
    default: /* Q8_0 */
        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)),
                                _mm256_set1_epi8((char)0x80));
    }
}

/* ---------------------------------------------------------------------------------------- */
/* matvec, 32-blocks                                                                         */

/* scales d_w * d_x of the group of g blocks at b0 (lanes >= g zero), and the offset / min
 * corrections added to cacc */
AI void mv32_scales(const int T, const int NC, const uint8_t *row, int64_t b0, int g,
                    const uint8_t *act, const struct kern_act *L, __m256 *sc, __m256 *cacc)
{
    const size_t bs = bsize32(T);
    const bool has_min = T == BT_Q4_1 || T == BT_Q5_1;
    const __mmask8 km = (__mmask8)((1u << g) - 1);
    const __m512 dm = gather_dm(row + (size_t)b0 * bs, bs, g, has_min);
    const __m256 dw = _mm512_castps512_ps256(dm);
    for (int c = 0; c < NC; c++) {
        const uint8_t *ar = act + (size_t)c * L->stride;
        sc[c] = _mm256_mul_ps(dw, _mm256_maskz_loadu_ps(km, (const float *)(ar + L->off_d) + b0));
        if (!has_min)
            cacc[c] = _mm256_fmadd_ps(sc[c],
                                      _mm256_cvtepi32_ps(_mm256_maskz_loadu_epi32(
                                          km, (const int32_t *)(ar + L->off_corr) + b0)),
                                      cacc[c]);
        else
            cacc[c] = _mm256_fmadd_ps(
                _mm512_extractf32x8_ps(dm, 1),
                _mm256_maskz_loadu_ps(km, (const float *)(ar + L->off_s) + b0), cacc[c]);
    }
}

/* one weight row x NC activation rows: the row's NC partial-sum vectors into out[]. The scales
 * of the next group of blocks are computed while the current one is processed, and broadcast
 * from registers. */
AI void mv32_row(const int T, const int NC, const uint8_t *row, const uint8_t *act,
                 const struct kern_act *L, __m256 *out, struct kern_pf *pf)
{
    const size_t bs = bsize32(T);
    const int NA = NC == 1 ? 4 : NC == 2 ? 2 : 1;
    const int64_t nb = L->nb;
    __m256 acc[KERN_MV_COLS][4], cacc[KERN_MV_COLS], sc[KERN_MV_COLS], scn[KERN_MV_COLS];
    for (int c = 0; c < NC; c++) {
        cacc[c] = scn[c] = _mm256_setzero_ps();
        for (int a = 0; a < NA; a++) acc[c][a] = _mm256_setzero_ps();
    }
    const int G = mv_group(T);
    mv32_scales(T, NC, row, 0, nb < G ? (int)nb : G, act, L, sc, cacc);
    int64_t b = 0;
    for (; b + G <= nb; b += G) {
        kern_pf_to(pf, row + (size_t)(b + G) * bs);
        if (b + G < nb) {
            const int gn = nb - (b + G) < G ? (int)(nb - (b + G)) : G;
            mv32_scales(T, NC, row, b + G, gn, act, L, scn, cacc);
        }
#pragma GCC unroll 8
        for (int i = 0; i < G; i++) {
            const __m256i w = unpack32(T, row + (size_t)(b + i) * bs);
            for (int c = 0; c < NC; c++) {
                const int8_t *a = (const int8_t *)(act + (size_t)c * L->stride) + 32 * (b + i);
                __m256i p = dot_u8s8(_mm256_setzero_si256(), w, a);
                acc[c][i % NA] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                                 _mm256_permutexvar_ps(_mm256_set1_epi32(i), sc[c]),
                                                 acc[c][i % NA]);
            }
        }
        for (int c = 0; c < NC; c++) sc[c] = scn[c];
    }
    for (int i = 0; b + i < nb; i++) {
        const __m256i w = unpack32(T, row + (size_t)(b + i) * bs);
        for (int c = 0; c < NC; c++) {
            const int8_t *a = (const int8_t *)(act + (size_t)c * L->stride) + 32 * (b + i);
            __m256i p = dot_u8s8(_mm256_setzero_si256(), w, a);
            acc[c][0] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                _mm256_permutexvar_ps(_mm256_set1_epi32(i), sc[c]), acc[c][0]);
        }
    }
    for (int c = 0; c < NC; c++) {
        __m256 t = cacc[c];
        for (int a = 0; a < NA; a++) t = _mm256_add_ps(t, acc[c][a]);
        out[c] = t;
    }
}

/* Interleaved matvec for Q4_0 and Q4_1 (for Q5_* the high bits cost what it saves): the
 * nibbles of blocks b .. b + 3 side by side in one zmm (low nibbles) and its shift (high ones),
 * against the act layout with ilv = 4: one unpack, two dpbusd, one convert and one fma per four
 * blocks; lanes 4i .. 4i + 3 belong to block b + i. */
AI int mvq_group(const int T)
{
    return T == BT_Q4_0 ? 8 : 4; /* a multiple of 4, and within one gather_dm */
}

AI void unpack_quad(const int T, const uint8_t *blk, size_t bs, __m512i *lo, __m512i *hi)
{
    const int qo = T == BT_Q4_0 ? 2 : 4;
    const __m256i q01 =
        _mm256_loadu2_m128i((const __m128i *)(blk + bs + qo), (const __m128i *)(blk + qo));
    const __m256i q23 = _mm256_loadu2_m128i((const __m128i *)(blk + 3 * bs + qo),
                                            (const __m128i *)(blk + 2 * bs + qo));
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(q01), q23, 1);
    const __m512i m4 = _mm512_set1_epi8(15);
    *lo = _mm512_and_si512(q, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
}

/* blocks i .. i + 3 of the group (their scales in lanes i .. i + 3 of sc) */
AI void mv32q_quad(const int T, const int NC, const uint8_t *blk, size_t bs, const uint8_t *act,
                   const struct kern_act *L, int64_t b, int i, const __m256 *sc, __m512 *acc)
{
    __m512i lo, hi;
    unpack_quad(T, blk, bs, &lo, &hi);
    const __m512i idx = _mm512_setr_epi32(i, i, i, i, i + 1, i + 1, i + 1, i + 1, i + 2, i + 2,
                                          i + 2, i + 2, i + 3, i + 3, i + 3, i + 3);
    for (int c = 0; c < NC; c++) {
        const int8_t *a = (const int8_t *)(act + (size_t)c * L->stride) + 32 * b;
        __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(a));
        p = _mm512_dpbusd_epi32(p, hi, _mm512_loadu_si512(a + 64));
        acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p),
                                 _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(sc[c])), acc[c]);
    }
}

/* Q8_0: two blocks per zmm (one 512-bit vpdpbusd, convert and fma per two blocks) against the
 * act row in natural order; lanes 0-7 belong to block b, 8-15 to block b + 1. */
AI void mv32d_pair(const int NC, const uint8_t *blk, const uint8_t *act, const struct kern_act *L,
                   int64_t b, int i, const __m256 *sc, __m512 *acc)
{
    const size_t bs = bsize32(BT_Q8_0);
    const __m512i q =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(blk + 2))),
                           _mm256_loadu_si256((const __m256i *)(blk + bs + 2)), 1);
    const __m512i w = _mm512_xor_si512(q, _mm512_set1_epi8((char)0x80));
    const __m512i idx = _mm512_setr_epi32(i, i, i, i, i, i, i, i, i + 1, i + 1, i + 1, i + 1, i + 1,
                                          i + 1, i + 1, i + 1);
    for (int c = 0; c < NC; c++) {
        const int8_t *a = (const int8_t *)(act + (size_t)c * L->stride) + 32 * b;
        const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(a));
        acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p),
                                 _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(sc[c])), acc[c]);
    }
}

/* blocks i .. i + S - 1 of the group, S = mvw_step(T) */
AI void mvw_step_blocks(const int T, const int NC, const uint8_t *blk, size_t bs,
                        const uint8_t *act, const struct kern_act *L, int64_t b, int i,
                        const __m256 *sc, __m512 *acc)
{
    if (T == BT_Q8_0)
        mv32d_pair(NC, blk, act, L, b, i, sc, acc);
    else
        mv32q_quad(T, NC, blk, bs, act, L, b, i, sc, acc);
}

AI int mvw_step(const int T)
{
    return T == BT_Q8_0 ? 2 : 4;
}

/* One weight row of the types with several blocks per zmm: Q4_0 / Q4_1 four (mv32q_quad, against
 * the ilv = 4 act layout), Q8_0 two (mv32d_pair, natural order). Blocks left over at the end (for
 * Q4_*: those after the last interleaved group of four) go one at a time. */
AI void mv32w_row(const int T, const int NC, const uint8_t *row, const uint8_t *act,
                  const struct kern_act *L, __m256 *out, struct kern_pf *pf)
{
    const size_t bs = bsize32(T);
    const int NA = NC == 1 ? 2 : 1;
    const int S = mvw_step(T);
    const int64_t nb = L->nb;
    const int64_t ns = T == BT_Q8_0 ? nb : nb & ~(int64_t)3; /* steps of S blocks end here */
    const int G = T == BT_Q8_0 ? mv_group(T) : mvq_group(T);
    __m512 acc[2][KERN_MV_COLS];
    __m256 cacc[KERN_MV_COLS], sc[KERN_MV_COLS], scn[KERN_MV_COLS];
    for (int c = 0; c < NC; c++) {
        cacc[c] = scn[c] = _mm256_setzero_ps();
        acc[0][c] = acc[1][c] = _mm512_setzero_ps();
    }
    mv32_scales(T, NC, row, 0, nb < G ? (int)nb : G, act, L, sc, cacc);
    int64_t b = 0;
    for (; b + G <= nb; b += G) {
        kern_pf_to(pf, row + (size_t)(b + G) * bs);
        if (b + G < nb) {
            const int gn = nb - (b + G) < G ? (int)(nb - (b + G)) : G;
            mv32_scales(T, NC, row, b + G, gn, act, L, scn, cacc);
        }
        for (int k = 0; k < G / S; k++)
            mvw_step_blocks(T, NC, row + (size_t)(b + S * k) * bs, bs, act, L, b + S * k, S * k, sc,
                            acc[k % NA]);
        for (int c = 0; c < NC; c++) sc[c] = scn[c];
    }
    /* the tail (fewer than G blocks): steps, then single blocks in natural order */
    int i = 0;
    for (; b + i + S <= ns; i += S)
        mvw_step_blocks(T, NC, row + (size_t)(b + i) * bs, bs, act, L, b + i, i, sc, acc[0]);
    __m256 t1[KERN_MV_COLS];
    for (int c = 0; c < NC; c++) t1[c] = _mm256_setzero_ps();
    for (; b + i < nb; i++) {
        const __m256i w = unpack32(T, row + (size_t)(b + i) * bs);
        for (int c = 0; c < NC; c++) {
            const int8_t *a = (const int8_t *)(act + (size_t)c * L->stride) + 32 * (b + i);
            __m256i p = dot_u8s8(_mm256_setzero_si256(), w, a);
            t1[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                    _mm256_permutexvar_ps(_mm256_set1_epi32(i), sc[c]), t1[c]);
        }
    }
    for (int c = 0; c < NC; c++) {
        __m512 z = acc[0][c];
        if (NA > 1) z = _mm512_add_ps(z, acc[1][c]);
        out[c] =
            _mm256_add_ps(_mm256_add_ps(cacc[c], t1[c]),
                          _mm256_add_ps(_mm512_castps512_ps256(z), _mm512_extractf32x8_ps(z, 1)));
    }
}

AI void mv32(const int T, const int NC, const uint8_t *W, size_t wrow, int64_t nr,
             const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy)
{
    struct rowacc ra;
    struct kern_pf pf;
    kern_pf_init(&pf, W);
    for (int64_t r = 0; r < nr; r++) {
        __m256 t[KERN_MV_COLS];
        if (T == BT_Q4_0 || T == BT_Q4_1 || T == BT_Q8_0)
            mv32w_row(T, NC, W + (size_t)r * wrow, act, L, t, &pf);
        else
            mv32_row(T, NC, W + (size_t)r * wrow, act, L, t, &pf);
        rowacc_put(&ra, NC, r, nr, t, Y, ldy);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* matvec, K-quants                                                                          */

AI void unpack_k5_high(const uint8_t *qhp, int j, __m256i *lo, __m256i *hi)
{
    __m256i qh = _mm256_loadu_si256((const __m256i *)qhp);
    const __m256i s16 = _mm256_set1_epi8(16);
    __mmask32 k0 = _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << (2 * j))));
    __mmask32 k1 = _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(2 << (2 * j))));
    *lo = _mm256_mask_add_epi8(*lo, k0, *lo, s16);
    *hi = _mm256_mask_add_epi8(*hi, k1, *hi, s16);
}

/* Q4_K / Q5_K: the 6-bit sub-block scales are applied in integers (two sub-blocks' dot
 * products packed to int16 and multiplied by their scales with vpmaddwd), one convert and one
 * fma per super-block; the mins through the activation sums, in float. */
AI void mv_k45(const int T, const int NC, const uint8_t *W, size_t wrow, int64_t nr,
               const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy)
{
    const size_t bs = T == BT_Q4_K ? 144 : 176;
    const int64_t nsb = L->n / QK_K;
    const int NA = NC == 1 ? 2 : 1;
    struct rowacc ra;
    struct kern_pf pf;
    kern_pf_init(&pf, W);
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *row = W + (size_t)r * wrow;
        __m256 acc[KERN_MV_COLS][2], cacc[KERN_MV_COLS];
        for (int c = 0; c < NC; c++) cacc[c] = acc[c][0] = acc[c][1] = _mm256_setzero_ps();
        for (int64_t i = 0; i < nsb; i++) {
            const uint8_t *blk = row + (size_t)i * bs;
            kern_pf_to(&pf, blk + bs);
            const float d = h2f(blk), dmin = h2f(blk + 2);
            uint64_t sc, mn;
            kscales(blk + 4, &sc, &mn);
            const __m256i scb = _mm256_set1_epi64x((long long)sc);
            const __m256 mnv = _mm256_mul_ps(u8x8_to_ps(mn), _mm256_set1_ps(-dmin));
            __m256i iacc[KERN_MV_COLS];
            for (int c = 0; c < NC; c++) {
                const uint8_t *ar = act + (size_t)c * L->stride;
                cacc[c] = _mm256_fmadd_ps(
                    mnv, _mm256_loadu_ps((const float *)(ar + L->off_s) + 8 * i), cacc[c]);
                iacc[c] = _mm256_setzero_si256();
            }
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                __m256i lo, hi;
                unpack_k4(T, blk, j, &lo, &hi);
                /* int16 lanes 0-3: scale of sub-block 2j, 4-7: of 2j + 1 (in each half) */
                const char s0 = (char)(2 * j), s1 = (char)(2 * j + 1), z = (char)0x80;
                const __m256i SC = _mm256_shuffle_epi8(
                    scb, _mm256_setr_epi8(s0, z, s0, z, s0, z, s0, z, s1, z, s1, z, s1, z, s1, z,
                                          s0, z, s0, z, s0, z, s0, z, s1, z, s1, z, s1, z, s1, z));
                for (int c = 0; c < NC; c++) {
                    const int8_t *a =
                        (const int8_t *)(act + (size_t)c * L->stride) + QK_K * i + 64 * j;
                    const __m256i p0 = dot_u8s8(_mm256_setzero_si256(), lo, a);
                    const __m256i p1 = dot_u8s8(_mm256_setzero_si256(), hi, a + 32);
                    iacc[c] = _mm256_add_epi32(iacc[c],
                                               _mm256_madd_epi16(_mm256_packs_epi32(p0, p1), SC));
                }
            }
            for (int c = 0; c < NC; c++) {
                const float dy = ((const float *)(act + (size_t)c * L->stride + L->off_d))[8 * i];
                acc[c][i % NA] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[c]),
                                                 _mm256_set1_ps(d * dy), acc[c][i % NA]);
            }
        }
        __m256 t[KERN_MV_COLS];
        for (int c = 0; c < NC; c++) {
            t[c] = cacc[c];
            for (int a = 0; a < NA; a++) t[c] = _mm256_add_ps(t[c], acc[c][a]);
        }
        rowacc_put(&ra, NC, r, nr, t, Y, ldy);
    }
}

/* Q6_K: as mv_k45, the int8 scales of the 16-value blocks applied in integers (vpmaddwd on the
 * dot products of two vectors packed to int16: |p| <= 4 * 63 * 127 fits); the offset of 32
 * through the activation sums, in float. */
AI void mv_q6k(const int NC, const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
               const struct kern_act *L, float *Y, int64_t ldy)
{
    const size_t bs = 210;
    const int64_t nsb = L->n / QK_K;
    const int NA = NC == 1 ? 2 : 1;
    struct rowacc ra;
    struct kern_pf pf;
    kern_pf_init(&pf, W);
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *row = W + (size_t)r * wrow;
        __m256 acc[KERN_MV_COLS][2];
        __m512 cacc[KERN_MV_COLS];
        for (int c = 0; c < NC; c++) {
            cacc[c] = _mm512_setzero_ps();
            acc[c][0] = acc[c][1] = _mm256_setzero_ps();
        }
        for (int64_t i = 0; i < nsb; i++) {
            const uint8_t *blk = row + (size_t)i * bs;
            kern_pf_to(&pf, blk + bs);
            const float d = h2f(blk + 208);
            const __m128i sc8 = _mm_loadu_si128((const __m128i *)(blk + 192));
            const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
            const __m512 scf = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc8));
            __m256i iacc[KERN_MV_COLS];
            float ddy[KERN_MV_COLS];
            for (int c = 0; c < NC; c++) {
                const uint8_t *ar = act + (size_t)c * L->stride;
                ddy[c] = d * ((const float *)(ar + L->off_d))[16 * i];
                cacc[c] = _mm512_fmadd_ps(_mm512_mul_ps(scf, _mm512_set1_ps(ddy[c])),
                                          _mm512_cvtepi32_ps(_mm512_loadu_si512(
                                              (const int32_t *)(ar + L->off_corr) + 16 * i)),
                                          cacc[c]);
                iacc[c] = _mm256_setzero_si256();
            }
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i v[4];
                unpack_q6k(blk, h, v);
#pragma GCC unroll 2
                for (int k = 0; k < 4; k += 2) {
                    /* v[k] covers blocks 8h + 2k, +1; v[k + 1] blocks 8h + 2k + 2, +3. packs puts
                     * lanes 0-3 of each in the low half, lanes 4-7 in the high half */
                    const short s0 = (short)(8 * h + 2 * k);
                    const __m256i SC = _mm256_permutexvar_epi16(
                        _mm256_setr_epi16(s0, s0, s0, s0, (short)(s0 + 2), (short)(s0 + 2),
                                          (short)(s0 + 2), (short)(s0 + 2), (short)(s0 + 1),
                                          (short)(s0 + 1), (short)(s0 + 1), (short)(s0 + 1),
                                          (short)(s0 + 3), (short)(s0 + 3), (short)(s0 + 3),
                                          (short)(s0 + 3)),
                        sc16);
                    for (int c = 0; c < NC; c++) {
                        const int8_t *a = (const int8_t *)(act + (size_t)c * L->stride) + QK_K * i +
                                          128 * h + 32 * k;
                        const __m256i p0 = dot_u8s8(_mm256_setzero_si256(), v[k], a);
                        const __m256i p1 = dot_u8s8(_mm256_setzero_si256(), v[k + 1], a + 32);
                        iacc[c] = _mm256_add_epi32(
                            iacc[c], _mm256_madd_epi16(_mm256_packs_epi32(p0, p1), SC));
                    }
                }
            }
            for (int c = 0; c < NC; c++)
                acc[c][i % NA] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[c]),
                                                 _mm256_set1_ps(ddy[c]), acc[c][i % NA]);
        }
        __m256 t[KERN_MV_COLS];
        for (int c = 0; c < NC; c++) {
            t[c] =
                _mm256_add_ps(_mm512_castps512_ps256(cacc[c]), _mm512_extractf32x8_ps(cacc[c], 1));
            for (int a = 0; a < NA; a++) t[c] = _mm256_add_ps(t[c], acc[c][a]);
        }
        rowacc_put(&ra, NC, r, nr, t, Y, ldy);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* matvec, float types                                                                       */

AI void mv_f32f16(const bool F16, const int NC, const uint8_t *W, size_t wrow, int64_t nr,
                  const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy)
{
    const int64_t n = L->n;
    const int NA = NC == 1 ? 4 : 2;
    const size_t es = F16 ? 2 : 4;
    struct rowacc ra;
    struct kern_pf pf;
    kern_pf_init(&pf, W);
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *row = W + (size_t)r * wrow;
        __m512 acc[KERN_MV_COLS][4];
        for (int c = 0; c < NC; c++)
            for (int a = 0; a < NA; a++) acc[c][a] = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 16 * NA <= n; k += 16 * NA) {
            kern_pf_to(&pf, row + (size_t)(k + 16 * NA) * es);
#pragma GCC unroll 4
            for (int a = 0; a < NA; a++) {
                __m512 w = F16 ? _mm512_cvtph_ps(_mm256_loadu_si256(
                                     (const __m256i *)((const uint16_t *)row + k + 16 * a)))
                               : _mm512_loadu_ps((const float *)row + k + 16 * a);
                for (int c = 0; c < NC; c++)
                    acc[c][a] = _mm512_fmadd_ps(
                        w,
                        _mm512_loadu_ps((const float *)(act + (size_t)c * L->stride) + k + 16 * a),
                        acc[c][a]);
            }
        }
        for (; k < n; k += 16) {
            const __mmask16 km = n - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - k)) - 1);
            __m512 w =
                F16 ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(km, (const uint16_t *)row + k))
                    : _mm512_maskz_loadu_ps(km, (const float *)row + k);
            for (int c = 0; c < NC; c++)
                acc[c][0] = _mm512_fmadd_ps(
                    w, _mm512_maskz_loadu_ps(km, (const float *)(act + (size_t)c * L->stride) + k),
                    acc[c][0]);
        }
        rowacc_put_zmm(&ra, NC, NA, r, nr, acc, Y, ldy);
    }
}

/* bf16 without AVX512_BF16: widen to f32 */
AI __m512 bf16_to_ps(__m256i v)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

AI void mv_bf16_cvt(const int NC, const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
                    const struct kern_act *L, float *Y, int64_t ldy)
{
    const int64_t n = L->n;
    struct rowacc ra;
    struct kern_pf pf;
    kern_pf_init(&pf, W);
    for (int64_t r = 0; r < nr; r++) {
        const uint16_t *row = (const uint16_t *)(W + (size_t)r * wrow);
        __m512 acc[KERN_MV_COLS][2];
        for (int c = 0; c < NC; c++) acc[c][0] = acc[c][1] = _mm512_setzero_ps();
        for (int64_t k = 0; k < n; k += 16) {
            kern_pf_to(&pf, (const uint8_t *)(row + k + 16));
            const __mmask16 km = n - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - k)) - 1);
            __m512 w = bf16_to_ps(_mm256_maskz_loadu_epi16(km, row + k));
            for (int c = 0; c < NC; c++) {
                const uint16_t *x = (const uint16_t *)(act + (size_t)c * L->stride);
                acc[c][(k >> 4) & 1] = _mm512_fmadd_ps(
                    w, bf16_to_ps(_mm256_maskz_loadu_epi16(km, x + k)), acc[c][(k >> 4) & 1]);
            }
        }
        __m256 t[KERN_MV_COLS];
        for (int c = 0; c < NC; c++) {
            __m512 z = _mm512_add_ps(acc[c][0], acc[c][1]);
            t[c] = _mm256_add_ps(_mm512_castps512_ps256(z), _mm512_extractf32x8_ps(z, 1));
        }
        rowacc_put(&ra, NC, r, nr, t, Y, ldy);
    }
}

/* the float types (BF16 without AVX512_BF16: mv_bf16_dp replaces it where the CPU has it) */
AI void mv_float(const int T, const int NC, const uint8_t *W, size_t wrow, int64_t nr,
                 const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy)
{
    if (T == BT_BF16)
        mv_bf16_cvt(NC, W, wrow, nr, act, L, Y, ldy);
    else
        mv_f32f16(T == BT_F16, NC, W, wrow, nr, act, L, Y, ldy);
}

#define BF16_TARGET __attribute__((target("avx512bf16")))

static inline __attribute__((always_inline)) BF16_TARGET void
mv_bf16_dp(const int NC, const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
           const struct kern_act *L, float *Y, int64_t ldy)
{
    const int64_t n = L->n;
    const int NA = NC == 1 ? 4 : 2;
    struct rowacc ra;
    struct kern_pf pf;
    kern_pf_init(&pf, W);
    for (int64_t r = 0; r < nr; r++) {
        const uint16_t *row = (const uint16_t *)(W + (size_t)r * wrow);
        __m512 acc[KERN_MV_COLS][4];
        for (int c = 0; c < NC; c++)
            for (int a = 0; a < NA; a++) acc[c][a] = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 32 * NA <= n; k += 32 * NA) {
            kern_pf_to(&pf, (const uint8_t *)(row + k + 32 * NA));
#pragma GCC unroll 4
            for (int a = 0; a < NA; a++) {
                __m512i w = _mm512_loadu_si512(row + k + 32 * a);
                for (int c = 0; c < NC; c++) {
                    const uint16_t *x = (const uint16_t *)(act + (size_t)c * L->stride);
                    acc[c][a] = _mm512_dpbf16_ps(acc[c][a], (__m512bh)w,
                                                 (__m512bh)_mm512_loadu_si512(x + k + 32 * a));
                }
            }
        }
        for (; k < n; k += 32) {
            const __mmask32 km =
                n - k >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (n - k)) - 1);
            __m512i w = _mm512_maskz_loadu_epi16(km, row + k);
            for (int c = 0; c < NC; c++) {
                const uint16_t *x = (const uint16_t *)(act + (size_t)c * L->stride);
                acc[c][0] = _mm512_dpbf16_ps(acc[c][0], (__m512bh)w,
                                             (__m512bh)_mm512_maskz_loadu_epi16(km, x + k));
            }
        }
        rowacc_put_zmm(&ra, NC, NA, r, nr, acc, Y, ldy);
    }
}

#define C_BF16D(NC) mv_bf16_dp(NC, W, wrow, nr, act, L, Y, ldy)
MV_ENTRY_ATTR(mv_bf16_d, C_BF16D, BF16_TARGET)

/* ---------------------------------------------------------------------------------------- */
/* gemm: 32 weight rows x many activation rows                                               */

#define FGEMM_KC 128 /* float types: k values (BF16: k pairs) per chunk */

/* bytes of one scale block in the tile: B/4 steps x (2 x 64 bytes), then dw[32], mw[32] */
AI size_t gemm_tbs(const int T)
{
    return (size_t)gemm_B(T) * 32 + 128 + (gemm_min(T) ? 128 : 0);
}

/* O[s] lane r = dword s of R[r]: 16 rows of 8 dwords to 8 vectors of 16 rows. */
AI void transpose16x8(const __m256i *R, __m512i *O)
{
    __m512i Z[8];
    for (int i = 0; i < 8; i++)
        Z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(R[i]), R[i + 8], 1);
    for (int i = 0; i < 8; i += 2) { /* swap register bit 0 with lane bit 0 */
        __m512i a = Z[i], b = Z[i + 1];
        Z[i] = _mm512_mask_shuffle_epi32(a, 0xAAAA, b, _MM_PERM_CDAB);
        Z[i + 1] = _mm512_mask_shuffle_epi32(b, 0x5555, a, _MM_PERM_CDAB);
    }
    for (int i = 0; i < 8; i++) { /* register bit 1 with lane bit 1 */
        if (i & 2) continue;
        __m512i a = Z[i], b = Z[i + 2];
        Z[i] = _mm512_mask_shuffle_epi32(a, 0xCCCC, b, _MM_PERM_BADC);
        Z[i + 2] = _mm512_mask_shuffle_epi32(b, 0x3333, a, _MM_PERM_BADC);
    }
    for (int i = 0; i < 4; i++) { /* register bit 2 with lane bit 2 */
        __m512i a = Z[i], b = Z[i + 4];
        Z[i] = _mm512_mask_shuffle_i32x4(a, 0xF0F0, b, b, 0xB1);
        Z[i + 4] = _mm512_mask_shuffle_i32x4(b, 0x0F0F, a, a, 0xB1);
    }
    for (int i = 0; i < 8; i++) O[i] = Z[i];
}

/* Repack rows [0, nr) (nr <= 32; the rest are zero) of groups g0 .. g0 + ng - 1 into tile. */
AI void gemm_repack(const int T, const uint8_t *W, size_t wrow, int64_t nr, int64_t g0, int ng,
                    uint8_t *tile, __m256i *tmp /* [32][GEMM_KC] */)
{
    const size_t tbs = gemm_tbs(T);
    const int B = gemm_B(T);
    gemm_unpack_rows(T, W, wrow, nr, g0, ng, tile, tmp);
    for (int g = 0; g < ng; g++) {
        for (int rv = 0; rv < 2; rv++) {
            __m256i R[16];
            __m512i O[8];
            for (int i = 0; i < 16; i++) R[i] = tmp[(rv * 16 + i) * GEMM_KC + g];
            transpose16x8(R, O);
            for (int st = 0; st < 8; st++) {
                const int blk = B == 32 ? g : 2 * g + st / 4, step = B == 32 ? st : st % 4;
                _mm512_store_si512(
                    (__m512i *)(tile + (size_t)blk * tbs + (size_t)step * 128 + rv * 64), O[st]);
            }
        }
    }
}

/* Results of a tile of 32 rows for NC activation rows, rows 0-15 in v0[c] and 16-31 in v1[c],
 * into (add: added to) Y rows [0, nr). */
AI void store_tile32(const int NC, const __m512 *v0, const __m512 *v1, float *Y, int64_t ldy,
                     int64_t nr, bool add)
{
    const __mmask16 k0 = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
    const __mmask16 k1 = nr >= 32   ? (__mmask16)0xffff
                         : nr <= 16 ? 0
                                    : (__mmask16)((1u << (nr - 16)) - 1);
    for (int c = 0; c < NC; c++) {
        float *y = Y + c * ldy;
        __m512 a = v0[c], b = v1[c];
        if (add) {
            a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(k0, y));
            b = _mm512_add_ps(b, _mm512_maskz_loadu_ps(k1, y + 16));
        }
        _mm512_mask_storeu_ps(y, k0, a);
        _mm512_mask_storeu_ps(y + 16, k1, b);
    }
}

/* NC activation rows against the repacked tile (nblk scale blocks starting at block j0 of the
 * act rows); adds to or stores into Y rows [0, nr). */
AI void gemm_micro(const int T, const int NC, const uint8_t *tile, int nblk, int64_t j0,
                   const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy, int64_t nr,
                   bool add)
{
    const int B = gemm_B(T);
    const size_t tbs = gemm_tbs(T);
    const bool has_min = gemm_min(T);
    __m512 facc[2][GEMM_NC];
    for (int c = 0; c < NC; c++) facc[0][c] = facc[1][c] = _mm512_setzero_ps();
    const int8_t *aq[GEMM_NC];
    const float *ad[GEMM_NC], *as[GEMM_NC];
    const int32_t *ac[GEMM_NC];
    for (int c = 0; c < NC; c++) {
        const uint8_t *ar = act + (size_t)c * L->stride;
        aq[c] = (const int8_t *)ar + j0 * B;
        ad[c] = (const float *)(ar + L->off_d) + j0;
        ac[c] = (const int32_t *)(ar + L->off_corr) + j0;
        as[c] = (const float *)(ar + L->off_s) + j0;
    }
    for (int j = 0; j < nblk; j++) {
        const uint8_t *tb = tile + (size_t)j * tbs;
        __m512i ci[2][GEMM_NC];
        for (int c = 0; c < NC; c++) ci[0][c] = ci[1][c] = _mm512_set1_epi32(ac[c][j]);
#pragma GCC unroll 8
        for (int st = 0; st < B / 4; st++) {
            const __m512i w0 = _mm512_load_si512((const __m512i *)(tb + st * 128));
            const __m512i w1 = _mm512_load_si512((const __m512i *)(tb + st * 128 + 64));
            for (int c = 0; c < NC; c++) {
                int32_t a4;
                memcpy(&a4, aq[c] + j * B + 4 * st, 4);
                const __m512i a = _mm512_set1_epi32(a4);
                ci[0][c] = _mm512_dpbusd_epi32(ci[0][c], w0, a);
                ci[1][c] = _mm512_dpbusd_epi32(ci[1][c], w1, a);
            }
        }
        const __m512 dw0 = _mm512_load_ps((const float *)(tb + B * 32));
        const __m512 dw1 = _mm512_load_ps((const float *)(tb + B * 32 + 64));
        for (int c = 0; c < NC; c++) {
            const __m512 dx = _mm512_set1_ps(ad[c][j]);
            facc[0][c] =
                _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(ci[0][c]), dx), dw0, facc[0][c]);
            facc[1][c] =
                _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(ci[1][c]), dx), dw1, facc[1][c]);
        }
        if (has_min) {
            const __m512 mw0 = _mm512_load_ps((const float *)(tb + B * 32 + 128));
            const __m512 mw1 = _mm512_load_ps((const float *)(tb + B * 32 + 192));
            for (int c = 0; c < NC; c++) {
                const __m512 sx = _mm512_set1_ps(as[c][j]);
                facc[0][c] = _mm512_fmadd_ps(mw0, sx, facc[0][c]);
                facc[1][c] = _mm512_fmadd_ps(mw1, sx, facc[1][c]);
            }
        }
    }
    store_tile32(NC, facc[0], facc[1], Y, ldy, nr, add);
}

static size_t gemm_scratch(uint32_t wtype, int64_t n)
{
    (void)n;
    if (wtype == BT_F32 || wtype == BT_F16 || wtype == BT_BF16) return (size_t)FGEMM_KC * 32 * 4;
    /* tile: at most GEMM_KC * 2 scale blocks of <= 1280 bytes; tmp: 32 rows x GEMM_KC x 32 */
    return (size_t)GEMM_KC * 2 * 1280 + (size_t)GEMM_ROWS * GEMM_KC * 32;
}

/* ---------------------------------------------------------------------------------------- */
/* gemm for float weights: repacked k-major (f32 for F32/F16, bf16 pairs for BF16)           */

#define FGEMM_NC 8

/* 16 x 16 dwords: O[j] lane i = Z[i] lane j (in place) */
AI void transpose16x16(__m512i *Z)
{
    for (int i = 0; i < 16; i += 2) {
        __m512i a = Z[i], b = Z[i + 1];
        Z[i] = _mm512_mask_shuffle_epi32(a, 0xAAAA, b, _MM_PERM_CDAB);
        Z[i + 1] = _mm512_mask_shuffle_epi32(b, 0x5555, a, _MM_PERM_CDAB);
    }
    for (int i = 0; i < 16; i++) {
        if (i & 2) continue;
        __m512i a = Z[i], b = Z[i + 2];
        Z[i] = _mm512_mask_shuffle_epi32(a, 0xCCCC, b, _MM_PERM_BADC);
        Z[i + 2] = _mm512_mask_shuffle_epi32(b, 0x3333, a, _MM_PERM_BADC);
    }
    for (int i = 0; i < 16; i++) {
        if (i & 4) continue;
        __m512i a = Z[i], b = Z[i + 4];
        Z[i] = _mm512_mask_shuffle_i32x4(a, 0xF0F0, b, b, 0xB1);
        Z[i + 4] = _mm512_mask_shuffle_i32x4(b, 0x0F0F, a, a, 0xB1);
    }
    for (int i = 0; i < 8; i++) {
        __m512i a = Z[i], b = Z[i + 8];
        Z[i] = _mm512_mask_shuffle_i32x4(a, 0xFF00, b, b, 0x4E);
        Z[i + 8] = _mm512_mask_shuffle_i32x4(b, 0x00FF, a, a, 0x4E);
    }
}

/* Repack rows [0, nr) x dwords [d0, d0 + nd) of the weights into tile[nd][32] (dwords: an f32
 * value, or for BF16 a pair of bf16 values; F16 is converted to f32). n: values per row. */
AI void fgemm_repack(const int T, const uint8_t *W, size_t wrow, int64_t nr, int64_t n, int64_t d0,
                     int nd, uint32_t *tile)
{
    for (int rv = 0; rv < 2; rv++) {
        for (int k = 0; k < nd; k += 16) {
            __m512i Z[16];
            for (int i = 0; i < 16; i++) {
                const int64_t r = rv * 16 + i;
                const int64_t v0 = T == BT_BF16 ? 2 * (d0 + k) : d0 + k; /* first value */
                int64_t left = n - v0;
                if (r >= nr || left <= 0) {
                    Z[i] = _mm512_setzero_si512();
                    continue;
                }
                const uint8_t *row = W + (size_t)r * wrow;
                if (T == BT_F32) {
                    const __mmask16 km = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
                    Z[i] = _mm512_maskz_loadu_epi32(km, (const float *)row + v0);
                } else if (T == BT_F16) {
                    const __mmask16 km = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
                    Z[i] = _mm512_castps_si512(
                        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(km, (const uint16_t *)row + v0)));
                } else {
                    const __mmask32 km = left >= 32 ? 0xffffffffu : (__mmask32)((1u << left) - 1);
                    Z[i] = _mm512_maskz_loadu_epi16(km, (const uint16_t *)row + v0);
                }
            }
            transpose16x16(Z);
            const int kk = nd - k < 16 ? nd - k : 16;
            for (int j = 0; j < kk; j++)
                _mm512_store_si512((__m512i *)(tile + (size_t)(k + j) * 32 + rv * 16), Z[j]);
        }
    }
}

/* f32 tile x NC act rows (f32 values starting at value k0) */
AI void fgemm_micro_f32(const int NC, const uint32_t *tile, int nk, int64_t k0, const uint8_t *act,
                        const struct kern_act *L, float *Y, int64_t ldy, int64_t nr, bool add)
{
    __m512 acc[2][FGEMM_NC];
    const float *x[FGEMM_NC];
    for (int c = 0; c < NC; c++) {
        acc[0][c] = acc[1][c] = _mm512_setzero_ps();
        x[c] = (const float *)(act + (size_t)c * L->stride) + k0;
    }
    for (int k = 0; k < nk; k++) {
        const __m512 w0 = _mm512_load_ps((const float *)(tile + (size_t)k * 32));
        const __m512 w1 = _mm512_load_ps((const float *)(tile + (size_t)k * 32 + 16));
        for (int c = 0; c < NC; c++) {
            const __m512 xv = _mm512_set1_ps(x[c][k]);
            acc[0][c] = _mm512_fmadd_ps(w0, xv, acc[0][c]);
            acc[1][c] = _mm512_fmadd_ps(w1, xv, acc[1][c]);
        }
    }
    store_tile32(NC, acc[0], acc[1], Y, ldy, nr, add);
}

static inline __attribute__((always_inline)) BF16_TARGET void
fgemm_micro_bf16(const int NC, const uint32_t *tile, int nk, int64_t k0, const uint8_t *act,
                 const struct kern_act *L, float *Y, int64_t ldy, int64_t nr, bool add)
{
    __m512 acc[2][FGEMM_NC];
    const uint32_t *x[FGEMM_NC];
    for (int c = 0; c < NC; c++) {
        acc[0][c] = acc[1][c] = _mm512_setzero_ps();
        x[c] = (const uint32_t *)(act + (size_t)c * L->stride) + k0;
    }
    for (int k = 0; k < nk; k++) {
        const __m512i w0 = _mm512_load_si512((const __m512i *)(tile + (size_t)k * 32));
        const __m512i w1 = _mm512_load_si512((const __m512i *)(tile + (size_t)k * 32 + 16));
        for (int c = 0; c < NC; c++) {
            const __m512i xv = _mm512_set1_epi32((int)x[c][k]);
            acc[0][c] = _mm512_dpbf16_ps(acc[0][c], (__m512bh)w0, (__m512bh)xv);
            acc[1][c] = _mm512_dpbf16_ps(acc[1][c], (__m512bh)w1, (__m512bh)xv);
        }
    }
    store_tile32(NC, acc[0], acc[1], Y, ldy, nr, add);
}

/* The float gemm's loop: tiles of 32 rows x FGEMM_KC dwords, each repacked once and run against
 * all nc activation rows, FGEMM_NC, 4 or 1 at a time. A macro, not a function: the BF16
 * microkernel needs a caller compiled for AVX512_BF16, which the F32/F16 path must not need. */
#define FGEMM_LOOP(T, MICRO)                                                                       \
    do {                                                                                           \
        uint32_t *tile = scratch;                                                                  \
        const int64_t nd = T == BT_BF16 ? (L->n + 1) / 2 : L->n; /* dwords per row */              \
        for (int64_t r0 = 0; r0 < nr; r0 += 32) {                                                  \
            const int64_t rows = nr - r0 < 32 ? nr - r0 : 32;                                      \
            for (int64_t d0 = 0; d0 < nd; d0 += FGEMM_KC) {                                        \
                const int nk = nd - d0 < FGEMM_KC ? (int)(nd - d0) : FGEMM_KC;                     \
                fgemm_repack(T, W + (size_t)r0 * wrow, wrow, rows, L->n, d0, nk, tile);            \
                const bool add = d0 > 0;                                                           \
                int64_t c = 0;                                                                     \
                for (; c + FGEMM_NC <= nc; c += FGEMM_NC)                                          \
                    MICRO(FGEMM_NC, tile, nk, d0, act + (size_t)c * L->stride, L,                  \
                          Y + c * ldy + r0, ldy, rows, add);                                       \
                for (; c + 4 <= nc; c += 4)                                                        \
                    MICRO(4, tile, nk, d0, act + (size_t)c * L->stride, L, Y + c * ldy + r0, ldy,  \
                          rows, add);                                                              \
                for (; c < nc; c++)                                                                \
                    MICRO(1, tile, nk, d0, act + (size_t)c * L->stride, L, Y + c * ldy + r0, ldy,  \
                          rows, add);                                                              \
            }                                                                                      \
        }                                                                                          \
    } while (0)

AI void fgemm(const int T, const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
              const struct kern_act *L, int64_t nc, float *Y, int64_t ldy, void *scratch)
{
    FGEMM_LOOP(T, fgemm_micro_f32);
}

static BF16_TARGET void fgemm_bf16(const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
                                   const struct kern_act *L, int64_t nc, float *Y, int64_t ldy,
                                   void *scratch)
{
    FGEMM_LOOP(BT_BF16, fgemm_micro_bf16);
}

/* ---------------------------------------------------------------------------------------- */
/* read bandwidth                                                                            */

static void read_stream(const void *buf, size_t bytes, float *sink)
{
    const __m512i *p = buf;
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (size_t i = 0; i + 4 <= bytes / 64; i += 4) {
        a = _mm512_xor_si512(a, _mm512_load_si512(p + i));
        b = _mm512_xor_si512(b, _mm512_load_si512(p + i + 1));
        c = _mm512_xor_si512(c, _mm512_load_si512(p + i + 2));
        d = _mm512_xor_si512(d, _mm512_load_si512(p + i + 3));
    }
    a = _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d));
    *sink += (float)(_mm512_reduce_add_epi32(a) & 1);
}

/* ---------------------------------------------------------------------------------------- */
/* SwiGLU                                                                                    */

AI __m512 exp512(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(KERN_EXP_LO)), _mm512_set1_ps(KERN_EXP_HI));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(KERN_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(KERN_LN2_HI), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(KERN_LN2_LO), r);
    __m512 p = _mm512_set1_ps(KERN_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KERN_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KERN_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KERN_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KERN_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KERN_EXP_P5));
    const __m512 y =
        _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, k);
}

static void swiglu(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 km = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 x = _mm512_maskz_loadu_ps(km, g + i);
        const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), x));
        const __m512 s = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(g + i, km, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(km, u + i)));
    }
}

static struct kern_ops ops = {
    .name = "avx512",
    .quant =
        {
            [KACT_F16] = quant_f16,
            [KACT_BF16] = quant_bf16,
            [KACT_Q8_0] = quant_q8_01,
            [KACT_Q8_1] = quant_q8_01,
            [KACT_Q8_K] = quant_q8_k,
        },
    .mv = X86_MV_TABLE, /* BF16: see kern_ops_avx512 */
    .act_off =
        {
            [BT_Q4_0] = 8,
            [BT_Q5_0] = 16,
            [BT_Q8_0] = 128,
            [BT_Q6_K] = 32,
        },
    .mv_ilv =
        {
            [BT_Q4_0] = 4,
            [BT_Q4_1] = 4,
        },
    .gemm = X86_GEMM_TABLE,
    .gemm_rows = 64,
    /* measured: below these the matvec kernels (4 rows of X per pass) are faster; Q4_0 and Q6_K
     * at 8 since the matvec prefetches (baton-bench -B 4, TinyLlama Q4_0: 71 -> 108 tokens/s) */
    .gemm_min_m =
        {
            [BT_Q4_0] = 8,
            [BT_Q4_1] = 4,
            [BT_Q5_0] = 4,
            [BT_Q5_1] = 4,
            [BT_Q8_0] = 4,
            [BT_Q4_K] = 4,
            [BT_Q5_K] = 4,
            [BT_Q6_K] = 8,
            [BT_F32] = 16,
            [BT_F16] = 16,
            [BT_BF16] = 16,
        },
    .gemm_scratch = gemm_scratch,
    .read_stream = read_stream,
    .swiglu = swiglu,
};

const struct kern_ops *kern_ops_avx512(void)
{
    if (__builtin_cpu_supports("avx512bf16")) {
        ops.mv[BT_BF16] = mv_bf16_d;
        ops.gemm[BT_BF16] = fgemm_bf16;
    }
    return &ops;
}
