#include "request.h"

#include "log.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int req_new(struct req **out)
{
    struct req *r = calloc(1, sizeof(*r));
    *out = NULL;
    if (!r) return BT_ENOMEM;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return BT_ERR;
    }
    atomic_init(&r->refs, 1);
    atomic_init(&r->cancel, false);
    r->n_choices = 1;
    r->client_fd = -1;
    r->n_logprobs = -1;
    r->cache_prompt = true;
    r->state = REQ_QUEUED;
    *out = r;
    return BT_OK;
}

void req_ref(struct req *r)
{
    atomic_fetch_add(&r->refs, 1);
}

void req_unref(struct req *r)
{
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1) return;
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->bias);
    free(r->prompt);
    for (int k = 0; k < REQ_MAX_CHOICES; k++) {
        free(r->ch[k].text);
        free(r->ch[k].lp);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void req_set_wake(struct req *r, void (*wake)(void *), void *arg)
{
    pthread_mutex_lock(&r->mu);
    r->wake = wake;
    r->wake_arg = arg;
    pthread_mutex_unlock(&r->mu);
}

void req_detach(struct req *r)
{
    pthread_mutex_lock(&r->mu);
    if (r->state != REQ_DONE) atomic_store(&r->cancel, true);
    r->wake = NULL;
    r->wake_arg = NULL;
    r->armed = false;
    pthread_mutex_unlock(&r->mu);
}

/* Under mu. */
static void wake_locked(struct req *r)
{
    if (r->armed && r->wake) {
        r->armed = false;
        r->wake(r->wake_arg);
    }
}

/* Under mu: is there something for req_take? */
static bool ready_locked(const struct req *r)
{
    if (r->state == REQ_DONE) return true;
    if (!r->stream) return false; /* a non-streamed request wants everything at once */
    for (int k = 0; k < r->n_choices; k++) {
        const struct req_choice *c = &r->ch[k];
        if (c->text_len || c->n_lp || (c->finish && !c->finish_taken)) return true;
    }
    return false;
}

int req_take(struct req *r, struct req_take *t, void (*suspend)(void *), void *arg)
{
    int suspended = 0;
    memset(t, 0, sizeof(*t));
    pthread_mutex_lock(&r->mu);
    if (ready_locked(r)) {
        for (int k = 0; k < r->n_choices; k++) {
            struct req_choice *c = &r->ch[k];
            struct req_take_choice *tc = &t->ch[k];
            tc->text = c->text;
            tc->text_len = c->text_len;
            tc->lp = c->lp;
            tc->n_lp = c->n_lp;
            c->text = NULL;
            c->text_len = c->text_cap = 0;
            c->lp = NULL;
            c->n_lp = c->lp_cap = 0;
            if (c->finish && !c->finish_taken) {
                tc->finish = c->finish;
                c->finish_taken = true;
            }
        }
    } else if (suspend) {
        r->armed = true;
        suspend(arg);
        suspended = 1;
    }
    t->state = r->state;
    t->n = r->n_choices;
    for (int k = 0; k < r->n_choices; k++) t->ch[k].n_gen = r->ch[k].n_gen;
    t->err_status = r->err_status;
    memcpy(t->err_type, r->err_type, sizeof(t->err_type));
    memcpy(t->err_code, r->err_code, sizeof(t->err_code));
    memcpy(t->err_msg, r->err_msg, sizeof(t->err_msg));
    t->n_prompt = r->n_prompt;
    t->n_cached = r->n_cached;
    pthread_mutex_unlock(&r->mu);
    return suspended;
}

void req_take_free(struct req_take *t)
{
    if (!t) return;
    for (int k = 0; k < REQ_MAX_CHOICES; k++) {
        free(t->ch[k].text);
        free(t->ch[k].lp);
        t->ch[k].text = NULL;
        t->ch[k].lp = NULL;
    }
}

int req_take_gen(const struct req_take *t)
{
    int n = 0;
    for (int k = 0; k < t->n; k++) n += t->ch[k].n_gen;
    return n;
}

void req_set_running(struct req *r, int n_cached)
{
    pthread_mutex_lock(&r->mu);
    if (r->state == REQ_QUEUED) {
        r->state = REQ_RUNNING;
        r->n_cached = n_cached;
    }
    pthread_mutex_unlock(&r->mu);
}

/* Append n elements of size sz to *arr (length *len, capacity *cap, at least first_cap). */
static int append(void **arr, size_t *len, size_t *cap, size_t first_cap, const void *src, size_t n,
                  size_t sz)
{
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : first_cap;
        while (c < *len + n) c *= 2;
        void *p = realloc(*arr, c * sz);
        if (!p) return BT_ENOMEM;
        *arr = p;
        *cap = c;
    }
    memcpy((char *)*arr + *len * sz, src, n * sz);
    *len += n;
    return BT_OK;
}

int req_push(struct req *r, int k, const char *text, size_t n, const struct api_lp *lp, int n_lp)
{
    int rc = BT_OK;
    pthread_mutex_lock(&r->mu);
    if (r->state == REQ_DONE || k < 0 || k >= r->n_choices) goto done;
    struct req_choice *c = &r->ch[k];
    /* text: NUL-terminated for the JSON writer */
    if (n && (rc = append((void **)&c->text, &c->text_len, &c->text_cap, 256, text, n, 1)) == 0 &&
        (rc = append((void **)&c->text, &c->text_len, &c->text_cap, 256, "", 1, 1)) == 0)
        c->text_len--;
    if (rc == 0 && n_lp) {
        size_t len = (size_t)c->n_lp, cap = (size_t)c->lp_cap;
        rc = append((void **)&c->lp, &len, &cap, 16, lp, (size_t)n_lp, sizeof(*lp));
        c->n_lp = (int)len;
        c->lp_cap = (int)cap;
    }
    if (rc == 0 && r->stream && (n || n_lp)) wake_locked(r);
done:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void req_finish(struct req *r, int k, const char *finish, int n_gen)
{
    pthread_mutex_lock(&r->mu);
    if (r->state != REQ_DONE && k >= 0 && k < r->n_choices && !r->ch[k].finish) {
        r->ch[k].finish = finish;
        r->ch[k].n_gen = n_gen;
        if (++r->n_finished == r->n_choices) r->state = REQ_DONE;
        if (r->state == REQ_DONE || r->stream) wake_locked(r);
    }
    pthread_mutex_unlock(&r->mu);
}

void req_fail(struct req *r, int http_status, const char *type, const char *code, const char *msg)
{
    pthread_mutex_lock(&r->mu);
    if (r->state != REQ_DONE) {
        r->state = REQ_DONE;
        r->err_status = http_status;
        snprintf(r->err_type, sizeof(r->err_type), "%s", type ? type : "server_error");
        snprintf(r->err_code, sizeof(r->err_code), "%s", code ? code : "");
        snprintf(r->err_msg, sizeof(r->err_msg), "%s", msg ? msg : "");
        wake_locked(r);
    }
    pthread_mutex_unlock(&r->mu);
}

bool req_is_done(struct req *r)
{
    pthread_mutex_lock(&r->mu);
    bool d = r->state == REQ_DONE;
    pthread_mutex_unlock(&r->mu);
    return d;
}

bool req_client_gone(struct req *r)
{
    if (atomic_load(&r->cancel)) return true;
    if (r->client_fd < 0) return false;
    struct pollfd p = {.fd = r->client_fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
        return false;
    atomic_store(&r->cancel, true);
    return true;
}
