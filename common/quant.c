/* quant: type table, f16/bf16 conversions, reference (de)quantisation. See quant.h.
 *
 * The quantisers reproduce ggml's reference algorithms (quantize_row_*_ref) operation by
 * operation: the order of float operations matters for bit-exact results, so expressions such as
 * (w * l) * x are written in the order ggml evaluates them. Float-to-integer conversions go
 * through clamping helpers so that hostile inputs (NaN, Inf) cannot cause undefined behaviour;
 * for finite inputs the helpers give exactly what the plain C casts in ggml give. */
#include "quant.h"

#include <math.h>
#include <string.h>
#include <strings.h>

#include "log.h"

#define QMIN(a, b)    ((a) < (b) ? (a) : (b))
#define QMAX(a, b)    ((a) > (b) ? (a) : (b))
#define GROUP_MAX_EPS 1e-15f

typedef void (*deq_fn)(const void *src, float *dst, int64_t nb);
typedef void (*q_fn)(const float *src, void *dst, int64_t nb);

/* ---------------------------------------------------------------- scalar conversions */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

float bt_f16_to_f32(bt_f16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0) {
        /* zero or subnormal: m * 2^-24, exact in float */
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

bt_f16 bt_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: quiet it, keep the top payload bits (as F16C does) */
        return (bt_f16)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x38800000u) { /* at least the smallest normal half, 2^-14 */
        /* rebias the exponent (-112 << 23) and round to nearest even on the 13 dropped bits */
        uint32_t m = (ax + 0xc8000fffu + ((ax >> 13) & 1u)) >> 13;
        if (ax >= 0x47800000u || m >= 0x7c00u) return (bt_f16)(sign | 0x7c00u); /* inf */
        return (bt_f16)(sign | m);
    }
    if (ax < 0x33000000u) return (bt_f16)sign; /* below 2^-25: rounds to zero */
    /* subnormal half: value / 2^-24 rounded to nearest even */
    uint32_t e = ax >> 23;
    uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    uint32_t s = 126u - e; /* 14 .. 24 */
    uint32_t q = mant >> s;
    uint32_t rem = mant & ((1u << s) - 1u);
    uint32_t half = 1u << (s - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (bt_f16)(sign | q);
}

float bt_bf16_to_f32(bt_bf16 h)
{
    return bits_f32((uint32_t)h << 16);
}

