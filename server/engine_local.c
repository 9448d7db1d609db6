#include "engine_local.h"

#include "device.h"
#include "forward.h"
#include "gguf.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "seqsmp.h"
#include "threadpool.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct eng_local {
    struct model *m;
    struct kv *kv;
    struct bt_pool *pool;
    struct fwd *f;
    struct seqsmp *smp; /* the samplers of the sequences */
    int n_seq, n_ctx, n_vocab, max_batch;
    int32_t *tok, *pos, *seq; /* (max_batch) */
    uint8_t *want;            /* (max_batch) */
    /* the batch waiting to be collected */
    bool pending;
    int n_items;
    int rc;
    char err[256];
    struct eng_result *res; /* (n_seq) */
    bool *has_res;          /* (n_seq) */
    struct eng_rank rank;
};

static void set_progress(struct eng_local *e, const struct eng_load_params *p, float f)
{
    e->rank.progress = f;
    if (p->progress) p->progress(p->progress_arg, 0, f);
}

static int local_load(void *self, const struct gguf *g, const struct eng_load_params *p,
                      struct eng_info *info, char *err, size_t errsz)
{
    struct eng_local *e = self;
    int rc;
    set_progress(e, p, 0.0f);
    if ((rc = model_load(g, 0, -1, &e->m, err, errsz)) < 0) goto fail;
    model_prefetch(e->m);
    set_progress(e, p, 0.5f);
    const struct model_hparams *hp = &e->m->hp;
    e->n_seq = p->n_seq;
    e->n_ctx = p->n_ctx > 0 ? p->n_ctx : hp->n_ctx_train;
    e->n_vocab = hp->n_vocab;
    e->max_batch = p->max_batch;
    if (p->n_ctx > hp->n_ctx_train)
        bt_warn("context %d is larger than the model's training context %d", p->n_ctx,
                hp->n_ctx_train);
    int n_threads = p->n_threads > 0 ? p->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n_threads < 1) n_threads = 1;
    e->pool = bt_pool_new(n_threads);
    if (!e->pool) {
        rc = bt_errf(err, errsz, BT_ERR, "cannot start %d compute threads", n_threads);
        goto fail;
    }
    if ((rc = kv_new(e->m, e->n_seq, e->n_ctx, p->kv_type ? p->kv_type : BT_F16, &e->kv, err,
                     errsz)) < 0)
        goto fail;
    int dev;
    if ((rc = dev_parse(p->device, &dev, err, errsz)) < 0) goto fail;
    if ((rc = fwd_new_dev(e->m, e->kv, e->pool, dev, e->max_batch, e->n_seq, &e->f, err, errsz)) <
        0)
        goto fail;
    if ((rc = seqsmp_new(e->n_seq, e->n_vocab, &e->smp, err, errsz)) < 0) goto fail;
    e->res = calloc((size_t)e->n_seq, sizeof(*e->res));
    e->has_res = calloc((size_t)e->n_seq, sizeof(*e->has_res));
    e->tok = malloc(sizeof(int32_t) * (size_t)e->max_batch);
    e->pos = malloc(sizeof(int32_t) * (size_t)e->max_batch);
    e->seq = malloc(sizeof(int32_t) * (size_t)e->max_batch);
    e->want = malloc((size_t)e->max_batch);
    if (!e->res || !e->has_res || !e->tok || !e->pos || !e->seq || !e->want) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "out of memory");
        goto fail;
    }
    info->n_ctx = e->n_ctx;
    info->n_vocab = e->n_vocab;
    info->n_layer = hp->n_layer;
    info->max_inflight = 1;
    e->rank.layer_first = 0;
    e->rank.layer_last = hp->n_layer;
    e->rank.state = ENG_RANK_READY;
    set_progress(e, p, 1.0f);
    bt_info("%s: %s, %d layers, %d threads, KV %d x %d (%.1f MiB)", gguf_path(g),
            model_arch_name(hp->arch), hp->n_layer, n_threads, e->n_seq, e->n_ctx,
            (double)kv_bytes(e->kv) / (1 << 20));
    return BT_OK;
fail:
    e->rank.state = ENG_RANK_FAILED;
    return rc;
}

/* Sampler for a new sequence. */
static int local_reset(struct eng_local *e, int seq, const struct eng_sparams *sp, char *err,
                       size_t errsz)
{
    struct smp_params p;
    struct smp_bias bias[1024];
    smp_params_default(&p);
    p.temp = sp->temperature;
    p.top_k = sp->top_k;
    p.top_p = sp->top_p;
    p.min_p = sp->min_p;
    p.repeat_penalty = sp->repeat_penalty;
    p.presence_penalty = sp->presence_penalty;
    p.frequency_penalty = sp->frequency_penalty;
    p.penalty_last_n = sp->repeat_last_n < 0 ? e->n_ctx : sp->repeat_last_n;
    p.seed = sp->seed;
    p.n_logprobs = sp->n_logprobs < 0 ? 0 : sp->n_logprobs;
    if (p.n_logprobs > SMP_MAX_LOGPROBS) p.n_logprobs = SMP_MAX_LOGPROBS;
    int nb = sp->n_bias < 0 ? 0 : sp->n_bias > 1024 ? 1024 : sp->n_bias;
    for (int i = 0; i < nb; i++) {
        bias[i].token = sp->bias[i].token;
        bias[i].bias = sp->bias[i].bias <= -100.0f ? -INFINITY : sp->bias[i].bias;
    }
    p.bias = nb ? bias : NULL;
    p.n_bias = nb;
    int rc = seqsmp_reset(e->smp, seq, &p, err, errsz);
    if (rc < 0) return rc;
    return kv_seq_clear(e->kv, seq);
}

