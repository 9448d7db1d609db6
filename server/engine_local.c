/* engine_local: every layer in this process (see engine_local.h). */
#include "engine_local.h"

#include "device.h"
#include "gguf.h"
#include "blocks.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "seqsmp.h"
#include "stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct eng_local {
    struct stage *st;
    struct blk_table *bt; /* the blocks of the stage's cache: the prefix cache */
    struct kv_op *ops;    /* (max ops of one begin or one batch) */
    int ops_cap;
    /* the batch waiting to be collected */
    bool pending;
    int n_items;
    int rc;
    char err[256];
    struct eng_result *res;   /* (n_seq) */
    bool *has_res;            /* (n_seq) */
    struct stage_pick *picks; /* (n_seq) */
    int *item_of_pick;        /* (n_seq) the item each pick answers */
    struct eng_rank rank;
    const struct eng_load_params *lp; /* during load only */
};

static int on_load_progress(void *arg, float f)
{
    struct eng_local *e = arg;
    e->rank.progress = f;
    if (e->lp->progress) e->lp->progress(e->lp->progress_arg, 0, f);
    return 0;
}

static int local_load(void *self, const struct gguf *g, const struct eng_load_params *p,
                      struct eng_info *info, char *err, size_t errsz)
{
    struct eng_local *e = self;
    int dev, rc;
    e->lp = p;
    struct stage_params sp = {.l0 = 0,
                              .l1 = -1,
                              .n_seq = p->n_seq,
                              .n_ctx = p->n_ctx,
                              .max_batch = p->max_batch,
                              .n_blocks = p->n_blocks,
                              .kv_type = p->kv_type ? p->kv_type : BT_F16,
                              .n_threads = p->n_threads,
                              .progress = on_load_progress,
                              .arg = e};
    if ((rc = dev_parse(p->device, &dev, err, errsz)) < 0) goto fail;
    sp.device = dev;
    if ((rc = stage_build(g, &sp, &e->st, err, errsz)) < 0) goto fail;
    const struct stage *st = e->st;
    if ((rc = blk_new(st->kv->n_blocks, st->n_seq, st->n_ctx, &e->bt, err, errsz)) < 0) goto fail;
    e->ops_cap = blk_max_ops_begin(e->bt) + blk_max_ops_grow(st->max_batch) + 2 * st->n_seq;
    e->ops = malloc(sizeof(*e->ops) * (size_t)e->ops_cap);
    e->res = calloc((size_t)st->n_seq, sizeof(*e->res));
    e->has_res = calloc((size_t)st->n_seq, sizeof(*e->has_res));
    e->picks = calloc((size_t)st->n_seq, sizeof(*e->picks));
    e->item_of_pick = calloc((size_t)st->n_seq, sizeof(*e->item_of_pick));
    if (!e->res || !e->has_res || !e->picks || !e->item_of_pick || !e->ops) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "out of memory");
        goto fail;
    }
    info->n_ctx = st->n_ctx;
    info->n_vocab = st->n_vocab;
    info->n_layer = st->m->hp.n_layer;
    info->max_batch = st->max_batch;
    info->n_blocks = st->kv->n_blocks;
    info->max_inflight = 1;
    e->rank.layer_first = 0;
    e->rank.layer_last = st->m->hp.n_layer;
    e->rank.state = ENG_RANK_READY;
    e->lp = NULL;
    bt_info("%s: %s, %d layers, %d threads, %d sequences of %d, KV %d blocks of %d %s (%.1f "
            "MiB)",
            gguf_path(g), model_arch_name(st->m->hp.arch), st->m->hp.n_layer, st->n_threads,
            st->n_seq, st->n_ctx, st->kv->n_blocks, KV_BLOCK, bt_type_name(st->kv->type),
            (double)kv_bytes(st->kv) / (1 << 20));
    return BT_OK;
fail:
    e->lp = NULL;
    e->rank.state = ENG_RANK_FAILED;
    return rc;
}

