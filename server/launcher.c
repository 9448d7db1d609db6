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
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "exitcodes.h"
#include "hosts.h"
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

/* The hosts of --hosts or --hostfile and --spare-hosts, checked against --ranks and
 * --min-hosts; l->n == 0 without --hosts and --hostfile (everything on this machine). */
static int load_hosts(const struct cfg *c, struct hosts_list *l, char *err, size_t errsz)
{
    const struct cfg_launch *lc = &c->launch;
    int rc, counts[HOSTS_MAX];
    l->n = 0;
    if (lc->hosts && *lc->hosts)
        rc = hosts_parse_list(l, lc->hosts, false, "option hosts", err, errsz);
    else if (lc->hostfile && *lc->hostfile)
        rc = hosts_read_file(l, lc->hostfile, err, errsz);
    else if (lc->spare_hosts && *lc->spare_hosts)
        return bt_errf(err, errsz, BT_EINVAL,
                       "option spare-hosts: needs --hosts or --hostfile (the hosts the spares "
                       "stand in for)");
    else
        return BT_OK;
    if (rc < 0) return rc;
    if (lc->spare_hosts && *lc->spare_hosts &&
        (rc = hosts_parse_list(l, lc->spare_hosts, true, "option spare-hosts", err, errsz)) < 0)
        return rc;
    if ((rc = hosts_check(l, err, errsz)) < 0) return rc;
    int used = hosts_layout(l, (int)lc->ranks, counts);
    for (int i = 0; i < l->n; i++)
        if (!l->e[i].spare && counts[i] == 0)
            bt_warn("host %s gets no rank (--ranks %d): it is not used (a spare belongs in "
                    "--spare-hosts)",
                    l->e[i].name, (int)lc->ranks);
    if (lc->min_hosts > used)
        return bt_errf(err, errsz, BT_EINVAL,
                       "option min-hosts: %d is more than the %d host%s that get a rank (--ranks "
                       "%d over %s)",
                       (int)lc->min_hosts, used, used == 1 ? "" : "s", (int)lc->ranks,
                       lc->hosts ? lc->hosts : lc->hostfile);
    return BT_OK;
}

/* The supervisor's times and hosts from the option table. A probe of a host is a tiny launch:
 * it may take half --launch-timeout, at least 1 s, at most 10 s. */
