/* http: baton-server's HTTP front (the only libmicrohttpd user).
 *
 * Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health,
 * GET /metrics, POST /tokenize, POST /detokenize. An HTTP thread reads the body (capped at
 * max_body while it is read), parses and validates it (api), renders the chat template,
 * tokenizes, checks the context, and queues the request to the scheduler, or answers at once
 * (400/401/404/405/413/429/503). Then its connection is suspended; the scheduler resumes it
 * when tokens (streams) or the end (other requests) arrive, and the connection sends an
 * OpenAI-shaped JSON response or SSE chunks from a content-reader callback that suspends itself
 * when it has nothing to send. Per-request state hangs off the connection's req_cls and is freed
 * in the completion callback, which also cancels a request whose client went away.
 *
 * Threads: an epoll thread pool (http_threads); all callbacks run on those threads, except the
 * resume function, which the scheduler thread calls (see request.h for the locking).
 * Ownership: borrows the scheduler and metrics, which must outlive http_stop. */
#ifndef BATON_HTTP_H
#define BATON_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct sched;
struct metrics;
struct http;
struct hosts_fleet;

struct http_config {
    const char *host;
    int port;      /* 0: any free port */
    int listen_fd; /* >= 0: serve on this listening socket instead of host:port */
    int n_threads;
    size_t max_body;
    const char *api_key;    /* NULL or "": none */
    const char *model_name; /* shown in /v1/models and responses */
    /* `baton serve` with --hosts: the hosts in service, evicted and spare (hosts.h; BATON_FLEET),
     * for /health and /metrics; NULL: none. Borrowed, outlives the server. */
    const struct hosts_fleet *fleet;
};

int http_start(const struct http_config *c, struct sched *s, struct metrics *m, struct http **out,
               char *err, size_t errsz);
/* The bound TCP port. */
int http_port(const struct http *h);
/* Generation requests whose response is not completely sent yet (or whose client has not gone). */
int http_pending(struct http *h);
/* Accept no new connection from now on (they stay in the listening socket's backlog); the open
 * ones are served. For the restart the supervisor asks for (lifecycle.h). */
void http_quiesce(struct http *h);
/* HTTP connections open now. */
int http_connections(struct http *h);
/* Stop serving and free (NULL is fine). Suspended connections must have been resumed (every
 * request answered: sched_stop does that). */
void http_stop(struct http *h);

#endif
