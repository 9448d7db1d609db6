/* baton-bench: prompt-processing and generation speed of the engine (CPU or a CUDA device), and
 * how close decoding comes to the memory-bandwidth bound.
 *
 *   baton-bench -m MODEL [-t THREADS] [-p 128] [-n 64] [-r 3] [--kv-type f16|f32] [--json]
 *               [--device cpu|cuda:N] [-B 8,32]
 *
 * --device cuda:N runs the forward pass on that GPU; the bound then uses the device's peak
 * memory bandwidth (memory clock x bus width x 2, from the driver) instead of a measured one.
 * -B: batched decoding, B sequences stepping together (one token each per forward pass), n
 * steps, reported as total tokens/s; default none on the CPU, 8,32 on a CUDA device.
 *
 * pp: one forward pass over a batch of p tokens (random ids, fixed seed) from an empty cache.
 * tg: n single-token decode steps from an empty cache. Each is repeated r times (after a warm-up
 * pass) and the median is reported. The bound: weight bytes read per decoded token (every layer
 * matrix, the output head, one embedding row) divided by the read bandwidth measured in the same
 * run with kern_measure_read_bw on the same threads. */
#include "cuda.h"
#include "device.h"
#include "forward.h"
#include "gguf.h"
#include "kernels.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "threadpool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BENCH_MAX_REPS    100
#define BENCH_MAX_BATCHES 8

struct bench_opts {
    const char *model;
    int n_threads, n_prompt, n_gen, reps;
    uint32_t kv_type;
    bool json;
    int device;                                /* DEV_CPU or a CUDA device */
    int batches[BENCH_MAX_BATCHES], n_batches; /* -B */
    bool batches_set;
};

