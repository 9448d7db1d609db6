/* The engine against llama.cpp on synthetic models of every weight type and both architectures
 * (fixtures tests/fixtures/engine/<arch>-<type>.txt, made by
 * tools/oracle/make_engine_fixtures.py). Each model is regenerated with baton-mkmodel from the
 * fixture's arguments (size and CRC-32 must match what llama.cpp saw), then:
 *  - f32 models: logits at the recorded positions within 1e-3 of the logit range;
 *  - every model: fed llama.cpp's prompt + 256-token greedy continuation in one pass (batched
 *    prompt processing), baton's argmax must agree with llama.cpp's next token at >= 99 % of
 *    the 256 steps (at near-ties llama.cpp's runner-up counts too, see below), and at every
 *    step where llama.cpp's top two logits are well separated (>= 60 % of the steps). */
#include "engine_fixture.h"
#include "forward.h"
#include "gguf.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "t.h"
#include "threadpool.h"

#include <dirent.h>

#define MAX_ARGS 48
#define NEAR_TIE 0.02f /* as in tools/oracle/make_engine_fixtures.py */

static struct bt_pool *POOL;

/* Split the fixture's mkmodel arguments and run baton-mkmodel -o out. */
static int regenerate(const struct fx_file *fx, const char *out)
{
    char buf[1024], mk[4096], vocab[4096];
    char *argv[MAX_ARGS + 4];
    int n = 0;
    snprintf(mk, sizeof(mk), "%s", t_path("BATON_BUILD", "baton-mkmodel"));
    snprintf(vocab, sizeof(vocab), "%s", t_path("BATON_SHARED", "models/stories260K.gguf"));
    snprintf(buf, sizeof(buf), "%s", fx->mkmodel);
    argv[n++] = mk;
    for (char *tok = strtok(buf, " "); tok && n < MAX_ARGS; tok = strtok(NULL, " "))
        argv[n++] = strcmp(tok, "{vocab}") ? tok : vocab;
    argv[n++] = "-o";
    argv[n++] = (char *)out;
    argv[n] = NULL;
    return fx_run(argv, NULL, "/dev/null");
}

