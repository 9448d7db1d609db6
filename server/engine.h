/* engine: what the scheduler needs from "the model", behind a table of function pointers.
 *
 * One call does one step: a micro-batch holding a few tokens of each of some sequences goes in,
 * and for the sequences that asked, one sampled token (with its log-probability and the top
 * alternatives) comes back. Sampling happens inside the engine (on the last pipeline stage),
 * so the sampling parameters travel with a sequence's first batch (reset) and the engine keeps
 * each sequence's sampler state (RNG, penalty history) until the sequence is reset or released.
 *
 * Implementations: engine_local (this process runs every layer) and engine_pipe (rank 0 of an
 * MPI pipeline: FORWARD to stage 1.., TOKENS back from the last stage). Both run their stage
 * with the same code (stage.h: stage_build, stage_run, stage_sample). The interface is asynchronous
 * so a pipeline can keep several micro-batches in flight (info.max_inflight): submit() hands a
 * batch over, collect() returns the results of the oldest batch not yet collected. A sequence is
 * never in two in-flight batches at once.
 *
 * The KV cache is in blocks (kv.h) whose table the engine keeps (blocks.h, on rank 0): a sequence
 * begins with seq_begin, which maps the longest cached prefix of its prompt (the prefix cache)
 * and reserves blocks for the rest of its positions; its first item then starts at the position
 * seq_begin returned.
 *
 * Threads: every function except create is called from the scheduler thread only (the thread
 * that owns the engine); the load progress callback runs on that thread too. */
#ifndef BATON_ENGINE_H
#define BATON_ENGINE_H

#include "blocks.h"
#include "sampler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf;

#define ENG_MAX_TOP 20 /* top alternatives returned per sampled token */

/* One sequence's part of a micro-batch. */
struct eng_item {
    int32_t seq;           /* 0 .. n_seq-1 */
    int32_t pos;           /* position of tokens[0]: the sequence's next position */
    int32_t n_tokens;      /* >= 1 */
    const int32_t *tokens; /* borrowed until the batch is collected */
    bool reset;            /* a new sequence: forget its cache and sampler state (pos is 0) */
    bool sample;           /* sample a token after the last of tokens */
    bool prompt;           /* the tokens are the prompt's (stage.h: STAGE_PROMPT) */
    /* with reset: the sequence's sampling parameters (copied; every engine applies the one
     * sampling policy, sampler.h: smp_params_policy, so a bias <= -100 bans its token) */
    const struct smp_params *sp;
};

struct eng_result {
    int32_t token;
    float logprob; /* of token under the model's distribution (when n_logprobs >= 0) */
    int32_t n_top;
    int32_t top_id[ENG_MAX_TOP];
    float top_lp[ENG_MAX_TOP];
};

struct eng_load_params {
    int n_seq;          /* sequences (slots) */
    int n_ctx;          /* positions per sequence; 0: the model's training context */
    int max_batch;      /* most tokens in one micro-batch (pipeline_max_batch) */
    int n_threads;      /* 0: one per core */
    const char *device; /* this process's stage: "cuda:N", or NULL / "cpu" (device.h) */
    uint32_t kv_type;   /* element type of the KV cache: BT_F16 or BT_F32 (0: BT_F16) */
    int n_blocks;       /* KV blocks of every stage's cache; 0: n_seq x ceil(n_ctx / KV_BLOCK) */
    void (*progress)(void *arg, int rank, float fraction); /* may be NULL */
    void *progress_arg;
};

struct eng_info {
    int n_ctx; /* positions per sequence (resolved) */
    int n_vocab;
    int n_layer;
    int max_batch;    /* tokens in one micro-batch, at most (the load parameter, resolved) */
    int n_blocks;     /* KV blocks (resolved) */
    int max_inflight; /* micro-batches the engine can hold at once (>= 1) */
    int tick_ms;      /* call ranks() at least this often while idle (0: every second) */
};

enum eng_rank_state {
    ENG_RANK_LOADING = 0,
    ENG_RANK_READY = 1,
    ENG_RANK_FAILED = 2,
    ENG_RANK_OFFLINE = 3
};

struct eng_rank {
    int rank;
    char host[64];
    int layer_first, layer_last; /* [first, last) */
    int state;                   /* enum eng_rank_state */
    float progress;              /* load progress 0..1 */
    double heartbeat_age_ms;     /* since the last sign of life; -1 unknown */
    double step_ms;              /* wall time of its last step; -1 unknown */
};

/* A fault that ended the engine for good (the pipeline: a rank died, hung or went silent).
 * The process should answer every request and leave for a restart (docs/faults.md). */
struct eng_fault {
    const char *kind; /* "heartbeat", "step_timeout", "rank_exit", "transport" (static text) */
    int rank;         /* the failed rank, -1 unknown */
    char host[64];    /* its host, "" unknown */
    char message[512];
};

struct eng_ops {
    const char *name;
    /* Load the weights from g (open until destroy) and allocate per-sequence state. */
    int (*load)(void *self, const struct gguf *g, const struct eng_load_params *p,
                struct eng_info *info, char *err, size_t errsz);
    /* A new sequence in seq (released before) for prompt[0..n), which may grow to n_total
     * positions: with lookup, the longest cached prefix of the prompt (never its last token) is
     * mapped; blocks for the rest are reserved. *n_cached: the positions present, where its first
     * item starts. BT_EFULL: not enough KV blocks can be freed now (keep the request waiting);
     * BT_EINVAL: it needs more blocks than the cache has, or bad arguments. */
    int (*seq_begin)(void *self, int32_t seq, const int32_t *prompt, int n, int n_total,
                     bool lookup, int *n_cached, char *err, size_t errsz);
    /* Hand over a micro-batch of n items (distinct seqs, each begun). BT_EINVAL: malformed. */
    int (*submit)(void *self, const struct eng_item *items, int n, char *err, size_t errsz);
    /* Results of the oldest submitted batch: out[i] for item i when items[i].sample (others
     * untouched). Waits up to timeout_ms (BT_ETIMEOUT: not ready, call again). Any other error
     * fails the whole batch (the batch is consumed). */
    int (*collect)(void *self, struct eng_result *out, int n, int timeout_ms, char *err,
                   size_t errsz);
    /* The sequence is finished or cancelled: its blocks are unreferenced (what it computed stays
     * cached), its sampler state dropped. */
    void (*release)(void *self, int32_t seq);
    /* Status of the ranks, up to cap; returns how many. */
    int (*ranks)(void *self, struct eng_rank *out, int cap);
    void (*destroy)(void *self); /* NULL self is fine */
    /* Has the engine failed for good? true and *out filled; NULL: it never does. */
    bool (*fault)(void *self, struct eng_fault *out);
    /* After a failed load: the exit status the process should end with (exitcodes.h: a bad
     * model or option, a handshake mismatch, a fault); NULL: BT_EXIT_CONFIG. */
    int (*exit_code)(void *self);
    /* The block table's counters (blocks.h); NULL: none. */
    void (*cache_stats)(void *self, struct blk_stats *out);
    /* After a failed load: the rank whose failure it was (a rank that could not load, did not
     * answer the handshake or missed --init-timeout), -1 unknown; NULL: always -1. Read by main
     * once the scheduler's state is SCHED_FAILED (the scheduler thread is done with it). */
    int (*failed_rank)(void *self);
};

struct engine {
    const struct eng_ops *ops;
    void *self;
};

#endif
