#include "http.h"

#include "api.h"
#include "index_html.h"
#include "chat.h"
#include "hosts.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "scheduler.h"
#include "tokenizer.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STREAM_BLOCK    (16 * 1024)
#define RETRY_AFTER     "1"
#define REPEAT_LAST_N   64
#define MAX_DISCARD_MUL 4 /* a chunked body past max_body is read (and dropped) up to this x */

struct http {
    struct http_config c;
    atomic_int n_gen; /* connections holding a generation request not yet completed */
    struct MHD_Daemon *d;
    struct sched *s;
    struct metrics *m;
    int port;
    int64_t started; /* unix seconds */
    bool quiesced;   /* http_quiesce: not accepting any more */
};

enum method { M_GET = 1, M_POST = 2 };

struct route {
    const char *path;
    int id;     /* enum metrics_route */
    int method; /* enum method */
};

static const struct route routes[] = {
    {"/v1/completions", MR_COMPLETIONS, M_POST},
    {"/completions", MR_COMPLETIONS, M_POST},
    {"/v1/chat/completions", MR_CHAT, M_POST},
    {"/chat/completions", MR_CHAT, M_POST},
    {"/v1/models", MR_MODELS, M_GET},
    {"/models", MR_MODELS, M_GET},
    {"/health", MR_HEALTH, M_GET},
    {"/v1/health", MR_HEALTH, M_GET},
    {"/metrics", MR_METRICS, M_GET},
    {"/tokenize", MR_TOKENIZE, M_POST},
    {"/detokenize", MR_DETOKENIZE, M_POST},
    {"/", MR_INDEX, M_GET},
};

/* Per-request state: the connection's req_cls (freed in on_completed). */
struct conn {
    struct http *h;
    struct MHD_Connection *mc;
    const struct route *rt;
    char *body;
    size_t len, cap, discarded;
    bool too_big;
    bool dispatched;
    struct req *r; /* a generation request, once queued */
    /* streaming */
    bool streaming;
    char *out; /* SSE bytes ready to send */
    size_t out_len, out_off, out_cap;
    bool eos; /* everything, [DONE] included, is in out */
};

/* ---- replies ---- */

static enum MHD_Result reply(struct conn *c, int status, const char *ctype, char *body,
                             const char *hname, const char *hval)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(body ? strlen(body) : 0, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (hname) MHD_add_response_header(resp, hname, hval);
    enum MHD_Result ret = MHD_queue_response(c->mc, (unsigned)status, resp);
    MHD_destroy_response(resp);
    metrics_request(c->h->m, c->rt ? c->rt->id : MR_OTHER, status);
    return ret;
}

static enum MHD_Result reply_json(struct conn *c, int status, char *json)
{
    if (!json) return MHD_NO;
    return reply(c, status, "application/json", json, NULL, NULL);
}

static const char *error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    case 500:
        return "server_error";
    case 503:
        return "server_error";
    default:
        return "invalid_request_error";
    }
}

static enum MHD_Result reply_error(struct conn *c, int status, const char *param, const char *code,
                                   const char *msg)
{
    char *json = NULL;
    if (api_error_json(msg, error_type(status), param, code, &json) < 0) return MHD_NO;
    const char *hn = NULL, *hv = NULL;
    char retry[16];
    if (status == 429) {
        hn = MHD_HTTP_HEADER_RETRY_AFTER;
        hv = RETRY_AFTER;
    } else if (status == 503) {
        snprintf(retry, sizeof(retry), "%d", sched_retry_after(c->h->s));
        hn = MHD_HTTP_HEADER_RETRY_AFTER;
        hv = retry;
    } else if (status == 401) {
        hn = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
        hv = "Bearer";
    } else if (status == 405) {
        hn = MHD_HTTP_HEADER_ALLOW;
        hv = c->rt && c->rt->method == M_GET ? "GET, HEAD" : "POST";
    }
    return reply(c, status, "application/json", json, hn, hv);
}

static enum MHD_Result reply_unavailable(struct conn *c)
{
    int st = sched_state(c->h->s);
    const char *msg = st == SCHED_LOADING   ? "The model is loading; try again shortly."
                      : st == SCHED_FAILED  ? "The model failed to load."
                      : st == SCHED_FAULTED ? "The model pipeline failed; the server restarts "
                                              "itself: retry shortly."
                                            : "The server is shutting down.";
    return reply_error(c, 503, NULL,
                       st == SCHED_LOADING   ? "model_loading"
                       : st == SCHED_FAULTED ? "pipeline_fault"
                                             : "unavailable",
                       msg);
}

