/* test_sched: the scheduler against a scripted engine (the real stories260K tokenizer, fake
 * logits): continuous batching, chunked prefill, stop strings held back across tokens,
 * max_tokens, end of generation, logprob offsets, cancellation, timeouts, a full queue, engine
 * errors, a pipeline fault (and the Retry-After it asks for) and a failed load. Every wait polls a
 * condition with a deadline. */
#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "exitcodes.h"
#include "scheduler.h"
#include "t.h"
#include "tokenizer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define SCRIPT "Hello world. The end is near."

/* ---- scripted engine: sequence s emits the tokens of SCRIPT, then EOS (or loops forever) ---- */

struct mock {
    pthread_mutex_t mu;
    int n_seq, n_ctx;
    int max_inflight;
    bool forever;        /* never emit EOS */
    atomic_bool gate;    /* collect waits while false */
    atomic_bool faulted; /* the engine failed for good: submit and collect fail, fault() says so */
    int fail_seq;        /* collect fails when this seq is in the batch (-1: never) */
    int32_t script[64];
    int n_script;
    int32_t eos;
    int len[16];  /* positions per seq */
    int next[16]; /* next script index per seq */
    /* the batches submitted, oldest first */
    struct eng_item items[8][16];
    int n_items[8];
    int head, count;
    /* observations */
    int max_items, max_tokens_in_batch, steps, resets, releases, bad;
    int max_inflight_seen;
    int max_decode; /* decode items in one batch */
    int mixed;      /* batches holding both a decode token and prompt tokens */
};

static int mock_load(void *self, const struct gguf *g, const struct eng_load_params *p,
                     struct eng_info *info, char *err, size_t errsz)
{
    struct mock *m = self;
    (void)g;
    m->n_seq = p->n_seq;
    m->n_ctx = p->n_ctx ? p->n_ctx : 64;
    if (p->progress) p->progress(p->progress_arg, 0, 1.0f);
    info->n_ctx = m->n_ctx;
    info->n_vocab = 512;
    info->n_layer = 1;
    info->max_batch = p->max_batch;
    info->max_inflight = m->max_inflight;
    (void)err;
    (void)errsz;
    return 0;
}

static int mock_submit(void *self, const struct eng_item *items, int n, char *err, size_t errsz)
{
    struct mock *m = self;
    if (atomic_load(&m->faulted)) return bt_errf(err, errsz, BT_EIO, "broken");
    pthread_mutex_lock(&m->mu);
    int slot = (m->head + m->count) % 8;
    int total = 0;
    bool decode = false, prompt = false;
    int n_decode = 0;
    for (int i = 0; i < n; i++) {
        const struct eng_item *it = &items[i];
        if (it->reset) {
            m->len[it->seq] = 0;
            m->next[it->seq] = 0;
            m->resets++;
            if (!it->sp) m->bad++;
        }
        if (it->pos != m->len[it->seq]) m->bad++; /* positions must continue the sequence */
        m->len[it->seq] += it->n_tokens;
        if (m->len[it->seq] > m->n_ctx) m->bad++;
        total += it->n_tokens;
        if (it->n_tokens == 1 && !it->reset && it->sample) {
            decode = true;
            n_decode++;
        } else
            prompt = true;
        for (int k = 0; k < i; k++)
            if (items[k].seq == it->seq) m->bad++;
        m->items[slot][i] = *it;
    }
    m->n_items[slot] = n;
    m->count++;
    if (m->count > m->max_inflight_seen) m->max_inflight_seen = m->count;
    if (m->count > m->max_inflight) m->bad++;
    m->steps++;
    if (decode && prompt) m->mixed++;
    if (n > m->max_items) m->max_items = n;
    if (n_decode > m->max_decode) m->max_decode = n_decode;
    if (total > m->max_tokens_in_batch) m->max_tokens_in_batch = total;
    pthread_mutex_unlock(&m->mu);
    (void)err;
    (void)errsz;
    return 0;
}

