/* lifecycle: rank 0's states, driven by what main would observe, without processes. */
#include "exitcodes.h"
#include "lifecycle.h"
#include "log.h"
#include "scheduler.h"
#include "t.h"

#include <signal.h>

#define MS 1000000ull

static const struct life_config cfg = {.drain_ns = 2000 * MS, .step_timeout_ns = 1000 * MS};

static struct life_obs ready(uint64_t now)
{
    return (struct life_obs){.now = now, .sched_state = SCHED_READY, .sched_loop_ns = now};
}

static void test_signals(void)
{
    struct life l;
    /* a signal while ready: drain; running requests keep it there; once nothing is left: exit 0 */
    life_init(&l, &cfg);
    struct life_obs o = ready(1000 * MS);
    o.signal = SIGTERM;
    o.busy = 1;
    CHECK(life_step(&l, &o) & LIFE_DO_DRAIN);
    CHECK_INT(l.state, LIFE_DRAINING);
    o = ready(1500 * MS);
    o.busy = 1;
    o.queued = 2;
    CHECK(!(life_step(&l, &o) & LIFE_DO_DRAIN));
    CHECK_INT(l.state, LIFE_DRAINING);
    o = ready(1600 * MS);
    o.unsent = 1; /* an answer still on its way out: not drained yet */
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_DRAINING);
    o = ready(1700 * MS);
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_EXIT);
    CHECK_INT(l.exit_code, BT_EXIT_OK);

    /* the drain deadline */
    life_init(&l, &cfg);
    o = ready(0);
    o.signal = SIGINT;
    life_step(&l, &o);
    o = ready(1999 * MS);
    o.busy = 1;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_DRAINING);
    o.now = 2000 * MS;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_EXIT);

    /* a second signal stops at once */
    life_init(&l, &cfg);
    o = ready(0);
    o.signal = SIGTERM;
    life_step(&l, &o);
    o = ready(10 * MS);
    o.busy = 3;
    o.signal = SIGTERM;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_EXIT);

    /* no drain configured, or not ready yet: a signal stops at once */
    struct life_config nodrain = cfg;
    nodrain.drain_ns = 0;
    life_init(&l, &nodrain);
    o = ready(0);
    o.signal = SIGTERM;
    CHECK(!(life_step(&l, &o) & LIFE_DO_DRAIN));
    CHECK_INT(l.state, LIFE_EXIT);
    life_init(&l, &cfg);
    o = ready(0);
    o.sched_state = SCHED_LOADING;
    o.signal = SIGTERM;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_EXIT);
}

static void test_fault_and_failure(void)
{
    struct life l;
    life_init(&l, &cfg);
    struct life_obs o = ready(0);
    o.sched_state = SCHED_FAULTED;
    o.unsent = 2;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_FAULT_LINGER);
    /* the answers go out; it stays at least LIFE_FAULT_LINGER_NS */
    o.unsent = 0;
    o.now = LIFE_FAULT_LINGER_NS - 1;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_FAULT_LINGER);
    o.now = LIFE_FAULT_LINGER_NS;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_EXIT_NOW);
    CHECK_INT(l.exit_code, BT_EXIT_RESTART);
    /* an answer that never leaves: at most LIFE_FAULT_FLUSH_NS; a signal does not cut it */
    life_init(&l, &cfg);
    o = ready(0);
    o.sched_state = SCHED_FAULTED;
    o.unsent = 1;
    life_step(&l, &o);
    o.now = LIFE_FAULT_FLUSH_NS - 1;
    o.signal = SIGTERM;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_FAULT_LINGER);
    o.now = LIFE_FAULT_FLUSH_NS;
    o.signal = 0;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_EXIT_NOW);
    /* a fault while draining */
    life_init(&l, &cfg);
    o = ready(0);
    o.signal = SIGTERM;
    o.busy = 1;
    life_step(&l, &o);
    o = ready(5 * MS);
    o.busy = 1;
    o.sched_state = SCHED_FAULTED;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_FAULT_LINGER);
    /* the model did not load: the engine's code (a configuration error is not restarted) */
    life_init(&l, &cfg);
    o = ready(0);
    o.sched_state = SCHED_FAILED;
    o.failed_code = BT_EXIT_MISMATCH;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_EXIT);
    CHECK_INT(l.exit_code, BT_EXIT_MISMATCH);
}

