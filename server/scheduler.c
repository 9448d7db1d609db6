#include "scheduler.h"

#include "chat.h"
#include "exitcodes.h"
#include "gguf.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "queue.h"
#include "request.h"
#include "stop.h"
#include "tokenizer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_INFLIGHT 8
#define MAX_RANKS    SCHED_MAX_RANKS

struct slot {
    int id;
    struct req *r;        /* NULL: free (a reference of its own) */
    int choice;           /* which of r's choices this slot generates */
    struct smp_params sp; /* r's sampling parameters, the seed of this choice */
    bool prefill;         /* still reading the prompt */
    bool inflight;        /* part of a submitted batch */
    bool fresh;           /* no batch submitted yet: its first one resets the sampler */
    int n_fed;            /* prompt tokens fed (from the prefix cache, or computed) */
    int n_past;           /* positions in the cache */
    int32_t next;         /* sampled token to feed next */
    int n_gen;            /* tokens generated (end-of-generation not counted) */
    bool sampled;         /* at least one token was sampled (TTFT recorded) */
    uint64_t order;
    struct tok_stream ts;
    char *pend; /* generated text not yet released to the request */
    size_t pend_len, pend_cap;
    struct api_lp *plp; /* logprob entries not yet released */
    int n_plp, plp_cap;
    uint32_t emitted; /* bytes released before pend[0] */
};

struct flight {
    int n;
    struct eng_item *items; /* (n_slots) */
    int *slot;              /* (n_slots) slot of item i */
    struct eng_result *res; /* (n_slots) */
};

struct sched {
    struct sched_config c;
    struct engine eng;
    struct metrics *m;
    struct queue q;
    pthread_t th;
    bool started;
    atomic_int state;
    atomic_bool stop;
    atomic_bool draining; /* new requests are refused (503), running ones go on */

    /* loaded by the scheduler thread, published with state READY */
    struct gguf *g;
    struct tok *tok;
    char *chat_src;
    struct sched_model model;
    struct eng_info info;

    /* scheduler thread only */
    struct slot *slots;
    int n_slots;
    struct flight fl[MAX_INFLIGHT];
    int n_fl, fl_head, fl_len;
    char *piece;
    int piece_cap;
    uint64_t order;

    /* shared status */
    pthread_mutex_t st_mu;
    pthread_cond_t st_cv;
    struct eng_rank ranks[MAX_RANKS];
    int n_ranks;
    char message[512];
    struct eng_fault fault; /* valid in SCHED_FAULTED */
    int exit_code;          /* valid in SCHED_FAILED: the engine's ops->exit_code */
    struct blk_stats cache; /* the engine's KV block table (refresh_ranks) */
    atomic_int busy;
    _Atomic uint64_t loop_ns; /* when the serving loop last went round (0: not serving yet) */
    double startup_s;         /* process start to READY; written before the state turns READY */
};

/* ---- status ---- */

static void set_state(struct sched *s, int state)
{
    pthread_mutex_lock(&s->st_mu);
    atomic_store_explicit(&s->state, state, memory_order_release);
    pthread_cond_broadcast(&s->st_cv);
    pthread_mutex_unlock(&s->st_mu);
}

/* The ranks' status and the KV block table's counters, for /health and /metrics. */
static void refresh_ranks(struct sched *s)
{
    struct eng_rank tmp[MAX_RANKS];
    struct blk_stats cache = {0};
    int n = s->eng.ops->ranks ? s->eng.ops->ranks(s->eng.self, tmp, MAX_RANKS) : 0;
    if (s->eng.ops->cache_stats && atomic_load(&s->state) != SCHED_LOADING)
        s->eng.ops->cache_stats(s->eng.self, &cache);
    if (n > MAX_RANKS) n = MAX_RANKS;
    pthread_mutex_lock(&s->st_mu);
    if (n > 0) {
        memcpy(s->ranks, tmp, sizeof(tmp[0]) * (size_t)n);
        s->n_ranks = n;
    }
    s->cache = cache;
    pthread_mutex_unlock(&s->st_mu);
}

static void on_progress(void *arg, int rank, float fraction)
{
    struct sched *s = arg;
    refresh_ranks(s);
    pthread_mutex_lock(&s->st_mu);
    for (int i = 0; i < s->n_ranks; i++)
        if (s->ranks[i].rank == rank) s->ranks[i].progress = fraction;
    pthread_mutex_unlock(&s->st_mu);
}

/* ---- creation ---- */

