/* pipeline: the contract between ranks. The batch-size rule, the sizes a rank derives from its
 * options and their handshake comparison (one error naming rank, host and option), the message
 * cap (the largest FORWARD must fit, logit bias included), the orphan timeout, and sampling
 * parameters on the wire: what the last stage gets back is what the local engine samples with. */
#include "log.h"
#include "pipeline.h"
#include "kv.h"
#include "quant.h"
#include "sampler.h"
#include "t.h"

static void test_sizes(void)
{
    char err[512];
    struct proto_sizes a, b;
    CHECK_INT(pipeline_max_batch(4, 256), 260);
    CHECK_INT(pipeline_max_batch(256, 1 << 16), PROTO_MAX_TOKENS);
    pipeline_sizes(4, 0, 2048, 256, BT_F16, 0, &a);
    CHECK_INT(a.n_seq, 4);
    CHECK_INT(a.n_ctx, 2048); /* 0: the training context */
    CHECK_INT(a.max_batch, 260);
    CHECK_INT(a.kv_type, BT_F16);
    CHECK_INT(a.n_blocks, 4 * 2048 / KV_BLOCK); /* 0: every slot's whole context */
    pipeline_sizes(4, 512, 2048, 256, BT_F16, 0, &b);
    CHECK_INT(b.n_ctx, 512);
    CHECK_INT(pipeline_sizes_agree(&a, &a, 1, "h1", err, sizeof(err)), BT_OK);
    CHECK_INT(pipeline_sizes_agree(&a, &b, 2, "h2", err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "rank 2 on host h2") && strstr(err, "--ctx-size") && strstr(err, "512") &&
          strstr(err, "2048"));
    pipeline_sizes(2, 0, 2048, 256, BT_F16, 0, &b);
    CHECK_INT(pipeline_sizes_agree(&a, &b, 1, "h1", err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "rank 1 on host h1") && strstr(err, "--parallel"));
    pipeline_sizes(4, 0, 2048, 64, BT_F16, 0, &b);
    CHECK_INT(pipeline_sizes_agree(&a, &b, 1, "h1", err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "--prefill-chunk") != NULL);
    pipeline_sizes(4, 0, 2048, 256, BT_F32, 0, &b);
    CHECK_INT(pipeline_sizes_agree(&a, &b, 3, "h3", err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "rank 3") && strstr(err, "--cache-type") && strstr(err, "f32"));
    pipeline_sizes(4, 0, 2048, 256, BT_F16, 100, &b);
    CHECK_INT(b.n_blocks, 100);
    CHECK_INT(pipeline_sizes_agree(&a, &b, 2, "h2", err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "rank 2") && strstr(err, "--kv-blocks") && strstr(err, "100"));

    size_t cap = 0;
    CHECK_INT(pipeline_msg_cap(&a, 64, &cap, err, sizeof(err)), BT_OK);
    CHECK_INT(cap, proto_max_msg(&a, 64, pipeline_max_kv_ops(&a)));
    /* every sequence beginning with a whole table, and a batch growing into new blocks */
    CHECK(pipeline_max_kv_ops(&a) >= 4 * (2048 / KV_BLOCK + 3) + 260 / KV_BLOCK);
    /* four new sequences with PROTO_MAX_BIAS entries each and a full batch of rows fit */
    CHECK(cap >= PROTO_HDR_SIZE + 260 * 64 * 4 + 4 * PROTO_MAX_BIAS * 8);
    pipeline_sizes(256, 0, 4096, 16000, BT_F16, 0, &b);
    CHECK_INT(pipeline_msg_cap(&b, 8192, &cap, err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "--prefill-chunk") != NULL);

    CHECK(pipeline_orphan_ns(1000000000ull, 3) == 6000000000ull);
}

/* to_proto then from_proto gives what the policy gives: the last stage samples like the local
 * engine, also for NaN and out-of-range values. */
static void test_sampling(void)
{
    struct smp_bias in_bias[3] = {{5, -300.0f}, {6, NAN}, {7, 2.5f}};
    struct smp_params in, want, got;
    struct smp_bias want_bias[SMP_MAX_BIAS], got_bias[SMP_MAX_BIAS];
    struct proto_bias wire[SMP_MAX_BIAS];
    struct proto_sampling ps;
    smp_params_default(&in);
    in.temp = NAN;
    in.top_p = 7.0f;
    in.min_p = NAN;
    in.repeat_penalty = 0.0f;
    in.presence_penalty = 1e6f;
    in.frequency_penalty = NAN;
    in.penalty_last_n = -1;
    in.n_logprobs = -1;
    in.top_k = -5;
    in.seed = 0x1234567890abcdefull;
    in.bias = in_bias;
    in.n_bias = 3;
    smp_params_policy(&in, 300, &want, want_bias);
    pipeline_sampling_to_proto(&in, 300, &ps, wire);
    CHECK_INT(ps.n_bias, 2);
    pipeline_sampling_from_proto(&ps, &got, got_bias);
    CHECK(got.temp == want.temp && got.top_k == want.top_k && got.top_p == want.top_p);
    CHECK(got.min_p == want.min_p && got.repeat_penalty == want.repeat_penalty);
    CHECK(got.presence_penalty == want.presence_penalty);
    CHECK(got.frequency_penalty == want.frequency_penalty);
    CHECK_INT(got.penalty_last_n, want.penalty_last_n);
    CHECK_INT(got.penalty_last_n, 300);
    CHECK(got.seed == want.seed && got.n_logprobs == want.n_logprobs);
    CHECK_INT(got.n_bias, want.n_bias);
    for (int i = 0; i < got.n_bias && i < want.n_bias; i++)
        CHECK(got.bias[i].token == want.bias[i].token && got.bias[i].bias == want.bias[i].bias);
    /* and the policy applied once more (the last stage does) changes nothing */
    struct smp_params again;
    struct smp_bias again_bias[SMP_MAX_BIAS];
    smp_params_policy(&got, 300, &again, again_bias);
    CHECK(again.temp == got.temp && again.repeat_penalty == got.repeat_penalty);
    CHECK_INT(again.n_bias, got.n_bias);
}

int main(void)
{
    test_sizes();
    test_sampling();
    return t_done();
}
