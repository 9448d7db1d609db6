/* engine_pipe: the pipeline engine on rank 0 (see engine_pipe.h). */
#include "engine_pipe.h"

#include "device.h"
#include "exitcodes.h"
#include "gguf.h"
#include "kv.h"
#include "log.h"
#include "model.h"
#include "pipeline.h"
#include "protocol.h"
#include "quant.h"
#include "stage.h"
#include "transport.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SEC_NS           1000000000ull
#define PROBE_MIN_NS     (500000000ull) /* a round of heartbeats to find a failed rank: at least */
#define PROBE_MAX_NS     (2 * SEC_NS)   /* ... and at most this long */
#define SHUTDOWN_WAIT_NS (2 * SEC_NS)   /* delivering SHUTDOWN at the end */
#define WAIT_NOTE_NS     (30 * SEC_NS)  /* load: log the ranks still awaited this often */

struct pipe_rank {
    bool seen; /* a HANDSHAKE arrived */
    int state; /* enum eng_rank_state */
    float progress;
    int logged; /* load progress logged up to this quarter */
    char host[64];
    uint32_t pid;
    int l0, l1;            /* its stage, as rank 0 computed it */
    uint64_t last_seen_ns; /* last message from it; 0 none */
    double step_ms;        /* its last step (STATS), -1 unknown */
    int hb_missed;         /* heartbeats sent while idle since its last message */
    uint64_t probe_nonce;  /* the heartbeat of the current probe */
    bool probe_ok;         /* ... answered */
    bool left;             /* it said it leaves by itself (a peer of the job exited) */
};

/* A submitted micro-batch waiting for its answer. Arrays are (n_seq). */
struct pipe_flight {
    uint64_t step, deadline;
    int n;
    int32_t *seq;
    int32_t *end; /* (n_seq) the position after each item: committed when the batch is answered */
    bool *sample, *got;
    struct eng_result *res;
    bool done;
    int rc; /* 0 or the batch's error */
    char err[PROTO_ERRMSG_MAX + 64];
};

struct eng_pipe {
    struct xport *x;
    int size;
    struct eng_pipe_config pc;
    uint64_t epoch, step;
    struct stage_range range[STAGE_MAX];
    struct pipe_rank *ranks; /* (size) */
    struct proto_handshake hs;
    /* stage 0 */
    struct stage *st;
    struct proto_sizes sizes; /* what every rank must agree on (e->hs.sizes) */
    int n_seq, n_ctx, n_vocab, n_embd, max_batch;
    struct proto_token *ptok; /* (max_batch) */
    struct proto_seq *pseq;   /* (n_seq) */
    struct proto_bias *pbias; /* (n_seq, SMP_MAX_BIAS) logit bias entries of one FORWARD */
    /* the KV blocks (blocks.h): rank 0 decides, stage 0 applies at once, the other ranks with the
     * next FORWARD (whichever sequences it holds: the order of decisions is kept) */
    struct blk_table *bt;
    struct kv_op *pend;             /* (max_ops) operations not sent yet */
    struct proto_kv_op *pwire;      /* (max_ops) the same, for the FORWARD */
    int n_pend, max_ops, begin_ops; /* begin_ops: room kept for beginnings, the rest for grows */
    int *pend_from, *pend_to;       /* (n_seq) a sequence's beginning in pend, -1: sent or none */
    struct proto_buf out;
    struct proto_msg msg;
    /* batches in flight: a ring of n_fl */
    struct pipe_flight *fl;
    int n_fl, fl_head, fl_len;
    /* state */
    const struct eng_load_params *lp; /* during load only */
    bool loading, ready, broken;
    int fail_rc;    /* load: the first failure seen in a message (0 none) */
    int fail_rank;  /* ... the rank it is about, -1 unknown */
    int exit_code;  /* ops->exit_code */
    char fail[768]; /* its text */
    uint64_t hb_next, hb_nonce;
    uint64_t t_ready_ns;     /* when the pipeline became ready */
    uint64_t hb_ns, step_ns; /* --heartbeat-interval, --step-timeout */
    int misses;              /* --heartbeat-misses */
    bool probing;            /* inside probe(): no nested fault handling */
    const char *fault_kind;  /* of the fault that broke the pipeline */
    int fault_rank;          /* -1: unknown */
    double step_ms;          /* stage 0's last step */
    /* test hook: BATON_TEST_FORWARD_BAD_SEQ=N puts a bad sequence id into the N-th FORWARD */
    long bad_seq_at;
    long n_forward;
};

/* ---- small helpers ---- */

static struct proto_route route(const struct eng_pipe *e, uint64_t step)
{
    struct proto_route r = {0, e->epoch, step};
    return r;
}

static const char *host_of(const struct eng_pipe *e, int k)
{
    return e->ranks[k].host[0] ? e->ranks[k].host : "?";
}

/* The pipeline cannot go on: remember why (first reason wins); logged once, here. kind names the
 * fault (struct eng_fault), rank the failed rank (-1 unknown; it is then shown offline). */
static void set_fault(struct eng_pipe *e, const char *kind, int rank, const char *why)
{
    if (e->broken) return;
    e->broken = true;
    e->exit_code = BT_EXIT_RESTART;
    e->fault_kind = kind;
    e->fault_rank = rank;
    if (rank > 0 && rank < e->size) e->ranks[rank].state = ENG_RANK_OFFLINE;
    snprintf(e->fail, sizeof(e->fail), "%s", why);
    bt_error("pipeline broken (%s): %s", kind, why);
}

static void set_broken(struct eng_pipe *e, const char *why)
{
    set_fault(e, "transport", -1, why);
}

/* A startup failure found in a message (first wins; logged by load). */
static void set_fail(struct eng_pipe *e, int rc, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_fail(struct eng_pipe *e, int rc, int code, const char *fmt, ...)
{
    if (e->fail_rc) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->fail, sizeof(e->fail), fmt, ap);
    va_end(ap);
    e->fail_rc = rc;
    e->exit_code = code;
}

/* The load failure about to be set (set_fail) is rank k's: first wins, as for set_fail. */
static void fail_rank(struct eng_pipe *e, int k)
{
    if (!e->fail_rc) e->fail_rank = k;
}

/* eng_pipe_leave_fast was called: no MPI_Finalize at the end. */
static bool leave_fast;

static int send_to(struct eng_pipe *e, int dst, char *err, size_t errsz)
{
    return xport_send(e->x, dst, &e->out, bt_now_ns() + PIPELINE_SEND_TIMEOUT_NS, err, errsz);
}

static struct pipe_flight *flight_of(struct eng_pipe *e, uint64_t step)
{
    for (int i = 0; i < e->fl_len; i++) {
        struct pipe_flight *f = &e->fl[(e->fl_head + i) % e->n_fl];
        if (f->step == step) return f;
    }
    return NULL;
}

/* ---- incoming messages ---- */