int sched_create(const struct sched_config *c, struct engine eng, struct metrics *m,
                 struct sched **out, char *err, size_t errsz)
{
    *out = NULL;
    if (c->n_slots < 1 || c->prefill_chunk < 1 || c->queue_cap < 0) {
        if (eng.ops && eng.ops->destroy) eng.ops->destroy(eng.self);
        return bt_errf(err, errsz, BT_EINVAL, "scheduler: bad configuration");
    }
    struct sched *s = calloc(1, sizeof(*s));
    if (!s || queue_init(&s->q, c->queue_cap) < 0) {
        free(s);
        if (eng.ops && eng.ops->destroy) eng.ops->destroy(eng.self);
        return bt_errf(err, errsz, BT_ENOMEM, "scheduler: out of memory");
    }
    if (queue_sync_init(&s->st_mu, &s->st_cv) < 0) {
        queue_destroy(&s->q);
        free(s);
        if (eng.ops && eng.ops->destroy) eng.ops->destroy(eng.self);
        return bt_errf(err, errsz, BT_ERR, "scheduler: cannot initialise its lock");
    }
    s->c = *c;
    if (!s->c.t_start_ns) s->c.t_start_ns = bt_now_ns();
    s->eng = eng;
    s->m = m;
    atomic_init(&s->state, SCHED_LOADING);
    atomic_init(&s->stop, false);
    atomic_init(&s->draining, false);
    atomic_init(&s->busy, 0);
    atomic_init(&s->loop_ns, 0);
    /* until the engine says more: rank 0, loading */
    s->n_ranks = 1;
    s->ranks[0].rank = 0;
    s->ranks[0].state = ENG_RANK_LOADING;
    s->ranks[0].heartbeat_age_ms = 0;
    s->ranks[0].step_ms = -1;
    if (gethostname(s->ranks[0].host, sizeof(s->ranks[0].host) - 1) != 0)
        snprintf(s->ranks[0].host, sizeof(s->ranks[0].host), "unknown");
    *out = s;
    return BT_OK;
}

/* ---- loading (scheduler thread) ---- */

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int sched_load(struct sched *s, char *err, size_t errsz)
{
    int rc;
    if (s->c.test_load_delay_ms > 0) {
        uint64_t until = bt_now_ns() + (uint64_t)s->c.test_load_delay_ms * 1000000u;
        while (!atomic_load(&s->stop) && bt_now_ns() < until) sleep_ms(5);
    }
    if ((rc = gguf_open(s->c.model_path, &s->g, err, errsz)) < 0) return rc;
    if ((rc = tok_load(s->g, &s->tok, err, errsz)) < 0) return rc;

    struct gguf_str tmpl;
    if (gguf_get_str(s->g, "tokenizer.chat_template", &tmpl) == 0) {
        if (tmpl.len > (64u << 20))
            return bt_errf(err, errsz, BT_EFORMAT, "chat template too large");
        s->chat_src = malloc(tmpl.len + 1);
        if (!s->chat_src) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
        memcpy(s->chat_src, tmpl.data, tmpl.len);
        s->chat_src[tmpl.len] = 0;
    }
    bool fell_back = false;
    int family = CHAT_FALLBACK;
    rc = chat_select(s->c.chat_template, s->chat_src, &family, &fell_back, err, errsz);
    if (rc < 0) return rc;
    if (fell_back)
        bt_warn("%s: chat template %s; using %s", s->c.model_path,
                s->chat_src ? "not recognised" : "absent", chat_family_name(family));
    else
        bt_info("chat template: %s", chat_family_name(family));

    struct eng_load_params lp = {.n_seq = s->c.n_slots,
                                 .n_ctx = s->c.n_ctx,
                                 .max_batch = pipeline_max_batch(s->c.n_slots, s->c.prefill_chunk),
                                 .n_threads = s->c.n_threads,
                                 .device = s->c.device,
                                 .kv_type = s->c.kv_type,
                                 .n_blocks = s->c.n_blocks,
                                 .progress = on_progress,
                                 .progress_arg = s};
    if ((rc = s->eng.ops->load(s->eng.self, s->g, &lp, &s->info, err, errsz)) < 0) return rc;
    if (s->info.n_vocab != tok_n_vocab(s->tok))
        return bt_errf(err, errsz, BT_EFORMAT, "%s: the tokenizer has %d tokens, the model %d",
                       s->c.model_path, tok_n_vocab(s->tok), s->info.n_vocab);
    if (s->info.n_ctx < 2)
        return bt_errf(err, errsz, BT_EINVAL, "context size %d is too small", s->info.n_ctx);
    if (s->info.max_batch < s->c.n_slots + 1)
        return bt_errf(err, errsz, BT_EINVAL,
                       "the engine takes %d tokens per step, %d slots need more", s->info.max_batch,
                       s->c.n_slots);

    s->n_slots = s->c.n_slots;
    s->slots = calloc((size_t)s->n_slots, sizeof(*s->slots));
    s->n_fl = s->info.max_inflight < 1 ? 1 : s->info.max_inflight;
    if (s->n_fl > MAX_INFLIGHT) s->n_fl = MAX_INFLIGHT;
    s->piece_cap = tok_max_piece(s->tok) + 16;
    s->piece = malloc((size_t)s->piece_cap);
    if (!s->slots || !s->piece) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    for (int i = 0; i < s->n_slots; i++) s->slots[i].id = i;
    for (int i = 0; i < s->n_fl; i++) {
        struct flight *f = &s->fl[i];
        f->items = calloc((size_t)s->n_slots, sizeof(*f->items));
        f->slot = calloc((size_t)s->n_slots, sizeof(*f->slot));
        f->res = calloc((size_t)s->n_slots, sizeof(*f->res));
        if (!f->items || !f->slot || !f->res)
            return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    }

    int32_t bos = tok_bos(s->tok), eos = tok_eos(s->tok);
    s->model.g = s->g;
    s->model.tok = s->tok;
    s->model.n_ctx = s->info.n_ctx;
    s->model.n_vocab = s->info.n_vocab;
    s->model.chat_family = family;
    s->model.bos_text = bos >= 0 && tok_text(s->tok, bos) ? tok_text(s->tok, bos) : "";
    s->model.eos_text = eos >= 0 && tok_text(s->tok, eos) ? tok_text(s->tok, eos) : "";
    s->model.created = (int64_t)time(NULL);
    return BT_OK;
}

