#include "sampler.h"

#include "log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct cand {
    int32_t id;
    float logit;
};

struct smp {
    struct smp_params p;
    struct smp_bias *bias; /* (p.n_bias) own copy */
    int n_vocab;
    uint64_t rng[4];
    int32_t *hist; /* (p.penalty_last_n) ring of accepted tokens */
    int hist_n, hist_pos;
    int32_t *count;    /* (n_vocab) zero between calls: occurrences in hist while penalising */
    float *work;       /* (n_vocab) logits after bias and penalties */
    struct cand *cand; /* (n_vocab) candidates */
};

void smp_params_default(struct smp_params *p)
{
    memset(p, 0, sizeof(*p));
    p->temp = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->penalty_last_n = 64;
}

static float clampf(float v, float nan_as, float lo, float hi)
{
    return v != v ? nan_as : v < lo ? lo : v > hi ? hi : v;
}

void smp_params_policy(const struct smp_params *in, int n_ctx, struct smp_params *out,
                       struct smp_bias *bias_store)
{
    const struct smp_bias *bias = in->bias;
    int n_bias = in->n_bias < 0 || !bias     ? 0
                 : in->n_bias > SMP_MAX_BIAS ? SMP_MAX_BIAS
                                             : in->n_bias;
    int last_n = in->penalty_last_n < 0 ? n_ctx : in->penalty_last_n;
    *out = *in;
    out->temp = clampf(in->temp, 0.0f, 0.0f, 100.0f);
    out->top_k = in->top_k < 0 ? 0 : in->top_k;
    out->top_p = clampf(in->top_p, 1.0f, 0.0f, 1.0f);
    out->min_p = clampf(in->min_p, 0.0f, 0.0f, 1.0f);
    out->repeat_penalty =
        in->repeat_penalty > 0 ? clampf(in->repeat_penalty, 1.0f, 1e-6f, 100.0f) : 1.0f;
    out->presence_penalty = clampf(in->presence_penalty, 0.0f, -100.0f, 100.0f);
    out->frequency_penalty = clampf(in->frequency_penalty, 0.0f, -100.0f, 100.0f);
    out->penalty_last_n = last_n > n_ctx ? n_ctx : last_n;
    if (out->penalty_last_n > SMP_MAX_LAST_N) out->penalty_last_n = SMP_MAX_LAST_N;
    if (out->penalty_last_n < 0) out->penalty_last_n = 0;
    out->n_logprobs = in->n_logprobs < 0                  ? 0
                      : in->n_logprobs > SMP_MAX_LOGPROBS ? SMP_MAX_LOGPROBS
                                                          : in->n_logprobs;
    int k = 0;
    for (int i = 0; i < n_bias; i++) {
        float b = bias[i].bias;
        if (b != b) continue;
        bias_store[k++] = (struct smp_bias){.token = bias[i].token,
                                            .bias = b <= -100.0f ? -INFINITY
                                                    : b > 100.0f ? 100.0f
                                                                 : b};
    }
    out->bias = k ? bias_store : NULL;
    out->n_bias = k;
}

/* ---- generator: xoshiro256** seeded through splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t smp_rand_u64(struct smp *s)
{
    uint64_t *r = s->rng;
    const uint64_t out = rotl(r[1] * 5, 7) * 9, t = r[1] << 17;
    r[2] ^= r[0];
    r[3] ^= r[1];
    r[1] ^= r[2];
    r[0] ^= r[3];
    r[2] ^= t;
    r[3] = rotl(r[3], 45);
    return out;
}

double smp_rand_unit(struct smp *s)
{
    return (double)(smp_rand_u64(s) >> 11) * 0x1.0p-53;
}

/* ---- setup ---- */

