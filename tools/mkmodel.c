/* baton-mkmodel: write a complete llama- or qwen2-architecture GGUF with seeded random weights,
 * for tests and benchmarks. See usage() for the options.
 *
 * The weights are a pure function of (seed, tensor name, row): every row has its own random
 * stream, so the output is byte-identical for the same arguments whatever the thread count, and
 * the same seed gives the same underlying values at every --type (a q4_0 model is the f32 model
 * quantised). Tensors are generated, quantised and written a chunk of rows at a time, so memory
 * stays small even for llama-7b. The tokenizer.* keys are copied from a vocabulary GGUF.
 *
 * Tensor types follow what llama-quantize produces for the chosen type (output.weight Q6_K for
 * the 2..6-bit types, Q3_K for attn_v/attn_output/ffn_down in a Q2_K file (Q4_K for attn_v
 * with GQA >= 4), the Q4_K_M / Q5_K_M rule for attn_v and ffn_down, llama.cpp's fallbacks when a
 * row length is not a multiple of the block size); 1-D norm weights and biases are F32.
 * tools/oracle/check_mkmodel.py checks that llama-quantize, given the f32 model of the same seed,
 * writes the same types and bytes.
 *
 * The file is written to OUT.tmp and renamed to OUT when complete. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_write.h"
#include "log.h"
#include "quant.h"
#include "threadpool.h"

#define MAX_LAYERS    1024
#define CHUNK_ELEMS   (1 << 20) /* floats generated per chunk (per write) */
#define DEFAULT_VOCAB "models/vocab/ggml-vocab-llama-spm.gguf"

struct hparams {
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
    float rope_base, rms_eps;
};

static const struct preset {
    const char *name;
    struct hparams hp;
} presets[] = {
    {"tiny", {64, 2, 4, 2, 192, 256, 10000.0f, 1e-5f}},
    {"tinyllama-1.1b", {2048, 22, 32, 4, 5632, 2048, 10000.0f, 1e-5f}},
    {"llama-7b", {4096, 32, 32, 32, 11008, 4096, 10000.0f, 1e-5f}},
};

/* llama_ftype (general.file_type) written for each --type: the K types are written as the
 * llama-quantize mix of the same name (Q4_K_M, Q5_K_M, Q3_K_S). */
static const struct wtype {
    uint32_t type;
    uint32_t ftype;
} weight_types[] = {
    {BT_F32, 0},   {BT_F16, 1},   {BT_BF16, 32}, {BT_Q4_0, 2},  {BT_Q4_1, 3},
    {BT_Q5_0, 8},  {BT_Q5_1, 9},  {BT_Q8_0, 7},  {BT_Q2_K, 10}, {BT_Q3_K, 11},
    {BT_Q4_K, 15}, {BT_Q5_K, 17}, {BT_Q6_K, 18},
};

enum arch { ARCH_LLAMA, ARCH_QWEN2 };
static const char *const arch_names[] = {"llama", "qwen2"};

/* How a tensor's values are drawn. */
enum init {
    INIT_NORM, /* 1 + 0.05 z */
    INIT_PROJ, /* z / sqrt(fan_in) */
    INIT_EMBD, /* z */
    INIT_OUT,  /* 4 z / sqrt(n_embd): logits with a std of about 4 */
    INIT_BIAS, /* 0.1 z */
};

struct tplan {
    char name[64];
    uint32_t type;
    uint32_t n_dims;
    int64_t ne[2]; /* ne[0] = row length (input dim), ne[1] = rows */
    enum init init;
    float scale;
};

