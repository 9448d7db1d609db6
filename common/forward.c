#include "forward.h"

#include "cuda.h"
#include "device.h"
#include "kernels.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "threadpool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- kernels ---- */

void fwd_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)(x[i] * x[i]);
    const float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = (x[i] * scale) * w[i];
}

void fwd_softmax(float *x, int n)
{
    float max = -INFINITY;
    for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

/* a (n) . b (n), with 16 partial sums so that the compiler vectorises it */
static float dot(const float *a, const float *b, int n)
{
    float acc[16] = {0}, s = 0;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[i + j] * b[i + j];
    for (; i < n; i++) s += a[i] * b[i];
    for (int j = 0; j < 16; j++) s += acc[j];
    return s;
}

/* Branch-free (vectorisable): the 15 bits below the sign, moved to a float's exponent and
 * mantissa, are the value times 2^-112 for normal and subnormal halves alike; infinities and
 * NaNs get the all-ones exponent. */
void fwd_f16_to_f32_row(const uint16_t *src, float *dst, int n)
{
    for (int i = 0; i < n; i++) {
        const uint32_t em = src[i] & 0x7fffu, sign = (uint32_t)(src[i] & 0x8000u) << 16;
        uint32_t u = em << 13;
        float f;
        memcpy(&f, &u, 4);
        f *= 0x1p112f;
        memcpy(&u, &f, 4);
        u |= em >= 0x7c00u ? 0x7f800000u : 0;
        u |= sign;
        memcpy(&dst[i], &u, 4);
    }
}

/* Y (m, w->rows) = X (m, w->cols) @ W^T; gemm: the gemm kernel whatever m (kernels.h) */
static int matmul(struct fwd *f, const struct model_tensor *w, const float *X, int m, float *Y,
                  bool gemm)
{
    const struct kern_mat mat = {w->type, w->data, w->rows, Y};
    const struct kern_fuse fu = {.gemm = gemm};
    return kern_matmul_multi(f->pool, &mat, 1, w->cols, X, m, &fu);
}

/* ---- attention ---- */

/* One item: heads [h0, h1) of one token, all sharing kv head kvh (grouped-query attention), so
 * each key and value row of the cache is read (and converted from f16) once for the group.
 *   out_h (head_dim) = softmax(q_h . K[0..pos] / sqrt(head_dim)) @ V[0..pos]
 * over the cells of the token's sequence. q, out: (n_head, head_dim) rows of the token;
 * scores (h1 - h0, n_ctx) and kvrow (head_dim) are the thread's scratch. */
static void attend_group(const struct fwd *f, int il, int seq, int pos, int kvh, int h0, int h1,
                         const float *q, float *out, float *scores, float *kvrow)
{
    const struct kv *kv = f->kv;
    const int hd = f->m->hp.head_dim, n_ctx = kv->n_ctx, ng = h1 - h0;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t hoff = (size_t)kvh * hd, row = (size_t)kv->kv_dim * kv->elsize;
    const int32_t *table = kv->table + (size_t)seq * kv->max_blocks;

    /* positions 0..pos, block by block (the sequence's block table), in order */
    for (int p0 = 0; p0 <= pos; p0 += KV_BLOCK) {
        const char *kb = kv_k_block(kv, il, table[p0 / KV_BLOCK]);
        const int n = pos + 1 - p0 < KV_BLOCK ? pos + 1 - p0 : KV_BLOCK;
        for (int c = 0; c < n; c++) {
            const void *kr = kb + (size_t)c * row;
            const float *k = (const float *)kr + hoff;
            if (kv->type != BT_F32) {
                fwd_f16_to_f32_row((const bt_f16 *)kr + hoff, kvrow, hd);
                k = kvrow;
            }
            for (int g = 0; g < ng; g++)
                scores[(size_t)g * n_ctx + p0 + c] = dot(q + (size_t)(h0 + g) * hd, k, hd) * scale;
        }
    }
    for (int g = 0; g < ng; g++) {
        fwd_softmax(scores + (size_t)g * n_ctx, pos + 1);
        memset(out + (size_t)(h0 + g) * hd, 0, (size_t)hd * sizeof(float));
    }
    for (int p0 = 0; p0 <= pos; p0 += KV_BLOCK) {
        const char *vb = kv_v_block(kv, il, table[p0 / KV_BLOCK]);
        const int n = pos + 1 - p0 < KV_BLOCK ? pos + 1 - p0 : KV_BLOCK;
        for (int c = 0; c < n; c++) {
            const void *vr = vb + (size_t)c * row;
            const float *v = (const float *)vr + hoff;
            if (kv->type != BT_F32) {
                fwd_f16_to_f32_row((const bt_f16 *)vr + hoff, kvrow, hd);
                v = kvrow;
            }
            for (int g = 0; g < ng; g++) {
                float *o = out + (size_t)(h0 + g) * hd;
                const float w = scores[(size_t)g * n_ctx + p0 + c];
                for (int i = 0; i < hd; i++) o[i] += w * v[i];
            }
        }
    }
}

/* Pool job: items (token, kv head, part of its group of query heads), dealt round-robin to the
 * threads. A group is split in parts only when there are fewer (token, kv head) pairs than
 * threads (decoding with few kv heads). */
static void attention_job(void *ctx, int ith, int nth)
{
    struct fwd *f = ctx;
    const struct model_hparams *hp = &f->m->hp;
    const struct fwd_batch *b = f->cur;
    const int group = hp->n_head / hp->n_head_kv, pairs = b->n * hp->n_head_kv;
    int parts = pairs >= nth ? 1 : (nth + pairs - 1) / pairs;
    parts = parts > group ? group : parts;
    const int q_dim = hp->n_head * hp->head_dim;
    float *scores = f->scores + (size_t)ith * group * f->kv->n_ctx;
    float *kvrow = f->kvrow + (size_t)ith * hp->head_dim;

    for (int it = ith; it < pairs * parts; it += nth) {
        const int part = it % parts, pair = it / parts;
        const int t = pair / hp->n_head_kv, kvh = pair % hp->n_head_kv;
        const int h0 = kvh * group + group * part / parts;
        const int h1 = kvh * group + group * (part + 1) / parts;
        attend_group(f, f->cur_layer, b->seq[t], b->pos[t], kvh, h0, h1, f->q + (size_t)t * q_dim,
                     f->att + (size_t)t * q_dim, scores, kvrow);
    }
}

/* ---- the stage ---- */

/* What fwd_new and fwd_new_dev share: check the sizes and the cache, allocate the struct. */
static int fwd_begin(const struct model *m, struct kv *kv, struct bt_pool *pool, int device,
                     int max_batch, int max_out, struct fwd **out, char *err, size_t errsz)
{
    *out = NULL;
    if (max_batch < 1 || max_batch > (1 << 20) || max_out < 0)
        return bt_errf(err, errsz, BT_EINVAL, "bad batch sizes: %d tokens, %d with logits",
                       max_batch, max_out);
    if (kv->m != m || kv->n_layer != m->l1 - m->l0)
        return bt_errf(err, errsz, BT_EINVAL, "kv cache was made for another model or stage");
    struct fwd *f = calloc(1, sizeof(*f));
    if (!f) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    f->m = m;
    f->kv = kv;
    f->pool = pool;
    f->device = device;
    f->max_batch = max_batch;
    f->max_out = m->last ? (max_out < 1 ? 1 : max_out > max_batch ? max_batch : max_out) : 0;
    *out = f;
    return 0;
}

int fwd_new(const struct model *m, struct kv *kv, struct bt_pool *pool, int max_batch, int max_out,
            struct fwd **out, char *err, size_t errsz)
{
    const struct model_hparams *hp = &m->hp;
    struct fwd *f = NULL;
    int rc;

    *out = NULL;
    if ((rc = fwd_begin(m, kv, pool, DEV_CPU, max_batch, max_out, &f, err, errsz)) < 0) return rc;
    f->n_threads = bt_pool_size(pool);

    const size_t B = (size_t)max_batch, q_dim = (size_t)hp->n_head * hp->head_dim;
    const size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    f->x = malloc(B * hp->n_embd * sizeof(float));
    f->xb = malloc(B * hp->n_embd * sizeof(float));
    f->q = malloc(B * q_dim * sizeof(float));
    f->k = malloc(B * kv_dim * sizeof(float));
    f->v = malloc(B * kv_dim * sizeof(float));
    f->att = malloc(B * q_dim * sizeof(float));
    f->hb = malloc(B * hp->n_ff * sizeof(float));
    f->hb2 = malloc(B * hp->n_ff * sizeof(float));
    f->xo = malloc(((size_t)f->max_out + 1) * hp->n_embd * sizeof(float));
    f->logits = malloc(((size_t)f->max_out + 1) * hp->n_vocab * sizeof(float));
    const size_t group = (size_t)(hp->n_head / hp->n_head_kv);
    f->scores = malloc((size_t)f->n_threads * group * kv->n_ctx * sizeof(float));
    f->kvrow = malloc((size_t)f->n_threads * hp->head_dim * sizeof(float));
    f->seq_n = malloc((size_t)kv->n_seq * sizeof(int32_t));
    if (!f->x || !f->xb || !f->q || !f->k || !f->v || !f->att || !f->hb || !f->hb2 || !f->xo ||
        !f->logits || !f->scores || !f->kvrow || !f->seq_n) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "out of memory for a batch of %d tokens", max_batch);
        goto fail;
    }
    /* grow the kernels' scratch now, so that fwd_eval never allocates */
    rc = 0;
    for (int l = 0; l < m->l1 - m->l0; l++) {
        const struct model_layer *L = &m->layers[l];
        const struct model_tensor *ws[] = {&L->wq,     &L->wk,   &L->wv,    &L->wo,
                                           &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++)
            if ((rc = kern_reserve(pool, ws[i]->type, ws[i]->cols, max_batch)) < 0) break;
        if (rc < 0) break;
    }
    if (rc >= 0 && m->last) rc = kern_reserve(pool, m->output.type, m->output.cols, f->max_out);
    if (rc < 0) {
        bt_errf(err, errsz, rc, "matrix product scratch: %s", bt_strstatus(rc));
        goto fail;
    }
    *out = f;
    return 0;
