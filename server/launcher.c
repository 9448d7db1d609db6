/* baton: the launcher. `baton run` and `baton serve` build an MPMD mpiexec (MPICH hydra) command
 * line with rank 0 = baton-server and ranks 1..R-1 = baton-rankd, and run it.
 *
 *   baton run   -m MODEL -p PROMPT -n N --ranks R [...]   one prompt through an R-rank pipeline
 *   baton serve -m MODEL --ranks R [--host A] [--port P]  the HTTP service
 *   common: --hosts h1,h2,... | --hostfile F, --split 8,7,7, --dry-run (print the command line)
 *
 * Options the launcher does not know are passed to every rank unchanged, so baton-server and
 * baton-rankd own their configuration (server/config.h); `serve` checks them first with the same
 * table, so a bad option is reported once and nothing is started.
 *
 * `serve` is also the supervisor (DESIGN §5.4): it opens the listening socket itself and hands it
 * to rank 0 (--listen-fd), so connections wait in the backlog while a job restarts; rank 0's
 * wrapper reports rank 0's pid and exit status over a pipe (BATON_SUPERVISOR_FD); when rank 0
 * ends, the supervisor kills what is left of the job (its process group and every descendant, by
 * pid) and relaunches it with backoff, except after a configuration error (exit codes in
 * exitcodes.h), which it prints and returns. SIGTERM/SIGINT: rank 0 gets SIGTERM, drains and
 * shuts the ranks down; the supervisor exits 0. Each rank is started through `baton --wrap`, a
 * parent that ignores SIGUSR1 and exits with its child's status: hydra kills every rank of a host
 * when one of them dies by a signal (notes/mpich-faults.md §3b), which a plain exit status does not
 * trigger.
 *
 * Single-threaded; only main() exits. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "exitcodes.h"
#include "log.h"

#define MAX_ARGS 512

struct argv_buf {
    char *v[MAX_ARGS + 1];
    int n;
};

static int argv_push(struct argv_buf *a, const char *s)
{
    if (a->n >= MAX_ARGS) return BT_EFULL;
    a->v[a->n++] = (char *)s;
    a->v[a->n] = NULL;
    return BT_OK;
}

struct launch_opts {
    const char *mode;     /* "run" | "serve" */
    int ranks;            /* total ranks, >= 1 */
    const char *hosts;    /* comma-separated, or NULL */
    const char *hostfile; /* or NULL */
    bool dry_run;
    double rank0_silence;  /* serve: rank 0 silent this long (s) is stopped or hung */
    double drain_timeout;  /* serve: seconds rank 0 may take to finish after SIGTERM (the option
                            * table's --drain-timeout, which every rank also gets) */
    double launch_timeout; /* serve: seconds the job may take to come up (--launch-timeout) */
    struct argv_buf pass;  /* options for every rank */
};

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

/* Directory of this executable, so the rank binaries are found beside it. */
static int self_dir(char *out, size_t cap)
{
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    if (n <= 0) return BT_EIO;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (!slash) return BT_EIO;
    *slash = '\0';
    return BT_OK;
}