bt_bf16 bt_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bt_bf16)((u >> 16) | 64u); /* quiet NaN */
    return (bt_bf16)(((uint64_t)u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

void bt_f16_to_f32_row(const bt_f16 *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = bt_f16_to_f32(src[i]);
}

void bt_f32_to_f16_row(const float *src, bt_f16 *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = bt_f32_to_f16(src[i]);
}

void bt_bf16_to_f32_row(const bt_bf16 *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = bt_bf16_to_f32(src[i]);
}

void bt_f32_to_bf16_row(const float *src, bt_bf16 *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = bt_f32_to_bf16(src[i]);
}

#define FP16(x) bt_f16_to_f32(x)
#define TO16(x) bt_f32_to_f16(x)

/* ---------------------------------------------------------------- rounding helpers */

int bt_nearest_int(float fval)
{
    /* adding 1.5 * 2^23 leaves round-to-nearest-even(fval) in the low mantissa bits */
    float val = fval + 12582912.f;
    int32_t i;
    memcpy(&i, &val, sizeof(i));
    return (int)(i & 0x007fffff) - 0x00400000;
}

#define nearest_int bt_nearest_int

/* (int)v truncating, clamped to [lo, hi]; NaN gives lo. Equal to the C cast for v in range. */
static inline int trunc_clamp(float v, int lo, int hi)
{
    if (!(v > (float)lo)) return lo;
    if (v >= (float)hi) return hi;
    return (int)v;
}

/* roundf(v) (ties away from zero) as an int8; NaN gives 0 */
static inline int8_t round_i8(float v)
{
    if (v != v) return 0;
    float r = roundf(v);
    if (r >= 127.f) return 127;
    if (r <= -128.f) return -128;
    return (int8_t)r;
}

/* The value of largest magnitude among x[n] (the first one on ties), with its sign; *amax gets
 * its magnitude. 0 and 0 for all-zero (or all-NaN) x. */
static inline float signed_absmax(const float *x, int n, float *amax)
{
    float am = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (am < fabsf(x[j])) {
            am = fabsf(x[j]);
            max = x[j];
        }
    }
    *amax = am;
    return max;
}

/* ---------------------------------------------------------------- plain types */

static void deq_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void q_f32(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void deq_f16(const void *src, float *dst, int64_t n)
{
    bt_f16_to_f32_row(src, dst, n);
}

static void q_f16(const float *src, void *dst, int64_t n)
{
    bt_f32_to_f16_row(src, dst, n);
}

static void deq_bf16(const void *src, float *dst, int64_t n)
{
    bt_bf16_to_f32_row(src, dst, n);
}

static void q_bf16(const float *src, void *dst, int64_t n)
{
    bt_f32_to_bf16_row(src, dst, n);
}

/* ---------------------------------------------------------------- 32-element blocks */

/* Quants L[32] into a Q4_0 / Q4_1 block (qh NULL, L < 16) or a Q5_0 / Q5_1 block (L < 32): low
 * nibbles of qs hold values 0..15, high nibbles 16..31, bit j of qh the fifth bit of value j. */
static inline void pack_32(const int *L, uint8_t *qs, uint8_t *qh)
{
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((L[j] & 0x0f) | ((L[j + 16] & 0x0f) << 4));
        h |= (uint32_t)(L[j] >> 4) << j;
        h |= (uint32_t)(L[j + 16] >> 4) << (j + 16);
    }
    if (qh) memcpy(qh, &h, sizeof(h));
}

/* y[32] of one block packed as pack_32 does: (q - off) * d, or q * d + m for the types with a
 * min. Kept in this shape (both values of a byte of qs, no array of quants in between): where d
 * and m are both NaN, the operand order the compiler picks decides which of them comes out. */
static inline void deq_32(const uint8_t *qs, const uint8_t *qh, float d, int off, bool has_min,
                          float m, float *y)
{
    uint32_t h = 0;
    if (qh) memcpy(&h, qh, sizeof(h));
    for (int j = 0; j < 16; j++) {
        const int q0 = (qs[j] & 0x0f) | (int)((h >> j) & 1u) << 4;
        const int q1 = (qs[j] >> 4) | (int)((h >> (j + 16)) & 1u) << 4;
        y[j] = has_min ? (float)q0 * d + m : (float)(q0 - off) * d;
        y[j + 16] = has_min ? (float)q1 * d + m : (float)(q1 - off) * d;
    }
}

/* Q4_0 / Q5_0 (nq = 16 / 32 levels): d = max / -(nq / 2), L = trunc(x / d + nq / 2 + 0.5) in
 * [0, nq - 1]. Returns d. */
static inline float quant_sym_32(const float *x, int nq, int *L)
{
    float amax;
    const float max = signed_absmax(x, 32, &amax);
    const float d = max / (float)-(nq / 2);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const float o = (float)(nq / 2) + 0.5f;
    for (int j = 0; j < 32; j++) L[j] = trunc_clamp(x[j] * id + o, 0, nq - 1);
    return d;
}

/* Q4_1 / Q5_1 (nq = 16 / 32 levels): d = (max - min) / (nq - 1), L = trunc((x - min) / d + 0.5)
 * in [0, nq - 1]. Returns d, the min in *m. */
static inline float quant_asym_32(const float *x, int nq, float *m, int *L)
{
    float min = 3.40282347e+38f, max = -3.40282347e+38f;
    for (int j = 0; j < 32; j++) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / (float)(nq - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) L[j] = trunc_clamp((x[j] - min) * id + 0.5f, 0, nq - 1);
    *m = min;
    return d;
}

static void deq_q4_0(const void *src, float *y, int64_t nb)
{
    const block_q4_0 *x = src;
    for (int64_t i = 0; i < nb; i++, y += QK4_0)
        deq_32(x[i].qs, NULL, FP16(x[i].d), 8, false, 0, y);
}

static void q_q4_0(const float *x, void *dst, int64_t nb)
{
    block_q4_0 *y = dst;
    int L[QK4_0];
    for (int64_t i = 0; i < nb; i++, x += QK4_0) {
        y[i].d = TO16(quant_sym_32(x, 16, L));
        pack_32(L, y[i].qs, NULL);
    }
}

static void deq_q4_1(const void *src, float *y, int64_t nb)
{
    const block_q4_1 *x = src;
    for (int64_t i = 0; i < nb; i++, y += QK4_1)
        deq_32(x[i].qs, NULL, FP16(x[i].d), 0, true, FP16(x[i].m), y);
}

static void q_q4_1(const float *x, void *dst, int64_t nb)
{
    block_q4_1 *y = dst;
    int L[QK4_1];
    for (int64_t i = 0; i < nb; i++, x += QK4_1) {
        float m;
        y[i].d = TO16(quant_asym_32(x, 16, &m, L));
        y[i].m = TO16(m);
        pack_32(L, y[i].qs, NULL);
    }
}

static void deq_q5_0(const void *src, float *y, int64_t nb)
{
    const block_q5_0 *x = src;
    for (int64_t i = 0; i < nb; i++, y += QK5_0)
        deq_32(x[i].qs, x[i].qh, FP16(x[i].d), 16, false, 0, y);
}

static void q_q5_0(const float *x, void *dst, int64_t nb)
{
    block_q5_0 *y = dst;
    int L[QK5_0];
    for (int64_t i = 0; i < nb; i++, x += QK5_0) {
        y[i].d = TO16(quant_sym_32(x, 32, L));
        pack_32(L, y[i].qs, y[i].qh);
    }
}

static void deq_q5_1(const void *src, float *y, int64_t nb)
{
    const block_q5_1 *x = src;
    for (int64_t i = 0; i < nb; i++, y += QK5_1)
        deq_32(x[i].qs, x[i].qh, FP16(x[i].d), 0, true, FP16(x[i].m), y);
}

static void q_q5_1(const float *x, void *dst, int64_t nb)
{
    block_q5_1 *y = dst;
    int L[QK5_1];
    for (int64_t i = 0; i < nb; i++, x += QK5_1) {
        float m;
        y[i].d = TO16(quant_asym_32(x, 32, &m, L));
        y[i].m = TO16(m);
        pack_32(L, y[i].qs, y[i].qh);
    }
}

/* The x86 AVX/AVX2 activation quantisers of ggml's CPU backend: id = 127 / amax, and
 * _mm256_round_ps(_MM_ROUND_NEAREST) rounds halves to even; the int32 -> int8 packing saturates. */
static inline int8_t rne_i8(float v)
{
    if (v != v) return 0;
    if (v >= 127.f) return 127;
    if (v <= -128.f) return -128;
    return (int8_t)bt_nearest_int(v);
}

/* One block of 32 values to int8 with d = amax / 127: as the reference (q = round(x / d), ties
 * away from zero) or, with cpu, as ggml's x86 CPU backend (q = x * (127 / amax), ties to even;
 * bt_quantize_row_cpu). Returns d; *sum gets the sum of the q. */
static inline __attribute__((always_inline)) float quant_q8_32(const float *x, bool cpu, int8_t *q,
                                                               int *sum)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = QMAX(amax, fabsf(x[j]));
    const float d = amax / 127;
    const float id = cpu ? (amax != 0.0f ? 127.f / amax : 0.0f) : (d != 0.0f ? 1.0f / d : 0.0f);
    int s = 0;
    for (int j = 0; j < 32; j++) {
        q[j] = cpu ? rne_i8(x[j] * id) : round_i8(x[j] * id);
        s += q[j];
    }
    *sum = s;
    return d;
}

