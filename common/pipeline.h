/* pipeline: the contract between the ranks of a pipeline, in one place. Rank 0 (server/
 * engine_pipe.c) and every other rank (rankd/loop.c) take their rules from here, never from a
 * copy:
 *   - the job epoch rank 0 starts with and the send deadline of every message;
 *   - the batch-size rule (a decode token per slot plus a prefill chunk, within the wire format);
 *   - the sizes every rank must agree on (sequences, context, batch, KV type, KV blocks), how a
 *     rank gets them from its options and the model, and the handshake check that compares them
 *     (a mismatch stops the job at startup with one error naming the rank and host);
 *   - KV block operations on the wire (rank 0 decides them, blocks.h; every rank applies them);
 *   - the largest message a rank must accept for those sizes (protocol.h: proto_max_size);
 *   - how long a rank waits without a word from rank 0 before it leaves;
 *   - sampling parameters on the wire (the sampling policy is applied on both ends).
 *
 * Threads: pure functions. */
#ifndef BATON_PIPELINE_H
#define BATON_PIPELINE_H

#include "protocol.h"

#include <stddef.h>
#include <stdint.h>

struct smp_params;
struct smp_bias;
struct kv_op;

#define PIPELINE_EPOCH 1 /* rank 0's job epoch: every rank starts there and drops other epochs */
/* A message not delivered by then: the peer is stuck (a large FORWARD is delivered only when the
 * next stage has finished its step and receives it). */
#define PIPELINE_SEND_TIMEOUT_NS (300ull * 1000000000ull)

/* Tokens in one micro-batch: n_seq decode tokens (one per slot) plus a prefill chunk, at most
 * PROTO_MAX_TOKENS. The scheduler never builds a larger batch. */
int pipeline_max_batch(int n_seq, int prefill_chunk);

/* This rank's sizes: n_ctx_opt 0 takes the model's training context; kv_type BT_F16 or
 * BT_F32; n_blocks_opt 0 gives every sequence blocks for its whole context (n_seq x
 * ceil(n_ctx / KV_BLOCK)). */
void pipeline_sizes(int n_seq, int n_ctx_opt, int n_ctx_train, int prefill_chunk, uint32_t kv_type,
                    int n_blocks_opt, struct proto_sizes *out);

/* The most KV block operations one FORWARD carries: every sequence beginning (a reset, a map per
 * block, a copy) and the blocks a batch grows into. Rank 0 never sends more. */
uint32_t pipeline_max_kv_ops(const struct proto_sizes *s);

/* Does rank k (on host) agree with rank 0? BT_EINVAL with one line naming the rank, the host,
 * the option and both values otherwise. */
int pipeline_sizes_agree(const struct proto_sizes *rank0, const struct proto_sizes *theirs, int k,
                         const char *host, char *err, size_t errsz);

/* The largest message a rank of this pipeline must accept (activation rows of n_embd floats),
 * for xport_set_max_msg. BT_EINVAL when the sizes make a message larger than the wire format
 * allows (err says which options to lower). */
int pipeline_msg_cap(const struct proto_sizes *s, uint32_t n_embd, size_t *cap, char *err,
                     size_t errsz);

/* A rank that hears nothing from rank 0 for this long leaves: --heartbeat-interval x
 * --heartbeat-misses x 2. */
uint64_t pipeline_orphan_ns(uint64_t heartbeat_interval_ns, int heartbeat_misses);

/* KV block operations on the wire, both ways. */
void pipeline_kv_to_proto(const struct kv_op *ops, int n, struct proto_kv_op *out);
void pipeline_kv_from_proto(const struct proto_kv_op *ops, int n, struct kv_op *out);

/* Sampling parameters on the wire. to_proto applies the sampling policy (sampler.h) for a
 * context of n_ctx first, so every value is one the decoder accepts; bias_store has room for
 * SMP_MAX_BIAS entries and holds out->bias. from_proto gives the parameters back (the last
 * stage applies the policy again: a no-op); bias_store as above. */
void pipeline_sampling_to_proto(const struct smp_params *p, int n_ctx, struct proto_sampling *out,
                                struct proto_bias *bias_store);
void pipeline_sampling_from_proto(const struct proto_sampling *ps, struct smp_params *out,
                                  struct smp_bias *bias_store);

#endif
