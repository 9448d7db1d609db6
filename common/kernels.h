/* kernels: CPU matrix products against weights of every supported type, parallel over a pool.
 *
 * Numerics follow llama.cpp: activations are quantised per row to the weight type's partner
 * type exactly as the reference quantisers of quant.h do (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for
 * Q4_1/Q5_1, Q8_K for Q4_K/Q5_K/Q6_K), integer dot products per block, f32 accumulation; F16
 * weights meet activations rounded to f16, BF16 weights activations rounded to bf16; F32 is plain
 * f32. Results do not depend on the number of threads.
 *
 * Kernels: for a few rows of X (decode) a matvec kernel streams each weight row once and reuses
 * it for up to 4 rows of X; from 4 rows of X (quantised types) or 16 (float types) on, a gemm
 * kernel unpacks and transposes 32 weight rows at a time into a small tile that is reused for
 * every row of X (prefill), so prefill is bound by arithmetic, not by memory.
 *
 * Work is split into units (a few rows of a matrix x a few rows of X); each thread takes the
 * units of its own contiguous range first, then helps the others. kern_matmul_multi runs several
 * matrices with the same X in one job and can fuse a row transform of X (e.g. rmsnorm) and an
 * operation on each finished tile of results (bias, residual add, SwiGLU). The matvec kernels
 * prefetch the weight stream into L2 ahead of their reads.
 *
 * Instruction sets: chosen at run time (AVX-512 with VNNI, plus AVX512_BF16 for BF16 when the
 * CPU has it; AVX2+FMA+F16C; or portable scalar C). kern_set_isa, or the environment variable
 * BATON_KERN_ISA=avx512|avx2|scalar read once at the first call, force a lower level.
 *
 * Memory: activations are quantised into a per-thread scratch buffer owned by this module (one
 * per thread that calls kern_matmul or runs its pool jobs; freed when that thread exits). A
 * buffer grows (geometrically) only when a call needs more than it holds, so after the first
 * calls at the largest shapes, or after kern_reserve for them, hot calls never allocate.
 *
 * Threads: kern_matmul may be called from any thread, concurrently on different pools (a pool
 * itself runs one job at a time). kern_set_isa is for start-up and tests: not concurrently with
 * kern_matmul. */
#ifndef BATON_KERNELS_H
#define BATON_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bt_pool;

/* Y (m, rows) = X (m, n) @ W^T.
 * W: `rows` rows of n elements of type wtype, each bt_row_size(wtype, n) bytes, contiguous
 * (borrowed, typically the mmap). X, Y: row-major f32, Y[i * rows + r]; Y must not overlap X.
 * n must be a multiple of the type's block size. Work is split over the pool's threads (by rows,
 * and by rows of X when m > 1); p == NULL runs on the caller only.
 * Returns 0, BT_EINVAL (bad sizes), BT_EUNSUP (type) or BT_ENOMEM (scratch could not grow). */
int kern_matmul(struct bt_pool *p, uint32_t wtype, const void *W, int64_t rows, int64_t n,
                const float *X, int64_t m, float *Y);

/* Several matrices against the same X in one pool job (fewer synchronisations per layer). */
#define KERN_MULTI_MAX 4

struct kern_mat {
    uint32_t type; /* weight type */
    const void *W; /* (rows, n) as for kern_matmul, borrowed */
    int64_t rows;  /* may be 0 */
    float *Y;      /* (m, rows) */
};

/* Row transform of X before it is converted: out (n) = f(x (n)), x being row c of X. Called by
 * any thread of the pool, possibly several times for the same row; must be a pure function. */
typedef void (*kern_pre_fn)(const void *ctx, const float *x, float *out, int64_t c);
/* Called by the thread that computed them, as soon as rows [r0, r1) of matrix `mat` (of both
 * matrices when paired; mat is then 0) are final for rows [c0, c1) of X. Different calls cover
 * disjoint parts of the outputs and may run concurrently. */
typedef void (*kern_post_fn)(void *ctx, int mat, int64_t r0, int64_t r1, int64_t c0, int64_t c1);

struct kern_fuse {
    kern_pre_fn pre; /* NULL: X as is */
    const void *pre_ctx;
    kern_post_fn post; /* NULL: none */
    void *post_ctx;
    bool paired; /* two matrices of the same rows: every unit covers the same rows of both */
    bool gemm;   /* the gemm kernel whatever m (when the type has one on this instruction set):
                  * a row's results then do not depend on how many rows the call has, since the
                  * gemm computes every (row of X, row of W) in the same order for any m */
};

/* Y_i (m, rows_i) = pre(X) (m, n) @ W_i^T for each of the n_mats (1..KERN_MULTI_MAX) matrices,
 * then post over the results, in one job of the pool when all have the same type (else one job
 * per matrix). fu may be NULL. Results are those of kern_matmul on the transformed X. Returns as
 * kern_matmul. */
int kern_matmul_multi(struct bt_pool *p, const struct kern_mat *mats, int n_mats, int64_t n,
                      const float *X, int64_t m, const struct kern_fuse *fu);

/* g (n) = silu(g) * u = g / (1 + exp(-g)) * u, with the current instruction set (vector exp
 * within a few ulp of expf's). */
void kern_swiglu(float *g, const float *u, int64_t n);

/* Grow the scratch of the calling thread and of every worker of p so that kern_matmul from this
 * thread on p, with this type and at most these n and m, will not allocate. Optional; call it from
 * the thread that will call kern_matmul. BT_ENOMEM if a buffer could not grow. */
int kern_reserve(struct bt_pool *p, uint32_t wtype, int64_t n, int64_t m);

/* kern_matmul handles weights of this type. */
bool kern_supports(uint32_t wtype);

/* "avx512" | "avx2" | "scalar": the instruction set in use. */
const char *kern_isa(void);
/* Force an instruction set ("avx512", "avx2", "scalar", or "auto" for the best available).
 * BT_EUNSUP if the CPU lacks it (or it was not compiled in), BT_EINVAL for an unknown name. */
int kern_set_isa(const char *isa);

/* Quantise one row of activations x[n] to `type` (BT_Q8_0, BT_Q8_1 or BT_Q8_K) in the standard
 * block layout, with the current instruction set; bit-identical to bt_quantize_row. */
int kern_quantize_row(uint32_t type, const float *x, void *dst, int64_t n);

/* Bytes per second of a streaming read of a `bytes` buffer over the pool's threads (best of a
 * few passes); for benchmarks, to put kernel speeds in relation to memory bandwidth. Allocates
 * and frees the buffer. Returns a negative value if it could not allocate. */
double kern_measure_read_bw(struct bt_pool *p, size_t bytes);

#endif