/* ---- helpers ---- */

static void random_alnum(char *out, int n)
{
    static const char al[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    unsigned char b[64];
    if (n > 64) n = 64;
    if (getrandom(b, (size_t)n, 0) != n)
        for (int i = 0; i < n; i++) b[i] = (unsigned char)(bt_now_ns() >> (i % 8));
    for (int i = 0; i < n; i++) out[i] = al[b[i] % (sizeof(al) - 1)];
    out[n] = 0;
}

static uint64_t random_seed(void)
{
    uint64_t v;
    if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) v = bt_now_ns();
    return v;
}

/* api_piece_fn over the tokenizer (control tokens rendered). */
static int piece_fn(void *ctx, int32_t id, char *buf, int cap)
{
    const struct tok *t = ctx;
    int n = tok_piece(t, id, true, buf, cap);
    return n;
}

static bool auth_ok(struct conn *c)
{
    const char *key = c->h->c.api_key;
    if (!key || !*key) return true;
    const char *v = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Authorization");
    if (!v || strncasecmp(v, "Bearer ", 7) != 0) return false;
    v += 7;
    while (*v == ' ') v++;
    size_t a = strlen(v), b = strlen(key);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < b; i++)
        diff |= (unsigned char)key[i] ^ (unsigned char)(i < a ? v[i] : 0);
    return diff == 0;
}

/* ---- streaming ---- */

static int out_append(struct conn *c, const char *a, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap < c->out_len + n) cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) return BT_ENOMEM;
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, a, n);
    c->out_len += n;
    return BT_OK;
}

/* Frame json (taken) as one SSE event. */
static int sse_event(struct conn *c, char *json)
{
    if (!json) return BT_ENOMEM;
    int rc = out_append(c, "data: ", 6);
    if (rc == 0) rc = out_append(c, json, strlen(json));
    if (rc == 0) rc = out_append(c, "\n\n", 2);
    free(json);
    return rc;
}

static void out_init(struct req *r, const struct sched_model *mdl, struct api_out *o)
{
    memset(o, 0, sizeof(*o));
    o->kind = r->kind;
    o->id = r->id;
    o->created = r->created;
    o->model = r->model;
    o->logprobs = r->n_logprobs >= 0;
    o->piece = piece_fn;
    o->piece_ctx = (void *)mdl->tok;
    o->usage_null = r->include_usage;
}

/* Turn what req_take handed over into SSE events: each choice's text (with its index), each
 * choice's finish as it ends; at the end usage and [DONE], or the error. */
static int sse_take(struct conn *c, struct req_take *t)
{
    struct req *r = c->r;
    const struct sched_model *mdl = sched_model(c->h->s);
    struct api_out o;
    char *json = NULL;
    int rc = BT_OK;
    const bool failed = t->state == REQ_DONE && t->err_status;
    if (!mdl) return BT_EINVAL;
    out_init(r, mdl, &o);
    for (int k = 0; rc == 0 && k < t->n; k++) {
        const struct req_take_choice *tc = &t->ch[k];
        o.index = k;
        o.finish = NULL;
        if (tc->text_len || tc->n_lp) {
            o.text = tc->text;
            o.text_len = tc->text_len;
            o.lp = tc->lp;
            o.n_lp = tc->n_lp;
            rc = api_stream_chunk(&o, API_CHUNK_CONTENT, &json);
            if (rc == 0) rc = sse_event(c, json);
        }
        if (rc == 0 && tc->finish && !failed) {
            o.text = NULL;
            o.text_len = 0;
            o.lp = NULL;
            o.n_lp = 0;
            o.finish = tc->finish;
            rc = api_stream_chunk(&o, API_CHUNK_FINISH, &json);
            if (rc == 0) rc = sse_event(c, json);
        }
    }
    if (rc < 0 || t->state != REQ_DONE) return rc;
    if (failed) {
        rc = api_error_json(t->err_msg, t->err_type, NULL, t->err_code[0] ? t->err_code : NULL,
                            &json);
        if (rc == 0) rc = sse_event(c, json);
    } else if (r->include_usage) {
        o.prompt_tokens = t->n_prompt;
        o.completion_tokens = req_take_gen(t);
        o.cached_tokens = t->n_cached;
        o.usage_null = false;
        rc = api_stream_chunk(&o, API_CHUNK_USAGE, &json);
        if (rc == 0) rc = sse_event(c, json);
    }
    if (rc == 0) rc = out_append(c, "data: [DONE]\n\n", 14);
    c->eos = true;
    return rc;
}

static void suspend_conn(void *arg)
{
    struct conn *c = arg;
    MHD_suspend_connection(c->mc);
}

