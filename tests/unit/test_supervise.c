/* test_supervise: the supervisor's state machine (server/supervise.h) without processes: events
 * with made-up times in, states, deadlines, actions and exit codes out. Restart or not per exit
 * code, backoff doubling and its reset after a healthy job, --launch-timeout, rank-0 silence, the
 * drain deadline, signals (a second one, one between jobs), `baton run`, report lines (split,
 * malformed, overlong, stale ones of an ended job). The fleet (--hosts, spares): the plan of each
 * start, failures charged to hosts (a fault report, probes of a job that did not come up), the
 * run of failures and its reset, eviction to a spare or to a re-split, --min-hosts, --on-evict,
 * readmission and the restart at an idle moment, spares and re-splits that cannot load, the head
 * never evicted, --evict-after 0. */
#include "supervise.h"
#include "t.h"

#include "log.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

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

/* ---- the fleet ---------------------------------------------------------------------------------
 */

static struct hosts_list HL;

/* serve over hosts (a comma list) and spares (NULL: none), ranks R; launch 3 s, probes 1.5 s,
 * readmission every 10 s. */
static struct sup_config fleet_cfg(const char *hosts, const char *spares, int ranks)
{
    char err[256];
    HL.n = 0;
    CHECK_INT(hosts_parse_list(&HL, hosts, false, "hosts", err, sizeof(err)), 0);
    if (spares) CHECK_INT(hosts_parse_list(&HL, spares, true, "spares", err, sizeof(err)), 0);
    CHECK_INT(hosts_check(&HL, err, sizeof(err)), 0);
    struct sup_config c = {.once = false,
                           .launch_timeout = 3,
                           .rank0_silence = 3,
                           .drain_timeout = 30,
                           .hosts = &HL,
                           .ranks = ranks,
                           .evict_after = 3,
                           .min_hosts = 1,
                           .readmit_interval = 10,
                           .probe_timeout = 1.5};
    return c;
}

/* The hydra -hosts of the plan the next start runs. */
static const char *plan_of(const struct sup *s)
{
    static char buf[512];
    CHECK_INT(sup_plan_hosts(s, &s->next, buf, sizeof(buf)), 0);
    return buf;
}

static int host(const struct sup *s, const char *name)
{
    for (int i = 0; i < s->n_hosts; i++)
        if (!strcmp(s->hosts[i].name, name)) return i;
    CHECK(0);
    return 0;
}

/* Start the due job at now (BACKOFF); its plan must be want. */
static void fstart(struct sup *s, pid_t pid, double now, const char *want)
{
    CHECK_INT(s->state, SUP_BACKOFF);
    CHECK(sup_on_tick(s, now) & SUP_ACT_START);
    CHECK_STR(plan_of(s), want);
    sup_on_started(s, pid, now);
    CHECK_INT(s->state, SUP_STARTING);
}

/* The job comes up, serves, and fails with 75 naming rank k ("fault K") after `served` s. */
static int fault_ends(struct sup *s, int k, double now, double served)
{
    char line[64];
    come_up(s, s->job.pid + 1, now);
    CHECK_INT(feed(s, "ready\n", now + 0.1), 0);
    snprintf(line, sizeof(line), "fault %d\nexit 75\n", k);
    CHECK_INT(feed(s, line, now + served), SUP_ACT_KILL);
    return sup_on_reaped(s, 75, now + served + 0.05) & ~SUP_ACT_KILL; /* stragglers: always */
}

/* The job does not come up: the round starts probe_timeout before the launch deadline; the
 * probes answer (each host named in `fail` fails), the job is killed and reaped. */