int smp_new(const struct smp_params *p, int n_vocab, struct smp **out, char *err, size_t errsz)
{
    struct smp *s = NULL;
    int rc;

    *out = NULL;
    if (n_vocab < 1) return bt_errf(err, errsz, BT_EINVAL, "sampler: vocabulary size %d", n_vocab);
    if (isnan(p->temp) || !(p->top_p >= 0) || !(p->min_p >= 0) || p->min_p > 1 ||
        !(p->repeat_penalty > 0) || !isfinite(p->repeat_penalty) ||
        !isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty) ||
        p->penalty_last_n < 0 || p->penalty_last_n > SMP_MAX_LAST_N || p->n_logprobs < 0 ||
        p->n_logprobs > SMP_MAX_LOGPROBS || p->n_bias < 0 || (p->n_bias && !p->bias))
        return bt_errf(err, errsz, BT_EINVAL,
                       "sampler: bad parameters (temp %g, top_p %g, min_p %g, repeat %g, "
                       "last_n %d, logprobs %d)",
                       (double)p->temp, (double)p->top_p, (double)p->min_p,
                       (double)p->repeat_penalty, p->penalty_last_n, p->n_logprobs);
    for (int i = 0; i < p->n_bias; i++)
        if (p->bias[i].token < 0 || p->bias[i].token >= n_vocab || isnan(p->bias[i].bias) ||
            p->bias[i].bias == INFINITY)
            return bt_errf(err, errsz, BT_EINVAL, "sampler: bad logit bias (token %d, %g)",
                           p->bias[i].token, (double)p->bias[i].bias);
    s = calloc(1, sizeof(*s));
    if (!s) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->bias = malloc(((size_t)p->n_bias + 1) * sizeof(*s->bias));
    s->hist = malloc(((size_t)p->penalty_last_n + 1) * sizeof(*s->hist));
    s->count = calloc((size_t)n_vocab, sizeof(*s->count));
    s->work = malloc((size_t)n_vocab * sizeof(*s->work));
    s->cand = malloc((size_t)n_vocab * sizeof(*s->cand));
    if (!s->bias || !s->hist || !s->count || !s->work || !s->cand) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "out of memory");
        goto fail;
    }
    if (p->n_bias) memcpy(s->bias, p->bias, (size_t)p->n_bias * sizeof(*s->bias));
    s->p.bias = s->bias;
    smp_reset(s);
    *out = s;
    return 0;
fail:
    smp_free(s);
    return rc;
}

void smp_free(struct smp *s)
{
    if (!s) return;
    free(s->bias);
    free(s->hist);
    free(s->count);
    free(s->work);
    free(s->cand);
    free(s);
}

void smp_reset(struct smp *s)
{
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    s->hist_n = s->hist_pos = 0;
}

void smp_accept(struct smp *s, int32_t token)
{
    const int cap = s->p.penalty_last_n;
    if (cap == 0) return;
    s->hist[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % cap;
    if (s->hist_n < cap) s->hist_n++;
}

/* ---- the chain ---- */

/* Candidate order: higher logit first, then lower id (a total order: results do not depend on
 * the sort algorithm). */
static inline bool cand_before(const struct cand *a, const struct cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

static void swap(struct cand *a, struct cand *b)
{
    struct cand t = *a;
    *a = *b;
    *b = t;
}

/* Rearrange c (n) so its first m entries are the m best (in any order): quickselect. */
static void select_top(struct cand *c, int n, int m)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        /* median of three as pivot, moved to hi */
        int mid = lo + (hi - lo) / 2;
        if (cand_before(&c[mid], &c[lo])) swap(&c[mid], &c[lo]);
        if (cand_before(&c[hi], &c[lo])) swap(&c[hi], &c[lo]);
        if (cand_before(&c[mid], &c[hi])) swap(&c[mid], &c[hi]);
        const struct cand pivot = c[hi];
        int st = lo;
        for (int i = lo; i < hi; i++)
            if (cand_before(&c[i], &pivot)) swap(&c[i], &c[st++]);
        swap(&c[st], &c[hi]);
        if (st == m || st == m - 1) return;
        if (st < m)
            lo = st + 1;
        else
            hi = st - 1;
    }
}

/* Sort the best m of c (n) to the front, best first. */
static void sort_top(struct cand *c, int n, int m)
{
    if (m < n) select_top(c, n, m);
    qsort(c, (size_t)m, sizeof(*c), cand_cmp);
}

static void apply_penalties(struct smp *s)
{
    const struct smp_params *p = &s->p;
    if (!s->hist_n ||
        (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f))
        return;
    for (int i = 0; i < s->hist_n; i++)
        if (s->hist[i] >= 0 && s->hist[i] < s->n_vocab) s->count[s->hist[i]]++;
    for (int i = 0; i < s->hist_n; i++) {
        const int32_t t = s->hist[i];
        if (t < 0 || t >= s->n_vocab || !s->count[t]) continue; /* done already */
        float *l = &s->work[t];
        *l = *l <= 0 ? *l * p->repeat_penalty : *l / p->repeat_penalty;
        *l -= (float)s->count[t] * p->frequency_penalty + p->presence_penalty;
        s->count[t] = 0;
    }
}

