/* baton-bench: prompt-processing and generation speed of the engine (CPU or a CUDA device), and
 * how close decoding comes to the memory-bandwidth bound.
 *
 *   baton-bench -m MODEL [-t THREADS] [-p 128] [-n 64] [-d 0] [-r 3] [--kv-type f16|f32]
 *               [--json] [--device cpu|cuda:N] [-B 8,32]
 *
 * --device cuda:N runs the forward pass on that GPU; the bound then uses the device's peak
 * memory bandwidth (memory clock x bus width x 2, from the driver) instead of a measured one.
 * -B: batched decoding, B sequences stepping together (one token each per forward pass), n
 * steps after d positions each, reported as total tokens/s; default none on the CPU, 8,32 on a CUDA
 * device.
 *
 * pp: one forward pass over a batch of p tokens (random ids, fixed seed) from an empty cache.
 * tg: n single-token decode steps after d positions already in the cache (-d, default 0: from an
 * empty cache; the d positions are filled untimed, max(p, B) tokens per pass), so attention
 * runs over d..d+n positions. Each is repeated r times (after a warm-up pass) and the median is
 * reported. The bound: weight bytes read per decoded token (every layer
 * matrix, the output head, one embedding row) divided by the read bandwidth measured in the same
 * run with kern_measure_read_bw on the same threads.
 *
 * The model, KV cache, pool and forward state are built as the engines build them (stage_build,
 * the whole model as one stage); the timed loops call fwd_eval themselves and pick the argmax
 * (the stage's samplers are not used). */
#include "args.h"
#include "cuda.h"
#include "device.h"
#include "forward.h"
#include "gguf.h"
#include "kernels.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_MAX_REPS    100
#define BENCH_MAX_BATCHES 8

struct bench_opts {
    const char *model;
    int n_threads, n_prompt, n_gen, depth, reps; /* n_threads 0: one per core */
    uint32_t kv_type;
    bool json;
    int device;                                /* DEV_CPU or a CUDA device */
    int batches[BENCH_MAX_BATCHES], n_batches; /* -B */
    bool batches_set;
};

/* What is measured: the whole model as one stage, on a device. */
struct bench {
    struct gguf *g;
    struct stage *s; /* max(batches) sequences, batches of max(p, batches) tokens */
    char dev_label[160];
    double peak_bw; /* bytes/s: the device's peak, 0 on the CPU */
};

/* The figures. */
struct bench_result {
    double pp_tps, tg_tps;               /* tokens/s */
    double batch_tps[BENCH_MAX_BATCHES]; /* tokens/s of every -B batch */
    double bw;                           /* read bandwidth, bytes/s */
    double bound;                        /* tokens/s the bandwidth allows */
};

static void usage(FILE *f)
{
    fputs("usage: baton-bench -m MODEL [-t THREADS] [-p 128] [-n 64] [-d 0] [-r 3] "
          "[--kv-type f16|f32] [--json] [--device cpu|cuda:N] [-B 8,32]\n",
          f);
}