/* A HANDSHAKE from rank k: check it against rank 0's, note its progress. */
static void on_handshake(struct eng_pipe *e, int k, const struct proto_handshake *h)
{
    struct pipe_rank *r = &e->ranks[k];
    char why[384];
    snprintf(r->host, sizeof(r->host), "%.63s", h->hostname);
    r->pid = h->pid;
    r->seen = true;
    r->progress = h->progress;
    fail_rank(e, k); /* whatever fails below is this rank's */
    if (h->proto_version != PROTO_VERSION)
        set_fail(e, BT_EINVAL, BT_EXIT_MISMATCH,
                 "rank %d on host %s: protocol version %u, rank 0 speaks %u (a different baton "
                 "build?)",
                 k, r->host, h->proto_version, PROTO_VERSION);
    else if (strcmp(h->build_id, e->hs.build_id) != 0)
        set_fail(e, BT_EINVAL, BT_EXIT_MISMATCH,
                 "rank %d on host %s: build id '%s' differs from rank 0's '%s' (a different "
                 "baton build?)",
                 k, r->host, h->build_id, e->hs.build_id);
    else if (h->model_id != e->hs.model_id || h->model_size != e->hs.model_size)
        set_fail(e, BT_EINVAL, BT_EXIT_MISMATCH,
                 "rank %d on host %s: model identity 0x%016llx (%llu bytes) differs from rank "
                 "0's 0x%016llx (%llu bytes) (different model file?)",
                 k, r->host, (unsigned long long)h->model_id, (unsigned long long)h->model_size,
                 (unsigned long long)e->hs.model_id, (unsigned long long)e->hs.model_size);
    else if ((int)h->layer_begin != r->l0 || (int)h->layer_end != r->l1)
        set_fail(e, BT_EINVAL, BT_EXIT_MISMATCH,
                 "rank %d on host %s: holds layers [%u, %u), rank 0 expects [%d, %d) (different "
                 "--split?)",
                 k, r->host, h->layer_begin, h->layer_end, r->l0, r->l1);
    else if (h->state != PROTO_STATE_FAILED &&
             pipeline_sizes_agree(&e->sizes, &h->sizes, k, r->host, why, sizeof(why)) < 0)
        set_fail(e, BT_EINVAL, BT_EXIT_MISMATCH, "%s", why);
    if (!e->fail_rc) e->fail_rank = -1; /* nothing failed */
    if (h->state == PROTO_STATE_FAILED) {
        fail_rank(e, k);
        r->state = ENG_RANK_FAILED;
        set_fail(e, BT_EINVAL, BT_EXIT_CONFIG, "rank %d on host %s failed to load its stage", k,
                 r->host);
        return;
    }
    if (h->state == PROTO_STATE_READY && r->state != ENG_RANK_READY)
        bt_info("rank %d on host %s (pid %u, %s): layers [%d, %d) ready", k, r->host, r->pid,
                h->backend, r->l0, r->l1);
    else if (h->state == PROTO_STATE_LOADING && (int)(h->progress * 4) > r->logged) {
        r->logged = (int)(h->progress * 4);
        bt_info("rank %d on host %s: loading layers [%d, %d): %d%%", k, r->host, r->l0, r->l1,
                (int)(h->progress * 100));
    }
    r->state = h->state == PROTO_STATE_READY ? ENG_RANK_READY : ENG_RANK_LOADING;
    if (e->loading && e->lp && e->lp->progress)
        e->lp->progress(e->lp->progress_arg, k, r->progress);
}

static void on_tokens(struct eng_pipe *e, int k, uint64_t step, const struct proto_tokens *t)
{
    struct pipe_flight *f = flight_of(e, step);
    if (k != e->size - 1) {
        bt_warn("TOKENS from rank %d, only the last rank (%d) samples; dropped", k, e->size - 1);
        return;
    }
    if (!f || f->done) {
        bt_debug("TOKENS for step %llu, which is not waiting; dropped", (unsigned long long)step);
        return;
    }
    f->done = true;
    for (uint32_t j = 0; j < t->n; j++) {
        const struct proto_sampled *it = &t->items[j];
        int i = 0;
        while (i < f->n && !(f->seq[i] == (int32_t)it->seq_id && f->sample[i] && !f->got[i])) i++;
        if (i == f->n) {
            f->rc = BT_EFORMAT;
            snprintf(f->err, sizeof(f->err),
                     "rank %d on host %s sent a token for sequence %u, which step %llu did not "
                     "ask for",
                     k, host_of(e, k), it->seq_id, (unsigned long long)step);
            return;
        }
        if (it->error < 0) {
            f->rc = it->error;
            snprintf(f->err, sizeof(f->err), "rank %d on host %s: sequence %u: %s", k,
                     host_of(e, k), it->seq_id,
                     it->error == BT_EINVAL ? "every token is excluded by the logit bias"
                                            : bt_strstatus(it->error));
            return;
        }
        bool bad = it->token >= e->n_vocab;
        for (uint32_t q = 0; q < it->n_top; q++)
            bad |= it->top[q].id < 0 || it->top[q].id >= e->n_vocab;
        if (bad) {
            f->rc = BT_EFORMAT;
            snprintf(f->err, sizeof(f->err),
                     "rank %d on host %s sent token ids outside the vocabulary (%d tokens)", k,
                     host_of(e, k), e->n_vocab);
            return;
        }
        struct eng_result *r = &f->res[i];
        r->token = it->token;
        r->logprob = it->logprob;
        r->n_top = (int32_t)(it->n_top > ENG_MAX_TOP ? ENG_MAX_TOP : it->n_top);
        for (int q = 0; q < r->n_top; q++) {
            r->top_id[q] = it->top[q].id;
            r->top_lp[q] = it->top[q].logprob;
        }
        f->got[i] = true;
    }
    for (int i = 0; i < f->n; i++)
        if (f->sample[i] && !f->got[i]) {
            f->rc = BT_EFORMAT;
            snprintf(f->err, sizeof(f->err),
                     "rank %d on host %s sent no token for sequence %d of step %llu", k,
                     host_of(e, k), f->seq[i], (unsigned long long)step);
            return;
        }
}

static void on_error(struct eng_pipe *e, int k, uint64_t step, const struct proto_error *pe)
{
    if (step == 0) { /* not about a batch: a startup failure, or news from a rank */
        if (e->loading) {
            fail_rank(e, k);
            set_fail(e, pe->code, BT_EXIT_CONFIG, "%s", pe->message);
        } else
            bt_warn("rank %d: %s", k, pe->message);
        if (e->ranks[k].state == ENG_RANK_LOADING) e->ranks[k].state = ENG_RANK_FAILED;
        return;
    }
    struct pipe_flight *f = flight_of(e, step);
    if (!f || f->done) {
        bt_debug("ERROR for step %llu, which is not waiting: %s", (unsigned long long)step,
                 pe->message);
        return;
    }
    f->done = true;
    f->rc = pe->code < 0 ? pe->code : BT_ERR;
    snprintf(f->err, sizeof(f->err), "%s", pe->message);
}

