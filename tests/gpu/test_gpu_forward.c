/* The CUDA forward pass against the CPU one, in one process (suite gpu; exit 77 without a GPU).
 *
 * For each model (stories260K F32, synthetic llama of F16 / BF16 / Q8_0 / Q4_0 / Q4_K / Q6_K /
 * Q5_K (host-converted to F16), a qwen2 with biases and NEOX RoPE, a tied head), the same
 * token stream goes through a CPU stage and a CUDA stage: a 37-token prompt (the dequantise +
 * cuBLAS path), then a 5-token batch mixing two sequences and single-token steps (the own
 * matrix-vector kernels), every row asking for logits. Per row: max |cpu - gpu| as a fraction of
 * the CPU row's logit range, and whether the argmax agrees.
 *   F32 weights: max |diff| <= 1e-3 of the range (the engine tests' tolerance).
 *   F16/BF16: activations are rounded to the weight type for cuBLAS: <= 1e-2, argmax >= 95 %.
 *   block types: the CPU quantises activations to 8 bits, the GPU does not: argmax >= 90 %.
 * Then a split: layers [0, k) on the GPU feeding [k, n) on the CPU through host memory (what a
 * mixed pipeline does over MPI) must match the all-CPU logits to 1e-3 of the range (F32).
 *
 * Written without a GPU at hand: compiled and linked, never run (docs/gpu.md). */
#include "../unit/t.h"

#include "cuda.h"
#include "device.h"
#include "forward.h"
#include "gguf.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "threadpool.h"

#include <unistd.h>

#define MAXB 64

static struct bt_pool *POOL;

struct stage {
    struct model *m;
    struct kv *kv;
    struct fwd *f;
};

static void stage_close(struct stage *s)
{
    fwd_free(s->f);
    kv_free(s->kv);
    model_free(s->m);
    memset(s, 0, sizeof(*s));
}

static int stage_open(struct stage *s, const struct gguf *g, int l0, int l1, int device,
                      uint32_t kv_type)
{
    char err[512] = "";
    memset(s, 0, sizeof(*s));
    if (model_load(g, l0, l1, &s->m, err, sizeof(err)) < 0 ||
        kv_new(s->m, 2, 256, kv_type, &s->kv, err, sizeof(err)) < 0 ||
        fwd_new_dev(s->m, s->kv, POOL, device, MAXB, MAXB, &s->f, err, sizeof(err)) < 0) {
        fprintf(stderr, "stage [%d, %d) on %d: %s\n", l0, l1, device, err);
        stage_close(s);
        return -1;
    }
    return 0;
}

static int argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

struct score {
    double worst; /* max |diff| / range over rows */
    int rows, agree;
};

static void compare_rows(const float *a, const float *b, int n_rows, int V, struct score *s)
{
    for (int r = 0; r < n_rows; r++) {
        const float *x = a + (size_t)r * V, *y = b + (size_t)r * V;
        float lo = x[0], hi = x[0];
        double d = 0;
        for (int i = 0; i < V; i++) {
            lo = x[i] < lo ? x[i] : lo;
            hi = x[i] > hi ? x[i] : hi;
            d = fabs((double)x[i] - y[i]) > d ? fabs((double)x[i] - y[i]) : d;
        }
        const double rel = hi > lo ? d / (hi - lo) : d;
        s->worst = rel > s->worst ? rel : s->worst;
        s->rows++;
        s->agree += argmax(x, V) == argmax(y, V);
    }
}

/* The batches of the test: (n, seq of each row) with positions continuing each sequence. */
struct plan {
    int n;
    int seq1; /* rows from this index on belong to sequence 1 */
};
static const struct plan PLAN[] = {{37, 37}, {5, 2}, {1, 1}, {1, 0}, {1, 1}, {3, 3}, {12, 6}};

