/* transport_mpi: the MPI backend of the transport (see transport.h), nonblocking calls only:
 * MPI_Isend, MPI_Irecv, MPI_Test, MPI_Iprobe, MPI_Cancel. The only file of baton that includes
 * mpi.h. Requests live in a slot table owned by the backend state (one thread at a time, like
 * the struct xport that owns it). */
#include "transport.h"

#include "log.h"

#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* MPI_Finalize after a clean SHUTDOWN can still hang over UCX TCP across hosts (about one run in
 * three in the network-namespace harness): every rank has finished its work by then, so a
 * watchdog ends the process with status 0 once this grace has passed. */
#define FINALIZE_GRACE_S 5

struct mpi_state {
    MPI_Comm comm;
    MPI_Request *reqs; /* (cap) MPI_REQUEST_NULL when free */
    int cap;
    int we_init; /* MPI_Init was ours: finalize it */
};

/* MPICH's error string is a multi-line stack ("Other MPI error, error stack:\n" then one line
 * per layer, the cause last, e.g. "MPIDI_UCX_send(83).:  returned failed request in UCX netmod
 * (... Endpoint timeout)"): keep its first line and the cause, on one line. */
static int mpi_fail(int mpirc, const char *what, char *err, size_t errsz)
{
    char text[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(mpirc, text, &n) != MPI_SUCCESS) n = 0;
    text[n < MPI_MAX_ERROR_STRING ? (n > 0 ? n : 0) : MPI_MAX_ERROR_STRING - 1] = 0;
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' ')) text[--n] = 0;
    char *nl = strchr(text, '\n');
    if (!nl) return bt_errf(err, errsz, BT_EIO, "%s: %s", what, n ? text : "MPI error");
    *nl = 0;
    char *stack = strstr(text, ", error stack:");
    if (stack) *stack = 0;
    const char *cause = strrchr(nl + 1, '\n');
    cause = cause ? cause + 1 : nl + 1;
    const char *colon = strstr(cause, ":"); /* "FUNC(LINE).: the cause" */
    if (colon) cause = colon + 1;
    while (*cause == ' ') cause++;
    return bt_errf(err, errsz, BT_EIO, "%s: %s (%s)", what, text, cause);
}

static int slot_get(struct mpi_state *s, int *slot, char *err, size_t errsz)
{
    for (int i = 0; i < s->cap; i++)
        if (s->reqs[i] == MPI_REQUEST_NULL) {
            *slot = i;
            return BT_OK;
        }
    int ncap = s->cap ? s->cap * 2 : 16;
    MPI_Request *r = realloc(s->reqs, (size_t)ncap * sizeof(*r));
    if (!r) return bt_errf(err, errsz, BT_ENOMEM, "no memory for MPI requests");
    for (int i = s->cap; i < ncap; i++) r[i] = MPI_REQUEST_NULL;
    *slot = s->cap;
    s->reqs = r;
    s->cap = ncap;
    return BT_OK;
}

static int slot_ok(const struct mpi_state *s, int req, char *err, size_t errsz)
{
    if (req < 0 || req >= s->cap || s->reqs[req] == MPI_REQUEST_NULL)
        return bt_errf(err, errsz, BT_EINVAL, "no MPI request %d", req);
    return BT_OK;
}

static int mpi_isend(void *st, int dst, int tag, const void *buf, size_t len, int *req, char *err,
                     size_t errsz)
{
    struct mpi_state *s = st;
    int slot = -1, rc;
    if (len > INT_MAX) return bt_errf(err, errsz, BT_EINVAL, "message of %zu bytes", len);
    if ((rc = slot_get(s, &slot, err, errsz)) < 0) return rc;
    rc = MPI_Isend(buf, (int)len, MPI_BYTE, dst, tag, s->comm, &s->reqs[slot]);
    if (rc != MPI_SUCCESS) {
        s->reqs[slot] = MPI_REQUEST_NULL;
        return mpi_fail(rc, "MPI_Isend", err, errsz);
    }
    *req = slot;
    return BT_OK;
}

