/* transport: moving protocol messages between ranks, with a deadline on every wait.
 *
 * Two layers. A backend (struct xport_ops + opaque state) offers nonblocking primitives only:
 * send, post a receive, test a request once, cancel a receive, probe for a waiting message. The
 * generic part here (transport.c, no MPI in it) builds the waits on top: every wait polls
 * against an absolute deadline (bt_now_ns() clock) and returns BT_ETIMEOUT when it passes,
 * idle waiting sleeps between polls, and received messages are checked (protocol.h) and
 * filtered by job epoch and step before the caller sees them. Backends: MPI
 * (transport_mpi.c, xport_mpi_init); an NCCL one can join behind the same table later.
 *
 * Why polling: on the MPICH 4.0.2 here a blocking MPI call spins a core at 100 %, and a dead,
 * stopped or cut-off peer never produces an MPI error (receives hang, sends "succeed"). So
 * nothing blocks: idle waiting is test + sleep. The idle sleep is idle_min (50 us) for 2 ms
 * after the last send or receive (a reply is likely soon), then doubles up to idle_max (2 ms):
 * about 1.5 % CPU once settled on this VM (each wake-up costs ~20 us of CPU here). While the
 * caller says a step is in flight (xport_set_busy), the wait spins (sched_yield between polls)
 * for spin_ns (200 us) after the last traffic, then polls every idle_min without backing off.
 * Pure spinning (xport_set_spin(x, UINT64_MAX)) is fastest only with a core per rank: with
 * more ranks than cores, a spinning rank starves the one it waits for (measured on this 2-core
 * VM under load: ~1 ms per hop spinning, ~0.1 ms sleeping).
 *
 * Messages: one MPI tag (XPORT_TAG) for all protocol messages, so messages from one sender
 * arrive in the order they were sent. A message is received only after a probe has seen it
 * (its size is known, capped by max_msg); a message past the cap is received into a small
 * buffer, which truncates and drops it.
 *
 * Ownership and threads: a struct xport belongs to exactly one thread at a time; on rank 0 the
 * scheduler thread alone owns it, on the other ranks the command loop. The MPI backend
 * initialises MPI with MPI_THREAD_SERIALIZED (any one thread at a time, so rank 0's scheduler
 * need not be the thread that called MPI_Init), or MPI_THREAD_MULTIPLE on request (this MPICH
 * provides it). Received messages live in the transport's buffer until the next receive.
 *
 * Faults (see ../shared/notes/mpich-faults.md): after a fault leave with _exit() after
 * xport_mark_faulted() + xport_free() (MPI_Finalize hangs when a peer died). With mpiexec
 * -disable-auto-cleanup, hydra sends SIGUSR1 to the survivors 3-5 ms after a rank exits; MPICH
 * chains it to an application handler only if that was installed before MPI_Init:
 * xport_mpi_install_sigusr1() before xport_mpi_init(), then poll xport_peer_exits(). The
 * notice does not say which rank died: heartbeats with deadlines find out. A cancelled send is
 * not reliable in this MPICH; a cancelled receive is (~70 us). */
#ifndef BATON_TRANSPORT_H
#define BATON_TRANSPORT_H

#include "protocol.h"

#include <stddef.h>
#include <stdint.h>

#define XPORT_ANY_SOURCE  (-1)
#define XPORT_TAG         0x4254 /* every protocol message */
#define XPORT_NO_DEADLINE UINT64_MAX

/* ---- backend interface -------------------------------------------------------------------- */

struct xport_status {
    int src; /* sending rank */
    int tag;
    size_t len;    /* bytes received / waiting */
    int cancelled; /* a cancelled receive completed without data */
};

/* Requests are small integer handles owned by the backend; test() frees a request when it
 * reports it done. Every function returns 0 or a negative BT_E* status with text in err. */
struct xport_ops {
    const char *name;
    /* Start sending buf[len] to rank dst; buf must stay untouched until the request is done. */
    int (*isend)(void *st, int dst, int tag, const void *buf, size_t len, int *req, char *err,
                 size_t errsz);
    /* Post a receive of at most cap bytes from src (or XPORT_ANY_SOURCE). A longer message
     * completes the request with BT_EFORMAT (truncated, dropped). */
    int (*irecv)(void *st, int src, int tag, void *buf, size_t cap, int *req, char *err,
                 size_t errsz);
    /* Check a request once; *done = 1 and *status filled when it completed. */
    int (*test)(void *st, int req, int *done, struct xport_status *status, char *err, size_t errsz);
    /* Ask to cancel a posted receive; test() then completes it (status->cancelled, or the
     * message that arrived first). */
    int (*cancel)(void *st, int req, char *err, size_t errsz);
    /* Is a message from src (or any source) waiting? *found, and its source and size. */
    int (*probe)(void *st, int src, int tag, int *found, struct xport_status *status, char *err,
                 size_t errsz);
    /* Release everything; finalize = 0 after a fault (no MPI_Finalize: it can hang). */
    void (*destroy)(void *st, int finalize);
    /* How many notices that a process of the job exited arrived so far (MPI: hydra's SIGUSR1);
     * NULL: the backend has no such notice (0). */
    unsigned (*peer_exits)(void *st);
};

/* ---- the transport ------------------------------------------------------------------------ */

struct xport;

struct xport_filter {
    int src;        /* XPORT_ANY_SOURCE or one rank */
    uint64_t epoch; /* messages of another job epoch are dropped (HANDSHAKE exempt) */
    /* FORWARD, TOKENS and ERROR with a step outside [step_min, step_max] are dropped: late
     * replies to an abandoned step. Control messages are not filtered by step. */
    uint64_t step_min, step_max;
};