static int launch_fails(struct sup *s, double t0, const char *fail)
{
    double round_at = t0 + s->cfg.launch_timeout - s->cfg.probe_timeout;
    CHECK(sup_deadline(s) <= round_at); /* or a readmission probe before it */
    CHECK_INT(sup_on_tick(s, round_at - 0.01), 0);
    CHECK_INT(sup_on_tick(s, round_at), SUP_ACT_PROBE);
    CHECK(s->job.round);
    CHECK(sup_deadline(s) <= t0 + s->cfg.launch_timeout);
    int i, acts = 0;
    while ((i = sup_probe_take(s)) >= 0) {
        char needle[80];
        snprintf(needle, sizeof(needle), ",%s,", s->hosts[i].name);
        char hay[256];
        snprintf(hay, sizeof(hay), ",%s,", fail);
        acts |= sup_on_probe(s, i, strstr(hay, needle) == NULL, round_at + 1.0);
    }
    CHECK_INT(acts, 0); /* the job still runs: nothing is charged yet */
    CHECK_INT(sup_on_tick(s, t0 + s->cfg.launch_timeout + 0.01), SUP_ACT_KILL);
    CHECK_INT(s->job.killed, SUP_K_LAUNCH);
    return sup_on_reaped(s, 137, t0 + s->cfg.launch_timeout + 0.1) & ~SUP_ACT_KILL;
}

/* The plan of each start, the fleet line, the layout of more ranks than hosts. */
static void test_fleet_plan(void)
{
    struct sup s;
    struct sup_config c = fleet_cfg("h1,h2,h3", "h4,h5", 3);
    sup_init(&s, &c);
    CHECK_INT(s.n_hosts, 5);
    CHECK_INT(s.head, 0);
    CHECK_INT(s.hosts[3].state, SUP_H_STANDBY);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    CHECK(!s.job.plan.resplit && !s.job.plan.standin && s.job.plan.total == 3);
    char line[1024];
    CHECK_INT(sup_fleet_line(&s, line, sizeof(line)), 0);
    CHECK_STR(line, "in=h1,h2,h3;evicted=;spare=h4,h5;ranks=0,1,2;resplit=0");
    CHECK_STR(sup_host_state_name(SUP_H_STANDIN), "standin");

    /* four ranks over a:2 and b; a host that gets none is unused; rank k -> its host */
    c = fleet_cfg("a:2,b,c", NULL, 3);
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "a:2,b:1");
    CHECK_INT(s.hosts[2].state, SUP_H_UNUSED);
    CHECK_INT(sup_fleet_line(&s, line, sizeof(line)), 0);
    CHECK_STR(line, "in=a,b;evicted=;spare=;ranks=0,0,1;resplit=0");
    /* rank 1 is on a, the head: charged to it, never counted */
    CHECK_INT(fault_ends(&s, 1, 1.0, 2.0), 0);
    CHECK_INT(s.hosts[0].fails, 0);
    /* rank 2 is on b */
    fstart(&s, 200, s.until, "a:2,b:1");
    CHECK_INT(fault_ends(&s, 2, s.job.started + 0.5, 2.0), 0);
    CHECK_INT(s.hosts[1].fails, 1);

    /* `baton run` takes the layout, never counts */
    c = fleet_cfg("a,b", NULL, 2);
    c.once = true;
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "a:1,b:1");
    CHECK_INT(feed(&s, "fault 1\nexit 75\n", 1.0), SUP_ACT_KILL);
    CHECK_INT(sup_on_reaped(&s, 75, 1.1), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.hosts[1].fails, 0);
}

/* A host that stays down, with a spare: a fault, then two starts that do not come up; the
 * probes charge it each time; the third charge evicts it: one error line, the alert, and the
 * spare in its place with the same ranks. */
