/* baton: the launcher. `baton run` and `baton serve` build an MPMD mpiexec (MPICH hydra) command
 * line with rank 0 = baton-server and ranks 1..R-1 = baton-rankd (mpicmd.h), and run it.
 *
 *   baton run   -m MODEL -p PROMPT -n N --ranks R [...]   one prompt through an R-rank pipeline
 *   baton serve -m MODEL --ranks R [--host A] [--port P]  the HTTP service
 *   common: --hosts h1,h2,... | --hostfile F, --split 8,7,7, --dry-run (print the command line)
 *
 * Options the launcher does not know are passed to every rank unchanged, so baton-server and
 * baton-rankd own their configuration (config/config.h); the launcher checks them first with the
 * same table, so a bad option is reported once and nothing is started.
 *
 * `serve` is also the supervisor (DESIGN §5.4): it opens the listening socket itself and hands it
 * to rank 0 (--listen-fd), so connections wait in the backlog while a job restarts; rank 0 and
 * its wrapper report over a pipe (wrap.h); the state machine of supervise.h decides when the
 * job is killed (procs.h) and restarted, and what its exit code means. `run` is supervised the
 * same way without restarts. Each rank is started through `baton --wrap` (wrap.h).
 *
 * This file: the options, the listening socket, the signals and the loop that feeds the state
 * machine its events. Single-threaded; only main() exits. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "exitcodes.h"
#include "log.h"
#include "mpicmd.h"
#include "procs.h"
#include "supervise.h"
#include "wrap.h"

#define POLL_MS 200 /* the loop wakes at least this often (mpiexec's end is found by polling) */

static void usage(FILE *f)
{
    cfg_write_help(
        f,
        "usage: baton run   -m MODEL -p PROMPT -n N [--ranks R] [options]\n"
        "       baton serve -m MODEL [--ranks R] [--host ADDR] [--port P] [options]\n"
        "\n"
        "Runs an R-rank pipeline with MPICH's mpiexec: rank 0 is baton-server (HTTP,\n"
        "scheduler, first stage), ranks 1..R-1 are baton-rankd (later stages). Every\n"
        "option but the launch group's is passed to each rank; all of them: `baton-server\n"
        "--help`. Env: BATON_MPIEXEC overrides the mpiexec program.",
        1u << CFG_G_LAUNCH);
}

/* ---- options ----------------------------------------------------------------------------------
 */

/* argv[1] is the mode; the rest are options of the one table (config.h), checked here into c
 * (which the caller frees with cfg_free, also after a failure). The launch group is the
 * launcher's own; everything else goes to pass, for every rank (borrowed from argv). */
static int parse_args(int argc, char **argv, bool *serve, struct mpicmd_argv *pass, struct cfg *c,
                      char *err, size_t errsz)
{
    extern char **environ;
    struct mpicmd_argv a = {.n = 0};
    memset(c, 0, sizeof(*c));
    pass->n = 0;
    if (argc < 2) return bt_errf(err, errsz, BT_EINVAL, "missing mode: run or serve");
    if (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "serve") != 0)
        return bt_errf(err, errsz, BT_EINVAL, "unknown mode '%s' (expected run or serve)", argv[1]);
    *serve = !strcmp(argv[1], "serve");
    mpicmd_push(&a, "baton");
    for (int i = 2; i < argc; i++)
        if (mpicmd_push(&a, argv[i]) != BT_OK)
            return bt_errf(err, errsz, BT_EINVAL, "too many arguments");
    int rc = cfg_load(c, a.n, a.v, environ, err, errsz);
    if (rc < 0) return rc;
    for (int i = 2, n; i < argc; i += n) {
        const struct cfg_opt *opt = cfg_flag_at(argc, argv, i, &n);
        for (int k = 0; k < n && !(opt && opt->group == CFG_G_LAUNCH); k++)
            if (mpicmd_push(pass, argv[i + k]) != BT_OK)
                return bt_errf(err, errsz, BT_EINVAL, "too many arguments");
    }
    if (c->launch.hosts && c->launch.hostfile)
        return bt_errf(err, errsz, BT_EINVAL, "--hosts and --hostfile are exclusive");
    return BT_OK;
}

