/* xport_test: the MPI transport between real ranks (run under mpiexec by run_xport.sh).
 *
 *   mpiexec -n 2|3 xport_test pingpong  every opcode rank 0 <-> each rank; with 3 ranks also a
 *                                       FORWARD pipeline 0 -> 1 -> 2 -> TOKENS -> 0
 *   mpiexec -n 2 xport_test deadline    a silent peer: receive, posted receive and send deadlines
 *   mpiexec -n 2 xport_test stale       late replies (old step, old epoch) are dropped
 *   mpiexec -n 2 xport_test idle        CPU of a rank waiting 2 s, from /proc/self/stat (< 2 %)
 *   mpiexec -n 2 xport_test garbage     a peer sends garbage; the receiver names it and serves on
 *   mpiexec -n 2 xport_test latency     one-way time of a 4 KiB FORWARD, busy vs idle polling
 *   mpiexec -disable-auto-cleanup -n 3 xport_test sigusr1
 *                                       a rank exits: the others get the SIGUSR1 notice
 *
 * Every rank checks what it can; the exit status is non-zero if any check failed. */
#include "../unit/t.h"
#include "log.h"
#include "protocol.h"
#include "transport.h"

#include <time.h>
#include <unistd.h>

#define PIPE_STEP 1000000 /* FORWARD steps at or above: pipeline stage work, not an echo */
#define S_NS      1000000000ull

static struct xport *x;
static int rank, size;
static char err[512];

static uint64_t after_ms(double ms)
{
    return bt_now_ns() + (uint64_t)(ms * 1e6);
}

