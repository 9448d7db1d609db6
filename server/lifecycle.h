/* lifecycle: rank 0's life once it serves, as a state machine. main.c looks around every 100 ms
 * (a signal? the scheduler's state, its last round, what is still running and unsent) and hands
 * what it saw to life_step, which decides; main carries out the actions it returns. No threads,
 * no I/O here but the log lines of each transition, so the rules are tested without processes
 * (tests/unit/test_lifecycle.c).
 *
 *   state          event                                          next           action
 *   RUNNING        SIGINT/SIGTERM, scheduler READY, drain > 0     DRAINING       sched_drain
 *   RUNNING        SIGINT/SIGTERM otherwise                       EXIT (0)
 *   RUNNING        scheduler FAULTED (a pipeline rank failed)     FAULT_LINGER
 *   RUNNING        scheduler FAILED (the model did not load)      EXIT (engine's code)
 *                  (a signal is looked at first, then the scheduler's state)
 *   DRAINING       nothing running, queued or unsent              EXIT (0)
 *   DRAINING       --drain-timeout passed                         EXIT (0)
 *   DRAINING       a second signal                                EXIT (0)
 *   DRAINING       scheduler FAULTED                              FAULT_LINGER
 *   FAULT_LINGER   every answer sent and 0.5 s passed, or 1 s     EXIT_NOW (75)
 *   RUNNING        SIGUSR2 (the supervisor: a host rejoins)       IDLE_WAIT
 *   IDLE_WAIT      nothing running, queued or unsent              QUIESCED       http_quiesce
 *   QUIESCED       still nothing running, queued or unsent, and   EXIT (75)
 *                  no connection open or LIFE_QUIESCE_NS passed
 *   IDLE_WAIT,     SIGINT/SIGTERM, FAULTED, FAILED                as in RUNNING
 *   QUIESCED
 *
 * IDLE_WAIT serves as RUNNING does: the restart waits for a moment when no request runs, so none
 * is cut. QUIESCED accepts no new connection (they wait in the listening socket's backlog, which
 * the supervisor keeps open, for the next job); requests that arrive on connections already open
 * are served, and the exit waits for them. The exit is planned (`planned`): main tells the
 * ranks SHUTDOWN but skips MPI_Finalize, and the supervisor restarts the job at once.
 *   any            every 0.5 s while the scheduler went round     -              "alive" report
 *                  within 2 x --step-timeout + 5 s
 *
 * EXIT: main stops the scheduler (which answers everyone), then HTTP, then the engine (SHUTDOWN
 * to the ranks) and returns the code. EXIT_NOW: after a fault every request has been answered
 * 503; main leaves with _exit (no MPI_Finalize, nothing that could wait on a dead rank) so the
 * supervisor restarts the job (docs/faults.md). The "alive" reports tell the supervisor that
 * rank 0 is neither stopped nor stuck (server/launcher.c ends a job that goes silent).
 *
 * Threads: one struct life, used by main's thread only. */
#ifndef BATON_LIFECYCLE_H
#define BATON_LIFECYCLE_H

#include <stdbool.h>
#include <stdint.h>

enum life_state {
    LIFE_RUNNING = 0,
    LIFE_DRAINING,
    LIFE_FAULT_LINGER,
    LIFE_IDLE_WAIT,
    LIFE_QUIESCED,
    LIFE_EXIT,
    LIFE_EXIT_NOW
};

/* An "alive" report at most every LIFE_ALIVE_NS; after a fault, rank 0 stays at least
 * LIFE_FAULT_LINGER_NS and at most LIFE_FAULT_FLUSH_NS for the answers to go out. */
#define LIFE_ALIVE_NS        500000000ull
#define LIFE_FAULT_LINGER_NS 500000000ull
#define LIFE_FAULT_FLUSH_NS  1000000000ull
/* QUIESCED: idle keep-alive connections are closed after this (their clients reconnect) */
#define LIFE_QUIESCE_NS 1000000000ull

struct life_config {
    uint64_t drain_ns;        /* --drain-timeout (0: no drain) */
    uint64_t step_timeout_ns; /* --step-timeout: the scheduler is stuck after 2 x this + 5 s */
};

/* What main saw this round. */
struct life_obs {
    uint64_t now;           /* bt_now_ns() */
    int signal;             /* SIGINT or SIGTERM taken this round, else 0 */
    int restart;            /* SIGUSR2 taken this round: restart at an idle moment */
    int conns;              /* HTTP connections open (http_connections) */
    int sched_state;        /* enum sched_state */
    uint64_t sched_loop_ns; /* sched_loop_ns(): the serving loop's last round, 0 before */
    int busy, queued;       /* running and queued requests */
    int unsent;             /* answers the HTTP side has not finished sending */
    int failed_code;        /* sched_exit_code() when the state is SCHED_FAILED */
};

enum life_action { LIFE_DO_ALIVE = 1, LIFE_DO_DRAIN = 2, LIFE_DO_QUIESCE = 4 };

struct life {
    struct life_config c;
    enum life_state state;
    uint64_t drain_until, fault_at, last_alive, quiesced_at;
    int exit_code; /* valid in EXIT and EXIT_NOW */
    bool planned;  /* EXIT: the restart the supervisor asked for */
};

void life_init(struct life *l, const struct life_config *c);
/* One round: the new state in l->state, the actions (enum life_action bits) to carry out. */
unsigned life_step(struct life *l, const struct life_obs *o);
const char *life_state_name(int state);

#endif
