/* baton-chatbench: multi-turn chat traffic against an OpenAI-compatible server (baton or
 * llama-server), the way chat clients talk: every client resends its whole conversation each
 * turn (a shared system prompt, its own user messages, the assistant's answers so far), streamed,
 * each answer a fixed number of tokens (ignore_eos), greedy.
 *
 *   baton-chatbench --port P [--host 127.0.0.1] [--clients 8] [--turns 6] [--max-tokens 32]
 *                   [--system-words 220] [--model NAME] [--json]
 *
 * Prints requests/s, tokens/s and time to first token (p50, p95) of first turns and of later
 * turns (those a prefix cache can serve: the history was sent before), plus the mean prompt
 * tokens the server says it took from its cache (usage.prompt_tokens_details.cached_tokens, when
 * it reports it). HTTP/1.1 over plain sockets, one connection per request; 127.0.0.1 by default.
 * A failed request is counted and reported; the run goes on. */
#include <cjson/cJSON.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 256
#define MAX_TURNS   64

struct opts {
    const char *host, *model;
    int port, clients, turns, max_tokens, system_words;
    bool json;
};

struct result {
    int turn;
    bool ok;
    double ttft, latency; /* seconds */
    int tokens;           /* content chunks received */
    int cached;           /* usage.prompt_tokens_details.cached_tokens, -1 unknown */
    int prompt;           /* usage.prompt_tokens, -1 unknown */
};

struct client {
    const struct opts *o;
    int id;
    const char *system;
    struct result res[MAX_TURNS];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- a growable buffer ---- */

struct buf {
    char *p;
    size_t len, cap;
};

static int buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

static void buf_drop(struct buf *b, size_t n)
{
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
    if (b->p) b->p[b->len] = 0;
}

/* ---- HTTP ---- */

static int dial(const char *host, int port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0) return -1;
    int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The state of one streamed answer as its bytes arrive. */
struct stream {
    struct buf raw;  /* bytes read, not yet parsed */
    struct buf body; /* de-chunked body, not yet split into events */
    bool headers_done, chunked, done;
    int status;
    long chunk_left; /* bytes of the current chunk still to come; -1: a size line is next */
    struct buf text; /* the assistant's text */
    int tokens, cached, prompt;
    double t_first;
};

/* One SSE event's data: content deltas and usage. */
static void on_event(struct stream *s, const char *data)
{
    if (!strcmp(data, "[DONE]")) {
        s->done = true;
        return;
    }
    cJSON *j = cJSON_Parse(data);
    if (!j) return;
    const cJSON *ch = cJSON_GetObjectItem(j, "choices");
    const cJSON *c0 = cJSON_IsArray(ch) ? cJSON_GetArrayItem(ch, 0) : NULL;
    const cJSON *d = c0 ? cJSON_GetObjectItem(c0, "delta") : NULL;
    const cJSON *ct = d ? cJSON_GetObjectItem(d, "content") : NULL;
    if (cJSON_IsString(ct) && ct->valuestring[0]) {
        if (!s->tokens) s->t_first = now_s();
        s->tokens++;
        buf_add(&s->text, ct->valuestring, strlen(ct->valuestring));
    }
    const cJSON *u = cJSON_GetObjectItem(j, "usage");
    if (cJSON_IsObject(u)) {
        const cJSON *pt = cJSON_GetObjectItem(u, "prompt_tokens");
        const cJSON *pd = cJSON_GetObjectItem(u, "prompt_tokens_details");
        const cJSON *ca = pd ? cJSON_GetObjectItem(pd, "cached_tokens") : NULL;
        if (cJSON_IsNumber(pt)) s->prompt = pt->valueint;
        if (cJSON_IsNumber(ca)) s->cached = ca->valueint;
    }
    cJSON_Delete(j);
}

static void split_events(struct stream *s)
{
    char *e;
    while ((e = strstr(s->body.p ? s->body.p : "", "\n\n"))) {
        *e = 0;
        for (char *line = s->body.p; line && *line;) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = 0;
            if (!strncmp(line, "data: ", 6)) on_event(s, line + 6);
            line = nl ? nl + 1 : NULL;
        }
        buf_drop(&s->body, (size_t)(e + 2 - s->body.p));
    }
}

