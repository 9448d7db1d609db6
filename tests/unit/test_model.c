/* model: hyperparameters and weight views of stories260K, stage ranges, errors on altered copies
 * of it (written with the gguf writer), and RoPE against its closed form. */
#include "gguf.h"
#include "gguf_write.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "t.h"

#include <math.h>
#include <unistd.h>

static struct gguf *G;
static char TMP[4096];

/* What to change when copying stories260K. */
struct mut {
    const char *drop_tensor;
    const char *reshape_tensor; /* becomes [64, 64] f32 */
    const char *extra_tensor;   /* an extra [64] f32 tensor */
    const float *rope_freqs;    /* adds rope_freqs.weight (n_rot / 2) */
    const char *drop_key;
    const char *str_key, *str_val;
    const char *u32_key;
    uint32_t u32_val;
    const char *f32_key;
    float f32_val;
};

/* Write a changed copy of stories260K to TMP/m.gguf and load it (stage [l0, l1)). Returns the
 * status; err gets the message. */
static int load_mut(const struct mut *mu, int l0, int l1, struct model **m, struct gguf **g,
                    char *err, size_t errsz)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/m.gguf", TMP);
    struct gguf_writer *w = gguf_writer_new();
    for (int64_t i = 0; i < gguf_n_kv(G); i++) {
        const struct gguf_kv *kv = gguf_kv_at(G, i);
        if (mu->drop_key && !strcmp(kv->key, mu->drop_key)) continue;
        gguf_writer_copy_kv(w, kv);
    }
    if (mu->str_key) gguf_writer_set_str(w, mu->str_key, mu->str_val);
    if (mu->u32_key) gguf_writer_set_u32(w, mu->u32_key, mu->u32_val);
    if (mu->f32_key) gguf_writer_set_f32(w, mu->f32_key, mu->f32_val);

    const void *data[64];
    size_t size[64];
    int n = 0;
    static float zeros[64 * 64];
    for (int64_t i = 0; i < gguf_n_tensors(G) && n < 60; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(G, i);
        if (mu->drop_tensor && !strcmp(t->name, mu->drop_tensor)) continue;
        if (mu->reshape_tensor && !strcmp(t->name, mu->reshape_tensor)) {
            const int64_t ne[2] = {64, 64};
            gguf_writer_add_tensor(w, t->name, BT_F32, 2, ne);
            data[n] = zeros;
            size[n++] = sizeof(zeros);
            continue;
        }
        gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne);
        data[n] = t->data;
        size[n++] = t->nbytes;
    }
    if (mu->extra_tensor) {
        const int64_t ne[1] = {64};
        gguf_writer_add_tensor(w, mu->extra_tensor, BT_F32, 1, ne);
        data[n] = zeros;
        size[n++] = 64 * sizeof(float);
    }
    if (mu->rope_freqs) {
        const int64_t ne[1] = {4};
        gguf_writer_add_tensor(w, "rope_freqs.weight", BT_F32, 1, ne);
        data[n] = mu->rope_freqs;
        size[n++] = 4 * sizeof(float);
    }
    int rc = gguf_writer_begin(w, path, err, errsz);
    for (int i = 0; rc == 0 && i < n; i++) rc = gguf_writer_write(w, i, data[i], size[i]);
    if (rc == 0) rc = gguf_writer_finish(w, err, errsz);
    gguf_writer_free(w);
    CHECK_INT(rc, 0);
    *m = NULL;
    *g = NULL;
    if (rc < 0) return rc;
    rc = gguf_open(path, g, err, errsz);
    CHECK_INT(rc, 0);
    if (rc < 0) return rc;
    rc = model_load(*g, l0, l1, m, err, errsz);
    unlink(path);
    return rc;
}

