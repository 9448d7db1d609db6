/* kernels_avx2: AVX2 + FMA + F16C kernels, for x86 CPUs without AVX-512.
 *
 * Compiled with -mavx2 -mfma -mf16c (meson.build); only called after kernels.c has checked the
 * CPU. Integer dot products use vpmaddubsw (unsigned weight bytes x signed activation bytes,
 * pairs summed to int16 without saturation for weights below 64) and vpmaddwd; weights are
 * brought to unsigned bytes q + off (off = 8 for Q4_0, 16 for Q5_0, 32 for Q6_K, 0 for types with
 * a min); Q8_0 keeps signed weights and uses the sign trick (|w| x sign(a, w)) instead.
 * Structure as in kernels_avx512.c; what the two share (helpers, the gemm loop, the entry points)
 * is in kernels_x86.h. Thread-safe: pure functions of their arguments. */
#define GEMM_ROWS 8 /* weight rows per gemm tile: one vector */
#include "kernels_x86.h"

#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                   */

AI __m256 gather_f16(const uint8_t *p, size_t bs, int g)
{
    uint64_t lo, hi;
    if (g == 8) {
        lo = ld16(p) | ld16(p + bs) << 16 | ld16(p + 2 * bs) << 32 | ld16(p + 3 * bs) << 48;
        hi = ld16(p + 4 * bs) | ld16(p + 5 * bs) << 16 | ld16(p + 6 * bs) << 32 |
             ld16(p + 7 * bs) << 48;
    } else {
        uint64_t v[2] = {0, 0};
        for (int i = 0; i < g; i++) v[i >> 2] |= ld16(p + (size_t)i * bs) << (16 * (i & 3));
        lo = v[0];
        hi = v[1];
    }
    return _mm256_cvtph_ps(_mm_set_epi64x((long long)hi, (long long)lo));
}

AI __m256i lane_mask(int g) /* lanes < g all ones */
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(g), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

AI float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* unsigned w (< 64) x signed a: 8 int32 sums of 4 products */
AI __m256i dot_u8s8(__m256i w, const int8_t *a)
{
    __m256i p = _mm256_maddubs_epi16(w, _mm256_loadu_si256((const __m256i *)a));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* signed w x signed a */
AI __m256i dot_s8s8(__m256i w, const int8_t *a)
{
    __m256i av = _mm256_loadu_si256((const __m256i *)a);
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(av, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

AI int hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* ---------------------------------------------------------------------------------------- */
/* activation conversion (bit-identical to the reference quantisers in quant.c)              */

AI __m256 round_away(__m256 v)
{
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(v, t);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 k = _mm256_cmp_ps(_mm256_andnot_ps(sign, f), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, sign));
    return _mm256_add_ps(t, _mm256_and_ps(k, one));
}

/* 32 int32 (4 vectors) to 32 int8 with signed saturation, in order */
AI __m256i pack_i8(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i v = _mm256_packs_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

AI int sum_i8(__m256i v)
{
    return hsum_epi32(
        _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), v), _mm256_set1_epi16(1)));
}

AI float hmax256(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static void quant_q8_01(const float *x, uint8_t *dst, const struct kern_act *L)
{
    int8_t *q = (int8_t *)dst;
    float *d = (float *)(dst + L->off_d), *s = (float *)(dst + L->off_s);
    int32_t *corr = (int32_t *)(dst + L->off_corr);
    const bool q81 = L->kind == KACT_Q8_1;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < L->nb; b++, x += 32, q += 32) {
        __m256 v[4];
        __m256 am = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            am = _mm256_max_ps(am, _mm256_andnot_ps(sign, v[k]));
        }
        const float amax = hmax256(am);
        const float dd = amax / 127;
        const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        __m256i iv[4];
        for (int k = 0; k < 4; k++)
            iv[k] = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(v[k], vid)));
        __m256i q8 = pack_i8(iv[0], iv[1], iv[2], iv[3]);
        _mm256_storeu_si256((__m256i *)q, q8);
        int sum = sum_i8(q8);
        const float dr = _cvtsh_ss(_cvtss_sh(dd, 0));
        d[b] = dr;
        s[b] = q81 ? _cvtsh_ss(_cvtss_sh((float)sum * dd, 0)) : dr * (float)sum;
        corr[b] = -L->off * sum;
    }
}

