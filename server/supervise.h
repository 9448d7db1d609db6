/* supervise: the supervisor of `baton serve` (and of `baton run`) as a state machine without
 * processes (DESIGN §5.4, docs/faults.md). The caller (launcher.c) feeds it events, each with the
 * time it happened (bt_now_s), and carries out the actions they return: start a job (mpiexec),
 * send SIGTERM to rank 0, kill the job's process tree. What an exit code means is decided in one
 * place, sup_verdict. The unit test (tests/unit/test_supervise.c) drives it with made-up times.
 *
 * A job is one mpiexec; rank 0's wrapper (`baton --wrap --report`) and rank 0 write lines to the
 * supervisor's pipe: "pid N" and "exit N" (the wrapper: rank 0's pid, its exit status), "up 1",
 * "alive", "result N", and for the fleet (below) "ready" (it serves), "fault K" (a pipeline fault
 * of rank K) and "failed K" (rank K kept the model from loading) (rank 0, server/report.h).
 *
 *   state     what is going on                      deadline (serve)       when it passes
 *   BACKOFF   no job; the next starts at deadline   backoff (0 at first)   START -> STARTING
 *   STARTING  mpiexec started, rank 0 not "up"      --launch-timeout (1)   KILL  -> KILLED
 *   RUNNING   rank 0 said "up" (MPI up everywhere)  last "alive" + (2)     KILL  -> KILLED
 *   STOPPING  rank 0 got SIGTERM and drains         --drain-timeout + 5 s  KILL  -> KILLED
 *   LINGER    rank 0 exited 0; the others leave     5 s                    KILL  -> KILLED
 *   KILLED    process tree killed; mpiexec not yet reaped
 *   DONE      exit_code is the supervisor's exit status
 *
 *   event                 BACKOFF  STARTING      RUNNING           STOPPING      LINGER, KILLED
 *   "up"                  -        RUNNING       .                 .             .
 *   "exit 0"              -        LINGER        LINGER            LINGER        .
 *   "exit N", N != 0      -        KILL, KILLED  KILL, KILLED      KILL, KILLED  .
 *   SIGTERM, SIGINT (3)   DONE 0   KILL, KILLED  TERM, STOPPING(4) . (5)         . (3)
 *   mpiexec reaped        n/a      verdict       verdict           verdict       KILL, verdict
 *
 *   -  report lines in BACKOFF belong to an ended job and are dropped; "." no transition ("pid",
 *      "alive", "result" and "exit" are recorded in every state but BACKOFF and DONE)
 *   (1) --launch-timeout and (2) the rank-0 silence (no "alive" for interval x misses x 2, at
 *       least 3 s; watched once the first "alive" came) apply to `baton serve` only
 *   (3) the first signal marks the supervisor stopping: whatever the job's end, it then exits 0
 *       (`baton run`: 130) and does not restart; in LINGER and KILLED nothing else happens
 *       (`baton run` in LINGER: KILL, KILLED)
 *   (4) KILL, KILLED when rank 0's pid is not known yet; `baton run`: always KILL, KILLED
 *   (5) a second signal is ignored: rank 0 already drains, the deadline bounds it
 *
 *   verdict (the job ended): the code is rank 0's exit status from its wrapper, else mpiexec's
 *   (`baton run`: then rank 0's "result"). Stopping: DONE 0 (`baton run`: 130). `baton run`:
 *   DONE code. Otherwise sup_verdict(code): 0 -> DONE 0; 2, 3, 127 (configuration, handshake
 *   mismatch, program not found) -> DONE code, no restart; any other -> BACKOFF, restart after
 *   0.25 s, doubling up to 8 s, back to 0.25 s after a job that lived 30 s. With the fleet: the
 *   restart rank 0 was asked for (readmission, 75 naming no rank) -> BACKOFF due at once, no
 *   charge, no backoff step; 2 or 3 of a plan that is not the configured layout -> see below;
 *   the restart verdict charges a host (below) first.
 *
 * The fleet (`baton serve` with --hosts or --hostfile; docs/faults.md, "A host that stays
 * down"). Every host is regular (it holds ranks in the configured layout, hosts.h) or a spare.
 * Each start runs the plan computed from the hosts' states: the regular hosts in order, an
 * evicted one replaced by a spare (same ranks, same layers) or, with no spare left, left out
 * (the layers re-split even by bytes over the rest: `--split=` is added). The first regular
 * host runs rank 0 beside the supervisor (the listening socket is handed down there): it is
 * never evicted.
 *
 *   host state  meaning                               becomes
 *   SERVING     regular host in the plan              EVICTED after --evict-after charges
 *   UNUSED      regular host that gets no rank        -
 *   STANDBY     spare, not in use (one whose last     STANDIN when a plan needs it
 *               probe failed is probed again every
 *               --readmit-interval, not chosen)
 *   STANDIN     spare in service for host stands_for  EVICTED after --evict-after charges;
 *                                                     STANDBY when that host is back
 *   EVICTED     out of service; probed through the    SERVING (regular) or STANDBY (spare)
 *               launcher every --readmit-interval     once a probe answers (regular: at the
 *               (x2 per earlier eviction, up to x8)   next start); never when `unfit`
 *
 * Attribution: a job that ends for a restart is charged to a host: "fault K" (rank 0 names the
 * rank of a pipeline fault) or "failed K" (rank K kept the model from loading, e.g. past
 * --init-timeout) charge rank K's host in the job's plan; rank 0 killed by a signal, silent, or
 * a failed load of rank 0 charge the head (logged, never counted); anything else (the job did
 * not come up within --launch-timeout, it ended before MPI was up, a fault naming no rank) is
 * charged to every host of the plan that does not answer a probe (`mpiexec -hosts H -n 1
 * baton-rankd --version` through the same launcher, at most probe_timeout). The probe round of a
 * job that is not up starts probe_timeout before its --launch-timeout, so its results are in when
 * it is killed; a restart waits for a round in progress. The spares standing by are probed in each
 * round too (a spare that did not answer is not chosen). A host's count is of failures in a row: it
 * goes back to 0 when a job that included it served (said "ready") for SUP_HEALTHY_AFTER.
 *
 * Eviction: --evict-after charges in a row (0: never) evict a host: one error line, the alert
 * (SUP_ACT_ALERT: the launcher runs --on-evict), and the next start uses the new plan. Fewer
 * hosts than --min-hosts in the plan: DONE with exit status 1. A start that fails to load
 * ("failed K", exit 2 or 3) where the plan is not the configured layout is not a configuration
 * error: a spare standing in is evicted for good (`unfit`), a re-split that cannot load is
 * remembered and the next starts use every configured host (evicted ones too: the plan that
 * works once they are back) until an evicted host answers again.
 *
 * Readmission: when a probe of an evicted host answers and the plan changes with it, a RUNNING
 * job's rank 0 is asked to restart at an idle moment (SUP_ACT_READMIT: SIGUSR2; rank 0 stops
 * accepting connections when no request runs, and leaves with 75: server/lifecycle.h). That
 * planned end is restarted at once, charged to nobody; a job not running yet simply starts
 * with the new plan.
 *
 * Actions come back as a mask of SUP_ACT_*; carry them out in the order TERM, KILL, START,
 * PROBE (start every sup_probe_take host), ALERT (sup_alert_take), READMIT, right after the event
 * that returned them. The log lines (bt_log, tag "launcher") are written here.
 * Single-threaded; a struct sup holds no resources (nothing to free). */
