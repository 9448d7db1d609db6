/* rankd loop: the life of baton-rankd (pipeline ranks 1..R-1) once MPI is up.
 *
 * Startup: open the model, take this rank's layer range from the split (stage.h; the same
 * options as rank 0 give the same split), send rank 0 a HANDSHAKE at once (identity, layers,
 * state LOADING), load the stage while sending progress (and answering rank 0 between layers),
 * then HANDSHAKE READY. A startup failure (bad option, model file, split) is sent to rank 0 as an
 * ERROR naming this rank and host; the rank then stays in the loop, answering HEARTBEAT with
 * state FAILED, until rank 0 sends SHUTDOWN.
 *
 * The loop: wait for the next message (the transport's sleeping poll while idle), dispatch it
 * through an opcode -> handler table, wait again. FORWARD (from rank-1): run the stage over the
 * activations; pass a FORWARD to rank+1, or on the last stage sample and send TOKENS to rank 0.
 * An error in one request (bad sequence id, KV full, non-finite logits) becomes an ERROR (or a
 * TOKENS item with an error) for that step, and the loop goes on. HEARTBEAT, STATS_REQUEST:
 * answered at once. SHUTDOWN ends the loop (exit 0, MPI finalized). Messages of another epoch,
 * an old step or from the wrong rank are dropped.
 *
 * Threads: everything runs on the calling thread (plus the compute pool inside fwd_eval). */
#ifndef BATON_RANKD_LOOP_H
#define BATON_RANKD_LOOP_H

struct cfg_stage;
struct xport;

/* Run the rank until SHUTDOWN. x is borrowed (the caller frees it). cfg_err: the text of a
 * configuration error main found (c is then not used), or NULL. Returns the process's exit
 * status (exitcodes.h); *faulted is set when the rank must leave without MPI_Finalize (a peer of
 * the job exited, or the transport failed): then xport_mark_faulted, xport_free and _exit. */
int rankd_run(struct xport *x, const struct cfg_stage *c, const char *cfg_err, int *faulted);

#endif