/* quant_q8_k's hooks (kernels_x86.h) */
AI float q8k_absmax(const float *x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 am = _mm256_setzero_ps();
    for (int k = 0; k < 32; k++)
        am = _mm256_max_ps(am, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)));
    return hmax256(am);
}

AI float q8k_first_of_abs(const float *x, float amax)
{
    const __m256 sign = _mm256_set1_ps(-0.0f), vam = _mm256_set1_ps(amax);
    for (int k = 0; k < 32; k++) {
        int m = _mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)), vam, _CMP_EQ_OQ));
        if (m) return x[8 * k + __builtin_ctz((unsigned)m)];
    }
    return 0.0f;
}

AI void q8k_quantize(const float *x, float iscale, int8_t *q, int *sum16)
{
    const __m256 vis = _mm256_set1_ps(iscale);
    const __m256i v127 = _mm256_set1_epi32(127);
    for (int k = 0; k < 8; k++) {
        __m256i iv[4];
        for (int u = 0; u < 4; u++)
            iv[u] = _mm256_min_epi32(
                _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * k + 8 * u), vis)), v127);
        __m256i q8 = pack_i8(iv[0], iv[1], iv[2], iv[3]);
        _mm256_storeu_si256((__m256i *)(q + 32 * k), q8);
        __m256i s16 =
            _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q8), _mm256_set1_epi16(1));
        /* lanes 0-3: first 16 values, 4-7: second 16 */
        __m128i lo = _mm256_castsi256_si128(s16), hi = _mm256_extracti128_si256(s16, 1);
        lo = _mm_add_epi32(lo, _mm_shuffle_epi32(lo, 0x4e));
        hi = _mm_add_epi32(hi, _mm_shuffle_epi32(hi, 0x4e));
        lo = _mm_add_epi32(lo, _mm_shuffle_epi32(lo, 0xb1));
        hi = _mm_add_epi32(hi, _mm_shuffle_epi32(hi, 0xb1));
        sum16[2 * k] = _mm_cvtsi128_si32(lo);
        sum16[2 * k + 1] = _mm_cvtsi128_si32(hi);
    }
}

static void quant_f16(const float *x, uint8_t *dst, const struct kern_act *L)
{
    float *y = (float *)dst;
    int64_t i = 0;
    for (; i + 8 <= L->n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i),
                                                                _MM_FROUND_TO_NEAREST_INT)));
    for (; i < L->n; i++) y[i] = _cvtsh_ss(_cvtss_sh(x[i], 0));
}

/* ---------------------------------------------------------------------------------------- */
/* weights of the 32-blocks as bytes, natural order (unsigned q + off; Q8_0 signed)          */

/* bit i of m (32 bits) -> byte i = 16 or 0 */
AI __m256i bits_to_16(uint32_t m)
{
    const __m256i shuf =
        _mm256_setr_epi64x(0, 0x0101010101010101ll, 0x0202020202020202ll, 0x0303030303030303ll);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(16));
}

AI __m256i unpack32(const int T, const uint8_t *blk)
{
    switch (T) {
    case BT_Q4_0:
        return nibbles32(blk + 2);
    case BT_Q4_1:
        return nibbles32(blk + 4);
    case BT_Q5_0:
        return _mm256_or_si256(nibbles32(blk + 6), bits_to_16(ld32(blk + 2)));
    case BT_Q5_1:
        return _mm256_or_si256(nibbles32(blk + 8), bits_to_16(ld32(blk + 4)));
    default: /* Q8_0, signed */
        return _mm256_loadu_si256((const __m256i *)(blk + 2));
    }
}

/* ---------------------------------------------------------------------------------------- */
/* matvec, 32-blocks                                                                         */