#ifndef BATON_SUPERVISE_H
#define BATON_SUPERVISE_H

#include "hosts.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SUP_BACKOFF_MIN   0.25 /* s, the first restart's wait */
#define SUP_BACKOFF_MAX   8.0  /* s */
#define SUP_HEALTHY_AFTER 30.0 /* s: a job that lived this long resets the backoff */
#define SUP_LINGER_TIME   5.0  /* s: after rank 0 exited 0, the other ranks' time to leave */
#define SUP_DRAIN_EXTRA   5.0  /* s: beyond --drain-timeout before a stopping job is killed */
#define SUP_LINE_MAX      256  /* a longer report line is dropped */
#define SUP_READMIT_MUL   8    /* an evicted host's probe interval grows x2 per eviction up to x8 */
#define SUP_BAD_SETS      8    /* re-splits that could not load, remembered */

enum sup_state {
    SUP_BACKOFF,
    SUP_STARTING,
    SUP_RUNNING,
    SUP_STOPPING,
    SUP_LINGER,
    SUP_KILLED,
    SUP_DONE,
};

enum sup_act {
    SUP_ACT_TERM = 1 << 0,    /* kill(job.rank0, SIGTERM) */
    SUP_ACT_KILL = 1 << 1,    /* SIGKILL job.pid's process group and every descendant */
    SUP_ACT_START = 1 << 2,   /* start mpiexec, then sup_on_started or sup_on_start_failed */
    SUP_ACT_PROBE = 1 << 3,   /* probe each host sup_probe_take gives; then sup_on_probe */
    SUP_ACT_ALERT = 1 << 4,   /* run --on-evict for each host sup_alert_take gives */
    SUP_ACT_READMIT = 1 << 5, /* kill(job.rank0, SIGUSR2): restart at an idle moment */
};