static void test_fleet_spare(void)
{
    struct sup s;
    struct sup_config c = fleet_cfg("h1,h2,h3", "h4", 3);
    sup_init(&s, &c);
    int h2 = host(&s, "h2"), h4 = host(&s, "h4");
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    CHECK_INT(fault_ends(&s, 1, 0.5, 40.0), 0); /* served 40 s: a fresh run of failures */
    CHECK_INT(s.hosts[h2].fails, 1);
    CHECK_STR(s.hosts[h2].why, "rank 1 failed (rank 0's fault report)");
    fstart(&s, 200, s.until, "h1:1,h2:1,h3:1");
    CHECK_INT(launch_fails(&s, s.job.started, "h2"), 0);
    CHECK_INT(s.hosts[h2].fails, 2);
    CHECK_INT(s.hosts[h2].state, SUP_H_SERVING);
    CHECK_INT(s.hosts[h4].probe, SUP_P_OK); /* the spare was probed in the round */
    fstart(&s, 300, s.until, "h1:1,h2:1,h3:1");
    double t3 = s.job.started;
    CHECK_INT(launch_fails(&s, t3, "h2"), SUP_ACT_ALERT);
    CHECK_INT(s.hosts[h2].state, SUP_H_EVICTED);
    CHECK_INT(s.state, SUP_BACKOFF);
    CHECK_INT(sup_alert_take(&s), h2);
    CHECK_INT(sup_alert_take(&s), -1);
    CHECK_NEAR(s.hosts[h2].probe_at, t3 + 3.1 + 10, 1e-9); /* --readmit-interval */
    fstart(&s, 400, s.until, "h1:1,h4:1,h3:1");
    CHECK_INT(s.hosts[h4].state, SUP_H_STANDIN);
    CHECK_INT(s.hosts[h4].stands_for, h2);
    CHECK(s.job.plan.standin && !s.job.plan.resplit && s.job.plan.total == 3);
    char line[512];
    CHECK_INT(sup_fleet_line(&s, line, sizeof(line)), 0);
    CHECK_STR(line, "in=h1,h4,h3;evicted=h2;spare=;ranks=0,1,2;resplit=0");
    /* rank 1 now runs on h4: its fault is h4's */
    CHECK_INT(fault_ends(&s, 1, s.job.started + 0.5, 2.0), 0);
    CHECK_INT(s.hosts[h4].fails, 1);
    CHECK_INT(s.hosts[h2].fails, 3); /* unchanged while evicted */
}

/* The same without a spare: the next start re-splits the layers over h1, h3 (2 ranks). */
static void test_fleet_resplit(void)
{
    struct sup s;
    struct sup_config c = fleet_cfg("h1,h2,h3", NULL, 3);
    sup_init(&s, &c);
    int h2 = host(&s, "h2");
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    CHECK_INT(fault_ends(&s, 1, 0.5, 5.0), 0);
    for (int n = 2; n <= 3; n++) {
        fstart(&s, 100 * n, s.until, "h1:1,h2:1,h3:1");
        CHECK_INT(launch_fails(&s, s.job.started, "h2"), n == 3 ? SUP_ACT_ALERT : 0);
    }
    CHECK_INT(s.hosts[h2].state, SUP_H_EVICTED);
    fstart(&s, 400, s.until, "h1:1,h3:1");
    CHECK(s.job.plan.resplit && s.job.plan.total == 2 && !s.job.plan.standin);
    char line[512];
    CHECK_INT(sup_fleet_line(&s, line, sizeof(line)), 0);
    CHECK_STR(line, "in=h1,h3;evicted=h2;spare=;ranks=0,1;resplit=1");
    /* rank 1 is h3 now */
    CHECK_INT(fault_ends(&s, 1, s.job.started + 0.5, 2.0), 0);
    CHECK_INT(s.hosts[host(&s, "h3")].fails, 1);

    /* --min-hosts 3: the eviction stops the supervisor (exit 1) */
    c = fleet_cfg("h1,h2,h3", NULL, 3);
    c.min_hosts = 3;
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    for (int n = 1; n <= 3; n++) {
        CHECK_INT(fault_ends(&s, 2, s.job.started + 0.5, 1.0), n == 3 ? SUP_ACT_ALERT : 0);
        if (n < 3) fstart(&s, 100 + n, s.until, "h1:1,h2:1,h3:1");
    }
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 1);
    CHECK_INT(sup_on_tick(&s, 1000.0), 0); /* nothing more */
}

/* A host charged once (a kill -9) is not evicted; runs of failures end with a job that served
 * for SUP_HEALTHY_AFTER; the head is never evicted; --evict-after 0 never evicts. */