AI void mv32(const int T, const int NC, const uint8_t *W, size_t wrow, int64_t nr,
             const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy)
{
    const size_t bs = bsize32(T);
    const bool has_min = T == BT_Q4_1 || T == BT_Q5_1;
    const bool has_off = T == BT_Q4_0 || T == BT_Q5_0;
    const int NA = NC == 1 ? 2 : 1;
    const int64_t nb = L->nb;
    struct kern_pf pf;
    kern_pf_init(&pf, W);
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *row = W + (size_t)r * wrow;
        __m256 acc[KERN_MV_COLS][4], cacc[KERN_MV_COLS];
        for (int c = 0; c < NC; c++) {
            cacc[c] = _mm256_setzero_ps();
            for (int a = 0; a < NA; a++) acc[c][a] = _mm256_setzero_ps();
        }
        for (int64_t b0 = 0; b0 < nb; b0 += 8) {
            const int g = nb - b0 < 8 ? (int)(nb - b0) : 8;
            const __m256i km = lane_mask(g);
            const uint8_t *bp = row + (size_t)b0 * bs;
            kern_pf_to(&pf, bp + (size_t)g * bs);
            const __m256 dw = gather_f16(bp, bs, g);
            __m256 mw = _mm256_setzero_ps();
            if (has_min) mw = gather_f16(bp + 2, bs, g);
            float sv[KERN_MV_COLS][8] __attribute__((aligned(32)));
            for (int c = 0; c < NC; c++) {
                const uint8_t *ar = act + (size_t)c * L->stride;
                __m256 dx = _mm256_maskload_ps((const float *)(ar + L->off_d) + b0, km);
                __m256 s = _mm256_mul_ps(dw, dx);
                _mm256_store_ps(sv[c], s);
                if (has_off)
                    cacc[c] = _mm256_fmadd_ps(s,
                                              _mm256_cvtepi32_ps(_mm256_maskload_epi32(
                                                  (const int *)(ar + L->off_corr) + b0, km)),
                                              cacc[c]);
                if (has_min)
                    cacc[c] = _mm256_fmadd_ps(
                        mw, _mm256_maskload_ps((const float *)(ar + L->off_s) + b0, km), cacc[c]);
            }
            __asm__ volatile("" : "+m"(sv));
#pragma GCC unroll 8
            for (int i = 0; i < g; i++) {
                __m256i w = unpack32(T, bp + (size_t)i * bs);
                for (int c = 0; c < NC; c++) {
                    const int8_t *a = (const int8_t *)(act + (size_t)c * L->stride) + 32 * (b0 + i);
                    __m256i p = T == BT_Q8_0 ? dot_s8s8(w, a) : dot_u8s8(w, a);
                    acc[c][i % NA] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                                     _mm256_set1_ps(sv[c][i]), acc[c][i % NA]);
                }
            }
        }
        for (int c = 0; c < NC; c++) {
            __m256 t = cacc[c];
            for (int a = 0; a < NA; a++) t = _mm256_add_ps(t, acc[c][a]);
            Y[c * ldy + r] = hsum256(t);
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* matvec, K-quants                                                                          */

AI void unpack_k5_high(const uint8_t *qhp, int j, __m256i *lo, __m256i *hi)
{
    __m256i qh = _mm256_loadu_si256((const __m256i *)qhp);
    const __m256i b0 = _mm256_set1_epi8((char)(1 << (2 * j)));
    const __m256i b1 = _mm256_set1_epi8((char)(2 << (2 * j)));
    const __m256i s16 = _mm256_set1_epi8(16);
    *lo = _mm256_or_si256(*lo,
                          _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b0), b0), s16));
    *hi = _mm256_or_si256(*hi,
                          _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b1), b1), s16));
}

AI void mv_k45(const int T, const int NC, const uint8_t *W, size_t wrow, int64_t nr,
               const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy)
{
    const size_t bs = T == BT_Q4_K ? 144 : 176;
    const int64_t nsb = L->n / QK_K;
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
            const __m256 scv = u8x8_to_ps(sc);
            const __m256 mnv = _mm256_mul_ps(u8x8_to_ps(mn), _mm256_set1_ps(-dmin));
            float sv[KERN_MV_COLS][8] __attribute__((aligned(32)));
            for (int c = 0; c < NC; c++) {
                const uint8_t *ar = act + (size_t)c * L->stride;
                const float dy = ((const float *)(ar + L->off_d))[8 * i];
                _mm256_store_ps(sv[c], _mm256_mul_ps(scv, _mm256_set1_ps(d * dy)));
                cacc[c] = _mm256_fmadd_ps(
                    mnv, _mm256_loadu_ps((const float *)(ar + L->off_s) + 8 * i), cacc[c]);
            }
            __asm__ volatile("" : "+m"(sv));
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                __m256i lo, hi;
                unpack_k4(T, blk, j, &lo, &hi);
                for (int c = 0; c < NC; c++) {
                    const int8_t *a =
                        (const int8_t *)(act + (size_t)c * L->stride) + QK_K * i + 64 * j;
                    __m256i p0 = dot_u8s8(lo, a), p1 = dot_u8s8(hi, a + 32);
                    acc[c][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0),
                                                _mm256_set1_ps(sv[c][2 * j]), acc[c][0]);
                    acc[c][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1),
                                                _mm256_set1_ps(sv[c][2 * j + 1]), acc[c][1]);
                }
            }
        }
        for (int c = 0; c < NC; c++)
            Y[c * ldy + r] = hsum256(_mm256_add_ps(cacc[c], _mm256_add_ps(acc[c][0], acc[c][1])));
    }
}