struct opts {
    const char *preset;
    struct hparams hp;
    enum arch arch;
    bool tied;
    uint32_t type;
    const char *vocab;
    const char *out;
    const char *name;
    uint64_t seed;
    int threads;
    bool quiet;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: baton-mkmodel [options] -o OUT.gguf\n"
            "Write a llama/qwen2 GGUF with seeded random weights (deterministic for a seed).\n"
            "\n"
            "  -o, --out FILE        output file (written as FILE.tmp, then renamed)\n"
            "  -p, --preset NAME     tiny (default) | tinyllama-1.1b | llama-7b\n"
            "  -t, --type TYPE       tensor type of the weight matrices (default f16): f32 f16\n"
            "                        bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_K q3_K q4_K q5_K q6_K\n"
            "                        (mixes as llama-quantize makes them; norms stay f32)\n"
            "      --arch ARCH       llama (default) | qwen2 (adds q/k/v biases)\n"
            "      --tied            no output.weight (the embedding is reused)\n"
            "      --vocab FILE      GGUF whose tokenizer.* keys are copied (a vocab-only file or\n"
            "                        a model); default $BATON_SHARED/" DEFAULT_VOCAB "\n"
            "                        or ../shared/" DEFAULT_VOCAB "\n"
            "  -s, --seed N          random seed (default 1)\n"
            "      --n-embd N --n-layer N --n-head N --n-head-kv N --n-ff N --ctx N\n"
            "      --rope-base F --rms-eps F\n"
            "                        override the preset's hyperparameters\n"
            "      --name TEXT       general.name (default: describes the model)\n"
            "  -j, --threads N       generator threads (default: online CPUs)\n"
            "  -q, --quiet           no per-tensor progress\n"
            "  -h, --help            this text\n"
            "\n"
            "presets:  tiny            n_embd 64, 2 layers, 4 heads (2 kv), n_ff 192, ctx 256\n"
            "          tinyllama-1.1b  2048, 22 layers, 32 heads (4 kv), n_ff 5632, ctx 2048\n"
            "          llama-7b        4096, 32 layers, 32 heads (32 kv), n_ff 11008, ctx 4096\n");
}

/* ------------------------------------------------------------------ random numbers */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* Approximately standard normal: the sum of four 16-bit uniforms (Irwin-Hall), scaled to unit
 * variance; |z| < 3.5. One splitmix64 step per value. */
static inline float next_normal(uint64_t *state)
{
    uint64_t r = mix64(*state += 0x9e3779b97f4a7c15ull);
    uint32_t s = (uint32_t)(r & 0xffff) + (uint32_t)((r >> 16) & 0xffff) +
                 (uint32_t)((r >> 32) & 0xffff) + (uint32_t)(r >> 48);
    /* mean 4 * 32767.5, variance 4 * (65536^2 - 1) / 12 */
    return (float)(((double)s - 131070.0) * (1.0 / 37837.23));
}

static void fill_row(const struct tplan *t, uint64_t tseed, int64_t row, float *x)
{
    uint64_t st = mix64(tseed + (uint64_t)row * 0xd1b54a32d192ed03ull);
    const int64_t n = t->ne[0];
    if (t->init == INIT_NORM) {
        for (int64_t i = 0; i < n; i++) x[i] = 1.0f + t->scale * next_normal(&st);
    } else {
        for (int64_t i = 0; i < n; i++) x[i] = t->scale * next_normal(&st);
    }
}

/* ------------------------------------------------------------------ tensor types */

