/* baton-kbench: micro-benchmark of the CPU matrix kernels (kern_matmul).
 *
 *   baton-kbench [-t 1,2] [--types q4_0,q8_0,...] [--isa avx512|avx2|scalar] [--quick]
 *
 * For each weight type and thread count: matvec (m = 1) speed as weight bytes per second on the
 * TinyLlama-1.1B shapes (rows x n) 2048x2048, 256x2048, 5632x2048, 2048x5632, 32000x2048, with
 * the weights cycled through copies larger than the last-level cache, so they stream from
 * memory as in decoding; matmul (m = 128, prefill) speed in GFLOP/s; and a plain streaming read
 * bandwidth measured right before each type, as the yardstick (figures are also given as % of
 * it).
 * The last lines estimate whole-model TinyLlama speeds (layer matrices + output head only) to
 * compare with llama.cpp. Run it on an idle machine; numbers drift, ratios less so. */
#include "kernels.h"
#include "log.h"
#include "quant.h"
#include "threadpool.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct shape {
    int64_t rows, n;
    int per_layer; /* how many of these a TinyLlama layer has (0: output head) */
};

static const struct shape shapes[] = {
    {2048, 2048, 2}, /* wq, wo */
    {256, 2048, 2},  /* wk, wv */
    {5632, 2048, 2}, /* w1, w3 */
    {2048, 5632, 1}, /* w2 */
    {32000, 2048, 0} /* output */
};
#define NSHAPES (int)(sizeof(shapes) / sizeof(shapes[0]))
#define N_LAYER 22

static uint64_t rng_s = 88172645463325252ull;