AI void mv_q6k(const int NC, const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
               const struct kern_act *L, float *Y, int64_t ldy)
{
    const size_t bs = 210;
    const int64_t nsb = L->n / QK_K;
    struct kern_pf pf;
    kern_pf_init(&pf, W);
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *row = W + (size_t)r * wrow;
        __m256 acc[KERN_MV_COLS][2], cacc[KERN_MV_COLS];
        for (int c = 0; c < NC; c++) cacc[c] = acc[c][0] = acc[c][1] = _mm256_setzero_ps();
        for (int64_t i = 0; i < nsb; i++) {
            const uint8_t *blk = row + (size_t)i * bs;
            kern_pf_to(&pf, blk + bs);
            const float d = h2f(blk + 208);
            __m128i sc8 = _mm_loadu_si128((const __m128i *)(blk + 192));
            const __m256 sc_lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc8));
            const __m256 sc_hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc8, 8)));
            float sv[KERN_MV_COLS][16] __attribute__((aligned(32)));
            for (int c = 0; c < NC; c++) {
                const uint8_t *ar = act + (size_t)c * L->stride;
                const float dy = ((const float *)(ar + L->off_d))[16 * i];
                const __m256 f = _mm256_set1_ps(d * dy);
                const __m256 s0 = _mm256_mul_ps(sc_lo, f), s1 = _mm256_mul_ps(sc_hi, f);
                _mm256_store_ps(sv[c], s0);
                _mm256_store_ps(sv[c] + 8, s1);
                const int *cr = (const int *)(ar + L->off_corr) + 16 * i;
                cacc[c] = _mm256_fmadd_ps(
                    s0, _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)cr)), cacc[c]);
                cacc[c] = _mm256_fmadd_ps(
                    s1, _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(cr + 8))), cacc[c]);
            }
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i v[4];
                unpack_q6k(blk, h, v);
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    const int si = 8 * h + 2 * k;
                    for (int c = 0; c < NC; c++) {
                        const int8_t *a = (const int8_t *)(act + (size_t)c * L->stride) + QK_K * i +
                                          128 * h + 32 * k;
                        __m256i p = dot_u8s8(v[k], a);
                        __m256 s =
                            _mm256_set_m128(_mm_set1_ps(sv[c][si + 1]), _mm_set1_ps(sv[c][si]));
                        acc[c][k & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[c][k & 1]);
                    }
                }
            }
        }
        for (int c = 0; c < NC; c++)
            Y[c * ldy + r] = hsum256(_mm256_add_ps(cacc[c], _mm256_add_ps(acc[c][0], acc[c][1])));
    }
}

/* ---------------------------------------------------------------------------------------- */
/* matvec, float types                                                                       */

AI __m256 load_w8(const int T, const uint8_t *row, int64_t k)
{
    if (T == BT_F32) return _mm256_loadu_ps((const float *)row + k);
    if (T == BT_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + k)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + k))), 16));
}

AI __m256 load_x8(const int T, const uint8_t *ar, int64_t k)
{
    if (T == BT_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)ar + k))),
            16));
    return _mm256_loadu_ps((const float *)ar + k);
}

AI float w_scalar(const int T, const uint8_t *row, int64_t k)
{
    if (T == BT_F32) return ((const float *)row)[k];
    uint16_t h = ((const uint16_t *)row)[k];
    if (T == BT_F16) return _cvtsh_ss(h);
    return bt_bf16_to_f32(h);
}

AI float x_scalar(const int T, const uint8_t *ar, int64_t k)
{
    if (T == BT_BF16) return bt_bf16_to_f32(((const uint16_t *)ar)[k]);
    return ((const float *)ar)[k];
}

