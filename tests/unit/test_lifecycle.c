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

int main(void)
{
    test_signals();
    test_fault_and_failure();
    test_alive();
    return t_done();
}
