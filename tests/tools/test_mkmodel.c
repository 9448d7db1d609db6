/* test_mkmodel: runs the built baton-mkmodel (argv[1], else $BATON_BUILD/baton-mkmodel) into a
 * temporary directory and reads the files back with baton's GGUF reader: keys, tensor names, shapes
 * and types, value statistics, determinism (same seed -> byte-identical file, whatever the thread
 * count), that every --type carries the same underlying weights, and the error exits. */
#include "gguf.h"
#include "log.h"
#include "quant.h"
#include "../unit/t.h"

#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[4096];
static char mkmodel[4096];
static char vocab_small[4096]; /* stories260K.gguf: 512 tokens */
static char vocab_spm[4096];   /* the default vocab: 32000 tokens */

/* Run baton-mkmodel with the NULL-terminated arguments; returns its exit status (or -1). Its
 * stdout and stderr go to DIR/log.txt. */
static int run_mkmodel(const char *arg0, ...)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = mkmodel;
    va_list ap;
    va_start(ap, arg0);
    for (const char *a = arg0; a && n < 63; a = va_arg(ap, const char *)) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    char logpath[4200];
    snprintf(logpath, sizeof(logpath), "%s/log.txt", dir);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (!freopen(logpath, "w", stderr) || dup2(2, 1) < 0) _exit(127);
        execv(mkmodel, (char *const *)argv);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *path_in(const char *name)
{
    static char buf[4][4200];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 4200, "%s/%s", dir, name);
    return p;
}