/* llama.cpp's use_more_bits: the first and last eighth of the layers and every third between */
static bool use_more_bits(uint32_t i, uint32_t n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* The type llama-quantize falls back to when a row is not a multiple of 256 (IQ4_NL for
 * q2_K/q3_K there, which baton cannot write: q4_0 here). */
static uint32_t k_fallback(uint32_t t)
{
    switch (t) {
    case BT_Q2_K:
    case BT_Q3_K:
        return BT_Q4_0;
    case BT_Q4_K:
        return BT_Q5_0;
    case BT_Q5_K:
        return BT_Q5_1;
    case BT_Q6_K:
        return BT_Q8_0;
    default:
        return t;
    }
}

static uint32_t fit_type(uint32_t want, int64_t ne0, const char *name, bool quiet)
{
    uint32_t t = want;
    if (ne0 % bt_type_get(t)->blck_size) t = k_fallback(t);
    if (ne0 % bt_type_get(t)->blck_size) t = BT_F16;
    if (t != want && !quiet)
        fprintf(stderr,
                "baton-mkmodel: %s: row length %" PRId64 " is not a multiple of the %s block "
                "size %d, using %s\n",
                name, ne0, bt_type_name(want), bt_type_get(want)->blck_size, bt_type_name(t));
    return t;
}

/* The weight-matrix type for a tensor role, as llama-quantize chooses it. */
static uint32_t role_type(const struct opts *o, const char *role, uint32_t layer)
{
    const uint32_t base = o->type;
    const bool plain = base == BT_F32 || base == BT_F16 || base == BT_BF16 || base == BT_Q8_0;
    if (!strcmp(role, "output") || (o->tied && !strcmp(role, "token_embd")))
        return plain ? base : BT_Q6_K;
    if (base == BT_Q2_K && !strcmp(role, "attn_v"))
        return o->hp.n_head / o->hp.n_head_kv >= 4 ? BT_Q4_K : BT_Q3_K;
    if (base == BT_Q2_K && (!strcmp(role, "attn_output") || !strcmp(role, "ffn_down")))
        return BT_Q3_K;
    if ((base == BT_Q4_K || base == BT_Q5_K) &&
        (!strcmp(role, "attn_v") || !strcmp(role, "ffn_down")) &&
        use_more_bits(layer, o->hp.n_layer))
        return BT_Q6_K;
    return base;
}

/* ------------------------------------------------------------------ plan */

static int plan_add(struct tplan *p, int *n, const struct opts *o, const char *name,
                    const char *role, uint32_t layer, int64_t ne0, int64_t ne1, enum init init)
{
    struct tplan *t = &p[(*n)++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->n_dims = ne1 > 0 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 > 0 ? ne1 : 1;
    t->init = init;
    switch (init) {
    case INIT_NORM:
        t->scale = 0.05f;
        break;
    case INIT_PROJ:
        t->scale = (float)(1.0 / sqrt((double)ne0));
        break;
    case INIT_EMBD:
        t->scale = o->tied ? (float)(4.0 / sqrt((double)ne0)) : 1.0f;
        break;
    case INIT_OUT:
        t->scale = (float)(4.0 / sqrt((double)ne0));
        break;
    case INIT_BIAS:
        t->scale = 0.1f;
        break;
    }
    t->type = t->n_dims == 1 ? BT_F32 : fit_type(role_type(o, role, layer), ne0, name, o->quiet);
    return 0;
}

/* Returns the number of tensors written to p (room for 3 + 12 * n_layer). */
static int make_plan(const struct opts *o, int64_t n_vocab, struct tplan *p)
{
    const struct hparams *hp = &o->hp;
    const int64_t E = hp->n_embd, F = hp->n_ff;
    const int64_t EKV = (int64_t)hp->n_embd / hp->n_head * hp->n_head_kv;
    char nm[64];
    int n = 0;
    plan_add(p, &n, o, "token_embd.weight", "token_embd", 0, E, n_vocab, INIT_EMBD);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
#define BLK(suffix, role, ne0, ne1, init)                                                          \
    do {                                                                                           \
        snprintf(nm, sizeof(nm), "blk.%u.%s", l, suffix);                                          \
        plan_add(p, &n, o, nm, role, l, ne0, ne1, init);                                           \
    } while (0)
        BLK("attn_norm.weight", "attn_norm", E, 0, INIT_NORM);
        BLK("attn_q.weight", "attn_q", E, E, INIT_PROJ);
        BLK("attn_k.weight", "attn_k", E, EKV, INIT_PROJ);
        BLK("attn_v.weight", "attn_v", E, EKV, INIT_PROJ);
        if (o->arch == ARCH_QWEN2) {
            BLK("attn_q.bias", "attn_q", E, 0, INIT_BIAS);
            BLK("attn_k.bias", "attn_k", EKV, 0, INIT_BIAS);
            BLK("attn_v.bias", "attn_v", EKV, 0, INIT_BIAS);
        }
        BLK("attn_output.weight", "attn_output", E, E, INIT_PROJ);
        BLK("ffn_norm.weight", "ffn_norm", E, 0, INIT_NORM);
        BLK("ffn_gate.weight", "ffn_gate", E, F, INIT_PROJ);
        BLK("ffn_up.weight", "ffn_up", E, F, INIT_PROJ);
        BLK("ffn_down.weight", "ffn_down", F, E, INIT_PROJ);
#undef BLK
    }
    plan_add(p, &n, o, "output_norm.weight", "output_norm", 0, E, 0, INIT_NORM);
    if (!o->tied) plan_add(p, &n, o, "output.weight", "output", 0, E, n_vocab, INIT_OUT);
    return n;
}

/* ------------------------------------------------------------------ generation */

struct gen_job {
    const struct tplan *t;
    uint64_t tseed;
    int64_t row0, nrows;
    size_t row_bytes;
    float *scratch; /* one row per thread */
    uint8_t *out;
};

static void gen_rows(void *ctx, int ith, int nth)
{
    struct gen_job *j = ctx;
    const int64_t a = j->nrows * ith / nth, b = j->nrows * (ith + 1) / nth;
    float *x = j->scratch + (size_t)ith * (size_t)j->t->ne[0];
    for (int64_t r = a; r < b; r++) {
        fill_row(j->t, j->tseed, j->row0 + r, x);
        /* cannot fail: the type and row length were checked when the tensor was planned */
        bt_quantize_row(j->t->type, x, j->out + (size_t)r * j->row_bytes, j->t->ne[0]);
    }
}

/* ------------------------------------------------------------------ options */

static int parse_u32(const char *opt, const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi) {
        fprintf(stderr, "baton-mkmodel: %s: '%s' is not an integer in [%u, %u]\n", opt, s, lo, hi);
        return BT_EINVAL;
    }
    *out = (uint32_t)v;
    return 0;
}