/* Handle one received message. */
static void handle(struct eng_pipe *e, const struct proto_msg *m)
{
    int k = (int)m->hdr.sender;
    if (k <= 0 || k >= e->size) return; /* the transport checked the sender; rank 0 is us */
    e->ranks[k].last_seen_ns = bt_now_ns();
    e->ranks[k].hb_missed = 0;
    switch (m->hdr.opcode) {
    case PROTO_OP_HANDSHAKE:
        on_handshake(e, k, &m->handshake);
        break;
    case PROTO_OP_HEARTBEAT_REPLY:
        if (e->ranks[k].probe_nonce && m->heartbeat.nonce == e->ranks[k].probe_nonce)
            e->ranks[k].probe_ok = true;
        e->ranks[k].progress = m->heartbeat.progress;
        if (m->heartbeat.state == PROTO_STATE_FAILED) {
            e->ranks[k].state = ENG_RANK_FAILED;
            /* after the start: the rank leaves by itself (a peer exited; rankd/loop.c) */
            if (!e->loading && e->ready) {
                bt_warn("rank %d on host %s leaves by itself (a process of the job exited)", k,
                        host_of(e, k));
                e->ranks[k].left = true;
            }
        }
        break;
    case PROTO_OP_STATS:
        e->ranks[k].step_ms = m->stats.n_steps ? (double)m->stats.last_step_ns * 1e-6 : -1;
        break;
    case PROTO_OP_TOKENS:
        on_tokens(e, k, m->hdr.step, &m->tokens);
        break;
    case PROTO_OP_ERROR:
        on_error(e, k, m->hdr.step, &m->error);
        break;
    default:
        bt_warn("unexpected %s from rank %d; dropped", proto_op_name(m->hdr.opcode), k);
    }
}

static int recv_one(struct eng_pipe *e, uint64_t deadline);

/* A round of heartbeats to find a failed rank: the first rank that neither answers within
 * 2 x --heartbeat-interval (bounded to [0.5, 2] s) nor said it leaves by itself; -1 when every
 * rank answered or left by itself. Messages arriving meanwhile are handled as usual. */
static int probe(struct eng_pipe *e)
{
    char why[256];
    uint64_t wait = 2 * e->hb_ns;
    wait = wait < PROBE_MIN_NS ? PROBE_MIN_NS : wait > PROBE_MAX_NS ? PROBE_MAX_NS : wait;
    const uint64_t deadline = bt_now_ns() + wait;
    e->probing = true;
    for (int k = 1; k < e->size; k++) {
        struct pipe_rank *r = &e->ranks[k];
        r->probe_ok = false;
        r->probe_nonce = ++e->hb_nonce;
        struct proto_heartbeat hb = {
            .nonce = r->probe_nonce, .state = PROTO_STATE_READY, .progress = 1.0f};
        struct proto_route rt = route(e, 0);
        if (proto_encode_heartbeat(&e->out, &rt, PROTO_OP_HEARTBEAT, &hb, why, sizeof(why)) ==
            BT_OK)
            if (send_to(e, k, why, sizeof(why)) < 0) /* a failed send: no answer */
                xport_take_failed_peer(e->x);
    }
    for (;;) {
        int waiting = 0;
        for (int k = 1; k < e->size; k++) waiting += !e->ranks[k].probe_ok && !e->ranks[k].left;
        if (!waiting || recv_one(e, deadline) != BT_OK) break;
    }
    e->probing = false;
    int culprit = -1;
    for (int k = 1; k < e->size; k++) {
        if (culprit < 0 && !e->ranks[k].probe_ok && !e->ranks[k].left) culprit = k;
        e->ranks[k].probe_nonce = 0;
    }
    return culprit;
}

/* A send to rank k failed in the transport. Over UCX TCP that is how a rank that exited, or
 * whose connection was reset, shows up first (on one host such a send succeeds); it may also be
 * a rank that left by itself because its own send to a dead successor failed. So the failed
 * rank is found as after mpiexec's exit notice: a round of heartbeats, the ranks that said they
 * leave excepted; k itself when every other rank answers. */
static void send_failed(struct eng_pipe *e, int k, const char *why)
{
    char msg[768];
    if (e->broken) return;
    int c = e->probing ? -1 : probe(e);
    if (e->broken) return;
    if (c < 0 && k > 0 && k < e->size && !e->ranks[k].left) c = k;
    if (c > 0)
        snprintf(msg, sizeof(msg),
                 "rank %d on host %s exited or is unreachable (it does not answer heartbeats; "
                 "%.500s)",
                 c, host_of(e, c), why);
    else
        snprintf(msg, sizeof(msg), "%.700s", why);
    set_fault(e, "transport", c, msg);
}

/* Wait until deadline for one message and handle it. 0: handled; BT_ETIMEOUT: nothing came;
 * other: a transport failure (the pipeline is broken). */
static int recv_one(struct eng_pipe *e, uint64_t deadline)
{
    char err[512];
    uint64_t lo = e->fl_len ? e->fl[e->fl_head].step : e->step + 1;
    struct xport_filter flt = {.src = XPORT_ANY_SOURCE,
                               .epoch = e->epoch,
                               .step_min = e->loading ? 0 : lo,
                               .step_max = e->loading ? 0 : e->step};
    if (!e->broken && !e->probing && xport_peer_exits(e->x) > 0) {
        char why[256];
        int k = e->loading ? -1 : probe(e); /* the notice does not say which rank */
        if (k > 0)
            snprintf(why, sizeof(why),
                     "rank %d on host %s exited or is unreachable (mpiexec reported an exit; it "
                     "does not answer heartbeats)",
                     k, host_of(e, k));
        else
            snprintf(why, sizeof(why),
                     "a process of the job exited (mpiexec's SIGUSR1); see the ranks' logs");
        set_fault(e, "rank_exit", k, why);
        return BT_EIO;
    }
    int rc = xport_recv(e->x, &flt, deadline, &e->msg, err, sizeof(err));
    if (rc == BT_ETIMEOUT) return rc;
    if (rc == BT_EFORMAT) {
        bt_warn("%s", err);
        if (e->loading && strstr(err, "protocol version")) fail_rank(e, (int)e->msg.hdr.sender);
        if (e->loading && strstr(err, "protocol version"))
            set_fail(e, BT_EINVAL, BT_EXIT_MISMATCH, "rank %u: %s", e->msg.hdr.sender, err);
        return BT_OK;
    }
    if (rc < 0) {
        int k = xport_take_failed_peer(e->x);
        if (k > 0 && e->probing) return BT_OK; /* rank k just does not answer the probe */
        if (k > 0)
            send_failed(e, k, err);
        else
            set_broken(e, err);
        return rc;
    }
    handle(e, &e->msg);
    return BT_OK;
}

/* ---- load ---- */

static int own_progress(void *arg, float fraction)
{
    struct eng_pipe *e = arg;
    e->ranks[0].progress = fraction;
    if (e->lp->progress) e->lp->progress(e->lp->progress_arg, 0, fraction);
    /* between own layers, take the ranks' handshakes: a mismatch ends the load early */
    while (!e->fail_rc && !e->broken && recv_one(e, bt_now_ns()) == BT_OK) {
    }
    return e->fail_rc || e->broken;
}