fail:
    fwd_free(f);
    return rc;
}

int fwd_new_dev(const struct model *m, struct kv *kv, struct bt_pool *pool, int device,
                int max_batch, int max_out, struct fwd **out, char *err, size_t errsz)
{
    const struct model_hparams *hp = &m->hp;
    struct fwd *f = NULL;
    int rc;

    if (device < 0) return fwd_new(m, kv, pool, max_batch, max_out, out, err, errsz);
    *out = NULL;
    if ((rc = fwd_begin(m, kv, pool, device, max_batch, max_out, &f, err, errsz)) < 0) return rc;
    const size_t B = (size_t)max_batch;
    f->x = malloc(B * hp->n_embd * sizeof(float));
    f->xb = malloc(B * hp->n_embd * sizeof(float));
    f->logits = malloc(((size_t)f->max_out + 1) * hp->n_vocab * sizeof(float));
    f->rope_cs = malloc(B * (hp->n_rot > 0 ? hp->n_rot : 1) * sizeof(float));
    f->out_rows = malloc(((size_t)f->max_out + 1) * sizeof(int32_t));
    f->seq_n = malloc((size_t)kv->n_seq * sizeof(int32_t));
    if (!f->x || !f->xb || !f->logits || !f->rope_cs || !f->out_rows || !f->seq_n) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "out of memory for a batch of %d tokens", max_batch);
        goto fail;
    }
    if ((rc = cuda_fwd_new(m, kv, device, max_batch, f->max_out, &f->gpu, err, errsz)) < 0)
        goto fail;
    kv_release_storage(kv); /* the device holds the cache */
    *out = f;
    return 0;
