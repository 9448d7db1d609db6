/* wrap: `baton --wrap [--report] [--] PROG ARGS`, the parent of every rank (launcher.c builds
 * the command line, mpicmd.h).
 *
 * Runs PROG with SIGUSR1 ignored in this parent (hydra kills every rank of a host when one of
 * them dies by a signal, ../shared/notes/mpich-faults.md §3b; a plain exit status does not trigger that),
 * forwards SIGTERM and SIGINT to it and exits with its status (128 + signal if it was killed).
 * With --report (rank 0) it writes "pid N" and then "exit CODE" to the supervisor's pipe
 * (BATON_SUPERVISOR_FD, read by supervise.c), even when the child dies by a signal, and hands
 * the pipe to the child as BATON_REPORT_FD; without, the pipe is closed. */
#ifndef BATON_WRAP_H
#define BATON_WRAP_H

/* argv: what follows "--wrap". Returns the exit status for main. */
int wrap_main(int argc, char **argv);

#endif
