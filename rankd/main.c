/* baton-rankd: pipeline ranks 1..R-1 (rank 0 is baton-server). Started by `baton run|serve
 * --ranks R` or by hand: `mpiexec -n 1 baton-server ARGS : -n 2 baton-rankd ARGS` with the same
 * ARGS (the same option table as baton-server, server/config.c; options that only rank 0 uses,
 * such as --port, are accepted and ignored).
 *
 * MPI comes up first, whatever else happens: a process of the job that leaves without MPI_Init
 * makes every other one hang in theirs (measured, MPICH 4.0.2), so even a bad option is reported
 * to rank 0 over MPI and the rank then waits for rank 0's SHUTDOWN (loop.h). Exit status
 * (exitcodes.h): 0 after SHUTDOWN, whatever its reason (mpiexec ORs the statuses, rank 0 picks
 * the job's); BT_EXIT_RESTART when a peer of the job died (left with _exit: MPI_Finalize hangs
 * then); BT_EXIT_FAIL when MPI cannot start. */
#include "config.h"
#include "exitcodes.h"
#include "log.h"
#include "loop.h"
#include "transport.h"
#include "version.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
    struct cfg c;
    struct xport *x = NULL;
    char cfg_err[1024], err[512], tag[32];
    int faulted = 0, status;

    int rc = cfg_load(&c, argc, argv, environ, cfg_err, sizeof(cfg_err));
    if (rc == BT_OK && (c.help || c.version || c.print_example)) {
        /* every rank sees the same flag and leaves without MPI, so none is left waiting */
        if (c.help)
            cfg_write_help(stdout, "usage: baton-rankd [options] (rank 1.. of an mpiexec job)",
                           1u << CFG_G_STAGE);
        else if (c.version)
            printf("baton-rankd %s (%s)\n", BATON_VERSION, BATON_BUILD_ID);
        else
            cfg_write_example(stdout);
        cfg_free(&c);
        return BT_EXIT_OK;
    }
    if (rc == BT_OK && c.stage.log_level != CFG_LOG_UNSET) bt_log_set_level(c.stage.log_level);
    /* before MPI_Init, so MPICH chains its SIGUSR1 (a peer exited) to ours */
    if (xport_mpi_install_sigusr1(err, sizeof(err)) < 0) bt_warn("%s", err);
    if (xport_mpi_init(&argc, &argv, 0, &x, err, sizeof(err)) < 0) {
        bt_error("baton-rankd: %s", err);
        cfg_free(&c);
        return BT_EXIT_FAIL;
    }
    snprintf(tag, sizeof(tag), "rank %d", xport_rank(x));
    bt_log_set_tag(tag);
    status = rankd_run(x, &c.stage, rc < 0 ? cfg_err : NULL, &faulted);
    cfg_free(&c);
    if (faulted) {
        xport_mark_faulted(x);
        xport_free(x);
        fflush(NULL);
        _exit(status);
    }
    xport_free(x);
    return status;
}
