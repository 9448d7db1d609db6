/* transport: deadline-bounded waits, idle/busy polling, send bookkeeping and the epoch/step
 * filter over a backend's nonblocking primitives (see transport.h). No MPI here. */
#include "transport.h"

#include "log.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XPORT_MAX_SENDS 256           /* outstanding sends before xport_send waits for the oldest */
#define XPORT_POOL      8             /* spare send buffers kept for reuse */
#define XPORT_GRACE_NS  1000000000ull /* settling a cancel; flushing in xport_free */
#define XPORT_HOT_NS    2000000ull    /* after traffic, poll at idle_min this long */
#define XPORT_TAKE_NS   50000000ull   /* receiving a probed message, at least */

struct xsend {
    int req;
    int dst;
    uint8_t opcode; /* of the message, for error text */
    uint64_t step;
    uint64_t deadline;
    int reported; /* overdue already reported */
    struct proto_buf buf;
};

struct xport {
    const struct xport_ops *ops;
    void *st;
    int rank, size;
    int busy;
    int faulted;
    int failed_peer; /* destination of the last send the backend failed, -1 none (taken) */
    uint64_t idle_min, idle_max, sleep_ns; /* current idle sleep */
    uint64_t last_traffic;                 /* bt_now_ns() of the last send / receive */
    uint64_t spin_ns;                      /* busy: spin this long after traffic */
    size_t max_msg;
    struct xsend *sends; /* (n_sends) oldest first */
    size_t n_sends, cap_sends;
    struct proto_buf pool[XPORT_POOL];
    size_t n_pool;
    struct proto_buf rbuf; /* last received message */
    uint8_t drop[64];      /* receives oversized messages (truncated) */
    struct xport_stats stats;
};

int xport_create(const struct xport_ops *ops, void *st, int rank, int size, struct xport **out,
                 char *err, size_t errsz)
{
    *out = NULL;
    struct xport *x = calloc(1, sizeof(*x));
    if (!x) {
        ops->destroy(st, 1);
        return bt_errf(err, errsz, BT_ENOMEM, "no memory for the transport");
    }
    x->ops = ops;
    x->st = st;
    x->rank = rank;
    x->size = size;
    x->idle_min = 50000;
    x->idle_max = 2000000;
    x->sleep_ns = x->idle_min;
    x->spin_ns = 200000;
    x->failed_peer = -1;
    x->max_msg = PROTO_HDR_SIZE + (64u << 20);
    *out = x;
    return BT_OK;
}

int xport_rank(const struct xport *x)
{
    return x->rank;
}

int xport_size(const struct xport *x)
{
    return x->size;
}

const char *xport_name(const struct xport *x)
{
    return x->ops->name;
}

void xport_set_busy(struct xport *x, int busy)
{
    x->busy = busy != 0;
}

void xport_set_idle_sleep(struct xport *x, uint64_t min_ns, uint64_t max_ns)
{
    x->idle_min = min_ns ? min_ns : 1000;
    x->idle_max = max_ns < x->idle_min ? x->idle_min : max_ns;
    x->sleep_ns = x->idle_min;
}

void xport_set_spin(struct xport *x, uint64_t spin_ns)
{
    x->spin_ns = spin_ns;
}

void xport_set_max_msg(struct xport *x, size_t bytes)
{
    x->max_msg = bytes < PROTO_HDR_SIZE ? PROTO_HDR_SIZE : bytes;
}

void xport_get_stats(const struct xport *x, struct xport_stats *out)
{
    *out = x->stats;
}

unsigned xport_peer_exits(const struct xport *x)
{
    return x->ops->peer_exits ? x->ops->peer_exits(x->st) : 0;
}

void xport_mark_faulted(struct xport *x)
{
    x->faulted = 1;
}

int xport_take_failed_peer(struct xport *x)
{
    int k = x->failed_peer;
    x->failed_peer = -1;
    return k;
}

const uint8_t *xport_last_bytes(const struct xport *x, size_t *len)
{
    *len = x->rbuf.len;
    return x->rbuf.data;
}

/* One pause between two polls. Busy: a yield for spin_ns after the last traffic, then idle_min
 * sleeps. Idle: idle_min sleeps during the hot window after the last traffic (a reply is likely
 * soon), then a sleep that doubles up to idle_max. Never past the deadline. */
static void poll_pause(struct xport *x, uint64_t deadline)
{
    uint64_t ns = x->sleep_ns, now = bt_now_ns();
    if (x->busy) {
        if (now - x->last_traffic < x->spin_ns) { /* spin, letting a core-mate run first */
            sched_yield();
            return;
        }
        ns = x->idle_min; /* then fast polling that still sleeps (see transport.h) */
    }
    if (deadline <= now) return;
    if (deadline - now < ns) ns = deadline - now;
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
    if (!x->busy && now - x->last_traffic >= XPORT_HOT_NS)
        x->sleep_ns = x->sleep_ns * 2 > x->idle_max ? x->idle_max : x->sleep_ns * 2;
}

