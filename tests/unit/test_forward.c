/* forward + kv on the real tiny Llama (stories260K):
 *  - greedy continuations and logits equal llama.cpp's (fixture made by
 *    tools/oracle/make_engine_fixtures.py), with an F16 and an F32 cache;
 *  - a batch gives the logits of token-by-token decoding; a multi-sequence batch gives what
 *    each sequence gives alone; two pipeline stages chained give the full model's logits;
 *  - kv: shift (checked on layer 0, whose keys depend only on token and position), keep,
 *    clear; F16 cache close to F32; bad batches are refused and change nothing. */
#include "engine_fixture.h"
#include "forward.h"
#include "gguf.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "t.h"
#include "threadpool.h"

static struct gguf *G;
static struct fx_file FX;
static struct bt_pool *POOL;

struct eng {
    struct model *m;
    struct kv *kv;
    struct fwd *f;
    float *rows; /* copy of the last output */
};

static void eng_close(struct eng *e)
{
    fwd_free(e->f);
    kv_free(e->kv);
    model_free(e->m);
    free(e->rows);
    memset(e, 0, sizeof(*e));
}

static int eng_open(struct eng *e, int l0, int l1, int n_seq, int n_ctx, uint32_t kv_type,
                    struct bt_pool *pool, int max_batch, int max_out)
{
    char err[256] = "";
    memset(e, 0, sizeof(*e));
    int rc = model_load(G, l0, l1, &e->m, err, sizeof(err));
    if (rc == 0) rc = kv_new(e->m, n_seq, n_ctx, kv_type, &e->kv, err, sizeof(err));
    if (rc == 0) rc = fwd_new(e->m, e->kv, pool, max_batch, max_out, &e->f, err, sizeof(err));
    if (rc < 0) fprintf(stderr, "eng_open: %s\n", err);
    CHECK_INT(rc, 0);
    const size_t w =
        e->m ? (size_t)(e->m->hp.n_vocab > e->m->hp.n_embd ? e->m->hp.n_vocab : e->m->hp.n_embd)
             : 1;
    e->rows = malloc((size_t)max_batch * w * sizeof(float));
    return rc;
}

/* Evaluate a batch; copies the output rows into e->rows (row width = n_vocab or n_embd).
 * Returns the number of rows or a negative status. */
static int eval(struct eng *e, int n, const int32_t *tok, const float *embd, const int32_t *pos,
                const int32_t *seq, const uint8_t *want)
{
    char err[256] = "";
    const float *out;
    int n_out;
    struct fwd_batch b = {n, tok, embd, pos, seq, want, false};
    int rc = fwd_eval(e->f, &b, &out, &n_out, err, sizeof(err));
    if (rc < 0) return rc;
    const int w = e->m->last ? e->m->hp.n_vocab : e->m->hp.n_embd;
    if (n_out) memcpy(e->rows, out, (size_t)n_out * w * sizeof(float));
    return n_out;
}

/* Feed tok[0..n) of sequence seq (positions from start) in chunks of `chunk`, every row wanting
 * output; out (n, width) gets the rows. */
static int feed(struct eng *e, int seq, const int32_t *tok, int n, int start, int chunk, float *out)
{
    const int w = e->m->last ? e->m->hp.n_vocab : e->m->hp.n_embd;
    int32_t pos[512], sq[512];
    uint8_t want[512];
    for (int i = 0; i < n; i += chunk) {
        const int k = n - i < chunk ? n - i : chunk;
        for (int j = 0; j < k; j++) {
            pos[j] = start + i + j;
            sq[j] = seq;
            want[j] = 1;
        }
        int rc = eval(e, k, tok + i, NULL, pos, sq, want);
        if (rc != k) return rc < 0 ? rc : BT_ERR;
        memcpy(out + (size_t)i * w, e->rows, (size_t)k * w * sizeof(float));
    }
    return 0;
}

/* Largest |a - b| of n rows of width w, relative to each row's logit range. */
static double rel_diff(const float *a, const float *b, int n, int w)
{
    double worst = 0;
    for (int r = 0; r < n; r++) {
        double d, range;
        fx_compare(a + (size_t)r * w, b + (size_t)r * w, w, &d, &range);
        double rel = d / (range > 0 ? range : 1);
        if (!(rel <= worst)) worst = rel;
    }
    return worst;
}