fail:
    fwd_free(f);
    return rc;
}

void fwd_free(struct fwd *f)
{
    if (!f) return;
    cuda_fwd_free(f->gpu);
    free(f->rope_cs);
    free(f->out_rows);
    free(f->x);
    free(f->xb);
    free(f->q);
    free(f->k);
    free(f->v);
    free(f->att);
    free(f->hb);
    free(f->hb2);
    free(f->xo);
    free(f->logits);
    free(f->scores);
    free(f->kvrow);
    free(f->seq_n);
    free(f);
}

/* Check the whole batch before anything changes. */
static int check_batch(struct fwd *f, const struct fwd_batch *b, int *n_out, char *err,
                       size_t errsz)
{
    const struct model *m = f->m;
    const struct kv *kv = f->kv;

    if (b->n < 1 || b->n > f->max_batch)
        return bt_errf(err, errsz, BT_EINVAL, "batch of %d tokens (1..%d allowed)", b->n,
                       f->max_batch);
    if (!b->pos || !b->seq || (m->first ? !b->token : !b->embd))
        return bt_errf(err, errsz, BT_EINVAL, "batch lacks %s",
                       m->first ? "token ids" : "input activations");
    memset(f->seq_n, 0, (size_t)kv->n_seq * sizeof(int32_t));
    *n_out = 0;
    for (int i = 0; i < b->n; i++) {
        const int s = b->seq[i];
        if (s < 0 || s >= kv->n_seq)
            return bt_errf(err, errsz, BT_EINVAL, "token %d: sequence %d out of range (0..%d)", i,
                           s, kv->n_seq - 1);
        if (m->first && (b->token[i] < 0 || b->token[i] >= m->hp.n_vocab))
            return bt_errf(err, errsz, BT_EINVAL, "token %d: id %d out of range (0..%d)", i,
                           b->token[i], m->hp.n_vocab - 1);
        const int expect = kv->len[s] + f->seq_n[s]++;
        if (b->pos[i] != expect)
            return bt_errf(err, errsz, BT_EINVAL,
                           "token %d of sequence %d: position %d, expected %d", i, s, b->pos[i],
                           expect);
        if (expect >= kv->n_ctx)
            return bt_errf(err, errsz, BT_EFULL, "sequence %d is full (context %d)", s, kv->n_ctx);
        if (!kv_has_cell(kv, s, expect))
            return bt_errf(err, errsz, BT_EINVAL,
                           "token %d of sequence %d: no KV block mapped for position %d", i, s,
                           expect);
        if (m->last && b->logits && b->logits[i]) ++*n_out;
    }
    if (*n_out > f->max_out)
        return bt_errf(err, errsz, BT_EINVAL, "%d rows want logits (at most %d)", *n_out,
                       f->max_out);
    return 0;
}

