/* metrics: baton-server's counters and histograms, rendered as Prometheus text exposition
 * (version 0.0.4) with the baton_ prefix.
 *
 * Counters and histograms live here (lock-free atomics: any thread may record). Gauges that
 * describe the scheduler and the ranks are passed in at render time (struct metrics_gauges).
 *
 * Ownership: a struct metrics is created by main and outlives the HTTP server and the scheduler.
 * Threads: every function is thread-safe. */
#ifndef BATON_METRICS_H
#define BATON_METRICS_H

#include "engine.h"

#include <stdatomic.h>
#include <stdint.h>

enum metrics_route {
    MR_COMPLETIONS = 0,
    MR_CHAT,
    MR_MODELS,
    MR_HEALTH,
    MR_METRICS,
    MR_TOKENIZE,
    MR_DETOKENIZE,
    MR_INDEX, /* GET /: the chat page */
    MR_OTHER,
    MR_COUNT
};

#define METRICS_N_CODES   12 /* distinct status codes tracked per route (+1 for "other") */
#define METRICS_N_BUCKETS 14
#define METRICS_N_FAULTS                                                                           \
    4 /* fault kinds (struct eng_fault): heartbeat, step_timeout, rank_exit,                       \
       * transport */

struct metrics_hist {
    atomic_uint_fast64_t bucket[METRICS_N_BUCKETS + 1]; /* last: +Inf */
    atomic_uint_fast64_t sum_us;
    atomic_uint_fast64_t count;
};

struct metrics {
    atomic_uint_fast64_t requests[MR_COUNT][METRICS_N_CODES + 1];
    atomic_uint_fast64_t prompt_tokens, generated_tokens;
    atomic_uint_fast64_t cancelled, timed_out, rejected_full;
    atomic_uint_fast64_t faults[METRICS_N_FAULTS];
    struct metrics_hist ttft, latency;
};

struct metrics_gauges {
    int queue_depth;
    int slots_busy, slots_total;
    int n_ranks;
    const struct eng_rank *ranks;
    int loading;                   /* 1 while loading */
    const struct blk_stats *cache; /* the KV blocks and the prefix cache; NULL: none */
    /* `baton serve` with --hosts (BATON_FLEET, hosts.h): hosts in service, evicted, spare */
    int hosts_known; /* 0: no such gauges */
    int hosts_in_service, hosts_evicted, hosts_spare;
};

void metrics_init(struct metrics *m);
void metrics_request(struct metrics *m, int route, int status);
void metrics_tokens(struct metrics *m, uint64_t prompt, uint64_t generated);
void metrics_ttft(struct metrics *m, double seconds);
void metrics_latency(struct metrics *m, double seconds);
/* A fault of the engine, by kind (struct eng_fault's; unknown kinds count as "transport"). */
void metrics_fault(struct metrics *m, const char *kind);
/* The exposition text, malloc'd into *out. */
int metrics_render(struct metrics *m, const struct metrics_gauges *g, char **out);

const char *metrics_route_name(int route);

#endif