AI void mv_float(const int T, const int NC, const uint8_t *W, size_t wrow, int64_t nr,
                 const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy)
{
    const int64_t n = L->n;
    const int NA = NC == 1 ? 4 : 2;
    const size_t es = T == BT_F32 ? 4 : 2;
    struct kern_pf pf;
    kern_pf_init(&pf, W);
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *row = W + (size_t)r * wrow;
        __m256 acc[KERN_MV_COLS][4];
        for (int c = 0; c < NC; c++)
            for (int a = 0; a < NA; a++) acc[c][a] = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + 8 * NA <= n; k += 8 * NA) {
            kern_pf_to(&pf, row + (size_t)(k + 8 * NA) * es);
#pragma GCC unroll 4
            for (int a = 0; a < NA; a++) {
                __m256 w = load_w8(T, row, k + 8 * a);
                for (int c = 0; c < NC; c++)
                    acc[c][a] = _mm256_fmadd_ps(
                        w, load_x8(T, act + (size_t)c * L->stride, k + 8 * a), acc[c][a]);
            }
        }
        for (int c = 0; c < NC; c++) {
            __m256 t = acc[c][0];
            for (int a = 1; a < NA; a++) t = _mm256_add_ps(t, acc[c][a]);
            float s = hsum256(t);
            for (int64_t kk = k; kk < n; kk++)
                s += w_scalar(T, row, kk) * x_scalar(T, act + (size_t)c * L->stride, kk);
            Y[c * ldy + r] = s;
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* gemm: 8 weight rows (one vector) x many activation rows; see kernels_avx512.c             */

#define FGEMM_KC 256

/* bytes of one scale block in the tile: B/4 steps x 32 bytes, then dw[8], mw[8] */
AI size_t gemm_tbs(const int T)
{
    return (size_t)gemm_B(T) * 8 + 64;
}

/* o[s] lane r = dword s of r[r] (8 x 8 dwords) */
AI void transpose8x8(const __m256i *r, __m256i *o)
{
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; i++) {
        o[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        o[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
    }
}

AI void gemm_repack(const int T, const uint8_t *W, size_t wrow, int64_t nr, int64_t g0, int ng,
                    uint8_t *tile, __m256i *tmp /* [8][GEMM_KC] */)
{
    const size_t tbs = gemm_tbs(T);
    const int B = gemm_B(T);
    gemm_unpack_rows(T, W, wrow, nr, g0, ng, tile, tmp);
    for (int g = 0; g < ng; g++) {
        __m256i R[8], O[8];
        for (int i = 0; i < 8; i++) R[i] = tmp[i * GEMM_KC + g];
        transpose8x8(R, O);
        for (int st = 0; st < 8; st++) {
            const int blk = B == 32 ? g : 2 * g + st / 4, step = B == 32 ? st : st % 4;
            _mm256_store_si256((__m256i *)(tile + (size_t)blk * tbs + (size_t)step * 32), O[st]);
        }
    }
}

AI void gemm_store(const int NC, const __m256 *acc, float *Y, int64_t ldy, int64_t nr, bool add)
{
    const __m256i km = lane_mask((int)(nr < 8 ? nr : 8));
    for (int c = 0; c < NC; c++) {
        float *y = Y + c * ldy;
        __m256 v = acc[c];
        if (add) v = _mm256_add_ps(v, _mm256_maskload_ps(y, km));
        _mm256_maskstore_ps(y, km, v);
    }
}

AI void gemm_micro(const int T, const int NC, const uint8_t *tile, int nblk, int64_t j0,
                   const uint8_t *act, const struct kern_act *L, float *Y, int64_t ldy, int64_t nr,
                   bool add)
{
    const int B = gemm_B(T);
    const size_t tbs = gemm_tbs(T);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 facc[GEMM_NC];
    const int8_t *aq[GEMM_NC];
    const float *ad[GEMM_NC], *as[GEMM_NC];
    const int32_t *ac[GEMM_NC];
    for (int c = 0; c < NC; c++) {
        const uint8_t *ar = act + (size_t)c * L->stride;
        facc[c] = _mm256_setzero_ps();
        aq[c] = (const int8_t *)ar + j0 * B;
        ad[c] = (const float *)(ar + L->off_d) + j0;
        ac[c] = (const int32_t *)(ar + L->off_corr) + j0;
        as[c] = (const float *)(ar + L->off_s) + j0;
    }
    for (int j = 0; j < nblk; j++) {
        const uint8_t *tb = tile + (size_t)j * tbs;
        __m256i ci[GEMM_NC];
        for (int c = 0; c < NC; c++) ci[c] = _mm256_set1_epi32(ac[c][j]);
#pragma GCC unroll 8
        for (int st = 0; st < B / 4; st++) {
            const __m256i w = _mm256_load_si256((const __m256i *)(tb + st * 32));
            const __m256i wa = T == BT_Q8_0 ? _mm256_sign_epi8(w, w) : w;
            for (int c = 0; c < NC; c++) {
                int32_t a4;
                memcpy(&a4, aq[c] + j * B + 4 * st, 4);
                __m256i a = _mm256_set1_epi32(a4);
                if (T == BT_Q8_0) a = _mm256_sign_epi8(a, w);
                ci[c] =
                    _mm256_add_epi32(ci[c], _mm256_madd_epi16(_mm256_maddubs_epi16(wa, a), ones));
            }
        }
        const __m256 dw = _mm256_load_ps((const float *)(tb + B * 8));
        for (int c = 0; c < NC; c++)
            facc[c] = _mm256_fmadd_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(ci[c]), _mm256_set1_ps(ad[c][j])), dw, facc[c]);
        if (gemm_min(T)) {
            const __m256 mw = _mm256_load_ps((const float *)(tb + B * 8 + 32));
            for (int c = 0; c < NC; c++)
                facc[c] = _mm256_fmadd_ps(mw, _mm256_set1_ps(as[c][j]), facc[c]);
        }
    }
    gemm_store(NC, facc, Y, ldy, nr, add);
}

