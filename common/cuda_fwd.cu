/* cuda_fwd: one pipeline stage's forward pass on a CUDA device (interface and scope: cuda.h).
 *
 * The step mirrors forward.c's layer_forward one kernel (or cuBLAS call) per line:
 *   xb = rmsnorm(x) * attn_norm;  q,k,v = xb @ Wq,Wk,Wv (+ bias);  RoPE(q, k);  k,v -> cache
 *   att = softmax(q k^T / sqrt(head_dim)) v over the token's sequence (grouped-query heads)
 *   x += att @ Wo (+ bo);  xb = rmsnorm(x) * ffn_norm;  x += (silu(xb @ Wgate) * (xb @ Wup)) @
 * Wdown Head (last stage): logits = rmsnorm(x[rows]) * out_norm @ Woutput.
 *
 * Matrices are row-major as in GGUF: W (rows, cols), X (m, cols) -> Y (m, rows) = X @ W^T, which
 * in cuBLAS's column-major terms is C (rows, m) = op_T(W as (cols, rows)) * X as (cols, m).
 *
 * Not verified on a GPU: this file was compiled and linked on a machine without one (see
 * docs/gpu.md for what was and was not run). */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* quant.h checks its block sizes with C11's _Static_assert; C++ spells it static_assert. */
#define _Static_assert static_assert
extern "C" {
#include "kv.h"
#include "log.h"
#include "model.h"
#include "quant.h"
}
#undef _Static_assert
#include "cuda.h"

#define NT 256 /* threads per block of the element-wise and row kernels */

/* ---- errors ---- */

#define CU(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return bt_errf(err, errsz, e_ == cudaErrorMemoryAllocation ? BT_ENOMEM : BT_ERR,       \
                           "CUDA: %s: %s", #call, cudaGetErrorString(e_));                         \
    } while (0)
#define CB(call)                                                                                   \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return bt_errf(err, errsz, BT_ERR, "cuBLAS: %s: %s", #call,                            \
                           cublasGetStatusString(s_));                                             \
    } while (0)

/* ---- state ---- */

struct dten {
    void *d;       /* device data, NULL for an absent optional tensor */
    uint32_t type; /* F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K (others become F16 at upload) */
    int rows, cols;
    size_t row_bytes;
};

struct dlayer {
    struct dten attn_norm, wq, wk, wv, wo, bq, bk, bv, bo, ffn_norm, w_gate, w_up, w_down;
};

struct cuda_fwd {
    const struct model *m; /* borrowed */
    int device;
    cudaStream_t st;
    cublasHandle_t cb;
    bool have_st, have_cb;
    int n_layer, max_batch, max_out;
    int D, q_dim, kv_dim, n_ff, n_head, n_head_kv, hd, n_rot, neox, n_vocab;
    float eps;
    struct dlayer *L;             /* (n_layer) */
    struct dten out_norm, output; /* last stage */
    /* KV cache: (n_layer, n_blocks, KV_BLOCK, kv_dim) of half or float, the host kv's layout;
     * table: a device copy of the host's block tables (n_seq, max_blocks), sent every step */
    void *kc, *vc;
    bool kv_f16;
    int n_seq, n_ctx, n_blocks, max_blocks;
    int32_t *table;
    size_t attn_smem;
    /* activations (device) */
    float *x;        /* (max_batch, D) residual stream */
    float *xb;       /* (max_batch, D) */
    float *q;        /* (max_batch, q_dim) */
    float *k, *v;    /* (max_batch, kv_dim) */
    float *att;      /* (max_batch, q_dim) */
    float *hb, *hb2; /* (max_batch, n_ff) */
    float *xo;       /* (max_out, D) */
    float *logits;   /* (max_out, n_vocab) */
    void *xh;        /* (max_batch, max_cols) activations as f16/bf16 for cublasGemmEx */
    __half *wdeq;    /* (largest quantised matrix) dequantised weights, batches > GEMV_MAX */
    size_t wdeq_n;
    /* per-step inputs: device copy of the pinned staging below */
    float *rope;   /* (max_batch, n_rot), followed by meta */
    int32_t *meta; /* pos (max_batch), seq (max_batch), rows (max_batch) */
    float *h_in;   /* pinned: (max_batch, D) activations, then rope, then meta */
    float *h_out;  /* pinned: max((max_batch, D), (max_out, n_vocab)) */
    size_t in_floats, out_floats;
    /* every device allocation, freed together */
    void **allocs;
    int n_allocs, cap_allocs;
    uint64_t bytes;
};

static int dalloc(struct cuda_fwd *c, size_t bytes, void **out, char *err, size_t errsz)
{
    *out = NULL;
    if (c->n_allocs == c->cap_allocs) {
        int cap = c->cap_allocs ? 2 * c->cap_allocs : 64;
        void **a = (void **)realloc(c->allocs, (size_t)cap * sizeof(void *));
        if (!a) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
        c->allocs = a;
        c->cap_allocs = cap;
    }
    CU(cudaMalloc(out, bytes ? bytes : 16));
    c->allocs[c->n_allocs++] = *out;
    c->bytes += bytes;
    return 0;
}

/* ---- device helpers ---- */

