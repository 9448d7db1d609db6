/* baton-server: rank 0's process. Reads the configuration, starts HTTP at once (it answers 503
 * "loading" while the model loads), starts the scheduler thread (which loads the model and then
 * serves), and waits for SIGINT/SIGTERM. Exit codes: 0 after a signal, 1 when HTTP cannot start,
 * 2 for a bad configuration or a model that cannot be loaded (the supervisor does not restart
 * those). */
#include "chat.h"
#include "config.h"
#include "engine_local.h"
#include "engine_pipe.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "oneshot.h"
#include "scheduler.h"
#include "version.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

extern char **environ;

static int parse_level(const char *s)
{
    if (!strcasecmp(s, "info")) return BT_LOG_INFO;
    if (!strcasecmp(s, "debug")) return BT_LOG_DEBUG;
    if (!strcasecmp(s, "warn")) return BT_LOG_WARN;
    return BT_LOG_ERROR;
}

int main(int argc, char **argv)
{
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
            cfg_write_help(stdout, argv[0]);
        else if (c.version)
            printf("baton-server %s (%s)\n", BATON_VERSION, BATON_BUILD_ID);
        else
            cfg_write_example(stdout);
        cfg_free(&c);
        return 0;
    }
    if (!c.model || !*c.model) {
        fprintf(stderr, "baton-server: option model: required (-m FILE, BATON_MODEL or `model =` "
                        "in the config file)\n");
        cfg_free(&c);
        return eng_pipe_early_exit(2);
    }
    if (c.chat_template && *c.chat_template) {
        int fam;
        bool fb;
        if (chat_select(c.chat_template, NULL, &fam, &fb, err, sizeof(err)) < 0) {
            fprintf(stderr, "baton-server: option chat-template: %s (known: %s)\n", err,
                    chat_family_names());
            cfg_free(&c);
            return eng_pipe_early_exit(2);
        }
    }
    if (c.log_level) bt_log_set_level(parse_level(c.log_level));
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
    if (c.model_alias && *c.model_alias)
        snprintf(alias, sizeof(alias), "%s", c.model_alias);
    else {
        const char *b = strrchr(c.model, '/');
        snprintf(alias, sizeof(alias), "%s", b ? b + 1 : c.model);
    }

    metrics_init(&m);
    /* under mpiexec with more ranks, the pipeline engine (MPI comes up here) */
    void *pipe = NULL;
    struct eng_pipe_config pc = {.split = c.split, .init_timeout_s = (int)c.init_timeout};
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
    struct sched_config sc = {.model_path = c.model,
                              .chat_template =
                                  c.chat_template && *c.chat_template ? c.chat_template : NULL,
                              .n_ctx = (int)c.ctx_size,
                              .n_slots = (int)c.parallel,
                              .queue_cap = (int)c.queue,
                              .prefill_chunk = (int)c.prefill_chunk,
                              .n_threads = (int)c.threads,
                              .request_timeout_s = (int)c.request_timeout,
                              .test_step_delay_ms = (int)c.test_step_delay_ms,
                              .test_load_delay_ms = (int)c.test_load_delay_ms};
    if (sched_create(&sc, eng, &m, &s, err, sizeof(err)) < 0) {
        bt_error("%s", err);
        goto out;
    }
    struct http_config hc = {.host = c.host,
                             .port = (int)c.port,
                             .listen_fd = (int)c.listen_fd,
                             .n_threads = (int)c.http_threads,
                             .max_body = (size_t)c.max_body,
                             .api_key = c.api_key,
                             .model_name = alias};
    if (http_start(&hc, s, &m, &h, err, sizeof(err)) < 0) {
        bt_error("%s", err);
        goto out;
    }
    if (c.listen_fd >= 0)
        bt_info("listening on fd %d (port %d)", (int)c.listen_fd, http_port(h));
    else
        bt_info("listening on http://%s:%d", c.host, http_port(h));
    if (sched_start(s) < 0) {
        bt_error("cannot start the scheduler thread");
        goto out;
    }

    for (;;) {
        struct timespec ts = {.tv_sec = 1, .tv_nsec = 0};
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            bt_info("signal %d: shutting down", sig);
            status = 0;
            break;
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
