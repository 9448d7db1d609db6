/* oneshot: `baton run`, one prompt's continuation through the engine interface (oneshot.h). */
#include "oneshot.h"

#include "config.h"
#include "engine_local.h"
#include "engine_pipe.h"
#include "exitcodes.h"
#include "gguf.h"
#include "log.h"
#include "pipeline.h"
#include "quant.h"
#include "report.h"
#include "sampler.h"
#include "tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define COLLECT_MS 1000 /* one wait of collect(); the engine bounds the whole step */

/* Tell `baton run` the exit code before the MPI teardown, which can fail over TCP after
 * everything is done (transport_mpi.c). */
static void report_result(int status)
{
    char line[32];
    fflush(stdout);
    snprintf(line, sizeof(line), "result %d", status);
    report_line(line);
}

static void emit(const char *buf, int n)
{
    if (n > 0) {
        fwrite(buf, 1, (size_t)n, stdout);
        fflush(stdout);
    }
}

/* One step through the engine: submit, then collect until it is answered. */
static int step(struct engine *eng, const struct eng_item *it, struct eng_result *res, char *err,
                size_t errsz)
{
    int rc = eng->ops->submit(eng->self, it, 1, err, errsz);
    if (rc < 0) return rc;
    while ((rc = eng->ops->collect(eng->self, res, 1, COLLECT_MS, err, errsz)) == BT_ETIMEOUT) {
    }
    return rc;
}

/* The prompt as baton-cli tokenizes it, checked against the context: *toks malloc'd. */
static int encode_prompt(const struct tok *t, const char *prompt, int n_ctx, int64_t n_predict_opt,
                         int32_t **toks, int *n_prompt, int *n_predict)
{
    const size_t plen = strlen(prompt);
    int n = tok_encode(t, prompt, plen, true, true, NULL, 0);
    if (n <= 0) {
        bt_error(n < 0 ? "cannot tokenize the prompt" : "the prompt is empty");
        return BT_EINVAL;
    }
    *n_predict = n_predict_opt < 0 ? n_ctx - n : (int)n_predict_opt;
    if ((long)n + *n_predict > n_ctx) {
        bt_error("prompt (%d tokens) + %d tokens to generate do not fit in the context of %d "
                 "(raise -c or lower -n)",
                 n, *n_predict, n_ctx);
        return BT_EINVAL;
    }
    *toks = malloc(sizeof(**toks) * (size_t)n);
    if (!*toks || tok_encode(t, prompt, plen, true, true, *toks, n) != n) {
        bt_error("cannot tokenize the prompt");
        return BT_EINVAL;
    }
    *n_prompt = n;
    return BT_OK;
}

/* The prompt in chunks (sampling after the last), then one token per step until n_predict or
 * the end of generation; the text goes to stdout as it comes. */