static void resume_conn(void *arg)
{
    struct conn *c = arg;
    MHD_resume_connection(c->mc);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct conn *c = cls;
    (void)pos;
    for (;;) {
        if (c->out_off < c->out_len) {
            size_t n = c->out_len - c->out_off;
            if (n > max) n = max;
            memcpy(buf, c->out + c->out_off, n);
            c->out_off += n;
            return (ssize_t)n;
        }
        if (c->eos) return MHD_CONTENT_READER_END_OF_STREAM;
        c->out_len = c->out_off = 0;
        struct req_take t;
        if (req_take(c->r, &t, suspend_conn, c)) return 0; /* suspended until resumed */
        int rc = sse_take(c, &t);
        req_take_free(&t);
        if (rc < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

/* ---- generation ---- */

/* The whole response of a non-streamed request: every choice. */
static enum MHD_Result gen_reply(struct conn *c, const struct sched_model *mdl, struct req_take *t)
{
    struct api_out o[REQ_MAX_CHOICES];
    char *json = NULL;
    for (int k = 0; k < t->n; k++) {
        out_init(c->r, mdl, &o[k]);
        o[k].usage_null = false;
        o[k].index = k;
        o[k].text = t->ch[k].text;
        o[k].text_len = t->ch[k].text_len;
        o[k].lp = t->ch[k].lp;
        o[k].n_lp = t->ch[k].n_lp;
        o[k].finish = t->ch[k].finish;
    }
    o[0].prompt_tokens = t->n_prompt;
    o[0].completion_tokens = req_take_gen(t);
    o[0].cached_tokens = t->n_cached;
    int rc = api_gen_response_n(o, t->n, &json);
    if (rc < 0) return MHD_NO;
    return reply_json(c, 200, json);
}

/* A stream's start: the role chunk of each choice (chat), what is there already, then the
 * reader. */
static enum MHD_Result stream_start(struct conn *c, const struct sched_model *mdl,
                                    struct req_take *t)
{
    struct api_out o;
    char *json = NULL;
    int rc = BT_OK;
    out_init(c->r, mdl, &o);
    for (int k = 0; rc == 0 && c->r->kind == API_CHAT && k < t->n; k++) {
        o.index = k;
        rc = api_stream_chunk(&o, API_CHUNK_ROLE, &json);
        if (rc == 0) rc = sse_event(c, json);
    }
    if (rc == 0) rc = sse_take(c, t);
    if (rc < 0) return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, c, NULL);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    c->streaming = true;
    enum MHD_Result ret = MHD_queue_response(c->mc, 200, resp);
    MHD_destroy_response(resp);
    metrics_request(c->h->m, c->rt->id, 200);
    return ret;
}

/* The request's first answer (suspended until there is one), then the response. */
static enum MHD_Result gen_poll(struct conn *c)
{
    struct req *r = c->r;
    struct req_take t;
    if (req_take(r, &t, suspend_conn, c)) return MHD_YES;
    const struct sched_model *mdl = sched_model(c->h->s);
    enum MHD_Result ret;
    bool some = false;
    for (int k = 0; k < t.n; k++) some |= t.ch[k].text_len || t.ch[k].n_lp;
    /* an error: its status, also after some text (a non-streaming client gets no partial
     * answer: e.g. a pipeline fault is a 503 to retry, docs/faults.md) */
    if (t.state == REQ_DONE && t.err_status && (!r->stream || !some))
        ret = reply_error(c, t.err_status >= 400 && t.err_status < 600 ? t.err_status : 500, NULL,
                          t.err_code[0] ? t.err_code : NULL, t.err_msg);
    else if (!mdl)
        ret = reply_unavailable(c);
    else if (!r->stream)
        ret = gen_reply(c, mdl, &t);
    else
        ret = stream_start(c, mdl, &t);
    req_take_free(&t);
    return ret;
}

/* Prompt tokens of a parsed request into *ids / *n (malloc'd). 400 text in e on failure. */
static int gen_prompt(const struct sched_model *mdl, const struct api_gen *g, int32_t **ids, int *n,
                      struct api_error *e)
{
    char *text = NULL;
    int rc;
    *ids = NULL;
    *n = 0;
    if (g->kind == API_COMPLETION && g->prompt_ids) {
        *ids = malloc(sizeof(int32_t) * (size_t)g->n_prompt_ids);
        if (!*ids) return BT_ENOMEM;
        memcpy(*ids, g->prompt_ids, sizeof(int32_t) * (size_t)g->n_prompt_ids);
        *n = g->n_prompt_ids;
        return BT_OK;
    }
    const char *src = g->prompt;
    if (g->kind == API_CHAT) {
        struct chat_msg *msgs = calloc((size_t)g->n_msgs, sizeof(*msgs));
        if (!msgs) return BT_ENOMEM;
        for (int i = 0; i < g->n_msgs; i++) {
            msgs[i].role = !strcmp(g->msgs[i].role, "developer") ? "system" : g->msgs[i].role;
            msgs[i].content = g->msgs[i].content;
        }
        rc = chat_render(mdl->chat_family, msgs, g->n_msgs, true, mdl->bos_text, mdl->eos_text,
                         &text, e->message, sizeof(e->message));
        free(msgs);
        if (rc < 0) {
            snprintf(e->param, sizeof(e->param), "messages");
            return rc;
        }
        src = text;
    }
    size_t len = strlen(src);
    int cnt = tok_encode(mdl->tok, src, len, true, true, NULL, 0);
    if (cnt >= 0) {
        *ids = malloc(sizeof(int32_t) * (size_t)(cnt > 0 ? cnt : 1));
        if (!*ids)
            cnt = BT_ENOMEM;
        else
            cnt = tok_encode(mdl->tok, src, len, true, true, *ids, cnt);
    }
    free(text);
    if (cnt < 0) {
        free(*ids);
        *ids = NULL;
        snprintf(e->message, sizeof(e->message), "The prompt could not be tokenized.");
        return cnt;
    }
    /* a template that writes the BOS text itself: keep one BOS */
    int32_t bos = tok_bos(mdl->tok);
    if (cnt >= 2 && bos >= 0 && (*ids)[0] == bos && (*ids)[1] == bos) {
        memmove(*ids, *ids + 1, sizeof(int32_t) * (size_t)(cnt - 1));
        cnt--;
    }
    *n = cnt;
    return BT_OK;
}

/* ignore_eos: ban every end-of-generation token through the request's logit bias (an entry
 * the client gave for such a token is overridden). 400 text in e when the list gets too long. */
static int ban_eog(const struct tok *tok, struct api_gen *g, struct api_error *e)
{
    int nv = tok_n_vocab(tok);
    for (int32_t id = 0; id < nv; id++) {
        if (!tok_is_eog(tok, id)) continue;
        int k = 0;
        while (k < g->n_bias && g->bias[k].token != id) k++;
        if (k == g->n_bias) {
            if (g->n_bias >= API_MAX_BIAS) {
                snprintf(e->param, sizeof(e->param), "logit_bias");
                snprintf(e->message, sizeof(e->message),
                         "Invalid value for 'logit_bias': with 'ignore_eos' the end-of-generation "
                         "tokens are added to it, which makes more than %d entries.",
                         API_MAX_BIAS);
                return BT_EINVAL;
            }
            struct smp_bias *nb = realloc(g->bias, sizeof(*nb) * (size_t)(g->n_bias + 1));
            if (!nb) return BT_ENOMEM;
            g->bias = nb;
            g->n_bias++;
        }
        g->bias[k] = (struct smp_bias){.token = id, .bias = -100.0f};
    }
    return BT_OK;
}

static enum MHD_Result gen_start(struct conn *c)
{
    struct http *h = c->h;
    const struct sched_model *mdl = sched_model(h->s);
    struct api_gen g;
    struct api_error e;
    struct req *r = NULL;
    int32_t *ids = NULL;
    int n = 0, rc;
    char msg[512];
    int kind = c->rt->id == MR_CHAT ? API_CHAT : API_COMPLETION;

    if (!mdl) return reply_unavailable(c);
    if (api_parse_gen(kind, c->body ? c->body : "", c->len, mdl->n_vocab, &g, &e) < 0)
        return reply_error(c, 400, e.param, NULL, e.message);
    memset(&e, 0, sizeof(e));
    rc = g.ignore_eos ? ban_eog(mdl->tok, &g, &e) : BT_OK;
    if (rc == BT_OK) rc = gen_prompt(mdl, &g, &ids, &n, &e);
    if (rc == BT_ENOMEM) {
        api_gen_free(&g);
        return reply_error(c, 500, NULL, NULL, "out of memory");
    }
    if (rc < 0) {
        api_gen_free(&g);
        return reply_error(c, 400, e.param, NULL, e.message);
    }
    struct sched_stats st;
    sched_stats(h->s, &st, NULL, 0);
    if (g.n > st.slots_total) {
        snprintf(msg, sizeof(msg),
                 "Invalid value for 'n': %d choices, the server runs at most %d sequences at once "
                 "(--parallel).",
                 g.n, st.slots_total);
        free(ids);
        api_gen_free(&g);
        return reply_error(c, 400, "n", NULL, msg);
    }
    const char *pparam = kind == API_CHAT ? "messages" : "prompt";
    if (n == 0) {
        free(ids);
        api_gen_free(&g);
        return reply_error(c, 400, pparam, NULL, "The prompt is empty.");
    }
    int max_tokens = g.max_tokens >= 0 ? g.max_tokens : mdl->n_ctx - n;
    if ((int64_t)n + (max_tokens > 0 ? max_tokens : 1) > mdl->n_ctx) {
        snprintf(msg, sizeof(msg),
                 "This model's maximum context length is %d tokens. However, you requested %lld "
                 "tokens (%d in the %s, %d in the completion). Please reduce the length of the "
                 "%s or completion.",
                 mdl->n_ctx, (long long)n + (max_tokens > 0 ? max_tokens : 0), n,
                 kind == API_CHAT ? "messages" : "prompt", max_tokens > 0 ? max_tokens : 0,
                 kind == API_CHAT ? "messages" : "prompt");
        bool asked = g.max_tokens >= 0;
        free(ids);
        api_gen_free(&g);
        return reply_error(c, 400, asked ? "max_tokens" : pparam, "context_length_exceeded", msg);
    }
    if (req_new(&r) < 0) {
        free(ids);
        api_gen_free(&g);
        return reply_error(c, 500, NULL, NULL, "out of memory");
    }
    r->kind = kind;
    r->stream = g.stream;
    r->include_usage = g.stream && g.include_usage;
    r->max_tokens = max_tokens;
    r->n_logprobs = g.n_logprobs;
    r->n_choices = g.n;
    r->cache_prompt = g.cache_prompt;
    for (int i = 0; i < g.n_stop; i++) {
        r->stop[i] = g.stop[i];
        g.stop[i] = NULL;
    }
    r->n_stop = g.n_stop;
    r->bias = g.bias;
    g.bias = NULL;
    r->sp = (struct smp_params){.temp = g.temperature,
                                .top_k = g.top_k,
                                .top_p = g.top_p,
                                .min_p = g.min_p,
                                .repeat_penalty = g.repeat_penalty,
                                .penalty_last_n = REPEAT_LAST_N,
                                .presence_penalty = g.presence_penalty,
                                .frequency_penalty = g.frequency_penalty,
                                .seed = g.has_seed ? g.seed : random_seed(),
                                .bias = r->bias,
                                .n_bias = g.n_bias,
                                .n_logprobs = g.n_logprobs};
    r->prompt = ids;
    r->n_prompt = n;
    snprintf(r->id, sizeof(r->id), "%s", kind == API_CHAT ? "chatcmpl-" : "cmpl-");
    random_alnum(r->id + strlen(r->id), 24);
    snprintf(r->model, sizeof(r->model), "%s", h->c.model_name);
    r->created = (int64_t)time(NULL);
    r->t_arrive_ns = bt_now_ns();
    api_gen_free(&g);

    req_set_wake(r, resume_conn, c);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->client_fd = ci ? ci->connect_fd : -1; /* the scheduler notices a client that leaves */
    rc = sched_submit(h->s, r);
    if (rc < 0) {
        req_unref(r);
        if (rc == BT_EFULL)
            return reply_error(c, 429, NULL, "queue_full",
                               "The server is busy: too many requests are waiting. Retry later.");
        return reply_unavailable(c);
    }
    c->r = r;
    atomic_fetch_add(&h->n_gen, 1);
    bt_debug("request %s: %d prompt tokens, max_tokens %d%s", r->id, n, max_tokens,
             r->stream ? ", stream" : "");
    return gen_poll(c);
}

/* ---- other routes ---- */

static enum MHD_Result do_health(struct conn *c)
{
    struct sched_stats st;
    static const char *states[] = {"loading", "ready", "failed", "offline"};
    /* the rank tables are too large for an HTTP thread's stack */
    struct eng_rank *er = malloc(sizeof(*er) * SCHED_MAX_RANKS);
    struct api_rank *ranks = malloc(sizeof(*ranks) * SCHED_MAX_RANKS);
    if (!er || !ranks) {
        free(er);
        free(ranks);
        return reply_error(c, 500, NULL, NULL, "out of memory");
    }
    sched_stats(c->h->s, &st, er, SCHED_MAX_RANKS);
    for (int i = 0; i < st.n_ranks; i++) {
        const struct eng_rank *k = &er[i];
        ranks[i] = (struct api_rank){.rank = k->rank,
                                     .host = k->host,
                                     .layer_first = k->layer_first,
                                     .layer_last = k->layer_last,
                                     .state = k->state >= 0 && k->state <= 3 ? states[k->state]
                                                                             : "unknown",
                                     .progress = k->progress,
                                     .last_heartbeat_ms = k->heartbeat_age_ms};
    }
    const struct hosts_fleet *f = c->h->c.fleet;
    const char *status = st.state == SCHED_READY     ? "ok"
                         : st.state == SCHED_LOADING ? "loading"
                         : st.state == SCHED_FAILED  ? "error"
                         : st.state == SCHED_FAULTED ? "fault"
                                                     : "stopping";
    const char *in[HOSTS_MAX], *ev[HOSTS_MAX], *sp[HOSTS_MAX];
    struct api_hosts hosts = {.in_service = in, .evicted = ev, .spare = sp};
    char degraded[384];
    const char *message = st.message[0] ? st.message : NULL;
    if (f) {
        for (int i = 0; i < st.n_ranks; i++) ranks[i].node = hosts_fleet_rank(f, er[i].rank);
        for (int i = 0; i < f->n_in; i++) in[hosts.n_in_service++] = f->in[i];
        for (int i = 0; i < f->n_evicted; i++) ev[hosts.n_evicted++] = f->evicted[i];
        for (int i = 0; i < f->n_spare; i++) sp[hosts.n_spare++] = f->spare[i];
        hosts.resplit = f->resplit;
    }
    if (f && f->n_evicted > 0 && st.state == SCHED_READY) { /* serving, on fewer hosts */
        status = "degraded";
        snprintf(degraded, sizeof(degraded), "%d host%s evicted (%s%s); %s; %d spare%s left",
                 f->n_evicted, f->n_evicted > 1 ? "s" : "", f->evicted[0],
                 f->n_evicted > 1 ? ", ..." : "",
                 f->resplit ? "the layers are re-split over the hosts left"
                            : "spares stand in with the same layers",
                 f->n_spare, f->n_spare == 1 ? "" : "s");
        if (!message) message = degraded;
    }
    char *json = NULL;
    int rc = api_health_json(status, ranks, st.n_ranks, message, f ? &hosts : NULL, &json);
    free(ranks);
    free(er);
    if (rc < 0) return MHD_NO;
    if (st.state == SCHED_READY) return reply_json(c, 200, json);
    char retry[16];
    snprintf(retry, sizeof(retry), "%d", sched_retry_after(c->h->s));
    return reply(c, 503, "application/json", json, MHD_HTTP_HEADER_RETRY_AFTER, retry);
}

static enum MHD_Result do_metrics(struct conn *c)
{
    struct sched_stats st;
    struct metrics_gauges g;
    char *text = NULL;
    struct eng_rank *er = malloc(sizeof(*er) * SCHED_MAX_RANKS); /* too large for the stack */
    if (!er) return reply_error(c, 500, NULL, NULL, "out of memory");
    sched_stats(c->h->s, &st, er, SCHED_MAX_RANKS);
    g = (struct metrics_gauges){.queue_depth = st.queue_depth,
                                .slots_busy = st.slots_busy,
                                .slots_total = st.slots_total,
                                .n_ranks = st.n_ranks,
                                .ranks = er,
                                .loading = st.state == SCHED_LOADING,
                                .cache = &st.cache};
    if (c->h->c.fleet) {
        g.hosts_known = 1;
        g.hosts_in_service = c->h->c.fleet->n_in;
        g.hosts_evicted = c->h->c.fleet->n_evicted;
        g.hosts_spare = c->h->c.fleet->n_spare;
    }
    /* count this scrape before rendering so it shows up in itself */
    metrics_request(c->h->m, MR_METRICS, 200);
    int rc = metrics_render(c->h->m, &g, &text);
    free(er);
    if (rc < 0) return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result ret = MHD_queue_response(c->mc, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result do_models(struct conn *c)
{
    const struct sched_model *mdl = sched_model(c->h->s);
    char *json = NULL;
    if (api_models_json(c->h->c.model_name, mdl ? mdl->created : c->h->started,
                        mdl ? mdl->n_ctx : 0, mdl ? mdl->n_vocab : 0, &json) < 0)
        return MHD_NO;
    return reply_json(c, 200, json);
}

static enum MHD_Result do_tokenize(struct conn *c)
{
    const struct sched_model *mdl = sched_model(c->h->s);
    struct api_error e;
    char *content = NULL, *json = NULL;
    bool add_special, with_pieces;
    if (!mdl) return reply_unavailable(c);
    if (api_parse_tokenize(c->body ? c->body : "", c->len, &content, &add_special, &with_pieces,
                           &e) < 0)
        return reply_error(c, 400, e.param, NULL, e.message);
    size_t len = strlen(content);
    int n = tok_encode(mdl->tok, content, len, add_special, true, NULL, 0);
    int32_t *ids = n >= 0 ? malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1)) : NULL;
    if (ids) n = tok_encode(mdl->tok, content, len, add_special, true, ids, n);
    free(content);
    if (!ids || n < 0) {
        free(ids);
        return reply_error(c, 400, "content", NULL, "The content could not be tokenized.");
    }
    int rc = api_tokenize_json(ids, n, with_pieces ? piece_fn : NULL, (void *)mdl->tok, &json);
    free(ids);
    if (rc < 0) return MHD_NO;
    return reply_json(c, 200, json);
}

static enum MHD_Result do_detokenize(struct conn *c)
{
    const struct sched_model *mdl = sched_model(c->h->s);
    struct api_error e;
    int32_t *ids = NULL;
    int n = 0;
    char *json = NULL;
    if (!mdl) return reply_unavailable(c);
    if (api_parse_detokenize(c->body ? c->body : "", c->len, mdl->n_vocab, &ids, &n, &e) < 0)
        return reply_error(c, 400, e.param, NULL, e.message);
    int len = tok_decode(mdl->tok, ids, n, false, NULL, 0);
    char *text = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (text) len = tok_decode(mdl->tok, ids, n, false, text, len);
    free(ids);
    if (!text || len < 0) {
        free(text);
        return reply_error(c, 400, "tokens", NULL, "The tokens could not be decoded.");
    }
    int rc = api_detokenize_json(text, (size_t)len, &json);
    free(text);
    if (rc < 0) return MHD_NO;
    return reply_json(c, 200, json);
}

/* The chat page (server/static/index.html, embedded at build time). */
static enum MHD_Result do_index(struct conn *c)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        baton_index_html_len, (void *)baton_index_html, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(c->mc, 200, resp);
    MHD_destroy_response(resp);
    metrics_request(c->h->m, MR_INDEX, 200);
    return ret;
}

/* ---- MHD callbacks ---- */

static const struct route *find_route(const char *url)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (!strcmp(url, routes[i].path)) return &routes[i];
    return NULL;
}

