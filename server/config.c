#include "config.h"

#include "device.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define OFF(f) offsetof(struct cfg, f)
#define I64MAX INT64_MAX

/* The one table. Keep docs short: they become the example config and --help. */
const struct cfg_opt cfg_opts[] = {
    {"model", 'm', CFG_STR, OFF(model), 0, 0, NULL, "BATON_MODEL", NULL,
     "Path of the GGUF model file (required)."},
    {"host", 0, CFG_STR, OFF(host), 0, 0, "127.0.0.1", "BATON_HOST", NULL,
     "Address the HTTP server binds to."},
    {"port", 0, CFG_INT, OFF(port), 0, 65535, "8080", "BATON_PORT", NULL,
     "TCP port of the HTTP server (0: any free port, logged at start)."},
    {"listen-fd", 0, CFG_INT, OFF(listen_fd), -1, 65535, "-1", "BATON_LISTEN_FD", NULL,
     "Serve on this already-listening socket (passed by a supervisor) instead of host:port; "
     "-1: none."},
    {"threads", 't', CFG_INT, OFF(threads), 0, 1024, "0", "BATON_THREADS", NULL,
     "Compute threads of the engine (0: one per core)."},
    {"device", 0, CFG_STR, OFF(device), 0, 0, "cpu", "BATON_DEVICE", NULL,
     "Where this process's layers run: cpu, or cuda:N for CUDA device N (a build with "
     "-Dcuda=enabled; each rank of a pipeline reads its own BATON_DEVICE, so GPU and CPU stages "
     "can be mixed). Without such a device the start fails with \"no CUDA device: ...\"."},
    {"http-threads", 0, CFG_INT, OFF(http_threads), 1, 256, "4", "BATON_HTTP_THREADS", NULL,
     "Threads serving HTTP connections."},
    {"ctx-size", 'c', CFG_INT, OFF(ctx_size), 0, 1 << 20, "0", "BATON_CTX_SIZE", NULL,
     "Context length of each sequence in tokens, prompt included (0: the model's training "
     "context)."},
    {"parallel", 0, CFG_INT, OFF(parallel), 1, 256, "4", "BATON_PARALLEL", NULL,
     "Slots: how many requests are decoded together (continuous batching)."},
    {"queue", 0, CFG_INT, OFF(queue), 1, 1 << 20, "64", "BATON_QUEUE", NULL,
     "Requests that may wait for a free slot (at least 1: every request passes the queue on its "
     "way to the scheduler); when full, new ones get 429."},
    {"prefill-chunk", 0, CFG_INT, OFF(prefill_chunk), 1, 1 << 16, "256", "BATON_PREFILL_CHUNK",
     NULL,
     "Prompt tokens processed per step, interleaved with the decode steps of running requests."},
    {"request-timeout", 0, CFG_INT, OFF(request_timeout), 0, 86400 * 7, "600",
     "BATON_REQUEST_TIMEOUT", NULL,
     "Seconds a request may take from arrival to its end (0: no limit). A request past it ends "
     "with finish_reason \"length\", or with a 503 error if it produced nothing yet."},
    {"max-body", 0, CFG_SIZE, OFF(max_body), 1024, (int64_t)1 << 30, "1M", "BATON_MAX_BODY", NULL,
     "Largest request body accepted (bytes; K, M, G suffixes); larger ones get 413."},
    {"api-key", 0, CFG_STR, OFF(api_key), 0, 0, NULL, "BATON_API_KEY", NULL,
     "Require `Authorization: Bearer KEY` on every route but /health (empty: no key)."},
    {"chat-template", 0, CFG_STR, OFF(chat_template), 0, 0, NULL, "BATON_CHAT_TEMPLATE", NULL,
     "Chat template overriding the GGUF's tokenizer.chat_template: a family name (chatml, "
     "llama2, llama3, mistral-v7, phi3, gemma, zephyr, deepseek3, ...: the full list is in "
     "docs/chat-templates.md) or the text of a Jinja template of a known family."},
    {"model-alias", 'a', CFG_STR, OFF(model_alias), 0, 0, NULL, "BATON_MODEL_ALIAS", NULL,
     "Model name shown by /v1/models and in responses (default: the file's basename)."},
    {"log-level", 0, CFG_STR, OFF(log_level), 0, 0, NULL, "BATON_LOG_LEVEL",
     "debug|info|warn|error",
     "Lowest level of log lines written to stderr (default: BATON_LOG, else info)."},
    {"split", 0, CFG_STR, OFF(split), 0, 0, NULL, "BATON_SPLIT", NULL,
     "Pipeline with several ranks: layers per stage, e.g. 8,7,7 (one count per rank, each >= 1, "
     "summing to the model's layers; default: even by bytes, the output head counted on the "
     "last stage)."},
    {"init-timeout", 0, CFG_INT, OFF(init_timeout), 1, 86400, "600", "BATON_INIT_TIMEOUT", NULL,
     "Pipeline: seconds every rank has to load its layers and answer the startup handshake."},
    {"heartbeat-interval", 0, CFG_SEC, OFF(heartbeat_interval_ms), 10, 3600000, "1",
     "BATON_HEARTBEAT_INTERVAL", NULL,
     "Pipeline: seconds between heartbeats from rank 0 to every rank (fractions allowed, e.g. "
     "0.2). A rank that hears nothing from rank 0 for interval x misses x 2 leaves (exit 75)."},
    {"heartbeat-misses", 0, CFG_INT, OFF(heartbeat_misses), 1, 1000, "3", "BATON_HEARTBEAT_MISSES",
     NULL,
     "Pipeline: heartbeats a rank may miss in a row while idle before it is declared offline "
     "(rank 0 then fails every request with 503 and exits 75 for a restart)."},
    {"step-timeout", 0, CFG_SEC, OFF(step_timeout_ms), 10, 86400000, "30", "BATON_STEP_TIMEOUT",
     NULL,
     "Pipeline: seconds a step may take before the stage after the last one that answered is "
     "declared hung (fractions allowed)."},
    {"drain-timeout", 0, CFG_SEC, OFF(drain_timeout_ms), 0, 3600000, "30", "BATON_DRAIN_TIMEOUT",
     NULL,
     "After SIGTERM/SIGINT: seconds the running and queued requests may take to finish while new "
     "ones get 503 (0: stop at once); `baton serve` kills the job 5 s after that."},
    {"launch-timeout", 0, CFG_SEC, OFF(launch_timeout_ms), 1000, 86400000, "60",
     "BATON_LAUNCH_TIMEOUT", NULL,
     "`baton serve`: seconds a job may take to start on every host and bring MPI up (rank 0 past "
     "MPI_Init, before any model loading); past it the supervisor kills the job and starts it "
     "again (a host unreachable at the start would make it wait forever)."},
    {"prompt", 'p', CFG_STR, OFF(prompt), 0, 0, NULL, "BATON_PROMPT", NULL,
     "`baton run` (--oneshot): the prompt whose continuation is printed."},
    {"n-predict", 'n', CFG_INT, OFF(n_predict), -1, 1 << 24, "128", "BATON_N_PREDICT", NULL,
     "`baton run` (--oneshot): tokens to generate (-1: until the context is full)."},
    {"temp", 0, CFG_STR, OFF(temp), 0, 0, "0.8", "BATON_TEMP", NULL,
     "`baton run` (--oneshot): sampling temperature, a number >= 0 (0: greedy)."},
    {"seed", 0, CFG_INT, OFF(seed), -1, I64MAX, "-1", "BATON_SEED", NULL,
     "`baton run` (--oneshot): sampling seed (-1: random)."},
    {"test-step-delay-ms", 0, CFG_INT, OFF(test_step_delay_ms), 0, 10000, "0",
     "BATON_TEST_STEP_DELAY_MS", NULL,
     "Testing aid: sleep this long after every engine step (keep 0 in production)."},
    {"test-load-delay-ms", 0, CFG_INT, OFF(test_load_delay_ms), 0, 600000, "0",
     "BATON_TEST_LOAD_DELAY_MS", NULL,
     "Testing aid: the rank chosen by --test-load-delay-rank stays in the loading state this "
     "long before it loads (keep 0 in production)."},
    {"test-load-delay-rank", 0, CFG_INT, OFF(test_load_delay_rank), -1, 255, "0",
     "BATON_TEST_LOAD_DELAY_RANK", NULL,
     "Testing aid: the rank whose load --test-load-delay-ms delays (0: rank 0, baton-server; "
     "-1: every rank)."},
};
const int cfg_n_opts = (int)(sizeof(cfg_opts) / sizeof(cfg_opts[0]));