static void test_fleet_counts(void)
{
    struct sup s;
    struct sup_config c = fleet_cfg("h1,h2,h3", "h4", 3);
    sup_init(&s, &c);
    int h3 = host(&s, "h3");
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    CHECK_INT(fault_ends(&s, 2, 0.5, 60.0), 0); /* kill -9 of rank 2 */
    CHECK_INT(s.hosts[h3].fails, 1);
    fstart(&s, 200, s.until, "h1:1,h2:1,h3:1");
    CHECK_INT(fault_ends(&s, 2, s.job.started + 0.5, 20.0), 0); /* short-lived: a run of 2 */
    CHECK_INT(s.hosts[h3].fails, 2);
    fstart(&s, 300, s.until, "h1:1,h2:1,h3:1");
    /* this one served for 30 s: the run ends, the new failure is the first again */
    CHECK_INT(fault_ends(&s, 2, s.job.started + 0.5, 0.1 + SUP_HEALTHY_AFTER + 1), 0);
    CHECK_INT(s.hosts[h3].fails, 1);
    CHECK_INT(s.hosts[h3].state, SUP_H_SERVING);
    /* not ready at all (it never said "ready"): no reset however long it lived */
    fstart(&s, 400, s.until, "h1:1,h2:1,h3:1");
    come_up(&s, 401, s.job.started + 0.5);
    CHECK_INT(feed(&s, "fault 2\nexit 75\n", s.job.started + 100), SUP_ACT_KILL);
    CHECK_INT(sup_on_reaped(&s, 75, s.job.started + 100.1), SUP_ACT_KILL);
    CHECK_INT(s.hosts[h3].fails, 2);

    /* rank 0's faults, a rank 0 killed by a signal or silent: the head, never counted */
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    CHECK_INT(fault_ends(&s, 0, 0.5, 1.0), 0);
    fstart(&s, 200, s.until, "h1:1,h2:1,h3:1");
    come_up(&s, 201, s.job.started + 0.5);
    CHECK_INT(feed(&s, "exit 137\n", s.job.started + 1.0), SUP_ACT_KILL); /* kill -9 of rank 0 */
    CHECK_INT(sup_on_reaped(&s, 137, s.job.started + 1.1), SUP_ACT_KILL);
    fstart(&s, 300, s.until, "h1:1,h2:1,h3:1");
    come_up(&s, 301, s.job.started + 0.5);
    CHECK_INT(feed(&s, "alive\n", s.job.started + 0.6), 0);
    CHECK_INT(sup_on_tick(&s, s.job.started + 0.6 + 3.01), SUP_ACT_KILL); /* silent */
    CHECK_INT(sup_on_reaped(&s, 137, s.job.started + 4), SUP_ACT_KILL);
    for (int i = 0; i < s.n_hosts; i++) CHECK_INT(s.hosts[i].fails, 0);
    CHECK_INT(s.hosts[0].state, SUP_H_SERVING);
    CHECK_INT(sup_alert_take(&s), -1);

    /* --evict-after 0: counted, never evicted */
    c.evict_after = 0;
    sup_init(&s, &c);
    for (int n = 1; n <= 6; n++) {
        fstart(&s, 100 * n, n == 1 ? 0.0 : s.until, "h1:1,h2:1,h3:1");
        CHECK_INT(fault_ends(&s, 1, s.job.started + 0.5, 1.0), 0);
    }
    CHECK_INT(s.hosts[1].fails, 6);
    CHECK_INT(s.hosts[1].state, SUP_H_SERVING);
}

/* Probes: results after the job's end hold the restart back; nobody charged when everyone
 * answers; a job that ends before MPI is up gets its round then; a spare that does not answer is
 * not chosen; a job that comes up late forgets its round. */