static int parse_f32(const char *opt, const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !(v > 0) || !isfinite(v)) {
        fprintf(stderr, "baton-mkmodel: %s: '%s' is not a positive number\n", opt, s);
        return BT_EINVAL;
    }
    *out = v;
    return 0;
}

/* --seed: any non-negative integer strtoull reads (0x... too). */
static int parse_seed(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-') {
        fprintf(stderr, "baton-mkmodel: --seed: '%s' is not a non-negative integer\n", s);
        return BT_EINVAL;
    }
    *out = v;
    return 0;
}

static int parse_arch(const char *s, enum arch *out)
{
    if (!strcmp(s, "llama")) {
        *out = ARCH_LLAMA;
    } else if (!strcmp(s, "qwen2")) {
        *out = ARCH_QWEN2;
    } else {
        fprintf(stderr, "baton-mkmodel: --arch: '%s' is not llama or qwen2\n", s);
        return BT_EINVAL;
    }
    return 0;
}

enum {
    OPT_ARCH = 256,
    OPT_TIED,
    OPT_VOCAB,
    OPT_NAME,
    OPT_N_EMBD,
    OPT_N_LAYER,
    OPT_N_HEAD,
    OPT_N_HEAD_KV,
    OPT_N_FF,
    OPT_CTX,
    OPT_ROPE_BASE,
    OPT_RMS_EPS,
};

/* The integer hyperparameter overrides: option, its name in messages, its field, bounds. */
static const struct hp_opt {
    int id;
    const char *name;
    size_t off; /* of a uint32_t in struct hparams */
    uint32_t lo, hi;
} hp_opts[] = {
    {OPT_N_EMBD, "--n-embd", offsetof(struct hparams, n_embd), 1, 65536},
    {OPT_N_LAYER, "--n-layer", offsetof(struct hparams, n_layer), 1, MAX_LAYERS},
    {OPT_N_HEAD, "--n-head", offsetof(struct hparams, n_head), 1, 1024},
    {OPT_N_HEAD_KV, "--n-head-kv", offsetof(struct hparams, n_head_kv), 1, 1024},
    {OPT_N_FF, "--n-ff", offsetof(struct hparams, n_ff), 1, 1 << 20},
    {OPT_CTX, "--ctx", offsetof(struct hparams, n_ctx), 1, 1 << 24},
};

/* What the command line says before the preset is known: overrides are applied after the preset,
 * whatever their order on the command line. */
struct given {
    struct hparams hp;     /* integer fields: 0 = not given */
    bool rope, eps;        /* rope_base, rms_eps given */
    const char *type_name; /* --type */
};

/* One option as getopt_long returned it (c, with optarg; opt: how it was spelled). 0, 1 for
 * --help, or a negative status (message printed). */
static int read_option(int c, const char *opt, struct opts *o, struct given *gv)
{
    uint32_t u;
    int rc;
    for (size_t i = 0; i < sizeof(hp_opts) / sizeof(hp_opts[0]); i++)
        if (c == hp_opts[i].id)
            return parse_u32(hp_opts[i].name, optarg, hp_opts[i].lo, hp_opts[i].hi,
                             (uint32_t *)((char *)&gv->hp + hp_opts[i].off));
    switch (c) {
    case 'o':
        o->out = optarg;
        return 0;
    case 'p':
        o->preset = optarg;
        return 0;
    case 't':
        gv->type_name = optarg;
        return 0;
    case 's':
        return parse_seed(optarg, &o->seed);
    case 'j':
        if ((rc = parse_u32("--threads", optarg, 1, 256, &u))) return rc;
        o->threads = (int)u;
        return 0;
    case 'q':
        o->quiet = true;
        return 0;
    case 'h':
        return 1;
    case OPT_ARCH:
        return parse_arch(optarg, &o->arch);
    case OPT_TIED:
        o->tied = true;
        return 0;
    case OPT_VOCAB:
        o->vocab = optarg;
        return 0;
    case OPT_NAME:
        o->name = optarg;
        return 0;
    case OPT_ROPE_BASE:
        gv->rope = true;
        return parse_f32("--rope-base", optarg, &gv->hp.rope_base);
    case OPT_RMS_EPS:
        gv->eps = true;
        return parse_f32("--rms-eps", optarg, &gv->hp.rms_eps);
    case ':':
        fprintf(stderr, "baton-mkmodel: %s needs a value (see --help)\n", opt);
        return BT_EINVAL;
    default:
        fprintf(stderr, "baton-mkmodel: unknown option '%s' (see --help)\n", opt);
        return BT_EINVAL;
    }
}