/* The supervisor's times from the option table. */
static struct sup_config sup_config_of(const struct cfg *c, bool serve)
{
    struct sup_config sc = {
        .once = !serve,
        .drain_timeout = (double)c->server.drain_timeout_ms / 1000.0,
        .launch_timeout = (double)c->launch.launch_timeout_ms / 1000.0,
        /* the ranks' own rule for a silent rank 0 (interval x misses x 2), at least 3 s */
        .rank0_silence =
            (double)c->stage.heartbeat_interval_ms * 1e-3 * (double)c->stage.heartbeat_misses * 2,
    };
    if (sc.rank0_silence < 3) sc.rank0_silence = 3;
    return sc;
}

/* ---- the command line -------------------------------------------------------------------------
 */

struct programs {
    char self[PATH_MAX + 16]; /* this program */
    char server[PATH_MAX + 16];
    char rankd[PATH_MAX + 16];
};

/* Path of a sibling binary in dir, or the bare name (found through PATH) if there is none. */
static void sibling(char *out, size_t cap, const char *dir, const char *name)
{
    struct stat st;
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap || stat(out, &st) != 0 || !S_ISREG(st.st_mode) ||
        access(out, X_OK) != 0)
        snprintf(out, cap, "%s", name);
}

/* This executable and the rank binaries beside it. */
static int find_programs(struct programs *p, char *err, size_t errsz)
{
    char dir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", dir, sizeof(dir));
    if (n <= 0 || (size_t)n >= sizeof(dir))
        return bt_errf(err, errsz, BT_EIO, "cannot find my own executable in /proc/self/exe");
    dir[n] = '\0';
    char *slash = strrchr(dir, '/');
    if (!slash) return bt_errf(err, errsz, BT_EIO, "/proc/self/exe is not a path: %s", dir);
    *slash = '\0';
    snprintf(p->self, sizeof(p->self), "%s/baton", dir);
    sibling(p->server, sizeof(p->server), dir, "baton-server");
    sibling(p->rankd, sizeof(p->rankd), dir, "baton-rankd");
    return BT_OK;
}

static int build_cmd(struct mpicmd *cmd, const struct programs *p, const struct cfg *c, bool serve,
                     const struct mpicmd_argv *pass, char *err, size_t errsz)
{
    const char *mpiexec = getenv("BATON_MPIEXEC");
    struct mpicmd_spec spec = {
        .mpiexec = mpiexec && *mpiexec ? mpiexec : "mpiexec",
        .serve = serve,
        .hosts = c->launch.hosts,
        .hostfile = c->launch.hostfile,
        .ranks = (int)c->launch.ranks,
        .self = p->self,
        .server = p->server,
        .rankd = p->rankd,
        .pass = pass,
    };
    if (mpicmd_build(cmd, &spec) != BT_OK)
        return bt_errf(err, errsz, BT_EFULL, "command line too long");
    return BT_OK;
}

/* ---- the listening socket ---------------------------------------------------------------------
 */

/* A TCP socket listening on host:port, inheritable (no CLOEXEC) so rank 0 gets it. */
static int open_listener(const char *host, int port, int *out, char *err, size_t errsz)
{
    struct addrinfo hints = {0}, *res = NULL;
    char portstr[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0)
        return bt_errf(err, errsz, BT_EINVAL, "cannot resolve --host '%s': %s", host,
                       gai_strerror(gai));
    int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 512) < 0) {
        int e = errno;
        freeaddrinfo(res);
        if (fd >= 0) close(fd);
        return bt_errf(err, errsz, BT_EIO, "cannot listen on %s:%d: %s", host, port, strerror(e));
    }
    freeaddrinfo(res);
    *out = fd;
    return BT_OK;
}

/* The socket's port (port 0 asks for any free one). */
static int bound_port(int fd, int fallback)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) return fallback;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

/* ---- pipes and signals ------------------------------------------------------------------------
 */

