/* scheduler: the one thread that owns the engine (model, KV cache, samplers) and the slots.
 *
 * Its thread first loads the model (the gguf, the tokenizer, the chat template family, then the
 * engine), then loops: admit queued requests into free slots; drop cancelled and expired ones;
 * build a micro-batch with one decode token of every running sequence plus up to prefill-chunk
 * prompt tokens of the sequences still reading their prompt (so running streams keep flowing
 * while a long prompt is read); run it through the engine; turn the sampled tokens into text
 * (UTF-8-safe incremental decoding, stop strings held back), hand it to the request, finish
 * sequences on end-of-generation, a stop string, max_tokens, a full context or the timeout.
 * Requests join and leave between steps (continuous batching). With an engine that holds
 * several micro-batches at once (a pipeline), it keeps that many in flight, each over distinct
 * sequences.
 *
 * Ownership: sched_create takes ownership of the engine (destroyed by sched_free). The model
 * published by sched_model is owned by the scheduler and immutable; valid until sched_free.
 * Threads: sched_submit, sched_state, sched_model, sched_stats, sched_exit_code,
 * sched_wait_loaded, sched_drain and sched_stop may be called from any thread; everything else
 * about the engine and slots is the scheduler thread's. */
#ifndef BATON_SCHEDULER_H
#define BATON_SCHEDULER_H

#include "engine.h"

#include <stddef.h>
#include <stdint.h>

#define SCHED_MAX_RANKS 256 /* the most ranks a pipeline has (`baton --ranks`) */

struct req;
struct metrics;
struct tok;
struct gguf;

struct sched_config {
    const char *model_path;
    const char *chat_template; /* --chat-template override, or NULL */
    int n_ctx;                 /* 0: the model's */
    int n_slots;
    int queue_cap;
    int prefill_chunk;
    int n_threads;
    const char *device;    /* engine load parameter: "cpu" (or NULL) or "cuda:N"; borrowed */
    uint32_t kv_type;      /* engine load parameter: BT_F16 or BT_F32 */
    int n_blocks;          /* engine load parameter: KV blocks (0: every slot's whole context) */
    int request_timeout_s; /* 0: none */
    int test_step_delay_ms;
    int test_load_delay_ms;
    uint64_t t_start_ns; /* when the process started (bt_now_ns); 0: sched_create's time */
};

/* SCHED_FAULTED: the engine failed for good (a pipeline rank died, hung or went silent, see
 * struct eng_fault): every request was answered 503 with the fault's text, new ones get 503, and
 * the process should leave for a restart (main.c). */
enum sched_state {
    SCHED_LOADING = 0,
    SCHED_READY = 1,
    SCHED_FAILED = 2,
    SCHED_STOPPED = 3,
    SCHED_FAULTED = 4
};

/* What the HTTP threads need of the loaded model (immutable once published). */
struct sched_model {
    const struct gguf *g;
    const struct tok *tok;
    int n_ctx; /* positions per sequence */
    int n_vocab;
    int chat_family;                 /* enum chat_family */
    const char *bos_text, *eos_text; /* for chat templates ("" if none) */
    int64_t created;                 /* unix seconds at load */
};

struct sched_stats {
    int state;
    int queue_depth;
    int slots_busy, slots_total;
    int n_ranks;       /* entries written into the caller's ranks array */
    char message[512]; /* load error, if failed; the fault, if faulted */
    int fault_rank;    /* SCHED_FAULTED: the failed rank, -1 unknown */
    char fault_host[64];
    const char *fault_kind; /* SCHED_FAULTED: struct eng_fault's kind */
    struct blk_stats cache; /* the KV blocks and the prefix cache (blocks.h) */
};

struct sched;

int sched_create(const struct sched_config *c, struct engine eng, struct metrics *m,
                 struct sched **out, char *err, size_t errsz);
/* Start the thread (it loads, then serves). */
int sched_start(struct sched *s);
/* Stop: every queued and running request is failed with 503; joins the thread. */
void sched_stop(struct sched *s);
void sched_free(struct sched *s); /* NULL is fine; stops first */

int sched_state(struct sched *s);
/* NULL unless the state is READY or FAULTED (acquire: what it points to is fully published). */
const struct sched_model *sched_model(struct sched *s);
/* Wait until loading ended (or timeout_ms passed); returns the state. */
int sched_wait_loaded(struct sched *s, int timeout_ms);
/* The status, and up to cap ranks into ranks (the caller's; SCHED_MAX_RANKS holds every rank, too
 * large for a thread's stack: allocate it). */
void sched_stats(struct sched *s, struct sched_stats *st, struct eng_rank *ranks, int cap);
/* The exit status the process should end with once the state is SCHED_FAILED (the engine's
 * ops->exit_code, read by the scheduler thread when the load failed); any thread. */
int sched_exit_code(struct sched *s);
/* bt_now_ns() of the serving loop's last round; 0 before it serves. Any thread. */
uint64_t sched_loop_ns(struct sched *s);
/* Seconds a client should wait before it retries a 503 (the Retry-After header; any thread).
 * After a pipeline fault (SCHED_FAULTED) the job is about to be restarted: this process leaves
 * within 1 s, the supervisor waits at least 0.25 s and the new job needs about as long as this
 * one took from its start to READY; so the estimate is that startup time + 1.5 s, rounded up, in
 * [2, 120] (the OpenAI SDKs wait as long as Retry-After says up to 120 s and do not retry
 * beyond). A client told to come back then finds the new job ready. Otherwise 1. */
int sched_retry_after(struct sched *s);

/* Refuse new requests from now on (sched_submit: BT_EUNSUP); queued and running ones go on
 * (SIGTERM's drain; any thread). */
void sched_drain(struct sched *s);

/* Queue r (fields above r->mu set; r->deadline_ns is set here from the timeout). BT_OK (a
 * reference is taken), BT_EFULL (queue full: 429), BT_EUNSUP (not ready or stopping: 503). */
int sched_submit(struct sched *s, struct req *r);

#endif
