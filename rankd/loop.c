/* rankd loop: startup, handshake and the command loop of a pipeline rank (see loop.h). */
#include "loop.h"

#include "config.h"
#include "device.h"
#include "exitcodes.h"
#include "gguf.h"
#include "kernels.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "pipeline.h"
#include "protocol.h"
#include "quant.h"
#include "stage.h"
#include "transport.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAIT_IDLE_NS   (100ull * 1000000ull) /* one wait of the loop (then housekeeping) */
#define BUSY_LINGER_NS (20ull * 1000000ull)  /* fast polling this long after a FORWARD */
#define PROGRESS_EVERY (250ull * 1000000ull) /* load progress to rank 0 at most this often */

struct rankd {
    struct xport *x;
    const struct cfg_stage *c;
    int rank, size;
    char host[PROTO_HOST_MAX + 1];
    /* the stage, NULL until loaded */
    struct gguf *g;
    struct stage *stage;
    struct stage_pick *picks;    /* (n_seq) last stage: what stage_sample chose */
    struct proto_sampled *items; /* (n_seq) */
    struct proto_top *tops;      /* (n_seq, PROTO_MAX_LOGPROBS) */
    struct kv_op *ops;           /* (max KV operations of one FORWARD) */
    /* messages */
    struct proto_buf out;
    struct proto_msg msg;
    struct proto_handshake hs;
    uint64_t epoch, last_step;
    uint64_t progress_sent_ns;
    /* loop state */
    int state; /* enum proto_state */
    bool stop, faulted, busy;
    bool accepted;          /* rank 0 accepted the handshake: from then on it must be heard */
    uint64_t last_heard_ns; /* last message received (heartbeats, work) */
    uint64_t orphan_ns;     /* silence after which this rank leaves by itself (0: never) */
    uint64_t last_fwd_ns;
    struct proto_stats st;
    char err[512];
};

typedef void (*rankd_handler)(struct rankd *d, const struct proto_msg *m);

static struct proto_route route(const struct rankd *d, uint64_t step)
{
    struct proto_route r = {(uint32_t)d->rank, d->epoch, step};
    return r;
}

static void transport_failed(struct rankd *d);

/* Send d->out (just encoded) to dst; a failure is logged here. A timeout does not stop the loop
 * (a stuck peer shows up at rank 0 as a missed deadline); a transport failure ends it. */
static void send_out(struct rankd *d, int dst)
{
    char err[384];
    int rc =
        xport_send(d->x, dst, &d->out, bt_now_ns() + PIPELINE_SEND_TIMEOUT_NS, err, sizeof(err));
    if (rc < 0) bt_error("send to rank %d: %s", dst, err);
    if (rc == BT_EIO) transport_failed(d);
}