static int local_run(struct eng_local *e, const struct eng_item *items, int n)
{
    char *err = e->err;
    size_t errsz = sizeof(e->err);
    int nt = 0, rc;
    for (int i = 0; i < n; i++) {
        const struct eng_item *it = &items[i];
        if (it->seq < 0 || it->seq >= e->n_seq || it->n_tokens < 1 ||
            it->n_tokens > e->max_batch - nt || (it->reset && !it->sp))
            return bt_errf(err, errsz, BT_EINVAL, "bad batch item %d (seq %d, %d tokens)", i,
                           it->seq, it->n_tokens);
        if (it->reset && (rc = local_reset(e, it->seq, it->sp, err, errsz)) < 0) return rc;
        if (!seqsmp_ready(e->smp, it->seq))
            return bt_errf(err, errsz, BT_EINVAL, "seq %d was never reset", it->seq);
        for (int k = 0; k < it->n_tokens; k++) {
            e->tok[nt] = it->tokens[k];
            e->pos[nt] = it->pos + k;
            e->seq[nt] = it->seq;
            e->want[nt] = it->sample && k == it->n_tokens - 1;
            nt++;
        }
    }
    struct fwd_batch b = {
        .n = nt, .token = e->tok, .pos = e->pos, .seq = e->seq, .logits = e->want};
    const float *logits;
    int n_out = 0;
    if ((rc = fwd_eval(e->f, &b, &logits, &n_out, err, errsz)) < 0) return rc;
    /* penalties see the prompt and the fed tokens, but not twice the token just sampled */
    int row = 0;
    for (int i = 0; i < n; i++) {
        const struct eng_item *it = &items[i];
        seqsmp_feed(e->smp, it->seq, it->tokens, it->n_tokens);
        if (!it->sample) continue;
        if (row >= n_out) return bt_errf(err, errsz, BT_ERR, "missing logits row %d", row);
        struct smp_result sr;
        int tok = seqsmp_sample(e->smp, it->seq, logits + (size_t)row * (size_t)e->n_vocab, &sr);
        row++;
        if (tok < 0)
            return bt_errf(err, errsz, BT_EINVAL, "seq %d: every token is excluded by logit_bias",
                           it->seq);
        struct eng_result *r = &e->res[i];
        r->token = tok;
        r->logprob = sr.logprob;
        r->n_top = sr.n_top; /* the n_logprobs the sampler was made with (0 for none) */
        if (r->n_top > ENG_MAX_TOP) r->n_top = ENG_MAX_TOP;
        for (int k = 0; k < r->n_top; k++) {
            r->top_id[k] = sr.top[k].token;
            r->top_lp[k] = sr.top[k].logprob;
        }
        e->has_res[i] = true;
    }
    return BT_OK;
}

static int local_submit(void *self, const struct eng_item *items, int n, char *err, size_t errsz)
{
    struct eng_local *e = self;
    if (e->pending) return bt_errf(err, errsz, BT_EINVAL, "a batch is already in flight");
    if (n < 1 || n > e->n_seq) return bt_errf(err, errsz, BT_EINVAL, "bad batch size %d", n);
    memset(e->has_res, 0, sizeof(*e->has_res) * (size_t)e->n_seq);
    uint64_t t0 = bt_now_ns();
    e->err[0] = 0;
    e->rc = local_run(e, items, n);
    e->rank.step_ms = (double)(bt_now_ns() - t0) * 1e-6;
    e->n_items = n;
    e->pending = true;
    return BT_OK;
}

static int local_collect(void *self, struct eng_result *out, int n, int timeout_ms, char *err,
                         size_t errsz)
{
    struct eng_local *e = self;
    (void)timeout_ms;
    if (!e->pending) return bt_errf(err, errsz, BT_EINVAL, "no batch in flight");
    e->pending = false;
    if (e->rc < 0) return bt_errf(err, errsz, e->rc, "%s", e->err);
    for (int i = 0; i < n && i < e->n_items; i++)
        if (e->has_res[i]) out[i] = e->res[i];
    return BT_OK;
}

static void local_release(void *self, int32_t seq)
{
    struct eng_local *e = self;
    if (seq < 0 || seq >= e->n_seq || !e->kv) return;
    kv_seq_clear(e->kv, seq);
    if (e->smp) seqsmp_release(e->smp, seq);
}

static int local_ranks(void *self, struct eng_rank *out, int cap)
{
    struct eng_local *e = self;
    if (cap < 1) return 0;
    out[0] = e->rank;
    return 1;
}

static void local_destroy(void *self)
{
    struct eng_local *e = self;
    if (!e) return;
    seqsmp_free(e->smp);
    free(e->res);
    free(e->has_res);
    free(e->tok);
    free(e->pos);
    free(e->seq);
    free(e->want);
    fwd_free(e->f);
    kv_free(e->kv);
    bt_pool_free(e->pool);
    model_free(e->m);
    free(e);
}

static const struct eng_ops local_ops = {
    .name = "local",
    .load = local_load,
    .submit = local_submit,
    .collect = local_collect,
    .release = local_release,
    .ranks = local_ranks,
    .destroy = local_destroy,
};

int eng_local_new(struct engine *out)
{
    struct eng_local *e = calloc(1, sizeof(*e));
    out->ops = &local_ops;
    out->self = e;
    if (!e) return BT_ENOMEM;
    e->rank.rank = 0;
    e->rank.state = ENG_RANK_LOADING;
    e->rank.heartbeat_age_ms = 0;
    e->rank.step_ms = -1;
    gethostname(e->rank.host, sizeof(e->rank.host) - 1);
    return BT_OK;
}
