/* test_supervise: the supervisor's state machine (server/supervise.h) without processes: events
 * with made-up times in, states, deadlines, actions and exit codes out. Restart or not per exit
 * code, backoff doubling and its reset after a healthy job, --launch-timeout, rank-0 silence, the
 * drain deadline, signals (a second one, one between jobs), `baton run`, report lines (split,
 * malformed, overlong, stale ones of an ended job). */
#include "supervise.h"
#include "t.h"

#include "log.h"

#include <signal.h>

static const struct sup_config SERVE = {
    .once = false, .launch_timeout = 6, .rank0_silence = 3, .drain_timeout = 30};
static const struct sup_config RUN = {
    .once = true, .launch_timeout = 6, .rank0_silence = 3, .drain_timeout = 30};

static int feed(struct sup *s, const char *text, double now)
{
    return sup_on_report(s, text, strlen(text), now);
}

/* BACKOFF whose deadline is due at now -> STARTING with mpiexec = pid. */
static void start(struct sup *s, pid_t pid, double now)
{
    CHECK_INT(s->state, SUP_BACKOFF);
    CHECK_INT(sup_on_tick(s, now), SUP_ACT_START);
    sup_on_started(s, pid, now);
    CHECK_INT(s->state, SUP_STARTING);
    CHECK_INT(s->job.pid, pid);
    CHECK(sup_has_job(s));
}

/* STARTING -> RUNNING, rank 0 = rank0 (0: its pid not reported). */
static void come_up(struct sup *s, pid_t rank0, double now)
{
    char line[64];
    if (rank0 > 0) {
        snprintf(line, sizeof(line), "pid %d\n", (int)rank0);
        CHECK_INT(feed(s, line, now), 0);
    }
    CHECK_INT(feed(s, "up 1\n", now), 0);
    CHECK_INT(s->state, SUP_RUNNING);
}

/* A running job whose rank 0 exits with code at t (and mpiexec right after): the verdict. */
static void job_ends(struct sup *s, int code, double t)
{
    char line[32];
    snprintf(line, sizeof(line), "exit %d\n", code);
    int acts = feed(s, line, t);
    CHECK_INT(acts, code == 0 ? 0 : SUP_ACT_KILL);
    CHECK_INT(s->state, code == 0 ? SUP_LINGER : SUP_KILLED);
    CHECK_INT(sup_on_reaped(s, code, t + 0.1), SUP_ACT_KILL); /* stragglers */
}

static void test_verdict(void)
{
    CHECK_INT(sup_verdict(0), SUP_V_DONE);
    CHECK_INT(sup_verdict(2), SUP_V_CONFIG);   /* BT_EXIT_CONFIG */
    CHECK_INT(sup_verdict(3), SUP_V_CONFIG);   /* BT_EXIT_MISMATCH */
    CHECK_INT(sup_verdict(127), SUP_V_CONFIG); /* a program not found */
    int restart[] = {1, 4, 75, 126, 128 + SIGKILL, 128 + SIGTERM, 128 + SIGSEGV, 255};
    for (size_t i = 0; i < sizeof(restart) / sizeof(restart[0]); i++)
        CHECK_INT(sup_verdict(restart[i]), SUP_V_RESTART);
    CHECK_STR(sup_state_name(SUP_STOPPING), "STOPPING");
    CHECK_STR(sup_state_name((enum sup_state)99), "?");
}