/* utime + stime of this process (all threads) in seconds, from /proc/self/stat. */
static double proc_cpu_s(void)
{
    char buf[2048];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may contain spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static struct proto_route rt(uint64_t epoch, uint64_t step)
{
    struct proto_route r = {(uint32_t)rank, epoch, step};
    return r;
}

static int send_to(int dst, struct proto_buf *b)
{
    int rc = xport_send(x, dst, b, after_ms(5000), err, sizeof(err));
    if (rc < 0) fprintf(stderr, "rank %d: send to %d: %s\n", rank, dst, err);
    return rc;
}

static struct proto_sampling samp(void)
{
    struct proto_sampling s = {.temperature = 0.7f,
                               .top_k = 40,
                               .top_p = 0.9f,
                               .min_p = 0.05f,
                               .repeat_penalty = 1.1f,
                               .repeat_last_n = 64,
                               .seed = 42,
                               .n_logprobs = 2};
    return s;
}

/* Re-encode a decoded message into out (same opcode, our route). */
static int reencode(struct proto_buf *out, const struct proto_msg *m)
{
    struct proto_route r = rt(m->hdr.epoch, m->hdr.step);
    switch (m->hdr.opcode) {
    case PROTO_OP_FORWARD:
        return proto_encode_forward(out, &r, &m->forward, err, sizeof(err));
    case PROTO_OP_TOKENS:
        return proto_encode_tokens(out, &r, &m->tokens, err, sizeof(err));
    case PROTO_OP_ERROR:
        return proto_encode_error(out, &r, &m->error, err, sizeof(err));
    case PROTO_OP_RESET:
        return proto_encode_reset(out, &r, &m->reset, err, sizeof(err));
    default:
        return BT_EINVAL;
    }
}

/* Pipeline stage work. Rank 1: token ids -> activation rows (token, pos, seq, 1) to rank 2.
 * Last rank: rows -> TOKENS to rank 0, sampling row[0] + 1 for every logits token. */
static int stage(const struct proto_msg *m, struct proto_buf *out)
{
    const struct proto_forward *f = &m->forward;
    struct proto_route r = rt(m->hdr.epoch, m->hdr.step);
    int rc;
    if (rank < size - 1) {
        struct proto_token *t = calloc(f->n_tokens, sizeof(*t));
        float *rows = calloc((size_t)f->n_tokens * 4, sizeof(float));
        for (uint32_t i = 0; i < f->n_tokens; i++) {
            t[i] = f->tokens[i];
            t[i].flags |= PROTO_TOK_ROW;
            float *row = rows + (size_t)i * 4;
            row[0] = (float)f->tokens[i].token;
            row[1] = (float)f->tokens[i].pos;
            row[2] = (float)f->tokens[i].seq_id;
            row[3] = 1;
        }
        struct proto_forward g = {.n_tokens = f->n_tokens,
                                  .n_seqs = f->n_seqs,
                                  .n_embd = 4,
                                  .n_rows = f->n_tokens,
                                  .tokens = t,
                                  .seqs = f->seqs,
                                  .rows = rows};
        rc = proto_encode_forward(out, &r, &g, err, sizeof(err));
        free(t);
        free(rows);
        return rc < 0 ? rc : send_to(rank + 1, out);
    }
    struct proto_sampled items[PROTO_MAX_SEQS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < f->n_tokens; i++) {
        if (!(f->tokens[i].flags & PROTO_TOK_LOGITS)) continue;
        const float *row = f->rows + (size_t)i * f->n_embd; /* every token has a row here */
        items[n++] = (struct proto_sampled){.seq_id = f->tokens[i].seq_id,
                                            .token = (int32_t)row[0] + 1,
                                            .logprob = -row[1] / 1000.0f};
    }
    struct proto_tokens t = {.n = n, .items = items};
    rc = proto_encode_tokens(out, &r, &t, err, sizeof(err));
    return rc < 0 ? rc : send_to(0, out);
}

/* A rank's command loop: answer until SHUTDOWN. Returns the number of malformed messages. */
static int serve(double quiet_limit_ms)
{
    struct proto_msg m = {0};
    struct proto_buf out = {0};
    int n_bad = 0;
    for (;;) {
        int rc = xport_recv(x, NULL, after_ms(quiet_limit_ms), &m, err, sizeof(err));
        if (rc == BT_EFORMAT) {
            n_bad++;
            fprintf(stderr, "rank %d: dropped: %s\n", rank, err);
            CHECK(err[0] != 0 && strchr(err, '\n') == NULL);
            CHECK(strstr(err, "from rank ") != NULL); /* names the sender */
            continue;
        }
        if (rc < 0) {
            fprintf(stderr, "rank %d: serve: %s\n", rank, err);
            CHECK_INT(rc, 0);
            break;
        }
        int from = (int)m.hdr.sender;
        struct proto_route r = rt(m.hdr.epoch, m.hdr.step);
        rc = 0;
        switch (m.hdr.opcode) {
        case PROTO_OP_HANDSHAKE: {
            struct proto_handshake h;
            proto_handshake_local(&h);
            h.state = PROTO_STATE_READY;
            h.progress = 1.0f;
            h.n_layers = 4 * (uint32_t)size;
            h.layer_begin = 4 * (uint32_t)rank;
            h.layer_end = h.layer_begin + 4;
            h.model_id = m.handshake.model_id;
            h.model_size = m.handshake.model_size;
            snprintf(h.backend, sizeof(h.backend), "test rank %d", rank);
            rc = proto_encode_handshake(&out, &r, &h, err, sizeof(err));
            break;
        }
        case PROTO_OP_HEARTBEAT: {
            struct proto_heartbeat hb = {m.heartbeat.nonce, PROTO_STATE_READY, 1.0f};
            rc = proto_encode_heartbeat(&out, &r, PROTO_OP_HEARTBEAT_REPLY, &hb, err, sizeof(err));
            break;
        }
        case PROTO_OP_STATS_REQUEST: {
            struct xport_stats xs;
            xport_get_stats(x, &xs);
            struct proto_stats s = {.n_steps = (uint64_t)rank,
                                    .n_dropped = xs.n_dropped,
                                    .n_bad = xs.n_bad,
                                    .kv_size = 100};
            rc = proto_encode_stats(&out, &r, &s, err, sizeof(err));
            break;
        }
        case PROTO_OP_SHUTDOWN:
            goto done;
        case PROTO_OP_FORWARD:
            if (m.hdr.step >= PIPE_STEP) {
                if (stage(&m, &out) < 0) CHECK(0);
                continue;
            }
            rc = reencode(&out, &m);
            break;
        default:
            rc = reencode(&out, &m);
            break;
        }
        CHECK_INT(rc, 0);
        if (rc == 0) send_to(from, &out);
    }
done:
    proto_msg_free(&m);
    proto_buf_free(&out);
    return n_bad;
}

/* Rank 0: send b (a copy is kept) and expect a reply of opcode `want` from `from`. */
static int ask(int dst, struct proto_buf *b, int want, struct proto_msg *m, struct proto_buf *sent)
{
    sent->len = 0;
    proto_buf_reserve(sent, b->len);
    memcpy(sent->data, b->data, b->len);
    sent->len = b->len;
    if (send_to(dst, b) < 0) return -1;
    struct xport_filter f = {dst, 1, 0, UINT64_MAX}; /* this test's epoch */
    int rc = xport_recv(x, &f, after_ms(5000), m, err, sizeof(err));
    if (rc < 0) fprintf(stderr, "rank 0: reply from %d: %s\n", dst, err);
    CHECK_INT(rc, 0);
    if (rc < 0) return rc;
    CHECK_INT(m->hdr.opcode, want);
    CHECK_INT(m->hdr.sender, dst);
    return m->hdr.opcode == want ? 0 : -1;
}

/* The reply's payload bytes equal what was sent (an echo through decode + encode). */
static void same_payload(const struct proto_buf *sent)
{
    size_t n;
    const uint8_t *got = xport_last_bytes(x, &n);
    CHECK_INT(n, sent->len);
    CHECK(n == sent->len &&
          memcmp(got + PROTO_HDR_SIZE, sent->data + PROTO_HDR_SIZE, n - PROTO_HDR_SIZE) == 0);
}

static void shutdown_all(void)
{
    struct proto_buf b = {0};
    struct proto_shutdown sd = {PROTO_SHUTDOWN_NORMAL};
    struct proto_route r = rt(1, 0);
    for (int d = 1; d < size; d++) {
        CHECK_INT(proto_encode_shutdown(&b, &r, &sd, err, sizeof(err)), 0);
        CHECK_INT(send_to(d, &b), 0);
    }
    CHECK_INT(xport_flush(x, after_ms(5000), err, sizeof(err)), 0);
    proto_buf_free(&b);
}

static void mode_pingpong(void)
{
    if (rank != 0) {
        CHECK_INT(serve(20000), 0);
        return;
    }
    struct proto_buf b = {0}, sent = {0};
    struct proto_msg m = {0};
    for (int d = 1; d < size; d++) {
        struct proto_route r = rt(1, (uint64_t)d);
        /* HANDSHAKE */
        struct proto_handshake h;
        proto_handshake_local(&h);
        h.model_id = 0xabcdef;
        h.model_size = 123456;
        h.n_layers = 4 * (uint32_t)size;
        h.layer_end = 4;
        snprintf(h.backend, sizeof(h.backend), "test rank 0");
        CHECK_INT(proto_encode_handshake(&b, &r, &h, err, sizeof(err)), 0);
        if (ask(d, &b, PROTO_OP_HANDSHAKE, &m, &sent) == 0) {
            CHECK_STR(m.handshake.build_id, h.build_id);
            CHECK_INT(m.handshake.proto_version, PROTO_VERSION);
            CHECK_INT(m.handshake.layer_begin, 4 * d);
            CHECK_INT(m.handshake.layer_end, 4 * d + 4);
            CHECK_INT(m.handshake.model_id, 0xabcdef);
            CHECK(m.handshake.pid != (uint32_t)getpid());
            CHECK(m.handshake.hostname[0] != 0);
            char want[32];
            snprintf(want, sizeof(want), "test rank %d", d);
            CHECK_STR(m.handshake.backend, want);
        }
        /* HEARTBEAT -> HEARTBEAT_REPLY */
        struct proto_heartbeat hb = {0x5eed0000ull + (uint64_t)d, PROTO_STATE_READY, 1.0f};
        CHECK_INT(proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)), 0);
        if (ask(d, &b, PROTO_OP_HEARTBEAT_REPLY, &m, &sent) == 0)
            CHECK_INT(m.heartbeat.nonce, 0x5eed0000ull + (uint64_t)d);
        /* STATS_REQUEST -> STATS */
        CHECK_INT(proto_encode_stats_request(&b, &r, err, sizeof(err)), 0);
        if (ask(d, &b, PROTO_OP_STATS, &m, &sent) == 0) {
            CHECK_INT(m.stats.n_steps, d);
            CHECK_INT(m.stats.kv_size, 100);
        }
        /* FORWARD, TOKENS, ERROR, RESET: echoed through the peer's decoder and encoder */
        struct proto_token tok[3] = {
            {7, 0, 1, 0, 0}, {7, 1, 2, 0, 0}, {9, 5, 3, PROTO_TOK_LOGITS, 0}};
        tok[1].flags = PROTO_TOK_LOGITS;
        struct proto_seq seq[2] = {{7, PROTO_SEQ_RESET, samp()}, {9, 0, samp()}};
        struct proto_forward f = {.n_tokens = 3, .n_seqs = 2, .tokens = tok, .seqs = seq};
        CHECK_INT(proto_encode_forward(&b, &r, &f, err, sizeof(err)), 0);
        if (ask(d, &b, PROTO_OP_FORWARD, &m, &sent) == 0) same_payload(&sent);
        float rows[3 * 64];
        for (int i = 0; i < 3 * 64; i++) rows[i] = (float)i / 7.0f;
        tok[0].flags |= PROTO_TOK_ROW;
        tok[1].flags |= PROTO_TOK_ROW;
        tok[2].flags |= PROTO_TOK_ROW;
        f.n_embd = 64;
        f.n_rows = 3;
        f.rows = rows;
        CHECK_INT(proto_encode_forward(&b, &r, &f, err, sizeof(err)), 0);
        if (ask(d, &b, PROTO_OP_FORWARD, &m, &sent) == 0) {
            same_payload(&sent);
            CHECK(m.forward.n_rows == 3 && m.forward.rows[64 * 2 + 5] == rows[64 * 2 + 5]);
        }
        struct proto_top top[2] = {{3, -0.5f}, {4, -1.5f}};
        struct proto_sampled it[2] = {
            {.seq_id = 7, .token = 3, .logprob = -0.5f, .n_top = 2, .top = top},
            {.seq_id = 9, .token = -1, .error = BT_EFULL}};
        struct proto_tokens t = {.n = 2, .items = it};
        CHECK_INT(proto_encode_tokens(&b, &r, &t, err, sizeof(err)), 0);
        if (ask(d, &b, PROTO_OP_TOKENS, &m, &sent) == 0) same_payload(&sent);
        struct proto_error e = {.seq_id = 9, .code = BT_EFULL, .message = "KV cache full"};
        CHECK_INT(proto_encode_error(&b, &r, &e, err, sizeof(err)), 0);
        if (ask(d, &b, PROTO_OP_ERROR, &m, &sent) == 0) {
            same_payload(&sent);
            CHECK_STR(m.error.message, "KV cache full");
        }
        struct proto_reset_item ri[2] = {{7, PROTO_RESET_CLEAR_KV}, {9, PROTO_RESET_CANCEL}};
        struct proto_reset rs = {.n = 2, .items = ri};
        CHECK_INT(proto_encode_reset(&b, &r, &rs, err, sizeof(err)), 0);
        if (ask(d, &b, PROTO_OP_RESET, &m, &sent) == 0) same_payload(&sent);
    }
    if (size >= 3) {
        /* the pipeline: 0 -FORWARD(ids)-> 1 -FORWARD(rows)-> ... -> last -TOKENS-> 0 */
        for (uint64_t step = PIPE_STEP; step < PIPE_STEP + 20; step++) {
            struct proto_token tok[2] = {
                {1, 10, (int32_t)step % 1000, 0, 0},
                {2, 20, 500 + (int32_t)(step % 1000), PROTO_TOK_LOGITS, 0}};
            tok[0].flags = PROTO_TOK_LOGITS;
            struct proto_seq seq[2] = {{1, 0, samp()}, {2, 0, samp()}};
            struct proto_forward f = {.n_tokens = 2, .n_seqs = 2, .tokens = tok, .seqs = seq};
            struct proto_route r = rt(1, step);
            CHECK_INT(proto_encode_forward(&b, &r, &f, err, sizeof(err)), 0);
            CHECK_INT(send_to(1, &b), 0);
            struct xport_filter flt = {size - 1, 1, step, step};
            int rc = xport_recv(x, &flt, after_ms(5000), &m, err, sizeof(err));
            CHECK_INT(rc, 0);
            if (rc < 0) {
                fprintf(stderr, "rank 0: pipeline step %llu: %s\n", (unsigned long long)step, err);
                break;
            }
            CHECK_INT(m.hdr.opcode, PROTO_OP_TOKENS);
            CHECK_INT(m.tokens.n, 2);
            if (m.tokens.n == 2) {
                CHECK_INT(m.tokens.items[0].token, (int32_t)(step % 1000) + 1);
                CHECK_INT(m.tokens.items[1].token, 500 + (int32_t)(step % 1000) + 1);
                CHECK(m.tokens.items[1].logprob == -0.02f);
            }
        }
        fprintf(stderr, "rank 0: pipeline over %d ranks ok\n", size);
    }
    shutdown_all();
    proto_buf_free(&b);
    proto_buf_free(&sent);
    proto_msg_free(&m);
}