static int mpi_irecv(void *st, int src, int tag, void *buf, size_t cap, int *req, char *err,
                     size_t errsz)
{
    struct mpi_state *s = st;
    int slot = -1, rc;
    if (cap > INT_MAX) cap = INT_MAX;
    if ((rc = slot_get(s, &slot, err, errsz)) < 0) return rc;
    rc = MPI_Irecv(buf, (int)cap, MPI_BYTE, src == XPORT_ANY_SOURCE ? MPI_ANY_SOURCE : src, tag,
                   s->comm, &s->reqs[slot]);
    if (rc != MPI_SUCCESS) {
        s->reqs[slot] = MPI_REQUEST_NULL;
        return mpi_fail(rc, "MPI_Irecv", err, errsz);
    }
    *req = slot;
    return BT_OK;
}

static size_t status_len(MPI_Status *ms)
{
    int n = 0;
    if (MPI_Get_count(ms, MPI_BYTE, &n) != MPI_SUCCESS || n == MPI_UNDEFINED || n < 0)
        return SIZE_MAX; /* too large to count in an int: past any cap */
    return (size_t)n;
}

static int mpi_test(void *st, int req, int *done, struct xport_status *out, char *err, size_t errsz)
{
    struct mpi_state *s = st;
    MPI_Status ms;
    int flag = 0, rc, cls = 0;
    *done = 0;
    if ((rc = slot_ok(s, req, err, errsz)) < 0) return rc;
    memset(&ms, 0, sizeof(ms));
    rc = MPI_Test(&s->reqs[req], &flag, &ms);
    if (rc != MPI_SUCCESS) {
        /* An erroneous completion frees the request (MPICH sets it to MPI_REQUEST_NULL). */
        if (s->reqs[req] != MPI_REQUEST_NULL) MPI_Request_free(&s->reqs[req]);
        s->reqs[req] = MPI_REQUEST_NULL;
        *done = 1;
        MPI_Error_class(rc, &cls);
        if (cls == MPI_ERR_TRUNCATE)
            return bt_errf(err, errsz, BT_EFORMAT,
                           "message longer than the receive buffer: "
                           "truncated and dropped");
        return mpi_fail(rc, "MPI_Test", err, errsz);
    }
    if (!flag) return BT_OK;
    s->reqs[req] = MPI_REQUEST_NULL;
    *done = 1;
    memset(out, 0, sizeof(*out));
    int cancelled = 0;
    MPI_Test_cancelled(&ms, &cancelled);
    out->cancelled = cancelled;
    if (!cancelled) {
        out->src = ms.MPI_SOURCE;
        out->tag = ms.MPI_TAG;
        out->len = status_len(&ms);
    }
    return BT_OK;
}

static int mpi_cancel(void *st, int req, char *err, size_t errsz)
{
    struct mpi_state *s = st;
    int rc = slot_ok(s, req, err, errsz);
    if (rc < 0) return rc;
    rc = MPI_Cancel(&s->reqs[req]);
    return rc == MPI_SUCCESS ? BT_OK : mpi_fail(rc, "MPI_Cancel", err, errsz);
}

static int mpi_probe(void *st, int src, int tag, int *found, struct xport_status *out, char *err,
                     size_t errsz)
{
    struct mpi_state *s = st;
    MPI_Status ms;
    int flag = 0;
    memset(&ms, 0, sizeof(ms));
    int from = src == XPORT_ANY_SOURCE ? MPI_ANY_SOURCE : src;
    /* MPICH's Iprobe looks before it makes progress: a message that arrived since the last
     * call is seen only by the next one. Looking twice saves a whole poll interval (measured
     * with a 2 ms poll: 3.4 ms mean one-way time with one look, 1.5 ms with two). */
    int rc = MPI_Iprobe(from, tag, s->comm, &flag, &ms);
    if (rc == MPI_SUCCESS && !flag) rc = MPI_Iprobe(from, tag, s->comm, &flag, &ms);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Iprobe", err, errsz);
    *found = flag;
    memset(out, 0, sizeof(*out));
    if (flag) {
        out->src = ms.MPI_SOURCE;
        out->tag = ms.MPI_TAG;
        out->len = status_len(&ms);
    }
    return BT_OK;
}

struct finalize_watch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
};

static void *finalize_watchdog(void *arg)
{
    struct finalize_watch *w = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += FINALIZE_GRACE_S;
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    while (!w->done && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&w->cv, &w->mu, &until);
    int done = w->done;
    pthread_mutex_unlock(&w->mu);
    if (!done) {
        bt_warn("MPI_Finalize still running after %d s; leaving without it", FINALIZE_GRACE_S);
        fflush(NULL);
        _exit(0);
    }
    return NULL;
}

