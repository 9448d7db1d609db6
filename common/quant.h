/* quant: tensor element types (ggml numbering, as stored in GGUF), their block layouts, and
 * reference (scalar) conversion to and from float.
 *
 * Block layouts are those of the GGUF format; a row of n elements of a block type holds
 * n / blck_size blocks. The fast SIMD dot products live in kernels.*, these are the reference.
 *
 * Quantisation follows ggml's non-imatrix reference algorithms (quantize_row_*_ref) bit for bit,
 * so a tensor quantised here is byte-identical to one llama.cpp quantises without an imatrix,
 * and Q8_0 / Q8_1 / Q8_K activations match ggml's reference quantisers. This holds when the
 * file is compiled as ISO C (-std=c11: no FMA contraction), which meson.build does. Inputs
 * should be finite; NaN/Inf inputs give unspecified (but memory-safe, UB-free) blocks.
 *
 * Ownership: no allocation; callers own every buffer. Threads: everything here is pure and
 * may be called from any thread concurrently; the type table is static and read-only. */
#ifndef BATON_QUANT_H
#define BATON_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum bt_type {
    BT_F32 = 0,
    BT_F16 = 1,
    BT_Q4_0 = 2,
    BT_Q4_1 = 3,
    BT_Q5_0 = 6,
    BT_Q5_1 = 7,
    BT_Q8_0 = 8,
    BT_Q8_1 = 9,
    BT_Q2_K = 10,
    BT_Q3_K = 11,
    BT_Q4_K = 12,
    BT_Q5_K = 13,
    BT_Q6_K = 14,
    BT_Q8_K = 15,
    BT_I8 = 24,
    BT_I16 = 25,
    BT_I32 = 26,
    BT_I64 = 27,
    BT_F64 = 28,
    BT_BF16 = 30,
    BT_TQ1_0 = 34,
    BT_TQ2_0 = 35,
    BT_MXFP4 = 39,
    BT_NVFP4 = 40,
    BT_Q1_0 = 41,
    BT_Q2_0 = 42,
    BT_TYPE_COUNT = 43, /* ids below this may be known to GGUF (some unused); >= is invalid */
};

typedef uint16_t bt_f16;  /* IEEE half, bit pattern */
typedef uint16_t bt_bf16; /* bfloat16, bit pattern */

#define QK4_0        32
#define QK4_1        32
#define QK5_0        32
#define QK5_1        32
#define QK8_0        32
#define QK8_1        32
#define QK_K         256
#define K_SCALE_SIZE 12

/* x[i] = (q[i] - 8) * d; qs[j] holds x[j] in its low nibble and x[j + 16] in its high one. */
typedef struct {
    bt_f16 d;
    uint8_t qs[QK4_0 / 2];
} block_q4_0;
/* x[i] = q[i] * d + m */
typedef struct {
    bt_f16 d;
    bt_f16 m;
    uint8_t qs[QK4_1 / 2];
} block_q4_1;
/* 5th bit of x[j] is bit j of qh (little-endian u32); x = (q - 16) * d */
typedef struct {
    bt_f16 d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
} block_q5_0;
/* x = q * d + m */
typedef struct {
    bt_f16 d;
    bt_f16 m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;
/* x = q * d */
typedef struct {
    bt_f16 d;
    int8_t qs[QK8_0];
} block_q8_0;
/* activations: s = d * sum(qs) */
typedef struct {
    bt_f16 d;
    bt_f16 s;
    int8_t qs[QK8_1];
} block_q8_1;
/* 8 sub-blocks of 32, 6-bit scales and mins packed in scales[12] */
typedef struct {
    bt_f16 d;
    bt_f16 dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;
typedef struct {
    bt_f16 d;
    bt_f16 dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
/* 16 sub-blocks of 16, int8 scales; x = d * scale * (q6 - 32) */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    bt_f16 d;
} block_q6_K;
/* activations for K-quant dot products */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;
/* 16 sub-blocks of 16: scales[i] = scale | min << 4 (4 bits each); x = d * sc * q2 - dmin * m */
typedef struct {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    bt_f16 d;
    bt_f16 dmin;
} block_q2_K;
/* 16 sub-blocks of 16, 6-bit signed scales (offset 32) packed in scales[12]; the 3rd bit of each
 * quant in hmask; x = d * (sc - 32) * (q2 - (hbit ? 0 : 4)) */
typedef struct {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    bt_f16 d;
} block_q3_K;

_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 size");
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 size");
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0 size");
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1 size");
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 size");
_Static_assert(sizeof(block_q8_1) == 36, "block_q8_1 size");
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K size");
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K size");
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K size");
_Static_assert(sizeof(block_q8_K) == 292, "block_q8_K size");
_Static_assert(sizeof(block_q2_K) == 84, "block_q2_K size");
_Static_assert(sizeof(block_q3_K) == 110, "block_q3_K size");

struct bt_type_info {
    const char *name; /* "q4_0" ... as llama.cpp prints them; NULL for unknown ids */
    int blck_size;    /* elements per block (1 for plain types) */
    size_t type_size; /* bytes per block */
    bool can_dequant; /* bt_dequantize_row supports it */
    bool can_quant;   /* bt_quantize_row supports it */
};

/* NULL for ids that GGUF does not define. */
const struct bt_type_info *bt_type_get(uint32_t type);
const char *bt_type_name(uint32_t type); /* "unknown" for bad ids */
/* Parse "q4_0", "Q8_0", "f16" ...; returns the type or -1. */
int bt_type_from_name(const char *name);
/* Bytes for a row of n elements; 0 if n is not a multiple of the block size, the type is
 * unknown, or the size would exceed INT64_MAX. */
size_t bt_row_size(uint32_t type, int64_t n);

/* Scalar conversions. */
float bt_f16_to_f32(bt_f16 h);
bt_f16 bt_f32_to_f16(float f); /* round to nearest even, like F16C */
float bt_bf16_to_f32(bt_bf16 h);
bt_bf16 bt_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */
/* Row versions of the above (n elements). */
void bt_f16_to_f32_row(const bt_f16 *src, float *dst, int64_t n);
void bt_f32_to_f16_row(const float *src, bt_f16 *dst, int64_t n);
void bt_bf16_to_f32_row(const bt_bf16 *src, float *dst, int64_t n);
void bt_f32_to_bf16_row(const float *src, bt_bf16 *dst, int64_t n);

/* Reference dequantisation of one row of n elements (n a multiple of the block size).
 * Returns 0, or BT_EUNSUP for types without can_dequant, BT_EINVAL for bad n. */
int bt_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);
/* Reference quantisation of one row (same rules). Deterministic. */
int bt_quantize_row(uint32_t type, const float *src, void *dst, int64_t n);

/* Activation quantisation as ggml's CPU backend does it on x86 builds with AVX/AVX2 (what
 * llama.cpp runs there): Q8_0 and Q8_1 scale by 127/amax (not 1/(amax/127)) and round halves to
 * even, so a few values per thousand blocks differ from bt_quantize_row by one step; every other
 * type (Q8_K included, whose CPU path is the reference) is quantised as bt_quantize_row does.
 * Same return values as bt_quantize_row. */
int bt_quantize_row_cpu(uint32_t type, const float *src, void *dst, int64_t n);

/* ggml's rounding helper for the K-quants: round to nearest, ties to even, for |f| <= 4194303
 * (larger magnitudes give an unspecified int, never UB). */
int bt_nearest_int(float f);

#endif