static int64_t *opt_num(struct cfg *c, const struct cfg_opt *o)
{
    return (int64_t *)((char *)c + o->offset);
}

static char **opt_str(struct cfg *c, const struct cfg_opt *o)
{
    return (char **)((char *)c + o->offset);
}

static const struct cfg_opt *find_opt(const char *name, size_t len)
{
    for (int i = 0; i < cfg_n_opts; i++)
        if (strlen(cfg_opts[i].name) == len && !memcmp(cfg_opts[i].name, name, len))
            return &cfg_opts[i];
    return NULL;
}

static bool enum_ok(const char *enums, const char *v)
{
    size_t n = strlen(v);
    const char *p = enums;
    while (*p) {
        const char *e = strchr(p, '|');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !memcmp(p, v, n)) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

/* Parse a number with an optional K/M/G (x1024) suffix for sizes. */
static int parse_num(const char *v, bool size, int64_t *out)
{
    char *end;
    errno = 0;
    if (!*v || isspace((unsigned char)*v)) return BT_EINVAL;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v) return BT_EINVAL;
    if (size && *end) {
        int shift = 0;
        switch (*end) {
        case 'k':
        case 'K':
            shift = 10;
            break;
        case 'm':
        case 'M':
            shift = 20;
            break;
        case 'g':
        case 'G':
            shift = 30;
            break;
        default:
            return BT_EINVAL;
        }
        end++;
        if (x < 0 || x > (INT64_MAX >> shift)) return BT_EINVAL;
        x <<= shift;
    }
    if (*end) return BT_EINVAL;
    *out = x;
    return BT_OK;
}

