/* baton-server: rank 0's process. Reads the configuration, starts HTTP at once (it answers 503
 * "loading" while the model loads), starts the scheduler thread (which loads the model and then
 * serves), and waits for SIGINT/SIGTERM. Exit codes: 0 after a signal, 1 when HTTP cannot start,
 * 2 for a bad configuration or a model that cannot be loaded (the supervisor does not restart
 * those), 75 after a pipeline fault (every request answered 503 first, then _exit: the
 * supervisor restarts the job; docs/faults.md). */
#include "chat.h"
#include "config.h"
#include "engine_local.h"
#include "engine_pipe.h"
#include "exitcodes.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "oneshot.h"
#include "quant.h"
#include "scheduler.h"
#include "version.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* After a fault, rank 0 stays until every answer is out (at most FAULT_FLUSH_NS) and at least
 * FAULT_LINGER_NS, answering 503 to everything meanwhile, so /health shows the fault. */
#define FAULT_FLUSH_NS  1000000000ull
#define FAULT_LINGER_NS 500000000ull

/* Tell the supervisor (BATON_REPORT_FD, from rank 0's wrapper) that the job is up: MPI came up
 * on every host (MPI_Init returns on rank 0 only then). Before that, `baton serve` bounds the
 * start with --launch-timeout. */
static void report_up(void)
{
    const char *fd = getenv("BATON_REPORT_FD");
    if (!fd || !*fd) return;
    static const char line[] = "up 1\n";
    ssize_t w = write(atoi(fd), line, sizeof(line) - 1);
    (void)w;
}

