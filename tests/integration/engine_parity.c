/* engine_parity: the local engine (every layer in this process) and a pipeline (this process as
 * rank 0 with engine_pipe, baton-rankd as the later ranks) sample the same tokens with the same
 * log-probabilities for the same seed and parameters, including NaN and out-of-range values,
 * several sequences per micro-batch and logit bias lists; every engine applies the one sampling
 * policy (sampler.h). Run by run_engine_parity.sh:
 *
 *   mpiexec -n 1 engine_parity MODEL : -n R-1 baton-rankd -m MODEL --parallel 3 --ctx-size 128
 *           --prefill-chunk 16
 *
 * (the options must match what this program loads with: the handshake checks them). */
#include "../unit/t.h"
#include "engine.h"
#include "engine_local.h"
#include "engine_pipe.h"
#include "gguf.h"
#include "log.h"
#include "pipeline.h"
#include "quant.h"
#include "sampler.h"

#define N_SEQ    3
#define N_CTX    128
#define CHUNK    16
#define N_PROMPT 21 /* two prefill steps */
#define N_GEN    40

struct run {
    int32_t tok[N_SEQ][N_GEN];
    float lp[N_SEQ][N_GEN];
    int32_t top1[N_SEQ][N_GEN];
    int rc;
};

static struct smp_bias bias_a[4] = {{3, NAN}, {4, -1000.0f}, {5, 1e9f}, {6, -0.25f}};

/* Three sequences: everything NaN, everything out of range, and ordinary values. */
static void params(int seq, struct smp_params *p)
{
    smp_params_default(p);
    p->seed = 1000 + (uint64_t)seq;
    p->n_logprobs = 3;
    if (seq == 0) {
        p->temp = NAN;
        p->top_p = NAN;
        p->min_p = NAN;
        p->repeat_penalty = NAN;
        p->presence_penalty = NAN;
        p->frequency_penalty = NAN;
    } else if (seq == 1) {
        p->temp = 250.0f;
        p->top_k = -3;
        p->top_p = 1.5f;
        p->min_p = -1.0f;
        p->repeat_penalty = -2.0f;
        p->presence_penalty = 500.0f;
        p->frequency_penalty = -500.0f;
        p->penalty_last_n = 100000;
        p->n_logprobs = 50;
        p->bias = bias_a;
        p->n_bias = 4;
    } else {
        p->temp = 0.9f;
        p->top_k = 40;
        p->top_p = 0.95f;
        p->min_p = 0.05f;
        p->repeat_penalty = 1.1f;
        p->penalty_last_n = -1;
        p->presence_penalty = 0.3f;
        p->frequency_penalty = 0.2f;
    }
}

static int step(struct engine *e, const struct eng_item *items, int n, struct eng_result *res)
{
    char err[512];
    int rc = e->ops->submit(e->self, items, n, err, sizeof(err));
    while (rc == BT_OK &&
           (rc = e->ops->collect(e->self, res, n, 1000, err, sizeof(err))) == BT_ETIMEOUT) {
    }
    if (rc < 0) fprintf(stderr, "%s: %s\n", e->ops->name, err);
    return rc;
}

/* Every sequence's prompt in chunks, then N_GEN sampled tokens each, all in one batch. */
static void generate(struct engine *e, struct run *out)
{
    int32_t prompt[N_SEQ][N_PROMPT], next[N_SEQ];
    struct smp_params sp[N_SEQ];
    struct eng_item items[N_SEQ];
    struct eng_result res[N_SEQ];
    memset(out, 0, sizeof(*out));
    for (int s = 0; s < N_SEQ; s++) {
        char err[256];
        int n_cached = -1;
        params(s, &sp[s]);
        for (int i = 0; i < N_PROMPT; i++) prompt[s][i] = 1 + (i * 7 + s * 13) % 200;
        CHECK_INT(e->ops->seq_begin(e->self, s, prompt[s], N_PROMPT, N_PROMPT + N_GEN, false,
                                    &n_cached, err, sizeof(err)),
                  0);
        CHECK_INT(n_cached, 0);
    }
    for (int pos = 0; pos < N_PROMPT; pos += CHUNK / N_SEQ) {
        int k = N_PROMPT - pos < CHUNK / N_SEQ ? N_PROMPT - pos : CHUNK / N_SEQ;
        for (int s = 0; s < N_SEQ; s++)
            items[s] = (struct eng_item){.seq = s,
                                         .pos = pos,
                                         .n_tokens = k,
                                         .tokens = prompt[s] + pos,
                                         .reset = pos == 0,
                                         .sample = pos + k == N_PROMPT,
                                         .sp = &sp[s]};
        if ((out->rc = step(e, items, N_SEQ, res)) < 0) return;
    }
    for (int g = 0; g < N_GEN; g++) {
        for (int s = 0; s < N_SEQ; s++) {
            out->tok[s][g] = next[s] = res[s].token;
            out->lp[s][g] = res[s].logprob;
            out->top1[s][g] = res[s].n_top > 0 ? res[s].top_id[0] : -1;
            items[s] = (struct eng_item){
                .seq = s, .pos = N_PROMPT + g, .n_tokens = 1, .tokens = &next[s], .sample = true};
        }
        if (g + 1 < N_GEN && (out->rc = step(e, items, N_SEQ, res)) < 0) return;
    }
}

