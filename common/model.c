#include "model.h"

#include "gguf.h"
#include "log.h"
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- hyperparameter keys ---- */

struct hp_key {
    const char *suffix; /* after "{arch}." */
    size_t off;         /* int field in struct model_hparams */
    bool required;
    int max; /* values above this are refused (hostile file; keeps products in range) */
};

#define HP(f) offsetof(struct model_hparams, f)
static const struct hp_key hp_keys[] = {
    {"context_length", HP(n_ctx_train), true, 1 << 24},
    {"embedding_length", HP(n_embd), true, 1 << 16},
    {"block_count", HP(n_layer), true, 4096},
    {"feed_forward_length", HP(n_ff), true, 1 << 20},
    {"attention.head_count", HP(n_head), true, 1024},
    {"attention.head_count_kv", HP(n_head_kv), false, 1024},
    {"attention.key_length", HP(head_dim), false, 4096},
    {"rope.dimension_count", HP(n_rot), false, MODEL_MAX_ROT},
};
#undef HP

static const struct {
    const char *name;
    int arch;
    int rope_type;
    bool qkv_bias; /* q/k/v biases required */
} arch_table[] = {
    {"llama", MODEL_ARCH_LLAMA, MODEL_ROPE_NORM, false},
    {"qwen2", MODEL_ARCH_QWEN2, MODEL_ROPE_NEOX, true},
};

const char *model_arch_name(int arch)
{
    for (size_t i = 0; i < sizeof(arch_table) / sizeof(arch_table[0]); i++)
        if (arch_table[i].arch == arch) return arch_table[i].name;
    return "unknown";
}

static int key_u32(const struct gguf *g, const char *arch, const char *suffix, uint32_t *out,
                   bool required, char *err, size_t errsz)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    int rc = gguf_get_u32(g, key, out);
    if (rc == BT_ENOTFOUND && !required) return 1; /* absent: caller keeps its default */
    if (rc == BT_ENOTFOUND) return bt_errf(err, errsz, rc, "%s: missing key %s", gguf_path(g), key);
    if (rc < 0)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: key %s is not a 32-bit unsigned integer",
                       gguf_path(g), key);
    return 0;
}

static int key_f32(const struct gguf *g, const char *arch, const char *suffix, float *out,
                   char *err, size_t errsz)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    int rc = gguf_get_f32(g, key, out);
    if (rc == BT_ENOTFOUND) return 1;
    if (rc < 0)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: key %s is not a float", gguf_path(g), key);
    if (!isfinite(*out))
        return bt_errf(err, errsz, BT_EFORMAT, "%s: key %s is not finite", gguf_path(g), key);
    return 0;
}

