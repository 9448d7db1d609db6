/* test_metrics: counters, histograms and the Prometheus text (HELP/TYPE before samples,
 * cumulative buckets ending in +Inf, _sum and _count). */
#include "log.h"
#include "metrics.h"
#include "t.h"

static struct metrics m;

int main(void)
{
    metrics_init(&m);
    metrics_request(&m, MR_COMPLETIONS, 200);
    metrics_request(&m, MR_COMPLETIONS, 200);
    metrics_request(&m, MR_CHAT, 429);
    metrics_request(&m, MR_OTHER, 404);
    metrics_request(&m, MR_HEALTH, 418); /* unknown code: "other" */
    metrics_tokens(&m, 10, 3);
    metrics_ttft(&m, 0.004);
    metrics_ttft(&m, 0.2);
    metrics_ttft(&m, 1000);
    metrics_latency(&m, 0.5);
    struct eng_rank rk[2] = {
        {.rank = 0, .state = ENG_RANK_READY, .step_ms = 2.5, .heartbeat_age_ms = 10},
        {.rank = 1, .state = ENG_RANK_OFFLINE, .step_ms = -1, .heartbeat_age_ms = 3000}};
    struct metrics_gauges g = {
        .queue_depth = 3, .slots_busy = 2, .slots_total = 4, .n_ranks = 2, .ranks = rk};
    char *text = NULL;
    CHECK_INT(metrics_render(&m, &g, &text), 0);
    CHECK(text != NULL);
    if (!text) return t_done();
    CHECK(strstr(text, "baton_http_requests_total{route=\"/v1/completions\",code=\"200\"} 2\n"));
    CHECK(strstr(text, "baton_http_requests_total{route=\"/v1/chat/completions\",code=\"429\"} 1"));
    CHECK(strstr(text, "baton_http_requests_total{route=\"/health\",code=\"other\"} 1"));
    CHECK(strstr(text, "# TYPE baton_prompt_tokens_total counter\nbaton_prompt_tokens_total 10\n"));
    CHECK(strstr(text, "baton_generated_tokens_total 3\n"));
    CHECK(strstr(text, "baton_time_to_first_token_seconds_bucket{le=\"0.005\"} 1\n"));
    CHECK(strstr(text, "baton_time_to_first_token_seconds_bucket{le=\"0.25\"} 2\n"));
    CHECK(strstr(text, "baton_time_to_first_token_seconds_bucket{le=\"120\"} 2\n"));
    CHECK(strstr(text, "baton_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\n"));
    CHECK(strstr(text, "baton_time_to_first_token_seconds_count 3\n"));
    CHECK(strstr(text, "baton_request_duration_seconds_sum 0.500000\n"));
    CHECK(strstr(text, "baton_queue_depth 3\n"));
    CHECK(strstr(text, "baton_slots_busy 2\n"));
    CHECK(strstr(text, "baton_slots 4\n"));
    CHECK(strstr(text, "baton_rank_step_seconds{rank=\"0\"} 0.002500\n"));
    CHECK(!strstr(text, "baton_rank_step_seconds{rank=\"1\"}"));
    CHECK(strstr(text, "baton_rank_heartbeat_age_seconds{rank=\"1\"} 3.000000\n"));
    CHECK(strstr(text, "baton_rank_up{rank=\"1\"} 0\n"));
    /* every sample line's metric family was declared with TYPE before it */
    char *save, *line, *copy = strdup(text);
    char declared[64][96];
    int n_decl = 0;
    for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "# TYPE ", 7)) {
            sscanf(line + 7, "%95s", declared[n_decl < 63 ? n_decl++ : 63]);
            continue;
        }
        if (line[0] == '#') continue;
        bool ok = false;
        for (int i = 0; i < n_decl; i++)
            if (!strncmp(line, declared[i], strlen(declared[i]))) ok = true;
        CHECK(ok);
        CHECK(!strncmp(line, "baton_", 6));
    }
    free(copy);
    CHECK(!strstr(text, "baton_hosts_")); /* no fleet: no host gauges */
    free(text);
    /* `baton serve` with --hosts: hosts in service, evicted and spare */
    g.hosts_known = 1;
    g.hosts_in_service = 3;
    g.hosts_evicted = 1;
    g.hosts_spare = 0;
    CHECK_INT(metrics_render(&m, &g, &text), 0);
    CHECK(strstr(text, "# TYPE baton_hosts_in_service gauge\nbaton_hosts_in_service 3\n"));
    CHECK(strstr(text, "# TYPE baton_hosts_evicted gauge\nbaton_hosts_evicted 1\n"));
    CHECK(strstr(text, "# TYPE baton_hosts_spare gauge\nbaton_hosts_spare 0\n"));
    free(text);
    return t_done();
}
