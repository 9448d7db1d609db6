#include "metrics.h"

#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int codes[METRICS_N_CODES] = {200, 400, 401, 404, 405, 413,
                                           429, 500, 503, 408, 499, 504};
static const double buckets_ttft[METRICS_N_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                       1,     2.5,  5,     10,   30,  60,   120};
static const double buckets_latency[METRICS_N_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                          2.5,  5,     10,   30,  60,   120, 300};
static const char *route_names[MR_COUNT] = {
    "/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics",
    "/tokenize",       "/detokenize",          "/",          "other"};

const char *metrics_route_name(int route)
{
    return route >= 0 && route < MR_COUNT ? route_names[route] : "other";
}

void metrics_init(struct metrics *m)
{
    memset(m, 0, sizeof(*m));
}

void metrics_request(struct metrics *m, int route, int status)
{
    int k = METRICS_N_CODES;
    if (route < 0 || route >= MR_COUNT) route = MR_OTHER;
    for (int i = 0; i < METRICS_N_CODES; i++)
        if (codes[i] == status) k = i;
    atomic_fetch_add(&m->requests[route][k], 1);
}

static const char *const fault_kinds[METRICS_N_FAULTS] = {"heartbeat", "step_timeout", "rank_exit",
                                                          "transport"};

void metrics_fault(struct metrics *m, const char *kind)
{
    int k = METRICS_N_FAULTS - 1;
    for (int i = 0; kind && i < METRICS_N_FAULTS; i++)
        if (!strcmp(kind, fault_kinds[i])) k = i;
    atomic_fetch_add(&m->faults[k], 1);
}

void metrics_tokens(struct metrics *m, uint64_t prompt, uint64_t generated)
{
    if (prompt) atomic_fetch_add(&m->prompt_tokens, prompt);
    if (generated) atomic_fetch_add(&m->generated_tokens, generated);
}

static void hist_add(struct metrics_hist *h, const double *b, double s)
{
    int i = 0;
    if (!(s >= 0)) s = 0;
    while (i < METRICS_N_BUCKETS && s > b[i]) i++;
    atomic_fetch_add(&h->bucket[i], 1);
    atomic_fetch_add(&h->sum_us, (uint64_t)(s * 1e6 + 0.5));
    atomic_fetch_add(&h->count, 1);
}

void metrics_ttft(struct metrics *m, double seconds)
{
    hist_add(&m->ttft, buckets_ttft, seconds);
}

void metrics_latency(struct metrics *m, double seconds)
{
    hist_add(&m->latency, buckets_latency, seconds);
}

/* A growing text buffer. */
struct sbuf {
    char *p;
    size_t len, cap;
    int err;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    if (b->err) return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->err = BT_ERR;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + (size_t)n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->err = BT_ENOMEM;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void hist_render(struct sbuf *b, const char *name, const char *help, struct metrics_hist *h,
                        const double *bounds)
{
    uint64_t cum = 0;
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; i <= METRICS_N_BUCKETS; i++) {
        cum += atomic_load(&h->bucket[i]);
        if (i < METRICS_N_BUCKETS)
            sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], (unsigned long long)cum);
        else
            sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    sb_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, (double)atomic_load(&h->sum_us) * 1e-6, name,
              (unsigned long long)cum);
}