static void test_hparams_and_views(void)
{
    char err[256];
    struct model *m = NULL;
    CHECK_INT(model_load(G, 0, -1, &m, err, sizeof(err)), 0);
    if (!m) return;
    const struct model_hparams *hp = &m->hp;
    /* the values stored in the file (checked with gguf-py) */
    CHECK_INT(hp->arch, MODEL_ARCH_LLAMA);
    CHECK_INT(hp->n_vocab, 512);
    CHECK_INT(hp->n_ctx_train, 128);
    CHECK_INT(hp->n_embd, 64);
    CHECK_INT(hp->n_layer, 5);
    CHECK_INT(hp->n_ff, 172);
    CHECK_INT(hp->n_head, 8);
    CHECK_INT(hp->n_head_kv, 4);
    CHECK_INT(hp->head_dim, 8);
    CHECK_INT(hp->n_rot, 8);
    CHECK_INT(hp->rope_type, MODEL_ROPE_NORM);
    CHECK_NEAR(hp->rope_freq_base, 10000.0, 0); /* absent: llama.cpp's default */
    CHECK_NEAR(hp->rope_freq_scale, 1.0, 0);
    CHECK_NEAR(hp->norm_eps, 1e-5, 1e-9);
    CHECK(m->first && m->last && !m->tied && m->l0 == 0 && m->l1 == 5);
    CHECK(m->rope_freqs == NULL);

    /* views point into the mapping: nothing copied */
    const struct gguf_tensor *t = gguf_find_tensor(G, "blk.3.ffn_down.weight");
    CHECK(m->layers[3].w_down.data == t->data);
    CHECK_INT(m->layers[3].w_down.rows, 64);
    CHECK_INT(m->layers[3].w_down.cols, 172);
    CHECK(m->layers[0].wk.data == gguf_find_tensor(G, "blk.0.attn_k.weight")->data);
    CHECK_INT(m->layers[0].wk.rows, 32);
    CHECK(m->output.data == gguf_find_tensor(G, "output.weight")->data);
    CHECK(m->layers[2].bq.data == NULL); /* llama: no biases in this file */

    /* byte accounting: every tensor of the file belongs to the full model */
    uint64_t all = 0;
    for (int64_t i = 0; i < gguf_n_tensors(G); i++) all += gguf_tensor_at(G, i)->nbytes;
    CHECK_INT(m->n_bytes, all);
    uint64_t layers = 0;
    for (int l = 0; l < 5; l++) layers += model_layer_bytes(G, l);
    CHECK_INT(model_layer_bytes(G, 5), 0);
    const uint64_t embd = gguf_find_tensor(G, "token_embd.weight")->nbytes;
    CHECK_INT(m->n_bytes_token, all - embd + 64 * sizeof(float)); /* one embedding row */
    CHECK(layers < all && layers > all / 2);

    /* stages: [0, 2) has the embedding, [2, 5) the head; together they are the model */
    struct model *s0 = NULL, *s1 = NULL;
    CHECK_INT(model_load(G, 0, 2, &s0, err, sizeof(err)), 0);
    CHECK_INT(model_load(G, 2, 5, &s1, err, sizeof(err)), 0);
    if (s0 && s1) {
        CHECK(s0->first && !s0->last && s0->tok_embd.data && !s0->output.data);
        CHECK(!s1->first && s1->last && !s1->tok_embd.data && s1->output.data);
        CHECK_INT(s0->n_bytes + s1->n_bytes, m->n_bytes);
        CHECK(s1->layers[0].wq.data == m->layers[2].wq.data);
        CHECK_INT(s0->n_bytes, model_layer_bytes(G, 0) + model_layer_bytes(G, 1) + embd);
    }
    model_free(s0);
    model_free(s1);

    /* bad ranges */
    struct model *bad = (struct model *)1;
    CHECK_INT(model_load(G, 3, 3, &bad, err, sizeof(err)), BT_EINVAL);
    CHECK(bad == NULL);
    CHECK(strstr(err, "[3, 3)") != NULL);
    CHECK_INT(model_load(G, -1, 2, &bad, err, sizeof(err)), BT_EINVAL);
    CHECK_INT(model_load(G, 0, 6, &bad, err, sizeof(err)), BT_EINVAL);
    model_free(m);
    model_free(NULL);
}