static enum MHD_Result dispatch(struct conn *c)
{
    switch (c->rt->id) {
    case MR_COMPLETIONS:
    case MR_CHAT:
        return gen_start(c);
    case MR_MODELS:
        return do_models(c);
    case MR_HEALTH:
        return do_health(c);
    case MR_METRICS:
        return do_metrics(c);
    case MR_TOKENIZE:
        return do_tokenize(c);
    case MR_DETOKENIZE:
        return do_detokenize(c);
    case MR_INDEX:
        return do_index(c);
    default:
        return reply_error(c, 404, NULL, NULL, "Not found.");
    }
}

/* First call for a request: everything that can be refused before reading the body. */
static enum MHD_Result on_headers(struct conn *c, const char *url, const char *method)
{
    char msg[512];
    if (!c->rt) {
        snprintf(msg, sizeof(msg), "Invalid URL (%.16s %.256s).", method, url);
        return reply_error(c, 404, NULL, "not_found", msg);
    }
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool post = !strcmp(method, "POST");
    if ((c->rt->method == M_GET && !get) || (c->rt->method == M_POST && !post)) {
        snprintf(msg, sizeof(msg), "Method %.16s is not allowed on %s.", method, c->rt->path);
        return reply_error(c, 405, NULL, "method_not_allowed", msg);
    }
    if (c->rt->id != MR_HEALTH && c->rt->id != MR_INDEX && !auth_ok(c))
        return reply_error(c, 401, NULL, "invalid_api_key",
                           "Incorrect or missing API key: send `Authorization: Bearer KEY`.");
    const char *cl =
        MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long v = strtoull(cl, &end, 10);
        if (*end || v > c->h->c.max_body) {
            snprintf(msg, sizeof(msg), "The request body is larger than the limit of %zu bytes.",
                     c->h->c.max_body);
            return reply_error(c, 413, NULL, "request_too_large", msg);
        }
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    struct http *h = cls;
    struct conn *c = *req_cls;
    (void)version;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c) return MHD_NO;
        c->h = h;
        c->mc = mc;
        c->rt = find_route(url);
        *req_cls = c;
        return on_headers(c, url, method);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (c->too_big || c->len + n > h->c.max_body) {
            c->too_big = true;
            free(c->body);
            c->body = NULL;
            c->discarded += n;
            return c->discarded > MAX_DISCARD_MUL * h->c.max_body ? MHD_NO : MHD_YES;
        }
        if (c->len + n + 1 > c->cap) {
            size_t cap = c->cap ? c->cap : 4096;
            while (cap < c->len + n + 1) cap *= 2;
            char *p = realloc(c->body, cap);
            if (!p) return MHD_NO;
            c->body = p;
            c->cap = cap;
        }
        memcpy(c->body + c->len, upload_data, n);
        c->len += n;
        c->body[c->len] = 0;
        return MHD_YES;
    }
    if (c->too_big) {
        char msg[128];
        c->too_big = false; /* answer once */
        snprintf(msg, sizeof(msg), "The request body is larger than the limit of %zu bytes.",
                 h->c.max_body);
        return reply_error(c, 413, NULL, "request_too_large", msg);
    }
    if (!c->dispatched) {
        c->dispatched = true;
        return dispatch(c);
    }
    if (c->r && !c->streaming) return gen_poll(c); /* resumed */
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct conn *c = *req_cls;
    (void)cls;
    (void)mc;
    if (!c) return;
    if (c->r) {
        atomic_fetch_sub(&c->h->n_gen, 1);
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            bt_debug("request %s: connection ended early (%d)", c->r->id, (int)toe);
        req_detach(c->r);
        req_unref(c->r);
    }
    free(c->body);
    free(c->out);
    free(c);
    *req_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    bt_debug("http: %s", line);
}