/* The tokens of a fixture case: prompt then greedy continuation; returns the count. */
static int case_tokens(const struct fx_case *c, int32_t *out, int cap)
{
    int n = 0;
    for (int i = 0; i < c->n_prompt && n < cap; i++) out[n++] = c->prompt_tokens[i];
    for (int i = 0; i < c->n_gen && n < cap; i++) out[n++] = c->gen_tokens[i];
    return n;
}

static void test_greedy_vs_llamacpp(uint32_t kv_type)
{
    int32_t eos = -1;
    gguf_get_i32(G, "tokenizer.ggml.eos_token_id", &eos);
    for (int ci = 0; ci < FX.n_cases; ci++) {
        const struct fx_case *c = &FX.cases[ci];
        struct eng e;
        if (eng_open(&e, 0, -1, 1, c->n_ctx, kv_type, POOL, 64, 64) < 0) continue;
        const int V = e.m->hp.n_vocab;
        float *lg = malloc((size_t)c->n_prompt * V * sizeof(float));
        CHECK_INT(feed(&e, 0, c->prompt_tokens, c->n_prompt, 0, 64, lg), 0);
        /* logits after the prompt */
        for (int i = 0; i < c->n_logits; i++) {
            if (c->logits[i].pos != c->n_prompt - 1 || c->logits[i].n != V) continue;
            double d, range;
            fx_compare(lg + (size_t)(c->n_prompt - 1) * V, c->logits[i].v, V, &d, &range);
            CHECK(d <= 1e-3 * range);
        }
        /* greedy continuation */
        float *last = malloc((size_t)V * sizeof(float));
        memcpy(last, lg + (size_t)(c->n_prompt - 1) * V, (size_t)V * sizeof(float));
        int bad = -1;
        for (int i = 0; i < c->n_gen; i++) {
            int32_t t = fx_argmax(last, V);
            if (t != c->gen_tokens[i]) {
                bad = i;
                break;
            }
            if (feed(&e, 0, &t, 1, c->n_prompt + i, 1, last) < 0) break;
        }
        if (bad >= 0)
            fprintf(stderr, "case %s (kv %s): token %d differs from llama.cpp's\n", c->name,
                    bt_type_name(kv_type), bad);
        CHECK_INT(bad, -1);
        if (c->eog) CHECK_INT(fx_argmax(last, V), eos);
        free(last);
        free(lg);
        eng_close(&e);
    }
}

static void test_batch_equals_sequential(void)
{
    int32_t tok[48];
    const int n = case_tokens(&FX.cases[0], tok, 48);
    struct eng a, b;
    eng_open(&a, 0, -1, 1, 64, BT_F32, POOL, 64, 64);
    eng_open(&b, 0, -1, 1, 64, BT_F32, POOL, 64, 64);
    const int V = a.m->hp.n_vocab;
    float *la = malloc((size_t)n * V * sizeof(float)), *lb = malloc((size_t)n * V * sizeof(float));
    CHECK_INT(feed(&a, 0, tok, n, 0, 64, la), 0); /* one batch */
    CHECK_INT(feed(&b, 0, tok, n, 0, 1, lb), 0);  /* token by token */
    CHECK(rel_diff(la, lb, n, V) <= 1e-4);
    kv_seq_clear(b.kv, 0);
    CHECK_INT(feed(&b, 0, tok, n, 0, 7, lb), 0); /* uneven chunks */
    CHECK(rel_diff(la, lb, n, V) <= 1e-4);
    free(la);
    free(lb);
    eng_close(&a);
    eng_close(&b);
}