/* ---- slots (scheduler thread) ---- */

static void slot_clear(struct slot *sl)
{
    sl->r = NULL;
    sl->prefill = sl->inflight = sl->sampled = sl->fresh = false;
    sl->n_fed = sl->n_past = sl->n_gen = 0;
    sl->pend_len = 0;
    sl->n_plp = 0;
    sl->emitted = 0;
}

/* End the slot's request: with finish ("stop"/"length") or an error (status > 0). */
static void slot_end(struct sched *s, struct slot *sl, const char *finish, int status,
                     const char *type, const char *code, const char *msg)
{
    struct req *r = sl->r;
    if (finish) {
        req_finish(r, sl->choice, finish, sl->n_gen);
        if (s->m && sl->choice == 0)
            metrics_latency(s->m, (double)(bt_now_ns() - r->t_arrive_ns) * 1e-9);
    } else {
        req_fail(r, status, type, code, msg);
    }
    if (s->eng.ops->release) s->eng.ops->release(s->eng.self, sl->id);
    req_unref(r);
    slot_clear(sl);
    atomic_fetch_sub(&s->busy, 1);
}

/* Release pending text that can no longer be part of a stop string (all of it when final);
 * true if a stop string was found (the text before it was released). */
static bool slot_release(struct sched *s, struct slot *sl, bool final)
{
    struct req *r = sl->r;
    size_t n;
    bool found = stop_scan(sl->pend, sl->pend_len, (const char *const *)r->stop, r->n_stop, &n);
    if (final && !found) n = sl->pend_len;
    uint32_t cut = sl->emitted + (uint32_t)n;
    int k = 0;
    while (k < sl->n_plp) {
        uint32_t end =
            k + 1 < sl->n_plp ? sl->plp[k + 1].offset : sl->emitted + (uint32_t)sl->pend_len;
        bool take = (found || final) ? sl->plp[k].offset < cut || (final && !found) : end <= cut;
        if (!take) break;
        k++;
    }
    if (n || k) {
        if (req_push(r, sl->choice, sl->pend, n, sl->plp, k) < 0)
            bt_warn("request %s: out of memory", r->id);
        if (sl->pend_len > n) memmove(sl->pend, sl->pend + n, sl->pend_len - n);
        sl->pend_len -= n;
        if (sl->n_plp > k)
            memmove(sl->plp, sl->plp + k, sizeof(*sl->plp) * (size_t)(sl->n_plp - k));
        sl->n_plp -= k;
        sl->emitted = cut;
    }
    (void)s;
    return found;
}

static int pend_append(struct slot *sl, const char *p, size_t n)
{
    if (!n) return BT_OK;
    if (sl->pend_len + n > sl->pend_cap) {
        size_t cap = sl->pend_cap ? sl->pend_cap : 256;
        while (cap < sl->pend_len + n) cap *= 2;
        char *q = realloc(sl->pend, cap);
        if (!q) return BT_ENOMEM;
        sl->pend = q;
        sl->pend_cap = cap;
    }
    memcpy(sl->pend + sl->pend_len, p, n);
    sl->pend_len += n;
    return BT_OK;
}