int model_hparams_read(const struct gguf *g, struct model_hparams *hp, char *err, size_t errsz)
{
    struct gguf_str s;
    char arch[32];
    int rc, ai = -1;

    memset(hp, 0, sizeof(*hp));
    if (gguf_get_str(g, "general.architecture", &s) < 0)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: missing general.architecture", gguf_path(g));
    for (size_t i = 0; i < sizeof(arch_table) / sizeof(arch_table[0]); i++)
        if (s.len == strlen(arch_table[i].name) && !memcmp(s.data, arch_table[i].name, s.len))
            ai = (int)i;
    if (ai < 0)
        return bt_errf(err, errsz, BT_EUNSUP,
                       "%s: architecture '%.*s' is not supported (llama, qwen2 are)", gguf_path(g),
                       (int)(s.len > 64 ? 64 : s.len), s.data);
    snprintf(arch, sizeof(arch), "%s", arch_table[ai].name);
    hp->arch = arch_table[ai].arch;
    hp->rope_type = arch_table[ai].rope_type;

    for (size_t i = 0; i < sizeof(hp_keys) / sizeof(hp_keys[0]); i++) {
        const struct hp_key *k = &hp_keys[i];
        uint32_t v;
        rc = key_u32(g, arch, k->suffix, &v, k->required, err, errsz);
        if (rc < 0) return rc;
        if (rc == 1) continue;
        if (v == 0 || v > (uint32_t)k->max)
            return bt_errf(err, errsz, BT_EFORMAT, "%s: %s.%s = %u is out of range (1..%d)",
                           gguf_path(g), arch, k->suffix, v, k->max);
        *(int *)((char *)hp + k->off) = (int)v;
    }
    if (!hp->n_head_kv) hp->n_head_kv = hp->n_head;
    if (!hp->head_dim) {
        if (hp->n_embd % hp->n_head)
            return bt_errf(err, errsz, BT_EFORMAT,
                           "%s: embedding_length %d is not a multiple of head_count %d",
                           gguf_path(g), hp->n_embd, hp->n_head);
        hp->head_dim = hp->n_embd / hp->n_head;
    }
    if (!hp->n_rot) hp->n_rot = hp->head_dim;
    if (hp->n_head % hp->n_head_kv)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%s: head_count %d is not a multiple of head_count_kv %d", gguf_path(g),
                       hp->n_head, hp->n_head_kv);
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%s: rope.dimension_count %d must be even and at most the head size %d",
                       gguf_path(g), hp->n_rot, hp->head_dim);
    uint32_t vlen;
    rc = key_u32(g, arch, "attention.value_length", &vlen, false, err, errsz);
    if (rc < 0) return rc;
    if (rc == 0 && (int)vlen != hp->head_dim)
        return bt_errf(err, errsz, BT_EUNSUP,
                       "%s: value head size %u differs from key head size %d", gguf_path(g), vlen,
                       hp->head_dim);
    uint32_t n_expert = 0;
    rc = key_u32(g, arch, "expert_count", &n_expert, false, err, errsz);
    if (rc < 0) return rc;
    if (n_expert > 0)
        return bt_errf(err, errsz, BT_EUNSUP,
                       "%s: mixture-of-experts models (%s.expert_count = %u) are not supported",
                       gguf_path(g), arch, n_expert);

    hp->norm_eps = 1e-5f;
    rc = key_f32(g, arch, "attention.layer_norm_rms_epsilon", &hp->norm_eps, err, errsz);
    if (rc == 1)
        return bt_errf(err, errsz, BT_ENOTFOUND,
                       "%s: missing key %s.attention.layer_norm_rms_epsilon", gguf_path(g), arch);
    if (rc < 0) return rc;
    if (hp->norm_eps < 0 || hp->norm_eps > 1)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: rms epsilon %g is out of range", gguf_path(g),
                       (double)hp->norm_eps);

    hp->rope_freq_base = 10000.0f;
    if ((rc = key_f32(g, arch, "rope.freq_base", &hp->rope_freq_base, err, errsz)) < 0) return rc;
    if (hp->rope_freq_base <= 1.0f)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: rope.freq_base %g is out of range",
                       gguf_path(g), (double)hp->rope_freq_base);

    /* Scaling: like llama.cpp, the factor (rope.scaling.factor, else the older
     * rope.scale_linear) divides the frequencies; only "none" and "linear" are implemented. */
    char key[128];
    snprintf(key, sizeof(key), "%s.rope.scaling.type", arch);
    if (gguf_get_str(g, key, &s) == 0 && !(s.len == 4 && !memcmp(s.data, "none", 4)) &&
        !(s.len == 6 && !memcmp(s.data, "linear", 6)))
        return bt_errf(err, errsz, BT_EUNSUP,
                       "%s: rope scaling '%.*s' is not supported (none, linear are)", gguf_path(g),
                       (int)(s.len > 32 ? 32 : s.len), s.data);
    float factor = 0;
    rc = key_f32(g, arch, "rope.scaling.factor", &factor, err, errsz);
    if (rc == 1) rc = key_f32(g, arch, "rope.scale_linear", &factor, err, errsz);
    if (rc < 0) return rc;
    if (factor < 0 || (factor > 0 && factor < 1e-3f))
        return bt_errf(err, errsz, BT_EFORMAT, "%s: rope scaling factor %g is out of range",
                       gguf_path(g), (double)factor);
    hp->rope_freq_scale = factor > 0 ? 1.0f / factor : 1.0f;

    /* Vocabulary size: the tokenizer's token list, else {arch}.vocab_size. */
    uint32_t et;
    uint64_t n;
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) == 0) {
        if (n == 0 || n > (1u << 24))
            return bt_errf(err, errsz, BT_EFORMAT, "%s: tokenizer.ggml.tokens has %llu entries",
                           gguf_path(g), (unsigned long long)n);
        hp->n_vocab = (int)n;
    } else {
        uint32_t v;
        rc = key_u32(g, arch, "vocab_size", &v, true, err, errsz);
        if (rc < 0) return rc;
        if (v == 0 || v > (1u << 24))
            return bt_errf(err, errsz, BT_EFORMAT, "%s: vocab_size %u is out of range",
                           gguf_path(g), v);
        hp->n_vocab = (int)v;
    }
    return 0;
}