static void test_multi_sequence(void)
{
    enum { NS = 3 };
    int32_t tok[NS][24];
    const int len[NS] = {20, 15, 9};
    for (int s = 0; s < NS; s++) case_tokens(&FX.cases[s % FX.n_cases], tok[s], 24);
    struct eng solo, multi;
    eng_open(&solo, 0, -1, 1, 64, BT_F32, POOL, 64, 64);
    eng_open(&multi, 0, -1, NS, 64, BT_F32, POOL, 64, 64);
    const int V = solo.m->hp.n_vocab;
    float *ref = malloc((size_t)NS * 24 * V * sizeof(float));
    for (int s = 0; s < NS; s++) {
        kv_seq_clear(solo.kv, 0);
        CHECK_INT(feed(&solo, 0, tok[s], len[s] + 1, 0, 64, ref + (size_t)s * 24 * V), 0);
    }
    /* one batch with the three prompts interleaved round-robin */
    int32_t bt[64], bp[64], bs[64];
    uint8_t want[64];
    int n = 0, next[NS] = {0};
    for (int round = 0; round < 20; round++)
        for (int s = 0; s < NS; s++)
            if (next[s] < len[s]) {
                bt[n] = tok[s][next[s]];
                bp[n] = next[s]++;
                bs[n] = s;
                want[n++] = 1;
            }
    CHECK_INT(eval(&multi, n, bt, NULL, bp, bs, want), n);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double d =
            rel_diff(multi.rows + (size_t)i * V, ref + ((size_t)bs[i] * 24 + bp[i]) * V, 1, V);
        worst = d > worst ? d : worst;
    }
    CHECK(worst <= 1e-4);
    /* then one decode step of all three in one batch, logits of sequences 0 and 2 only */
    for (int s = 0; s < NS; s++) {
        bt[s] = tok[s][len[s]];
        bp[s] = len[s];
        bs[s] = s;
        want[s] = s != 1;
        CHECK_INT(kv_seq_len(multi.kv, s), len[s]);
    }
    CHECK_INT(eval(&multi, NS, bt, NULL, bp, bs, want), 2);
    CHECK(rel_diff(multi.rows, ref + (size_t)len[0] * V, 1, V) <= 1e-4);
    CHECK(rel_diff(multi.rows + V, ref + ((size_t)2 * 24 + len[2]) * V, 1, V) <= 1e-4);
    free(ref);
    eng_close(&solo);
    eng_close(&multi);
}

static void test_pipeline_stages(void)
{
    int32_t tok[32];
    const int n = case_tokens(&FX.cases[1 % FX.n_cases], tok, 32);
    struct eng full, s0, s1;
    eng_open(&full, 0, -1, 1, 64, BT_F32, POOL, 64, 64);
    eng_open(&s0, 0, 2, 1, 64, BT_F32, POOL, 64, 64);
    eng_open(&s1, 2, -1, 1, 64, BT_F32, POOL, 64, 64);
    CHECK(s0.m->first && !s0.m->last && !s1.m->first && s1.m->last);
    const int V = full.m->hp.n_vocab, D = full.m->hp.n_embd;
    float *ref = malloc((size_t)n * V * sizeof(float)),
          *act = malloc((size_t)n * D * sizeof(float));
    CHECK_INT(feed(&full, 0, tok, n, 0, 64, ref), 0);
    CHECK_INT(feed(&s0, 0, tok, n, 0, 64, act), 0); /* stage 0 outputs activations */
    int32_t pos[32], seq[32] = {0};
    uint8_t want[32];
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        want[i] = 1;
    }
    CHECK_INT(eval(&s1, n, NULL, act, pos, seq, want), n);
    CHECK(rel_diff(s1.rows, ref, n, V) <= 1e-6);
    free(ref);
    free(act);
    eng_close(&full);
    eng_close(&s0);
    eng_close(&s1);
}

/* Layer 0 alone: its keys and values depend on token and position only, so after a context
 * shift (keep the first n_keep positions, drop the next k) the next token's output must equal
 * that of a fresh run of the kept tokens. */