static int load(struct engine *e, const struct gguf *g)
{
    char err[512];
    struct eng_load_params lp = {.n_seq = N_SEQ,
                                 .n_ctx = N_CTX,
                                 .max_batch = pipeline_max_batch(N_SEQ, CHUNK),
                                 .n_threads = 1,
                                 .kv_type = BT_F16};
    struct eng_info info;
    int rc = e->ops->load(e->self, g, &lp, &info, err, sizeof(err));
    if (rc < 0) fprintf(stderr, "%s: load: %s\n", e->ops->name, err);
    return rc;
}

int main(int argc, char **argv)
{
    static struct run local, pipe;
    struct engine le, pe;
    struct gguf *g = NULL;
    char err[512];
    struct eng_pipe_config pc = {.init_timeout_s = 60};
    if (argc < 2 || !eng_pipe_wanted()) {
        fprintf(stderr, "usage: mpiexec -n 1 engine_parity MODEL : -n R-1 baton-rankd ...\n");
        return 2;
    }
    const char *model = argv[1];
    /* the pipeline first: MPI comes up before anything else can fail */
    CHECK_INT(eng_pipe_new(&pe, &argc, &argv, &pc, err, sizeof(err)), 0);
    CHECK_INT(gguf_open(model, &g, err, sizeof(err)), 0);
    CHECK_INT(eng_local_new(&le), 0);
    if (!g || load(&le, g) < 0 || load(&pe, g) < 0) {
        pe.ops->destroy(pe.self);
        return 1;
    }
    generate(&le, &local);
    generate(&pe, &pipe);
    CHECK_INT(local.rc, 0);
    CHECK_INT(pipe.rc, 0);
    int same = 0, differs = 0;
    for (int s = 0; s < N_SEQ; s++)
        for (int i = 0; i < N_GEN; i++) {
            bool ok = local.tok[s][i] == pipe.tok[s][i] && local.lp[s][i] == pipe.lp[s][i] &&
                      local.top1[s][i] == pipe.top1[s][i];
            same += ok;
            if (!ok && differs++ < 5)
                fprintf(stderr,
                        "seq %d token %d: local %d (%g, top %d), pipeline %d (%g, top %d)\n", s, i,
                        local.tok[s][i], (double)local.lp[s][i], local.top1[s][i], pipe.tok[s][i],
                        (double)pipe.lp[s][i], pipe.top1[s][i]);
        }
    CHECK_INT(same, N_SEQ * N_GEN);
    /* the NaN sequence is greedy: its log-probability is the top one's */
    for (int i = 0; i < N_GEN; i++) CHECK_INT(local.tok[0][i], local.top1[0][i]);
    /* the others sample: somewhere they leave the top token */
    int off = 0;
    for (int i = 0; i < N_GEN; i++) off += local.tok[1][i] != local.top1[1][i];
    CHECK(off > 0);
    fprintf(stderr, "engine_parity: %d of %d sampled tokens equal (local vs %s)\n", same,
            N_SEQ * N_GEN, pe.ops->name);
    le.ops->destroy(le.self);
    pe.ops->destroy(pe.self); /* SHUTDOWN to the ranks, MPI_Finalize */
    gguf_close(g);
    return t_done();
}