static void mode_deadline(void)
{
    if (rank == 1) {
        /* Stuck for 1.5 s (waiting for a message nobody sends), then a normal command loop. */
        struct proto_msg m = {0};
        struct xport_filter self = {1, 0, 0, UINT64_MAX};
        CHECK_INT(xport_recv(x, &self, after_ms(1500), &m, err, sizeof(err)), BT_ETIMEOUT);
        proto_msg_free(&m);
        CHECK_INT(serve(20000), 1); /* the 4 MiB blob below is malformed */
        return;
    }
    struct proto_msg m = {0};
    struct proto_buf b = {0};
    struct xport_filter f = {1, 1, 0, UINT64_MAX};
    struct xport_stats st;
    /* 1. a receive from the silent peer: BT_ETIMEOUT at the deadline, not before */
    uint64_t t0 = bt_now_ns();
    int rc = xport_recv(x, &f, t0 + 300000000ull, &m, err, sizeof(err));
    double el = (double)(bt_now_ns() - t0) * 1e-6;
    CHECK_INT(rc, BT_ETIMEOUT);
    CHECK(el >= 300 && el < 450);
    fprintf(stderr, "rank 0: receive deadline fired after %.1f ms (300 ms): %s\n", el, err);
    /* 2. a posted receive: cancelled at its deadline */
    uint8_t rbuf[4096];
    int req = -1;
    CHECK_INT(xport_post_recv(x, 1, rbuf, sizeof(rbuf), &req, err, sizeof(err)), 0);
    struct xport_status xs;
    t0 = bt_now_ns();
    rc = xport_wait(x, req, t0 + 200000000ull, &xs, err, sizeof(err));
    el = (double)(bt_now_ns() - t0) * 1e-6;
    CHECK_INT(rc, BT_ETIMEOUT);
    CHECK(el >= 200 && el < 350);
    xport_get_stats(x, &st);
    CHECK_INT(st.n_cancelled, 1);
    fprintf(stderr, "rank 0: posted receive cancelled after %.1f ms (200 ms)\n", el);
    /* 3. a 4 MiB send the stuck peer does not take: flush reports it at its deadline */
    CHECK_INT(proto_buf_reserve(&b, 4u << 20), 0);
    memset(b.data, 0x5a, 4u << 20);
    b.len = 4u << 20;
    CHECK_INT(xport_send(x, 1, &b, after_ms(300), err, sizeof(err)), 0);
    CHECK_INT(b.len, 0); /* the bytes were taken */
    t0 = bt_now_ns();
    rc = xport_flush(x, t0 + 400000000ull, err, sizeof(err));
    el = (double)(bt_now_ns() - t0) * 1e-6;
    CHECK_INT(rc, BT_ETIMEOUT);
    CHECK(strstr(err, "rank 1") != NULL);
    CHECK(el < 550);
    fprintf(stderr, "rank 0: send deadline after %.1f ms: %s\n", el, err);
    /* 4. once the peer is back, the reply to a heartbeat reaches xport_recv: the cancelled
     * receive did not swallow it */
    struct proto_heartbeat hb = {5, PROTO_STATE_READY, 1.0f};
    struct proto_route r = rt(1, 0);
    CHECK_INT(proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)), 0);
    CHECK_INT(send_to(1, &b), 0);
    rc = xport_recv(x, &f, after_ms(5000), &m, err, sizeof(err));
    CHECK_INT(rc, 0);
    CHECK_INT(m.hdr.opcode, PROTO_OP_HEARTBEAT_REPLY);
    CHECK_INT(m.heartbeat.nonce, 5);
    CHECK_INT(xport_flush(x, after_ms(5000), err, sizeof(err)), 0);
    shutdown_all();
    proto_buf_free(&b);
    proto_msg_free(&m);
}