/* Exit codes: 75 restarts, 0 ends normally, 2, 3 and 127 end with that code. */
static void test_exit_codes(void)
{
    struct sup s;
    sup_init(&s, &SERVE);
    CHECK_NEAR(sup_deadline(&s), 0, 0); /* the first job starts at once */
    start(&s, 100, 1.0);
    come_up(&s, 101, 1.5);
    job_ends(&s, 75, 10.0);
    CHECK_INT(s.state, SUP_BACKOFF);
    CHECK_INT(s.restarts, 1);
    CHECK_NEAR(s.until, 10.1 + 0.25, 1e-9);
    CHECK(!sup_has_job(&s));

    /* exit 0: the other ranks get SUP_LINGER_TIME to leave, mpiexec ends: done, exit 0 */
    start(&s, 200, 11.0);
    come_up(&s, 201, 11.5);
    CHECK_INT(feed(&s, "exit 0\n", 20.0), 0);
    CHECK_INT(s.state, SUP_LINGER);
    CHECK_NEAR(sup_deadline(&s), 25.0, 1e-9);
    CHECK_INT(sup_on_tick(&s, 24.9), 0);
    CHECK_INT(sup_on_reaped(&s, 0, 21.0), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 0);
    CHECK_INT(sup_on_tick(&s, 100.0), 0);

    /* exit 0 and mpiexec does not end: killed after SUP_LINGER_TIME; still a normal end */
    sup_init(&s, &SERVE);
    start(&s, 300, 0.0);
    come_up(&s, 301, 0.5);
    CHECK_INT(feed(&s, "exit 0\n", 5.0), 0);
    CHECK_INT(sup_on_tick(&s, 5.0 + SUP_LINGER_TIME), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_KILLED);
    CHECK_INT(sup_on_reaped(&s, 137, 10.2), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 0); /* rank 0's code, not mpiexec's */

    int config[] = {2, 3, 127};
    for (int i = 0; i < 3; i++) {
        sup_init(&s, &SERVE);
        start(&s, 400, 0.0);
        job_ends(&s, config[i], 0.8); /* even before "up" */
        CHECK_INT(s.state, SUP_DONE);
        CHECK_INT(s.exit_code, config[i]);
        CHECK_INT(s.restarts, 0);
    }

    /* mpiexec itself cannot be run (127) or ends without rank 0's report: its code counts */
    sup_init(&s, &SERVE);
    start(&s, 500, 0.0);
    CHECK_INT(sup_on_reaped(&s, 127, 0.01), 0); /* not killed: no stragglers to look for */
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 127);
    sup_init(&s, &SERVE);
    start(&s, 501, 0.0);
    come_up(&s, 502, 0.5);
    CHECK_INT(sup_on_reaped(&s, 1, 3.0), 0);
    CHECK_INT(s.state, SUP_BACKOFF);

    /* fork failed */
    sup_init(&s, &SERVE);
    CHECK_INT(sup_on_tick(&s, 0.0), SUP_ACT_START);
    sup_on_start_failed(&s, "Resource temporarily unavailable");
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 1);
}

/* Backoff 0.25 s doubling up to 8 s while jobs die young; back to 0.25 s after 30 s of life. */
static void test_backoff(void)
{
    struct sup s;
    sup_init(&s, &SERVE);
    const double want[] = {0.25, 0.5, 1, 2, 4, 8, 8, 8};
    double t = 0;
    for (int i = 0; i < 8; i++) {
        start(&s, 1000 + i, t);
        come_up(&s, 2000 + i, t + 0.2);
        job_ends(&s, 75, t + 2.0);
        CHECK_INT(s.state, SUP_BACKOFF);
        CHECK_INT(s.restarts, i + 1);
        CHECK_NEAR(s.until - (t + 2.1), want[i], 1e-9);
        CHECK_NEAR(sup_deadline(&s), s.until, 0);
        CHECK_INT(sup_on_tick(&s, s.until - 0.01), 0); /* not yet */
        t = s.until;
    }
    /* a job that lived 30 s: the next wait is 0.25 s again, then 0.5 s */
    start(&s, 3000, t);
    come_up(&s, 3001, t + 0.2);
    job_ends(&s, 75, t + SUP_HEALTHY_AFTER);
    CHECK_NEAR(s.until - (t + SUP_HEALTHY_AFTER + 0.1), 0.25, 1e-9);
    t = s.until;
    start(&s, 3002, t);
    job_ends(&s, 137, t + 1.0); /* a young job again (killed before "up") */
    CHECK_NEAR(s.until - (t + 1.1), 0.5, 1e-9);
    CHECK_INT(s.restarts, 10);
    /* a job that lived just under 30 s does not reset it */
    t = s.until;
    start(&s, 3003, t);
    job_ends(&s, 75, t + SUP_HEALTHY_AFTER - 0.2);
    CHECK_NEAR(s.until - (t + SUP_HEALTHY_AFTER - 0.1), 1.0, 1e-9);
}