__device__ __forceinline__ float h2f(uint16_t h)
{
    return __half2float(__ushort_as_half(h));
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum (or max) of v over the block; every thread gets the result. */
template <bool MAX> __device__ float block_reduce(float v)
{
    __shared__ float red[32];
    const int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = (blockDim.x + 31) / 32;
    v = MAX ? warp_max(v) : warp_sum(v);
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0) red[wid] = v;
    __syncthreads();
    float r = MAX ? -INFINITY : 0.0f;
    for (int i = 0; i < nw; i++) r = MAX ? fmaxf(r, red[i]) : r + red[i];
    return r;
}

/* ---- quantised blocks: visit every element of one block as (index, value) ---- */

template <int T> struct qinfo;
template <> struct qinfo<BT_Q8_0> {
    enum { QK = QK8_0, BYTES = sizeof(block_q8_0) };
};
template <> struct qinfo<BT_Q4_0> {
    enum { QK = QK4_0, BYTES = sizeof(block_q4_0) };
};
template <> struct qinfo<BT_Q4_K> {
    enum { QK = QK_K, BYTES = sizeof(block_q4_K) };
};
template <> struct qinfo<BT_Q6_K> {
    enum { QK = QK_K, BYTES = sizeof(block_q6_K) };
};

/* Sum of value * x[index]. */
struct DotOp {
    const float *x;
    float s;
    __device__ void operator()(int i, float v)
    {
        s += v * x[i];
    }
};

/* out[index] = value, as a half. */
struct DeqOp {
    __half *o;
    __device__ void operator()(int i, float v)
    {
        o[i] = __float2half_rn(v);
    }
};

template <int T, class Op> __device__ __forceinline__ void visit(const uint8_t *p, Op &op)
{
    if (T == BT_Q8_0) {
        const block_q8_0 *b = (const block_q8_0 *)p;
        const float d = h2f(b->d);
        for (int i = 0; i < QK8_0; i++) op(i, d * (float)b->qs[i]);
    } else if (T == BT_Q4_0) {
        const block_q4_0 *b = (const block_q4_0 *)p;
        const float d = h2f(b->d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            op(j, d * (float)((b->qs[j] & 0x0f) - 8));
            op(j + QK4_0 / 2, d * (float)((b->qs[j] >> 4) - 8));
        }
    } else if (T == BT_Q4_K) {
        const block_q4_K *b = (const block_q4_K *)p;
        const float d = h2f(b->d), dmin = h2f(b->dmin);
        const uint8_t *q = b->qs, *s = b->scales;
        for (int j = 0; j < 4; j++, q += 32) {
            float dd[2], mm[2];
            for (int h = 0; h < 2; h++) {
                const int is = 2 * j + h;
                int sc, mn;
                if (is < 4) {
                    sc = s[is] & 63;
                    mn = s[is + 4] & 63;
                } else {
                    sc = (s[is + 4] & 0x0f) | ((s[is - 4] >> 6) << 4);
                    mn = (s[is + 4] >> 4) | ((s[is] >> 6) << 4);
                }
                dd[h] = d * (float)sc;
                mm[h] = dmin * (float)mn;
            }
            for (int l = 0; l < 32; l++) {
                op(64 * j + l, dd[0] * (float)(q[l] & 0x0f) - mm[0]);
                op(64 * j + 32 + l, dd[1] * (float)(q[l] >> 4) - mm[1]);
            }
        }
    } else if (T == BT_Q6_K) {
        const block_q6_K *b = (const block_q6_K *)p;
        const float d = h2f(b->d);
        for (int n = 0; n < 2; n++) {
            const uint8_t *ql = b->ql + 64 * n, *qh = b->qh + 32 * n;
            const int8_t *sc = b->scales + 8 * n;
            for (int l = 0; l < 32; l++) {
                const int is = l / 16, o = 128 * n + l;
                const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                op(o, d * (float)sc[is + 0] * (float)q1);
                op(o + 32, d * (float)sc[is + 2] * (float)q2);
                op(o + 64, d * (float)sc[is + 4] * (float)q3);
                op(o + 96, d * (float)sc[is + 6] * (float)q4);
            }
        }
    }
}

/* Y (m, rows) = X (m, cols) @ W^T for a quantised W, m <= CUDA_GEMV_MAX: one warp per row, the
 * lanes take the row's blocks in turn (neighbouring lanes read neighbouring blocks). */
template <int T>
__global__ void k_gemv(const uint8_t *W, size_t row_bytes, int rows, int cols, const float *X,
                       int m, float *Y)
{
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    const int QK = qinfo<T>::QK, nb = cols / QK;
    const uint8_t *w = W + (size_t)row * row_bytes;
    float acc[CUDA_GEMV_MAX];
#pragma unroll
    for (int r = 0; r < CUDA_GEMV_MAX; r++) acc[r] = 0.0f;
    for (int b = lane; b < nb; b += 32) {
        const uint8_t *blk = w + (size_t)b * qinfo<T>::BYTES;
#pragma unroll
        for (int r = 0; r < CUDA_GEMV_MAX; r++) {
            if (r >= m) break;
            DotOp op = {X + (size_t)r * cols + (size_t)b * QK, 0.0f};
            visit<T>(blk, op);
            acc[r] += op.s;
        }
    }
#pragma unroll
    for (int r = 0; r < CUDA_GEMV_MAX; r++) {
        if (r >= m) break;
        const float s = warp_sum(acc[r]);
        if (lane == 0) Y[(size_t)r * rows + row] = s;
    }
}