static int lp_append(struct slot *sl, const struct eng_result *res, uint32_t offset)
{
    if (sl->n_plp == sl->plp_cap) {
        int cap = sl->plp_cap ? sl->plp_cap * 2 : 16;
        struct api_lp *q = realloc(sl->plp, sizeof(*q) * (size_t)cap);
        if (!q) return BT_ENOMEM;
        sl->plp = q;
        sl->plp_cap = cap;
    }
    struct api_lp *e = &sl->plp[sl->n_plp++];
    memset(e, 0, sizeof(*e));
    e->token = res->token;
    e->logprob = res->logprob;
    e->n_top = res->n_top < 0 ? 0 : res->n_top > API_MAX_TOP ? API_MAX_TOP : res->n_top;
    for (int i = 0; i < e->n_top; i++) {
        e->top_id[i] = res->top_id[i];
        e->top_lp[i] = res->top_lp[i];
    }
    e->offset = offset;
    return BT_OK;
}

/* Flush the decoder, release everything (stop strings still apply) and end with `why`. */
static void slot_finish(struct sched *s, struct slot *sl, const char *why)
{
    int n = tok_stream_flush(&sl->ts, s->piece, s->piece_cap);
    if (n > 0) pend_append(sl, s->piece, (size_t)n);
    if (slot_release(s, sl, true)) why = "stop";
    slot_end(s, sl, why, 0, NULL, NULL, NULL);
}

/* A sampled token for the slot's request. */
static void slot_token(struct sched *s, struct slot *sl, const struct eng_result *res)
{
    struct req *r = sl->r;
    int32_t t = res->token;
    if (!sl->sampled) {
        sl->sampled = true;
        if (s->m && sl->choice == 0)
            metrics_ttft(s->m, (double)(bt_now_ns() - r->t_arrive_ns) * 1e-9);
    }
    if (tok_is_eog(s->tok, t)) {
        slot_finish(s, sl, "stop");
        return;
    }
    sl->n_gen++;
    if (s->m) metrics_tokens(s->m, 0, 1);
    uint32_t offset = sl->emitted + (uint32_t)sl->pend_len;
    int n = tok_stream_push(&sl->ts, t, s->piece, s->piece_cap);
    if (n < 0) n = 0;
    if (pend_append(sl, s->piece, (size_t)n) < 0 ||
        (r->n_logprobs >= 0 && lp_append(sl, res, offset) < 0)) {
        slot_end(s, sl, NULL, 500, "server_error", NULL, "out of memory");
        return;
    }
    if (slot_release(s, sl, false)) {
        slot_end(s, sl, "stop", 0, NULL, NULL, NULL);
        return;
    }
    if (sl->n_gen >= r->max_tokens || sl->n_past >= s->info.n_ctx) {
        slot_finish(s, sl, "length");
        return;
    }
    sl->next = t;
}

/* ---- the loop (scheduler thread) ---- */

static bool expired_or_cancelled(struct req *r, void *arg)
{
    uint64_t now = *(uint64_t *)arg;
    return req_client_gone(r) || (r->deadline_ns && now >= r->deadline_ns);
}

static void fail_queued(struct sched *s, struct req *r, int status, const char *code,
                        const char *msg)
{
    if (atomic_load(&r->cancel)) {
        if (s->m) atomic_fetch_add(&s->m->cancelled, 1);
        req_fail(r, 499, "server_error", "cancelled", "the client went away");
    } else {
        req_fail(r, status, "server_error", code, msg);
    }
    req_unref(r);
}

static void expire_queue(struct sched *s)
{
    struct req *out[64];
    uint64_t now = bt_now_ns();
    int n;
    while ((n = queue_take_if(&s->q, expired_or_cancelled, &now, out, 64)) > 0) {
        for (int i = 0; i < n; i++) {
            if (!atomic_load(&out[i]->cancel) && s->m) atomic_fetch_add(&s->m->timed_out, 1);
            fail_queued(s, out[i], 503, "timeout",
                        "The request timed out while waiting for a free slot.");
        }
        if (n < 64) break;
    }
}

/* Is choice 0 of r past its prompt (its blocks cached for the other choices), or gone? */
static bool prompt_done(const struct sched *s, const struct req *r)
{
    for (int i = 0; i < s->n_slots; i++)
        if (s->slots[i].r == r && s->slots[i].choice == 0) return !s->slots[i].prefill;
    return true;
}

/* Is a running slot still reading a prompt that shares whole blocks with r's beyond what it has
 * read so far? r would compute those positions again beside it (many chat clients arriving with
 * one system prompt): waiting until they are computed lets r take them from the prefix cache,
 * and on a CPU that is busy anyway r is not served later for it. Only between requests that use
 * the cache. */