static struct sup_config sup_config_of(const struct cfg *c, bool serve, const struct hosts_list *l)
{
    double launch = (double)c->launch.launch_timeout_ms / 1000.0;
    struct sup_config sc = {
        .once = !serve,
        .drain_timeout = (double)c->server.drain_timeout_ms / 1000.0,
        .launch_timeout = launch,
        .hosts = l,
        .ranks = (int)c->launch.ranks,
        .evict_after = (int)c->launch.evict_after,
        .min_hosts = (int)c->launch.min_hosts,
        .readmit_interval = (double)c->launch.readmit_interval_ms / 1000.0,
        .probe_timeout = fmin(fmax(launch / 2, 1.0), 10.0),
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

/* What the supervisor carries out: the job's command line (rebuilt from the plan at every start),
 * the listening socket, and the helpers (probes, --on-evict commands) running now. */
struct helper {
    pid_t pid;
    int host;       /* its host (sup.hosts) */
    bool probe;     /* else --on-evict */
    double started; /* bt_now_s() */
};

#define HELPERS_MAX  (2 * HOSTS_MAX)
#define HOOK_TIMEOUT 60.0 /* s an --on-evict command may run */

struct launch {
    struct mpicmd cmd; /* points into itself, spec's strings, hosts and tail */
    struct mpicmd_spec spec;
    int ranks;     /* --ranks */
    int listen_fd; /* serve: handed to rank 0; -1 */
    bool serve;
    const char *on_evict;
    char hosts[HOSTS_MAX * (HOSTS_NAME_MAX + 8)];
    const char *tail[2];
    char fleet[HOSTS_MAX * HOSTS_NAME_MAX * 2 + 2048];
    struct helper helpers[HELPERS_MAX];
    int n_helpers;
};

static struct launch L; /* large; the supervisor is single-threaded */

static void spec_init(struct launch *l, const struct programs *p, const struct cfg *c, bool serve,
                      const struct mpicmd_argv *pass)
{
    const char *mpiexec = getenv("BATON_MPIEXEC");
    l->spec = (struct mpicmd_spec){
        .mpiexec = mpiexec && *mpiexec ? mpiexec : "mpiexec",
        .serve = serve,
        .ranks = (int)c->launch.ranks,
        .self = p->self,
        .server = p->server,
        .rankd = p->rankd,
        .pass = pass,
    };
    l->ranks = (int)c->launch.ranks;
    l->serve = serve;
    l->listen_fd = -1;
    l->on_evict = c->launch.on_evict && *c->launch.on_evict ? c->launch.on_evict : NULL;
}

/* The command line of the job SUP_ACT_START starts: with hosts, the plan's (NAME:RANKS each,
 * its rank count, `--split=` for a re-split: even by bytes over the hosts left). */
static int build_cmd(struct launch *l, const struct sup *s, char *err, size_t errsz)
{
    l->spec.hosts = NULL;
    l->spec.hostfile = NULL;
    l->spec.tail = NULL;
    l->spec.ranks = l->ranks;
    if (s->n_hosts > 0) {
        if (sup_plan_hosts(s, &s->next, l->hosts, sizeof(l->hosts)) < 0)
            return bt_errf(err, errsz, BT_EFULL, "the host list is too long");
        l->spec.hosts = l->hosts;
        l->spec.ranks = s->next.total;
        if (s->next.resplit) {
            l->tail[0] = "--split=";
            l->tail[1] = NULL;
            l->spec.tail = l->tail;
        }
    }
    if (mpicmd_build(&l->cmd, &l->spec) != BT_OK)
        return bt_errf(err, errsz, BT_EFULL, "command line too long");
    if (l->listen_fd >= 0) mpicmd_set_listen_fd(&l->cmd, l->listen_fd);
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

/* ---- helpers: probes and --on-evict ----------------------------------------------------------
 */

static void act(struct sup *s, int acts);

static void helper_add(pid_t pid, int host, bool probe)
{
    if (L.n_helpers >= HELPERS_MAX) { /* cannot happen: one probe per host, one hook per host */
        proc_kill_tree(pid);
        return;
    }
    L.helpers[L.n_helpers++] = (struct helper){pid, host, probe, bt_now_s()};
}

/* Start a probe of every host the state machine wants probed: `mpiexec -hosts NAME -n 1
 * baton-rankd --version` through the job's launcher, output dropped: hydra's proxy must start
 * there and connect back, as for the job, and baton-rankd must run there. */
static void start_probes(struct sup *s)
{
    int i;
    while ((i = sup_probe_take(s)) >= 0) {
        char *argv[] = {(char *)L.spec.mpiexec,
                        "-hosts",
                        s->hosts[i].name,
                        "-n",
                        "1",
                        (char *)L.spec.rankd,
                        "--version",
                        NULL};
        char err[256];
        pid_t pid;
        bt_debug("supervisor: probing host %s", s->hosts[i].name);
        if (proc_spawn_helper(argv, NULL, true, &pid, err, sizeof(err)) < 0) {
            bt_warn("supervisor: cannot probe host %s: fork: %s", s->hosts[i].name, err);
            act(s, sup_on_probe(s, i, false, bt_now_s()));
            continue;
        }
        helper_add(pid, i, true);
    }
}

/* --on-evict for every host the state machine evicted. */
static void run_alerts(struct sup *s)
{
    int i;
    while ((i = sup_alert_take(s)) >= 0) {
        if (!L.on_evict) continue;
        static char e_host[32 + HOSTS_NAME_MAX], e_why[256], e_in[sizeof(L.hosts) + 32],
            e_spares[64];
        int spares = 0;
        size_t at = 0;
        struct sup_plan p;
        sup_preview_plan(s, &p); /* what the next start runs */
        for (int j = 0; j < s->n_hosts; j++) {
            bool used = false;
            for (int k = 0; k < p.n; k++) used |= p.host[k] == j;
            spares += s->hosts[j].spare && s->hosts[j].state == SUP_H_STANDBY && !used;
        }
        snprintf(e_host, sizeof(e_host), "BATON_EVICTED_HOST=%s", s->hosts[i].name);
        snprintf(e_why, sizeof(e_why), "BATON_EVICT_REASON=%s", s->hosts[i].why);
        snprintf(e_spares, sizeof(e_spares), "BATON_SPARES_LEFT=%d", spares);
        at = (size_t)snprintf(e_in, sizeof(e_in), "BATON_HOSTS_IN_SERVICE=");
        for (int k = 0; k < p.n && at + HOSTS_NAME_MAX + 2 < sizeof(e_in); k++)
            at += (size_t)snprintf(e_in + at, sizeof(e_in) - at, "%s%s", k ? "," : "",
                                   s->hosts[p.host[k]].name);
        char *env[] = {e_host, e_why, e_in, e_spares, NULL};
        char *argv[] = {"/bin/sh", "-c", (char *)L.on_evict, NULL};
        char err[256];
        pid_t pid;
        if (proc_spawn_helper(argv, env, false, &pid, err, sizeof(err)) < 0) {
            bt_error("supervisor: --on-evict for host %s: fork: %s", s->hosts[i].name, err);
            continue;
        }
        bt_info("supervisor: --on-evict runs for host %s (pid %d)", s->hosts[i].name, (int)pid);
        helper_add(pid, i, false);
    }
}

/* Reap the helpers that ended; kill those past their time (a probe past probe_timeout is a
 * host that does not answer). */
static void check_helpers(struct sup *s, double probe_timeout)
{
    for (int k = 0; k < L.n_helpers;) {
        struct helper *h = &L.helpers[k];
        char err[128];
        int code = 0, r = proc_reap(h->pid, &code, err, sizeof(err));
        double now = bt_now_s();
        if (r < 0) code = -1; /* not our child any more: its status unknown */
        bool over = now - h->started > (h->probe ? probe_timeout : HOOK_TIMEOUT);
        if (r == 0 && !over) {
            k++;
            continue;
        }
        if (r == 0) { /* over time: kill it, and reap it (SIGKILL ends it at once) */
            proc_kill_tree(h->pid);
            if (proc_reap(h->pid, &code, err, sizeof(err)) == 0) {
                int st;
                waitpid(h->pid, &st, 0);
            }
            code = -1;
        }
        if (h->probe) {
            bt_debug("supervisor: probe of host %s: %s", s->hosts[h->host].name,
                     code == 0  ? "answered"
                     : code < 0 ? "no answer in time"
                                : "failed");
            int host = h->host;
            L.helpers[k] = L.helpers[--L.n_helpers]; /* before act: it may start helpers */
            act(s, sup_on_probe(s, host, code == 0, now));
            continue;
        } else if (code != 0) {
            bt_warn("supervisor: --on-evict for host %s %s", s->hosts[h->host].name,
                    code < 0 ? "ran too long: killed" : "failed");
        }
        L.helpers[k] = L.helpers[--L.n_helpers];
    }
}

static void kill_helpers(void)
{
    for (int k = 0; k < L.n_helpers; k++) {
        if (L.helpers[k].probe) proc_kill_tree(L.helpers[k].pid);
        int code;
        char err[64];
        proc_reap(L.helpers[k].pid, &code, err, sizeof(err));
    }
    L.n_helpers = 0;
}

/* ---- the supervisor loop ----------------------------------------------------------------------
 */

static void start_job(struct sup *s)
{
    char err[256];
    pid_t pid;
    if (build_cmd(&L, s, err, sizeof(err)) < 0) {
        sup_on_start_failed(s, err);
        return;
    }
    if (L.serve && s->n_hosts > 0 && sup_fleet_line(s, L.fleet, sizeof(L.fleet)) == BT_OK)
        setenv("BATON_FLEET", L.fleet, 1); /* rank 0's /health and /metrics (hosts.h) */
    else
        unsetenv("BATON_FLEET");
    /* the restart rank 0 was asked for: it takes the connections waiting in the backlog only
     * once it is ready (server/main.c), so none of them gets 503 "loading" */
    if (s->planned)
        setenv("BATON_LISTEN_WHEN_READY", "1", 1);
    else
        unsetenv("BATON_LISTEN_WHEN_READY");
    if (proc_spawn(L.cmd.argv.v, &pid, err, sizeof(err)) < 0)
        sup_on_start_failed(s, err);
    else
        sup_on_started(s, pid, bt_now_s());
}

/* Carry out what the state machine asked for (supervise.h: TERM, KILL, START, PROBE, ALERT,
 * READMIT). */
static void act(struct sup *s, int acts)
{
    if ((acts & SUP_ACT_TERM) && s->job.rank0 > 0) kill(s->job.rank0, SIGTERM);
    if (acts & SUP_ACT_KILL) proc_kill_tree(s->job.pid);
    if (acts & SUP_ACT_START) start_job(s);
    if (acts & SUP_ACT_PROBE) start_probes(s);
    if (acts & SUP_ACT_ALERT) run_alerts(s);
    if ((acts & SUP_ACT_READMIT) && s->job.rank0 > 0) kill(s->job.rank0, SIGUSR2);
}

/* Everything in the report pipe now (it is nonblocking). */
static void read_reports(struct sup *s, int fd)
{
    char buf[256];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        act(s, sup_on_report(s, buf, (size_t)n, bt_now_s()));
}

static void read_signals(struct sup *s)
{
    unsigned char sigs[32];
    ssize_t n = read(sig_pipe[0], sigs, sizeof(sigs));
    for (ssize_t i = 0; i < n; i++) act(s, sup_on_signal(s, sigs[i], bt_now_s()));
}

/* mpiexec ended? Then the rest of its reports, then the verdict. */
static void check_reaped(struct sup *s, int report_rd)
{
    char err[128];
    int code, r = proc_reap(s->job.pid, &code, err, sizeof(err));
    if (r == 0) return;
    if (r < 0) { /* not our child any more: it is gone, its status unknown */
        bt_error("supervisor: %s", err);
        code = BT_EXIT_FAIL;
    }
    read_reports(s, report_rd);
    act(s, sup_on_reaped(s, code, bt_now_s()));
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
static int supervise(struct sup *s, int report_rd)
{
    act(s, sup_on_tick(s, bt_now_s()));
    while (s->state != SUP_DONE) {
        wait_event(s, report_rd);
        read_signals(s);
        read_reports(s, report_rd);
        if (sup_has_job(s)) check_reaped(s, report_rd);
        check_helpers(s, s->cfg.probe_timeout);
        act(s, sup_on_tick(s, bt_now_s()));
    }
    kill_helpers();
    return s->exit_code;
}

/* ---- main -------------------------------------------------------------------------------------
 */

static int launch(const struct cfg *c, bool is_serve, const struct mpicmd_argv *pass)
{
    static struct hosts_list hosts;
    static struct sup s; /* large */
    struct programs progs;
    char err[512];
    int report_rd = -1;
    if (load_hosts(c, &hosts, err, sizeof(err)) < 0) {
        fprintf(stderr, "baton: %s\n", err);
        return BT_EXIT_CONFIG;
    }
    if (find_programs(&progs, err, sizeof(err)) < 0) {
        fprintf(stderr, "baton: %s\n", err);
        return BT_EXIT_FAIL;
    }
    spec_init(&L, &progs, c, is_serve, pass);
    struct sup_config sc = sup_config_of(c, is_serve, &hosts);
    sup_init(&s, &sc);
    if (c->launch.dry_run) { /* the first job's command line */
        struct sup first = s;
        if (!(sup_on_tick(&first, 0) & SUP_ACT_START) ||
            build_cmd(&L, &first, err, sizeof(err)) < 0) {
            fprintf(stderr, "baton: %s\n", err);
            return BT_EXIT_CONFIG;
        }
        mpicmd_print(&L.cmd, stdout);
        return BT_EXIT_OK;
    }
    if (is_serve && c->server.listen_fd >= 0) {
        L.listen_fd = (int)c->server.listen_fd; /* we were handed one ourselves */
    } else if (is_serve && open_listener(c->server.host, (int)c->server.port, &L.listen_fd, err,
                                         sizeof(err)) < 0) {
        fprintf(stderr, "baton: %s\n", err);
        return BT_EXIT_CONFIG;
    }
    if (setup_pipes(&report_rd, err, sizeof(err)) < 0) {
        fprintf(stderr, "baton: %s\n", err);
        return BT_EXIT_FAIL;
    }
    if (is_serve)
        bt_info("supervisor: serving on %s:%d with %d rank%s", c->server.host,
                bound_port(L.listen_fd, (int)c->server.port), (int)c->launch.ranks,
                c->launch.ranks > 1 ? "s" : "");
    return supervise(&s, report_rd);
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
