/* stage: layer split between pipeline stages and loading one stage (see stage.h). */
#include "stage.h"

#include "forward.h"
#include "gguf.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "seqsmp.h"
#include "threadpool.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOUCH_REPORT (64u << 20) /* report progress at least every 64 MiB read in */

uint64_t stage_head_bytes(const struct gguf *g)
{
    const struct gguf_tensor *norm = gguf_find_tensor(g, "output_norm.weight");
    const struct gguf_tensor *out = gguf_find_tensor(g, "output.weight");
    if (!out) out = gguf_find_tensor(g, "token_embd.weight");
    return (norm ? norm->nbytes : 0) + (out ? out->nbytes : 0);
}

/* Bytes of stage [a, b) of n_layer: its layers plus the head when it is the last. */
static uint64_t cost(const uint64_t *cum, int n_layer, uint64_t head, int a, int b)
{
    return cum[b] - cum[a] + (b == n_layer ? head : 0);
}

int stage_split_bytes(const uint64_t *layer_bytes, int n_layer, uint64_t head_bytes, int n,
                      struct stage_range *out)
{
    if (n < 1 || n > STAGE_MAX || n_layer < n) return BT_EINVAL;
    uint64_t *cum = malloc(sizeof(*cum) * ((size_t)n_layer + 1));
    int *bnd = malloc(sizeof(*bnd) * ((size_t)n + 1)); /* stage k is [bnd[k], bnd[k+1]) */
    if (!cum || !bnd) {
        free(cum);
        free(bnd);
        return BT_ENOMEM;
    }
    cum[0] = 0;
    for (int i = 0; i < n_layer; i++) cum[i + 1] = cum[i] + layer_bytes[i];
    const double total = (double)cum[n_layer] + (double)head_bytes;
    bnd[0] = 0;
    bnd[n] = n_layer;
    for (int k = 1; k < n; k++) {
        const double target = total * k / n;
        int lo = bnd[k - 1] + 1, hi = n_layer - (n - k); /* room for one layer per stage */
        int best = lo;
        double best_d = -1;
        for (int i = lo; i <= hi; i++) {
            double d = (double)cum[i] - target;
            if (d < 0) d = -d;
            if (best_d < 0 || d < best_d) { /* strict: a tie keeps the earlier (lighter) one */
                best = i;
                best_d = d;
            }
        }
        bnd[k] = best;
    }
    /* Local improvement: move a boundary by one layer while that lowers the heavier side. */
    for (int round = 0, moved = 1; moved && round < 4 * n_layer; round++) {
        moved = 0;
        for (int k = 1; k < n; k++) {
            uint64_t a = cost(cum, n_layer, head_bytes, bnd[k - 1], bnd[k]);
            uint64_t b = cost(cum, n_layer, head_bytes, bnd[k], bnd[k + 1]);
            uint64_t now = a > b ? a : b;
            for (int dir = -1; dir <= 1; dir += 2) {
                int nb = bnd[k] + dir;
                if (nb <= bnd[k - 1] || nb >= bnd[k + 1]) continue;
                uint64_t a2 = cost(cum, n_layer, head_bytes, bnd[k - 1], nb);
                uint64_t b2 = cost(cum, n_layer, head_bytes, nb, bnd[k + 1]);
                if ((a2 > b2 ? a2 : b2) < now) {
                    bnd[k] = nb;
                    moved = 1;
                    break;
                }
            }
        }
    }
    for (int k = 0; k < n; k++) {
        out[k].l0 = bnd[k];
        out[k].l1 = bnd[k + 1];
    }
    free(cum);
    free(bnd);
    return BT_OK;
}