/* 0, 1 for --help, or a negative status (message printed). */
static int parse_args(int argc, char **argv, struct bench_opts *o)
{
    *o = (struct bench_opts){
        .n_prompt = 128, .n_gen = 64, .reps = 3, .kv_type = BT_F16, .device = DEV_CPU};
    const struct args_opt opts[] = {
        {.name = "--json", .kind = ARGS_FLAG, .dst = &o->json},
        {.name = "-m", .kind = ARGS_STR, .dst = &o->model},
        {.name = "-t", .kind = ARGS_INT, .dst = &o->n_threads, .lo = 1, .hi = 256},
        {.name = "-p", .kind = ARGS_INT, .dst = &o->n_prompt, .lo = 1, .hi = 1 << 16},
        {.name = "-n", .kind = ARGS_INT, .dst = &o->n_gen, .lo = 1, .hi = 1 << 16},
        {.name = "-d", .kind = ARGS_INT, .dst = &o->depth, .lo = 0, .hi = 1 << 20},
        {.name = "-r", .kind = ARGS_INT, .dst = &o->reps, .lo = 1, .hi = BENCH_MAX_REPS},
        {.name = "--kv-type", .kind = ARGS_KV_TYPE, .dst = &o->kv_type},
        {.name = "--device", .kind = ARGS_DEVICE, .dst = &o->device},
        {.name = "-B",
         .kind = ARGS_INT_LIST,
         .dst = o->batches,
         .lo = 1,
         .hi = 4096,
         .max = BENCH_MAX_BATCHES,
         .n = &o->n_batches,
         .given = &o->batches_set},
    };
    int rc = args_parse("baton-bench", argc, argv, opts, (int)(sizeof(opts) / sizeof(opts[0])));
    if (rc) return rc;
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

/* One timed run of p prompt tokens (random ids, fixed seed; logits of the last) over an empty
 * cache; returns seconds or a negative value. */
static double run_pp(struct stage *s, int p, char *err, size_t errsz)
{
    const float *out;
    int n_out;
    uint64_t x = 12345;
    stage_batch_clear(s);
    for (int i = 0; i < p; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        stage_batch_add(s, 0, i, (int32_t)((x >> 33) % (uint64_t)s->n_vocab),
                        STAGE_PROMPT | (i == p - 1 ? STAGE_WANT : 0u));
    }
    kv_seq_clear(s->kv, 0);
    double t0 = bt_now_s();
    if (stage_run(s, NULL, &out, &n_out, err, errsz) < 0) return -1;
    return bt_now_s() - t0;
}

/* Fill positions 0..depth-1 of sequences 0..nb-1 with token ids (untimed), at most max_batch
 * tokens per pass, through the stage's batch arrays (tok, pos, seq, want). */
static int fill_depth(struct stage *s, int nb, int depth, char *err, size_t errsz)
{
    const float *out;
    int n_out;
    for (int i = 0; i < nb; i++)
        for (int p0 = 0; p0 < depth; p0 += s->max_batch) {
            const int n = depth - p0 < s->max_batch ? depth - p0 : s->max_batch;
            for (int k = 0; k < n; k++) {
                s->tok[k] = (p0 + k + i) % s->n_vocab;
                s->pos[k] = p0 + k;
                s->seq[k] = i;
                s->want[k] = k == n - 1;
            }
            struct fwd_batch b = {.n = n,
                                  .token = s->tok,
                                  .pos = s->pos,
                                  .seq = s->seq,
                                  .logits = s->want,
                                  .prompt = true};
            if (fwd_eval(s->f, &b, &out, &n_out, err, errsz) < 0) return -1;
        }
    return 0;
}

/* n_gen steps of nb sequences decoding together (seqs 0..nb-1, each its own argmax, each after
 * depth positions in the cache); seconds, or a negative value. The stage's batch arrays are
 * overwritten: run after the pp runs. */
static double run_batch(struct stage *s, int nb, int n_gen, int depth, char *err, size_t errsz)
{
    const float *out;
    int n_out;
    const int n_vocab = s->n_vocab;
    for (int i = 0; i < nb; i++) kv_seq_clear(s->kv, i);
    if (fill_depth(s, nb, depth, err, errsz) < 0) return -1;
    int32_t *tok = s->tok, *pos = s->pos, *seq = s->seq;
    for (int i = 0; i < nb; i++) {
        tok[i] = (1 + i) % n_vocab;
        pos[i] = depth;
        seq[i] = i;
        s->want[i] = 1;
    }
    double t0 = bt_now_s();
    for (int st = 0; st < n_gen; st++) {
        struct fwd_batch b = {.n = nb, .token = tok, .pos = pos, .seq = seq, .logits = s->want};
        if (fwd_eval(s->f, &b, &out, &n_out, err, errsz) < 0) return -1;
        for (int i = 0; i < nb; i++) {
            const float *l = out + (size_t)i * n_vocab;
            int best = 0;
            for (int k = 1; k < n_vocab; k++)
                if (l[k] > l[best]) best = k;
            tok[i] = best; /* the next token: the argmax, as greedy decoding would */
            pos[i]++;
        }
    }
    return bt_now_s() - t0;
}

/* Open the model, name the device, build the stage and put the prompt batch in it: p random ids
 * (fixed seed), logits of the last. */
static int bench_open(const struct bench_opts *o, struct bench *b)
{
    char err[512] = "";
    int rc, max_nb = 1;
    for (int i = 0; i < o->n_batches; i++) max_nb = o->batches[i] > max_nb ? o->batches[i] : max_nb;
    const struct stage_params sp = {
        .l0 = 0,
        .l1 = -1,
        .n_seq = max_nb,
        .n_ctx = o->n_prompt > o->depth + o->n_gen ? o->n_prompt : o->depth + o->n_gen,
        .max_batch = o->n_prompt > max_nb ? o->n_prompt : max_nb,
        .n_blocks = STAGE_OWN_BLOCKS,
        .kv_type = o->kv_type,
        .n_threads = o->n_threads,
        .device = o->device};
    snprintf(b->dev_label, sizeof(b->dev_label), "cpu");
    if ((rc = gguf_open(o->model, &b->g, err, sizeof(err))) < 0) goto fail;
    if (o->device != DEV_CPU) {
        char name[128];
        if ((rc = cuda_probe(o->device, name, sizeof(name), &b->peak_bw, err, sizeof(err))) < 0)
            goto fail;
        snprintf(b->dev_label, sizeof(b->dev_label), "cuda:%d %s", o->device, name);
    }
    if ((rc = stage_build(b->g, &sp, &b->s, err, sizeof(err))) < 0) goto fail;
    return 0;
fail:
    bt_error("%s", err);
    return rc;
}

/* pp and tg r times each after a warm-up, then every -B batch r times: medians as tokens/s. */
static int bench_measure(const struct bench_opts *o, struct bench *b, struct bench_result *res)
{
    char err[512] = "";
    struct stage *s = b->s;
    double pp_t[BENCH_MAX_REPS], tg_t[BENCH_MAX_REPS];
    /* warm-up: faults the weights in and wakes the pool */
    if (run_pp(s, o->n_prompt, err, sizeof(err)) < 0 || run_batch(s, 1, 2, 0, err, sizeof(err)) < 0)
        goto fail;
    for (int r = 0; r < o->reps; r++) {
        pp_t[r] = run_pp(s, o->n_prompt, err, sizeof(err));
        tg_t[r] = run_batch(s, 1, o->n_gen, o->depth, err, sizeof(err));
        if (pp_t[r] < 0 || tg_t[r] < 0) goto fail;
    }
    res->pp_tps = o->n_prompt / median(pp_t, o->reps);
    res->tg_tps = o->n_gen / median(tg_t, o->reps);
    for (int i = 0; i < o->n_batches; i++) {
        double t[BENCH_MAX_REPS];
        for (int r = 0; r < o->reps; r++)
            if ((t[r] = run_batch(s, o->batches[i], o->n_gen, o->depth, err, sizeof(err))) < 0)
                goto fail;
        res->batch_tps[i] = (double)o->batches[i] * o->n_gen / median(t, o->reps);
    }
    return 0;
fail:
    bt_error("forward pass failed: %s", err);
    return BT_ERR;
}

/* The bandwidth bound: the device's peak, or the read bandwidth measured over a buffer well
 * beyond the caches (at least 256 MiB), over the weight bytes read per token. */
static int bench_bound(const struct bench_opts *o, const struct bench *b, struct bench_result *res)
{
    const struct model *m = b->s->m;
    size_t bw_bytes = m->n_bytes_token > (256u << 20) ? (size_t)m->n_bytes_token : 256u << 20;
    res->bw = o->device != DEV_CPU ? b->peak_bw : kern_measure_read_bw(b->s->pool, bw_bytes);
    if (res->bw <= 0) {
        bt_error("could not measure the read bandwidth");
        return BT_ERR;
    }
    res->bound = res->bw / (double)m->n_bytes_token;
    return 0;
}

static void report_json(const struct bench_opts *o, const struct bench *b,
                        const struct bench_result *res)
{
    const struct model *m = b->s->m;
    printf("{\"model\": \"");
    for (const char *c = o->model; *c; c++) {
        if (*c == '"' || *c == '\\')
            printf("\\%c", *c);
        else if ((unsigned char)*c < 0x20)
            printf("\\u%04x", *c);
        else
            putchar(*c);
    }
    printf(
        "\", \"arch\": \"%s\", \"type\": \"%s\", \"threads\": %d, \"isa\": \"%s\", "
        "\"n_prompt\": %d, \"n_gen\": %d, \"depth\": %d, \"reps\": %d, \"pp_tokens_per_s\": %.2f, "
        "\"tg_tokens_per_s\": %.2f, \"bytes_per_token\": %llu, \"read_bw_bytes_per_s\": "
        "%.0f, \"bound_tokens_per_s\": %.2f, \"tg_ratio_to_bound\": %.3f, \"device\": "
        "\"%s\", \"bw_source\": \"%s\", \"batches\": [",
        model_arch_name(m->hp.arch), main_type(m), b->s->n_threads, kern_isa(), o->n_prompt,
        o->n_gen, o->depth, o->reps, res->pp_tps, res->tg_tps, (unsigned long long)m->n_bytes_token,
        res->bw, res->bound, res->tg_tps / res->bound, b->dev_label,
        o->device != DEV_CPU ? "peak" : "measured");
    for (int i = 0; i < o->n_batches; i++)
        printf("%s{\"batch\": %d, \"tokens_per_s\": %.2f}", i ? ", " : "", o->batches[i],
               res->batch_tps[i]);
    printf("]}\n");
}

static void report_text(const struct bench_opts *o, const struct bench *b,
                        const struct bench_result *res)
{
    const struct model *m = b->s->m;
    char depth[48];
    snprintf(depth, sizeof(depth), " (after %d positions)", o->depth);
    printf("model      %s (%s, %s, %.1f MiB read per token)\n", o->model,
           model_arch_name(m->hp.arch), main_type(m), m->n_bytes_token / 1048576.0);
    printf("threads    %d (%s)\n", b->s->n_threads, kern_isa());
    printf("device     %s\n", b->dev_label);
    printf("pp %-6d  %10.2f tokens/s\n", o->n_prompt, res->pp_tps);
    printf("tg %-6d  %10.2f tokens/s%s\n", o->n_gen, res->tg_tps, o->depth ? depth : "");
    for (int i = 0; i < o->n_batches; i++)
        printf("tg x%-5d  %10.2f tokens/s (%d sequences together)\n", o->batches[i],
               res->batch_tps[i], o->batches[i]);
    printf("read bw    %10.2f GB/s (%s)\n", res->bw / 1e9,
           o->device != DEV_CPU ? "device peak" : "measured");
    printf("bound      %10.2f tokens/s (tg at %.1f %% of it)\n", res->bound,
           100 * res->tg_tps / res->bound);
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    struct bench b = {0};
    struct bench_result res = {0};
    int status = 1;

    int rc = parse_args(argc, argv, &o);
    if (rc == 1) {
        usage(stdout);
        return 0;
    }
    if (rc < 0) return 1;
    if (bench_open(&o, &b) < 0) goto out;
    const struct model *m = b.s->m;
    bt_info("%s: %s %s, %.1f MiB of weights, %d threads, isa %s, device %s", o.model,
            model_arch_name(m->hp.arch), main_type(m), m->n_bytes / 1048576.0, b.s->n_threads,
            kern_isa(), b.dev_label);
    if (bench_measure(&o, &b, &res) < 0 || bench_bound(&o, &b, &res) < 0) goto out;
    if (o.json)
        report_json(&o, &b, &res);
    else
        report_text(&o, &b, &res);
    status = 0;
out:
    stage_free(b.s);
    gguf_close(b.g);
    return status;
}