static int sig_pipe[2] = {-1, -1}; /* SIGTERM/SIGINT -> the loop (self-pipe) */

static void on_signal(int sig)
{
    unsigned char b = (unsigned char)sig;
    int saved = errno;
    ssize_t w = write(sig_pipe[1], &b, 1);
    (void)w; /* a full pipe already holds a signal */
    errno = saved;
}

static int set_flags(int fd, int fd_flags, int fl_flags)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFD, fd_flags) < 0 || fcntl(fd, F_SETFL, fl | fl_flags) < 0)
        return BT_EIO;
    return BT_OK;
}

/* The report pipe (its write end in BATON_SUPERVISOR_FD, inherited by the job; wrap.h), the
 * self-pipe, and SIGTERM/SIGINT into it. *report_rd: the read end, nonblocking. */
static int setup_pipes(int *report_rd, char *err, size_t errsz)
{
    int rep[2];
    char num[16];
    if (pipe(rep) < 0 || pipe(sig_pipe) < 0)
        return bt_errf(err, errsz, BT_EIO, "pipe: %s", strerror(errno));
    if (set_flags(rep[0], FD_CLOEXEC, O_NONBLOCK) < 0 ||
        set_flags(sig_pipe[0], FD_CLOEXEC, O_NONBLOCK) < 0 ||
        set_flags(sig_pipe[1], FD_CLOEXEC, O_NONBLOCK) < 0)
        return bt_errf(err, errsz, BT_EIO, "fcntl: %s", strerror(errno));
    snprintf(num, sizeof(num), "%d", rep[1]);
    if (setenv("BATON_SUPERVISOR_FD", num, 1) < 0)
        return bt_errf(err, errsz, BT_EIO, "setenv: %s", strerror(errno));
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0 ||
        signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        return bt_errf(err, errsz, BT_EIO, "sigaction: %s", strerror(errno));
    *report_rd = rep[0];
    return BT_OK;
}

/* ---- the supervisor loop ----------------------------------------------------------------------
 */

/* Carry out what the state machine asked for (supervise.h: TERM, KILL, START). */
static void act(struct sup *s, int acts, char **cmd)
{
    if ((acts & SUP_ACT_TERM) && s->job.rank0 > 0) kill(s->job.rank0, SIGTERM);
    if (acts & SUP_ACT_KILL) proc_kill_tree(s->job.pid);
    if (acts & SUP_ACT_START) {
        char err[256];
        pid_t pid;
        if (proc_spawn(cmd, &pid, err, sizeof(err)) < 0)
            sup_on_start_failed(s, err);
        else
            sup_on_started(s, pid, bt_now_s());
    }
}

/* Everything in the report pipe now (it is nonblocking). */
static void read_reports(struct sup *s, int fd, char **cmd)
{
    char buf[256];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        act(s, sup_on_report(s, buf, (size_t)n, bt_now_s()), cmd);
}

static void read_signals(struct sup *s, char **cmd)
{
    unsigned char sigs[32];
    ssize_t n = read(sig_pipe[0], sigs, sizeof(sigs));
    for (ssize_t i = 0; i < n; i++) act(s, sup_on_signal(s, sigs[i], bt_now_s()), cmd);
}

/* mpiexec ended? Then the rest of its reports, then the verdict. */
static void check_reaped(struct sup *s, int report_rd, char **cmd)
{
    char err[128];
    int code, r = proc_reap(s->job.pid, &code, err, sizeof(err));
    if (r == 0) return;
    if (r < 0) { /* not our child any more: it is gone, its status unknown */
        bt_error("supervisor: %s", err);
        code = BT_EXIT_FAIL;
    }
    read_reports(s, report_rd, cmd);
    act(s, sup_on_reaped(s, code, bt_now_s()), cmd);
}

/* Wait for a signal, a report or the next deadline (at most POLL_MS). */
static void wait_event(const struct sup *s, int report_rd)
{
    struct pollfd pf[2] = {{sig_pipe[0], POLLIN, 0}, {report_rd, POLLIN, 0}};
    double left = sup_deadline(s) - bt_now_s();
    int ms = left >= POLL_MS / 1000.0 ? POLL_MS : left <= 0 ? 0 : (int)ceil(left * 1000.0);
    if (poll(pf, 2, ms) < 0 && errno != EINTR) {
        bt_warn("supervisor: poll: %s", strerror(errno));
        poll(NULL, 0, POLL_MS);
    }
}

