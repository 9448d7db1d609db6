/* lifecycle: rank 0's states once it serves (see lifecycle.h). */
#include "lifecycle.h"

#include "exitcodes.h"
#include "log.h"
#include "scheduler.h"

#include <stdbool.h>
#include <string.h>

void life_init(struct life *l, const struct life_config *c)
{
    memset(l, 0, sizeof(*l));
    l->c = *c;
    l->state = LIFE_RUNNING;
}

const char *life_state_name(int state)
{
    static const char *const names[] = {"running",  "draining", "fault-linger", "idle-wait",
                                        "quiesced", "exit",     "exit-now"};
    return state >= 0 && state <= LIFE_EXIT_NOW ? names[state] : "unknown";
}

static void to_exit(struct life *l, int code)
{
    l->state = LIFE_EXIT;
    l->exit_code = code;
}

/* A fault: every request has been answered 503 by the scheduler; let the answers go out. */
static void to_fault_linger(struct life *l, uint64_t now)
{
    l->state = LIFE_FAULT_LINGER;
    l->fault_at = now;
}

static bool idle(const struct life_obs *o)
{
    return !o->busy && !o->queued && !o->unsent;
}

static unsigned running(struct life *l, const struct life_obs *o)
{
    if (o->signal && l->c.drain_ns > 0 && o->sched_state == SCHED_READY) {
        l->state = LIFE_DRAINING;
        l->drain_until = o->now + l->c.drain_ns;
        bt_info("signal %d: draining: requests in progress may finish within %.3g s (a second "
                "signal stops at once)",
                o->signal, (double)l->c.drain_ns * 1e-9);
        return LIFE_DO_DRAIN;
    }
    if (o->signal) {
        bt_info("signal %d: shutting down", o->signal);
        to_exit(l, BT_EXIT_OK);
    } else if (o->sched_state == SCHED_FAULTED) {
        to_fault_linger(l, o->now);
    } else if (o->sched_state == SCHED_FAILED) {
        bt_error("the model could not be loaded; exiting");
        to_exit(l, o->failed_code); /* a configuration error: the supervisor does not restart */
    } else if (o->restart && l->state == LIFE_RUNNING) {
        bt_info("the supervisor asks for a restart (the hosts in service change): at the next "
                "moment no request runs");
        l->state = LIFE_IDLE_WAIT;
    }
    return 0;
}

/* IDLE_WAIT, QUIESCED: the restart the supervisor asked for. */
static unsigned idle_restart(struct life *l, const struct life_obs *o)
{
    if (o->signal || o->sched_state == SCHED_FAULTED || o->sched_state == SCHED_FAILED)
        return running(l, o);
    if (l->state == LIFE_IDLE_WAIT) {
        if (!idle(o)) return 0;
        bt_info("no request runs: not accepting connections any more (they wait for the next "
                "job); restarting");
        l->state = LIFE_QUIESCED;
        l->quiesced_at = o->now;
        return LIFE_DO_QUIESCE;
    }
    if (!idle(o) || (o->conns > 0 && o->now < l->quiesced_at + LIFE_QUIESCE_NS)) return 0;
    bt_info("leaving with code %d for the restart the supervisor asked for", BT_EXIT_RESTART);
    to_exit(l, BT_EXIT_RESTART);
    l->planned = true;
    return 0;
}

static void draining(struct life *l, const struct life_obs *o)
{
    if (o->sched_state == SCHED_FAULTED) {
        to_fault_linger(l, o->now);
    } else if (o->signal) {
        bt_info("signal %d: shutting down", o->signal);
        to_exit(l, BT_EXIT_OK);
    } else if (!o->busy && !o->queued && !o->unsent) {
        bt_info("drained: every request finished; shutting down");
        to_exit(l, BT_EXIT_OK);
    } else if (o->now >= l->drain_until) {
        bt_warn("--drain-timeout passed with %d request(s) running and %d queued: they get 503; "
                "shutting down",
                o->busy, o->queued);
        to_exit(l, BT_EXIT_OK);
    }
}

static void fault_linger(struct life *l, const struct life_obs *o)
{
    bool flushed = !o->unsent && o->now >= l->fault_at + LIFE_FAULT_LINGER_NS;
    if (!flushed && o->now < l->fault_at + LIFE_FAULT_FLUSH_NS) return;
    if (o->unsent)
        bt_error("pipeline fault: %d answer(s) still unsent after %.1f s; exiting with code %d "
                 "for a restart",
                 o->unsent, (double)LIFE_FAULT_FLUSH_NS * 1e-9, BT_EXIT_RESTART);
    else
        bt_error("pipeline fault: every request answered; exiting with code %d for a restart",
                 BT_EXIT_RESTART);
    l->state = LIFE_EXIT_NOW;
    l->exit_code = BT_EXIT_RESTART;
}

unsigned life_step(struct life *l, const struct life_obs *o)
{
    unsigned act = 0;
    /* a sign of life for the supervisor while the scheduler goes round (a step is bounded by
     * --step-timeout: one that has not gone round for longer is stuck) */
    const uint64_t stuck_ns = 2 * l->c.step_timeout_ns + 5000000000ull;
    if (o->now - l->last_alive >= LIFE_ALIVE_NS &&
        (o->sched_loop_ns == 0 || o->now - o->sched_loop_ns < stuck_ns)) {
        act |= LIFE_DO_ALIVE;
        l->last_alive = o->now;
    }
    switch (l->state) {
    case LIFE_RUNNING:
        act |= running(l, o);
        break;
    case LIFE_DRAINING:
        draining(l, o);
        break;
    case LIFE_FAULT_LINGER:
        fault_linger(l, o);
        break;
    case LIFE_IDLE_WAIT:
    case LIFE_QUIESCED:
        act |= idle_restart(l, o);
        break;
    default:
        break;
    }
    return act;
}
