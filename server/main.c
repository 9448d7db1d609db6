/* baton-server: rank 0's process. Reads the configuration, brings up the engine (under mpiexec
 * with more ranks: the pipeline, MPI first), starts HTTP at once (it answers 503 "loading" while
 * the model loads), starts the scheduler thread (which loads the model and then serves), and then
 * lives by lifecycle.h: signals, draining, the fault linger, the exit status. Exit codes
 * (exitcodes.h): 0 after a signal, 1 when HTTP cannot start, 2 for a bad configuration or a model
 * that cannot be loaded, 3 for a handshake mismatch (the supervisor restarts neither), 75 after a
 * pipeline fault (every request answered 503 first, then _exit: the supervisor restarts the job;
 * docs/faults.md). */
#include "config.h"
#include "engine_local.h"
#include "engine_pipe.h"
#include "exitcodes.h"
#include "hosts.h"
#include "http.h"
#include "lifecycle.h"
#include "log.h"
#include "metrics.h"
#include "oneshot.h"
#include "pipeline.h"
#include "quant.h"
#include "report.h"
#include "scheduler.h"
#include "version.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define USAGE                                                                                      \
    "usage: baton-server -m MODEL.gguf [options]\n\n"                                              \
    "OpenAI-compatible HTTP server for GGUF models: rank 0 of a pipeline, or the whole\n"          \
    "model in one process."

/* `baton run` starts rank 0 as `baton-server --oneshot ...` (oneshot.h): take the flag out. */
static bool take_oneshot(int *argc, char **argv)
{
    for (int i = 1; i < *argc; i++)
        if (!strcmp(argv[i], "--oneshot")) {
            memmove(&argv[i], &argv[i + 1], sizeof(*argv) * (size_t)(*argc - i));
            (*argc)--;
            return true;
        }
    return false;
}

/* The configuration, or the exit status when the process is done already (*done): --help and
 * friends, or a bad option (under a pipeline the ranks are told first, engine_pipe.h). */
static int load_config(struct cfg *c, int argc, char **argv, bool *done)
{
    char err[1024];
    *done = true;
    if (cfg_load(c, argc, argv, environ, err, sizeof(err)) < 0) {
        fprintf(stderr, "baton-server: %s\n", err);
        return eng_pipe_early_exit(BT_EXIT_CONFIG);
    }
    if (c->help || c->version || c->print_example) {
        if (c->help)
            cfg_write_help(stdout, USAGE, CFG_ALL_GROUPS & ~(1u << CFG_G_LAUNCH));
        else if (c->version)
            printf("baton-server %s (%s)\n", BATON_VERSION, BATON_BUILD_ID);
        else
            cfg_write_example(stdout);
        return BT_EXIT_OK;
    }
    if (!c->stage.model || !*c->stage.model) {
        fprintf(stderr, "baton-server: option model: required (-m FILE, BATON_MODEL or `model =` "
                        "in the config file)\n");
        return eng_pipe_early_exit(BT_EXIT_CONFIG);
    }
    if (c->stage.log_level != CFG_LOG_UNSET) bt_log_set_level(c->stage.log_level);
    *done = false;
    return BT_EXIT_OK;
}

/* The engine: under mpiexec with more ranks, the pipeline (MPI comes up here, before any other
 * thread exists); otherwise every layer in this process. */
static int make_engine(const struct cfg *c, int *argc, char ***argv, struct engine *eng)
{
    char err[1024];
    const struct cfg_stage *st = &c->stage;
    struct eng_pipe_config pc = {.split = st->split,
                                 .init_timeout_s = (int)st->init_timeout,
                                 .heartbeat_ns = (uint64_t)st->heartbeat_interval_ms * 1000000ull,
                                 .heartbeat_misses = (int)st->heartbeat_misses,
                                 .step_timeout_ns = (uint64_t)st->step_timeout_ms * 1000000ull};
    if (!eng_pipe_wanted()) {
        if (eng_local_new(eng) == BT_OK) return BT_OK;
        bt_error("out of memory");
        return BT_ENOMEM;
    }
    if (eng_pipe_new(eng, argc, argv, &pc, err, sizeof(err)) < 0) {
        bt_error("%s", err);
        return BT_ERR;
    }
    return BT_OK;
}

