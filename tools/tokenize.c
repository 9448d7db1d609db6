/* baton-tokenize: text -> token ids, or ids -> text, with a GGUF model's tokenizer.
 *
 * Usage: baton-tokenize -m FILE.gguf [--special] [--decode] < input
 *   encode (default): reads UTF-8 text (any bytes) on stdin, prints the ids on one line
 *   --decode:         reads whitespace-separated ids on stdin, prints the text
 * Exit status: 0 ok, 1 the model or the input is bad, 2 bad usage. */
#include "gguf.h"
#include "log.h"
#include "tokenizer.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUT (256u << 20)

static void usage(FILE *f)
{
    fputs(
        "usage: baton-tokenize -m FILE.gguf [options] < input\n"
        "Tokenize stdin with the model's tokenizer and print the token ids on one line,\n"
        "separated by spaces; no BOS/EOS is added and special-token texts are plain text.\n"
        "  -m, --model FILE    GGUF file with the tokenizer (tokenizer.ggml.* metadata)\n"
        "  -s, --special       parse special tokens (<s>, <|im_end|> ...) and add BOS/EOS as the\n"
        "                      model says; with --decode: print control tokens' text\n"
        "      --parse-special parse special tokens only\n"
        "      --add-special   add BOS/EOS only\n"
        "  -d, --decode        read token ids (whitespace separated) and print their text\n"
        "  -h, --help          this text\n",
        f);
}

/* All of stdin; *n its length. NULL on error (message printed). */
static char *read_stdin(size_t *n)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) goto nomem;
    for (;;) {
        size_t r = fread(buf + len, 1, cap - len, stdin);
        len += r;
        if (r == 0) break;
        if (len == cap) {
            if (cap >= MAX_INPUT) {
                fprintf(stderr, "baton-tokenize: input longer than %u bytes\n", MAX_INPUT);
                free(buf);
                return NULL;
            }
            char *p = realloc(buf, 2 * cap + 1);
            if (!p) goto nomem;
            buf = p;
            cap *= 2;
        }
    }
    if (ferror(stdin)) {
        fprintf(stderr, "baton-tokenize: reading stdin: %s\n", strerror(errno));
        free(buf);
        return NULL;
    }
    buf[len] = 0;
    *n = len;
    return buf;
nomem:
    free(buf);
    fputs("baton-tokenize: out of memory\n", stderr);
    return NULL;
}

static int do_encode(const struct tok *t, const char *text, size_t len, bool add, bool parse)
{
    int n = tok_encode(t, text, len, add, parse, NULL, 0);
    if (n < 0) {
        fprintf(stderr, "baton-tokenize: %s\n", bt_strstatus(n));
        return 1;
    }
    int32_t *ids = malloc(sizeof(int32_t) * ((size_t)n + 1));
    if (!ids) {
        fputs("baton-tokenize: out of memory\n", stderr);
        return 1;
    }
    tok_encode(t, text, len, add, parse, ids, n);
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
    free(ids);
    return 0;
}

static int do_decode(const struct tok *t, const char *in, size_t len, bool special)
{
    size_t cap = 1024, n = 0;
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    char *text = NULL;
    int rc = 1;
    if (!ids) goto nomem;
    const char *stop = in + len; /* in[len] is NUL; a NUL before it is an error */
    for (const char *p = in;;) {
        while (p < stop && (*p == ' ' || (*p >= '\t' && *p <= '\r'))) p++;
        if (p == stop) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v >= tok_n_vocab(t) ||
            (end < stop && !(*end == ' ' || (*end >= '\t' && *end <= '\r')))) {
            int k = (int)strcspn(p, " \t\n\r\v\f");
            fprintf(stderr, "baton-tokenize: '%.*s' is not a token id (0..%d)\n", k > 40 ? 40 : k,
                    p, tok_n_vocab(t) - 1);
            goto done;
        }
        if (n == cap) {
            int32_t *q = realloc(ids, sizeof(int32_t) * cap * 2);
            if (!q) goto nomem;
            ids = q;
            cap *= 2;
        }
        if (n >= (size_t)MAX_INPUT / 4) {
            fputs("baton-tokenize: too many ids\n", stderr);
            goto done;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    int k = tok_decode(t, ids, (int)n, special, NULL, 0);
    if (k < 0) {
        fprintf(stderr, "baton-tokenize: %s\n", bt_strstatus(k));
        goto done;
    }
    text = malloc((size_t)k + 1);
    if (!text) goto nomem;
    k = tok_decode(t, ids, (int)n, special, text, k);
    fwrite(text, 1, (size_t)k, stdout);
    rc = 0;
    goto done;
nomem:
    fputs("baton-tokenize: out of memory\n", stderr);
done:
    free(ids);
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    const char *model = NULL;
    bool add = false, parse = false, dec = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(a, "-s") || !strcmp(a, "--special")) {
            add = parse = true;
        } else if (!strcmp(a, "--parse-special")) {
            parse = true;
        } else if (!strcmp(a, "--add-special")) {
            add = true;
        } else if (!strcmp(a, "-d") || !strcmp(a, "--decode")) {
            dec = true;
        } else {
            fprintf(stderr, "baton-tokenize: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    char err[512];
    struct gguf *g = NULL;
    struct tok *t = NULL;
    char *in = NULL;
    int rc = 1;
    if (gguf_open(model, &g, err, sizeof(err)) != 0 || tok_load(g, &t, err, sizeof(err)) != 0) {
        fprintf(stderr, "baton-tokenize: %s\n", err);
        goto done;
    }
    gguf_close(g);
    g = NULL;
    size_t len;
    if (!(in = read_stdin(&len))) goto done;
    rc = dec ? do_decode(t, in, len, parse) : do_encode(t, in, len, add, parse);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "baton-tokenize: writing stdout: %s\n", strerror(errno));
        rc = 1;
    }
done:
    free(in);
    tok_free(t);
    gguf_close(g);
    return rc;
}
