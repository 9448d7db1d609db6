/* kernels_x86: the code that kernels_avx2.c and kernels_avx512.c share, included once by each.
 * Everything here is static (inline), so it is compiled in each file with that file's -m flags
 * (meson.build): the same source, an AVX2 and an AVX-512 build of it. Only the parts that do not
 * depend on the vector width live here: scalar loads and the unpacking of weight blocks into
 * 32-byte vectors (both files work on __m256i there).
 * Not for use outside kernels_avx2.c / kernels_avx512.c. */
#ifndef BATON_KERNELS_X86_H
#define BATON_KERNELS_X86_H

#include "kernels_isa.h"

#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

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

#endif