/* The hosts the supervisor runs the job on (BATON_FLEET, hosts.h), or NULL. */
static const struct hosts_fleet *read_fleet(void)
{
    static struct hosts_fleet f; /* large; read by the HTTP threads until exit */
    char err[256];
    const char *line = getenv("BATON_FLEET");
    if (!line || !*line) return NULL;
    if (hosts_fleet_parse(&f, line, err, sizeof(err)) < 0) {
        bt_warn("BATON_FLEET: %s: /health and /metrics show no hosts", err);
        return NULL;
    }
    return &f;
}

/* HTTP on the listening socket; logged. */
static int open_http(const struct http_config *hc, struct sched *s, struct metrics *m,
                     struct http **h)
{
    char err[1024];
    if (http_start(hc, s, m, h, err, sizeof(err)) < 0) {
        bt_error("%s", err);
        return BT_ERR;
    }
    if (hc->listen_fd >= 0)
        bt_info("listening on fd %d (port %d)", hc->listen_fd, http_port(*h));
    else
        bt_info("listening on http://%s:%d", hc->host, http_port(*h));
    return BT_OK;
}

/* The scheduler (which takes the engine), started, and HTTP, started unless hold (the restart
 * the supervisor asked for: serve() opens HTTP once the model is ready, so the requests waiting
 * in the listening socket's backlog meanwhile are served, not answered 503 "loading"). */
static int start_serving(const struct cfg *c, struct engine eng, struct metrics *m,
                         const struct http_config *hc, bool hold, uint64_t t_start,
                         struct sched **s, struct http **h)
{
    char err[1024];
    const struct cfg_stage *st = &c->stage;
    const struct cfg_server *sv = &c->server;
    struct sched_config sc = {
        .model_path = st->model,
        .chat_template = sv->chat_template && *sv->chat_template ? sv->chat_template : NULL,
        .n_ctx = (int)st->ctx_size,
        .n_slots = (int)st->parallel,
        .queue_cap = (int)sv->queue,
        .prefill_chunk = (int)st->prefill_chunk,
        .n_threads = (int)st->threads,
        .device = st->device,
        .kv_type = st->cache_type == CFG_CACHE_F32 ? BT_F32 : BT_F16,
        .n_blocks = (int)st->kv_blocks,
        .request_timeout_s = (int)sv->request_timeout,
        .test_step_delay_ms = (int)sv->test_step_delay_ms,
        .test_load_delay_ms = st->test_load_delay_rank <= 0 ? (int)st->test_load_delay_ms : 0,
        .t_start_ns = t_start};
    if (sched_create(&sc, eng, m, s, err, sizeof(err)) < 0) {
        bt_error("%s", err);
        return BT_ERR;
    }
    if (!hold && open_http(hc, *s, m, h) < 0) return BT_ERR;
    if (hold) bt_info("accepting connections once the model is ready (a planned restart)");
    if (sched_start(*s) < 0) {
        bt_error("cannot start the scheduler thread");
        return BT_ERR;
    }
    return BT_OK;
}

/* What rank 0 tells the supervisor beyond "alive" (report.h): "ready" once it serves, the rank of
 * a pipeline fault ("fault K") or of a failed load ("failed K"), each once, so that the supervisor
 * can charge the failure to a host (supervise.h). */
struct told {
    bool ready, fault, failed;
};

static void tell_supervisor(struct told *t, const struct sched_stats *st, struct engine eng)
{
    char line[32];
    if (st->state == SCHED_READY && !t->ready) {
        t->ready = true;
        report_line("ready");
    } else if (st->state == SCHED_FAULTED && !t->fault && st->fault_rank >= 0) {
        t->fault = true;
        snprintf(line, sizeof(line), "fault %d", st->fault_rank);
        report_line(line);
    } else if (st->state == SCHED_FAILED && !t->failed) {
        t->failed = true;
        int k = eng.ops && eng.ops->failed_rank ? eng.ops->failed_rank(eng.self) : -1;
        snprintf(line, sizeof(line), "failed %d", k);
        if (k >= 0) report_line(line);
    }
}