/* Traffic: the next answer is likely soon, so poll often again. */
static void activity(struct xport *x)
{
    x->sleep_ns = x->idle_min;
    x->last_traffic = bt_now_ns();
}

static void pool_put(struct xport *x, struct proto_buf *b)
{
    b->len = 0;
    if (x->n_pool < XPORT_POOL)
        x->pool[x->n_pool++] = *b;
    else
        proto_buf_free(b);
    memset(b, 0, sizeof(*b));
}

/* Test every outstanding send once; completed ones give their buffer to the pool. A send the
 * backend completed with an error (over TCP: the peer's connection is gone) is dropped too, so
 * it is reported once: the first such error is returned, naming the destination, which is also
 * remembered for xport_take_failed_peer. */
static int reap_sends(struct xport *x, char *err, size_t errsz)
{
    size_t k = 0;
    int rc = BT_OK;
    for (size_t i = 0; i < x->n_sends; i++) {
        struct xsend *s = &x->sends[i];
        int done = 0;
        struct xport_status st;
        if (rc == BT_OK) {
            char why[384];
            int trc = x->ops->test(x->st, s->req, &done, &st, why, sizeof(why));
            if (trc < 0) { /* the backend freed the request: the send is over */
                done = 1;
                x->failed_peer = s->dst;
                rc = bt_errf(err, errsz, trc, "%s (step %llu) to rank %d failed: %s",
                             s->opcode ? proto_op_name(s->opcode) : "message",
                             (unsigned long long)s->step, s->dst, why);
            }
        }
        if (done)
            pool_put(x, &s->buf);
        else
            x->sends[k++] = *s;
    }
    x->n_sends = k;
    return rc;
}

/* BT_ETIMEOUT for the first send past its deadline that was not reported yet. */
static int overdue_send(struct xport *x, uint64_t now, char *err, size_t errsz)
{
    for (size_t i = 0; i < x->n_sends; i++) {
        struct xsend *s = &x->sends[i];
        if (s->reported || now < s->deadline) continue;
        s->reported = 1;
        x->stats.n_timeouts++;
        return bt_errf(err, errsz, BT_ETIMEOUT,
                       "%s (step %llu, %zu bytes) to rank %d not delivered by its deadline "
                       "(rank %d stuck or gone?)",
                       s->opcode ? proto_op_name(s->opcode) : "message",
                       (unsigned long long)s->step, s->buf.len, s->dst, s->dst);
    }
    return BT_OK;
}

int xport_send(struct xport *x, int dst, struct proto_buf *msg, uint64_t deadline_ns, char *err,
               size_t errsz)
{
    int rc;
    if (dst < 0 || dst >= x->size)
        return bt_errf(err, errsz, BT_EINVAL, "send to rank %d of %d", dst, x->size);
    if ((rc = reap_sends(x, err, errsz)) < 0) return rc;
    if ((rc = overdue_send(x, bt_now_ns(), err, errsz)) < 0) return rc;
    while (x->n_sends >= XPORT_MAX_SENDS) { /* wait for the oldest */
        if ((rc = reap_sends(x, err, errsz)) < 0) return rc;
        if (x->n_sends < XPORT_MAX_SENDS) break;
        uint64_t now = bt_now_ns();
        if ((rc = overdue_send(x, now, err, errsz)) < 0) return rc;
        if (now >= deadline_ns) {
            x->stats.n_timeouts++;
            return bt_errf(err, errsz, BT_ETIMEOUT, "%d sends outstanding, none completed",
                           XPORT_MAX_SENDS);
        }
        poll_pause(x, deadline_ns);
    }
    if (x->n_sends == x->cap_sends) {
        size_t ncap = x->cap_sends ? x->cap_sends * 2 : 16;
        struct xsend *ns = realloc(x->sends, ncap * sizeof(*ns));
        if (!ns) return bt_errf(err, errsz, BT_ENOMEM, "no memory for the send list");
        x->sends = ns;
        x->cap_sends = ncap;
    }
    struct xsend *s = &x->sends[x->n_sends];
    memset(s, 0, sizeof(*s));
    s->dst = dst;
    s->deadline = deadline_ns;
    if (msg->len >= PROTO_HDR_SIZE && !memcmp(msg->data, "BATN", 4)) {
        s->opcode = msg->data[6]; /* opcode and step, for error text only */
        for (int i = 7; i >= 0; i--) s->step = s->step << 8 | msg->data[24 + i];
    }
    s->buf = *msg; /* take the bytes; the caller gets a spare buffer */
    if (x->n_pool)
        *msg = x->pool[--x->n_pool];
    else
        memset(msg, 0, sizeof(*msg));
    char why[384];
    rc = x->ops->isend(x->st, dst, XPORT_TAG, s->buf.data, s->buf.len, &s->req, why, sizeof(why));
    if (rc < 0) { /* hand the bytes back */
        x->failed_peer = dst;
        pool_put(x, msg);
        *msg = s->buf;
        return bt_errf(err, errsz, rc, "%s (step %llu) to rank %d failed: %s",
                       s->opcode ? proto_op_name(s->opcode) : "message",
                       (unsigned long long)s->step, dst, why);
    }
    x->n_sends++;
    x->stats.n_sent++;
    x->stats.bytes_sent += s->buf.len;
    activity(x);
    return BT_OK;
}