/* float weights: tile [k][16 rows] of f32 */
AI void fgemm_repack(const int T, const uint8_t *W, size_t wrow, int64_t nr, int64_t n, int64_t k0,
                     int nk, float *tile)
{
    for (int rv = 0; rv < 2; rv++) {
        for (int k = 0; k < nk; k += 8) {
            __m256i R[8], O[8];
            for (int i = 0; i < 8; i++) {
                const int64_t r = rv * 8 + i, left = n - (k0 + k);
                if (r >= nr || left <= 0) {
                    R[i] = _mm256_setzero_si256();
                    continue;
                }
                const uint8_t *row = W + (size_t)r * wrow;
                if (left >= 8) {
                    R[i] = _mm256_castps_si256(load_w8(T, row, k0 + k));
                } else {
                    float t[8] = {0};
                    for (int64_t q = 0; q < left; q++) t[q] = w_scalar(T, row, k0 + k + q);
                    R[i] = _mm256_castps_si256(_mm256_loadu_ps(t));
                }
            }
            transpose8x8(R, O);
            const int kk = nk - k < 8 ? nk - k : 8;
            for (int j = 0; j < kk; j++)
                _mm256_store_si256((__m256i *)(tile + (size_t)(k + j) * 16 + rv * 8), O[j]);
        }
    }
}

AI void fgemm_micro(const int NC, const float *tile, int nk, int64_t k0, const uint8_t *act,
                    const struct kern_act *L, float *Y, int64_t ldy, int64_t nr, bool add)
{
    __m256 acc0[GEMM_NC], acc1[GEMM_NC];
    const float *x[GEMM_NC];
    for (int c = 0; c < NC; c++) {
        acc0[c] = acc1[c] = _mm256_setzero_ps();
        x[c] = (const float *)(act + (size_t)c * L->stride) + k0;
    }
    for (int k = 0; k < nk; k++) {
        const __m256 w0 = _mm256_load_ps(tile + (size_t)k * 16);
        const __m256 w1 = _mm256_load_ps(tile + (size_t)k * 16 + 8);
        for (int c = 0; c < NC; c++) {
            const __m256 xv = _mm256_broadcast_ss(x[c] + k);
            acc0[c] = _mm256_fmadd_ps(w0, xv, acc0[c]);
            acc1[c] = _mm256_fmadd_ps(w1, xv, acc1[c]);
        }
    }
    gemm_store(NC, acc0, Y, ldy, nr, add);
    if (nr > 8) gemm_store(NC, acc1, Y + 8, ldy, nr - 8, add);
}

