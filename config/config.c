#include "config.h"

#include "chat.h"
#include "device.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define OFF(f)   offsetof(struct cfg, f)
#define I64MAX   INT64_MAX
#define LOG_ENUM "debug|info|warn|error"

_Static_assert((int)CFG_LOG_DEBUG == (int)BT_LOG_DEBUG && (int)CFG_LOG_INFO == (int)BT_LOG_INFO &&
                   (int)CFG_LOG_WARN == (int)BT_LOG_WARN && (int)CFG_LOG_ERROR == (int)BT_LOG_ERROR,
               "--log-level's index is the log level");

static int check_device(const char *v, char *err, size_t errsz)
{
    int dev;
    return dev_parse(v, &dev, err, errsz);
}

static int check_chat_template(const char *v, char *err, size_t errsz)
{
    int family;
    bool fell_back;
    return *v ? chat_select(v, NULL, &family, &fell_back, err, errsz) : BT_OK;
}

/* The one table, group by group (the order of --help and the example file). Keep docs short:
 * they become the example config and --help. */
const struct cfg_opt cfg_opts[] = {
    /* ---- stage: every rank ---- */
    {.name = "model",
     .shortopt = 'm',
     .type = CFG_STR,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.model),
     .doc = "Path of the GGUF model file (required)."},
    {.name = "threads",
     .shortopt = 't',
     .type = CFG_INT,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.threads),
     .min = 0,
     .max = 1024,
     .def = "0",
     .doc = "Compute threads of the engine (0: one per core)."},
    {.name = "device",
     .type = CFG_STR,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.device),
     .def = "cpu",
     .check = check_device,
     .doc = "Where this process's layers run: cpu, or cuda:N for CUDA device N (a build with "
            "-Dcuda=enabled; each rank of a pipeline reads its own BATON_DEVICE, so GPU and CPU "
            "stages can be mixed). Without such a device the start fails with \"no CUDA device: "
            "...\"."},
    {.name = "ctx-size",
     .shortopt = 'c',
     .type = CFG_INT,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.ctx_size),
     .min = 0,
     .max = 1 << 20,
     .def = "0",
     .doc = "Context length of each sequence in tokens, prompt included (0: the model's training "
            "context). Every rank of a pipeline must have the same."},
    {.name = "parallel",
     .type = CFG_INT,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.parallel),
     .min = 1,
     .max = 256,
     .def = "4",
     .doc = "Slots: how many requests are decoded together (continuous batching). Every rank of "
            "a pipeline must have the same."},
    {.name = "prefill-chunk",
     .type = CFG_INT,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.prefill_chunk),
     .min = 1,
     .max = 1 << 16,
     .def = "256",
     .doc = "Prompt tokens processed per step, interleaved with the decode steps of running "
            "requests. Every rank of a pipeline must have the same."},
    {.name = "kv-blocks",
     .type = CFG_INT,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.kv_blocks),
     .min = 0,
     .max = 1 << 24,
     .def = "0",
     .doc = "Blocks of 16 token positions in every stage's KV cache, shared by all sequences and "
            "the prefix cache (0: enough for every slot's whole context, --parallel x "
            "--ctx-size / 16). More keeps more prompts cached; fewer bounds the memory (a request "
            "then waits for blocks). Every rank of a pipeline must have the same."},
    {.name = "cache-type",
     .type = CFG_ENUM,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.cache_type),
     .def = "f16",
     .enums = "f16|f32",
     .doc = "Element type of the KV cache (f16 halves its memory; f32 keeps keys and values "
            "exact). Every rank of a pipeline must have the same."},
    {.name = "split",
     .type = CFG_STR,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.split),
     .doc = "Pipeline with several ranks: layers per stage, e.g. 8,7,7 (one count per rank, each "
            ">= 1, summing to the model's layers; default: even by bytes, the output head counted "
            "on the last stage)."},
    {.name = "init-timeout",
     .type = CFG_INT,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.init_timeout),
     .min = 1,
     .max = 86400,
     .def = "600",
     .doc = "Pipeline: seconds every rank has to load its layers and answer the startup "
            "handshake."},
    {.name = "heartbeat-interval",
     .type = CFG_SEC,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.heartbeat_interval_ms),
     .min = 10,
     .max = 3600000,
     .def = "1",
     .doc = "Pipeline: seconds between heartbeats from rank 0 to every rank (fractions allowed, "
            "e.g. 0.2). A rank that hears nothing from rank 0 for interval x misses x 2 leaves "
            "(exit 75)."},
    {.name = "heartbeat-misses",
     .type = CFG_INT,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.heartbeat_misses),
     .min = 1,
     .max = 1000,
     .def = "3",
     .doc = "Pipeline: heartbeats a rank may miss in a row while idle before it is declared "
            "offline (rank 0 then fails every request with 503 and exits 75 for a restart)."},
    {.name = "step-timeout",
     .type = CFG_SEC,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.step_timeout_ms),
     .min = 10,
     .max = 86400000,
     .def = "30",
     .doc = "Pipeline: seconds a step may take before the stage after the last one that "
            "answered is declared hung (fractions allowed)."},
    {.name = "log-level",
     .type = CFG_ENUM,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.log_level),
     .enums = LOG_ENUM,
     .doc = "Lowest level of log lines written to stderr (default: BATON_LOG, else info)."},
    {.name = "test-load-delay-ms",
     .type = CFG_INT,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.test_load_delay_ms),
     .min = 0,
     .max = 600000,
     .def = "0",
     .doc = "Testing aid: the rank chosen by --test-load-delay-rank stays in the loading state "
            "this long before it loads (keep 0 in production)."},
    {.name = "test-load-delay-rank",
     .type = CFG_INT,
     .group = CFG_G_STAGE,
     .offset = OFF(stage.test_load_delay_rank),
     .min = -1,
     .max = 255,
     .def = "0",
     .doc = "Testing aid: the rank whose load --test-load-delay-ms delays (0: rank 0, "
            "baton-server; -1: every rank)."},

    /* ---- server: rank 0's HTTP front and scheduler ---- */
    {.name = "host",
     .type = CFG_STR,
     .group = CFG_G_SERVER,
     .offset = OFF(server.host),
     .def = "127.0.0.1",
     .doc = "Address the HTTP server binds to."},
    {.name = "port",
     .type = CFG_INT,
     .group = CFG_G_SERVER,
     .offset = OFF(server.port),
     .min = 0,
     .max = 65535,
     .def = "8080",
     .doc = "TCP port of the HTTP server (0: any free port, logged at start)."},
    {.name = "listen-fd",
     .type = CFG_INT,
     .group = CFG_G_SERVER,
     .offset = OFF(server.listen_fd),
     .min = -1,
     .max = 65535,
     .def = "-1",
     .doc = "Serve on this already-listening socket (passed by a supervisor) instead of "
            "host:port; -1: none."},
    {.name = "http-threads",
     .type = CFG_INT,
     .group = CFG_G_SERVER,
     .offset = OFF(server.http_threads),
     .min = 1,
     .max = 256,
     .def = "4",
     .doc = "Threads serving HTTP connections."},
    {.name = "queue",
     .type = CFG_INT,
     .group = CFG_G_SERVER,
     .offset = OFF(server.queue),
     .min = 1,
     .max = 1 << 20,
     .def = "64",
     .doc = "Requests that may wait for a free slot (at least 1: every request passes the queue "
            "on its way to the scheduler); when full, new ones get 429."},
    {.name = "request-timeout",
     .type = CFG_INT,
     .group = CFG_G_SERVER,
     .offset = OFF(server.request_timeout),
     .min = 0,
     .max = 86400 * 7,
     .def = "600",
     .doc = "Seconds a request may take from arrival to its end (0: no limit). A request past "
            "it ends with finish_reason \"length\", or with a 503 error if it produced nothing "
            "yet."},
    {.name = "max-body",
     .type = CFG_SIZE,
     .group = CFG_G_SERVER,
     .offset = OFF(server.max_body),
     .min = 1024,
     .max = (int64_t)1 << 30,
     .def = "1M",
     .doc = "Largest request body accepted (bytes; K, M, G suffixes); larger ones get 413."},
    {.name = "api-key",
     .type = CFG_STR,
     .group = CFG_G_SERVER,
     .offset = OFF(server.api_key),
     .doc = "Require `Authorization: Bearer KEY` on every route but /health (empty: no key)."},
    {.name = "chat-template",
     .type = CFG_STR,
     .group = CFG_G_SERVER,
     .offset = OFF(server.chat_template),
     .check = check_chat_template,
     .doc = "Chat template overriding the GGUF's tokenizer.chat_template: a family name "
            "(chatml, llama2, llama3, mistral-v7, phi3, gemma, zephyr, deepseek3, ...: the full "
            "list is in docs/chat-templates.md) or the text of a Jinja template of a known "
            "family."},
    {.name = "model-alias",
     .shortopt = 'a',
     .type = CFG_STR,
     .group = CFG_G_SERVER,
     .offset = OFF(server.model_alias),
     .doc = "Model name shown by /v1/models and in responses (default: the file's basename)."},
    {.name = "drain-timeout",
     .type = CFG_SEC,
     .group = CFG_G_SERVER,
     .offset = OFF(server.drain_timeout_ms),
     .min = 0,
     .max = 3600000,
     .def = "30",
     .doc = "After SIGTERM/SIGINT: seconds the running and queued requests may take to finish "
            "while new ones get 503 (0: stop at once); `baton serve` kills the job 5 s after "
            "that."},
    {.name = "test-step-delay-ms",
     .type = CFG_INT,
     .group = CFG_G_SERVER,
     .offset = OFF(server.test_step_delay_ms),
     .min = 0,
     .max = 10000,
     .def = "0",
     .doc = "Testing aid: sleep this long after every engine step (keep 0 in production)."},

    /* ---- launch: baton serve|run ---- */
    {.name = "ranks",
     .type = CFG_INT,
     .group = CFG_G_LAUNCH,
     .offset = OFF(launch.ranks),
     .min = 1,
     .max = 256,
     .def = "1",
     .doc = "`baton serve|run`: processes of the job (pipeline stages): rank 0 is baton-server, "
            "ranks 1.. are baton-rankd."},
    {.name = "hosts",
     .type = CFG_STR,
     .group = CFG_G_LAUNCH,
     .offset = OFF(launch.hosts),
     .doc = "`baton serve|run`: spread the ranks over these hosts, h1,h2,... or h1:2,h2:1 (ranks "
            "per host; hydra -hosts, a host's ranks next to each other; rank 0 on the first, "
            "which must be this machine; not with --hostfile)."},
    {.name = "hostfile",
     .type = CFG_STR,
     .group = CFG_G_LAUNCH,
     .offset = OFF(launch.hostfile),
     .doc = "`baton serve|run`: the hosts from this file, one a line: NAME[:RANKS], or "
            "`NAME spare` for a spare (not with --hosts)."},
    {.name = "dry-run",
     .type = CFG_BOOL,
     .group = CFG_G_LAUNCH,
     .offset = OFF(launch.dry_run),
     .def = "false",
     .doc = "`baton serve|run`: print the mpiexec command line and exit."},
    {.name = "launch-timeout",
     .type = CFG_SEC,
     .group = CFG_G_LAUNCH,
     .offset = OFF(launch.launch_timeout_ms),
     .min = 1000,
     .max = 86400000,
     .def = "60",
     .doc = "`baton serve`: seconds a job may take to start on every host and bring MPI up "
            "(rank 0 past MPI_Init, before any model loading); past it the supervisor kills the "
            "job and starts it again (a host unreachable at the start would make it wait "
            "forever)."},
    {.name = "spare-hosts",
     .type = CFG_STR,
     .group = CFG_G_LAUNCH,
     .offset = OFF(launch.spare_hosts),
     .doc = "`baton serve`: standby hosts h4,h5,...: when a host is evicted (--evict-after), the "
            "first spare that answers takes its place with the same ranks and layers. Needs "
            "--hosts or --hostfile (where a line `NAME spare` marks a spare)."},
    {.name = "evict-after",
     .type = CFG_INT,
     .group = CFG_G_LAUNCH,
     .offset = OFF(launch.evict_after),
     .min = 0,
     .max = 1000,
     .def = "3",
     .doc = "`baton serve` with --hosts: a host charged with this many failures of the job in a "
            "row (its rank's fault, or no answer to a probe when the job did not come up) is "
            "evicted: a spare takes its place, else the layers are re-split over the other hosts "
            "(0: never evict)."},
    {.name = "min-hosts",
     .type = CFG_INT,
     .group = CFG_G_LAUNCH,
     .offset = OFF(launch.min_hosts),
     .min = 1,
     .max = 64,
     .def = "1",
     .doc = "`baton serve` with --hosts: an eviction that leaves fewer hosts than this in service "
            "stops the supervisor (exit 1) instead of serving degraded."},
    {.name = "readmit-interval",
     .type = CFG_SEC,
     .group = CFG_G_LAUNCH,
     .offset = OFF(launch.readmit_interval_ms),
     .min = 0,
     .max = 86400000,
     .def = "60",
     .doc = "`baton serve` with --hosts: seconds between probes of an evicted host (doubling with "
            "each eviction of the same host, up to 8x); once it answers it rejoins at the next "
            "restart, which the supervisor asks for at an idle moment (0: never readmit)."},
    {.name = "on-evict",
     .type = CFG_STR,
     .group = CFG_G_LAUNCH,
     .offset = OFF(launch.on_evict),
     .doc = "`baton serve` with --hosts: a shell command run (/bin/sh -c) at each eviction, with "
            "BATON_EVICTED_HOST, BATON_EVICT_REASON, BATON_HOSTS_IN_SERVICE and "
            "BATON_SPARES_LEFT in its environment (e.g. to page an operator)."},

    /* ---- run: baton run (baton-server --oneshot) ---- */
    {.name = "prompt",
     .shortopt = 'p',
     .type = CFG_STR,
     .group = CFG_G_RUN,
     .offset = OFF(run.prompt),
     .doc = "`baton run`: the prompt whose continuation is printed."},
    {.name = "n-predict",
     .shortopt = 'n',
     .type = CFG_INT,
     .group = CFG_G_RUN,
     .offset = OFF(run.n_predict),
     .min = -1,
     .max = 1 << 24,
     .def = "128",
     .doc = "`baton run`: tokens to generate (-1: until the context is full)."},
    {.name = "temp",
     .type = CFG_FLOAT,
     .group = CFG_G_RUN,
     .offset = OFF(run.temp),
     .fmin = 0,
     .fmax = 100,
     .def = "0.8",
     .doc = "`baton run`: sampling temperature (0: greedy)."},
    {.name = "seed",
     .type = CFG_INT,
     .group = CFG_G_RUN,
     .offset = OFF(run.seed),
     .min = -1,
     .max = I64MAX,
     .def = "-1",
     .doc = "`baton run`: sampling seed (-1: random)."},
};
const int cfg_n_opts = (int)(sizeof(cfg_opts) / sizeof(cfg_opts[0]));

