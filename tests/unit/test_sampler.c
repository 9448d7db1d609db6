/* sampler: hand-built logits; distributions checked by counting draws against probabilities
 * computed here independently (double precision, brute-force sorting). */
#include "log.h"
#include "sampler.h"
#include "t.h"

#include <math.h>
#include <stdlib.h>

static struct smp *mk(const struct smp_params *p, int n_vocab)
{
    struct smp *s = NULL;
    char err[256];
    int rc = smp_new(p, n_vocab, &s, err, sizeof(err));
    if (rc < 0) fprintf(stderr, "smp_new: %s\n", err);
    CHECK_INT(rc, 0);
    return s;
}

static void greedy_params(struct smp_params *p)
{
    smp_params_default(p);
    p->temp = 0;
}

static void test_greedy_bias_penalties(void)
{
    struct smp_params p;
    greedy_params(&p);
    const float lg[5] = {1.0f, 3.0f, 3.0f, -2.0f, 2.9f};
    struct smp *s = mk(&p, 5);
    CHECK_INT(smp_sample(s, lg, NULL), 1); /* tie between 1 and 2: the lower id */
    smp_free(s);

    /* bias: +0.2 on token 4 makes it the best; -inf bans */
    struct smp_bias b[2] = {{4, 0.2f}, {1, -INFINITY}};
    p.bias = b;
    p.n_bias = 2;
    s = mk(&p, 5);
    CHECK_INT(smp_sample(s, lg, NULL), 4);
    smp_free(s);
    b[0].bias = -0.2f;
    s = mk(&p, 5);
    CHECK_INT(smp_sample(s, lg, NULL), 2); /* 1 banned, 4 lowered */
    smp_free(s);

    /* everything banned */
    struct smp_bias all[2] = {{0, -INFINITY}, {1, -INFINITY}};
    const float two[2] = {0, 1};
    p.bias = all;
    p.n_bias = 2;
    s = mk(&p, 2);
    CHECK_INT(smp_sample(s, two, NULL), BT_EINVAL);
    smp_free(s);

    /* a bad bias token is refused */
    struct smp_bias bad = {7, 1.0f};
    p.bias = &bad;
    p.n_bias = 1;
    struct smp *sb = NULL;
    CHECK(smp_new(&p, 5, &sb, NULL, 0) == BT_EINVAL && sb == NULL);
    p.bias = NULL;
    p.n_bias = 0;

    /* repetition penalty 1.5: logit 3 -> 2 (positive: divided), so token 2 (3.0) wins over a
     * penalised 1; with both penalised, 4 (2.9) wins */
    p.repeat_penalty = 1.5f;
    p.penalty_last_n = 2;
    s = mk(&p, 5);
    smp_accept(s, 1);
    CHECK_INT(smp_sample(s, lg, NULL), 2); /* accepted: history {1, 2} */
    CHECK_INT(smp_sample(s, lg, NULL), 4); /* history {2, 4} (window of 2) */
    CHECK_INT(smp_sample(s, lg, NULL), 1); /* 1 fell out of the window: back to the top */
    smp_free(s);

    /* negative logits are multiplied: -2 * 1.5 = -3 < -2.5 */
    const float neg[2] = {-2.0f, -2.5f};
    s = mk(&p, 2);
    smp_accept(s, 0);
    CHECK_INT(smp_sample(s, neg, NULL), 1);
    smp_free(s);

    /* presence and frequency penalties: token 0 seen 3 times, token 1 once */
    p.repeat_penalty = 1.0f;
    p.penalty_last_n = 16;
    p.frequency_penalty = 0.5f;
    const float pf[3] = {5.0f, 4.0f, 3.2f};
    s = mk(&p, 3);
    for (int i = 0; i < 3; i++) smp_accept(s, 0);
    smp_accept(s, 1);
    /* 0: 5 - 1.5 = 3.5; 1: 4 - 0.5 = 3.5; tie -> 0 */
    CHECK_INT(smp_sample(s, pf, NULL), 0);
    smp_free(s);
    p.presence_penalty = 0.2f;
    s = mk(&p, 3);
    for (int i = 0; i < 3; i++) smp_accept(s, 0);
    smp_accept(s, 1);
    /* 0: 3.3, 1: 3.3, 2: 3.2 -> 0 (tie, lower id); one more 0 makes 1 win */
    CHECK_INT(smp_sample(s, pf, NULL), 0);
    CHECK_INT(smp_sample(s, pf, NULL), 1); /* 0 now seen 4 times: 5 - 2 - 0.2 < 3.3 */
    smp_reset(s);                          /* history gone: 0 again */
    CHECK_INT(smp_sample(s, pf, NULL), 0);
    smp_free(s);
}

