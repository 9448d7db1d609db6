/* forward: the transformer forward pass of one pipeline stage on the CPU.
 *
 * A batch holds tokens of any number of sequences (each with its position and kv slot); the
 * stage runs its layers [l0, l1) over all of them at once (every weight matmul is one
 * matrix-matrix product over the batch) and returns either the logits of the rows that asked for
 * them (last stage) or the output activations of every row (other stages).
 *
 * Per layer (llama / qwen2, as llama.cpp computes them):
 *   xb = rmsnorm(x) * attn_norm;  q,k,v = xb @ Wq,Wk,Wv (+ bias);  RoPE(q, k);  k,v -> cache
 *   att = softmax(q k^T / sqrt(head_dim), causal within the sequence) v   (grouped-query heads)
 *   x += att @ Wo;  xb = rmsnorm(x) * ffn_norm;  x += (silu(xb @ Wgate) * (xb @ Wup)) @ Wdown
 * Head (last stage): logits = rmsnorm(x) * out_norm @ Woutput (token_embd when tied).
 *
 * All buffers are allocated by fwd_new for a maximum batch; fwd_eval never allocates or logs.
 *
 * Devices: fwd_new_dev builds the same stage on a CUDA device (cuda.h): the batch checks, the
 * embedding lookup (first stage), the RoPE cos/sin table and the cache bookkeeping (kv->len)
 * stay here on the host, the layers and the head run on the device, and fwd_eval's inputs and
 * outputs are host memory either way, so a GPU stage talks to its neighbours exactly like a CPU
 * one (activations staged through host memory). The kv cache then keeps only its lengths on the
 * host (its K/V arrays are released; the device holds them) and kv_seq_shift is unsupported.
 * Ownership and threads: a struct fwd borrows its model, kv cache and thread pool (they must
 * outlive it) and is used by one thread at a time (it runs the pool's threads itself). */
#ifndef BATON_FORWARD_H
#define BATON_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct model;
struct kv;
struct kv_op;
struct bt_pool;

struct fwd_batch {
    int n;                 /* tokens in the batch, 1..max_batch */
    const int32_t *token;  /* (n) token ids: the first stage reads these */
    const float *embd;     /* (n, n_embd) input activations: other stages read these */
    const int32_t *pos;    /* (n) position of each token: its sequence's next position */
    const int32_t *seq;    /* (n) sequence (kv slot) of each token */
    const uint8_t *logits; /* (n) nonzero: return this row's logits (last stage only); NULL: none */
    /* Some rows are prompt tokens: every matrix product of the pass then runs the gemm kernel
     * (kernels.h: kern_fuse.gemm), whose results for a row do not depend on the other rows, so
     * a prompt token's keys, values and logits are the same whether it is computed with its
     * whole prompt or after a prefix cache hit, alone or beside other sequences. */
    bool prompt;
};

struct fwd {
    const struct model *m; /* borrowed */
    struct kv *kv;         /* borrowed */
    struct bt_pool *pool;  /* borrowed */
    int max_batch, max_out, n_threads;
    /* run state, allocated once */
    float *x;       /* (max_batch, n_embd) residual stream */
    float *xb;      /* (max_batch, n_embd) normed input / sublayer output */
    float *q;       /* (max_batch, n_head * head_dim) */
    float *k;       /* (max_batch, kv_dim) */
    float *v;       /* (max_batch, kv_dim) */
    float *att;     /* (max_batch, n_head * head_dim) attention output */
    float *hb;      /* (max_batch, n_ff) gate, then silu(gate) * up */
    float *hb2;     /* (max_batch, n_ff) up */
    float *xo;      /* (max_out, n_embd) normed rows that want logits */
    float *logits;  /* (max_out, n_vocab) */
    float *scores;  /* (n_threads, n_head / n_head_kv, n_ctx) attention weights per thread */
    float *kvrow;   /* (n_threads, head_dim) a key or value row converted from f16 */
    int32_t *seq_n; /* (n_seq) batch validation: positions seen per sequence */
    /* set by fwd_eval while the pool runs (attention job) */
    const struct fwd_batch *cur;
    int cur_layer;
    /* a CUDA stage (fwd_new_dev with a device >= 0): x stages the input, xb the output
     * activations, logits the logits; the other CPU buffers are not allocated */
    int device;           /* DEV_CPU (-1) or the CUDA device */
    struct cuda_fwd *gpu; /* owned; NULL on the CPU */
    float *rope_cs;       /* (max_batch, n_rot) cos/sin of each token's position */
    int32_t *out_rows;    /* (max_out) rows that want logits */
};

/* Buffers for batches of up to max_batch tokens, of which up to max_out want logits (clamped to
 * 1..max_batch). */
int fwd_new(const struct model *m, struct kv *kv, struct bt_pool *pool, int max_batch, int max_out,
            struct fwd **out, char *err, size_t errsz);
void fwd_free(struct fwd *f); /* NULL is fine */
/* The same on a device: DEV_CPU (device.h) is fwd_new; N >= 0 is CUDA device N (pool may then
 * be NULL). No such device, or a build without CUDA: BT_ENOTFOUND / BT_EUNSUP with "no CUDA
 * device: ..." in err. */
int fwd_new_dev(const struct model *m, struct kv *kv, struct bt_pool *pool, int device,
                int max_batch, int max_out, struct fwd **out, char *err, size_t errsz);

/* Apply block operations (kv.h) to the stage's cache: on the host's and, for a device stage, the
 * device's storage. */
int fwd_kv_apply(struct fwd *f, const struct kv_op *ops, int n, char *err, size_t errsz);

/* Run the stage over batch b. On success *out points to (borrowed until the next call):
 *   last stage:  *n_out rows of n_vocab logits, for the rows with b->logits set, in batch order;
 *   other stage: *n_out = b->n rows of n_embd output activations.
 * The batch is checked first (token ids, sequences, positions must continue each sequence,
 * max sizes) and a bad one changes nothing: BT_EINVAL, or BT_EFULL when a sequence's cache is
 * full. Non-finite logits give BT_ERR (the cache then holds the batch: clear or keep the
 * sequences as the caller sees fit). */
int fwd_eval(struct fwd *f, const struct fwd_batch *b, const float **out, int *n_out, char *err,
             size_t errsz);

/* Kernels (pure, exposed for tests). */
/* out (n) = x (n) / sqrt(mean(x^2) + eps) * w (n) */
void fwd_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* x (n) = softmax(x (n)) in place */
void fwd_softmax(float *x, int n);
/* dst (n) = src (n) IEEE halves, exactly (bit for bit what bt_f16_to_f32 gives), vectorisable:
 * the attention's reader of an f16 cache */
void fwd_f16_to_f32_row(const uint16_t *src, float *dst, int n);

#endif