static const char *const group_title[CFG_G_COUNT] = {
    "stage: every rank of the pipeline",
    "server: rank 0's HTTP front and scheduler",
    "launch: `baton serve` and `baton run`",
    "run: `baton run`, one prompt (baton-server --oneshot)",
};

static void *field(struct cfg *c, const struct cfg_opt *o)
{
    return (char *)c + o->offset;
}

static const struct cfg_opt *find_opt(const char *name, size_t len)
{
    for (int i = 0; i < cfg_n_opts; i++)
        if (strlen(cfg_opts[i].name) == len && !memcmp(cfg_opts[i].name, name, len))
            return &cfg_opts[i];
    return NULL;
}

const char *cfg_env_name(const struct cfg_opt *o, char *buf, size_t bufsz)
{
    size_t n = (size_t)snprintf(buf, bufsz, "BATON_%s", o->name);
    for (size_t i = 6; i < n && i < bufsz; i++)
        buf[i] = buf[i] == '-' ? '_' : (char)toupper((unsigned char)buf[i]);
    return buf;
}

/* The index of word v in "a|b|c", or -1. */
static int enum_index(const char *enums, const char *v)
{
    size_t n = strlen(v);
    int k = 0;
    for (const char *p = enums;; k++) {
        const char *e = strchr(p, '|');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !memcmp(p, v, n)) return k;
        if (!e) return -1;
        p = e + 1;
    }
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
        const char *units = "kKmMgG", *u = strchr(units, *end);
        if (!u) return BT_EINVAL;
        int shift = 10 * (int)(1 + (u - units) / 2);
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

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no",
                                                                                "off"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) return *out = true, BT_OK;
        if (!strcasecmp(v, no[i])) return *out = false, BT_OK;
    }
    return BT_EINVAL;
}