int xport_flush(struct xport *x, uint64_t deadline_ns, char *err, size_t errsz)
{
    for (;;) {
        int rc = reap_sends(x, err, errsz);
        if (rc < 0) return rc;
        if (!x->n_sends) return BT_OK;
        uint64_t now = bt_now_ns();
        if ((rc = overdue_send(x, now, err, errsz)) < 0) return rc;
        if (now >= deadline_ns) {
            struct xsend *s = &x->sends[0];
            x->stats.n_timeouts++;
            return bt_errf(err, errsz, BT_ETIMEOUT,
                           "%zu sends not delivered, the oldest %s to rank %d", x->n_sends,
                           s->opcode ? proto_op_name(s->opcode) : "message", s->dst);
        }
        poll_pause(x, deadline_ns);
    }
}

int xport_probe(struct xport *x, int src, int *found, char *err, size_t errsz)
{
    struct xport_status st;
    return x->ops->probe(x->st, src, XPORT_TAG, found, &st, err, errsz);
}

int xport_post_recv(struct xport *x, int src, void *buf, size_t cap, int *req, char *err,
                    size_t errsz)
{
    return x->ops->irecv(x->st, src, XPORT_TAG, buf, cap, req, err, errsz);
}

int xport_wait(struct xport *x, int req, uint64_t deadline_ns, struct xport_status *status,
               char *err, size_t errsz)
{
    int done = 0, rc;
    memset(status, 0, sizeof(*status));
    for (;;) {
        if ((rc = x->ops->test(x->st, req, &done, status, err, errsz)) < 0) return rc;
        if (done) {
            activity(x);
            return BT_OK;
        }
        if (bt_now_ns() >= deadline_ns) break;
        poll_pause(x, deadline_ns);
    }
    /* Deadline: cancel the receive, so a late message is not swallowed by it. The cancel
     * settles within ~100 us here; a message that arrived first completes it normally. */
    x->stats.n_timeouts++;
    if ((rc = x->ops->cancel(x->st, req, err, errsz)) < 0) return rc;
    uint64_t limit = bt_now_ns() + XPORT_GRACE_NS;
    for (;;) {
        if ((rc = x->ops->test(x->st, req, &done, status, err, errsz)) < 0) return rc;
        if (done) break;
        if (bt_now_ns() >= limit)
            return bt_errf(err, errsz, BT_EIO, "cancelled receive did not settle in 1 s");
    }
    if (!status->cancelled) return BT_OK; /* the message won the race */
    x->stats.n_cancelled++;
    return bt_errf(err, errsz, BT_ETIMEOUT, "receive timed out and was cancelled");
}

/* Receive the probed message (st) into rbuf; an oversized one is truncated into drop[]. A
 * message already seen gets at least XPORT_TAKE_NS to arrive whole, even at the deadline. */
static int recv_probed(struct xport *x, const struct xport_status *pst, uint64_t deadline,
                       char *err, size_t errsz)
{
    struct xport_status st;
    int req, rc;
    uint64_t min_deadline = bt_now_ns() + XPORT_TAKE_NS;
    if (deadline < min_deadline) deadline = min_deadline;
    x->rbuf.len = 0;
    if (pst->len > x->max_msg) {
        rc = x->ops->irecv(x->st, pst->src, XPORT_TAG, x->drop, sizeof(x->drop), &req, err, errsz);
        if (rc < 0) return rc;
        rc = xport_wait(x, req, deadline, &st, err, errsz);
        if (rc < 0 && rc != BT_EFORMAT) return rc;
        x->stats.n_bad++;
        return bt_errf(err, errsz, BT_EFORMAT,
                       "message of %zu bytes from rank %d exceeds the cap of %zu bytes; dropped",
                       pst->len, pst->src, x->max_msg);
    }
    if (proto_buf_reserve(&x->rbuf, pst->len ? pst->len : 1) < 0)
        return bt_errf(err, errsz, BT_ENOMEM, "no memory for a %zu-byte message", pst->len);
    rc = x->ops->irecv(x->st, pst->src, XPORT_TAG, x->rbuf.data, pst->len, &req, err, errsz);
    if (rc < 0) return rc;
    if ((rc = xport_wait(x, req, deadline, &st, err, errsz)) < 0) {
        if (rc == BT_EFORMAT) x->stats.n_bad++;
        return rc;
    }
    x->rbuf.len = st.len;
    return BT_OK;
}