static void usage(FILE *f)
{
    fputs("usage: baton-bench -m MODEL [-t THREADS] [-p 128] [-n 64] [-r 3] [--kv-type f16|f32] "
          "[--json] [--device cpu|cuda:N] [-B 8,32]\n",
          f);
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return BT_EINVAL;
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, struct bench_opts *o)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (struct bench_opts){.n_threads = ncpu > 0 ? (int)ncpu : 1,
                             .n_prompt = 128,
                             .n_gen = 64,
                             .reps = 3,
                             .kv_type = BT_F16,
                             .device = DEV_CPU};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "baton-bench: %s needs a value (or is unknown)\n", a);
            return BT_EINVAL;
        }
        i++;
        if (!strcmp(a, "-m"))
            o->model = v;
        else if (!strcmp(a, "-t"))
            rc = parse_int(v, 1, 256, &o->n_threads);
        else if (!strcmp(a, "-p"))
            rc = parse_int(v, 1, 1 << 16, &o->n_prompt);
        else if (!strcmp(a, "-n"))
            rc = parse_int(v, 1, 1 << 16, &o->n_gen);
        else if (!strcmp(a, "-r"))
            rc = parse_int(v, 1, BENCH_MAX_REPS, &o->reps);
        else if (!strcmp(a, "--kv-type")) {
            int t = bt_type_from_name(v);
            if (t != BT_F16 && t != BT_F32)
                rc = BT_EINVAL;
            else
                o->kv_type = (uint32_t)t;
        } else if (!strcmp(a, "--device")) {
            char derr[160];
            if ((rc = dev_parse(v, &o->device, derr, sizeof(derr))) < 0) {
                fprintf(stderr, "baton-bench: %s\n", derr);
                return rc;
            }
        } else if (!strcmp(a, "-B")) {
            char buf[128];
            snprintf(buf, sizeof(buf), "%s", v);
            o->n_batches = 0;
            o->batches_set = true;
            for (char *sv, *tk = strtok_r(buf, ",", &sv); tk && rc == 0;
                 tk = strtok_r(NULL, ",", &sv)) {
                if (o->n_batches == BENCH_MAX_BATCHES)
                    rc = BT_EINVAL;
                else
                    rc = parse_int(tk, 1, 4096, &o->batches[o->n_batches++]);
            }
        } else {
            fprintf(stderr, "baton-bench: unknown option %s\n", a);
            return BT_EINVAL;
        }
        if (rc < 0) {
            fprintf(stderr, "baton-bench: bad value for %s: '%s'\n", a, v);
            return rc;
        }
    }
    if (!o->model) {
        usage(stderr);
        return BT_EINVAL;
    }
    if (!o->batches_set && o->device != DEV_CPU) {
        o->batches[0] = 8;
        o->batches[1] = 32;
        o->n_batches = 2;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The weight type most of the bytes are in, for the report. */
static const char *main_type(const struct model *m)
{
    uint64_t by_type[BT_TYPE_COUNT] = {0};
    for (int l = 0; l < m->l1 - m->l0; l++) {
        const struct model_layer *L = &m->layers[l];
        const struct model_tensor *ws[] = {&L->wq,     &L->wk,   &L->wv,    &L->wo,
                                           &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++)
            by_type[ws[i]->type] += bt_row_size(ws[i]->type, ws[i]->cols) * (uint64_t)ws[i]->rows;
    }
    int best = 0;
    for (int i = 0; i < BT_TYPE_COUNT; i++)
        if (by_type[i] > by_type[best]) best = i;
    return bt_type_name((uint32_t)best);
}

/* One timed run of b over an empty cache; returns seconds or a negative value. */
static double run_pp(struct fwd *f, struct kv *kv, const struct fwd_batch *b, char *err,
                     size_t errsz)
{
    const float *out;
    int n_out;
    kv_seq_clear(kv, 0);
    double t0 = bt_now_s();
    if (fwd_eval(f, b, &out, &n_out, err, errsz) < 0) return -1;
    return bt_now_s() - t0;
}

static double run_tg(struct fwd *f, struct kv *kv, int n_gen, int n_vocab, char *err, size_t errsz)
{
    const float *out;
    int n_out;
    int32_t tok = 1 % n_vocab, pos = 0, seq = 0;
    uint8_t want = 1;
    kv_seq_clear(kv, 0);
    double t0 = bt_now_s();
    for (int i = 0; i < n_gen; i++) {
        struct fwd_batch b = {.n = 1, .token = &tok, .pos = &pos, .seq = &seq, .logits = &want};
        if (fwd_eval(f, &b, &out, &n_out, err, errsz) < 0) return -1;
        /* next token: the argmax, as greedy decoding would */
        int best = 0;
        for (int k = 1; k < n_vocab; k++)
            if (out[k] > out[best]) best = k;
        tok = best;
        pos++;
    }
    return bt_now_s() - t0;
}

/* n_gen steps of nb sequences decoding together (seqs 0..nb-1, each its own argmax); seconds. */
static double run_batch(struct fwd *f, struct kv *kv, int nb, int n_gen, int n_vocab, int32_t *tok,
                        int32_t *pos, int32_t *seq, uint8_t *want, char *err, size_t errsz)
{
    const float *out;
    int n_out;
    for (int i = 0; i < nb; i++) {
        kv_seq_clear(kv, i);
        tok[i] = (1 + i) % n_vocab;
        pos[i] = 0;
        seq[i] = i;
        want[i] = 1;
    }
    double t0 = bt_now_s();
    for (int s = 0; s < n_gen; s++) {
        struct fwd_batch b = {.n = nb, .token = tok, .pos = pos, .seq = seq, .logits = want};
        if (fwd_eval(f, &b, &out, &n_out, err, errsz) < 0) return -1;
        for (int i = 0; i < nb; i++) {
            const float *l = out + (size_t)i * n_vocab;
            int best = 0;
            for (int k = 1; k < n_vocab; k++)
                if (l[k] > l[best]) best = k;
            tok[i] = best;
            pos[i]++;
        }
    }
    return bt_now_s() - t0;
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    char err[512] = "";
    struct gguf *g = NULL;
    struct model *m = NULL;
    struct bt_pool *pool = NULL;
    struct kv *kv = NULL;
    struct fwd *f = NULL;
    int32_t *toks = NULL, *pos = NULL, *seq = NULL;
    uint8_t *want = NULL;
    double pp_t[BENCH_MAX_REPS], tg_t[BENCH_MAX_REPS];
    int rc, status = 1;

    if (parse_args(argc, argv, &o) < 0) return 1;
    if ((rc = gguf_open(o.model, &g, err, sizeof(err))) < 0 ||
        (rc = model_load(g, 0, -1, &m, err, sizeof(err))) < 0) {
        bt_error("%s", err);
        goto out;
    }
    const int n_vocab = m->hp.n_vocab, n_ctx = o.n_prompt > o.n_gen ? o.n_prompt : o.n_gen;
    int max_nb = 1;
    for (int i = 0; i < o.n_batches; i++) max_nb = o.batches[i] > max_nb ? o.batches[i] : max_nb;
    const int max_batch = o.n_prompt > max_nb ? o.n_prompt : max_nb;
    char dev_label[160] = "cpu";
    double peak_bw = 0;
    if (o.device != DEV_CPU) {
        char name[128];
        if ((rc = cuda_probe(o.device, name, sizeof(name), &peak_bw, err, sizeof(err))) < 0) {
            bt_error("%s", err);
            goto out;
        }
        snprintf(dev_label, sizeof(dev_label), "cuda:%d %s", o.device, name);
    }
    pool = bt_pool_new(o.n_threads);
    if (!pool) goto out;
    if ((rc = kv_new(m, max_nb, n_ctx, o.kv_type, &kv, err, sizeof(err))) < 0 ||
        (rc = fwd_new_dev(m, kv, pool, o.device, max_batch, max_nb, &f, err, sizeof(err))) < 0) {
        bt_error("%s", err);
        goto out;
    }
    toks = malloc((size_t)max_batch * sizeof(*toks));
    pos = malloc((size_t)max_batch * sizeof(*pos));
    seq = calloc((size_t)max_batch, sizeof(*seq));
    want = calloc((size_t)max_batch, 1);
    if (!toks || !pos || !seq || !want) {
        bt_error("out of memory");
        goto out;
    }
    uint64_t x = 12345;
    for (int i = 0; i < o.n_prompt; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        toks[i] = (int32_t)((x >> 33) % (uint64_t)n_vocab);
        pos[i] = i;
    }
    want[o.n_prompt - 1] = 1;
    struct fwd_batch pp = {.n = o.n_prompt, .token = toks, .pos = pos, .seq = seq, .logits = want};

    model_prefetch(m);
    bt_info("%s: %s %s, %.1f MiB of weights, %d threads, isa %s, device %s", o.model,
            model_arch_name(m->hp.arch), main_type(m), m->n_bytes / 1048576.0, o.n_threads,
            kern_isa(), dev_label);
    /* warm-up: faults the weights in and wakes the pool */
    if (run_pp(f, kv, &pp, err, sizeof(err)) < 0 || run_tg(f, kv, 2, n_vocab, err, sizeof(err)) < 0)
        goto fail_eval;
    for (int r = 0; r < o.reps; r++) {
        pp_t[r] = run_pp(f, kv, &pp, err, sizeof(err));
        tg_t[r] = run_tg(f, kv, o.n_gen, n_vocab, err, sizeof(err));
        if (pp_t[r] < 0 || tg_t[r] < 0) goto fail_eval;
    }
    const double pp_tps = o.n_prompt / median(pp_t, o.reps);
    const double tg_tps = o.n_gen / median(tg_t, o.reps);
    double batch_tps[BENCH_MAX_BATCHES];
    for (int i = 0; i < o.n_batches; i++) {
        double t[BENCH_MAX_REPS];
        for (int r = 0; r < o.reps; r++)
            if ((t[r] = run_batch(f, kv, o.batches[i], o.n_gen, n_vocab, toks, pos, seq, want, err,
                                  sizeof(err))) < 0)
                goto fail_eval;
        batch_tps[i] = (double)o.batches[i] * o.n_gen / median(t, o.reps);
    }
    /* bandwidth: the device's peak, or measured over a buffer well beyond the caches (at least
     * 256 MiB) */
    size_t bw_bytes = m->n_bytes_token > (256u << 20) ? (size_t)m->n_bytes_token : 256u << 20;
    const double bw = o.device != DEV_CPU ? peak_bw : kern_measure_read_bw(pool, bw_bytes);
    if (bw <= 0) {
        bt_error("could not measure the read bandwidth");
        goto out;
    }
    const double bound = bw / (double)m->n_bytes_token;

    if (o.json) {
        printf("{\"model\": \"");
        for (const char *c = o.model; *c; c++) {
            if (*c == '"' || *c == '\\')
                printf("\\%c", *c);
            else if ((unsigned char)*c < 0x20)
                printf("\\u%04x", *c);
            else
                putchar(*c);
        }
        printf("\", \"arch\": \"%s\", \"type\": \"%s\", \"threads\": %d, \"isa\": \"%s\", "
               "\"n_prompt\": %d, \"n_gen\": %d, \"reps\": %d, \"pp_tokens_per_s\": %.2f, "
               "\"tg_tokens_per_s\": %.2f, \"bytes_per_token\": %llu, \"read_bw_bytes_per_s\": "
               "%.0f, \"bound_tokens_per_s\": %.2f, \"tg_ratio_to_bound\": %.3f, \"device\": "
               "\"%s\", \"bw_source\": \"%s\", \"batches\": [",
               model_arch_name(m->hp.arch), main_type(m), o.n_threads, kern_isa(), o.n_prompt,
               o.n_gen, o.reps, pp_tps, tg_tps, (unsigned long long)m->n_bytes_token, bw, bound,
               tg_tps / bound, dev_label, o.device != DEV_CPU ? "peak" : "measured");
        for (int i = 0; i < o.n_batches; i++)
            printf("%s{\"batch\": %d, \"tokens_per_s\": %.2f}", i ? ", " : "", o.batches[i],
                   batch_tps[i]);
        printf("]}\n");
    } else {
        printf("model      %s (%s, %s, %.1f MiB read per token)\n", o.model,
               model_arch_name(m->hp.arch), main_type(m), m->n_bytes_token / 1048576.0);
        printf("threads    %d (%s)\n", o.n_threads, kern_isa());
        printf("device     %s\n", dev_label);
        printf("pp %-6d  %10.2f tokens/s\n", o.n_prompt, pp_tps);
        printf("tg %-6d  %10.2f tokens/s\n", o.n_gen, tg_tps);
        for (int i = 0; i < o.n_batches; i++)
            printf("tg x%-5d  %10.2f tokens/s (%d sequences together)\n", o.batches[i],
                   batch_tps[i], o.batches[i]);
        printf("read bw    %10.2f GB/s (%s)\n", bw / 1e9,
               o.device != DEV_CPU ? "device peak" : "measured");
        printf("bound      %10.2f tokens/s (tg at %.1f %% of it)\n", bound, 100 * tg_tps / bound);
    }
    status = 0;
    goto out;
fail_eval:
    bt_error("forward pass failed: %s", err);
out:
    free(toks);
    free(pos);
    free(seq);
    free(want);
    fwd_free(f);
    kv_free(kv);
    bt_pool_free(pool);
    model_free(m);
    gguf_close(g);
    return status;
}