/* Seconds with up to 3 decimals ("1", "0.25", "2.5") to milliseconds; no sign, no exponent. */
static int parse_seconds_ms(const char *v, int64_t *out)
{
    int64_t ms = 0;
    const char *p = v;
    int frac = -1; /* decimals seen, -1 before the point */
    if (!isdigit((unsigned char)*p) && !(*p == '.' && isdigit((unsigned char)p[1])))
        return BT_EINVAL;
    for (; *p; p++) {
        if (*p == '.' && frac < 0) {
            frac = 0;
            continue;
        }
        if (!isdigit((unsigned char)*p)) return BT_EINVAL;
        if (frac >= 3) return BT_EINVAL; /* finer than a millisecond */
        if (ms > INT64_MAX / 10 - 10) return BT_EINVAL;
        ms = ms * 10 + (*p - '0');
        if (frac >= 0) frac++;
    }
    for (int k = frac < 0 ? 0 : frac; k < 3; k++) {
        if (ms > INT64_MAX / 10) return BT_EINVAL;
        ms *= 10;
    }
    *out = ms;
    return BT_OK;
}

/* Set option o from text v; `from` says where the value came from, for the error. */
static int set_opt(struct cfg *c, const struct cfg_opt *o, const char *v, const char *from,
                   char *err, size_t errsz)
{
    if (o->type == CFG_STR) {
        if (o->enums && !enum_ok(o->enums, v))
            return bt_errf(err, errsz, BT_EINVAL, "option %s: '%s' is not one of %s (from %s)",
                           o->name, v, o->enums, from);
        char *s = strdup(v);
        if (!s) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
        free(*opt_str(c, o));
        *opt_str(c, o) = s;
        return BT_OK;
    }
    int64_t x;
    if (o->type == CFG_SEC) {
        if (parse_seconds_ms(v, &x) < 0)
            return bt_errf(err, errsz, BT_EINVAL,
                           "option %s: '%s' is not a number of seconds (e.g. 1, 0.2) (from %s)",
                           o->name, v, from);
        if (x < o->min || x > o->max)
            return bt_errf(err, errsz, BT_EINVAL,
                           "option %s: %s s is out of range [%g, %g] s (from %s)", o->name, v,
                           (double)o->min / 1000.0, (double)o->max / 1000.0, from);
        *opt_num(c, o) = x;
        return BT_OK;
    }
    if (parse_num(v, o->type == CFG_SIZE, &x) < 0)
        return bt_errf(err, errsz, BT_EINVAL, "option %s: '%s' is not %s (from %s)", o->name, v,
                       o->type == CFG_SIZE ? "a size (e.g. 4096, 64K, 1M)" : "an integer", from);
    if (x < o->min || x > o->max)
        return bt_errf(err, errsz, BT_EINVAL,
                       "option %s: %lld is out of range [%lld, %lld] (from %s)", o->name,
                       (long long)x, (long long)o->min, (long long)o->max, from);
    *opt_num(c, o) = x;
    return BT_OK;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

static int load_file(struct cfg *c, const char *path, char *err, size_t errsz)
{
    char line[4096], from[4200];
    int lineno = 0, rc = BT_OK;
    FILE *f = fopen(path, "r");
    if (!f)
        return bt_errf(err, errsz, BT_EINVAL, "option config: cannot open '%s': %s", path,
                       strerror(errno));
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof(line) - 1 && line[n - 1] != '\n') {
            rc = bt_errf(err, errsz, BT_EINVAL, "%s:%d: line too long", path, lineno);
            goto fail;
        }
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = bt_errf(err, errsz, BT_EINVAL, "%s:%d: expected 'key = value'", path, lineno);
            goto fail;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
            val[vl - 1] = 0;
            val++;
        }
        const struct cfg_opt *o = find_opt(key, strlen(key));
        if (!o || !strcmp(key, "config")) {
            rc = bt_errf(err, errsz, BT_EINVAL, "%s:%d: unknown option '%s'", path, lineno, key);
            goto fail;
        }
        snprintf(from, sizeof(from), "%s:%d", path, lineno);
        rc = set_opt(c, o, val, from, err, errsz);
        if (rc < 0) goto fail;
    }
    if (ferror(f)) rc = bt_errf(err, errsz, BT_EINVAL, "option config: reading '%s' failed", path);