static bool shares_unread_prefix(const struct sched *s, const struct req *r)
{
    if (!r->cache_prompt) return false;
    for (int i = 0; i < s->n_slots; i++) {
        const struct slot *sl = &s->slots[i];
        if (!sl->r || sl->r == r || !sl->prefill || !sl->r->cache_prompt) continue;
        const struct req *o = sl->r;
        const int n = r->n_prompt - 1 < o->n_prompt ? r->n_prompt - 1 : o->n_prompt;
        int common = 0;
        while (common < n && r->prompt[common] == o->prompt[common]) common++;
        if (common / KV_BLOCK > sl->n_fed / KV_BLOCK) return true;
    }
    return false;
}

/* Begin the next choice of the queue's oldest request in slot sl: its KV blocks (the prefix
 * cache's hit mapped, the rest reserved). Choices after the first wait until the first has read
 * the prompt, then take it from the cache (only its last token is computed again); any request
 * waits while another is reading a prefix it shares (shares_unread_prefix). false when it has to
 * wait (it stays first in the queue); the request leaves the queue with its last choice. */
static bool begin_oldest(struct sched *s, struct slot *sl)
{
    char err[256];
    int n_cached = 0;
    struct req *r = queue_peek(&s->q);
    if (r && r->n_admitted > 0 && req_is_done(r)) { /* failed after some choices began */
        req_unref(queue_pop(&s->q));
        return true;
    }
    if (!r || (r->n_admitted > 0 && !prompt_done(s, r)) || shares_unread_prefix(s, r)) return false;
    int64_t total = (int64_t)r->n_prompt + (r->max_tokens > 0 ? r->max_tokens : 1);
    if (total > s->info.n_ctx) total = s->info.n_ctx;
    int rc = s->eng.ops->seq_begin
                 ? s->eng.ops->seq_begin(s->eng.self, sl->id, r->prompt, r->n_prompt, (int)total,
                                         r->cache_prompt, &n_cached, err, sizeof(err))
                 : BT_OK;
    if (rc == BT_EFULL) return false; /* blocks come free as running requests end */
    if (rc < 0) {
        bt_warn("request %s: %s", r->id, err);
        req_fail(r, 503, "server_error", "kv_cache_full",
                 "The request needs more KV cache than the server has.");
        if (r->n_admitted == 0) req_unref(queue_pop(&s->q)); /* else sweep ends its choices */
        return true;
    }
    const int k = r->n_admitted++;
    if (r->n_admitted == r->n_choices)
        queue_pop(&s->q); /* the same one (only this thread takes requests out): its reference
                           * becomes the last choice's */
    else
        req_ref(r);
    slot_clear(sl);
    sl->r = r;
    sl->choice = k;
    sl->sp = r->sp;
    sl->sp.seed += (uint64_t)k;
    sl->prefill = true;
    sl->fresh = true;
    sl->n_fed = sl->n_past = n_cached;
    sl->order = ++s->order;
    tok_stream_init(&sl->ts, s->tok);
    if (k == 0) req_set_running(r, n_cached);
    atomic_fetch_add(&s->busy, 1);
    return true;
}

static void admit(struct sched *s)
{
    for (int i = 0; i < s->n_slots; i++)
        if (!s->slots[i].r && !begin_oldest(s, &s->slots[i])) return;
}

static void sweep(struct sched *s)
{
    uint64_t now = bt_now_ns();
    for (int i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (!sl->r || sl->inflight) continue;
        struct req *r = sl->r;
        if (req_client_gone(r)) {
            if (s->m && sl->choice == 0) atomic_fetch_add(&s->m->cancelled, 1);
            bt_debug("request %s: cancelled after %d tokens", r->id, sl->n_gen);
            slot_end(s, sl, NULL, 499, "server_error", "cancelled", "the client went away");
        } else if (req_is_done(r)) { /* failed in another choice's slot */
            slot_end(s, sl, NULL, 500, NULL, NULL, NULL);
        } else if (r->deadline_ns && now >= r->deadline_ns) {
            if (s->m) atomic_fetch_add(&s->m->timed_out, 1);
            if (sl->n_gen > 0)
                slot_finish(s, sl, "length");
            else
                slot_end(s, sl, NULL, 503, "server_error", "timeout",
                         "The request timed out before producing any token.");
        }
    }
}