static int mock_collect(void *self, struct eng_result *out, int n, int timeout_ms, char *err,
                        size_t errsz)
{
    struct mock *m = self;
    if (atomic_load(&m->faulted) && m->count > 0) { /* every batch held fails at once */
        pthread_mutex_lock(&m->mu);
        m->head = (m->head + 1) % 8;
        m->count--;
        pthread_mutex_unlock(&m->mu);
        return bt_errf(err, errsz, BT_EIO, "broken");
    }
    if (!atomic_load(&m->gate)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        return BT_ETIMEOUT;
    }
    (void)timeout_ms;
    pthread_mutex_lock(&m->mu);
    int slot = m->head;
    m->head = (m->head + 1) % 8;
    m->count--;
    int rc = 0;
    for (int i = 0; i < m->n_items[slot] && i < n; i++) {
        const struct eng_item *it = &m->items[slot][i];
        if (it->seq == m->fail_seq) rc = bt_errf(err, errsz, BT_ERR, "injected failure");
        if (!it->sample) continue;
        int k = m->next[it->seq]++;
        if (m->forever) k %= m->n_script;
        out[i].token = k < m->n_script ? m->script[k] : m->eos;
        out[i].logprob = -0.5f;
        out[i].n_top = 1;
        out[i].top_id[0] = out[i].token;
        out[i].top_lp[0] = -0.5f;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static void mock_release(void *self, int32_t seq)
{
    struct mock *m = self;
    pthread_mutex_lock(&m->mu);
    m->releases++;
    m->len[seq] = 0;
    pthread_mutex_unlock(&m->mu);
}

static int mock_ranks(void *self, struct eng_rank *out, int cap)
{
    (void)self;
    if (cap < 1) return 0;
    memset(out, 0, sizeof(*out));
    out->layer_last = 1;
    out->state = ENG_RANK_READY;
    out->step_ms = 0.1;
    return 1;
}

static void mock_destroy(void *self)
{
    (void)self;
}

static bool mock_fault(void *self, struct eng_fault *out)
{
    struct mock *m = self;
    if (!atomic_load(&m->faulted)) return false;
    out->kind = "rank_exit";
    out->rank = 2;
    snprintf(out->host, sizeof(out->host), "h2");
    snprintf(out->message, sizeof(out->message), "rank 2 on host h2 exited");
    return true;
}

static const struct eng_ops mock_ops = {.name = "mock",
                                        .load = mock_load,
                                        .submit = mock_submit,
                                        .collect = mock_collect,
                                        .release = mock_release,
                                        .ranks = mock_ranks,
                                        .destroy = mock_destroy,
                                        .fault = mock_fault};

/* ---- helpers ---- */

static struct mock mk;
static struct metrics met;
static int start_ctx = 64, start_delay_ms = 0;
static uint64_t start_t0; /* the process's start as the scheduler is told (0: its creation) */
static char model_path[4096];

static struct sched *start(int n_slots, int queue_cap, int prefill_chunk, int max_inflight)
{
    struct sched *s = NULL;
    char err[256];
    memset(&mk, 0, sizeof(mk));
    pthread_mutex_init(&mk.mu, NULL);
    mk.max_inflight = max_inflight;
    mk.fail_seq = -1;
    atomic_store(&mk.gate, true);
    metrics_init(&met);
    snprintf(model_path, sizeof(model_path), "%s",
             t_path("BATON_SHARED", "models/stories260K.gguf"));
    struct sched_config c = {.model_path = model_path,
                             .n_ctx = start_ctx,
                             .test_step_delay_ms = start_delay_ms,
                             .n_slots = n_slots,
                             .queue_cap = queue_cap,
                             .prefill_chunk = prefill_chunk,
                             .t_start_ns = start_t0};
    struct engine e = {&mock_ops, &mk};
    CHECK_INT(sched_create(&c, e, &met, &s, err, sizeof(err)), 0);
    CHECK_INT(sched_start(s), 0);
    CHECK_INT(sched_wait_loaded(s, 10000), SCHED_READY);
    const struct sched_model *md = sched_model(s);
    CHECK(md != NULL);
    if (md) {
        mk.n_script = tok_encode(md->tok, SCRIPT, strlen(SCRIPT), false, false, mk.script, 64);
        mk.eos = tok_eos(md->tok);
    }
    CHECK(mk.n_script > 5);
    return s;
}

static struct req *mkreq(int n_prompt, int max_tokens, const char *stop, bool stream)
{
    struct req *r;
    CHECK_INT(req_new(&r), 0);
    r->kind = 1;
    r->stream = stream;
    r->max_tokens = max_tokens;
    r->n_prompt = n_prompt;
    r->prompt = malloc(sizeof(int32_t) * (size_t)n_prompt);
    for (int i = 0; i < n_prompt; i++) r->prompt[i] = 1 + i % 100;
    if (stop) {
        r->stop[0] = strdup(stop);
        r->n_stop = 1;
    }
    r->sp.temp = 1;
    r->sp.n_logprobs = -1;
    r->t_arrive_ns = bt_now_ns();
    snprintf(r->id, sizeof(r->id), "test");
    return r;
}

/* Poll until r is done (deadline 10 s). */
static bool wait_done(struct req *r)
{
    uint64_t dl = bt_now_ns() + 10000000000ull;
    while (!req_is_done(r)) {
        if (bt_now_ns() > dl) return false;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

static bool wait_busy(struct sched *s, int busy, int queued)
{
    uint64_t dl = bt_now_ns() + 10000000000ull;
    for (;;) {
        struct sched_stats st;
        sched_stats(s, &st, NULL, 0);
        if (st.slots_busy == busy && st.queue_depth == queued) return true;
        if (bt_now_ns() > dl) return false;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* All text of a finished request. */
static char *all_text(struct req *r, struct req_take *t)
{
    req_take(r, t, NULL, NULL);
    char *s = calloc(1, t->ch[0].text_len + 1);
    if (t->ch[0].text_len) memcpy(s, t->ch[0].text, t->ch[0].text_len);
    return s;
}

/* ---- tests ---- */

static void test_basic(void)
{
    struct sched *s = start(2, 8, 256, 1);
    struct req_take t;

    /* to the end of generation */
    struct req *r = mkreq(5, 100, NULL, false);
    CHECK_INT(sched_submit(s, r), 0);
    CHECK(wait_done(r));
    char *text = all_text(r, &t);
    CHECK_STR(text, " " SCRIPT); /* SPM pieces keep their leading space */
    CHECK_STR(t.ch[0].finish, "stop");
    CHECK_INT(t.ch[0].n_gen, mk.n_script);
    CHECK_INT(t.err_status, 0);
    free(text);
    req_take_free(&t);
    req_unref(r);

    /* max_tokens */
    r = mkreq(5, 3, NULL, false);
    CHECK_INT(sched_submit(s, r), 0);
    CHECK(wait_done(r));
    text = all_text(r, &t);
    CHECK_STR(t.ch[0].finish, "length");
    CHECK_INT(t.ch[0].n_gen, 3);
    CHECK(strlen(text) > 0 && strncmp(text, " Hello", strlen(text)) == 0);
    free(text);
    req_take_free(&t);
    req_unref(r);

    /* a stop string spanning tokens: nothing of it is released */
    r = mkreq(5, 100, "world", true);
    CHECK_INT(sched_submit(s, r), 0);
    CHECK(wait_done(r));
    text = all_text(r, &t);
    CHECK_STR(text, " Hello ");
    CHECK_STR(t.ch[0].finish, "stop");
    free(text);
    req_take_free(&t);
    req_unref(r);
    r = mkreq(5, 100, ". The", false);
    CHECK_INT(sched_submit(s, r), 0);
    CHECK(wait_done(r));
    text = all_text(r, &t);
    CHECK_STR(text, " Hello world");
    free(text);
    req_take_free(&t);
    req_unref(r);

    /* logprobs: one entry per token, offsets into the text */
    r = mkreq(3, 100, NULL, false);
    r->n_logprobs = 1;
    r->sp.n_logprobs = 1;
    CHECK_INT(sched_submit(s, r), 0);
    CHECK(wait_done(r));
    text = all_text(r, &t);
    CHECK_INT(t.ch[0].n_lp, mk.n_script);
    CHECK_INT(t.ch[0].lp[0].offset, 0);
    for (int i = 1; i < t.ch[0].n_lp; i++) CHECK(t.ch[0].lp[i].offset >= t.ch[0].lp[i - 1].offset);
    CHECK(t.ch[0].n_lp > 2 && t.ch[0].lp[2].offset < strlen(text));
    CHECK_INT(t.ch[0].lp[1].n_top, 1);
    free(text);
    req_take_free(&t);
    req_unref(r);

    /* a prompt that fills the context: ends with "length" */
    r = mkreq(63, 100, NULL, false);
    CHECK_INT(sched_submit(s, r), 0);
    CHECK(wait_done(r));
    req_take(r, &t, NULL, NULL);
    CHECK_STR(t.ch[0].finish, "length");
    CHECK_INT(t.ch[0].n_gen, 2); /* positions 0..63: 63 prompt tokens and one fed back */
    req_take_free(&t);
    req_unref(r);

    CHECK(wait_busy(s, 0, 0));
    CHECK_INT(mk.bad, 0);
    CHECK(atomic_load(&met.generated_tokens) > 0);
    CHECK(atomic_load(&met.ttft.count) == 6);
    sched_free(s);
}

static void test_batching(void)
{
    /* 4 requests on 2 slots with a prefill chunk of 8 and long prompts */
    struct sched *s = start(2, 8, 8, 1);
    struct req *r[4];
    struct req_take t;
    atomic_store(&mk.gate, false); /* all four are in before the first step returns */
    for (int i = 0; i < 4; i++) {
        r[i] = mkreq(20 + i, 100, NULL, true);
        r[i]->prompt[0] = 101 + i; /* no shared prefix: nobody waits for another's prompt */
        CHECK_INT(sched_submit(s, r[i]), 0);
    }
    CHECK(wait_busy(s, 2, 2));
    atomic_store(&mk.gate, true);
    for (int i = 0; i < 4; i++) {
        CHECK(wait_done(r[i]));
        char *text = all_text(r[i], &t);
        CHECK_STR(text, " " SCRIPT);
        CHECK_STR(t.ch[0].finish, "stop");
        free(text);
        req_take_free(&t);
        req_unref(r[i]);
    }
    CHECK(wait_busy(s, 0, 0));
    CHECK_INT(mk.max_items, 2);             /* both slots in one batch */
    CHECK(mk.max_tokens_in_batch <= 8 + 2); /* chunk + one decode token per other slot */
    CHECK(mk.mixed > 0);                    /* prompts read while another sequence decodes */
    CHECK_INT(mk.resets, 4);
    CHECK_INT(mk.releases, 4);
    CHECK_INT(mk.bad, 0);
    CHECK_INT(atomic_load(&met.prompt_tokens), 20 + 21 + 22 + 23);
    sched_free(s);

    /* two micro-batches in flight (a pipeline engine): each over distinct sequences */
    s = start(4, 8, 4, 2);
    atomic_store(&mk.gate, false);
    for (int i = 0; i < 4; i++) {
        r[i] = mkreq(6, 100, NULL, false);
        CHECK_INT(sched_submit(s, r[i]), 0);
    }
    CHECK(wait_busy(s, 4, 0));
    atomic_store(&mk.gate, true);
    for (int i = 0; i < 4; i++) {
        CHECK(wait_done(r[i]));
        char *text = all_text(r[i], &t);
        CHECK_STR(text, " " SCRIPT);
        free(text);
        req_take_free(&t);
        req_unref(r[i]);
    }
    CHECK_INT(mk.bad, 0);
    CHECK_INT(mk.max_inflight_seen, 2); /* two batches (of distinct sequences) in flight */
    sched_free(s);

    /* prompts read in big chunks, then decoding: the decoding sequences are spread over the
     * two micro-batches (at most ceil(4 / 2) decode tokens in one), so every stage has work */
    s = start(4, 8, 32, 2);
    atomic_store(&mk.gate, false);
    for (int i = 0; i < 4; i++) {
        r[i] = mkreq(6, 100, NULL, false);
        CHECK_INT(sched_submit(s, r[i]), 0);
    }
    CHECK(wait_busy(s, 4, 0));
    atomic_store(&mk.gate, true);
    for (int i = 0; i < 4; i++) {
        CHECK(wait_done(r[i]));
        char *text = all_text(r[i], &t);
        CHECK_STR(text, " " SCRIPT);
        free(text);
        req_take_free(&t);
        req_unref(r[i]);
    }
    CHECK_INT(mk.bad, 0);
    CHECK_INT(mk.max_decode, 2);
    sched_free(s);
}

static void test_cancel_timeout_full(void)
{
    start_ctx = 4096; /* room to generate "forever", one token per ms */
    start_delay_ms = 1;
    struct sched *s = start(1, 1, 256, 1);
    start_ctx = 64;
    start_delay_ms = 0;
    struct req_take t;
    mk.forever = true;
    atomic_store(&mk.gate, false); /* hold the engine: the slot stays busy */

    struct req *a = mkreq(4, 1000, NULL, true);
    struct req *b = mkreq(4, 1000, NULL, false);
    struct req *c = mkreq(4, 1000, NULL, false);
    CHECK_INT(sched_submit(s, a), 0);
    CHECK(wait_busy(s, 1, 0));
    CHECK_INT(sched_submit(s, b), 0);
    CHECK(wait_busy(s, 1, 1));
    CHECK_INT(sched_submit(s, c), BT_EFULL); /* queue of 1 is full */
    CHECK_INT(atomic_load(&met.rejected_full), 1);
    req_unref(c);

    /* cancel the running one (its batch is held in the engine): its slot goes to b */
    req_detach(a); /* what the HTTP completion callback does */
    atomic_store(&mk.gate, true);
    CHECK(wait_done(a));
    req_take(a, &t, NULL, NULL);
    CHECK_INT(t.err_status, 499);
    req_take_free(&t);
    req_unref(a);
    CHECK(wait_busy(s, 1, 0)); /* b runs */
    CHECK_INT(atomic_load(&met.cancelled), 1);

    /* b runs forever: a deadline ends it with "length" */
    b->deadline_ns = bt_now_ns() + 50000000ull;
    CHECK(wait_done(b));
    req_take(b, &t, NULL, NULL);
    CHECK_STR(t.ch[0].finish, "length");
    CHECK(t.ch[0].n_gen > 0);
    CHECK_INT(t.err_status, 0);
    req_take_free(&t);
    req_unref(b);
    CHECK(wait_busy(s, 0, 0));

    /* a queued request whose deadline passes while the slot is held: 503 timeout */
    atomic_store(&mk.gate, false);
    a = mkreq(4, 1000, NULL, false);
    b = mkreq(4, 1000, NULL, false);
    CHECK_INT(sched_submit(s, a), 0);
    CHECK(wait_busy(s, 1, 0));
    b->deadline_ns = bt_now_ns() + 20000000ull;
    CHECK_INT(sched_submit(s, b), 0);
    CHECK(wait_done(b));
    req_take(b, &t, NULL, NULL);
    CHECK_INT(t.err_status, 503);
    CHECK_STR(t.err_code, "timeout");
    req_take_free(&t);
    req_unref(b);
    /* a was admitted but never got a token: its deadline gives 503 too */
    a->deadline_ns = bt_now_ns();
    atomic_store(&mk.gate, true);
    CHECK(wait_done(a));
    req_take(a, &t, NULL, NULL);
    CHECK(t.err_status == 503 || (t.ch[0].finish && !strcmp(t.ch[0].finish, "length")));
    req_take_free(&t);
    req_unref(a);
    CHECK(wait_busy(s, 0, 0));

    /* an engine failure fails the request with 500 */
    mk.fail_seq = 0;
    a = mkreq(4, 10, NULL, false);
    CHECK_INT(sched_submit(s, a), 0);
    CHECK(wait_done(a));
    req_take(a, &t, NULL, NULL);
    CHECK_INT(t.err_status, 500);
    req_take_free(&t);
    req_unref(a);
    mk.fail_seq = -1;

    /* stopping answers everyone */
    atomic_store(&mk.gate, false);
    a = mkreq(4, 1000, NULL, true);
    CHECK_INT(sched_submit(s, a), 0);
    CHECK(wait_busy(s, 1, 0));
    atomic_store(&mk.gate, true);
    sched_stop(s);
    CHECK(req_is_done(a));
    CHECK_INT(sched_submit(s, a), BT_EUNSUP);
    req_unref(a);
    CHECK_INT(mk.bad, 0);
    sched_free(s);
}

/* wake/suspend protocol of a request, as the HTTP side uses it */
static int n_suspend, n_wake;
static void on_suspend(void *arg)
{
    (void)arg;
    n_suspend++;
}
static void on_wake(void *arg)
{
    (void)arg;
    n_wake++;
}

static void test_request_wake(void)
{
    struct req *r;
    struct req_take t;
    CHECK_INT(req_new(&r), 0);
    r->stream = true;
    req_set_wake(r, on_wake, NULL);
    CHECK_INT(req_take(r, &t, on_suspend, NULL), 1); /* nothing yet: suspended */
    CHECK_INT(n_suspend, 1);
    req_push(r, 0, "ab", 2, NULL, 0); /* wakes once */
    req_push(r, 0, "c", 1, NULL, 0);  /* not armed: no second wake */
    CHECK_INT(n_wake, 1);
    CHECK_INT(req_take(r, &t, on_suspend, NULL), 0);
    CHECK_INT(t.ch[0].text_len, 3);
    CHECK(memcmp(t.ch[0].text, "abc", 3) == 0);
    req_take_free(&t);
    CHECK_INT(req_take(r, &t, on_suspend, NULL), 1);
    req_detach(r); /* client gone: no wake after this, and the request is cancelled */
    CHECK(atomic_load(&r->cancel));
    req_finish(r, 0, "stop", 3);
    CHECK_INT(n_wake, 1);
    req_unref(r);

    /* a non-streamed request is woken only at its end */
    CHECK_INT(req_new(&r), 0);
    req_set_wake(r, on_wake, NULL);
    CHECK_INT(req_take(r, &t, on_suspend, NULL), 1);
    req_push(r, 0, "x", 1, NULL, 0);
    CHECK_INT(n_wake, 1);
    req_finish(r, 0, "length", 1);
    CHECK_INT(n_wake, 2);
    CHECK_INT(req_take(r, &t, on_suspend, NULL), 0);
    CHECK_STR(t.ch[0].finish, "length");
    CHECK_INT(t.ch[0].text_len, 1);
    req_take_free(&t);
    req_unref(r);
}

/* The engine fails for good (a pipeline fault): the running and the queued request get 503
 * pipeline_fault naming the rank, the state is FAULTED (model still published for the answers),
 * the fault is counted by kind, new requests are refused. */
static void test_fault(void)
{
    start_t0 = bt_now_ns() - 30000000000ull; /* as if the start had taken 30 s */
    struct sched *s = start(1, 4, 256, 1);
    start_t0 = 0;
    struct req_take t;
    CHECK_INT(sched_retry_after(s), 1); /* not faulted */
    mk.forever = true;
    atomic_store(&mk.gate, false); /* hold the running batch in the engine */
    struct req *a = mkreq(4, 1000, NULL, true);
    struct req *b = mkreq(4, 1000, NULL, false);
    CHECK_INT(sched_submit(s, a), 0);
    CHECK(wait_busy(s, 1, 0));
    CHECK_INT(sched_submit(s, b), 0);
    CHECK(wait_busy(s, 1, 1));
    atomic_store(&mk.faulted, true);
    CHECK(wait_done(a));
    CHECK(wait_done(b));
    struct req *all[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        req_take(all[i], &t, NULL, NULL);
        CHECK_INT(t.err_status, 503);
        CHECK_STR(t.err_code, "pipeline_fault");
        CHECK(strstr(t.err_msg, "rank 2 on host h2") != NULL);
        req_take_free(&t);
        req_unref(all[i]);
    }
    CHECK_INT(sched_state(s), SCHED_FAULTED);
    CHECK(sched_model(s) != NULL);
    CHECK_INT(sched_retry_after(s), 32); /* the restart: 30 s startup + 1.5 s, rounded up */
    struct sched_stats st;
    sched_stats(s, &st, NULL, 0);
    CHECK_INT(st.n_ranks, 0);
    CHECK_INT(st.fault_rank, 2);
    CHECK_STR(st.fault_host, "h2");
    CHECK_STR(st.fault_kind, "rank_exit");
    CHECK(strstr(st.message, "rank 2") != NULL);
    CHECK_INT(atomic_load(&met.faults[2]), 1); /* rank_exit */
    CHECK_INT(atomic_load(&met.faults[0]) + atomic_load(&met.faults[1]), 0);
    struct req *c = mkreq(2, 2, NULL, false);
    CHECK_INT(sched_submit(s, c), BT_EUNSUP);
    req_unref(c);
    char *text = NULL;
    CHECK_INT(metrics_render(&met, &(struct metrics_gauges){0}, &text), 0);
    CHECK(text && strstr(text, "baton_faults_total{kind=\"rank_exit\"} 1\n") != NULL);
    CHECK(text && strstr(text, "baton_faults_total{kind=\"heartbeat\"} 0\n") != NULL);
    free(text);
    sched_free(s);
}

static void test_load_failure(void)
{
    struct sched *s = NULL;
    char err[256];
    struct sched_config c = {
        .model_path = "/nonexistent/model.gguf", .n_slots = 1, .queue_cap = 1, .prefill_chunk = 8};
    struct engine e = {&mock_ops, &mk};
    CHECK_INT(sched_create(&c, e, NULL, &s, err, sizeof(err)), 0);
    CHECK_INT(sched_start(s), 0);
    CHECK_INT(sched_wait_loaded(s, 10000), SCHED_FAILED);
    CHECK(sched_model(s) == NULL);
    struct sched_stats st;
    struct eng_rank ranks[4];
    sched_stats(s, &st, ranks, 4);
    CHECK(strstr(st.message, "nonexistent") != NULL);
    CHECK_INT(st.n_ranks, 1);
    CHECK_INT(ranks[0].state, ENG_RANK_FAILED);
    CHECK_INT(sched_exit_code(s), BT_EXIT_CONFIG); /* the mock engine has no exit_code */
    struct req *r = mkreq(2, 2, NULL, false);
    CHECK_INT(sched_submit(s, r), BT_EUNSUP);
    req_unref(r);
    sched_free(s);
}

int main(void)
{
    bt_log_set_level(BT_LOG_WARN);
    test_request_wake();
    test_basic();
    test_batching();
    test_cancel_timeout_full();
    test_load_failure();
    test_fault();
    return t_done();
}
