/* exitcodes: the exit statuses of baton's processes, in one place.
 *
 * mpiexec (MPICH hydra) exits with the bitwise OR of its processes' exit statuses (measured:
 * 2 and 1 give 3, 3 and 4 give 7). So only rank 0 chooses the job's status: the other ranks
 * exit 0 after an orderly SHUTDOWN from rank 0, whatever the reason for it, and leave with
 * BT_EXIT_RESTART only when they must go without one (a peer died; see docs/pipeline.md). The
 * supervisor reads the job's status: BT_EXIT_CONFIG and BT_EXIT_MISMATCH are not restarted. */
#ifndef BATON_EXITCODES_H
#define BATON_EXITCODES_H

#define BT_EXIT_OK       0  /* done (a signal, `baton run` finished) */
#define BT_EXIT_FAIL     1  /* a runtime failure not covered below */
#define BT_EXIT_CONFIG   2  /* usage or configuration: bad option, model file unusable, bad split */
#define BT_EXIT_MISMATCH 3  /* startup handshake: ranks disagree on build, protocol or model */
#define BT_EXIT_RESTART  75 /* a fault (a rank died, hung, or missed --init-timeout): restart me */

#endif