int stage_parse_spec(const char *spec, int n_layer, int n, struct stage_range *out, char *err,
                     size_t errsz)
{
    const char *p = spec;
    int k = 0, sum = 0;
    if (n < 1 || n > STAGE_MAX)
        return bt_errf(err, errsz, BT_EINVAL, "split: %d stages (1..%d)", n, STAGE_MAX);
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > n_layer)
            return bt_errf(err, errsz, BT_EINVAL,
                           "split '%s': each stage needs a layer count in 1..%d", spec, n_layer);
        if (k == n)
            return bt_errf(err, errsz, BT_EINVAL, "split '%s' has more than %d stages (ranks)",
                           spec, n);
        out[k].l0 = sum;
        sum += (int)v;
        out[k].l1 = sum;
        k++;
        if (sum > n_layer)
            return bt_errf(err, errsz, BT_EINVAL, "split '%s' adds up to more than the %d layers",
                           spec, n_layer);
        if (*end == ',' && end[1])
            p = end + 1;
        else if (*end)
            return bt_errf(err, errsz, BT_EINVAL,
                           "split '%s': expected layer counts separated by commas", spec);
        else
            p = end;
    }
    if (k != n)
        return bt_errf(err, errsz, BT_EINVAL, "split '%s' has %d stages, but there are %d ranks",
                       spec, k, n);
    if (sum != n_layer)
        return bt_errf(err, errsz, BT_EINVAL, "split '%s' adds up to %d layers, the model has %d",
                       spec, sum, n_layer);
    return BT_OK;
}

int stage_split(const struct gguf *g, int n, const char *spec, struct stage_range *out, char *err,
                size_t errsz)
{
    struct model_hparams hp;
    int rc = model_hparams_read(g, &hp, err, errsz);
    if (rc < 0) return rc;
    if (n < 1 || n > STAGE_MAX)
        return bt_errf(err, errsz, BT_EINVAL, "%d pipeline stages (1..%d)", n, STAGE_MAX);
    if (spec && *spec) return stage_parse_spec(spec, hp.n_layer, n, out, err, errsz);
    if (n > hp.n_layer)
        return bt_errf(err, errsz, BT_EINVAL,
                       "%d ranks but the model has only %d layers (a stage needs one)", n,
                       hp.n_layer);
    uint64_t *lb = malloc(sizeof(*lb) * (size_t)hp.n_layer);
    if (!lb) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    for (int i = 0; i < hp.n_layer; i++) lb[i] = model_layer_bytes(g, i);
    rc = stage_split_bytes(lb, hp.n_layer, stage_head_bytes(g), n, out);
    free(lb);
    if (rc < 0) return bt_errf(err, errsz, rc, "cannot split %d layers in %d", hp.n_layer, n);
    return BT_OK;
}

/* ---- loading ---- */

struct toucher {
    size_t page;
    uint64_t done, total, next_report;
    stage_progress_fn fn;
    void *arg;
    unsigned sink;
};

static uint64_t tensor_bytes(const struct model_tensor *t)
{
    if (!t->data) return 0;
    return (uint64_t)t->rows * bt_row_size(t->type, t->cols);
}

static uint64_t layer_bytes(const struct model_layer *l)
{
    const struct model_tensor *ts[] = {&l->attn_norm, &l->wq,   &l->wk,    &l->wv, &l->wo,
                                       &l->bq,        &l->bk,   &l->bv,    &l->bo, &l->ffn_norm,
                                       &l->w_gate,    &l->w_up, &l->w_down};
    uint64_t n = 0;
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) n += tensor_bytes(ts[i]);
    return n;
}

/* Read one byte of every page of t; 0, or BT_ERR when the progress callback cancels. */
static int touch(struct toucher *tc, const struct model_tensor *t)
{
    const volatile unsigned char *p = t->data;
    uint64_t n = tensor_bytes(t);
    for (uint64_t off = 0; off < n; off += tc->page) {
        tc->sink += p[off];
        uint64_t step = n - off < tc->page ? n - off : tc->page;
        tc->done += step;
        if (tc->done >= tc->next_report) {
            tc->next_report = tc->done + TOUCH_REPORT;
            if (tc->fn && tc->fn(tc->arg, tc->total ? (float)tc->done / (float)tc->total : 1.0f))
                return BT_ERR;
        }
    }
    return BT_OK;
}