/* ---- tensors ---- */

/* Shape symbols of the tensor tables. */
enum dim { D_ONE, D_EMBD, D_Q, D_KV, D_FF, D_VOCAB, D_ROT2 };

static int64_t dim_value(const struct model_hparams *hp, int d)
{
    switch (d) {
    case D_EMBD:
        return hp->n_embd;
    case D_Q:
        return (int64_t)hp->n_head * hp->head_dim;
    case D_KV:
        return (int64_t)hp->n_head_kv * hp->head_dim;
    case D_FF:
        return hp->n_ff;
    case D_VOCAB:
        return hp->n_vocab;
    case D_ROT2:
        return hp->n_rot / 2;
    default:
        return 1;
    }
}

enum { T_F32 = 1, T_OPTIONAL = 2, T_QKV_BIAS = 4 /* required when the arch has q/k/v bias */ };

struct tensor_spec {
    const char *name; /* after "blk.N." for layer tensors */
    size_t off;       /* struct model_tensor field */
    int rows, cols;   /* enum dim */
    int flags;
};

#define LT(f) offsetof(struct model_layer, f)
static const struct tensor_spec layer_specs[] = {
    {"attn_norm.weight", LT(attn_norm), D_ONE, D_EMBD, T_F32},
    {"attn_q.weight", LT(wq), D_Q, D_EMBD, 0},
    {"attn_k.weight", LT(wk), D_KV, D_EMBD, 0},
    {"attn_v.weight", LT(wv), D_KV, D_EMBD, 0},
    {"attn_output.weight", LT(wo), D_EMBD, D_Q, 0},
    {"attn_q.bias", LT(bq), D_ONE, D_Q, T_F32 | T_OPTIONAL | T_QKV_BIAS},
    {"attn_k.bias", LT(bk), D_ONE, D_KV, T_F32 | T_OPTIONAL | T_QKV_BIAS},
    {"attn_v.bias", LT(bv), D_ONE, D_KV, T_F32 | T_OPTIONAL | T_QKV_BIAS},
    {"attn_output.bias", LT(bo), D_ONE, D_EMBD, T_F32 | T_OPTIONAL},
    {"ffn_norm.weight", LT(ffn_norm), D_ONE, D_EMBD, T_F32},
    {"ffn_gate.weight", LT(w_gate), D_FF, D_EMBD, 0},
    {"ffn_up.weight", LT(w_up), D_FF, D_EMBD, 0},
    {"ffn_down.weight", LT(w_down), D_EMBD, D_FF, 0},
};
#undef LT

#define MT(f) offsetof(struct model, f)
static const struct tensor_spec global_specs[] = {
    {"token_embd.weight", MT(tok_embd), D_VOCAB, D_EMBD, 0},
    {"output_norm.weight", MT(out_norm), D_ONE, D_EMBD, T_F32},
    {"output.weight", MT(output), D_VOCAB, D_EMBD, T_OPTIONAL},
    {"rope_freqs.weight", 0, D_ONE, D_ROT2, T_F32 | T_OPTIONAL},
};
#undef MT
enum { G_TOK_EMBD, G_OUT_NORM, G_OUTPUT, G_ROPE_FREQS, G_COUNT };

