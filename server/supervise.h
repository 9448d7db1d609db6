/* supervise: the supervisor of `baton serve` (and of `baton run`) as a state machine without
 * processes (DESIGN §5.4, docs/faults.md). The caller (launcher.c) feeds it events, each with the
 * time it happened (bt_now_s), and carries out the actions they return: start a job (mpiexec),
 * send SIGTERM to rank 0, kill the job's process tree. What an exit code means is decided in one
 * place, sup_verdict. The unit test (tests/unit/test_supervise.c) drives it with made-up times.
 *
 * A job is one mpiexec; rank 0's wrapper (`baton --wrap --report`) and rank 0 write lines to the
 * supervisor's pipe: "pid N" and "exit N" (the wrapper: rank 0's pid, its exit status), "up 1",
 * "alive" and "result N" (rank 0, server/report.h).
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
 *   0.25 s, doubling up to 8 s, back to 0.25 s after a job that lived 30 s.
 *
 * Actions come back as a mask of SUP_ACT_*; carry them out in the order TERM, KILL, START, right
 * after the event that returned them. The log lines (bt_log, tag "launcher") are written here.
 * Single-threaded; a struct sup holds no resources (nothing to free). */
#ifndef BATON_SUPERVISE_H
#define BATON_SUPERVISE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define SUP_BACKOFF_MIN   0.25 /* s, the first restart's wait */
#define SUP_BACKOFF_MAX   8.0  /* s */
#define SUP_HEALTHY_AFTER 30.0 /* s: a job that lived this long resets the backoff */
#define SUP_LINGER_TIME   5.0  /* s: after rank 0 exited 0, the other ranks' time to leave */
#define SUP_DRAIN_EXTRA   5.0  /* s: beyond --drain-timeout before a stopping job is killed */
#define SUP_LINE_MAX      256  /* a longer report line is dropped */

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
    SUP_ACT_TERM = 1 << 0,  /* kill(job.rank0, SIGTERM) */
    SUP_ACT_KILL = 1 << 1,  /* SIGKILL job.pid's process group and every descendant */
    SUP_ACT_START = 1 << 2, /* start mpiexec, then sup_on_started or sup_on_start_failed */
};

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
};

/* The current job, from its start to its verdict. */
struct sup_job {
    pid_t pid;        /* mpiexec */
    pid_t rank0;      /* rank 0's pid ("pid"), 0 until reported */
    int rank0_code;   /* rank 0's exit status ("exit"), -1 until reported */
    int rank0_result; /* what rank 0 said it will exit with ("result"), -1 until reported */
    bool up;          /* "up" came */
    double alive;     /* when the last "alive" came, 0: none yet */
    double started;   /* when mpiexec was started */
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
};

/* Ready to start the first job at once (BACKOFF, deadline 0): call sup_on_tick next. */
void sup_init(struct sup *s, const struct sup_config *cfg);

/* The deadlines of the table: call at sup_deadline (or sooner; the caller may poll often). */
int sup_on_tick(struct sup *s, double now);
/* SUP_ACT_START done: mpiexec runs as pid. */
void sup_on_started(struct sup *s, pid_t pid, double now);
/* SUP_ACT_START failed (why: strerror text): DONE with exit status 1. */
void sup_on_start_failed(struct sup *s, const char *why);
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

#endif