static bool same_files(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = false;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

static uint32_t get_u32(const struct gguf *g, const char *key)
{
    uint32_t v = 0xdeadbeef;
    CHECK_INT(gguf_get_u32(g, key, &v), 0);
    return v;
}

static float get_f32(const struct gguf *g, const char *key)
{
    float v = -1;
    CHECK_INT(gguf_get_f32(g, key, &v), 0);
    return v;
}

static bool str_is(const struct gguf *g, const char *key, const char *want)
{
    struct gguf_str s;
    if (gguf_get_str(g, key, &s)) return false;
    return s.len == strlen(want) && memcmp(s.data, want, s.len) == 0;
}

static void check_tensor(const struct gguf *g, const char *name, uint32_t type, int64_t ne0,
                         int64_t ne1)
{
    const struct gguf_tensor *t = gguf_find_tensor(g, name);
    CHECK(t != NULL);
    if (!t) {
        fprintf(stderr, "  missing tensor %s\n", name);
        return;
    }
    if (t->type != type)
        fprintf(stderr, "  %s: type %s, want %s\n", name, bt_type_name(t->type),
                bt_type_name(type));
    CHECK_INT(t->type, type);
    CHECK_INT(t->n_dims, ne1 ? 2 : 1);
    CHECK_INT(t->ne[0], ne0);
    CHECK_INT(t->ne[1], ne1 ? ne1 : 1);
    CHECK_INT(t->nbytes, bt_row_size(type, ne0) * (uint64_t)(ne1 ? ne1 : 1));
}

/* mean and standard deviation of the first `rows` rows of a tensor, dequantised */
static void stats(const struct gguf_tensor *t, int64_t rows, double *mean, double *sd)
{
    const size_t rs = bt_row_size(t->type, t->ne[0]);
    float *x = malloc((size_t)t->ne[0] * sizeof(float));
    double s = 0, s2 = 0;
    int64_t n = 0;
    for (int64_t r = 0; r < rows && r < t->ne[1]; r++) {
        CHECK_INT(bt_dequantize_row(t->type, (const char *)t->data + r * rs, x, t->ne[0]), 0);
        for (int64_t i = 0; i < t->ne[0]; i++, n++) {
            s += x[i];
            s2 += (double)x[i] * x[i];
        }
    }
    free(x);
    *mean = n ? s / (double)n : 0;
    *sd = n ? sqrt(s2 / (double)n - *mean * *mean) : 0;
}

struct expect {
    const char *arch;
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx, n_vocab;
    uint32_t file_type;
    bool tied, bias;
    float rope_base, rms_eps;
};

/* Structure of a model file; `wt(role, layer)` gives each matrix's expected type. */
static void check_model(const char *path, const struct expect *e,
                        uint32_t (*wt)(const char *role, uint32_t layer))
{
    char err[512], key[128];
    struct gguf *g = NULL;
    CHECK_INT(gguf_open(path, &g, err, sizeof(err)), 0);
    if (!g) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK(str_is(g, "general.architecture", e->arch));
    CHECK_INT(get_u32(g, "general.file_type"), e->file_type);
#define AK(suffix) (snprintf(key, sizeof(key), "%s.%s", e->arch, suffix), key)
    CHECK_INT(get_u32(g, AK("embedding_length")), e->n_embd);
    CHECK_INT(get_u32(g, AK("block_count")), e->n_layer);
    CHECK_INT(get_u32(g, AK("attention.head_count")), e->n_head);
    CHECK_INT(get_u32(g, AK("attention.head_count_kv")), e->n_head_kv);
    CHECK_INT(get_u32(g, AK("feed_forward_length")), e->n_ff);
    CHECK_INT(get_u32(g, AK("context_length")), e->n_ctx);
    CHECK_INT(get_u32(g, AK("vocab_size")), e->n_vocab);
    CHECK_INT(get_u32(g, AK("rope.dimension_count")), e->n_embd / e->n_head);
    CHECK_NEAR(get_f32(g, AK("rope.freq_base")), e->rope_base, e->rope_base * 1e-6);
    CHECK_NEAR(get_f32(g, AK("attention.layer_norm_rms_epsilon")), e->rms_eps, e->rms_eps * 1e-6);
#undef AK
    uint32_t et;
    uint64_t n;
    CHECK_INT(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n), 0);
    CHECK_INT(n, e->n_vocab);
    CHECK(gguf_find_kv(g, "tokenizer.ggml.model") != NULL);
    /* only the tokenizer is copied from a vocab file that is a whole model */
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const char *k = gguf_kv_at(g, i)->key;
        CHECK(!strncmp(k, "general.", 8) || !strncmp(k, "tokenizer.", 10) ||
              !strncmp(k, e->arch, strlen(e->arch)));
    }

    const uint32_t E = e->n_embd, EKV = e->n_embd / e->n_head * e->n_head_kv, F = e->n_ff;
    const int per_layer = 9 + (e->bias ? 3 : 0);
    CHECK_INT(gguf_n_tensors(g), 1 + (int64_t)e->n_layer * per_layer + 1 + (e->tied ? 0 : 1));
    check_tensor(g, "token_embd.weight", wt("token_embd", 0), E, e->n_vocab);
    for (uint32_t l = 0; l < e->n_layer; l++) {
        char nm[64];
#define T(suffix, role, ne0, ne1, type)                                                            \
    snprintf(nm, sizeof(nm), "blk.%u.%s", l, suffix);                                              \
    check_tensor(g, nm, type, ne0, ne1)
        T("attn_norm.weight", "", E, 0, BT_F32);
        T("attn_q.weight", "", E, E, wt("attn_q", l));
        T("attn_k.weight", "", E, EKV, wt("attn_k", l));
        T("attn_v.weight", "", E, EKV, wt("attn_v", l));
        T("attn_output.weight", "", E, E, wt("attn_output", l));
        T("ffn_norm.weight", "", E, 0, BT_F32);
        T("ffn_gate.weight", "", E, F, wt("ffn_gate", l));
        T("ffn_up.weight", "", E, F, wt("ffn_up", l));
        T("ffn_down.weight", "", F, E, wt("ffn_down", l));
        if (e->bias) {
            T("attn_q.bias", "", E, 0, BT_F32);
            T("attn_k.bias", "", EKV, 0, BT_F32);
            T("attn_v.bias", "", EKV, 0, BT_F32);
        } else {
            snprintf(nm, sizeof(nm), "blk.%u.attn_q.bias", l);
            CHECK(gguf_find_tensor(g, nm) == NULL);
        }
#undef T
    }
    check_tensor(g, "output_norm.weight", BT_F32, E, 0);
    if (e->tied)
        CHECK(gguf_find_tensor(g, "output.weight") == NULL);
    else
        check_tensor(g, "output.weight", wt("output", 0), E, e->n_vocab);
    gguf_close(g);
}

static uint32_t wt_f32(const char *role, uint32_t l)
{
    (void)role, (void)l;
    return BT_F32;
}
static uint32_t wt_q8_0(const char *role, uint32_t l)
{
    (void)role, (void)l;
    return BT_Q8_0;
}
static uint32_t wt_q4_0(const char *role, uint32_t l)
{
    (void)l;
    return strcmp(role, "output") ? BT_Q4_0 : BT_Q8_0; /* Q6_K does not fit 64: its fallback */
}
/* tiny (64- and 192-wide rows) at q4_K: Q4_K falls back to Q5_0, Q6_K to Q8_0 */
static uint32_t wt_q4_K_tiny(const char *role, uint32_t l)
{
    if (!strcmp(role, "output")) return BT_Q8_0;
    /* the Q4_K_M rule picks Q6_K for attn_v and ffn_down in layer 1 of 2 (the last eighth) */
    if ((!strcmp(role, "attn_v") || !strcmp(role, "ffn_down")) && l == 1) return BT_Q8_0;
    return BT_Q5_0;
}
/* 256-wide rows, 8 layers at q4_K (the Q4_K_M mix: layers 0, 3, 6, 7 get Q6_K in attn_v and
 * ffn_down) */