/* Weight types the kernels handle. */
static bool weight_type_ok(uint32_t t)
{
    switch (t) {
    case BT_F32:
    case BT_F16:
    case BT_BF16:
    case BT_Q8_0:
    case BT_Q4_0:
    case BT_Q4_1:
    case BT_Q5_0:
    case BT_Q5_1:
    case BT_Q4_K:
    case BT_Q5_K:
    case BT_Q6_K:
        return true;
    default:
        return false;
    }
}

/* Find `name` and check it against spec; fills *t (data NULL if optional and absent). */
static int tensor_view(const struct gguf *g, const struct model_hparams *hp, const char *name,
                       const struct tensor_spec *spec, bool required, struct model_tensor *t,
                       char *err, size_t errsz)
{
    const struct gguf_tensor *gt = gguf_find_tensor(g, name);
    int64_t rows = dim_value(hp, spec->rows), cols = dim_value(hp, spec->cols);

    memset(t, 0, sizeof(*t));
    if (!gt) {
        if (!required) return 0;
        return bt_errf(err, errsz, BT_ENOTFOUND, "%s: missing tensor '%s'", gguf_path(g), name);
    }
    if (gt->ne[0] != cols || gt->ne[1] != rows || gt->ne[2] != 1 || gt->ne[3] != 1)
        return bt_errf(err, errsz, BT_EFORMAT,
                       "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]",
                       gguf_path(g), name, (long long)gt->ne[0], (long long)gt->ne[1],
                       (long long)gt->ne[2], (long long)gt->ne[3], (long long)cols,
                       (long long)rows);
    if ((spec->flags & T_F32) ? gt->type != BT_F32 : !weight_type_ok(gt->type))
        return bt_errf(err, errsz, BT_EUNSUP,
                       "%s: tensor '%s' has type %s, which is not supported here%s", gguf_path(g),
                       name, bt_type_name(gt->type),
                       (spec->flags & T_F32) ? " (f32 expected)" : "");
    size_t rs = bt_row_size(gt->type, cols);
    if (rs == 0 || gt->nbytes != rs * (uint64_t)rows || !gt->data)
        return bt_errf(err, errsz, BT_EFORMAT, "%s: tensor '%s' holds %llu bytes, expected %llu",
                       gguf_path(g), name, (unsigned long long)gt->nbytes,
                       (unsigned long long)(rs * (uint64_t)rows));
    t->data = gt->data;
    t->type = gt->type;
    t->rows = rows;
    t->cols = cols;
    return 0;
}

static uint64_t tensor_bytes(const struct model_tensor *t)
{
    return t->data ? bt_row_size(t->type, t->cols) * (uint64_t)t->rows : 0;
}

/* "blk.N.rest" -> N and rest; -1 if name is not a block tensor. */
static int block_of(const char *name, const char **rest)
{
    if (strncmp(name, "blk.", 4) != 0) return -1;
    const char *p = name + 4;
    long v = 0;
    if (*p < '0' || *p > '9') return -1;
    while (*p >= '0' && *p <= '9' && v < 100000) v = v * 10 + (*p++ - '0');
    if (*p != '.') return -1;
    *rest = p + 1;
    return (int)v;
}

uint64_t model_layer_bytes(const struct gguf *g, int layer)
{
    uint64_t sum = 0;
    const char *rest;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        if (block_of(t->name, &rest) == layer) sum += t->nbytes;
    }
    return sum;
}

/* Every tensor the stage owns must be one we know: an unknown one means a model variant whose
 * forward pass we would compute wrongly (as llama.cpp, refuse rather than ignore it). */
