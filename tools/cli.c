/* baton-cli: generate a continuation of a prompt on the CPU, in one process.
 *
 *   baton-cli -m MODEL -p PROMPT [-n N] [-c CTX] [-t THREADS] [--temp T] [--seed S]
 *             [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R] [--repeat-last-n N]
 *             [--kv-type f16|f32] [-b BATCH] [--device cpu|cuda:N]
 *
 * Only the generated text goes to stdout, flushed token by token (UTF-8-safe: a character split
 * over tokens is printed when complete); logs go to stderr. --temp 0 is greedy. The prompt gets
 * a BOS token when the vocabulary asks for one (tokenizer.ggml.add_bos_token), as llama.cpp does.
 * Generation stops after N tokens or at an end-of-generation token. -c defaults to the model's
 * training context; a prompt plus N tokens that does not fit is an error (exit 1). */
#include "device.h"
#include "forward.h"
#include "gguf.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "sampler.h"
#include "threadpool.h"
#include "tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

struct cli_opts {
    const char *model;
    const char *prompt;
    int n_predict;
    int n_ctx; /* 0: the model's training context */
    int n_threads;
    int n_batch;
    uint32_t kv_type;
    int device; /* DEV_CPU or a CUDA device */
    bool seed_set;
    struct smp_params sp;
};

static void usage(FILE *f)
{
    fputs("usage: baton-cli -m MODEL -p PROMPT [options]\n"
          "  -n N                 tokens to generate (default 128; -1: until the context is full)\n"
          "  -c CTX               context size (default: the model's training context)\n"
          "  -t THREADS           threads (default: number of cores)\n"
          "  -b BATCH             prompt tokens per forward pass (default 512)\n"
          "  --temp T             temperature; 0 = greedy (default 0.8)\n"
          "  --seed S             random seed (default: random)\n"
          "  --top-k K            (default 40; 0 = off)\n"
          "  --top-p P            (default 0.95; 1 = off)\n"
          "  --min-p P            (default 0.05; 0 = off)\n"
          "  --repeat-penalty R   (default 1.0 = off)\n"
          "  --repeat-last-n N    tokens the penalty looks back over (default 64)\n"
          "  --kv-type f16|f32    KV cache element type (default f16)\n"
          "  --device D           cpu or cuda:N, where the forward pass runs (default cpu)\n",
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

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || v != v) return BT_EINVAL;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct cli_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->n_predict = 128;
    o->n_batch = 512;
    o->kv_type = BT_F16;
    o->device = DEV_CPU;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    o->n_threads = ncpu > 0 ? (int)ncpu : 1;
    smp_params_default(&o->sp);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!v) {
            fprintf(stderr, "baton-cli: %s needs a value (or is unknown)\n", a);
            return BT_EINVAL;
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt"))
            o->prompt = v;
        else if (!strcmp(a, "-n"))
            rc = parse_int(v, -1, 1 << 24, &o->n_predict);
        else if (!strcmp(a, "-c"))
            rc = parse_int(v, 1, 1 << 24, &o->n_ctx);
        else if (!strcmp(a, "-t"))
            rc = parse_int(v, 1, 256, &o->n_threads);
        else if (!strcmp(a, "-b"))
            rc = parse_int(v, 1, 1 << 16, &o->n_batch);
        else if (!strcmp(a, "--temp"))
            rc = parse_float(v, &o->sp.temp);
        else if (!strcmp(a, "--top-k"))
            rc = parse_int(v, 0, 1 << 24, &o->sp.top_k);
        else if (!strcmp(a, "--top-p"))
            rc = parse_float(v, &o->sp.top_p);
        else if (!strcmp(a, "--min-p"))
            rc = parse_float(v, &o->sp.min_p);
        else if (!strcmp(a, "--repeat-penalty"))
            rc = parse_float(v, &o->sp.repeat_penalty);
        else if (!strcmp(a, "--repeat-last-n"))
            rc = parse_int(v, 0, 65536, &o->sp.penalty_last_n);
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o->sp.seed = strtoull(v, &end, 10);
            rc = errno || end == v || *end ? BT_EINVAL : 0;
            o->seed_set = true;
        } else if (!strcmp(a, "--kv-type")) {
            int t = bt_type_from_name(v);
            if (t != BT_F16 && t != BT_F32)
                rc = BT_EINVAL;
            else
                o->kv_type = (uint32_t)t;
        } else if (!strcmp(a, "--device")) {
            char derr[160];
            if ((rc = dev_parse(v, &o->device, derr, sizeof(derr))) < 0) {
                fprintf(stderr, "baton-cli: %s\n", derr);
                return rc;
            }
        } else {
            fprintf(stderr, "baton-cli: unknown option %s\n", a);
            return BT_EINVAL;
        }
        if (rc < 0) {
            fprintf(stderr, "baton-cli: bad value for %s: '%s'\n", a, v);
            return rc;
        }
    }
    if (!o->model || !o->prompt) {
        usage(stderr);
        return BT_EINVAL;
    }
    if (!o->seed_set && getrandom(&o->sp.seed, sizeof(o->sp.seed), 0) != sizeof(o->sp.seed))
        o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return 0;
}

