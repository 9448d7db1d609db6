/* procs: the processes of a supervised job: start mpiexec in its own process group, reap it,
 * kill it with every descendant. Used by the launcher's supervisor loop (launcher.c) for the
 * actions of the state machine (supervise.h). Single-threaded. */
#ifndef BATON_PROCS_H
#define BATON_PROCS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Fork and exec argv (NULL-terminated; argv[0] through PATH) as the leader of a new process
 * group, with SIGPIPE back to its default. A program that cannot be run exits 127 (after a
 * message on stderr). BT_EIO with err filled when fork fails. */
int proc_spawn(char *const *argv, pid_t *out, char *err, size_t errsz);
/* The same for a helper (a probe, the --on-evict command): env (NULL or NULL-terminated
 * "NAME=VALUE" strings) is added to its environment; quiet: stdin, stdout and stderr on
 * /dev/null (else stdin only). */
int proc_spawn_helper(char *const *argv, char *const *env, bool quiet, pid_t *out, char *err,
                      size_t errsz);

/* Without waiting: 1 and *code (its exit status, 128 + signal if it was killed) when pid has
 * ended, 0 while it runs; BT_EIO with err filled when pid cannot be waited for (not our child). */
int proc_reap(pid_t pid, int *code, char *err, size_t errsz);

/* SIGKILL every descendant of root (found through /proc, each first stopped so that it forks no
 * more) and root's process group. */
void proc_kill_tree(pid_t root);

#endif