/* ---- fused steps of a layer (kern_matmul_multi's pre and post operations) ---- */

/* pre: rmsnorm of a row of the residual stream */
struct norm_op {
    const float *w; /* (n_embd) */
    int n;
    float eps;
};

static void norm_pre(const void *ctx, const float *x, float *out, int64_t c)
{
    const struct norm_op *o = ctx;
    (void)c;
    fwd_rmsnorm(out, x, o->w, o->n, o->eps);
}

/* post: biases of q, k, v (matrices 0, 1, 2) */
struct qkv_op {
    float *y[3];
    const float *b[3]; /* NULL: no bias */
    int64_t dim[3];
};

static void qkv_post(void *ctx, int mat, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    const struct qkv_op *o = ctx;
    if (!o->b[mat]) return;
    for (int64_t c = c0; c < c1; c++)
        for (int64_t r = r0; r < r1; r++) o->y[mat][c * o->dim[mat] + r] += o->b[mat][r];
}

/* post: x += y (+ bias), the residual connection */
struct resid_op {
    float *x;
    const float *y;
    const float *b; /* NULL: no bias */
    int64_t dim;
};

static void resid_post(void *ctx, int mat, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    const struct resid_op *o = ctx;
    (void)mat;
    for (int64_t c = c0; c < c1; c++) {
        float *x = o->x + c * o->dim;
        const float *y = o->y + c * o->dim;
        if (o->b)
            for (int64_t r = r0; r < r1; r++) x[r] += y[r] + o->b[r];
        else
            for (int64_t r = r0; r < r1; r++) x[r] += y[r];
    }
}

/* post (paired gate and up): g = silu(g) * u */
struct glu_op {
    float *g;
    const float *u;
    int64_t dim;
};

static void glu_post(void *ctx, int mat, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    const struct glu_op *o = ctx;
    (void)mat;
    for (int64_t c = c0; c < c1; c++)
        kern_swiglu(o->g + c * o->dim + r0, o->u + c * o->dim + r0, r1 - r0);
}