static void check_model(const char *name, const struct fx_file *fx, const char *path)
{
    char err[256] = "";
    struct gguf *g = NULL;
    struct model *m = NULL;
    struct kv *kv = NULL;
    struct fwd *f = NULL;
    const struct fx_case *c = &fx->cases[0];
    const int n_tok = c->n_prompt + c->n_gen, steps = c->n_gen;
    int32_t *tok = malloc((size_t)n_tok * sizeof(*tok));
    float *lg = NULL;

    if (gguf_open(path, &g, err, sizeof(err)) < 0 ||
        model_load(g, 0, -1, &m, err, sizeof(err)) < 0 ||
        kv_new(m, 1, c->n_ctx, BT_F32, &kv, err, sizeof(err)) < 0 ||
        fwd_new(m, kv, POOL, 64, 64, &f, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: %s\n", name, err);
        CHECK(0);
        goto out;
    }
    const int V = m->hp.n_vocab;
    memcpy(tok, c->prompt_tokens, (size_t)c->n_prompt * sizeof(*tok));
    memcpy(tok + c->n_prompt, c->gen_tokens, (size_t)c->n_gen * sizeof(*tok));
    lg = malloc((size_t)n_tok * V * sizeof(float));

    /* every token but the last, in batches of 64, logits of every row */
    int32_t pos[64], seq[64] = {0};
    uint8_t want[64];
    memset(want, 1, sizeof(want));
    for (int i = 0; i < n_tok - 1; i += 64) {
        const int k = n_tok - 1 - i < 64 ? n_tok - 1 - i : 64;
        const float *out;
        int n_out;
        for (int j = 0; j < k; j++) pos[j] = i + j;
        struct fwd_batch b = {k, tok + i, NULL, pos, seq, want, true};
        if (fwd_eval(f, &b, &out, &n_out, err, sizeof(err)) < 0 || n_out != k) {
            fprintf(stderr, "%s: %s\n", name, err);
            CHECK(0);
            goto out;
        }
        memcpy(lg + (size_t)i * V, out, (size_t)k * V * sizeof(float));
    }

    /* Step s agrees when baton's argmax is llama.cpp's; at a near-tie (llama.cpp's top two less
     * than NEAR_TIE of the logit range apart) llama.cpp's runner-up is accepted too: rounding
     * activations to 8 bits turns ulp-sized float differences (operation order, exp) into logit
     * differences of up to ~1 % of the range at times, so either order is right there. */
    int strict = 0, agree = 0, separated = 0, separated_agree = 0;
    CHECK_INT(c->n_ru, steps);
    for (int s = 0; s < steps && s < c->n_ru; s++) {
        const int best = fx_argmax(lg + (size_t)(c->n_prompt - 1 + s) * V, V);
        const int same = best == tok[c->n_prompt + s];
        const int tie = c->ru_rel[s] < NEAR_TIE;
        strict += same;
        agree += same || (tie && best == c->ru_tok[s]);
        separated += !tie;
        separated_agree += !tie && same;
    }
    double worst = 0;
    for (int i = 0; i < c->n_logits; i++) {
        const struct fx_logits *l = &c->logits[i];
        CHECK(l->n == V && l->pos >= 0 && l->pos < n_tok - 1);
        if (l->n != V || l->pos < 0 || l->pos >= n_tok - 1) continue;
        double d, range;
        fx_compare(lg + (size_t)l->pos * V, l->v, V, &d, &range);
        CHECK(d <= 1e-3 * range);
        worst = d / range > worst ? d / range : worst;
    }
    fprintf(stderr, "%-16s argmax agrees %3d/%d (%3d/%d separated steps; %3d/%d strictly)", name,
            agree, steps, separated_agree, separated, strict, steps);
    if (c->n_logits) fprintf(stderr, ", logits max |diff| %.2g of the range", worst);
    fprintf(stderr, "\n");
    CHECK(steps >= 256);
    CHECK(agree * 100 >= steps * 99);
    CHECK_INT(separated_agree, separated);
    CHECK(separated * 100 >= steps * 60); /* the fixture exercises well-separated logits */
out:
    free(lg);
    free(tok);
    fwd_free(f);
    kv_free(kv);
    model_free(m);
    gguf_close(g);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
    char dir[4096];
    char *names[128];
    int n = 0;
    snprintf(dir, sizeof(dir), "%s", t_path("BATON_SRC", "tests/fixtures/engine"));
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "%s: cannot open\n", dir);
        return 1;
    }
    for (struct dirent *e; (e = readdir(d)) && n < 128;) {
        size_t l = strlen(e->d_name);
        if (l > 4 && !strcmp(e->d_name + l - 4, ".txt") && strncmp(e->d_name, "stories", 7))
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(names[0]), name_cmp);
    CHECK(n >= 23); /* 11 types x 2 architectures + tied */

    const char *tmpdir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char tmp[4096], model[4200];
    snprintf(tmp, sizeof(tmp), "%s/baton-engine-XXXXXX", tmpdir);
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(model, sizeof(model), "%s/m.gguf", tmp);
    POOL = bt_pool_new(2);

    for (int i = 0; i < n; i++) {
        struct fx_file fx;
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (fx_load(path, &fx) < 0 || !fx.mkmodel[0]) {
            CHECK(0);
            fx_free(&fx);
            continue;
        }
        int rc = regenerate(&fx, model);
        CHECK_INT(rc, 0);
        unsigned long long size;
        unsigned crc = fx_crc32_file(model, &size);
        if (rc == 0 && (size != fx.size || crc != fx.crc))
            fprintf(stderr,
                    "%s: baton-mkmodel made a different file (%llu bytes, crc %08x; the "
                    "fixture has %llu, %08x): rerun tools/oracle/make_engine_fixtures.py\n",
                    names[i], size, crc, fx.size, fx.crc);
        CHECK(size == fx.size && crc == fx.crc);
        if (rc == 0 && size == fx.size && crc == fx.crc) {
            names[i][strlen(names[i]) - 4] = 0;
            check_model(names[i], &fx, model);
        }
        unlink(model);
        fx_free(&fx);
    }
    rmdir(tmp);
    for (int i = 0; i < n; i++) free(names[i]);
    bt_pool_free(POOL);
    return t_done();
}