static int check_unknown(const struct gguf *g, int l0, int l1, char *err, size_t errsz)
{
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        const char *rest = NULL;
        bool known = false;
        int b = block_of(t->name, &rest);
        if (b >= 0) {
            if (b < l0 || b >= l1) continue;
            for (size_t k = 0; k < sizeof(layer_specs) / sizeof(layer_specs[0]); k++)
                if (!strcmp(rest, layer_specs[k].name)) known = true;
        } else {
            for (size_t k = 0; k < G_COUNT; k++)
                if (!strcmp(t->name, global_specs[k].name)) known = true;
        }
        if (!known)
            return bt_errf(err, errsz, BT_EUNSUP,
                           "%s: unknown tensor '%s' (unsupported model variant)", gguf_path(g),
                           t->name);
    }
    return 0;
}

int model_load(const struct gguf *g, int l0, int l1, struct model **out, char *err, size_t errsz)
{
    struct model *m = NULL;
    struct model_tensor rf;
    char name[96];
    int rc;

    *out = NULL;
    m = calloc(1, sizeof(*m));
    if (!m) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    m->g = g;
    if ((rc = model_hparams_read(g, &m->hp, err, errsz)) < 0) goto fail;
    const struct model_hparams *hp = &m->hp;
    if (l1 < 0) l1 = hp->n_layer;
    if (l0 < 0 || l0 >= l1 || l1 > hp->n_layer) {
        rc = bt_errf(err, errsz, BT_EINVAL, "%s: bad layer range [%d, %d) of %d layers",
                     gguf_path(g), l0, l1, hp->n_layer);
        goto fail;
    }
    m->l0 = l0;
    m->l1 = l1;
    m->first = l0 == 0;
    m->last = l1 == hp->n_layer;
    if ((rc = check_unknown(g, l0, l1, err, errsz)) < 0) goto fail;

    bool qkv_bias = false;
    for (size_t i = 0; i < sizeof(arch_table) / sizeof(arch_table[0]); i++)
        if (arch_table[i].arch == hp->arch) qkv_bias = arch_table[i].qkv_bias;

    m->layers = calloc((size_t)(l1 - l0), sizeof(*m->layers));
    if (!m->layers) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "out of memory");
        goto fail;
    }
    for (int l = l0; l < l1; l++) {
        struct model_layer *L = &m->layers[l - l0];
        for (size_t k = 0; k < sizeof(layer_specs) / sizeof(layer_specs[0]); k++) {
            const struct tensor_spec *s = &layer_specs[k];
            bool required = !(s->flags & T_OPTIONAL) || (qkv_bias && (s->flags & T_QKV_BIAS));
            struct model_tensor *t = (struct model_tensor *)((char *)L + s->off);
            snprintf(name, sizeof(name), "blk.%d.%s", l, s->name);
            if ((rc = tensor_view(g, hp, name, s, required, t, err, errsz)) < 0) goto fail;
            m->n_bytes += tensor_bytes(t);
        }
    }
    m->n_bytes_token = m->n_bytes;

    if ((rc = tensor_view(g, hp, global_specs[G_ROPE_FREQS].name, &global_specs[G_ROPE_FREQS],
                          false, &rf, err, errsz)) < 0)
        goto fail;
    m->rope_freqs = rf.data;
    if (m->rope_freqs) {
        for (int i = 0; i < hp->n_rot / 2; i++) {
            if (!(m->rope_freqs[i] > 0) || !isfinite(m->rope_freqs[i])) {
                rc = bt_errf(err, errsz, BT_EFORMAT,
                             "%s: rope_freqs.weight[%d] = %g is not positive", gguf_path(g), i,
                             (double)m->rope_freqs[i]);
                goto fail;
            }
        }
    }

    if (m->first) {
        const struct tensor_spec *s = &global_specs[G_TOK_EMBD];
        if ((rc = tensor_view(g, hp, s->name, s, true, &m->tok_embd, err, errsz)) < 0) goto fail;
        m->n_bytes += tensor_bytes(&m->tok_embd);
        m->n_bytes_token += bt_row_size(m->tok_embd.type, m->tok_embd.cols);
    }
    if (m->last) {
        const struct tensor_spec *s = &global_specs[G_OUT_NORM];
        if ((rc = tensor_view(g, hp, s->name, s, true, &m->out_norm, err, errsz)) < 0) goto fail;
        s = &global_specs[G_OUTPUT];
        if ((rc = tensor_view(g, hp, s->name, s, false, &m->output, err, errsz)) < 0) goto fail;
        if (!m->output.data) {
            s = &global_specs[G_TOK_EMBD];
            rc = tensor_view(g, hp, s->name, s, true, &m->output, err, errsz);
            if (rc == BT_ENOTFOUND)
                bt_errf(err, errsz, rc,
                        "%s: no output.weight, nor a token_embd.weight to tie it to", gguf_path(g));
            if (rc < 0) goto fail;
            m->tied = true;
        }
        m->n_bytes += tensor_bytes(&m->out_norm);
        if (!(m->tied && m->first)) m->n_bytes += tensor_bytes(&m->output);
        m->n_bytes_token += tensor_bytes(&m->out_norm) + tensor_bytes(&m->output);
    }
    *out = m;
    return 0;