static int set_str(struct cfg *c, const struct cfg_opt *o, const char *v, const char *from,
                   char *err, size_t errsz)
{
    char why[256];
    if (o->check && o->check(v, why, sizeof(why)) < 0)
        return bt_errf(err, errsz, BT_EINVAL, "option %s: %s (from %s)", o->name, why, from);
    char *s = strdup(v);
    if (!s) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    char **slot = field(c, o);
    free(*slot);
    *slot = s;
    return BT_OK;
}

static int set_float(struct cfg *c, const struct cfg_opt *o, const char *v, const char *from,
                     char *err, size_t errsz)
{
    char *end;
    errno = 0;
    double x = *v && !isspace((unsigned char)*v) ? strtod(v, &end) : NAN;
    if (isnan(x) || errno || *end || !isfinite(x))
        return bt_errf(err, errsz, BT_EINVAL, "option %s: '%s' is not a number (from %s)", o->name,
                       v, from);
    if (x < o->fmin || x > o->fmax)
        return bt_errf(err, errsz, BT_EINVAL, "option %s: %s is out of range [%g, %g] (from %s)",
                       o->name, v, o->fmin, o->fmax, from);
    *(double *)field(c, o) = x;
    return BT_OK;
}

/* CFG_INT, CFG_SIZE and CFG_SEC into an int64 within the bounds. */
static int set_int(struct cfg *c, const struct cfg_opt *o, const char *v, const char *from,
                   char *err, size_t errsz)
{
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
    } else {
        if (parse_num(v, o->type == CFG_SIZE, &x) < 0)
            return bt_errf(err, errsz, BT_EINVAL, "option %s: '%s' is not %s (from %s)", o->name, v,
                           o->type == CFG_SIZE ? "a size (e.g. 4096, 64K, 1M)" : "an integer",
                           from);
        if (x < o->min || x > o->max)
            return bt_errf(err, errsz, BT_EINVAL,
                           "option %s: %lld is out of range [%lld, %lld] (from %s)", o->name,
                           (long long)x, (long long)o->min, (long long)o->max, from);
    }
    *(int64_t *)field(c, o) = x;
    return BT_OK;
}