static int generate(struct engine *eng, const struct tok *t, const int32_t *toks, int n_prompt,
                    int n_predict, int chunk, const struct smp_params *sp)
{
    char err[1024];
    struct eng_result res;
    int rc, n_gen = 0, pos = n_prompt;
    const int cap = tok_max_piece(t) + 8;
    char *piece = malloc((size_t)cap);
    if (!piece) return BT_ENOMEM;
    const double t0 = bt_now_s();
    int n_cached = 0;
    if ((rc = eng->ops->seq_begin(eng->self, 0, toks, n_prompt, n_prompt + n_predict, false,
                                  &n_cached, err, sizeof(err))) < 0) {
        bt_error("%s", err);
        goto out;
    }
    for (int i = 0; i < n_prompt; i += chunk) {
        int k = n_prompt - i < chunk ? n_prompt - i : chunk;
        struct eng_item it = {.seq = 0,
                              .pos = i,
                              .n_tokens = k,
                              .tokens = toks + i,
                              .reset = i == 0,
                              .sample = i + k == n_prompt,
                              .prompt = true,
                              .sp = sp};
        if ((rc = step(eng, &it, &res, err, sizeof(err))) < 0) {
            bt_error("prompt: %s", err);
            goto out;
        }
    }
    const double t1 = bt_now_s();
    struct tok_stream ts;
    tok_stream_init(&ts, t);
    while (n_gen < n_predict) {
        int32_t id = res.token;
        n_gen++;
        if (tok_is_eog(t, id)) break;
        int k = tok_stream_push(&ts, id, piece, cap);
        if (k < 0) {
            bt_error("cannot decode token %d", id);
            rc = BT_ERR;
            goto out;
        }
        emit(piece, k);
        if (n_gen == n_predict) break;
        struct eng_item it = {.seq = 0, .pos = pos++, .n_tokens = 1, .tokens = &id, .sample = true};
        if ((rc = step(eng, &it, &res, err, sizeof(err))) < 0) {
            bt_error("generation: %s", err);
            goto out;
        }
    }
    emit(piece, tok_stream_flush(&ts, piece, cap));
    const double t2 = bt_now_s();
    bt_info("prompt: %d tokens in %.3f s; generation: %d tokens in %.3f s (%.1f t/s)", n_prompt,
            t1 - t0, n_gen, t2 - t1, n_gen / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    rc = BT_OK;
out:
    free(piece);
    return rc;
}

int oneshot_main(const struct cfg *c, int *argc, char ***argv)
{
    struct engine eng = {0};
    struct gguf *g = NULL;
    struct tok *t = NULL;
    int32_t *toks = NULL;
    char err[1024];
    int status = BT_EXIT_CONFIG, rc, n_prompt, n_predict;
    const bool pipe = eng_pipe_wanted();

    if (!c->run.prompt) { /* a bad option ends the job before anything loads */
        bt_error("option prompt: required with --oneshot (-p TEXT)");
        return eng_pipe_early_exit(BT_EXIT_CONFIG);
    }
    struct eng_pipe_config pc = {
        .split = c->stage.split,
        .init_timeout_s = (int)c->stage.init_timeout,
        .heartbeat_ns = (uint64_t)c->stage.heartbeat_interval_ms * 1000000ull,
        .heartbeat_misses = (int)c->stage.heartbeat_misses,
        .step_timeout_ns = (uint64_t)c->stage.step_timeout_ms * 1000000ull};
    rc = pipe ? eng_pipe_new(&eng, argc, argv, &pc, err, sizeof(err)) : eng_local_new(&eng);
    if (rc < 0) {
        bt_error("%s", pipe ? err : "out of memory");
        if (eng.self) eng.ops->destroy(eng.self);
        return BT_EXIT_FAIL;
    }
    if ((rc = gguf_open(c->stage.model, &g, err, sizeof(err))) < 0 ||
        (rc = tok_load(g, &t, err, sizeof(err))) < 0) {
        bt_error("%s", err);
        goto out;
    }
    struct eng_load_params lp = {
        .n_seq = (int)c->stage.parallel,
        .n_ctx = (int)c->stage.ctx_size,
        .max_batch = pipeline_max_batch((int)c->stage.parallel, (int)c->stage.prefill_chunk),
        .n_threads = (int)c->stage.threads,
        .device = c->stage.device,
        .kv_type = c->stage.cache_type == CFG_CACHE_F32 ? BT_F32 : BT_F16,
        .n_blocks = (int)c->stage.kv_blocks};
    struct eng_info info;
    if ((rc = eng.ops->load(eng.self, g, &lp, &info, err, sizeof(err))) < 0) {
        bt_error("loading failed: %s", err);
        status = eng.ops->exit_code ? eng.ops->exit_code(eng.self) : BT_EXIT_CONFIG;
        goto out;
    }
    if (info.n_vocab != tok_n_vocab(t)) {
        bt_error("%s: the tokenizer has %d tokens, the model %d", c->stage.model, tok_n_vocab(t),
                 info.n_vocab);
        goto out;
    }
    if (encode_prompt(t, c->run.prompt, info.n_ctx, c->run.n_predict, &toks, &n_prompt,
                      &n_predict) < 0)
        goto out;
    struct smp_params sp;
    smp_params_default(&sp);
    sp.temp = (float)c->run.temp;
    if (c->run.seed >= 0)
        sp.seed = (uint64_t)c->run.seed;
    else if (getrandom(&sp.seed, sizeof(sp.seed), 0) != sizeof(sp.seed))
        sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    int chunk =
        (int)c->stage.prefill_chunk < info.max_batch ? (int)c->stage.prefill_chunk : info.max_batch;
    status =
        generate(&eng, t, toks, n_prompt, n_predict, chunk, &sp) < 0 ? BT_EXIT_FAIL : BT_EXIT_OK;
out:
    if (status == BT_EXIT_FAIL && eng.ops->exit_code) status = eng.ops->exit_code(eng.self);
    free(toks);
    report_result(status);
    eng.ops->destroy(eng.self); /* SHUTDOWN to the ranks */
    tok_free(t);
    gguf_close(g);
    return status;
}
