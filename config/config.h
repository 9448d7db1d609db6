/* config: every option of every baton program, in one table (name, type, group, bounds, default,
 * doc), parsed in one place. baton-server, baton-rankd and the launcher `baton` link this
 * library; none of them parses a value itself.
 *
 * Every option can be given as a flag (--name VALUE or --name=VALUE; a few have a short form such
 * as -m; a bool is --name alone or --name=false), an environment variable (BATON_NAME: upper case,
 * '-' -> '_') and a key in a config file (--config FILE or BATON_CONFIG: `key = value` lines, '#'
 * starts a comment line, the value may be wrapped in double quotes). Precedence: flag > env >
 * file > default.
 *
 * Options come in groups, one sub-struct each, by who needs them:
 *   stage   every rank of a pipeline (the model, its split, sizes, threads, device, fault timing);
 *           ranks compare what must agree at the handshake (pipeline.h)
 *   server  rank 0's HTTP front and scheduler
 *   launch  the launcher and supervisor `baton serve|run`
 *   run     `baton run` (one prompt through the pipeline, baton-server --oneshot)
 * Every program accepts every option, so one command line or config file serves all of them;
 * a program ignores the groups it does not use.
 *
 * Ownership: cfg_load fills a struct cfg whose strings it owns; cfg_free releases them. Threads:
 * load once in main, then read-only (any thread). */
#ifndef BATON_CONFIG_H
#define BATON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* --log-level and --cache-type as enum options: the value is the index in the option's list */
enum cfg_log_level { CFG_LOG_UNSET = -1, CFG_LOG_DEBUG, CFG_LOG_INFO, CFG_LOG_WARN, CFG_LOG_ERROR };
enum cfg_cache_type { CFG_CACHE_F16 = 0, CFG_CACHE_F32 = 1 };

/* The options every pipeline rank needs. Times: CFG_SEC values are milliseconds. */
struct cfg_stage {
    char *model;      /* path of the GGUF */
    int64_t threads;  /* compute threads (0: all cores) */
    char *device;     /* "cpu" or "cuda:N" (device.h): where this process's stage runs */
    int64_t ctx_size; /* positions per sequence (0: the model's training context) */
    int64_t parallel; /* slots: sequences decoded together */
    int64_t prefill_chunk;
    int64_t kv_blocks;    /* KV blocks of every stage's cache (0: every slot's whole context) */
    int cache_type;       /* enum cfg_cache_type */
    char *split;          /* layers per stage "8,7,7"; NULL or "": even by bytes */
    int64_t init_timeout; /* seconds the ranks have to load and answer the handshake */
    int64_t heartbeat_interval_ms; /* heartbeats to every rank while idle */
    int64_t heartbeat_misses;      /* heartbeats missed in a row: the rank is offline */
    int64_t step_timeout_ms;       /* a pipeline step with no answer by then: a stage is hung */
    int log_level;                 /* enum cfg_log_level */
    int64_t test_load_delay_ms;
    int64_t test_load_delay_rank; /* the rank test_load_delay_ms applies to; -1: every rank */
};

/* Rank 0's HTTP front and scheduler. */
struct cfg_server {
    char *host;        /* address to bind */
    int64_t port;      /* TCP port (0: any free port) */
    int64_t listen_fd; /* already-listening socket to use instead of host/port, or -1 */
    int64_t http_threads;
    int64_t queue;            /* requests waiting for a slot */
    int64_t request_timeout;  /* seconds, 0: none */
    int64_t max_body;         /* bytes */
    char *api_key;            /* NULL or "": no authentication */
    char *chat_template;      /* NULL or "": the GGUF's */
    char *model_alias;        /* NULL or "": the model file's basename */
    int64_t drain_timeout_ms; /* after SIGTERM: running requests may finish (0: no drain) */
    int64_t test_step_delay_ms;
};