/* Build and submit one micro-batch from slots not in flight; returns its item count. */
static int submit_batch(struct sched *s)
{
    struct flight *f = &s->fl[(s->fl_head + s->fl_len) % s->n_fl];
    int n = 0, budget;
    char err[256];
    /* with several micro-batches in flight (a pipeline), the decoding slots are spread over
     * them so that every stage has work: at most ceil(decoding / n_fl) per batch */
    int n_dec = 0;
    for (int i = 0; i < s->n_slots; i++) n_dec += s->slots[i].r && !s->slots[i].prefill;
    const int cap = (n_dec + s->n_fl - 1) / s->n_fl;
    for (int i = 0; i < s->n_slots && n < cap; i++) {
        struct slot *sl = &s->slots[i];
        if (!sl->r || sl->inflight || sl->prefill) continue;
        f->items[n] = (struct eng_item){
            .seq = sl->id, .pos = sl->n_past, .n_tokens = 1, .tokens = &sl->next, .sample = true};
        f->slot[n++] = i;
    }
    /* the prompt tokens of this batch: a chunk, within the engine's micro-batch */
    budget =
        s->info.max_batch - n < s->c.prefill_chunk ? s->info.max_batch - n : s->c.prefill_chunk;
    while (budget > 0) {
        struct slot *best = NULL;
        for (int i = 0; i < s->n_slots; i++) {
            struct slot *sl = &s->slots[i];
            bool taken = false;
            for (int k = 0; k < n; k++) taken |= f->slot[k] == i;
            if (!sl->r || sl->inflight || !sl->prefill || taken) continue;
            if (!best || sl->order < best->order) best = sl;
        }
        if (!best) break;
        struct req *r = best->r;
        int k = r->n_prompt - best->n_fed;
        if (k > budget) k = budget;
        f->items[n] = (struct eng_item){.seq = best->id,
                                        .pos = best->n_past,
                                        .n_tokens = k,
                                        .tokens = r->prompt + best->n_fed,
                                        .reset = best->fresh,
                                        .sample = best->n_fed + k == r->n_prompt,
                                        .prompt = true,
                                        .sp = &best->sp};
        f->slot[n++] = best->id;
        budget -= k;
    }
    if (!n) return 0;
    int rc = s->eng.ops->submit(s->eng.self, f->items, n, err, sizeof(err));
    struct eng_fault ef;
    if (rc < 0 && s->eng.ops->fault && s->eng.ops->fault(s->eng.self, &ef))
        return -1; /* check_fault answers these requests */
    if (rc < 0) {
        bt_error("engine: %s", err);
        for (int i = 0; i < n; i++)
            slot_end(s, &s->slots[f->slot[i]], NULL, 500, "server_error", "engine_error", err);
        return -1;
    }
    f->n = n;
    for (int i = 0; i < n; i++) {
        s->slots[f->slot[i]].inflight = true;
        s->slots[f->slot[i]].fresh = false;
    }
    s->fl_len++;
    return n;
}

/* Collect the oldest batch in flight and act on its results. */
static void collect_batch(struct sched *s)
{
    struct flight *f = &s->fl[s->fl_head];
    char err[256];
    int rc = s->eng.ops->collect(s->eng.self, f->res, f->n, 1000, err, sizeof(err));
    if (rc == BT_ETIMEOUT) return;
    s->fl_head = (s->fl_head + 1) % s->n_fl;
    s->fl_len--;
    struct eng_fault ef;
    if (rc < 0 && s->eng.ops->fault && s->eng.ops->fault(s->eng.self, &ef)) {
        for (int i = 0; i < f->n; i++) s->slots[f->slot[i]].inflight = false;
        return; /* check_fault answers these requests */
    }
    for (int i = 0; i < f->n; i++) {
        struct slot *sl = &s->slots[f->slot[i]];
        const struct eng_item *it = &f->items[i];
        sl->inflight = false;
        if (!sl->r) continue;
        if (rc < 0) {
            slot_end(s, sl, NULL, 500, "server_error", "engine_error", err);
            continue;
        }
        sl->n_past += it->n_tokens;
        if (sl->prefill) {
            sl->n_fed += it->n_tokens;
            if (s->m) metrics_tokens(s->m, (uint64_t)it->n_tokens, 0);
            if (sl->n_fed >= sl->r->n_prompt) sl->prefill = false;
        }
        if (it->sample) slot_token(s, sl, &f->res[i]);
    }
    if (rc < 0) bt_error("engine: %s", err);
}

static void fail_all(struct sched *s, const char *msg)
{
    struct req *r;
    for (int i = 0; s->slots && i < s->n_slots; i++)
        if (s->slots[i].r) slot_end(s, &s->slots[i], NULL, 503, "server_error", "unavailable", msg);
    while ((r = queue_pop(&s->q))) fail_queued(s, r, 503, "unavailable", msg);
}

/* Did the engine fail for good? Then (once) answer every request in flight and queued with 503
 * naming the fault, count it, and enter SCHED_FAULTED; true from then on. */
