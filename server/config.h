/* config: baton-server's options, all in one table (name, type, bounds, default, env var, doc).
 *
 * Every option can be given as a flag (--name VALUE or --name=VALUE; a few have a short form such
 * as -m), an environment variable (BATON_NAME: upper case, '-' -> '_') and a key in a config file
 * (--config FILE or BATON_CONFIG: `key = value` lines, '#' starts a comment line, the value may be
 * wrapped in double quotes). Precedence: flag > env > file > default.
 *
 * Ownership: cfg_load fills a struct cfg whose strings it owns; cfg_free releases them. Threads:
 * load once in main, then read-only (any thread). */
#ifndef BATON_CONFIG_H
#define BATON_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct cfg {
    char *config;      /* config file read, or NULL */
    char *model;       /* path of the GGUF */
    char *host;        /* address to bind */
    int64_t port;      /* TCP port (0: any free port) */
    int64_t listen_fd; /* already-listening socket to use instead of host/port, or -1 */
    int64_t threads;   /* compute threads (0: all cores) */
    char *device;      /* "cpu" or "cuda:N": where this process's stage runs (device.h) */
    int64_t http_threads;
    int64_t ctx_size; /* positions per sequence (0: the model's training context) */
    int64_t parallel; /* slots: sequences decoded together */
    int64_t queue;    /* requests waiting for a slot */
    int64_t prefill_chunk;
    int64_t request_timeout; /* seconds, 0: none */
    int64_t max_body;        /* bytes */
    char *api_key;           /* NULL or "": no authentication */
    char *chat_template;     /* NULL or "": the GGUF's */
    char *model_alias;       /* NULL or "": the model file's basename */
    char *log_level;         /* debug|info|warn|error */
    /* the pipeline (ranks > 1) and `baton run` (--oneshot) */
    char *split;          /* layers per stage "8,7,7"; NULL or "": even by bytes */
    int64_t init_timeout; /* seconds the ranks have to load and answer the handshake */
    /* faults (docs/faults.md); CFG_SEC values are milliseconds */
    int64_t heartbeat_interval_ms; /* heartbeats to every rank while idle */
    int64_t heartbeat_misses;      /* heartbeats missed in a row: the rank is offline */
    int64_t step_timeout_ms;       /* a pipeline step with no answer by then: a stage is hung */
    int64_t drain_timeout_ms;      /* after SIGTERM: running requests may finish (0: no drain) */
    int64_t launch_timeout_ms;     /* baton serve: the job's start up to MPI_Init on rank 0 */
    char *prompt;                  /* --oneshot: the prompt */
    int64_t n_predict; /* --oneshot: tokens to generate (-1: until the context is full) */
    char *temp;        /* --oneshot: temperature, a number >= 0 (0: greedy) */
    int64_t seed;      /* --oneshot: sampling seed (-1: random) */
    int64_t test_step_delay_ms;
    int64_t test_load_delay_ms;
    int64_t test_load_delay_rank; /* the rank test_load_delay_ms applies to; -1: every rank */
    /* set by flags that are not options */
    int help;
    int version;
    int print_example;
};

/* CFG_SEC: seconds with up to 3 decimals ("0.2"), stored as int64 milliseconds; min and max
 * are milliseconds too. */
enum cfg_type { CFG_INT = 1, CFG_SIZE = 2, CFG_STR = 3, CFG_SEC = 4 };

struct cfg_opt {
    const char *name;  /* flag and file key */
    char shortopt;     /* 0 if none */
    int type;          /* enum cfg_type */
    size_t offset;     /* into struct cfg */
    int64_t min, max;  /* numbers: inclusive bounds */
    const char *def;   /* default as text; NULL: unset */
    const char *env;   /* BATON_... */
    const char *enums; /* strings: allowed values "a|b|c", or NULL */
    const char *doc;
};

extern const struct cfg_opt cfg_opts[];
extern const int cfg_n_opts;

/* Fill c from defaults, the config file, env (a NULL-terminated "KEY=VALUE" array such as
 * environ; NULL for none) and argv, in that order of increasing precedence. On error returns
 * BT_EINVAL and err names the option, the bad value and where it came from; c is then still safe
 * to cfg_free. */
int cfg_load(struct cfg *c, int argc, char **argv, char **env, char *err, size_t errsz);
void cfg_free(struct cfg *c); /* NULL is fine; leaves c zeroed */
/* The device option as DEV_CPU (-1) or a CUDA index (cfg_load has checked its spelling). */
int cfg_device(const struct cfg *c);

/* The documented example configuration (config/baton.conf.example), generated from the table. */
void cfg_write_example(FILE *f);
/* --help text. */
void cfg_write_help(FILE *f, const char *argv0);

#endif