static void mode_stale(void)
{
    struct proto_msg m = {0};
    struct proto_buf b = {0};
    if (rank == 1) {
        /* Holds the reply to step 5 and sends it late, after step 6 arrived, together with a
         * message of an older epoch, then the real reply to step 6. */
        for (;;) {
            int rc = xport_recv(x, NULL, after_ms(20000), &m, err, sizeof(err));
            CHECK_INT(rc, 0);
            if (rc < 0 || m.hdr.opcode == PROTO_OP_SHUTDOWN) break;
            if (m.hdr.opcode != PROTO_OP_FORWARD || m.hdr.step != 6) continue;
            struct proto_sampled it = {.seq_id = 1, .token = 5, .logprob = -1.0f};
            struct proto_tokens t = {.n = 1, .items = &it};
            struct proto_route late = rt(3, 5), old = rt(2, 6), now = rt(3, 6);
            CHECK_INT(proto_encode_tokens(&b, &late, &t, err, sizeof(err)), 0);
            send_to(0, &b);
            CHECK_INT(proto_encode_tokens(&b, &old, &t, err, sizeof(err)), 0);
            send_to(0, &b);
            it.token = 6;
            CHECK_INT(proto_encode_tokens(&b, &now, &t, err, sizeof(err)), 0);
            send_to(0, &b);
        }
        goto out;
    }
    struct proto_token tok = {1, 0, 1, PROTO_TOK_LOGITS, 0};
    struct proto_seq seq = {1, 0, samp()};
    struct proto_forward f = {.n_tokens = 1, .n_seqs = 1, .tokens = &tok, .seqs = &seq};
    struct proto_route r5 = rt(3, 5), r6 = rt(3, 6);
    CHECK_INT(proto_encode_forward(&b, &r5, &f, err, sizeof(err)), 0);
    CHECK_INT(send_to(1, &b), 0);
    struct xport_filter w5 = {1, 3, 5, 5}, w6 = {1, 3, 6, 6};
    CHECK_INT(xport_recv(x, &w5, after_ms(200), &m, err, sizeof(err)), BT_ETIMEOUT);
    /* step 5 abandoned; step 6 */
    CHECK_INT(proto_encode_forward(&b, &r6, &f, err, sizeof(err)), 0);
    CHECK_INT(send_to(1, &b), 0);
    int rc = xport_recv(x, &w6, after_ms(5000), &m, err, sizeof(err));
    CHECK_INT(rc, 0);
    CHECK_INT(m.hdr.opcode, PROTO_OP_TOKENS);
    CHECK_INT(m.hdr.step, 6);
    CHECK_INT(m.hdr.epoch, 3);
    CHECK(m.tokens.n == 1 && m.tokens.items[0].token == 6);
    struct xport_stats st;
    xport_get_stats(x, &st);
    CHECK_INT(st.n_dropped, 2);
    fprintf(stderr, "rank 0: %llu stale messages dropped (old step, old epoch)\n",
            (unsigned long long)st.n_dropped);
    shutdown_all();
out:
    proto_buf_free(&b);
    proto_msg_free(&m);
}