static int load_failed(struct eng_pipe *e, char *err, size_t errsz)
{
    e->loading = false;
    e->ranks[0].state = ENG_RANK_FAILED;
    if (e->broken) return bt_errf(err, errsz, BT_EIO, "%s", e->fail);
    return bt_errf(err, errsz, e->fail_rc < 0 ? e->fail_rc : BT_EINVAL, "%s", e->fail);
}

/* "rank 1 on host h (loading, 40%), rank 2 (no handshake)": the ranks not ready yet. */
static void not_ready(const struct eng_pipe *e, char *list, size_t cap)
{
    size_t n = 0;
    list[0] = 0;
    for (int k = 1; k < e->size && n + 80 < cap; k++) {
        const struct pipe_rank *r = &e->ranks[k];
        int w;
        if (r->state == ENG_RANK_READY) continue;
        if (r->seen)
            w = snprintf(list + n, cap - n, "%srank %d on host %s (%s, %d%%)", n ? ", " : "", k,
                         r->host, r->state == ENG_RANK_FAILED ? "failed" : "loading",
                         (int)(r->progress * 100));
        else
            w = snprintf(list + n, cap - n, "%srank %d (no handshake)", n ? ", " : "", k);
        if (w > 0) n += (size_t)w < cap - n ? (size_t)w : cap - n - 1;
    }
}

/* Stage 0 of a pipeline of e->size ranks: the split, this rank's sizes (the handshake's), the
 * stage itself (taking the ranks' handshakes between its layers), scratch and the message cap. */
static int load_stage0(struct eng_pipe *e, const struct gguf *g, const struct eng_load_params *p)
{
    struct model_hparams hp;
    char why[512], split[256];
    int rc, dev, n = 0;
    if ((rc = model_hparams_read(g, &hp, why, sizeof(why))) < 0 ||
        (rc = stage_split(g, e->size, e->pc.split, e->range, why, sizeof(why))) < 0 ||
        (rc = dev_parse(p->device, &dev, why, sizeof(why))) < 0) {
        set_fail(e, rc, BT_EXIT_CONFIG, "%s", why);
        return rc;
    }
    for (int k = 0; k < e->size; k++) {
        e->ranks[k].l0 = e->range[k].l0;
        e->ranks[k].l1 = e->range[k].l1;
        if (n < (int)sizeof(split) - 16)
            n += snprintf(split + n, sizeof(split) - (size_t)n, "%s%d", k ? "," : "",
                          e->range[k].l1 - e->range[k].l0);
    }
    bt_info("%s: %d layers over %d ranks (%s); this rank: layers [%d, %d) + embedding",
            gguf_path(g), hp.n_layer, e->size, split, e->range[0].l0, e->range[0].l1);
    pipeline_sizes(p->n_seq, p->n_ctx, hp.n_ctx_train, p->max_batch - p->n_seq,
                   p->kv_type ? p->kv_type : BT_F16, p->n_blocks, &e->sizes);
    e->hs.model_id = gguf_identity(g);
    e->hs.model_size = gguf_file_size(g);
    e->hs.layer_begin = (uint32_t)e->range[0].l0;
    e->hs.layer_end = (uint32_t)e->range[0].l1;
    e->hs.n_layers = (uint32_t)hp.n_layer;
    e->hs.sizes = e->sizes;
    size_t cap;
    if ((rc = pipeline_msg_cap(&e->sizes, (uint32_t)hp.n_embd, &cap, why, sizeof(why))) < 0) {
        set_fail(e, rc, BT_EXIT_CONFIG, "rank 0: %s", why);
        return rc;
    }
    xport_set_max_msg(e->x, cap);
    struct stage_params sp = {.l0 = e->range[0].l0,
                              .l1 = e->range[0].l1,
                              .n_seq = (int)e->sizes.n_seq,
                              .n_ctx = (int)e->sizes.n_ctx,
                              .max_batch = (int)e->sizes.max_batch,
                              .n_blocks = (int)e->sizes.n_blocks,
                              .kv_type = e->sizes.kv_type,
                              .n_threads = p->n_threads,
                              .device = dev,
                              .progress = own_progress,
                              .arg = e};
    if ((rc = stage_build(g, &sp, &e->st, why, sizeof(why))) < 0) {
        if (!e->fail_rc && !e->broken) set_fail(e, rc, BT_EXIT_CONFIG, "rank 0: %s", why);
        return rc;
    }
    e->n_seq = e->st->n_seq;
    e->n_ctx = e->st->n_ctx;
    e->n_vocab = e->st->n_vocab;
    e->n_embd = e->st->n_embd;
    e->max_batch = e->st->max_batch;
    if ((rc = blk_new((int)e->sizes.n_blocks, e->n_seq, e->n_ctx, &e->bt, why, sizeof(why))) < 0) {
        set_fail(e, rc, BT_EXIT_FAIL, "rank 0: %s", why);
        return rc;
    }
    return BT_OK;
}

/* The scratch of FORWARD messages and of the batches in flight. */
static int alloc_flights(struct eng_pipe *e)
{
    e->ptok = malloc(sizeof(*e->ptok) * (size_t)e->max_batch);
    e->pseq = malloc(sizeof(*e->pseq) * (size_t)e->n_seq);
    e->pbias = malloc(sizeof(*e->pbias) * (size_t)e->n_seq * SMP_MAX_BIAS);
    e->max_ops = (int)pipeline_max_kv_ops(&e->sizes);
    /* pipeline_max_kv_ops: every sequence beginning, then what one batch grows into */
    e->begin_ops = e->max_ops - (e->max_batch / KV_BLOCK + 2 * e->n_seq);
    e->pend = malloc(sizeof(*e->pend) * (size_t)e->max_ops);
    e->pwire = malloc(sizeof(*e->pwire) * (size_t)e->max_ops);
    e->pend_from = malloc(sizeof(*e->pend_from) * (size_t)e->n_seq);
    e->pend_to = malloc(sizeof(*e->pend_to) * (size_t)e->n_seq);
    bool ok = e->ptok && e->pseq && e->pbias && e->pend && e->pwire && e->pend_from && e->pend_to;
    for (int i = 0; ok && i < e->n_seq; i++) e->pend_from[i] = -1;
    for (int i = 0; ok && i < e->n_fl; i++) {
        struct pipe_flight *f = &e->fl[i];
        f->seq = malloc(sizeof(*f->seq) * (size_t)e->n_seq);
        f->end = malloc(sizeof(*f->end) * (size_t)e->n_seq);
        f->sample = malloc(sizeof(*f->sample) * (size_t)e->n_seq);
        f->got = malloc(sizeof(*f->got) * (size_t)e->n_seq);
        f->res = calloc((size_t)e->n_seq, sizeof(*f->res));
        ok = f->seq && f->end && f->sample && f->got && f->res;
    }
    if (!ok) set_fail(e, BT_ENOMEM, BT_EXIT_FAIL, "out of memory");
    return ok ? BT_OK : BT_ENOMEM;
}

/* Every other rank: its handshake, then READY, before --init-timeout (a slow starter is normal:
 * nothing else times out meanwhile; who is awaited is logged now and then). */