static uint32_t wt_q4_K_wide(const char *role, uint32_t l)
{
    if (!strcmp(role, "output")) return BT_Q6_K;
    if ((!strcmp(role, "attn_v") || !strcmp(role, "ffn_down")) &&
        (l == 0 || l == 3 || l == 6 || l == 7))
        return BT_Q6_K;
    return BT_Q4_K;
}
static uint32_t wt_q6_K_tied(const char *role, uint32_t l)
{
    (void)role, (void)l;
    return BT_Q6_K;
}

static void test_structure(void)
{
    struct expect tiny = {"llama", 64, 2, 4, 2, 192, 256, 512, 0, false, false, 10000.f, 1e-5f};

    CHECK_INT(
        run_mkmodel("-q", "--type", "f32", "--vocab", vocab_small, "-o", path_in("f32.gguf"), NULL),
        0);
    check_model(path_in("f32.gguf"), &tiny, wt_f32);

    tiny.file_type = 7;
    CHECK_INT(
        run_mkmodel("-q", "-t", "q8_0", "--vocab", vocab_small, "-o", path_in("q8_0.gguf"), NULL),
        0);
    check_model(path_in("q8_0.gguf"), &tiny, wt_q8_0);

    tiny.file_type = 2;
    CHECK_INT(
        run_mkmodel("-q", "-t", "q4_0", "--vocab", vocab_small, "-o", path_in("q4_0.gguf"), NULL),
        0);
    check_model(path_in("q4_0.gguf"), &tiny, wt_q4_0);

    tiny.file_type = 15;
    CHECK_INT(
        run_mkmodel("-q", "-t", "Q4_K", "--vocab", vocab_small, "-o", path_in("q4_K.gguf"), NULL),
        0);
    check_model(path_in("q4_K.gguf"), &tiny, wt_q4_K_tiny);

    /* overrides, whichever side of --preset they are on */
    struct expect wide = {"llama", 256, 8, 8, 2, 512, 512, 512, 15, false, false, 5e5f, 1e-6f};
    CHECK_INT(run_mkmodel("-q", "--n-embd", "256", "--n-ff", "512", "--preset", "tiny", "--n-layer",
                          "8", "--n-head", "8", "--n-head-kv", "2", "--ctx", "512", "--rope-base",
                          "500000", "--rms-eps", "1e-6", "-t", "q4_K", "--vocab", vocab_small, "-o",
                          path_in("wide.gguf"), NULL),
              0);
    check_model(path_in("wide.gguf"), &wide, wt_q4_K_wide);

    /* qwen2 biases, tied embeddings */
    struct expect qw = {"qwen2", 256, 2, 4, 2, 512, 256, 512, 18, true, true, 1e6f, 1e-6f};
    CHECK_INT(run_mkmodel("-q", "--arch", "qwen2", "--tied", "--n-embd", "256", "--n-ff", "512",
                          "-t", "q6_K", "--vocab", vocab_small, "-o", path_in("qwen2.gguf"), NULL),
              0);
    check_model(path_in("qwen2.gguf"), &qw, wt_q6_K_tied);
}