fail:
    fclose(f);
    return rc;
}

static const char *env_get(char **env, const char *name)
{
    size_t n = strlen(name);
    for (char **e = env; e && *e; e++)
        if (!strncmp(*e, name, n) && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}

/* Match argv[*i] against an option; returns it and its value (advancing *i past a separate
 * value), NULL with *bad set on error. */
static int match_flag(int argc, char **argv, int *i, const struct cfg_opt **opt, const char **val,
                      char *err, size_t errsz)
{
    const char *a = argv[*i];
    const struct cfg_opt *o = NULL;
    const char *v = NULL;
    if (a[0] == '-' && a[1] == '-') {
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        o = find_opt(name, len);
        if (eq) v = eq + 1;
    } else if (a[0] == '-' && a[1] && !a[2]) {
        for (int k = 0; k < cfg_n_opts; k++)
            if (cfg_opts[k].shortopt == a[1]) o = &cfg_opts[k];
    }
    if (!o) return bt_errf(err, errsz, BT_EINVAL, "unknown option '%s' (see --help)", a);
    if (!v) {
        if (*i + 1 >= argc)
            return bt_errf(err, errsz, BT_EINVAL, "option %s: missing value after '%s'", o->name,
                           a);
        v = argv[++*i];
    }
    *opt = o;
    *val = v;
    return BT_OK;
}

static const struct cfg_opt config_opt = {
    "config", 0, CFG_STR, OFF(config), 0, 0, NULL, "BATON_CONFIG", NULL, "Config file to read."};

int cfg_load(struct cfg *c, int argc, char **argv, char **env, char *err, size_t errsz)
{
    int rc;
    const char *file = NULL;
    char from[128];

    memset(c, 0, sizeof(*c));
    /* defaults */
    for (int i = 0; i < cfg_n_opts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        if (!o->def) continue;
        rc = set_opt(c, o, o->def, "default", err, errsz);
        if (rc < 0) return rc;
    }
    /* pass 1 over argv: non-option flags and --config */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            c->help = 1;
            continue;
        }
        if (!strcmp(a, "--version")) {
            c->version = 1;
            continue;
        }
        if (!strcmp(a, "--print-config-example")) {
            c->print_example = 1;
            continue;
        }
        if (!strcmp(a, "--config") || !strncmp(a, "--config=", 9)) {
            if (a[8] == '=')
                file = a + 9;
            else if (i + 1 < argc)
                file = argv[++i];
            else
                return bt_errf(err, errsz, BT_EINVAL, "option config: missing value");
            continue;
        }
        const struct cfg_opt *o;
        const char *v;
        rc = match_flag(argc, argv, &i, &o, &v, err, errsz);
        if (rc < 0) return rc;
    }
    if (c->help || c->version || c->print_example) return BT_OK;
    if (!file) file = env_get(env, config_opt.env);
    if (file && *file) {
        rc = set_opt(c, &config_opt, file, "flag", err, errsz);
        if (rc < 0) return rc;
        rc = load_file(c, file, err, errsz);
        if (rc < 0) return rc;
    }
    for (int i = 0; i < cfg_n_opts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        const char *v = env_get(env, o->env);
        if (!v) continue;
        snprintf(from, sizeof(from), "env %s", o->env);
        rc = set_opt(c, o, v, from, err, errsz);
        if (rc < 0) return rc;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (!strncmp(a, "--config=", 9)) continue;
        const struct cfg_opt *o;
        const char *v;
        rc = match_flag(argc, argv, &i, &o, &v, err, errsz);
        if (rc < 0) return rc;
        snprintf(from, sizeof(from), "flag %s", a);
        rc = set_opt(c, o, v, from, err, errsz);
        if (rc < 0) return rc;
    }
    int dev;
    char derr[160];
    if (c->device && dev_parse(c->device, &dev, derr, sizeof(derr)) < 0)
        return bt_errf(err, errsz, BT_EINVAL, "option device: %s", derr);
    return BT_OK;
}