/* Set option o from text v; `from` says where the value came from, for the error. */
static int set_opt(struct cfg *c, const struct cfg_opt *o, const char *v, const char *from,
                   char *err, size_t errsz)
{
    switch (o->type) {
    case CFG_STR:
        return set_str(c, o, v, from, err, errsz);
    case CFG_FLOAT:
        return set_float(c, o, v, from, err, errsz);
    case CFG_ENUM: {
        int k = enum_index(o->enums, v);
        if (k < 0)
            return bt_errf(err, errsz, BT_EINVAL, "option %s: '%s' is not one of %s (from %s)",
                           o->name, v, o->enums, from);
        *(int *)field(c, o) = k;
        return BT_OK;
    }
    case CFG_BOOL:
        if (parse_bool(v, field(c, o)) < 0)
            return bt_errf(err, errsz, BT_EINVAL, "option %s: '%s' is not true or false (from %s)",
                           o->name, v, from);
        return BT_OK;
    default:
        return set_int(c, o, v, from, err, errsz);
    }
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

/* One `key = value` line of a config file (s: the trimmed line, modified). */
static int file_line(struct cfg *c, char *s, const char *path, int lineno, char *err, size_t errsz)
{
    char from[4200];
    char *eq = strchr(s, '=');
    if (!eq) return bt_errf(err, errsz, BT_EINVAL, "%s:%d: expected 'key = value'", path, lineno);
    *eq = 0;
    char *key = trim(s), *val = trim(eq + 1);
    size_t vl = strlen(val);
    if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
        val[vl - 1] = 0;
        val++;
    }
    const struct cfg_opt *o = find_opt(key, strlen(key));
    if (!o) return bt_errf(err, errsz, BT_EINVAL, "%s:%d: unknown option '%s'", path, lineno, key);
    snprintf(from, sizeof(from), "%s:%d", path, lineno);
    return set_opt(c, o, val, from, err, errsz);
}