/* `baton serve|run`: the launcher and supervisor. */
struct cfg_launch {
    int64_t ranks;               /* processes of the job, >= 1 */
    char *hosts;                 /* "h1,h2": hydra -hosts; NULL: this host */
    char *hostfile;              /* hydra -f; NULL: none */
    bool dry_run;                /* print the mpiexec command line and exit */
    int64_t launch_timeout_ms;   /* the job's start up to MPI_Init on rank 0 */
    char *spare_hosts;           /* "h4,h5": standby hosts; NULL: none */
    int64_t evict_after;         /* failures in a row that evict a host (0: never) */
    int64_t min_hosts;           /* fewer hosts in service: the supervisor stops */
    int64_t readmit_interval_ms; /* between probes of an evicted host (0: never) */
    char *on_evict;              /* shell command run at each eviction; NULL: none */
};

/* `baton run` (baton-server --oneshot): one prompt's continuation. */
struct cfg_run {
    char *prompt;
    int64_t n_predict; /* tokens to generate (-1: until the context is full) */
    double temp;       /* sampling temperature, >= 0 (0: greedy) */
    int64_t seed;      /* sampling seed (-1: random) */
};

struct cfg {
    char *config; /* config file read, or NULL */
    struct cfg_stage stage;
    struct cfg_server server;
    struct cfg_launch launch;
    struct cfg_run run;
    /* set by flags that are not options */
    int help;
    int version;
    int print_example;
};

/* CFG_SEC: seconds with up to 3 decimals ("0.2"), stored as int64 milliseconds; min and max are
 * milliseconds too. CFG_SIZE: an integer with an optional K/M/G suffix. CFG_ENUM: one of the
 * words in `enums` ("a|b|c"), stored as its index (int; -1 when unset). CFG_BOOL: true/false,
 * 1/0, yes/no, on/off (bool). CFG_FLOAT: a finite number (double) within fmin..fmax. */
enum cfg_type { CFG_INT = 1, CFG_SIZE, CFG_SEC, CFG_FLOAT, CFG_ENUM, CFG_STR, CFG_BOOL };
enum cfg_group { CFG_G_STAGE = 0, CFG_G_SERVER, CFG_G_LAUNCH, CFG_G_RUN, CFG_G_COUNT };

struct cfg_opt {
    const char *name; /* flag and file key; the env var is BATON_ + NAME (cfg_env_name) */
    char shortopt;    /* 0 if none */
    enum cfg_type type;
    enum cfg_group group;
    size_t offset;     /* into struct cfg */
    int64_t min, max;  /* CFG_INT, CFG_SIZE, CFG_SEC: inclusive bounds */
    double fmin, fmax; /* CFG_FLOAT: inclusive bounds */
    const char *def;   /* default as text; NULL: unset */
    const char *enums; /* CFG_ENUM: the words "a|b|c" */
    /* CFG_STR: an extra check of the value (NULL: any text); BT_EINVAL with text in err */
    int (*check)(const char *value, char *err, size_t errsz);
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

/* The option argv[i] names and how many argv entries it takes (1, or 2 with a separate value);
 * NULL (and 1) for an argument that is not an option of the table (--config, --help: not
 * options). For the launcher, which passes on what is not its own. */
const struct cfg_opt *cfg_flag_at(int argc, char **argv, int i, int *n_args);

/* "BATON_NAME" for option o into buf; returns buf. */
const char *cfg_env_name(const struct cfg_opt *o, char *buf, size_t bufsz);

/* The device option as DEV_CPU (-1) or a CUDA index (cfg_load has checked its spelling). */
int cfg_device(const struct cfg_stage *s);

/* The documented example configuration (config/baton.conf.example), generated from the table. */
void cfg_write_example(FILE *f);
/* --help text: usage line, then every option of the groups in `groups` (a bit mask of
 * 1 << enum cfg_group), group by group. */
void cfg_write_help(FILE *f, const char *usage, unsigned groups);
#define CFG_ALL_GROUPS ((1u << CFG_G_COUNT) - 1)

#endif