static bool check_fault(struct sched *s)
{
    struct eng_fault f;
    if (sched_state(s) == SCHED_FAULTED) return true;
    memset(&f, 0, sizeof(f));
    if (!s->eng.ops->fault || !s->eng.ops->fault(s->eng.self, &f)) return false;
    /* the engine fails what it still holds at once: take those batches back first */
    while (s->fl_len > 0) {
        struct flight *fl = &s->fl[s->fl_head];
        char e2[64];
        if (s->eng.ops->collect(s->eng.self, fl->res, fl->n, 0, e2, sizeof(e2)) == BT_ETIMEOUT)
            break;
        for (int i = 0; i < fl->n; i++) s->slots[fl->slot[i]].inflight = false;
        s->fl_head = (s->fl_head + 1) % s->n_fl;
        s->fl_len--;
    }
    char msg[640];
    snprintf(msg, sizeof(msg),
             "The model pipeline failed (%s): %s. The server restarts itself; retry shortly.",
             f.kind ? f.kind : "fault", f.message);
    bt_error("fault (%s): %s: failing every request with 503", f.kind ? f.kind : "?", f.message);
    if (s->m) metrics_fault(s->m, f.kind);
    refresh_ranks(s);
    pthread_mutex_lock(&s->st_mu);
    s->fault = f;
    snprintf(s->message, sizeof(s->message), "%.511s", f.message);
    pthread_mutex_unlock(&s->st_mu);
    set_state(s, SCHED_FAULTED); /* before failing: no request is queued after this */
    struct req *r;
    for (int i = 0; s->slots && i < s->n_slots; i++)
        if (s->slots[i].r)
            slot_end(s, &s->slots[i], NULL, 503, "server_error", "pipeline_fault", msg);
    while ((r = queue_pop(&s->q))) fail_queued(s, r, 503, "pipeline_fault", msg);
    return true;
}

static void *sched_main(void *arg)
{
    struct sched *s = arg;
    char err[512] = "";
    int rc = sched_load(s, err, sizeof(err));
    if (rc < 0) {
        bt_error("loading failed: %s", err);
        int code = s->eng.ops->exit_code ? s->eng.ops->exit_code(s->eng.self) : BT_EXIT_CONFIG;
        pthread_mutex_lock(&s->st_mu);
        snprintf(s->message, sizeof(s->message), "%s", err);
        s->exit_code = code;
        for (int i = 0; i < s->n_ranks; i++)
            if (s->ranks[i].state == ENG_RANK_LOADING) s->ranks[i].state = ENG_RANK_FAILED;
        pthread_mutex_unlock(&s->st_mu);
        set_state(s, SCHED_FAILED);
        while (!atomic_load(&s->stop)) {
            fail_all(s, "The model failed to load.");
            queue_wait(&s->q, bt_now_ns() + 1000000000u);
        }
        fail_all(s, "The model failed to load.");
        return NULL;
    }
    refresh_ranks(s);
    s->startup_s = (double)(bt_now_ns() - s->c.t_start_ns) * 1e-9;
    bt_info("ready: %d slots, %d tokens of context each, prefill chunk %d (%.1f s after the "
            "start)",
            s->n_slots, s->info.n_ctx, s->c.prefill_chunk, s->startup_s);
    set_state(s, SCHED_READY);

    const uint64_t tick_ns =
        (uint64_t)(s->info.tick_ms > 0 && s->info.tick_ms < 1000 ? s->info.tick_ms : 1000) *
        1000000u;
    while (!atomic_load(&s->stop)) {
        atomic_store(&s->loop_ns, bt_now_ns());
        if (check_fault(s)) {
            /* a request that raced with the state change: answer it too */
            struct req *r;
            while ((r = queue_pop(&s->q)))
                fail_queued(s, r, 503, "pipeline_fault",
                            "The model pipeline failed; retry shortly.");
            queue_wait(&s->q, bt_now_ns() + 100000000u);
            continue;
        }
        expire_queue(s);
        admit(s);
        sweep(s);
        while (s->fl_len < s->n_fl && submit_batch(s) > 0) {
        }
        if (s->fl_len == 0) {
            if (!atomic_load(&s->busy)) queue_wait(&s->q, bt_now_ns() + tick_ns);
            refresh_ranks(s); /* also lets a pipeline engine send its heartbeats while idle */
            continue;
        }
        collect_batch(s);
        refresh_ranks(s);
        if (s->c.test_step_delay_ms > 0) sleep_ms(s->c.test_step_delay_ms);
    }
    /* drain what is in flight so no slot is left half-way, then answer everyone */
    while (s->fl_len > 0) {
        struct flight *f = &s->fl[s->fl_head];
        char e2[64];
        if (s->eng.ops->collect(s->eng.self, f->res, f->n, 1000, e2, sizeof(e2)) == BT_ETIMEOUT)
            break;
        for (int i = 0; i < f->n; i++) s->slots[f->slot[i]].inflight = false;
        s->fl_head = (s->fl_head + 1) % s->n_fl;
        s->fl_len--;
    }
    fail_all(s, "The server is shutting down.");
    return NULL;
}