/* Draw n samples; counts[v] gets the histogram. */
static void draw(struct smp *s, const float *lg, int nv, int n, int *counts)
{
    for (int v = 0; v < nv; v++) counts[v] = 0;
    for (int i = 0; i < n; i++) {
        int t = smp_sample(s, lg, NULL);
        CHECK(t >= 0 && t < nv);
        if (t >= 0 && t < nv) counts[t]++;
    }
}

static void test_truncation_and_temperature(void)
{
    const double pr[5] = {0.5, 0.3, 0.12, 0.05, 0.03};
    float lg[5];
    int c[5];
    const int N = 20000;
    for (int i = 0; i < 5; i++) lg[i] = (float)log(pr[i]) + 1.7f; /* shift: softmax-invariant */

    struct smp_params p;
    smp_params_default(&p);
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0;
    p.temp = 1.0f;
    p.penalty_last_n = 0;
    p.seed = 42;

    /* plain: frequencies follow the distribution (4 sigma of a binomial) */
    struct smp *s = mk(&p, 5);
    draw(s, lg, 5, N, c);
    for (int i = 0; i < 5; i++)
        CHECK_NEAR((double)c[i] / N, pr[i], 4 * sqrt(pr[i] * (1 - pr[i]) / N));
    smp_free(s);

    /* top-k 2: only 0, 1, in ratio 5:3 */
    p.top_k = 2;
    s = mk(&p, 5);
    draw(s, lg, 5, N, c);
    CHECK_INT(c[2] + c[3] + c[4], 0);
    CHECK_NEAR((double)c[0] / N, 0.625, 4 * sqrt(0.625 * 0.375 / N));
    smp_free(s);

    /* top-p 0.85: 0.5 + 0.3 = 0.8 < 0.85, + 0.12 reaches it: {0, 1, 2} */
    p.top_k = 0;
    p.top_p = 0.85f;
    s = mk(&p, 5);
    draw(s, lg, 5, N, c);
    CHECK_INT(c[3] + c[4], 0);
    CHECK(c[2] > 0);
    CHECK_NEAR((double)c[2] / N, 0.12 / 0.92, 4 * sqrt(0.13 * 0.87 / N));
    smp_free(s);

    /* min-p 0.2: keep p >= 0.1: {0, 1, 2} */
    p.top_p = 1.0f;
    p.min_p = 0.2f;
    s = mk(&p, 5);
    draw(s, lg, 5, N, c);
    CHECK_INT(c[3] + c[4], 0);
    CHECK(c[2] > 0);
    smp_free(s);

    /* temperature 2: p^(1/2), renormalised */
    p.min_p = 0;
    p.temp = 2.0f;
    double q[5], z = 0;
    for (int i = 0; i < 5; i++) z += q[i] = sqrt(pr[i]);
    s = mk(&p, 5);
    draw(s, lg, 5, N, c);
    for (int i = 0; i < 5; i++)
        CHECK_NEAR((double)c[i] / N, q[i] / z, 4 * sqrt(q[i] / z * (1 - q[i] / z) / N));
    smp_free(s);

    /* a tiny temperature is (almost surely) greedy; top_k 1 is greedy for any temperature */
    p.temp = 0.01f;
    s = mk(&p, 5);
    draw(s, lg, 5, 1000, c);
    CHECK_INT(c[0], 1000);
    smp_free(s);
    p.temp = 5.0f;
    p.top_k = 1;
    s = mk(&p, 5);
    draw(s, lg, 5, 1000, c);
    CHECK_INT(c[0], 1000);
    smp_free(s);
}