static void test_fleet_probes(void)
{
    struct sup s;
    struct sup_config c = fleet_cfg("h1,h2,h3", "h4,h5", 3);
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    /* every host answers: the failed start is charged to nobody */
    CHECK_INT(launch_fails(&s, 0.0, ""), 0);
    for (int i = 0; i < s.n_hosts; i++) CHECK_INT(s.hosts[i].fails, 0);
    CHECK(!s.charge_pending);

    /* the job ends before MPI is up (e.g. the launcher stopped mpiexec): a round now; the
     * restart waits for it past its backoff */
    fstart(&s, 200, s.until, "h1:1,h2:1,h3:1");
    double t = s.job.started;
    CHECK_INT(sup_on_reaped(&s, 255, t + 0.3), SUP_ACT_PROBE);
    CHECK(s.charge_pending);
    int got[5] = {0}, i;
    while ((i = sup_probe_take(&s)) >= 0) got[i]++;
    CHECK(!got[0] && got[1] && got[2] && got[3] && got[4]); /* not the head; the spares too */
    CHECK(isinf(sup_deadline(&s)));                         /* woken by the results */
    CHECK_INT(sup_on_tick(&s, t + 5), 0);                   /* backoff passed, round not */
    CHECK_INT(sup_on_probe(&s, 1, true, t + 5.1), 0);
    CHECK_INT(sup_on_probe(&s, 3, false, t + 5.1), 0); /* spare h4 does not answer */
    CHECK_INT(sup_on_probe(&s, 4, true, t + 5.1), 0);
    CHECK_INT(sup_on_probe(&s, 2, false, t + 5.2), 0); /* h3 does not: the round is complete */
    CHECK(!s.charge_pending);
    CHECK_INT(s.hosts[2].fails, 1);
    CHECK_INT(s.hosts[1].fails, 0);
    CHECK_INT(sup_on_tick(&s, t + 5.3) & SUP_ACT_START, SUP_ACT_START);
    sup_on_started(&s, 300, t + 5.3);

    /* h3 twice more: evicted; h4 did not answer its probe: h5 takes the place */
    for (int n = 0; n < 2; n++) {
        CHECK_INT(sup_on_reaped(&s, 255, s.job.started + 0.3), SUP_ACT_PROBE);
        int acts = 0;
        while ((i = sup_probe_take(&s)) >= 0)
            acts |= sup_on_probe(&s, i, i != 2 && i != 3, s.job.started + 1);
        CHECK_INT(acts, n == 1 ? SUP_ACT_ALERT : 0);
        fstart(&s, 400 + n, s.until, n == 1 ? "h1:1,h2:1,h5:1" : "h1:1,h2:1,h3:1");
    }
    CHECK_INT(s.hosts[4].state, SUP_H_STANDIN);
    CHECK_INT(s.hosts[3].state, SUP_H_STANDBY);
    /* h4, standing by after a failed probe, is probed again every --readmit-interval */
    CHECK(s.hosts[3].probe_failed);
    double at = s.hosts[3].probe_at;
    CHECK(at > s.job.started && at <= s.job.started + 1 + 10);
    CHECK_INT(sup_on_tick(&s, at) & SUP_ACT_PROBE, SUP_ACT_PROBE);
    bool h4 = false;
    while ((i = sup_probe_take(&s)) >= 0) { /* h3's readmission may be due too */
        h4 |= i == 3;
        sup_on_probe(&s, i, i == 3, at + 0.1);
    }
    CHECK(h4);
    CHECK(!s.hosts[3].probe_failed && isinf(s.hosts[3].probe_at));

    /* a degraded job (no spare answered) gets the spare once it answers: a restart at an idle
     * moment */
    c = fleet_cfg("h1,h2,h3", "h4", 3);
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    for (int n = 1; n <= 3; n++) {
        CHECK_INT(sup_on_reaped(&s, 255, s.job.started + 0.3) & SUP_ACT_PROBE, SUP_ACT_PROBE);
        while ((i = sup_probe_take(&s)) >= 0) sup_on_probe(&s, i, i == 2, s.job.started + 1);
        fstart(&s, 100 + n, s.until, n == 3 ? "h1:1,h3:1" : "h1:1,h2:1,h3:1");
    }
    CHECK(s.job.plan.resplit);
    come_up(&s, 200, s.job.started + 0.5);
    at = s.hosts[3].probe_at;
    CHECK_INT(sup_on_tick(&s, at) & SUP_ACT_PROBE, SUP_ACT_PROBE);
    while ((i = sup_probe_take(&s)) >= 0) CHECK_INT(i == 3 || i == 1, 1);
    CHECK_INT(sup_on_probe(&s, 3, true, at + 0.1), SUP_ACT_READMIT);

    /* a job that comes up after its round started: the round is forgotten; a later fault
     * naming no rank gets a round of its own */
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    CHECK_INT(sup_on_tick(&s, 1.5), SUP_ACT_PROBE);
    while ((i = sup_probe_take(&s)) >= 0) sup_on_probe(&s, i, i != 1, 2.0); /* h2 slow */
    come_up(&s, 101, 2.5);
    CHECK(!s.job.round);
    CHECK(isinf(sup_deadline(&s)) || sup_deadline(&s) > 100); /* no launch deadline any more */
    CHECK_INT(feed(&s, "exit 75\n", 50.0), SUP_ACT_KILL);
    CHECK_INT(sup_on_reaped(&s, 75, 50.1), SUP_ACT_KILL | SUP_ACT_PROBE);
    while ((i = sup_probe_take(&s)) >= 0) sup_on_probe(&s, i, true, 50.5);
    CHECK_INT(s.hosts[1].fails, 0); /* the old result did not count */

    /* a signal while the restart waits for its round: done */
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    CHECK_INT(sup_on_reaped(&s, 255, 0.3), SUP_ACT_PROBE);
    CHECK_INT(sup_on_signal(&s, SIGTERM, 0.4), 0);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 0);
    CHECK_INT(sup_on_probe(&s, 1, false, 0.5), 0);
}