static int touch_layer(struct toucher *tc, const struct model_layer *l)
{
    const struct model_tensor *ts[] = {&l->attn_norm, &l->wq,   &l->wk,    &l->wv, &l->wo,
                                       &l->bq,        &l->bk,   &l->bv,    &l->bo, &l->ffn_norm,
                                       &l->w_gate,    &l->w_up, &l->w_down};
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
        if (touch(tc, ts[i]) < 0) return BT_ERR;
    return BT_OK;
}

int stage_load(const struct gguf *g, int l0, int l1, stage_progress_fn fn, void *arg,
               struct model **out, char *err, size_t errsz)
{
    struct model *m = NULL;
    int rc;
    *out = NULL;
    if (fn && fn(arg, 0.0f)) return bt_errf(err, errsz, BT_ERR, "load cancelled");
    if ((rc = model_load(g, l0, l1, &m, err, errsz)) < 0) return rc;
    model_prefetch(m);
    struct toucher tc = {.page = 4096, .fn = fn, .arg = arg, .next_report = TOUCH_REPORT};
    long ps = sysconf(_SC_PAGESIZE);
    if (ps > 0) tc.page = (size_t)ps;
    for (int i = 0; i < m->l1 - m->l0; i++) tc.total += layer_bytes(&m->layers[i]);
    if (m->last) tc.total += tensor_bytes(&m->out_norm) + tensor_bytes(&m->output);
    for (int i = 0; i < m->l1 - m->l0; i++) {
        if (touch_layer(&tc, &m->layers[i]) < 0) goto cancelled;
        if (fn && fn(arg, tc.total ? (float)tc.done / (float)tc.total : 1.0f)) goto cancelled;
    }
    if (m->last && (touch(&tc, &m->out_norm) < 0 || touch(&tc, &m->output) < 0)) goto cancelled;
    if (fn && fn(arg, 1.0f)) goto cancelled;
    *out = m;
    return BT_OK;
cancelled:
    model_free(m);
    return bt_errf(err, errsz, BT_ERR, "load cancelled");
}

/* ---- the running stage ---- */

int stage_build(const struct gguf *g, const struct stage_params *p, struct stage **out, char *err,
                size_t errsz)
{
    struct stage *s = calloc(1, sizeof(*s));
    int rc;
    *out = NULL;
    if (!s) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    if ((rc = stage_load(g, p->l0, p->l1, p->progress, p->arg, &s->m, err, errsz)) < 0) goto fail;
    const struct model_hparams *hp = &s->m->hp;
    s->n_seq = p->n_seq;
    s->n_ctx = p->n_ctx > 0 ? p->n_ctx : hp->n_ctx_train;
    s->max_batch = p->max_batch;
    s->n_vocab = hp->n_vocab;
    s->n_embd = hp->n_embd;
    s->n_threads = p->n_threads > 0 ? p->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (s->n_threads < 1) s->n_threads = 1;
    if (s->n_ctx > hp->n_ctx_train)
        bt_warn("context %d is larger than the model's training context %d", s->n_ctx,
                hp->n_ctx_train);
    if (!(s->pool = bt_pool_new(s->n_threads))) {
        rc = bt_errf(err, errsz, BT_ERR, "cannot start %d compute threads", s->n_threads);
        goto fail;
    }
    const int n_blocks =
        p->n_blocks > 0 ? p->n_blocks : s->n_seq * ((s->n_ctx + KV_BLOCK - 1) / KV_BLOCK);
    rc = p->n_blocks == STAGE_OWN_BLOCKS
             ? kv_new(s->m, s->n_seq, s->n_ctx, p->kv_type, &s->kv, err, errsz)
             : kv_new_blocks(s->m, s->n_seq, s->n_ctx, n_blocks, p->kv_type, &s->kv, err, errsz);
    if (rc < 0 ||
        (rc = fwd_new_dev(s->m, s->kv, s->pool, p->device, s->max_batch, s->m->last ? s->n_seq : 1,
                          &s->f, err, errsz)) < 0 ||
        (s->m->last && (rc = seqsmp_new(s->n_seq, s->n_vocab, s->n_ctx, &s->smp, err, errsz)) < 0))
        goto fail;
    s->tok = malloc(sizeof(*s->tok) * (size_t)s->max_batch);
    s->pos = malloc(sizeof(*s->pos) * (size_t)s->max_batch);
    s->seq = malloc(sizeof(*s->seq) * (size_t)s->max_batch);
    s->want = malloc((size_t)s->max_batch);
    if (!s->tok || !s->pos || !s->seq || !s->want) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "out of memory");
        goto fail;
    }
    *out = s;
    return BT_OK;
