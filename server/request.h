/* request: one generation request as it travels from an HTTP thread to the scheduler and back.
 *
 * The HTTP thread builds it (parameters, prompt tokens, n choices), hands it to the scheduler
 * (sched_submit) and then only reads what comes back through req_take. The scheduler runs each
 * choice in a slot of its own (the prompt shared through the prefix cache), appends each
 * choice's generated text and logprob entries (req_push), ends each choice once (req_finish;
 * the request is done when every choice is) or the whole request (req_fail).
 *
 * Waking the HTTP side without busy waiting: req_take, when nothing new is there, calls the
 * caller's `suspend` function under the request's lock and arms the request; the next push
 * (streams) or the end (all requests) calls `wake` (set by req_set_wake) under the same lock and
 * disarms it. So a wake is never issued before its suspend, and never after req_detach.
 *
 * Ownership: reference counted (req_new gives one reference; req_ref / req_unref). The fields
 * above `mu` are written by the HTTP thread before sched_submit and read-only afterwards; the
 * rest is protected by mu. `cancel` may be set from any thread. */
#ifndef BATON_REQUEST_H
#define BATON_REQUEST_H

#include "api.h"
#include "engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum req_state { REQ_QUEUED = 0, REQ_RUNNING = 1, REQ_DONE = 2 };

#define REQ_MAX_CHOICES 16 /* the `n` of a request, at most */

/* One choice's output, under the request's mu. */
struct req_choice {
    char *text; /* generated text not yet taken */
    size_t text_len, text_cap;
    struct api_lp *lp; /* logprob entries not yet taken */
    int n_lp, lp_cap;
    const char *finish; /* "stop" / "length" once it ended, else NULL */
    bool finish_taken;  /* req_take handed the finish over */
    int n_gen;          /* completion tokens */
};

struct req {
    /* set before sched_submit, then read-only */
    int kind; /* enum api_kind */
    bool stream, include_usage;
    int n_choices;     /* 1..REQ_MAX_CHOICES */
    int max_tokens;    /* >= 1 */
    int n_logprobs;    /* -1: none */
    bool cache_prompt; /* look the prompt up in the prefix cache (llama-server's field) */
    char *stop[API_MAX_STOP];
    int n_stop;
    struct smp_params sp; /* sp.bias points to bias; choice k samples with seed sp.seed + k */
    struct smp_bias *bias;
    int32_t *prompt;
    int n_prompt;
    char id[64];
    char model[128];
    int64_t created;      /* unix seconds */
    uint64_t t_arrive_ns; /* bt_now_ns() at arrival */
    uint64_t deadline_ns; /* 0: none */

    int client_fd;      /* the client's socket, watched for a disconnect (req_client_gone); -1 */
    atomic_bool cancel; /* the client is gone: drop at the next step */
    atomic_int refs;
    int n_admitted; /* choices given a slot so far (the scheduler thread's) */

    pthread_mutex_t mu;
    /* --- under mu --- */
    int state; /* enum req_state */
    struct req_choice ch[REQ_MAX_CHOICES];
    int n_finished; /* choices that ended */
    int err_status; /* HTTP status once done with an error, else 0 */
    char err_type[32], err_code[32], err_msg[256];
    int n_cached; /* prompt tokens taken from the prefix cache (choice 0's) */
    void (*wake)(void *arg);
    void *wake_arg;
    bool armed;
};

int req_new(struct req **out); /* one choice; the HTTP side may raise n_choices before submit */
void req_ref(struct req *r);
void req_unref(struct req *r); /* NULL is fine; frees at zero */

/* HTTP side: the function that resumes the waiting connection (called under r->mu). */
void req_set_wake(struct req *r, void (*wake)(void *), void *arg);
/* HTTP side: the client is gone. Sets cancel (if not done) and forgets the wake function. */
void req_detach(struct req *r);

/* What req_take hands over: per choice, the new text and entries (malloc'd, caller frees; may be
 * NULL) and its finish once, when it ended. */
struct req_take_choice {
    char *text;
    size_t text_len;
    struct api_lp *lp;
    int n_lp;
    const char *finish; /* set once: in the take after the choice ended */
    int n_gen;
};
struct req_take {
    int state;
    int n; /* choices */
    struct req_take_choice ch[REQ_MAX_CHOICES];
    int err_status;
    char err_type[32], err_code[32], err_msg[256];
    int n_prompt, n_cached;
};
/* Take what is new. A non-streamed request is ready when done; a streamed one when a choice has
 * new text or entries, or ended. If not ready and suspend is non-NULL, call suspend(arg) under
 * the lock and arm the wake-up; returns 1 then, else 0. */
int req_take(struct req *r, struct req_take *t, void (*suspend)(void *), void *arg);
void req_take_free(struct req_take *t);
/* Completion tokens of every choice of what was taken. */
int req_take_gen(const struct req_take *t);

/* Scheduler side. */
/* Choice k admitted into a slot; n_cached prompt tokens came from the prefix cache. */
void req_set_running(struct req *r, int n_cached);
int req_push(struct req *r, int k, const char *text, size_t n, const struct api_lp *lp, int n_lp);
/* Choice k ended; the request is done when every choice has. */
void req_finish(struct req *r, int k, const char *finish, int n_gen);
/* The whole request failed (every choice). */
void req_fail(struct req *r, int http_status, const char *type, const char *code, const char *msg);
bool req_is_done(struct req *r);
/* Has the client closed its connection? Looks at client_fd without waiting (a hang-up or an
 * error on the socket: the peer shut its side down); on true, cancel is set. Scheduler side,
 * while the request is not done (the HTTP side keeps the connection open until then). */
bool req_client_gone(struct req *r);

#endif