/* y[n] = q * d */
static inline void deq_i8(const int8_t *q, float d, float *y, int n)
{
    for (int j = 0; j < n; j++) y[j] = (float)q[j] * d;
}

static void deq_q8_0(const void *src, float *y, int64_t nb)
{
    const block_q8_0 *x = src;
    for (int64_t i = 0; i < nb; i++, y += QK8_0) deq_i8(x[i].qs, FP16(x[i].d), y, QK8_0);
}

static inline void q8_0_blocks(const float *x, void *dst, int64_t nb, bool cpu)
{
    block_q8_0 *y = dst;
    for (int64_t i = 0; i < nb; i++, x += QK8_0) {
        int sum;
        y[i].d = TO16(quant_q8_32(x, cpu, y[i].qs, &sum));
    }
}

static void q_q8_0(const float *x, void *dst, int64_t nb)
{
    q8_0_blocks(x, dst, nb, false);
}

static void deq_q8_1(const void *src, float *y, int64_t nb)
{
    const block_q8_1 *x = src;
    for (int64_t i = 0; i < nb; i++, y += QK8_1) deq_i8(x[i].qs, FP16(x[i].d), y, QK8_1);
}

/* s = sum(q) * d, rounded to f16 */
static inline void q8_1_blocks(const float *x, void *dst, int64_t nb, bool cpu)
{
    block_q8_1 *y = dst;
    for (int64_t i = 0; i < nb; i++, x += QK8_1) {
        int sum;
        const float d = quant_q8_32(x, cpu, y[i].qs, &sum);
        y[i].d = TO16(d);
        y[i].s = TO16((float)sum * d);
    }
}