/* A job whose rank 0 is not "up" within --launch-timeout is killed and restarted. */
static void test_launch_timeout(void)
{
    struct sup s;
    sup_init(&s, &SERVE);
    start(&s, 100, 10.0);
    CHECK_INT(feed(&s, "pid 101\n", 10.1), 0); /* the wrapper runs, MPI is not up */
    CHECK_NEAR(sup_deadline(&s), 16.0, 1e-9);
    CHECK_INT(sup_on_tick(&s, 15.9), 0);
    CHECK_INT(sup_on_tick(&s, 16.0), 0); /* "within" 6 s */
    CHECK_INT(sup_on_tick(&s, 16.01), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_KILLED);
    CHECK_INT(sup_on_tick(&s, 30.0), 0); /* killed once */
    CHECK(isinf(sup_deadline(&s)));
    CHECK_INT(sup_on_reaped(&s, 128 + SIGKILL, 16.2), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_BACKOFF);
    CHECK_NEAR(s.until, 16.45, 1e-9);
    /* the next one comes up in time: no launch deadline any more */
    start(&s, 200, s.until);
    come_up(&s, 201, 20.0);
    CHECK_INT(sup_on_tick(&s, 100.0), 0);
    CHECK_INT(s.state, SUP_RUNNING);
    CHECK(isinf(sup_deadline(&s))); /* no "alive" yet: no silence watch either */
}

/* Rank 0 silent (stopped or hung) for rank0_silence after its first "alive": killed, restarted. */
static void test_rank0_silence(void)
{
    struct sup s;
    sup_init(&s, &SERVE);
    start(&s, 100, 0.0);
    come_up(&s, 101, 1.0);
    for (double t = 2.0; t < 10.0; t += 0.5) {
        CHECK_INT(feed(&s, "alive\n", t), 0);
        CHECK_INT(sup_on_tick(&s, t + 0.4), 0);
    }
    CHECK_NEAR(s.job.alive, 9.5, 1e-9);
    CHECK_NEAR(sup_deadline(&s), 12.5, 1e-9);
    CHECK_INT(sup_on_tick(&s, 12.5), 0);
    CHECK_INT(sup_on_tick(&s, 12.51), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_KILLED);
    CHECK_INT(feed(&s, "exit 137\n", 12.6), 0); /* its wrapper, killed too, may still report */
    CHECK_INT(s.job.rank0_code, 137);
    CHECK_INT(sup_on_reaped(&s, 137, 12.7), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_BACKOFF);
    CHECK_INT(s.restarts, 1);
}

