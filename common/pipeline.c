/* pipeline: the contract between the ranks (see pipeline.h). */
#include "pipeline.h"

#include "kv.h"
#include "log.h"
#include "quant.h"
#include "sampler.h"

#include <string.h>

int pipeline_max_batch(int n_seq, int prefill_chunk)
{
    int64_t n = (int64_t)n_seq + prefill_chunk;
    return n > PROTO_MAX_TOKENS ? PROTO_MAX_TOKENS : n < 1 ? 1 : (int)n;
}

void pipeline_sizes(int n_seq, int n_ctx_opt, int n_ctx_train, int prefill_chunk, uint32_t kv_type,
                    int n_blocks_opt, struct proto_sizes *out)
{
    out->n_seq = (uint32_t)n_seq;
    out->n_ctx = (uint32_t)(n_ctx_opt > 0 ? n_ctx_opt : n_ctx_train);
    out->max_batch = (uint32_t)pipeline_max_batch(n_seq, prefill_chunk);
    out->kv_type = kv_type;
    uint64_t per = (out->n_ctx + KV_BLOCK - 1) / KV_BLOCK, all = per * out->n_seq;
    out->n_blocks = n_blocks_opt > 0         ? (uint32_t)n_blocks_opt
                    : all > PROTO_MAX_BLOCKS ? PROTO_MAX_BLOCKS
                                             : (uint32_t)all;
}