/* Parse what raw holds: the header once, then the (chunked) body into events. */
static int parse(struct stream *s)
{
    if (!s->headers_done) {
        char *e = strstr(s->raw.p, "\r\n\r\n");
        if (!e) return 0;
        *e = 0;
        if (sscanf(s->raw.p, "HTTP/1.%*d %d", &s->status) != 1) return -1;
        for (char *h = s->raw.p; *h; h++) *h = (char)(*h >= 'A' && *h <= 'Z' ? *h + 32 : *h);
        s->chunked = strstr(s->raw.p, "transfer-encoding: chunked") != NULL;
        s->headers_done = true;
        s->chunk_left = -1;
        buf_drop(&s->raw, (size_t)(e + 4 - s->raw.p));
    }
    if (!s->chunked) {
        buf_add(&s->body, s->raw.p ? s->raw.p : "", s->raw.len);
        buf_drop(&s->raw, s->raw.len);
    }
    while (s->chunked && s->raw.len) {
        if (s->chunk_left < 0) {
            char *nl = strstr(s->raw.p, "\r\n");
            if (!nl) break;
            s->chunk_left = strtol(s->raw.p, NULL, 16);
            buf_drop(&s->raw, (size_t)(nl + 2 - s->raw.p));
            if (s->chunk_left == 0) {
                s->done = true;
                break;
            }
        }
        size_t k = s->raw.len < (size_t)s->chunk_left ? s->raw.len : (size_t)s->chunk_left;
        buf_add(&s->body, s->raw.p, k);
        buf_drop(&s->raw, k);
        s->chunk_left -= (long)k;
        if (s->chunk_left == 0) {
            if (s->raw.len < 2) {
                s->chunk_left = -2; /* its CRLF is still to come */
                break;
            }
            buf_drop(&s->raw, 2);
            s->chunk_left = -1;
        }
    }
    if (s->chunk_left == -2 && s->raw.len >= 2) {
        buf_drop(&s->raw, 2);
        s->chunk_left = -1;
        return parse(s);
    }
    split_events(s);
    return 0;
}

/* One streamed chat completion of messages; the answer's text into *answer (malloc'd). */
static int chat(const struct opts *o, cJSON *messages, struct result *r, char **answer)
{
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "model", o->model);
    cJSON_AddItemReferenceToObject(req, "messages", messages);
    cJSON_AddNumberToObject(req, "max_tokens", o->max_tokens);
    cJSON_AddNumberToObject(req, "temperature", 0);
    cJSON_AddBoolToObject(req, "stream", true);
    cJSON_AddBoolToObject(req, "ignore_eos", true);
    cJSON_AddBoolToObject(req, "cache_prompt", true);
    cJSON *so = cJSON_AddObjectToObject(req, "stream_options");
    cJSON_AddBoolToObject(so, "include_usage", true);
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    struct stream s = {.cached = -1, .prompt = -1};
    char head[512], rb[65536];
    int rc = -1, fd = -1;
    const double t0 = now_s();
    if (!body || (fd = dial(o->host, o->port)) < 0) goto out;
    int hn = snprintf(head, sizeof(head),
                      "POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: "
                      "application/json\r\nAccept: text/event-stream\r\nConnection: close\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      o->host, o->port, strlen(body));
    if (send_all(fd, head, (size_t)hn) < 0 || send_all(fd, body, strlen(body)) < 0) goto out;
    while (!s.done) {
        ssize_t n = recv(fd, rb, sizeof(rb), 0);
        if (n <= 0) break;
        if (buf_add(&s.raw, rb, (size_t)n) < 0 || parse(&s) < 0) goto out;
    }
    rc = s.status == 200 && s.done && s.tokens > 0 ? 0 : -1;
out:
    r->latency = now_s() - t0;
    r->ttft = s.tokens ? s.t_first - t0 : r->latency;
    r->tokens = s.tokens;
    r->cached = s.cached;
    r->prompt = s.prompt;
    r->ok = rc == 0;
    *answer = s.text.p ? s.text.p : strdup("");
    free(s.raw.p);
    free(s.body.p);
    free(body);
    if (fd >= 0) close(fd);
    return rc;
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    const struct opts *o = c->o;
    cJSON *msgs = cJSON_CreateArray();
    cJSON *sys = cJSON_CreateObject();
    cJSON_AddStringToObject(sys, "role", "system");
    cJSON_AddStringToObject(sys, "content", c->system);
    cJSON_AddItemToArray(msgs, sys);
    static const char *const topics[] = {"the sea",    "a small dog",  "the moon",
                                         "a red kite", "the old mill", "a brave girl",
                                         "rainy days", "the forest"};
    for (int t = 0; t < o->turns; t++) {
        char user[256];
        snprintf(user, sizeof(user), "I am reader %d. Tell me, part %d, a story about %s.", c->id,
                 t + 1, topics[(c->id + t) % 8]);
        cJSON *u = cJSON_CreateObject();
        cJSON_AddStringToObject(u, "role", "user");
        cJSON_AddStringToObject(u, "content", user);
        cJSON_AddItemToArray(msgs, u);
        char *answer = NULL;
        c->res[t].turn = t;
        chat(o, msgs, &c->res[t], &answer);
        cJSON *a = cJSON_CreateObject();
        cJSON_AddStringToObject(a, "role", "assistant");
        cJSON_AddStringToObject(a, "content", answer);
        cJSON_AddItemToArray(msgs, a);
        free(answer);
    }
    cJSON_Delete(msgs);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double p)
{
    if (n == 0) return 0;
    qsort(v, (size_t)n, sizeof(*v), cmp_d);
    int k = (int)(p * (n - 1) + 0.5);
    return v[k];
}