static void test_errors(void)
{
    char err[512];
    struct model *m;
    struct gguf *g;
    int rc;

    /* a missing tensor is named; a stage that does not hold it loads anyway */
    struct mut drop = {.drop_tensor = "blk.3.ffn_up.weight"};
    rc = load_mut(&drop, 0, -1, &m, &g, err, sizeof(err));
    CHECK_INT(rc, BT_ENOTFOUND);
    CHECK(strstr(err, "blk.3.ffn_up.weight") != NULL);
    CHECK(m == NULL);
    gguf_close(g);
    CHECK_INT(load_mut(&drop, 0, 3, &m, &g, err, sizeof(err)), 0);
    model_free(m);
    gguf_close(g);

    /* wrong shape */
    struct mut shape = {.reshape_tensor = "blk.1.attn_k.weight"};
    CHECK_INT(load_mut(&shape, 0, -1, &m, &g, err, sizeof(err)), BT_EFORMAT);
    CHECK(strstr(err, "blk.1.attn_k.weight") && strstr(err, "[64, 32]"));
    gguf_close(g);

    /* an unknown tensor in the stage (an unsupported variant) is refused, elsewhere ignored */
    struct mut extra = {.extra_tensor = "blk.0.ffn_gate_inp.weight"};
    CHECK_INT(load_mut(&extra, 0, -1, &m, &g, err, sizeof(err)), BT_EUNSUP);
    CHECK(strstr(err, "blk.0.ffn_gate_inp.weight") != NULL);
    gguf_close(g);
    CHECK_INT(load_mut(&extra, 1, -1, &m, &g, err, sizeof(err)), 0);
    model_free(m);
    gguf_close(g);

    /* architecture, scaling, keys */
    struct mut arch = {.str_key = "general.architecture", .str_val = "gpt2"};
    CHECK_INT(load_mut(&arch, 0, -1, &m, &g, err, sizeof(err)), BT_EUNSUP);
    CHECK(strstr(err, "gpt2") != NULL);
    gguf_close(g);
    struct mut yarn = {.str_key = "llama.rope.scaling.type", .str_val = "yarn"};
    CHECK_INT(load_mut(&yarn, 0, -1, &m, &g, err, sizeof(err)), BT_EUNSUP);
    CHECK(strstr(err, "yarn") != NULL);
    gguf_close(g);
    struct mut nokey = {.drop_key = "llama.embedding_length"};
    CHECK_INT(load_mut(&nokey, 0, -1, &m, &g, err, sizeof(err)), BT_ENOTFOUND);
    CHECK(strstr(err, "llama.embedding_length") != NULL);
    gguf_close(g);
    struct mut heads = {.u32_key = "llama.attention.head_count", .u32_val = 6};
    CHECK_INT(load_mut(&heads, 0, -1, &m, &g, err, sizeof(err)), BT_EFORMAT);
    gguf_close(g);
    struct mut huge = {.u32_key = "llama.block_count", .u32_val = 4000000000u};
    CHECK_INT(load_mut(&huge, 0, -1, &m, &g, err, sizeof(err)), BT_EFORMAT);
    gguf_close(g);
    struct mut eps = {.drop_key = "llama.attention.layer_norm_rms_epsilon"};
    CHECK_INT(load_mut(&eps, 0, -1, &m, &g, err, sizeof(err)), BT_ENOTFOUND);
    gguf_close(g);

    /* linear scaling and a base from the file */
    struct mut lin = {.str_key = "llama.rope.scaling.type",
                      .str_val = "linear",
                      .f32_key = "llama.rope.scaling.factor",
                      .f32_val = 4.0f};
    CHECK_INT(load_mut(&lin, 0, -1, &m, &g, err, sizeof(err)), 0);
    if (m) CHECK_NEAR(m->hp.rope_freq_scale, 0.25, 1e-7);
    model_free(m);
    gguf_close(g);
    struct mut base = {.f32_key = "llama.rope.freq_base", .f32_val = 500000.0f};
    CHECK_INT(load_mut(&base, 0, -1, &m, &g, err, sizeof(err)), 0);
    if (m) CHECK_NEAR(m->hp.rope_freq_base, 500000.0, 0);
    model_free(m);
    gguf_close(g);

    /* llama3 frequency factors; bad ones are refused */
    const float ff[4] = {1.0f, 2.0f, 4.0f, 8.0f};
    struct mut freqs = {.rope_freqs = ff};
    CHECK_INT(load_mut(&freqs, 2, -1, &m, &g, err, sizeof(err)), 0);
    if (m) {
        CHECK(m->rope_freqs != NULL);
        if (m->rope_freqs) CHECK_NEAR(m->rope_freqs[3], 8.0, 0);
    }
    model_free(m);
    gguf_close(g);
    const float ff_bad[4] = {1.0f, 0.0f, 1.0f, 1.0f};
    struct mut freqs_bad = {.rope_freqs = ff_bad};
    CHECK_INT(load_mut(&freqs_bad, 0, -1, &m, &g, err, sizeof(err)), BT_EFORMAT);
    gguf_close(g);

    /* no output.weight: the head is the embedding (tied), on a last stage without it too */
    struct mut tied = {.drop_tensor = "output.weight"};
    CHECK_INT(load_mut(&tied, 3, -1, &m, &g, err, sizeof(err)), 0);
    if (m) {
        CHECK(m->tied && !m->first);
        CHECK(m->output.data == gguf_find_tensor(g, "token_embd.weight")->data);
        CHECK_INT(m->output.rows, 512);
    }
    model_free(m);
    gguf_close(g);
    CHECK_INT(load_mut(&tied, 0, -1, &m, &g, err, sizeof(err)), 0); /* full model, tied */
    if (m) {
        uint64_t all = 0; /* the embedding is mapped once */
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) all += gguf_tensor_at(g, i)->nbytes;
        CHECK(m->tied);
        CHECK_INT(m->n_bytes, all);
        CHECK_INT(m->n_bytes_token, all + 64 * sizeof(float)); /* the head reads it whole */
    }
    model_free(m);
    gguf_close(g);
}