/* out (rows, cols) halves = dequantised W; one thread per block. */
template <int T>
__global__ void k_dequant(const uint8_t *W, size_t row_bytes, int rows, int cols, __half *out)
{
    const int QK = qinfo<T>::QK, nb = cols / QK;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)rows * nb) return;
    const int64_t row = i / nb, b = i % nb;
    DeqOp op = {out + row * cols + b * QK};
    visit<T>(W + row * row_bytes + b * qinfo<T>::BYTES, op);
}

/* ---- element-wise and row kernels ---- */

__global__ void k_f32_to_f16(const float *x, __half *y, int64_t n)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2half_rn(x[i]);
}

__global__ void k_f32_to_bf16(const float *x, __nv_bfloat16 *y, int64_t n)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}

/* y (m, n) += b (n) */
__global__ void k_add_bias(float *y, const float *b, int m, int n)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (int64_t)m * n) y[i] += b[i % n];
}

/* y (n) += x (n) */
__global__ void k_add(float *y, const float *x, int64_t n)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += x[i];
}

/* g (n) = silu(g) * u */
__global__ void k_swiglu(float *g, const float *u, int64_t n)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* out row r (n) = x row (rows ? rows[r] : r) / sqrt(mean(x^2) + eps) * w; one block per row */
__global__ void k_rmsnorm(float *out, const float *x, const float *w, int n, float eps,
                          const int32_t *rows)
{
    const int r = blockIdx.x;
    const float *xr = x + (size_t)(rows ? rows[r] : r) * n;
    float *o = out + (size_t)r * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_reduce<false>(ss);
    const float scale = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) o[i] = (xr[i] * scale) * w[i];
}

/* RoPE of token blockIdx.x: q (n, n_head, hd) and k (n, n_head_kv, hd), first n_rot dims of each
 * head, with cs (n, n_rot) cos/sin pairs; pairs (2i, 2i+1) (NORM) or (i, i + n_rot/2) (NEOX). */
__global__ void k_rope(float *q, float *k, const float *cs, int n_head, int n_head_kv, int hd,
                       int n_rot, int neox)
{
    const int t = blockIdx.x, half = n_rot / 2;
    const float *c = cs + (size_t)t * n_rot;
    for (int it = threadIdx.x; it < (n_head + n_head_kv) * half; it += blockDim.x) {
        const int h = it / half, i = it % half;
        float *v = h < n_head ? q + ((size_t)t * n_head + h) * hd
                              : k + ((size_t)t * n_head_kv + (h - n_head)) * hd;
        const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        const float co = c[2 * i], si = c[2 * i + 1], x0 = v[a], x1 = v[b];
        v[a] = x0 * co - x1 * si;
        v[b] = x0 * si + x1 * co;
    }
}

template <typename KT> __device__ __forceinline__ KT to_kv(float v);
template <> __device__ __forceinline__ float to_kv<float>(float v)
{
    return v;
}
template <> __device__ __forceinline__ __half to_kv<__half>(float v)
{
    return __float2half_rn(v);
}
__device__ __forceinline__ float from_kv(float v)
{
    return v;
}
__device__ __forceinline__ float from_kv(__half v)
{
    return __half2float(v);
}

/* The cache cell of position p of sequence s: its block (the block table) and the offset in it. */
__device__ __forceinline__ size_t kv_cell(const int32_t *table, int max_blocks, int s, int p)
{
    return (size_t)table[(size_t)s * max_blocks + p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK;
}

/* k, v rows (n, kv_dim) of token blockIdx.x -> cache cell (layer, seq[t], pos[t]) */
template <typename KT>
__global__ void k_kv_store(KT *kc, KT *vc, const float *k, const float *v, const int32_t *pos,
                           const int32_t *seq, const int32_t *table, int max_blocks,
                           size_t layer_off, int kv_dim)
{
    const int t = blockIdx.x;
    const size_t cell = layer_off + kv_cell(table, max_blocks, seq[t], pos[t]) * kv_dim;
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        kc[cell + i] = to_kv<KT>(k[(size_t)t * kv_dim + i]);
        vc[cell + i] = to_kv<KT>(v[(size_t)t * kv_dim + i]);
    }
}

/* Attention of token blockIdx.x, head blockIdx.y over cells 0..pos[t] of its sequence:
 *   att (hd) = softmax(q . K / sqrt(hd)) @ V, kv head = head / group.
 * Dynamic shared memory: q (hd) and the scores (n_ctx). */