static int layer_forward(struct fwd *f, int il, const struct fwd_batch *b)
{
    const struct model_hparams *hp = &f->m->hp;
    const struct model_layer *L = &f->m->layers[il];
    struct kv *kv = f->kv;
    const int n = b->n, D = hp->n_embd;
    const int q_dim = hp->n_head * hp->head_dim, kv_dim = hp->n_head_kv * hp->head_dim;
    int rc;

    /* attention: q, k, v of the normed input in one job */
    const struct norm_op an = {L->attn_norm.data, D, hp->norm_eps};
    const struct qkv_op qo = {
        {f->q, f->k, f->v}, {L->bq.data, L->bk.data, L->bv.data}, {q_dim, kv_dim, kv_dim}};
    const struct kern_mat qkv[3] = {{L->wq.type, L->wq.data, L->wq.rows, f->q},
                                    {L->wk.type, L->wk.data, L->wk.rows, f->k},
                                    {L->wv.type, L->wv.data, L->wv.rows, f->v}};
    const bool bias = L->bq.data || L->bk.data || L->bv.data;
    struct kern_fuse fu = {norm_pre, &an, bias ? qkv_post : NULL, (void *)&qo, false, b->prompt};
    if ((rc = kern_matmul_multi(f->pool, qkv, 3, D, f->x, n, &fu)) < 0) return rc;
    for (int t = 0; t < n; t++) {
        model_rope(f->m, f->q + (size_t)t * q_dim, hp->n_head, b->pos[t]);
        model_rope(f->m, f->k + (size_t)t * kv_dim, hp->n_head_kv, b->pos[t]);
        kv_store_row(kv, kv_k_at(kv, il, b->seq[t], b->pos[t]), f->k + (size_t)t * kv_dim);
        kv_store_row(kv, kv_v_at(kv, il, b->seq[t], b->pos[t]), f->v + (size_t)t * kv_dim);
    }
    f->cur = b;
    f->cur_layer = il;
    bt_pool_run(f->pool, attention_job, f);
    /* x += att @ wo^T (+ bo) */
    const struct resid_op ro = {f->x, f->xb, L->bo.data, D};
    const struct kern_mat wo = {L->wo.type, L->wo.data, L->wo.rows, f->xb};
    fu = (struct kern_fuse){NULL, NULL, resid_post, (void *)&ro, false, b->prompt};
    if ((rc = kern_matmul_multi(f->pool, &wo, 1, q_dim, f->att, n, &fu)) < 0) return rc;

    /* feed-forward: gate and up of the normed input, silu(gate) * up, in one job */
    const struct norm_op fn = {L->ffn_norm.data, D, hp->norm_eps};
    const struct glu_op go = {f->hb, f->hb2, hp->n_ff};
    const struct kern_mat gu[2] = {{L->w_gate.type, L->w_gate.data, L->w_gate.rows, f->hb},
                                   {L->w_up.type, L->w_up.data, L->w_up.rows, f->hb2}};
    if (L->w_gate.type == L->w_up.type) {
        fu = (struct kern_fuse){norm_pre, &fn, glu_post, (void *)&go, true, b->prompt};
        if ((rc = kern_matmul_multi(f->pool, gu, 2, D, f->x, n, &fu)) < 0) return rc;
    } else {
        fu = (struct kern_fuse){norm_pre, &fn, NULL, NULL, false, b->prompt};
        if ((rc = kern_matmul_multi(f->pool, gu, 2, D, f->x, n, &fu)) < 0) return rc;
        kern_swiglu(f->hb, f->hb2, (int64_t)n * hp->n_ff);
    }
    /* x += h @ w_down^T */
    const struct resid_op rd = {f->x, f->xb, NULL, D};
    const struct kern_mat wd = {L->w_down.type, L->w_down.data, L->w_down.rows, f->xb};
    fu = (struct kern_fuse){NULL, NULL, resid_post, (void *)&rd, false, b->prompt};
    if ((rc = kern_matmul_multi(f->pool, &wd, 1, hp->n_ff, f->hb, n, &fu)) < 0) return rc;
    return 0;
}

/* The input rows of batch b into x (n, n_embd): embedding rows on the first stage. */
static void embed(const struct model *m, const struct fwd_batch *b, float *x)
{
    const int D = m->hp.n_embd;
    const size_t rs = bt_row_size(m->tok_embd.type, D);
    for (int t = 0; t < b->n; t++) {
        const char *row = (const char *)m->tok_embd.data + (size_t)b->token[t] * rs;
        bt_dequantize_row(m->tok_embd.type, row, x + (size_t)t * D, D);
    }
}