/* o->hp: the preset's, the qwen2 family's defaults for --arch qwen2, then the overrides. */
static int apply_preset(struct opts *o, const struct given *gv)
{
    const struct preset *pr = NULL;
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++)
        if (!strcmp(presets[i].name, o->preset)) pr = &presets[i];
    if (!pr) {
        fprintf(stderr, "baton-mkmodel: unknown preset '%s' (tiny, tinyllama-1.1b, llama-7b)\n",
                o->preset);
        return BT_EINVAL;
    }
    o->hp = pr->hp;
    if (o->arch == ARCH_QWEN2) { /* the qwen2 family's defaults */
        o->hp.rope_base = 1000000.0f;
        o->hp.rms_eps = 1e-6f;
    }
    for (size_t i = 0; i < sizeof(hp_opts) / sizeof(hp_opts[0]); i++) {
        const uint32_t *v = (const uint32_t *)((const char *)&gv->hp + hp_opts[i].off);
        if (*v) *(uint32_t *)((char *)&o->hp + hp_opts[i].off) = *v;
    }
    if (gv->rope) o->hp.rope_base = gv->hp.rope_base;
    if (gv->eps) o->hp.rms_eps = gv->hp.rms_eps;
    return 0;
}

/* The head layout a llama/qwen2 model needs. */
static int check_hparams(const struct hparams *hp)
{
    if (hp->n_embd % hp->n_head) {
        fprintf(stderr, "baton-mkmodel: n_embd %u is not a multiple of n_head %u\n", hp->n_embd,
                hp->n_head);
        return BT_EINVAL;
    }
    if ((hp->n_embd / hp->n_head) % 2) {
        fprintf(stderr, "baton-mkmodel: head size %u (n_embd / n_head) must be even for RoPE\n",
                hp->n_embd / hp->n_head);
        return BT_EINVAL;
    }
    if (hp->n_head_kv > hp->n_head || hp->n_head % hp->n_head_kv) {
        fprintf(stderr, "baton-mkmodel: n_head %u is not a multiple of n_head_kv %u\n", hp->n_head,
                hp->n_head_kv);
        return BT_EINVAL;
    }
    return 0;
}

/* --type: one of weight_types. */
static int parse_weight_type(const char *name, uint32_t *out)
{
    int t = bt_type_from_name(name);
    for (size_t i = 0; t >= 0 && i < sizeof(weight_types) / sizeof(weight_types[0]); i++) {
        if (weight_types[i].type == (uint32_t)t) {
            *out = (uint32_t)t;
            return 0;
        }
    }
    fprintf(stderr,
            "baton-mkmodel: --type '%s' is not a weight type baton can write (f32 f16 bf16 "
            "q8_0 q4_0 q4_1 q5_0 q5_1 q2_K q3_K q4_K q5_K q6_K)\n",
            name);
    return BT_EINVAL;
}