uint32_t pipeline_max_kv_ops(const struct proto_sizes *s)
{
    uint64_t per = (s->n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    uint64_t n = (uint64_t)s->n_seq * (per + 3) + s->max_batch / KV_BLOCK + 2ull * s->n_seq;
    return n > PROTO_MAX_KV_OPS ? PROTO_MAX_KV_OPS : (uint32_t)n;
}

int pipeline_sizes_agree(const struct proto_sizes *rank0, const struct proto_sizes *theirs, int k,
                         const char *host, char *err, size_t errsz)
{
    const char *what = NULL;
    uint32_t a = 0, b = 0;
    if (theirs->n_seq != rank0->n_seq)
        what = "sequences (--parallel)", a = theirs->n_seq, b = rank0->n_seq;
    else if (theirs->n_ctx != rank0->n_ctx)
        what = "context (--ctx-size)", a = theirs->n_ctx, b = rank0->n_ctx;
    else if (theirs->max_batch != rank0->max_batch)
        what = "micro-batch tokens (--parallel + --prefill-chunk)", a = theirs->max_batch,
        b = rank0->max_batch;
    else if (theirs->n_blocks != rank0->n_blocks)
        what = "KV blocks (--kv-blocks)", a = theirs->n_blocks, b = rank0->n_blocks;
    if (what)
        return bt_errf(err, errsz, BT_EINVAL,
                       "rank %d on host %s: %s %u, rank 0 has %u (every rank needs the same "
                       "--parallel, --ctx-size, --prefill-chunk, --kv-blocks and --cache-type)",
                       k, host, what, a, b);
    if (theirs->kv_type != rank0->kv_type)
        return bt_errf(err, errsz, BT_EINVAL,
                       "rank %d on host %s: KV cache type %s (--cache-type), rank 0 has %s (every "
                       "rank needs the same --parallel, --ctx-size, --prefill-chunk, --kv-blocks "
                       "and --cache-type)",
                       k, host, bt_type_name(theirs->kv_type), bt_type_name(rank0->kv_type));
    return BT_OK;
}

int pipeline_msg_cap(const struct proto_sizes *s, uint32_t n_embd, size_t *cap, char *err,
                     size_t errsz)
{
    size_t most = proto_max_msg(s, n_embd, pipeline_max_kv_ops(s));
    if (most > PROTO_HDR_SIZE + (size_t)PROTO_MAX_PAYLOAD)
        return bt_errf(err, errsz, BT_EINVAL,
                       "a micro-batch of %u tokens of %u floats (--parallel %u + --prefill-chunk) "
                       "makes messages of %zu MiB, more than the wire format's %u MiB: lower "
                       "--prefill-chunk",
                       s->max_batch, n_embd, s->n_seq, most >> 20, PROTO_MAX_PAYLOAD >> 20);
    *cap = most;
    return BT_OK;
}

uint64_t pipeline_orphan_ns(uint64_t heartbeat_interval_ns, int heartbeat_misses)
{
    return heartbeat_interval_ns * (uint64_t)(heartbeat_misses > 0 ? heartbeat_misses : 1) * 2;
}

void pipeline_sampling_to_proto(const struct smp_params *p, int n_ctx, struct proto_sampling *out,
                                struct proto_bias *bias_store)
{
    struct smp_params q;
    struct smp_bias bias[SMP_MAX_BIAS];
    smp_params_policy(p, n_ctx, &q, bias);
    memset(out, 0, sizeof(*out));
    out->temperature = q.temp;
    out->top_k = q.top_k;
    out->top_p = q.top_p;
    out->min_p = q.min_p;
    out->repeat_penalty = q.repeat_penalty;
    out->repeat_last_n = (uint32_t)q.penalty_last_n;
    out->presence_penalty = q.presence_penalty;
    out->frequency_penalty = q.frequency_penalty;
    out->seed = q.seed;
    out->n_logprobs = (uint32_t)q.n_logprobs;
    for (int i = 0; i < q.n_bias; i++)
        bias_store[i] = (struct proto_bias){.token = q.bias[i].token, .bias = q.bias[i].bias};
    out->bias = q.n_bias ? bias_store : NULL;
    out->n_bias = (uint32_t)q.n_bias;
}

void pipeline_sampling_from_proto(const struct proto_sampling *ps, struct smp_params *out,
                                  struct smp_bias *bias_store)
{
    memset(out, 0, sizeof(*out));
    out->temp = ps->temperature;
    out->top_k = ps->top_k;
    out->top_p = ps->top_p;
    out->min_p = ps->min_p;
    out->repeat_penalty = ps->repeat_penalty;
    out->penalty_last_n =
        (int)(ps->repeat_last_n > SMP_MAX_LAST_N ? SMP_MAX_LAST_N : ps->repeat_last_n);
    out->presence_penalty = ps->presence_penalty;
    out->frequency_penalty = ps->frequency_penalty;
    out->seed = ps->seed;
    out->n_logprobs = (int)ps->n_logprobs;
    uint32_t nb = ps->n_bias > SMP_MAX_BIAS ? SMP_MAX_BIAS : ps->n_bias; /* decoder checked */
    for (uint32_t i = 0; i < nb; i++)
        bias_store[i] = (struct smp_bias){.token = ps->bias[i].token, .bias = ps->bias[i].bias};
    out->bias = nb ? bias_store : NULL;
    out->n_bias = (int)nb;
}

void pipeline_kv_to_proto(const struct kv_op *ops, int n, struct proto_kv_op *out)
{
    for (int i = 0; i < n; i++)
        out[i] = (struct proto_kv_op){.kind = ops[i].kind,
                                      .seq = (uint32_t)ops[i].seq,
                                      .index = (uint32_t)ops[i].index,
                                      .block = ops[i].block,
                                      .src = (uint32_t)ops[i].src,
                                      .n = (uint32_t)ops[i].n};
}

void pipeline_kv_from_proto(const struct proto_kv_op *ops, int n, struct kv_op *out)
{
    for (int i = 0; i < n; i++) /* the decoder bounded every field (protocol.c) */
        out[i] = (struct kv_op){.kind = (uint8_t)ops[i].kind,
                                .seq = (int32_t)ops[i].seq,
                                .index = (int32_t)ops[i].index,
                                .block = ops[i].block,
                                .src = (int32_t)ops[i].src,
                                .n = (int32_t)ops[i].n};
}