/* Readmission: the evicted host is probed every --readmit-interval (x2 per earlier eviction);
 * when it answers, a running job is asked to restart at an idle moment; that planned end is
 * restarted at once, charged to nobody, with the host back and the spare standing by again. */
static void test_fleet_readmit(void)
{
    struct sup s;
    struct sup_config c = fleet_cfg("h1,h2,h3", "h4", 3);
    sup_init(&s, &c);
    int h2 = host(&s, "h2"), h4 = host(&s, "h4");
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    for (int n = 1; n <= 3; n++) {
        CHECK_INT(fault_ends(&s, 1, s.job.started + 0.5, 1.0), n == 3 ? SUP_ACT_ALERT : 0);
        if (n < 3) fstart(&s, 100 + n, s.until, "h1:1,h2:1,h3:1");
    }
    double ev = s.job.started + 1.55; /* reaped: evicted then */
    CHECK_NEAR(s.hosts[h2].probe_at, ev + 10, 1e-9);
    fstart(&s, 200, s.until, "h1:1,h4:1,h3:1");
    come_up(&s, 201, s.job.started + 0.5);
    CHECK_INT(feed(&s, "ready\n", s.job.started + 0.6), 0);
    CHECK_NEAR(sup_deadline(&s), ev + 10, 1e-9); /* the probe is the next thing to do */
    CHECK_INT(sup_on_tick(&s, ev + 9.9), 0);
    CHECK_INT(sup_on_tick(&s, ev + 10), SUP_ACT_PROBE);
    CHECK_INT(sup_probe_take(&s), h2);
    CHECK_INT(sup_probe_take(&s), -1);
    CHECK_INT(sup_on_tick(&s, ev + 10.5), 0); /* running: not again */
    CHECK_INT(sup_on_probe(&s, h2, false, ev + 11.5), 0);
    CHECK_NEAR(s.hosts[h2].probe_at, ev + 21.5, 1e-9);
    CHECK_INT(sup_on_tick(&s, ev + 21.5), SUP_ACT_PROBE);
    CHECK_INT(sup_probe_take(&s), h2);
    /* it answers: the running job is asked once to restart when idle */
    CHECK_INT(sup_on_probe(&s, h2, true, ev + 22), SUP_ACT_READMIT);
    CHECK(s.hosts[h2].back);
    CHECK(s.job.restart_asked);
    CHECK_INT(sup_on_tick(&s, ev + 23), 0);
    CHECK(isinf(sup_deadline(&s)));
    /* rank 0 leaves with 75 at an idle moment: restart at once, no charge, no backoff step */
    int restarts = s.restarts;
    double backoff = s.backoff;
    CHECK_INT(feed(&s, "exit 75\n", ev + 30), SUP_ACT_KILL);
    CHECK_INT(sup_on_reaped(&s, 75, ev + 30.1), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_BACKOFF);
    CHECK_NEAR(s.until, ev + 30.1, 1e-9);
    CHECK_INT(s.restarts, restarts);
    CHECK_NEAR(s.backoff, backoff, 0);
    fstart(&s, 300, ev + 30.1, "h1:1,h2:1,h3:1");
    CHECK_INT(s.hosts[h2].state, SUP_H_SERVING);
    CHECK_INT(s.hosts[h2].fails, 0);
    CHECK_INT(s.hosts[h4].state, SUP_H_STANDBY);
    char line[512];
    CHECK_INT(sup_fleet_line(&s, line, sizeof(line)), 0);
    CHECK_STR(line, "in=h1,h2,h3;evicted=;spare=h4;ranks=0,1,2;resplit=0");

    /* evicted again: probed every 20 s now */
    for (int n = 1; n <= 3; n++) {
        CHECK_INT(fault_ends(&s, 1, s.job.started + 0.5, 1.0), n == 3 ? SUP_ACT_ALERT : 0);
        if (n < 3) fstart(&s, 400 + n, s.until, "h1:1,h2:1,h3:1");
    }
    CHECK_INT(s.hosts[h2].evictions, 2);
    CHECK_NEAR(s.hosts[h2].probe_at - (s.job.started + 1.55), 20, 1e-9);

    /* the restart asked for ends with a fault instead: charged as any fault */
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    for (int n = 1; n <= 3; n++) {
        fault_ends(&s, 1, s.job.started + 0.5, 1.0);
        if (n < 3) fstart(&s, 100 + n, s.until, "h1:1,h2:1,h3:1");
    }
    fstart(&s, 200, s.until, "h1:1,h4:1,h3:1");
    come_up(&s, 201, s.job.started + 0.5);
    double t = s.hosts[h2].probe_at;
    CHECK_INT(sup_on_tick(&s, t), SUP_ACT_PROBE);
    CHECK_INT(sup_probe_take(&s), h2);
    CHECK_INT(sup_on_probe(&s, h2, true, t + 0.1), SUP_ACT_READMIT);
    CHECK_INT(feed(&s, "fault 2\nexit 75\n", t + 1), SUP_ACT_KILL);
    backoff = s.backoff;
    sup_on_reaped(&s, 75, t + 1.1);
    CHECK_INT(s.hosts[host(&s, "h3")].fails, 1);
    CHECK_NEAR(s.until, t + 1.1 + backoff, 1e-9); /* a fault's restart: with backoff */
    fstart(&s, 300, s.until, "h1:1,h2:1,h3:1");   /* h2 is back all the same */

    /* not running when the host answers: the next start takes it, nobody is asked */
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    for (int n = 1; n <= 3; n++) {
        fault_ends(&s, 1, s.job.started + 0.5, 1.0);
        if (n < 3) fstart(&s, 100 + n, s.until, "h1:1,h2:1,h3:1");
    }
    t = s.hosts[h2].probe_at;
    CHECK_INT(sup_on_tick(&s, t) & SUP_ACT_PROBE, SUP_ACT_PROBE); /* in backoff still */
    CHECK_INT(sup_probe_take(&s), h2);
    CHECK_INT(sup_on_probe(&s, h2, true, t + 0.1), 0);
    fstart(&s, 200, t + 0.2, "h1:1,h2:1,h3:1");

    /* --readmit-interval 0: never probed */
    c.readmit_interval = 0;
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    for (int n = 1; n <= 3; n++) {
        fault_ends(&s, 1, s.job.started + 0.5, 1.0);
        if (n < 3) fstart(&s, 100 + n, s.until, "h1:1,h2:1,h3:1");
    }
    CHECK(isinf(s.hosts[h2].probe_at));
    fstart(&s, 200, s.until, "h1:1,h4:1,h3:1");
    CHECK_INT(sup_on_tick(&s, 1e6) & SUP_ACT_PROBE, 0);
}

