/* stage: which layers each pipeline stage holds, loading one stage into memory, and the running
 * stage every engine builds the same way.
 *
 * A model of n_layer blocks is split into n contiguous stages, stage k on rank k. Stage 0 also
 * holds the token embedding (a row lookup per token: cheap, not counted), the last stage holds
 * the final norm and the output head (read whole for every token: counted with its layers). The
 * default split is even by bytes; a spec such as "8,7,7" gives the layer counts instead (any
 * uneven split, every stage at least one layer, summing to n_layer). One stage holds everything.
 *
 * Loading maps the stage's tensors (model_load: a rank maps only its own) and then reads every
 * page of its layers and head once, so its share of the weights is resident before the first
 * request and the load can report progress.
 *
 * The running stage (stage_build): the stage's layers loaded as above, its KV cache, a compute
 * pool, the forward state and, on the last stage, one sampler per sequence; then a micro-batch
 * is put together token by token (stage_batch_*), run (stage_run) and, on the last stage,
 * sampled (stage_sample). The same code runs a whole model in one process (engine_local), stage
 * 0 on rank 0 of a pipeline (engine_pipe) and every later stage (baton-rankd), so they cannot
 * drift apart.
 *
 * Threads: the split and load functions have no state and may run on any thread; a struct stage
 * belongs to one thread at a time (it runs its pool's threads itself). */
#ifndef BATON_STAGE_H
#define BATON_STAGE_H

#include "sampler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf;
struct model;
struct kv;
struct bt_pool;
struct fwd;
struct seqsmp;
struct kv_op;

#define STAGE_MAX        256 /* stages (ranks) in one pipeline */
#define STAGE_OWN_BLOCKS (-1)

struct stage_range {
    int l0, l1; /* layers [l0, l1) */
};

/* Bytes of the output head: the final norm and output.weight (token_embd.weight when tied). */
uint64_t stage_head_bytes(const struct gguf *g);

/* Split g's layers into n stages: by spec ("8,7,7"; NULL or "" for even by bytes). Errors name
 * the problem: BT_EINVAL for a bad spec or more stages than layers. out has n entries. */
int stage_split(const struct gguf *g, int n, const char *spec, struct stage_range *out, char *err,
                size_t errsz);

/* The even split itself, on plain numbers (for tests): layer_bytes (n_layer), head on the last
 * stage. Boundaries go where the running byte count is nearest k/n of the total (ties: the
 * earlier stage lighter, since rank 0 also runs the scheduler), then move one layer at a time
 * while that lowers the heavier of the two neighbours. n <= n_layer. */
int stage_split_bytes(const uint64_t *layer_bytes, int n_layer, uint64_t head_bytes, int n,
                      struct stage_range *out);

/* Parse "8,7,7": n counts summing to n_layer, each >= 1. */
int stage_parse_spec(const char *spec, int n_layer, int n, struct stage_range *out, char *err,
                     size_t errsz);

/* Called as a load goes (fraction 0..1); a non-zero return cancels the load (BT_ERR, err says
 * "cancelled"). */
typedef int (*stage_progress_fn)(void *arg, float fraction);

/* Map the stage [l0, l1) of g (model_load) and read its pages in, reporting progress (fn may be
 * NULL). *out is owned by the caller (model_free); g must outlive it. */
int stage_load(const struct gguf *g, int l0, int l1, stage_progress_fn fn, void *arg,
               struct model **out, char *err, size_t errsz);

/* ---- the running stage ---- */

struct stage_params {
    int l0, l1;       /* layers [l0, l1); l1 = -1: to the last */
    int n_seq;        /* sequences (KV slots, samplers) */
    int n_ctx;        /* positions per sequence; 0: the model's training context */
    int max_batch;    /* tokens per micro-batch (pipeline_max_batch) */
    int n_blocks;     /* KV blocks in the pool (kv.h), mapped by block operations (blocks.h);
                       * 0: n_seq x ceil(n_ctx / KV_BLOCK); STAGE_OWN_BLOCKS: that many, each
                       * sequence its own already mapped (no block table to keep: tools) */
    uint32_t kv_type; /* BT_F16 or BT_F32 */
    int n_threads;    /* compute threads; 0: one per core */
    int device;       /* DEV_CPU or a CUDA index (device.h) */
    stage_progress_fn progress; /* load progress, may be NULL; non-zero return cancels */
    void *arg;
};

struct stage {
    struct model *m; /* the stage's layers */
    struct kv *kv;   /* (n_seq, n_ctx) cells of its layers */
    struct bt_pool *pool;
    struct fwd *f;
    struct seqsmp *smp; /* the samplers; last stage only, else NULL */
    int n_seq, n_ctx, max_batch, n_threads, n_vocab, n_embd;
    /* the micro-batch being built: n tokens so far (max_batch) */
    int n;
    int32_t *tok, *pos, *seq; /* a token id < 0 (unknown to a later stage) is never fed */
    uint8_t *want;            /* nonzero: the last stage samples after this token */
    bool prompt;              /* some token of the batch is a prompt token (STAGE_PROMPT) */
};

/* Load layers [l0, l1) (stage_load, with progress) and build the rest. *out is owned by the
 * caller (stage_free); g must outlive it. */
int stage_build(const struct gguf *g, const struct stage_params *p, struct stage **out, char *err,
                size_t errsz);
void stage_free(struct stage *s); /* NULL is fine */

/* Apply KV block operations (kv.h, decided by blocks.h on rank 0) to the stage's cache. */
int stage_kv_apply(struct stage *s, const struct kv_op *ops, int n, char *err, size_t errsz);

/* A new sequence in seq: on the last stage a sampler with p (the sampling policy applied;
 * sampler.h); its KV cells are the block operations' business. BT_EINVAL for a bad seq or
 * parameters the policy cannot mend (a bias token outside the vocabulary), with text. */
int stage_seq_reset(struct stage *s, int seq, const struct smp_params *p, char *err, size_t errsz);
/* The sequence ended (its sampler stays until the next reset). */
void stage_seq_release(struct stage *s, int seq);

/* Start an empty micro-batch; add one token of seq at pos with flags STAGE_WANT (sample after
 * it) and STAGE_PROMPT (a prompt token: the batch then runs the prompt kernels, forward.h:
 * fwd_batch.prompt). BT_EFULL past max_batch. */
#define STAGE_WANT   1u
#define STAGE_PROMPT 2u
void stage_batch_clear(struct stage *s);
int stage_batch_add(struct stage *s, int seq, int pos, int32_t token, unsigned flags);

/* Run the stage over the batch. The first stage reads the token ids, a later one embd (n,
 * n_embd). *out, *n_out as fwd_eval (forward.h): logits of the wanted rows on the last stage,
 * else the output activations of every row; borrowed until the next run. */
int stage_run(struct stage *s, const float *embd, const float **out, int *n_out, char *err,
              size_t errsz);

/* One sampled token, for the i-th wanted token of the batch. */
struct stage_pick {
    int32_t seq;
    int32_t token;         /* >= 0, or a BT_E* status: BT_EINVAL every token excluded by the
                            * logit bias, BT_EUNSUP the sequence was never reset */
    struct smp_result res; /* token, logprob and top alternatives: finite and <= 0 */
};
/* Last stage, after stage_run: feed every known token of the batch to its sequence's penalties in
 * batch order and sample where one was wanted, from logits (n_out rows of n_vocab). picks has
 * room for n_seq. Returns how many picks were made. */
int stage_sample(struct stage *s, const float *logits, int n_out, struct stage_pick *picks);

#endif
