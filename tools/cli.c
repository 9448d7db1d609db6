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
#include "args.h"
#include "device.h"
#include "gguf.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "sampler.h"
#include "stage.h"
#include "tokenizer.h"

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
    int n_ctx;     /* 0: the model's training context */
    int n_threads; /* 0: one per core */
    int n_batch;
    uint32_t kv_type;
    int device; /* DEV_CPU or a CUDA device */
    bool seed_set;
    struct smp_params sp;
};

/* What main holds, built step by step and freed by cli_free. */
struct cli {
    struct gguf *g;
    struct tok *t;
    struct stage *s; /* the whole model as one stage: weights, KV cache, pool, forward state */
    struct smp *smp; /* the sequence's sampler */
    int32_t *toks;   /* (n_prompt) */
    int n_prompt, n_predict, n_ctx, n_batch;
    char *piece; /* (piece_cap) decoded text of one token */
    int piece_cap;
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

/* 0, 1 for --help, or a negative status (message printed). */
static int parse_args(int argc, char **argv, struct cli_opts *o)
{
    *o = (struct cli_opts){.n_predict = 128, .n_batch = 512, .kv_type = BT_F16, .device = DEV_CPU};
    smp_params_default(&o->sp);
    const struct args_opt opts[] = {
        {.name = "-m", .alt = "--model", .kind = ARGS_STR, .dst = &o->model},
        {.name = "-p", .alt = "--prompt", .kind = ARGS_STR, .dst = &o->prompt},
        {.name = "-n", .kind = ARGS_INT, .dst = &o->n_predict, .lo = -1, .hi = 1 << 24},
        {.name = "-c", .kind = ARGS_INT, .dst = &o->n_ctx, .lo = 1, .hi = 1 << 24},
        {.name = "-t", .kind = ARGS_INT, .dst = &o->n_threads, .lo = 1, .hi = 256},
        {.name = "-b", .kind = ARGS_INT, .dst = &o->n_batch, .lo = 1, .hi = 1 << 16},
        {.name = "--temp", .kind = ARGS_FLOAT, .dst = &o->sp.temp},
        {.name = "--top-k", .kind = ARGS_INT, .dst = &o->sp.top_k, .lo = 0, .hi = 1 << 24},
        {.name = "--top-p", .kind = ARGS_FLOAT, .dst = &o->sp.top_p},
        {.name = "--min-p", .kind = ARGS_FLOAT, .dst = &o->sp.min_p},
        {.name = "--repeat-penalty", .kind = ARGS_FLOAT, .dst = &o->sp.repeat_penalty},
        {.name = "--repeat-last-n",
         .kind = ARGS_INT,
         .dst = &o->sp.penalty_last_n,
         .lo = 0,
         .hi = 65536},
        {.name = "--seed", .kind = ARGS_U64, .dst = &o->sp.seed, .given = &o->seed_set},
        {.name = "--kv-type", .kind = ARGS_KV_TYPE, .dst = &o->kv_type},
        {.name = "--device", .kind = ARGS_DEVICE, .dst = &o->device},
    };
    int rc = args_parse("baton-cli", argc, argv, opts, (int)(sizeof(opts) / sizeof(opts[0])));
    if (rc) return rc;
    if (!o->model || !o->prompt) {
        usage(stderr);
        return BT_EINVAL;
    }
    if (!o->seed_set && getrandom(&o->sp.seed, sizeof(o->sp.seed), 0) != sizeof(o->sp.seed))
        o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return 0;
}

/* Open the model file and its tokenizer; check they agree; the context size. */
static int cli_open(const struct cli_opts *o, struct cli *c)
{
    char err[512] = "";
    struct model_hparams hp;
    int rc;
    if ((rc = gguf_open(o->model, &c->g, err, sizeof(err))) < 0 ||
        (rc = model_hparams_read(c->g, &hp, err, sizeof(err))) < 0 ||
        (rc = tok_load(c->g, &c->t, err, sizeof(err))) < 0) {
        bt_error("%s", err);
        return rc;
    }
    if (tok_n_vocab(c->t) != hp.n_vocab) {
        bt_error("%s: tokenizer has %d tokens, the model %d", o->model, tok_n_vocab(c->t),
                 hp.n_vocab);
        return BT_EFORMAT;
    }
    c->n_ctx = o->n_ctx ? o->n_ctx : hp.n_ctx_train;
    return 0;
}

/* The prompt's tokens (with BOS when the vocabulary asks for one), checked against the context;
 * how many tokens to generate and to feed per forward pass. */
static int cli_prompt(const struct cli_opts *o, struct cli *c)
{
    const size_t plen = strlen(o->prompt);
    int n = tok_encode(c->t, o->prompt, plen, true, true, NULL, 0);
    if (n < 0) {
        bt_error("cannot tokenize the prompt: %s", bt_strstatus(n));
        return n;
    }
    if (n == 0) {
        bt_error("the prompt is empty (and the vocabulary adds no BOS token)");
        return BT_EINVAL;
    }
    c->n_prompt = n;
    c->n_predict = o->n_predict < 0 ? c->n_ctx - n : o->n_predict;
    if ((long)n + c->n_predict > c->n_ctx) {
        bt_error("prompt (%d tokens) + %d tokens to generate do not fit in the context of %d "
                 "(raise -c or lower -n)",
                 n, c->n_predict, c->n_ctx);
        return BT_EINVAL;
    }
    c->n_batch = o->n_batch < n ? o->n_batch : n;
    if (!(c->toks = malloc((size_t)n * sizeof(*c->toks)))) {
        bt_error("out of memory");
        return BT_ENOMEM;
    }
    if (tok_encode(c->t, o->prompt, plen, true, true, c->toks, n) != n) {
        bt_error("cannot tokenize the prompt");
        return BT_EINVAL;
    }
    return 0;
}

/* The model as one stage (one sequence, batches of n_batch tokens), the sampler, the text
 * buffer. */
static int cli_build(const struct cli_opts *o, struct cli *c)
{
    char err[512] = "";
    const struct stage_params sp = {.l0 = 0,
                                    .l1 = -1,
                                    .n_seq = 1,
                                    .n_ctx = c->n_ctx,
                                    .max_batch = c->n_batch,
                                    .n_blocks = STAGE_OWN_BLOCKS,
                                    .kv_type = o->kv_type,
                                    .n_threads = o->n_threads,
                                    .device = o->device};
    int rc;
    if ((rc = stage_build(c->g, &sp, &c->s, err, sizeof(err))) < 0 ||
        (rc = smp_new(&o->sp, c->s->n_vocab, &c->smp, err, sizeof(err))) < 0) {
        bt_error("%s", err);
        return rc;
    }
    c->piece_cap = tok_max_piece(c->t) + 8;
    if (!(c->piece = malloc((size_t)c->piece_cap))) {
        bt_error("out of memory");
        return BT_ENOMEM;
    }
    const struct model_hparams *hp = &c->s->m->hp;
    bt_info("%s: %s, %d layers, %d tokens of context, %d threads, prompt %d tokens", o->model,
            model_arch_name(hp->arch), hp->n_layer, c->n_ctx, c->s->n_threads, c->n_prompt);
    return 0;
}

/* The prompt in batches of n_batch tokens; *logits: those of its last token. The tokens count
 * for the sampler's penalties. */
static int cli_prefill(struct cli *c, const float **logits)
{
    char err[512] = "";
    int n_out, rc;
    for (int i = 0; i < c->n_prompt; i += c->n_batch) {
        const int n = c->n_prompt - i < c->n_batch ? c->n_prompt - i : c->n_batch;
        stage_batch_clear(c->s);
        for (int j = 0; j < n; j++)
            stage_batch_add(c->s, 0, i + j, c->toks[i + j],
                            STAGE_PROMPT | (i + j == c->n_prompt - 1 ? STAGE_WANT : 0u));
        if ((rc = stage_run(c->s, NULL, logits, &n_out, err, sizeof(err))) < 0) {
            bt_error("prompt: %s", err);
            return rc;
        }
    }
    for (int i = 0; i < c->n_prompt; i++) smp_accept(c->smp, c->toks[i]);
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

/* Sample from logits, print the text as it completes, feed the token back; until n_predict
 * tokens or an end-of-generation token. *n_gen: the tokens sampled. */
static int cli_generate(struct cli *c, const float *logits, int *n_gen)
{
    char err[512] = "";
    struct tok_stream ts;
    int n_out, rc, pos = c->n_prompt;
    tok_stream_init(&ts, c->t);
    *n_gen = 0;
    while (*n_gen < c->n_predict) {
        int32_t id = smp_sample(c->smp, logits, NULL);
        if (id < 0) {
            bt_error("sampling failed: every token is excluded");
            return id;
        }
        ++*n_gen;
        if (tok_is_eog(c->t, id)) break;
        int k = tok_stream_push(&ts, id, c->piece, c->piece_cap);
        if (k < 0) {
            bt_error("cannot decode token %d", id);
            return k;
        }
        emit(c->piece, k);
        if (*n_gen == c->n_predict) break;
        stage_batch_clear(c->s);
        stage_batch_add(c->s, 0, pos++, id, STAGE_WANT);
        if ((rc = stage_run(c->s, NULL, &logits, &n_out, err, sizeof(err))) < 0) {
            bt_error("generation: %s", err);
            return rc;
        }
    }
    emit(c->piece, tok_stream_flush(&ts, c->piece, c->piece_cap));
    return 0;
}

static void cli_free(struct cli *c)
{
    free(c->toks);
    free(c->piece);
    smp_free(c->smp);
    stage_free(c->s);
    tok_free(c->t);
    gguf_close(c->g);
}

int main(int argc, char **argv)
{
    struct cli_opts o;
    struct cli c = {0};
    const float *logits = NULL;
    int n_gen = 0, status = 1;

    int rc = parse_args(argc, argv, &o);
    if (rc == 1) {
        usage(stdout);
        return 0;
    }
    if (rc < 0) return 1;
    if (cli_open(&o, &c) < 0 || cli_prompt(&o, &c) < 0 || cli_build(&o, &c) < 0) goto out;
    const double t0 = bt_now_s();
    if (cli_prefill(&c, &logits) < 0) goto out;
    const double t1 = bt_now_s();
    if (cli_generate(&c, logits, &n_gen) < 0) goto out;
    const double t2 = bt_now_s();
    bt_info("prompt: %d tokens in %.3f s (%.1f t/s); generation: %d tokens in %.3f s (%.1f t/s)",
            c.n_prompt, t1 - t0, c.n_prompt / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_gen, t2 - t1,
            n_gen / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    status = 0;
out:
    cli_free(&c);
    return status;
}