AI void fgemm(const int T, const uint8_t *W, size_t wrow, int64_t nr, const uint8_t *act,
              const struct kern_act *L, int64_t nc, float *Y, int64_t ldy, void *scratch)
{
    float *tile = scratch;
    for (int64_t r0 = 0; r0 < nr; r0 += 16) {
        const int64_t rows = nr - r0 < 16 ? nr - r0 : 16;
        for (int64_t k0 = 0; k0 < L->n; k0 += FGEMM_KC) {
            const int nk = L->n - k0 < FGEMM_KC ? (int)(L->n - k0) : FGEMM_KC;
            fgemm_repack(T, W + (size_t)r0 * wrow, wrow, rows, L->n, k0, nk, tile);
            const bool add = k0 > 0;
            int64_t c = 0;
            for (; c + GEMM_NC <= nc; c += GEMM_NC)
                fgemm_micro(GEMM_NC, tile, nk, k0, act + (size_t)c * L->stride, L, Y + c * ldy + r0,
                            ldy, rows, add);
            for (; c < nc; c++)
                fgemm_micro(1, tile, nk, k0, act + (size_t)c * L->stride, L, Y + c * ldy + r0, ldy,
                            rows, add);
        }
    }
}

static size_t gemm_scratch(uint32_t wtype, int64_t n)
{
    (void)n;
    if (wtype == BT_F32 || wtype == BT_F16) return (size_t)FGEMM_KC * 16 * 4;
    /* tile: at most GEMM_KC * 2 scale blocks of <= 320 bytes; tmp: 8 rows x GEMM_KC x 32 */
    return (size_t)GEMM_KC * 2 * 320 + (size_t)GEMM_ROWS * GEMM_KC * 32;
}

static void read_stream(const void *buf, size_t bytes, float *sink)
{
    const __m256i *p = buf;
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i + 4 <= bytes / 32; i += 4) {
        a = _mm256_xor_si256(a, _mm256_load_si256(p + i));
        b = _mm256_xor_si256(b, _mm256_load_si256(p + i + 1));
        c = _mm256_xor_si256(c, _mm256_load_si256(p + i + 2));
        d = _mm256_xor_si256(d, _mm256_load_si256(p + i + 3));
    }
    a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    *sink += (float)(hsum_epi32(a) & 1);
}

/* ---------------------------------------------------------------------------------------- */
/* SwiGLU                                                                                    */

AI __m256 exp256(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(KERN_EXP_LO)), _mm256_set1_ps(KERN_EXP_HI));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(KERN_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(KERN_LN2_HI), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(KERN_LN2_LO), r);
    __m256 p = _mm256_set1_ps(KERN_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KERN_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KERN_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KERN_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KERN_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KERN_EXP_P5));
    const __m256 y =
        _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    /* 2^k for k in [-126, 127] (the clamp keeps it there) */
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static void swiglu(float *g, const float *u, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), x));
        const __m256 s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static const struct kern_ops ops = {
    .name = "avx2",
    /* BF16 act rows: kernels.c's scalar conversion (this file had a copy of it) */
    .quant =
        {
            [KACT_F16] = quant_f16,
            [KACT_Q8_0] = quant_q8_01,
            [KACT_Q8_1] = quant_q8_01,
            [KACT_Q8_K] = quant_q8_k,
        },
    .mv = X86_MV_TABLE,
    .act_off =
        {
            [BT_Q4_0] = 8,
            [BT_Q5_0] = 16,
            [BT_Q6_K] = 32,
        },
    .gemm = X86_GEMM_TABLE,
    .gemm_rows = 32,
    /* below these batch sizes the 4-column matvec beats the repacking gemm (baton-kbench -t 1
     * -m 8/16/32 on AMD EPYC Zen 3: at m = 8 the matvec is 1.4-2.4x faster for every type) */
    .gemm_min_m =
        {
            [BT_Q4_0] = 16,
            [BT_Q4_1] = 24,
            [BT_Q5_0] = 16,
            [BT_Q5_1] = 16,
            [BT_Q8_0] = 16,
            [BT_Q4_K] = 24,
            [BT_Q5_K] = 24,
            [BT_Q6_K] = 12,
            [BT_F32] = 16,
            [BT_F16] = 16,
        },
    .gemm_scratch = gemm_scratch,
    .read_stream = read_stream,
    .swiglu = swiglu,
};

const struct kern_ops *kern_ops_avx2(void)
{
    return &ops;
}