/* Put the batch into the stage (resetting new sequences), run it, sample. */
static int local_run(struct eng_local *e, const struct eng_item *items, int n)
{
    struct stage *st = e->st;
    char *err = e->err;
    size_t errsz = sizeof(e->err);
    int rc, n_want = 0;
    stage_batch_clear(st);
    for (int i = 0; i < n; i++) {
        const struct eng_item *it = &items[i];
        if (it->seq < 0 || it->seq >= st->n_seq || it->n_tokens < 1 ||
            it->n_tokens > st->max_batch - st->n || (it->reset && !it->sp))
            return bt_errf(err, errsz, BT_EINVAL, "bad batch item %d (seq %d, %d tokens)", i,
                           it->seq, it->n_tokens);
        if (it->reset && (rc = stage_seq_reset(st, it->seq, it->sp, err, errsz)) < 0) return rc;
        if (!seqsmp_ready(st->smp, it->seq))
            return bt_errf(err, errsz, BT_EINVAL, "seq %d was never reset", it->seq);
        int n_ops = 0;
        if ((rc = blk_seq_grow(e->bt, it->seq, it->pos, it->tokens, it->n_tokens, e->ops, &n_ops)) <
            0)
            return bt_errf(err, errsz, rc,
                           "seq %d: positions %d..%d: not its next ones, or past "
                           "its KV blocks",
                           it->seq, it->pos, it->pos + it->n_tokens - 1);
        if ((rc = stage_kv_apply(st, e->ops, n_ops, err, errsz)) < 0) return rc;
        for (int k = 0; k < it->n_tokens; k++)
            stage_batch_add(st, it->seq, it->pos + k, it->tokens[k],
                            (it->sample && k == it->n_tokens - 1 ? STAGE_WANT : 0u) |
                                (it->prompt ? STAGE_PROMPT : 0u));
        if (it->sample) e->item_of_pick[n_want++] = i;
    }
    const float *logits;
    int n_out = 0;
    if ((rc = stage_run(st, NULL, &logits, &n_out, err, errsz)) < 0) return rc;
    for (int i = 0; i < n; i++) /* computed: the blocks it filled enter the cache */
        blk_seq_commit(e->bt, items[i].seq, items[i].pos + items[i].n_tokens);
    int n_picks = stage_sample(st, logits, n_out, e->picks);
    for (int k = 0; k < n_picks && k < n_want; k++) {
        const struct stage_pick *pk = &e->picks[k];
        int i = e->item_of_pick[k];
        if (pk->token < 0)
            return bt_errf(err, errsz, pk->token, "seq %d: %s", pk->seq,
                           pk->token == BT_EINVAL ? "every token is excluded by logit_bias"
                                                  : bt_strstatus(pk->token));
        struct eng_result *r = &e->res[i];
        r->token = pk->token;
        r->logprob = pk->res.logprob;
        r->n_top = pk->res.n_top > ENG_MAX_TOP ? ENG_MAX_TOP : pk->res.n_top;
        for (int q = 0; q < r->n_top; q++) {
            r->top_id[q] = pk->res.top[q].token;
            r->top_lp[q] = pk->res.top[q].logprob;
        }
        e->has_res[i] = true;
    }
    return BT_OK;
}

static int local_submit(void *self, const struct eng_item *items, int n, char *err, size_t errsz)
{
    struct eng_local *e = self;
    if (e->pending) return bt_errf(err, errsz, BT_EINVAL, "a batch is already in flight");
    if (!e->st || n < 1 || n > e->st->n_seq)
        return bt_errf(err, errsz, BT_EINVAL, "bad batch size %d", n);
    memset(e->has_res, 0, sizeof(*e->has_res) * (size_t)e->st->n_seq);
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

static int local_seq_begin(void *self, int32_t seq, const int32_t *prompt, int n, int n_total,
                           bool lookup, int *n_cached, char *err, size_t errsz)
{
    struct eng_local *e = self;
    int n_ops = 0;
    if (!e->bt) return bt_errf(err, errsz, BT_EINVAL, "the model is not loaded");
    int rc = blk_seq_begin(e->bt, seq, prompt, n, n_total, lookup, e->ops, &n_ops, n_cached);
    if (rc == BT_EFULL) return bt_errf(err, errsz, rc, "no KV blocks free now");
    if (rc < 0)
        return bt_errf(err, errsz, rc,
                       "sequence %d: %d positions need more KV blocks than the "
                       "%d of the cache (--kv-blocks), or it is running",
                       seq, n_total, e->st->kv->n_blocks);
    rc = stage_kv_apply(e->st, e->ops, n_ops, err, errsz);
    if (rc < 0) blk_seq_end(e->bt, seq);
    return rc;
}

static void local_release(void *self, int32_t seq)
{
    struct eng_local *e = self;
    if (e->bt) blk_seq_end(e->bt, seq);
    if (e->st) stage_seq_release(e->st, seq);
}

static void local_cache_stats(void *self, struct blk_stats *out)
{
    struct eng_local *e = self;
    if (e->bt)
        blk_get_stats(e->bt, out);
    else
        memset(out, 0, sizeof(*out));
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
    stage_free(e->st);
    blk_free(e->bt);
    free(e->ops);
    free(e->res);
    free(e->has_res);
    free(e->picks);
    free(e->item_of_pick);
    free(e);
}

static const struct eng_ops local_ops = {
    .name = "local",
    .load = local_load,
    .seq_begin = local_seq_begin,
    .submit = local_submit,
    .collect = local_collect,
    .release = local_release,
    .ranks = local_ranks,
    .destroy = local_destroy,
    .cache_stats = local_cache_stats,
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
    if (gethostname(e->rank.host, sizeof(e->rank.host) - 1) != 0)
        snprintf(e->rank.host, sizeof(e->rank.host), "unknown");
    return BT_OK;
}