/* Is a well-formed message one the caller expects? */
static int wanted(const struct xport_filter *f, const struct proto_hdr *h)
{
    if (!f) return 1;
    if (h->opcode != PROTO_OP_HANDSHAKE && h->epoch != f->epoch) return 0;
    if (h->opcode == PROTO_OP_FORWARD || h->opcode == PROTO_OP_TOKENS ||
        h->opcode == PROTO_OP_ERROR)
        return h->step >= f->step_min && h->step <= f->step_max;
    return 1;
}

int xport_recv(struct xport *x, const struct xport_filter *f, uint64_t deadline_ns,
               struct proto_msg *m, char *err, size_t errsz)
{
    int src = f ? f->src : XPORT_ANY_SOURCE;
    char why[384];
    int rc;
    x->rbuf.len = 0;
    for (;;) {
        struct xport_status st;
        int found = 0;
        if ((rc = reap_sends(x, err, errsz)) < 0) return rc;
        if ((rc = x->ops->probe(x->st, src, XPORT_TAG, &found, &st, err, errsz)) < 0) return rc;
        if (!found) {
            if (bt_now_ns() >= deadline_ns) {
                x->stats.n_timeouts++;
                if (src == XPORT_ANY_SOURCE)
                    return bt_errf(err, errsz, BT_ETIMEOUT, "no message before the deadline");
                return bt_errf(err, errsz, BT_ETIMEOUT,
                               "no message from rank %d before the deadline", src);
            }
            poll_pause(x, deadline_ns);
            continue;
        }
        activity(x);
        memset(&m->hdr, 0, sizeof(m->hdr));
        m->hdr.sender = (uint32_t)st.src;
        rc = recv_probed(x, &st, deadline_ns, why, sizeof(why));
        if (rc == BT_EFORMAT) return bt_errf(err, errsz, rc, "%s", why);
        if (rc < 0) return bt_errf(err, errsz, rc, "receive from rank %d: %s", st.src, why);
        rc = proto_hdr_decode(x->rbuf.data, x->rbuf.len, &m->hdr, why, sizeof(why));
        if (rc == BT_OK && m->hdr.sender != (uint32_t)st.src)
            rc = bt_errf(why, sizeof(why), BT_EFORMAT, "%s claims to come from rank %u",
                         proto_op_name(m->hdr.opcode), m->hdr.sender);
        if (rc == BT_OK && !wanted(f, &m->hdr)) {
            x->stats.n_dropped++;
            bt_debug("dropped %s from rank %d: epoch %llu step %llu not expected",
                     proto_op_name(m->hdr.opcode), st.src, (unsigned long long)m->hdr.epoch,
                     (unsigned long long)m->hdr.step);
            if (bt_now_ns() >= deadline_ns) {
                x->stats.n_timeouts++;
                return bt_errf(err, errsz, BT_ETIMEOUT, "only stale messages before the deadline");
            }
            continue;
        }
        if (rc == BT_OK)
            rc = proto_decode_payload(m, x->rbuf.data + PROTO_HDR_SIZE, why, sizeof(why));
        if (rc < 0) {
            x->stats.n_bad++;
            m->hdr.sender = (uint32_t)st.src;
            return bt_errf(err, errsz, BT_EFORMAT,
                           "bad message from rank %d (%zu bytes): %s; dropped", st.src, x->rbuf.len,
                           why);
        }
        x->stats.n_recv++;
        x->stats.bytes_recv += x->rbuf.len;
        return BT_OK;
    }
}

void xport_free(struct xport *x)
{
    if (!x) return;
    int finalize = !x->faulted;
    if (finalize && x->n_sends) {
        char err[256];
        if (xport_flush(x, bt_now_ns() + XPORT_GRACE_NS, err, sizeof(err)) < 0) {
            bt_warn("transport: %s; leaving without finalizing", err);
            finalize = 0;
        }
    }
    /* Buffers of sends still outstanding may be read by the backend until the process ends:
     * they are left alone (the process is about to _exit). */
    if (!finalize) x->n_sends = 0;
    for (size_t i = 0; i < x->n_sends; i++) proto_buf_free(&x->sends[i].buf);
    x->ops->destroy(x->st, finalize);
    for (size_t i = 0; i < x->n_pool; i++) proto_buf_free(&x->pool[i]);
    proto_buf_free(&x->rbuf);
    free(x->sends);
    free(x);
}