int main(int argc, char **argv)
{
    const uint64_t t_start = bt_now_ns();
    struct cfg c;
    char err[1024];
    static struct metrics m;
    struct sched *s = NULL;
    struct http *h = NULL;
    struct engine eng;
    int status = 1;
    sigset_t sigs;

    /* `baton run` starts rank 0 as `baton-server --oneshot ...` (oneshot.h) */
    bool oneshot = false;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--oneshot")) {
            oneshot = true;
            memmove(&argv[i], &argv[i + 1], sizeof(*argv) * (size_t)(argc - i));
            argc--;
            break;
        }
    /* a bad option ends the job: under a pipeline the ranks are told first (engine_pipe.h) */
    if (cfg_load(&c, argc, argv, environ, err, sizeof(err)) < 0) {
        fprintf(stderr, "baton-server: %s\n", err);
        cfg_free(&c);
        return eng_pipe_early_exit(2);
    }
    if (c.help || c.version || c.print_example) {
        if (c.help)
            cfg_write_help(
                stdout,
                "usage: baton-server -m MODEL.gguf [options]\n\nOpenAI-compatible HTTP server for "
                "GGUF models: rank 0 of a pipeline, or the whole\nmodel in one process.",
                CFG_ALL_GROUPS & ~(1u << CFG_G_LAUNCH));
        else if (c.version)
            printf("baton-server %s (%s)\n", BATON_VERSION, BATON_BUILD_ID);
        else
            cfg_write_example(stdout);
        cfg_free(&c);
        return 0;
    }
    if (!c.stage.model || !*c.stage.model) {
        fprintf(stderr, "baton-server: option model: required (-m FILE, BATON_MODEL or `model =` "
                        "in the config file)\n");
        cfg_free(&c);
        return eng_pipe_early_exit(2);
    }
    if (c.stage.log_level != CFG_LOG_UNSET) bt_log_set_level(c.stage.log_level);
    if (oneshot) {
        status = oneshot_main(&c, &argc, &argv);
        cfg_free(&c);
        return status;
    }

    /* signals are taken by sigtimedwait below; every thread started from here inherits the mask */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char alias[256];
    if (c.server.model_alias && *c.server.model_alias)
        snprintf(alias, sizeof(alias), "%s", c.server.model_alias);
    else {
        const char *b = strrchr(c.stage.model, '/');
        snprintf(alias, sizeof(alias), "%s", b ? b + 1 : c.stage.model);
    }

    metrics_init(&m);
    /* under mpiexec with more ranks, the pipeline engine (MPI comes up here) */
    void *pipe = NULL;
    struct eng_pipe_config pc = {.split = c.stage.split,
                                 .init_timeout_s = (int)c.stage.init_timeout,
                                 .heartbeat_ns =
                                     (uint64_t)c.stage.heartbeat_interval_ms * 1000000ull,
                                 .heartbeat_misses = (int)c.stage.heartbeat_misses,
                                 .step_timeout_ns = (uint64_t)c.stage.step_timeout_ms * 1000000ull};
    if (eng_pipe_wanted()) {
        if (eng_pipe_new(&eng, &argc, &argv, &pc, err, sizeof(err)) < 0) {
            bt_error("%s", err);
            goto out;
        }
        pipe = eng.self;
    } else if (eng_local_new(&eng) < 0) {
        bt_error("out of memory");
        goto out;
    }
    report_up();
    struct sched_config sc = {
        .model_path = c.stage.model,
        .chat_template =
            c.server.chat_template && *c.server.chat_template ? c.server.chat_template : NULL,
        .n_ctx = (int)c.stage.ctx_size,
        .n_slots = (int)c.stage.parallel,
        .queue_cap = (int)c.server.queue,
        .prefill_chunk = (int)c.stage.prefill_chunk,
        .n_threads = (int)c.stage.threads,
        .device = c.stage.device,
        .kv_type = c.stage.cache_type == CFG_CACHE_F32 ? BT_F32 : BT_F16,
        .request_timeout_s = (int)c.server.request_timeout,
        .test_step_delay_ms = (int)c.server.test_step_delay_ms,
        .test_load_delay_ms =
            c.stage.test_load_delay_rank <= 0 ? (int)c.stage.test_load_delay_ms : 0,
        .t_start_ns = t_start};
    if (sched_create(&sc, eng, &m, &s, err, sizeof(err)) < 0) {
        bt_error("%s", err);
        goto out;
    }
    struct http_config hc = {.host = c.server.host,
                             .port = (int)c.server.port,
                             .listen_fd = (int)c.server.listen_fd,
                             .n_threads = (int)c.server.http_threads,
                             .max_body = (size_t)c.server.max_body,
                             .api_key = c.server.api_key,
                             .model_name = alias};
    if (http_start(&hc, s, &m, &h, err, sizeof(err)) < 0) {
        bt_error("%s", err);
        goto out;
    }
    if (c.server.listen_fd >= 0)
        bt_info("listening on fd %d (port %d)", (int)c.server.listen_fd, http_port(h));
    else
        bt_info("listening on http://%s:%d", c.server.host, http_port(h));
    if (sched_start(s) < 0) {
        bt_error("cannot start the scheduler thread");
        goto out;
    }

    /* SIGTERM/SIGINT: new requests get 503 while the running and queued ones may finish for
     * --drain-timeout; a second signal, or the end of the drain, shuts down */
    bool draining = false;
    uint64_t drain_until = 0, last_alive = 0;
    const char *report = getenv("BATON_REPORT_FD");
    const int report_fd = report && *report ? atoi(report) : -1;
    if (report_fd >= 0) fcntl(report_fd, F_SETFL, fcntl(report_fd, F_GETFL) | O_NONBLOCK);
    /* a scheduler that has not gone round for this long is stuck (a step is bounded by
     * --step-timeout): then the supervisor hears nothing and ends the job */
    const uint64_t stuck_ns = 2 * (uint64_t)c.stage.step_timeout_ms * 1000000ull + 5000000000ull;
    for (;;) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 100000000L};
        int sig = sigtimedwait(&sigs, NULL, &ts);
        const uint64_t now = bt_now_ns(), loop = sched_loop_ns(s);
        if (report_fd >= 0 && now - last_alive >= 500000000ull &&
            (loop == 0 || now - loop < stuck_ns)) {
            /* a sign of life for the supervisor of `baton serve` (launcher.c) */
            ssize_t w = write(report_fd, "alive\n", 6);
            (void)w;
            last_alive = now;
        }
        if ((sig == SIGINT || sig == SIGTERM) && !draining && c.server.drain_timeout_ms > 0 &&
            sched_state(s) == SCHED_READY) {
            draining = true;
            drain_until = bt_now_ns() + (uint64_t)c.server.drain_timeout_ms * 1000000ull;
            sched_drain(s);
            bt_info("signal %d: draining: requests in progress may finish within %.3g s (a "
                    "second signal stops at once)",
                    sig, (double)c.server.drain_timeout_ms * 1e-3);
        } else if (sig == SIGINT || sig == SIGTERM) {
            bt_info("signal %d: shutting down", sig);
            status = 0;
            break;
        }
        if (draining && sched_state(s) != SCHED_FAULTED) {
            struct sched_stats st;
            sched_stats(s, &st);
            if (!st.slots_busy && !st.queue_depth && !http_pending(h)) {
                bt_info("drained: every request finished; shutting down");
                status = 0;
                break;
            }
            if (bt_now_ns() >= drain_until) {
                bt_warn("--drain-timeout passed with %d request(s) running and %d queued: they "
                        "get 503; shutting down",
                        st.slots_busy, st.queue_depth);
                status = 0;
                break;
            }
        }
        if (sched_state(s) == SCHED_FAULTED) {
            /* every request has been answered 503 by the scheduler: let the answers go out
             * (bounded), then leave for a restart without MPI_Finalize or any other teardown
             * that could wait on a dead rank (docs/faults.md) */
            const uint64_t t_fault = bt_now_ns(), until = t_fault + FAULT_FLUSH_NS;
            while ((http_pending(h) > 0 || bt_now_ns() < t_fault + FAULT_LINGER_NS) &&
                   bt_now_ns() < until) {
                struct timespec w = {.tv_sec = 0, .tv_nsec = 5000000L};
                nanosleep(&w, NULL);
            }
            int left = http_pending(h);
            if (left)
                bt_error("pipeline fault: %d answer(s) still unsent after %.1f s; exiting with "
                         "code %d for a restart",
                         left, (double)FAULT_FLUSH_NS * 1e-9, BT_EXIT_RESTART);
            else
                bt_error("pipeline fault: every request answered; exiting with code %d for a "
                         "restart",
                         BT_EXIT_RESTART);
            fflush(NULL);
            _exit(BT_EXIT_RESTART);
        }
        if (sched_state(s) == SCHED_FAILED) {
            bt_error("the model could not be loaded; exiting");
            /* a configuration error: the supervisor does not restart it */
            status = pipe ? eng_pipe_exit_code(pipe) : 2;
            break;
        }
    }
out:
    /* answer every request first (this resumes their connections), then stop HTTP */
    sched_stop(s);
    http_stop(h);
    sched_free(s);
    cfg_free(&c);
    return status;
}