static void test_kv_shift(uint32_t kv_type, int n_keep, double tol)
{
    int32_t tok[40], kept[40];
    const int n = case_tokens(&FX.cases[0], tok, 40), N = 30, k = 11;
    CHECK(n >= N + 1);
    struct eng a, b;
    eng_open(&a, 0, 1, 1, 64, kv_type, POOL, 64, 64);
    eng_open(&b, 0, 1, 1, 64, kv_type, POOL, 64, 64);
    const int D = a.m->hp.n_embd, nk = N - k + 1; /* kept tokens + the new one */
    float *oa = malloc(64 * (size_t)D * sizeof(float)),
          *ob = malloc(64 * (size_t)D * sizeof(float));
    CHECK_INT(feed(&a, 0, tok, N, 0, 64, oa), 0);
    CHECK_INT(kv_seq_shift(a.kv, 0, n_keep, k), 0);
    CHECK_INT(kv_seq_len(a.kv, 0), N - k);
    CHECK_INT(feed(&a, 0, tok + N, 1, N - k, 1, oa), 0);
    for (int i = 0; i < nk; i++) kept[i] = i < n_keep ? tok[i] : tok[i + k];
    CHECK_INT(feed(&b, 0, kept, nk, 0, 64, ob), 0);
    /* compare what the layer added to the embedding of the token (the part attention shapes) */
    float *emb = malloc((size_t)D * sizeof(float));
    const struct model_tensor *te = &a.m->tok_embd;
    bt_dequantize_row(te->type, (const char *)te->data + bt_row_size(te->type, D) * tok[N], emb, D);
    float *ra = oa, *rb = ob + (size_t)(nk - 1) * D;
    for (int i = 0; i < D; i++) {
        ra[i] -= emb[i];
        rb[i] -= emb[i];
    }
    const double d = rel_diff(ra, rb, 1, D);
    CHECK(d <= tol);
    /* the unshifted run really differs (the check above is not vacuous) */
    float *oc = malloc(64 * (size_t)D * sizeof(float));
    kv_seq_clear(b.kv, 0);
    CHECK_INT(feed(&b, 0, tok, N + 1, 0, 64, oc), 0);
    float *rc = oc + (size_t)N * D;
    for (int i = 0; i < D; i++) rc[i] -= emb[i];
    const double d_other = rel_diff(rc, rb, 1, D);
    fprintf(stderr, "kv shift (%s, keep %d): rel diff %.3g; unshifted context: %.3g\n",
            bt_type_name(kv_type), n_keep, d, d_other);
    CHECK(d_other > 10 * d && d_other > 5e-3);
    free(emb);
    /* bad shifts change nothing; dropping everything empties the sequence */
    const int len = kv_seq_len(a.kv, 0);
    CHECK_INT(kv_seq_shift(a.kv, 0, 0, len + 1), BT_EINVAL);
    CHECK_INT(kv_seq_shift(a.kv, 0, len, 1), BT_EINVAL);
    CHECK_INT(kv_seq_shift(a.kv, 0, -1, 1), BT_EINVAL);
    CHECK_INT(kv_seq_shift(a.kv, 1, 0, 1), BT_EINVAL);
    CHECK_INT(kv_seq_len(a.kv, 0), len);
    CHECK_INT(kv_seq_shift(a.kv, 0, 2, len - 2), 0);
    CHECK_INT(kv_seq_len(a.kv, 0), 2);
    free(oa);
    free(ob);
    free(oc);
    eng_close(&a);
    eng_close(&b);
}

static void test_kv_keep_clear(void)
{
    int32_t tok[20];
    const int n = case_tokens(&FX.cases[0], tok, 20);
    struct eng e;
    eng_open(&e, 0, -1, 2, 32, BT_F32, POOL, 32, 32);
    const int V = e.m->hp.n_vocab;
    float *ref = malloc((size_t)n * V * sizeof(float)),
          *got = malloc((size_t)n * V * sizeof(float));
    CHECK_INT(feed(&e, 1, tok, n, 0, 32, ref), 0);
    CHECK_INT(kv_seq_len(e.kv, 1), n);
    CHECK_INT(kv_seq_len(e.kv, 0), 0);
    CHECK_INT(kv_seq_keep(e.kv, 1, 12), 0);
    CHECK_INT(kv_seq_keep(e.kv, 1, 13), BT_EINVAL); /* cannot grow */
    CHECK_INT(feed(&e, 1, tok + 12, n - 12, 12, 32, got), 0);
    CHECK(rel_diff(got, ref + (size_t)12 * V, n - 12, V) <= 1e-5);
    CHECK_INT(kv_seq_clear(e.kv, 1), 0);
    CHECK_INT(kv_seq_len(e.kv, 1), 0);
    CHECK_INT(feed(&e, 1, tok, n, 0, 32, got), 0);
    CHECK(rel_diff(got, ref, n, V) <= 1e-6);
    /* a cleared sequence in the other slot: same logits there too */
    CHECK_INT(feed(&e, 0, tok, n, 0, 5, got), 0);
    CHECK(rel_diff(got, ref, n, V) <= 1e-4);
    CHECK_INT(kv_seq_len(e.kv, 2), -1);
    free(ref);
    free(got);
    eng_close(&e);
}