enum sup_host_state { SUP_H_SERVING, SUP_H_UNUSED, SUP_H_STANDBY, SUP_H_STANDIN, SUP_H_EVICTED };
enum sup_probe { SUP_P_NONE, SUP_P_WANTED, SUP_P_RUNNING, SUP_P_OK, SUP_P_FAILED };

/* Why the supervisor ended a job itself. */
enum sup_kill { SUP_K_NONE, SUP_K_LAUNCH, SUP_K_SILENCE, SUP_K_SIGNAL };

/* What an exit code of the job means to `baton serve`. */
enum sup_verdict {
    SUP_V_DONE,    /* 0: finished, the supervisor exits 0 */
    SUP_V_CONFIG,  /* 2, 3, 127: the configuration is wrong; exit with it, no restart */
    SUP_V_RESTART, /* anything else (1, 75, 128 + signal): a fault, restart with backoff */
};

struct sup_config {
    bool once;             /* `baton run`: no restart, no launch timeout, no silence watch */
    double launch_timeout; /* s (--launch-timeout) */
    double rank0_silence;  /* s without "alive" after which rank 0 is stopped or hung */
    double drain_timeout;  /* s (--drain-timeout) */
    /* the fleet: NULL or no host (one host, no eviction) */
    const struct hosts_list *hosts; /* copied by sup_init */
    int ranks;                      /* --ranks, spread over the regular hosts (hosts_layout) */
    int evict_after;                /* charges in a row that evict a host; 0: never */
    int min_hosts;                  /* fewer hosts in a plan: stop (exit 1) */
    double readmit_interval;        /* s between probes of an evicted host; 0: never */
    double probe_timeout;           /* s a probe may take (the launcher kills it then) */
};

struct sup_host {
    char name[HOSTS_NAME_MAX];
    bool spare;
    int ranks;      /* a regular host's ranks in the configured layout */
    int state;      /* enum sup_host_state */
    int stands_for; /* STANDIN: the regular host it replaces; -1 */
    int fails;      /* failures in a row charged to it */
    int evictions;
    bool unfit;        /* evicted because it could not load its stage: never probed */
    bool back;         /* evicted regular host that answered: in service from the next start */
    bool alert;        /* evicted, --on-evict not run yet */
    double probe_at;   /* EVICTED: the next readmission probe */
    int probe;         /* enum sup_probe: the last probe */
    bool probe_failed; /* the last probe that ended failed */
    bool in_round;     /* the probe belongs to the attribution round */
    char why[160];     /* the last failure charged to it */
};

/* Where a job runs. */
struct sup_plan {
    int n;                /* hosts, the head first */
    int host[HOSTS_MAX];  /* indices into sup.hosts, in rank order */
    int ranks[HOSTS_MAX]; /* ranks on each */
    int total;            /* ranks of the job */
    bool resplit;         /* fewer hosts than configured: layers even by bytes (--split=) */
    bool fallback;        /* no re-split can load: every configured host, evicted ones too */
    bool standin;         /* a spare stands in */
    int place[HOSTS_MAX]; /* the configured (regular) host whose ranks each holds */
    int live;             /* hosts of the plan that are not evicted */
};