int cfg_device(const struct cfg *c)
{
    int dev = DEV_CPU;
    char derr[160];
    if (c->device && dev_parse(c->device, &dev, derr, sizeof(derr)) < 0) dev = DEV_CPU;
    return dev;
}

void cfg_free(struct cfg *c)
{
    if (!c) return;
    for (int i = 0; i < cfg_n_opts; i++)
        if (cfg_opts[i].type == CFG_STR) free(*opt_str(c, &cfg_opts[i]));
    free(c->config);
    memset(c, 0, sizeof(*c));
}

/* Write doc as '# ' comment lines wrapped at ~96 columns. */
static void write_wrapped(FILE *f, const char *prefix, const char *doc)
{
    const char *p = doc;
    while (*p) {
        size_t room = 96 - strlen(prefix), n = strlen(p);
        if (n > room) {
            n = room;
            while (n > 0 && p[n] != ' ') n--;
            if (n == 0) n = room;
        }
        fprintf(f, "%s%.*s\n", prefix, (int)n, p);
        p += n;
        while (*p == ' ') p++;
    }
}

static void write_bounds(FILE *f, const struct cfg_opt *o)
{
    if (o->type == CFG_STR) {
        if (o->enums) fprintf(f, "; one of %s", o->enums);
        return;
    }
    if (o->type == CFG_SEC) {
        fprintf(f, "; seconds in [%g, %g]", (double)o->min / 1000.0, (double)o->max / 1000.0);
        return;
    }
    fprintf(f, "; %s in [%lld, %lld]", o->type == CFG_SIZE ? "size" : "integer", (long long)o->min,
            (long long)o->max);
}

void cfg_write_example(FILE *f)
{
    fputs("# baton-server example configuration (generated by `baton-server "
          "--print-config-example`).\n"
          "# Use with --config FILE or BATON_CONFIG=FILE. Lines are `key = value`; '#' starts a\n"
          "# comment line. Precedence: command-line flag > environment variable > this file >\n"
          "# default. Every key below is commented out and shows its default.\n",
          f);
    for (int i = 0; i < cfg_n_opts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        fputc('\n', f);
        write_wrapped(f, "# ", o->doc);
        fprintf(f, "# flag --%s", o->name);
        if (o->shortopt) fprintf(f, " (-%c)", o->shortopt);
        fprintf(f, ", env %s", o->env);
        write_bounds(f, o);
        fputc('\n', f);
        if (o->def)
            fprintf(f, "#%s = %s\n", o->name, o->def);
        else
            fprintf(f, "#%s =\n", o->name);
    }
}

void cfg_write_help(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s -m MODEL.gguf [options]\n\n"
            "OpenAI-compatible HTTP server for GGUF models. Every option is also an environment\n"
            "variable and a config-file key (precedence: flag > env > file > default).\n\n"
            "  --config FILE                 read options from FILE (env BATON_CONFIG)\n"
            "  --print-config-example        print the documented example config\n"
            "  --help, --version\n\n",
            argv0);
    for (int i = 0; i < cfg_n_opts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        char head[64];
        if (o->shortopt)
            snprintf(head, sizeof(head), "-%c, --%s", o->shortopt, o->name);
        else
            snprintf(head, sizeof(head), "    --%s", o->name);
        fprintf(f, "  %-28s  (env %s, default %s", head, o->env, o->def ? o->def : "none");
        write_bounds(f, o);
        fputs(")\n", f);
        write_wrapped(f, "        ", o->doc);
    }
}