struct xport_stats {
    uint64_t n_sent, n_recv; /* messages */
    uint64_t bytes_sent, bytes_recv;
    uint64_t n_dropped; /* stale epoch / step */
    uint64_t n_bad;     /* malformed, oversized, or lying about the sender */
    uint64_t n_timeouts;
    uint64_t n_cancelled; /* receives cancelled at a deadline */
};

/* Wrap a backend (takes ownership of st: ops->destroy runs in xport_free, also on failure). */
int xport_create(const struct xport_ops *ops, void *st, int rank, int size, struct xport **out,
                 char *err, size_t errsz);
/* Waits for outstanding sends briefly (up to 1 s), then destroys the backend; NULL is fine.
 * After xport_mark_faulted, nothing is waited for and MPI is not finalized. */
void xport_free(struct xport *x);
void xport_mark_faulted(struct xport *x);

int xport_rank(const struct xport *x);
int xport_size(const struct xport *x);
const char *xport_name(const struct xport *x);

/* Polling policy. busy (a step is in flight): spin for spin_ns after the last traffic, then
 * poll every min_ns. Idle: sleep min_ns for 2 ms after the last send or receive, then doubling
 * up to max_ns. Defaults: spin 200 us, min 50 us, max 2 ms. */
void xport_set_busy(struct xport *x, int busy);
void xport_set_spin(struct xport *x, uint64_t spin_ns);
void xport_set_idle_sleep(struct xport *x, uint64_t min_ns, uint64_t max_ns);
/* Largest message accepted (header included); default PROTO_HDR_SIZE + 64 MiB. */
void xport_set_max_msg(struct xport *x, size_t bytes);

/* Send the complete message in msg to rank dst. The transport takes msg's bytes without a copy
 * (msg gets a spare buffer back: empty, reusable) and returns at once; the send completes in
 * the background. The deadline bounds the delivery: BT_ETIMEOUT from a later xport_send or
 * xport_flush names a send still not delivered past its deadline (the peer is stuck). */
int xport_send(struct xport *x, int dst, struct proto_buf *msg, uint64_t deadline_ns, char *err,
               size_t errsz);
/* Wait until every outstanding send has completed, or the deadline. */
int xport_flush(struct xport *x, uint64_t deadline_ns, char *err, size_t errsz);
/* A send the backend fails (over UCX TCP: the connection to a peer that exited or was reset;
 * on one host a dead peer fails nothing) is reported once, with BT_EIO from xport_send, or from
 * a later xport_send, xport_flush or xport_recv that finds it completed with an error; the
 * error text names the destination. After a BT_EIO, this returns that destination (and forgets
 * it), or -1 when no send failed since the last call: the failure was the transport's own (a
 * receive). So a caller tells a lost peer from a broken local transport. */
int xport_take_failed_peer(struct xport *x);

/* Wait for the next message that passes f (NULL: any source, no filtering) and decode it into
 * m (payload arrays borrowed from the transport until the next receive). Stale messages are
 * dropped and counted on the way. Returns 0; BT_ETIMEOUT when the deadline passed with nothing;
 * BT_EFORMAT when a malformed message arrived (it is dropped, m->hdr.sender is set to its MPI
 * source rank, err says what was wrong; the caller goes on); BT_EIO on a transport error. */
int xport_recv(struct xport *x, const struct xport_filter *f, uint64_t deadline_ns,
               struct proto_msg *m, char *err, size_t errsz);
/* The raw bytes of the message xport_recv last returned (also for BT_EFORMAT). */
const uint8_t *xport_last_bytes(const struct xport *x, size_t *len);

/* Is a message from src (or XPORT_ANY_SOURCE) waiting? Never blocks. */
int xport_probe(struct xport *x, int src, int *found, char *err, size_t errsz);

/* A raw posted receive into buf[cap] (no protocol checks) and its wait: when the deadline
 * passes the receive is cancelled and BT_ETIMEOUT returned, unless the message won the race
 * (then 0). */
int xport_post_recv(struct xport *x, int src, void *buf, size_t cap, int *req, char *err,
                    size_t errsz);
int xport_wait(struct xport *x, int req, uint64_t deadline_ns, struct xport_status *status,
               char *err, size_t errsz);

void xport_get_stats(const struct xport *x, struct xport_stats *out);

/* How many times the backend heard that a process of the job exited (it does not say which:
 * heartbeats with deadlines find out). 0 for a backend without such notices. */
unsigned xport_peer_exits(const struct xport *x);

/* The number of processes of the job this process was launched in (MPI: the launcher's
 * PMI_SIZE), 1 when it was not launched as part of a job. Needs no transport: a process asks it
 * to choose between running alone and being rank 0 of a pipeline. */
int xport_job_size(void);

/* ---- MPI backend (transport_mpi.c; the only file that includes mpi.h) ---------------------- */

/* Initialise MPI (if not yet) with MPI_THREAD_SERIALIZED, or MULTIPLE when want_multiple, on
 * a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN. xport_free finalizes MPI. */
int xport_mpi_init(int *argc, char ***argv, int want_multiple, struct xport **out, char *err,
                   size_t errsz);
/* Install the SIGUSR1 handler (before xport_mpi_init, see above); its notices are counted by
 * xport_peer_exits. */
int xport_mpi_install_sigusr1(char *err, size_t errsz);

#endif