/* Report one request's failure (or a startup failure, step 0) to rank 0. */
static void report(struct rankd *d, uint64_t step, uint32_t seq, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void report(struct rankd *d, uint64_t step, uint32_t seq, int code, const char *fmt, ...)
{
    struct proto_error e = {.seq_id = seq, .code = code < 0 && code >= -1000 ? code : BT_ERR};
    char text[PROTO_ERRMSG_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    char full[sizeof(text) + sizeof(d->host) + 32];
    snprintf(full, sizeof(full), "rank %d on host %s: %s", d->rank, d->host, text);
    size_t n = strlen(full) < PROTO_ERRMSG_MAX ? strlen(full) : PROTO_ERRMSG_MAX;
    memcpy(e.message, full, n); /* the encoder cuts at PROTO_ERRMSG_MAX anyway */
    e.message[n] = 0;
    if (step)
        bt_warn("step %llu: %s", (unsigned long long)step, text);
    else
        bt_error("%s", text);
    d->st.n_errors++;
    struct proto_route r = route(d, step);
    char err[256];
    if (proto_encode_error(&d->out, &r, &e, err, sizeof(err)) < 0) {
        bt_error("cannot encode an ERROR: %s", err);
        return;
    }
    send_out(d, 0);
}

static void send_handshake(struct rankd *d)
{
    char err[256];
    struct proto_route r = route(d, 0);
    d->hs.state = (uint32_t)d->state;
    if (proto_encode_handshake(&d->out, &r, &d->hs, err, sizeof(err)) < 0) {
        bt_error("cannot encode the HANDSHAKE: %s", err);
        return;
    }
    send_out(d, 0);
    d->progress_sent_ns = bt_now_ns();
}

static uint64_t rss_bytes(void)
{
    unsigned long size = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    if (fscanf(f, "%lu %lu", &size, &rss) != 2) rss = 0;
    fclose(f);
    return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* ---- handlers ---- */

static void on_handshake(struct rankd *d, const struct proto_msg *m)
{
    if (m->hdr.sender != 0) return;
    d->epoch = m->hdr.epoch; /* rank 0 names the job epoch */
    if (m->handshake.state == PROTO_STATE_FAILED) {
        bt_info("rank 0 ended the startup (see its log); waiting for SHUTDOWN");
    } else {
        bt_debug("rank 0 accepted the handshake (epoch %llu)", (unsigned long long)d->epoch);
        d->accepted = true;
    }
}

static void on_heartbeat(struct rankd *d, const struct proto_msg *m)
{
    char err[256];
    struct proto_heartbeat hb = {
        .nonce = m->heartbeat.nonce, .state = (uint32_t)d->state, .progress = d->hs.progress};
    struct proto_route r = route(d, m->hdr.step);
    if (proto_encode_heartbeat(&d->out, &r, PROTO_OP_HEARTBEAT_REPLY, &hb, err, sizeof(err)) < 0) {
        bt_error("cannot encode a HEARTBEAT_REPLY: %s", err);
        return;
    }
    send_out(d, 0);
}

static void on_stats_request(struct rankd *d, const struct proto_msg *m)
{
    char err[256];
    struct xport_stats xs;
    xport_get_stats(d->x, &xs);
    d->st.n_dropped = xs.n_dropped;
    d->st.n_bad = xs.n_bad;
    d->st.kv_used = 0;
    const struct stage *st = d->stage;
    d->st.kv_size = st ? (uint64_t)st->n_seq * (uint64_t)st->n_ctx : 0;
    for (int i = 0; st && i < st->n_seq; i++) d->st.kv_used += (uint64_t)kv_seq_len(st->kv, i);
    d->st.rss_bytes = rss_bytes();
    struct proto_route r = route(d, m->hdr.step);
    if (proto_encode_stats(&d->out, &r, &d->st, err, sizeof(err)) < 0) {
        bt_error("cannot encode STATS: %s", err);
        return;
    }
    send_out(d, 0);
}

/* SHUTDOWN: acknowledged with a HEARTBEAT_REPLY whose nonce is its step id, the last message
 * this rank sends (rank 0 receives everything up to it before MPI_Finalize). */
static void on_shutdown(struct rankd *d, const struct proto_msg *m)
{
    char err[256];
    bt_info("SHUTDOWN from rank 0 (%s)",
            m->shutdown.reason == PROTO_SHUTDOWN_RESTART ? "restart" : "normal");
    d->stop = true;
    struct proto_heartbeat ack = {
        .nonce = m->hdr.step, .state = (uint32_t)d->state, .progress = d->hs.progress};
    struct proto_route r = route(d, m->hdr.step);
    if (proto_encode_heartbeat(&d->out, &r, PROTO_OP_HEARTBEAT_REPLY, &ack, err, sizeof(err)) ==
        BT_OK)
        send_out(d, 0);
}

static void on_reset(struct rankd *d, const struct proto_msg *m)
{
    for (uint32_t i = 0; d->stage && i < m->reset.n; i++) {
        const struct proto_reset_item *it = &m->reset.items[i];
        if (it->flags & PROTO_RESET_CLEAR_KV) stage_seq_release(d->stage, (int)it->seq_id);
    }
}

/* Last stage, after the run: feed and sample (stage_sample), then TOKENS to rank 0. */
static void sample_and_reply(struct rankd *d, uint64_t step, const float *logits, int n_out)
{
    char err[256];
    int n = stage_sample(d->stage, logits, n_out, d->picks);
    for (int i = 0; i < n; i++) {
        const struct stage_pick *pk = &d->picks[i];
        struct proto_sampled *it = &d->items[i];
        struct proto_top *top = d->tops + (size_t)i * PROTO_MAX_LOGPROBS;
        memset(it, 0, sizeof(*it));
        it->seq_id = (uint32_t)pk->seq;
        it->top = top;
        if (pk->token < 0) {
            it->token = -1;
            it->error = pk->token;
            bt_warn("step %llu: seq %d: %s", (unsigned long long)step, pk->seq,
                    pk->token == BT_EINVAL   ? "every token is excluded by the logit bias"
                    : pk->token == BT_EUNSUP ? "no sampling parameters (never reset)"
                                             : bt_strstatus(pk->token));
            d->st.n_errors++;
            continue;
        }
        it->token = pk->token;
        it->logprob = pk->res.logprob;
        it->n_top =
            (uint32_t)(pk->res.n_top > PROTO_MAX_LOGPROBS ? PROTO_MAX_LOGPROBS : pk->res.n_top);
        for (uint32_t k = 0; k < it->n_top; k++)
            top[k] = (struct proto_top){pk->res.top[k].token, pk->res.top[k].logprob};
    }
    struct proto_tokens out = {.n = (uint32_t)n, .items = d->items};
    struct proto_route r = route(d, step);
    if (proto_encode_tokens(&d->out, &r, &out, err, sizeof(err)) < 0) {
        report(d, step, PROTO_SEQ_NONE, BT_ERR, "cannot encode TOKENS: %s", err);
        return;
    }
    send_out(d, 0);
}

/* A FORWARD this stage can run (the decoder checked the message itself); else the step's ERROR
 * is sent and false returned. */
static bool forward_ok(struct rankd *d, const struct proto_forward *fw, uint64_t step)
{
    const struct stage *st = d->stage;
    uint32_t n_logits = 0;
    if (!st) {
        report(d, step, PROTO_SEQ_NONE, BT_EUNSUP, "this rank has no stage loaded");
        return false;
    }
    if (fw->n_embd != (uint32_t)st->n_embd || fw->n_rows != fw->n_tokens) {
        report(d, step, PROTO_SEQ_NONE, BT_EINVAL,
               "FORWARD with %u rows of %u floats for %u tokens; this stage needs one row of %d "
               "per token",
               fw->n_rows, fw->n_embd, fw->n_tokens, st->n_embd);
        return false;
    }
    if (fw->n_tokens > (uint32_t)st->max_batch) {
        report(d, step, PROTO_SEQ_NONE, BT_EINVAL, "FORWARD of %u tokens, at most %d", fw->n_tokens,
               st->max_batch);
        return false;
    }
    for (uint32_t i = 0; i < fw->n_tokens; i++) {
        n_logits += !!(fw->tokens[i].flags & PROTO_TOK_LOGITS);
        if (fw->tokens[i].token >= st->n_vocab) {
            report(d, step, fw->tokens[i].seq_id, BT_EINVAL, "token id %d out of range 0..%d",
                   fw->tokens[i].token, st->n_vocab - 1);
            return false;
        }
    }
    if (n_logits > (uint32_t)st->n_seq) {
        report(d, step, PROTO_SEQ_NONE, BT_EINVAL, "FORWARD asks for %u samples, at most %d",
               n_logits, st->n_seq);
        return false;
    }
    for (uint32_t i = 0; i < fw->n_seqs; i++)
        if (fw->seqs[i].seq_id >= (uint32_t)st->n_seq) {
            report(d, step, fw->seqs[i].seq_id, BT_EINVAL, "sequence id %u out of range 0..%d",
                   fw->seqs[i].seq_id, st->n_seq - 1);
            return false;
        }
    return true;
}

/* The KV block operations rank 0 decided (its table, blocks.h), then the per-sequence flags: a
 * new sequence gets its sampler (the policy applied); CLEAR_KV drops the cells from the batch's
 * first position of the sequence on. */
static bool apply_seq_flags(struct rankd *d, const struct proto_forward *fw, uint64_t step)
{
    struct stage *st = d->stage;
    char err[384];
    if (fw->n_ops > pipeline_max_kv_ops(&d->hs.sizes)) {
        report(d, step, PROTO_SEQ_NONE, BT_EINVAL, "FORWARD with %u KV operations, at most %u",
               fw->n_ops, pipeline_max_kv_ops(&d->hs.sizes));
        return false;
    }
    pipeline_kv_from_proto(fw->ops, (int)fw->n_ops, d->ops);
    int rc = stage_kv_apply(st, d->ops, (int)fw->n_ops, err, sizeof(err));
    if (rc < 0) {
        report(d, step, PROTO_SEQ_NONE, rc, "%s", err);
        return false;
    }
    for (uint32_t i = 0; i < fw->n_seqs; i++) {
        const struct proto_seq *s = &fw->seqs[i];
        int seq = (int)s->seq_id;
        if (s->flags & PROTO_SEQ_RESET) {
            struct smp_params p;
            struct smp_bias bias[SMP_MAX_BIAS];
            pipeline_sampling_from_proto(&s->sampling, &p, bias);
            rc = stage_seq_reset(st, seq, &p, err, sizeof(err));
            if (rc < 0) {
                report(d, step, s->seq_id, rc, "%s", err);
                return false;
            }
        } else if (s->flags & PROTO_SEQ_CLEAR_KV) {
            for (uint32_t k = 0; k < fw->n_tokens; k++)
                if (fw->tokens[k].seq_id == s->seq_id) {
                    if ((int)fw->tokens[k].pos <= kv_seq_len(st->kv, seq))
                        kv_seq_keep(st->kv, seq, (int)fw->tokens[k].pos);
                    break;
                }
        }
    }
    return true;
}

static void on_forward(struct rankd *d, const struct proto_msg *m)
{
    const struct proto_forward *fw = &m->forward;
    const uint64_t step = m->hdr.step;
    const uint64_t t0 = bt_now_ns();
    char err[384];
    int rc;

    if (m->hdr.sender != (uint32_t)(d->rank - 1)) {
        bt_warn("FORWARD from rank %u, expected rank %d; dropped", m->hdr.sender, d->rank - 1);
        return;
    }
    d->last_step = step;
    d->busy = true;
    d->last_fwd_ns = t0;
    xport_set_busy(d->x, 1);
    if (!forward_ok(d, fw, step) || !apply_seq_flags(d, fw, step)) return;
    struct stage *st = d->stage;
    stage_batch_clear(st);
    for (uint32_t i = 0; i < fw->n_tokens; i++) {
        const struct proto_token *t = &fw->tokens[i];
        stage_batch_add(st, (int)t->seq_id, (int)t->pos, t->token,
                        (t->flags & PROTO_TOK_LOGITS ? STAGE_WANT : 0u) |
                            (t->flags & PROTO_TOK_PROMPT ? STAGE_PROMPT : 0u));
    }
    const float *out;
    int n_out = 0;
    if ((rc = stage_run(st, fw->rows, &out, &n_out, err, sizeof(err))) < 0) {
        report(d, step, PROTO_SEQ_NONE, rc, "layers %d..%d: %s", st->m->l0, st->m->l1 - 1, err);
        return;
    }
    if (st->m->last) {
        sample_and_reply(d, step, out, n_out);
    } else {
        struct proto_forward nx = {.n_tokens = fw->n_tokens,
                                   .n_seqs = fw->n_seqs,
                                   .n_embd = (uint32_t)st->n_embd,
                                   .n_rows = fw->n_tokens,
                                   .n_ops = fw->n_ops, /* every later stage applies them too */
                                   .ops = fw->ops,
                                   .tokens = fw->tokens,
                                   .seqs = fw->seqs,
                                   .rows = out};
        struct proto_route r = route(d, step);
        if ((rc = proto_encode_forward(&d->out, &r, &nx, err, sizeof(err))) < 0) {
            report(d, step, PROTO_SEQ_NONE, rc, "cannot encode FORWARD: %s", err);
            return;
        }
        send_out(d, d->rank + 1);
    }
    uint64_t dt = bt_now_ns() - t0;
    d->st.last_step_ns = dt;
    d->st.total_step_ns += dt;
    d->st.n_steps++;
    d->st.n_tokens += fw->n_tokens;
}

static const rankd_handler handlers[PROTO_OP_COUNT] = {
    [PROTO_OP_HANDSHAKE] = on_handshake,
    [PROTO_OP_HEARTBEAT] = on_heartbeat,
    [PROTO_OP_STATS_REQUEST] = on_stats_request,
    [PROTO_OP_SHUTDOWN] = on_shutdown,
    [PROTO_OP_FORWARD] = on_forward,
    [PROTO_OP_RESET] = on_reset,
};

/* Wait for one message (until deadline) and handle it. */
static void serve_one(struct rankd *d, uint64_t deadline)
{
    struct xport_filter flt = {.src = XPORT_ANY_SOURCE,
                               .epoch = d->epoch,
                               .step_min = d->last_step + 1,
                               .step_max = UINT64_MAX};
    int rc = xport_recv(d->x, &flt, deadline, &d->msg, d->err, sizeof(d->err));
    if (rc == BT_ETIMEOUT) return;
    if (rc == BT_EFORMAT) {
        bt_warn("%s", d->err);
        return;
    }
    if (rc < 0) {
        bt_error("transport: %s", d->err);
        if (rc == BT_EIO)
            transport_failed(d);
        else
            d->faulted = true;
        return;
    }
    d->last_heard_ns = bt_now_ns();
    uint32_t op = d->msg.hdr.opcode;
    rankd_handler h = op < PROTO_OP_COUNT ? handlers[op] : NULL;
    if (!h) {
        bt_warn("unexpected %s from rank %u; dropped", proto_op_name(op), d->msg.hdr.sender);
        return;
    }
    if (op != PROTO_OP_FORWARD && d->msg.hdr.sender != 0) {
        bt_warn("%s from rank %u: control comes from rank 0 only; dropped", proto_op_name(op),
                d->msg.hdr.sender);
        return;
    }
    h(d, &d->msg);
}

/* Leaving by itself (not after a SHUTDOWN): tell rank 0 first, so that it does not take this
 * rank for the failed one (engine_pipe.c probes the ranks after mpiexec's notice), with a short
 * bounded wait for the message to go out. */
static void leave(struct rankd *d, const char *why)
{
    char err[256];
    if (d->faulted) return; /* leaving already */
    d->faulted = true;
    bt_error("%s: leaving for a restart (exit %d)", why, BT_EXIT_RESTART);
    if (d->accepted) { /* a HEARTBEAT_REPLY in state FAILED: control, never dropped by step */
        struct proto_heartbeat hb = {
            .nonce = 0, .state = PROTO_STATE_FAILED, .progress = d->hs.progress};
        struct proto_route r = route(d, 0);
        if (proto_encode_heartbeat(&d->out, &r, PROTO_OP_HEARTBEAT_REPLY, &hb, err, sizeof(err)) ==
            BT_OK)
            send_out(d, 0);
        xport_flush(d->x, bt_now_ns() + 200000000ull, err, sizeof(err));
    }
}

/* The transport failed (BT_EIO). A send to another rank that failed means that rank exited or
 * cannot be reached (over TCP, the first sign of a dead successor, before mpiexec's notice):
 * leave, telling rank 0, so that it names that rank and not this one. Anything else (rank 0
 * unreachable, the transport itself broken): leave at once. */
static void transport_failed(struct rankd *d)
{
    int k = xport_take_failed_peer(d->x);
    if (k > 0 && k != d->rank) {
        char why[96];
        snprintf(why, sizeof(why), "a send to rank %d failed (it exited or is unreachable)", k);
        leave(d, why);
    }
    d->faulted = true;
}

static bool peer_gone(struct rankd *d)
{
    if (xport_peer_exits(d->x) == 0) return false;
    leave(d, "a process of this job exited (mpiexec's SIGUSR1): the job cannot go on");
    return true;
}

/* No message at all (heartbeat, work) from rank 0's side for orphan_ns: rank 0 is gone or cut
 * off (on another host, no SIGUSR1 need come): leave, so no orphan rank outlives its job. */
static bool orphaned(struct rankd *d, uint64_t now)
{
    if (!d->accepted || !d->orphan_ns || now - d->last_heard_ns < d->orphan_ns) return false;
    char why[160];
    snprintf(why, sizeof(why),
             "nothing heard from rank 0 for %.3g s (heartbeat interval x misses x 2)",
             (double)(now - d->last_heard_ns) * 1e-9);
    leave(d, why);
    return true;
}

/* ---- startup ---- */

/* Load progress: tell rank 0 (at most every PROGRESS_EVERY) and answer what it sent. */
static int on_load_progress(void *arg, float fraction)
{
    struct rankd *d = arg;
    d->hs.progress = fraction < 0 ? 0 : fraction > 1 ? 1 : fraction;
    if (bt_now_ns() - d->progress_sent_ns >= PROGRESS_EVERY) send_handshake(d);
    serve_one(d, bt_now_ns()); /* one waiting message, never blocks */
    return d->stop || d->faulted || peer_gone(d);
}

/* Test hook (--test-load-delay-ms, --test-load-delay-rank): this rank starts loading that late,
 * as a slow starter would (a cold disk, a busy host). Meanwhile it is what a loading rank is: in
 * the loading state with progress 0, telling rank 0 so (a HANDSHAKE every second), and
 * answering what comes (a SHUTDOWN, a peer's exit end the wait). */
static int load_delay(struct rankd *d)
{
    const struct cfg_stage *c = d->c;
    if (c->test_load_delay_ms <= 0 ||
        (c->test_load_delay_rank != -1 && c->test_load_delay_rank != d->rank))
        return BT_OK;
    bt_warn("test hook: starting to load %lld ms late (--test-load-delay-ms)",
            (long long)c->test_load_delay_ms);
    const uint64_t until = bt_now_ns() + (uint64_t)c->test_load_delay_ms * 1000000ull;
    for (uint64_t now = bt_now_ns(); now < until; now = bt_now_ns()) {
        if (now - d->progress_sent_ns >= 1000000000ull) send_handshake(d);
        serve_one(d, now + WAIT_IDLE_NS < until ? now + WAIT_IDLE_NS : until);
        if (d->stop || d->faulted || peer_gone(d))
            return bt_errf(d->err, sizeof(d->err), BT_ERR, "stopped while loading");
    }
    return BT_OK;
}

/* The identity and sizes this rank tells rank 0 (sent before anything loads: a mismatch is found
 * at once), and the message cap they give. r: this rank's layers. */
static int describe_stage(struct rankd *d, const struct model_hparams *hp,
                          const struct stage_range *r, char *err, size_t errsz)
{
    const struct cfg_stage *c = d->c;
    const char *fake = getenv("BATON_TEST_BUILD_ID"); /* test hook: a different build */
    if (fake && *fake) snprintf(d->hs.build_id, sizeof(d->hs.build_id), "%s", fake);
    d->hs.model_id = gguf_identity(d->g);
    d->hs.model_size = gguf_file_size(d->g);
    d->hs.layer_begin = (uint32_t)r->l0;
    d->hs.layer_end = (uint32_t)r->l1;
    d->hs.n_layers = (uint32_t)hp->n_layer;
    pipeline_sizes((int)c->parallel, (int)c->ctx_size, hp->n_ctx_train, (int)c->prefill_chunk,
                   c->cache_type == CFG_CACHE_F32 ? BT_F32 : BT_F16, (int)c->kv_blocks,
                   &d->hs.sizes);
    int n_threads = c->threads > 0 ? (int)c->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (cfg_device(c) == DEV_CPU)
        snprintf(d->hs.backend, sizeof(d->hs.backend), "cpu %s, %d threads", kern_isa(),
                 n_threads < 1 ? 1 : n_threads);
    else
        snprintf(d->hs.backend, sizeof(d->hs.backend), "cuda:%d", cfg_device(c));
    size_t cap;
    int rc = pipeline_msg_cap(&d->hs.sizes, (uint32_t)hp->n_embd, &cap, err, errsz);
    if (rc < 0) return rc;
    xport_set_max_msg(d->x, cap);
    return BT_OK;
}

static int load_stage(struct rankd *d)
{
    const struct cfg_stage *c = d->c;
    struct stage_range ranges[STAGE_MAX];
    struct model_hparams hp;
    char *err = d->err;
    size_t errsz = sizeof(d->err);
    int rc;

    if (!c->model || !*c->model)
        return bt_errf(err, errsz, BT_EINVAL,
                       "option model: required (-m FILE, BATON_MODEL or `model =` in the config "
                       "file)");
    if ((rc = gguf_open(c->model, &d->g, err, errsz)) < 0) return rc;
    if ((rc = model_hparams_read(d->g, &hp, err, errsz)) < 0) return rc;
    if (d->size > STAGE_MAX)
        return bt_errf(err, errsz, BT_EINVAL, "%d ranks, at most %d", d->size, STAGE_MAX);
    if ((rc = stage_split(d->g, d->size, c->split, ranges, err, errsz)) < 0) return rc;
    const struct stage_range *r = &ranges[d->rank];
    if ((rc = describe_stage(d, &hp, r, err, errsz)) < 0) return rc;
    send_handshake(d); /* identity first: a mismatch is found before anything loads */
    bt_info("%s: layers [%d, %d) of %d%s", c->model, r->l0, r->l1, hp.n_layer,
            r->l1 == hp.n_layer ? " + output head" : "");

    if ((rc = load_delay(d)) < 0) return rc;
    struct stage_params sp = {.l0 = r->l0,
                              .l1 = r->l1,
                              .n_seq = (int)d->hs.sizes.n_seq,
                              .n_ctx = (int)d->hs.sizes.n_ctx,
                              .max_batch = (int)d->hs.sizes.max_batch,
                              .n_blocks = (int)d->hs.sizes.n_blocks,
                              .kv_type = d->hs.sizes.kv_type,
                              .n_threads = (int)c->threads,
                              .device = cfg_device(c),
                              .progress = on_load_progress,
                              .arg = d};
    if ((rc = stage_build(d->g, &sp, &d->stage, err, errsz)) < 0) return rc;
    const struct stage *st = d->stage;
    d->picks = calloc((size_t)st->n_seq, sizeof(*d->picks));
    d->items = calloc((size_t)st->n_seq, sizeof(*d->items));
    d->tops = calloc((size_t)st->n_seq * PROTO_MAX_LOGPROBS, sizeof(*d->tops));
    d->ops = malloc(sizeof(*d->ops) * pipeline_max_kv_ops(&d->hs.sizes));
    if (!d->picks || !d->items || !d->tops || !d->ops)
        return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    bt_info("stage ready: layers [%d, %d), %d threads, weights %.1f MiB, KV %d x %d %s (%.1f "
            "MiB), RSS %.1f MiB",
            st->m->l0, st->m->l1, st->n_threads, (double)st->m->n_bytes / (1 << 20), st->n_seq,
            st->n_ctx, bt_type_name(st->kv->type), (double)kv_bytes(st->kv) / (1 << 20),
            (double)rss_bytes() / (1 << 20));
    return BT_OK;
}

static void rankd_free(struct rankd *d)
{
    free(d->picks);
    free(d->items);
    free(d->tops);
    free(d->ops);
    stage_free(d->stage);
    gguf_close(d->g);
    proto_buf_free(&d->out);
    proto_msg_free(&d->msg);
}

int rankd_run(struct xport *x, const struct cfg_stage *c, const char *cfg_err, int *faulted)
{
    struct rankd d;
    int status = BT_EXIT_OK;
    memset(&d, 0, sizeof(d));
    d.x = x;
    d.c = c;
    d.rank = xport_rank(x);
    d.size = xport_size(x);
    d.epoch = PIPELINE_EPOCH;
    d.state = PROTO_STATE_LOADING;
    proto_handshake_local(&d.hs);
    snprintf(d.host, sizeof(d.host), "%s", d.hs.hostname);
    *faulted = 0;

    if (d.rank == 0) {
        /* rank 0 is baton-server's: nobody would coordinate the job */
        bt_error("baton-rankd runs as rank 1.. of an mpiexec job; rank 0 must be baton-server");
        d.faulted = true;
        status = BT_EXIT_CONFIG;
        goto out;
    }
    if (cfg_err) {
        d.state = PROTO_STATE_FAILED;
        report(&d, 0, PROTO_SEQ_NONE, BT_EINVAL, "%s", cfg_err);
    } else if (load_stage(&d) < 0) {
        if (!d.stop && !d.faulted) {
            d.state = PROTO_STATE_FAILED;
            report(&d, 0, PROTO_SEQ_NONE, BT_EINVAL, "%s", d.err);
            send_handshake(&d);
        }
    } else {
        d.state = PROTO_STATE_READY;
        d.hs.progress = 1.0f;
        send_handshake(&d);
    }
    xport_set_busy(x, 0);
    d.orphan_ns = pipeline_orphan_ns((uint64_t)c->heartbeat_interval_ms * 1000000ull,
                                     (int)c->heartbeat_misses);
    d.last_heard_ns = bt_now_ns();
    while (!d.stop && !d.faulted && !peer_gone(&d) && !orphaned(&d, bt_now_ns())) {
        uint64_t now = bt_now_ns();
        if (d.busy && now - d.last_fwd_ns > BUSY_LINGER_NS) {
            d.busy = false;
            xport_set_busy(x, 0);
        }
        serve_one(&d, now + (d.busy ? BUSY_LINGER_NS : WAIT_IDLE_NS));
    }
    if (d.faulted) status = BT_EXIT_RESTART;
out:
    *faulted = d.faulted;
    rankd_free(&d);
    return status;
}