template <typename KT>
__global__ void k_attention(const float *q, float *att, const KT *kc, const KT *vc,
                            const int32_t *pos, const int32_t *seq, const int32_t *table,
                            int max_blocks, size_t layer_off, int n_head, int group, int hd,
                            int kv_dim, float scale)
{
    extern __shared__ float sm[];
    float *qs = sm, *sc = sm + hd;
    const int t = blockIdx.x, h = blockIdx.y, len = pos[t] + 1, s = seq[t];
    const size_t base = layer_off + (size_t)(h / group) * hd;
    const float *qr = q + ((size_t)t * n_head + h) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = qr[i];
    __syncthreads();
    const int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
    for (int p = wid; p < len; p += nw) {
        const KT *kr = kc + base + kv_cell(table, max_blocks, s, p) * kv_dim;
        float s = 0.0f;
        for (int i = lane; i < hd; i += 32) s += qs[i] * from_kv(kr[i]);
        s = warp_sum(s);
        if (lane == 0) sc[p] = s * scale;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int p = threadIdx.x; p < len; p += blockDim.x) mx = fmaxf(mx, sc[p]);
    mx = block_reduce<true>(mx);
    float sum = 0.0f;
    for (int p = threadIdx.x; p < len; p += blockDim.x) {
        const float e = expf(sc[p] - mx);
        sc[p] = e;
        sum += e;
    }
    sum = block_reduce<false>(sum); /* its barriers also publish sc */
    const float inv = 1.0f / sum;
    float *o = att + ((size_t)t * n_head + h) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc = 0.0f;
        for (int p = 0; p < len; p++)
            acc += sc[p] * from_kv(vc[base + kv_cell(table, max_blocks, s, p) * kv_dim + i]);
        o[i] = acc * inv;
    }
}

#define ATT_THREADS 128

static unsigned grid_for(int64_t n)
{
    return (unsigned)((n + NT - 1) / NT);
}

/* ---- matrix products ---- */

static bool native_quant(uint32_t t)
{
    return t == BT_Q8_0 || t == BT_Q4_0 || t == BT_Q4_K || t == BT_Q6_K;
}

template <int T>
static void launch_quant(struct cuda_fwd *c, const struct dten *w, const float *X, int m, float *Y)
{
    if (m <= CUDA_GEMV_MAX) {
        const int warps = 4;
        k_gemv<T><<<(w->rows + warps - 1) / warps, 32 * warps, 0, c->st>>>(
            (const uint8_t *)w->d, w->row_bytes, w->rows, w->cols, X, m, Y);
    } else {
        const int64_t nblk = (int64_t)w->rows * (w->cols / qinfo<T>::QK);
        k_dequant<T><<<grid_for(nblk), NT, 0, c->st>>>((const uint8_t *)w->d, w->row_bytes, w->rows,
                                                       w->cols, c->wdeq);
    }
}