/* log-probabilities of the raw logits: the chosen token and the n best */
static void fill_logprobs(const struct smp *s, const float *logits, int32_t tok,
                          struct smp_result *res)
{
    float max = -INFINITY;
    for (int i = 0; i < s->n_vocab; i++) max = logits[i] > max ? logits[i] : max;
    double sum = 0;
    for (int i = 0; i < s->n_vocab; i++) sum += exp((double)(logits[i] - max));
    const float lse = max + (float)log(sum);
    res->token = tok;
    res->logprob = logits[tok] - lse;
    res->n_top = 0;
    const int n = s->p.n_logprobs < s->n_vocab ? s->p.n_logprobs : s->n_vocab;
    for (int i = 0; i < s->n_vocab && n > 0; i++) {
        const struct cand c = {i, logits[i]};
        int k = res->n_top;
        if (k == n) {
            struct cand last = {res->top[n - 1].token, res->top[n - 1].logprob};
            if (!cand_before(&c, &last)) continue;
            k = n - 1;
        } else {
            res->n_top++;
        }
        /* insert c at its place among top[0..k) */
        while (k > 0) {
            struct cand prev = {res->top[k - 1].token, res->top[k - 1].logprob};
            if (!cand_before(&c, &prev)) break;
            res->top[k] = res->top[k - 1];
            k--;
        }
        res->top[k].token = i;
        res->top[k].logprob = logits[i];
    }
    for (int i = 0; i < res->n_top; i++) res->top[i].logprob -= lse;
}

int smp_sample(struct smp *s, const float *logits, struct smp_result *res)
{
    const struct smp_params *p = &s->p;
    float *w = s->work;
    int32_t tok = -1;

    memcpy(w, logits, (size_t)s->n_vocab * sizeof(float));
    for (int i = 0; i < p->n_bias; i++) w[p->bias[i].token] += p->bias[i].bias;
    apply_penalties(s);

    if (p->temp <= 0) {
        float best = -INFINITY;
        for (int i = 0; i < s->n_vocab; i++)
            if (w[i] > best) {
                best = w[i];
                tok = i;
            }
        if (tok < 0) return BT_EINVAL;
        goto done;
    }

    /* candidates: every token not banned */
    int n = 0;
    for (int i = 0; i < s->n_vocab; i++)
        if (w[i] > -INFINITY) s->cand[n++] = (struct cand){i, w[i]};
    if (n == 0) return BT_EINVAL;
    struct cand *c = s->cand;

    int sorted = 0; /* c[0..sorted) are the best, in order */
    if (p->top_k > 0 && p->top_k < n) {
        sort_top(c, n, p->top_k);
        n = sorted = p->top_k;
    }
    if (p->top_p < 1.0f) {
        /* smallest prefix whose probability reaches top_p; sort more of c only as needed */
        if (!sorted) sort_top(c, n, sorted = n < 64 ? n : 64);
        const float max = c[0].logit;
        double total = 0, cum = 0;
        for (int i = 0; i < n; i++) total += exp((double)(c[i].logit - max));
        int keep = 0;
        while (keep < n) {
            if (keep == sorted) {
                int m = sorted * 4 < n ? sorted * 4 : n;
                sort_top(c + sorted, n - sorted, m - sorted);
                sorted = m;
            }
            cum += exp((double)(c[keep].logit - max)) / total;
            keep++;
            if (cum >= p->top_p) break;
        }
        n = keep;
    }
    if (p->min_p > 0) {
        float max = -INFINITY;
        for (int i = 0; i < n; i++) max = c[i].logit > max ? c[i].logit : max;
        const float floor = max + logf(p->min_p);
        int k = 0;
        for (int i = 0; i < n; i++)
            if (c[i].logit >= floor) c[k++] = c[i]; /* order kept */
        n = k;
    }
    /* temperature, then draw from softmax(c / temp) */
    {
        float max = -INFINITY;
        for (int i = 0; i < n; i++) max = c[i].logit > max ? c[i].logit : max;
        double total = 0;
        for (int i = 0; i < n; i++) total += exp((double)((c[i].logit - max) / p->temp));
        const double r = smp_rand_unit(s) * total;
        double cum = 0;
        tok = c[n - 1].id;
        for (int i = 0; i < n; i++) {
            cum += exp((double)((c[i].logit - max) / p->temp));
            if (r < cum) {
                tok = c[i].id;
                break;
            }
        }
    }
done:
    if (res) fill_logprobs(s, logits, tok, res);
    smp_accept(s, tok);
    return tok;
}