static void await_ranks(struct eng_pipe *e, uint64_t init_deadline)
{
    uint64_t note_at = bt_now_ns() + WAIT_NOTE_NS;
    char list[512];
    for (;;) {
        int waiting = 0;
        for (int k = 1; k < e->size; k++) waiting += e->ranks[k].state != ENG_RANK_READY;
        if (e->fail_rc || e->broken || !waiting) return;
        uint64_t now = bt_now_ns();
        if (now >= init_deadline) {
            not_ready(e, list, sizeof(list));
            for (int k = e->size - 1; k >= 1; k--)
                if (e->ranks[k].state != ENG_RANK_READY) fail_rank(e, k); /* the first */
            set_fail(e, BT_ETIMEOUT, BT_EXIT_RESTART, "%s not ready within --init-timeout %d s",
                     list, e->pc.init_timeout_s);
            return;
        }
        if (now >= note_at) {
            not_ready(e, list, sizeof(list));
            bt_info("waiting for %s (--init-timeout %d s: %.0f s left)", list, e->pc.init_timeout_s,
                    (double)(init_deadline - now) * 1e-9);
            note_at = now + WAIT_NOTE_NS;
        }
        recv_one(e, now + SEC_NS < init_deadline ? now + SEC_NS : init_deadline);
    }
}

/* Accept the ranks: the READY handshake, from which they take the job epoch. */
static int accept_ranks(struct eng_pipe *e)
{
    char why[512];
    int rc;
    e->hs.state = PROTO_STATE_READY;
    e->hs.progress = 1.0f;
    for (int k = 1; k < e->size; k++) {
        struct proto_route r = route(e, 0);
        if ((rc = proto_encode_handshake(&e->out, &r, &e->hs, why, sizeof(why))) < 0 ||
            (rc = send_to(e, k, why, sizeof(why))) < 0) {
            fail_rank(e, k);
            set_fail(e, rc, BT_EXIT_FAIL, "handshake to rank %d: %s", k, why);
            return rc;
        }
    }
    return BT_OK;
}

static int pipe_load(void *self, const struct gguf *g, const struct eng_load_params *p,
                     struct eng_info *info, char *err, size_t errsz)
{
    struct eng_pipe *e = self;
    const uint64_t t0 = bt_now_ns();
    e->lp = p;
    e->loading = true;
    e->exit_code = BT_EXIT_CONFIG;
    if (load_stage0(e, g, p) < 0 || alloc_flights(e) < 0) {
        fail_rank(e, 0);
        return load_failed(e, err, errsz);
    }
    e->ranks[0].state = ENG_RANK_READY;
    e->ranks[0].progress = 1.0f;
    bt_info("rank 0: layers [%d, %d) ready in %.1f s (weights %.1f MiB with the embedding); "
            "waiting for ranks 1..%d",
            e->range[0].l0, e->range[0].l1, (double)(bt_now_ns() - t0) * 1e-9,
            (double)e->st->m->n_bytes / (1 << 20), e->size - 1);
    await_ranks(e, t0 + (uint64_t)e->pc.init_timeout_s * SEC_NS);
    if (e->fail_rc || e->broken || accept_ranks(e) < 0) return load_failed(e, err, errsz);
    e->loading = false;
    e->ready = true;
    e->lp = NULL;
    e->exit_code = BT_EXIT_FAIL;
    /* the first heartbeats at once: after a long wait for a slow starter, the ranks that were
     * ready early have not been heard from for that long */
    e->t_ready_ns = e->hb_next = bt_now_ns();
    info->tick_ms = (int)(e->hb_ns / 2000000ull) < 10 ? 10 : (int)(e->hb_ns / 2000000ull);
    info->n_ctx = e->n_ctx;
    info->n_vocab = e->n_vocab;
    info->n_layer = (int)e->hs.n_layers;
    info->max_batch = e->max_batch;
    info->n_blocks = (int)e->sizes.n_blocks;
    info->max_inflight = e->size;
    bt_info("pipeline of %d ranks ready in %.1f s: KV %d x %d %s (%.1f MiB on rank 0)", e->size,
            (double)(bt_now_ns() - t0) * 1e-9, e->n_seq, e->n_ctx, bt_type_name(e->sizes.kv_type),
            (double)kv_bytes(e->st->kv) / (1 << 20));
    return BT_OK;
}

/* ---- steps ---- */

static void heartbeats(struct eng_pipe *e);

/* Blocks for the items' positions (blk_seq_grow): applied to stage 0, queued for the others. */
static int grow_items(struct eng_pipe *e, const struct eng_item *items, int n, char *err,
                      size_t errsz)
{
    const int n0 = e->n_pend;
    for (int i = 0; i < n; i++) {
        const struct eng_item *it = &items[i];
        int rc =
            blk_seq_grow(e->bt, it->seq, it->pos, it->tokens, it->n_tokens, e->pend, &e->n_pend);
        if (rc < 0)
            return bt_errf(err, errsz, BT_EINVAL,
                           "seq %d: positions %d..%d: not its next ones, or past its KV blocks",
                           it->seq, it->pos, it->pos + it->n_tokens - 1);
    }
    return stage_kv_apply(e->st, e->pend + n0, e->n_pend - n0, err, errsz);
}

/* Check a batch before anything of it is done. */
static int check_items(const struct eng_pipe *e, const struct eng_item *items, int n, char *err,
                       size_t errsz)
{
    if (!e->ready) return bt_errf(err, errsz, BT_EINVAL, "the pipeline is not loaded");
    if (e->broken) return bt_errf(err, errsz, BT_EIO, "%s", e->fail);
    if (e->fl_len == e->n_fl)
        return bt_errf(err, errsz, BT_EINVAL, "%d batches already in flight", e->fl_len);
    if (n < 1 || n > e->n_seq) return bt_errf(err, errsz, BT_EINVAL, "bad batch size %d", n);
    for (int i = 0, nt = 0; i < n; i++) {
        const struct eng_item *it = &items[i];
        if (it->seq < 0 || it->seq >= e->n_seq || it->n_tokens < 1 ||
            it->n_tokens > e->max_batch - nt || (it->reset && !it->sp))
            return bt_errf(err, errsz, BT_EINVAL, "bad batch item %d (seq %d, %d tokens)", i,
                           it->seq, it->n_tokens);
        nt += it->n_tokens;
    }
    return BT_OK;
}

/* The FORWARD's tables and stage 0's batch from the items: per token its sequence, position,
 * id and flags; per sequence its flags and, when new, its sampling parameters (the policy
 * applied, logit bias included). */