static void run_compare(const char *label, const char *path, uint32_t kv_type, double tol,
                        int min_agree_pct)
{
    char err[512] = "";
    struct gguf *g = NULL;
    struct stage cpu = {0}, gpu = {0};
    struct score s = {0};
    float *lc = NULL;

    if (gguf_open(path, &g, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: %s\n", label, err);
        CHECK(0);
        return;
    }
    if (stage_open(&cpu, g, 0, -1, DEV_CPU, kv_type) < 0 ||
        stage_open(&gpu, g, 0, -1, 0, kv_type) < 0) {
        CHECK(0);
        goto out;
    }
    const int V = cpu.m->hp.n_vocab;
    lc = malloc((size_t)MAXB * V * sizeof(float));
    int32_t tok[MAXB], pos[MAXB], seq[MAXB], len[2] = {0, 0};
    uint8_t want[MAXB];
    uint64_t x = 42;
    memset(want, 1, sizeof(want));
    for (size_t p = 0; p < sizeof(PLAN) / sizeof(PLAN[0]); p++) {
        const int n = PLAN[p].n;
        for (int i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            tok[i] = (int32_t)((x >> 33) % (uint64_t)V);
            seq[i] = i >= PLAN[p].seq1;
            pos[i] = len[seq[i]]++;
        }
        struct fwd_batch b = {n, tok, NULL, pos, seq, want, true};
        const float *oc, *og;
        int nc, ng;
        if (fwd_eval(cpu.f, &b, &oc, &nc, err, sizeof(err)) < 0) {
            fprintf(stderr, "%s: cpu: %s\n", label, err);
            CHECK(0);
            goto out;
        }
        memcpy(lc, oc, (size_t)nc * V * sizeof(float));
        if (fwd_eval(gpu.f, &b, &og, &ng, err, sizeof(err)) < 0) {
            fprintf(stderr, "%s: cuda: %s\n", label, err);
            CHECK(0);
            goto out;
        }
        CHECK_INT(nc, n);
        CHECK_INT(ng, n);
        compare_rows(lc, og, n < nc ? n : nc, V, &s);
    }
    fprintf(stderr, "%-12s max|diff| %.3g of the range, argmax agrees %d/%d\n", label, s.worst,
            s.agree, s.rows);
    CHECK(s.worst <= tol);
    CHECK(s.agree * 100 >= s.rows * min_agree_pct);
out:
    free(lc);
    stage_close(&gpu);
    stage_close(&cpu);
    gguf_close(g);
}

/* Layers [0, k) on the GPU, [k, n) on the CPU, activations through host memory; against one CPU
 * stage of all layers. */
static void run_split(const char *path)
{
    char err[512] = "";
    struct gguf *g = NULL;
    struct stage all = {0}, a = {0}, b = {0};
    struct score s = {0};
    float *ref = NULL;

    if (gguf_open(path, &g, err, sizeof(err)) < 0) {
        CHECK(0);
        return;
    }
    struct model_hparams hp;
    if (model_hparams_read(g, &hp, err, sizeof(err)) < 0) {
        CHECK(0);
        goto out;
    }
    const int k = hp.n_layer / 2 > 0 ? hp.n_layer / 2 : 1;
    if (stage_open(&all, g, 0, -1, DEV_CPU, BT_F32) < 0 || stage_open(&a, g, 0, k, 0, BT_F32) < 0 ||
        stage_open(&b, g, k, -1, DEV_CPU, BT_F32) < 0) {
        CHECK(0);
        goto out;
    }
    const int V = hp.n_vocab;
    ref = malloc((size_t)MAXB * V * sizeof(float));
    int32_t tok[MAXB], pos[MAXB], seq[MAXB] = {0};
    uint8_t want[MAXB];
    memset(want, 1, sizeof(want));
    int len = 0;
    for (int step = 0; step < 6; step++) {
        const int n = step == 0 ? 20 : 1;
        for (int i = 0; i < n; i++) {
            tok[i] = (int32_t)((len * 7 + 3) % V);
            pos[i] = len++;
        }
        struct fwd_batch full = {n, tok, NULL, pos, seq, want, true};
        const float *o, *act;
        int no, na;
        if (fwd_eval(all.f, &full, &o, &no, err, sizeof(err)) < 0) break;
        memcpy(ref, o, (size_t)no * V * sizeof(float));
        struct fwd_batch first = {n, tok, NULL, pos, seq, NULL, true};
        if (fwd_eval(a.f, &first, &act, &na, err, sizeof(err)) < 0) break;
        struct fwd_batch second = {n, NULL, act, pos, seq, want, true};
        if (fwd_eval(b.f, &second, &o, &no, err, sizeof(err)) < 0) break;
        compare_rows(ref, o, no, V, &s);
    }
    if (err[0]) fprintf(stderr, "split: %s\n", err);
    CHECK(!err[0]);
    fprintf(stderr, "split gpu[0,%d) + cpu[%d,%d): max|diff| %.3g of the range, argmax %d/%d\n", k,
            k, hp.n_layer, s.worst, s.agree, s.rows);
    CHECK(s.rows > 0);
    CHECK(s.worst <= 1e-3);
    CHECK_INT(s.agree, s.rows);
out:
    free(ref);
    stage_close(&b);
    stage_close(&a);
    stage_close(&all);
    gguf_close(g);
}

static int mkmodel(const char *args, const char *out)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "'%s' -q -s 3 %s --vocab '%s' -o '%s'",
             t_path("BATON_BUILD", "baton-mkmodel"), args,
             t_path("BATON_SHARED", "models/stories260K.gguf"), out);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    char err[512], name[128];
    if (cuda_probe(0, name, sizeof(name), NULL, err, sizeof(err)) < 0) {
        printf("SKIP: %s\n", err);
        return 77;
    }
    fprintf(stderr, "cuda:0 is %s\n", name);
    bt_log_set_level(BT_LOG_WARN);
    POOL = bt_pool_new(2);

    const char *stories = t_path("BATON_SHARED", "models/stories260K.gguf");
    run_compare("stories f32", stories, BT_F32, 1e-3, 99);
    run_compare("stories kv16", stories, BT_F16, 1e-3, 99);
    run_split(stories);

    /* synthetic models: n_embd 256 so that the K-quants apply to every matrix */
    static const struct {
        const char *label, *args;
        double tol;
        int agree;
    } M[] = {
        {"f32", "-t f32 --n-embd 256 --n-ff 512", 1e-3, 99},
        {"f16", "-t f16 --n-embd 256 --n-ff 512", 1e-2, 95},
        {"bf16", "-t bf16 --n-embd 256 --n-ff 512", 1e-2, 95},
        {"q8_0", "-t q8_0 --n-embd 256 --n-ff 512", 0.1, 90},
        {"q4_0", "-t q4_0 --n-embd 256 --n-ff 512", 0.1, 90},
        {"q4_K", "-t q4_K --n-embd 256 --n-ff 512", 0.1, 90},
        {"q6_K", "-t q6_K --n-embd 256 --n-ff 512", 0.1, 90},
        {"q5_K", "-t q5_K --n-embd 256 --n-ff 512", 0.1, 90},
        {"qwen2 f32", "-t f32 --arch qwen2 --n-embd 256 --n-ff 512", 1e-3, 99},
        {"tied q8_0", "-t q8_0 --tied --n-embd 256 --n-ff 512", 0.1, 90},
    };
    char dir[] = "/tmp/baton-gpu-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    for (size_t i = 0; i < sizeof(M) / sizeof(M[0]); i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/m%zu.gguf", dir, i);
        if (mkmodel(M[i].args, path) < 0) {
            fprintf(stderr, "baton-mkmodel %s failed\n", M[i].args);
            CHECK(0);
            continue;
        }
        run_compare(M[i].label, path, BT_F32, M[i].tol, M[i].agree);
        if (i == 8) run_split(path); /* qwen2: biases and NEOX RoPE across the split */
        unlink(path);
    }
    rmdir(dir);
    bt_pool_free(POOL);
    return t_done();
}