/* Live by lifecycle.h until it says exit (returns the code) or exit now (does not return). */
static int serve(const struct cfg *c, struct sched *s, struct http **hp,
                 const struct http_config *hc, struct metrics *m, struct engine eng,
                 const sigset_t *sigs)
{
    struct told told = {false, false, false};
    struct life l;
    struct life_config lc = {.drain_ns = (uint64_t)c->server.drain_timeout_ms * 1000000ull,
                             .step_timeout_ns = (uint64_t)c->stage.step_timeout_ms * 1000000ull};
    life_init(&l, &lc);
    for (;;) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 100000000L};
        int sig = sigtimedwait(sigs, NULL, &ts);
        struct sched_stats st;
        sched_stats(s, &st, NULL, 0);
        if (!*hp && st.state != SCHED_LOADING && open_http(hc, s, m, hp) < 0) return BT_EXIT_FAIL;
        struct http *h = *hp;
        tell_supervisor(&told, &st, eng);
        struct life_obs o = {.now = bt_now_ns(),
                             .signal = sig == SIGINT || sig == SIGTERM ? sig : 0,
                             .restart = sig == SIGUSR2,
                             .conns = http_connections(h),
                             .sched_state = st.state,
                             .sched_loop_ns = sched_loop_ns(s),
                             .busy = st.slots_busy,
                             .queued = st.queue_depth,
                             .unsent = http_pending(h),
                             .failed_code = st.state == SCHED_FAILED ? sched_exit_code(s) : 0};
        unsigned act = life_step(&l, &o);
        if (act & LIFE_DO_ALIVE) report_line("alive");
        if (act & LIFE_DO_DRAIN) sched_drain(s);
        if (act & LIFE_DO_QUIESCE) http_quiesce(h);
        if (l.state == LIFE_EXIT) {
            if (l.planned) eng_pipe_leave_fast(); /* SHUTDOWN, no MPI_Finalize to wait on */
            return l.exit_code;
        }
        if (l.state == LIFE_EXIT_NOW) { /* no teardown that could wait on a dead rank */
            fflush(NULL);
            _exit(l.exit_code);
        }
    }
}

int main(int argc, char **argv)
{
    const uint64_t t_start = bt_now_ns();
    struct cfg c;
    static struct metrics m;
    struct sched *s = NULL;
    struct http *h = NULL;
    struct engine eng;
    int status = BT_EXIT_FAIL;
    sigset_t sigs;
    bool done;

    bool oneshot = take_oneshot(&argc, argv);
    int rc = load_config(&c, argc, argv, &done);
    if (done) {
        cfg_free(&c);
        return rc;
    }
    report_init();
    if (oneshot) {
        status = oneshot_main(&c, &argc, &argv);
        cfg_free(&c);
        return status;
    }
    /* signals are taken by sigtimedwait in serve(); every thread started from here inherits the
     * mask */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGUSR2); /* the supervisor: restart at an idle moment (lifecycle.h) */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char alias[256];
    const char *b = strrchr(c.stage.model, '/');
    snprintf(alias, sizeof(alias), "%s",
             c.server.model_alias && *c.server.model_alias ? c.server.model_alias
             : b                                           ? b + 1
                                                           : c.stage.model);
    metrics_init(&m);
    if (make_engine(&c, &argc, &argv, &eng) < 0) goto out;
    report_line("up 1"); /* MPI came up on every host (MPI_Init returns on rank 0 only then) */
    const char *hold = getenv("BATON_LISTEN_WHEN_READY"); /* the supervisor (launcher.c) */
    struct http_config hc = {.host = c.server.host,
                             .port = (int)c.server.port,
                             .listen_fd = (int)c.server.listen_fd,
                             .n_threads = (int)c.server.http_threads,
                             .max_body = (size_t)c.server.max_body,
                             .api_key = c.server.api_key,
                             .model_name = alias,
                             .fleet = read_fleet()};
    if (start_serving(&c, eng, &m, &hc, hold && !strcmp(hold, "1"), t_start, &s, &h) == BT_OK)
        status = serve(&c, s, &h, &hc, &m, eng, &sigs);
out:
    /* answer every request first (this resumes their connections), then stop HTTP */
    sched_stop(s);
    http_stop(h);
    sched_free(s);
    cfg_free(&c);
    return status;
}