static int put_items(struct eng_pipe *e, struct pipe_flight *f, const struct eng_item *items, int n)
{
    struct stage *st = e->st;
    int nt = 0;
    stage_batch_clear(st);
    for (int i = 0; i < n; i++) {
        const struct eng_item *it = &items[i];
        f->seq[i] = it->seq;
        f->end[i] = it->pos + it->n_tokens;
        f->sample[i] = it->sample;
        f->got[i] = false;
        if (it->reset) stage_seq_reset(st, it->seq, NULL, NULL, 0); /* stage 0 has no sampler */
        for (int k = 0; k < it->n_tokens; k++, nt++) {
            const bool want = it->sample && k == it->n_tokens - 1;
            stage_batch_add(st, it->seq, it->pos + k, it->tokens[k],
                            (want ? STAGE_WANT : 0u) | (it->prompt ? STAGE_PROMPT : 0u));
            e->ptok[nt] =
                (struct proto_token){.seq_id = (uint32_t)it->seq,
                                     .pos = (uint32_t)(it->pos + k),
                                     .token = it->tokens[k],
                                     .flags = PROTO_TOK_ROW | (want ? PROTO_TOK_LOGITS : 0u) |
                                              (it->prompt ? PROTO_TOK_PROMPT : 0u)};
        }
        struct proto_seq *ps = &e->pseq[i];
        memset(ps, 0, sizeof(*ps));
        ps->seq_id = (uint32_t)it->seq;
        ps->flags = it->reset ? PROTO_SEQ_RESET : 0;
        ps->sampling.repeat_penalty = 1.0f;
        ps->sampling.top_p = 1.0f;
        if (it->reset)
            pipeline_sampling_to_proto(it->sp, e->n_ctx, &ps->sampling,
                                       e->pbias + (size_t)i * SMP_MAX_BIAS);
    }
    return nt;
}

/* Test hook BATON_TEST_FORWARD_BAD_SEQ=N: the N-th FORWARD names a sequence no rank has. */
static void test_bad_seq(struct eng_pipe *e, uint64_t step, int nt)
{
    if (e->bad_seq_at <= 0 || ++e->n_forward != e->bad_seq_at) return;
    uint32_t bad = (uint32_t)e->n_seq + 1000;
    bt_warn("test hook BATON_TEST_FORWARD_BAD_SEQ: FORWARD step %llu names sequence %u",
            (unsigned long long)step, bad);
    for (int k = 0; k < nt; k++)
        if (e->ptok[k].seq_id == e->pseq[0].seq_id) e->ptok[k].seq_id = bad;
    e->pseq[0].seq_id = bad;
}