static void mode_idle(void)
{
    struct proto_msg m = {0};
    struct proto_buf b = {0};
    struct xport_filter peer = {1 - rank, 1, 0, UINT64_MAX};
    /* Rank 0 waits 2 s for a silent rank 1 (deadline), rank 1 waits for rank 0's message that
     * comes after those 2 s. Both measure their CPU over the wait. */
    double c0 = proc_cpu_s();
    uint64_t t0 = bt_now_ns();
    int rc = xport_recv(x, &peer, rank == 0 ? t0 + 2 * S_NS : t0 + 20 * S_NS, &m, err, sizeof(err));
    double wall = (double)(bt_now_ns() - t0) * 1e-9, cpu = proc_cpu_s() - c0;
    double pct = 100.0 * cpu / wall;
    fprintf(stderr, "rank %d: idle wait %.2f s, cpu %.3f s = %.2f %% (/proc/self/stat)\n", rank,
            wall, cpu, pct);
    CHECK(c0 >= 0);
    CHECK(wall >= 1.9);
    CHECK(pct < 2.0);
    struct proto_route r = rt(1, 0);
    if (rank == 0) {
        CHECK_INT(rc, BT_ETIMEOUT);
        struct proto_heartbeat hb = {77, PROTO_STATE_READY, 1.0f};
        CHECK_INT(proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)), 0);
        CHECK_INT(send_to(1, &b), 0);
        CHECK_INT(xport_recv(x, &peer, after_ms(5000), &m, err, sizeof(err)), 0);
        CHECK_INT(m.heartbeat.nonce, 78);
        shutdown_all();
    } else {
        CHECK_INT(rc, 0);
        CHECK_INT(m.hdr.opcode, PROTO_OP_HEARTBEAT);
        struct proto_heartbeat hb = {m.heartbeat.nonce + 1, PROTO_STATE_READY, 1.0f};
        CHECK_INT(proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT_REPLY, &hb, err, sizeof(err)),
                  0);
        CHECK_INT(send_to(0, &b), 0);
        CHECK_INT(xport_recv(x, &peer, after_ms(5000), &m, err, sizeof(err)), 0);
        CHECK_INT(m.hdr.opcode, PROTO_OP_SHUTDOWN);
    }
    proto_buf_free(&b);
    proto_msg_free(&m);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void refix(uint8_t *p, size_t len)
{
    put32(p + 12, (uint32_t)(len - PROTO_HDR_SIZE));
    put32(p + 32, proto_crc32c(0, p + PROTO_HDR_SIZE, len - PROTO_HDR_SIZE));
    put32(p + 36, proto_crc32c(0, p, 36));
}

