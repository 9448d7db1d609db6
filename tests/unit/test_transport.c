/* transport: the generic waits, send bookkeeping and epoch/step filter, over an in-memory fake
 * backend (no MPI; the real backend is covered by tests/integration/xport_test.c). */
#include "log.h"
#include "protocol.h"
#include "t.h"
#include "transport.h"

static char err[512];

struct fmsg {
    int src;
    uint8_t *data;
    size_t len;
};

struct freq {
    int used, is_recv, src, cancelled;
    void *buf;
    size_t cap;
};

/* The fake: `in` is what peers sent us, `out` what we sent; sends complete when sends_done. */
static struct fake {
    struct fmsg in[32], out[32];
    int n_in, n_out;
    struct freq req[32];
    int sends_done;
    int sends_fail; /* the next send tested fails, as over TCP to a peer that is gone */
    int isend_fail; /* the next send is refused at once */
    int destroyed, finalized;
} fk;

static void fk_push(int src, const void *p, size_t n)
{
    struct fmsg *m = &fk.in[fk.n_in++];
    m->src = src;
    m->len = n;
    m->data = malloc(n ? n : 1);
    memcpy(m->data, p, n);
}

static int fk_find(int src)
{
    for (int i = 0; i < fk.n_in; i++)
        if (src == XPORT_ANY_SOURCE || fk.in[i].src == src) return i;
    return -1;
}

static void fk_pop(int i)
{
    free(fk.in[i].data);
    memmove(&fk.in[i], &fk.in[i + 1], (size_t)(fk.n_in - i - 1) * sizeof(fk.in[0]));
    fk.n_in--;
}

static int fk_slot(void)
{
    for (int i = 0; i < 32; i++)
        if (!fk.req[i].used) return i;
    return -1;
}

static int fk_isend(void *st, int dst, int tag, const void *buf, size_t len, int *req, char *e,
                    size_t es)
{
    int s = fk_slot();
    CHECK_INT(tag, XPORT_TAG);
    if (fk.isend_fail) {
        fk.isend_fail = 0;
        return bt_errf(e, es, BT_EIO, "MPI_Isend: Endpoint timeout");
    }
    fk.req[s] = (struct freq){1, 0, dst, 0, NULL, 0};
    struct fmsg *m = &fk.out[fk.n_out++];
    m->src = dst;
    m->len = len;
    m->data = malloc(len ? len : 1);
    memcpy(m->data, buf, len);
    *req = s;
    return BT_OK;
}

static int fk_irecv(void *st, int src, int tag, void *buf, size_t cap, int *req, char *e, size_t es)
{
    int s = fk_slot();
    fk.req[s] = (struct freq){1, 1, src, 0, buf, cap};
    *req = s;
    return BT_OK;
}

static int fk_test(void *st, int req, int *done, struct xport_status *out, char *e, size_t es)
{
    struct freq *r = &fk.req[req];
    *done = 0;
    memset(out, 0, sizeof(*out));
    if (!r->used) return bt_errf(e, es, BT_EINVAL, "no request %d", req);
    if (!r->is_recv) {
        if (fk.sends_fail) { /* like MPICH: the request is freed, the error returned */
            fk.sends_fail = 0;
            r->used = 0;
            return bt_errf(e, es, BT_EIO, "MPI_Test: Endpoint timeout");
        }
        if (fk.sends_done) *done = 1, r->used = 0;
        return BT_OK;
    }
    if (r->cancelled) {
        *done = 1;
        out->cancelled = 1;
        r->used = 0;
        return BT_OK;
    }
    int i = fk_find(r->src);
    if (i < 0) return BT_OK;
    *done = 1;
    r->used = 0;
    if (fk.in[i].len > r->cap) {
        fk_pop(i);
        return bt_errf(e, es, BT_EFORMAT, "truncated");
    }
    memcpy(r->buf, fk.in[i].data, fk.in[i].len);
    out->src = fk.in[i].src;
    out->len = fk.in[i].len;
    fk_pop(i);
    return BT_OK;
}

static int fk_cancel(void *st, int req, char *e, size_t es)
{
    fk.req[req].cancelled = 1;
    return BT_OK;
}