/* The stage on its CUDA device; the batch is checked, `no` rows want logits. */
static int eval_gpu(struct fwd *f, const struct fwd_batch *b, int no, const float **out, int *n_out,
                    char *err, size_t errsz)
{
    const struct model *m = f->m;
    const int n_rot = m->hp.n_rot;
    int rc, r = 0;

    const float *in = b->embd;
    if (m->first) {
        embed(m, b, f->x);
        in = f->x;
    }
    for (int t = 0; t < b->n; t++) {
        model_rope_cos_sin(m, b->pos[t], f->rope_cs + (size_t)t * n_rot);
        if (m->last && b->logits && b->logits[t]) f->out_rows[r++] = t;
    }
    float *dst = m->last ? f->logits : f->xb;
    if ((rc = cuda_fwd_eval(f->gpu, b->n, in, b->pos, b->seq, f->kv->table, f->rope_cs, f->out_rows,
                            no, dst, err, errsz)) < 0)
        return rc;
    for (int t = 0; t < b->n; t++)
        if (b->pos[t] + 1 > f->kv->len[b->seq[t]]) f->kv->len[b->seq[t]] = b->pos[t] + 1;
    if (!m->last) {
        *out = f->xb;
        *n_out = b->n;
        return 0;
    }
    const size_t nl = (size_t)no * m->hp.n_vocab;
    for (size_t i = 0; i < nl; i++)
        if (!isfinite(f->logits[i]))
            return bt_errf(err, errsz, BT_ERR, "non-finite logit (row %zu, token %zu)",
                           i / m->hp.n_vocab, i % m->hp.n_vocab);
    *out = no ? f->logits : NULL;
    *n_out = no;
    return 0;
}

int fwd_kv_apply(struct fwd *f, const struct kv_op *ops, int n, char *err, size_t errsz)
{
    int rc = kv_apply(f->kv, ops, n, err, errsz);
    for (int i = 0; rc == BT_OK && f->gpu && i < n; i++)
        if (ops[i].kind == KV_OP_COPY)
            rc = cuda_fwd_copy(f->gpu, ops[i].block, ops[i].src, ops[i].n, err, errsz);
    return rc;
}

int fwd_eval(struct fwd *f, const struct fwd_batch *b, const float **out, int *n_out, char *err,
             size_t errsz)
{
    const struct model *m = f->m;
    const struct model_hparams *hp = &m->hp;
    const int D = hp->n_embd;
    int rc, no = 0;

    *out = NULL;
    *n_out = 0;
    if ((rc = check_batch(f, b, &no, err, errsz)) < 0) return rc;
    if (f->gpu) return eval_gpu(f, b, no, out, n_out, err, errsz);

    /* input: embedding rows or the previous stage's activations */
    if (m->first) {
        embed(m, b, f->x);
    } else {
        memcpy(f->x, b->embd, (size_t)b->n * D * sizeof(float));
    }

    for (int il = 0; il < m->l1 - m->l0; il++)
        if ((rc = layer_forward(f, il, b)) < 0)
            return bt_errf(err, errsz, rc, "layer %d: matrix product failed (%s)", m->l0 + il,
                           bt_strstatus(rc));

    /* the cache now holds the batch */
    for (int t = 0; t < b->n; t++)
        if (b->pos[t] + 1 > f->kv->len[b->seq[t]]) f->kv->len[b->seq[t]] = b->pos[t] + 1;

    if (!m->last) {
        *out = f->x;
        *n_out = b->n;
        return 0;
    }
    if (no == 0) return 0;
    int r = 0;
    for (int t = 0; t < b->n; t++)
        if (b->logits && b->logits[t])
            fwd_rmsnorm(f->xo + (size_t)r++ * D, f->x + (size_t)t * D, m->out_norm.data, D,
                        hp->norm_eps);
    if ((rc = matmul(f, &m->output, f->xo, no, f->logits, b->prompt)) < 0)
        return bt_errf(err, errsz, rc, "output head: matrix product failed (%s)", bt_strstatus(rc));
    const size_t nl = (size_t)no * hp->n_vocab;
    for (size_t i = 0; i < nl; i++)
        if (!isfinite(f->logits[i]))
            return bt_errf(err, errsz, BT_ERR, "non-finite logit (row %zu, token %zu)",
                           i / hp->n_vocab, i % hp->n_vocab);
    *out = f->logits;
    *n_out = no;
    return 0;
}