/* 0, 1 for --help, or a negative status (message printed). */
static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        {"out", required_argument, NULL, 'o'},
        {"preset", required_argument, NULL, 'p'},
        {"type", required_argument, NULL, 't'},
        {"seed", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"arch", required_argument, NULL, OPT_ARCH},
        {"tied", no_argument, NULL, OPT_TIED},
        {"vocab", required_argument, NULL, OPT_VOCAB},
        {"name", required_argument, NULL, OPT_NAME},
        {"n-embd", required_argument, NULL, OPT_N_EMBD},
        {"n-layer", required_argument, NULL, OPT_N_LAYER},
        {"n-head", required_argument, NULL, OPT_N_HEAD},
        {"n-head-kv", required_argument, NULL, OPT_N_HEAD_KV},
        {"n-ff", required_argument, NULL, OPT_N_FF},
        {"ctx", required_argument, NULL, OPT_CTX},
        {"rope-base", required_argument, NULL, OPT_ROPE_BASE},
        {"rms-eps", required_argument, NULL, OPT_RMS_EPS},
        {NULL, 0, NULL, 0},
    };
    struct given gv = {.type_name = "f16"};
    int c, rc;

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (struct opts){
        .preset = "tiny", .seed = 1, .threads = ncpu > 0 ? (int)(ncpu < 64 ? ncpu : 64) : 1};
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:p:t:s:j:qh", longopts, NULL)) != -1) {
        const char *opt = optind > 0 && optind <= argc ? argv[optind - 1] : "option";
        if ((rc = read_option(c, opt, o, &gv))) return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "baton-mkmodel: unexpected argument '%s' (see --help)\n", argv[optind]);
        return BT_EINVAL;
    }
    if ((rc = apply_preset(o, &gv)) || (rc = check_hparams(&o->hp)) ||
        (rc = parse_weight_type(gv.type_name, &o->type)))
        return rc;
    if (!o->out) {
        fprintf(stderr, "baton-mkmodel: no output file (-o OUT.gguf; see --help)\n");
        return BT_EINVAL;
    }
    return 0;
}

static uint32_t ftype_of(uint32_t type)
{
    for (size_t i = 0; i < sizeof(weight_types) / sizeof(weight_types[0]); i++)
        if (weight_types[i].type == type) return weight_types[i].ftype;
    return 0;
}

/* ------------------------------------------------------------------ main work */

static int set_hparams(struct gguf_writer *w, const struct opts *o, const char *name,
                       uint32_t n_vocab)
{
    const char *a = arch_names[o->arch];
    const struct hparams *hp = &o->hp;
    char key[128];
    int rc = 0;
#define KEY(suffix) (snprintf(key, sizeof(key), "%s.%s", a, suffix), key)
    if ((rc = gguf_writer_set_str(w, "general.architecture", a)) ||
        (rc = gguf_writer_set_str(w, "general.name", name)) ||
        (rc = gguf_writer_set_u32(w, "general.file_type", ftype_of(o->type))) ||
        (rc = gguf_writer_set_u32(w, "general.quantization_version", 2)) ||
        (rc = gguf_writer_set_u32(w, KEY("vocab_size"), n_vocab)) ||
        (rc = gguf_writer_set_u32(w, KEY("context_length"), hp->n_ctx)) ||
        (rc = gguf_writer_set_u32(w, KEY("embedding_length"), hp->n_embd)) ||
        (rc = gguf_writer_set_u32(w, KEY("block_count"), hp->n_layer)) ||
        (rc = gguf_writer_set_u32(w, KEY("feed_forward_length"), hp->n_ff)) ||
        (rc = gguf_writer_set_u32(w, KEY("attention.head_count"), hp->n_head)) ||
        (rc = gguf_writer_set_u32(w, KEY("attention.head_count_kv"), hp->n_head_kv)) ||
        (rc = gguf_writer_set_f32(w, KEY("rope.freq_base"), hp->rope_base)) ||
        (rc = gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), hp->rms_eps)) ||
        (rc = gguf_writer_set_u32(w, KEY("rope.dimension_count"), hp->n_embd / hp->n_head)))
        return rc;
#undef KEY
    return 0;
}

static const char *default_vocab(char *buf, size_t n)
{
    const char *shared = getenv("BATON_SHARED");
    snprintf(buf, n, "%s/%s", shared && shared[0] ? shared : "../shared", DEFAULT_VOCAB);
    return buf;
}

/* What run builds, step by step; freed by job_free. */
struct job {
    struct gguf *voc; /* the vocabulary file, until its keys are copied */
    uint32_t n_vocab;
    struct gguf_writer *w;
    struct tplan *plan; /* (n_t) in file order */
    int n_t;
    uint64_t total;       /* tensor data bytes */
    int64_t max_ne0;      /* longest row */
    struct bt_pool *pool; /* NULL: generate on this thread */
    int64_t chunk_max;    /* floats generated per write */
    float *scratch;       /* one row per thread */
    uint8_t *buf;         /* one chunk of quantised rows */
};

static void job_free(struct job *j)
{
    gguf_writer_free(j->w);
    gguf_close(j->voc);
    bt_pool_free(j->pool);
    free(j->plan);
    free(j->scratch);
    free(j->buf);
}