/* SIGTERM: rank 0 drains; killed at --drain-timeout + 5 s; the supervisor exits 0. */
static void test_drain(void)
{
    struct sup s;
    sup_init(&s, &SERVE);
    start(&s, 100, 0.0);
    come_up(&s, 101, 1.0);
    CHECK_INT(feed(&s, "alive\n", 4.9), 0);
    CHECK_INT(sup_on_signal(&s, SIGTERM, 5.0), SUP_ACT_TERM);
    CHECK_INT(s.state, SUP_STOPPING);
    CHECK(s.stopping);
    CHECK_NEAR(sup_deadline(&s), 5.0 + 30 + SUP_DRAIN_EXTRA, 1e-9);
    /* a second signal changes nothing: rank 0 drains already, the deadline bounds it */
    CHECK_INT(sup_on_signal(&s, SIGINT, 6.0), 0);
    CHECK_INT(sup_on_signal(&s, SIGTERM, 7.0), 0);
    CHECK_INT(s.state, SUP_STOPPING);
    CHECK_NEAR(sup_deadline(&s), 40.0, 1e-9);
    /* draining rank 0 says nothing for long: no silence kill while stopping */
    CHECK_INT(sup_on_tick(&s, 39.9), 0);
    CHECK_INT(sup_on_tick(&s, 40.01), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_KILLED);
    CHECK_INT(sup_on_reaped(&s, 137, 40.1), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 0);

    /* the drain ends in time: rank 0 exits 0, the others leave, done */
    sup_init(&s, &SERVE);
    start(&s, 200, 0.0);
    come_up(&s, 201, 1.0);
    CHECK_INT(sup_on_signal(&s, SIGINT, 2.0), SUP_ACT_TERM);
    CHECK_INT(feed(&s, "exit 0\n", 3.0), 0);
    CHECK_INT(s.state, SUP_LINGER);
    CHECK_INT(sup_on_reaped(&s, 0, 3.2), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 0);

    /* stopping wins over the code: rank 0 ends with 75 while it drains, no restart */
    sup_init(&s, &SERVE);
    start(&s, 300, 0.0);
    come_up(&s, 301, 1.0);
    CHECK_INT(sup_on_signal(&s, SIGTERM, 2.0), SUP_ACT_TERM);
    job_ends(&s, 75, 2.5);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 0);
    CHECK_INT(s.restarts, 0);
}

/* Signals outside RUNNING, and signals that mean nothing. */
static void test_signals(void)
{
    struct sup s;
    /* still starting: nothing to drain, the job is killed */
    sup_init(&s, &SERVE);
    start(&s, 100, 0.0);
    CHECK_INT(feed(&s, "pid 101\n", 0.1), 0);
    CHECK_INT(sup_on_signal(&s, SIGHUP, 0.2), 0); /* not ours */
    CHECK_INT(sup_on_signal(&s, SIGCHLD, 0.2), 0);
    CHECK(!s.stopping);
    CHECK_INT(sup_on_signal(&s, SIGTERM, 0.5), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_KILLED);
    CHECK_INT(sup_on_reaped(&s, 137, 0.6), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 0);

    /* up, but rank 0's pid not reported: killed */
    sup_init(&s, &SERVE);
    start(&s, 200, 0.0);
    come_up(&s, 0, 0.5);
    CHECK_INT(sup_on_signal(&s, SIGTERM, 1.0), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_KILLED);

    /* between jobs (backoff): done at once */
    sup_init(&s, &SERVE);
    start(&s, 300, 0.0);
    job_ends(&s, 75, 1.0);
    CHECK_INT(s.state, SUP_BACKOFF);
    CHECK_INT(sup_on_signal(&s, SIGINT, 1.2), 0);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 0);
    CHECK_INT(sup_on_tick(&s, 5.0), 0); /* no restart */

    /* a job killed for a fault, then a signal before it is reaped: exit 0, no restart */
    sup_init(&s, &SERVE);
    start(&s, 400, 0.0);
    come_up(&s, 401, 0.5);
    CHECK_INT(feed(&s, "exit 75\n", 2.0), SUP_ACT_KILL);
    CHECK_INT(sup_on_signal(&s, SIGTERM, 2.05), 0); /* already killed, rank 0 gone */
    CHECK(s.stopping);
    CHECK_INT(sup_on_reaped(&s, 75, 2.1), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 0);

    /* rank 0 exited 0 (LINGER), then a signal: nothing to do, the job ends anyway */
    sup_init(&s, &SERVE);
    start(&s, 500, 0.0);
    come_up(&s, 501, 0.5);
    CHECK_INT(feed(&s, "exit 0\n", 1.0), 0);
    CHECK_INT(sup_on_signal(&s, SIGTERM, 1.5), 0);
    CHECK_INT(s.state, SUP_LINGER);
    CHECK_INT(sup_on_tick(&s, 6.0), SUP_ACT_KILL);
}