/* The default vocabulary comes from $BATON_SHARED and every tokenizer key is copied. */
static void test_default_vocab(void)
{
    CHECK_INT(run_mkmodel("-q", "-t", "f16", "-o", path_in("spm.gguf"), NULL), 0);
    char err[512];
    struct gguf *g = NULL, *v = NULL;
    CHECK_INT(gguf_open(path_in("spm.gguf"), &g, err, sizeof(err)), 0);
    CHECK_INT(gguf_open(vocab_spm, &v, err, sizeof(err)), 0);
    if (g && v) {
        CHECK_INT(get_u32(g, "llama.vocab_size"), 32000);
        int copied = 0;
        for (int64_t i = 0; i < gguf_n_kv(v); i++) {
            const struct gguf_kv *a = gguf_kv_at(v, i);
            if (strncmp(a->key, "tokenizer.", 10)) continue;
            const struct gguf_kv *b = gguf_find_kv(g, a->key);
            CHECK(b != NULL);
            if (!b) continue;
            copied++;
            CHECK_INT(b->type, a->type);
            CHECK_INT(b->arr_type, a->arr_type);
            CHECK_INT(b->arr_n, a->arr_n);
            if (a->type == GGUF_TYPE_STRING)
                CHECK(a->v.str.len == b->v.str.len &&
                      !memcmp(a->v.str.data, b->v.str.data, a->v.str.len));
        }
        CHECK(copied >= 5);
        struct gguf_str s1, s2;
        const struct gguf_kv *ta = gguf_find_kv(v, "tokenizer.ggml.tokens");
        const struct gguf_kv *tb = gguf_find_kv(g, "tokenizer.ggml.tokens");
        for (uint64_t i = 0; ta && tb && i < 32000; i += 997) {
            CHECK_INT(gguf_arr_str(ta, i, &s1), 0);
            CHECK_INT(gguf_arr_str(tb, i, &s2), 0);
            CHECK(s1.len == s2.len && !memcmp(s1.data, s2.data, s1.len));
        }
        /* the log names the vocabulary used */
        FILE *f = fopen(path_in("log.txt"), "r");
        char line[8192] = "";
        bool named = false;
        while (f && fgets(line, sizeof(line), f))
            if (strstr(line, "ggml-vocab-llama-spm.gguf")) named = true;
        if (f) fclose(f);
        CHECK(named);
    }
    gguf_close(g);
    gguf_close(v);
}

/* Values: norms near 1, projections ~1/sqrt(fan_in), output ~4/sqrt(n_embd); every type holds
 * the same underlying weights, so a q8_0 model dequantises close to the f32 one. */
static void test_values(void)
{
    char err[512];
    struct gguf *a = NULL, *b = NULL;
    CHECK_INT(gguf_open(path_in("f32.gguf"), &a, err, sizeof(err)), 0);
    CHECK_INT(gguf_open(path_in("q8_0.gguf"), &b, err, sizeof(err)), 0);
    if (!a || !b) goto out;
    double m, sd;
    stats(gguf_find_tensor(a, "blk.0.attn_norm.weight"), 1, &m, &sd);
    CHECK_NEAR(m, 1.0, 0.05);
    CHECK(sd > 0.01 && sd < 0.2);
    stats(gguf_find_tensor(a, "blk.1.attn_q.weight"), 64, &m, &sd);
    CHECK_NEAR(m, 0.0, 0.02);
    CHECK_NEAR(sd, 1.0 / 8, 0.02);
    stats(gguf_find_tensor(a, "blk.0.ffn_down.weight"), 64, &m, &sd);
    CHECK_NEAR(sd, 1.0 / sqrt(192), 0.015);
    stats(gguf_find_tensor(a, "output.weight"), 512, &m, &sd);
    CHECK_NEAR(sd, 4.0 / 8, 0.05);
    stats(gguf_find_tensor(a, "token_embd.weight"), 512, &m, &sd);
    CHECK_NEAR(sd, 1.0, 0.1);
    /* different tensors differ */
    const struct gguf_tensor *q0 = gguf_find_tensor(a, "blk.0.attn_q.weight");
    const struct gguf_tensor *q1 = gguf_find_tensor(a, "blk.1.attn_q.weight");
    CHECK(memcmp(q0->data, q1->data, q0->nbytes) != 0);
    /* rows differ within a tensor */
    CHECK(memcmp(q0->data, (const char *)q0->data + 256, 256) != 0);

    const char *names[] = {"token_embd.weight", "blk.0.attn_k.weight", "blk.1.ffn_up.weight",
                           "output.weight"};
    for (int k = 0; k < 4; k++) {
        const struct gguf_tensor *ta = gguf_find_tensor(a, names[k]);
        const struct gguf_tensor *tb = gguf_find_tensor(b, names[k]);
        CHECK(ta && tb);
        if (!ta || !tb) continue;
        float *x = malloc((size_t)ta->ne[0] * sizeof(float));
        float *y = malloc((size_t)ta->ne[0] * sizeof(float));
        double err2 = 0, sig2 = 0;
        const size_t rsa = bt_row_size(ta->type, ta->ne[0]), rsb = bt_row_size(tb->type, tb->ne[0]);
        for (int64_t r = 0; r < ta->ne[1]; r++) {
            bt_dequantize_row(ta->type, (const char *)ta->data + r * rsa, x, ta->ne[0]);
            bt_dequantize_row(tb->type, (const char *)tb->data + r * rsb, y, tb->ne[0]);
            for (int64_t i = 0; i < ta->ne[0]; i++) {
                err2 += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
                sig2 += (double)x[i] * x[i];
            }
        }
        if (!(sqrt(err2 / sig2) < 0.01))
            fprintf(stderr, "  %s: q8_0 vs f32 relative error %g\n", names[k], sqrt(err2 / sig2));
        CHECK(sqrt(err2 / sig2) < 0.01);
        free(x);
        free(y);
    }
out:
    gguf_close(a);
    gguf_close(b);
}