/* The batch's failure, answered at collect in order. */
static int flight_fail(struct pipe_flight *f, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int flight_fail(struct pipe_flight *f, int rc, const char *fmt, ...)
{
    va_list ap;
    f->done = true;
    f->rc = rc;
    va_start(ap, fmt);
    vsnprintf(f->err, sizeof(f->err), fmt, ap);
    va_end(ap);
    return BT_OK;
}

static int pipe_submit(void *self, const struct eng_item *items, int n, char *err, size_t errsz)
{
    struct eng_pipe *e = self;
    char why[512];
    int rc = check_items(e, items, n, err, errsz);
    if (rc < 0 || (rc = grow_items(e, items, n, err, errsz)) < 0) return rc;
    const uint64_t t0 = bt_now_ns();
    struct pipe_flight *f = &e->fl[(e->fl_head + e->fl_len) % e->n_fl];
    f->step = ++e->step;
    f->deadline = t0 + e->step_ns;
    f->n = n;
    f->done = false;
    f->rc = 0;
    f->err[0] = 0;
    e->fl_len++;
    int nt = put_items(e, f, items, n);
    const float *act;
    int n_out = 0;
    if ((rc = stage_run(e->st, NULL, &act, &n_out, why, sizeof(why))) < 0)
        return flight_fail(f, rc, "rank 0: %s", why);
    test_bad_seq(e, f->step, nt);
    pipeline_kv_to_proto(e->pend, e->n_pend, e->pwire);
    struct proto_forward fw = {.n_tokens = (uint32_t)nt,
                               .n_seqs = (uint32_t)n,
                               .n_embd = (uint32_t)e->n_embd,
                               .n_rows = (uint32_t)nt,
                               .n_ops = (uint32_t)e->n_pend,
                               .tokens = e->ptok,
                               .ops = e->pwire,
                               .seqs = e->pseq,
                               .rows = act};
    struct proto_route r = route(e, f->step);
    if ((rc = proto_encode_forward(&e->out, &r, &fw, why, sizeof(why))) < 0) {
        /* the block operations would be lost: the ranks' caches would part from rank 0's */
        set_broken(e, why);
        return flight_fail(f, rc, "rank 0: FORWARD: %s", why);
    }
    e->n_pend = 0;
    for (int i = 0; i < e->n_seq; i++) e->pend_from[i] = -1;
    if ((rc = send_to(e, 1, why, sizeof(why))) < 0) {
        int k = rc == BT_EIO ? xport_take_failed_peer(e->x) : -1;
        if (k > 0)
            send_failed(e, k, why);
        else
            set_broken(e, why);
        return flight_fail(f, BT_EIO, "%.575s", e->fail);
    }
    xport_set_busy(e->x, 1);
    e->step_ms = (double)(bt_now_ns() - t0) * 1e-6;
    return BT_OK;
}

static int pipe_collect(void *self, struct eng_result *out, int n, int timeout_ms, char *err,
                        size_t errsz)
{
    struct eng_pipe *e = self;
    if (!e->fl_len) return bt_errf(err, errsz, BT_EINVAL, "no batch in flight");
    struct pipe_flight *f = &e->fl[e->fl_head];
    const uint64_t until = bt_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
    while (!f->done) {
        uint64_t now = bt_now_ns();
        if (e->broken) {
            f->done = true;
            f->rc = BT_EIO;
            snprintf(f->err, sizeof(f->err), "%.575s", e->fail);
            break;
        }
        if (now >= f->deadline) {
            char why[384];
            int k = probe(e); /* the answer may also arrive meanwhile */
            if (f->done || e->broken) continue;
            if (k > 0)
                snprintf(why, sizeof(why),
                         "rank %d on host %s: hung or gone (no answer to step %llu within "
                         "--step-timeout %.3g s, nor to a heartbeat)",
                         k, host_of(e, k), (unsigned long long)f->step, (double)e->step_ns * 1e-9);
            else
                snprintf(why, sizeof(why),
                         "no answer to step %llu within --step-timeout %.3g s, although every "
                         "rank answers heartbeats (a stage is stuck)",
                         (unsigned long long)f->step, (double)e->step_ns * 1e-9);
            set_fault(e, "step_timeout", k, why);
            continue;
        }
        if (now >= until) return bt_errf(err, errsz, BT_ETIMEOUT, "not ready");
        heartbeats(e); /* the ranks expect them also while busy (rankd leaves without) */
        uint64_t dl = until < f->deadline ? until : f->deadline;
        recv_one(e, dl < e->hb_next ? dl : e->hb_next);
    }
    /* the oldest batch is answered: it leaves the ring */
    e->fl_head = (e->fl_head + 1) % e->n_fl;
    e->fl_len--;
    if (!e->fl_len) xport_set_busy(e->x, 0);
    if (f->rc < 0) return bt_errf(err, errsz, f->rc, "%s", f->err);
    for (int i = 0; i < f->n; i++) /* computed on every stage: its whole blocks are cached */
        blk_seq_commit(e->bt, f->seq[i], f->end[i]);
    for (int i = 0; i < n && i < f->n; i++)
        if (f->sample[i]) out[i] = f->res[i];
    return BT_OK;
}

/* A new sequence: its blocks decided (blk_seq_begin), applied to stage 0 at once and sent to the
 * other ranks with the next FORWARD (a separate message could overtake FORWARDs on their way). */
static int pipe_seq_begin(void *self, int32_t seq, const int32_t *prompt, int n, int n_total,
                          bool lookup, int *n_cached, char *err, size_t errsz)
{
    struct eng_pipe *e = self;
    if (!e->ready || !e->bt || seq < 0 || seq >= e->n_seq)
        return bt_errf(err, errsz, BT_EINVAL, "the pipeline is not loaded, or bad sequence %d",
                       seq);
    if (e->broken) return bt_errf(err, errsz, BT_EIO, "%s", e->fail);
    if (e->n_pend + blk_max_ops_begin(e->bt) > e->begin_ops) /* the next FORWARD carries them */
        return bt_errf(err, errsz, BT_EFULL, "too many block operations waiting to be sent");
    const int n0 = e->n_pend;
    int n_ops = 0;
    int rc = blk_seq_begin(e->bt, seq, prompt, n, n_total, lookup, e->pend + n0, &n_ops, n_cached);
    if (rc == BT_EFULL) return bt_errf(err, errsz, rc, "no KV blocks free now");
    if (rc < 0)
        return bt_errf(err, errsz, rc,
                       "sequence %d: %d positions need more KV blocks than the "
                       "%u of the cache (--kv-blocks), or it is running",
                       seq, n_total, e->sizes.n_blocks);
    e->n_pend += n_ops;
    e->pend_from[seq] = n0;
    e->pend_to[seq] = e->n_pend;
    if ((rc = stage_kv_apply(e->st, e->pend + n0, n_ops, err, errsz)) < 0) set_broken(e, err);
    return rc;
}

static void pipe_release(void *self, int32_t seq)
{
    struct eng_pipe *e = self;
    if (!e->bt || seq < 0 || seq >= e->n_seq) return;
    /* begun and given up before any FORWARD, nothing decided since: its operations, the last
     * ones waiting, are dropped (the ranks never needed them; its next beginning resets its
     * table; a block it copied into is free and is written before it is read) */
    if (e->pend_from[seq] >= 0 && e->pend_to[seq] == e->n_pend) e->n_pend = e->pend_from[seq];
    e->pend_from[seq] = -1;
    blk_seq_end(e->bt, seq);
    stage_seq_release(e->st, seq);
}

static void pipe_cache_stats(void *self, struct blk_stats *out)
{
    struct eng_pipe *e = self;
    if (e->bt)
        blk_get_stats(e->bt, out);
    else
        memset(out, 0, sizeof(*out));
}

/* Heartbeats (and a STATS_REQUEST) to every rank when due, busy or idle. A rank that has not
 * answered --heartbeat-misses heartbeats sent while idle, in a row, is offline: that breaks the
 * pipeline (while busy, the step deadline watches). */
static void heartbeats(struct eng_pipe *e)
{
    char why[256];
    uint64_t now = bt_now_ns();
    if (e->broken || now < e->hb_next) return;
    e->hb_next = now + e->hb_ns;
    for (int k = 1; k < e->size; k++) {
        struct pipe_rank *rk = &e->ranks[k];
        if (!e->fl_len && rk->hb_missed >= e->misses) {
            char msg[256];
            snprintf(msg, sizeof(msg),
                     "rank %d on host %s: offline (missed %d heartbeats in a row, one every "
                     "%.3g s)",
                     k, host_of(e, k), rk->hb_missed, (double)e->hb_ns * 1e-9);
            set_fault(e, "heartbeat", k, msg);
            return;
        }
        if (!e->fl_len) rk->hb_missed++;
        {
            struct proto_heartbeat hb = {
                .nonce = ++e->hb_nonce, .state = PROTO_STATE_READY, .progress = 1.0f};
            struct proto_route r = route(e, 0);
            int rc = proto_encode_heartbeat(&e->out, &r, PROTO_OP_HEARTBEAT, &hb, why, sizeof(why));
            if (rc == BT_OK) rc = send_to(e, k, why, sizeof(why));
            if (rc == BT_OK) rc = proto_encode_stats_request(&e->out, &r, why, sizeof(why));
            if (rc == BT_OK) rc = send_to(e, k, why, sizeof(why));
            int lost = rc == BT_EIO ? xport_take_failed_peer(e->x) : -1;
            if (lost > 0) {
                send_failed(e, lost, why);
                return;
            }
            if (rc == BT_ETIMEOUT || rc == BT_EIO) {
                set_broken(e, why);
                return;
            }
        }
    }
}

/* While idle: heartbeats and their replies (never blocks). */
static void housekeeping(struct eng_pipe *e)
{
    if (e->broken) return;
    heartbeats(e);
    while (!e->broken && recv_one(e, bt_now_ns()) == BT_OK) {
    }
}

static bool pipe_fault(void *self, struct eng_fault *out)
{
    struct eng_pipe *e = self;
    if (!e->broken) return false;
    out->kind = e->fault_kind ? e->fault_kind : "transport";
    out->rank = e->fault_rank;
    snprintf(out->host, sizeof(out->host), "%s",
             e->fault_rank >= 0 && e->fault_rank < e->size ? e->ranks[e->fault_rank].host : "");
    snprintf(out->message, sizeof(out->message), "%.511s", e->fail);
    return true;
}

static int pipe_ranks(void *self, struct eng_rank *out, int cap)
{
    struct eng_pipe *e = self;
    if (e->ready && !e->loading) housekeeping(e);
    uint64_t now = bt_now_ns();
    int n = e->size < cap ? e->size : cap;
    for (int k = 0; k < n; k++) {
        const struct pipe_rank *r = &e->ranks[k];
        struct eng_rank *o = &out[k];
        memset(o, 0, sizeof(*o));
        o->rank = k;
        snprintf(o->host, sizeof(o->host), "%s", r->host);
        o->layer_first = r->l0;
        o->layer_last = r->l1;
        o->state = r->state;
        o->progress = r->progress;
        if (k == 0) {
            o->heartbeat_age_ms = 0;
            o->step_ms = e->step ? e->step_ms : -1;
            continue;
        }
        o->heartbeat_age_ms = r->last_seen_ns ? (double)(now - r->last_seen_ns) * 1e-6 : -1;
        o->step_ms = r->step_ms;
        /* silent for longer than --heartbeat-misses intervals since the pipeline is ready (a rank
         * that waited for a slow starter was not asked anything before) */
        uint64_t since = r->last_seen_ns > e->t_ready_ns ? r->last_seen_ns : e->t_ready_ns;
        if (e->ready && !e->fl_len && r->state == ENG_RANK_READY &&
            now - since > (uint64_t)e->misses * e->hb_ns)
            o->state = ENG_RANK_OFFLINE;
    }
    return n;
}

/* SHUTDOWN to every rank, then everything they send until each has acknowledged it: a rank
 * answers SHUTDOWN with a HEARTBEAT_REPLY whose nonce is the SHUTDOWN's step id and sends
 * nothing after it. Each rank's messages arrive in order, so then no message is left unreceived
 * at MPI_Finalize (UCX warns about those, on stdout). Bounded by SHUTDOWN_WAIT_NS. */
static void shutdown_ranks(struct eng_pipe *e)
{
    char why[256];
    const uint64_t nonce = ++e->hb_nonce | (1ull << 63);
    const uint64_t deadline = bt_now_ns() + SHUTDOWN_WAIT_NS;
    struct proto_shutdown sd = {.reason =
                                    e->broken ? PROTO_SHUTDOWN_RESTART : PROTO_SHUTDOWN_NORMAL};
    int waiting = 0;
    bool *acked = calloc((size_t)e->size, sizeof(*acked));
    for (int k = 1; k < e->size; k++) {
        struct proto_route r = route(e, nonce);
        if (proto_encode_shutdown(&e->out, &r, &sd, why, sizeof(why)) == BT_OK &&
            send_to(e, k, why, sizeof(why)) == BT_OK)
            waiting++;
        else if (acked)
            acked[k] = true;
    }
    while (acked && !e->broken && waiting > 0) {
        int rc = xport_recv(e->x, NULL, deadline, &e->msg, why, sizeof(why));
        if (rc == BT_ETIMEOUT || rc == BT_EIO) break;
        int k = (int)e->msg.hdr.sender;
        if (rc == BT_OK && e->msg.hdr.opcode == PROTO_OP_HEARTBEAT_REPLY &&
            e->msg.heartbeat.nonce == nonce && k > 0 && k < e->size && !acked[k]) {
            acked[k] = true;
            waiting--;
        }
    }
    free(acked);
}

static void pipe_destroy(void *self)
{
    struct eng_pipe *e = self;
    if (!e) return;
    if (e->x) {
        char why[256];
        shutdown_ranks(e);
        if (e->broken || xport_flush(e->x, bt_now_ns() + SHUTDOWN_WAIT_NS, why, sizeof(why)) < 0 ||
            leave_fast)
            xport_mark_faulted(e->x); /* MPI_Finalize would hang on a dead or stuck rank */
    }
    for (int i = 0; e->fl && i < e->n_fl; i++) {
        free(e->fl[i].seq);
        free(e->fl[i].sample);
        free(e->fl[i].got);
        free(e->fl[i].res);
    }
    free(e->fl);
    free(e->ranks);
    free(e->ptok);
    free(e->pseq);
    free(e->pbias);
    free(e->pend);
    free(e->pwire);
    free(e->pend_from);
    free(e->pend_to);
    blk_free(e->bt);
    stage_free(e->st);
    proto_buf_free(&e->out);
    proto_msg_free(&e->msg);
    xport_free(e->x);
    free(e);
}

static int pipe_failed_rank(void *self)
{
    struct eng_pipe *e = self;
    return e && e->fail_rc ? e->fail_rank : -1;
}

void eng_pipe_leave_fast(void)
{
    leave_fast = true;
}

static int pipe_exit_code(void *self)
{
    struct eng_pipe *e = self;
    return e ? e->exit_code : BT_EXIT_FAIL;
}

static const struct eng_ops pipe_ops = {
    .name = "pipe",
    .load = pipe_load,
    .submit = pipe_submit,
    .collect = pipe_collect,
    .seq_begin = pipe_seq_begin,
    .release = pipe_release,
    .ranks = pipe_ranks,
    .destroy = pipe_destroy,
    .fault = pipe_fault,
    .exit_code = pipe_exit_code,
    .cache_stats = pipe_cache_stats,
    .failed_rank = pipe_failed_rank,
};

bool eng_pipe_wanted(void)
{
    return xport_job_size() > 1;
}

int eng_pipe_new(struct engine *out, int *argc, char ***argv, const struct eng_pipe_config *pc,
                 char *err, size_t errsz)
{
    struct eng_pipe *e = calloc(1, sizeof(*e));
    char why[512];
    int rc;
    out->ops = &pipe_ops;
    out->self = NULL;
    if (!e) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    e->pc = *pc;
    e->hb_ns = pc->heartbeat_ns ? pc->heartbeat_ns : SEC_NS;
    e->misses = pc->heartbeat_misses > 0 ? pc->heartbeat_misses : 3;
    e->step_ns = pc->step_timeout_ns ? pc->step_timeout_ns : 30 * SEC_NS;
    e->fault_rank = -1;
    e->fail_rank = -1;
    e->epoch = PIPELINE_EPOCH;
    e->exit_code = BT_EXIT_CONFIG;
    /* before MPI_Init, so MPICH chains its SIGUSR1 (a peer exited) to ours */
    if (xport_mpi_install_sigusr1(why, sizeof(why)) < 0) bt_warn("%s", why);
    if ((rc = xport_mpi_init(argc, argv, 0, &e->x, why, sizeof(why))) < 0) {
        free(e);
        return bt_errf(err, errsz, rc, "%s", why);
    }
    bt_log_set_tag("rank 0");
    e->size = xport_size(e->x);
    if (xport_rank(e->x) != 0 || e->size > STAGE_MAX) {
        rc = bt_errf(err, errsz, BT_EINVAL,
                     xport_rank(e->x) != 0
                         ? "baton-server must be rank 0 of the job (ranks 1.. run baton-rankd)"
                         : "too many ranks (at most %d)",
                     STAGE_MAX);
        xport_mark_faulted(e->x);
        goto fail;
    }
    e->ranks = calloc((size_t)e->size, sizeof(*e->ranks));
    e->n_fl = e->size;
    e->fl = calloc((size_t)e->n_fl, sizeof(*e->fl));
    if (!e->ranks || !e->fl) {
        rc = bt_errf(err, errsz, BT_ENOMEM, "out of memory");
        goto fail;
    }
    for (int k = 0; k < e->size; k++) {
        e->ranks[k].state = ENG_RANK_LOADING;
        e->ranks[k].step_ms = -1;
    }
    proto_handshake_local(&e->hs);
    const char *fake = getenv("BATON_TEST_BUILD_ID"); /* test hook: a different build */
    if (fake && *fake) snprintf(e->hs.build_id, sizeof(e->hs.build_id), "%s", fake);
    snprintf(e->ranks[0].host, sizeof(e->ranks[0].host), "%.63s", e->hs.hostname);
    e->ranks[0].pid = (uint32_t)getpid();
    const char *bad = getenv("BATON_TEST_FORWARD_BAD_SEQ"); /* test hook: the n-th FORWARD */
    char *end = NULL;
    e->bad_seq_at = bad ? strtol(bad, &end, 10) : 0;
    if (bad && (end == bad || *end)) e->bad_seq_at = 0; /* not a number: no hook */
    out->self = e;
    return BT_OK;
fail:
    pipe_destroy(e);
    return rc;
}

int eng_pipe_early_exit(int status)
{
    struct engine eng;
    struct eng_pipe_config pc = {.split = NULL, .init_timeout_s = 1};
    char err[256];
    if (!eng_pipe_wanted()) return status;
    if (eng_pipe_new(&eng, NULL, NULL, &pc, err, sizeof(err)) < 0) {
        bt_error("%s", err);
        return status;
    }
    pipe_destroy(eng.self); /* SHUTDOWN to every rank, then MPI_Finalize */
    return status;
}
