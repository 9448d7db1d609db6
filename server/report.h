/* report: rank 0's lines to the supervisor of `baton serve|run` (server/launcher.c), over the pipe
 * rank 0's wrapper hands down as BATON_REPORT_FD: "up 1" once MPI is up on every host, "alive"
 * twice a second while the scheduler goes round, "result CODE" before an MPI teardown that can
 * fail after everything is done. Without the variable (rank 0 started by hand) nothing is
 * written.
 *
 * Threads: report_init on the main thread before other threads start; report_line from the
 * main thread. Writes never block (the descriptor is made non-blocking). */
#ifndef BATON_REPORT_H
#define BATON_REPORT_H

/* Read and check BATON_REPORT_FD (a number naming an open descriptor); a bad value is logged
 * once and ignored. */
void report_init(void);
/* Write one line (text without the newline); lost when the pipe is full or gone. */
void report_line(const char *text);

#endif