static float frand(void)
{
    rng_s ^= rng_s << 13;
    rng_s ^= rng_s >> 7;
    rng_s ^= rng_s << 17;
    return (float)((double)(rng_s >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static uint8_t *make_weights(uint32_t t, int64_t rows, int64_t n)
{
    size_t rb = bt_row_size(t, n);
    uint8_t *w = aligned_alloc(64, (rb * (size_t)rows + 63) & ~(size_t)63);
    float *tmp = malloc(sizeof(float) * (size_t)n);
    if (!w || !tmp) {
        free(w);
        free(tmp);
        return NULL;
    }
    /* quantise a few distinct rows and repeat them: quantising everything is slow */
    for (int64_t r = 0; r < rows; r++) {
        if (r < 16) {
            for (int64_t i = 0; i < n; i++) tmp[i] = frand() * 0.05f;
            bt_quantize_row(t, tmp, w + (size_t)r * rb, n);
        } else {
            memcpy(w + (size_t)r * rb, w + (size_t)(r % 16) * rb, rb);
        }
    }
    free(tmp);
    return w;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* matvec over copies (total >= min_bytes): seconds per call, median of reps */
static double bench_mv(struct bt_pool *p, uint32_t t, const uint8_t *w, int64_t rows, int64_t n,
                       const float *x, float *y, size_t min_bytes, int quick)
{
    size_t bytes = bt_row_size(t, n) * (size_t)rows;
    int ncopy = (int)((min_bytes + bytes - 1) / bytes);
    if (ncopy < 1) ncopy = 1;
    uint8_t **cp = malloc(sizeof(*cp) * (size_t)ncopy);
    for (int i = 0; i < ncopy; i++) {
        cp[i] = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (!cp[i]) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        memcpy(cp[i], w, bytes);
    }
    int calls = ncopy < 8 ? 8 : ncopy;
    double ts[9];
    int reps = quick ? 3 : 9;
    kern_matmul(p, t, cp[0], rows, n, x, 1, y); /* warm up */
    for (int r = 0; r < reps; r++) {
        double t0 = bt_now_s();
        for (int i = 0; i < calls; i++) kern_matmul(p, t, cp[i % ncopy], rows, n, x, 1, y);
        ts[r] = (bt_now_s() - t0) / calls;
    }
    for (int i = 0; i < ncopy; i++) free(cp[i]);
    free(cp);
    qsort(ts, (size_t)reps, sizeof(double), cmp_double);
    return ts[reps / 2];
}

static double bench_mm(struct bt_pool *p, uint32_t t, const uint8_t *w, int64_t rows, int64_t n,
                       const float *x, int64_t m, float *y, int quick)
{
    double ts[5];
    int reps = quick ? 2 : 5;
    kern_matmul(p, t, w, rows, n, x, m, y);
    for (int r = 0; r < reps; r++) {
        double t0 = bt_now_s();
        kern_matmul(p, t, w, rows, n, x, m, y);
        ts[r] = bt_now_s() - t0;
    }
    qsort(ts, (size_t)reps, sizeof(double), cmp_double);
    return ts[0];
}

static void usage(void)
{
    fputs("usage: baton-kbench [-t 1,2] [--types q4_0,q8_0,f16,...] [--isa avx512|avx2|scalar] "
          "[-m 128] [--quick]\n",
          stderr);
}

struct kbench_opts {
    int quick;
    int64_t mm_m;         /* rows of the matmul's activations */
    int threads[8], nthr; /* -t */
    uint32_t types[16];   /* --types */
    int ntypes;
};

/* "1,2": at most 8 thread counts in 1..256. */
static int parse_threads(const char *arg, struct kbench_opts *o)
{
    for (const char *s = arg; *s && o->nthr < 8;) {
        o->threads[o->nthr] = atoi(s);
        if (o->threads[o->nthr] < 1 || o->threads[o->nthr] > 256) return BT_EINVAL;
        o->nthr++;
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return 0;
}

/* "q4_0,q8_0": at most 16 types the kernels support (message printed). */
static int parse_types(const char *arg, struct kbench_opts *o)
{
    char tbuf[256];
    snprintf(tbuf, sizeof(tbuf), "%s", arg);
    for (char *tok = strtok(tbuf, ","); tok && o->ntypes < 16; tok = strtok(NULL, ",")) {
        int t = bt_type_from_name(tok);
        if (t < 0 || !kern_supports((uint32_t)t)) {
            fprintf(stderr, "baton-kbench: unknown or unsupported type %s\n", tok);
            return BT_EINVAL;
        }
        o->types[o->ntypes++] = (uint32_t)t;
    }
    return 0;
}

/* 0; BT_EINVAL for bad usage (exit 2), BT_ERR when --isa cannot be set (exit 1); printed. */
static int parse_args(int argc, char **argv, struct kbench_opts *o)
{
    const char *types_arg = "q4_0,q8_0,f16,bf16,f32,q4_1,q5_0,q5_1,q4_K,q5_K,q6_K";
    const char *threads_arg = "1,2";
    *o = (struct kbench_opts){.mm_m = 128};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            o->quick = 1;
        } else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
            threads_arg = argv[++i];
        } else if (!strcmp(argv[i], "--types") && i + 1 < argc) {
            types_arg = argv[++i];
        } else if (!strcmp(argv[i], "-m") && i + 1 < argc) {
            o->mm_m = atoi(argv[++i]);
            if (o->mm_m < 1 || o->mm_m > 4096) goto usage;
        } else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            int rc = kern_set_isa(argv[++i]);
            if (rc < 0) {
                fprintf(stderr, "baton-kbench: isa %s: %s\n", argv[i], bt_strstatus(rc));
                return BT_ERR;
            }
        } else {
            goto usage;
        }
    }
    if (parse_threads(threads_arg, o) < 0) goto usage;
    return parse_types(types_arg, o);
usage:
    usage();
    return BT_EINVAL;
}

/* One type on the pool p: a line per shape, then the whole-model estimate. */
static int bench_type(struct bt_pool *p, uint32_t t, const struct kbench_opts *o, size_t min_bytes,
                      const float *x, float *y)
{
    /* the yardstick, measured right before (bandwidth drifts on a shared machine) */
    double bw = kern_measure_read_bw(p, min_bytes);
    printf("%-6s read bandwidth %.1f GB/s\n", bt_type_name(t), bw * 1e-9);
    double mv_s_model = 0, mm_s_model = 0, bytes_model = 0;
    for (int si = 0; si < NSHAPES; si++) {
        const struct shape *sh = &shapes[si];
        uint8_t *w = make_weights(t, sh->rows, sh->n);
        if (!w) return BT_ENOMEM;
        size_t bytes = bt_row_size(t, sh->n) * (size_t)sh->rows;
        double tmv = bench_mv(p, t, w, sh->rows, sh->n, x, y, min_bytes, o->quick);
        double tmm = bench_mm(p, t, w, sh->rows, sh->n, x, o->mm_m, y, o->quick);
        double gbs = (double)bytes / tmv;
        double gflops = 2.0 * (double)sh->rows * (double)sh->n * (double)o->mm_m / tmm;
        printf("%-6s %5" PRId64 "x%-5" PRId64 " %9.1f %5.0f%% %10.1f %9.1f\n", bt_type_name(t),
               sh->rows, sh->n, gbs * 1e-9, 100.0 * gbs / bw, tmv * 1e6, gflops * 1e-9);
        int mult = sh->per_layer ? sh->per_layer * N_LAYER : 1;
        mv_s_model += tmv * mult;
        mm_s_model += tmm * mult;
        bytes_model += (double)bytes * mult;
        free(w);
    }
    printf("%-6s TinyLlama matrices: decode %.1f tok/s (bandwidth bound %.1f, %.0f%%), "
           "prefill-%" PRId64 " %.0f tok/s\n",
           bt_type_name(t), 1.0 / mv_s_model, bw / bytes_model,
           100.0 * (bytes_model / bw) / mv_s_model, o->mm_m, (double)o->mm_m / mm_s_model);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    struct kbench_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc < 0) return rc == BT_EINVAL ? 2 : 1;
    const size_t min_bytes = o.quick ? (192u << 20) : (256u << 20); /* >> the 32 MiB L3 */
    printf("isa %s; matvec weights cycled through >= %zu MiB; matmul m = %" PRId64 "\n", kern_isa(),
           min_bytes >> 20, o.mm_m);

    int64_t maxn = 5632;
    float *x = malloc(sizeof(float) * (size_t)(maxn * o.mm_m));
    float *y = malloc(sizeof(float) * (size_t)(32000 * o.mm_m));
    for (int64_t i = 0; i < maxn * o.mm_m; i++) x[i] = frand();

    for (int ti = 0; ti < o.nthr; ti++) {
        struct bt_pool *p = bt_pool_new(o.threads[ti]);
        if (!p) return 1;
        printf("\n== %d thread%s\n", o.threads[ti], o.threads[ti] > 1 ? "s" : "");
        printf("%-6s %-11s %9s %6s %10s %9s\n", "type", "rows x n", "mv GB/s", "%bw", "mv us",
               "mm GFLOP/s");
        for (int k = 0; k < o.ntypes; k++)
            if (bench_type(p, o.types[k], &o, min_bytes, x, y) < 0) return 1;
        bt_pool_free(p);
    }
    free(x);
    free(y);
    return 0;
}