/* Run the job until the state machine is DONE; its exit code. */
static int supervise(char **cmd, int report_rd, const struct sup_config *sc)
{
    struct sup s;
    sup_init(&s, sc);
    act(&s, sup_on_tick(&s, bt_now_s()), cmd);
    while (s.state != SUP_DONE) {
        wait_event(&s, report_rd);
        read_signals(&s, cmd);
        read_reports(&s, report_rd, cmd);
        if (sup_has_job(&s)) check_reaped(&s, report_rd, cmd);
        act(&s, sup_on_tick(&s, bt_now_s()), cmd);
    }
    return s.exit_code;
}

/* ---- main -------------------------------------------------------------------------------------
 */

/* Open the socket (or take the one we were given) and supervise the job until the end. */
static int serve(struct mpicmd *cmd, int report_rd, const struct cfg *c, int listen_fd)
{
    mpicmd_set_listen_fd(cmd, listen_fd);
    bt_info("supervisor: serving on %s:%d with %d rank%s", c->server.host,
            bound_port(listen_fd, (int)c->server.port), (int)c->launch.ranks,
            c->launch.ranks > 1 ? "s" : "");
    struct sup_config sc = sup_config_of(c, true);
    return supervise(cmd->argv.v, report_rd, &sc);
}

static int launch(const struct cfg *c, bool is_serve, const struct mpicmd_argv *pass)
{
    static struct mpicmd cmd; /* large; points into itself */
    struct programs progs;
    char err[512];
    int listen_fd = -1, report_rd = -1;
    if (find_programs(&progs, err, sizeof(err)) < 0) {
        fprintf(stderr, "baton: %s\n", err);
        return BT_EXIT_FAIL;
    }
    if (build_cmd(&cmd, &progs, c, is_serve, pass, err, sizeof(err)) < 0) {
        fprintf(stderr, "baton: %s\n", err);
        return BT_EXIT_CONFIG;
    }
    if (c->launch.dry_run) {
        mpicmd_print(&cmd, stdout);
        return BT_EXIT_OK;
    }
    if (is_serve && c->server.listen_fd >= 0) {
        listen_fd = (int)c->server.listen_fd; /* we were handed one ourselves */
    } else if (is_serve && open_listener(c->server.host, (int)c->server.port, &listen_fd, err,
                                         sizeof(err)) < 0) {
        fprintf(stderr, "baton: %s\n", err);
        return BT_EXIT_CONFIG;
    }
    if (setup_pipes(&report_rd, err, sizeof(err)) < 0) {
        fprintf(stderr, "baton: %s\n", err);
        return BT_EXIT_FAIL;
    }
    if (is_serve) return serve(&cmd, report_rd, c, listen_fd);
    struct sup_config sc = sup_config_of(c, false);
    return supervise(cmd.argv.v, report_rd, &sc);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "--wrap")) return wrap_main(argc - 2, argv + 2);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    bt_log_set_tag("launcher");
    static struct mpicmd_argv pass;
    struct cfg c;
    char err[512];
    bool is_serve = false;
    int rc;
    if (parse_args(argc, argv, &is_serve, &pass, &c, err, sizeof(err)) < 0) {
        fprintf(stderr, "baton: %s\n", err);
        usage(stderr);
        rc = BT_EXIT_CONFIG;
    } else if (c.help) {
        usage(stdout);
        rc = 0;
    } else if (is_serve && (!c.stage.model || !*c.stage.model)) {
        fputs("baton: serve needs a model (-m FILE.gguf or BATON_MODEL)\n", stderr);
        rc = BT_EXIT_CONFIG;
    } else {
        rc = launch(&c, is_serve, &pass); /* c outlives the job: the command line points into it */
    }
    cfg_free(&c);
    return rc;
}