/* x (n_heads, head_dim) rotated by a model with these settings */
static void rope(float *x, int n_heads, int pos, int type, int n_rot, int head_dim, float base,
                 float scale, const float *ff)
{
    struct model m;
    memset(&m, 0, sizeof(m));
    m.hp.rope_type = type;
    m.hp.n_rot = n_rot;
    m.hp.head_dim = head_dim;
    m.hp.rope_freq_base = base;
    m.hp.rope_freq_scale = scale;
    m.rope_freqs = ff;
    model_rope(&m, x, n_heads, pos);
}

static void test_rope(void)
{
    float x[32];
    const double b = 10000.0;
    for (int type = 0; type <= MODEL_ROPE_NEOX; type += MODEL_ROPE_NEOX) {
        const int partner1 = type == MODEL_ROPE_NEOX ? 4 : 1;  /* pair 0: (0, partner1) */
        const int dim_pair1 = type == MODEL_ROPE_NEOX ? 1 : 2; /* first dim of pair 1 */
        for (int pos = 0; pos < 40; pos += 13) {
            /* pair 0 turns by pos radians, pair 1 by pos * base^(-2/n_rot) */
            memset(x, 0, sizeof(x));
            x[0] = 1;
            x[dim_pair1] = 1;
            rope(x, 1, pos, type, 8, 8, (float)b, 1.0f, NULL);
            CHECK_NEAR(x[0], cos(pos), 1e-5);
            CHECK_NEAR(x[partner1], sin(pos), 1e-5);
            const double a1 = pos * pow(b, -2.0 / 8);
            CHECK_NEAR(x[dim_pair1], cos(a1), 1e-5);
            /* second head, same rotation */
            memset(x, 0, sizeof(x));
            x[8] = 1;
            rope(x, 2, pos, type, 8, 8, (float)b, 1.0f, NULL);
            CHECK_NEAR(x[8], cos(pos), 1e-5);
            CHECK_NEAR(x[8 + partner1], sin(pos), 1e-5);
            CHECK_NEAR(x[0], 0, 0);
            /* linear scale and frequency factors divide the angle */
            memset(x, 0, sizeof(x));
            x[0] = 1;
            rope(x, 1, pos, type, 8, 8, (float)b, 0.25f, NULL);
            CHECK_NEAR(x[0], cos(pos * 0.25), 1e-5);
            const float ff[4] = {2.0f, 1.0f, 1.0f, 1.0f};
            memset(x, 0, sizeof(x));
            x[0] = 1;
            rope(x, 1, pos, type, 8, 8, (float)b, 1.0f, ff);
            CHECK_NEAR(x[0], cos(pos / 2.0), 1e-5);
        }
        /* only the first n_rot dims turn; back rotation restores; dot products depend on the
         * distance of positions only */
        float q[16], k[16], y[16];
        for (int i = 0; i < 16; i++) {
            q[i] = sinf(1.0f + i);
            k[i] = cosf(2.0f * i);
        }
        memcpy(y, q, sizeof(y));
        rope(y, 1, 17, type, 8, 16, (float)b, 1.0f, NULL);
        CHECK(memcmp(y + 8, q + 8, 8 * sizeof(float)) == 0);
        CHECK(fabsf(y[0] - q[0]) > 1e-3f);
        rope(y, 1, -17, type, 8, 16, (float)b, 1.0f, NULL);
        float dmax = 0;
        for (int i = 0; i < 16; i++) dmax = fmaxf(dmax, fabsf(y[i] - q[i]));
        CHECK(dmax < 1e-5f);
        float q1[16], k1[16], q2[16], k2[16];
        memcpy(q1, q, sizeof(q));
        memcpy(k1, k, sizeof(k));
        memcpy(q2, q, sizeof(q));
        memcpy(k2, k, sizeof(k));
        rope(q1, 1, 9, type, 16, 16, (float)b, 1.0f, NULL);
        rope(k1, 1, 4, type, 16, 16, (float)b, 1.0f, NULL);
        rope(q2, 1, 25, type, 16, 16, (float)b, 1.0f, NULL);
        rope(k2, 1, 20, type, 16, 16, (float)b, 1.0f, NULL);
        double d1 = 0, d2 = 0;
        for (int i = 0; i < 16; i++) {
            d1 += q1[i] * k1[i];
            d2 += q2[i] * k2[i];
        }
        CHECK_NEAR(d1, d2, 1e-4);
    }
}

int main(void)
{
    char err[256];
    if (gguf_open(t_path("BATON_SHARED", "models/stories260K.gguf"), &G, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    snprintf(TMP, sizeof(TMP), "%s/baton-model-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(TMP)) return 1;
    test_hparams_and_views();
    test_errors();
    test_rope();
    rmdir(TMP);
    gguf_close(G);
    return t_done();
}