static int load_file(struct cfg *c, const char *path, char *err, size_t errsz)
{
    char line[4096];
    int lineno = 0, rc = BT_OK;
    FILE *f = fopen(path, "r");
    if (!f)
        return bt_errf(err, errsz, BT_EINVAL, "option config: cannot open '%s': %s", path,
                       strerror(errno));
    while (rc == BT_OK && fgets(line, sizeof(line), f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof(line) - 1 && line[n - 1] != '\n')
            rc = bt_errf(err, errsz, BT_EINVAL, "%s:%d: line too long", path, lineno);
        char *s = trim(line);
        if (rc == BT_OK && *s && *s != '#') rc = file_line(c, s, path, lineno, err, errsz);
    }
    if (rc == BT_OK && ferror(f))
        rc = bt_errf(err, errsz, BT_EINVAL, "option config: reading '%s' failed", path);
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

/* The option named by flag a ("--name", "--name=v", "-x"); *val: the inline value or NULL. */
static const struct cfg_opt *flag_opt(const char *a, const char **val)
{
    *val = NULL;
    if (a[0] == '-' && a[1] == '-') {
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (eq) *val = eq + 1;
        return find_opt(name, len);
    }
    if (a[0] == '-' && a[1] && !a[2])
        for (int k = 0; k < cfg_n_opts; k++)
            if (cfg_opts[k].shortopt == a[1]) return &cfg_opts[k];
    return NULL;
}

const struct cfg_opt *cfg_flag_at(int argc, char **argv, int i, int *n_args)
{
    const char *val;
    const struct cfg_opt *o = flag_opt(argv[i], &val);
    *n_args = o && !val && o->type != CFG_BOOL && i + 1 < argc ? 2 : 1;
    return o;
}

/* Match argv[*i] against an option; returns it and its value (advancing *i past a separate
 * value). A bool without a value is "true". */
static int match_flag(int argc, char **argv, int *i, const struct cfg_opt **opt, const char **val,
                      char *err, size_t errsz)
{
    const char *a = argv[*i], *v;
    const struct cfg_opt *o = flag_opt(a, &v);
    if (!o) return bt_errf(err, errsz, BT_EINVAL, "unknown option '%s' (see --help)", a);
    if (!v && o->type == CFG_BOOL) v = "true";
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

/* Pass 1 over argv: the flags that are not options (--help, --version, --print-config-example),
 * the config file, and a first check that every flag is known. */
static int scan_argv(struct cfg *c, int argc, char **argv, const char **file, char *err,
                     size_t errsz)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            c->help = 1;
        } else if (!strcmp(a, "--version")) {
            c->version = 1;
        } else if (!strcmp(a, "--print-config-example")) {
            c->print_example = 1;
        } else if (!strcmp(a, "--config") || !strncmp(a, "--config=", 9)) {
            if (a[8] == '=')
                *file = a + 9;
            else if (i + 1 < argc)
                *file = argv[++i];
            else
                return bt_errf(err, errsz, BT_EINVAL, "option config: missing value");
        } else {
            const struct cfg_opt *o;
            const char *v;
            int rc = match_flag(argc, argv, &i, &o, &v, err, errsz);
            if (rc < 0) return rc;
        }
    }
    return BT_OK;
}

