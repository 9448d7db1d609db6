/* test_seqsmp: per-sequence samplers feed every fed token to the penalties exactly once (a
 * sampled token fed back is not counted twice), against a hand-driven sampler; errors for
 * sequences without a sampler. */
#include "log.h"
#include "seqsmp.h"
#include "t.h"

#define NV 50

static void fill(float *l, uint64_t *seed)
{
    for (int i = 0; i < NV; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        l[i] = (float)((*seed >> 40) % 1000) / 100.0f;
    }
}

int main(void)
{
    struct seqsmp *s = NULL;
    struct smp *ref = NULL;
    char err[256];
    float logits[NV];
    uint64_t seed = 99;

    CHECK_INT(seqsmp_new(0, NV, 64, &s, err, sizeof(err)), BT_EINVAL);
    CHECK_INT(seqsmp_new(3, NV, 64, &s, err, sizeof(err)), BT_OK);
    CHECK_INT(seqsmp_n_seq(s), 3);
    fill(logits, &seed);
    CHECK(!seqsmp_ready(s, 1));
    CHECK_INT(seqsmp_sample(s, 1, logits, NULL), BT_EINVAL); /* never reset */
    CHECK(!seqsmp_ready(s, 3) && !seqsmp_ready(s, -1));

    /* a strong repetition penalty makes double counting visible */
    struct smp_params p;
    smp_params_default(&p);
    p.temp = 0.7f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 3.0f;
    p.frequency_penalty = 1.5f;
    p.penalty_last_n = 64;
    p.seed = 7;
    CHECK_INT(seqsmp_reset(s, 3, &p, err, sizeof(err)), BT_EINVAL);
    CHECK_INT(seqsmp_reset(s, 1, &p, err, sizeof(err)), BT_OK);
    CHECK_INT(smp_new(&p, NV, &ref, err, sizeof(err)), BT_OK);
    CHECK(seqsmp_ready(s, 1));

    const int32_t prompt[] = {3, 4, 5, 3, 9};
    seqsmp_feed(s, 1, prompt, 5);
    for (int i = 0; i < 5; i++) smp_accept(ref, prompt[i]);
    int same = 0;
    for (int step = 0; step < 40; step++) {
        fill(logits, &seed);
        int a = seqsmp_sample(s, 1, logits, NULL);
        int b = smp_sample(ref, logits, NULL); /* accepts its choice */
        same += a == b;
        /* the chosen token comes back as the next fed token, sometimes with more after it */
        int32_t fed[3] = {a, (int32_t)(step % NV), 11};
        int n = step % 3 == 0 ? 3 : 1;
        seqsmp_feed(s, 1, fed, n);
        for (int i = 1; i < n; i++) smp_accept(ref, fed[i]);
    }
    CHECK_INT(same, 40);

    /* after release, the next fed token is counted (a new request starts with a reset anyway) */
    seqsmp_release(s, 1);
    const int32_t t1 = 17;
    seqsmp_feed(s, 1, &t1, 1);
    smp_accept(ref, t1);
    fill(logits, &seed);
    CHECK_INT(seqsmp_sample(s, 1, logits, NULL), smp_sample(ref, logits, NULL));

    /* a sequence whose every token is banned */
    struct smp_bias ban[NV];
    for (int i = 0; i < NV; i++) ban[i] = (struct smp_bias){i, -INFINITY};
    p.bias = ban;
    p.n_bias = NV;
    CHECK_INT(seqsmp_reset(s, 2, &p, err, sizeof(err)), BT_OK);
    CHECK_INT(seqsmp_sample(s, 2, logits, NULL), BT_EINVAL);
    /* out-of-range values go through the policy (a repeat penalty <= 0 is off) ... */
    p.n_bias = 0;
    p.repeat_penalty = -1.0f;
    CHECK_INT(seqsmp_reset(s, 0, &p, err, sizeof(err)), BT_OK);
    CHECK(seqsmp_ready(s, 0));
    /* ... what the policy cannot mend is refused with text: a bias token outside the vocabulary */
    struct smp_bias far = {NV + 5, 1.0f};
    p.bias = &far;
    p.n_bias = 1;
    CHECK_INT(seqsmp_reset(s, 0, &p, err, sizeof(err)), BT_EINVAL);
    CHECK(!seqsmp_ready(s, 0) && strlen(err) > 0);

    smp_free(ref);
    seqsmp_free(s);
    seqsmp_free(NULL);
    return t_done();
}