/* Write n bytes to stdout now. */
static void emit(const char *buf, int n)
{
    if (n > 0) {
        fwrite(buf, 1, (size_t)n, stdout);
        fflush(stdout);
    }
}

int main(int argc, char **argv)
{
    struct cli_opts o;
    char err[512] = "";
    struct gguf *g = NULL;
    struct model *m = NULL;
    struct tok *t = NULL;
    struct bt_pool *pool = NULL;
    struct kv *kv = NULL;
    struct fwd *f = NULL;
    struct smp *smp = NULL;
    int32_t *toks = NULL, *pos = NULL, *seq = NULL;
    uint8_t *want = NULL;
    char *piece = NULL;
    int rc, status = 1;

    if (parse_args(argc, argv, &o) < 0) return 1;

    if ((rc = gguf_open(o.model, &g, err, sizeof(err))) < 0 ||
        (rc = model_load(g, 0, -1, &m, err, sizeof(err))) < 0 ||
        (rc = tok_load(g, &t, err, sizeof(err))) < 0) {
        bt_error("%s", err);
        goto out;
    }
    const struct model_hparams *hp = &m->hp;
    if (tok_n_vocab(t) != hp->n_vocab) {
        bt_error("%s: tokenizer has %d tokens, the model %d", o.model, tok_n_vocab(t), hp->n_vocab);
        goto out;
    }
    const int n_ctx = o.n_ctx ? o.n_ctx : hp->n_ctx_train;
    if (n_ctx > hp->n_ctx_train)
        bt_warn("context %d is larger than the model's training context %d", n_ctx,
                hp->n_ctx_train);

    /* prompt */
    const size_t plen = strlen(o.prompt);
    int n_prompt = tok_encode(t, o.prompt, plen, true, true, NULL, 0);
    if (n_prompt < 0) {
        bt_error("cannot tokenize the prompt: %s", bt_strstatus(n_prompt));
        goto out;
    }
    if (n_prompt == 0) {
        bt_error("the prompt is empty (and the vocabulary adds no BOS token)");
        goto out;
    }
    const int n_predict = o.n_predict < 0 ? n_ctx - n_prompt : o.n_predict;
    if ((long)n_prompt + n_predict > n_ctx) {
        bt_error("prompt (%d tokens) + %d tokens to generate do not fit in the context of %d "
                 "(raise -c or lower -n)",
                 n_prompt, n_predict, n_ctx);
        goto out;
    }
    const int n_batch = o.n_batch < n_prompt ? o.n_batch : n_prompt;
    toks = malloc((size_t)n_prompt * sizeof(*toks));
    pos = malloc((size_t)n_batch * sizeof(*pos));
    seq = calloc((size_t)n_batch, sizeof(*seq));
    want = calloc((size_t)n_batch, 1);
    piece = malloc((size_t)tok_max_piece(t) + 8);
    if (!toks || !pos || !seq || !want || !piece) {
        bt_error("out of memory");
        goto out;
    }
    if (tok_encode(t, o.prompt, plen, true, true, toks, n_prompt) != n_prompt) {
        bt_error("cannot tokenize the prompt");
        goto out;
    }

    pool = bt_pool_new(o.n_threads);
    if (!pool) goto out;
    if ((rc = kv_new(m, 1, n_ctx, o.kv_type, &kv, err, sizeof(err))) < 0 ||
        (rc = fwd_new_dev(m, kv, pool, o.device, n_batch, 1, &f, err, sizeof(err))) < 0 ||
        (rc = smp_new(&o.sp, hp->n_vocab, &smp, err, sizeof(err))) < 0) {
        bt_error("%s", err);
        goto out;
    }
    model_prefetch(m);
    bt_info("%s: %s, %d layers, %d tokens of context, %d threads, prompt %d tokens", o.model,
            model_arch_name(hp->arch), hp->n_layer, n_ctx, o.n_threads, n_prompt);

    /* prompt processing, in batches; logits of the last token only */
    const float *logits = NULL;
    int n_out = 0;
    double t0 = bt_now_s();
    for (int i = 0; i < n_prompt; i += n_batch) {
        struct fwd_batch b = {.n = n_prompt - i < n_batch ? n_prompt - i : n_batch,
                              .token = toks + i,
                              .pos = pos,
                              .seq = seq,
                              .logits = want};
        for (int j = 0; j < b.n; j++) {
            pos[j] = i + j;
            want[j] = i + j == n_prompt - 1;
        }
        if ((rc = fwd_eval(f, &b, &logits, &n_out, err, sizeof(err))) < 0) {
            bt_error("prompt: %s", err);
            goto out;
        }
    }
    for (int i = 0; i < n_prompt; i++) smp_accept(smp, toks[i]);
    double t1 = bt_now_s();

    /* generation */
    struct tok_stream ts;
    tok_stream_init(&ts, t);
    int n_gen = 0, p = n_prompt;
    want[0] = 1;
    while (n_gen < n_predict) {
        int32_t id = smp_sample(smp, logits, NULL);
        if (id < 0) {
            bt_error("sampling failed: every token is excluded");
            goto out;
        }
        n_gen++;
        if (tok_is_eog(t, id)) break;
        int k = tok_stream_push(&ts, id, piece, tok_max_piece(t) + 8);
        if (k < 0) {
            bt_error("cannot decode token %d", id);
            goto out;
        }
        emit(piece, k);
        if (n_gen == n_predict) break;
        pos[0] = p++;
        struct fwd_batch b = {.n = 1, .token = &id, .pos = pos, .seq = seq, .logits = want};
        if ((rc = fwd_eval(f, &b, &logits, &n_out, err, sizeof(err))) < 0) {
            bt_error("generation: %s", err);
            goto out;
        }
    }
    emit(piece, tok_stream_flush(&ts, piece, tok_max_piece(t) + 8));
    double t2 = bt_now_s();
    bt_info("prompt: %d tokens in %.3f s (%.1f t/s); generation: %d tokens in %.3f s (%.1f t/s)",
            n_prompt, t1 - t0, n_prompt / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_gen, t2 - t1,
            n_gen / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    status = 0;
out:
    free(toks);
    free(pos);
    free(seq);
    free(want);
    free(piece);
    smp_free(smp);
    fwd_free(f);
    kv_free(kv);
    bt_pool_free(pool);
    tok_free(t);
    model_free(m);
    gguf_close(g);
    return status;
}