/* The writer's first error, printed; returns rc. */
static int writer_failed(const struct gguf_writer *w, int rc)
{
    fprintf(stderr, "baton-mkmodel: %s\n", gguf_writer_error(w) ? gguf_writer_error(w) : "error");
    return rc;
}

static int out_of_memory(void)
{
    fprintf(stderr, "baton-mkmodel: out of memory\n");
    return BT_ENOMEM;
}

/* Open --vocab (or the default) and find its token list. */
static int open_vocab(const struct opts *o, struct job *j)
{
    char err[512], vbuf[4096];
    int rc;
    const char *vpath = o->vocab ? o->vocab : default_vocab(vbuf, sizeof(vbuf));
    if ((rc = gguf_open(vpath, &j->voc, err, sizeof(err)))) {
        fprintf(stderr, "baton-mkmodel: vocab: %s\n", err);
        return rc;
    }
    const struct gguf_kv *tok = gguf_find_kv(j->voc, "tokenizer.ggml.tokens");
    if (!tok || tok->type != GGUF_TYPE_ARRAY || tok->arr_type != GGUF_TYPE_STRING ||
        tok->arr_n == 0 || tok->arr_n > (1u << 24)) {
        fprintf(stderr, "baton-mkmodel: %s: no usable tokenizer.ggml.tokens array\n", vpath);
        return BT_EFORMAT;
    }
    j->n_vocab = (uint32_t)tok->arr_n;
    fprintf(stderr, "baton-mkmodel: vocabulary from %s (%u tokens)\n", vpath, j->n_vocab);
    return 0;
}

/* The metadata (hyperparameters, the vocabulary's tokenizer.* keys) and the tensor plan, declared
 * to a new writer; the vocabulary file is closed after. */
static int declare(const struct opts *o, struct job *j)
{
    char name[256];
    int64_t n_copied = 0;
    int rc;
    if (o->name)
        snprintf(name, sizeof(name), "%s", o->name);
    else
        snprintf(name, sizeof(name), "baton-mkmodel %s%s %s seed %" PRIu64, o->preset,
                 o->arch == ARCH_QWEN2 ? " qwen2" : "", bt_type_name(o->type), o->seed);
    if (!(j->w = gguf_writer_new())) return out_of_memory();
    if ((rc = set_hparams(j->w, o, name, j->n_vocab))) return writer_failed(j->w, rc);
    for (int64_t i = 0; i < gguf_n_kv(j->voc); i++) {
        const struct gguf_kv *kv = gguf_kv_at(j->voc, i);
        if (strncmp(kv->key, "tokenizer.", 10) != 0) continue;
        if ((rc = gguf_writer_copy_kv(j->w, kv))) return writer_failed(j->w, rc);
        n_copied++;
    }
    if (!(j->plan = calloc(3 + 12 * (size_t)o->hp.n_layer, sizeof(*j->plan))))
        return out_of_memory();
    j->n_t = make_plan(o, j->n_vocab, j->plan);
    for (int i = 0; i < j->n_t; i++) {
        const struct tplan *t = &j->plan[i];
        const int64_t ne[2] = {t->ne[0], t->ne[1]};
        rc = gguf_writer_add_tensor(j->w, t->name, t->type, t->n_dims, ne);
        if (rc < 0) return writer_failed(j->w, rc);
        if (rc != i) {
            fprintf(stderr, "baton-mkmodel: tensor index %d, expected %d\n", rc, i);
            return BT_ERR;
        }
        j->total += bt_row_size(t->type, t->ne[0]) * (uint64_t)t->ne[1];
        if (t->ne[0] > j->max_ne0) j->max_ne0 = t->ne[0];
    }
    gguf_close(j->voc); /* everything needed was copied */
    j->voc = NULL;
    fprintf(stderr,
            "baton-mkmodel: %s: n_embd %u, n_layer %u, n_head %u/%u, n_ff %u, ctx %u, vocab %u, "
            "%s%s, %d tensors, %.1f MiB, %" PRId64 " tokenizer keys\n",
            arch_names[o->arch], o->hp.n_embd, o->hp.n_layer, o->hp.n_head, o->hp.n_head_kv,
            o->hp.n_ff, o->hp.n_ctx, j->n_vocab, bt_type_name(o->type), o->tied ? ", tied" : "",
            j->n_t, (double)j->total / (1 << 20), n_copied);
    return 0;
}

