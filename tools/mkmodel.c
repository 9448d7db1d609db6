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
    /* overrides are applied after the preset, whatever their order on the command line */
    struct hparams ov = {0};
    bool have_rope = false, have_eps = false;
    const char *type_name = "f16";
    int c, rc = 0;
    uint32_t u;

    memset(o, 0, sizeof(*o));
    o->preset = "tiny";
    o->seed = 1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = ncpu > 0 ? (int)(ncpu < 64 ? ncpu : 64) : 1;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:p:t:s:j:qh", longopts, NULL)) != -1) {
        const char *opt = optind > 0 && optind <= argc ? argv[optind - 1] : "option";
        switch (c) {
        case 'o':
            o->out = optarg;
            break;
        case 'p':
            o->preset = optarg;
            break;
        case 't':
            type_name = optarg;
            break;
        case 's': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 0);
            if (errno || end == optarg || *end || optarg[0] == '-') {
                fprintf(stderr, "baton-mkmodel: --seed: '%s' is not a non-negative integer\n",
                        optarg);
                return BT_EINVAL;
            }
            o->seed = v;
            break;
        }
        case 'j':
            if ((rc = parse_u32("--threads", optarg, 1, 256, &u))) return rc;
            o->threads = (int)u;
            break;
        case 'q':
            o->quiet = true;
            break;
        case 'h':
            return 1;
        case OPT_ARCH:
            if (!strcmp(optarg, "llama")) {
                o->arch = ARCH_LLAMA;
            } else if (!strcmp(optarg, "qwen2")) {
                o->arch = ARCH_QWEN2;
            } else {
                fprintf(stderr, "baton-mkmodel: --arch: '%s' is not llama or qwen2\n", optarg);
                return BT_EINVAL;
            }
            break;
        case OPT_TIED:
            o->tied = true;
            break;
        case OPT_VOCAB:
            o->vocab = optarg;
            break;
        case OPT_NAME:
            o->name = optarg;
            break;
        case OPT_N_EMBD:
            rc = parse_u32("--n-embd", optarg, 1, 65536, &ov.n_embd);
            break;
        case OPT_N_LAYER:
            rc = parse_u32("--n-layer", optarg, 1, MAX_LAYERS, &ov.n_layer);
            break;
        case OPT_N_HEAD:
            rc = parse_u32("--n-head", optarg, 1, 1024, &ov.n_head);
            break;
        case OPT_N_HEAD_KV:
            rc = parse_u32("--n-head-kv", optarg, 1, 1024, &ov.n_head_kv);
            break;
        case OPT_N_FF:
            rc = parse_u32("--n-ff", optarg, 1, 1 << 20, &ov.n_ff);
            break;
        case OPT_CTX:
            rc = parse_u32("--ctx", optarg, 1, 1 << 24, &ov.n_ctx);
            break;
        case OPT_ROPE_BASE:
            rc = parse_f32("--rope-base", optarg, &ov.rope_base);
            have_rope = true;
            break;
        case OPT_RMS_EPS:
            rc = parse_f32("--rms-eps", optarg, &ov.rms_eps);
            have_eps = true;
            break;
        case ':':
            fprintf(stderr, "baton-mkmodel: %s needs a value (see --help)\n", opt);
            return BT_EINVAL;
        default:
            fprintf(stderr, "baton-mkmodel: unknown option '%s' (see --help)\n", opt);
            return BT_EINVAL;
        }
        if (rc) return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "baton-mkmodel: unexpected argument '%s' (see --help)\n", argv[optind]);
        return BT_EINVAL;
    }

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
    if (ov.n_embd) o->hp.n_embd = ov.n_embd;
    if (ov.n_layer) o->hp.n_layer = ov.n_layer;
    if (ov.n_head) o->hp.n_head = ov.n_head;
    if (ov.n_head_kv) o->hp.n_head_kv = ov.n_head_kv;
    if (ov.n_ff) o->hp.n_ff = ov.n_ff;
    if (ov.n_ctx) o->hp.n_ctx = ov.n_ctx;
    if (have_rope) o->hp.rope_base = ov.rope_base;
    if (have_eps) o->hp.rms_eps = ov.rms_eps;

    const struct hparams *hp = &o->hp;
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

    int t = bt_type_from_name(type_name);
    o->type = UINT32_MAX;
    for (size_t i = 0; t >= 0 && i < sizeof(weight_types) / sizeof(weight_types[0]); i++)
        if (weight_types[i].type == (uint32_t)t) o->type = (uint32_t)t;
    if (o->type == UINT32_MAX) {
        fprintf(stderr,
                "baton-mkmodel: --type '%s' is not a weight type baton can write (f32 f16 bf16 "
                "q8_0 q4_0 q4_1 q5_0 q5_1 q2_K q3_K q4_K q5_K q6_K)\n",
                type_name);
        return BT_EINVAL;
    }
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