static void test_determinism(void)
{
    struct smp_params p;
    smp_params_default(&p);
    p.temp = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0;
    float lg[64];
    for (int i = 0; i < 64; i++) lg[i] = (float)((i * 37) % 11) * 0.1f;
    int a[200], b[200], d[200];
    p.seed = 7;
    struct smp *s1 = mk(&p, 64), *s2 = mk(&p, 64);
    p.seed = 8;
    struct smp *s3 = mk(&p, 64);
    int same = 1, differ = 0;
    for (int i = 0; i < 200; i++) {
        a[i] = smp_sample(s1, lg, NULL);
        b[i] = smp_sample(s2, lg, NULL);
        d[i] = smp_sample(s3, lg, NULL);
        same &= a[i] == b[i];
        differ += a[i] != d[i];
    }
    CHECK(same);
    CHECK(differ > 100); /* 64 near-uniform choices: seeds 7 and 8 disagree most of the time */
    smp_reset(s1);       /* reset restarts the stream */
    int again = 1;
    for (int i = 0; i < 200; i++) again &= smp_sample(s1, lg, NULL) == a[i];
    CHECK(again);
    /* the generator's doubles lie in [0, 1) and average 1/2 */
    double sum = 0, lo = 1, hi = 0;
    for (int i = 0; i < 100000; i++) {
        double u = smp_rand_unit(s1);
        sum += u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    CHECK(lo >= 0 && hi < 1);
    CHECK_NEAR(sum / 100000, 0.5, 0.005);
    smp_free(s1);
    smp_free(s2);
    smp_free(s3);
}

static void test_logprobs(void)
{
    struct smp_params p;
    greedy_params(&p);
    p.n_logprobs = 3;
    const float lg[6] = {0.5f, 2.0f, -1.0f, 1.5f, 2.0f, 0.0f};
    double z = 0;
    for (int i = 0; i < 6; i++) z += exp(lg[i]);
    struct smp_result r;
    struct smp *s = mk(&p, 6);
    CHECK_INT(smp_sample(s, lg, &r), 1);
    CHECK_INT(r.token, 1);
    CHECK_NEAR(r.logprob, 2.0 - log(z), 1e-5);
    CHECK_INT(r.n_top, 3);
    CHECK_INT(r.top[0].token, 1); /* tie with 4: lower id first */
    CHECK_INT(r.top[1].token, 4);
    CHECK_INT(r.top[2].token, 3);
    CHECK_NEAR(r.top[2].logprob, 1.5 - log(z), 1e-5);
    smp_free(s);

    /* logprobs stay those of the model even when a bias picks another token */
    struct smp_bias b = {2, 10.0f};
    p.bias = &b;
    p.n_bias = 1;
    s = mk(&p, 6);
    CHECK_INT(smp_sample(s, lg, &r), 2);
    CHECK_NEAR(r.logprob, -1.0 - log(z), 1e-5);
    CHECK_INT(r.top[0].token, 1);
    smp_free(s);
}

struct ref {
    int id;
    float l;
};
static int ref_cmp(const void *a, const void *b)
{
    const struct ref *x = a, *y = b;
    if (x->l != y->l) return x->l > y->l ? -1 : 1;
    return x->id - y->id;
}

/* Large vocabulary: top-p without top-k sorts only as much as it needs; the kept set must equal
 * the brute-force one (every drawn token inside it, and its most likely members drawn). */
static void test_top_p_large(void)
{
    enum { NV = 50000 };
    static float lg[NV];
    static struct ref r[NV];
    static char in[NV];
    uint64_t x = 99;
    for (int i = 0; i < NV; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        lg[i] = (float)((x >> 40) % 100000) / 10000.0f; /* 0..10: a spread-out distribution */
        r[i] = (struct ref){i, lg[i]};
    }
    qsort(r, NV, sizeof(r[0]), ref_cmp);
    double z = 0, cum = 0;
    for (int i = 0; i < NV; i++) z += exp((double)r[i].l - r[0].l);
    int keep = 0;
    while (keep < NV) {
        cum += exp((double)r[keep].l - r[0].l) / z;
        in[r[keep++].id] = 1;
        if (cum >= 0.5) break;
    }
    CHECK(keep > 256); /* the incremental sort must have grown past its first chunk */

    struct smp_params p;
    smp_params_default(&p);
    p.top_k = 0;
    p.top_p = 0.5f;
    p.min_p = 0;
    p.temp = 1.0f;
    p.seed = 3;
    struct smp *s = mk(&p, NV);
    static int rank[NV];
    for (int i = 0; i < NV; i++) rank[r[i].id] = i;
    int outside = 0, deep = 0;
    for (int i = 0; i < 400; i++) {
        int t = smp_sample(s, lg, NULL);
        outside += t < 0 || !in[t];
        deep += t >= 0 && rank[t] >= 256;
    }
    CHECK_INT(outside, 0);
    CHECK(deep > 100); /* most of the kept mass lies past the first sorted chunks */
    smp_free(s);
}

/* The policy: every value a request can carry becomes one smp_new accepts; twice is once. */
static void test_policy(void)
{
    struct smp_bias in_bias[4] = {{1, NAN}, {2, -250.0f}, {3, 7e3f}, {4, -0.5f}},
                    store[SMP_MAX_BIAS];
    struct smp_params in, out, again;
    smp_params_default(&in);
    in.temp = NAN;
    in.top_k = -3;
    in.top_p = NAN;
    in.min_p = 4.0f;
    in.repeat_penalty = -2.0f;
    in.presence_penalty = NAN;
    in.frequency_penalty = -1e9f;
    in.penalty_last_n = -1;
    in.n_logprobs = 99;
    in.bias = in_bias;
    in.n_bias = 4;
    smp_params_policy(&in, 512, &out, store);
    CHECK(out.temp == 0.0f && out.top_k == 0 && out.top_p == 1.0f && out.min_p == 1.0f);
    CHECK(out.repeat_penalty == 1.0f && out.presence_penalty == 0.0f);
    CHECK(out.frequency_penalty == -100.0f);
    CHECK_INT(out.penalty_last_n, 512);
    CHECK_INT(out.n_logprobs, SMP_MAX_LOGPROBS);
    CHECK_INT(out.n_bias, 3); /* the NaN entry is dropped */
    CHECK(out.bias == store && store[0].token == 2 && isinf(store[0].bias) && store[0].bias < 0);
    CHECK(store[1].token == 3 && store[1].bias == 100.0f);
    CHECK(store[2].token == 4 && store[2].bias == -0.5f);
    struct smp *s = mk(&out, 8);
    smp_free(s);
    struct smp_bias store2[SMP_MAX_BIAS];
    smp_params_policy(&out, 512, &again, store2);
    CHECK(again.temp == out.temp && again.top_p == out.top_p && again.min_p == out.min_p);
    CHECK(again.repeat_penalty == out.repeat_penalty && again.n_bias == out.n_bias);
    CHECK(again.penalty_last_n == out.penalty_last_n && again.n_logprobs == out.n_logprobs);
    for (int i = 0; i < out.n_bias; i++)
        CHECK(store2[i].token == store[i].token && store2[i].bias == store[i].bias);
    /* the window: never past the context nor SMP_MAX_LAST_N; 0 stays off */
    in.penalty_last_n = 100000;
    smp_params_policy(&in, 1 << 20, &out, store);
    CHECK_INT(out.penalty_last_n, SMP_MAX_LAST_N);
    in.penalty_last_n = 0;
    smp_params_policy(&in, 64, &out, store);
    CHECK_INT(out.penalty_last_n, 0);
    in.temp = 1e9f;
    in.repeat_penalty = 1e-30f;
    smp_params_policy(&in, 64, &out, store);
    CHECK(out.temp == 100.0f && out.repeat_penalty == 1e-6f);
}

int main(void)
{
    test_policy();
    test_greedy_bias_penalties();
    test_truncation_and_temperature();
    test_determinism();
    test_logprobs();
    test_top_p_large();
    return t_done();
}