static bool is_exec(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Path of a sibling binary, or the bare name (found through PATH) if there is none beside us. */
static const char *sibling(const char *dir, const char *name)
{
    static char bufs[4][PATH_MAX];
    static int k;
    char *p = bufs[k++ & 3];
    snprintf(p, PATH_MAX, "%s/%s", dir, name);
    return is_exec(p) ? p : name;
}

/* `baton --wrap [--report] -- PROG ARGS`: run PROG with SIGUSR1 ignored in this parent; forward
 * SIGTERM and SIGINT; exit with the child's status (128 + signal if it was killed). With --report
 * (rank 0), write "pid N" and then "exit CODE" to the supervisor's pipe (BATON_SUPERVISOR_FD),
 * even when the child dies by a signal. The pipe never reaches the child. */
static pid_t wrap_child;

static void wrap_forward(int sig)
{
    if (wrap_child > 0) kill(wrap_child, sig);
}

static int supervisor_fd(void)
{
    const char *e = getenv("BATON_SUPERVISOR_FD");
    if (!e || !*e) return -1;
    char *end;
    long fd = strtol(e, &end, 10);
    if (*end || fd < 3 || fd > 65535 || fcntl((int)fd, F_GETFD) < 0) return -1;
    return (int)fd;
}

static void report_line(int fd, const char *what, long v)
{
    char line[64];
    int n = snprintf(line, sizeof(line), "%s %ld\n", what, v);
    if (fd >= 0 && n > 0) {
        ssize_t w = write(fd, line, (size_t)n);
        (void)w;
    }
}

static int wrap_main(int argc, char **argv, bool report)
{
    if (argc < 1) {
        fputs("baton --wrap: missing program\n", stderr);
        return 2;
    }
    int sfd = supervisor_fd();
    if (sfd >= 0) {
        fcntl(sfd, F_SETFD, FD_CLOEXEC);
        if (!report) close(sfd), sfd = -1;
    }
    unsetenv("BATON_SUPERVISOR_FD");
    signal(SIGUSR1, SIG_IGN);
    wrap_child = fork();
    if (wrap_child < 0) {
        perror("baton --wrap: fork");
        report_line(sfd, "exit", 1);
        return 1;
    }
    if (wrap_child == 0) {
        signal(SIGUSR1, SIG_DFL);
        if (sfd >= 0) { /* the program may report its result itself (oneshot.c) */
            char num[16];
            snprintf(num, sizeof(num), "%d", sfd);
            fcntl(sfd, F_SETFD, 0);
            setenv("BATON_REPORT_FD", num, 1);
        }
        execvp(argv[0], argv);
        fprintf(stderr, "baton --wrap: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    report_line(sfd, "pid", (long)wrap_child);
    struct sigaction sa = {0};
    sa.sa_handler = wrap_forward;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int st, code = 1;
    while (waitpid(wrap_child, &st, 0) < 0) {
        if (errno != EINTR) {
            st = -1;
            break;
        }
    }
    if (st != -1 && WIFEXITED(st))
        code = WEXITSTATUS(st);
    else if (st != -1 && WIFSIGNALED(st))
        code = 128 + WTERMSIG(st);
    report_line(sfd, "exit", code);
    return code;
}

/* argv[1] is the mode; the rest are options of the one table (config.h), checked here. The
 * launch group is the launcher's own; everything else is passed to every rank unchanged. */
static int parse_args(int argc, char **argv, struct launch_opts *o, struct cfg *c, char *err,
                      size_t errsz)
{
    extern char **environ;
    struct argv_buf a = {.n = 0};
    memset(o, 0, sizeof(*o));
    memset(c, 0, sizeof(*c));
    if (argc < 2) return bt_errf(err, errsz, BT_EINVAL, "missing mode: run or serve");
    o->mode = argv[1];
    if (strcmp(o->mode, "run") != 0 && strcmp(o->mode, "serve") != 0)
        return bt_errf(err, errsz, BT_EINVAL, "unknown mode '%s' (expected run or serve)", o->mode);
    argv_push(&a, "baton");
    for (int i = 2; i < argc; i++)
        if (argv_push(&a, argv[i]) != BT_OK)
            return bt_errf(err, errsz, BT_EINVAL, "too many arguments");
    int rc = cfg_load(c, a.n, a.v, environ, err, errsz);
    if (rc < 0) return rc;
    for (int i = 2, n; i < argc; i += n) {
        const struct cfg_opt *opt = cfg_flag_at(argc, argv, i, &n);
        for (int k = 0; k < n && !(opt && opt->group == CFG_G_LAUNCH); k++)
            argv_push(&o->pass, argv[i + k]);
    }
    o->ranks = (int)c->launch.ranks;
    o->hosts = c->launch.hosts;
    o->hostfile = c->launch.hostfile;
    o->dry_run = c->launch.dry_run;
    o->drain_timeout = (double)c->server.drain_timeout_ms / 1000.0;
    o->launch_timeout = (double)c->launch.launch_timeout_ms / 1000.0;
    /* the ranks' own rule for a silent rank 0 (interval x misses x 2), at least 3 s */
    o->rank0_silence =
        (double)c->stage.heartbeat_interval_ms * 1e-3 * (double)c->stage.heartbeat_misses * 2;
    if (o->rank0_silence < 3) o->rank0_silence = 3;
    if (o->hosts && o->hostfile)
        return bt_errf(err, errsz, BT_EINVAL, "--hosts and --hostfile are exclusive");
    return BT_OK;
}

/* One MPMD section: "-n COUNT baton --wrap [--report] -- BIN [extra...] PASS..." */
static int push_section(struct argv_buf *cmd, const char *count, const char *self, bool report,
                        const char *bin, const char *const *extra, const struct argv_buf *pass)
{
    int rc = 0;
    rc |= argv_push(cmd, "-n");
    rc |= argv_push(cmd, count);
    rc |= argv_push(cmd, self);
    rc |= argv_push(cmd, "--wrap");
    if (report) rc |= argv_push(cmd, "--report");
    rc |= argv_push(cmd, "--");
    rc |= argv_push(cmd, bin);
    for (int i = 0; extra && extra[i]; i++) rc |= argv_push(cmd, extra[i]);
    for (int i = 0; i < pass->n; i++) rc |= argv_push(cmd, pass->v[i]);
    return rc ? BT_EFULL : BT_OK;
}

static void print_cmd(const struct argv_buf *cmd)
{
    for (int i = 0; i < cmd->n; i++) {
        const char *s = cmd->v[i];
        bool plain = *s != '\0';
        for (const char *p = s; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%",
                        *p))
                plain = false;
        if (i) putchar(' ');
        if (plain) {
            fputs(s, stdout);
        } else {
            putchar('\'');
            for (const char *p = s; *p; p++) {
                if (*p == '\'')
                    fputs("'\\''", stdout);
                else
                    putchar(*p);
            }
            putchar('\'');
        }
    }
    putchar('\n');
}

/* ---- supervisor ------------------------------------------------------------------------------ */

static int sig_pipe[2] = {-1, -1}; /* SIGTERM/SIGINT/SIGCHLD -> the poll loop */

static void on_signal(int sig)
{
    unsigned char b = (unsigned char)sig;
    int saved = errno;
    ssize_t w = write(sig_pipe[1], &b, 1);
    (void)w;
    errno = saved;
}

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
    int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    if (fd < 0) {
        freeaddrinfo(res);
        return bt_errf(err, errsz, BT_EIO, "socket: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 512) < 0) {
        int e = errno;
        freeaddrinfo(res);
        close(fd);
        return bt_errf(err, errsz, BT_EIO, "cannot listen on %s:%d: %s", host, port, strerror(e));
    }
    freeaddrinfo(res);
    *out = fd;
    return BT_OK;
}

/* SIGKILL every descendant of root (found through /proc) and root's process group. */
static void kill_tree(pid_t root)
{
    pid_t killed[4096];
    int nk = 0;
    killed[nk++] = root;
    for (int pass = 0; pass < 8; pass++) { /* repeat: children forked while we walk */
        int before = nk;
        DIR *d = opendir("/proc");
        if (!d) break;
        struct dirent *de;
        while ((de = readdir(d)) && nk < 4096) {
            char path[64], buf[512];
            char *end;
            long pid = strtol(de->d_name, &end, 10);
            if (*end || pid <= 1) continue;
            snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
            FILE *f = fopen(path, "r");
            if (!f) continue;
            size_t n = fread(buf, 1, sizeof(buf) - 1, f);
            fclose(f);
            buf[n] = '\0';
            char *rp = strrchr(buf, ')'); /* comm may hold spaces: fields start after ')' */
            long ppid;
            char state;
            if (!rp || sscanf(rp + 1, " %c %ld", &state, &ppid) != 2) continue;
            bool child = false, seen = false;
            for (int i = 0; i < nk; i++) {
                if (killed[i] == ppid) child = true;
                if (killed[i] == pid) seen = true;
            }
            if (child && !seen) {
                killed[nk++] = (pid_t)pid;
                kill((pid_t)pid, SIGSTOP); /* freeze it so it forks no more */
            }
        }
        closedir(d);
        if (nk == before) break;
    }
    kill(-root, SIGKILL);
    for (int i = 0; i < nk; i++) kill(killed[i], SIGKILL);
}

struct job {
    pid_t pid;        /* mpiexec */
    pid_t rank0;      /* rank 0's pid, from its wrapper (0: not known yet) */
    int rank0_code;   /* rank 0's exit code, -1 until reported */
    int rank0_result; /* what rank 0 said it will exit with, before its MPI teardown; -1 */
    double alive;     /* when rank 0 last said "alive" (0: not yet) */
    bool up;          /* rank 0 said MPI is up on every host */
    int mpiexec_code; /* -1 while running */
    double started;
};

static int job_start(struct job *j, char **cmd)
{
    memset(j, 0, sizeof(*j));
    j->rank0_code = j->rank0_result = j->mpiexec_code = -1;
    j->started = bt_now_s();
    j->pid = fork();
    if (j->pid < 0) return BT_EIO;
    if (j->pid == 0) {
        setpgid(0, 0);
        signal(SIGPIPE, SIG_DFL);
        execvp(cmd[0], cmd);
        fprintf(stderr, "baton: cannot run %s: %s (is MPICH installed?)\n", cmd[0],
                strerror(errno));
        _exit(127);
    }
    setpgid(j->pid, j->pid);
    return BT_OK;
}

/* Read "pid N" / "exit N" lines from rank 0's wrapper. */
static void read_reports(int fd, struct job *j, char *buf, size_t *len, size_t cap)
{
    ssize_t n = read(fd, buf + *len, cap - 1 - *len);
    if (n <= 0) return;
    *len += (size_t)n;
    buf[*len] = '\0';
    char *line = buf, *nl;
    while ((nl = strchr(line, '\n'))) {
        *nl = '\0';
        long v;
        if (sscanf(line, "pid %ld", &v) == 1)
            j->rank0 = (pid_t)v;
        else if (sscanf(line, "exit %ld", &v) == 1)
            j->rank0_code = (int)v;
        else if (sscanf(line, "result %ld", &v) == 1)
            j->rank0_result = (int)v;
        else if (!strcmp(line, "alive"))
            j->alive = bt_now_s();
        else if (sscanf(line, "up %ld", &v) == 1)
            j->up = true;
        line = nl + 1;
    }
    *len = strlen(line);
    memmove(buf, line, *len + 1);
}

static bool reap(struct job *j)
{
    int st;
    pid_t r = waitpid(j->pid, &st, WNOHANG);
    if (r != j->pid) return false;
    j->mpiexec_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return true;
}

/* Run the job and, for baton serve, restart it after faults. once (baton run): no restart, the
 * result is rank 0's own exit code (reported by its wrapper) where known, since the job's MPI
 * teardown can fail after rank 0 finished (transport_mpi.c, finalize_bounded). */
static int supervise(char **cmd, int status_rd, const struct launch_opts *o, bool once)
{
    const double backoff_min = 0.25, backoff_max = 8.0, healthy_after = 30.0;
    double backoff = backoff_min;
    int restarts = 0;
    bool stopping = false;
    double stop_deadline = 0;
    char rbuf[256];
    size_t rlen = 0;

    for (;;) {
        struct job j;
        if (job_start(&j, cmd) != BT_OK) {
            bt_error("supervisor: fork: %s", strerror(errno));
            return 1;
        }
        if (!once)
            bt_info("supervisor: job started (mpiexec pid %d)%s", (int)j.pid,
                    restarts ? " after a fault" : "");
        bool killed = false;
        while (j.mpiexec_code < 0) {
            struct pollfd pf[2] = {{sig_pipe[0], POLLIN, 0}, {status_rd, POLLIN, 0}};
            poll(pf, 2, 200);
            if (pf[0].revents & POLLIN) {
                unsigned char sigs[32];
                ssize_t n = read(sig_pipe[0], sigs, sizeof(sigs));
                for (ssize_t i = 0; i < n; i++) {
                    if ((sigs[i] == SIGTERM || sigs[i] == SIGINT) && !stopping && once) {
                        stopping = true; /* baton run: interrupted, end the job now */
                        kill_tree(j.pid), killed = true;
                    } else if ((sigs[i] == SIGTERM || sigs[i] == SIGINT) && !stopping) {
                        stopping = true;
                        stop_deadline = bt_now_s() + o->drain_timeout + 5;
                        bt_info("supervisor: stopping: rank 0 drains for up to %.0f s",
                                o->drain_timeout);
                        if (j.rank0 > 0 && j.up)
                            kill(j.rank0, SIGTERM);
                        else /* still starting: nothing to drain (rank 0 takes signals later) */
                            kill_tree(j.pid), killed = true;
                    }
                }
            }
            if (pf[1].revents & POLLIN) read_reports(status_rd, &j, rbuf, &rlen, sizeof(rbuf));
            reap(&j);
            if (j.mpiexec_code >= 0) break;
            /* rank 0 gone: the other ranks may wait forever (no auto-cleanup), end them. A clean
             * exit has sent them SHUTDOWN: give them a moment first. */
            if (j.rank0_code >= 0 && !killed) {
                double grace = j.rank0_code == 0 ? 5.0 : 0.0, t0 = bt_now_s();
                while (bt_now_s() - t0 < grace && !reap(&j)) poll(NULL, 0, 20);
                if (j.mpiexec_code < 0) kill_tree(j.pid);
                killed = true;
            }
            /* rank 0 stopped or stuck (it says "alive" twice a second while its scheduler goes
             * round): nobody else notices, its clients would wait; end the job */
            if (!once && !stopping && !killed && j.alive > 0 &&
                bt_now_s() - j.alive > o->rank0_silence) {
                bt_warn("supervisor: rank 0 (pid %d) gave no sign of life for %.1f s (stopped or "
                        "hung): ending the job",
                        (int)j.rank0, bt_now_s() - j.alive);
                kill_tree(j.pid);
                killed = true;
            }
            /* the job never came up: hydra waits forever for a host it could not reach (its
             * proxy there could not connect back, e.g. while a link is down) */
            if (!once && !j.up && !killed && bt_now_s() - j.started > o->launch_timeout) {
                bt_warn("supervisor: the job did not come up within --launch-timeout %.3g s (MPI "
                        "not up on every host: one unreachable?); killing it",
                        o->launch_timeout);
                kill_tree(j.pid);
                killed = true;
            }
            if (stopping && bt_now_s() > stop_deadline && !killed) {
                bt_warn("supervisor: rank 0 did not finish in time; killing the job");
                kill_tree(j.pid);
                killed = true;
            }
        }
        if (killed) kill_tree(j.pid); /* stragglers re-parented away from mpiexec */
        int code = j.rank0_code >= 0 ? j.rank0_code : j.mpiexec_code;
        double lived = bt_now_s() - j.started;
        if (once) {
            read_reports(status_rd, &j, rbuf, &rlen, sizeof(rbuf));
            code = j.rank0_code >= 0     ? j.rank0_code
                   : j.rank0_result >= 0 ? j.rank0_result
                                         : j.mpiexec_code;
            if (code == 0 && j.mpiexec_code != 0)
                bt_warn("mpiexec exited %d after rank 0 finished normally", j.mpiexec_code);
            return stopping ? 130 : code;
        }
        if (stopping) {
            bt_info("supervisor: stopped (rank 0 exit code %d)", code);
            return 0;
        }
        if (code == 0) {
            bt_info("supervisor: the job ended normally");
            return 0;
        }
        if (code == BT_EXIT_CONFIG || code == BT_EXIT_MISMATCH || code == 127) {
            bt_error("supervisor: the job failed with a configuration error (exit code %d): not "
                     "restarting; see the error above",
                     code);
            return code;
        }
        if (lived >= healthy_after) backoff = backoff_min;
        restarts++;
        bt_warn("supervisor: the job ended with code %d after %.1f s; restart #%d in %.2f s", code,
                lived, restarts, backoff);
        double until = bt_now_s() + backoff;
        while (bt_now_s() < until && !stopping) {
            struct pollfd pf = {sig_pipe[0], POLLIN, 0};
            if (poll(&pf, 1, 50) > 0) {
                unsigned char sigs[32];
                ssize_t n = read(sig_pipe[0], sigs, sizeof(sigs));
                for (ssize_t i = 0; i < n; i++)
                    if (sigs[i] == SIGTERM || sigs[i] == SIGINT) stopping = true;
            }
        }
        if (stopping) return 0;
        backoff = backoff * 2 > backoff_max ? backoff_max : backoff * 2;
    }
}

int main(int argc, char **argv)
{
    char err[512], dir[PATH_MAX], self[PATH_MAX + 16];
    char nrest[16], fdarg[16];
    struct launch_opts o;
    struct argv_buf cmd = {.n = 0};

    if (argc >= 2 && !strcmp(argv[1], "--wrap")) {
        int k = 2;
        bool report = false;
        if (k < argc && !strcmp(argv[k], "--report")) report = true, k++;
        if (k < argc && !strcmp(argv[k], "--")) k++;
        return wrap_main(argc - k, argv + k, report);
    }
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    bt_log_set_tag("launcher");
    struct cfg c;
    int listen_fd = -1, status_pipe[2] = {-1, -1};
    if (parse_args(argc, argv, &o, &c, err, sizeof(err)) != BT_OK) {
        fprintf(stderr, "baton: %s\n", err);
        usage(stderr);
        cfg_free(&c);
        return BT_EXIT_CONFIG;
    }
    if (c.help) {
        usage(stdout);
        cfg_free(&c);
        return 0;
    }
    bool serve = !strcmp(o.mode, "serve");
    if (serve && (!c.stage.model || !*c.stage.model)) {
        fputs("baton: serve needs a model (-m FILE.gguf or BATON_MODEL)\n", stderr);
        cfg_free(&c);
        return BT_EXIT_CONFIG;
    }
    if (self_dir(dir, sizeof(dir)) != BT_OK) {
        fputs("baton: cannot find my own executable in /proc/self/exe\n", stderr);
        cfg_free(&c);
        return 1;
    }
    snprintf(self, sizeof(self), "%s/baton", dir);
    const char *mpiexec = getenv("BATON_MPIEXEC");
    if (!mpiexec || !*mpiexec) mpiexec = "mpiexec";

    int rc = argv_push(&cmd, mpiexec);
    /* serve: survivors live on after a rank dies, so rank 0 can answer every request and the
     * supervisor restarts the job; run: hydra's cleanup ends everything on a failure. */
    if (serve) rc |= argv_push(&cmd, "-disable-auto-cleanup");
    if (o.hosts) {
        rc |= argv_push(&cmd, "-hosts");
        rc |= argv_push(&cmd, o.hosts);
    }
    if (o.hostfile) {
        rc |= argv_push(&cmd, "-f");
        rc |= argv_push(&cmd, o.hostfile);
    }
    const char *run_extra[] = {"--oneshot", NULL};
    const char *serve_extra[] = {"--listen-fd", fdarg, NULL};
    snprintf(fdarg, sizeof(fdarg), "%s", "FD");
    rc |= push_section(&cmd, "1", self, true, sibling(dir, "baton-server"),
                       serve ? serve_extra : run_extra, &o.pass);
    if (o.ranks > 1) {
        snprintf(nrest, sizeof(nrest), "%d", o.ranks - 1);
        rc |= argv_push(&cmd, ":");
        rc |= push_section(&cmd, nrest, self, false, sibling(dir, "baton-rankd"), NULL, &o.pass);
    }
    if (rc) {
        fputs("baton: command line too long\n", stderr);
        cfg_free(&c);
        return BT_EXIT_CONFIG;
    }
    if (o.dry_run) {
        print_cmd(&cmd);
        cfg_free(&c);
        return 0;
    }
    if (serve && c.server.listen_fd >= 0) {
        listen_fd = (int)c.server.listen_fd; /* we were handed one ourselves */
    } else if (serve && open_listener(c.server.host, (int)c.server.port, &listen_fd, err,
                                      sizeof(err)) != BT_OK) {
        fprintf(stderr, "baton: %s\n", err);
        cfg_free(&c);
        return BT_EXIT_CONFIG;
    }
    snprintf(fdarg, sizeof(fdarg), "%d", listen_fd);
    if (pipe(status_pipe) < 0 || pipe(sig_pipe) < 0) {
        perror("baton: pipe");
        cfg_free(&c);
        return 1;
    }
    fcntl(status_pipe[0], F_SETFD, FD_CLOEXEC);
    fcntl(status_pipe[0], F_SETFL, O_NONBLOCK);
    for (int i = 0; i < 2; i++) {
        fcntl(sig_pipe[i], F_SETFD, FD_CLOEXEC);
        fcntl(sig_pipe[i], F_SETFL, O_NONBLOCK);
    }
    char sfd[16];
    snprintf(sfd, sizeof(sfd), "%d", status_pipe[1]);
    setenv("BATON_SUPERVISOR_FD", sfd, 1);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* c outlives the job: the command line points into it (--hosts, --hostfile) */
    if (!serve) {
        rc = supervise(cmd.v, status_pipe[0], &o, true);
        cfg_free(&c);
        return rc;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int port = (int)c.server.port;
    if (getsockname(listen_fd, (struct sockaddr *)&ss, &sl) == 0)
        port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    bt_info("supervisor: serving on %s:%d with %d rank%s", c.server.host, port, o.ranks,
            o.ranks > 1 ? "s" : "");
    rc = supervise(cmd.v, status_pipe[0], &o, false);
    cfg_free(&c);
    return rc;
}