/* Y (m, w->rows) = X (m, w->cols) @ W^T */
static int matmul(struct cuda_fwd *c, const struct dten *w, const float *X, int m, float *Y,
                  char *err, size_t errsz)
{
    const float one = 1.0f, zero = 0.0f;
    const int64_t nx = (int64_t)m * w->cols;
    if (w->type == BT_F32) {
        CB(cublasSgemm(c->cb, CUBLAS_OP_T, CUBLAS_OP_N, w->rows, m, w->cols, &one,
                       (const float *)w->d, w->cols, X, w->cols, &zero, Y, w->rows));
        return 0;
    }
    if (w->type == BT_F16 || w->type == BT_BF16) {
        cudaDataType dt = w->type == BT_F16 ? CUDA_R_16F : CUDA_R_16BF;
        if (w->type == BT_F16)
            k_f32_to_f16<<<grid_for(nx), NT, 0, c->st>>>(X, (__half *)c->xh, nx);
        else
            k_f32_to_bf16<<<grid_for(nx), NT, 0, c->st>>>(X, (__nv_bfloat16 *)c->xh, nx);
        CB(cublasGemmEx(c->cb, CUBLAS_OP_T, CUBLAS_OP_N, w->rows, m, w->cols, &one, w->d, dt,
                        w->cols, c->xh, dt, w->cols, &zero, Y, CUDA_R_32F, w->rows,
                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        return 0;
    }
    switch (w->type) {
    case BT_Q8_0:
        launch_quant<BT_Q8_0>(c, w, X, m, Y);
        break;
    case BT_Q4_0:
        launch_quant<BT_Q4_0>(c, w, X, m, Y);
        break;
    case BT_Q4_K:
        launch_quant<BT_Q4_K>(c, w, X, m, Y);
        break;
    case BT_Q6_K:
        launch_quant<BT_Q6_K>(c, w, X, m, Y);
        break;
    default:
        return bt_errf(err, errsz, BT_EUNSUP, "CUDA: no kernel for %s weights",
                       bt_type_name(w->type));
    }
    if (m <= CUDA_GEMV_MAX) return 0;
    k_f32_to_f16<<<grid_for(nx), NT, 0, c->st>>>(X, (__half *)c->xh, nx);
    CB(cublasGemmEx(c->cb, CUBLAS_OP_T, CUBLAS_OP_N, w->rows, m, w->cols, &one, c->wdeq, CUDA_R_16F,
                    w->cols, c->xh, CUDA_R_16F, w->cols, &zero, Y, CUDA_R_32F, w->rows,
                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
}

/* ---- upload ---- */

/* Copy tensor t to the device: as it is for the types the kernels read, as F32 when want_f32
 * (norms, biases), else dequantised on the host to F16. */
static int upload(struct cuda_fwd *c, const struct model_tensor *t, bool want_f32, struct dten *o,
                  char *err, size_t errsz)
{
    int rc;
    memset(o, 0, sizeof(*o));
    if (!t->data) return 0;
    o->rows = (int)t->rows;
    o->cols = (int)t->cols;
    const bool keep = want_f32 ? t->type == BT_F32
                               : (t->type == BT_F32 || t->type == BT_F16 || t->type == BT_BF16 ||
                                  native_quant(t->type));
    if (keep) {
        o->type = t->type;
        o->row_bytes = bt_row_size(t->type, t->cols);
        const size_t bytes = o->row_bytes * (size_t)t->rows;
        if ((rc = dalloc(c, bytes, &o->d, err, errsz)) < 0) return rc;
        CU(cudaMemcpy(o->d, t->data, bytes, cudaMemcpyHostToDevice));
        return 0;
    }
    /* convert row by row on the host */
    o->type = want_f32 ? BT_F32 : BT_F16;
    const size_t es = want_f32 ? 4 : 2, in_row = bt_row_size(t->type, t->cols);
    o->row_bytes = es * (size_t)t->cols;
    if ((rc = dalloc(c, o->row_bytes * (size_t)t->rows, &o->d, err, errsz)) < 0) return rc;
    float *f = (float *)malloc((size_t)t->cols * sizeof(float));
    void *h = malloc(o->row_bytes);
    rc = 0;
    if (!f || !h) rc = bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    for (int64_t r = 0; rc == 0 && r < t->rows; r++) {
        if (bt_dequantize_row(t->type, (const char *)t->data + r * in_row, f, t->cols) < 0) {
            rc = bt_errf(err, errsz, BT_EUNSUP, "CUDA: cannot convert %s weights",
                         bt_type_name(t->type));
            break;
        }
        if (want_f32)
            memcpy(h, f, o->row_bytes);
        else
            bt_f32_to_f16_row(f, (bt_f16 *)h, t->cols);
        cudaError_t e =
            cudaMemcpy((char *)o->d + r * o->row_bytes, h, o->row_bytes, cudaMemcpyHostToDevice);
        if (e != cudaSuccess)
            rc = bt_errf(err, errsz, BT_ERR, "CUDA: upload: %s", cudaGetErrorString(e));
    }
    free(f);
    free(h);
    return rc;
}

/* ---- interface ---- */

extern "C" bool cuda_built(void)
{
    return true;
}

extern "C" int cuda_probe(int device, char *name, size_t namesz, double *peak_bw, char *err,
                          size_t errsz)
{
    int n = 0;
    if (name && namesz) name[0] = '\0';
    if (peak_bw) *peak_bw = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess)
        return bt_errf(err, errsz, BT_ENOTFOUND, "no CUDA device: cuda:%d: %s", device,
                       cudaGetErrorString(e));
    if (n <= 0)
        return bt_errf(err, errsz, BT_ENOTFOUND, "no CUDA device: cuda:%d: the driver sees no GPU",
                       device);
    if (device < 0 || device >= n)
        return bt_errf(err, errsz, BT_ENOTFOUND,
                       "no CUDA device: cuda:%d does not exist (%d device%s: cuda:0..cuda:%d)",
                       device, n, n == 1 ? "" : "s", n - 1);
    cudaDeviceProp p;
    CU(cudaGetDeviceProperties(&p, device));
    if (name && namesz) snprintf(name, namesz, "%s", p.name);
    if (peak_bw) {
        int khz = 0, bits = 0;
        if (cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess &&
            cudaDeviceGetAttribute(&bits, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess)
            *peak_bw = 2.0 * (double)khz * 1e3 * (double)bits / 8.0; /* double data rate */
    }
    return 0;
}

extern "C" uint64_t cuda_fwd_bytes(const struct cuda_fwd *c)
{
    return c ? c->bytes : 0;
}

extern "C" void cuda_fwd_free(struct cuda_fwd *c)
{
    if (!c) return;
    cudaSetDevice(c->device);
    if (c->have_st) cudaStreamSynchronize(c->st);
    for (int i = 0; i < c->n_allocs; i++) cudaFree(c->allocs[i]);
    if (c->h_in) cudaFreeHost(c->h_in);
    if (c->h_out) cudaFreeHost(c->h_out);
    if (c->have_cb) cublasDestroy(c->cb);
    if (c->have_st) cudaStreamDestroy(c->st);
    free(c->allocs);
    free(c->L);
    free(c);
}

static int max3(int a, int b, int c)
{
    return a > b ? (a > c ? a : c) : (b > c ? b : c);
}

/* Upload this stage's layers and head; *max_deq: the most elements of a quantised weight (the
 * dequantisation buffer of large batches). */
static int upload_weights(struct cuda_fwd *c, const struct model *m, size_t *max_deq, char *err,
                          size_t errsz)
{
    int rc;
    c->L = (struct dlayer *)calloc((size_t)c->n_layer, sizeof(*c->L));
    if (!c->L) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    *max_deq = 0;
    for (int l = 0; l < c->n_layer; l++) {
        const struct model_layer *s = &m->layers[l];
        struct dlayer *d = &c->L[l];
        const struct model_tensor *st[] = {&s->wq,     &s->wk,   &s->wv,    &s->wo,
                                           &s->w_gate, &s->w_up, &s->w_down};
        struct dten *dt[] = {&d->wq, &d->wk, &d->wv, &d->wo, &d->w_gate, &d->w_up, &d->w_down};
        for (int i = 0; i < 7; i++) {
            if ((rc = upload(c, st[i], false, dt[i], err, errsz)) < 0) return rc;
            if (native_quant(dt[i]->type) && (size_t)dt[i]->rows * dt[i]->cols > *max_deq)
                *max_deq = (size_t)dt[i]->rows * dt[i]->cols;
        }
        const struct model_tensor *sv[] = {&s->attn_norm, &s->ffn_norm, &s->bq,
                                           &s->bk,        &s->bv,       &s->bo};
        struct dten *dv[] = {&d->attn_norm, &d->ffn_norm, &d->bq, &d->bk, &d->bv, &d->bo};
        for (int i = 0; i < 6; i++)
            if ((rc = upload(c, sv[i], true, dv[i], err, errsz)) < 0) return rc;
    }
    if (m->last) {
        if ((rc = upload(c, &m->out_norm, true, &c->out_norm, err, errsz)) < 0 ||
            (rc = upload(c, &m->output, false, &c->output, err, errsz)) < 0)
            return rc;
        if (native_quant(c->output.type) && (size_t)c->output.rows * c->output.cols > *max_deq)
            *max_deq = (size_t)c->output.rows * c->output.cols;
    }
    return 0;
}

/* The KV block pool and the sequences' block tables on the device, and the attention kernel's
 * shared memory. */
static int setup_kv(struct cuda_fwd *c, const struct kv *kv, char *err, size_t errsz)
{
    int rc;
    c->kv_f16 = kv->type == BT_F16;
    c->n_seq = kv->n_seq;
    c->n_ctx = kv->n_ctx;
    c->n_blocks = kv->n_blocks;
    c->max_blocks = kv->max_blocks;
    const size_t kvb =
        (size_t)c->n_layer * kv->n_blocks * KV_BLOCK * c->kv_dim * (c->kv_f16 ? 2 : 4);
    void *tp;
    if ((rc = dalloc(c, kvb, &c->kc, err, errsz)) < 0 ||
        (rc = dalloc(c, kvb, &c->vc, err, errsz)) < 0 ||
        (rc = dalloc(c, (size_t)kv->n_seq * kv->max_blocks * sizeof(int32_t), &tp, err, errsz)) < 0)
        return rc;
    c->table = (int32_t *)tp;
    CU(cudaMemset(c->kc, 0, kvb));
    CU(cudaMemset(c->vc, 0, kvb));
    c->attn_smem = ((size_t)c->hd + (size_t)c->n_ctx) * sizeof(float);
    if (c->attn_smem > 48 * 1024) {
        int optin = 0;
        CU(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device));
        if (c->attn_smem > (size_t)optin)
            return bt_errf(err, errsz, BT_EUNSUP,
                           "CUDA: context %d needs %zu bytes of shared memory per attention "
                           "block, the device allows %d: use a smaller --ctx-size",
                           c->n_ctx, c->attn_smem, optin);
        CU(cudaFuncSetAttribute(k_attention<float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)c->attn_smem));
        CU(cudaFuncSetAttribute(k_attention<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)c->attn_smem));
    }
    return 0;
}

static int fwd_setup(struct cuda_fwd *c, const struct model *m, const struct kv *kv, char *err,
                     size_t errsz)
{
    const struct model_hparams *hp = &m->hp;
    const size_t B = (size_t)c->max_batch;
    int rc;

    CU(cudaSetDevice(c->device));
    CU(cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking));
    c->have_st = true;
    CB(cublasCreate(&c->cb));
    c->have_cb = true;
    CB(cublasSetStream(c->cb, c->st));
    CB(cublasSetMathMode(c->cb, CUBLAS_DEFAULT_MATH)); /* no TF32 for F32 weights */

    c->n_layer = m->l1 - m->l0;
    c->D = hp->n_embd;
    c->n_head = hp->n_head;
    c->n_head_kv = hp->n_head_kv;
    c->hd = hp->head_dim;
    c->q_dim = hp->n_head * hp->head_dim;
    c->kv_dim = hp->n_head_kv * hp->head_dim;
    c->n_ff = hp->n_ff;
    c->n_rot = hp->n_rot;
    c->neox = hp->rope_type == MODEL_ROPE_NEOX;
    c->n_vocab = hp->n_vocab;
    c->eps = hp->norm_eps;

    size_t max_deq = 0;
    if ((rc = upload_weights(c, m, &max_deq, err, errsz)) < 0 ||
        (rc = setup_kv(c, kv, err, errsz)) < 0)
        return rc;

    /* activations */
    void *p;
#define ALLOC(field, n)                                                                            \
    do {                                                                                           \
        if ((rc = dalloc(c, (size_t)(n) * sizeof(*c->field), &p, err, errsz)) < 0) return rc;      \
        c->field = (decltype(c->field))p;                                                          \
    } while (0)
    ALLOC(x, B * c->D);
    ALLOC(xb, B * c->D);
    ALLOC(q, B * c->q_dim);
    ALLOC(k, B * c->kv_dim);
    ALLOC(v, B * c->kv_dim);
    ALLOC(att, B * c->q_dim);
    ALLOC(hb, B * c->n_ff);
    ALLOC(hb2, B * c->n_ff);
    ALLOC(xo, (size_t)(c->max_out + 1) * c->D);
    ALLOC(logits, (size_t)(c->max_out + 1) * (m->last ? c->n_vocab : 1));
    ALLOC(rope, B * c->n_rot + 3 * B); /* one copy per step: rope, then pos | seq | rows */
#undef ALLOC
    c->meta = (int32_t *)(c->rope + B * c->n_rot);
    if ((rc = dalloc(c, B * (size_t)max3(c->D, c->q_dim, c->n_ff) * 2, &c->xh, err, errsz)) < 0)
        return rc;
    if (max_deq && c->max_batch > CUDA_GEMV_MAX) {
        if ((rc = dalloc(c, max_deq * sizeof(__half), &p, err, errsz)) < 0) return rc;
        c->wdeq = (__half *)p;
        c->wdeq_n = max_deq;
    }
    c->in_floats = B * c->D + B * c->n_rot + 3 * B;
    c->out_floats = B * c->D;
    if (m->last && (size_t)c->max_out * c->n_vocab > c->out_floats)
        c->out_floats = (size_t)c->max_out * c->n_vocab;
    CU(cudaMallocHost((void **)&c->h_in, c->in_floats * sizeof(float)));
    CU(cudaMallocHost((void **)&c->h_out, c->out_floats * sizeof(float)));
    CU(cudaStreamSynchronize(c->st));
    return 0;
}