static int run(const struct opts *o)
{
    char err[512], vbuf[4096], tmp[4096], name[256];
    struct gguf *voc = NULL;
    struct gguf_writer *w = NULL;
    struct bt_pool *pool = NULL;
    struct tplan *plan = NULL;
    float *scratch = NULL;
    uint8_t *buf = NULL;
    bool began = false;
    int rc;
    const double t0 = bt_now_s();

    const char *vpath = o->vocab ? o->vocab : default_vocab(vbuf, sizeof(vbuf));
    if ((rc = gguf_open(vpath, &voc, err, sizeof(err)))) {
        fprintf(stderr, "baton-mkmodel: vocab: %s\n", err);
        goto fail;
    }
    const struct gguf_kv *tok = gguf_find_kv(voc, "tokenizer.ggml.tokens");
    if (!tok || tok->type != GGUF_TYPE_ARRAY || tok->arr_type != GGUF_TYPE_STRING ||
        tok->arr_n == 0 || tok->arr_n > (1u << 24)) {
        fprintf(stderr, "baton-mkmodel: %s: no usable tokenizer.ggml.tokens array\n", vpath);
        rc = BT_EFORMAT;
        goto fail;
    }
    const uint32_t n_vocab = (uint32_t)tok->arr_n;
    fprintf(stderr, "baton-mkmodel: vocabulary from %s (%u tokens)\n", vpath, n_vocab);

    if (o->name)
        snprintf(name, sizeof(name), "%s", o->name);
    else
        snprintf(name, sizeof(name), "baton-mkmodel %s%s %s seed %" PRIu64, o->preset,
                 o->arch == ARCH_QWEN2 ? " qwen2" : "", bt_type_name(o->type), o->seed);

    if (!(w = gguf_writer_new())) {
        rc = BT_ENOMEM;
        fprintf(stderr, "baton-mkmodel: out of memory\n");
        goto fail;
    }
    if ((rc = set_hparams(w, o, name, n_vocab))) goto werr;
    int64_t n_copied = 0;
    for (int64_t i = 0; i < gguf_n_kv(voc); i++) {
        const struct gguf_kv *kv = gguf_kv_at(voc, i);
        if (strncmp(kv->key, "tokenizer.", 10) != 0) continue;
        if ((rc = gguf_writer_copy_kv(w, kv))) goto werr;
        n_copied++;
    }

    plan = calloc(3 + 12 * (size_t)o->hp.n_layer, sizeof(*plan));
    if (!plan) {
        rc = BT_ENOMEM;
        fprintf(stderr, "baton-mkmodel: out of memory\n");
        goto fail;
    }
    const int n_t = make_plan(o, n_vocab, plan);
    uint64_t total = 0;
    int64_t max_ne0 = 0;
    for (int i = 0; i < n_t; i++) {
        const int64_t ne[2] = {plan[i].ne[0], plan[i].ne[1]};
        rc = gguf_writer_add_tensor(w, plan[i].name, plan[i].type, plan[i].n_dims, ne);
        if (rc < 0) goto werr;
        if (rc != i) {
            fprintf(stderr, "baton-mkmodel: tensor index %d, expected %d\n", rc, i);
            rc = BT_ERR;
            goto fail;
        }
        total += bt_row_size(plan[i].type, plan[i].ne[0]) * (uint64_t)plan[i].ne[1];
        if (plan[i].ne[0] > max_ne0) max_ne0 = plan[i].ne[0];
    }
    gguf_close(voc); /* everything needed was copied */
    voc = NULL;

    fprintf(stderr,
            "baton-mkmodel: %s: n_embd %u, n_layer %u, n_head %u/%u, n_ff %u, ctx %u, vocab %u, "
            "%s%s, %d tensors, %.1f MiB, %" PRId64 " tokenizer keys\n",
            arch_names[o->arch], o->hp.n_embd, o->hp.n_layer, o->hp.n_head, o->hp.n_head_kv,
            o->hp.n_ff, o->hp.n_ctx, n_vocab, bt_type_name(o->type), o->tied ? ", tied" : "", n_t,
            (double)total / (1 << 20), n_copied);

    if (o->threads > 1 && !(pool = bt_pool_new(o->threads)))
        fprintf(stderr, "baton-mkmodel: no thread pool, generating on one thread\n");
    const int nth = bt_pool_size(pool);
    const int64_t chunk_max = CHUNK_ELEMS > max_ne0 ? CHUNK_ELEMS : max_ne0;
    scratch = malloc((size_t)nth * (size_t)max_ne0 * sizeof(float));
    buf = malloc((size_t)chunk_max * sizeof(float)); /* no type is wider than f32 */
    if (!scratch || !buf) {
        rc = BT_ENOMEM;
        fprintf(stderr, "baton-mkmodel: out of memory\n");
        goto fail;
    }

    snprintf(tmp, sizeof(tmp), "%s.tmp", o->out);
    if ((rc = gguf_writer_begin(w, tmp, err, sizeof(err)))) {
        fprintf(stderr, "baton-mkmodel: %s\n", err);
        goto fail;
    }
    began = true;
    uint64_t done = 0;
    for (int i = 0; i < n_t; i++) {
        const struct tplan *t = &plan[i];
        const size_t row_bytes = bt_row_size(t->type, t->ne[0]);
        const int64_t rows_per_chunk = chunk_max / t->ne[0];
        struct gen_job job = {t, mix64(o->seed ^ fnv1a(t->name)), 0, 0, row_bytes, scratch, buf};
        for (int64_t r = 0; r < t->ne[1]; r += rows_per_chunk) {
            job.row0 = r;
            job.nrows = t->ne[1] - r < rows_per_chunk ? t->ne[1] - r : rows_per_chunk;
            bt_pool_run(pool, gen_rows, &job);
            if ((rc = gguf_writer_write(w, i, buf, (size_t)job.nrows * row_bytes))) goto werr;
        }
        done += row_bytes * (uint64_t)t->ne[1];
        if (!o->quiet) {
            char shape[64];
            if (t->n_dims == 1)
                snprintf(shape, sizeof(shape), "[%" PRId64 "]", t->ne[0]);
            else
                snprintf(shape, sizeof(shape), "[%" PRId64 ", %" PRId64 "]", t->ne[0], t->ne[1]);
            fprintf(stderr, "[%4d/%4d] %-28s %-5s %-14s %9.2f MiB  %5.1f%%\n", i + 1, n_t, t->name,
                    bt_type_name(t->type), shape,
                    (double)(row_bytes * (uint64_t)t->ne[1]) / (1 << 20),
                    total ? 100.0 * (double)done / (double)total : 100.0);
        }
    }
    if ((rc = gguf_writer_finish(w, err, sizeof(err)))) {
        fprintf(stderr, "baton-mkmodel: %s\n", err);
        goto fail;
    }
    if (rename(tmp, o->out) != 0) {
        rc = BT_EIO;
        fprintf(stderr, "baton-mkmodel: rename %s -> %s: %s\n", tmp, o->out, strerror(errno));
        goto fail;
    }
    began = false;
    fprintf(stderr, "baton-mkmodel: wrote %s (%.1f MiB) in %.1f s\n", o->out,
            (double)total / (1 << 20), bt_now_s() - t0);
    rc = 0;
    goto out;
werr:
    fprintf(stderr, "baton-mkmodel: %s\n", gguf_writer_error(w) ? gguf_writer_error(w) : "error");
fail:
    if (began) unlink(tmp);
out:
    gguf_writer_free(w);
    gguf_close(voc);
    bt_pool_free(pool);
    free(plan);
    free(scratch);
    free(buf);
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