int metrics_render(struct metrics *m, const struct metrics_gauges *g, char **out)
{
    struct sbuf b = {0};
    *out = NULL;
    sb_printf(&b, "# HELP baton_http_requests_total HTTP requests answered, by route and status "
                  "code.\n# TYPE baton_http_requests_total counter\n");
    for (int r = 0; r < MR_COUNT; r++)
        for (int k = 0; k <= METRICS_N_CODES; k++) {
            uint64_t v = atomic_load(&m->requests[r][k]);
            if (!v) continue;
            if (k < METRICS_N_CODES)
                sb_printf(&b, "baton_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
                          route_names[r], codes[k], (unsigned long long)v);
            else
                sb_printf(&b, "baton_http_requests_total{route=\"%s\",code=\"other\"} %llu\n",
                          route_names[r], (unsigned long long)v);
        }
    sb_printf(&b,
              "# HELP baton_prompt_tokens_total Prompt tokens processed.\n"
              "# TYPE baton_prompt_tokens_total counter\nbaton_prompt_tokens_total %llu\n",
              (unsigned long long)atomic_load(&m->prompt_tokens));
    sb_printf(&b,
              "# HELP baton_generated_tokens_total Tokens generated.\n"
              "# TYPE baton_generated_tokens_total counter\nbaton_generated_tokens_total %llu\n",
              (unsigned long long)atomic_load(&m->generated_tokens));
    sb_printf(&b,
              "# HELP baton_requests_cancelled_total Requests cancelled because the client "
              "went away.\n# TYPE baton_requests_cancelled_total counter\n"
              "baton_requests_cancelled_total %llu\n",
              (unsigned long long)atomic_load(&m->cancelled));
    sb_printf(&b,
              "# HELP baton_requests_timed_out_total Requests ended by the request timeout.\n"
              "# TYPE baton_requests_timed_out_total counter\n"
              "baton_requests_timed_out_total %llu\n",
              (unsigned long long)atomic_load(&m->timed_out));
    sb_printf(&b,
              "# HELP baton_requests_rejected_total Requests refused because the queue was "
              "full.\n# TYPE baton_requests_rejected_total counter\n"
              "baton_requests_rejected_total %llu\n",
              (unsigned long long)atomic_load(&m->rejected_full));
    if (g->cache) {
        const struct blk_stats *c = g->cache;
        sb_printf(&b,
                  "# HELP baton_prefix_cache_lookups_total Requests whose prompt was looked up in "
                  "the prefix cache.\n# TYPE baton_prefix_cache_lookups_total counter\n"
                  "baton_prefix_cache_lookups_total %llu\n"
                  "# HELP baton_prefix_cache_hit_tokens_total Prompt tokens taken from the prefix "
                  "cache instead of computed.\n# TYPE baton_prefix_cache_hit_tokens_total counter\n"
                  "baton_prefix_cache_hit_tokens_total %llu\n"
                  "# HELP baton_kv_evictions_total Cached KV blocks given to new contents.\n"
                  "# TYPE baton_kv_evictions_total counter\nbaton_kv_evictions_total %llu\n",
                  (unsigned long long)c->lookups, (unsigned long long)c->hit_tokens,
                  (unsigned long long)c->evictions);
        sb_printf(&b,
                  "# HELP baton_kv_blocks KV cache blocks by state: used (by running requests), "
                  "cached (kept for the prefix cache, evictable), free.\n"
                  "# TYPE baton_kv_blocks gauge\nbaton_kv_blocks{state=\"used\"} %d\n"
                  "baton_kv_blocks{state=\"cached\"} %d\nbaton_kv_blocks{state=\"free\"} %d\n"
                  "# HELP baton_kv_blocks_reserved KV blocks promised to running requests, not "
                  "yet filled.\n# TYPE baton_kv_blocks_reserved gauge\n"
                  "baton_kv_blocks_reserved %d\n",
                  c->used, c->cached, c->free, c->reserved);
    }
    sb_printf(&b, "# HELP baton_faults_total Faults of the pipeline (each ends the job for a "
                  "restart), by kind.\n# TYPE baton_faults_total counter\n");
    for (int i = 0; i < METRICS_N_FAULTS; i++)
        sb_printf(&b, "baton_faults_total{kind=\"%s\"} %llu\n", fault_kinds[i],
                  (unsigned long long)atomic_load(&m->faults[i]));
    hist_render(&b, "baton_time_to_first_token_seconds",
                "Time from a request's arrival to its first generated token.", &m->ttft,
                buckets_ttft);
    hist_render(&b, "baton_request_duration_seconds",
                "Time from a request's arrival to its last token.", &m->latency, buckets_latency);
    sb_printf(&b,
              "# HELP baton_loading 1 while the model is loading.\n# TYPE baton_loading gauge\n"
              "baton_loading %d\n",
              g->loading);
    sb_printf(&b,
              "# HELP baton_queue_depth Requests waiting for a slot.\n"
              "# TYPE baton_queue_depth gauge\nbaton_queue_depth %d\n",
              g->queue_depth);
    sb_printf(&b,
              "# HELP baton_slots_busy Slots running a request.\n"
              "# TYPE baton_slots_busy gauge\nbaton_slots_busy %d\n",
              g->slots_busy);
    sb_printf(&b,
              "# HELP baton_slots Slots (parallel sequences).\n"
              "# TYPE baton_slots gauge\nbaton_slots %d\n",
              g->slots_total);
    sb_printf(&b, "# HELP baton_rank_step_seconds Wall time of each rank's last step.\n"
                  "# TYPE baton_rank_step_seconds gauge\n");
    for (int i = 0; i < g->n_ranks; i++)
        if (g->ranks[i].step_ms >= 0)
            sb_printf(&b, "baton_rank_step_seconds{rank=\"%d\"} %.6f\n", g->ranks[i].rank,
                      g->ranks[i].step_ms * 1e-3);
    sb_printf(&b, "# HELP baton_rank_heartbeat_age_seconds Time since each rank's last sign of "
                  "life.\n# TYPE baton_rank_heartbeat_age_seconds gauge\n");
    for (int i = 0; i < g->n_ranks; i++)
        if (g->ranks[i].heartbeat_age_ms >= 0)
            sb_printf(&b, "baton_rank_heartbeat_age_seconds{rank=\"%d\"} %.6f\n", g->ranks[i].rank,
                      g->ranks[i].heartbeat_age_ms * 1e-3);
    sb_printf(&b, "# HELP baton_rank_up 1 if the rank is loaded and answering.\n"
                  "# TYPE baton_rank_up gauge\n");
    for (int i = 0; i < g->n_ranks; i++)
        sb_printf(&b, "baton_rank_up{rank=\"%d\"} %d\n", g->ranks[i].rank,
                  g->ranks[i].state == ENG_RANK_READY);
    if (g->hosts_known)
        sb_printf(&b,
                  "# HELP baton_hosts_in_service Hosts the job runs on (spares standing in "
                  "included).\n# TYPE baton_hosts_in_service gauge\nbaton_hosts_in_service %d\n"
                  "# HELP baton_hosts_evicted Hosts evicted after repeated failures.\n"
                  "# TYPE baton_hosts_evicted gauge\nbaton_hosts_evicted %d\n"
                  "# HELP baton_hosts_spare Spare hosts standing by.\n"
                  "# TYPE baton_hosts_spare gauge\nbaton_hosts_spare %d\n",
                  g->hosts_in_service, g->hosts_evicted, g->hosts_spare);
    if (b.err) {
        free(b.p);
        return b.err;
    }
    *out = b.p;
    return BT_OK;
}
