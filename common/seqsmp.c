/* seqsmp: per-sequence samplers (see seqsmp.h). */
#include "seqsmp.h"

#include "log.h"

#include <stdlib.h>

struct seqsmp {
    int n_seq, n_vocab, n_ctx;
    struct smp **smp;   /* (n_seq) NULL until the sequence's first reset */
    bool *just_sampled; /* (n_seq) the next fed token is the one the sampler already took */
};

int seqsmp_new(int n_seq, int n_vocab, int n_ctx, struct seqsmp **out, char *err, size_t errsz)
{
    *out = NULL;
    if (n_seq < 1 || n_vocab < 1 || n_ctx < 1)
        return bt_errf(err, errsz, BT_EINVAL, "samplers: %d sequences, %d tokens, context %d",
                       n_seq, n_vocab, n_ctx);
    struct seqsmp *s = calloc(1, sizeof(*s));
    if (!s) goto fail;
    s->n_seq = n_seq;
    s->n_vocab = n_vocab;
    s->n_ctx = n_ctx;
    s->smp = calloc((size_t)n_seq, sizeof(*s->smp));
    s->just_sampled = calloc((size_t)n_seq, sizeof(*s->just_sampled));
    if (!s->smp || !s->just_sampled) goto fail;
    *out = s;
    return BT_OK;
fail:
    seqsmp_free(s);
    return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
}

void seqsmp_free(struct seqsmp *s)
{
    if (!s) return;
    for (int i = 0; s->smp && i < s->n_seq; i++) smp_free(s->smp[i]);
    free(s->smp);
    free(s->just_sampled);
    free(s);
}

int seqsmp_n_seq(const struct seqsmp *s)
{
    return s->n_seq;
}

int seqsmp_reset(struct seqsmp *s, int seq, const struct smp_params *p, char *err, size_t errsz)
{
    if (seq < 0 || seq >= s->n_seq)
        return bt_errf(err, errsz, BT_EINVAL, "sequence %d out of range 0..%d", seq, s->n_seq - 1);
    struct smp_params q;
    struct smp_bias bias[SMP_MAX_BIAS];
    smp_params_policy(p, s->n_ctx, &q, bias);
    smp_free(s->smp[seq]);
    s->smp[seq] = NULL;
    s->just_sampled[seq] = false;
    return smp_new(&q, s->n_vocab, &s->smp[seq], err, errsz);
}

void seqsmp_release(struct seqsmp *s, int seq)
{
    if (seq >= 0 && seq < s->n_seq) s->just_sampled[seq] = false;
}

bool seqsmp_ready(const struct seqsmp *s, int seq)
{
    return seq >= 0 && seq < s->n_seq && s->smp[seq];
}

void seqsmp_feed(struct seqsmp *s, int seq, const int32_t *tokens, int n)
{
    if (!seqsmp_ready(s, seq) || n < 1) return;
    int k = 0;
    if (s->just_sampled[seq]) {
        s->just_sampled[seq] = false;
        k = 1;
    }
    for (; k < n; k++) smp_accept(s->smp[seq], tokens[k]);
}

int seqsmp_sample(struct seqsmp *s, int seq, const float *logits, struct smp_result *res)
{
    if (!seqsmp_ready(s, seq)) return BT_EINVAL;
    int tok = smp_sample(s->smp[seq], logits, res);
    if (tok >= 0) s->just_sampled[seq] = true;
    return tok;
}