static int fk_probe(void *st, int src, int tag, int *found, struct xport_status *out, char *e,
                    size_t es)
{
    int i = fk_find(src);
    *found = i >= 0;
    memset(out, 0, sizeof(*out));
    if (i >= 0) {
        out->src = fk.in[i].src;
        out->len = fk.in[i].len;
    }
    return BT_OK;
}

static void fk_destroy(void *st, int finalize)
{
    fk.destroyed++;
    fk.finalized = finalize;
}

static unsigned fk_exits;
static unsigned fk_peer_exits(void *st)
{
    return fk_exits;
}

static const struct xport_ops fake_ops = {"fake",    fk_isend, fk_irecv,   fk_test,
                                          fk_cancel, fk_probe, fk_destroy, fk_peer_exits};

static uint64_t after_ms(double ms)
{
    return bt_now_ns() + (uint64_t)(ms * 1e6);
}

static void push_tokens(int src, uint32_t sender, uint64_t epoch, uint64_t step, int32_t token)
{
    struct proto_buf b = {0};
    struct proto_sampled it = {.seq_id = 1, .token = token, .logprob = -1.0f};
    struct proto_tokens t = {.n = 1, .items = &it};
    struct proto_route r = {sender, epoch, step};
    CHECK_INT(proto_encode_tokens(&b, &r, &t, err, sizeof(err)), 0);
    fk_push(src, b.data, b.len);
    proto_buf_free(&b);
}

static void push_heartbeat(int src, uint64_t nonce)
{
    struct proto_buf b = {0};
    struct proto_heartbeat hb = {nonce, PROTO_STATE_READY, 1.0f};
    struct proto_route r = {(uint32_t)src, 9, 0};
    CHECK_INT(proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)), 0);
    fk_push(src, b.data, b.len);
    proto_buf_free(&b);
}

static void clear_out(void)
{
    for (int i = 0; i < fk.n_out; i++) free(fk.out[i].data);
    fk.n_out = 0;
}