fail:
    stage_free(s);
    return rc;
}

void stage_free(struct stage *s)
{
    if (!s) return;
    free(s->tok);
    free(s->pos);
    free(s->seq);
    free(s->want);
    seqsmp_free(s->smp);
    fwd_free(s->f);
    kv_free(s->kv);
    bt_pool_free(s->pool);
    model_free(s->m);
    free(s);
}

int stage_kv_apply(struct stage *s, const struct kv_op *ops, int n, char *err, size_t errsz)
{
    return fwd_kv_apply(s->f, ops, n, err, errsz);
}

int stage_seq_reset(struct stage *s, int seq, const struct smp_params *p, char *err, size_t errsz)
{
    if (seq < 0 || seq >= s->n_seq)
        return bt_errf(err, errsz, BT_EINVAL, "sequence id %d out of range 0..%d", seq,
                       s->n_seq - 1);
    return s->smp && p ? seqsmp_reset(s->smp, seq, p, err, errsz) : BT_OK;
}

void stage_seq_release(struct stage *s, int seq)
{
    if (seq >= 0 && seq < s->n_seq && s->smp) seqsmp_release(s->smp, seq);
}

void stage_batch_clear(struct stage *s)
{
    s->n = 0;
    s->prompt = false;
}

int stage_batch_add(struct stage *s, int seq, int pos, int32_t token, unsigned flags)
{
    if (s->n >= s->max_batch) return BT_EFULL;
    s->tok[s->n] = token;
    s->pos[s->n] = pos;
    s->seq[s->n] = seq;
    s->want[s->n] = (flags & STAGE_WANT) && s->m->last;
    s->prompt = s->prompt || (flags & STAGE_PROMPT);
    s->n++;
    return BT_OK;
}

int stage_run(struct stage *s, const float *embd, const float **out, int *n_out, char *err,
              size_t errsz)
{
    struct fwd_batch b = {.n = s->n,
                          .token = s->tok,
                          .embd = embd,
                          .pos = s->pos,
                          .seq = s->seq,
                          .logits = s->m->last ? s->want : NULL,
                          .prompt = s->prompt};
    return fwd_eval(s->f, &b, out, n_out, err, errsz);
}

/* The wire's rule for a log-probability: finite and <= 0. */
static float lp_clean(float lp)
{
    return isfinite(lp) ? (lp > 0 ? 0 : lp) : -FLT_MAX;
}

int stage_sample(struct stage *s, const float *logits, int n_out, struct stage_pick *picks)
{
    int n_picks = 0, row = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->tok[i] >= 0) seqsmp_feed(s->smp, s->seq[i], &s->tok[i], 1);
        if (!s->want[i]) continue;
        struct stage_pick *pk = &picks[n_picks++];
        memset(pk, 0, sizeof(*pk));
        pk->seq = s->seq[i];
        if (row >= n_out) { /* fwd_eval returns one row per wanted token: cannot happen */
            pk->token = BT_ERR;
            continue;
        }
        int tok = seqsmp_sample(s->smp, s->seq[i], logits + (size_t)row++ * s->n_vocab, &pk->res);
        if (tok < 0) {
            pk->token = seqsmp_ready(s->smp, s->seq[i]) ? BT_EINVAL : BT_EUNSUP;
            continue;
        }
        pk->token = tok;
        pk->res.logprob = lp_clean(pk->res.logprob);
        for (int k = 0; k < pk->res.n_top; k++)
            pk->res.top[k].logprob = lp_clean(pk->res.top[k].logprob);
    }
    return n_picks;
}