/* `baton run`: no restart, no launch timeout or silence watch, rank 0's own code, 130 after a
 * signal. */
static void test_run(void)
{
    struct sup s;
    sup_init(&s, &RUN);
    start(&s, 100, 0.0);
    CHECK(isinf(sup_deadline(&s)));
    CHECK_INT(sup_on_tick(&s, 1000.0), 0); /* no --launch-timeout */
    come_up(&s, 101, 1000.0);
    CHECK_INT(feed(&s, "alive\n", 1000.5), 0);
    CHECK_INT(sup_on_tick(&s, 2000.0), 0); /* no silence watch */
    CHECK_INT(feed(&s, "result 0\n", 2000.0), 0);
    CHECK_INT(feed(&s, "exit 0\n", 2000.1), 0);
    CHECK_INT(sup_on_reaped(&s, 0, 2000.2), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 0);

    /* rank 0 said its result, then MPI's teardown failed and killed it: the result counts */
    sup_init(&s, &RUN);
    start(&s, 200, 0.0);
    come_up(&s, 201, 0.5);
    CHECK_INT(feed(&s, "result 0\n", 3.0), 0);
    CHECK_INT(sup_on_reaped(&s, 255, 3.5), 0);
    CHECK_INT(s.exit_code, 0);
    /* the wrapper's exit code comes before the result; mpiexec's last */
    sup_init(&s, &RUN);
    start(&s, 300, 0.0);
    CHECK_INT(feed(&s, "result 4\nexit 3\n", 1.0), SUP_ACT_KILL);
    CHECK_INT(sup_on_reaped(&s, 7, 1.1), SUP_ACT_KILL);
    CHECK_INT(s.exit_code, 3);
    sup_init(&s, &RUN);
    start(&s, 400, 0.0);
    CHECK_INT(sup_on_reaped(&s, 75, 1.1), 0);
    CHECK_INT(s.state, SUP_DONE); /* no restart */
    CHECK_INT(s.exit_code, 75);

    /* interrupted: the job is killed at once, exit 130 */
    sup_init(&s, &RUN);
    start(&s, 500, 0.0);
    come_up(&s, 501, 0.5);
    CHECK_INT(sup_on_signal(&s, SIGINT, 1.0), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_KILLED);
    CHECK_INT(sup_on_signal(&s, SIGINT, 1.1), 0);
    CHECK_INT(sup_on_reaped(&s, 130, 1.2), SUP_ACT_KILL);
    CHECK_INT(s.exit_code, 130);
    /* interrupted while rank 0 has exited and mpiexec lingers: killed at once too */
    sup_init(&s, &RUN);
    start(&s, 600, 0.0);
    CHECK_INT(feed(&s, "exit 0\n", 1.0), 0);
    CHECK_INT(sup_on_signal(&s, SIGTERM, 1.5), SUP_ACT_KILL);
    CHECK_INT(sup_on_reaped(&s, 0, 1.6), SUP_ACT_KILL);
    CHECK_INT(s.exit_code, 130);
}

