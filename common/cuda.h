/* cuda: the CUDA backend of one pipeline stage's forward pass, behind a plain C interface.
 *
 * Built only with -Dcuda=enabled (or auto with nvcc and cuBLAS found): cuda_fwd.cu. Without
 * it, cuda_stub.c answers every call with BT_EUNSUP ("built without CUDA"), so callers need no
 * #ifdef. forward.c is the only caller of cuda_fwd_*: a struct fwd made for a CUDA device
 * (fwd_new_dev) keeps its batch checks, embedding lookup and KV bookkeeping (kv->len) on the
 * host and hands the layers to this backend.
 *
 * What lives on the device: the stage's layer weights and (last stage) final norm and output
 * head, uploaded once by cuda_fwd_new (only this stage's tensors: a rank uploads only its
 * layers); the KV cache of the stage (kv->type F32 or F16, the host struct kv's block layout; its
 * block tables and len[] stay on the host, the tables are sent with every step); activation buffers
 * for max_batch tokens. The token embedding stays in host memory (a row lookup per token, done by
 * forward.c). Weights: F32 (cublasSgemm), F16/BF16 (cublasGemmEx, activations rounded to the weight
 * type, FP32 accumulation), Q8_0, Q4_0, Q4_K, Q6_K (own matrix-vector kernels for batches up to
 * CUDA_GEMV_MAX tokens, else dequantised to F16 scratch + cublasGemmEx); other block types are
 * dequantised to F16 on the host at upload.
 *
 * Ownership and threads: a struct cuda_fwd borrows its model (for hyperparameters; weights
 * are copied to the device) and is used by one thread at a time; it owns its stream, cuBLAS
 * handle and device memory. Errors: BT_ENOTFOUND "no CUDA device: ..." when the device does
 * not exist (no driver, no GPU, index out of range), BT_ENOMEM for device memory, BT_ERR for
 * any other CUDA or cuBLAS failure, each with the CUDA error text. */
#ifndef BATON_CUDA_H
#define BATON_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct model;
struct kv;

#define CUDA_GEMV_MAX 8 /* quantised weights: own kernel up to this many tokens per batch */

/* Was this build made with the CUDA backend? */
bool cuda_built(void);

/* Is CUDA device `device` usable? 0 and its name ("NVIDIA H100 80GB HBM3", may be NULL) and
 * global memory bandwidth bound in bytes/s (peak, from clock and bus width; may be NULL), or
 * BT_ENOTFOUND with "no CUDA device: ..." (BT_EUNSUP without CUDA in the build). */
int cuda_probe(int device, char *name, size_t namesz, double *peak_bw, char *err, size_t errsz);

struct cuda_fwd;

/* Upload model m's stage and allocate the device KV cache (shaped like kv, whose host arrays
 * are not used) and buffers for batches of max_batch tokens, up to max_out of them with logits
 * (last stage). */
int cuda_fwd_new(const struct model *m, const struct kv *kv, int device, int max_batch, int max_out,
                 struct cuda_fwd **out, char *err, size_t errsz);
void cuda_fwd_free(struct cuda_fwd *c); /* NULL is fine */

/* Bytes of device memory held (weights, cache, buffers). */
uint64_t cuda_fwd_bytes(const struct cuda_fwd *c);

/* Copy the first n_cells cells of block src into block dst, every layer (a block operation of
 * kv.h, done on the device's cache). Ordered before the next cuda_fwd_eval. */
int cuda_fwd_copy(struct cuda_fwd *c, int dst, int src, int n_cells, char *err, size_t errsz);

/* One step over a batch already checked by forward.c:
 *   x      (n, n_embd) input activations (embedding rows on the first stage), host memory
 *   pos    (n) positions, seq (n) kv slots
 *   table  the host kv's block tables (n_seq, max_blocks)
 *   rope   (n, n_rot) cos/sin pairs of each token's position (model_rope_cos_sin), so the
 *          device rotates with exactly the host's frequencies (llama3 factors, linear scale)
 *   rows   (n_out) batch rows whose logits are wanted (last stage), ascending
 *   out    last stage: (n_out, n_vocab) logits; other stages: (n, n_embd) activations; host
 * Synchronous: returns when out is filled. */
int cuda_fwd_eval(struct cuda_fwd *c, int n, const float *x, const int32_t *pos, const int32_t *seq,
                  const int32_t *table, const float *rope, const int32_t *rows, int n_out,
                  float *out, char *err, size_t errsz);

#ifdef __cplusplus
}
#endif

#endif
