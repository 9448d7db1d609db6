/* mpicmd: the MPMD mpiexec (MPICH hydra) command line of `baton run` and `baton serve`:
 *
 *   MPIEXEC [-disable-auto-cleanup] [-hosts H | -f FILE]
 *       -n 1 BATON --wrap --report -- baton-server (--listen-fd FD | --oneshot) PASS... TAIL...
 *     [ : -n R-1 BATON --wrap -- baton-rankd PASS... TAIL... ]
 *
 * serve adds -disable-auto-cleanup: survivors live on after a rank dies, so rank 0 can answer
 * every request and the supervisor restarts the job; run: hydra's cleanup ends everything on a
 * failure. Every rank runs under `baton --wrap` (wrap.h). Single-threaded. */
#ifndef BATON_MPICMD_H
#define BATON_MPICMD_H

#include <stdbool.h>
#include <stdio.h>

#define MPICMD_MAX_ARGS 512

/* An argument vector, NULL-terminated; the strings are borrowed (they must outlive it). */
struct mpicmd_argv {
    char *v[MPICMD_MAX_ARGS + 1];
    int n;
};

/* Append s; BT_EFULL when MPICMD_MAX_ARGS are there. */
int mpicmd_push(struct mpicmd_argv *a, const char *s);

struct mpicmd_spec {
    const char *mpiexec;            /* the program (BATON_MPIEXEC or "mpiexec") */
    bool serve;                     /* else run */
    const char *hosts;              /* hydra -hosts, or NULL */
    const char *hostfile;           /* hydra -f, or NULL */
    int ranks;                      /* >= 1 */
    const char *self;               /* this program, run as `--wrap` */
    const char *server;             /* baton-server */
    const char *rankd;              /* baton-rankd */
    const struct mpicmd_argv *pass; /* options for every rank */
    const char *const *tail;        /* NULL or NULL-terminated: after pass, for every rank */
};

/* The command line; it points into itself and into the spec's strings, so it is not copied. */
struct mpicmd {
    struct mpicmd_argv argv;
    char nrest[16];     /* R - 1 */
    char listen_fd[16]; /* "FD" until mpicmd_set_listen_fd (what --dry-run shows) */
};

/* Build cmd from spec; BT_EFULL when it would be longer than MPICMD_MAX_ARGS. */
int mpicmd_build(struct mpicmd *cmd, const struct mpicmd_spec *spec);
/* serve: the descriptor rank 0 inherits as its listening socket. */
void mpicmd_set_listen_fd(struct mpicmd *cmd, int fd);
/* One line, each argument quoted for a POSIX shell where it needs it. */
void mpicmd_print(const struct mpicmd *cmd, FILE *f);

#endif
