/* stage: layer split between pipeline stages and loading one stage (see stage.h). */
#include "stage.h"

#include "gguf.h"
#include "log.h"
#include "model.h"
#include "quant.h"

#include <errno.h>
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