static void q_q8_1(const float *x, void *dst, int64_t nb)
{
    q8_1_blocks(x, dst, nb, false);
}

/* ---------------------------------------------------------------- K-quant helpers */

/* Symmetric quantisation of x[n] to L[i] in [0, 2 nmax) (offset nmax), weights x^2, with a small
 * search over the scale; returns the scale. ggml's make_qx_quants with rmse_type 1, no qw. */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L)
{
    float amax;
    const float max = signed_absmax(x, n, &amax);
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = QMAX(-nmax, QMIN(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = QMAX(-nmax, QMIN(nmax - 1, l));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                const int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + QMAX(-nmax, QMIN(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* ggml's make_q3_quants with do_rmse: L[i] in [0, 2 nmax) (offset nmax). */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L)
{
    float amax;
    const float max = signed_absmax(x, n, &amax);
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    const float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = QMAX(-nmax, QMIN(nmax - 1, l));
        L[i] = (int8_t)l;
        const float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                int new_l = nearest_int(x[i] * sl2 / slx);
                new_l = QMAX(-nmax, QMIN(nmax - 1, new_l));
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Asymmetric quantisation x ~ scale * L - the_min with L in [0, nmax], weighted least squares
 * search over the scale. ggml's make_qkx2_quants. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                              bool use_mad)
{
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)QMAX(0, QMIN(nmax, l));
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = QMAX(0, QMIN(nmax, l));
            Laux[i] = (uint8_t)l;
            const float w = weights[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes of Q4_K / Q5_K */
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* d * scale and dmin * min of sub-block j of a Q4_K / Q5_K super-block */
static inline void k4_scale_min(const uint8_t *scales, int j, float d, float dmin, float *dj,
                                float *mj)
{
    uint8_t sc, m;
    get_scale_min_k4(j, scales, &sc, &m);
    *dj = d * (float)sc;
    *mj = dmin * (float)m;
}

/* Shared first half of Q4_K / Q5_K: per-sub-block scales and mins, packed into y->scales,
 * then the quants L[QK_K] in [0, nmax] recomputed from the rounded scales. */
static void quant_k4_scales(const float *x, int nmax, float rmin, int nstep, uint8_t *scales_out,
                            bt_f16 *d_out, bt_f16 *dmin_out, uint8_t *L)
{
    uint8_t Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                     rmin, 0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(scales_out, 0, K_SCALE_SIZE);
    for (int j = 0; j < QK_K / 32; j++) {
        /* ggml stores nearest_int into a uint8_t before clamping to 63 */
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = QMIN(63, ls);
        lm = QMIN(63, lm);
        if (j < 4) {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = (uint8_t)((ls & 0x0f) | ((lm & 0x0f) << 4));
            scales_out[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales_out[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d_out = TO16(max_scale / 63.f);
    *dmin_out = TO16(max_min / 63.f);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        get_scale_min_k4(j, scales_out, &sc, &m);
        const float d = FP16(*d_out) * (float)sc;
        if (d == 0.0f) continue;
        const float dm = FP16(*dmin_out) * (float)m;
        for (int ii = 0; ii < 32; ii++) {
            const int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)QMAX(0, QMIN(nmax, l));
        }
    }
}

/* 2-bit quants L[QK_K] (0..3) into qs[QK_K / 4] as Q2_K and Q3_K store them: byte l of each 32
 * holds values l, l + 32, l + 64, l + 96 of its 128 */
static void pack_2bit(const uint8_t *L, uint8_t *qs)
{
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

/* ---------------------------------------------------------------- Q2_K */

static void deq_q2_K(const void *src, float *y, int64_t nb)
{
    const block_q2_K *x = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = FP16(x[i].d);
        const float min = FP16(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int n = 0; n < QK_K; n += 128) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    const uint8_t sc = x[i].scales[is++];
                    const float dl = d * (float)(sc & 0x0f);
                    const float ml = min * (float)(sc >> 4);
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * (float)((q[l + 16 * half] >> shift) & 3) - ml;
                }
            }
            q += 32;
        }
    }
}

static void q_q2_K(const float *x, void *dst, int64_t nb)
{
    block_q2_K *y = dst;
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    const float q4scale = 15.f;
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
            scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                         -0.5f, 0.1f, 15, true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0) {
            const float iscale = q4scale / max_scale;
            for (int j = 0; j < QK_K / 16; j++)
                y[i].scales[j] = (uint8_t)nearest_int(iscale * scales[j]);
            y[i].d = TO16(max_scale / q4scale);
        } else {
            for (int j = 0; j < QK_K / 16; j++) y[i].scales[j] = 0;
            y[i].d = TO16(0.f);
        }
        if (max_min > 0) {
            const float iscale = q4scale / max_min;
            for (int j = 0; j < QK_K / 16; j++)
                y[i].scales[j] |= (uint8_t)((unsigned)nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = TO16(max_min / q4scale);
        } else {
            y[i].dmin = TO16(0.f);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = FP16(y[i].d) * (float)(y[i].scales[j] & 0x0f);
            if (d == 0.0f) continue;
            const float dm = FP16(y[i].dmin) * (float)(y[i].scales[j] >> 4);
            for (int ii = 0; ii < 16; ii++) {
                const int l = nearest_int((x[16 * j + ii] + dm) / d);
                L[16 * j + ii] = (uint8_t)QMAX(0, QMIN(3, l));
            }
        }
        pack_2bit(L, y[i].qs);
    }
}

/* ---------------------------------------------------------------- Q3_K */

/* the 16 signed 6-bit scales (offset 32 removed) of a Q3_K block */
static void q3_K_scales(const uint8_t *s, int8_t *out)
{
    for (int j = 0; j < QK_K / 16; j++) {
        const int lo = j < 8 ? (s[j] & 0x0f) : (s[j - 8] >> 4);
        const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

static void deq_q3_K(const void *src, float *y, int64_t nb)
{
    const block_q3_K *x = src;
    int8_t scales[QK_K / 16];
    for (int64_t i = 0; i < nb; i++) {
        const float d_all = FP16(x[i].d);
        const uint8_t *q = x[i].qs;
        const uint8_t *hm = x[i].hmask;
        uint8_t m = 1;
        q3_K_scales(x[i].scales, scales);
        int is = 0;
        for (int n = 0; n < QK_K; n += 128) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    const float dl = d_all * (float)scales[is++];
                    for (int l = 16 * half; l < 16 * half + 16; l++) {
                        const int v = ((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4);
                        *y++ = dl * (float)v;
                    }
                }
                m = (uint8_t)(m << 1);
            }
            q += 32;
        }
    }
}

static void q_q3_K(const float *x, void *dst, int64_t nb)
{
    block_q3_K *y = dst;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        for (int j = 0; j < QK_K / 16; j++)
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
        float amax;
        const float max_scale = signed_absmax(scales, QK_K / 16, &amax);
        memset(y[i].scales, 0, 12);
        if (max_scale != 0.0f) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < QK_K / 16; j++) {
                int l = nearest_int(iscale * scales[j]);
                l = QMAX(-32, QMIN(31, (int8_t)l)) + 32;
                if (j < 8)
                    y[i].scales[j] = (uint8_t)(l & 0x0f);
                else
                    y[i].scales[j - 8] |= (uint8_t)((l & 0x0f) << 4);
                l >>= 4;
                y[i].scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
            }
            y[i].d = TO16(1 / iscale);
        } else {
            y[i].d = TO16(0.f);
        }
        int8_t sc[QK_K / 16];
        q3_K_scales(y[i].scales, sc);
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = FP16(y[i].d) * (float)sc[j];
            if (d == 0.0f) continue;
            for (int ii = 0; ii < 16; ii++) {
                const int l = nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(QMAX(-4, QMIN(3, l)) + 4);
            }
        }
        memset(y[i].hmask, 0, QK_K / 8);
        int m = 0;
        uint8_t hm = 1;
        for (int j = 0; j < QK_K; j++) {
            if (L[j] > 3) {
                y[i].hmask[m] |= hm;
                L[j] = (int8_t)(L[j] - 4);
            }
            if (++m == QK_K / 8) {
                m = 0;
                hm = (uint8_t)(hm << 1);
            }
        }
        pack_2bit((const uint8_t *)L, y[i].qs);
    }
}

/* ---------------------------------------------------------------- Q4_K, Q5_K */

static void deq_q4_K(const void *src, float *y, int64_t nb)
{
    const block_q4_K *x = src;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const float d = FP16(x[i].d);
        const float min = FP16(x[i].dmin);
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
            float d1, m1, d2, m2;
            k4_scale_min(x[i].scales, is, d, min, &d1, &m1);
            k4_scale_min(x[i].scales, is + 1, d, min, &d2, &m2);
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0x0f) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static void q_q4_K(const float *x, void *dst, int64_t nb)
{
    block_q4_K *y = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        quant_k4_scales(x, 15, -1.f, 20, y[i].scales, &y[i].d, &y[i].dmin, L);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void deq_q5_K(const void *src, float *y, int64_t nb)
{
    const block_q5_K *x = src;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *ql = x[i].qs;
        const uint8_t *qh = x[i].qh;
        const float d = FP16(x[i].d);
        const float min = FP16(x[i].dmin);
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32) {
            float d1, m1, d2, m2;
            k4_scale_min(x[i].scales, is, d, min, &d1, &m1);
            k4_scale_min(x[i].scales, is + 1, d, min, &d2, &m2);
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((ql[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

static void q_q5_K(const float *x, void *dst, int64_t nb)
{
    block_q5_K *y = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        quant_k4_scales(x, 31, -0.5f, 15, y[i].scales, &y[i].d, &y[i].dmin, L);
        uint8_t *qh = y[i].qh, *ql = y[i].qs;
        memset(qh, 0, QK_K / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int n = 0; n < QK_K; n += 64, ql += 32) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[n + j];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                int l2 = L[n + j + 32];
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
        }
    }
}

/* ---------------------------------------------------------------- Q6_K */

static void deq_q6_K(const void *src, float *y, int64_t nb)
{
    const block_q6_K *x = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = FP16(x[i].d);
        const uint8_t *ql = x[i].ql;
        const uint8_t *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[is + 0] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

static void q_q6_K(const float *x, void *dst, int64_t nb)
{
    block_q6_K *y = dst;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        for (int ib = 0; ib < QK_K / 16; ib++)
            scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
        float max_abs_scale;
        const float max_scale = signed_absmax(scales, QK_K / 16, &max_abs_scale);
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[i].d = TO16(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ib++)
            y[i].scales[ib] = (int8_t)QMIN(127, nearest_int(iscale * scales[ib]));
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = FP16(y[i].d) * (float)y[i].scales[j];
            if (d == 0.0f) continue;
            for (int ii = 0; ii < 16; ii++) {
                const int l = nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(QMAX(-32, QMIN(31, l)) + 32);
            }
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                const int l0 = L[j + l], l1 = L[j + l + 32], l2 = L[j + l + 64], l3 = L[j + l + 96];
                ql[l] = (uint8_t)((l0 & 0x0f) | ((l2 & 0x0f) << 4));
                ql[l + 32] = (uint8_t)((l1 & 0x0f) | ((l3 & 0x0f) << 4));
                qh[l] =
                    (uint8_t)((l0 >> 4) | ((l1 >> 4) << 2) | ((l2 >> 4) << 4) | ((l3 >> 4) << 6));
            }
        }
    }
}

/* ---------------------------------------------------------------- Q8_K */

static void deq_q8_K(const void *src, float *y, int64_t nb)
{
    const block_q8_K *x = src;
    for (int64_t i = 0; i < nb; i++, y += QK_K) deq_i8(x[i].qs, x[i].d, y, QK_K);
}

static void q_q8_K(const float *x, void *dst, int64_t nb)
{
    block_q8_K *y = dst;
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float amax;
        const float max = signed_absmax(x, QK_K, &amax);
        if (amax == 0.0f) {
            /* ggml leaves bsums unset here; zero is what they would sum to */
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) y[i].qs[j] = (int8_t)QMIN(127, nearest_int(iscale * x[j]));
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int ii = 0; ii < 16; ii++) sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

/* ---------------------------------------------------------------- type table */

struct type_entry {
    struct bt_type_info info;
    deq_fn deq; /* called with the number of blocks */
    q_fn q;
};

#define T_PLAIN(name, size)                                                                        \
    {                                                                                              \
        {name, 1, size, false, false}, NULL, NULL                                                  \
    }
#define T_BLOCK(name, blck, size)                                                                  \
    {                                                                                              \
        {name, blck, size, false, false}, NULL, NULL                                               \
    }
#define T_FULL(name, blck, size, d, q)                                                             \
    {                                                                                              \
        {name, blck, size, true, true}, d, q                                                       \
    }

static const struct type_entry types[BT_TYPE_COUNT] = {
    [BT_F32] = T_FULL("f32", 1, 4, deq_f32, q_f32),
    [BT_F16] = T_FULL("f16", 1, 2, deq_f16, q_f16),
    [BT_Q4_0] = T_FULL("q4_0", QK4_0, sizeof(block_q4_0), deq_q4_0, q_q4_0),
    [BT_Q4_1] = T_FULL("q4_1", QK4_1, sizeof(block_q4_1), deq_q4_1, q_q4_1),
    [BT_Q5_0] = T_FULL("q5_0", QK5_0, sizeof(block_q5_0), deq_q5_0, q_q5_0),
    [BT_Q5_1] = T_FULL("q5_1", QK5_1, sizeof(block_q5_1), deq_q5_1, q_q5_1),
    [BT_Q8_0] = T_FULL("q8_0", QK8_0, sizeof(block_q8_0), deq_q8_0, q_q8_0),
    [BT_Q8_1] = T_FULL("q8_1", QK8_1, sizeof(block_q8_1), deq_q8_1, q_q8_1),
    [BT_Q2_K] = T_FULL("q2_K", QK_K, sizeof(block_q2_K), deq_q2_K, q_q2_K),
    [BT_Q3_K] = T_FULL("q3_K", QK_K, sizeof(block_q3_K), deq_q3_K, q_q3_K),
    [BT_Q4_K] = T_FULL("q4_K", QK_K, sizeof(block_q4_K), deq_q4_K, q_q4_K),
    [BT_Q5_K] = T_FULL("q5_K", QK_K, sizeof(block_q5_K), deq_q5_K, q_q5_K),
    [BT_Q6_K] = T_FULL("q6_K", QK_K, sizeof(block_q6_K), deq_q6_K, q_q6_K),
    [BT_Q8_K] = T_FULL("q8_K", QK_K, sizeof(block_q8_K), deq_q8_K, q_q8_K),
    [16] = T_BLOCK("iq2_xxs", QK_K, 2 + QK_K / 4),
    [17] = T_BLOCK("iq2_xs", QK_K, 2 + QK_K / 4 + QK_K / 32),
    [18] = T_BLOCK("iq3_xxs", QK_K, 2 + QK_K / 4 + QK_K / 8),
    [19] = T_BLOCK("iq1_s", QK_K, 2 + QK_K / 8 + QK_K / 16),
    [20] = T_BLOCK("iq4_nl", 32, 2 + 16),
    [21] = T_BLOCK("iq3_s", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
    [22] = T_BLOCK("iq2_s", QK_K, 2 + QK_K / 4 + QK_K / 16),
    [23] = T_BLOCK("iq4_xs", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
    [BT_I8] = T_PLAIN("i8", 1),
    [BT_I16] = T_PLAIN("i16", 2),
    [BT_I32] = T_PLAIN("i32", 4),
    [BT_I64] = T_PLAIN("i64", 8),
    [BT_F64] = T_PLAIN("f64", 8),
    [29] = T_BLOCK("iq1_m", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
    [BT_BF16] = T_FULL("bf16", 1, 2, deq_bf16, q_bf16),
    [BT_TQ1_0] = T_BLOCK("tq1_0", QK_K, 2 + 4 * 13),
    [BT_TQ2_0] = T_BLOCK("tq2_0", QK_K, 2 + 64),
    [BT_MXFP4] = T_BLOCK("mxfp4", 32, 1 + 16),
    [BT_NVFP4] = T_BLOCK("nvfp4", 64, 4 + 32),
    [BT_Q1_0] = T_BLOCK("q1_0", 128, 2 + 16),
    [BT_Q2_0] = T_BLOCK("q2_0", 64, 2 + 16),
};

const struct bt_type_info *bt_type_get(uint32_t type)
{
    if (type >= BT_TYPE_COUNT || !types[type].info.name) return NULL;
    return &types[type].info;
}

const char *bt_type_name(uint32_t type)
{
    const struct bt_type_info *ti = bt_type_get(type);
    return ti ? ti->name : "unknown";
}

int bt_type_from_name(const char *name)
{
    if (!name) return -1;
    for (uint32_t t = 0; t < BT_TYPE_COUNT; t++)
        if (types[t].info.name && strcasecmp(types[t].info.name, name) == 0) return (int)t;
    return -1;
}

size_t bt_row_size(uint32_t type, int64_t n)
{
    const struct bt_type_info *ti = bt_type_get(type);
    if (!ti || n < 0 || n % ti->blck_size != 0) return 0;
    const uint64_t nb = (uint64_t)(n / ti->blck_size);
    if (nb > (uint64_t)INT64_MAX / ti->type_size) return 0; /* callers may hold it in int64 */
    return (size_t)(nb * ti->type_size);
}

int bt_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n)
{
    const struct bt_type_info *ti = bt_type_get(type);
    if (!ti || !ti->can_dequant) return BT_EUNSUP;
    if (n < 0 || n % ti->blck_size != 0 || (n > 0 && (!src || !dst))) return BT_EINVAL;
    if (n > 0) types[type].deq(src, dst, n / ti->blck_size);
    return BT_OK;
}

int bt_quantize_row(uint32_t type, const float *src, void *dst, int64_t n)
{
    const struct bt_type_info *ti = bt_type_get(type);
    if (!ti || !ti->can_quant) return BT_EUNSUP;
    if (n < 0 || n % ti->blck_size != 0 || (n > 0 && (!src || !dst))) return BT_EINVAL;
    if (n > 0) types[type].q(src, dst, n / ti->blck_size);
    return BT_OK;
}

int bt_quantize_row_cpu(uint32_t type, const float *src, void *dst, int64_t n)
{
    if (type != BT_Q8_0 && type != BT_Q8_1) return bt_quantize_row(type, src, dst, n);
    if (n < 0 || n % QK8_0 != 0 || (n > 0 && (!src || !dst))) return BT_EINVAL;
    if (n > 0 && type == BT_Q8_0) q8_0_blocks(src, dst, n / QK8_0, true);
    if (n > 0 && type == BT_Q8_1) q8_1_blocks(src, dst, n / QK8_1, true);
    return BT_OK;
}