static int load_env(struct cfg *c, char **env, char *err, size_t errsz)
{
    char name[80], from[128];
    for (int i = 0; i < cfg_n_opts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        const char *v = env_get(env, cfg_env_name(o, name, sizeof(name)));
        if (!v) continue;
        snprintf(from, sizeof(from), "env %s", name);
        int rc = set_opt(c, o, v, from, err, errsz);
        if (rc < 0) return rc;
    }
    return BT_OK;
}

static int load_flags(struct cfg *c, int argc, char **argv, char *err, size_t errsz)
{
    char from[128];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (!strncmp(a, "--config=", 9) || !strcmp(a, "--help") || !strcmp(a, "-h") ||
            !strcmp(a, "--version") || !strcmp(a, "--print-config-example"))
            continue;
        const struct cfg_opt *o;
        const char *v;
        int rc = match_flag(argc, argv, &i, &o, &v, err, errsz);
        if (rc < 0) return rc;
        snprintf(from, sizeof(from), "flag %s", a);
        if ((rc = set_opt(c, o, v, from, err, errsz)) < 0) return rc;
    }
    return BT_OK;
}

int cfg_load(struct cfg *c, int argc, char **argv, char **env, char *err, size_t errsz)
{
    int rc;
    const char *file = NULL;

    memset(c, 0, sizeof(*c));
    for (int i = 0; i < cfg_n_opts; i++) {
        const struct cfg_opt *o = &cfg_opts[i];
        if (o->type == CFG_ENUM) *(int *)field(c, o) = -1;
        if (o->def && (rc = set_opt(c, o, o->def, "default", err, errsz)) < 0) return rc;
    }
    if ((rc = scan_argv(c, argc, argv, &file, err, errsz)) < 0) return rc;
    if (c->help || c->version || c->print_example) return BT_OK;
    if (!file) file = env_get(env, "BATON_CONFIG");
    if (file && *file) {
        if (!(c->config = strdup(file))) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
        if ((rc = load_file(c, file, err, errsz)) < 0) return rc;
    }
    if ((rc = load_env(c, env, err, errsz)) < 0) return rc;
    return load_flags(c, argc, argv, err, errsz);
}