enum { N_GARBAGE = 12 };

/* Build garbage message k into b (rank 1). */
static void garbage(int k, struct proto_buf *b)
{
    struct proto_route r = rt(1, 0);
    struct proto_heartbeat hb = {1, PROTO_STATE_READY, 1.0f};
    struct proto_token tok = {1, 0, 1, 0, 0};
    struct proto_seq seq = {1, 0, samp()};
    struct proto_forward f = {.n_tokens = 1, .n_seqs = 1, .tokens = &tok, .seqs = &seq};
    struct proto_top top = {1, -1.0f};
    struct proto_sampled it = {.seq_id = 1, .token = 1, .logprob = -1.0f, .n_top = 1, .top = &top};
    struct proto_tokens t = {.n = 1, .items = &it};
    uint32_t s = 0x12345u + (uint32_t)k;
    switch (k) {
    case 0: /* random bytes */
        proto_buf_reserve(b, 64);
        for (int i = 0; i < 64; i++) b->data[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 16);
        b->len = 64;
        return;
    case 1: /* shorter than a header */
        proto_buf_reserve(b, 10);
        memcpy(b->data, "BATNshort!", 10);
        b->len = 10;
        return;
    case 2: /* zero bytes */
        b->len = 0;
        return;
    case 3: /* oversized: 2 MiB, the receiver's cap is 1 MiB */
        proto_buf_reserve(b, 2u << 20);
        memset(b->data, 0xee, 2u << 20);
        b->len = 2u << 20;
        return;
    default:
        break;
    }
    if (k <= 8)
        proto_encode_heartbeat(b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err));
    else if (k <= 10)
        proto_encode_forward(b, &r, &f, err, sizeof(err));
    else
        proto_encode_tokens(b, &r, &t, err, sizeof(err));
    switch (k) {
    case 4:
        b->data[0] = 'X';
        break; /* magic */
    case 5:
        b->data[4] = 9, refix(b->data, b->len);
        break; /* version */
    case 6:
        b->data[20] ^= 0x10;
        break; /* header checksum */
    case 7:
        b->data[PROTO_HDR_SIZE + 2] ^= 1;
        break; /* payload checksum */
    case 8:
        put32(b->data + 8, 0), refix(b->data, b->len);
        break; /* lies about its rank */
    case 9:
        put32(b->data + PROTO_HDR_SIZE, 0xffffffffu), refix(b->data, b->len);
        break;
    case 10:
        put32(b->data + PROTO_HDR_SIZE, 2), refix(b->data, b->len);
        break; /* past payload */
    case 11:
        put32(b->data + PROTO_HDR_SIZE + 20, 1000), refix(b->data, b->len);
        break;
    }
}