/* "alive" every LIFE_ALIVE_NS while the scheduler goes round; silence when it is stuck */
static void test_alive(void)
{
    struct life l;
    life_init(&l, &cfg);
    struct life_obs o = ready(1000 * MS);
    CHECK(life_step(&l, &o) & LIFE_DO_ALIVE);
    o.now += 100 * MS;
    CHECK(!(life_step(&l, &o) & LIFE_DO_ALIVE));
    o.now += LIFE_ALIVE_NS;
    o.sched_loop_ns = o.now - 1000 * MS;
    CHECK(life_step(&l, &o) & LIFE_DO_ALIVE);
    /* the loop last went round 2 x step timeout + 5 s ago: stuck */
    o.now += LIFE_ALIVE_NS;
    o.sched_loop_ns = o.now - (2 * 1000 + 5000) * MS;
    CHECK(!(life_step(&l, &o) & LIFE_DO_ALIVE));
    /* still loading (the loop has not started): alive */
    o.sched_loop_ns = 0;
    CHECK(life_step(&l, &o) & LIFE_DO_ALIVE);
    CHECK_STR(life_state_name(LIFE_FAULT_LINGER), "fault-linger");
    CHECK_STR(life_state_name(99), "unknown");
}

/* The restart the supervisor asks for (SIGUSR2): served on until no request runs, then no new
 * connection, then out with 75 (planned) once the open connections are gone or LIFE_QUIESCE_NS
 * passed; requests on open connections are waited for; a signal or a fault still win. */
static void test_idle_restart(void)
{
    struct life l;
    life_init(&l, &cfg);
    struct life_obs o = ready(0);
    o.restart = 1;
    o.busy = 2;
    CHECK_INT(life_step(&l, &o) & (LIFE_DO_QUIESCE | LIFE_DO_DRAIN), 0);
    CHECK_INT(l.state, LIFE_IDLE_WAIT);
    /* busy, queued or unsent: it serves on (the request is not cut) */
    for (int i = 0; i < 3; i++) {
        o = ready((uint64_t)(10 + i) * MS);
        o.busy = i == 0, o.queued = i == 1, o.unsent = i == 2;
        CHECK_INT(life_step(&l, &o) & LIFE_DO_QUIESCE, 0);
        CHECK_INT(l.state, LIFE_IDLE_WAIT);
    }
    /* idle: quiesce */
    o = ready(20 * MS);
    o.conns = 2;
    CHECK(life_step(&l, &o) & LIFE_DO_QUIESCE);
    CHECK_INT(l.state, LIFE_QUIESCED);
    /* a request on a connection that was open: waited for */
    o = ready(30 * MS);
    o.conns = 1;
    o.busy = 1;
    CHECK_INT(life_step(&l, &o), 0);
    CHECK_INT(l.state, LIFE_QUIESCED);
    /* idle, a connection still open (keep-alive): up to LIFE_QUIESCE_NS */
    o = ready(20 * MS + LIFE_QUIESCE_NS - 1);
    o.conns = 1;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_QUIESCED);
    o.now = 20 * MS + LIFE_QUIESCE_NS;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_EXIT);
    CHECK_INT(l.exit_code, BT_EXIT_RESTART);
    CHECK(l.planned);
    /* idle and no connection: at once */
    life_init(&l, &cfg);
    o = ready(0);
    o.restart = 1;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_IDLE_WAIT);
    o = ready(100 * MS);
    CHECK(life_step(&l, &o) & LIFE_DO_QUIESCE);
    o = ready(200 * MS);
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_EXIT);
    CHECK(l.planned);
    CHECK_STR(life_state_name(LIFE_QUIESCED), "quiesced");
    /* a signal while waiting: the usual drain, not planned */
    life_init(&l, &cfg);
    o = ready(0);
    o.restart = 1;
    o.busy = 1;
    life_step(&l, &o);
    o = ready(10 * MS);
    o.busy = 1;
    o.signal = SIGTERM;
    CHECK(life_step(&l, &o) & LIFE_DO_DRAIN);
    CHECK_INT(l.state, LIFE_DRAINING);
    CHECK(!l.planned);
    /* a fault while quiesced: the fault's linger and exit now */
    life_init(&l, &cfg);
    o = ready(0);
    o.restart = 1;
    life_step(&l, &o);
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_QUIESCED);
    o.conns = 1;
    o.busy = 1;
    o.sched_state = SCHED_FAULTED;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_FAULT_LINGER);
    /* a second SIGUSR2 changes nothing; SIGUSR2 while draining is ignored */
    life_init(&l, &cfg);
    o = ready(0);
    o.restart = 1;
    o.busy = 1;
    life_step(&l, &o);
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_IDLE_WAIT);
    life_init(&l, &cfg);
    o = ready(0);
    o.signal = SIGTERM;
    o.busy = 1;
    life_step(&l, &o);
    o.signal = 0;
    o.restart = 1;
    life_step(&l, &o);
    CHECK_INT(l.state, LIFE_DRAINING);
}

int main(void)
{
    test_signals();
    test_fault_and_failure();
    test_alive();
    test_idle_restart();
    return t_done();
}