static void test_determinism(void)
{
    CHECK_INT(run_mkmodel("-q", "-t", "q4_K", "--n-embd", "256", "--n-ff", "512", "-s", "5", "-j",
                          "1", "--vocab", vocab_small, "-o", path_in("d1.gguf"), NULL),
              0);
    CHECK_INT(run_mkmodel("-q", "-t", "q4_K", "--n-embd", "256", "--n-ff", "512", "-s", "5", "-j",
                          "3", "--vocab", vocab_small, "-o", path_in("d2.gguf"), NULL),
              0);
    CHECK_INT(run_mkmodel("-q", "-t", "q4_K", "--n-embd", "256", "--n-ff", "512", "-s", "6",
                          "--vocab", vocab_small, "-o", path_in("d3.gguf"), NULL),
              0);
    CHECK(same_files(path_in("d1.gguf"), path_in("d2.gguf")));
    CHECK(!same_files(path_in("d1.gguf"), path_in("d3.gguf")));
    /* no temporary file left behind */
    CHECK(access(path_in("d1.gguf.tmp"), F_OK) != 0);
}

static void test_errors(void)
{
    const char *out = path_in("bad.gguf");
    CHECK_INT(run_mkmodel("--help", NULL), 0);
    CHECK(run_mkmodel("-q", "--vocab", vocab_small, NULL) != 0); /* no -o */
    CHECK(run_mkmodel("-q", "-t", "q8_K", "--vocab", vocab_small, "-o", out, NULL) != 0); /* act */
    CHECK(run_mkmodel("-q", "-t", "iq2_xxs", "--vocab", vocab_small, "-o", out, NULL) != 0);
    CHECK(run_mkmodel("-q", "--n-head", "5", "--vocab", vocab_small, "-o", out, NULL) != 0);
    CHECK(run_mkmodel("-q", "--n-head-kv", "3", "--vocab", vocab_small, "-o", out, NULL) != 0);
    CHECK(run_mkmodel("-q", "--n-embd", "0", "--vocab", vocab_small, "-o", out, NULL) != 0);
    CHECK(run_mkmodel("-q", "--n-layer", "x", "--vocab", vocab_small, "-o", out, NULL) != 0);
    CHECK(run_mkmodel("-q", "--preset", "huge", "--vocab", vocab_small, "-o", out, NULL) != 0);
    CHECK(run_mkmodel("-q", "--arch", "gpt2", "--vocab", vocab_small, "-o", out, NULL) != 0);
    CHECK(run_mkmodel("-q", "--bogus", "--vocab", vocab_small, "-o", out, NULL) != 0);
    CHECK(run_mkmodel("-q", "--vocab", path_in("missing.gguf"), "-o", out, NULL) != 0);
    CHECK(run_mkmodel("-q", "--vocab", vocab_small, "-o", path_in("no/such/dir/x.gguf"), NULL) !=
          0);
    CHECK(run_mkmodel("-q", "--vocab", vocab_small, "-o", out, "--seed", NULL) != 0);
    CHECK(access(out, F_OK) != 0);
}

int main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/baton-mkmodel-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    /* meson passes the executable; by hand, $BATON_BUILD/baton-mkmodel */
    snprintf(mkmodel, sizeof(mkmodel), "%s",
             argc > 1 ? argv[1] : t_path("BATON_BUILD", "baton-mkmodel"));
    snprintf(vocab_small, sizeof(vocab_small), "%s",
             t_path("BATON_SHARED", "models/stories260K.gguf"));
    snprintf(vocab_spm, sizeof(vocab_spm), "%s",
             t_path("BATON_SHARED", "models/vocab/ggml-vocab-llama-spm.gguf"));

    test_structure();
    test_default_vocab();
    test_values();
    test_determinism();
    test_errors();

    /* clean up the temporary directory */
    const char *files[] = {"f32.gguf",  "q8_0.gguf",  "q4_0.gguf", "q4_K.gguf",
                           "wide.gguf", "qwen2.gguf", "spm.gguf",  "d1.gguf",
                           "d2.gguf",   "d3.gguf",    "log.txt"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) unlink(path_in(files[i]));
    if (rmdir(dir) != 0) fprintf(stderr, "note: %s not removed\n", dir);
    return t_done();
}
