/* procs: the processes of a supervised job (procs.h). */
#include "procs.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define KILL_MAX 4096 /* processes one kill_tree ends at most */

static int spawn(char *const *argv, char *const *env, int quiet, pid_t *out, char *err,
                 size_t errsz)
{
    pid_t pid = fork();
    if (pid < 0) return bt_errf(err, errsz, BT_EIO, "%s", strerror(errno));
    if (pid == 0) {
        if (setpgid(0, 0) < 0) /* kill_tree still finds it through /proc */
            fprintf(stderr, "baton: setpgid: %s\n", strerror(errno));
        signal(SIGPIPE, SIG_DFL);
        for (int i = 0; env && env[i]; i++) putenv(env[i]);
        if (quiet >= 0) {
            int fd = open("/dev/null", O_RDWR);
            if (fd >= 0) {
                dup2(fd, 0);
                if (quiet) dup2(fd, 1), dup2(fd, 2);
                if (fd > 2) close(fd);
            }
        }
        execvp(argv[0], argv);
        fprintf(stderr, "baton: cannot run %s: %s%s\n", argv[0], strerror(errno),
                quiet < 0 ? " (is MPICH installed?)" : "");
        _exit(127);
    }
    /* both sides set it, whichever runs first; EACCES: the child has exec'd (and set it) */
    if (setpgid(pid, pid) < 0 && errno != EACCES && errno != ESRCH)
        bt_warn("setpgid of %s (pid %d): %s", argv[0], (int)pid, strerror(errno));
    *out = pid;
    return BT_OK;
}

int proc_spawn(char *const *argv, pid_t *out, char *err, size_t errsz)
{
    return spawn(argv, NULL, -1, out, err, errsz);
}

int proc_spawn_helper(char *const *argv, char *const *env, bool quiet, pid_t *out, char *err,
                      size_t errsz)
{
    return spawn(argv, env, quiet ? 1 : 0, out, err, errsz);
}

int proc_reap(pid_t pid, int *code, char *err, size_t errsz)
{
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) return 0;
    if (r < 0) return bt_errf(err, errsz, BT_EIO, "waitpid %d: %s", (int)pid, strerror(errno));
    *code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return 1;
}

/* The parent of pid from /proc/PID/stat; false when it is gone or unreadable. */
static bool parent_of(long pid, long *ppid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')'); /* comm may hold spaces: fields start after ')' */
    char state;
    return rp && sscanf(rp + 1, " %c %ld", &state, ppid) == 2;
}

static bool listed(const pid_t *pids, int n, long pid)
{
    for (int i = 0; i < n; i++)
        if (pids[i] == pid) return true;
    return false;
}

/* One walk over /proc: stop and add every process whose parent is listed. */
static int add_children(pid_t *pids, int n)
{
    DIR *d = opendir("/proc");
    if (!d) return n;
    struct dirent *de;
    while ((de = readdir(d)) && n < KILL_MAX) {
        char *end;
        long pid = strtol(de->d_name, &end, 10), ppid;
        if (*end || pid <= 1 || !parent_of(pid, &ppid)) continue;
        if (listed(pids, n, ppid) && !listed(pids, n, pid)) {
            pids[n++] = (pid_t)pid;
            kill((pid_t)pid, SIGSTOP); /* freeze it so it forks no more */
        }
    }
    closedir(d);
    return n;
}

void proc_kill_tree(pid_t root)
{
    static pid_t pids[KILL_MAX];
    int n = 1;
    pids[0] = root;
    for (int pass = 0; pass < 8; pass++) { /* repeat: children forked while we walk */
        int before = n;
        n = add_children(pids, n);
        if (n == before) break;
    }
    kill(-root, SIGKILL);
    for (int i = 0; i < n; i++) kill(pids[i], SIGKILL);
}
