/* baton-cli end to end on stories260K: with --temp 0 its stdout must be exactly the text of
 * llama.cpp's greedy continuation (fixture tests/fixtures/engine/stories260K.txt, made by
 * tools/oracle/make_engine_fixtures.py); seeded sampling repeats itself; a prompt + n that does
 * not fit the context, a missing model and bad options exit 1 with a message on stderr. */
#include "engine_fixture.h"
#include "t.h"

static char CLI[4096], MODEL[4096], OUT[4200], ERR[4200], TMP[4096];

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0, k;
    if (!f) return NULL;
    do {
        if (cap - n < 4096) buf = realloc(buf, cap = cap * 2 + 4096);
        k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
    } while (k > 0);
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Run baton-cli with args (NULL-terminated); returns the exit status. */
static int cli(const char *const *args)
{
    char *argv[32];
    int n = 0;
    argv[n++] = CLI;
    for (int i = 0; args[i] && n < 31; i++) argv[n++] = (char *)args[i];
    argv[n] = NULL;
    return fx_run(argv, OUT, ERR);
}

static void test_greedy_text(const struct fx_file *fx)
{
    for (int i = 0; i < fx->n_cases; i++) {
        const struct fx_case *c = &fx->cases[i];
        char n[16], ctx[16];
        snprintf(n, sizeof(n), "%d", c->n_predict);
        snprintf(ctx, sizeof(ctx), "%d", c->n_ctx);
        const char *args[] = {"-m", MODEL,    "-p", c->prompt, "-n", n,   "-c",
                              ctx,  "--temp", "0",  "-t",      "2",  NULL};
        CHECK_INT(cli(args), 0);
        size_t len = 0;
        char *out = slurp(OUT, &len);
        const int same = out && len == c->text_len && !memcmp(out, c->text, len);
        if (!same)
            fprintf(stderr, "case %s: baton-cli printed %zu bytes, llama.cpp's text has %zu:\n%s\n",
                    c->name, len, c->text_len, out ? out : "");
        CHECK(same);
        free(out);
    }
}

static void test_sampling_repeats(void)
{
    const char *a[] = {"-m", MODEL,    "-p",  "Once upon a time", "-n",   "40", "-c",
                       "64", "--temp", "1.0", "--seed",           "1234", NULL};
    size_t l1 = 0, l2 = 0, l3 = 0;
    CHECK_INT(cli(a), 0);
    char *o1 = slurp(OUT, &l1);
    CHECK_INT(cli(a), 0);
    char *o2 = slurp(OUT, &l2);
    const char *b[] = {
        "-m",  MODEL,    "-p", "Once upon a time", "-n", "40",      "-c", "64",      "--temp",
        "1.0", "--seed", "99", "--top-k",          "0",  "--top-p", "1",  "--min-p", "0",
        NULL};
    CHECK_INT(cli(b), 0);
    char *o3 = slurp(OUT, &l3);
    CHECK(o1 && o2 && o3 && l1 > 0);
    if (o1 && o2 && o3) {
        CHECK(l1 == l2 && !memcmp(o1, o2, l1));     /* same seed, same text */
        CHECK(l1 != l3 || memcmp(o1, o3, l1) != 0); /* another seed, untruncated: other text */
    }
    free(o1);
    free(o2);
    free(o3);
}

static int err_has(const char *needle)
{
    size_t len;
    char *e = slurp(ERR, &len);
    int ok = e && strstr(e, needle) != NULL;
    if (!ok) fprintf(stderr, "stderr lacks '%s': %s\n", needle, e ? e : "(none)");
    free(e);
    return ok;
}

static void test_errors(void)
{
    size_t len = 1;
    /* the GGUF says 128: 5 prompt tokens + 200 do not fit by default */
    const char *fit[] = {"-m", MODEL, "-p", "Once upon a time", "-n", "200", "--temp", "0", NULL};
    CHECK_INT(cli(fit), 1);
    CHECK(err_has("context of 128"));
    free(slurp(OUT, &len));
    CHECK_INT(len, 0); /* nothing generated */
    const char *fit2[] = {"-m", MODEL, "-p", "Once upon a time", "-n", "123", "--temp", "0", NULL};
    CHECK_INT(cli(fit2), 0); /* 5 + 123 = 128 fits */
    const char *nofile[] = {"-m", "/nonexistent/model.gguf", "-p", "x", NULL};
    CHECK_INT(cli(nofile), 1);
    CHECK(err_has("/nonexistent/model.gguf"));
    const char *noprompt[] = {"-m", MODEL, NULL};
    CHECK_INT(cli(noprompt), 1);
    const char *badopt[] = {"-m", MODEL, "-p", "x", "--temp", "hot", NULL};
    CHECK_INT(cli(badopt), 1);
    CHECK(err_has("--temp"));
}

int main(void)
{
    struct fx_file fx;
    snprintf(CLI, sizeof(CLI), "%s", t_path("BATON_BUILD", "baton-cli"));
    snprintf(MODEL, sizeof(MODEL), "%s", t_path("BATON_SHARED", "models/stories260K.gguf"));
    snprintf(TMP, sizeof(TMP), "%s/baton-cli-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(TMP)) return 1;
    snprintf(OUT, sizeof(OUT), "%s/out", TMP);
    snprintf(ERR, sizeof(ERR), "%s/err", TMP);
    if (fx_load(t_path("BATON_SRC", "tests/fixtures/engine/stories260K.txt"), &fx) < 0) return 1;
    test_greedy_text(&fx);
    test_sampling_repeats();
    test_errors();
    fx_free(&fx);
    unlink(OUT);
    unlink(ERR);
    rmdir(TMP);
    return t_done();
}
