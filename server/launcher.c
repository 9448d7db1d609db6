/* baton: the launcher. `baton run` and `baton serve` build an MPMD mpiexec (MPICH hydra) command
 * line with rank 0 = baton-server and ranks 1..R-1 = baton-rankd, and run it.
 *
 *   baton run   -m MODEL -p PROMPT -n N --ranks R [...]   one prompt through an R-rank pipeline
 *   baton serve -m MODEL --ranks R [--host A] [--port P]  the HTTP service
 *   common: --hosts h1,h2,... | --hostfile F, --split 8,7,7, --dry-run (print the command line)
 *
 * Options the launcher does not know are passed to every rank unchanged, so baton-server and
 * baton-rankd own their configuration. Each rank is started through `baton --wrap`, a parent that
 * ignores SIGUSR1 and exits with its child's status: hydra kills every rank of a host when one of
 * them dies by a signal (notes/mpich-faults.md §3b), which a plain exit status does not trigger.
 *
 * Single-threaded; only main() exits. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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
    struct argv_buf pass; /* options for every rank */
};

static void usage(FILE *f)
{
    fputs(
        "usage: baton run   -m MODEL -p PROMPT -n N [--ranks R] [options]\n"
        "       baton serve -m MODEL [--ranks R] [--host ADDR] [--port P] [options]\n"
        "\n"
        "Runs an R-rank pipeline with MPICH's mpiexec: rank 0 is baton-server (HTTP, scheduler,\n"
        "first stage), ranks 1..R-1 are baton-rankd (later stages).\n"
        "\n"
        "launcher options:\n"
        "  --ranks R          number of ranks (pipeline stages), default 1\n"
        "  --hosts h1,h2,...  spread ranks over these hosts (hydra -hosts)\n"
        "  --hostfile F       hosts from a file (hydra -f)\n"
        "  --dry-run          print the mpiexec command line and exit\n"
        "  -h, --help         this text\n"
        "\n"
        "Every other option (-m, -p, -n, -c, -t, --split, --temp, --seed, --port, ...) is passed "
        "to\n"
        "each rank; see `baton-server --help`. Env: BATON_MPIEXEC overrides the mpiexec program.\n",
        f);
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

/* `baton --wrap -- PROG ARGS`: run PROG with SIGUSR1 ignored in this parent; forward SIGTERM and
 * SIGINT; exit with the child's status (128 + signal if it was killed). */
static pid_t wrap_child;

static void wrap_forward(int sig)
{
    if (wrap_child > 0) kill(wrap_child, sig);
}

static int wrap_main(int argc, char **argv)
{
    if (argc < 1) {
        fputs("baton --wrap: missing program\n", stderr);
        return 2;
    }
    signal(SIGUSR1, SIG_IGN);
    wrap_child = fork();
    if (wrap_child < 0) {
        perror("baton --wrap: fork");
        return 1;
    }
    if (wrap_child == 0) {
        signal(SIGUSR1, SIG_DFL);
        execvp(argv[0], argv);
        fprintf(stderr, "baton --wrap: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    struct sigaction sa = {0};
    sa.sa_handler = wrap_forward;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int st;
    while (waitpid(wrap_child, &st, 0) < 0) {
        if (errno != EINTR) return 1;
    }
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return 1;
}

static int parse_args(int argc, char **argv, struct launch_opts *o, char *err, size_t errsz)
{
    memset(o, 0, sizeof(*o));
    o->ranks = 1;
    if (argc < 2) return bt_errf(err, errsz, BT_EINVAL, "missing mode: run or serve");
    o->mode = argv[1];
    if (strcmp(o->mode, "run") != 0 && strcmp(o->mode, "serve") != 0)
        return bt_errf(err, errsz, BT_EINVAL, "unknown mode '%s' (expected run or serve)", o->mode);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *val = (i + 1 < argc) ? argv[i + 1] : NULL;
        if (!strcmp(a, "--ranks") || !strcmp(a, "--hosts") || !strcmp(a, "--hostfile")) {
            if (!val) return bt_errf(err, errsz, BT_EINVAL, "%s needs a value", a);
            i++;
            if (!strcmp(a, "--ranks")) {
                char *end;
                long r = strtol(val, &end, 10);
                if (*end || r < 1 || r > 256)
                    return bt_errf(err, errsz, BT_EINVAL, "--ranks: '%s' is not in 1..256", val);
                o->ranks = (int)r;
            } else if (!strcmp(a, "--hosts")) {
                o->hosts = val;
            } else {
                o->hostfile = val;
            }
        } else if (!strcmp(a, "--dry-run")) {
            o->dry_run = true;
        } else if (argv_push(&o->pass, a) != BT_OK) {
            return bt_errf(err, errsz, BT_EINVAL, "too many arguments");
        }
    }
    if (o->hosts && o->hostfile)
        return bt_errf(err, errsz, BT_EINVAL, "--hosts and --hostfile are exclusive");
    return BT_OK;
}

/* One MPMD section: "-n COUNT baton --wrap -- BIN [mode args] PASS..." */
static int push_section(struct argv_buf *cmd, const char *count, const char *self, const char *bin,
                        const char *extra, const struct argv_buf *pass)
{
    int rc = 0;
    rc |= argv_push(cmd, "-n");
    rc |= argv_push(cmd, count);
    rc |= argv_push(cmd, self);
    rc |= argv_push(cmd, "--wrap");
    rc |= argv_push(cmd, "--");
    rc |= argv_push(cmd, bin);
    if (extra) rc |= argv_push(cmd, extra);
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

int main(int argc, char **argv)
{
    char err[512], dir[PATH_MAX], self[PATH_MAX + 16];
    char nrest[16];
    struct launch_opts o;
    struct argv_buf cmd = {.n = 0};

    if (argc >= 2 && !strcmp(argv[1], "--wrap")) {
        int k = 2;
        if (k < argc && !strcmp(argv[k], "--")) k++;
        return wrap_main(argc - k, argv + k);
    }
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (parse_args(argc, argv, &o, err, sizeof(err)) != BT_OK) {
        fprintf(stderr, "baton: %s\n", err);
        usage(stderr);
        return 2;
    }
    for (int i = 0; i < o.pass.n; i++) {
        if (!strcmp(o.pass.v[i], "-h") || !strcmp(o.pass.v[i], "--help")) {
            usage(stdout);
            return 0;
        }
    }
    if (self_dir(dir, sizeof(dir)) != BT_OK) {
        fputs("baton: cannot find my own executable in /proc/self/exe\n", stderr);
        return 1;
    }
    snprintf(self, sizeof(self), "%s/baton", dir);
    const char *mpiexec = getenv("BATON_MPIEXEC");
    if (!mpiexec || !*mpiexec) mpiexec = "mpiexec";

    int rc = argv_push(&cmd, mpiexec);
    rc |= argv_push(&cmd, "-disable-auto-cleanup");
    if (o.hosts) {
        rc |= argv_push(&cmd, "-hosts");
        rc |= argv_push(&cmd, o.hosts);
    }
    if (o.hostfile) {
        rc |= argv_push(&cmd, "-f");
        rc |= argv_push(&cmd, o.hostfile);
    }
    const char *mode_flag = !strcmp(o.mode, "run") ? "--oneshot" : NULL;
    rc |= push_section(&cmd, "1", self, sibling(dir, "baton-server"), mode_flag, &o.pass);
    if (o.ranks > 1) {
        snprintf(nrest, sizeof(nrest), "%d", o.ranks - 1);
        rc |= argv_push(&cmd, ":");
        rc |= push_section(&cmd, nrest, self, sibling(dir, "baton-rankd"), NULL, &o.pass);
    }
    if (rc) {
        fputs("baton: command line too long\n", stderr);
        return 2;
    }
    if (o.dry_run) {
        print_cmd(&cmd);
        return 0;
    }
    execvp(cmd.v[0], cmd.v);
    fprintf(stderr, "baton: cannot run %s: %s (is MPICH installed?)\n", cmd.v[0], strerror(errno));
    return 127;
}