int main(void)
{
    struct xport *x = NULL;
    struct proto_msg m = {0};
    struct xport_stats st;
    CHECK_INT(xport_create(&fake_ops, &fk, 0, 3, &x, err, sizeof(err)), 0);
    CHECK_INT(xport_rank(x), 0);
    CHECK_INT(xport_size(x), 3);
    CHECK_STR(xport_name(x), "fake");
    /* the backend's notice that a process of the job exited, through the interface */
    CHECK_INT(xport_peer_exits(x), 0);
    fk_exits = 2;
    CHECK_INT(xport_peer_exits(x), 2);
    fk_exits = 0;

    /* a receive with nothing to get: BT_ETIMEOUT at the deadline, not before */
    uint64_t t0 = bt_now_ns();
    CHECK_INT(xport_recv(x, NULL, t0 + 30000000ull, &m, err, sizeof(err)), BT_ETIMEOUT);
    double el = (double)(bt_now_ns() - t0) * 1e-6;
    CHECK(el >= 30 && el < 200);
    CHECK(strstr(err, "deadline") != NULL);
    /* a deadline already past returns at once */
    CHECK_INT(xport_recv(x, NULL, 0, &m, err, sizeof(err)), BT_ETIMEOUT);

    /* stale messages (old step, old epoch) are dropped on the way to the wanted one */
    push_tokens(2, 2, 3, 5, 50);
    push_tokens(2, 2, 2, 6, 60);
    push_heartbeat(1, 77); /* control: passes a step filter, but not from the filtered source */
    push_tokens(2, 2, 3, 6, 61);
    struct xport_filter f6 = {2, 3, 6, 6};
    CHECK_INT(xport_recv(x, &f6, after_ms(1000), &m, err, sizeof(err)), 0);
    CHECK_INT(m.hdr.opcode, PROTO_OP_TOKENS);
    CHECK_INT(m.hdr.step, 6);
    CHECK(m.tokens.n == 1 && m.tokens.items[0].token == 61);
    xport_get_stats(x, &st);
    CHECK_INT(st.n_dropped, 2);
    CHECK_INT(st.n_recv, 1);
    /* the heartbeat from rank 1 is still there; control opcodes ignore the step window but not
     * the epoch */
    struct xport_filter any9 = {XPORT_ANY_SOURCE, 9, 100, 100};
    CHECK_INT(xport_recv(x, &any9, after_ms(1000), &m, err, sizeof(err)), 0);
    CHECK_INT(m.hdr.opcode, PROTO_OP_HEARTBEAT);
    CHECK_INT(m.heartbeat.nonce, 77);
    CHECK_INT(m.hdr.sender, 1);
    /* only stale messages before the deadline: BT_ETIMEOUT, all dropped */
    push_tokens(2, 2, 3, 4, 1);
    CHECK_INT(xport_recv(x, &f6, after_ms(20), &m, err, sizeof(err)), BT_ETIMEOUT);
    CHECK_INT(fk.n_in, 0);

    /* malformed: named, dropped, counted; the next message is served */
    fk_push(1, "garbage!garbage!garbage!garbage!garbage!garbage!", 48);
    push_heartbeat(1, 78);
    CHECK_INT(xport_recv(x, NULL, after_ms(1000), &m, err, sizeof(err)), BT_EFORMAT);
    CHECK(strstr(err, "from rank 1") && strstr(err, "bad magic"));
    CHECK_INT(m.hdr.sender, 1);
    size_t rawlen = 0;
    CHECK(xport_last_bytes(x, &rawlen) != NULL);
    CHECK_INT(rawlen, 48);
    CHECK_INT(xport_recv(x, NULL, after_ms(1000), &m, err, sizeof(err)), 0);
    CHECK_INT(m.heartbeat.nonce, 78);
    /* a sender field that lies about the source */
    push_tokens(1, 2, 3, 6, 1);
    CHECK_INT(xport_recv(x, NULL, after_ms(1000), &m, err, sizeof(err)), BT_EFORMAT);
    CHECK(strstr(err, "claims to come from rank 2") != NULL);
    /* oversized: truncated into a small buffer, never allocated */
    xport_set_max_msg(x, 100);
    uint8_t big[300] = {0};
    fk_push(2, big, sizeof(big));
    CHECK_INT(xport_recv(x, NULL, after_ms(1000), &m, err, sizeof(err)), BT_EFORMAT);
    CHECK(strstr(err, "exceeds the cap of 100") != NULL);
    CHECK_INT(fk.n_in, 0);
    xport_set_max_msg(x, 1u << 20);
    xport_get_stats(x, &st);
    CHECK_INT(st.n_bad, 3);

    /* sends: the bytes are taken without a copy (the caller gets a spare buffer) */
    struct proto_buf b = {0};
    struct proto_heartbeat hb = {5, PROTO_STATE_READY, 1.0f};
    struct proto_route r = {0, 9, 12};
    CHECK_INT(proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)), 0);
    const uint8_t *bytes = b.data;
    size_t len = b.len;
    CHECK_INT(xport_send(x, 3, &b, after_ms(1000), err, sizeof(err)), BT_EINVAL); /* no rank 3 */
    CHECK(b.data == bytes && b.len == len); /* a refused send leaves msg alone */
    fk.sends_done = 0;
    CHECK_INT(xport_send(x, 1, &b, bt_now_ns() + 20000000ull, err, sizeof(err)), 0);
    CHECK(b.data != bytes);
    CHECK_INT(b.len, 0);
    CHECK(fk.n_out == 1 && fk.out[0].src == 1 && fk.out[0].len == len);
    /* the peer never takes it: flush and the next send report it, naming rank and opcode */
    CHECK_INT(xport_flush(x, after_ms(5), err, sizeof(err)), BT_ETIMEOUT);
    t0 = bt_now_ns();
    CHECK_INT(xport_flush(x, after_ms(1000), err, sizeof(err)), BT_ETIMEOUT);
    CHECK(strstr(err, "HEARTBEAT (step 12") && strstr(err, "rank 1"));
    CHECK((double)(bt_now_ns() - t0) * 1e-6 < 100); /* fired at the send's own deadline */
    CHECK_INT(proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)), 0);
    CHECK_INT(xport_send(x, 2, &b, after_ms(1000), err, sizeof(err)), 0); /* reported once */
    fk.sends_done = 1;
    CHECK_INT(xport_flush(x, after_ms(1000), err, sizeof(err)), 0);
    /* buffers return to the pool and come back to callers */
    CHECK_INT(proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)), 0);
    CHECK_INT(xport_send(x, 2, &b, after_ms(1000), err, sizeof(err)), 0);
    CHECK(b.data != NULL && b.cap >= len); /* a spare from the pool */
    xport_get_stats(x, &st);
    CHECK_INT(st.n_sent, 3);
    clear_out();

    /* a send the backend fails (a peer gone over TCP): reported once by the next receive,
     * naming the destination, which xport_take_failed_peer gives once; then all goes on */
    CHECK_INT(xport_flush(x, after_ms(1000), err, sizeof(err)), 0);
    CHECK_INT(xport_take_failed_peer(x), -1);
    fk.sends_done = 0;
    CHECK_INT(proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)), 0);
    CHECK_INT(xport_send(x, 2, &b, after_ms(1000), err, sizeof(err)), 0);
    fk.sends_fail = 1;
    CHECK_INT(xport_recv(x, NULL, after_ms(5), &m, err, sizeof(err)), BT_EIO);
    CHECK(strstr(err, "HEARTBEAT (step 12) to rank 2 failed") && strstr(err, "Endpoint timeout"));
    CHECK_INT(xport_take_failed_peer(x), 2);
    CHECK_INT(xport_take_failed_peer(x), -1); /* taken */
    /* a send refused at once: the same, from xport_send */
    CHECK_INT(proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)), 0);
    fk.isend_fail = 1;
    CHECK_INT(xport_send(x, 1, &b, after_ms(1000), err, sizeof(err)), BT_EIO);
    CHECK(strstr(err, "to rank 1 failed: MPI_Isend: Endpoint timeout") != NULL);
    CHECK_INT(xport_take_failed_peer(x), 1);
    CHECK(b.len > 0); /* the caller keeps its bytes */
    CHECK_INT(xport_recv(x, NULL, after_ms(5), &m, err, sizeof(err)), BT_ETIMEOUT);
    CHECK_INT(xport_flush(x, after_ms(5), err, sizeof(err)), 0);
    fk.sends_done = 1;
    clear_out();

    /* a posted receive: cancelled at its deadline; a message that is there completes it */
    uint8_t rbuf[128];
    int req = -1;
    struct xport_status xs;
    CHECK_INT(xport_post_recv(x, 1, rbuf, sizeof(rbuf), &req, err, sizeof(err)), 0);
    CHECK_INT(xport_wait(x, req, after_ms(10), &xs, err, sizeof(err)), BT_ETIMEOUT);
    CHECK(strstr(err, "cancelled") != NULL);
    xport_get_stats(x, &st);
    CHECK_INT(st.n_cancelled, 1);
    push_heartbeat(1, 79);
    CHECK_INT(xport_post_recv(x, 1, rbuf, sizeof(rbuf), &req, err, sizeof(err)), 0);
    CHECK_INT(xport_wait(x, req, after_ms(1000), &xs, err, sizeof(err)), 0);
    CHECK(xs.src == 1 && xs.len == PROTO_HDR_SIZE + 16 && !xs.cancelled);
    int found = 1;
    CHECK_INT(xport_probe(x, XPORT_ANY_SOURCE, &found, err, sizeof(err)), 0);
    CHECK_INT(found, 0);

    /* busy polling: a deadline still fires */
    xport_set_busy(x, 1);
    xport_set_idle_sleep(x, 10000, 100000);
    CHECK_INT(xport_recv(x, NULL, after_ms(5), &m, err, sizeof(err)), BT_ETIMEOUT);
    xport_set_busy(x, 0);

    xport_free(x);
    CHECK_INT(fk.destroyed, 1);
    CHECK_INT(fk.finalized, 1);
    /* after a fault nothing is finalized */
    CHECK_INT(xport_create(&fake_ops, &fk, 1, 2, &x, err, sizeof(err)), 0);
    xport_mark_faulted(x);
    xport_free(x);
    CHECK_INT(fk.destroyed, 2);
    CHECK_INT(fk.finalized, 0);
    xport_free(NULL);
    proto_buf_free(&b);
    proto_msg_free(&m);
    return t_done();
}