static void test_kv_f16_close_to_f32(void)
{
    int32_t tok[128];
    const int n = case_tokens(&FX.cases[0], tok, 128);
    struct eng a, b;
    eng_open(&a, 0, -1, 1, 128, BT_F32, POOL, 64, 64);
    eng_open(&b, 0, -1, 1, 128, BT_F16, POOL, 64, 64);
    CHECK_INT(kv_bytes(a.kv), 2 * kv_bytes(b.kv));
    const int V = a.m->hp.n_vocab;
    float *la = malloc((size_t)n * V * sizeof(float)), *lb = malloc((size_t)n * V * sizeof(float));
    CHECK_INT(feed(&a, 0, tok, n, 0, 64, la), 0);
    CHECK_INT(feed(&b, 0, tok, n, 0, 64, lb), 0);
    const double d = rel_diff(la, lb, n, V);
    CHECK(d <= 1e-2);
    CHECK(d > 0); /* the caches really differ */
    int agree = 0;
    for (int i = 0; i < n; i++)
        agree += fx_argmax(la + (size_t)i * V, V) == fx_argmax(lb + (size_t)i * V, V);
    CHECK(agree >= n - 1);
    free(la);
    free(lb);
    eng_close(&a);
    eng_close(&b);
}

static void test_bad_batches(void)
{
    struct eng e;
    char err[256];
    eng_open(&e, 0, -1, 2, 8, BT_F32, POOL, 8, 1);
    int32_t tok[9] = {1, 403, 407, 261, 378, 432, 383, 286, 261}, pos[9], seq[9] = {0};
    uint8_t want[9] = {0};
    for (int i = 0; i < 9; i++) pos[i] = i;
    CHECK_INT(eval(&e, 3, tok, NULL, pos, seq, want), 0);
    const float *out;
    int n_out;
    /* a gap in positions */
    int32_t p5 = 5;
    struct fwd_batch b = {1, tok, NULL, &p5, seq, want, false};
    CHECK_INT(fwd_eval(e.f, &b, &out, &n_out, err, sizeof(err)), BT_EINVAL);
    CHECK(strstr(err, "position") != NULL);
    /* sequence and token out of range, empty and oversized batches */
    int32_t s9 = 9, p3 = 3, bad_tok = 512;
    b = (struct fwd_batch){1, tok, NULL, &p3, &s9, want, false};
    CHECK_INT(fwd_eval(e.f, &b, &out, &n_out, err, sizeof(err)), BT_EINVAL);
    b = (struct fwd_batch){1, &bad_tok, NULL, &p3, seq, want, false};
    CHECK_INT(fwd_eval(e.f, &b, &out, &n_out, err, sizeof(err)), BT_EINVAL);
    b = (struct fwd_batch){0, tok, NULL, pos, seq, want, false};
    CHECK_INT(fwd_eval(e.f, &b, &out, &n_out, err, sizeof(err)), BT_EINVAL);
    b = (struct fwd_batch){9, tok, NULL, pos, seq, want, false};
    CHECK_INT(fwd_eval(e.f, &b, &out, &n_out, err, sizeof(err)), BT_EINVAL);
    /* two rows want logits, max_out is 1 */
    uint8_t two[2] = {1, 1};
    b = (struct fwd_batch){2, tok + 3, NULL, pos + 3, seq, two, false};
    CHECK_INT(fwd_eval(e.f, &b, &out, &n_out, err, sizeof(err)), BT_EINVAL);
    /* nothing changed */
    CHECK_INT(kv_seq_len(e.kv, 0), 3);
    /* fill the 8 cells; the 9th position is refused as full, valid tokens before it or not */
    CHECK_INT(eval(&e, 5, tok + 3, NULL, pos + 3, seq, want), 0);
    CHECK_INT(kv_seq_len(e.kv, 0), 8);
    b = (struct fwd_batch){1, tok + 8, NULL, pos + 8, seq, want, false};
    CHECK_INT(fwd_eval(e.f, &b, &out, &n_out, err, sizeof(err)), BT_EFULL);
    CHECK_INT(kv_seq_len(e.kv, 0), 8);
    /* the other sequence still works */
    int32_t s1[2] = {1, 1};
    uint8_t w1[2] = {0, 1};
    CHECK_INT(eval(&e, 2, tok, NULL, pos, s1, w1), 1);
    eng_close(&e);
}

