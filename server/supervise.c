/* supervise: the supervisor as a state machine without processes (supervise.h). */
#include "supervise.h"

#include "exitcodes.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

void sup_init(struct sup *s, const struct sup_config *cfg)
{
    memset(s, 0, sizeof(*s));
    s->cfg = *cfg;
    s->state = SUP_BACKOFF;
    s->until = 0; /* the first job starts at once */
    s->backoff = SUP_BACKOFF_MIN;
    s->job.rank0_code = s->job.rank0_result = -1;
}

const char *sup_state_name(enum sup_state st)
{
    static const char *const names[] = {"BACKOFF", "STARTING", "RUNNING", "STOPPING",
                                        "LINGER",  "KILLED",   "DONE"};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

bool sup_has_job(const struct sup *s)
{
    return s->state != SUP_BACKOFF && s->state != SUP_DONE;
}

/* The one place where an exit code gets its meaning (exitcodes.h). */
enum sup_verdict sup_verdict(int code)
{
    if (code == BT_EXIT_OK) return SUP_V_DONE;
    if (code == BT_EXIT_CONFIG || code == BT_EXIT_MISMATCH || code == 127) return SUP_V_CONFIG;
    return SUP_V_RESTART;
}

static void done(struct sup *s, int code)
{
    s->state = SUP_DONE;
    s->exit_code = code;
}

static int kill_job(struct sup *s)
{
    s->state = SUP_KILLED;
    return SUP_ACT_KILL;
}

/* ---- deadlines --------------------------------------------------------------------------------
 */

static double silence_deadline(const struct sup *s)
{
    if (s->cfg.once || s->job.alive <= 0) return INFINITY;
    return s->job.alive + s->cfg.rank0_silence;
}

double sup_deadline(const struct sup *s)
{
    switch (s->state) {
    case SUP_BACKOFF:
    case SUP_STOPPING:
    case SUP_LINGER:
        return s->until;
    case SUP_STARTING:
        if (s->cfg.once) return INFINITY;
        return fmin(silence_deadline(s), s->job.started + s->cfg.launch_timeout);
    case SUP_RUNNING:
        return silence_deadline(s);
    default:
        return INFINITY;
    }
}

/* STARTING, RUNNING: rank 0 stopped or stuck (it says "alive" twice a second while its scheduler
 * goes round): nobody else notices and its clients would wait, so the job ends. */
static bool rank0_silent(struct sup *s, double now)
{
    if (s->cfg.once || s->job.alive <= 0 || now - s->job.alive <= s->cfg.rank0_silence)
        return false;
    bt_warn("supervisor: rank 0 (pid %d) gave no sign of life for %.1f s (stopped or hung): "
            "ending the job",
            (int)s->job.rank0, now - s->job.alive);
    return true;
}

/* STARTING: hydra waits forever for a host it could not reach (its proxy there could not
 * connect back, e.g. while a link is down). */
static bool launch_overdue(struct sup *s, double now)
{
    if (s->cfg.once || now - s->job.started <= s->cfg.launch_timeout) return false;
    bt_warn("supervisor: the job did not come up within --launch-timeout %.3g s (MPI not up on "
            "every host: one unreachable?); killing it",
            s->cfg.launch_timeout);
    return true;
}

int sup_on_tick(struct sup *s, double now)
{
    switch (s->state) {
    case SUP_BACKOFF:
        return now >= s->until ? SUP_ACT_START : 0;
    case SUP_STARTING:
        return rank0_silent(s, now) || launch_overdue(s, now) ? kill_job(s) : 0;
    case SUP_RUNNING:
        return rank0_silent(s, now) ? kill_job(s) : 0;
    case SUP_STOPPING:
        if (now <= s->until) return 0;
        bt_warn("supervisor: rank 0 did not finish in time; killing the job");
        return kill_job(s);
    case SUP_LINGER: /* the other ranks got SHUTDOWN but mpiexec is still there */
        return now >= s->until ? kill_job(s) : 0;
    default:
        return 0;
    }
}

/* ---- starting ---------------------------------------------------------------------------------
 */

void sup_on_started(struct sup *s, pid_t pid, double now)
{
    memset(&s->job, 0, sizeof(s->job));
    s->job.pid = pid;
    s->job.rank0_code = s->job.rank0_result = -1;
    s->job.started = now;
    s->len = 0;
    s->skip = false;
    s->state = SUP_STARTING;
    if (!s->cfg.once)
        bt_info("supervisor: job started (mpiexec pid %d)%s", (int)pid,
                s->restarts ? " after a fault" : "");
}

void sup_on_start_failed(struct sup *s, const char *why)
{
    bt_error("supervisor: fork: %s", why);
    done(s, 1);
}

/* ---- signals ----------------------------------------------------------------------------------
 */

int sup_on_signal(struct sup *s, int sig, double now)
{
    if ((sig != SIGTERM && sig != SIGINT) || s->stopping || s->state == SUP_DONE) return 0;
    s->stopping = true;
    if (s->state == SUP_BACKOFF) { /* no job: nothing to stop */
        done(s, s->cfg.once ? 130 : 0);
        return 0;
    }
    if (s->state == SUP_KILLED) return 0;
    if (s->cfg.once) return kill_job(s);  /* baton run: interrupted, end the job now */
    if (s->state == SUP_LINGER) return 0; /* rank 0 is gone, the job ends anyway */
    bt_info("supervisor: stopping: rank 0 drains for up to %.0f s", s->cfg.drain_timeout);
    if (s->state == SUP_RUNNING && s->job.rank0 > 0) {
        s->state = SUP_STOPPING;
        s->until = now + s->cfg.drain_timeout + SUP_DRAIN_EXTRA;
        return SUP_ACT_TERM;
    }
    return kill_job(s); /* still starting: nothing to drain (rank 0 takes signals later) */
}

/* ---- report lines -----------------------------------------------------------------------------
 */

/* "KEY N" with N a decimal in lo..hi. */
static bool keyed(const char *line, const char *key, long lo, long hi, long *v)
{
    size_t k = strlen(key);
    if (strncmp(line, key, k) != 0 || line[k] != ' ') return false;
    const char *p = line + k + 1;
    if (*p < '0' || *p > '9') return false; /* no sign, no space */
    char *end;
    errno = 0;
    long x = strtol(p, &end, 10);
    if (errno || *end || x < lo || x > hi) return false;
    *v = x;
    return true;
}

/* Rank 0 exited (its wrapper said so): the other ranks may wait forever (no auto-cleanup), so
 * the job ends; a clean exit has sent them SHUTDOWN: they get a moment first. */
static int rank0_exited(struct sup *s, int code, double now)
{
    s->job.rank0_code = code;
    if (s->state != SUP_STARTING && s->state != SUP_RUNNING && s->state != SUP_STOPPING) return 0;
    if (code != 0) return kill_job(s);
    s->state = SUP_LINGER;
    s->until = now + SUP_LINGER_TIME;
    return 0;
}

static int on_line(struct sup *s, const char *line, double now)
{
    long v;
    if (keyed(line, "pid", 2, INT_MAX, &v)) {
        s->job.rank0 = (pid_t)v;
    } else if (keyed(line, "up", 0, INT_MAX, &v)) {
        s->job.up = true;
        if (s->state == SUP_STARTING) s->state = SUP_RUNNING;
    } else if (!strcmp(line, "alive")) {
        s->job.alive = now;
    } else if (keyed(line, "result", 0, 255, &v)) {
        s->job.rank0_result = (int)v;
    } else if (keyed(line, "exit", 0, 255, &v)) {
        return rank0_exited(s, (int)v, now);
    } else {
        bt_warn("supervisor: ignoring a malformed report line from rank 0 ('%.64s')", line);
    }
    return 0;
}

int sup_on_report(struct sup *s, const char *data, size_t n, double now)
{
    int acts = 0;
    for (size_t i = 0; i < n; i++) {
        char c = data[i];
        if (c == '\n') {
            s->line[s->len] = '\0';
            bool whole = !s->skip && strlen(s->line) == s->len; /* no NUL inside */
            if (whole && sup_has_job(s)) acts |= on_line(s, s->line, now);
            s->len = 0;
            s->skip = false;
        } else if (!s->skip && s->len + 1 >= sizeof(s->line)) {
            bt_warn("supervisor: a report line longer than %d bytes: ignored", SUP_LINE_MAX - 1);
            s->skip = true;
        } else if (!s->skip) {
            s->line[s->len++] = c;
        }
    }
    return acts;
}

/* ---- the job ended ----------------------------------------------------------------------------
 */

/* baton run: rank 0's own code where known, since the job's MPI teardown can fail after rank 0
 * finished (transport_mpi.c, finalize_bounded). */
static void verdict_once(struct sup *s, int mpiexec_code)
{
    const struct sup_job *j = &s->job;
    int code = j->rank0_code >= 0     ? j->rank0_code
               : j->rank0_result >= 0 ? j->rank0_result
                                      : mpiexec_code;
    if (code == 0 && mpiexec_code != 0)
        bt_warn("mpiexec exited %d after rank 0 finished normally", mpiexec_code);
    done(s, s->stopping ? 130 : code);
}

static void verdict_serve(struct sup *s, int mpiexec_code, double now)
{
    int code = s->job.rank0_code >= 0 ? s->job.rank0_code : mpiexec_code;
    double lived = now - s->job.started;
    if (s->stopping) {
        bt_info("supervisor: stopped (rank 0 exit code %d)", code);
        done(s, 0);
        return;
    }
    switch (sup_verdict(code)) {
    case SUP_V_DONE:
        bt_info("supervisor: the job ended normally");
        done(s, 0);
        return;
    case SUP_V_CONFIG:
        bt_error("supervisor: the job failed with a configuration error (exit code %d): not "
                 "restarting; see the error above",
                 code);
        done(s, code);
        return;
    case SUP_V_RESTART:
        break;
    }
    if (lived >= SUP_HEALTHY_AFTER) s->backoff = SUP_BACKOFF_MIN;
    s->restarts++;
    bt_warn("supervisor: the job ended with code %d after %.1f s; restart #%d in %.2f s", code,
            lived, s->restarts, s->backoff);
    s->state = SUP_BACKOFF;
    s->until = now + s->backoff;
    s->backoff = fmin(s->backoff * 2, SUP_BACKOFF_MAX);
}

int sup_on_reaped(struct sup *s, int code, double now)
{
    if (!sup_has_job(s)) return 0;
    /* a killed job: stragglers re-parented away from mpiexec */
    int acts = s->state == SUP_LINGER || s->state == SUP_KILLED ? SUP_ACT_KILL : 0;
    if (s->cfg.once)
        verdict_once(s, code);
    else
        verdict_serve(s, code, now);
    return acts;
}