/* MPI_Finalize, bounded by FINALIZE_GRACE_S (see above). */
static void finalize_bounded(void)
{
    struct finalize_watch w = {.done = 0};
    pthread_t th;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int have = pthread_create(&th, NULL, finalize_watchdog, &w) == 0;
    MPI_Finalize();
    if (have) {
        pthread_mutex_lock(&w.mu);
        w.done = 1;
        pthread_cond_signal(&w.cv);
        pthread_mutex_unlock(&w.mu);
        pthread_join(th, NULL);
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
}

static void mpi_destroy(void *st, int finalize)
{
    struct mpi_state *s = st;
    if (!s) return;
    if (finalize) {
        /* Receives still posted are cancelled; anything else is let go. */
        for (int i = 0; i < s->cap; i++)
            if (s->reqs[i] != MPI_REQUEST_NULL) {
                MPI_Cancel(&s->reqs[i]);
                MPI_Request_free(&s->reqs[i]);
            }
        if (s->comm != MPI_COMM_NULL) MPI_Comm_free(&s->comm);
        int fin = 0;
        MPI_Finalized(&fin);
        if (s->we_init && !fin) finalize_bounded();
    }
    free(s->reqs);
    free(s);
}

static volatile sig_atomic_t peer_exits;

static unsigned mpi_peer_exits(void *st)
{
    (void)st;
    return (unsigned)peer_exits;
}

static const struct xport_ops mpi_ops = {
    .name = "mpi",
    .isend = mpi_isend,
    .irecv = mpi_irecv,
    .test = mpi_test,
    .cancel = mpi_cancel,
    .probe = mpi_probe,
    .destroy = mpi_destroy,
    .peer_exits = mpi_peer_exits,
};

int xport_mpi_init(int *argc, char ***argv, int want_multiple, struct xport **out, char *err,
                   size_t errsz)
{
    struct mpi_state *s = NULL;
    int inited = 0, provided = 0, rank = 0, size = 0, rc;
    int want = want_multiple ? MPI_THREAD_MULTIPLE : MPI_THREAD_SERIALIZED;
    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (!s) return bt_errf(err, errsz, BT_ENOMEM, "no memory for the MPI transport");
    s->comm = MPI_COMM_NULL;
    MPI_Initialized(&inited);
    if (!inited) {
        rc = MPI_Init_thread(argc, argv, want, &provided);
        if (rc != MPI_SUCCESS) {
            rc = mpi_fail(rc, "MPI_Init_thread", err, errsz);
            goto fail;
        }
        s->we_init = 1;
    } else {
        MPI_Query_thread(&provided);
    }
    if (provided < want) {
        rc = bt_errf(err, errsz, BT_EUNSUP, "MPI provides thread level %d, %d needed", provided,
                     want);
        goto fail;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &s->comm);
    if (rc != MPI_SUCCESS) {
        s->comm = MPI_COMM_NULL;
        rc = mpi_fail(rc, "MPI_Comm_dup", err, errsz);
        goto fail;
    }
    MPI_Comm_set_errhandler(s->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(s->comm, &rank);
    MPI_Comm_size(s->comm, &size);
    if (size > PROTO_MAX_RANKS) {
        rc = bt_errf(err, errsz, BT_EUNSUP, "%d ranks, at most %d", size, PROTO_MAX_RANKS);
        goto fail;
    }
    return xport_create(&mpi_ops, s, rank, size, out, err, errsz); /* owns s, even on failure */
fail:
    mpi_destroy(s, 1);
    return rc;
}

static void on_sigusr1(int sig)
{
    (void)sig;
    peer_exits = peer_exits + 1;
}

int xport_mpi_install_sigusr1(char *err, size_t errsz)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited)
        return bt_errf(err, errsz, BT_EINVAL,
                       "the SIGUSR1 handler must be installed before MPI_Init (MPICH chains "
                       "only to a handler it finds there)");
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        return bt_errf(err, errsz, BT_EIO, "sigaction(SIGUSR1) failed");
    return BT_OK;
}

int xport_job_size(void)
{
    const char *s = getenv("PMI_SIZE"); /* set by hydra for every process of the job */
    char *end;
    long n = s && *s ? strtol(s, &end, 10) : 1;
    return s && *s && (*end || n < 1 || n > PROTO_MAX_RANKS) ? 1 : (int)n;
}
