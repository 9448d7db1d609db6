/* engine_fixture.h: reader of the llama.cpp oracle fixtures in tests/fixtures/engine/ (format in
 * tools/oracle/make_engine_fixtures.py), and helpers shared by the engine tests. Header-only. */
#ifndef BATON_ENGINE_FIXTURE_H
#define BATON_ENGINE_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FX_MAX_CASES  16
#define FX_MAX_LOGITS 8

struct fx_logits {
    int pos, n;
    float *v;
};

struct fx_case {
    char name[64];
    int n_ctx, n_predict, eog;
    char *prompt; /* NUL-terminated */
    int32_t *prompt_tokens;
    int n_prompt;
    int32_t *gen_tokens;
    int n_gen;
    char *text; /* expected stdout bytes */
    size_t text_len;
    struct fx_logits logits[FX_MAX_LOGITS];
    int n_logits;
    int32_t *ru_tok; /* per greedy step: llama.cpp's second-best token */
    float *ru_rel;   /* and its distance to the best, as a fraction of the logit range */
    int n_ru;
};

struct fx_file {
    char model[64];     /* "stories260K" or "" */
    char mkmodel[1024]; /* mkmodel arguments or "" */
    unsigned long long size;
    unsigned crc;
    struct fx_case cases[FX_MAX_CASES];
    int n_cases;
};

static inline char *fx_unhex(const char *h, size_t *len)
{
    size_t n = strlen(h) / 2;
    char *out = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    out[n] = 0;
    if (len) *len = n;
    return out;
}

static inline int32_t *fx_ids(char *rest, int *n)
{
    char *p = rest;
    *n = (int)strtol(p, &p, 10);
    int32_t *v = malloc(((size_t)*n + 1) * sizeof(*v));
    for (int i = 0; i < *n; i++) v[i] = (int32_t)strtol(p, &p, 10);
    return v;
}

static inline void fx_free(struct fx_file *f)
{
    for (int c = 0; c < f->n_cases; c++) {
        struct fx_case *k = &f->cases[c];
        free(k->prompt);
        free(k->prompt_tokens);
        free(k->gen_tokens);
        free(k->text);
        free(k->ru_tok);
        free(k->ru_rel);
        for (int i = 0; i < k->n_logits; i++) free(k->logits[i].v);
    }
    memset(f, 0, sizeof(*f));
}

/* Parse a fixture; 0 or -1 (message printed). */
static inline int fx_load(const char *path, struct fx_file *f)
{
    FILE *fp = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    struct fx_case *c = NULL;
    memset(f, 0, sizeof(*f));
    if (!fp) {
        fprintf(stderr, "%s: cannot open\n", path);
        return -1;
    }
    while (getline(&line, &cap, fp) > 0) {
        line[strcspn(line, "\n")] = 0;
        char *sp = strchr(line, ' ');
        char *rest = sp ? sp + 1 : line + strlen(line);
        if (sp) *sp = 0;
        if (line[0] == '#' || !line[0]) continue;
        if (!strcmp(line, "model"))
            snprintf(f->model, sizeof(f->model), "%s", rest);
        else if (!strcmp(line, "mkmodel"))
            snprintf(f->mkmodel, sizeof(f->mkmodel), "%s", rest);
        else if (!strcmp(line, "file"))
            sscanf(rest, "%llu %x", &f->size, &f->crc);
        else if (!strcmp(line, "case") && f->n_cases < FX_MAX_CASES) {
            c = &f->cases[f->n_cases++];
            snprintf(c->name, sizeof(c->name), "%s", rest);
        } else if (!c)
            continue;
        else if (!strcmp(line, "n_ctx"))
            c->n_ctx = atoi(rest);
        else if (!strcmp(line, "n_predict"))
            c->n_predict = atoi(rest);
        else if (!strcmp(line, "eog"))
            c->eog = atoi(rest);
        else if (!strcmp(line, "prompt_hex"))
            c->prompt = fx_unhex(rest, NULL);
        else if (!strcmp(line, "text_hex"))
            c->text = fx_unhex(rest, &c->text_len);
        else if (!strcmp(line, "prompt_tokens"))
            c->prompt_tokens = fx_ids(rest, &c->n_prompt);
        else if (!strcmp(line, "gen_tokens"))
            c->gen_tokens = fx_ids(rest, &c->n_gen);
        else if (!strcmp(line, "runner_up")) {
            char *p = rest;
            c->n_ru = (int)strtol(p, &p, 10);
            c->ru_tok = malloc(((size_t)c->n_ru + 1) * sizeof(*c->ru_tok));
            c->ru_rel = malloc(((size_t)c->n_ru + 1) * sizeof(*c->ru_rel));
            for (int i = 0; i < c->n_ru; i++) {
                c->ru_tok[i] = (int32_t)strtol(p, &p, 10);
                if (*p == ':') p++;
                c->ru_rel[i] = strtof(p, &p);
            }
        } else if (!strcmp(line, "logits") && c->n_logits < FX_MAX_LOGITS) {
            struct fx_logits *l = &c->logits[c->n_logits++];
            char *p = rest;
            l->pos = (int)strtol(p, &p, 10);
            l->n = (int)strtol(p, &p, 10);
            l->v = malloc((size_t)l->n * sizeof(float));
            for (int i = 0; i < l->n; i++) l->v[i] = strtof(p, &p);
        }
    }
    free(line);
    fclose(fp);
    if (!f->n_cases) {
        fprintf(stderr, "%s: no cases\n", path);
        return -1;
    }
    return 0;
}

/* zlib's CRC-32 of a file; size in *size. */
static inline unsigned fx_crc32_file(const char *path, unsigned long long *size)
{
    static unsigned table[256];
    if (!table[1])
        for (unsigned i = 0; i < 256; i++) {
            unsigned c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    FILE *fp = fopen(path, "rb");
    unsigned crc = 0xFFFFFFFFu;
    unsigned char buf[65536];
    size_t n;
    *size = 0;
    if (!fp) return 0;
    while ((n = fread(buf, 1, sizeof(buf), fp)) > 0) {
        for (size_t i = 0; i < n; i++) crc = table[(crc ^ buf[i]) & 0xFF] ^ (crc >> 8);
        *size += n;
    }
    fclose(fp);
    return crc ^ 0xFFFFFFFFu;
}

/* Run argv (argv[0] a path) with stdout to out_path (or /dev/null) and stderr to err_path (or
 * inherited); returns the exit status, or -1. */
static inline int fx_run(char *const argv[], const char *out_path, const char *err_path)
{
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (!freopen(out_path ? out_path : "/dev/null", "w", stdout)) _exit(126);
        if (err_path && !freopen(err_path, "w", stderr)) _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* max |a - b| over n, and the range (max - min) of b */
static inline void fx_compare(const float *a, const float *b, int n, double *maxdiff, double *range)
{
    float lo = b[0], hi = b[0];
    double d = 0;
    for (int i = 0; i < n; i++) {
        double e = a[i] - b[i];
        if (e < 0) e = -e;
        if (!(e <= d)) d = e; /* NaN propagates */
        lo = b[i] < lo ? b[i] : lo;
        hi = b[i] > hi ? b[i] : hi;
    }
    *maxdiff = d;
    *range = (double)hi - lo;
}

static inline int fx_argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

#endif