int http_start(const struct http_config *c, struct sched *s, struct metrics *m, struct http **out,
               char *err, size_t errsz)
{
    struct sockaddr_storage ss;
    struct http *h = calloc(1, sizeof(*h));
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    *out = NULL;
    if (!h) return bt_errf(err, errsz, BT_ENOMEM, "out of memory");
    h->c = *c;
    h->s = s;
    h->m = m;
    h->started = (int64_t)time(NULL);
    memset(&ss, 0, sizeof(ss));
    if (c->listen_fd < 0) {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET, c->host, &a4->sin_addr) == 1) {
            a4->sin_family = AF_INET;
            a4->sin_port = htons((uint16_t)c->port);
        } else if (inet_pton(AF_INET6, c->host, &a6->sin6_addr) == 1) {
            a6->sin6_family = AF_INET6;
            a6->sin6_port = htons((uint16_t)c->port);
            flags |= MHD_USE_IPv6;
        } else {
            free(h);
            return bt_errf(err, errsz, BT_EINVAL,
                           "option host: '%s' is not an IPv4 or IPv6 address", c->host);
        }
    }
    if (c->listen_fd >= 0)
        h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_LISTEN_SOCKET,
                                (MHD_socket)c->listen_fd, MHD_OPTION_THREAD_POOL_SIZE,
                                (unsigned)c->n_threads, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
                                h, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
                                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h, MHD_OPTION_END);
    else
        h->d = MHD_start_daemon(
            flags, (uint16_t)c->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR,
            (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)c->n_threads,
            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_CONNECTION_TIMEOUT,
            (unsigned)300, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h, MHD_OPTION_END);
    if (!h->d) {
        free(h);
        if (c->listen_fd >= 0)
            return bt_errf(err, errsz, BT_EIO, "cannot serve HTTP on listening socket fd %d",
                           c->listen_fd);
        return bt_errf(err, errsz, BT_EIO, "cannot listen on %s:%d (in use?)", c->host, c->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : c->port;
    *out = h;
    return BT_OK;
}

void http_quiesce(struct http *h)
{
    if (!h || h->quiesced) return;
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    h->quiesced = true;
    if (fd != MHD_INVALID_SOCKET) close(fd); /* our copy: the supervisor keeps its own */
}

int http_connections(struct http *h)
{
    const union MHD_DaemonInfo *di =
        h ? MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS) : NULL;
    return di ? (int)di->num_connections : 0;
}

int http_pending(struct http *h)
{
    return h ? atomic_load(&h->n_gen) : 0;
}

int http_port(const struct http *h)
{
    return h->port;
}

void http_stop(struct http *h)
{
    if (!h) return;
    /* A listening socket handed down by the supervisor is shared with it: MHD_stop_daemon would
     * shut it down (shutdown(2) on a listening socket stops it listening for every process), so
     * the next job's clients would be refused. Quiesced, MHD lets it go; we close our copy. */
    if (h->c.listen_fd >= 0) http_quiesce(h);
    MHD_stop_daemon(h->d);
    free(h);
}