fail:
    model_free(m);
    return rc;
}

void model_free(struct model *m)
{
    if (!m) return;
    free(m->layers);
    free(m);
}

static void advise(const struct model_tensor *t)
{
    uint64_t n = tensor_bytes(t);
    if (!n) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)t->data & ~(page - 1);
    uintptr_t e = (uintptr_t)t->data + n;
    (void)madvise((void *)a, e - a, MADV_WILLNEED);
}

void model_prefetch(const struct model *m)
{
    if (m->first) advise(&m->tok_embd);
    if (m->last) {
        advise(&m->out_norm);
        advise(&m->output);
    }
    for (int l = 0; l < m->l1 - m->l0; l++) {
        const struct model_layer *L = &m->layers[l];
        const struct model_tensor *ts[] = {&L->attn_norm, &L->wq,   &L->wk,    &L->wv, &L->wo,
                                           &L->bq,        &L->bk,   &L->bv,    &L->bo, &L->ffn_norm,
                                           &L->w_gate,    &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) advise(ts[i]);
    }
}

/* ---- RoPE ---- */

/* cos/sin of each rotated pair at position pos, as ggml computes them: theta starts at pos and is
 * multiplied by base^(-2/n_rot) per pair, divided by the pair's frequency factor and scaled.
 * cs (n_rot): cs[2i] = cos, cs[2i+1] = sin of pair i. */
void model_rope_cos_sin(const struct model *m, int pos, float *cs)
{
    const struct model_hparams *hp = &m->hp;
    const float theta_scale = powf(hp->rope_freq_base, -2.0f / (float)hp->n_rot);
    float theta = (float)pos;
    for (int i = 0; i < hp->n_rot / 2; i++) {
        float ff = m->rope_freqs ? m->rope_freqs[i] : 1.0f;
        float t = hp->rope_freq_scale * (theta / ff);
        cs[2 * i] = cosf(t);
        cs[2 * i + 1] = sinf(t);
        theta *= theta_scale;
    }
}

void model_rope(const struct model *m, float *x, int n_heads, int pos)
{
    float cs[MODEL_MAX_ROT];
    const int n_rot = m->hp.n_rot, hd = m->hp.head_dim, half = n_rot / 2;
    model_rope_cos_sin(m, pos, cs);
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * hd;
        if (m->hp.rope_type == MODEL_ROPE_NEOX) {
            for (int i = 0; i < half; i++) {
                float c = cs[2 * i], s = cs[2 * i + 1], x0 = v[i], x1 = v[i + half];
                v[i] = x0 * c - x1 * s;
                v[i + half] = x0 * s + x1 * c;
            }
        } else {
            for (int i = 0; i < half; i++) {
                float c = cs[2 * i], s = cs[2 * i + 1], x0 = v[2 * i], x1 = v[2 * i + 1];
                v[2 * i] = x0 * c - x1 * s;
                v[2 * i + 1] = x0 * s + x1 * c;
            }
        }
    }
}
