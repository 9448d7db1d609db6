#include "request.h"

#include "log.h"

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
    free(r->text);
    free(r->lp);
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

int req_take(struct req *r, struct req_take *t, void (*suspend)(void *), void *arg)
{
    int suspended = 0;
    memset(t, 0, sizeof(*t));
    pthread_mutex_lock(&r->mu);
    /* a non-streamed request wants everything at once */
    bool ready = r->state == REQ_DONE || (r->stream && (r->text_len || r->n_lp));
    if (ready) {
        t->text = r->text;
        t->text_len = r->text_len;
        t->lp = r->lp;
        t->n_lp = r->n_lp;
        r->text = NULL;
        r->text_len = r->text_cap = 0;
        r->lp = NULL;
        r->n_lp = r->lp_cap = 0;
    } else if (suspend) {
        r->armed = true;
        suspend(arg);
        suspended = 1;
    }
    t->state = r->state;
    t->finish = r->finish;
    t->err_status = r->err_status;
    memcpy(t->err_type, r->err_type, sizeof(t->err_type));
    memcpy(t->err_code, r->err_code, sizeof(t->err_code));
    memcpy(t->err_msg, r->err_msg, sizeof(t->err_msg));
    t->n_prompt = r->n_prompt;
    t->n_cached = r->n_cached;
    t->n_gen = r->n_gen;
    pthread_mutex_unlock(&r->mu);
    return suspended;
}

void req_take_free(struct req_take *t)
{
    if (!t) return;
    free(t->text);
    free(t->lp);
    t->text = NULL;
    t->lp = NULL;
}

void req_set_running(struct req *r, int n_cached)
{
    pthread_mutex_lock(&r->mu);
    if (r->state == REQ_QUEUED) r->state = REQ_RUNNING;
    r->n_cached = n_cached;
    pthread_mutex_unlock(&r->mu);
}

int req_push(struct req *r, const char *text, size_t n, const struct api_lp *lp, int n_lp)
{
    int rc = BT_OK;
    pthread_mutex_lock(&r->mu);
    if (r->state == REQ_DONE) goto done;
    if (n) {
        if (r->text_len + n + 1 > r->text_cap) {
            size_t cap = r->text_cap ? r->text_cap : 256;
            while (cap < r->text_len + n + 1) cap *= 2;
            char *p = realloc(r->text, cap);
            if (!p) {
                rc = BT_ENOMEM;
                goto done;
            }
            r->text = p;
            r->text_cap = cap;
        }
        memcpy(r->text + r->text_len, text, n);
        r->text_len += n;
        r->text[r->text_len] = 0;
    }
    if (n_lp) {
        if (r->n_lp + n_lp > r->lp_cap) {
            int cap = r->lp_cap ? r->lp_cap : 16;
            while (cap < r->n_lp + n_lp) cap *= 2;
            struct api_lp *p = realloc(r->lp, sizeof(*p) * (size_t)cap);
            if (!p) {
                rc = BT_ENOMEM;
                goto done;
            }
            r->lp = p;
            r->lp_cap = cap;
        }
        memcpy(r->lp + r->n_lp, lp, sizeof(*lp) * (size_t)n_lp);
        r->n_lp += n_lp;
    }
    if (r->stream && (n || n_lp)) wake_locked(r);
done:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void req_finish(struct req *r, const char *finish, int n_gen)
{
    pthread_mutex_lock(&r->mu);
    if (r->state != REQ_DONE) {
        r->state = REQ_DONE;
        r->finish = finish;
        r->n_gen = n_gen;
        wake_locked(r);
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