static void mode_garbage(void)
{
    if (rank == 0) {
        xport_set_max_msg(x, 1u << 20);
        int n_bad = serve(20000);
        CHECK_INT(n_bad, N_GARBAGE);
        struct xport_stats st;
        xport_get_stats(x, &st);
        CHECK_INT(st.n_bad, N_GARBAGE);
        return;
    }
    struct proto_msg m = {0};
    struct proto_buf b = {0};
    struct xport_filter f = {0, 1, 0, UINT64_MAX};
    for (int k = 0; k < N_GARBAGE; k++) {
        garbage(k, &b);
        CHECK_INT(send_to(0, &b), 0);
        /* the receiver is still there and still answers */
        struct proto_heartbeat hb = {1000u + (uint64_t)k, PROTO_STATE_READY, 1.0f};
        struct proto_route r = rt(1, 0);
        CHECK_INT(proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err)), 0);
        CHECK_INT(send_to(0, &b), 0);
        int rc = xport_recv(x, &f, after_ms(5000), &m, err, sizeof(err));
        CHECK_INT(rc, 0);
        CHECK(rc == 0 && m.hdr.opcode == PROTO_OP_HEARTBEAT_REPLY &&
              m.heartbeat.nonce == 1000u + (uint64_t)k);
    }
    /* rank 0 serves until rank 1 sends SHUTDOWN (the roles are reversed here) */
    struct proto_shutdown sd = {PROTO_SHUTDOWN_NORMAL};
    struct proto_route r = rt(1, 0);
    CHECK_INT(proto_encode_shutdown(&b, &r, &sd, err, sizeof(err)), 0);
    CHECK_INT(send_to(0, &b), 0);
    CHECK_INT(xport_flush(x, after_ms(5000), err, sizeof(err)), 0);
    proto_buf_free(&b);
    proto_msg_free(&m);
}

static int cmp_d(const void *a, const void *b)
{
    double x1 = *(const double *)a, x2 = *(const double *)b;
    return (x1 > x2) - (x1 < x2);
}

/* Ping-pong of a 4 KiB FORWARD; the step field carries the send time (CLOCK_MONOTONIC is one
 * clock for all processes of a host), so the receiver measures one-way times directly.
 * pause_ms > 0: rank 0 idles that long before each ping, so rank 1's poll has settled at its
 * longest sleep. Returns rank 1's median one-way time in us (rank 0: median RTT/2). */
static double pingpong_4k(int iters, int busy, double pause_ms, struct proto_buf *b,
                          struct proto_msg *m)
{
    enum { NE = 1024 };
    static float rows[NE];
    double *v = calloc((size_t)iters, sizeof(double));
    struct proto_token tok = {1, 0, -1, PROTO_TOK_ROW | PROTO_TOK_LOGITS, 0};
    struct proto_seq seq = {1, 0, samp()};
    struct proto_forward f = {.n_tokens = 1,
                              .n_seqs = 1,
                              .n_embd = NE,
                              .n_rows = 1,
                              .tokens = &tok,
                              .seqs = &seq,
                              .rows = rows};
    struct xport_filter peer = {1 - rank, 1, 0, UINT64_MAX};
    struct xport_filter self = {rank, 1, 0, UINT64_MAX};
    xport_set_busy(x, busy != 0);
    xport_set_spin(x, busy == 2 ? UINT64_MAX : 200000); /* 2: spin for the whole wait */
    for (int i = 0; i < iters; i++) {
        if (rank == 0) {
            if (pause_ms > 0) /* idle wait on a message that never comes */
                xport_recv(x, &self, after_ms(pause_ms), m, err, sizeof(err));
            uint64_t t0 = bt_now_ns();
            struct proto_route r = rt(1, t0);
            proto_encode_forward(b, &r, &f, err, sizeof(err));
            send_to(1, b);
            if (xport_recv(x, &peer, after_ms(5000), m, err, sizeof(err)) < 0) {
                CHECK(0);
                break;
            }
            v[i] = (double)(bt_now_ns() - t0) * 1e-3 / 2;
        } else {
            if (xport_recv(x, &peer, after_ms(10000), m, err, sizeof(err)) < 0) {
                CHECK(0);
                break;
            }
            v[i] = (double)(bt_now_ns() - m->hdr.step) * 1e-3;
            struct proto_route r = rt(1, m->hdr.step);
            proto_encode_forward(b, &r, &m->forward, err, sizeof(err));
            send_to(0, b);
        }
    }
    xport_set_busy(x, 0);
    xport_set_spin(x, 200000);
    qsort(v, (size_t)iters, sizeof(double), cmp_d);
    double med = v[iters / 2];
    free(v);
    return med;
}

static void mode_latency(void)
{
    struct proto_buf b = {0};
    struct proto_msg m = {0};
    size_t msg_len = PROTO_HDR_SIZE + 16 + 16 + 52 + 4096;
    pingpong_4k(100, 1, 0, &b, &m); /* warm-up */
    double spin = pingpong_4k(1000, 2, 0, &b, &m);
    double busy = pingpong_4k(1000, 1, 0, &b, &m);
    double idle = pingpong_4k(200, 0, 0, &b, &m);
    double settled = pingpong_4k(40, 0, 20, &b, &m);
    const char *what = rank == 0 ? "median RTT/2" : "median one-way";
    fprintf(stderr,
            "rank %d: 4 KiB FORWARD (%zu-byte message) %s: pure spin %.1f us, busy (spin 200 us, "
            "then 50 us polls) %.1f us, idle back-to-back %.1f us, idle after 20 ms quiet "
            "%.1f us\n",
            rank, msg_len, what, spin, busy, idle, settled);
    /* figures only: on a shared, loaded machine no ordering of them is guaranteed */
    CHECK(spin > 0 && busy > 0 && idle > 0 && settled > 0);
    if (rank == 0) {
        shutdown_all();
    } else {
        struct xport_filter peer = {0, 1, 0, UINT64_MAX};
        CHECK_INT(xport_recv(x, &peer, after_ms(5000), &m, err, sizeof(err)), 0);
        CHECK_INT(m.hdr.opcode, PROTO_OP_SHUTDOWN);
    }
    proto_buf_free(&b);
    proto_msg_free(&m);
}