extern "C" int cuda_fwd_new(const struct model *m, const struct kv *kv, int device, int max_batch,
                            int max_out, struct cuda_fwd **out, char *err, size_t errsz)
{
    int rc;
    *out = NULL;
    if ((rc = cuda_probe(device, NULL, 0, NULL, err, errsz)) < 0) return rc;
    struct cuda_fwd *c = (struct cuda_fwd *)calloc(1, sizeof(*c));
    if (!c) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    c->m = m;
    c->device = device;
    c->max_batch = max_batch;
    c->max_out = m->last ? (max_out < 1 ? 1 : max_out > max_batch ? max_batch : max_out) : 0;
    if ((rc = fwd_setup(c, m, kv, err, errsz)) < 0) {
        cuda_fwd_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static int layer_forward(struct cuda_fwd *c, int il, int n, const int32_t *pos, const int32_t *seq,
                         char *err, size_t errsz)
{
    const struct dlayer *L = &c->L[il];
    const int D = c->D;
    const size_t layer_off = (size_t)il * c->n_blocks * KV_BLOCK * c->kv_dim;
    int rc;

    /* attention */
    k_rmsnorm<<<n, NT, 0, c->st>>>(c->xb, c->x, (const float *)L->attn_norm.d, D, c->eps, NULL);
    if ((rc = matmul(c, &L->wq, c->xb, n, c->q, err, errsz)) < 0 ||
        (rc = matmul(c, &L->wk, c->xb, n, c->k, err, errsz)) < 0 ||
        (rc = matmul(c, &L->wv, c->xb, n, c->v, err, errsz)) < 0)
        return rc;
    if (L->bq.d)
        k_add_bias<<<grid_for((int64_t)n * c->q_dim), NT, 0, c->st>>>(c->q, (const float *)L->bq.d,
                                                                      n, c->q_dim);
    if (L->bk.d)
        k_add_bias<<<grid_for((int64_t)n * c->kv_dim), NT, 0, c->st>>>(c->k, (const float *)L->bk.d,
                                                                       n, c->kv_dim);
    if (L->bv.d)
        k_add_bias<<<grid_for((int64_t)n * c->kv_dim), NT, 0, c->st>>>(c->v, (const float *)L->bv.d,
                                                                       n, c->kv_dim);
    k_rope<<<n, NT, 0, c->st>>>(c->q, c->k, c->rope, c->n_head, c->n_head_kv, c->hd, c->n_rot,
                                c->neox);
    const dim3 ag((unsigned)n, (unsigned)c->n_head);
    const float scale = 1.0f / sqrtf((float)c->hd);
    const int group = c->n_head / c->n_head_kv;
    if (c->kv_f16) {
        k_kv_store<__half><<<n, NT, 0, c->st>>>((__half *)c->kc, (__half *)c->vc, c->k, c->v, pos,
                                                seq, c->table, c->max_blocks, layer_off, c->kv_dim);
        k_attention<__half><<<ag, ATT_THREADS, c->attn_smem, c->st>>>(
            c->q, c->att, (const __half *)c->kc, (const __half *)c->vc, pos, seq, c->table,
            c->max_blocks, layer_off, c->n_head, group, c->hd, c->kv_dim, scale);
    } else {
        k_kv_store<float><<<n, NT, 0, c->st>>>((float *)c->kc, (float *)c->vc, c->k, c->v, pos, seq,
                                               c->table, c->max_blocks, layer_off, c->kv_dim);
        k_attention<float><<<ag, ATT_THREADS, c->attn_smem, c->st>>>(
            c->q, c->att, (const float *)c->kc, (const float *)c->vc, pos, seq, c->table,
            c->max_blocks, layer_off, c->n_head, group, c->hd, c->kv_dim, scale);
    }
    if ((rc = matmul(c, &L->wo, c->att, n, c->xb, err, errsz)) < 0) return rc;
    if (L->bo.d)
        k_add_bias<<<grid_for((int64_t)n * D), NT, 0, c->st>>>(c->xb, (const float *)L->bo.d, n, D);
    k_add<<<grid_for((int64_t)n * D), NT, 0, c->st>>>(c->x, c->xb, (int64_t)n * D);

    /* feed-forward */
    k_rmsnorm<<<n, NT, 0, c->st>>>(c->xb, c->x, (const float *)L->ffn_norm.d, D, c->eps, NULL);
    if ((rc = matmul(c, &L->w_gate, c->xb, n, c->hb, err, errsz)) < 0 ||
        (rc = matmul(c, &L->w_up, c->xb, n, c->hb2, err, errsz)) < 0)
        return rc;
    k_swiglu<<<grid_for((int64_t)n * c->n_ff), NT, 0, c->st>>>(c->hb, c->hb2, (int64_t)n * c->n_ff);
    if ((rc = matmul(c, &L->w_down, c->hb, n, c->xb, err, errsz)) < 0) return rc;
    k_add<<<grid_for((int64_t)n * D), NT, 0, c->st>>>(c->x, c->xb, (int64_t)n * D);
    return 0;
}

extern "C" int cuda_fwd_copy(struct cuda_fwd *c, int dst, int src, int n_cells, char *err,
                             size_t errsz)
{
    const size_t row = (size_t)c->kv_dim * (c->kv_f16 ? 2 : 4);
    if (dst < 0 || dst >= c->n_blocks || src < 0 || src >= c->n_blocks || n_cells < 0 ||
        n_cells > KV_BLOCK)
        return bt_errf(err, errsz, BT_EINVAL, "CUDA: bad block copy %d -> %d (%d cells)", src, dst,
                       n_cells);
    CU(cudaSetDevice(c->device));
    for (int il = 0; il < c->n_layer; il++) {
        const size_t layer = (size_t)il * c->n_blocks * KV_BLOCK * row;
        const size_t to = layer + (size_t)dst * KV_BLOCK * row,
                     from = layer + (size_t)src * KV_BLOCK * row;
        CU(cudaMemcpyAsync((char *)c->kc + to, (char *)c->kc + from, n_cells * row,
                           cudaMemcpyDeviceToDevice, c->st));
        CU(cudaMemcpyAsync((char *)c->vc + to, (char *)c->vc + from, n_cells * row,
                           cudaMemcpyDeviceToDevice, c->st));
    }
    return 0;
}

extern "C" int cuda_fwd_eval(struct cuda_fwd *c, int n, const float *x, const int32_t *pos,
                             const int32_t *seq, const int32_t *table, const float *rope,
                             const int32_t *rows, int n_out, float *out, char *err, size_t errsz)
{
    const struct model *m = c->m;
    const size_t B = (size_t)c->max_batch, D = (size_t)c->D;
    int rc;

    if (n < 1 || n > c->max_batch || n_out < 0 || n_out > c->max_out)
        return bt_errf(err, errsz, BT_EINVAL, "CUDA: batch of %d tokens, %d with logits", n, n_out);
    CU(cudaSetDevice(c->device)); /* the calling thread may not be the one that loaded */

    /* stage the inputs in pinned memory: x, then rope, then pos | seq | rows */
    float *hr = c->h_in + B * D;
    int32_t *hm = (int32_t *)(hr + B * c->n_rot);
    memcpy(c->h_in, x, (size_t)n * D * sizeof(float));
    memcpy(hr, rope, (size_t)n * c->n_rot * sizeof(float));
    memcpy(hm, pos, (size_t)n * sizeof(int32_t));
    memcpy(hm + B, seq, (size_t)n * sizeof(int32_t));
    if (n_out) memcpy(hm + 2 * B, rows, (size_t)n_out * sizeof(int32_t));
    CU(cudaMemcpyAsync(c->x, c->h_in, (size_t)n * D * sizeof(float), cudaMemcpyHostToDevice,
                       c->st));
    CU(cudaMemcpyAsync(c->rope, hr, (B * c->n_rot + 3 * B) * sizeof(float), cudaMemcpyHostToDevice,
                       c->st));
    const int32_t *dpos = c->meta, *dseq = c->meta + B, *drows = c->meta + 2 * B;
    CU(cudaMemcpyAsync(c->table, table, (size_t)c->n_seq * c->max_blocks * sizeof(int32_t),
                       cudaMemcpyHostToDevice, c->st));

    for (int il = 0; il < c->n_layer; il++)
        if ((rc = layer_forward(c, il, n, dpos, dseq, err, errsz)) < 0) return rc;

    size_t n_floats;
    if (m->last) {
        if (n_out == 0) {
            CU(cudaStreamSynchronize(c->st));
            return 0;
        }
        k_rmsnorm<<<n_out, NT, 0, c->st>>>(c->xo, c->x, (const float *)c->out_norm.d, c->D, c->eps,
                                           drows);
        if ((rc = matmul(c, &c->output, c->xo, n_out, c->logits, err, errsz)) < 0) return rc;
        n_floats = (size_t)n_out * c->n_vocab;
        CU(cudaMemcpyAsync(c->h_out, c->logits, n_floats * sizeof(float), cudaMemcpyDeviceToHost,
                           c->st));
    } else {
        n_floats = (size_t)n * D;
        CU(cudaMemcpyAsync(c->h_out, c->x, n_floats * sizeof(float), cudaMemcpyDeviceToHost,
                           c->st));
    }
    CU(cudaGetLastError()); /* a failed kernel launch */
    CU(cudaStreamSynchronize(c->st));
    memcpy(out, c->h_out, n_floats * sizeof(float));
    return 0;
}