/* A plan that is not the configured layout fails to load (exit 2, "failed K"): a spare standing
 * in is evicted for good; a re-split that cannot load makes the next starts use every configured
 * host until the evicted one answers; the configured layout failing is a configuration error. */
static void test_fleet_load_failures(void)
{
    struct sup s;
    struct sup_config c = fleet_cfg("h1,h2,h3", "h4", 3);
    sup_init(&s, &c);
    int h2 = host(&s, "h2"), h4 = host(&s, "h4");
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    for (int n = 1; n <= 3; n++) {
        fault_ends(&s, 1, s.job.started + 0.5, 1.0);
        if (n < 3) fstart(&s, 100 + n, s.until, "h1:1,h2:1,h3:1");
    }
    (void)sup_alert_take(&s);
    fstart(&s, 200, s.until, "h1:1,h4:1,h3:1");
    /* the spare has no model file: rank 1 fails to load, rank 0 exits 2 */
    CHECK_INT(feed(&s, "up 1\nfailed 1\nexit 2\n", s.job.started + 0.5), SUP_ACT_KILL);
    CHECK_INT(sup_on_reaped(&s, 2, s.job.started + 0.6), SUP_ACT_KILL | SUP_ACT_ALERT);
    CHECK_INT(s.state, SUP_BACKOFF); /* not the end: another plan may load */
    CHECK_INT(s.hosts[h4].state, SUP_H_EVICTED);
    CHECK(s.hosts[h4].unfit);
    CHECK(isinf(s.hosts[h4].probe_at));
    CHECK_INT(sup_alert_take(&s), h4);
    fstart(&s, 300, s.until, "h1:1,h3:1");
    CHECK(s.job.plan.resplit);
    /* the re-split cannot load on h3 (its larger range): every configured host again */
    CHECK_INT(feed(&s, "up 1\nfailed 1\nexit 2\n", s.job.started + 0.5), SUP_ACT_KILL);
    CHECK_INT(sup_on_reaped(&s, 2, s.job.started + 0.6), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_BACKOFF);
    CHECK_INT(s.n_bad, 1);
    fstart(&s, 400, s.until, "h1:1,h2:1,h3:1");
    CHECK(s.job.plan.fallback && !s.job.plan.resplit);
    CHECK_INT(s.job.plan.live, 2);
    /* h2 is still out: not charged again, nothing evicted */
    CHECK_INT(launch_fails(&s, s.job.started, "h2"), 0);
    CHECK_INT(s.hosts[h2].state, SUP_H_EVICTED);
    CHECK_INT(sup_alert_take(&s), -1);
    /* h2 answers its readmission probe: the plan is the configured one again */
    double t = s.hosts[h2].probe_at;
    CHECK(!isinf(t));
    CHECK_INT(sup_on_tick(&s, fmax(t, s.until)) & SUP_ACT_PROBE, SUP_ACT_PROBE);
    CHECK_INT(sup_probe_take(&s), h2);
    CHECK_INT(sup_on_probe(&s, h2, true, fmax(t, s.until) + 0.1), 0);
    fstart(&s, 500, fmax(t, s.until) + 0.2, "h1:1,h2:1,h3:1");
    CHECK(!s.job.plan.fallback);
    CHECK_INT(s.hosts[h2].state, SUP_H_SERVING);

    /* the configured layout fails to load: a configuration error, as without hosts */
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    CHECK_INT(feed(&s, "up 1\nfailed 2\nexit 2\n", 0.5), SUP_ACT_KILL);
    CHECK_INT(sup_on_reaped(&s, 2, 0.6), SUP_ACT_KILL);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 2);
    /* a mismatch on a regular host of a plan with a spare: its range did not change: fatal */
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    for (int n = 1; n <= 3; n++) {
        fault_ends(&s, 1, s.job.started + 0.5, 1.0);
        if (n < 3) fstart(&s, 100 + n, s.until, "h1:1,h2:1,h3:1");
    }
    fstart(&s, 200, s.until, "h1:1,h4:1,h3:1");
    CHECK_INT(feed(&s, "up 1\nfailed 2\nexit 3\n", s.job.started + 0.5), SUP_ACT_KILL);
    sup_on_reaped(&s, 3, s.job.started + 0.6);
    CHECK_INT(s.state, SUP_DONE);
    CHECK_INT(s.exit_code, 3);
    /* a failed load past --init-timeout (75, "failed K") is a charge like a fault */
    sup_init(&s, &c);
    fstart(&s, 100, 0.0, "h1:1,h2:1,h3:1");
    CHECK_INT(feed(&s, "up 1\nfailed 2\nexit 75\n", 0.5), SUP_ACT_KILL);
    CHECK_INT(sup_on_reaped(&s, 75, 0.6), SUP_ACT_KILL);
    CHECK_INT(s.hosts[host(&s, "h3")].fails, 1);
    /* report lines out of range are ignored */
    CHECK_INT(feed(&s, "fault 256\nfailed -1\nfault\n", 0.7), 0);
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
    test_fleet_plan();
    test_fleet_spare();
    test_fleet_resplit();
    test_fleet_counts();
    test_fleet_probes();
    test_fleet_readmit();
    test_fleet_load_failures();
    return t_done();
}