/* Run with mpiexec -disable-auto-cleanup -n 3: the last rank exits without MPI_Finalize; hydra
 * then sends SIGUSR1 to the survivors, which MPICH passes to the handler installed before
 * MPI_Init. The survivors leave with _exit (MPI_Finalize hangs after a peer died). */
static void mode_sigusr1(void)
{
    struct proto_buf b = {0};
    struct proto_heartbeat hb = {1, PROTO_STATE_READY, 1.0f};
    struct proto_route r = rt(1, 0);
    if (rank == size - 1) {
        /* first every survivor's word that main's checks (no notice yet) are done: an exit
         * before that would make them racy */
        struct proto_msg ready = {0};
        for (int k = 0; k < size - 1; k++) {
            struct xport_filter f = {XPORT_ANY_SOURCE, 1, 0, UINT64_MAX};
            CHECK_INT(xport_recv(x, &f, after_ms(5000), &ready, err, sizeof(err)), 0);
        }
        proto_msg_free(&ready);
        proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err));
        send_to(0, &b);
        xport_flush(x, after_ms(5000), err, sizeof(err));
        fprintf(stderr, "rank %d: exiting without MPI_Finalize\n", rank);
        _exit(0);
    }
    proto_encode_heartbeat(&b, &r, PROTO_OP_HEARTBEAT, &hb, err, sizeof(err));
    send_to(size - 1, &b); /* ready: main's checks are done */
    xport_flush(x, after_ms(5000), err, sizeof(err));
    proto_buf_free(&b);
    struct proto_msg m = {0};
    if (rank == 0) {
        struct xport_filter f = {size - 1, 1, 0, UINT64_MAX};
        CHECK_INT(xport_recv(x, &f, after_ms(5000), &m, err, sizeof(err)), 0);
    }
    uint64_t t0 = bt_now_ns(), limit = t0 + 5 * S_NS;
    while (xport_peer_exits(x) == 0 && bt_now_ns() < limit) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL); /* polling the flag the handler sets, with a deadline */
    }
    CHECK(xport_peer_exits(x) >= 1);
    fprintf(stderr, "rank %d: SIGUSR1 notice %s (%u)\n", rank,
            xport_peer_exits(x) ? "arrived" : "did NOT arrive", xport_peer_exits(x));
    proto_msg_free(&m);
    xport_mark_faulted(x);
    xport_free(x);
    int fails = t_done();
    fprintf(stderr, "rank %d: sigusr1 %s\n", rank, fails ? "FAILED" : "ok");
    _exit(fails);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    /* the SIGUSR1 handler goes in before MPI_Init; afterwards it is refused */
    CHECK_INT(xport_mpi_install_sigusr1(err, sizeof(err)), 0);
    int rc = xport_mpi_init(&argc, &argv, 0, &x, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "xport_mpi_init: %s\n", err);
        return 1;
    }
    CHECK_INT(xport_mpi_install_sigusr1(err, sizeof(err)), BT_EINVAL);
    CHECK_INT(xport_peer_exits(x), 0);
    rank = xport_rank(x);
    size = xport_size(x);
    CHECK_STR(xport_name(x), "mpi");
    char tag[16];
    snprintf(tag, sizeof(tag), "rank %d", rank);
    bt_log_set_tag(tag);
    if (!strcmp(mode, "pingpong"))
        mode_pingpong();
    else if (!strcmp(mode, "deadline") && size == 2)
        mode_deadline();
    else if (!strcmp(mode, "stale") && size == 2)
        mode_stale();
    else if (!strcmp(mode, "idle") && size == 2)
        mode_idle();
    else if (!strcmp(mode, "garbage") && size == 2)
        mode_garbage();
    else if (!strcmp(mode, "latency") && size == 2)
        mode_latency();
    else if (!strcmp(mode, "sigusr1") && size >= 3)
        mode_sigusr1(); /* does not return */
    else {
        fprintf(stderr, "usage: mpiexec -n 2|3 xport_test pingpong|deadline|stale|idle|garbage|"
                        "latency (-n 2), pingpong (-n 3), sigusr1 (-disable-auto-cleanup -n 3)\n");
        xport_free(x);
        return 2;
    }
    xport_free(x);
    int fails = t_done();
    fprintf(stderr, "rank %d: %s %s\n", rank, mode, fails ? "FAILED" : "ok");
    return fails;
}