/* ---- any thread ---- */

int sched_start(struct sched *s)
{
    if (pthread_create(&s->th, NULL, sched_main, s) != 0) return BT_ERR;
    s->started = true;
    return BT_OK;
}

void sched_stop(struct sched *s)
{
    if (!s || !s->started) return;
    atomic_store(&s->stop, true);
    queue_close(&s->q);
    pthread_join(s->th, NULL);
    s->started = false;
    set_state(s, SCHED_STOPPED);
}

void sched_free(struct sched *s)
{
    if (!s) return;
    sched_stop(s);
    if (s->eng.ops && s->eng.ops->destroy) s->eng.ops->destroy(s->eng.self);
    queue_destroy(&s->q);
    for (int i = 0; s->slots && i < s->n_slots; i++) {
        free(s->slots[i].pend);
        free(s->slots[i].plp);
    }
    free(s->slots);
    for (int i = 0; i < MAX_INFLIGHT; i++) {
        free(s->fl[i].items);
        free(s->fl[i].slot);
        free(s->fl[i].res);
    }
    free(s->piece);
    free(s->chat_src);
    tok_free(s->tok);
    gguf_close(s->g);
    pthread_cond_destroy(&s->st_cv);
    pthread_mutex_destroy(&s->st_mu);
    free(s);
}

int sched_state(struct sched *s)
{
    return atomic_load_explicit(&s->state, memory_order_acquire);
}

const struct sched_model *sched_model(struct sched *s)
{
    int st = sched_state(s);
    return st == SCHED_READY || st == SCHED_FAULTED ? &s->model : NULL;
}

int sched_wait_loaded(struct sched *s, int timeout_ms)
{
    uint64_t dl = bt_now_ns() + (uint64_t)timeout_ms * 1000000u;
    pthread_mutex_lock(&s->st_mu);
    while (atomic_load(&s->state) == SCHED_LOADING) {
        struct timespec ts = {.tv_sec = (time_t)(dl / 1000000000u),
                              .tv_nsec = (long)(dl % 1000000000u)};
        if (pthread_cond_timedwait(&s->st_cv, &s->st_mu, &ts) != 0) break;
    }
    int st = atomic_load(&s->state);
    pthread_mutex_unlock(&s->st_mu);
    return st;
}

uint64_t sched_loop_ns(struct sched *s)
{
    return atomic_load(&s->loop_ns);
}

void sched_stats(struct sched *s, struct sched_stats *st, struct eng_rank *ranks, int cap)
{
    memset(st, 0, sizeof(*st));
    st->state = sched_state(s);
    st->queue_depth = queue_len(&s->q);
    st->slots_busy = atomic_load(&s->busy);
    st->slots_total = s->c.n_slots;
    pthread_mutex_lock(&s->st_mu);
    st->n_ranks = ranks && s->n_ranks > cap ? cap : ranks ? s->n_ranks : 0;
    if (st->n_ranks) memcpy(ranks, s->ranks, sizeof(ranks[0]) * (size_t)st->n_ranks);
    snprintf(st->message, sizeof(st->message), "%s", s->message);
    st->cache = s->cache;
    st->fault_rank = -1;
    if (st->state == SCHED_FAULTED) {
        st->fault_rank = s->fault.rank;
        snprintf(st->fault_host, sizeof(st->fault_host), "%s", s->fault.host);
        st->fault_kind = s->fault.kind;
    }
    pthread_mutex_unlock(&s->st_mu);
}

int sched_exit_code(struct sched *s)
{
    pthread_mutex_lock(&s->st_mu);
    int code = s->exit_code;
    pthread_mutex_unlock(&s->st_mu);
    return code;
}

int sched_retry_after(struct sched *s)
{
    if (sched_state(s) != SCHED_FAULTED) return 1; /* acquire: startup_s was written before */
    double est = s->startup_s + 1.5;
    if (!(est < 120.0)) return 120;
    int sec = (int)est;
    if ((double)sec < est) sec++;
    return sec < 2 ? 2 : sec;
}

void sched_drain(struct sched *s)
{
    atomic_store(&s->draining, true);
}

int sched_submit(struct sched *s, struct req *r)
{
    if (sched_state(s) != SCHED_READY || atomic_load(&s->draining)) return BT_EUNSUP;
    if (s->c.request_timeout_s > 0)
        r->deadline_ns = r->t_arrive_ns + (uint64_t)s->c.request_timeout_s * 1000000000u;
    int rc = queue_push(&s->q, r);
    if (rc == BT_EFULL && s->m) atomic_fetch_add(&s->m->rejected_full, 1);
    return rc;
}