/* The report pipe is read in pieces; lines are checked; stale lines are dropped. */
static void test_reports(void)
{
    struct sup s;
    sup_init(&s, &SERVE);
    CHECK_INT(feed(&s, "exit 0\n", 0.0), 0); /* before any job: dropped */
    CHECK_INT(s.state, SUP_BACKOFF);
    start(&s, 100, 0.0);
    CHECK_INT(s.job.rank0_code, -1);
    CHECK_INT(feed(&s, "pi", 0.1), 0); /* a line in pieces */
    CHECK_INT(feed(&s, "d 4242\nu", 0.1), 0);
    CHECK_INT(s.job.rank0, 4242);
    CHECK_INT(s.state, SUP_STARTING);
    CHECK_INT(feed(&s, "p 1\n", 0.2), 0);
    CHECK_INT(s.state, SUP_RUNNING);

    /* malformed: ignored, nothing changes */
    const char *bad[] = {"pid -5\n",   "pid 12abc\n", "pid 1\n",
                         "pid\n",      "pid  7\n",    "pid +7\n",
                         "exit 256\n", "exit -1\n",   "exit\n",
                         "exit 0x1\n", "exit 75 \n",  "up\n",
                         "alive 3\n",  "ALIVE\n",     "result 999\n",
                         "\n",         "hello\n",     "pid 99999999999999999999\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT(feed(&s, bad[i], 0.3), 0);
        CHECK_INT(s.state, SUP_RUNNING);
        CHECK_INT(s.job.rank0, 4242);
        CHECK_INT(s.job.rank0_code, -1);
        CHECK_INT(s.job.rank0_result, -1);
        CHECK_NEAR(s.job.alive, 0, 0);
    }
    /* a NUL inside a line: dropped ("exit 75" must not be read out of "exit 75\0junk") */
    CHECK_INT(sup_on_report(&s, "exit 75\0junk\n", 13, 0.4), 0);
    CHECK_INT(s.job.rank0_code, -1);
    /* an overlong line is dropped whole, the next line counts */
    char big[SUP_LINE_MAX * 3];
    memset(big, 'x', sizeof(big));
    memcpy(big, "exit 9", 6);
    CHECK_INT(sup_on_report(&s, big, sizeof(big), 0.5), 0);
    CHECK_INT(feed(&s, " 75\nalive\n", 0.6), 0); /* the end of the long line, then a good one */
    CHECK_INT(s.job.rank0_code, -1);
    CHECK_NEAR(s.job.alive, 0.6, 1e-9);
    /* a line of SUP_LINE_MAX - 1 bytes counts, one byte more does not */
    sup_init(&s, &SERVE);
    start(&s, 200, 0.0);
    char edge[SUP_LINE_MAX + 1];
    memset(edge, '0', sizeof(edge));
    memcpy(edge, "pid ", 4);
    memcpy(edge + SUP_LINE_MAX - 3, "77\n", 3); /* 255 bytes and "\n" */
    CHECK_INT(sup_on_report(&s, edge, SUP_LINE_MAX, 0.7), 0);
    CHECK_INT(s.job.rank0, 77);
    memcpy(edge + SUP_LINE_MAX - 3, "088\n", 4); /* 256 bytes and "\n" */
    CHECK_INT(sup_on_report(&s, edge, SUP_LINE_MAX + 1, 0.8), 0);
    CHECK_INT(s.job.rank0, 77);

    /* the rest of an ended job's reports is dropped, and a piece of a line does not carry over
     * to the next job */
    sup_init(&s, &SERVE);
    start(&s, 300, 0.0);
    come_up(&s, 301, 0.5);
    job_ends(&s, 75, 1.0);
    CHECK_INT(feed(&s, "exit 0\nalive\nup 1\nexi", 1.2), 0);
    CHECK_INT(s.state, SUP_BACKOFF);
    start(&s, 302, s.until);
    CHECK_INT(feed(&s, "t 0\n", s.until + 0.1), 0); /* "t 0", not "exit 0" */
    CHECK_INT(s.state, SUP_STARTING);
    CHECK_INT(s.job.rank0_code, -1);
    CHECK_NEAR(s.job.alive, 0, 0);
    CHECK(!s.job.up);
    /* several lines at once */
    CHECK_INT(feed(&s, "pid 303\nup 1\nalive\nexit 75\n", 2.0), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_KILLED);
    CHECK_INT(s.job.rank0, 303);
    /* "exit" again after the kill is recorded, nothing else happens */
    CHECK_INT(feed(&s, "exit 137\n", 2.1), 0);
    CHECK_INT(s.job.rank0_code, 137);
}

int main(void)
{
    bt_log_set_tag("launcher");
    test_verdict();
    test_exit_codes();
    test_backoff();
    test_launch_timeout();
    test_rank0_silence();
    test_drain();
    test_signals();
    test_run();
    test_reports();
    return t_done();
}