/* The generator threads and their buffers. */
static int make_buffers(const struct opts *o, struct job *j)
{
    if (o->threads > 1 && !(j->pool = bt_pool_new(o->threads)))
        fprintf(stderr, "baton-mkmodel: no thread pool, generating on one thread\n");
    const int nth = bt_pool_size(j->pool);
    j->chunk_max = CHUNK_ELEMS > j->max_ne0 ? CHUNK_ELEMS : j->max_ne0;
    j->scratch = malloc((size_t)nth * (size_t)j->max_ne0 * sizeof(float));
    j->buf = malloc((size_t)j->chunk_max * sizeof(float)); /* no type is wider than f32 */
    if (!j->scratch || !j->buf) return out_of_memory();
    return 0;
}

/* One line per tensor written: name, type, shape, size, share of the whole so far. */
static void print_progress(const struct tplan *t, int i, int n_t, uint64_t done, uint64_t total)
{
    char shape[64];
    const uint64_t bytes = bt_row_size(t->type, t->ne[0]) * (uint64_t)t->ne[1];
    if (t->n_dims == 1)
        snprintf(shape, sizeof(shape), "[%" PRId64 "]", t->ne[0]);
    else
        snprintf(shape, sizeof(shape), "[%" PRId64 ", %" PRId64 "]", t->ne[0], t->ne[1]);
    fprintf(stderr, "[%4d/%4d] %-28s %-5s %-14s %9.2f MiB  %5.1f%%\n", i + 1, n_t, t->name,
            bt_type_name(t->type), shape, (double)bytes / (1 << 20),
            total ? 100.0 * (double)done / (double)total : 100.0);
}

/* Every tensor's data, generated and quantised a chunk of rows at a time on the pool. */
static int write_tensors(const struct opts *o, struct job *j)
{
    uint64_t done = 0;
    int rc;
    for (int i = 0; i < j->n_t; i++) {
        const struct tplan *t = &j->plan[i];
        const size_t row_bytes = bt_row_size(t->type, t->ne[0]);
        const int64_t rows_per_chunk = j->chunk_max / t->ne[0];
        struct gen_job job = {t,     mix64(o->seed ^ fnv1a(t->name)), 0, 0, row_bytes, j->scratch,
                              j->buf};
        for (int64_t r = 0; r < t->ne[1]; r += rows_per_chunk) {
            job.row0 = r;
            job.nrows = t->ne[1] - r < rows_per_chunk ? t->ne[1] - r : rows_per_chunk;
            bt_pool_run(j->pool, gen_rows, &job);
            if ((rc = gguf_writer_write(j->w, i, j->buf, (size_t)job.nrows * row_bytes)))
                return writer_failed(j->w, rc);
        }
        done += row_bytes * (uint64_t)t->ne[1];
        if (!o->quiet) print_progress(t, i, j->n_t, done, j->total);
    }
    return 0;
}

/* Write the model to OUT.tmp, then rename it to OUT; OUT.tmp is removed on failure. */
static int run(const struct opts *o)
{
    char err[512], tmp[4096];
    struct job j = {0};
    bool began = false;
    int rc;
    const double t0 = bt_now_s();

    if ((rc = open_vocab(o, &j)) || (rc = declare(o, &j)) || (rc = make_buffers(o, &j))) goto out;
    snprintf(tmp, sizeof(tmp), "%s.tmp", o->out);
    if ((rc = gguf_writer_begin(j.w, tmp, err, sizeof(err)))) {
        fprintf(stderr, "baton-mkmodel: %s\n", err);
        goto out;
    }
    began = true;
    if ((rc = write_tensors(o, &j))) goto out;
    if ((rc = gguf_writer_finish(j.w, err, sizeof(err)))) {
        fprintf(stderr, "baton-mkmodel: %s\n", err);
        goto out;
    }
    if (rename(tmp, o->out) != 0) {
        rc = BT_EIO;
        fprintf(stderr, "baton-mkmodel: rename %s -> %s: %s\n", tmp, o->out, strerror(errno));
        goto out;
    }
    began = false;
    fprintf(stderr, "baton-mkmodel: wrote %s (%.1f MiB) in %.1f s\n", o->out,
            (double)j.total / (1 << 20), bt_now_s() - t0);
out:
    if (began) unlink(tmp);
    job_free(&j);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc == 1) {
        usage(stdout);
        return 0;
    }
    if (rc) return 2;
    return run(&o) ? 1 : 0;
}