static int usage(void)
{
    fputs("usage: baton-chatbench --port P [--host H] [--clients N] [--turns T] [--max-tokens M]\n"
          "                       [--system-words W] [--model NAME] [--json]\n",
          stderr);
    return 2;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){"127.0.0.1", "model", 0, 8, 6, 32, 220, false};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!v) return -1;
        i++;
        if (!strcmp(a, "--host"))
            o->host = v;
        else if (!strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--port"))
            o->port = atoi(v);
        else if (!strcmp(a, "--clients"))
            o->clients = atoi(v);
        else if (!strcmp(a, "--turns"))
            o->turns = atoi(v);
        else if (!strcmp(a, "--max-tokens"))
            o->max_tokens = atoi(v);
        else if (!strcmp(a, "--system-words"))
            o->system_words = atoi(v);
        else
            return -1;
    }
    if (o->port <= 0 || o->port > 65535 || o->clients < 1 || o->clients > MAX_CLIENTS ||
        o->turns < 1 || o->turns > MAX_TURNS || o->max_tokens < 1 || o->system_words < 0)
        return -1;
    return 0;
}

/* The shared system prompt: system_words words of plain prose. */
static char *system_prompt(int words)
{
    static const char *const w[] = {
        "You",    "are",     "a",     "kind",   "storyteller", "who",   "writes",  "short",
        "simple", "stories", "for",   "young",  "children",    "about", "animals", "friends",
        "and",    "the",     "world", "around", "them",        "with",  "happy",   "endings"};
    struct buf b = {0};
    for (int i = 0; i < words; i++) {
        const char *s = w[i % (sizeof(w) / sizeof(w[0]))];
        buf_add(&b, s, strlen(s));
        buf_add(&b, i % 12 == 11 ? ". " : " ", i % 12 == 11 ? 2 : 1);
    }
    return b.p ? b.p : strdup("");
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_args(argc, argv, &o) < 0) return usage();
    char *sys = system_prompt(o.system_words);
    struct client *cl = calloc((size_t)o.clients, sizeof(*cl));
    pthread_t th[MAX_CLIENTS];
    const double t0 = now_s();
    for (int i = 0; i < o.clients; i++) {
        cl[i] = (struct client){.o = &o, .id = i, .system = sys};
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    for (int i = 0; i < o.clients; i++) pthread_join(th[i], NULL);
    const double wall = now_s() - t0;
    int n = o.clients * o.turns, ok = 0, tokens = 0, n1 = 0, nl = 0, nc = 0;
    double *ttft1 = calloc((size_t)n, sizeof(double)), *ttftl = calloc((size_t)n, sizeof(double));
    double *lat = calloc((size_t)n, sizeof(double)), cached = 0, prompt = 0;
    for (int i = 0; i < o.clients; i++)
        for (int t = 0; t < o.turns; t++) {
            const struct result *r = &cl[i].res[t];
            if (!r->ok) continue;
            lat[ok++] = r->latency;
            tokens += r->tokens;
            if (t == 0)
                ttft1[n1++] = r->ttft;
            else
                ttftl[nl++] = r->ttft;
            if (r->cached >= 0 && r->prompt > 0) {
                cached += r->cached;
                prompt += r->prompt;
                nc++;
            }
        }
    double t1_50 = pct(ttft1, n1, 0.5), t1_95 = pct(ttft1, n1, 0.95);
    double tl_50 = pct(ttftl, nl, 0.5), tl_95 = pct(ttftl, nl, 0.95), l50 = pct(lat, ok, 0.5);
    if (o.json)
        printf("{\"requests\": %d, \"ok\": %d, \"wall_s\": %.3f, \"req_per_s\": %.4f, "
               "\"tok_per_s\": %.2f, \"ttft_first_p50\": %.4f, \"ttft_first_p95\": %.4f, "
               "\"ttft_later_p50\": %.4f, \"ttft_later_p95\": %.4f, \"latency_p50\": %.4f, "
               "\"cached_share\": %.4f}\n",
               n, ok, wall, ok / wall, tokens / wall, t1_50, t1_95, tl_50, tl_95, l50,
               prompt > 0 ? cached / prompt : -1.0);
    else
        printf("%d clients x %d turns: %d of %d ok in %.2f s: %.3f req/s, %.1f tok/s\n"
               "TTFT first turn p50 %.3f s p95 %.3f s; later turns p50 %.3f s p95 %.3f s; "
               "latency p50 %.3f s; prompt tokens from the cache %.1f %%\n",
               o.clients, o.turns, ok, n, wall, ok / wall, tokens / wall, t1_50, t1_95, tl_50,
               tl_95, l50, prompt > 0 ? 100.0 * cached / prompt : -1.0);
    free(ttft1);
    free(ttftl);
    free(lat);
    free(cl);
    free(sys);
    return ok == n ? 0 : 1;
}