/* The current job, from its start to its verdict. */
struct sup_job {
    pid_t pid;          /* mpiexec */
    pid_t rank0;        /* rank 0's pid ("pid"), 0 until reported */
    int rank0_code;     /* rank 0's exit status ("exit"), -1 until reported */
    int rank0_result;   /* what rank 0 said it will exit with ("result"), -1 until reported */
    bool up;            /* "up" came */
    double alive;       /* when the last "alive" came, 0: none yet */
    double started;     /* when mpiexec was started */
    double ready_at;    /* when rank 0 said "ready" (it serves), 0: not yet */
    int fault_rank;     /* "fault K": the rank of a pipeline fault, -1 none */
    int failed_rank;    /* "failed K": the rank whose load failed, -1 none */
    int killed;         /* enum sup_kill */
    bool restart_asked; /* SUP_ACT_READMIT sent */
    bool round;         /* an attribution round was started for this job */
    struct sup_plan plan;
};

struct sup {
    struct sup_config cfg;
    enum sup_state state;
    double until;   /* deadline of BACKOFF, STOPPING and LINGER */
    bool stopping;  /* SIGTERM or SIGINT came */
    double backoff; /* s, the next restart's wait */
    int restarts;   /* restarts so far */
    int exit_code;  /* in DONE: the supervisor's exit status */
    struct sup_job job;
    char line[SUP_LINE_MAX]; /* a report line not yet complete */
    size_t len;
    bool skip; /* dropping the rest of an overlong line */
    /* the fleet */
    int n_hosts; /* 0: no fleet */
    int head;    /* the host of rank 0 (the first regular host), -1: no fleet */
    struct sup_host hosts[HOSTS_MAX];
    struct sup_plan next;       /* the plan of the job SUP_ACT_START starts */
    bool charge_pending;        /* an ended job waits for its attribution round */
    bool planned;               /* the next start is the restart rank 0 was asked for */
    uint64_t bad[SUP_BAD_SETS]; /* host sets of re-splits that could not load */
    int n_bad;
};

/* Ready to start the first job at once (BACKOFF, deadline 0): call sup_on_tick next. */
void sup_init(struct sup *s, const struct sup_config *cfg);

/* The deadlines of the table: call at sup_deadline (or sooner; the caller may poll often). */
int sup_on_tick(struct sup *s, double now);
/* SUP_ACT_START done: mpiexec runs as pid. */
void sup_on_started(struct sup *s, pid_t pid, double now);
/* SUP_ACT_START failed (why: strerror text): DONE with exit status 1. */
void sup_on_start_failed(struct sup *s, const char *why);
/* A probe of host i (sup_probe_take) answered (ok) or not within probe_timeout. */
int sup_on_probe(struct sup *s, int i, bool ok, double now);
/* The next host to probe now (marked running), -1 when none. */
int sup_probe_take(struct sup *s);
/* The next evicted host whose --on-evict has not run (marked done), -1 when none. */
int sup_alert_take(struct sup *s);
/* BATON_FLEET for the job SUP_ACT_START starts (hosts.h); BT_EFULL when it does not fit. */
int sup_fleet_line(const struct sup *s, char *buf, size_t cap);
/* The plan the hosts' states give now (what the next start would run). */
void sup_preview_plan(const struct sup *s, struct sup_plan *out);
/* The plan's hosts as hydra -hosts: "h1:1,h3:1,h4:1" (BT_EFULL when it does not fit). */
int sup_plan_hosts(const struct sup *s, const struct sup_plan *p, char *buf, size_t cap);
/* A signal the supervisor caught; only SIGTERM and SIGINT mean something. */
int sup_on_signal(struct sup *s, int sig, double now);
/* Bytes read from the report pipe (any split: lines are put together here). */
int sup_on_report(struct sup *s, const char *data, size_t n, double now);
/* mpiexec was reaped with this status (128 + signal if it was killed). Read what is left in the
 * report pipe first: it belongs to this job. */
int sup_on_reaped(struct sup *s, int code, double now);

/* When sup_on_tick next has something to do; INFINITY if nothing (KILLED, DONE, a RUNNING job
 * whose rank 0 has not said "alive" yet, `baton run`). */
double sup_deadline(const struct sup *s);
/* A job's mpiexec runs (not reaped yet): STARTING, RUNNING, STOPPING, LINGER or KILLED. */
bool sup_has_job(const struct sup *s);
enum sup_verdict sup_verdict(int code);
const char *sup_state_name(enum sup_state st);
const char *sup_host_state_name(int st);

#endif
