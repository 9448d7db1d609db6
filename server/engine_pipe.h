/* engine_pipe: the engine interface (engine.h) for a pipeline of R > 1 MPI ranks, on rank 0.
 *
 * Rank 0 holds stage 0 (the token embedding and the first layers), ranks 1..R-1 run baton-rankd
 * with the following stages (stage.h splits the layers; every rank computes the same split from
 * the same options). load() maps and reads in stage 0 while collecting one HANDSHAKE from every
 * rank (protocol version, build id, model identity, layer range, the sizes every rank must agree
 * on (pipeline.h), host, load progress), and accepts the ranks only when all agree with rank 0
 * and are READY, within --init-timeout. The contract itself (epoch, deadlines, sizes, message
 * caps, sampling on the wire) lives in common/pipeline.h, shared with baton-rankd. A
 * disagreement is one error naming the rank and host, and ops->exit_code gives the job's exit
 * status for it (exitcodes.h: BT_EXIT_CONFIG after a failed load, BT_EXIT_MISMATCH after a
 * handshake disagreement, BT_EXIT_RESTART after a fault).
 *
 * submit() runs stage 0 over the micro-batch here, then sends the activations on as a FORWARD
 * (step id, sequence flags, sampling parameters of new sequences) to rank 1; the last rank
 * samples and sends TOKENS back. collect() waits for the oldest batch's TOKENS (or an ERROR from
 * any rank for that step) with the transport's deadline-bounded waits, never blocking in MPI;
 * max_inflight is the number of stages so every stage can work on its own micro-batch. A batch
 * with no answer within the step timeout, a rank that misses --heartbeat-misses heartbeats in a
 * row while idle, or a process of the job that exited (mpiexec's SIGUSR1) breaks the pipeline:
 * the failed rank is identified with a round of heartbeats (a rank that leaves by itself after
 * the SIGUSR1 says so first), ops->fault names it, every later call fails and
 * ops->exit_code is BT_EXIT_RESTART. ranks() reports every rank (host, layers, state,
 * progress, heartbeat age, step time); called while idle, it also sends the heartbeats and reads
 * their replies. destroy() sends SHUTDOWN to every rank and finalizes MPI (not after a fault).
 *
 * Ownership: eng_pipe_new brings MPI up and returns an engine whose self is freed by
 * ops->destroy. Threads: created on the main thread before any other thread uses MPI; then, like
 * every engine, used by the scheduler thread only (MPI_THREAD_SERIALIZED), and destroyed after
 * that thread ended. */
#ifndef BATON_ENGINE_PIPE_H
#define BATON_ENGINE_PIPE_H

#include "engine.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct eng_pipe_config {
    const char *split;        /* --split ("8,7,7"), or NULL: even by bytes */
    int init_timeout_s;       /* --init-timeout */
    uint64_t heartbeat_ns;    /* --heartbeat-interval (0: 1 s) */
    int heartbeat_misses;     /* --heartbeat-misses (0: 3) */
    uint64_t step_timeout_ns; /* --step-timeout (0: 30 s) */
};

/* Is this process rank 0 of a job of more than one process (xport_job_size)? */
bool eng_pipe_wanted(void);

/* Initialise MPI (argc/argv as for MPI_Init) and create the engine. On failure MPI may be up
 * already: the ranks have been told to shut down. */
int eng_pipe_new(struct engine *out, int *argc, char ***argv, const struct eng_pipe_config *pc,
                 char *err, size_t errsz);

/* For main when it must leave before the engine exists (a bad option): under a pipeline, bring
 * MPI up, send SHUTDOWN to every rank and finalize, so no rank is left waiting (a process that
 * leaves without MPI_Init makes the others hang in theirs). Returns status. */
int eng_pipe_early_exit(int status);

/* The engine's end (its destroy) sends SHUTDOWN to the ranks but skips MPI_Finalize, which can
 * hang for seconds over TCP: for the restart the supervisor asked for, which kills what is left
 * of the job anyway. Main thread, before the engine is destroyed. */
void eng_pipe_leave_fast(void);

#endif