int cfg_device(const struct cfg_stage *s)
{
    int dev = DEV_CPU;
    char derr[160];
    if (s->device && dev_parse(s->device, &dev, derr, sizeof(derr)) < 0) dev = DEV_CPU;
    return dev;
}

void cfg_free(struct cfg *c)
{
    if (!c) return;
    for (int i = 0; i < cfg_n_opts; i++)
        if (cfg_opts[i].type == CFG_STR) free(*(char **)field(c, &cfg_opts[i]));
    free(c->config);
    memset(c, 0, sizeof(*c));
}

/* Write doc as comment lines wrapped at ~96 columns. */
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
    switch (o->type) {
    case CFG_STR:
        break;
    case CFG_ENUM:
        fprintf(f, "; one of %s", o->enums);
        break;
    case CFG_BOOL:
        fputs("; true or false", f);
        break;
    case CFG_FLOAT:
        fprintf(f, "; number in [%g, %g]", o->fmin, o->fmax);
        break;
    case CFG_SEC:
        fprintf(f, "; seconds in [%g, %g]", (double)o->min / 1000.0, (double)o->max / 1000.0);
        break;
    default:
        fprintf(f, "; %s in [%lld, %lld]", o->type == CFG_SIZE ? "size" : "integer",
                (long long)o->min, (long long)o->max);
    }
}

void cfg_write_example(FILE *f)
{
    char env[80];
    fputs("# baton example configuration (generated by `baton-server --print-config-example`).\n"
          "# Use with --config FILE or BATON_CONFIG=FILE; every baton program reads it (each uses\n"
          "# its groups). Lines are `key = value`; '#' starts a comment line. Precedence:\n"
          "# command-line flag > environment variable > this file > default. Every key below is\n"
          "# commented out and shows its default.\n",
          f);
    for (int g = 0; g < CFG_G_COUNT; g++) {
        fprintf(f, "\n# ==== %s ====\n", group_title[g]);
        for (int i = 0; i < cfg_n_opts; i++) {
            const struct cfg_opt *o = &cfg_opts[i];
            if ((int)o->group != g) continue;
            fputc('\n', f);
            write_wrapped(f, "# ", o->doc);
            fprintf(f, "# flag --%s", o->name);
            if (o->shortopt) fprintf(f, " (-%c)", o->shortopt);
            fprintf(f, ", env %s", cfg_env_name(o, env, sizeof(env)));
            write_bounds(f, o);
            fputc('\n', f);
            fprintf(f, "#%s =%s%s\n", o->name, o->def ? " " : "", o->def ? o->def : "");
        }
    }
}

void cfg_write_help(FILE *f, const char *usage, unsigned groups)
{
    char env[80];
    fprintf(f,
            "%s\n\nEvery option is also an environment variable and a config-file key (precedence: "
            "flag >\nenv > file > default).\n\n"
            "  --config FILE                 read options from FILE (env BATON_CONFIG)\n"
            "  --print-config-example        print the documented example config\n"
            "  --help, --version\n",
            usage);
    for (int g = 0; g < CFG_G_COUNT; g++) {
        if (!(groups & (1u << g))) continue;
        fprintf(f, "\n%s\n", group_title[g]);
        for (int i = 0; i < cfg_n_opts; i++) {
            const struct cfg_opt *o = &cfg_opts[i];
            char head[64];
            if ((int)o->group != g) continue;
            if (o->shortopt)
                snprintf(head, sizeof(head), "-%c, --%s", o->shortopt, o->name);
            else
                snprintf(head, sizeof(head), "    --%s", o->name);
            fprintf(f, "  %-28s  (env %s, default %s", head, cfg_env_name(o, env, sizeof(env)),
                    o->def ? o->def : "none");
            write_bounds(f, o);
            fputs(")\n", f);
            write_wrapped(f, "        ", o->doc);
        }
    }
}