static void test_threads_agree(void)
{
    int32_t tok[48];
    const int n = case_tokens(&FX.cases[0], tok, 48);
    struct eng a, b;
    eng_open(&a, 0, -1, 1, 64, BT_F32, NULL, 64, 64); /* caller only */
    eng_open(&b, 0, -1, 1, 64, BT_F32, POOL, 64, 64);
    const int V = a.m->hp.n_vocab;
    float *la = malloc((size_t)n * V * sizeof(float)), *lb = malloc((size_t)n * V * sizeof(float));
    CHECK_INT(feed(&a, 0, tok, n, 0, 64, la), 0);
    CHECK_INT(feed(&b, 0, tok, n, 0, 64, lb), 0);
    CHECK(rel_diff(la, lb, n, V) <= 1e-5);
    free(la);
    free(lb);
    eng_close(&a);
    eng_close(&b);
}

/* every half: the cache reader's conversion is bt_f16_to_f32's, bit for bit */
static void test_f16_rows(void)
{
    static uint16_t h[65536];
    static float f[65536];
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    fwd_f16_to_f32_row(h, f, 65536);
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        float r = bt_f16_to_f32((bt_f16)i);
        bad += memcmp(&r, &f[i], 4) != 0;
    }
    CHECK_INT(bad, 0);
    /* the kernels by hand: softmax sums to 1 and keeps the order; rmsnorm scales to unit rms */
    float x[5] = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f}, w[5] = {1, 1, 1, 1, 2}, y[5];
    fwd_rmsnorm(y, x, w, 5, 0.0f);
    const double rms = sqrt((1 + 9 + 4 + 9 + 0.25) / 5.0);
    CHECK_NEAR(y[1], 3.0 / rms, 1e-6);
    CHECK_NEAR(y[4], 2 * 0.5 / rms, 1e-6);
    fwd_softmax(x, 5);
    CHECK_NEAR(x[0] + x[1] + x[2] + x[3] + x[4], 1.0, 1e-6);
    CHECK_NEAR(x[1] / x[0], exp(2.0), 1e-4);
    CHECK(x[1] == x[3]);
}

int main(void)
{
    char err[256];
    if (gguf_open(t_path("BATON_SHARED", "models/stories260K.gguf"), &G, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (fx_load(t_path("BATON_SRC", "tests/fixtures/engine/stories260K.txt"), &FX) < 0) return 1;
    POOL = bt_pool_new(2);
    CHECK(POOL != NULL);

    test_f16_rows();
    test_greedy_vs_llamacpp(BT_F16);
    test_greedy_vs_llamacpp(BT_F32);
    test_batch_equals_sequential();
    test_multi_sequence();
    test_pipeline_stages();
    test_kv_shift(BT_F32, 0, 1e-5);
    test_kv_shift(BT_F32, 3, 1e-5);
    test_kv_shift(BT_F16, 1, 1e-3);
    test_kv_keep_clear();
    test_kv_f16_close_to_f32();
    test_bad_batches();
    test_threads_agree();

    bt_pool_free(POOL);
    fx_free(&FX);
    gguf_close(G);
    return t_done();
}
