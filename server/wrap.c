/* wrap: the parent of every rank (wrap.h). */
#include "wrap.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile pid_t wrap_child;

/* The supervisor's pipe named in BATON_SUPERVISOR_FD (a number naming an open descriptor), or
 * -1. Silent: hydra passes the environment to other hosts, where the pipe does not exist. */
static int supervisor_fd(void)
{
    const char *e = getenv("BATON_SUPERVISOR_FD");
    if (!e || !*e) return -1;
    char *end;
    errno = 0;
    long fd = strtol(e, &end, 10);
    if (errno || *end || fd < 3 || fd > 65535 || fcntl((int)fd, F_GETFD) < 0) return -1;
    return (int)fd;
}

/* "WHAT V" to the supervisor (fd < 0: nothing). A failed write is ignored: the supervisor may be
 * gone, and the wrapper must exit with the rank's status anyway. */
static void tell(int fd, const char *what, long v)
{
    char line[64];
    int n = snprintf(line, sizeof(line), "%s %ld\n", what, v);
    if (fd < 0 || n <= 0 || (size_t)n >= sizeof(line)) return;
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
}

static void wrap_forward(int sig)
{
    if (wrap_child > 0) kill(wrap_child, sig);
}

/* The supervisor's pipe for --report, CLOEXEC (the child gets it explicitly); -1 without. */
static int supervisor_pipe(bool report)
{
    int fd = supervisor_fd();
    unsetenv("BATON_SUPERVISOR_FD");
    if (fd < 0) return -1;
    if (!report) {
        close(fd);
        return -1;
    }
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        fprintf(stderr, "baton --wrap: fcntl %d: %s: not reporting\n", fd, strerror(errno));
        return -1;
    }
    return fd;
}

/* In the child: the signals and the signal mask back to normal, the pipe as BATON_REPORT_FD
 * (rank 0 reports "up", "alive" and its result itself: server/report.h), then exec. */
static void exec_child(char **argv, int sfd, const sigset_t *mask)
{
    signal(SIGUSR1, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    sigprocmask(SIG_SETMASK, mask, NULL);
    if (sfd >= 0) {
        char num[16];
        snprintf(num, sizeof(num), "%d", sfd);
        if (fcntl(sfd, F_SETFD, 0) < 0 || setenv("BATON_REPORT_FD", num, 1) < 0)
            fprintf(stderr, "baton --wrap: cannot hand on the report pipe: %s\n", strerror(errno));
    }
    execvp(argv[0], argv);
    fprintf(stderr, "baton --wrap: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* Wait for the child; its status as an exit code (1 if it cannot be waited for). */
static int wait_child(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            perror("baton --wrap: waitpid");
            return 1;
        }
    }
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return 1;
}

int wrap_main(int argc, char **argv)
{
    int k = 0;
    bool report = false;
    if (k < argc && !strcmp(argv[k], "--report")) report = true, k++;
    if (k < argc && !strcmp(argv[k], "--")) k++;
    if (k >= argc) {
        fputs("baton --wrap: missing program\n", stderr);
        return 2;
    }
    int sfd = supervisor_pipe(report);
    if (signal(SIGUSR1, SIG_IGN) == SIG_ERR) {
        perror("baton --wrap: SIGUSR1");
        tell(sfd, "exit", 1);
        return 1;
    }
    /* SIGTERM/SIGINT held until wrap_child is set, so none is lost or kills us meanwhile */
    sigset_t hold, old;
    sigemptyset(&hold);
    sigaddset(&hold, SIGTERM);
    sigaddset(&hold, SIGINT);
    struct sigaction sa = {0};
    sa.sa_handler = wrap_forward;
    if (sigprocmask(SIG_BLOCK, &hold, &old) < 0 || sigaction(SIGTERM, &sa, NULL) < 0 ||
        sigaction(SIGINT, &sa, NULL) < 0) {
        perror("baton --wrap: signals");
        tell(sfd, "exit", 1);
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("baton --wrap: fork");
        tell(sfd, "exit", 1);
        return 1;
    }
    if (pid == 0) exec_child(argv + k, sfd, &old);
    wrap_child = pid;
    sigprocmask(SIG_SETMASK, &old, NULL);
    tell(sfd, "pid", (long)pid);
    int code = wait_child(pid);
    tell(sfd, "exit", code);
    return code;
}
